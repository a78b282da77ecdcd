"""Run the hotvcb CLI with every Shell call counted (a counting wrapper, not a timer).

    python -m countshell OUT.json hotvcb-args...     (PYTHONPATH: the repo and tests/)

Wraps every public method of LocalShell and SshShell in place, runs
`hotvcb.cli.main(args)`, and writes {"commands": [argv...], "files": {method: n}}
to OUT.json: `commands` are the argvs given to Shell.run (host commands:
vim-cmd, vmkfstools, ...), `seconds` how long each took, `started` when
(seconds since the run began), `threads` by which thread, `files` the file
calls by name, `text_reads` the read_text and read_regular calls by path, `read_opens` how often
each .vmdk file was opened for reading by this process (an audit hook, whatever
opened it: how many times a restore reads a disk). Used by the tests
that bound how many host commands a backup makes, and by bench/issue8.py.
"""

import functools
import json
import os
import sys
import threading
import time

from hotvcb import localshell as _local
from hotvcb import sshshell as _ssh

COUNTED = {"commands": [], "seconds": [], "started": [], "threads": [], "files": {}, "text_reads": {},
           "read_opens": {}}  # type: dict
BEGAN = time.monotonic()
_LOCK = threading.Lock()


def _wrap(cls):
    for name in dir(cls):
        if name.startswith("_") or name in ("description", "open", "close"):
            continue
        fn = getattr(cls, name)
        if not callable(fn):
            continue

        def counted(self, *args, __fn=fn, __name=name, **kw):
            if __name == "run":
                t0 = time.monotonic()
                with _LOCK:  # one entry per command in all three lists, whichever thread runs it
                    i = len(COUNTED["commands"])
                    COUNTED["commands"].append([str(a) for a in args[0]])
                    COUNTED["started"].append(t0 - BEGAN)
                    COUNTED["threads"].append(threading.current_thread().name)
                    COUNTED["seconds"].append(0.0)
                try:
                    return __fn(self, *args, **kw)
                finally:
                    COUNTED["seconds"][i] = time.monotonic() - t0
            with _LOCK:
                COUNTED["files"][__name] = COUNTED["files"].get(__name, 0) + 1
                if __name in ("read_text", "read_regular"):  # a file's text, read whole or bounded
                    COUNTED["text_reads"][args[0]] = COUNTED["text_reads"].get(args[0], 0) + 1
            return __fn(self, *args, **kw)

        setattr(cls, name, functools.wraps(fn)(counted))


_OPENING = threading.local()  # the path a builtin open() of this thread is opening (its opener's os.open follows)


def _count_read_opens(event, args):
    """sys.addaudithook: `open` (builtin open and os.open) of a .vmdk file, read only. A builtin open() given
    an opener raises the event twice, itself (mode a str) and then the opener's os.open (mode None) of the
    same path in the same thread: that is one open, counted once."""
    opening, _OPENING.path = getattr(_OPENING, "path", None), None  # only the very next event can be its opener's
    if event == "open" and isinstance(args[0], str) and args[0].endswith(".vmdk"):
        if args[1] is None and opening == args[0]:
            return
        _OPENING.path = args[0] if args[1] is not None else None
        flags = args[2] if isinstance(args[2], int) else 0
        if flags & os.O_ACCMODE == os.O_RDONLY:
            with _LOCK:
                COUNTED["read_opens"][args[0]] = COUNTED["read_opens"].get(args[0], 0) + 1


def asked_ahead(counted):
    """For each command counted: whether it was asked ahead, in a thread beside a copy
    (jobs/lookahead.py), off the run's critical path."""
    return [name == "hotvcb-lookahead" for name in counted["threads"]]


def main(argv):
    out, args = argv[0], argv[1:]
    _wrap(_local.LocalShell)
    _wrap(_ssh.SshShell)
    sys.addaudithook(_count_read_opens)
    from hotvcb.cli import main as cli_main

    try:
        code = cli_main(args)
    finally:
        with open(out, "w") as f:
            json.dump(COUNTED, f)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
