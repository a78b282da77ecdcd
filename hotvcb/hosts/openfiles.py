"""Which processes hold a file open, as /proc tells (Linux): how a QEMU is found by the images it writes.

A QMP socket's peer (SO_PEERCRED) may be a proxy (socat, a container's forwarder) in front of QEMU, so the
QEMU that writes an image is found by the image: the process holding it open.
"""

import os
from typing import Iterable, List, Optional, Set

PROC = "/proc"


def files_held(pid: int) -> Set[str]:
    """The files process `pid` holds open (/proc/<pid>/fd), none where that cannot be read (it is gone)."""
    return _held(pid) or set()


def holders(paths: Iterable[str]) -> Optional[List[int]]:
    """The pids of the processes (this one left out) holding one of `paths` open; None where /proc cannot
    tell for every process (none mounted, another user's process hidden or unreadable): an empty list
    then would say "nobody" on a guess."""
    wanted = {os.path.realpath(p) for p in paths}
    try:
        entries = os.listdir(PROC)
    except OSError:
        return None
    found, told = [], True
    for entry in entries:
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        held = _held(int(entry))
        if held is None:
            told = told and not os.path.isdir("%s/%s" % (PROC, entry))  # unreadable, not gone meanwhile
        elif held & wanted:
            found.append(int(entry))
    return sorted(found) if found or told else None


def _held(pid: int) -> Optional[Set[str]]:
    fds = "%s/%d/fd" % (PROC, pid)
    held = set()  # type: Set[str]
    try:
        entries = os.listdir(fds)
    except OSError:
        return None
    for fd in entries:
        try:
            held.add(os.readlink(fds + "/" + fd))
        except OSError:
            pass  # closed meanwhile
    return held
