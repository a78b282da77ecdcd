"""How one VM's backup ends, whatever stopped it: consolidated, powered on, then sealed or failed.

jobs/vm_backup.py's `_VmBackup` records each state as it is reached
(`snapshot_name` before the request, `snapshot` once it shows, `powered_down`
at the first shutdown request, `sealer` once the folder is claimed); `end`
reads them and undoes exactly that, in reverse. Our snapshot goes first and
by id (never `removeall`): a VM left with it grows until its datastore is
full, the worst outcome hotvcb can have. The removal and the power-on are not
interruptible, so they finish after Ctrl-C; a removal whose SSH connection broke
is looked at and asked again over a new one (snapshot_removal.py); a snapshot
that cannot be removed keeps the backup from being sealed.
"""

import time
from typing import TYPE_CHECKING, Dict, Optional, Union

from .. import crashpoint, interrupt
from ..errors import HostdDown, HotvcbError, SnapshotBypassed, SnapshotHeld, SnapshotKept
from ..hosts.base import Hypervisor
from ..model import Snapshot, Vm
from ..runid import RunId, parse
from ..store.seal import Sealer
from .leftovers import remove_our_snapshots
from .snapshot_asked import clear_snapshot_mark, late_wait
from .snapshot_removal import remove_snapshot

if TYPE_CHECKING:
    from .vm_backup import _VmBackup
    from .repo_backup import RepoSink


LEFT_FOR_NEXT = (" -- it carries this run's record: once hostd answers, the next backup run (or `hotvcb cleanup`) "
                 "removes it, and `hotvcb status` reports it until then")

def end(one: "_VmBackup", vm: Vm, sealer: "Union[Sealer, RepoSink]", failed: bool) -> None:
    """Undo what we did, in reverse: snapshot, power, then seal or discard."""
    error = _consolidate(one, vm)
    if one.powered_down:
        power_back(one, vm)
    disks = one.result.disks
    if not (failed or error or (disks and not any(d.ok for d in disks))):
        one.result.status = "warn" if any(not d.ok for d in disks) else "ok"
        try:
            one.result.backup_dir = sealer.seal(one.result, _snapshot_info(one), tree=one.tree_record)
            return
        except BaseException as err:
            if one.result.sealed:  # what followed the seal was stopped (rotation): the backup stands
                raise
            one.log.error("%s: sealing the backup failed: %s" % (vm.name, err))
            _discard(one, vm, "sealing failed: %s" % err)
            raise
    _discard(one, vm, error or one.result.message or "; ".join(d.error for d in disks if not d.ok))


def power_back(one: "_VmBackup", vm: Vm) -> None:
    """The VM this backup powered off (or took over from a gone run: PowerControl.take_over) on again; one that
    stays off is the run's first news (DOWN). Also for a taken-over VM whose backup failed before it began."""
    if not one.job.power.restore_on(vm):
        one.result.down = True
        one.power_failure = "%s was left powered off: it did NOT power on again after its backup; it is DOWN" % (
            vm.name)
    one.powered_down = False


def _consolidate(one: "_VmBackup", vm: Vm) -> str:
    """Our snapshot removed (one hostd made after we gave up on it too); else why not, for the log
    and the failed backup's record."""
    if one.snapshot is None and one.snapshot_name is not None and not one.gone:
        wait = 0.0 if one.snapshot_refused else late_wait(one.s)  # once if the host refused it
        one.snapshot = _late_snapshot(one.host, vm, one.snapshot_name, one.job.run_id, wait, one.log)
        if one.snapshot is None and one.snapshot_refused:
            clear_snapshot_mark(one.host, vm, one.log)  # nothing will show up
        elif one.snapshot is None:
            # hostd's task may outlast any wait of ours, and no host command takes it back: say what follows
            # (the request's marker stays, so the next run waits for it)
            one.log.warning("%s: snapshot %s has not appeared; hostd may still be creating it. If it does, the "
                            "next backup run (or `hotvcb cleanup`) removes it, and `hotvcb status` reports it "
                            "until then" % (vm.name, one.snapshot_name))
    snap = one.snapshot
    if snap is None:
        return ""
    try:
        one.log.info("Removing snapshot %s (id %s) from %s" % (snap.name, snap.id, vm.name))
        crashpoint.reached("removing-snapshot")
        remove_snapshot(one.host, vm, snap, one.s.snapshot_remove_timeout * 60.0, one.log)
        one.snapshot = None
        clear_snapshot_mark(one.host, vm, one.log)
        crashpoint.reached("snapshot-removed")
        # a dead run's snapshot that hostd finished while we copied (look again, once, when
        # a run died before us; not while a signal unwinds us: the next run looks anyway)
        if one.job.swept and not interrupt.pending():
            try:
                remove_our_snapshots(one.host, vm, one.log, one.job.run_id, dead=one.job.dead,
                                     kept=one.result.warnings)
            except HotvcbError as err:
                one.log.warning("%s: cannot look for a dead run's snapshot: %s" % (vm.name, err))
    except (SnapshotKept, SnapshotBypassed) as err:
        # gone from the VM either way, but named: history that holds data, the backup stands and the run
        # warns; or the disk was written past it during the copy, and the copy is no backup
        one.snapshot = None
        clear_snapshot_mark(one.host, vm, one.log)
        if isinstance(err, SnapshotBypassed):
            one.log.error(str(err))
            return str(err)
        if str(err) not in one.result.warnings:  # the pre-flight's word of a VM that needed consolidation before
            one.log.warning(str(err))
            one.result.warnings.append(str(err))
    except HotvcbError as err:
        # an ESXi snapshot removed by hand consolidates; an overlay's error says itself what to do with it; one
        # hostd did not answer for is a dead run's leftover once this run ends, which the next one removes
        advice = "" if isinstance(err, SnapshotHeld) else LEFT_FOR_NEXT if isinstance(err, HostdDown) else \
            " -- remove it by hand"
        error = "snapshot %s could NOT be removed: %s%s" % (snap.id, err, advice)
        one.log.error("%s: %s" % (vm.name, error))
        return error
    return ""


def _late_snapshot(host: Hypervisor, vm: Vm, name: str, run: RunId, wait: float, log) -> Optional[Snapshot]:
    """Our snapshot `name`, if it shows up after we gave up on it (hostd finished the task late).

    Looks for `wait` seconds (0: once): removing it now beats leaving it to
    grow until the next run, which removes one hostd finishes later still
    (jobs/leftovers.py: a dead run's snapshot). One of that name whose record
    is another run's is not ours: a run on another QMP folder of the same VM
    named its snapshot after the same second, and is copying from it.
    """
    deadline = time.monotonic() + wait
    while True:
        try:
            mine = [x for x in host.snapshots(vm, interruptible=False) if x.name == name and _not_others(x, run)]
        except HotvcbError as err:
            log.warning("%s: cannot check for a late snapshot: %s" % (vm.name, err))
            return None
        if mine:
            log.warning("%s: snapshot %s appeared after the timeout; removing it" % (vm.name, name))
            return mine[-1]
        if time.monotonic() >= deadline:
            return None
        time.sleep(1.0)


def _not_others(snap: Snapshot, run: RunId) -> bool:
    """Whether our snapshot's record names no other run than `run` (one without a record: an older hotvcb's)."""
    owner = parse(snap.description)
    return owner is None or owner.run == run.run


def _discard(one: "_VmBackup", vm: Vm, message: str) -> None:
    """Record a failed backup as such; never let this hide the first error."""
    one.result.status, one.result.message = "error", message
    if one.sealer is not None and not isinstance(one.sealer, Sealer):  # a RepoSink: no folder, it only drops its open pack's upload
        one.sealer.fail(one.result)
        return
    if one.sealer is None or not one.host.shell.isdir(one.sealer.partial):
        return
    try:
        if one.gone or one.untouched:
            one.sealer.abandon()
        else:
            one.result.backup_dir = one.sealer.fail(one.result)
    except HotvcbError as err:
        one.log.error("%s: could not record the failed backup: %s" % (vm.name, err))


def _snapshot_info(one: "_VmBackup") -> Dict[str, object]:
    """How the snapshot the copy was read from was taken, for the manifest; empty where the copy was
    read from none (a VM off, or shut down for its backup): the config's memory and quiesce there would
    say a quiesced snapshot made a backup no snapshot made."""
    if one.snapshot_name is None:
        return {}
    return {"memory": one.s.vm_snapshot_memory, "quiesce": one.s.vm_snapshot_quiesce}
