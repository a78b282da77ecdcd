"""The restore job: backup folder (or .gz) -> new VM folder -> registered VM.

One request goes through explicit states, so a failure knows what to undo:

    checked -> [extracted] -> copying -> renamed -> registered [-> powered on]

- checked: nothing is written before every pre-check passed: the backup
  exists and is good (store/health.py), its manifest says ok (ghettoVCB
  backups have no manifest and are accepted on STATUS.ok alone), the target
  is a directory on a datastore of this host with room for the disks, the VM
  folder and our in-progress folder do not exist. A registered VM of the same
  name is only a warning (ghettoVCB allowed it).
- extracted: a .gz backup is unpacked into `<target>/.hotvcb-extract-<pid>-…`
  on the *target* datastore (never next to the backups) and removed at the
  end whatever happens; its record lets `hotvcb cleanup` remove it after a
  SIGKILL (restore_scratch.py).
- copying: disks are cloned with vmkfstools -i into `<target>/<name>.hotvcb-restoring`;
  .nvram/.vmxf copied, the rewritten .vmx written last. Meanwhile a thread
  checks every file of the backup against the manifest's digests (unless
  `verify=False`), so the backup is read once in time rather than verified
  and then cloned; damage found stops the clone. A disk restored thin from
  a folder backup, on the host itself (LocalShell), that is one flat extent
  the manifest proves by block digests is not cloned but copied here
  (restore_copy.py): one read, each block digested as verify does and written
  from the same buffer, the proof compared before the descriptor is written;
  the thread leaves such disks to it (restore_check.py). Decided so because a clone
  beside a check reads the backup twice and writes bytes that were not the
  ones checked; it gives up vmkfstools' copy offload (VAAI XCOPY), which
  zeroedthick, eagerzeroedthick and 2gbsparse targets keep. Only a disk whose
  descriptor and flat agree (the flat's size is the extent's, no parentCID) is
  copied so: vmkfstools writes any other whole, under a fresh descriptor. A
  VM restored under a new name gets new disk ids (CID, longContentID,
  ddb.uuid) from the copy as from a clone; under its own name (identity kept,
  below) the copy keeps the disks' ids, so they come back as they were backed
  up, where a clone would give them new ones. Any failure (or Ctrl-C)
  removes that folder; a VM is never registered from it. The check of a
  folder backup starts as soon as the backup is found, so it also reads
  while the target and name checks wait on their host commands; a check
  that refuses the restore before the copy cancels it (it only reads).
- renamed: the folder gets its final name only when every file is in place
  and the check passed (a dry run checks before it prints the plan).
- registered: `vim-cmd solo/registervm` gives the vmid. If registration
  fails the complete folder is kept and the error says how to register it.

The plan (restore_plan.py) works out every disk, file and .vmx rewrite first;
this module carries it out. .vmx rewrites (each is logged; dry runs print them):
- displayName = the new name; nvram / extendedConfigFile = `<name>.nvram|.vmxf`
  (the files are copied under those names); every disk fileName (scsi, sata,
  ide, nvme) = the disk's file in the VM folder. Disks that lived on another
  datastore (`<backup>/<datastore>/<file>`) are restored into the VM folder
  too; clashing names get a `_N` suffix. A disk the backup does not hold
  (skipped at backup time: independent, RDM) is left disconnected
  (`.present = "FALSE"`) with a warning rather than pointing at nothing.
- identity: ESXi's "moved or copied?" question is answered in advance
  (vmx_identity.py): the backup's own name keeps the identity, a new name
  makes a copy that can run next to the original (Plan.copy; a disk this
  process copies then gets new ids too, restore_copy.py).
"""

import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from .. import interrupt, targz, vmdk
from ..background import Ahead
from ..errors import HostError, HotvcbError, Interrupted
from ..hosts.base import Hypervisor
from ..model import Disk, Vm, VmRef
from ..restorefile import RestoreRequest
from ..shell import FileReader, LocalShell
from ..store import health, layout, manifest
from ..units import human_size
from . import restore_copy, restore_scratch, restore_stage, restore_tree
from .restore_check import Checking, damaged, in_background, refuse_damaged
from .verify import verify_folder, verify_gz
from .restore_plan import Plan, Planner, RestoreError

FORMAT_2GB_NOTE = (
    "2gbsparse is a hosted format: ESXi opens it only with the multiextent module loaded "
    "(`esxcli system module load -m multiextent`); prefer thin"
)


@dataclass
class RestoreResult:
    request: RestoreRequest
    status: str = "pending"  # ok | error
    message: str = ""
    name: str = ""
    folder: str = ""
    vmid: str = ""


class RestoreJob:
    def __init__(self, host: Hypervisor, log, *, dry_run: bool = False, verbose: bool = False, verify: bool = True,
                 power_on: bool = False):
        self.host, self.shell, self.log = host, host.shell, log
        self.dry_run, self.verbose, self.verify, self.power_on = dry_run, verbose, verify, power_on
        self.records = restore_scratch.on_host(self.shell, host.run_dir)  # one heartbeat for all requests

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
        self.log.info("Restoring VM from: %s" % req.backup)
        self.log.info("Restoring VM to datastore: %s (%s)" % (req.target, req.disk_format))
        try:
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
        req = self.req
        unusable = None if req.new_name is None else layout.unusable_name(req.new_name)
        if unusable is not None:
            raise RestoreError(unusable)
        room = self._ask_ahead()
        source, compressed = self._locate_backup(req.backup)
        self.early = self._check_early(source, compressed)
        free = self._check_target(req.target, room)
        kvm = None if compressed else restore_stage.kvm_machine(self.shell, source)
        if kvm is not None:
            self._restore_kvm_backup(source, kvm, free)
            return
        fs = targz.ArchiveView(source) if compressed else self.shell
        plan = self.planner.plan(fs, source, free)
        self.result.name, self.result.folder = plan.name, plan.folder
        self._check_sealed(fs, source)
        if compressed:
            self._check_unpack_room(fs, source, free)
            if self.job.dry_run:
                self._check_gz_checksums(source)
                self._check_room(plan)
                self._print_plan(plan, compressed)
                return
            backup = self._extract(source)
            plan = self.planner.plan(self.shell, backup, self.host.free_space(req.target), quiet=True)
            self._check_sealed(self.shell, backup)
        else:
            backup = source
        data = self._check_manifest(backup)
        if data is not None and self.job.dry_run:
            self._verify_now(backup)
        self._check_room(plan)
        if self.job.dry_run:
            self._print_plan(plan, compressed)
            return
        if data is None:
            checking = Checking(self.req, self.log, None)
        else:
            checking = self.early or self._in_background(backup, data, compressed)
        checking.own.decide(self._own_copies(plan, backup, data, compressed))
        try:
            self._copy(plan, checking)
        finally:
            checking.cancel()
        self.result.vmid = self._register(plan)

    def _restore_kvm_backup(self, backup: str, kvm: "restore_stage.Found", free: Optional[int]) -> None:
        """A libvirt or bare-QEMU backup: checked, staged as VMDKs + a .vmx (restore_stage.py), restored."""
        self._check_sealed(self.shell, backup)
        if self._check_manifest(backup) is not None:  # before qemu-img reads it: the staged VMDKs are new files
            self._verify_now(backup)
        folder = self.req.target + "/" + layout.folder_name(self.req.new_name or kvm.machine.name)
        if self.shell.exists(folder):
            raise RestoreError("target folder %s already exists; not overwriting it" % folder)
        needed = restore_stage.bytes_needed(self.shell, kvm, self.req.disk_format)
        if free is not None and needed > free:
            raise RestoreError("restoring %s as %s needs up to %s on %s (the staged VMDKs and the VM), only %s free"
                               % (folder, self.req.disk_format, human_size(needed), self.req.target, human_size(free)))
        if self.job.dry_run:
            self.log.dryrun("RESTORE: %s (%s backup) as %s in %s, disks %s converted to VMDK with qemu-img first" % (
                backup, kvm.kind, self.req.disk_format, folder, ", ".join(d.source for d in kvm.machine.disks)))
            return
        dest = self.job.records.make(self.req.target)
        self.extract_dir = dest  # from here on, `run` removes it
        restore_stage.stage(self.shell, kvm, dest, self.log)
        plan = self.planner.plan(self.shell, dest, free)
        self.result.name, self.result.folder = plan.name, plan.folder
        self._check_room(plan)
        self._copy(plan, Checking(self.req, self.log, None))
        self.result.vmid = self._register(plan)

    def _locate_backup(self, path: str) -> Tuple[str, bool]:
        """A folder, or a .gz (also found when the folder name is given without it)."""
        if self.shell.isdir(path):
            return path, False
        for gz in ([path] if path.endswith(".gz") else []) + [path + ".gz"]:
            if self.shell.exists(gz):
                if not isinstance(self.shell, LocalShell):
                    raise RestoreError("%s: compressed backups restore only when hotvcb runs on the host itself" % gz)
                return gz, True
        raise RestoreError("backup %s does not exist" % path)

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
        self.planner = Planner(self.host, self.log, self.req, inventory.answer)
        return room

    def _check_target(self, target: str, room: "Ahead[Optional[int]]") -> Optional[int]:
        if not self.shell.isdir(target):
            raise RestoreError("target datastore path %s does not exist" % target)
        free = room.answer()
        if free is None:
            names = ", ".join(d.name for d in self.host.datastores()) or "none"
            raise RestoreError("%s is not on a datastore of this host (datastores: %s)" % (target, names))
        return free

    def _check_unpack_room(self, view, gz: str, free: Optional[int]) -> None:
        """Unpacking and cloning together need at most twice the archive's content."""
        size = sum(view.sizes.values())
        if free is not None and 2 * size > free:
            raise RestoreError("%s needs up to %s to unpack and restore on %s, only %s free" % (
                gz, human_size(2 * size), self.req.target, human_size(free)))

    def _check_gz_checksums(self, gz: str) -> None:
        if not self.job.verify:
            return
        self.log.info("Verifying checksums inside %s" % gz)
        res = verify_gz(self.shell, gz, record=False)
        if res.status == "damaged":
            raise RestoreError(damaged(self.req, res.problems[0]))
        self.log.info("Checksums: %s" % res.message)

    def _extract(self, gz: str) -> str:
        """Unpack a .gz on the target datastore, never next to the backups."""
        dest = self.job.records.make(self.req.target)
        self.extract_dir = dest  # from here on, `run` removes it
        self.log.info("Extracting %s to %s" % (gz, dest))
        return targz.extract(gz, dest)

    def _check_sealed(self, fs: FileReader, backup: str) -> None:
        named = layout.from_path(self.shell, backup) if fs is self.shell or backup.endswith(".gz") else None
        if named is not None:
            verdict = health.judge(self.shell, named)
            if not verdict.good:
                raise RestoreError("%s is not a good backup (%s)" % (self.req.backup, verdict.reason))
        status = [s for s in layout.STATUS_FILES if fs.exists(backup + "/" + s)]
        if "STATUS.ok" in status:
            return
        if status:
            try:
                reason = fs.read_text(backup + "/" + status[0]).strip()
            except HostError:
                reason = ""
            raise RestoreError("%s is not a good backup (%s%s)" % (
                self.req.backup, status[0], ": " + reason if reason else ""))
        raise RestoreError("%s is not sealed (no STATUS.ok): an unfinished or foreign backup" % self.req.backup)

    def _verify_now(self, backup: str) -> None:
        self.log.info("Verifying checksums of %s" % self.req.backup)
        refuse_damaged(self.req, self.log, verify_folder(self.shell, backup, record=False))

    def _check_manifest(self, backup: str) -> Optional[Dict[str, Any]]:
        """The manifest the backup's checksums are verified against (one that says ok), or None:
        not verified."""
        try:
            data = manifest.load(self.shell, backup)
        except ValueError as err:
            raise RestoreError("%s: %s" % (self.req.backup, err)) from err
        if data is None:
            self.log.info("%s has no %s (a ghettoVCB backup): accepted on STATUS.ok, checksums not available" % (
                self.req.backup, manifest.MANIFEST))
            return None
        if data.get("result") not in ("ok", None):
            raise RestoreError("%s is recorded as %s: %s" % (self.req.backup, data.get("result"), data.get("message", "")))
        if not self.job.verify:
            self.log.info("Not verifying checksums (--no-verify)")
            return None
        return data

    def _check_early(self, source: str, compressed: bool) -> "Optional[Checking]":
        """The background check of a folder backup that will be checked (a manifest that says
        ok, an ESXi backup, no --no-verify, no dry run), started before the pre-checks' host
        commands (~0.1 s each on esxisim; a round trip to hostd each on a host) instead of after
        them; None otherwise. Nothing is judged here: the pre-checks still say, in their order,
        why a backup is refused."""
        if compressed or self.job.dry_run or not self.job.verify:
            return None
        try:
            data = manifest.load(self.shell, source)
            if data is None or data.get("result") not in ("ok", None) or restore_stage.kvm_machine(self.shell, source):
                return None
        except (HotvcbError, ValueError):
            return None
        return self._in_background(source, data, compressed)

    def _in_background(self, backup: str, data: Dict[str, Any], compressed: bool) -> Checking:
        """The background check, told which files a copy by this process could prove instead."""
        provable = restore_copy.provable(data.get("files") or {}) if self._copies_itself(compressed) else set()
        return in_background(self.shell, self.req, self.log, backup, provable)

    def _copies_itself(self, compressed: bool) -> bool:
        """Whether thin disks are copied by this process (restore_copy.py) rather than cloned: it runs
        on the host itself (LocalShell: also SSH mode's run on the host, never the file-by-file SSH
        shell), from a folder backup (a .gz is unpacked and cloned as before) not staged by this run."""
        return (self.req.disk_format == "thin" and isinstance(self.shell, LocalShell)
                and not compressed and not self.req.staged)

    def _own_copies(self, plan: Plan, backup: str, data: Optional[Dict[str, Any]],
                    compressed: bool) -> "Dict[str, restore_copy.OwnCopy]":
        """The plan's disks copied by this process, by their descriptor in the backup: single-extent flat
        disks the manifest proves (not a user's snapshot tree: its deltas name their base's clone)."""
        if data is None or plan.tree is not None or not self._copies_itself(compressed):
            return {}
        files = data.get("files") or {}
        found = {}
        for d in plan.disks:
            own = restore_copy.own_copy(backup, d.source, d.text, files, plan.copy)
            if own is not None:
                found[d.source] = own
        return found

    def _check_room(self, plan: Plan) -> None:
        if self.req.disk_format == "2gbsparse":
            self.log.warning(FORMAT_2GB_NOTE)
        if plan.free is not None and plan.needed > plan.free:
            raise RestoreError("restoring %s as %s needs %s on %s but only %s is free" % (
                plan.name, self.req.disk_format, human_size(plan.needed), self.req.target, human_size(plan.free)))
        self.log.debug("%s: %s needed, %s free" % (
            plan.name, human_size(plan.needed), "unknown" if plan.free is None else human_size(plan.free)))

    # -- dry run ---------------------------------------------------------------
    def _print_plan(self, plan: Plan, compressed: bool) -> None:
        out = self.log.dryrun
        out("###############################################")
        out("RESTORE: %s%s" % (self.req.backup, " (compressed)" if compressed else ""))
        out("VM NAME: %s" % plan.name)
        out("TARGET FOLDER: %s (written as %s, renamed when complete)" % (plan.folder, plan.temp))
        out("DISK FORMAT: %s" % self.req.disk_format)
        for d in plan.disks:
            out("VMDK: %s (%s) -> %s/%s as %s, needs %s" % (
                d.source, d.key, plan.folder, d.target, self.req.disk_format, human_size(d.needed)))
        for src, dst in plan.files:
            out("FILE: %s -> %s/%s" % (src, plan.folder, dst))
        if plan.tree is not None:
            out("SNAPSHOT TREE: %s (%d delta(s) relinked) -> %s/%s" % (
                ", ".join(plan.tree.snapshots), len(plan.tree.deltas), plan.folder, plan.tree.vmsd_name))
        out("VMX: %s/%s" % (plan.folder, plan.vmx_name))
        for key, old, new in plan.rewrites:
            if new is None:
                out("VMX REMOVE: %s (was %r)" % (key, old))
            else:
                out("VMX SET: %s = %r (was %r)" % (key, new, old))
        out("REGISTER: vim-cmd solo/registervm %s/%s" % (plan.folder, plan.vmx_name))
        out("ROOM: needs %s, %s free" % (human_size(plan.needed), "unknown" if plan.free is None else human_size(plan.free)))
        if self.job.verbose:
            for line in plan.vmx_text.splitlines():
                out("VMX | %s" % line)
        out("###############################################")

    # -- the writes ------------------------------------------------------------
    def _copy(self, plan: Plan, checking: "Checking") -> None:
        self.job.records.claim(plan.temp)  # recorded: `hotvcb cleanup` removes it if we are killed
        self.temp = plan.temp  # from here on, a failure removes it
        fmt = self.req.disk_format
        for d in plan.disks:
            if interrupt.pending():
                interrupt.raise_pending()
            checking.stop_if_damaged()
            own = checking.own.by_source.get(d.source)
            self.log.info("Restoring %s (%s) to %s/%s as %s%s" % (d.source, d.key, plan.folder, d.target, fmt,
                                                                 "" if own is None else ", checked as it is copied"))
            disk = Disk(key=d.key, path=d.source, datastore="", adapter=d.adapter)
            progress = checking.watching(self.log.progress("%s %s" % (plan.name, d.target), d.needed))
            try:
                if own is None:
                    self._put_disk(disk, plan.temp + "/" + d.target, fmt, progress)
                else:
                    self._copy_itself(own, plan.temp + "/" + d.target, progress)
            except (Interrupted, RestoreError):
                raise
            except HotvcbError as err:
                raise RestoreError("disk %s of %s: %s; nothing was registered" % (d.key, plan.name, err)) from err
        for src, dst in plan.files:
            self.shell.copy_file(src, plan.temp + "/" + dst)
        if plan.tree is not None:
            self.log.info("Restoring the snapshot tree (%s): %d delta(s), relinked" % (
                ", ".join(plan.tree.snapshots), len(plan.tree.deltas)))
            restore_tree.copy(self.shell, plan.tree, plan.temp)
        for key, old, new in plan.rewrites:
            self.log.debug("%s: .vmx %s: %r -> %r" % (plan.name, key, old, new))
        self.shell.write_text(plan.temp + "/" + plan.vmx_name, plan.vmx_text)
        checking.wait()  # every byte checked before the folder gets its name
        if self.shell.exists(plan.folder):
            raise RestoreError("target folder %s appeared during the restore; not overwriting it" % plan.folder)
        self.shell.rename(plan.temp, plan.folder)
        self.temp = None
        self._release(plan.temp)

    def _put_disk(self, disk: Disk, dst: str, fmt: str, progress) -> None:
        """Clone the disk into the new folder; a thin flat disk this run staged (restore --repo) is
        already what the clone would write, on the same datastore, so it is moved instead of
        written a second time."""
        text = self.shell.read_text(disk.path) if self.req.staged and fmt == "thin" else ""
        desc = vmdk.parse(text) if text else None
        if desc is None or not desc.thin or desc.is_delta or len(desc.extents) != 1:
            self.host.copy_disk(disk, dst, fmt, progress)
            return
        flat = vmdk.flat_beside(dst)
        self.shell.rename(disk.path.rsplit("/", 1)[0] + "/" + desc.extents[0].filename, flat)
        self.shell.write_text(dst, vmdk.rename_extent(text, flat.rsplit("/", 1)[1]))

    def _copy_itself(self, own: "restore_copy.OwnCopy", dst: str, progress: Callable[[int], None]) -> None:
        """One read of the disk, digested as verify does and written from the same buffers; damage
        refuses the restore as the background check's would."""
        problem = restore_copy.copy(self.shell, own, dst, progress)
        if problem is not None:
            raise RestoreError(damaged(self.req, problem))
        self.log.info("Checksums hold: %s, checked as it was copied" % own.rel)

    def _register(self, plan: Plan) -> str:
        vmx = plan.folder + "/" + plan.vmx_name
        self.log.info("Registering %s ..." % plan.name)
        try:
            vmid = self.host.register_vm(vmx)
        except HotvcbError as err:
            raise RestoreError("restored %s completely, but registering it failed: %s -- register it with "
                               "`vim-cmd solo/registervm '%s'`" % (plan.folder, err, vmx)) from err
        self.log.info("Registered %s as vmid %s" % (plan.name, vmid))
        if self.job.power_on:
            ref = VmRef(vmid=vmid, name=plan.name, vmx_path=vmx)
            self.host.power_on(Vm(ref=ref, datastore="", folder=plan.folder, vmx=None))
            self.log.info("Powered on %s" % plan.name)
        return vmid
