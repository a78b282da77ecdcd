"""What a restore will do, worked out from the backup's files before anything is written.

The plan names every disk (where its data sits in the backup, its target
name, adapter, the room it needs and its descriptor's text, read once), the
.nvram/.vmxf, and every .vmx rewrite; jobs/restore.py carries it out. `fs` is
the Shell, or a targz.ArchiveView for a .gz not unpacked yet (a dry run plans
from it).

.vmx rewrites (each is logged; dry runs print them):
- displayName = the new name; nvram / extendedConfigFile = `<name>.nvram|.vmxf`
  (the files are copied under those names); every disk fileName (scsi, sata,
  ide, nvme) = the disk's file in the VM folder. Disks that lived on another
  datastore (`<backup>/<datastore>/<file>`) are restored into the VM folder
  too; clashing names get a `_N` suffix. A disk the backup does not hold
  (skipped at backup time: independent, RDM) is left disconnected
  (`.present = "FALSE"`) with a warning rather than pointing at nothing; where
  its line names a file outside the VM's folder (another datastore), that file
  is the original VM's own disk, and the line naming it is removed (_unnamed).
- a CD-ROM image named relative to the VM's folder, which no backup holds: the
  original VM's file by full path where it is still there, else a warning; a
  suspended VM's state file (checkpoint.vmState), which no backup holds
  either: emptied, with a warning (restore_media.py).
- identity: ESXi's "moved or copied?" question is answered in advance
  (vmx_identity.py): the backup's own name keeps the identity, a new name
  makes a copy that can run next to the original (Plan.copy; a disk the
  restore copies itself then gets new ids too, restore_copy.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import AbstractSet, Any, Callable, Dict, List, Optional, Set, Tuple

from .. import vmdk, vmdknames
from ..errors import HostError, HotvcbError
from ..filetext import read_small
from ..hosts.base import Hypervisor
from ..model import DatastoreInfo, Disk, VmRef
from ..restorefile import RestoreRequest
from ..shell import FileReader
from ..store import backup_files, layout, manifest
from ..targz import ArchiveView
from ..units import PAGE, in_pages
from ..vmdk import base_name
from ..vmx import MAX_SIZE, VmxFile, as_vmware_reads
from . import backup_check, restore_media, restore_scratch, restore_tree
from .restore_scratch import OWN_FILES, RESTORING
from .restore_tree import TreeRestore
from .vmx_identity import answer_moved_or_copied


class RestoreError(HotvcbError):
    """A restore request that cannot be carried out; names the request's line."""

    def __init__(self, message: str, where: str = ""):
        super().__init__("%s: %s" % (where, message) if where else message)
        self.where = where


def _unnamed(dev: str, filename: str) -> str:
    """What the warning of a disk left out adds where its line named a file outside the VM's own folder
    (another datastore, an RDM's mapping file there): that file is the original VM's disk itself, not a
    copy, so the line is removed rather than kept disconnected: connected by hand (`.present = "TRUE"`,
    the Host Client's edit), the restored VM would write the disk the original VM still runs on. A name
    in the VM's own folder names nothing in the restored VM's new one, and stays."""
    if "/" not in filename:
        return ""
    return (", its %s.fileName line removed: that file is the original VM's own disk, not a copy, and attached "
            "here as well two VMs would write one disk (give this VM a copy of it, `vmkfstools -i`, or attach it "
            "only once the original VM no longer uses it)" % dev)


def require_usable_name(name: str, given: bool = True) -> None:
    """Refuses a name the restored VM cannot have (restore_scratch.unusable_name), before anything is written."""
    why = restore_scratch.unusable_name(name, given)
    if why is not None:
        raise RestoreError(why)


@dataclass
class DiskCopy:
    """One disk of a restore: where its descriptor comes from and goes, as read and checked."""

    key: str
    source: str  # descriptor inside the backup
    target: str  # descriptor file name inside the VM folder
    adapter: str
    needed: int
    text: str  # the descriptor as the plan read and checked it: the one the copy uses (restore_write.py)
    embedded: bool = False  # a sparse extent holding its own descriptor: cloned from the file itself
    # a delta's parents down to its base, as read and checked: (path in the backup, text; None for a sparse one)
    parents: List[Tuple[str, Optional[str]]] = field(default_factory=list)

    def chain(self) -> List[Tuple[str, Optional[str]]]:
        """The disk and its parents, nearest first: (path in the backup, descriptor text; None for a sparse file)."""
        return [(self.source, None if self.embedded else self.text)] + self.parents

    def descriptor_files(self) -> int:
        """The small files the restore writes for this disk besides its data: the descriptor its clone
        writes, and the checked copy of each descriptor of its chain (restore_write._checked)."""
        return 1 + sum(text is not None for _path, text in self.chain())

    def sparse_copies(self) -> List[str]:
        """The sparse files of the chain above its last descriptor file, copied whole beside the checked
        texts before the clone (restore_write._checked): their embedded hints cannot be rewritten."""
        chain = self.chain()
        texts = [k for k, (_path, text) in enumerate(chain) if text is not None]
        return [path for path, text in chain[: texts[-1]] if text is None] if texts else []


@dataclass
class Plan:
    """Everything a restore will write, decided and checked before the VM's folder is made."""

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
    tree: Optional[TreeRestore] = None  # the user's snapshot tree, brought back (restore_tree.py)
    copy: bool = False  # a new name: a copy that can run beside the original (vmx_identity.py), not the VM itself
    disconnected: List[str] = field(default_factory=list)  # devices the backup holds no disk for
    # what the admin is told of the plan (a disk restored disconnected, a VM of the name already there), said
    # by the restore once the backup passed its checks: a warning before a refusal would tell of a VM coming
    # back short of a disk that does not come back at all (a folder an rsync cut short)
    warnings: List[str] = field(default_factory=list)


def _backups_within(folder: str, entries: List[str]) -> str:
    """What to say of a folder that holds backups instead of being one (a VM's folder on the backup volume,
    given where one of its backups belongs): "holds 0 .vmx files" alone sent the admin looking for a lost
    .vmx instead of naming a backup."""
    held = sorted(e for e in entries if layout.named(e))
    if not held:
        return ""
    return ": it is a folder of %d backup(s), not a backup; name one of them (the last by name: %s/%s), or " \
           "restore the newest with --latest VM" % (len(held), folder.rstrip("/"), held[-1])


class Planner:
    def __init__(self, host: Hypervisor, req: RestoreRequest, vms: Callable[[], List[VmRef]],
                 swept: AbstractSet[str] = frozenset(), planned: Callable[[str], Optional[str]] = lambda f: None):
        """`vms`: the host's VMs (asked ahead by the restore, beside its other pre-checks); `swept`: the
        folders a dry run's sweep said it would remove (restore_sweep.sweep), gone by the real run's plan;
        `planned`: the refusal of a folder a dry run's request before this one makes (restore_tally.Tally.taken),
        there by the real run's plan."""
        self.host, self.shell, self.req, self.vms = host, host.shell, req, vms
        self.swept, self.planned = swept, planned
        self._ds_cache = None  # type: Optional[List[DatastoreInfo]]

    def plan(self, fs: FileReader, backup: str, free: Optional[int]) -> Plan:
        """Everything the restore will do, worked out from the backup's files, and what to warn of it
        (Plan.warnings, the caller's to say).

        `fs` is the Shell, or a targz.ArchiveView for a .gz not unpacked yet.
        """
        warnings = []  # type: List[str]
        entries = fs.listdir(backup)
        recorded = manifest.readable(fs, backup)
        vmxs = backup_files.own_vmx(entries, recorded)
        if len(vmxs) != 1:
            raise RestoreError("%s holds %d .vmx files, expected 1%s" % (self.req.backup, len(vmxs),
                                                                        _backups_within(self.req.backup, entries)))
        try:  # read_regular: a FIFO planted as the .vmx would block a plain read for ever
            path = backup + "/" + vmxs[0]
            vmx = VmxFile(as_vmware_reads(read_small(fs, path, MAX_SIZE), lambda: fs.file_size(path),
                                          warnings.append))
        except HostError as err:
            raise RestoreError(str(err)) from err
        original = vmx.get("displayName")
        name = self._name_for(vmx, self.req.backup.rsplit("/", 1)[-1])
        if self.req.new_name is None:  # a given one was refused before the restore began
            require_usable_name(name, given=False)
        warnings += self._name_taken(name)
        unbackable = layout.too_long(name)
        if unbackable is not None:  # restored all the same (ESXi takes it), but the admin learns it now
            warnings.append("%s: no backup of it can be made under this name: %s" % (name, unbackable))
        fname = layout.datastore_folder(name)
        folder = self.req.target + "/" + fname
        temp = folder + RESTORING
        if self.shell.exists(folder):
            raise RestoreError(self._folder_taken(folder, folder + "/" + fname + ".vmx"))
        taken = self.planned(folder)
        if taken is not None:
            raise RestoreError(taken)
        if temp not in self.swept and self.shell.exists(temp):
            raise RestoreError(self._temp_taken(temp))
        plan = Plan(self.req, backup, name, folder, temp, fname + ".vmx", "", free=free, warnings=warnings)
        tree_folder = restore_tree.find(fs, backup)
        if tree_folder is not None:  # the VM comes back with its snapshots, on the user's .vmx
            vmx, plan.tree = restore_tree.plan(fs, tree_folder, vmxs[0], fname)
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
        if vmx.get(".encoding") is not None:  # written back as UTF-8 (write_text), read as it declares
            put(".encoding", "UTF-8")
        slots = vmx.disk_slots()
        in_tree = {dev for dev, _bus, filename in slots
                   if plan.tree is not None and fs.exists(plan.tree.folder + "/" + filename.rsplit("/", 1)[-1])}
        in_backup = {dev: backup_files.disk_in_backup(fs, backup, filename, self._datastore_aliases)
                     for dev, _bus, filename in slots if dev not in in_tree}
        used = []  # type: List[vmdknames.Files]
        # a disk renamed to be unique never takes a name a line this restore leaves as it is holds (a disk
        # not in the backup, restored disconnected, or one not present): two devices would name one file
        kept = _names_kept(vmx, in_tree | {dev for dev, found in in_backup.items() if found is not None})
        if plan.tree is not None:  # nor a file the tree's deltas and state files are copied as
            kept |= {n.lower() for n in restore_tree.file_names(plan.tree)}
        bases = set()  # type: Set[str]
        for dev, _bus, filename in slots:
            top = filename.rsplit("/", 1)[-1]
            if plan.tree is not None and dev in in_tree:
                # the base is cloned under its own name where no other copy writes a file of it, else
                # under a free one the deltas above it are relinked to
                base = restore_tree.chain(fs, plan.tree.folder, top)[-1]
                src = plan.tree.folder + "/" + base
                if base.lower() in bases:
                    raise RestoreError("two disks have a base named %s in the snapshot tree" % base)
                bases.add(base.lower())
                used.append(vmdknames.pick(base, self.req.disk_format, used, kept))
                target = used[-1].name
                if target != base:
                    restore_tree.rename_base(plan.tree, base, target)
                    top = target if top == base else top
            else:
                found = in_backup[dev]
                if found is None:
                    lost = backup_files.descriptor_lost(fs, backup, filename, self._datastore_aliases)
                    if lost is not None:
                        raise RestoreError("disk %s (%s): %s; not restoring the VM without that disk (put the descriptor "
                                           "back beside its data, from the VM or another backup of it)" % (dev, filename, lost))
                    warnings.append("%s: disk %s (%s) is not in the backup (skipped when it was taken); "
                                    "it is restored disconnected%s" % (name, dev, filename, _unnamed(dev, filename)))
                    put(dev + ".present", "FALSE")
                    if _unnamed(dev, filename):
                        put(dev + ".fileName", None)
                    plan.disconnected.append(dev)
                    continue
                src = found
                used.append(vmdknames.pick(base_name(found.rsplit("/", 1)[-1]), self.req.disk_format, used, kept))
                target = used[-1].name
                top = target
            # vmkfstools -i would clone whatever the disk and each of its parents name
            read, parents = backup_check.require_chain_inside(fs, src)
            text, desc = self._descriptor(fs, src, dev, read)
            needed = self._needed(fs, src, dev, desc)
            plan.disks.append(DiskCopy(dev, src, target, desc.adapter_type, needed, text, read is None, parents))
            put(dev + ".fileName", top)
        for key, ext in backup_files.SIDE_FILES:
            side = self._side_file(fs, backup, vmxs[0], vmx.get(key), ext)
            if side is not None:
                plan.files.append((side, fname + ext))
                put(key, fname + ext)
            elif vmx.get(key) is not None:
                warnings.append("%s: %s file %s is not in the backup" % (name, key, vmx.get(key)))
        lacking = restore_media.rehome(vmx, put, lambda: self._original_folder(original), self.shell.exists)
        for said in lacking + [w for w in [restore_media.drop_suspended_state(vmx, put)] if w]:
            warnings.append("%s: %s" % (name, said))
        plan.copy = self.req.new_name is not None and self.req.new_name != original
        folders = {f for f in (layout.datastore_folder(original or ""), vmxs[0][: -len(".vmx")]) if f}
        source = self._source_folder(recorded)
        for warning in answer_moved_or_copied(vmx, plan.copy, put, folders, source, self.shell):
            warnings.append("%s: %s" % (name, warning))
        plan.vmx_text = vmx.text()
        plan.needed = sum(in_pages(d.needed) + sum(in_pages(fs.file_size(c)) for c in d.sparse_copies())
                          + PAGE * d.descriptor_files() for d in plan.disks) + sum(
            in_pages(fs.file_size(s)) for s, _ in plan.files) + in_pages(len(plan.vmx_text.encode("utf-8"))) + (
            plan.tree.needed if plan.tree else 0) + PAGE * OWN_FILES
        return plan

    def _needed(self, fs: FileReader, src: str, dev: str, desc: vmdk.Descriptor) -> int:
        if fs is self.shell:
            try:
                return self.host.bytes_needed(Disk(key=dev, path=src, datastore="", adapter=desc.adapter_type),
                                              self.req.disk_format)
            except HostError as err:  # a file of the disk that is not there to read (a dangling symlink)
                raise RestoreError("%s: disk %s cannot be read: %s" % (dev, src, err)) from err
        # archive: an upper bound from the member sizes; a thin copy of a sparse one takes its data (datasize.py)
        folder = src.rsplit("/", 1)[0]
        size_of = fs.unpacked_size if isinstance(fs, ArchiveView) else fs.file_size
        apparent = sum(size_of(folder + "/" + e.filename) for e in desc.extents if fs.exists(folder + "/" + e.filename))
        return max(desc.capacity, apparent) if self.req.disk_format not in ("thin", "2gbsparse") else apparent

    def _datastore_aliases(self, name: str) -> List[str]:
        """A datastore's label and UUID, given either (the name itself first)."""
        out = [name]
        if self._ds_cache is None:
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
        path = backup_files.side_file(fs, backup, vmx_file, value, ext)
        if path is not None and fs is self.shell:  # an archive's members are regular files (targz.scan refuses any other)
            self._regular(path)
        return path

    def _regular(self, path: str) -> None:
        """A side file is a regular file of the backup, or refused here, before anything is written (a dry run
        too); its copy (backup_check.copy_regular) refuses one swapped for a symlink since."""
        try:
            backup_check.require_regular(self.shell, path)
        except HostError as err:
            raise RestoreError(str(err)) from err

    def _descriptor(self, fs: FileReader, path: str, dev: str, text: Optional[str]) -> Tuple[str, vmdk.Descriptor]:
        """The disk's descriptor (text, parsed) from the text the extents check read; read here only where
        that check read none (a sparse extent: its embedded descriptor lies in its first sectors)."""
        try:
            if text is None:
                head = min(fs.file_size(path), backup_check.DESCRIPTOR_MAX)
                text = vmdk.embedded_text(fs.read_regular(path, head), head)
            return text, vmdk.parse(text)
        except (HostError, vmdk.NotADescriptor) as err:
            raise RestoreError("%s: %s is not a readable disk descriptor: %s" % (dev, path, err)) from err

    def _folder_taken(self, folder: str, vmx: str) -> str:
        """Why the restore stops at a target folder that is there already. A restore whose end was not seen
        (its SSH session broke while the host registered the VM) left it complete, registered or not: which
        one is said, not only "already exists"."""
        said = "target folder %s already exists" % folder
        if not self.shell.isdir(folder):
            return "%s %s, where the restore would make the VM's folder; not touching it" % (
                folder, layout.not_a_folder(self.shell, folder))
        if not self.shell.exists(vmx):
            return said + "; not overwriting it"
        vmid = self.host.registered_at(vmx)
        if vmid is not None:
            return ("%s, and the host has its VM registered as vmid %s (%s): restored already? Not overwriting it; "
                    "restore under another name (--name), or remove that VM first" % (said, vmid, vmx))
        return ("%s and no VM is registered from its %s (a restore cut off while it registered the VM leaves its "
                "complete folder so: register it with `vim-cmd solo/registervm '%s'`, or remove the folder); not "
                "overwriting it" % (said, vmx.rsplit("/", 1)[-1], vmx))

    def _temp_taken(self, temp: str) -> str:
        """Why the restore stops at its unfinished folder's name taken: a restore's, or the folder of a VM
        restored under that very name (`Shop.hotvcb-restoring`, which a restore takes), which no cleanup
        removes: then that VM is named, not a restore that is not running."""
        own = temp.rsplit("/", 1)[-1]
        vmid = self.host.registered_at(temp + "/" + own + ".vmx")
        if vmid is not None:
            return ("%s, the folder this restore would fill first, is that of the registered VM vmid %s (named "
                    "like a restore's unfinished folder); restore under another name (--name) or onto another "
                    "datastore" % (temp, vmid))
        return "%s exists: another restore is running, or one was killed and `hotvcb cleanup` removes it" % temp

    def _name_for(self, vmx: VmxFile, folder_name: str) -> str:
        name = self.req.new_name or vmx.get("displayName") or ""
        if not name:
            m = layout.named(folder_name)
            name = (layout.vm_of_folder(m.group(1)) or m.group(1)) if m else folder_name
        return name

    def _source_folder(self, recorded: Optional[Dict[str, Any]]) -> Optional[str]:
        """The folder the backed-up VM lived in, by the host's full path, where the backup's manifest
        `recorded` says (`source_vmx`; a ghettoVCB backup, a KVM one, says none): its workingDir is told from
        one set apart."""
        source = (recorded or {}).get("source_vmx")
        if isinstance(source, str) and source.startswith("/") and source.lower().endswith(".vmx"):
            try:
                return self.shell.realpath(source.rsplit("/", 1)[0])
            except HostError:
                pass
        return None

    def _original_folder(self, original: Optional[str]) -> Optional[str]:
        """The folder of the VM the backup was taken of, where one VM of its name is registered."""
        found = [r for r in self.vms() if original and r.name == original]
        return found[0].vmx_path.rsplit("/", 1)[0] if len(found) == 1 else None

    def _name_taken(self, name: str) -> List[str]:
        """A VM of that name elsewhere is allowed, as ghettoVCB allowed it, with a warning (returned); what
        really clashes (the target folder, the .vmx already registered) is refused by the caller
        and by registervm itself."""
        taken = [r for r in self.vms() if r.name == name and not r.template]  # a template is no VM: -m takes ours
        if not taken:
            return []
        return ["%sa VM named %r is already registered (vmid %s, %s); restoring anyway, as ghettoVCB did. The host "
                "will have two VMs of that name, and a backup by name (-m, -f) refuses ambiguous names until one "
                "is renamed; restore with a new name (4th field, --name) to avoid that"
                % (self.req.where + ": " if self.req.where else "", name, ", ".join(r.vmid for r in taken),
                   ", ".join(r.vmx_path for r in taken))]


def _names_kept(vmx: VmxFile, restored: Set[str]) -> Set[str]:
    """The file names (folded) the fileName lines of devices other than `restored` hold: the restore leaves
    those lines as they are."""
    return {(vmx.get(dev + ".fileName") or "").rsplit("/", 1)[-1].lower()
            for dev, _bus in vmx.devices() if dev not in restored} - {""}
