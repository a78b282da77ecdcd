"""A run's work folder in the temp folder (restore --kvm's VMDK descriptor copies, a smoke boot's
overlays, the SSH master's socket), named by the process that made it: a SIGKILLed run cannot remove
its own, so the next run of that kind removes the folders of processes that are gone.

`<prefix><pid>-<random>`, and in it `.owner`: the process's start time, pid namespace and boot
offset. A pid alone is reused (by any program, by a later hotvcb); the pid with its start time, in
its pid namespace and seen with its time namespace's boot offset, is not (as a run record tells its
process: runid.running). They are in a file, not the name, because the name is part of the SSH
master's socket path, which the kernel caps at 104-108 bytes: with a long TMPDIR (macOS's is ~50
characters) a name carrying them all would not fit. A folder of another pid namespace (a container
sharing this /tmp) is left: its pid names nothing here; one whose start time cannot be compared (no
/proc, another boot offset) or that has no `.owner` (an older hotvcb's, or one being made) is judged
by its pid alone, kept while any process has it. Only a real folder of our user is looked into:
anyone may make an entry of that name in /tmp (a link to /etc), but none in a folder of ours (0700)
nor, in /tmp (sticky), replace it.
"""

import os
import re
import shutil
import stat
from typing import List, Optional, Tuple

from . import pids
from .blockdigest import open_regular

OWNER = ".owner"
_OWNER_MAX = 256  # three numbers


def make(prefix: str, root: Optional[str] = None) -> str:
    """A new work folder of this process in `root` (the temp folder), 0700 (mkdtemp), its `.owner` written."""
    import tempfile  # with random: imported by the runs that make or sweep a work folder only

    pid = os.getpid()
    folder = tempfile.mkdtemp(prefix="%s%d-" % (prefix, pid), dir=root)
    offset = pids.boot_offset()
    start = pids.started(pid) if offset is not None else None
    try:
        with open(os.path.join(folder, OWNER), "w") as f:
            f.write("%d %d %d\n" % (start or 0, pids.namespace() or 0, offset or 0))
    except OSError:
        pass  # a full /tmp: judged by its pid alone then
    return folder


def sweep(prefix: str, keep: str = "", dry: bool = False, root: Optional[str] = None) -> List[str]:
    """Clear the work folders of gone processes named with `prefix` in `root` (the temp folder) but for a
    file named `keep` (a smoke boot's console log, whose path its result gave); the folders found (`dry`:
    only found), so `hotvcb cleanup --kvm` can name them."""
    import tempfile

    root = root or tempfile.gettempdir()
    found_gone = []  # type: List[str]
    try:
        entries = os.listdir(root)
    except OSError:
        return found_gone
    named = re.compile(re.escape(prefix) + r"(\d+)-[^/]*$")  # mkdtemp's random after the pid
    for entry in entries:
        found = named.match(entry)
        if found is None:
            continue
        folder = os.path.join(root, entry)
        try:
            st = os.lstat(folder)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
            continue  # planted (anyone may write /tmp): a link to /etc would have us empty /etc
        if _gone(int(found.group(1)), _owner(folder)):
            found_gone.append(folder)
            if not dry:
                clear(folder, keep)
    return found_gone


def _owner(folder: str) -> Optional[Tuple[int, int, int]]:
    """(start time, pid namespace, boot offset) from the folder's `.owner`; None where it has none
    (an older hotvcb's, one being made, one whose run ended and kept a file) or it does not parse."""
    try:  # a FIFO or a link planted there (a folder of ours, but not mkdtemp's 0700) must not hang or lead us on
        with open_regular(os.path.join(folder, OWNER), follow=False) as f:
            start, ns, offset = (int(n) for n in f.read(_OWNER_MAX).split())
    except (OSError, ValueError):
        return None
    return start, ns, offset


def clear(folder: str, keep: str = "") -> None:
    """Remove all in a work folder but the file named `keep`, then the folder once empty. Best effort:
    all in it is a dead or ending run's, and what cannot be removed is tried again by the next run."""
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        if name != keep:
            _remove(os.path.join(folder, name))
    try:
        os.rmdir(folder)
    except OSError:
        pass  # what was kept


def _gone(pid: int, owner: Optional[Tuple[int, int, int]]) -> bool:
    start, ns, offset = owner if owner is not None else (0, 0, 0)
    if ns and ns != (pids.namespace() or 0):
        return False
    if not pids.alive(pid):
        return True
    if not start or offset != pids.boot_offset():  # cannot compare: kept while the pid is there
        return False
    now = pids.started(pid)
    return now is not None and now != start


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.unlink(path)
        except OSError:
            pass
