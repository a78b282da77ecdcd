"""The run's log (runlog.RunLog) as a job module takes it, for tests that call a job or store function
directly: every line kept, in `lines` (the text) and `records` ((level, text)), whatever its level."""


class Log:
    def __init__(self):
        self.lines = []
        self.records = []

    def __getattr__(self, level):
        if level.startswith("_"):
            raise AttributeError(level)

        def say(message):
            self.lines.append(message)
            self.records.append((level, message))
        return say
