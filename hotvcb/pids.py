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


def hotvcb(pid: int) -> Optional[bool]:
    """Whether `pid` is a live hotvcb process on this machine; None where this process cannot tell.

    A lock naming pid 1 (or any pid reused since by another program) must not
    block every run forever: where /proc exists the command line must name
    hotvcb. ESXi has no /proc; there a live pid is taken at its word. A live
    process whose command line /proc keeps from us (another user's, /proc
    mounted hidepid), or a pid that the /proc mounted here counts in another
    pid namespace than ours, is neither: whoever asks judges it some other way.
    """
    if not 0 < pid < 1 << 22 or not alive(pid):  # Linux caps pids at 2^22
        return False
    proc = _proc_is_ours()
    if proc is None:
        return True
    if not proc:
        return None
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            cmdline = f.read()
    except OSError:
        return None if alive(pid) else False  # hidden from us, or gone in between
    return b"hotvcb" in cmdline


def _proc_is_ours() -> Optional[bool]:
    """Whether the /proc mounted here counts pids in our pid namespace; None where there is no /proc (ESXi).

    `unshare -pf` without --mount-proc (and a container sharing the machine's /proc) leaves /proc the
    mount of another namespace: /proc/2 there is that namespace's pid 2 (kthreadd), not ours. /proc/self
    names us by the mount's count, so it differs from our own pid exactly then.
    """
    try:
        return os.readlink("/proc/self") == str(os.getpid())
    except FileNotFoundError:
        return None  # no /proc at all
    except OSError:
        return False  # a /proc that does not answer for us tells nothing about our pids


def started(pid: int) -> Optional[int]:
    """When process `pid` started, in clock ticks since boot (/proc/PID/stat field 22); None where that cannot be
    read (ESXi has no /proc; the process is gone; a /proc of another pid namespace, where `pid` is someone else).
    A pid is reused, a pid with its start time is not (within a boot): a record of both tells its process from a
    later one, even another hotvcb, at the same pid."""
    if not _proc_is_ours():
        return None
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


def namespace() -> Optional[int]:
    """This process's pid namespace, the inode /proc/self/ns/pid names: a pid names one process only within its
    namespace (a container on this machine, with its hostname and machine id, counts its own pids); None where
    /proc does not tell."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None


def boot_offset() -> Optional[int]:
    """The boot-time offset of this process's time namespace in nanoseconds (/proc/self/timens_offsets): the start
    times /proc/PID/stat shows are shifted by the reader's offset, so two processes see one process's start time
    alike only where their offsets agree. 0 where the kernel has no time namespaces (before Linux 5.6) or there is
    no /proc; None where the offset cannot be read."""
    try:
        with open("/proc/self/timens_offsets", "rb") as f:
            lines = f.read(4096).splitlines()
    except FileNotFoundError:
        return 0
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if fields[:1] in ([b"boottime"], [b"7"]):  # Linux 5.6 showed the clock's number (CLOCK_BOOTTIME)
            try:
                return int(fields[1]) * 10 ** 9 + int(fields[2])
            except (IndexError, ValueError):
                return None
    return None
