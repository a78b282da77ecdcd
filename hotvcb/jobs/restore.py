"""The restore job: backup folder (or .gz) -> new VM folder -> registered VM.

One request goes through explicit states, so a failure knows what to undo:

    checked -> [extracted] -> copying -> renamed -> registered [-> powered on]

- checked: nothing is written before every pre-check passed: the backup
  exists and may be restored (restore_source.py), the target is a directory
  on a datastore of this host with room for the disks (restore_room.py), the
  VM folder and our in-progress folder do not exist. A registered VM of the
  same name is only a warning (ghettoVCB allowed it). The plan
  (restore_plan.py) works out every disk, file and .vmx rewrite; a dry run
  prints it here (restore_dryrun.py).
- extracted: a .gz backup is unpacked into `<target>/.hotvcb-extract-<pid>-…`
  on the *target* datastore (never next to the backups) and removed at the
  end whatever happens; its record lets `hotvcb cleanup` remove it after a
  SIGKILL (restore_scratch.py).
- copying: the VM is written into `<target>/<name>.hotvcb-restoring`
  (restore_write.py: disks cloned with vmkfstools -i, .nvram/.vmxf copied,
  the rewritten .vmx last). Meanwhile a thread checks every file of the
  backup against the manifest's digests (unless `verify=False`;
  restore_check.py), so the backup is read once in time rather than verified
  and then cloned; damage found stops the clone. A thin disk from a folder
  backup, restored on the host itself, is not cloned but copied by this
  process in the read that checks it (restore_copy.py says which disks, and
  what that gives up). The check of a folder backup starts as soon as the
  backup is found, so it also reads while the target and name checks wait
  on their host commands. Any failure (or Ctrl-C) removes that folder; a VM
  is never registered from it.
- renamed: the folder gets its final name only when every file is in place
  and the check passed (a dry run checks before it prints the plan).
- registered: `vim-cmd solo/registervm` gives the vmid. If registration
  fails the complete folder is kept and the error says how to register it.
- powered on, if asked, unless a VM of the same name runs and this restore
  keeps its identity: then left off, said so (restore_write.power_on); a
  power-on the host refuses is a warning too: the VM is there.

A libvirt or bare-QEMU backup is first staged on the target as VMDKs and a
.vmx (restore_stage.py, removed as an unpacked .gz is), then restored so.
"""

import time
from dataclasses import dataclass, field
from typing import List, Optional, Set

from .. import interrupt, targz, vmdk
from ..background import Ahead
from ..errors import HostError, HotvcbError, Interrupted
from ..hosts.base import Hypervisor
from ..restorefile import RestoreRequest
from ..shell import FileReader
from ..store import datasize, layout
from ..units import human_size
from . import restore_check, restore_copy, restore_room, restore_scratch, restore_source, restore_stage, restore_sweep
from . import restore_write
from .restore_check import Checking
from .restore_dryrun import print_plan, print_staged
from .restore_plan import Plan, Planner, RestoreError, require_usable_name
from .restore_tally import Tally


@dataclass
class RestoreResult:
    """How one restore ended: the VM made (or that would be) and what was left out."""

    request: RestoreRequest
    status: str = "pending"  # ok | error
    message: str = ""
    disconnected: List[str] = field(default_factory=list)  # restored without these disks (not in the backup)
    name: str = ""
    folder: str = ""
    vmid: str = ""
    left_off: str = ""  # why --power-on left (a dry run: would leave) the VM off (its original runs, the host refused)


class RestoreJob:
    def __init__(self, host: Hypervisor, log, *, dry_run: bool = False, verbose: bool = False, verify: bool = True,
                 power_on: bool = False):
        self.host, self.shell, self.log = host, host.shell, log
        self.dry_run, self.verbose, self.verify, self.power_on = dry_run, verbose, verify, power_on
        self.records = restore_scratch.on_host(self.shell, host.run_dir, dry_run)  # one heartbeat for all requests
        self._reclaimed = set()  # type: Set[str]  # datastore roots already swept
        self.swept = set()  # type: Set[str]  # folders a dry run's sweep would remove: its plan takes them as gone
        self.tally = Tally(self.shell.realpath)  # a dry run's: what the requests before would take, there for the next one's plan

    def reclaim(self, target: str) -> None:
        """Remove what restores that provably died (kill -9, a dropped SSH session) left on the target's
        datastore, as `hotvcb cleanup` would, and say so: a staged or unpacked backup, an unfinished VM
        folder, each as big as a backup, hidden from the admin (a dot folder) and from the room check's
        count. The sweep needs no lock (restore_sweep: a running restore's folder is never taken)."""
        root = restore_scratch.records_root(target.rstrip("/") + "/x")
        if root not in self._reclaimed:
            self._reclaimed.add(root)
            restore_sweep.sweep(self.shell, [root], self.log, self.records.run(), self.dry_run, self.swept)

    def ask_early(self) -> List[Ahead]:
        """The answer the driver keeps for the run that every restore's pre-checks wait on (the host's
        version), asked now in a thread, beside work that comes before the pre-checks (a repository's
        backup staged on the target, after its room check asked the datastore listing), so those wait
        only for what must be read then: the free space, the inventory. `drop()` each after."""
        return [Ahead(self.host.describe, "restore")]

    def run(self, requests) -> List[RestoreResult]:
        results = []
        for req in requests:
            results.append(self.restore_one(req))
            if interrupt.pending():
                interrupt.raise_pending()
        return results

    def restore_one(self, req: RestoreRequest) -> RestoreResult:
        result = RestoreResult(req)
        started = time.monotonic()
        try:
            _nameable(req.backup)
            self.log.info("Restoring VM from: %s" % req.backup)
            self.log.info("Restoring VM to datastore: %s (%s)" % (req.target, req.disk_format))
            self.reclaim(req.target)
            _Restore(self, req, result).run()
            result.status = "ok"
        except Interrupted:
            raise
        except HotvcbError as err:
            result.status = "error"
            result.message = str(err) if str(err).startswith(req.where or "\0") else _where(req, str(err))
            self.log.error(result.message)
            return result
        if self.dry_run:
            self.log.info("Dry run for %s: every check passed, nothing changed" % result.name)
        else:
            self.log.info("Successfully restored %s to %s as vmid %s (%d s)" % (
                result.name, result.folder, result.vmid, time.monotonic() - started))
        return result


def _nameable(backup: str) -> None:
    """A backup whose path holds a line break (or another control character) is refused before any
    log line shows it: each line break would start a line of the log that reads as one of ours, and
    a descriptor naming its disks through that path would be other lines (vmdk.writable)."""
    try:
        vmdk.writable(backup)
    except vmdk.Unwritable as err:
        raise RestoreError("%s; not restoring from it (move the backup to a folder of plain name)" % err) from None


def _where(req: RestoreRequest, message: str) -> str:
    return "%s: %s" % (req.where, message) if req.where else message


class _Restore:
    """One request; attributes are the lifecycle state cleanup reads."""

    def __init__(self, job: RestoreJob, req: RestoreRequest, result: RestoreResult):
        self.job, self.req, self.result = job, req, result
        self.host, self.shell, self.log = job.host, job.shell, job.log
        self.extract_dir = None  # type: Optional[str]
        self.temp = None  # type: Optional[str]
        self.early = None  # type: Optional[Checking]  # the check started before the pre-checks ran
        self.asked = []  # type: List[Ahead]  # the pre-checks' questions to the host, asked at once

    def run(self) -> None:
        try:
            self._run()
        finally:
            if self.early is not None:
                self.early.cancel()
            for question in self.asked:
                question.drop()
            if self.temp is not None:
                self.log.info("Removing the unfinished restore folder %s" % self.temp)
                self._remove_recorded(self.temp)
            if self.extract_dir is not None:
                self.log.info("Removing the extracted copy %s" % self.extract_dir)
                self._remove_recorded(self.extract_dir)

    def _remove_recorded(self, folder: str) -> None:
        """A folder restore_scratch recorded, then its record (kept while the folder stays)."""
        if self._remove(folder):
            self._release(folder)

    def _release(self, folder: str) -> None:
        try:
            self.job.records.release(folder)
        except HostError as err:
            self.log.error("could not remove %s: %s -- remove it by hand" % (restore_scratch.record_of(folder), err))

    def _remove(self, path: str) -> bool:
        try:
            self.shell.remove_tree(path)
            return True
        except HostError as err:
            self.log.error("could not remove %s: %s -- remove it by hand" % (path, err))
            return False

    # -- the steps -------------------------------------------------------------
    def _run(self) -> None:
        req, job, shell = self.req, self.job, self.shell
        if req.new_name is not None:
            require_usable_name(req.new_name)
        room = self._ask_ahead()
        source, compressed = restore_source.locate(shell, req.backup)
        if not compressed and not job.dry_run and job.verify:
            self.early = restore_check.start_early(shell, req, self.log, source)
        free = self._left(restore_room.free_on_target(self.host, req.target, room.answer))
        kvm = None if compressed else restore_stage.kvm_machine(shell, source)
        if kvm is not None:
            self._restore_kvm_backup(source, kvm, free)
            return
        archive = targz.ArchiveView(source) if compressed else None
        if archive is not None:
            datasize.measure(archive)  # a sparse disk counts by its data, not its size (the room checks)
        fs = shell if archive is None else archive  # type: FileReader
        plan = self.planner.plan(fs, source, free)
        self.result.name, self.result.folder, self.result.disconnected = plan.name, plan.folder, plan.disconnected
        bare = restore_source.check_sealed(shell, req, fs, source)
        # the plan's warnings (a disk restored disconnected, ...) are said once the backup passes the checks
        # made before writing: a backup refused is refused in one line, nothing said of how it would come back
        if archive is not None:
            by_digests = restore_room.check_unpack_room(req, archive, source, free, plan, job.verify)
            if job.verify and (job.dry_run or by_digests):  # the room's count proved before anything is unpacked
                restore_check.verify_gz_now(shell, req, self.log, source)
            if job.dry_run:
                self._say(plan)
                restore_room.check_room(req, self.log, plan)
                self._print_plan(plan, compressed)
                self.job.tally.hold(req, plan.folder, plan.needed)
                return
            backup = self._extract(source)
            plan = self.planner.plan(shell, backup, self.host.free_space(req.target))
            restore_source.check_sealed(shell, req, shell, backup, unsealed_ok=bare)
        else:
            backup = source
        data = restore_source.manifest_to_verify(shell, req, self.log, backup, job.verify)
        if data is not None and job.dry_run:
            restore_check.verify_now(shell, req, self.log, backup)
        self._say(plan)
        restore_room.check_room(req, self.log, plan)
        if job.dry_run:
            self._print_plan(plan, compressed)
            self.job.tally.hold(req, plan.folder, plan.needed)
            return
        if data is None:
            checking = Checking(req, self.log, None)
        else:
            restore_check.prove_descriptors(req, plan, backup, data)
            checking = self.early or restore_check.start(shell, req, self.log, backup, data, compressed)
        checking.own.decide(restore_copy.own_copies(shell, req, plan, backup, data, compressed))
        try:
            self._write(plan, checking)
        except HotvcbError:
            if archive is None and not req.staged:  # not a folder of our own (a .gz unpacked, a repository's stage)
                restore_source.require_still_there(shell, backup)
            raise
        finally:
            checking.cancel()
        self._register(plan)

    def _restore_kvm_backup(self, backup: str, kvm: "restore_stage.Found", free: Optional[int]) -> None:
        """A libvirt or bare-QEMU backup: checked, staged as VMDKs + a .vmx (restore_stage.py), restored."""
        req, shell = self.req, self.shell
        restore_source.check_sealed(shell, req, shell, backup)
        if restore_source.manifest_to_verify(shell, req, self.log, backup, self.job.verify) is not None:
            # before qemu-img reads it: the staged VMDKs are new files
            restore_check.verify_now(shell, req, self.log, backup)
        if req.new_name is None:
            require_usable_name(kvm.machine.name, given=False)
        self.result.name = req.new_name or kvm.machine.name  # what a dry run's verdict names
        folder = req.target + "/" + layout.datastore_folder(self.result.name)
        if shell.exists(folder):
            raise RestoreError("target folder %s already exists; not overwriting it" % folder)
        taken = self.job.tally.taken(folder)
        if taken is not None:
            raise RestoreError(taken)
        kept = restore_room.check_staged_room(shell, req, kvm, folder, free)
        if self.job.dry_run:
            print_staged(self.log, req, backup, kvm, folder)
            self.job.tally.hold(req, folder, kept)  # the staged VMDKs go once cloned: the VM stays
            return
        dest = self.job.records.make(req.target)
        self.extract_dir = dest  # from here on, `run` removes it
        restore_stage.stage(shell, kvm, dest, self.log)
        plan = self.planner.plan(shell, dest, free)
        self._say(plan)
        # a disk the KVM backup does not hold was left out of the staged .vmx (named by stage): the VM is short
        # of it all the same, and the restore ends WARNING as for an ESXi backup's
        self.result.name, self.result.folder = plan.name, plan.folder
        self.result.disconnected = plan.disconnected + kvm.machine.left_out
        restore_room.check_room(req, self.log, plan)
        self._write(plan, Checking(req, self.log, None))
        self._register(plan)

    def _left(self, free: Optional[int]) -> Optional[int]:
        """A dry run's free space once the requests before this one took theirs (restore_tally), said when
        they take some: the real run finds it so."""
        left = self.job.tally.left(self.req.target, free)
        if free is not None and left != free:
            self.log.dryrun("ROOM: %s of the %s free on %s taken by the restores before this one" % (
                human_size(free - (left or 0)), human_size(free), self.req.target))
        return left

    def _say(self, plan: Plan) -> None:
        for warning in plan.warnings:
            self.log.warning(warning)

    def _print_plan(self, plan: Plan, compressed: bool) -> None:
        """A dry run's plan, and what --power-on would do (a VM kept off beside its running original)."""
        print_plan(self.log, self.req, plan, compressed, self.job.verbose)
        if self.job.power_on:
            self.result.left_off = restore_write.say_power_on(self.host, self.log, plan, self.job.tally)

    def _register(self, plan: Plan) -> None:
        """registered [-> powered on]: a VM left off (its original runs, the host refused) is restored all the
        same, and said so."""
        self.result.vmid = restore_write.register(self.host, self.log, plan)
        if self.job.power_on:
            self.result.left_off = restore_write.power_on(self.host, self.log, plan, self.result.vmid)

    def _ask_ahead(self) -> "Ahead[Optional[int]]":
        """The pre-checks' questions to the host, each a round trip to hostd and none waiting on
        another's answer, asked at once (background.Ahead) rather than one after the other: the
        target's free space (the datastore listing, then `datastore/info`), the inventory (a VM of
        the same name is warned about) and the host's version (the clone's flags). Each answer is
        taken where it was always asked, and the error of one that failed is raised there, so the
        checks fail in their order with their own errors. Returns the free space's."""
        target = self.req.target
        room = Ahead(lambda: self.host.free_space(target), "restore")
        inventory = Ahead(self.host.list_vms, "restore")
        self.asked = [room, inventory, Ahead(self.host.describe, "restore")]
        self.planner = Planner(self.host, self.req, inventory.answer, self.job.swept, self.job.tally.taken)
        return room

    def _extract(self, gz: str) -> str:
        """Unpack a .gz on the target datastore, never next to the backups."""
        dest = self.job.records.make(self.req.target)
        self.extract_dir = dest  # from here on, `run` removes it
        self.log.info("Extracting %s to %s" % (gz, dest))
        return targz.extract(gz, dest)

    def _write(self, plan: Plan, checking: Checking) -> None:
        """copying -> renamed: the folder is recorded before anything is written into it (`hotvcb
        cleanup` removes it if we are killed), and renamed only when complete and checked."""
        self.job.records.claim(plan.temp)
        self.temp = plan.temp  # from here on, a failure removes it
        restore_write.fill(self.host, self.req, self.log, plan, checking)
        checking.wait()  # every byte checked before the folder gets its name
        if self.shell.exists(plan.folder):
            raise RestoreError("target folder %s appeared during the restore; not overwriting it" % plan.folder)
        self.shell.rename(plan.temp, plan.folder)
        self.temp = None
        self._release(plan.temp)
