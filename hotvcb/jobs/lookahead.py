"""The next VM's first questions to the host, asked while this VM's disks are copied
(the run's first VM's as the serial loop starts, beside the run's own, jobs/ahead.py).

Every host query is a round trip to hostd (0.1-1 s on a real host, which
answers queries while a clone runs), and a copy mostly waits on storage. So
when a VM's copy starts, the serial loop asks in threads what the next
VM's backup asks first: its snapshot list and its power state (each in a
thread of its own: two round trips at once). An answer
that old is used only where acting on it is as safe as acting on a fresh
one, and only for FRESH_FOR seconds; otherwise the question is asked again:

- an empty snapshot list serves the leftover check, the pre-flight and the
  create's "before" set where the VM's snapshots are refused: a snapshot
  taken since has delta files next to the disks, which the pre-flight reads
  at its own time, and no dead run makes new ones (this run holds the host's
  lock). A list that names any snapshot is asked again: the user may have
  removed it since (refusing the VM for it would be wrong), and a dead run's
  is removed by its fresh id. Where snapshots are allowed or kept
  (ALLOW_VMS_WITH_SNAPSHOTS_TO_BE_BACKEDUP, BACKUP_SNAPSHOT_TREE), the list is asked again.
- "on" serves to decide on a snapshot: a VM that went off or suspended
  since is snapshotted all the same, which ESXi allows. "off" (copied
  without a snapshot, which needs it off now), any other answer, a power-down
  mode and a VM VM_SHUTDOWN_ORDER powered down ask again.

A VM unregistered (or registered anew under another vmid) since it was asked
about is found out by its snapshot's create, after its folder was claimed:
the driver says VmGone and the folder, which holds only the VM's config, is
removed whole (jobs/backup_end.py), as a pre-flight's failure leaves none. A
fresh question before the claim would put a host command back on every
VM's critical path.

The run's first VM is asked about as the loop starts, while the run's own first
questions (the target's free space, the host's name) may still be out; its
VM as read to ask is its backup's, so no driver reads it twice (on libvirt
that read is two virsh calls). Not where VM_SHUTDOWN_ORDER powered VMs down
(their power is the loop's to judge), nor with BACKUP_POWER_STATE, whose check
asks the power state itself.

Only the serial loop looks ahead (BACKUP_PARALLEL already overlaps VMs), never a dry run.
"""

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, List, Optional, Tuple

from .. import interrupt
from ..background import Ahead
from ..errors import HotvcbError
from ..hosts.base import Hypervisor
from ..model import Snapshot, Vm, VmRef
from ..settings import Settings

if TYPE_CHECKING:
    from .backup import BackupJob, Target

FRESH_FOR = 120.0  # seconds an answer asked ahead serves (the driver's own SNAPSHOTS_REUSED_FOR)


@dataclass
class Answers:
    """The host's answers about the next VM, asked while the previous one was copied."""

    vmid: str
    asked: float  # time.monotonic() when the questions were asked
    snapshots: List[Snapshot]
    power: str
    vm: Optional[Vm] = None  # the first VM as loaded to ask about it, its backup's to use


class Lookahead:
    def __init__(self, host: Hypervisor, dry_run: bool = False):
        self.host, self.dry_run = host, dry_run
        # (vmid, when asked, its snapshot list, its power state, the VM loaded if it is the run's
        # first): two round trips, asked at once
        self._asking = None  # type: Optional[Tuple[str, float, Ahead[List[Snapshot]], Ahead[str], Optional[Vm]]]
        self.next_vm = None  # type: Optional[VmRef]  # the serial loop's next VM, asked about ahead
        # (vmid, why) the run's first VM could not be read, as its turn begins: its turn says so without reading
        # it again (a QMP socket that accepts and never answers held the run for its timeout twice)
        self._failed = None  # type: Optional[Tuple[str, HotvcbError]]

    def run(self, job: "BackupJob", targets: "List[Target]") -> None:
        """The serial loop: one VM after the other, job.results in list order, the next VM known
        to each VM's copy (ask_next), the first asked about at once (beside the run's own first
        questions, jobs/ahead.py), its VM as loaded for that kept for its backup."""
        first = next((t for t in targets if isinstance(t, VmRef)), None)
        if (first is not None and not self.dry_run and not (job.power.ordered_down or job.power.problems)
                and job.settings.backup_power_state == "any"):
            self.ask(first, keep=True)
        for job.vm_number, target in enumerate(targets, 1):
            self.next_vm = next((t for t in targets[job.vm_number:] if isinstance(t, VmRef)), None)
            job.results.append(job.backup_target(target))
            if interrupt.pending():
                interrupt.raise_pending()

    def ask_next(self) -> None:
        """A VM's copy starts: ask about the next one meanwhile (never in a dry run)."""
        if self.next_vm is not None and not self.dry_run:
            self.ask(self.next_vm)

    def ask(self, ref: VmRef, keep: bool = False) -> None:
        """Ask about `ref` in threads, unless questions are still out. The VM's files are read
        here, first: the driver's reads of VM folders are not to overlap this VM's changes.
        With `keep` (the run's first VM, whose backup starts now) the VM as read here is its
        backup's (on libvirt the read is two virsh calls); a VM read during the copy before
        is read again in its own turn, as it may have changed meanwhile."""
        if self._asking is not None:
            return
        try:
            vm = self.host.load_vm(ref)
        except HotvcbError as err:
            if keep:  # its turn is now: it says why
                self._failed = (ref.vmid, err)
            return  # a later VM's own turn asks again, and says why
        self._asking = (ref.vmid, time.monotonic(), Ahead(lambda: self.host.snapshots(vm), "lookahead"),
                        Ahead(lambda: self.host.power_state(vm), "lookahead"), vm if keep else None)

    def take(self, ref: VmRef) -> Optional[Answers]:
        """The answers about `ref`, if they were asked and are fresh; waits for questions still out. The
        error that reading the run's first VM just met is raised again, for its turn."""
        failed, self._failed = self._failed, None
        if failed is not None and failed[0] == ref.vmid:
            raise failed[1]
        asking, self._asking = self._asking, None
        if asking is None:
            return None
        vmid, asked, snaps, power, vm = asking
        try:
            listed, state = snaps.take(), power.take()
        except BaseException:  # a signal while waiting: the other question is ended too, not left to outlive the run
            for question in (snaps, power):
                question.drop()
            raise
        if listed is None or state is None:
            return None  # asked again, in the VM's own turn
        if vmid != ref.vmid or time.monotonic() - asked > FRESH_FOR:
            return None
        return Answers(vmid, asked, listed, state, vm)

    def drop(self) -> None:
        """As the run ends: end questions still out and forget them (Ahead.drop), so no query
        outlives the run nor holds its end; a power state, asked uninterruptibly (cleanup asks it
        after Ctrl-C), is ended too: a hung hostd held the run's end 30 s."""
        asking, self._asking = self._asking, None
        if asking is not None:
            for question in (asking[2], asking[3]):
                question.drop()


def snapshots(found: Optional[Answers], s: Settings) -> Optional[List[Snapshot]]:
    """The VM's snapshot list asked ahead, where it may serve: none then (None: ask now)."""
    if found is None or found.snapshots or s.allow_vms_with_snapshots_to_be_backedup or s.backup_snapshot_tree:
        return None
    return list(found.snapshots)


def power_state(host: Hypervisor, vm: Vm, found: Optional[Answers], s: Settings, skip_power: bool) -> str:
    """The power state the backup decides by: asked ahead where "on" may serve, else asked now."""
    if (found is not None and found.power == "on" and not skip_power and not s.power_vm_down_before_backup
            and not s.cold_snapshot):
        return "on"
    return host.power_state(vm)
