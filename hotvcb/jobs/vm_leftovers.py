"""A dead run's leftovers on one VM, cleared before its backup (our own snapshot that hostd made
after we gave up on it is removed at the backup's end: jobs/backup_end.py).

What is whose, and why removing it is safe, is jobs/leftovers.py's; this
is the order a VM's backup applies it in.
"""

from typing import List, Mapping, Optional, Tuple

from ..hosts.base import Hypervisor
from ..model import Snapshot, Vm, VmRef
from ..runid import RunId
from .leftovers import is_ours, remove_our_snapshots
from .ownership import NONE_DEAD
from .powermark import restore_power
from .snapshot_asked import await_snapshot


def clear_dead_runs(host: Hypervisor, ref: VmRef, vm: Vm, log, run: RunId, dry_run: bool,
                    snaps: Optional[List[Snapshot]] = None,
                    dead: Mapping[str, float] = NONE_DEAD,
                    snapshot_wait: float = 0.0, kept: Optional[List[str]] = None,
                    own_power: bool = False) -> Tuple[Vm, List[Snapshot], bool]:
    """A dead run's snapshots removed (one it asked for and the host may still make waited for until the
    request is `snapshot_wait` seconds old) and the VM it powered off powered on: (the VM as it is now,
    its snapshots, whether a dry run left a leftover snapshot that the real run removes first).
    `snaps`: the VM's snapshots if they were asked about already (jobs/lookahead.py); `dead`: the runs
    whose lock this run took over as gone, with when (ownership.owner_alive); `kept`: gets the warning of each
    one kept because it holds data (remove_our_snapshots); `own_power`: the run powers the VM down itself (the
    power order's, or its backup's POWER_VM_DOWN_BEFORE_BACKUP / COLD_SNAPSHOT), so a VM a gone run left going
    down is taken over (jobs/power.py, PowerControl.take_over): backed up off and powered on after, so no dead
    run's marker powers it on here (nor is kept, looked at once, while its guest goes on going down)."""
    if snaps is None:
        snaps = host.snapshots(vm)  # one look serves the leftover check and the pre-flight
    pending = False
    held = []  # type: List[str]
    removed = remove_our_snapshots(host, vm, log, run, dry_run, snaps, dead, held)
    removed += int(await_snapshot(host, vm, log, run, snaps, snapshot_wait, dry_run, dead))
    if kept is not None:
        kept.extend(held)
    if removed or held:  # a kept overlay is no snapshot of the VM any more either (the driver's `kept`)
        if dry_run:  # they would be gone by now: judge the VM without them, and plan its disks, as the real run would
            vm = host.without_snapshots(vm, [s for s in snaps if is_ours(s)])
            snaps = [s for s in snaps if not is_ours(s)]
            pending = True
        else:
            vm = host.load_vm(ref)  # its disks no longer point at our deltas
            snaps = host.snapshots(vm)
    if not own_power:
        restore_power(host, vm, log, run, dry_run, dead)
    return vm, snaps, pending

