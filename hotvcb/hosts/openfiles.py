"""Which processes hold a file open, as /proc tells (Linux): how a QEMU is found by the images it writes.

A QMP socket's peer (SO_PEERCRED) may be a proxy (socat, a container's forwarder) in front of QEMU, so the
QEMU that writes an image is found by the image: the process holding it open.
"""

import os
from typing import Iterable, List, Optional, Set, Tuple

PROC = "/proc"


def files_held(pid: int) -> Set[str]:
    """The files process `pid` holds open (/proc/<pid>/fd), none where that cannot be read (it is gone)."""
    return _held(pid) or set()


def holders(paths: Iterable[str], writers: bool = False) -> Optional[List[int]]:
    """The pids of the processes (this one left out) holding one of `paths` open (with `writers`: open for
    writing, as /proc/PID/fdinfo's flags say; a reader such as `qemu-nbd -r` writes nothing); None where /proc
    cannot tell for every process (none mounted, another user's process hidden or unreadable): an empty list
    then would say "nobody" on a guess. A file is known by its device and inode, not by its name: a process in
    another mount namespace (a container with the folder bind-mounted elsewhere) or one holding a hard link
    names the same file otherwise."""
    wanted = set()  # type: Set[Tuple[int, int]]
    for p in paths:
        try:
            wanted.add(_identity(os.stat(p)))
        except OSError:
            pass  # no such file: nobody holds it
    try:
        entries = os.listdir(PROC)
    except OSError:
        return None
    found, told = [], True
    for entry in entries:
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        held = _held_files(int(entry), writers)
        if held is None:
            told = told and not os.path.isdir("%s/%s" % (PROC, entry))  # unreadable, not gone meanwhile
        elif held & wanted:
            found.append(int(entry))
    return sorted(found) if found or told else None


def _held(pid: int) -> Optional[Set[str]]:
    fds = _fds(pid)
    if fds is None:
        return None
    held = set()  # type: Set[str]
    for fd in fds:
        try:
            held.add(os.readlink(fd))
        except OSError:
            pass  # closed meanwhile
    return held


def _held_files(pid: int, writers: bool) -> Optional[Set[Tuple[int, int]]]:
    """(device, inode) of each file process `pid` holds open (for writing only, with `writers`); None where its
    descriptors cannot be listed."""
    fds = _fds(pid)
    if fds is None:
        return None
    held = set()  # type: Set[Tuple[int, int]]
    for fd in fds:
        try:
            if writers and not _writes(fd):
                continue
            held.add(_identity(os.stat(fd)))
        except OSError:
            pass  # closed meanwhile
    return held


def _writes(fd: str) -> bool:
    """Whether descriptor `fd` (/proc/PID/fd/N) is open for writing: its fdinfo's `flags:` (octal) have an
    access mode other than O_RDONLY. Raises OSError where it is gone (closed meanwhile)."""
    with open(fd.replace("/fd/", "/fdinfo/"), encoding="ascii", errors="replace") as f:
        for line in f:
            if line.startswith("flags:"):
                return int(line.split()[1], 8) & os.O_ACCMODE != os.O_RDONLY
    return True  # no flags said: taken for a writer, as before fdinfo told them


def _identity(st: os.stat_result) -> Tuple[int, int]:
    return st.st_dev, st.st_ino


def _fds(pid: int) -> Optional[List[str]]:
    """The paths of process `pid`'s descriptors (/proc/PID/fd/N); None where they cannot be listed."""
    folder = "%s/%d/fd" % (PROC, pid)
    try:
        return [folder + "/" + fd for fd in os.listdir(folder)]
    except OSError:
        return None
