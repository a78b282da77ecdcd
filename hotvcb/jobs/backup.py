"""The backup job: snapshot -> copy -> consolidate -> seal -> rotate, per VM.

Each VM goes through explicit states so cleanup knows what to undo:

    resolved -> [powered down] -> snapshotted -> copied -> consolidated -> sealed

Whatever happens after `snapshotted` (a failed copy, a timeout, SIGTERM,
Ctrl-C), its end (jobs/backup_end.py) removes the snapshot *we* made, by id. A SIGKILL cannot be
caught, so our snapshots carry the prefix SNAPSHOT_PREFIX and our run's
record in their description; the next run (or `hotvcb cleanup`), holding the
host's run lock, removes those of other runs (jobs/leftovers.py); other
snapshots are never touched.
"""

import functools
import os
import threading
import time
from typing import TYPE_CHECKING, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .. import config, confkeys, crashpoint, interrupt, namelist
from ..errors import (AmbiguousVm, HotvcbError, Interrupted, InvalidVm, SnapshotError, TemplateVm, UnnameableVm, VmGone,
                      VmNotFound)
from ..hosts.base import Hypervisor, powered
from ..localshell import LocalShell
from ..model import Disk, DiskResult, Snapshot, SnapshotTree, Vm, VmRef, VmResult
from ..runid import RunId
from ..runlog import RunLog
from ..settings import Settings
from ..shell import Shell
from ..store import health, lastrun, layout, rotation
from ..store.deleter import Deleter
from ..store.seal import Sealer
from ..treeview import ScannedShell
from ..units import human_size
from . import backup_end, dryrun_checks, lookahead, parallel, preflight
from .ahead import RunStart
from .guest_hooks import run_guest_hook
from .hooks import run_hook
from .leftovers import (SNAPSHOT_PREFIX, cleanup_host, clear_volume_mark, is_ours, mark_snapshot_asked, mark_volume,
                        remove_partials, restore_power, snapshot_patience, volume_marker)
from .ownership import NONE_DEAD
from .power import PowerControl
from .snaptree import copy_tree
from .space import SpaceLedger
from .vm_leftovers import clear_dead_runs

if TYPE_CHECKING:  # imported by the runs that write to a repository (it loads the repository's code)
    from .repo_backup import RepoSink

# a VM to back up, or why a listed name is none
Target = Union[VmRef, VmNotFound, AmbiguousVm, InvalidVm, UnnameableVm, TemplateVm]
# a suspended ESXi VM or a paused QEMU/KVM guest is neither on nor off: a filtered job skipped it and said
# nothing of how it could be backed up
_SUSPENDED = "; a suspended or paused VM is backed up with --power-state suspended or any"


class BackupJob:
    def __init__(
        self,
        host: Hypervisor,
        settings: Settings,
        log: RunLog,
        run: RunId,
        *,
        asked: RunStart,
        lock=None,
        confdir: Optional[str] = None,
        dry_run: bool = False,
        job_name: str = "hotvcb",
        unmounted: bool = False,
    ):
        """`run` is this run's record (its host id set); `lock` the HostLock held for it,
        whose heartbeat keeps our -partial folders visibly alive; `asked` the run's first questions;
        `unmounted`: the target is the NFS share this dry run would have mounted (jobs/nfs.py)."""
        self.host, self.settings, self.log, self.run_id, self.lock = host, settings, log, run, lock
        self.confdir, self.dry_run, self.job_name, self.unmounted = confdir, dry_run, job_name, unmounted
        self.asked = asked
        self.power = PowerControl(host, log, run, lock, dry_run)
        # rotation's removals, in a thread while the run goes on (store/deleter.py); waited for before it ends
        self.deleter = Deleter(functools.partial(rotation.remove_now, host.shell, log))
        # room on the target promised to VMs being backed up now
        self.space = SpaceLedger(log, first_look=self.asked.look, removals=self.deleter)
        self.queue = None  # type: Optional[parallel.Queue]  # the VMs still to start, with BACKUP_PARALLEL
        self.lookahead = lookahead.Lookahead(host, dry_run)  # the serial loop, asking about the next VM
        self.swept = False  # this run looked for a dead run's leftovers on every VM
        # the runs whose lock was taken over as gone, with when (HostLock.takeovers), kept past the sweep that
        # forgets them: what one left (a snapshot hostd finishes after the sweep) is a dead run's for every VM's
        # cleanup, and what it makes after the takeover (only stopped, it went on) a live run's
        self.dead = NONE_DEAD  # type: Mapping[str, float]
        self._mine = threading.local()  # .vm_number: each worker thread's VM
        self.vm_number = self.vm_count = 0  # for the progress line: VM i of n
        self.results = []  # type: List[VmResult]  # so far (an interrupted run still reports them)
        self._vm_seconds = []  # type: List[float]  # durations of the VMs done, for the run's ETA
        self._disk_seconds = []  # type: List[float]

    # -- selection -----------------------------------------------------------
    def select(self, names: Optional[Sequence[str]], exclude: Sequence[str]) -> List[Target]:
        """VmRefs to back up, in order; a name that matches no VM, or several, or one a restore refuses
        (a line break or other control character, only dots and spaces: layout.backup_unnameable), or one too
        long for its backups' folder names (layout.too_long) is an error entry.

        Names are compared literally with the display name: a list line
        `Web Server (prod)` is that VM, never a pattern. A template (listed among the VMs) is no VM to
        back up: -a skips it with a note, a name given that is only a template's is an error entry.
        """
        listed = self.asked.vms()
        refs = [ref for ref in listed if not ref.template]
        templates = {ref.name: ref for ref in listed if ref.template}
        invalid = [InvalidVm(vmid, why) for vmid, why in sorted(self.host.invalid_vms().items())]
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
            unnameable = layout.backup_unnameable(name) if len(matches) == 1 else None
            too_long = layout.too_long(name) if len(matches) == 1 else None
            if unnameable or too_long:  # a backup a restore would refuse, or none made: said before any change
                out.append(UnnameableVm(name, unnameable or too_long or "", matches[0].vmid, not unnameable))
            elif len(matches) == 1:
                out.append(matches[0])
            elif not matches and name in templates:
                out.append(TemplateVm(name, templates[name].vmx_path))
            elif not matches:
                out.append(VmNotFound(name, [r.name for r in refs]))
            else:
                out.append(AmbiguousVm(name, [r.vmid for r in matches]))
        for warning in namelist.excluding_nothing(exclude, list(by_name) + list(templates)):
            self.log.warning(warning)
        if names is None:
            for name in sorted(set(templates) - excluded):
                self.log.info("%s is a template (%s), not a VM: not backed up" % (name, templates[name].vmx_path))
            out.extend(invalid)  # -a: every VM of the host, the ones it cannot read included
        else:
            for bad in invalid:
                self.log.warning(str(bad))
        return out

    # -- the run -------------------------------------------------------------
    def run(self, names: Optional[Sequence[str]], exclude: Sequence[str] = ()) -> List[VmResult]:
        if self.lock is not None and not self.dry_run and self.lock.sweep_needed:
            # a run before us died: what it left may be on VMs this run does not back up
            self.log.warning("a previous hotvcb run on this host died; looking for its leftovers on every VM")
            self.dead = self.lock.takeovers()
            if cleanup_host(self.host, self.settings.vm_backup_volume, self.log, self.run_id, dead=self.dead,
                            snapshot_wait=snapshot_patience(self.settings)).complete:
                self.lock.sweep_done()
            self.swept = True
        targets = self.select(names, exclude)
        self.results = []
        try:
            self.power.shutdown_in_order(targets, self.settings, refused=self._refused_configs(targets))
            self.vm_count = len(targets)
            if self.settings.backup_parallel > 1 and len(targets) > 1 and not self.dry_run:
                parallel.run(self, targets)
            else:
                self.lookahead.run(self, targets)
        finally:
            self.power.start_in_order(self.settings)
            self.lookahead.drop()
            self.deleter.wait()  # the space rotation frees is free when the run says it is done
        return self.results

    @property
    def vm_number(self) -> int:
        return getattr(self._mine, "vm_number", 0)

    @vm_number.setter
    def vm_number(self, number: int) -> None:
        self._mine.vm_number = number

    def backup_target(self, target: Target) -> VmResult:
        """One entry of the selection: its VM's backup, or why a listed name is none."""
        if isinstance(target, (VmNotFound, AmbiguousVm, InvalidVm, UnnameableVm, TemplateVm)):
            self.log.error(str(target))
            return VmResult(name=target.name, status="error", message=str(target))
        return self.backup_one(target, skip_power=target.name in self.power.ordered_down)

    def _refused_configs(self, targets) -> Dict[str, str]:
        """{VM of VM_SHUTDOWN_ORDER backed up this run: why its per-VM file is refused}: its turn fails on
        that file, so shutting it down first would cost it downtime for a backup that never happens."""
        refused = {}  # type: Dict[str, str]
        for ref in targets:
            if isinstance(ref, VmRef) and ref.name in self.settings.vm_shutdown_order:
                try:
                    self._vm_settings(ref)
                except HotvcbError as err:
                    refused[ref.name] = str(err)
        return refused

    def _vm_settings(self, ref: VmRef) -> "Tuple[Settings, List[str]]":
        """The VM's settings (its per-VM file over the run's) and their warnings, or the reason its file
        refuses it before anything is done to it (a HotvcbError)."""
        settings, warnings = config.for_vm(self.settings, self.confdir, ref.name)
        refused = config.dry_run_refused(settings, self.dry_run)
        if refused:
            raise HotvcbError(refused)
        return settings, warnings

    def backup_one(self, ref: VmRef, skip_power: bool = False) -> VmResult:
        """One VM's turn. However it ends (its per-VM file refused, a VM that did not shut down for
        VM_SHUTDOWN_ORDER, a failed or interrupted backup, a dry run), its result names the good
        backups the VM has (`_ended`): the report and the mail are read above all when a VM failed,
        and a VM said to have none while it has some is an alarm sent for nothing."""
        result = VmResult(name=ref.name)
        seen = _Seen(self.settings)
        try:
            self._attempt(ref, skip_power, result, seen)
        except Interrupted as err:
            if result.sealed:  # its backup is good: the report says so, and the run stops as interrupted
                self.log.warning("%s: backed up as %s, then the run was interrupted (%s)"
                                 % (ref.name, result.backup_dir, err))
            else:
                result.status, result.message = "error", str(err)
                self.log.error("%s: backup interrupted (%s)" % (ref.name, err))
            self.results.append(result)  # the report of an interrupted run names the VM it was on
            raise
        except HotvcbError as err:
            result.status, result.message = "error", str(err)
            self.log.error("%s: %s" % (ref.name, err))
        finally:
            self.space.release(ref.name, failed=result.status not in ("ok", "skipped"))
            self._ended(result, seen)
        return result

    def _attempt(self, ref: VmRef, skip_power: bool, result: VmResult, seen: "_Seen") -> None:
        """The VM's settings, then its backup; a failure is raised, and `seen` keeps what the turn
        learnt of where the VM's backups are and whose."""
        settings, warnings = self._vm_settings(ref)
        seen.settings = settings
        for w in warnings:
            self.log.warning(w)
        if settings.per_vm_file:  # as ghettoVCB's "CONFIG - USING CONFIGURATION FILE": was the file picked up?
            self.log.info("CONFIG: %s for %s; %s" % (settings.per_vm_file, ref.name, settings.summary()))
            ignored = confkeys.repository_ignores(settings)
            if ignored and ignored != confkeys.repository_ignores(self.settings):  # not said for the run already
                self.log.warning("%s: %s" % (ref.name, ignored))
        if ref.name in self.power.problems:
            raise HotvcbError("did not shut down for VM_SHUTDOWN_ORDER; not backed up")
        if settings.backup_power_state != "any" and not skip_power:
            vm = seen.vm = self.host.load_vm(ref)
            # a VM a dead run powered off is judged by the state it had, not the one we left it in
            restore_power(self.host, vm, self.log, self.run_id, self.dry_run, self.dead)
            state = self.host.power_state(vm)
            if state != settings.backup_power_state:
                result.status = "skipped"
                result.message = "%s (BACKUP_POWER_STATE=%s%s)" % (
                    powered(state), settings.backup_power_state, _SUSPENDED if state == "suspended" else "")
                self.log.info("%s: skipped, %s" % (ref.name, result.message))
                return
        self.log.info("Initiate backup for %s" % ref.name)
        started = self.host.shell.now()  # the host's clock names the backup and its snapshot, as ghettoVCB's did
        one = _VmBackup(self, ref, settings, result, started, skip_power)
        try:
            one.run()
        finally:
            seen.vm = one.vm or seen.vm
            seconds = result.seconds = (self.host.shell.now() - started).total_seconds()
            self._vm_seconds.append(seconds)
        if result.status == "ok":
            verb = "would be backed up" if self.dry_run else "backed up"
            self.log.info("Successfully completed backup for %s (%s, %d s)" % (ref.name, verb, seconds))
        elif result.status == "warn":
            self.log.warning("Backup for %s completed with failed disk(s) (%d s): %s" % (
                ref.name, seconds, ", ".join(d.disk.key for d in result.disks if not d.ok)))

    def _ended(self, result: VmResult, seen: "_Seen") -> None:
        """Every VM's turn ends here: the good backups the VM has, and (a real run's failure) its record
        for `hotvcb status`. A dry run changes nothing, so what it would keep is what there is; the NFS
        share a dry run did not mount holds nothing to count yet."""
        uuid = seen.vm.uuid if seen.vm is not None else ""
        repo = seen.settings.vm_backup_repository  # its records go where status looks for its backups
        # one look at the VM's backup folder: its good backups, and whether a failure is recorded there
        shell = self.host.shell if repo else \
            ScannedShell(self.host.shell, layout.vm_root(seen.settings.vm_backup_volume, result.name))
        if not self.unmounted:
            result.good_backups = self._good_backups(result.name, seen.settings, uuid, shell)
        if self.dry_run or result.status == "skipped" or repo and _newer_repository(repo):
            return
        where = lastrun.in_repository(repo) if repo else seen.settings.vm_backup_volume
        if result.status == "ok":
            lastrun.settle(shell, where, result.name, self.host.host_name(), uuid, self.log, repo,
                           self.host.system_id())
        else:
            lastrun.record(self.host.shell, where, result.name, self.host.host_name(), uuid, result.status,
                           result.message, self.log, repo, self.host.system_id())

    def run_eta(self, disk_left: float, disks_left: int = 0) -> Optional[float]:
        """This disk's ETA, plus the rest of this VM and the VMs after it, by the average so far."""
        if not self._vm_seconds and not self._disk_seconds:
            return None
        per_disk = sum(self._disk_seconds) / len(self._disk_seconds) if self._disk_seconds else 0.0
        per_vm = sum(self._vm_seconds) / len(self._vm_seconds) if self._vm_seconds else per_disk
        later = self.queue.later() if self.queue is not None else self.vm_count - self.vm_number
        return disk_left + disks_left * per_disk + later * per_vm

    def _good_backups(self, name: str, settings: Settings, uuid: str, shell: Shell) -> List[str]:
        """What this VM can be restored from now: the e-mail says it, above all on a failure.
        Never another host's backup of another VM of the same name (a shared volume). `shell`: a
        ScannedShell of the VM's backup folder."""
        if settings.vm_backup_repository:
            return self._in_repository(name, settings.vm_backup_repository, uuid)
        source = (self.host.host_name(), uuid)
        try:
            found = layout.list_backups(shell, settings.vm_backup_volume, name)
            verdicts = {b.path: health.judge(shell, b) for b in found}
            own = dict(verdicts)
            found, unpacked = rotation.one_per_time(found, verdicts)  # a .gz and its unpacked twin: one, as list shows
            return [rotation.restorable(b.path, own, unpacked) for b in found if verdicts[b.path].good
                    and not rotation.made_elsewhere(verdicts[b.path].manifest, source)]
        except HotvcbError as err:
            self.log.warning("%s: cannot list its backups: %s" % (name, err))
            return []

    def _in_repository(self, name: str, path: str, uuid: str) -> List[str]:
        """The VM's backups in the repository at `path`, oldest first, each as its seal names it (every record
        there is a whole backup); none where there is no repository yet (a first backup that failed), nor
        where it is no folder of this machine (a run over SSH, whose repository backup is refused)."""
        from ..repo.repository import SNAPSHOTS, open_path
        if not isinstance(self.host.shell, LocalShell) or not os.path.exists(os.path.join(path, "config")):
            return []
        try:
            snaps, _damaged = open_path(path).readable_snapshots(name)  # a damaged one is verify's to name
        except HotvcbError as err:
            self.log.warning("%s: cannot list its backups: %s" % (name, err))
            return []
        return ["%s/%s%s" % (path.rstrip("/"), SNAPSHOTS, s.id) for s in snaps
                if s.of_vm(name, uuid, self.run_id.host)]


def _newer_repository(path: str) -> bool:
    """Whether the repository at `path` is a newer hotvcb's (the run refused it): this one writes nothing into a
    layout it does not know, not even its run's record (a newer hotvcb may keep those elsewhere, or not at all)."""
    from ..repo.backend import LocalBackend
    from ..repo.format import NewerFormat
    from ..repo.repository import Repository

    try:
        Repository.open(LocalBackend(path))
    except NewerFormat:
        return True
    except HotvcbError:
        pass  # none yet, or one this run could not open: its record goes where it always went (lastrun.record)
    return False


class _Seen:
    """What a VM's turn learnt of where its backups are and whose: the run's settings until its per-VM
    file is read, and the VM once loaded (its uuid tells its backups from another VM's of its name)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.vm = None  # type: Optional[Vm]


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
                                             snapshot_patience(self.s), self.result.warnings)
        self.vm = vm
        if not self.s.vm_backup_repository:
            # before the pre-flight counts the room, which what a dead run or a refused removal left takes:
            # -deleting entries go to the deleter, and a VM that does not fit waits for it (jobs/space.py);
            # a dry run says what it would remove
            remove_partials(self.host.shell, self.s.vm_backup_volume, vm.name, self.log, run, dry,
                            finish=self.job.deleter.remove, dead=self.job.dead)
        # named before disks_to_copy may refuse the VM: a VM of independent disks only is reported with them
        self.result.skipped_disks = [d for d in vm.disks if d.skip_reason]
        disks = preflight.disks_to_copy(vm, self.s, self.log)
        plan = preflight.check(self.host, self.s, self.log, self.job.space, vm, disks, snaps, pending,
                               unmounted=self.job.unmounted)
        self.capacity, self.tree, self.user_snapshots = plan.capacity, plan.tree, plan.user_snapshots
        for warning in plan.warnings:
            self.log.warning(warning)
            self.result.warnings.append(warning)
        if dry:  # what the real run checks once the VM's backup began too, and what it would copy
            refused = dryrun_checks.check(self.host, self.s, self.log, vm, disks)
            preflight.dry_run(self.host, self.s, self.log, vm, disks, plan, self.started)
            dryrun_checks.report(self.result, disks, plan.capacity, refused)
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
        (leftovers.marked_volume). Written only then: a run without per-VM volumes changes nothing.
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
            state = lookahead.power_state(self.host, vm, self.asked, self.s, self.skip_power)
            if self.s.cold_snapshot and state == "on" and not self.skip_power:
                self._cold_snapshot(vm)
            elif self.s.power_vm_down_before_backup and state == "on" and not self.skip_power:
                self.powered_down = True  # from the first shutdown request on, cleanup restarts it
                self.job.power.power_down(vm, self.s)
                state = "off"
            elif state != "off":
                self._snapshot(vm)
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
    def _cold_snapshot(self, vm: Vm) -> None:
        """COLD_SNAPSHOT: the backup of a shut-down guest, with minutes of downtime, not hours.

        Shut down, snapshot while off (the base disks hold exactly the
        powered-off state), power on at once, and copy while the VM runs on
        its delta. A VM that does not come back is the first thing the log,
        the exit code and the mail say.
        """
        down_at = time.monotonic()
        self.powered_down = True
        self.job.power.power_down(vm, self.s)
        self._snapshot(vm)
        self.log.info("Powering %s on again before the copy" % vm.name)
        back = self.job.power.restore_on(vm)
        self.powered_down = not back
        downtime = time.monotonic() - down_at
        if back:
            self.log.info("%s was down for %d s (COLD_SNAPSHOT): shutdown, snapshot, boot" % (vm.name, downtime))
        else:
            self.power_failure = "%s did NOT power on again after its cold snapshot; it is DOWN" % vm.name
            self.log.error("!!! %s !!!" % self.power_failure)

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
        desc = "hotvcb backup %s, job %s" % (self.job.run_id.text(), self.job.job_name)
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
        self.log.debug("%s: snapshot id %s" % (vm.name, self.snapshot.id if self.snapshot else "?"))
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
