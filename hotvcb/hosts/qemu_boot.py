"""A throw-away QEMU process for the smoke boot: started, watched, always killed.

The process gets its own session (a Ctrl-C at the terminal reaches hotvcb,
which then kills it in order) and, on Linux, PR_SET_PDEATHSIG, so even a
SIGKILLed hotvcb takes its QEMU with it: a smoke boot never leaves a VM
running. Its serial console goes to a file the caller watches.
"""

import subprocess
from typing import List, Optional

from ..errors import HostError
from ..tether import die_with_parent

KILL_WAIT = 30.0


class BootProcess:
    """QEMU with its serial console in `console` and its own messages in `log`."""

    def __init__(self, argv: List[str], console: str, log: str):
        self.console, self.log = console, log
        self.argv = list(argv) + ["-display", "none", "-no-reboot", "-serial", "file:" + console]
        with open(console, "wb"):
            pass  # exists from the start: the watcher reads it before QEMU writes
        try:
            with open(log, "wb") as out:
                self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out,
                                             stderr=subprocess.STDOUT, start_new_session=True,
                                             preexec_fn=die_with_parent)
        except OSError as err:
            raise HostError("cannot start %s: %s" % (self.argv[0], err)) from err

    @property
    def pid(self) -> int:
        return self.proc.pid

    def exit_code(self) -> Optional[int]:
        """None while it runs."""
        return self.proc.poll()

    def console_text(self) -> str:
        with open(self.console, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def last_words(self, lines: int = 3) -> str:
        """QEMU's own last message lines (why it exited)."""
        try:
            with open(self.log, "rb") as f:
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return " / ".join(l.strip() for l in text.strip().splitlines()[-lines:])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(KILL_WAIT)
        except subprocess.TimeoutExpired:
            raise HostError("QEMU (pid %d) did not end %ds after SIGKILL" % (self.proc.pid, KILL_WAIT)) from None

    def __enter__(self) -> "BootProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.kill()

