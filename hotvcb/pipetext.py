"""A list file given as a pipe (`-f <(grep web all-vms)`, a FIFO), read as ghettoVCB's `cat` read it: once.

Every reader in the process (the run's selection, SSH mode sending the list to the host and picking the
per-VM files it names) gets the same bytes: a pipe gives its text once, and a second read would find it
empty. The read is bounded in size (the list files' limit) and time (a writer that never ends its text does
not hold the run), and a signal stops it. A named pipe (mkfifo) is read as `cat` reads it: once a writer has
opened it, which the run waits for within the same time (a script feeding it opened it a moment after the
run looked, and the list read as empty: "names no VM", or with `-e` no exclusions at all). A pipe handed over
as `/dev/fd/N` (`<(...)`) had its writer from the start: one that has ended already ended its text.
"""

import os
import select
import stat
import time
from typing import Dict, List

from . import interrupt
from .errors import UsageError

SECONDS = 60
_READ = {}  # type: Dict[str, bytes]  # by the path opened: this process's one read of each pipe


def read(path: str, shown: str, what: str, limit: int) -> bytes:
    """The pipe's whole text; UsageError naming `what` and `shown` (the path as given) if it cannot be read,
    holds more than `limit` bytes, or has not ended within SECONDS."""
    if path not in _READ:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as err:
            raise UsageError("cannot read %s %s: %s" % (what, shown, err.strerror or err)) from err
        try:
            _READ[path] = _drain(fd, shown, what, limit, _named(path))
        finally:
            os.close(fd)
    return _READ[path]


def _named(path: str) -> bool:
    """Whether `path` is a pipe of the file system, whose writer may come after the reader. Not `/dev/fd/N`:
    its link names no file (`pipe:[N]`), and opened again the kernel never says that its writer ended."""
    try:
        return stat.S_ISFIFO(os.lstat(os.path.realpath(path)).st_mode)
    except OSError:
        return False


def _drain(fd: int, shown: str, what: str, limit: int, named: bool) -> bytes:
    """A named pipe nobody has opened for writing yet reads as ended; select says when one has (text, or a
    writer come and gone), so only then is it read."""
    chunks = []  # type: List[bytes]
    size = 0
    deadline = time.monotonic() + SECONDS
    written = not named
    while True:
        interrupt.raise_pending()
        chunk = None
        if written:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:  # a writer, nothing from it yet
                pass
            except OSError as err:
                raise UsageError("cannot read %s %s: %s" % (what, shown, err.strerror or err)) from err
        if chunk is not None:
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise UsageError("%s %s is larger than %d bytes: not a %s" % (what, shown, limit, what))
            continue
        left = deadline - time.monotonic()
        if left <= 0:
            if not written:
                raise UsageError("%s %s: nothing opened the named pipe for writing within %d s" % (what, shown, SECONDS))
            raise UsageError("%s %s: the pipe did not end its text within %d s" % (what, shown, SECONDS))
        readable = select.select([fd], [], [], min(left, interrupt.SLICE))[0]
        written = written or bool(readable)
