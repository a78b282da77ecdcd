"""A restore's scratch and unfinished VM folders on the target, each recorded first so a cleanup finds it
after a SIGKILL.

A `.gz` backup is unpacked, a repository backup written out as a folder, a KVM backup converted to
VMDKs in `<target>/.hotvcb-extract-<pid>-<time>-<run>/` before the ordinary restore reads it, and
the restore removes the folder when it ends. A SIGKILLed one cannot: a whole backup's size stays
behind, maybe in a folder of the admin's choosing (`--datastore datastore1/restored`).

So the restore first writes its run record (runid.py) and the folder's path into
`<datastore root>/<folder name>.owner`, the one place `hotvcb cleanup` looks (the root of every datastore of
the host; a KVM restore's target folder, which is no datastore, holds its records itself, and there
the next KVM restore and `hotvcb cleanup --kvm DIR` look); the folder is made after its record and
removed before it, so no folder of ours is without one. What cleanup makes of a record, and when it
removes the folder, is restore_sweep.py's.

The VM folder a restore clones into, `<name>.hotvcb-restoring` (RESTORING, below), is as big and is
recorded the same way (Records.claim, release), but its name is not unique: a later restore under
that name makes a folder of the same path, and two restores of one name may claim it at once. So
its record is named by the folder's path (`.hotvcb-restoring-<digest>.owner`, distinct for two
targets' folders of one name) and a new restore writes its record over a dead one's (atomically,
write_text) before it makes the folder, which must not exist yet (make_new_dir): a dead record is
gone before a later folder appears, so it can never name that folder to cleanup. A restore that
finds the folder there (another restore's, running or killed) refuses before it writes anything, so
the record, that restore's, stays for cleanup to find. Of two restores that both found no folder
and both wrote their record, the one make_new_dir refuses removes the record only while it holds
its own text, and the maker, once its folder is made, writes its record again if another's replaced
it; and a restore removes its record at the end only while it holds its own text (once the folder
got its final name, a later restore may make the folder anew and record it).

A record is the run's line and `path=<folder>`, or `path-quoted=<folder, percent-encoded>` for a
path with a line break (record_text): a target folder may hold one (a VM name no longer may), which
would end the line.

A pid proves a restore dead only on the host that ran it, and hostnames are not unique: two ESXi
hosts sharing an NFS datastore are often both `localhost`. So a record also carries the host's id
(runid.host_id on the hypervisor host, /etc/machine-id for a KVM restore on this machine), and the
restore touches its records every lock.HEARTBEAT seconds while they exist (Records).
"""

import posixpath
import re
import threading
import time
from typing import Callable, List, Optional, Set

from ..errors import HostError, HotvcbError
from ..runid import RunId, host_id, known_host_id
from ..shell import Shell
from ..store import layout
from ..store.lock import HEARTBEAT
from .. import lazyre

# here, not in restore_plan.py which makes the folder: `cleanup` would import the planner (backup checks,
# conversions: ~15 ms) for this one name; layout's, which refuses a name too long for it (unusable_name)
RESTORING = layout.RESTORING
PREFIX = ".hotvcb-extract-"
RECORD = ".owner"  # appended to the folder's name, at the datastore's root
OWN_FILES = 2  # a restore's own files beside a folder it fills, for its room check: the record, a write's temp
RESTORING_RECORD = RESTORING + "-"  # + the digest of the folder's path + RECORD
RECORD_MAX = 4096  # a record is two short lines; anything planted is read no further
_PATH = lazyre.compile(r"^path=(/.+)$", re.M)
_QUOTED_PATH = lazyre.compile(r"^path-quoted=(\S+)$", re.M)  # a path holding a line break (a target folder may)


class Records:
    """The records of one restore process: written with its run and host id, touched every
    HEARTBEAT seconds by a thread of their own while any exists. `host_id` is asked once, when
    the first record is written (a dry run or a refused restore asks the host nothing)."""

    def __init__(self, shell: Shell, host_id: Callable[[], str], run: Optional[RunId] = None):
        self.shell, self._host_id = shell, host_id
        self._run = run  # None: made when the first record is written
        self._made = 0  # scratch folders named so far: each its own name
        self._held = set()  # type: Set[str]  # folders whose records the heartbeat keeps fresh
        self._lock = threading.Lock()
        self._beat = None  # type: Optional[threading.Thread]

    def run(self) -> RunId:
        if self._run is None:
            self._run = RunId.new().with_process_start().on_host(self._host_id())
        return self._run

    def make(self, target: str) -> str:
        """A new scratch folder in target, its record written first; its path."""
        path = self._scratch_name(target)
        self.claim(path)
        return path

    def take(self, folder: str) -> str:
        """Rename `folder` to a new scratch folder of ours beside it (its record written first, so a
        cleanup killed while removing it leaves a dead restore's scratch folder, found by the next);
        its new path. HostError, and no record of ours left, when it cannot be renamed."""
        path = self._scratch_name(posixpath.dirname(posixpath.normpath(folder)))
        self._record(path)
        try:
            self.shell.rename(folder, path)
        except HostError:
            self.release(path)
            raise
        return path

    def _scratch_name(self, target: str) -> str:
        run = self.run()
        target = posixpath.normpath(target)  # `datastore1/../ds5`: the record in ds5's root, where sweep checks it
        self._made += 1
        return "%s/%s%d-%d-%s%s" % (target.rstrip("/"), PREFIX, run.pid, run.started, run.run[:6],
                                    "%x" % self._made if self._made > 1 else "")

    def claim(self, path: str) -> None:
        """Make the VM folder `path` (which must not exist), its record written first: over the record of
        a dead restore of the same folder, if any. HostError when it exists or cannot be made; then this
        restore leaves no record of its own, and touches none it does not hold: a folder that exists
        is another restore's, and so is its record (looked at before writing ours); of two restores
        that both found none, the one make_new_dir refuses removes the record only if it holds its own
        text, and the maker writes its own again if the loser's replaced it."""
        path = posixpath.normpath(path)
        if self.shell.exists(path):
            raise HostError("%s exists: another restore into it started meanwhile" % path)
        self._record(path)
        try:
            if not self.shell.make_new_dir(path):
                raise HostError("%s exists: another restore into it started meanwhile" % path)
        except HostError:
            self.release(path)
            raise
        if not self._holds(record_of(path), path):
            self._record(path)

    def _record(self, path: str) -> None:
        self.shell.write_text(record_of(path), record_text(self.run(), path))
        self._keep(path)

    def release(self, path: str) -> None:
        """The record of `path`, once the folder is gone or renamed to its final name; a VM folder's
        record only while it is still ours (a later restore of the name may have recorded its own)."""
        path = posixpath.normpath(path)
        with self._lock:
            self._held.discard(path)
        record = record_of(path)
        if path.endswith(RESTORING) and not self._holds(record, path):
            return
        self.shell.remove_tree(record)

    def _holds(self, record: str, path: str) -> bool:
        try:
            return self.shell.read_regular(record, RECORD_MAX) == record_text(self.run(), path)
        except HostError:
            return False  # gone, or not a record of ours

    def remove(self, path: str) -> None:
        """The folder, then its record (a record without its folder is harmless; the reverse is not)."""
        self.shell.remove_tree(path)
        self.release(path)

    def _keep(self, path: str) -> None:
        with self._lock:
            self._held.add(path)
            if self._beat is None:
                self._beat = threading.Thread(target=self._beat_loop, name="hotvcb-restore-heartbeat", daemon=True)
                self._beat.start()

    def _beat_loop(self) -> None:
        """Ends when no record is held (a later claim starts another)."""
        while True:
            time.sleep(HEARTBEAT)
            with self._lock:
                held = sorted(self._held)
                if not held:
                    self._beat = None
                    return
            for path in held:
                try:  # a record released meanwhile stays gone (touch makes nothing)
                    self.shell.touch(record_of(path))
                except HotvcbError:
                    pass  # a datastore that hiccups: the next beat tries again, well within STALE_AFTER


def unusable_name(name: str, given: bool = True) -> Optional[str]:
    """Why a restored VM (to ESXi or to KVM) cannot have `name` (layout.unusable_name), or None; also a name
    starting PREFIX: its folder would be a restore's scratch folder to cleanup and every restore, offered for
    removal. `given`: the name was given (--name); else the backup's own, and the line says how to give one."""
    why = layout.unusable_name(name, own=not given)
    if why is None and name.startswith(PREFIX):
        why = ("%r cannot be the restored VM's name: a folder of that name is a restore's scratch folder (an "
               "unpacked backup), which cleanup and every restore take it for%s" % (
                   name, "" if given else " (the backup's own name): restore it under a new name (--name, or a "
                   "restore file's 4th field)"))
    return why


def on_host(shell: Shell, run_dir: str, dry_run: bool = False) -> Records:
    """The records of a restore onto a hypervisor host: its id is the one its run lock's holders
    record (runid.host_id), so `hotvcb cleanup`, holding that lock, knows them as its host's. A dry
    run reads it and makes none (where none exists yet, no record names this host by it)."""
    def ident() -> str:
        if dry_run:
            return known_host_id(shell, run_dir)
        try:
            return host_id(shell, run_dir)
        except HostError:
            return ""  # the records are judged by their heartbeat alone
    return Records(shell, ident)


def record_text(run: RunId, path: str) -> str:
    """The run's line, then the folder's path: as it is, or percent-encoded (`path-quoted=`) when it
    holds a line break, which would end the line (the target folder may hold one; a VM name is refused)."""
    if "\n" in path or "\r" in path:
        from urllib.parse import quote  # for such a path only, not every restore's and cleanup's start-up

        return "%s\npath-quoted=%s\n" % (run.text(), quote(path, safe="/", errors="surrogateescape"))
    return "%s\npath=%s\n" % (run.text(), path)


def recorded_path(text: str) -> str:
    """The folder a record names; "" when it names none."""
    found = _PATH.search(text)
    if found is not None:
        return found.group(1)
    found = _QUOTED_PATH.search(text)
    if found is None:
        return ""
    from urllib.parse import unquote  # for such a record only, not every restore's and cleanup's start-up

    path = unquote(found.group(1), errors="surrogateescape")
    return path if path.startswith("/") else ""


def record_of(path: str) -> str:
    """`<datastore root>/<name>.owner` of the folder `path` (a VM folder being restored: by digest)."""
    path = posixpath.normpath(path)
    root, name = records_root(path), path.rsplit("/", 1)[-1]
    if name.endswith(RESTORING):
        import hashlib  # status and cleanup import this module; few of their runs hash a name

        name = RESTORING_RECORD + hashlib.sha1(path.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return "%s/%s%s" % (root, name, RECORD)


def vm_named_so(shell: Shell, folder: str) -> str:
    """The definition (`<folder's name>.vmx` or `.xml`) in a folder named like an unfinished one (RESTORING) of
    the VM restored under that very name (`Shop.hotvcb-restoring`), "" when it holds none. No restore's
    unfinished folder holds one: its definition is named after its VM, the name without RESTORING. Such a
    VM is complete and no restore's to remove, whatever record names its folder."""
    own = posixpath.basename(posixpath.normpath(folder))
    for ext in (".vmx", ".xml"):
        if shell.exists("%s/%s%s" % (folder, own, ext)):
            return own + ext
    return ""


def records_roots_of(parent: str) -> List[str]:
    """Where the restores into `parent` keep their records (records_root), and `parent` itself: the
    folders `cleanup --kvm PARENT` sweeps, so a `restore --to PARENT/NAME` on a datastore, recorded at
    its root, is found from the folder the admin restored into."""
    parent = posixpath.normpath(parent)
    return sorted({parent, records_root(parent + "/" + RESTORING)})


def records_root(folder: str) -> str:
    """Where the record of a restore's folder `folder` is kept, and sweep looks: its datastore's root, or
    (a KVM restore's folder, on no datastore) the folder it is in."""
    parts = posixpath.normpath(folder).split("/")
    return "/".join(parts[:4]) if folder.startswith("/vmfs/volumes/") and len(parts) > 4 else "/".join(parts[:-1])
