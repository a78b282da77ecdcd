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

Here: our snapshots and power-off markers. A snapshot request still pending is snapshot_asked.py's, a dead
run's `-partial` folders partials.py's, every VM of a host (`hotvcb cleanup`) host_cleanup.py's.
"""

from __future__ import annotations

import re
import time
from typing import List, Mapping, Optional

from ..clockage import heartbeat
from ..errors import HotvcbError, SnapshotKept, Unconsolidated
from ..hosts.base import NO_BOOT_STAMP, Hypervisor
from ..model import NO_DATA_FILE, Snapshot
from ..runid import RECORD_MAX, RunId, parse
from ..store import layout
from .ownership import NONE_DEAD, made_at, owner_alive
from .snapshot_text import asked_epoch
from .. import lazyre
from ..namefit import fit

SNAPSHOT_PREFIX = "hotvcb-snapshot-"
POWER_MARKER = ".hotvcb-powered-off"  # + ".<vmx file name>", in the VM's folder while we hold it powered off
BOOT = "boot "  # starts the power-off marker's second line: the VM's boot stamp (a digest) at the power off
_STAMPED = lazyre.compile(r"^" + BOOT + r"([0-9a-f]{32})$", re.M)
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
    if owner is None:
        return False
    asked = asked_at(snap)  # dated ahead (a writer's clock ahead, an edited epoch): no time, as made_at says
    return owner_alive(owner, run, dead, lambda: made_at(None if asked is None else time.time() - asked))


def asked_at(snap: Snapshot) -> Optional[float]:
    """The time our snapshot's name says: when its backup began (jobs/backup.py), by the host's wall clock
    (Shell.now), so no later than it was asked for; read in this machine's time zone (on the host itself, as a
    run on the host is; a client in another zone driving it file by file is off by the difference). A run stopped between its backup's start and its snapshot is not told by it:
    it reads its lock right before it asks (store/lock.py: HostLock.check), so it asks for none once taken over.
    The epoch its description carries comes first (snapshot_text.py): the same in every zone. Either may be
    dated ahead of the clock (written by a client or container whose clock ran ahead, or edited): returned as
    it says, for `status` to name; whether its run is alive goes by ownership.made_at, which takes it for no
    time (snapshot_run_alive), or a dead run's snapshot would count as made after its lock's takeover."""
    asked = asked_epoch(snap.description)
    if asked is not None:
        return asked
    try:
        return layout.stamp_time(snap.name[len(SNAPSHOT_PREFIX):]).timestamp()
    except (ValueError, OverflowError, OSError):
        return None


def power_marker(vm) -> str:
    """One per VM, named after its .vmx: a folder may hold several VMs, which BACKUP_PARALLEL powers
    down at once (one VM's end must not erase another's marker, nor a marker power on its neighbour)."""
    return vm_marker(vm, POWER_MARKER)


def vm_marker(vm, kind: str, tail: str = "") -> str:
    """`<kind>.<vmx file name><tail>` in the VM's folder, within the 255 bytes a name may have (namefit.fit)."""
    return "%s/%s" % (vm.folder, fit(kind + ".", vm.ref.vmx_path.rsplit("/", 1)[-1], tail))


def mark_powered_off(host: Hypervisor, vm, run: RunId) -> None:
    """The marker naming `run`, and the VM's boot stamp as it is now (its power off keeps it)."""
    host.shell.write_text(power_marker(vm), run.text() + "\n" + _boot_line(host, vm))


def restamp_power_mark(host: Hypervisor, vm, log, stamped: bool = True) -> None:
    """The marker made to record the VM's boot stamp as it is now, after a start of ours (a power on that failed:
    a disk missing, the vmx started, and its log with it, before it gave up), else the next run would take it for
    someone else's and leave the VM off; or (not `stamped`) none, before a step that may start it (a cold
    snapshot: libvirt starts a shut-down domain paused for its backup job), so a kill meanwhile leaves a marker
    that powers it on whatever its stamp, as one of a hotvcb before stamps does."""
    path = power_marker(vm)
    try:
        record = host.shell.read_regular(path, RECORD_MAX).split("\n", 1)[0]
        host.shell.write_text(path, record + "\n" + (_boot_line(host, vm) if stamped else ""))
    except HotvcbError as err:
        log.warning("%s: could not update its boot stamp in %s (%s); should the next run find it off, it may "
                    "take it as started by someone else and leave it off" % (vm.name, path, err))


def _boot_line(host: Hypervisor, vm) -> str:
    """The marker's line naming the VM's boot stamp (a digest: the stamp is the host's text); "" where the host
    cannot tell, and the marker then powers the VM on whatever happened since, as one of a hotvcb before
    stamps does."""
    try:
        return "%s%s\n" % (BOOT, _digest(host.boot_stamp(vm)))
    except (HotvcbError, OSError):  # OSError: a log the driver could not read (libvirt's, not this user's to read)
        return ""


def _digest(stamp: str) -> str:
    import hashlib  # a power-off marker's, not every run's start (tests/test_startup_imports.py)

    return hashlib.sha256(stamp.encode("utf-8", "surrogateescape")).hexdigest()[:32]


def booted_since(host: Hypervisor, vm, marker: str, log=None) -> bool:
    """Whether the VM has been powered on since its power-off `marker` (the file's text) was written: its boot
    stamp is another (by hand, HA). False where that cannot be told, and the marker stands: no stamp recorded (an
    older hotvcb's marker), none now (NO_BOOT_STAMP: a power on always leaves one, so its log was deleted or
    rotated away, not told a power on), or the host cannot say the stamp now (said in `log`, if given)."""
    recorded = _STAMPED.search(marker)
    if recorded is None:
        return False
    try:
        now = host.boot_stamp(vm)
        return now != NO_BOOT_STAMP and _digest(now) != recorded.group(1)
    except (HotvcbError, OSError) as err:  # OSError: a log the driver could not read
        if log is not None:
            log.warning("%s: cannot tell whether it was powered on since its power-off marker was written (%s); "
                        "taking it as not" % (vm.name, err))
        return False


def clear_power_mark(host: Hypervisor, vm) -> None:
    host.shell.remove_tree(power_marker(vm))


def _drop_power_mark(host: Hypervisor, vm, log) -> None:
    """A marker that no longer powers anything on removed; one that cannot be (a read-only datastore) is said, not
    raised: the backup or cleanup that found it goes on, and the next run, finding the same stamp, says so again."""
    try:
        clear_power_mark(host, vm)
    except HotvcbError as err:
        log.warning("%s: could not remove its power-off marker (%s)" % (vm.name, err))


def dead_power_mark(host: Hypervisor, vm, log, run: RunId, dead: Mapping[str, float] = NONE_DEAD,
                    dry_run: bool = False) -> Optional[str]:
    """Who left the VM's power-off marker, when that run is gone (restore_power; a VM of VM_SHUTDOWN_ORDER found
    off, jobs/power.py); None when there is none, it is `run`'s own or a live run's, or cannot be read or told
    (said: the VM may be down for good); None too when the VM has been powered on since (booted_since): the
    admin's last word stands, whether the VM is on or off now, and the marker goes (not in a dry run)."""
    path = power_marker(vm)
    if not host.shell.exists(path):
        return None
    try:
        text = host.shell.read_regular(path, RECORD_MAX)
    except HotvcbError as err:  # not ours (we write a file): a FIFO planted on an NFS datastore, a folder
        log.warning("%s: cannot read the power-off marker: %s; leaving the VM as it is" % (vm.name, err))
        return None
    owner = parse(text)
    if owner is not None and owner.run == run.run:
        return None
    alive = owner_alive(owner, run, dead, lambda: made_at(host.shell.age(path))) if owner is not None else False
    if alive:
        return None  # its run lives (its lock file was deleted under it): it powers the VM on itself
    who = str(owner) if owner else "an earlier hotvcb run"
    if alive is None:
        log.warning("%s: %s powered it off for a backup and %s; leaving it as it is (now %s)"
                    % (vm.name, owner, UNTOLD, host.power_state(vm)))
        return None
    if booted_since(host, vm, text, log):
        log.warning("%s: %s powered it off for a backup and is gone, and it was powered on since the run that left "
                    "it off: leaving it as it is%s"
                    % (vm.name, who, "" if dry_run else ", its power-off marker removed"))
        if not dry_run:
            _drop_power_mark(host, vm, log)
        return None
    return who


def state_had(host: Hypervisor, vm, log, run: RunId, dry_run: bool = False,
              dead: Mapping[str, float] = NONE_DEAD, own_power: bool = False) -> str:
    """The VM's power state as BACKUP_POWER_STATE judges it: the one it had before a dead run powered it off
    for a backup, not the one that run left it in. Without `own_power` that VM is powered on now
    (restore_power); with it (its backup shuts it down itself: power.powers_down) it is judged "on" and left
    off, for its backup to take over (PowerControl.take_over) and power on after: not booted here only to
    be shut down again."""
    if not own_power:
        restore_power(host, vm, log, run, dry_run, dead)
        return host.power_state(vm)
    state = host.power_state(vm)
    if state == "off" and dead_power_mark(host, vm, log, run, dead, dry_run) is not None:
        return "on"
    return state


def restore_power(host: Hypervisor, vm, log, run: RunId, dry_run: bool = False,
                  dead: Mapping[str, float] = NONE_DEAD) -> bool:
    """Power on a VM that a dead run powered off for its backup; True if there was one."""
    who = dead_power_mark(host, vm, log, run, dead, dry_run)
    if who is None:
        return False
    path = power_marker(vm)
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
        try:
            host.power_on(vm)
        except HotvcbError:
            restamp_power_mark(host, vm, log)
            raise
    clear_power_mark(host, vm)
    return True
