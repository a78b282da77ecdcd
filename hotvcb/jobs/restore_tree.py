"""Restoring a backup that holds the user's snapshot tree (`snapshot-tree/`, jobs/snaptree.py).

The restored VM gets the tree back: each base disk is cloned in the
restore's format under its own name, every delta is copied as it is and
relinked to its parent in the new folder (the clone has a new CID), the
.vmx is the user's (naming the current deltas), and the .vmsd is written
under the new VM's name with each snapshot's state file renamed with it and
every disk path made relative to the new folder; each snapshot's state file
(.vmsn) has the disk lines of its configuration that name a file outside the
VM's folder rewritten (restore_vmsn.py): a revert would attach the original
VM's disk. Each snapshot can then be
reverted to (`vim-cmd vmsvc/snapshot.revert`).
"""

import posixpath
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from .. import vmdk
from ..errors import HostError, HotvcbError
from ..filetext import read_small
from ..hosts import esxi_tree
from ..shell import FileReader, Shell
from ..vmx import MAX_SIZE, VmxFile, as_vmware_reads
from . import backup_check, restore_vmsn
from .snaptree import TREE, disks_renamed, relink, spelled


@dataclass
class TreeRestore:
    """A backed-up snapshot tree, checked and renamed for the restored VM's folder."""

    folder: str  # the backup's snapshot-tree folder
    vmx_name: str
    vmsd_name: str  # the .vmsd's name in the restored VM's folder
    vmsd_text: str  # rewritten for the new folder and name
    snapshots: List[str] = field(default_factory=list)
    deltas: List[Tuple[str, str]] = field(default_factory=list)  # (delta, parent) names, parents first
    files: List[Tuple[str, str]] = field(default_factory=list)  # (source, name in the VM folder), copied as they are
    texts: Dict[str, str] = field(default_factory=dict)  # each delta's descriptor as checked, by name: written
    needed: int = 0


def find(fs: FileReader, backup: str) -> Optional[str]:
    folder = backup + "/" + TREE
    return folder if fs.isdir(folder) else None


def plan(fs: FileReader, folder: str, vmx_name: str, new_stem: str) -> Tuple[VmxFile, TreeRestore]:
    """The tree's .vmx and what the restore of the tree must do, every chain checked in the backup."""
    if not fs.exists(folder + "/" + vmx_name):
        raise HotvcbError("%s holds no %s: the snapshot tree is incomplete" % (folder, vmx_name))
    path = folder + "/" + vmx_name
    vmx = VmxFile(as_vmware_reads(read_small(fs, path, MAX_SIZE), lambda: fs.file_size(path)))
    old_stem = vmx_name[: -len(".vmx")]
    vmsds = [f for f in fs.listdir(folder) if f.lower().endswith(".vmsd")]
    if len(vmsds) != 1:
        raise HotvcbError("%s holds %d .vmsd files, expected 1" % (folder, len(vmsds)))
    vmsd_path = folder + "/" + vmsds[0]
    vmsd = VmxFile(as_vmware_reads(read_small(fs, vmsd_path, MAX_SIZE), lambda: fs.file_size(vmsd_path)))
    vmsd.declare_utf8()  # written as UTF-8 (write_text); a backup made before it was declared so
    tree = TreeRestore(folder, vmx_name, new_stem + ".vmsd", "")
    tops = [posixpath.basename(name) for _dev, _bus, name in vmx.disk_slots()
            if fs.exists(folder + "/" + posixpath.basename(name))]
    for key in vmsd.keys():
        value = vmsd.get(key) or ""
        if key.startswith("snapshot") and key.endswith(".filename") and ".disk" not in key:
            state = posixpath.basename(value)
            renamed = new_stem + state[len(old_stem):] if state.startswith(old_stem) else state
            vmsd.set(spelled(vmsd, key), renamed)
            for src, dst in ((state, renamed), (state[:-5] + ".vmem", renamed[:-5] + ".vmem")):
                if fs.exists(folder + "/" + src) and (src, dst) not in tree.files:
                    tree.files.append((folder + "/" + src, dst))
            if _rewritten(renamed) and fs.exists(folder + "/" + state) and \
                    fs.file_size(folder + "/" + state) > restore_vmsn.STATE_MAX:
                raise HotvcbError("%s/%s is larger than the %d MiB a snapshot's state file is read as to name no "
                                  "file of the original VM in the restored one"
                                  % (folder, state, restore_vmsn.STATE_MAX >> 20))
        elif ".disk" in key and key.endswith(".filename"):
            vmsd.set(spelled(vmsd, key), posixpath.basename(value))
            tops.append(posixpath.basename(value))
        elif key.endswith(".displayname") and key.startswith("snapshot") and key.count(".") == 1:
            tree.snapshots.append(value)
    tree.vmsd_text = vmsd.text()
    for top in tops:
        links = chain(fs, folder, top)
        for k in range(len(links) - 2, -1, -1):  # parents first; the base is cloned as the VM's disk
            link = (links[k], links[k + 1])
            if link not in tree.deltas:
                tree.deltas.append(link)
                tree.texts[links[k]], desc = _checked(fs, folder, links[k])
                tree.files += [(folder + "/" + e.filename, e.filename) for e in desc.extents]
    tree.needed = sum(fs.file_size(src) for src, _ in tree.files) + sum(map(len, tree.texts.values())) + len(
        tree.vmsd_text)
    return vmx, tree


def chain(fs: FileReader, folder: str, top: str) -> List[str]:
    """Names from `top` down to its base, all inside `folder` (where the backup put them)."""
    out, name = [], top  # type: List[str], Optional[str]
    while name is not None and len(out) < esxi_tree.MAX_DEPTH:
        if not fs.exists(folder + "/" + name):
            raise HotvcbError("the snapshot tree in %s lacks %s%s" % (
                folder, name, " (parent of %s)" % out[-1] if out else ""))
        out.append(name)
        try:
            hint = vmdk.parse(read_small(fs, folder + "/" + name, backup_check.TEXT_MAX)).parent_hint
        except (HostError, vmdk.NotADescriptor) as err:
            raise HotvcbError("%s/%s is not a readable disk descriptor: %s" % (folder, name, err)) from err
        name = posixpath.basename(hint) if hint else None
    return out


def file_names(tree: TreeRestore) -> List[str]:
    """The names the tree's own files take in the restore's folder (deltas, their extents, state files)."""
    return [name for _src, name in tree.files] + list(tree.texts) + [tree.vmsd_name]


def rename_base(tree: TreeRestore, base: str, name: str) -> None:
    """The base disk `base` is cloned as `name`: the deltas on it are relinked to that name, and the
    .vmsd's snapshots taken of it name it so."""
    tree.deltas = [(delta, name if parent == base else parent) for delta, parent in tree.deltas]
    tree.vmsd_text = disks_renamed(tree.vmsd_text, {base: name})


def copy(shell: Shell, tree: TreeRestore, dst: str) -> None:
    """Into the restore's folder, after the base disks were cloned there; each file, a delta's as any
    extent, only a regular file of the backup (backup_check.require_regular). A delta's descriptor is
    written from the text the plan checked, not copied: one swapped since would have the restored
    snapshot read whatever it names (another VM's disk, by absolute path) as its data."""
    vmsd = VmxFile(tree.vmsd_text)
    for src, name in tree.files:
        backup_check.require_regular(shell, src)
        if _rewritten(name):  # the configuration a revert puts back names no disk of the original VM
            data = restore_vmsn.read_state(shell, src)
            shell.write_bytes(dst + "/" + name, restore_vmsn.rewritten(data, restore_vmsn.disk_names(vmsd, name)))
        else:
            shell.copy_file(src, dst + "/" + name)
    for name, text in tree.texts.items():
        shell.write_text(dst + "/" + name, text)
    for delta, parent in tree.deltas:
        relink(shell, dst, delta, parent)
    shell.write_text(dst + "/" + tree.vmsd_name, tree.vmsd_text)


def _rewritten(name: str) -> bool:
    """A file of the tree written through restore_vmsn.rewritten rather than copied: a snapshot's state file."""
    return name.lower().endswith(".vmsn")


def _checked(fs: FileReader, folder: str, name: str) -> Tuple[str, vmdk.Descriptor]:
    """A delta's descriptor (text, parsed), every extent beside it (its parent is relinked by name)."""
    text = backup_check.require_extents_inside(fs, folder + "/" + name, parent=False)  # copied as they are
    if text is None:
        raise HotvcbError("%s/%s is a sparse extent, not a delta's descriptor" % (folder, name))
    try:
        return text, vmdk.parse(text)
    except vmdk.NotADescriptor as err:
        raise HotvcbError("%s/%s is not a readable disk descriptor: %s" % (folder, name, err)) from None
