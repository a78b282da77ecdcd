"""Is a process still there, and is it one of ours? (locks, dead writers, crond restarts)"""

import os
from typing import Optional


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError, ValueError):
        return False  # gone, or a number no process can have (a garbage lock)
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def is_hotvcb(pid: int) -> bool:
    """A live hotvcb process with this pid on this machine.

    A lock naming pid 1 (or any pid reused since by another program) must not
    block every run forever: where /proc exists the command line must name
    hotvcb. ESXi has no /proc; there a live pid is taken at its word.
    """
    if not 0 < pid < 1 << 22 or not alive(pid):  # Linux caps pids at 2^22
        return False
    if not os.path.isdir("/proc/self"):
        return True
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            cmdline = f.read()
    except OSError:
        return False  # gone in between
    return b"hotvcb" in cmdline


def started(pid: int) -> Optional[int]:
    """When process `pid` started, in clock ticks since boot (/proc/PID/stat field 22); None where that cannot be
    read (ESXi has no /proc; the process is gone). A pid is reused, a pid with its start time is not (within a
    boot): a record of both tells its process from a later one, even another hotvcb, at the same pid."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            stat = f.read()
    except (OSError, OverflowError, ValueError):
        return None
    fields = stat.rsplit(b")", 1)[-1].split()  # after the command name, which may hold spaces and ")"
    try:
        return int(fields[19])  # fields[0] is field 3 (the state)
    except (IndexError, ValueError):
        return None
