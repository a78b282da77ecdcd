"""The restore job: backup folder (or .gz) -> new VM folder -> registered VM.

One request goes through explicit states, so a failure knows what to undo:

    checked -> [extracted] -> copying -> renamed -> registered [-> powered on]

- checked: nothing is written before every pre-check passed: the backup
  exists and is sealed (STATUS.ok), its manifest checksums hold (unless
  `verify=False`; ghettoVCB backups have no manifest and are accepted on
  STATUS.ok alone), the target is a directory on a datastore of this host
  with room for the disks, the VM folder and our in-progress folder do not
  exist. A registered VM of the same name is only a warning (ghettoVCB allowed it).
- extracted: a .gz backup is unpacked into `<target>/.hotvcb-extract-<pid>-…`
  on the *target* datastore (never next to the backups) and removed at the
  end whatever happens.
- copying: disks are cloned with vmkfstools -i into `<target>/<name>.hotvcb-restoring`;
  .nvram/.vmxf copied, the rewritten .vmx written last. Any failure (or
  Ctrl-C) removes that folder; a VM is never registered from it.
- renamed: the folder gets its final name only when every file is in place.
- registered: `vim-cmd solo/registervm` gives the vmid. If registration
  fails the complete folder is kept and the error says how to register it.

.vmx rewrites (each is logged; dry runs print them):
- displayName = the new name; nvram / extendedConfigFile = `<name>.nvram|.vmxf`
  (the files are copied under those names); every disk fileName (scsi, sata,
  ide, nvme) = the disk's file in the VM folder. Disks that lived on another
  datastore (`<backup>/<datastore>/<file>`) are restored into the VM folder
  too; clashing names get a `_N` suffix. A disk the backup does not hold
  (skipped at backup time: independent, RDM) is left disconnected
  (`.present = "FALSE"`) with a warning rather than pointing at nothing.
- identity: ESXi's "moved or copied?" question is answered in advance
  (vmx_identity.py): the backup's own name keeps the identity, a new name
  makes a copy that can run next to the original.
"""

import os
import re
import time
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from .. import interrupt, targz, vmdk
from ..errors import HostError, HotvcbError, Interrupted
from ..hosts.base import Hypervisor
from ..model import Disk, Vm, VmRef
from ..restorefile import RestoreRequest
from ..shell import FileReader, LocalShell
from ..store import health, layout, manifest
from ..units import human_size
from ..vmdk import base_name
from ..vmx import VmxFile
from .verify import verify_folder, verify_gz
from .vmx_identity import answer_moved_or_copied

RESTORING = ".hotvcb-restoring"
EXTRACTING = ".hotvcb-extract-"
FORMAT_2GB_NOTE = (
    "2gbsparse is a hosted format: ESXi opens it only with the multiextent module loaded "
    "(`esxcli system module load -m multiextent`); prefer thin"
)


class RestoreError(HotvcbError):
    """A restore request that cannot be carried out; names the request's line."""

    def __init__(self, message: str, where: str = ""):
        super().__init__("%s: %s" % (where, message) if where else message)
        self.where = where


@dataclass
class DiskCopy:
    key: str
    source: str  # descriptor inside the backup
    target: str  # descriptor file name inside the VM folder
    adapter: str
    needed: int


@dataclass
class Plan:
    request: RestoreRequest
    backup: str  # folder with the backup's files (the extracted one for .gz)
    name: str
    folder: str
    temp: str
    vmx_name: str
    vmx_text: str
    disks: List[DiskCopy] = field(default_factory=list)
    files: List[Tuple[str, str]] = field(default_factory=list)  # (source, name in folder)
    rewrites: List[Tuple[str, Optional[str], Optional[str]]] = field(default_factory=list)
    needed: int = 0
    free: Optional[int] = None


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

    def run(self) -> None:
        try:
            self._run()
        finally:
            if self.temp is not None:
                self.log.info("Removing the unfinished restore folder %s" % self.temp)
                self._remove(self.temp)
            if self.extract_dir is not None:
                self.log.info("Removing the extracted copy %s" % self.extract_dir)
                self._remove(self.extract_dir)

    def _remove(self, path: str) -> None:
        try:
            self.shell.remove_tree(path)
        except HostError as err:
            self.log.error("could not remove %s: %s -- remove it by hand" % (path, err))

    # -- the steps -------------------------------------------------------------
    def _run(self) -> None:
        req = self.req
        source, compressed = self._locate_backup(req.backup)
        free = self._check_target(req.target)
        fs = targz.ArchiveView(source) if compressed else self.shell
        plan = self._plan(fs, source, free)
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
            plan = self._plan(self.shell, backup, self.host.free_space(req.target), quiet=True)
            self._check_sealed(self.shell, backup)
        else:
            backup = source
        self._check_checksums(backup)
        self._check_room(plan)
        if self.job.dry_run:
            self._print_plan(plan, compressed)
            return
        self._copy(plan)
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

    def _check_target(self, target: str) -> Optional[int]:
        if not self.shell.isdir(target):
            raise RestoreError("target datastore path %s does not exist" % target)
        free = self.host.free_space(target)
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
            raise RestoreError("%s fails verification, not restoring it: %s" % (self.req.backup, res.problems[0]))
        self.log.info("Checksums: %s" % res.message)

    def _extract(self, gz: str) -> str:
        """Unpack a .gz on the target datastore, never next to the backups."""
        dest = "%s/%s%d-%d" % (self.req.target, EXTRACTING, os.getpid(), int(time.time()))
        self.shell.makedirs(dest)
        self.extract_dir = dest  # from here on, `run` removes it
        self.log.info("Extracting %s to %s" % (gz, dest))
        return targz.extract(gz, dest)

    def _name_for(self, vmx: VmxFile, folder_name: str) -> str:
        name = self.req.new_name or vmx.get("displayName") or ""
        if not name:
            m = re.match(r"^(.*)-\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}(\.gz)?$", folder_name)
            name = m.group(1) if m else folder_name
        return name

    def _check_name(self, name: str, quiet: bool = False) -> None:
        """A VM of that name elsewhere is allowed, as ghettoVCB allowed it, with a warning; what
        really clashes (the target folder, the .vmx already registered) is refused by the caller
        and by registervm itself."""
        taken = [r for r in self.host.list_vms() if r.name == name]
        if taken and not quiet:
            self.log.warning(
                "%sa VM named %r is already registered (vmid %s, %s); restoring anyway, as ghettoVCB did. The host "
                "will have two VMs of that name, and a backup by name (-m, -f) refuses ambiguous names until one "
                "is renamed; restore with a new name (4th field, --name) to avoid that"
                % (self.req.where + ": " if self.req.where else "", name, ", ".join(r.vmid for r in taken),
                   ", ".join(r.vmx_path for r in taken)))

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

    def _check_checksums(self, backup: str) -> None:
        try:
            data = manifest.load(self.shell, backup)
        except ValueError as err:
            raise RestoreError("%s: %s" % (self.req.backup, err)) from err
        if data is None:
            self.log.info("%s has no %s (a ghettoVCB backup): accepted on STATUS.ok, checksums not available" % (
                self.req.backup, manifest.MANIFEST))
            return
        if data.get("result") not in ("ok", None):
            raise RestoreError("%s is recorded as %s: %s" % (self.req.backup, data.get("result"), data.get("message", "")))
        if not self.job.verify:
            self.log.info("Not verifying checksums (--no-verify)")
            return
        self.log.info("Verifying checksums of %s" % self.req.backup)
        res = verify_folder(self.shell, backup, record=False)
        if res.status == "damaged":
            raise RestoreError("%s fails verification, not restoring it: %s" % (self.req.backup, res.problems[0]))
        self.log.info("Checksums hold: %s" % res.message)

    def _plan(self, fs: FileReader, backup: str, free: Optional[int], quiet: bool = False) -> Plan:
        """Everything the restore will do, worked out from the backup's files.

        `fs` is the Shell, or a targz.ArchiveView for a .gz not unpacked yet.
        """
        vmxs = [f for f in fs.listdir(backup) if f.lower().endswith(".vmx") and not f.startswith(".")]
        if len(vmxs) != 1:
            raise RestoreError("%s holds %d .vmx files, expected 1" % (self.req.backup, len(vmxs)))
        vmx = VmxFile(fs.read_text(backup + "/" + vmxs[0]))
        original = vmx.get("displayName")
        name = self._name_for(vmx, self.req.backup.rsplit("/", 1)[-1])
        self._check_name(name, quiet)
        folder = self.req.target + "/" + layout.folder_name(name)
        temp = folder + RESTORING
        if self.shell.exists(folder):
            raise RestoreError("target folder %s already exists; not overwriting it" % folder)
        if self.shell.exists(temp):
            raise RestoreError("%s exists: another restore is running or one was killed; remove it if not" % temp)
        fname = layout.folder_name(name)
        plan = Plan(self.req, backup, name, folder, temp, fname + ".vmx", "", free=free)
        rewrites = plan.rewrites

        def put(key: str, value: Optional[str]) -> None:
            old = vmx.get(key)
            if value is None:
                if old is not None:
                    rewrites.append((key, old, None))
                    vmx.remove(key)
            elif old != value:
                rewrites.append((key, old, value))
                vmx.set(key, value)

        put("displayName", name)
        used = set()  # type: set
        for dev, _bus, filename in vmx.disk_slots():
            src = self._disk_source(fs, backup, filename)
            if src is None:
                if not quiet:
                    self.log.warning("%s: disk %s (%s) is not in the backup (skipped when it was taken); "
                                     "it is restored disconnected" % (name, dev, filename))
                put(dev + ".present", "FALSE")
                continue
            target = _unique(base_name(src.rsplit("/", 1)[-1]), used)
            adapter = self._adapter(fs, src, dev)
            needed = self._needed(fs, src, dev, adapter)
            plan.disks.append(DiskCopy(dev, src, target, adapter, needed))
            put(dev + ".fileName", target)
        for key, ext in (("nvram", ".nvram"), ("extendedConfigFile", ".vmxf")):
            src = self._side_file(fs, backup, vmxs[0], vmx.get(key), ext)
            if src is not None:
                plan.files.append((src, fname + ext))
                put(key, fname + ext)
            elif vmx.get(key) is not None and not quiet:
                self.log.warning("%s: %s file %s is not in the backup" % (name, key, vmx.get(key)))
        copy = self.req.new_name is not None and self.req.new_name != original
        for warning in answer_moved_or_copied(vmx, copy, put):
            if not quiet:
                self.log.warning("%s: %s" % (name, warning))
        plan.vmx_text = vmx.text()
        plan.needed = sum(d.needed for d in plan.disks) + sum(
            fs.file_size(s) for s, _ in plan.files) + len(plan.vmx_text)
        return plan

    def _needed(self, fs: FileReader, src: str, dev: str, adapter: str) -> int:
        if fs is self.shell:
            return self.host.bytes_needed(Disk(key=dev, path=src, datastore="", adapter=adapter), self.req.disk_format)
        desc = vmdk.parse(fs.read_text(src))  # archive: an upper bound from the member sizes
        folder = src.rsplit("/", 1)[0]
        apparent = sum(fs.file_size(folder + "/" + e.filename) for e in desc.extents
                       if fs.exists(folder + "/" + e.filename))
        return max(desc.capacity, apparent) if self.req.disk_format not in ("thin", "2gbsparse") else apparent

    def _disk_source(self, fs: FileReader, backup: str, filename: str) -> Optional[str]:
        """Where a .vmx disk entry's data sits in the backup.

        A disk from another datastore sits in `<backup>/<datastore>/<file>`,
        where <datastore> is the label (hotvcb) or whatever the .vmx path
        named, often the UUID (ghettoVCB). Both spellings are tried through
        this host's datastore list, then any single subfolder holding the
        file (a restore on another host, where the datastore is unknown).
        """
        base = filename.rsplit("/", 1)[-1]
        names = (base, base_name(base))
        folders = []
        if filename.startswith("/vmfs/volumes/"):
            parts = filename.split("/")
            if len(parts) > 4:
                folders = [backup + "/" + a for a in self._datastore_aliases(parts[3])]
        folders.append(backup)
        for folder in folders:
            for candidate in names:
                path = folder + "/" + candidate
                if fs.exists(path) and not fs.isdir(path):
                    return path
        if len(folders) > 1:
            found = [backup + "/" + sub + "/" + n for sub in fs.listdir(backup) if fs.isdir(backup + "/" + sub)
                     for n in names if fs.exists(backup + "/" + sub + "/" + n)]
            if len(found) == 1:
                return found[0]
        return None

    def _datastore_aliases(self, name: str) -> List[str]:
        """A datastore's label and UUID, given either (the name itself first)."""
        out = [name]
        if not hasattr(self, "_ds_cache"):
            try:
                self._ds_cache = self.host.datastores()
            except HotvcbError:
                self._ds_cache = []
        for ds in self._ds_cache:
            uuid = ds.url.rstrip("/").rsplit("/", 1)[-1]
            if name in (ds.name, uuid):
                out += [a for a in (ds.name, uuid) if a and a not in out]
        return out

    def _side_file(self, fs: FileReader, backup: str, vmx_file: str, value: Optional[str], ext: str) -> Optional[str]:
        candidates = []
        if value:
            candidates.append(value.rsplit("/", 1)[-1])
        candidates.append(vmx_file[: -len(".vmx")] + ext)
        for c in candidates:
            if fs.exists(backup + "/" + c) and not fs.isdir(backup + "/" + c):
                return backup + "/" + c
        return None

    def _adapter(self, fs: FileReader, path: str, dev: str) -> str:
        try:
            return vmdk.parse(fs.read_text(path)).adapter_type
        except (HostError, vmdk.NotADescriptor) as err:
            raise RestoreError("%s: %s is not a readable disk descriptor: %s" % (dev, path, err)) from err

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
    def _copy(self, plan: Plan) -> None:
        self.shell.makedirs(plan.temp)
        self.temp = plan.temp  # from here on, a failure removes it
        fmt = self.req.disk_format
        for d in plan.disks:
            if interrupt.pending():
                interrupt.raise_pending()
            self.log.info("Restoring %s (%s) to %s/%s as %s" % (d.source, d.key, plan.folder, d.target, fmt))
            disk = Disk(key=d.key, path=d.source, datastore="", adapter=d.adapter)
            progress = self.log.progress("%s %s" % (plan.name, d.target), d.needed)
            try:
                self.host.copy_disk(disk, plan.temp + "/" + d.target, fmt, progress)
            except Interrupted:
                raise
            except HotvcbError as err:
                raise RestoreError("disk %s of %s: %s; nothing was registered" % (d.key, plan.name, err)) from err
        for src, dst in plan.files:
            self.shell.copy_file(src, plan.temp + "/" + dst)
        for key, old, new in plan.rewrites:
            self.log.debug("%s: .vmx %s: %r -> %r" % (plan.name, key, old, new))
        self.shell.write_text(plan.temp + "/" + plan.vmx_name, plan.vmx_text)
        if self.shell.exists(plan.folder):
            raise RestoreError("target folder %s appeared during the restore; not overwriting it" % plan.folder)
        self.shell.rename(plan.temp, plan.folder)
        self.temp = None

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


def _unique(name: str, used: set) -> str:
    """name, or name_2.vmdk, name_3.vmdk... when two disks share a file name."""
    stem, ext = name[: -len(".vmdk")] if name.lower().endswith(".vmdk") else name, ".vmdk"
    candidate, n = stem + ext, 1
    while candidate.lower() in used:
        n += 1
        candidate = "%s_%d%s" % (stem, n, ext)
    used.add(candidate.lower())
    return candidate
