"""A backup's flat disk restored thin by hotvcb itself, checked by the very bytes it writes.

`vmkfstools -i` would clone the disk while verify reads it a second time for
its digests: two reads of the backup, and the bytes the clone wrote were not
the bytes that were checked (a bit flipping between the two reads, on the
datastore or in memory, would be restored unnoticed). A thin ESXi disk is a
descriptor (createType "vmfs") and a -flat.vmdk that is a sparse file,
allocated on write, so hotvcb can write one itself: each block of the
backup's -flat.vmdk is read once, digested exactly as verify digests it
(blockdigest.py, the manifest entry's block size; an all-zero block is the
constant zero digest), and the same buffer is written at its offset but for
its 4 KiB pages of zeros (zeros and holes stay holes, page by page, so the
copy takes no more room than the backup's own allocation, which the room
check counts; sparsewrite.data_runs). The file is sized,
fsynced, and its proof compared with the manifest's entry before the
descriptor (the backup's, extent renamed, marked thin) is written beside it.
A copy under a new name gets a new CID, ddb.longContentID and ddb.uuid, as a
clone does; under the backup's own name (the VM's identity kept) the disk
keeps its own, so it comes back as it was (vmx_identity.py).

Only a disk whose descriptor and flat agree is copied here (the flat's
manifest size is the extent's sectors × 512, no parent CID): a backup another
tool or a hand repair left otherwise is cloned, and vmkfstools writes it whole
under a fresh descriptor, as it always did.

What is lost: vmkfstools' copy offload (VAAI XCOPY on an array that has it;
zeroedthick, eagerzeroedthick and 2gbsparse targets, still cloned, keep it)
and its own zeroing; what is won: one read instead of two, and a restored
disk proved byte for byte.

Which restores copy so (`copies_itself`, `own_copies`): a thin one where
hotvcb runs on the host itself (the local shell: also SSH mode's run on the
host, never the file-by-file SSH shell), from a folder backup (a .gz is
unpacked and cloned) that this run did not stage, with checksums to prove it
(a manifest, no --no-verify), and not a user's snapshot tree (its deltas name
their base's clone). What a mismatch means is the restore's (restore_write.py
refuses it).
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, Optional, Set, Tuple

from .. import blockdigest, crashpoint, vmdk
from ..errors import HostError
from ..hostdigest import check_interrupt
from ..localshell import LocalShell
from ..restorefile import RestoreRequest
from ..shell import NOT_REGULAR, Shell
from ..sparsewrite import Flusher, data_runs, write_at
from ..store import manifest
from .restore_plan import Plan
from .verify import Problem, compare

BASE = "ffffffff"  # the parentCID of a disk with no parent


@dataclass
class OwnCopy:
    """A disk the restore copies itself: the backup's descriptor and flat file, and the flat's entry."""
    descriptor: str  # the backup's descriptor file
    text: str  # its text
    flat: str  # the backup's -flat.vmdk
    rel: str  # the flat's name in the manifest
    entry: Dict[str, Any]  # its manifest entry (a version-2 proof)
    new_identity: bool  # a copy under a new name: new CID, longContentID and ddb.uuid


def provable(files: Dict[str, Dict[str, Any]]) -> Set[str]:
    """The manifest's files a restore could copy itself: VMDK files with a block-digest proof."""
    return {rel for rel, e in files.items()
            if rel.lower().endswith(".vmdk") and manifest.PROOF in e and manifest.CONTENT not in e}


def copies_itself(shell: Shell, req: RestoreRequest, compressed: bool) -> bool:
    """Whether thin disks are copied by this process rather than cloned (the module's docstring says where)."""
    return req.disk_format == "thin" and isinstance(shell, LocalShell) and not compressed and not req.staged


def own_copies(shell: Shell, req: RestoreRequest, plan: Plan, backup: str, data: Optional[Dict[str, Any]],
               compressed: bool) -> Dict[str, OwnCopy]:
    """The plan's disks copied by this process, by their descriptor in the backup: single-extent flat
    disks the manifest `data` proves (not a user's snapshot tree: its deltas name their base's clone)."""
    if data is None or plan.tree is not None or not copies_itself(shell, req, compressed):
        return {}
    files = data.get("files") or {}
    found = {}
    for d in plan.disks:
        own = own_copy(backup, d.source, d.text, files, plan.copy)
        if own is not None:
            found[d.source] = own
    return found


def own_copy(backup: str, source: str, text: str, files: Dict[str, Dict[str, Any]],
             new_identity: bool) -> Optional[OwnCopy]:
    """How the disk whose descriptor is `source` (its `text` as the plan read it) is copied here, or None
    when it is not a single-extent VMFS flat base disk (parentCID ffffffff) whose flat file the manifest
    proves by its block digests, of exactly the extent's size (anything else is left to vmkfstools, which
    writes it whole)."""
    try:
        desc = vmdk.parse(text)
    except vmdk.NotADescriptor:
        return None
    if desc.create_type.lower() != "vmfs" or desc.is_delta or len(desc.extents) != 1 \
            or desc.extents[0].kind != "VMFS" or (desc.parent_cid or BASE).lower() != BASE:
        return None
    flat = source.rsplit("/", 1)[0] + "/" + desc.extents[0].filename
    rel = flat[len(backup) + 1:]
    if not flat.startswith(backup + "/") or rel not in provable(files) or files[rel].get("size") != desc.capacity:
        return None
    return OwnCopy(source, text, flat, rel, files[rel], new_identity)


def copy(shell: Shell, own: OwnCopy, dst: str, progress: Callable[[int], None]) -> Optional[Problem]:
    """Write the disk as a thin disk at `dst` (its descriptor; the flat beside it) in one read of the
    backup; the Problem when what was read is not what the manifest proves (then no descriptor is
    written: the caller removes the folder). HostError when a file cannot be read or written."""
    flat = vmdk.flat_beside(dst)
    if shell.exists(dst):  # another disk's file (its data, named like this descriptor): never written over
        raise HostError("cannot write the disk %s: a file of that name is already there" % dst)
    try:
        block_size, _whole = manifest.block_size_for(own.entry, manifest.BLOCK_SIZE)
    except ValueError as err:
        return Problem(own.rel, "manifest entry unusable: %s" % err)
    try:
        digest = _copy_flat(own.flat, flat, block_size, progress)
    except OSError as err:
        why = NOT_REGULAR if err.errno == errno.ELOOP else err.strerror or err  # a symlink: open_regular's own
        raise HostError("cannot copy %s to %s: %s" % (own.flat, flat, why)) from err
    problem = compare(own.rel, own.entry, digest)
    if problem is None:
        text = vmdk.as_thin(vmdk.rename_extent(own.text, flat.rsplit("/", 1)[1]))
        shell.write_text(dst, vmdk.new_identity(text) if own.new_identity else text)
    return problem


def _copy_flat(src: str, dst: str, block_size: int, progress: Callable[[int], None]) -> "manifest.FileDigest":
    """follow=False: a -flat.vmdk that is a symlink (to another VM's disk, sealed over: a manifest is
    only SHA-256s, and whoever can plant the link can seal) is refused, not read as this backup's."""
    with blockdigest.open_regular(src, follow=False) as f:
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        flusher = Flusher(fd)
        try:
            size = blockdigest.file_size(f.fileno())
            os.ftruncate(fd, size)  # sized first: what is never written stays a hole

            def blocks(ring: int) -> Iterator[Tuple[int, int, Any]]:
                # each block is written before it is handed on to be hashed, from the same buffer, which
                # read_blocks reads into again only after the digest of what it held was taken
                for off, length, data in blockdigest.read_blocks(f, block_size, check_interrupt, ring=ring):
                    runs = [] if data is None else data_runs(data)
                    if runs:
                        view = memoryview(data)
                        for start, end in runs:  # the block's pages of zeros stay holes
                            flusher.wrote(write_at(fd, off + start, [view[start:end]]))
                        crashpoint.reached("restore-copy-wrote")
                    yield off, length, data

            out = blockdigest.digest_blocks(blocks, block_size, on_block=_percent(size, progress))
            flusher.finish()
        finally:
            flusher.join()  # never close the fd under a running fdatasync
            os.close(fd)
    return manifest.from_blockdigest(out, block_size)


def _percent(size: int, progress: Callable[[int], None]) -> Callable[[int], None]:
    """An on_block(bytes) that calls progress(percent) when the percentage moves, as a clone's output does."""
    state = {"done": 0, "shown": -1}

    def on_block(n: int) -> None:
        state["done"] += n
        pct = state["done"] * 100 // size if size else 100
        if pct != state["shown"]:
            state["shown"] = pct
            progress(pct)
    return on_block
