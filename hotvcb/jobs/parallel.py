"""BACKUP_PARALLEL=N: up to N VMs at a time, at most BACKUP_PARALLEL_PER_DATASTORE per datastore.

Threads, because a VM's backup is almost all waiting on the host (vim-cmd,
vmkfstools, consolidation); the job, the driver and the shell are the same
objects the serial loop uses, and Python 3.8's standard library suffices.

What stays as it is one VM at a time:
- one run, one host lock (its heartbeat keeps every VM's -partial folder
  fresh), one log (a worker's lines carry `[VM name]`, runlog.py), the per-VM
  report in the order the VMs were selected, and the final status line and
  exit code computed from those results exactly as before;
- VM_SHUTDOWN_ORDER goes down before the first worker starts and
  VM_STARTUP_ORDER comes back after the last one ends (jobs/power.py);
- a dry run plans one VM after the other (its blocks would interleave).

Datastores: a VM holds a slot on each datastore its .vmx and disks live on
from the start of its backup to its end — snapshot, copy and consolidation,
the whole time that datastore carries its extra reads and a growing delta.
A free worker takes the first VM of the list whose datastores all have a
free slot, so one busy datastore does not hold up VMs elsewhere. The backup
target is not counted (every copy writes there: bounding it would bound N);
jobs/space.py keeps the copies from counting on the same free bytes.

Waits: a worker waiting for a datastore slot (or, in jobs/space.py, for
room on the target) waits for other VMs' backups to end, and every step of
those is bounded; it looks again every WAIT seconds, so a signal stops it.

Signals: the handler (main thread) only records; every running copy stops at
its next poll (cmdstream.stream), each worker's cleanup removes its VM's
snapshot, no further VM is started, and once every worker has finished the
main thread raises Interrupted (exit 2).
"""

import threading
from typing import TYPE_CHECKING, Dict, List, Optional, Set, Tuple

from .. import interrupt
from ..errors import HotvcbError, Interrupted
from ..model import VmRef

if TYPE_CHECKING:  # the job imports this module; the type only is needed here
    from .backup import BackupJob, Target

WAIT = 0.5  # seconds between looks (a signal's handler runs in the main thread in between)
Item = Tuple[int, "Target", Set[str]]  # VM number in the list, the entry, its datastores


class Queue:
    """Which VM a free worker takes next, and how many run on each datastore."""

    def __init__(self, items: List[Item], per_datastore: int, workers: int):
        self.waiting = list(items)
        self.per_datastore, self.workers = per_datastore, workers
        self.busy = {}  # type: Dict[str, int]  # datastore -> VMs on it now
        self.stopped = False
        self._cond = threading.Condition()

    def take(self) -> Optional[Item]:
        """The next VM whose datastores have room (waiting for one to free up); None when
        the list is done or the run stops."""
        with self._cond:
            while self.waiting and not self.stopped and not interrupt.pending():
                for item in self.waiting:
                    if all(self.busy.get(ds, 0) < self.per_datastore for ds in item[2]):
                        self.waiting.remove(item)
                        for ds in item[2]:
                            self.busy[ds] = self.busy.get(ds, 0) + 1
                        return item
                self._cond.wait(WAIT)
            return None

    def done(self, item: Item) -> None:
        with self._cond:
            for ds in item[2]:
                self.busy[ds] -= 1
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self.stopped = True
            self._cond.notify_all()

    def later(self) -> float:
        """VMs still to start, as a share of the workers (for the run's ETA)."""
        return len(self.waiting) / float(self.workers)


def datastores_of(job: "BackupJob", target: "Target") -> Set[str]:
    """The datastores a VM's backup reads: its .vmx's and its disks'. A VM that cannot be read
    now holds none: its backup fails at once and says why."""
    if not isinstance(target, VmRef):
        return set()
    try:
        vm = job.host.load_vm(target)
    except HotvcbError:
        return set()
    return {vm.datastore} | {d.datastore for d in vm.disks if not d.skip_reason}


def run(job: "BackupJob", targets: List["Target"]) -> None:
    """Back up `targets` with up to BACKUP_PARALLEL workers; job.results in list order."""
    s = job.settings
    workers = min(s.backup_parallel, len(targets))
    job.log.info("Backing up %d VMs, up to %d at a time and at most %d per datastore"
                 % (len(targets), workers, s.backup_parallel_per_datastore))
    job.space.resolve = job.host.shell.realpath  # one datastore by name or UUID is one target
    queue = job.queue = Queue([(n, t, datastores_of(job, t)) for n, t in enumerate(targets, 1)],
                              s.backup_parallel_per_datastore, workers)
    crashed = []  # type: List[BaseException]  # a worker's unexpected error, raised here once all stopped

    def work() -> None:
        while True:
            item = queue.take()
            if item is None:
                return
            number, target, _stores = item
            try:
                with job.log.tagged(target.name):
                    job.vm_number = number  # this thread's VM, for its progress line
                    job.results.append(job.backup_target(target))
            except Interrupted:
                queue.stop()  # backup_one recorded the VM it was on
            except BaseException as err:  # a defect: stop starting VMs, let the others clean up
                crashed.append(err)
                queue.stop()
            finally:
                queue.done(item)

    threads = [threading.Thread(target=work, name="hotvcb-vm-%d" % i, daemon=True) for i in range(workers)]
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(WAIT)
    finally:
        order = {t.name: i for i, t in enumerate(targets)}
        job.results.sort(key=lambda r: order.get(r.name, len(order)))
        job.queue = None
    if crashed:
        raise crashed[0]
    interrupt.raise_pending()
