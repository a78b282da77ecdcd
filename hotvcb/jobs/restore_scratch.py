"""A restore's scratch folder on the target datastore, and finding those of restores that died.

A `.gz` backup is unpacked, a repository backup written out as a folder, a KVM backup converted
to VMDKs in `<target>/.hotvcb-extract-<pid>-<time>-<run>/` before the ordinary restore reads it,
and the restore removes the folder when it ends. A SIGKILLed one cannot: a whole backup's size
stays behind, maybe in a folder of the admin's choosing (`--datastore datastore1/restored`).

So the restore first writes its run record (runid.py) and the folder's path into
`<datastore root>/<folder name>.owner`, the one place `hotvcb cleanup` looks (the root of every
datastore of the host; a KVM restore's target folder, which is no datastore, holds its records
itself, and there the next KVM restore and `hotvcb cleanup --kvm DIR` look); the folder is made
after its record and removed before it, so no folder of ours is without one. Cleanup removes a
folder only when its restore is provably dead: recorded on this machine by a process that is no
longer the hotvcb it records (leftovers.owner_alive, as for snapshots and markers: its pid may be
another hotvcb's now, told by the process's start time where the record has it). One whose process
cannot be told from here (another pid namespace of this machine, a process /proc hides) is judged by
its heartbeat, as one of another host id. One recorded on another
machine (a datastore shared over NFS) is reported and left: its pid means nothing here. A folder
with our prefix and no record (an older hotvcb's) is reported and left too; so is a record naming a
folder outside its datastore or not named as make() names one (forged, garbage: cleanup deletes
what a record names). A record is read with Shell.read_regular: anyone who can write a datastore
root can plant a FIFO (a plain read waits forever), a device or a symlink there.

The VM folder a restore clones into, `<name>.hotvcb-restoring` (RESTORING, below), is as
big and is recorded the same way (Records.claim, release), but its name is not unique: a later
restore under that name makes a folder of the same path, and two restores of one name may claim it
at once. So its record is named by the folder's path (`.hotvcb-restoring-<digest>.owner`, distinct
for two targets' folders of one name) and a new restore writes its record over a dead one's
(atomically, write_text) before it makes the folder, which must not exist yet (make_new_dir): a
dead record is gone before a later folder appears, so it can never name that folder to cleanup. A
restore that finds the folder there (another restore's, running or killed) refuses before it writes
anything, so the record, that restore's, stays for cleanup to find. Of two restores that both found
no folder and both wrote their record, the one make_new_dir refuses removes the record only while
it holds its own text, and the maker, once its folder is made, writes its record again if another's
replaced it; and a restore removes its record at the end only while it holds its own text (once the
folder got its final name, a later restore may make the folder anew and record it). Cleanup looks at
the folder before it reads the record a second time (_seen_dead), after it has said what it removes
(a log held by a full pipe holds no verdict), so a later restore's record and folder made while it
decides are seen, and a dead record whose folder was not there only loses its record. The folder is
then renamed to a scratch folder of the cleanup's own (Records.take) and the record read a third
time before anything is deleted (_remove_dead): unchanged, what was renamed is the dead restore's,
removed where no restore or other cleanup looks; replaced, it goes back. No lock is shared by
restores and cleanups, so windows stay where nothing of a live restore is deleted: cleanup removing a
dead record just as a later restore replaces it, or of two restores racing for one folder the loser
writing its record after the maker's last look and then removing it, leaves the maker's folder
without one (kept by cleanup, if that restore is killed too); a live folder renamed in the instant
between the last look and the rename is back under its name a moment later (a restore writing a new
file into it right then fails, and removes it as it would on any failure). Only an admin removing a
dead restore's folder by hand while cleanup removes it, and a new restore remaking it in between,
could lose a folder.

A record is the run's line and `path=<folder>`, or `path-quoted=<folder, percent-encoded>` for a
path with a line break (record_text): a target folder may hold one (a VM name no longer may), which
would end the line.

A pid proves a restore dead only on the host that ran it, and hostnames are not unique: two ESXi
hosts sharing an NFS datastore are often both `localhost`. So a record also carries the host's id
(runid.host_id on the hypervisor host, /etc/machine-id for a KVM restore on this machine),
and the restore touches its records every lock.HEARTBEAT seconds while they exist (Records). A
record of this machine's name is judged by its pid only when its host id is ours; one with
another id (another host of that name, or ours before a reboot: ESXi keeps its id on a ramdisk)
or none (an older hotvcb's) is a dead restore's only once its heartbeat is lock.STALE_AFTER old
as well, by the datastore's own clock (leftovers.volume_age).
"""

import hashlib
import posixpath
import re
import threading
import time
from typing import Callable, Iterable, Optional, Set

from ..errors import HostError, HotvcbError
from ..pids import hotvcb
from ..runid import RunId, host_id, parse
from ..shell import Shell
from ..store.lock import HEARTBEAT, STALE_AFTER
from .leftovers import owner_alive, volume_age
from .. import lazyre

# here, not in restore_plan.py which makes the folder: `cleanup` would import the planner (backup checks,
# conversions: ~15 ms) for this one name
RESTORING = ".hotvcb-restoring"
PREFIX = ".hotvcb-extract-"
RECORD = ".owner"  # appended to the folder's name, at the datastore's root
OWN_FILES = 2  # a restore's own files beside a folder it fills, for its room check: the record, a write's temp
RESTORING_RECORD = RESTORING + "-"  # + the digest of the folder's path + RECORD
TAKEN_OVER = "%s: a new restore took it over meanwhile; leaving it"
RECORD_MAX = 4096  # a record is two short lines; anything planted is read no further
_PATH = lazyre.compile(r"^path=(/.+)$", re.M)
_QUOTED_PATH = lazyre.compile(r"^path-quoted=(\S+)$", re.M)  # a path holding a line break (a target folder may)
_NAME = lazyre.compile(r"^%s\d+-\d+-[0-9a-f]+$" % re.escape(PREFIX))  # as make() names a folder


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


def on_host(shell: Shell, run_dir: str) -> Records:
    """The records of a restore onto a hypervisor host: its id is the one its run lock's holders
    record (runid.host_id), so `hotvcb cleanup`, holding that lock, knows them as its host's."""
    def ident() -> str:
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
        name = RESTORING_RECORD + hashlib.sha1(path.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return "%s/%s%s" % (root, name, RECORD)


def records_root(folder: str) -> str:
    """Where the record of a restore's folder `folder` is kept, and sweep looks: its datastore's root, or
    (a KVM restore's folder, on no datastore) the folder it is in."""
    parts = posixpath.normpath(folder).split("/")
    return "/".join(parts[:4]) if folder.startswith("/vmfs/volumes/") and len(parts) > 4 else "/".join(parts[:-1])


def sweep(shell: Shell, roots: Iterable[str], log, me: RunId, dry_run: bool = False) -> int:
    """Remove the scratch folders of dead restores recorded in the roots; how many were removed
    (would be, dry run). One that cannot be is logged as an error."""
    found = 0
    taker = Records(shell, lambda: me.host, RunId.new().with_process_start().on_host(me.host))  # names of its own
    for root in sorted({r.rstrip("/") for r in roots}):
        try:
            entries = shell.listdir(root) if shell.isdir(root) else []
        except HostError as err:
            log.warning("cannot look for restores' scratch folders in %s: %s" % (root, err))
            continue
        for entry in entries:
            if _RECORD_TEMP.match(entry):
                found += _remove_dead_temp(shell, root + "/" + entry, log, me, dry_run)
                continue
            if not entry.startswith((PREFIX, RESTORING_RECORD)):
                continue
            if not entry.endswith(RECORD):
                if entry.startswith(PREFIX) and entry + RECORD not in entries:
                    log.warning("%s/%s: a restore's scratch folder without its record (an older hotvcb's?); "
                                "leaving it -- remove it by hand if no restore is running" % (root, entry))
                continue
            try:
                text = shell.read_regular(root + "/" + entry, RECORD_MAX)
            except HostError as err:
                log.warning("%s -- leaving it" % err)
                continue
            owner, folder = parse(text), recorded_path(text)
            name = folder.rsplit("/", 1)[-1]
            if owner is None or not _named_ours(name) or record_of(folder).rsplit("/", 1)[-1] != entry:
                log.warning("%s/%s: not a record hotvcb wrote; leaving it" % (root, entry))
                continue
            if not _inside(shell, folder, root):
                log.warning("%s/%s names %s, outside this datastore (through a symlink?); leaving it -- remove "
                            "both by hand if no restore is running" % (root, entry, folder))
                continue
            if not owner.same_machine(me):
                log.warning("%s: %s of a restore on %s (%s); leaving it to a cleanup there"
                            % (folder, _kind(name), owner.machine, owner))
                continue
            alive = owner_alive(owner, me)
            if alive:
                log.info("%s: %s of a running restore (%s); leaving it" % (folder, _kind(name), owner))
                continue
            beat = _heartbeat_fresh(shell, root, entry, owner, me, by_pid=alive is False)
            if beat is not None and alive is None:
                log.warning("%s: %s of a restore whose process cannot be told from here (another pid namespace, "
                            "or hidden by /proc: %s), touched %d s ago; leaving it (a cleanup takes it once "
                            "untouched for %d s)" % (folder, _kind(name), owner, beat, STALE_AFTER))
                continue
            if beat is not None:
                log.warning("%s: %s of a restore whose record names %s, not this host (%s), touched %d s ago; "
                            "leaving it (another host named %s? a cleanup takes it once untouched for %d s)"
                            % (folder, _kind(name), "host id " + owner.host if owner.host else "no host id",
                               me.host or "no id", beat, owner.machine, STALE_AFTER))
                continue
            if _seen_dead(shell, root + "/" + entry, text, folder) is None:
                log.info(TAKEN_OVER % folder)
                continue
            if dry_run:
                found += 1
                log.info("would remove %s, left by a restore that died (%s)" % (folder, owner))
                continue
            # said before the last look: a log held (`cleanup | less`) must not hold a verdict
            log.warning("removing %s, left by a restore that died (%s)" % (folder, owner))
            try:
                removed = _remove_dead(shell, taker, root + "/" + entry, text, folder)
            except HostError as err:  # one stuck folder must not keep the others
                log.error("%s -- left with its record for the next cleanup; remove it by hand" % err)
                continue
            if removed:
                found += 1
            else:
                log.info(TAKEN_OVER % folder)
    return found


def _remove_dead(shell: Shell, taker: Records, record: str, text: str, folder: str) -> bool:
    """Remove a dead restore's folder, then its record; False when a later restore took them over.

    The folder is renamed to a scratch folder of this cleanup's (Records.take) and the record read
    again before anything is deleted: a later restore writes its record before it makes its folder,
    so the record unchanged after the rename makes what was renamed the dead restore's, and it is
    removed where no restore looks (one may make the folder's name anew meanwhile). A record
    replaced after all gets its folder back. A folder another cleanup took first counts as removed."""
    present = _seen_dead(shell, record, text, folder)
    if present is None:
        return False
    if present:
        try:
            taken = taker.take(folder)  # type: Optional[str]
        except HostError:
            if shell.exists(folder):
                raise
            taken = None  # another cleanup took it
        if taken is not None and _replaced(shell, record, text):
            try:
                shell.rename(taken, folder)
            except HostError as err:
                raise HostError("%s: a running restore's folder, moved to %s by mistake: move it back by hand (%s)"
                                % (folder, taken, err)) from err
            taker.release(taken)
            return False
        if taken is not None:
            taker.remove(taken)
    if not _replaced(shell, record, text):
        shell.remove_tree(record)  # a folder made from now on is a later restore's
    return True


def _replaced(shell: Shell, record: str, text: str) -> bool:
    """Whether the record now holds another restore's (one unreadable counts: it is not the dead
    one's); a record removed (by another cleanup) is not."""
    if not shell.exists(record):
        return False
    try:
        return shell.read_regular(record, RECORD_MAX) != text
    except HostError:
        return True


def _heartbeat_fresh(shell: Shell, root: str, entry: str, owner: RunId, me: RunId, by_pid: bool) -> Optional[float]:
    """None when the record's pid is proof enough (`by_pid`: it told, and its host id is ours) or its
    heartbeat is stale; else the seconds since it was touched."""
    if by_pid and owner.host and owner.host == me.host:
        return None
    try:
        age = volume_age(shell, root + "/" + entry, root, me)
    except HostError:
        age = 0.0  # cannot tell: not stale
    return None if age is None or age > STALE_AFTER else age


def _seen_dead(shell: Shell, record: str, text: str, folder: str) -> Optional[bool]:
    """Whether the dead restore's folder is there; None when its record changed (a new restore
    of that folder took it over). The folder is looked at before the record is read again: while
    the dead restore's folder is there no later restore can make one at that path (claim), and a
    later one replaces the record before it makes its folder, so the record unchanged after the
    look makes the folder seen the dead restore's."""
    present = shell.exists(folder)
    try:
        return present if shell.read_regular(record, RECORD_MAX) == text else None
    except HostError:
        return None


# the temp file Shell.write_text writes a record through: "." + the record's name + "." + temp_tag() + ".tmp"
_RECORD_TEMP = lazyre.compile(r"^\.(?:%s|%s).*%s\.(\d+)-\d+-[0-9a-f]+\.tmp$" % (
    re.escape(PREFIX), re.escape(RESTORING_RECORD), re.escape(RECORD)))


def _remove_dead_temp(shell: Shell, path: str, log, me: RunId, dry_run: bool) -> int:
    """A record's temp file left by a restore killed while it wrote the record (before the rename): it
    holds the record's text, so its owner is known; removed once that owner is dead on this host.

    One killed between creating the file and writing its text (seen under SIGKILL) is empty: its name
    still carries the writer's pid (shell.temp_tag), so it goes at once when no hotvcb of that pid lives
    here (one /proc hides from us, once old). A writer on another machine of a shared datastore is in that
    window for microseconds; if a cleanup takes its file then, that restore's rename fails and it ends with
    an error, not a wrong record.
    Any other unreadable text goes once older than a record can be in writing."""
    try:
        text = shell.read_regular(path, RECORD_MAX)
    except HostError:
        return 0
    owner = parse(text)
    if owner is not None and (not owner.same_machine(me) or owner_alive(owner, me) is not False):
        return 0
    if owner is None and not (text == "" and not _writer_alive(path)) and (shell.age(path) or 0) < STALE_AFTER:
        return 0
    if dry_run:
        log.info("would remove %s, a record a dead restore was writing" % path)
        return 1
    log.warning("removing %s, a record a dead restore was writing" % path)
    try:
        shell.remove_tree(path)
    except HostError as err:
        log.error("%s -- remove it by hand" % err)
        return 0
    return 1


def _writer_alive(path: str) -> bool:
    found = _RECORD_TEMP.match(path.rsplit("/", 1)[-1])
    return found is None or hotvcb(int(found.group(1))) is not False


def _named_ours(name: str) -> bool:
    """A folder named as make() or a restore (claim) names one: cleanup deletes what a record names."""
    return bool(_NAME.match(name)) or (name.endswith(RESTORING) and len(name) > len(RESTORING))


def _kind(name: str) -> str:
    return "unfinished VM folder" if name.endswith(RESTORING) else "scratch folder"


def _inside(shell: Shell, path: str, root: str) -> bool:
    """path is a folder of the datastore whose root holds its record, as make() writes it: a
    record naming a folder elsewhere (another datastore, `..`, through a symlinked folder) is
    forged or garbage, and cleanup deletes what its record names."""
    if any(part in ("", ".", "..") for part in path.split("/")[1:]):
        return False
    try:
        real_root, parent = shell.realpath(root).rstrip("/"), shell.realpath(path.rsplit("/", 1)[0])
    except HostError:
        return False
    return parent == real_root or parent.startswith(real_root + "/")
