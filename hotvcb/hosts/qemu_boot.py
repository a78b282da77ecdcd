"""A throw-away QEMU process for the smoke boot: started, watched, always killed.

The process gets its own session (a Ctrl-C at the terminal reaches hotvcb,
which then kills it in order) and, on Linux, PR_SET_PDEATHSIG, so even a
SIGKILLed hotvcb takes its QEMU with it: a smoke boot never leaves a VM
running. Its serial console goes to a file the caller watches (ConsoleLog).
"""

import errno
import os
import stat
import subprocess
from typing import List, Optional

from ..errors import HostError
from ..tether import die_with_parent

KILL_WAIT = 30.0
READ_BLOCK = 1 << 20


class ConsoleLog:
    """The serial console's file: QEMU appends to it, the watcher reads back this boot's part at each look.

    Opened here once and read through that descriptor from where the file ended at the open: a file the
    admin names again (last night's console, or one named by mistake) keeps what it held, and what it held
    is never taken for this boot's sign of life. The open never blocks (O_NONBLOCK): a
    FIFO or a device the admin named, with nobody at its other end, would hang it for ever, where a
    signal waits too. Only a regular file is taken: a folder cannot be one, and a FIFO or device would
    not hand back what QEMU wrote. HostError names what the path is instead."""

    @staticmethod
    def check(path: str) -> None:
        """What the open would refuse, refused before any work, and nothing created: a boot refused for
        another reason leaves no log behind (stat, unlike open, never waits on a FIFO)."""
        try:
            _require_regular(path, os.stat(path).st_mode)
        except FileNotFoundError:
            pass  # made at the open
        except OSError as err:
            raise HostError("console log %s cannot be written: %s" % (path, err.strerror)) from None

    def __init__(self, path: str):
        self.path = path
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
        except OSError as err:
            if err.errno == errno.EISDIR:
                _require_regular(path, stat.S_IFDIR)
            raise HostError("console log %s cannot be written: %s" % (path, err.strerror)) from None
        try:
            _require_regular(path, os.fstat(fd).st_mode)  # what is there now, not what check() saw
        except HostError:
            os.close(fd)
            raise
        self.start = os.lseek(fd, 0, os.SEEK_END)
        self.fd = fd  # type: Optional[int]

    def text(self) -> str:
        data, offset = [], self.start
        while self.fd is not None:
            block = os.pread(self.fd, READ_BLOCK, offset)
            if not block:
                break
            data.append(block)
            offset += len(block)
        return b"".join(data).decode("utf-8", "replace")

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _require_regular(path: str, mode: int) -> None:
    if stat.S_ISDIR(mode):
        raise HostError("console log %s is a folder; name a file" % path)
    if not stat.S_ISREG(mode):
        raise HostError("console log %s is not a regular file (a FIFO or a device); name a file" % path)


class BootProcess:
    """QEMU with its serial console in `console` (opened, so there from the start: the watcher reads it
    before QEMU writes) and its own messages in `log`."""

    def __init__(self, argv: List[str], console: ConsoleLog, log: str):
        self.console, self.log = console, log
        # appended to (`-serial file:` would empty it); a comma in an option value is written twice
        self.argv = list(argv) + ["-display", "none", "-no-reboot", "-chardev", "file,id=console,append=on,path="
                                  + console.path.replace(",", ",,"), "-serial", "chardev:console"]
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
        return self.console.text()

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

