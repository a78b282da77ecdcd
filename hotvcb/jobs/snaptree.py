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

from typing import Dict

from .. import interrupt, vmdk
from ..hosts.base import Hypervisor
from ..model import SnapshotTree

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
    for disk in tree.bases:
        if interrupt.pending():
            interrupt.raise_pending()
        log.info("Snapshot tree: cloning base disk %s as %s" % (disk.path, fmt))
        written += host.copy_disk(disk, dst + "/" + disk.filename, fmt, None)
    for delta, parent in tree.deltas:
        if interrupt.pending():
            interrupt.raise_pending()
        log.debug("Snapshot tree: copying delta %s" % delta)
        written += [_copy(shell, f, dst) for f in host.disk_files(delta)]
        relink(shell, dst, _name(delta), _name(parent))
    log.info("Snapshot tree of %d snapshot(s) kept in %s/" % (len(tree.snapshots), TREE))
    return {"folder": TREE, "vmx": tree.vmx_name, "vmsd": tree.vmsd_name, "snapshots": list(tree.snapshots),
            "files": sorted(TREE + "/" + f for f in set(written))}


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
