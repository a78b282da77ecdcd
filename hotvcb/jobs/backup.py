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

from __future__ import annotations

import functools
import os
import threading
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .. import config, confkeys, namelist
from ..errors import (AmbiguousVm, HotvcbError, Interrupted, InvalidVm, TemplateVm, UnclearLine, UnnameableVm,
                      VmNotFound)
from ..hosts.base import Hypervisor, powered
from ..localshell import LocalShell
from ..model import Vm, VmRef, VmResult
from ..runid import RunId
from ..runlog import RunLog
from ..settings import Settings
from ..shell import Shell
from ..store import health, lastrun, layout, rotation
from ..store.deleter import Deleter
from ..treeview import ScannedShell
from . import lookahead, parallel
from .ahead import RunStart
from .host_cleanup import cleanup_host
from .ownership import NONE_DEAD
from .power import PowerControl, powers_down
from .powermark import restore_power, state_had
from .snapshot_asked import snapshot_patience
from .space import SpaceLedger
from .vm_backup import _VmBackup

# a VM to back up, or why a listed name is none
Target = Union[VmRef, VmNotFound, AmbiguousVm, InvalidVm, UnnameableVm, TemplateVm]
# a suspended ESXi VM or a paused QEMU/KVM guest is neither on nor off: a filtered job skipped it and said
# nothing of how it could be backed up
_SUSPENDED = "; a suspended or paused VM is backed up with --power-state suspended or any"


class BackupJob:
    # declared for the checker: jobs/vm_backup.py's _VmBackup takes these from the job before this module is checked
    host: Hypervisor
    log: RunLog

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
        templates = {}  # type: Dict[str, List[str]]  # a name -> every template's .vmtx of it (one per datastore)
        for ref in listed:
            if ref.template:
                templates.setdefault(ref.name, []).append(ref.vmx_path)
        invalid = [InvalidVm(vmid, why) for vmid, why in sorted(self.host.invalid_vms().items())]
        by_name = {}  # type: Dict[str, List[VmRef]]
        for ref in refs:
            by_name.setdefault(ref.name, []).append(ref)
        known = list(by_name) + list(templates)
        excluded = set(namelist.fitted(exclude, known))
        unclear = [] if names is None else namelist.unclear(names, known)
        out = [UnclearLine("-f", namelist.written(line), meant) for line, meant in unclear]  # type: List[Target]
        wanted = [r.name for r in refs] if names is None else \
            namelist.fitted([n for n in names if not any(n is line for line, _ in unclear)], known)
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
                out.append(TemplateVm(name, ", ".join(templates[name])))
            elif not matches:
                out.append(VmNotFound(name, [r.name for r in refs]))
            else:
                out.append(AmbiguousVm(name, [r.vmid for r in matches]))
        for warning in namelist.excluding_nothing(exclude, known) + namelist.unclear_excluded(exclude, known):
            self.log.warning(warning)
        if names is None:
            for name in sorted(set(templates) - excluded):
                for path in templates[name]:
                    self.log.info("the template %s (%s) is not backed up: a template is not a VM%s" % (
                        name, path, " (the VM %s is another, backed up on its own)" % name
                        if name in by_name else ""))
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
            swept = cleanup_host(self.host, self.settings.vm_backup_volume, self.log, self.run_id, dead=self.dead,
                                 snapshot_wait=snapshot_patience(self.settings),
                                 own_power=functools.partial(self._shuts_down, names, exclude))
            if swept.complete:
                self.lock.sweep_done()
            # a dead run's VM the sweep could not power on is down as one of this run's own (VM DOWN), also when
            # this run backs up other VMs: logged only, the run ended "All VMs backed up OK!"
            self.power.left_down.extend(n for n in swept.down if n not in self.power.left_down)
            self.swept = True
        targets = self.select(names, exclude)
        self.results = []
        try:
            self.power.shutdown_in_order(targets, self.settings, refused=self._refused_configs(targets),
                                         dead=self.dead)
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

    def _shuts_down(self, names: Optional[Sequence[str]], exclude: Sequence[str], ref: VmRef) -> bool:
        """Whether this run (of `names`, None for all, less `exclude`) shuts `ref` down itself: one of
        VM_SHUTDOWN_ORDER (unless its per-VM file refuses its backup, which leaves it up: _refused_configs), or
        one it backs up whose settings power it down (power.powers_down). One a gone run left going down is
        taken over (PowerControl.take_over), so the leftover sweep leaves its power alone; the sweep runs
        before the selection, whose listing may show what hostd finished meanwhile."""
        backed_up = (names is None or ref.name in namelist.fitted(names, [ref.name])) \
            and ref.name not in namelist.fitted(exclude, [ref.name])
        try:
            settings = self._vm_settings(ref)[0] if backed_up else self.settings
        except HotvcbError:  # its turn fails before any power change: the sweep's to power on
            return False
        return ref.name in self.settings.vm_shutdown_order or backed_up and powers_down(settings)

    def _vm_settings(self, ref: VmRef) -> "Tuple[Settings, List[str]]":
        """The VM's settings (its per-VM file over the run's) and their warnings, or the reason its file
        refuses it before anything is done to it (a HotvcbError)."""
        settings, warnings = config.for_vm(self.settings, self.confdir, ref.name)
        refused = config.dry_run_refused(settings, self.dry_run)
        if refused:
            raise HotvcbError(refused)
        return settings, warnings

    def _count_disks(self, ref: VmRef, result: VmResult) -> None:
        """The disks of a VM refused before its turn read it (its per-VM file): counted from its .vmx (asked
        ahead, or read now: one more question to the host, on a path that is rare), so the report says `0/2`,
        not the `0/0` of a VM without a disk. A host that cannot answer leaves them unknown (`0/?`): a
        guess either way would be a number the admin trusts."""
        try:
            asked = self.lookahead.take(ref)
            vm = asked.vm if asked is not None and asked.vm is not None else self.host.load_vm(ref)
        except HotvcbError as err:
            self.log.debug("%s: its disks could not be read (%s)" % (ref.name, err))
            result.disks_unknown = True
            return
        result.skipped_disks = [d for d in vm.disks if d.skip_reason]
        result.disks_to_copy = len(vm.disks) - len(result.skipped_disks)

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
        try:
            settings, warnings = self._vm_settings(ref)
        except HotvcbError:
            self._count_disks(ref, result)
            raise
        seen.settings = settings
        for w in warnings:
            self.log.warning(w)
        if settings.per_vm_file:  # as ghettoVCB's "CONFIG - USING CONFIGURATION FILE": was the file picked up?
            self.log.info("CONFIG: %s for %s; %s" % (settings.per_vm_file, ref.name, settings.summary()))
            ignored = confkeys.repository_ignores(settings)
            if ignored and ignored != confkeys.repository_ignores(self.settings):  # not said for the run already
                self.log.warning("%s: %s" % (ref.name, ignored))
        if ref.name in self.power.problems:
            raise HotvcbError("did not shut down for VM_SHUTDOWN_ORDER: %s" % self.power.problems[ref.name])
        if settings.backup_power_state != "any" and not skip_power:
            vm = seen.vm = self.host.load_vm(ref)
            own = powers_down(settings)
            state = state_had(self.host, vm, self.log, self.run_id, self.dry_run, self.dead, own)
            if state != settings.backup_power_state:
                if own:  # not backed up, so not taken over: a VM a dead run powered off is on again now
                    restore_power(self.host, vm, self.log, self.run_id, self.dry_run, self.dead)
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
