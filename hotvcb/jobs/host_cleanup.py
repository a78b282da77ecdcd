"""`hotvcb cleanup` (and a run's sweep before its first VM): every leftover of a dead run on the host, VM by VM, undone
as leftovers.py, snapshot_asked.py and partials.py say, then those of VMs the host no longer has."""

from typing import Callable, List, Mapping, NamedTuple, Set, Tuple

from ..errors import HotvcbError, VmStopped
from ..hosts.base import Hypervisor
from ..model import VmRef
from ..runid import RECORD_MAX, RunId, parse
from ..store import layout
from .leftovers import remove_our_snapshots
from .ownership import NONE_DEAD
from .partials import _partials_elsewhere, remove_partials
from .powermark import power_marker, restore_power
from .snapshot_asked import await_snapshot, snapshot_marker


class HostCleanup(NamedTuple):
    found: int  # leftovers removed (a dry run's: found)
    complete: bool  # no VM's cleanup failed: the dead runs' record may go (HostLock.sweep_done)
    undecided: int  # a dry run's `-partial` folders it cannot tell about (partials.remove_partials): not in found
    down: Tuple[str, ...] = ()  # VMs a dead run powered off that are not on again: a backup run's first news


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
                 dead: Mapping[str, float] = NONE_DEAD, snapshot_wait: float = 0.0,
                 own_power: Callable[[VmRef], bool] = lambda ref: False) -> HostCleanup:
    """`hotvcb cleanup`: every VM on the host, every leftover of a dead run (`dead`: as owner_alive's).
    Not complete where a VM's failed, or a dead run's VM is left for the next look (its guest may still be
    going down, or its snapshot request is younger than `snapshot_wait`; no process runs it: VmStopped, named in a
    warning, its dead runs' `-partial` folders removed): a dead run whose pid cannot tell is known dead only by
    the record the callers keep then, and without it the next cleanup would keep what it left for good.
    `own_power`: whether a backup run's sweep leaves the VM to that run, which shuts it down itself (a VM a gone run
    left going down is taken over, PowerControl.take_over: not booted here only to be shut down again)."""
    count, complete, undecided, down = 0, True, [], []  # type: int, bool, List[str], List[str]
    refs = host.list_vms()
    for ref in refs:
        try:
            try:
                vm = host.load_vm(ref)
            except VmStopped as err:  # no process runs it: nothing of a running VM to undo, every night it stays down
                log.warning("%s: not looked at: %s" % (ref.name, err))
                count += remove_partials(host.shell, volume, ref.name, log, run, dry_run, dead=dead,
                                         undecided=undecided)
                complete = False  # a dead run's snapshot of it, if any, is judged once it runs again
                continue
            snaps = host.snapshots(vm)
            count += remove_our_snapshots(host, vm, log, run, dry_run, snaps, dead)
            count += int(await_snapshot(host, vm, log, run, snaps, snapshot_wait, dry_run, dead, patient=False))
            owned = own_power(ref)
            if not owned:
                try:
                    count += int(restore_power(host, vm, log, run, dry_run, dead))
                except HotvcbError:
                    if _not_on(host, vm):
                        down.append(ref.name)
                    raise
            count += remove_partials(host.shell, volume, ref.name, log, run, dry_run, dead=dead, undecided=undecided)
            count += _partials_elsewhere(host, vm, volume, log, run, dry_run, dead, undecided)
            kept = [snapshot_marker(vm)] + ([] if owned else [power_marker(vm)])
            if dead and not dry_run and any(_kept_for(host, path, dead) for path in kept):
                complete = False
        except HotvcbError as err:
            log.error("%s: cleanup failed: %s" % (ref.name, err))
            complete = False
    try:
        count += _gone_vms(host, volume, {ref.name for ref in refs}, log, run, dry_run, dead, undecided)
    except HotvcbError as err:
        log.error("cleanup of VMs the host no longer has failed: %s" % err)
        complete = False
    return HostCleanup(count, complete, len(undecided), tuple(down))


def _not_on(host: Hypervisor, vm) -> bool:
    """Whether a VM whose power on by the sweep failed is not on (a state that cannot be read: not on, said
    loudly rather than passed over)."""
    try:
        return host.power_state(vm) != "on"
    except HotvcbError:
        return True


def _gone_vms(host: Hypervisor, volume: str, known: Set[str], log, run: RunId, dry_run: bool,
              dead: Mapping[str, float], undecided: List[str]) -> int:
    """What dead runs left of VMs the host no longer has (deleted, unregistered, renamed since), which the walk
    over its VMs never meets: `-partial` folders in their folders on the backup volume (removed by the rules
    every partial is, its run provably dead: a backup volume other hosts share keeps theirs), and what the
    driver keeps of them apart (kept_for_gone)."""
    count = 0
    for name in layout.vm_names(host.shell, volume):
        if name not in known:
            count += remove_partials(host.shell, volume, name, log, run, dry_run, dead=dead, undecided=undecided)
    for path in host.kept_for_gone(known):
        count += 1
        if dry_run:
            log.info("would remove %s, left of a VM the host no longer has" % path)
            continue
        log.warning("removing %s, left of a VM the host no longer has" % path)
        host.shell.remove_tree(path)
    return count
