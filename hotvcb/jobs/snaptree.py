"""BACKUP_SNAPSHOT_TREE: keep the user's snapshot tree in the backup, restorable as snapshots.

The backup itself is the VM's current state (each disk's chain read through
by the clone). With the key set, `snapshot-tree/` in the backup also holds
what the tree is made of, copied while our snapshot holds every one of
those files still: the base disks (cloned in DISK_BACKUP_FORMAT), every
delta of the user's snapshots (copied as they are: a clone would flatten
them), the .vmsd and each snapshot's .vmsn, and the .vmx as the user had it
(naming the current deltas). Deltas are relinked to their parents in that
folder: a clone gets a new CID, which the child's parentCID must name.
See docs/backup-format.md ("The user's snapshot tree").
"""

import posixpath
from typing import Collection, Dict, List

from .. import interrupt, vmdk, vmdknames
from ..hosts.base import Hypervisor
from ..model import SnapshotTree
from ..vmx import VmxFile

TREE = "snapshot-tree"


def describe(tree: SnapshotTree) -> str:
    return "%d snapshot(s) (%s): %d base disk(s), %d delta(s), %d state file(s)" % (
        len(tree.snapshots), ", ".join(repr(n) for n in tree.snapshots), len(tree.bases), len(tree.deltas),
        len(tree.state_files))


def copy_tree(host: Hypervisor, tree: SnapshotTree, folder: str, fmt: str, log) -> Dict[str, object]:
    """Copy the tree into `<folder>/snapshot-tree`; the manifest's record of it.

    Raises like copy_disk does; the caller's failure path removes the disk data.
    """
    shell = host.shell
    dst = folder + "/" + TREE
    shell.makedirs(dst)
    written = [tree.vmx_name, tree.vmsd_name]
    shell.write_text(dst + "/" + tree.vmx_name, tree.vmx_text)
    shell.write_text(dst + "/" + tree.vmsd_name, tree.vmsd_text)
    for path in tree.state_files:
        written.append(_copy(shell, path, dst))
    delta_files = {delta: host.disk_files(delta) for delta, _parent in tree.deltas}
    renamed = base_names([_name(d.path) for d in tree.bases], fmt,
                         written + [_name(f) for files in delta_files.values() for f in files])
    if renamed:
        log.info("Snapshot tree: base disk(s) renamed so no copy writes another's file: %s" % ", ".join(
            "%s -> %s" % pair for pair in sorted(renamed.items())))
        shell.write_text(dst + "/" + tree.vmx_name, disks_renamed(tree.vmx_text, renamed))
        shell.write_text(dst + "/" + tree.vmsd_name, disks_renamed(tree.vmsd_text, renamed))
    for disk in tree.bases:
        if interrupt.pending():
            interrupt.raise_pending()
        log.info("Snapshot tree: cloning base disk %s as %s" % (disk.path, fmt))
        written += host.copy_disk(disk, dst + "/" + renamed.get(_name(disk.path), _name(disk.path)), fmt, None)
    for delta, parent in tree.deltas:
        if interrupt.pending():
            interrupt.raise_pending()
        log.debug("Snapshot tree: copying delta %s" % delta)
        written += [_copy(shell, f, dst) for f in delta_files[delta]]
        relink(shell, dst, _name(delta), renamed.get(_name(parent), _name(parent)))
    log.info("Snapshot tree of %d snapshot(s) kept in %s/" % (len(tree.snapshots), TREE))
    return {"folder": TREE, "vmx": tree.vmx_name, "vmsd": tree.vmsd_name, "snapshots": list(tree.snapshots),
            "files": sorted(TREE + "/" + f for f in set(written))}


def base_names(bases: List[str], fmt: str, others: Collection[str]) -> Dict[str, str]:
    """The base disks (their names, in the tree's order) that must be copied under another name into the
    tree's folder, -> that name: one whose files (in `fmt`) meet no file of another base's copy and
    none of the `others` there (deltas, state files). Cloning `v.vmdk` as 2gbsparse writes `v-s001.vmdk`,
    the name of a base of its own on another datastore (vmdknames.py)."""
    picked = []  # type: List[vmdknames.Files]
    for name in bases:
        picked.append(vmdknames.pick(name, fmt, picked, others))
    return {name: files.name for name, files in zip(bases, picked) if files.name != name}


def disks_renamed(text: str, renamed: Dict[str, str]) -> str:
    """A .vmx's or .vmsd's text with each disk line naming a renamed base (by its base name) naming the
    new name, beside it in the tree's folder; every other line as it is."""
    if not renamed:
        return text
    conf = VmxFile(text)
    for key in conf.keys():
        value = conf.get(key) or ""
        if key.endswith(".filename") and posixpath.basename(value) in renamed:
            conf.set(spelled(conf, key), renamed[posixpath.basename(value)])
    return conf.text()


def spelled(conf: VmxFile, key: str) -> str:
    """The key as the file spells it (VmxFile.keys() folds case; VMware reads either)."""
    for line in conf.lines:
        if line is not None and "=" in line and line.split("=", 1)[0].strip().lower() == key:
            return line.split("=", 1)[0].strip()
    return key


def relink(shell, folder: str, delta: str, parent: str) -> None:
    """Point `folder/delta` at `folder/parent` by name and by its CID as it is now."""
    cid = vmdk.content_id(shell.read_text(folder + "/" + parent))
    text = shell.read_text(folder + "/" + delta)
    shell.write_text(folder + "/" + delta, vmdk.relinked(text, parent, cid))


def _name(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def _copy(shell, path: str, folder: str) -> str:
    shell.copy_file(path, folder + "/" + _name(path))
    return _name(path)
