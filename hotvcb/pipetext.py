"""A list file given as a pipe (`-f <(grep web all-vms)`, a FIFO), read as ghettoVCB's `cat` read it: once.

Every reader in the process (the run's selection, SSH mode sending the list to the host and picking the
per-VM files it names) gets the same bytes: a pipe gives its text once, and a second read would find it
empty. The read is bounded in size (the list files' limit) and time (a writer that never ends its text does
not hold the run), and a signal stops it. A FIFO nobody has opened for writing reads as empty (the list then
names no VM, which is refused) rather than waiting for a writer as `cat` would.
"""

import os
import select
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
            _READ[path] = _drain(fd, shown, what, limit)
        finally:
            os.close(fd)
    return _READ[path]


def _drain(fd: int, shown: str, what: str, limit: int) -> bytes:
    chunks = []  # type: List[bytes]
    size = 0
    deadline = time.monotonic() + SECONDS
    while True:
        interrupt.raise_pending()
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:  # a writer, nothing from it yet
            left = deadline - time.monotonic()
            if left <= 0:
                raise UsageError("%s %s: the pipe did not end its text within %d s" % (what, shown, SECONDS)) from None
            select.select([fd], [], [], min(left, interrupt.SLICE))
            continue
        except OSError as err:
            raise UsageError("cannot read %s %s: %s" % (what, shown, err.strerror or err)) from err
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise UsageError("%s %s is larger than %d bytes: not a %s" % (what, shown, limit, what))
