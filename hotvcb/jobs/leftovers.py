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

Here: our snapshots, and the name of a marker a run keeps in a VM's folder (vm_marker). A power-off marker is
powermark.py's, a snapshot request still pending snapshot_asked.py's, a dead run's `-partial` folders partials.py's,
every VM of a host (`hotvcb cleanup`) host_cleanup.py's.
"""

from __future__ import annotations

import time
from typing import List, Mapping, Optional

from ..errors import SnapshotKept, Unconsolidated
from ..hosts.base import Hypervisor
from ..model import NO_DATA_FILE, Snapshot
from ..runid import RunId, parse
from ..store import layout
from .ownership import NONE_DEAD, made_at, owner_alive
from .snapshot_text import asked_epoch
from .. import lazyre
from ..namefit import fit

SNAPSHOT_PREFIX = "hotvcb-snapshot-"
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


def vm_marker(vm, kind: str, tail: str = "") -> str:
    """`<kind>.<vmx file name><tail>` in the VM's folder, within the 255 bytes a name may have (namefit.fit)."""
    return "%s/%s" % (vm.folder, fit(kind + ".", vm.ref.vmx_path.rsplit("/", 1)[-1], tail))
