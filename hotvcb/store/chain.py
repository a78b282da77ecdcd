"""Which backup a backup depends on: an incremental's qcow2 disk names its base in its own header.

An incremental libvirt backup holds each disk as a qcow2 overlay whose
backing file is `../<base backup>/<disk>.qcow2`. The header is the truth (it
is what qemu-img follows on restore), so it is read here rather than
recorded a second time: offset 8 holds the backing file name's offset (u64,
big-endian), offset 16 its length (u32). A backup whose base is gone or not
good is not good (health.py), and rotation never deletes a base a kept
backup needs (rotation.py). An incremental is built on a base only while no
image of its chain was written after its backup was sealed
(`written_after_seal`; what that does and does not catch: docs/kvm.md).
"""

import struct
from typing import List, Optional

from ..errors import HostError
from ..filetext import encoded
from ..shell import Shell

QCOW2_MAGIC = b"QFI\xfb"
_HEADER_MAX = 1 << 16  # qemu puts the backing file name right after the header and its extensions
MAX_DEPTH = 64
SEAL_SLACK = 2.0  # seconds: a write this soon after the seal is not told from the seal's own


def backing_file(shell: Shell, path: str) -> Optional[str]:
    """The backing file a qcow2 image names ("" for none), None if it is no qcow2. Read with read_regular
    (HostError for anything but a regular file): a FIFO put in place of a backup's disk blocked the open for
    ever, and with it the rotation of every backup run of the VM (which asks what its kept backups stand on)."""
    size = min(shell.file_size(path), _HEADER_MAX)
    head = encoded(shell.read_regular(path, max(size, 1)), size)
    if len(head) < 20 or head[:4] != QCOW2_MAGIC:
        return None
    offset, size = struct.unpack(">QI", head[8:20])
    if not offset or not size:
        return ""
    if offset + size > len(head) or size > 1023:
        raise HostError("%s: its backing file name lies outside the header" % path)
    return head[offset: offset + size].decode("utf-8", "replace")


def bases(shell: Shell, folder: str, files: List[str]) -> List[str]:
    """Names of the backup folders (siblings of `folder`) the qcow2 files among `files` stand on."""
    out = []  # type: List[str]
    for rel in files:
        if not rel.endswith(".qcow2"):
            continue
        backing = backing_file(shell, folder + "/" + rel)
        if not backing:
            continue
        parts = backing.split("/")
        if len(parts) != 3 or parts[0] != ".." or parts[1] in ("", ".", ".."):
            raise HostError("%s/%s stands on %s, which is not a backup beside it" % (folder, rel, backing))
        if parts[1] not in out:
            out.append(parts[1])
    return out


def chain_length(shell: Shell, path: str) -> int:
    """How many images lie below a backup's qcow2 disk (0 for a full one)."""
    depth = 0
    while depth < MAX_DEPTH:
        backing = backing_file(shell, path)
        if not backing:
            return depth
        path = path.rsplit("/", 1)[0] + "/" + backing
        depth += 1
    return depth


def written_after_seal(shell: Shell, path: str) -> Optional[str]:
    """The first image of a backup's qcow2 chain (the disk itself, then each base) whose file was
    written after its backup was sealed, or None.

    STATUS.ok is written after every file of a backup, so a disk younger than it was written
    since: booted by hand, opened read-write by a tool, restored into. Its age is asked first:
    "now" only grows between the two looks, so a disk as old as its seal never looks younger.
    """
    for _ in range(MAX_DEPTH + 1):
        folder = path.rsplit("/", 1)[0]
        sealed = shell.age(folder + "/STATUS.ok")
        disk = shell.age(path)
        if sealed is not None and disk is not None and disk + SEAL_SLACK < sealed:
            return path
        backing = backing_file(shell, path)
        if not backing:
            return None
        path = folder + "/" + backing
    return None
