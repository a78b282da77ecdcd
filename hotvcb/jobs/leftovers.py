"""Find and undo what a dead run left behind — only what provably belongs to a dead run.

A SIGKILLed or power-cut run leaves its snapshot on the VM (which grows
until the datastore is full), maybe a VM it powered off, and a `-partial`
backup folder. Each carries its run's record (runid.py): in the snapshot
description, in the power-off marker, in the folder's owner file.

Why each removal is safe:
- Snapshots and power-off markers live on the host, and every run that makes
  them holds that host's lock (store/lock.py) for as long as they exist. We
  hold it now, so one of ours made by any other run is a dead run's.
- `-partial` folders live on the backup volume, which other hosts may share
  (or on the volume a per-VM file chose: a marker in the VM's folder names it
  while its backup is written, as `hotvcb cleanup` is given no -c).
  A folder whose record names this host (and another run) is a dead run's,
  for the same reason. One of another host is dead only when its owner file
  has missed its heartbeats for lock.STALE_AFTER seconds; one whose owner file
  is dated ahead of the volume's clock (the NAS's clock just stepped back: a
  live writer's last beat is, until its next) cannot be told, and is kept for a
  later run (clockage.heartbeat).
Whose a record is, a live run's or a dead one's (and one whose process
cannot be told from here), is ownership.py's rule: never removed on a guess.
User snapshots (any other name) and finished backups are never touched.
"""

import time
from typing import Callable, List, Mapping, NamedTuple, Optional

from .. import interrupt
from ..clockage import heartbeat
from ..errors import HotvcbError, SnapshotKept, Unconsolidated, VmStopped
from ..hosts.base import Hypervisor
from ..model import NO_DATA_FILE, Snapshot
from ..runid import RECORD_MAX, RunId, parse
from ..settings import Settings
from ..shell import Shell
from ..store import layout
from ..store.lock import STALE_AFTER
from ..store.rotation import finish_deleting
from ..store.seal import OWNER, owner_of
from ..treeview import ScannedShell
from .ownership import NONE_DEAD, made_at, owner_alive, volume_age
from .. import lazyre
from ..namefit import fit

SNAPSHOT_PREFIX = "hotvcb-snapshot-"
POWER_MARKER = ".hotvcb-powered-off"  # + ".<vmx file name>", in the VM's folder while we hold it powered off
VOLUME_MARKER = ".hotvcb-backup-volume"  # + ".<vmx file name>": the per-VM volume a backup of it is written to
# + ".<vmx file name>.run", in the VM's folder from our snapshot request until that snapshot is removed (or the
# host refused it): hostd's task outlives a killed run, and the next run waits for what it may still make
SNAPSHOT_MARKER = ".hotvcb-snapshot-asked"
SHUTDOWN_GRACE = 30 * 60.0  # a guest asked to shut down may take this long (a marker this young is kept)
UNTOLD = "may still be running (its process cannot be told from here: another pid namespace, or hidden by /proc)"


# how hotvcb described its snapshots before run records (still ours to clean up)
_LEGACY = lazyre.compile(r"^hotvcb backup, job .*, pid \d+, host \S+$")


def is_ours(snap: Snapshot) -> bool:
    """Made by hotvcb: our name *and* our record in the description (a name alone is a user's
    choice: `hotvcb-snapshot-before-upgrade` is theirs)."""
    if not snap.name.startswith(SNAPSHOT_PREFIX):
        return False
    return parse(snap.description) is not None or bool(_LEGACY.match(snap.description.strip()))


def remove_our_snapshots(host: Hypervisor, vm, log, run: RunId, dry_run: bool = False,
                         snaps: Optional[List[Snapshot]] = None, dead: Mapping[str, float] = NONE_DEAD,
                         kept: Optional[List[str]] = None) -> int:
    """Remove our snapshots of dead runs; how many (a dry run's: found); `snaps`: the VM's list if the caller
    just read it (one `snapshot.get` then serves the leftover check and the pre-flight); `dead`: run ids whose
    lock was taken over as gone, with when (HostLock.takeovers). One the driver keeps because it holds data
    (SnapshotKept) is not removed: not counted, and its warning goes to `kept` (a backup's warnings, so the run
    ends WARNING and the admin learns of it), besides the log; one gone from the tree whose disks the host left
    needing consolidation (Unconsolidated) is warned of the same way, and counted: cleanup's "1 leftover(s)
    removed" for two gone read as one still there."""
    removed = 0
    listed = host.snapshots(vm) if snaps is None else snaps
    ids = [s.id for s in listed]
    for snap in listed:
        if snap.id and ids.count(snap.id) > 1:
            log.warning("%s: snapshot id %s appears more than once in the host's listing; not touching it"
                        % (vm.name, snap.id))
            continue
        if not snap.name.startswith(SNAPSHOT_PREFIX):
            continue
        if not is_ours(snap) and snap.state == NO_DATA_FILE:
            log.warning("%s: %s" % (vm.name, no_data_file(snap)))
            continue
        if not is_ours(snap):
            log.warning("%s: snapshot %r (id %s) is named like ours but carries no hotvcb run record; leaving it"
                        % (vm.name, snap.name, snap.id))
            continue
        owner = parse(snap.description)
        if owner is not None and owner.run == run.run:
            continue
        alive = snapshot_run_alive(snap, run, dead)
        if alive is not False:
            log.warning("%s: snapshot %r (id %s) belongs to %s, which %s; leaving it%s"
                        % (vm.name, snap.name, snap.id, owner, "is still running" if alive else UNTOLD,
                           NO_SNAPSHOT if snap.state == NO_DATA_FILE else ""))
            continue
        who = str(owner) if owner else "an earlier hotvcb run"
        if dry_run:
            removed += 1
            log.info("%s: would remove leftover snapshot %r (id %s) of %s" % (vm.name, snap.name, snap.id, who))
            continue
        # "gone", not "did not finish": a run that kept an overlay holding data finished (WARNING)
        log.warning("%s: found leftover snapshot %r (id %s) of %s, which is gone; removing it"
                    % (vm.name, snap.name, snap.id, who))
        try:
            host.remove_snapshot(vm, snap, 30 * 60.0)
        except SnapshotKept as err:  # history that holds data: named, and the VM's backup goes on
            log.warning(str(err))
            if kept is not None:
                kept.append(str(err))
            removed += isinstance(err, Unconsolidated)  # gone from the VM's tree: its disks are what is left
        else:
            removed += 1
    return removed


NO_SNAPSHOT = " (only its description, no overlay: no snapshot is on the disks, so the VM is backed up)"


def no_data_file(snap: Snapshot) -> str:
    """What `cleanup`, a backup and `status` say of a snapshot's description file with no overlay and no run
    record (emptied or cut by a power cut after a killed run wrote it, or someone's note): no snapshot, so no
    reason to refuse the VM, but no run's either, so not ours to delete; named, with how to remove it."""
    return ("%s: named like a hotvcb snapshot's description, but no overlay is beside it and it carries no "
            "hotvcb run record (cut short by a power cut, or someone's note): no snapshot, nothing of the guest's "
            "is in it, and it does not stop the VM's backup; leaving it: remove it by hand (`rm`) unless it is a "
            "note of yours" % snap.id)


def snapshot_run_alive(snap: Snapshot, run: RunId, dead: Mapping[str, float] = NONE_DEAD) -> Optional[bool]:
    """Whether the run whose record our snapshot `snap` carries still runs (ownership.owner_alive; None: it
    cannot be told from here; False for one without a record). The one judgement `cleanup` and `status` make
    of it: judged by one folder's run lock alone, `status` of a second QMP folder called the snapshot of a
    run copying for the other folder a dead run's, and paged the admin to clean it up."""
    owner = parse(snap.description)
    return owner_alive(owner, run, dead, lambda: asked_at(snap)) if owner is not None else False


def asked_at(snap: Snapshot) -> Optional[float]:
    """The time our snapshot's name says: when its backup began (jobs/backup.py), by the host's wall clock
    (Shell.now), so no later than it was asked for; read in this machine's time zone (on the host itself, as a
    run on the host is; a client in another zone driving it file by file is off by the difference). A run stopped between its backup's start and its snapshot is not told by it:
    it reads its lock right before it asks (store/lock.py: HostLock.check), so it asks for none once taken over."""
    try:
        return layout.stamp_time(snap.name[len(SNAPSHOT_PREFIX):]).timestamp()
    except (ValueError, OverflowError, OSError):
        return None


def power_marker(vm) -> str:
    """One per VM, named after its .vmx: a folder may hold several VMs, which BACKUP_PARALLEL powers
    down at once (one VM's end must not erase another's marker, nor a marker power on its neighbour)."""
    return _marker(vm, POWER_MARKER)


def late_wait(s: Settings) -> float:
    """How much longer than SNAPSHOT_TIMEOUT the run that asked for a snapshot looks for it (jobs/backup_end.py):
    as long again, at most a minute."""
    return min(60.0, s.snapshot_timeout * 60.0)


# How long one run waits for a dead run's request (await_snapshot), however young it is: a run killed between
# its marker and its request (or a request hostd dropped) asked for nothing that will come, and the nightly
# backup must not stand still for SNAPSHOT_TIMEOUT (15 min by default) on it; a request still young then keeps
# its marker, and the next run (or `hotvcb cleanup`) looks again, as every run's sweep removes our snapshots.
PENDING_LOOK = 60.0


def snapshot_patience(s: Settings) -> float:
    """How long after its request a snapshot a dead run asked for is waited for (await_snapshot): as long as
    that run would have looked for it."""
    return s.snapshot_timeout * 60.0 + late_wait(s)


def snapshot_marker(vm) -> str:
    """One per VM, as power_marker; never ending as the VM's own file does (bare QEMU lists a folder's `.qmp`
    names as VMs, and a marker is left there while a killed run's request is pending)."""
    return _marker(vm, SNAPSHOT_MARKER, ".run")


def mark_snapshot_asked(host: Hypervisor, vm, run: RunId) -> None:
    host.shell.write_text(snapshot_marker(vm), run.text() + "\n")


def clear_snapshot_mark(host: Hypervisor, vm, log) -> None:
    """A failure only costs the next run a look (or its wait: await_snapshot): named, not raised."""
    try:
        host.shell.remove_tree(snapshot_marker(vm))
    except HotvcbError as err:
        log.warning("%s: could not remove %s: %s" % (vm.name, snapshot_marker(vm), err))


def await_snapshot(host: Hypervisor, vm, log, run: RunId, seen: List[Snapshot], wait: float, dry_run: bool = False,
                   dead: Mapping[str, float] = NONE_DEAD, patient: bool = True) -> bool:
    """A dead run asked for a snapshot of this VM that the host did not list (`seen`, read before its leftovers
    were removed): hostd's task outlives its caller, so the snapshot may still appear. Look for it until that
    request is `wait` seconds old (0: once), remove it if it shows, then drop the marker. True if one was removed.
    Without this, a quick next run ended all OK and the VM then ran on the dead run's snapshot until a later run.
    Not `patient` (a sweep of every VM, `hotvcb cleanup`): a request younger than that is kept for the next look."""
    path = snapshot_marker(vm)
    if not host.shell.exists(path):
        return False
    try:
        owner = parse(host.shell.read_regular(path, RECORD_MAX))
    except HotvcbError as err:  # not ours (we write a file): planted
        log.warning("%s: cannot read %s: %s; leaving it" % (vm.name, path, err))
        return False
    if owner is not None and (owner.run == run.run
                              or owner_alive(owner, run, dead, lambda: made_at(host.shell.age(path))) is not False):
        return False  # ours, or a live run's (or one whose pid cannot tell): it looks after its own request
    said = False
    give_up = time.monotonic() + PENDING_LOOK
    while owner is not None and not any(_made_by(s, owner) for s in seen):
        age = host.shell.age(path)
        young = heartbeat(age, wait)
        if young is False:
            break
        if young is None and time.monotonic() >= give_up:
            # dated ahead (a clock stepped back): how old the request is cannot be told, and waiting for the clock
            # to pass it would make every run wait a minute for as long; looked for once, a snapshot the host
            # makes later is a dead run's leftover the next run's sweep removes (remove_our_snapshots)
            log.warning("%s: %s's snapshot request is dated ahead of the host's clock (its age cannot be told) "
                        "and nothing appeared in %d s; going on" % (vm.name, owner, PENDING_LOOK))
            said = False
            break
        age = max(0.0, age or 0.0)
        if dry_run or not patient or time.monotonic() >= give_up:
            log.info("%s: %s is gone, and the snapshot it asked for has not appeared yet (the host may still make "
                     "it); %s" % (vm.name, owner, "the real run waits up to %d s for it" % min(wait - age, PENDING_LOOK)
                                  if dry_run else "keeping its marker for a later look"))
            return False
        if not said:
            log.warning("%s: %s is gone, and the snapshot it asked for has not appeared yet (the host may still "
                        "make it); waiting up to %d s for it, to remove it"
                        % (vm.name, owner, min(wait - age, PENDING_LOOK)))
            said = True
        if interrupt.pending():
            interrupt.raise_pending()
        time.sleep(1.0)
        seen = host.snapshots(vm)
        if any(_made_by(s, owner) for s in seen):
            remove_our_snapshots(host, vm, log, run, snaps=seen, dead=dead)
            clear_snapshot_mark(host, vm, log)
            return True
    if said:
        log.warning("%s: %s's snapshot has not appeared in %d s; going on" % (vm.name, owner, wait))
    if not dry_run:
        clear_snapshot_mark(host, vm, log)
    return False


def _made_by(snap: Snapshot, owner: RunId) -> bool:
    mine = parse(snap.description)
    return is_ours(snap) and mine is not None and mine.run == owner.run


def mark_powered_off(host: Hypervisor, vm, run: RunId) -> None:
    host.shell.write_text(power_marker(vm), run.text() + "\n")


def clear_power_mark(host: Hypervisor, vm) -> None:
    host.shell.remove_tree(power_marker(vm))


def volume_marker(vm) -> str:
    """One per VM, as power_marker: while its backup is written to a volume its per-VM file (-c) chose."""
    return _marker(vm, VOLUME_MARKER)


def _marker(vm, kind: str, tail: str = "") -> str:
    """`<kind>.<vmx file name><tail>` in the VM's folder, within the 255 bytes a name may have (namefit.fit)."""
    return "%s/%s" % (vm.folder, fit(kind + ".", vm.ref.vmx_path.rsplit("/", 1)[-1], tail))


def mark_volume(host: Hypervisor, vm, volume: str) -> None:
    host.shell.write_text(volume_marker(vm), volume + "\n")


def clear_volume_mark(host: Hypervisor, vm) -> None:
    host.shell.remove_tree(volume_marker(vm))


def marked_volume(host: Hypervisor, vm, log) -> Optional[str]:
    """The volume a killed run was writing the VM's backup to, where it is not the run's global one (a
    per-VM file's VM_BACKUP_VOLUME): `hotvcb cleanup` is given no -c, and must still find the `-partial`
    there. Read as a file anyone may have planted (no FIFO); one naming no absolute path is said and
    ignored."""
    path = volume_marker(vm)
    try:
        if not host.shell.exists(path):
            return None
        text = host.shell.read_regular(path, RECORD_MAX).strip()
    except HotvcbError as err:
        log.warning("%s: %s cannot be read (%s); a backup folder outside the backup volume is not looked for"
                    % (vm.name, path, err))
        return None
    if not text.startswith("/") or "\n" in text:
        log.warning("%s: %s names no backup volume; ignored" % (vm.name, path))
        return None
    return text


def _partials_elsewhere(host: Hypervisor, vm, volume: str, log, run: RunId, dry_run: bool,
                        dead: Mapping[str, float]) -> int:
    """The dead runs' `-partial` folders of the VM in the volume its marker names (marked_volume), and the
    marker once none is left there."""
    elsewhere = marked_volume(host, vm, log)
    if elsewhere is None:
        return 0
    found = 0
    if elsewhere.rstrip("/") != volume.rstrip("/"):
        found = remove_partials(host.shell, elsewhere, vm.name, log, run, dry_run, dead=dead)
        if dry_run or any(b.status == "partial" for b in layout.list_backups(host.shell, elsewhere, vm.name)):
            return found
    clear_volume_mark(host, vm)
    return found


def restore_power(host: Hypervisor, vm, log, run: RunId, dry_run: bool = False,
                  dead: Mapping[str, float] = NONE_DEAD) -> bool:
    """Power on a VM that a dead run powered off for its backup; True if there was one. One that a run whose pid
    cannot be told keeps off is named, as its snapshot is: the VM may be down for good."""
    path = power_marker(vm)
    if not host.shell.exists(path):
        return False
    try:
        owner = parse(host.shell.read_regular(path, RECORD_MAX))
    except HotvcbError as err:  # not ours (we write a file): a FIFO planted on an NFS datastore, a folder
        log.warning("%s: cannot read the power-off marker: %s; leaving the VM as it is" % (vm.name, err))
        return False
    if owner is not None and owner.run == run.run:
        return False
    alive = owner_alive(owner, run, dead, lambda: made_at(host.shell.age(path))) if owner is not None else False
    if alive:
        return False  # its run lives (its lock file was deleted under it): it powers the VM on itself
    if alive is None:
        log.warning("%s: %s powered it off for a backup and %s; leaving it as it is (now %s)"
                    % (vm.name, owner, UNTOLD, host.power_state(vm)))
        return False
    who = str(owner) if owner else "an earlier hotvcb run"
    state = host.power_state(vm)
    if dry_run:
        log.info("%s: %s powered it off for a backup and did not finish; would power it on (now %s)" % (vm.name, who, state))
        return True
    if state == "on":
        age = host.shell.age(path)
        # dated ahead: its age cannot be told, and a marker kept for as long would power on a VM the admin shuts
        # down meanwhile; the guest is on, so taken as having had its grace
        if heartbeat(age, SHUTDOWN_GRACE) and age is not None:
            # the guest may still be going down from that run's request: keep the marker, so the
            # run that finds it off powers it on
            log.info("%s: %s asked it to shut down %d s ago and is gone; it is still on, looking again next time"
                     % (vm.name, who, max(0.0, age)))
            return True
        log.info("%s: %s powered it off for a backup and did not finish; it is on again" % (vm.name, who))
    else:
        log.warning("%s: %s powered it off for a backup and did not finish; powering it on" % (vm.name, who))
        host.power_on(vm)
    clear_power_mark(host, vm)
    return True


def remove_partials(shell: Shell, volume: str, vm_name: str, log, run: RunId, dry_run: bool = False,
                    finish: Optional[Callable[[str], None]] = None, dead: Mapping[str, float] = NONE_DEAD) -> int:
    """Delete the -partial folders (and temp archives) of dead runs, and finish the removals of
    `-deleting` entries (by `finish`, else at once: rotation.finish_deleting); call only under the
    host lock. How many leftovers there were (a refused removal not counted)."""
    shell = ScannedShell(shell, layout.vm_root(volume, vm_name))  # one look at the VM's folder
    removed = 0
    for b in layout.list_backups(shell, volume, vm_name):
        if b.status != "partial":
            continue
        if not _partial_dead(shell, b.path, run, dead):
            log.info("%s: %s is being written by %s; leaving it" % (vm_name, b.path, owner_of(shell, b.path)))
            continue
        removed += 1
        if dry_run:
            log.info("%s: would remove unfinished backup %s" % (vm_name, b.path))
            continue
        log.warning("%s: removing unfinished backup %s left by a run that died" % (vm_name, b.path))
        shell.remove_tree(b.path)
    root = layout.vm_root(volume, vm_name)
    if shell.isdir(root):
        for entry in shell.listdir(root):
            if entry.startswith(".") and entry.endswith(".gz.tmp"):
                partial = root + "/" + entry[1 : -len(".gz.tmp")] + layout.PARTIAL
                if shell.exists(partial) and not _partial_dead(shell, partial, run, dead):
                    continue
                removed += 1
                if dry_run:
                    log.info("%s: would remove unfinished archive %s/%s" % (vm_name, root, entry))
                    continue
                log.warning("%s: removing unfinished archive %s/%s left by a run that died" % (vm_name, root, entry))
                shell.remove_tree(root + "/" + entry)
    return removed + finish_deleting(shell, volume, vm_name, log, finish, dry_run)


def _partial_dead(shell: Shell, partial: str, run: RunId, dead: Mapping[str, float]) -> bool:
    owner_file = partial + "/" + OWNER
    try:
        owner = parse(shell.read_regular(owner_file, RECORD_MAX)) if shell.exists(owner_file) else None
    except HotvcbError:
        owner = None
    if owner is not None:
        if owner.run == run.run:
            return False
        folder = partial.rsplit("/", 1)[0]
        alive = owner_alive(owner, run, dead, lambda: made_at(volume_age(shell, owner_file, folder, run)))
        if alive:
            return False
        if alive is False and owner.host and owner.host == run.host:
            return True  # this host's run, and we hold this host's lock (one whose pid cannot tell: by its heartbeat)
    age = volume_age(shell, owner_file if shell.exists(owner_file) else partial, partial.rsplit("/", 1)[0], run)
    return heartbeat(age, STALE_AFTER) is False  # dated ahead: cannot tell, kept


class HostCleanup(NamedTuple):
    found: int  # leftovers removed (a dry run's: found)
    complete: bool  # no VM's cleanup failed: the dead runs' record may go (HostLock.sweep_done)


def _kept_for(host: Hypervisor, path: str, dead: Mapping[str, float]) -> bool:
    """A dead run's marker kept for a later look (a power-off marker while its guest may still be going down,
    restore_power; a snapshot request the host may still finish, await_snapshot): the next run finishes it only
    if it still knows that run is dead."""
    try:
        owner = parse(host.shell.read_regular(path, RECORD_MAX)) if host.shell.exists(path) else None
    except HotvcbError:  # a planted FIFO: restore_power named it already
        return False
    return owner is not None and owner.run in dead


def cleanup_host(host: Hypervisor, volume: str, log, run: RunId, dry_run: bool = False,
                 dead: Mapping[str, float] = NONE_DEAD, snapshot_wait: float = 0.0) -> HostCleanup:
    """`hotvcb cleanup`: every VM on the host, every leftover of a dead run (`dead`: as owner_alive's).
    Not complete where a VM's failed, or a dead run's VM is left for the next look (its guest may still be
    going down, or its snapshot request is younger than `snapshot_wait`; no process runs it: VmStopped, named in a
    warning, its dead runs' `-partial` folders removed): a dead run whose pid cannot tell is known dead only by
    the record the callers keep then, and without it the next cleanup would keep what it left for good."""
    count, complete = 0, True
    for ref in host.list_vms():
        try:
            try:
                vm = host.load_vm(ref)
            except VmStopped as err:  # no process runs it: nothing of a running VM to undo, every night it stays down
                log.warning("%s: not looked at: %s" % (ref.name, err))
                count += remove_partials(host.shell, volume, ref.name, log, run, dry_run, dead=dead)
                complete = False  # a dead run's snapshot of it, if any, is judged once it runs again
                continue
            snaps = host.snapshots(vm)
            count += remove_our_snapshots(host, vm, log, run, dry_run, snaps, dead)
            count += int(await_snapshot(host, vm, log, run, snaps, snapshot_wait, dry_run, dead, patient=False))
            count += int(restore_power(host, vm, log, run, dry_run, dead))
            count += remove_partials(host.shell, volume, ref.name, log, run, dry_run, dead=dead)
            count += _partials_elsewhere(host, vm, volume, log, run, dry_run, dead)
            if dead and not dry_run and any(_kept_for(host, path, dead) for path in (power_marker(vm),
                                                                                     snapshot_marker(vm))):
                complete = False
        except HotvcbError as err:
            log.error("%s: cleanup failed: %s" % (ref.name, err))
            complete = False
    return HostCleanup(count, complete)

