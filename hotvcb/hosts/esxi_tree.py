"""A VM's snapshot chains and tree as files, read from its descriptors and .vmsd.

A disk running on snapshots is a chain: the .vmx names the newest delta,
each delta's descriptor names its parent (parentFileNameHint), the base has
none. `vmkfstools -i` of the newest delta reads the chain through, so every
member must be there; a missing one is found here, before anything changes
on the VM, instead of half-way through a copy. The .vmsd (same `key = "value"`
syntax as a .vmx) names each snapshot's frozen disk per device and its
.vmsn state file; BACKUP_SNAPSHOT_TREE copies exactly those files.
"""

from __future__ import annotations

import posixpath
import re
from typing import Collection, Dict, List, Optional, Sequence, Tuple

from .. import vmdk
from ..errors import HostError
from ..model import Disk, Snapshot, SnapshotTree, Vm
from ..shell import FileReader
from ..vmx import VmxFile, as_vmware_reads
from .. import lazyre

MAX_DEPTH = 64  # VMware allows 32 snapshots in a chain; deeper is a loop
HEAD_MAX = 1 << 20  # a descriptor file's text, or a sparse disk's first sectors, read to tell its type
_ENTRY = lazyre.compile(r"^snapshot(\d+)\.(\w+)$", re.I)  # snapshotN.field: one snapshot's entry


class BrokenChain(HostError):
    """A delta, base or extent of a disk's chain is missing: the disk cannot be read through."""


def absolute(folder: str, name: str) -> str:
    """A .vmx or descriptor names files relative to its own folder, or by a full path."""
    return name if name.startswith("/") else folder + "/" + name


def descriptor_text(files: FileReader, path: str) -> str:
    """A disk's descriptor text: its file's, or the one a hosted sparse extent embeds (`vmdk.embedded_text`),
    read from its first HEAD_MAX bytes alone: the rest is the disk, as big as a delta has grown."""
    size = files.file_size(path)
    if size <= HEAD_MAX:
        return vmdk.embedded_text(files.read_text(path), size)
    return vmdk.embedded_text(files.read_regular(path, HEAD_MAX), HEAD_MAX)


def chain(files: FileReader, top: str, what: str) -> List[Tuple[str, vmdk.Descriptor]]:
    """(descriptor path, descriptor) from `top` down to the base, each checked with its extents.

    `what` says whose chain it is (a disk of the current state, a snapshot), for the error.
    """
    out = []  # type: List[Tuple[str, vmdk.Descriptor]]
    path, child = top, None  # type: str, Optional[str]
    for _ in range(MAX_DEPTH):
        if not files.exists(path):
            raise BrokenChain("%s: %s is missing%s; the snapshot chain is broken" % (
                what, path, " (parent of %s)" % posixpath.basename(child) if child else ""))
        try:
            desc = vmdk.parse(descriptor_text(files, path))
        except vmdk.NotADescriptor as err:
            raise BrokenChain("%s: %s is not a disk descriptor (%s)" % (what, path, err)) from err
        folder = posixpath.dirname(path)
        for extent in desc.extents:
            if not files.exists(absolute(folder, extent.filename)):
                raise BrokenChain("%s: %s, the data of %s, is missing; the snapshot chain is broken" % (
                    what, absolute(folder, extent.filename), posixpath.basename(path)))
        out.append((path, desc))
        if not desc.parent_hint:
            return out
        path, child = absolute(folder, desc.parent_hint), path
    raise BrokenChain("%s: the chain of %s is deeper than %d (a loop?)" % (what, top, MAX_DEPTH))


def holds(files: FileReader, vm: Vm, snap: Snapshot) -> Optional[bool]:
    """Whether the VM's .vmsd still lists `snap` (by its id or by its name, either will do);
    None where there is no .vmsd to tell (hostd writes one with the VM's first snapshot)."""
    vmsd = snapshot_dictionary(files, vm)
    if vmsd is None:
        return None
    for key in vmsd.keys():  # every entry, whatever snapshot.numSnapshots says
        field = key.lower().rsplit(".", 1)[-1]
        if key.lower().startswith("snapshot") and (field, vmsd.get(key)) in (("uid", snap.id),
                                                                          ("displayname", snap.name)):
            return True
    return False


def created(files: FileReader, vm: Vm, name: str, before: Collection[str]) -> Optional[Snapshot]:
    """The snapshot `name` just created, as the VM's .vmsd names it: the entry of that name whose
    uid is the VM's last (`snapshot.lastUID`) and none of `before`; None where there is no such
    entry (not written yet, or another snapshot came after ours), and hostd is asked instead.

    Relies on hostd's Id for a snapshot (`vim-cmd vmsvc/snapshot.get`) being its `uid` in the
    .vmsd (docs/architecture.md, ESXi facts). What only snapshot.get says (created, state) is
    left empty: a backup needs ours for its id alone.
    """
    vmsd = snapshot_dictionary(files, vm)
    if vmsd is None:
        return None
    entries = {}  # type: Dict[str, Dict[str, str]]  # N of snapshotN -> its fields, lower case
    for key in vmsd.keys():
        m = _ENTRY.match(key)
        if m:
            entries.setdefault(m.group(1), {})[m.group(2).lower()] = vmsd.get(key) or ""
    parents = {e.get("uid", ""): e.get("parent", "") for e in entries.values()}
    last = vmsd.get("snapshot.lastUID")
    for entry in entries.values():
        uid = entry.get("uid", "")
        if uid and uid == last and uid not in before and entry.get("displayname") == name:
            depth, up = 0, parents.get(uid, "")
            while up in parents and depth < MAX_DEPTH:
                depth, up = depth + 1, parents[up]
            return Snapshot(id=uid, name=name, description=entry.get("description", ""), created="", state="",
                            depth=depth)
    return None


def vmsd_of(vmx_path: str) -> str:
    """The .vmsd beside a VM's <name>.vmx (or a template's <name>.vmtx)."""
    return vmx_path.rsplit(".", 1)[0] + ".vmsd"


def frozen_files(files: FileReader, vm: Vm, removed: Collection[str]) -> Dict[str, str]:
    """{disk device: the file the .vmx will name} once the snapshots of the uids `removed` are removed,
    where one of them is the current snapshot: removing it consolidates the current deltas into the
    files it froze (its .vmsd entry's `diskN.fileName`), named as the .vmx names a disk; a removed parent
    of it below, the files that one froze. Other disks, and a VM whose current snapshot stays, keep
    theirs (nothing); so does one without a .vmsd to tell."""
    vmsd = snapshot_dictionary(files, vm)
    if vmsd is None:
        return {}
    numbers = {}  # type: Dict[str, str]  # uid -> N of its snapshotN entry
    for key in vmsd.keys():
        m = _ENTRY.match(key)
        if m and m.group(2).lower() == "uid":
            numbers[vmsd.get(key) or ""] = m.group(1)
    frozen = {}  # type: Dict[str, str]
    uid = vmsd.get("snapshot.current") or ""
    for _ in range(MAX_DEPTH):
        if uid not in removed or uid not in numbers:
            break
        entry = "snapshot%s." % numbers[uid]
        for j in range(_count(vmsd.get(entry + "numDisks"))):
            node, name = vmsd.get("%sdisk%d.node" % (entry, j)), vmsd.get("%sdisk%d.fileName" % (entry, j))
            if node and name:
                frozen[node.lower()] = name
        uid = vmsd.get(entry + "parent") or ""
    return frozen


def snapshot_dictionary(files: FileReader, vm: Vm) -> Optional[VmxFile]:
    """The VM's .vmsd; None where there is none to read (hostd writes one with the first snapshot)."""
    try:
        return VmxFile(read_dictionary(files, vmsd_of(vm.ref.vmx_path)))
    except HostError:
        return None


def snapshot_count(vmsd: VmxFile) -> int:
    """How many snapshots a .vmsd holds: its entries with a uid, whatever snapshot.numSnapshots says."""
    return len({m.group(1) for m in map(_ENTRY.match, vmsd.keys()) if m and m.group(2).lower() == "uid"})


def snapshot_names(vmsd: VmxFile) -> List[str]:
    """The names (displayName) of the snapshots a .vmsd holds, in its order."""
    uids = sorted({int(m.group(1)) for m in map(_ENTRY.match, vmsd.keys()) if m and m.group(2).lower() == "uid"})
    return [vmsd.get("snapshot%d.displayName" % i) or "" for i in uids]


def read_dictionary(files: FileReader, path: str) -> str:
    """A .vmx or .vmsd's text as hostd reads it (vmx.as_vmware_reads: in the charset it declares, a UTF-8
    one line by line), declared UTF-8 as hotvcb writes it: a .vmsd of an old VM made on Windows declares
    windows-1252, and its snapshot names read as UTF-8-else-Latin-1 were not those hostd lists (nor, in
    the backup's copy written as UTF-8 under that declaration, those a restore brought back). A file
    that declares no other charset is kept as read."""
    text = as_vmware_reads(files.read_text(path), lambda: files.file_size(path))
    vmx = VmxFile(text)
    return vmx.text() if vmx.declare_utf8() else text


def read_tree(files: FileReader, vm: Vm, disks: List[Disk], users: Optional[Sequence[str]] = None) -> SnapshotTree:
    """The user's snapshot tree of `disks`: every chain the .vmx and the .vmsd name, checked; with `users`, only
    the snapshots of those uids (a dead run's, which a dry run leaves in place, is none: the real run removes it
    before it reads the tree).

    Files are kept by base name in the backup, so two distinct files of one
    name (a disk and its namesake on another datastore) cannot both be kept:
    that is refused here, before any change.
    """
    vmx_path = vm.ref.vmx_path
    vmsd_path = vmsd_of(vmx_path)
    vmsd_text = read_dictionary(files, vmsd_path) if files.exists(vmsd_path) else ""
    vmsd = VmxFile(vmsd_text)
    by_node = {d.key.lower(): d for d in disks}
    tops = [(d, d.path, "%s %s (current state)" % (vm.name, d.key)) for d in disks]
    names, state = [], []  # type: List[str], List[str]
    for i in range(_count(vmsd.get("snapshot.numSnapshots"))):
        p = "snapshot%d." % i
        if vmsd.get(p + "uid") is None or (users is not None and vmsd.get(p + "uid") not in users):
            continue
        name = vmsd.get(p + "displayName") or ""
        names.append(name)
        vmsn = vmsd.get(p + "filename")
        if vmsn:
            path = absolute(vm.folder, vmsn)
            if not files.exists(path):
                raise BrokenChain("%s snapshot %r: its state file %s is missing" % (vm.name, name, path))
            state.append(path)
            vmem = path[: -len(".vmsn")] + ".vmem" if path.endswith(".vmsn") else ""
            if vmem and files.exists(vmem):
                state.append(vmem)
        for j in range(_count(vmsd.get(p + "numDisks"))):
            node = vmsd.get(p + "disk%d.node" % j) or ""
            disk = by_node.get(node.lower())
            fname = vmsd.get(p + "disk%d.fileName" % j)
            if disk is None and fname:  # its restore would name deltas the backup lacks
                raise HostError("%s snapshot %r holds disk %s (%s), which this backup leaves out "
                                "(VMDK_FILES_TO_BACKUP); BACKUP_SNAPSHOT_TREE keeps the tree of every disk or none"
                                % (vm.name, name, node, posixpath.basename(fname)))
            if disk is not None and fname:
                tops.append((disk, absolute(vm.folder, fname), "%s snapshot %r, %s" % (vm.name, name, disk.key)))
    tree = SnapshotTree(vmx_path.rsplit("/", 1)[-1], read_dictionary(files, vmx_path), vmsd_path.rsplit("/", 1)[-1],
                        vmsd_text, names, state)
    seen = {}  # type: Dict[str, str]  # base name -> the path that has it
    for path in state + [vmx_path, vmsd_path]:
        _claim(seen, path)
    for disk, top, what in tops:
        links = chain(files, top, what)
        for k in range(len(links) - 1, -1, -1):  # base first, so parents come before children
            path, desc = links[k]
            if _claim(seen, path):
                continue
            for extent in desc.extents:
                _claim(seen, absolute(posixpath.dirname(path), extent.filename))
            if k == len(links) - 1:
                tree.bases.append(Disk(key=disk.key, path=path, datastore=disk.datastore, adapter=disk.adapter,
                                       mode=disk.mode))
            else:
                tree.deltas.append((path, links[k + 1][0]))
    return tree


def _claim(seen: Dict[str, str], path: str) -> bool:
    """True if `path` was seen already; a different file of the same base name is refused."""
    name = posixpath.basename(path)
    if seen.get(name) == path:
        return True
    if name in seen:
        raise HostError("the snapshot tree has two files named %s (%s and %s); BACKUP_SNAPSHOT_TREE keeps the tree "
                        "in one folder and cannot hold both" % (name, seen[name], path))
    seen[name] = path
    return False


def _count(value: Optional[str]) -> int:
    try:
        return max(0, int(value or "0"))
    except ValueError:
        return 0
