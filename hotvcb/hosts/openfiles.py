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
    another mount namespace (a container with the folder bind-mounted elsewhere) names the same file otherwise.

    Only a descriptor that may be one of them is stat'ed (its fdinfo read): a stat of /proc/PID/fd/N reaches
    the file system behind it, and one process holding a file on a dead hard-mounted NFS share would hang the
    search, and the backup with it, for good. In our mount namespace that is a descriptor whose link (read
    without reaching the file system) ends in a wanted file's name; in another one, every descriptor, as the
    container names it by its own path. A hard link of an image under another name, held by a process of our
    namespace, is therefore not found: VM images are not hard-linked under other names in practice, and the
    hang hit every VM of the run. A process of another mount namespace (a libvirt QEMU has its own) still has
    each descriptor stat'ed: one of its files on a dead hard-mounted NFS share can still hang the search."""
    wanted, names = set(), set()  # type: Set[Tuple[int, int]], Set[str]
    for p in paths:
        try:
            wanted.add(_identity(os.stat(p)))
            # /proc names the file by its real path: a /dev/disk/by-id or /dev/mapper link's target
            names.update((os.path.basename(p), os.path.basename(os.path.realpath(p))))
        except OSError:
            pass  # no such file: nobody holds it
    try:
        entries = os.listdir(PROC)
    except OSError:
        return None
    ours = _mount_namespace("self")
    found, told = [], True
    for entry in entries:
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        fds = _fds(int(entry))
        if fds is None:
            told = told and not os.path.isdir("%s/%s" % (PROC, entry))  # unreadable, not gone meanwhile
            continue
        anywhere = _mount_namespace(entry) != ours
        if any(_holds(fd, wanted, None if anywhere else names, writers) for fd in fds):
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


def _holds(fd: str, wanted: Set[Tuple[int, int]], names: Optional[Set[str]], writers: bool) -> bool:
    """Whether descriptor `fd` (/proc/PID/fd/N) is one of the `wanted` files (device, inode), open for writing
    with `writers`; with `names`, only one whose link ends in one of them is stat'ed (see holders)."""
    try:
        if names is not None and os.path.basename(os.readlink(fd)) not in names:
            return False
        return _identity(os.stat(fd)) in wanted and (not writers or _writes(fd))
    except OSError:
        return False  # closed meanwhile


def _mount_namespace(pid: str) -> Optional[str]:
    """Process `pid`'s mount namespace (/proc/PID/ns/mnt's link, `mnt:[inode]`); None where it cannot be read:
    another process's unreadable one, while ours is read, counts as another namespace (all its descriptors
    looked at)."""
    try:
        return os.readlink("%s/%s/ns/mnt" % (PROC, pid))
    except OSError:
        return None


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
