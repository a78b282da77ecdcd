"""One change of a schedule's table at a time.

A crontab is changed by reading it whole, adding or taking out our line, and writing it whole back. Two
`schedule install` at once (two admins, a configuration run started twice) each read the table before the
other wrote it, and the second write dropped the first one's job: both said "installed job", one job was
gone. So every read-modify-write of a table holds an flock on a file of this machine: a second change waits
(at most WAIT seconds) until the first is written, and then reads the table with the first's line in it.

The lock file is root's in /var/run (ESXi and Linux alike), a user's in the user's home folder (each user
has a crontab of their own). Not in the temp folder: there its predictable name let any other user create
it first (sticky /tmp: nor could the user remove it), locking the user out of their own schedule for good,
and a name taken from TMPDIR differed between a login (pam_tmpdir's /tmp/user/UID) and a cron-started run,
so two installs of one user did not wait for each other. A user with no home folder it can write (nobody's
/nonexistent, a service user's never made) changes its crontab unlocked, as on a filesystem that cannot
hold an flock. It is opened without following a symlink and must belong to this user: another user's file
there would otherwise let them hold our lock. An flock is let go by the
kernel when its process ends, so a killed install leaves no stale lock behind.
"""

import errno
import fcntl
import os
import time
from contextlib import contextmanager
from typing import Iterator, Optional

from ..errors import HostError

WAIT = 120.0  # seconds: an ESXi install restarts crond and runs auto-backup.sh under the lock
ROOT_LOCK = "/var/run/hotvcb-schedule.lock"
USER_LOCK = ".hotvcb-schedule.lock"  # in the user's home folder
# errors of a filesystem that cannot hold an flock at all: no lock there, as before it existed
_UNSUPPORTED = (errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOLCK)


def lock_path(root: str = "/") -> Optional[str]:
    """Where this user's schedule lock lives (`root` prefixes a host path, as EsxiScheduler's does); None for a
    user whose home folder cannot hold it."""
    if os.geteuid() == 0:
        return os.path.join(root, ROOT_LOCK.lstrip("/"))
    home = os.path.expanduser("~")
    if not (os.path.isdir(home) and os.access(home, os.W_OK | os.X_OK)):
        return None
    return os.path.join(home, USER_LOCK)


@contextmanager
def locked(path: Optional[str], wait: float = WAIT) -> Iterator[None]:
    """Hold the schedule lock at `path` (None: no lock) for the body; HostError naming it when it cannot be had."""
    if path is None:
        yield
        return
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as err:
        raise HostError("cannot open the schedule lock %s: %s" % (path, err.strerror or err)) from err
    try:
        if os.fstat(fd).st_uid != os.geteuid():
            raise HostError("the schedule lock %s belongs to another user: remove it and try again" % path)
        _take(fd, path, wait)
        yield
    finally:
        os.close(fd)


def _take(fd: int, path: str, wait: float) -> None:
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as err:
            if err.errno in _UNSUPPORTED:
                return
            if err.errno not in (errno.EAGAIN, errno.EACCES):
                raise HostError("cannot lock %s: %s" % (path, err.strerror or err)) from err
        if time.monotonic() >= deadline:
            raise HostError("another `hotvcb schedule` has been changing the schedule for %ds (it holds %s); "
                            "try again once it is done" % (wait, path))
        time.sleep(0.2)
