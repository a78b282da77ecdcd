"""A run's work folder in the temp folder (restore --kvm's VMDK descriptor copies, a smoke boot's
overlays, the SSH master's socket), named by the process that made it: a SIGKILLed run cannot remove
its own, so the next run of that kind removes the folders of processes that are gone.

`<prefix><pid>-<start>-<pid namespace>-<boot offset>-<random>`: a pid alone is reused (by any
program, by a later hotvcb); the pid with its start time, in its pid namespace and seen with its
time namespace's boot offset, is not (as a run record tells its process: runid.running). A folder
of another pid namespace (a container sharing this /tmp) is left: its pid names nothing here; one
whose start time cannot be compared (no /proc, another boot offset) is judged by its pid alone,
kept while any process has it. Named `<prefix><pid>-<random>` (an older hotvcb's smoke boot): by
its pid alone too. Only a real folder of our user is emptied: anyone may make an entry of that
name in /tmp (a link to /etc), but none in a folder of ours (0700) nor, in /tmp (sticky), replace it.
"""

import os
import re
import shutil
import stat
import tempfile
from typing import Optional

from . import pids

_TAG = r"(\d+)-(?:(\d+)-(\d+)-(-?\d+)-)?[^-]*"  # what make() puts after the prefix (mkdtemp's random: no "-")


def make(prefix: str) -> str:
    """A new work folder of this process, 0700 (mkdtemp)."""
    offset = pids.boot_offset()
    start = pids.started(os.getpid()) if offset is not None else None
    return tempfile.mkdtemp(prefix="%s%d-%d-%d-%d-" % (prefix, os.getpid(), start or 0, pids.namespace() or 0,
                                                      offset or 0))


def sweep(prefix: str, keep: str = "") -> None:
    """Clear the work folders of gone processes named with `prefix` but for a file named `keep` (a
    smoke boot's console log, whose path its result gave)."""
    root = tempfile.gettempdir()
    try:
        entries = os.listdir(root)
    except OSError:
        return
    named = re.compile(re.escape(prefix) + _TAG + "$")
    for entry in entries:
        found = named.match(entry)
        if found is None or not _gone(*found.groups()):
            continue
        folder = os.path.join(root, entry)
        try:
            st = os.lstat(folder)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
                continue  # planted (anyone may write /tmp): a link to /etc would have us empty /etc
        except OSError:
            continue
        clear(folder, keep)


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


def _gone(pid: str, start: Optional[str], ns: Optional[str], offset: Optional[str]) -> bool:
    if ns is not None and int(ns) and int(ns) != (pids.namespace() or 0):
        return False
    if not pids.alive(int(pid)):
        return True
    if start is None or not int(start) or int(offset or 0) != pids.boot_offset():  # None: cannot compare
        return False
    now = pids.started(int(pid))
    return now is not None and now != int(start)


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.unlink(path)
        except OSError:
            pass
