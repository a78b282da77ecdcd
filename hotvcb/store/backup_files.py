"""Where a backup keeps its files: its .vmx, the files beside it, its disks.

Why apart from layout.py, which names backups on the volume and orders them: these are the paths inside one
backup, which ghettoVCB.sh wrote and ghettoVCB-restore.sh reads in their own ways, and every reader of a
backup (an ESXi restore, a KVM restore, `verify --boot`, health's verdict) must find a disk where the others
do: one answer, kept here, needing nothing of the volume's layout.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

from ..shell import FileReader
from ..vmdk import base_name, flat_beside


def top_vmx(names) -> List[str]:
    """The .vmx files among a backup's relative file names, at its top (not a kept snapshot tree's, nor the
    dot-file side_file_name makes of a .vmxf), sorted: a backup has exactly one."""
    return sorted(n for n in names if "/" not in n and not n.startswith(".") and n.lower().endswith(".vmx"))


def own_vmx(names, data: Optional[Dict[str, Any]]) -> List[str]:
    """The backup's own .vmx files among its top-level `names` (top_vmx), by its manifest `data` where it has one
    (None: ghettoVCB's): a file the manifest does not name is no part of the backup, as verify notes it. A
    `web (1).vmx` a file manager's "keep both" left in a sealed backup made every restore refuse it ("holds 2
    .vmx files") while list, verify, status and rotation called it good; a backup without a manifest has
    nothing to tell its .vmx by (health calls one with two damaged, ghettovcb_health._vmx_count)."""
    vmxs = top_vmx(names)
    return vmxs if data is None else [n for n in vmxs if n in (data.get("files") or {})]


def side_file_name(filename: str) -> str:
    """The name a file copied from beside the VM's .vmx (its .nvram, .vmxf) has in a backup.
    ghettoVCB-restore.sh takes a backup's .vmx as `ls <backup> | grep ".vmx"` and reads nothing else
    when that is two names: a file whose name that grep matches (a <VM>.vmxf, which ghettoVCB never
    copied) is kept as a dot-file, which `ls` does not show. Older hotvcb backups hold it under its own
    name; restore reads either."""
    return "." + filename if "vmx" in filename[1:] else filename


SIDE_FILES = (("nvram", ".nvram"), ("extendedConfigFile", ".vmxf"))  # (.vmx key, extension) a restore copies


def side_file(fs: FileReader, backup: str, vmx_file: str, value: Optional[str], ext: str) -> Optional[str]:
    """The file of the backup a restore copies as the VM's .nvram or .vmxf (the .vmx's `value` for it, else
    named after the .vmx `vmx_file`; side_file_name's or its own name), or None. Also what health judges of a
    ghettoVCB backup beside its disks: a file the restore would read is part of the backup, damage when it does
    not read."""
    candidates = []
    if value:
        candidates.append(value.rsplit("/", 1)[-1])
    candidates.append(vmx_file[: -len(".vmx")] + ext)
    for c in dict.fromkeys(n for name in candidates for n in (side_file_name(name), name)):
        path = backup + "/" + c
        if fs.exists(path) and not fs.isdir(path):
            return path
    return None


def disk_folder(filename: str) -> Tuple[str, str]:
    """Where a backup keeps a disk its .vmx names by full path (/vmfs/volumes/<datastore>/...), as
    (<datastore> as named, the folder below it ghettoVCB.sh used), ("", "") for any other name.
    hotvcb keeps it in <datastore>/, where ghettoVCB-restore.sh reads it; ghettoVCB.sh keeps it in the
    path minus its last two parts (`DS_UUID=${DS_UUID%/*/*}`): that too for a disk in a VM's folder,
    one level deeper for a disk in a deeper folder (and, for one at the datastore's top, in a folder
    named after the file)."""
    parts = filename.split("/")
    if len(parts) < 5 or not filename.startswith("/vmfs/volumes/"):
        return "", ""
    return parts[3], "/".join(parts[4:-2]) if len(parts) > 5 else parts[4]


def disk_in_backup(fs: FileReader, backup: str, filename: str,
                   aliases: Callable[[str], List[str]] = lambda name: [name]) -> Optional[str]:
    """Where a .vmx disk entry's data sits in the backup, or None: the one answer every reader of a
    backup (an ESXi restore, a KVM restore, `verify --boot`) gives.

    A disk the .vmx names by full path sits in `<backup>/<datastore>/<file>`, where <datastore> is the
    label (older hotvcb) or whatever the .vmx path named, often the UUID (`aliases` gives a datastore's
    other names where the host knows them), or in ghettoVCB.sh's folder below the latter
    (disk_folder); then the backup itself (where older hotvcb kept one on the VM's own datastore), then
    any single subfolder holding the file (a restore on another host, where the datastore is unknown).
    Its own folder is tried before the top: ESXi names the first disk a VM gets on another datastore
    after the VM, so `[ds1] FS/FS.vmdk` and `[ds5] FS/FS.vmdk` both sit in one backup, and the top's
    FS.vmdk is the first one's."""
    base = filename.rsplit("/", 1)[-1]
    names = (base, base_name(base))
    datastore, deeper = disk_folder(filename)
    folders = [backup + "/" + a for a in aliases(datastore)] if datastore else []
    if deeper:
        folders.append(backup + "/" + datastore + "/" + deeper)
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


def descriptor_lost(fs: FileReader, backup: str, filename: str,
                    aliases: Callable[[str], List[str]] = lambda name: [name]) -> Optional[str]:
    """Why the disk a .vmx entry names, not in the backup (disk_in_backup found no descriptor), is damage
    rather than a disk skipped when the backup was taken (an independent disk): its data extent is there
    (`DB_1-flat.vmdk` without `DB_1.vmdk`: tidied away by hand). None if no extent of it is there."""
    folder, _, base = filename.rpartition("/")
    descriptor = (folder + "/" if folder else "") + base_name(base)
    for data in (flat_beside(descriptor), descriptor[: -len(".vmdk")] + "-s001.vmdk"):
        found = disk_in_backup(fs, backup, data, aliases)
        if found is not None:
            return "the backup holds %s, its data, but not its descriptor %s: the backup is damaged" % (
                found, base_name(base))
    return None
