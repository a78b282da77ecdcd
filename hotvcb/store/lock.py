"""One run at a time: a lock file in the work directory.

Taken with O_EXCL so two runs cannot both win. It holds the owner's pid; a
lock whose pid is gone (the run was SIGKILLed or the host rebooted) is stale
and is taken over, with a line in the log saying so.
"""

import errno
import os
import socket
import time
from typing import Callable, Optional

from ..errors import LockError
from ..pids import alive

LOCK_NAME = "hotvcb.lock"


class WorkLock:
    def __init__(self, workdir: str, log: Optional[Callable[[str], None]] = None):
        self.workdir = workdir
        self.path = os.path.join(workdir, LOCK_NAME)
        self.log = log or (lambda msg: None)
        self.held = False

    def acquire(self) -> "WorkLock":
        try:
            os.makedirs(self.workdir, exist_ok=True)
        except OSError as err:
            raise LockError("cannot create work directory %s: %s" % (self.workdir, err.strerror)) from err
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except OSError as err:
                if err.errno != errno.EEXIST:
                    raise LockError("cannot create lock %s: %s" % (self.path, err.strerror)) from err
                owner = self._owner()
                if owner is not None and alive(owner):
                    raise LockError(
                        "another hotvcb run (pid %d) holds %s; not starting a second one" % (owner, self.path)
                    )
                self.log("removing stale lock %s left by pid %s, which is gone" % (self.path, owner))
                try:
                    os.unlink(self.path)
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "w") as f:
                f.write("%d\n%s\n%d\n" % (os.getpid(), socket.gethostname(), int(time.time())))
            self.held = True
            return self
        raise LockError("could not take lock %s" % self.path)

    def _owner(self) -> Optional[int]:
        try:
            with open(self.path) as f:
                return int(f.readline().strip())
        except (OSError, ValueError):
            return None

    def release(self) -> None:
        if self.held:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            self.held = False

    def __enter__(self) -> "WorkLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
