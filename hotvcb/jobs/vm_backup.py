"""One VM's backup through its states (resolved -> [powered down] -> snapshotted -> copied -> consolidated ->
sealed); the run around it is jobs/backup.py's BackupJob, its end jobs/backup_end.py's."""

from __future__ import annotations  # BackupJob, imported for the checker only (it imports this module)

import functools
import time
from typing import TYPE_CHECKING, Dict, List, Optional, Union

from .. import crashpoint, interrupt
from ..errors import HotvcbError, Interrupted, SnapshotError, VmGone
from ..model import Disk, DiskResult, Snapshot, SnapshotTree, Vm, VmRef, VmResult
from ..settings import Settings
from ..store import layout
from ..store.seal import Sealer
from ..units import human_size
from . import backup_end, dryrun_checks, lookahead, preflight, snapshot_text
from .guest_hooks import run_guest_hook
from .hooks import run_hook
from .leftovers import SNAPSHOT_PREFIX, is_ours
from .partials import clear_volume_mark, mark_volume, remove_partials, volume_marker
from .power import NotGoingDown, powers_down
from .powermark import unstamp_power_mark
from .snapshot_asked import mark_snapshot_asked, mark_snapshot_made, snapshot_patience
from .snaptree import copy_tree
from .vm_leftovers import clear_dead_runs

if TYPE_CHECKING:  # imported by the runs that write to a repository (it loads the repository's code)
    from .backup import BackupJob
    from .repo_backup import RepoSink


class _VmBackup:
    """One VM's backup; its attributes are the lifecycle state its end (jobs/backup_end.py) reads."""

    def __init__(self, job: BackupJob, ref: VmRef, settings: Settings, result: VmResult, started, skip_power):
        self.job, self.host, self.log = job, job.host, job.log
        self.ref, self.s, self.result, self.started = ref, settings, result, started
        self.skip_power = skip_power
        self.vm = None  # type: Optional[Vm]
        self.snapshot = None  # type: Optional[Snapshot]
        self.snapshot_name = None  # type: Optional[str]  # asked for, whether or not it showed up
        self.snapshot_refused = False  # the host said no, or was never asked: nothing will show up late
        self.gone = False  # the host no longer has the VM (asked about ahead, jobs/lookahead.py)
        self.untouched = False  # stopped before its snapshot was asked for: its folder holds only its config
        self.power_failure = ""  # the VM did not come back on: the run's first news
        self.powered_down = False
        self.sealer = None  # type: Optional[Union[Sealer, RepoSink]]
        self.capacity = {}  # type: Dict[str, int]  # disk key -> virtual size, from the pre-flight
        self.tree = None  # type: Optional[SnapshotTree]  # the user's, to keep (BACKUP_SNAPSHOT_TREE)
        self.tree_record = None  # type: Optional[Dict[str, object]]
        self.user_snapshots = []  # type: List[str]  # their ids when the tree was read
        self.asked = None  # type: Optional[lookahead.Answers]  # asked while the VM before it was copied

    def run(self) -> None:
        self.asked = self.job.lookahead.take(self.ref)  # while the VM before it was copied, or at the run's start
        vm = self.vm = self.asked.vm if self.asked is not None and self.asked.vm is not None else \
            self.host.load_vm(self.ref)
        run, dry = self.job.run_id, self.job.dry_run
        vm, snaps, pending = clear_dead_runs(self.host, self.ref, vm, self.log, run, dry,
                                             lookahead.snapshots(self.asked, self.s), self.job.dead,
                                             snapshot_patience(self.s), self.result.warnings,
                                             self.skip_power or self._powers_down())
        self.vm = vm
        self._take_over(vm)
        try:
            self._checked(vm, snaps, pending)
        except BaseException:
            if self.powered_down:  # taken over, and its backup failed before it began: on again now
                backup_end.power_back(self, vm)
            raise

    def _checked(self, vm: Vm, snaps: List[Snapshot], pending: bool) -> None:
        """The pre-flight, the hooks and the backup, once a dead run's leftovers are cleared."""
        run, dry = self.job.run_id, self.job.dry_run
        if not self.s.vm_backup_repository:
            # before the pre-flight counts the room, which what a dead run or a refused removal left takes:
            # -deleting entries go to the deleter, and a VM that does not fit waits for it (jobs/space.py);
            # a dry run says what it would remove
            remove_partials(self.host.shell, self.s.vm_backup_volume, vm.name, self.log, run, dry,
                            finish=self.job.deleter.remove, dead=self.job.dead)
        # named before disks_to_copy may refuse the VM: a VM of independent disks only is reported with them
        self.result.skipped_disks = [d for d in vm.disks if d.skip_reason]
        disks = preflight.disks_to_copy(vm, self.s, self.log)
        self.result.disks_to_copy = len(disks)
        plan = preflight.check(self.host, self.s, self.log, self.job.space, vm, disks, snaps, pending,
                               unmounted=self.job.unmounted)
        self.capacity, self.tree, self.user_snapshots = plan.capacity, plan.tree, plan.user_snapshots
        for warning in plan.warnings:
            self.log.warning(warning)
            self.result.warnings.append(warning)
        if dry:  # what the real run checks once the VM's backup began too, and what it would copy
            refused = dryrun_checks.check(self.host, self.s, self.log, vm, disks)
            failing = preflight.dry_run(self.host, self.s, self.log, vm, disks, plan, self.started)
            dryrun_checks.report(self.result, disks, plan.capacity, refused)
            if failing:  # the VM fails, as in the real run (its report's DISKS and SIZE stay what it lists)
                raise HotvcbError(failing)
            return
        if self.s.pre_backup_hook:
            run_hook(self.host, self.s.pre_backup_hook, "pre", self.ref, self.s.hook_timeout * 60.0, self.log)
        try:
            if self.s.guest_pre_backup_hook:  # inside the guest, after the host's own
                run_guest_hook(self.host, vm, self.s.guest_pre_backup_hook, "pre", self.s.hook_timeout * 60.0,
                               self.log)
            try:
                self._backup_marked(vm, disks)
            finally:
                if self.s.guest_post_backup_hook:
                    self._post_hook(vm)
        finally:
            if self.s.post_backup_hook:  # on every path the pre-hook was followed by
                self._post_hook()

    def _post_hook(self, guest: Optional[Vm] = None) -> None:
        """The host's post-hook, or with `guest` the in-guest one; a failure is logged, not raised."""
        status = self.result.status if self.result.status in ("ok", "warn", "error") else "error"
        try:
            if guest is not None:
                run_guest_hook(self.host, guest, self.s.guest_post_backup_hook, "post", self.s.hook_timeout * 60.0,
                               self.log, result=status, backup=self.result.backup_dir)
            else:
                run_hook(self.host, self.s.post_backup_hook, "post", self.ref, self.s.hook_timeout * 60.0, self.log,
                         result=status, backup=self.result.backup_dir)
        except HotvcbError as err:
            self.log.error(str(err))

    def _backup_marked(self, vm: Vm, disks: List[Disk]) -> None:
        """The backup, its volume named in the VM's folder while it is written where a per-VM file
        sent it: a killed run's `-partial` there is found by `hotvcb cleanup`, which has no -c
        (partials.marked_volume). Written only then: a run without per-VM volumes changes nothing.
        A folder that cannot take it (a read-only datastore holding a template) is warned about and the
        backup goes on: the marker only helps cleanup after a killed run."""
        marked = not self.s.vm_backup_repository and self.s.vm_backup_volume != self.job.settings.vm_backup_volume
        if marked:
            try:
                mark_volume(self.host, vm, self.s.vm_backup_volume)
            except HotvcbError as err:
                marked = False
                self.log.warning("%s: cannot write %s (%s); if this run is killed, hotvcb cleanup will not find "
                                 "its leftovers on %s" % (vm.name, volume_marker(vm), err, self.s.vm_backup_volume))
        try:
            self._backup(vm, disks)
        finally:
            if marked:
                try:
                    clear_volume_mark(self.host, vm)
                except HotvcbError as err:
                    self.log.warning("%s: cannot remove %s: %s" % (vm.name, volume_marker(vm), err))

    def _backup(self, vm: Vm, disks: List[Disk]) -> None:
        self.sealer = self._sink(vm)
        self.sealer.begin()
        try:
            names = self.sealer.plan_disks(disks)
            self.sealer.copy_config_files(self.host.backup_config(vm, names))
            self._ready(vm, lookahead.power_state(self.host, vm, self.asked, self.s, self.skip_power))
            self.job.lookahead.ask_next()  # while this VM's disks are copied
            self._copy_disks(vm, disks, self.sealer)
            if self.tree is not None and any(d.ok for d in self.result.disks):
                self.tree_record = copy_tree(self.host, self.tree, self.sealer.partial, self.s.disk_backup_format,
                                             self.log)
                self._check_tree_unchanged(vm)
        except BaseException as err:
            self.result.message = str(err) or type(err).__name__
            # a signal before the snapshot (as a worker of --parallel may meet one, its folder
            # claimed) leaves no folder, as it leaves none in the serial loop
            self.untouched = isinstance(err, Interrupted) and self.snapshot_name is None and not self.result.disks
            backup_end.end(self, vm, self.sealer, failed=True)
            raise
        backup_end.end(self, vm, self.sealer, failed=False)
        if self.power_failure:
            self.result.down = True
            self.result.status = "error"  # the backup may be good; the VM is down, and that comes first
            self.result.message = self.power_failure + ("; the backup is %s" % self.result.backup_dir
                                                        if self.result.backup_dir else "")

    def _sink(self, vm: Vm) -> "Union[Sealer, RepoSink]":
        """Where the backup goes: a backup folder, or (the same lifecycle) a repository."""
        run = self.job.run_id
        if self.s.vm_backup_repository:
            from .repo_backup import RepoSink
            return RepoSink(self.host, self.s, vm, self.started, self.log, run, self.job.space)
        return Sealer(self.host.shell, self.s, vm, self.started, self.log, run, self.job.lock,
                      source_host=self.host.host_name(), remove=self.job.deleter.remove)

    # -- steps ---------------------------------------------------------------
    def _ready(self, vm: Vm, state: str) -> None:
        """The VM made ready for its copy by its power `state` and settings: shut down (COLD_SNAPSHOT, then
        snapshot and on again; POWER_VM_DOWN_BEFORE_BACKUP), or snapshot while it runs; one off is copied as
        it is."""
        self._take_over(vm, state)  # gone off since the leftover check looked
        if self.s.cold_snapshot and self.powered_down:  # taken over off: the rest of its cold snapshot
            self._snapshot_and_boot(vm, None)
        elif self.s.cold_snapshot and state == "on" and not self.skip_power:
            self._cold_snapshot(vm)
        elif self.s.power_vm_down_before_backup and state == "on" and not self.skip_power:
            self._power_down(vm)
        elif state != "off":
            self._snapshot(vm)

    def _cold_snapshot(self, vm: Vm) -> None:
        """COLD_SNAPSHOT: the backup of a shut-down guest, with minutes of downtime, not hours.

        Shut down, snapshot while off (the base disks hold exactly the
        powered-off state), power on at once, and copy while the VM runs on
        its delta. A VM that does not come back is the first thing the log,
        the exit code and the mail say.
        """
        down_at = time.monotonic()
        self._power_down(vm)
        self._snapshot_and_boot(vm, down_at)

    def _snapshot_and_boot(self, vm: Vm, down_at: Optional[float]) -> None:
        """COLD_SNAPSHOT's VM once off: snapshotted, powered on at once, copied from the snapshot while it
        runs. `down_at`: when this run shut it down; None for one taken over off (take_over), whose downtime
        began in the gone run: it too is on again before its copy, not down for all of it. Its marker holds no
        boot stamp from here until it is on (unstamp_power_mark) where the snapshot starts it itself (libvirt's:
        snapshot_starts_vm); elsewhere it keeps the one of its power off."""
        if self.host.snapshot_starts_vm:
            unstamp_power_mark(self.host, vm, self.log)
        self._snapshot(vm)
        self.log.info("Powering %s on again before the copy" % vm.name)
        back = self.job.power.restore_on(vm)
        self.powered_down = not back
        if back and down_at is not None:
            self.log.info("%s was down for %d s (COLD_SNAPSHOT): shutdown, snapshot, boot"
                          % (vm.name, time.monotonic() - down_at))
        elif back:
            self.log.info("%s is on again (COLD_SNAPSHOT): taken over off, snapshot, boot" % vm.name)
        else:
            self.power_failure = "%s did NOT power on again after its cold snapshot; it is DOWN" % vm.name
            self.log.error("!!! %s !!!" % self.power_failure)

    def _powers_down(self) -> bool:
        """This backup shuts its VM down itself (POWER_VM_DOWN_BEFORE_BACKUP, COLD_SNAPSHOT; not a VM of the
        power order, whose power is the order's): one a gone run left going down is this run's to power on
        (PowerControl.take_over), not the leftover check's to boot before its backup shuts it down again."""
        return powers_down(self.s) and not self.skip_power

    def _take_over(self, vm: Vm, state: Optional[str] = None) -> None:
        """A VM this backup would shut down, found off (`state`, else asked) with a gone run's power-off marker:
        the guest finished that run's shutdown before this run looked, or during its steps. It is this run's
        (PowerControl.take_over): backed up off and powered on at its end (COLD_SNAPSHOT: snapshotted off and on
        again at once, _ready); a dry run says so."""
        if self.powered_down or not self._powers_down():
            return
        if (state or self.host.power_state(vm)) == "off" and self.job.power.take_over(
                vm, self.job.dead, "its snapshot" if self.s.cold_snapshot else "its backup"):
            self.powered_down = not self.job.dry_run

    def _power_down(self, vm: Vm) -> None:
        """From the first shutdown request on, the VM is this run's to power on again (and cleanup's: the
        marker); not when the host refused that request, nor when no request was sent (its marker could not be
        written): it was never on its way down."""
        self.powered_down = True
        try:
            self.job.power.power_down(vm, self.s)
        except NotGoingDown:
            self.powered_down = False
            raise

    def _snapshot(self, vm: Vm) -> None:
        if self.job.lock is not None:
            self.job.lock.check()  # a run stopped past STALE_AFTER whose lock was taken over snapshots nothing
        if interrupt.pending():  # asked for no snapshot: none can show up late (see backup_end.py)
            interrupt.raise_pending()
        # named after the second the backup folder claimed, which a run begun in the same second as the
        # last one moves on by one: the last run's snapshot name (a libvirt checkpoint still kept under it,
        # the next incremental's base) is then never this run's
        named_at = self.sealer.named_at if self.sealer is not None else self.started
        name = self.snapshot_name = SNAPSHOT_PREFIX + named_at.strftime(layout.TS_FORMAT)
        desc = snapshot_text.describe(self.job.run_id, self.job.job_name)
        mark_snapshot_asked(self.host, vm, self.job.run_id)  # hostd may finish it after we are gone: the next run waits
        self.log.info("Creating Snapshot \"%s\" for %s" % (name, vm.name))
        try:
            self.snapshot = self.host.create_snapshot(
                vm, name, desc, self.s.vm_snapshot_memory, self.s.vm_snapshot_quiesce, self.s.snapshot_timeout * 60.0
            )
        except SnapshotError as err:
            self.snapshot_refused = True
            self.gone = isinstance(err, VmGone)  # leaves no folder, as its pre-flight's failure did
            raise
        except Interrupted as err:
            self.snapshot_refused = err.unasked  # stopped before the create was sent: nothing can show up late
            raise
        for disk in vm.disks:  # one the host found at the snapshot only (hot-plugged since the VM was loaded)
            if disk.skip_reason and not any(disk is d for d in self.result.skipped_disks):
                preflight.warn_skipped(self.log, vm, disk)
                self.result.skipped_disks.append(disk)
        self.log.debug("%s: snapshot id %s" % (vm.name, self.snapshot.id if self.snapshot else "?"))
        mark_snapshot_made(self.host, vm, self.job.run_id, self.snapshot.id if self.snapshot else "", self.log)
        crashpoint.reached("snapshot-created")

    def _check_tree_unchanged(self, vm: Vm) -> None:
        """A snapshot the user took or removed between the pre-flight and ours makes the kept
        tree (read in the pre-flight) not the one the VM has: such a backup is not sealed."""
        now = [x.id for x in self.host.snapshots(vm) if not is_ours(x)]
        if now != self.user_snapshots:
            raise HotvcbError("%s: its snapshots changed while it was backed up (ids %s, now %s); the snapshot "
                              "tree kept would not be the VM's" % (vm.name, ",".join(self.user_snapshots),
                                                                   ",".join(now)))

    def _copy_disks(self, vm: Vm, disks: List[Disk], sealer: "Union[Sealer, RepoSink]") -> None:
        fmt = self.s.disk_backup_format
        for disk in disks:
            if interrupt.pending():
                interrupt.raise_pending()
            dst = sealer.disk_destination(disk)
            folder = dst.rsplit("/", 1)[0]
            capacity = self.capacity.get(disk.key) or self.host.bytes_needed(disk, "eagerzeroedthick")
            label = "VM %d/%d %s, disk %d/%d %s" % (self.job.vm_number, self.job.vm_count, vm.name,
                                                     disks.index(disk) + 1, len(disks), disk.filename)
            progress = self.log.progress(label, capacity, functools.partial(
                self.job.run_eta, disks_left=len(disks) - disks.index(disk) - 1))
            self.log.info("Backing up %s (%s, %s) %s" % (disk.path, disk.key, human_size(capacity),
                                                          "into the repository" if self.s.vm_backup_repository
                                                          else "as " + fmt))
            t0 = time.monotonic()
            try:
                files = sealer.copy_disk(self.host, disk, dst, fmt, progress)
                took = time.monotonic() - t0
                # the rate of the virtual size, said so: a sparse disk's reads as thousands of MB/s, no datastore's speed
                self.log.info("%s: %s done in %d s (%.1f MB/s of its %s virtual size)" % (
                    vm.name, disk.filename, took, capacity / 1e6 / max(took, 0.001), human_size(capacity)))
                rel = [sealer.relative(folder + "/" + f) for f in files]
                self.result.disks.append(DiskResult(disk, True, rel, seconds=took, bytes=capacity))
                self.job._disk_seconds.append(took)
                crashpoint.reached("disk-copied-%d" % len(self.result.disks))
            except Interrupted:
                raise
            except HotvcbError as err:
                self.log.error("ERROR: error in backing up of %s for %s: %s" % (disk.path, vm.name, err))
                sealer.discard_disk(dst)
                self.result.disks.append(DiskResult(disk, False, error=str(err), seconds=time.monotonic() - t0))
