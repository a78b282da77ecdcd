"""The backup job: snapshot -> copy -> consolidate -> seal -> rotate, per VM.

Each VM goes through explicit states so cleanup knows what to undo:

    resolved -> [powered down] -> snapshotted -> copied -> consolidated -> sealed

Whatever happens after `snapshotted` (a failed copy, a timeout, SIGTERM,
Ctrl-C), cleanup removes the snapshot *we* made, by id. A SIGKILL cannot be
caught, so our snapshots carry the prefix SNAPSHOT_PREFIX and our run's
record in their description; the next run (or `hotvcb cleanup`), holding the
host's run lock, removes those of other runs (jobs/leftovers.py); other
snapshots are never touched.
"""

import time
from datetime import datetime
from typing import Dict, List, Optional, Sequence, Union

from .. import config, crashpoint, interrupt
from ..errors import AmbiguousVm, HotvcbError, Interrupted, SnapshotError, VmNotFound
from ..hosts.base import Hypervisor
from ..model import Disk, DiskResult, Snapshot, Vm, VmRef, VmResult
from ..runid import RunId
from ..runlog import RunLog
from ..settings import Settings
from ..store import health, layout
from ..store.seal import Sealer
from ..treeview import ScannedShell
from ..units import human_size
from ..vmdk import base_name
from .leftovers import SNAPSHOT_PREFIX, remove_our_snapshots, remove_partials, restore_power
from .power import PowerControl

Target = Union[VmRef, VmNotFound, AmbiguousVm]  # a VM to back up, or why a listed name is none


class BackupJob:
    def __init__(
        self,
        host: Hypervisor,
        settings: Settings,
        log: RunLog,
        run: RunId,
        *,
        lock=None,
        confdir: Optional[str] = None,
        dry_run: bool = False,
        job_name: str = "hotvcb",
    ):
        """`run` is this run's record (its host id set); `lock` the HostLock held for it,
        whose heartbeat keeps our -partial folders visibly alive."""
        self.host, self.settings, self.log, self.run_id, self.lock = host, settings, log, run, lock
        self.confdir, self.dry_run, self.job_name = confdir, dry_run, job_name
        self.power = PowerControl(host, log, run)

    # -- selection -----------------------------------------------------------
    def select(self, names: Optional[Sequence[str]], exclude: Sequence[str]) -> List[Target]:
        """VmRefs to back up, in order; a name that matches no VM is an error entry.

        Names are compared literally with the display name: a list line
        `Web Server (prod)` is that VM, never a pattern.
        """
        refs = self.host.list_vms()
        by_name = {}  # type: Dict[str, List[VmRef]]
        for ref in refs:
            by_name.setdefault(ref.name, []).append(ref)
        excluded = set(exclude)
        wanted = [r.name for r in refs] if names is None else list(names)
        out = []  # type: List[Target]
        seen = set()
        for name in wanted:
            if name in seen:
                continue
            seen.add(name)
            if name in excluded:
                self.log.info("%s is on the exclude list, skipping" % name)
                continue
            matches = by_name.get(name, [])
            if len(matches) == 1:
                out.append(matches[0])
            elif not matches:
                out.append(VmNotFound(name))
            else:
                out.append(AmbiguousVm(name, [r.vmid for r in matches]))
        return out

    # -- the run -------------------------------------------------------------
    def run(self, names: Optional[Sequence[str]], exclude: Sequence[str] = ()) -> List[VmResult]:
        targets = self.select(names, exclude)
        results = []  # type: List[VmResult]
        try:
            self.power.shutdown_in_order(targets, self.settings, self.dry_run)
            for target in targets:
                if isinstance(target, (VmNotFound, AmbiguousVm)):
                    self.log.error(str(target))
                    results.append(VmResult(name=target.name, status="error", message=str(target)))
                    continue
                if target.name in self.power.problems:
                    why = "did not shut down for VM_SHUTDOWN_ORDER; not backed up"
                    self.log.error("%s: %s" % (target.name, why))
                    results.append(VmResult(name=target.name, status="error", message=why))
                    continue
                results.append(self.backup_one(target, skip_power=target.name in self.power.ordered_down))
                if interrupt.pending():
                    interrupt.raise_pending()
        finally:
            self.power.start_in_order(self.settings)
        return results

    def backup_one(self, ref: VmRef, skip_power: bool = False) -> VmResult:
        result = VmResult(name=ref.name)
        try:
            settings, warnings = config.for_vm(self.settings, self.confdir, ref.name)
        except HotvcbError as err:
            self.log.error("%s: %s" % (ref.name, err))
            result.status, result.message = "error", str(err)
            return result
        for w in warnings:
            self.log.warning(w)
        self.log.info("Initiate backup for %s" % ref.name)
        started = datetime.now()
        try:
            _VmBackup(self, ref, settings, result, started, skip_power).run()
        except Interrupted as err:
            result.status, result.message = "error", str(err)
            self.log.error("%s: backup interrupted (%s)" % (ref.name, err))
            raise
        except HotvcbError as err:
            result.status, result.message = "error", str(err)
            self.log.error("%s: %s" % (ref.name, err))
        if not self.dry_run:
            result.good_backups = self._good_backups(ref.name, settings)
        seconds = result.seconds = (datetime.now() - started).total_seconds()
        if result.status == "ok":
            verb = "would be backed up" if self.dry_run else "backed up"
            self.log.info("Successfully completed backup for %s (%s, %d s)" % (ref.name, verb, seconds))
        elif result.status == "warn":
            self.log.warning("Backup for %s completed with failed disk(s) (%d s): %s" % (
                ref.name, seconds, ", ".join(d.disk.key for d in result.disks if not d.ok)))
        return result


    def _good_backups(self, name: str, settings: Settings) -> List[str]:
        """What this VM can be restored from now: the e-mail says it, above all on a failure."""
        shell = ScannedShell(self.host.shell, layout.vm_root(settings.vm_backup_volume, name))
        try:
            found = layout.list_backups(shell, settings.vm_backup_volume, name)
            return [b.path for b in found if health.judge(shell, b).good]
        except HotvcbError as err:
            self.log.warning("%s: cannot list its backups: %s" % (name, err))
            return []


class _VmBackup:
    """One VM's backup; its attributes are the lifecycle state cleanup reads."""

    def __init__(self, job: BackupJob, ref: VmRef, settings: Settings, result: VmResult, started, skip_power):
        self.job, self.host, self.log = job, job.host, job.log
        self.ref, self.s, self.result, self.started = ref, settings, result, started
        self.skip_power = skip_power
        self.vm = None  # type: Optional[Vm]
        self.snapshot = None  # type: Optional[Snapshot]
        self.snapshot_name = None  # type: Optional[str]  # asked for, whether or not it showed up
        self.snapshot_refused = False  # the host said no: nothing will show up late
        self.powered_down = False
        self.sealer = None  # type: Optional[Sealer]
        self.capacity = {}  # type: Dict[str, int]  # disk key -> virtual size, from the pre-flight

    def run(self) -> None:
        vm = self.vm = self.host.load_vm(self.ref)
        run, dry = self.job.run_id, self.job.dry_run
        snaps = self.host.snapshots(vm)  # one look serves the leftover check and the pre-flight
        if remove_our_snapshots(self.host, vm, self.log, run, dry, snaps):
            vm = self.vm = self.host.load_vm(self.ref)  # its disks no longer point at our deltas
            snaps = self.host.snapshots(vm)
        restore_power(self.host, vm, self.log, run, dry)
        disks = self._disks_to_copy(vm)
        self._preflight(vm, disks, snaps)
        if dry:
            self._dry_run(vm, disks)
            self.result.status = "ok"
            return
        self.sealer = Sealer(self.host.shell, self.s, vm, self.started, self.log, run, self.job.lock)
        remove_partials(self.host.shell, self.s.vm_backup_volume, vm.name, self.log, run)
        self.sealer.begin()
        try:
            self.sealer.copy_config_files(self.host.backup_config(vm))
            state = self.host.power_state(vm)
            if self.s.power_vm_down_before_backup and state == "on" and not self.skip_power:
                self.powered_down = True  # from the first shutdown request on, cleanup restarts it
                self.job.power.power_down(vm, self.s)
                state = "off"
            if state != "off":
                self._snapshot(vm)
            self._copy_disks(vm, disks, self.sealer)
        except BaseException as err:
            self.result.message = str(err) or type(err).__name__
            self._cleanup(vm, self.sealer, failed=True)
            raise
        self._cleanup(vm, self.sealer, failed=False)

    # -- steps ---------------------------------------------------------------
    def _disks_to_copy(self, vm: Vm):
        """The disks to copy; none at all fails the VM before any change.

        A backup without a disk is no backup: sealed as OK it would let
        rotation delete the real ones. VMDK_FILES_TO_BACKUP names match a
        disk's file name or, for a disk running on a snapshot delta, its
        base name (the name the backup gives it).
        """
        wanted = [n for n in self.s.vmdk_files_to_backup if n.lower() != "all"]
        out = []
        matched = set()
        for disk in vm.disks:
            names = {disk.filename, base_name(disk.filename)}
            if disk.skip_reason:
                self.log.warning("%s: skipping %s (%s): %s" % (vm.name, disk.key, disk.filename, disk.skip_reason))
            elif wanted and not names & set(wanted):
                self.log.info("%s: %s not in VMDK_FILES_TO_BACKUP, skipping" % (vm.name, disk.filename))
            else:
                matched |= names
                out.append(disk)
        unknown = [n for n in wanted if n not in matched and all(n not in (d.filename, base_name(d.filename)) for d in vm.disks)]
        if unknown:
            self.log.warning("%s: VMDK_FILES_TO_BACKUP names %s, which this VM does not have (its disks: %s)"
                             % (vm.name, ", ".join(unknown), ", ".join(d.filename for d in vm.disks) or "none"))
        if not out:
            why = "every disk was skipped" if vm.disks else "the VM has no disk"
            if wanted:
                why = "VMDK_FILES_TO_BACKUP=%s matches none of its disks (%s)" % (
                    ",".join(wanted), ", ".join(d.filename for d in vm.disks) or "none")
            raise HotvcbError("%s: nothing to back up: %s" % (vm.name, why))
        return out

    def _preflight(self, vm: Vm, disks, snaps: List[Snapshot]) -> None:
        """Everything that can fail before we change anything on the host (`snaps`: read just now)."""
        deltas = self.host.delta_files(vm)
        if (snaps or deltas) and not self.s.allow_vms_with_snapshots_to_be_backedup:
            what = "%d snapshot(s)" % len(snaps) if snaps else "delta files %s" % ", ".join(
                d.rsplit("/", 1)[-1] for d in deltas
            )
            raise HotvcbError(
                "%s has %s; not backing it up (set ALLOW_VMS_WITH_SNAPSHOTS_TO_BE_BACKEDUP=1 to allow)"
                % (vm.name, what)
            )
        fmt = self.s.disk_backup_format
        if fmt not in self.host.formats:
            raise HotvcbError("DISK_BACKUP_FORMAT=%s cannot be written on this %s host (allowed: %s)"
                              % (fmt, self.host.kind, "|".join(self.host.formats)))
        needed = sum(self.host.bytes_needed(d, fmt) for d in disks)
        # each disk's size for the copy's progress, read now while the driver has the descriptors
        self.capacity = {d.key: self.host.bytes_needed(d, "eagerzeroedthick") for d in disks}
        free = self.host.free_space(self.s.vm_backup_volume)
        self.needed = needed
        if free is not None and needed > free:
            raise HotvcbError(
                "%s needs %s on %s but only %s is free"
                % (vm.name, human_size(needed), self.s.vm_backup_volume, human_size(free))
            )
        self.log.debug("%s: %s needed, %s free" % (vm.name, human_size(needed), "unknown" if free is None else human_size(free)))

    def _dry_run(self, vm: Vm, disks) -> None:
        s = self.s
        target = layout.vm_root(s.vm_backup_volume, vm.name) + "/" + layout.backup_name(vm.name, self.started)
        self.log.dryrun("###############################################")
        self.log.dryrun("Virtual Machine: %s (vmid %s)" % (vm.name, vm.ref.vmid))
        self.log.dryrun("VM_VMX_PATH: %s" % vm.ref.vmx_path)
        self.log.dryrun("BACKUP_TO: %s" % target)
        self.log.dryrun("POWER_STATE: %s" % self.host.power_state(vm))
        for d in disks:
            self.log.dryrun(
                "VMDK: %s (%s) -> %s, needs %s" % (d.path, d.key, s.disk_backup_format, human_size(self.host.bytes_needed(d, s.disk_backup_format)))
            )
        for f in vm.extra_files:
            self.log.dryrun("FILE: %s" % f)
        self.log.dryrun("TOTAL NEEDED: %s; ROTATION: keep %d" % (human_size(self.needed), s.vm_backup_rotation_count))
        self.log.dryrun("###############################################")

    def _snapshot(self, vm: Vm) -> None:
        name = self.snapshot_name = SNAPSHOT_PREFIX + self.started.strftime(layout.TS_FORMAT)
        desc = "hotvcb backup %s, job %s" % (self.job.run_id.text(), self.job.job_name)
        self.log.info("Creating Snapshot \"%s\" for %s" % (name, vm.name))
        try:
            self.snapshot = self.host.create_snapshot(
                vm, name, desc, self.s.vm_snapshot_memory, self.s.vm_snapshot_quiesce, self.s.snapshot_timeout * 60.0
            )
        except SnapshotError:
            self.snapshot_refused = True
            raise
        self.log.debug("%s: snapshot id %s" % (vm.name, self.snapshot.id if self.snapshot else "?"))
        crashpoint.reached("snapshot-created")

    def _copy_disks(self, vm: Vm, disks: List[Disk], sealer: Sealer) -> None:
        fmt = self.s.disk_backup_format
        for disk in disks:
            if interrupt.pending():
                interrupt.raise_pending()
            dst = sealer.disk_destination(disk)
            folder = dst.rsplit("/", 1)[0]
            capacity = self.capacity.get(disk.key) or self.host.bytes_needed(disk, "eagerzeroedthick")
            progress = self.log.progress("%s %s" % (vm.name, disk.filename), capacity)
            self.log.info("Backing up %s (%s, %s) as %s" % (disk.path, disk.key, human_size(capacity), fmt))
            t0 = time.monotonic()
            try:
                files = self.host.copy_disk(disk, dst, fmt, progress)
                took = time.monotonic() - t0
                self.log.info("%s: %s done in %d s (%.1f MB/s)" % (vm.name, disk.filename, took, capacity / 1e6 / max(took, 0.001)))
                rel = [sealer.relative(folder + "/" + f) for f in files]
                self.result.disks.append(DiskResult(disk, True, rel, seconds=took, bytes=capacity))
                crashpoint.reached("disk-copied-%d" % len(self.result.disks))
            except Interrupted:
                raise
            except HotvcbError as err:
                self.log.error("ERROR: error in backing up of %s for %s: %s" % (disk.path, vm.name, err))
                sealer.discard_disk(dst)
                self.result.disks.append(DiskResult(disk, False, error=str(err), seconds=time.monotonic() - t0))

    def _cleanup(self, vm: Vm, sealer: Sealer, failed: bool) -> None:
        """Undo what we did, in reverse: snapshot, power, then seal or discard."""
        errors = []  # type: List[str]
        if self.snapshot is None and self.snapshot_name is not None:
            self.snapshot = self._late_snapshot(vm, wait=not self.snapshot_refused)
        snap = self.snapshot
        if snap is not None:
            try:
                self.log.info("Removing snapshot %s (id %s) from %s" % (snap.name, snap.id, vm.name))
                crashpoint.reached("removing-snapshot")
                self.host.remove_snapshot(vm, snap, self.s.snapshot_remove_timeout * 60.0)
                self.snapshot = None
                crashpoint.reached("snapshot-removed")
            except HotvcbError as err:
                errors.append("snapshot %s could NOT be removed: %s -- remove it by hand" % (snap.id, err))
                self.log.error("%s: %s" % (vm.name, errors[-1]))
        if self.powered_down:
            self.job.power.restore_on(vm)
            self.powered_down = False
        disks = self.result.disks
        if not (failed or errors or (disks and not any(d.ok for d in disks))):
            self.result.status = "warn" if any(not d.ok for d in disks) else "ok"
            try:
                self.result.backup_dir = sealer.seal(self.result, self.snapshot_info())
                return
            except BaseException as err:
                self.log.error("%s: sealing the backup failed: %s" % (vm.name, err))
                self._discard(vm, "sealing failed: %s" % err)
                raise
        self._discard(vm, "; ".join(errors) or self.result.message or "; ".join(d.error for d in disks if not d.ok))

    def _late_snapshot(self, vm: Vm, wait: bool) -> Optional[Snapshot]:
        """Our snapshot, if it shows up after we gave up on it (hostd finished the task late).

        Waits as long again as SNAPSHOT_TIMEOUT allowed, at most a minute:
        removing it now beats leaving it to grow until the next run. When the
        host refused the snapshot outright, one look is enough.
        """
        deadline = time.monotonic() + (min(60.0, self.s.snapshot_timeout * 60.0) if wait else 0.0)
        while True:
            try:
                mine = [x for x in self.host.snapshots(vm, interruptible=False) if x.name == self.snapshot_name]
            except HotvcbError as err:
                self.log.warning("%s: cannot check for a late snapshot: %s" % (vm.name, err))
                return None
            if mine:
                self.log.warning("%s: snapshot %s appeared after the timeout; removing it" % (vm.name, self.snapshot_name))
                return mine[-1]
            if time.monotonic() >= deadline:
                return None
            time.sleep(1.0)

    def _discard(self, vm: Vm, message: str) -> None:
        """Record a failed backup as such; never let this hide the first error."""
        self.result.status, self.result.message = "error", message
        if self.sealer is None or not self.host.shell.isdir(self.sealer.partial):
            return
        try:
            self.result.backup_dir = self.sealer.fail(self.result)
        except HotvcbError as err:
            self.log.error("%s: could not record the failed backup: %s" % (vm.name, err))

    def snapshot_info(self) -> Dict[str, object]:
        return {"memory": self.s.vm_snapshot_memory, "quiesce": self.s.vm_snapshot_quiesce}
