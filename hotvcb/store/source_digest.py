"""Copy a disk and digest its source at the same time, instead of reading the copy back.

The seal needs a digest of every file of the backup. Read after the clone,
a disk's data is read twice in a row (once by the clone, once by the seal):
on NFS over 1 GbE that doubles every night's traffic, and here it adds the
digest's time to the clone's. Where the driver says a source file holds the
same bytes as a file of the copy (`Hypervisor.copied_as`: a flat base disk
cloned to a flat format, held still by the snapshot), that source is
digested in a thread while the clone reads it, and the seal uses that digest
for the copy's file (store/seal.py). qemu-img's raw copy (and the flat
extent of its VMDK) holds the source's virtual disk byte for byte: the
source's *content* is digested (a raw image as it is, a qcow2 one through
qcow2.py) and recorded as the copy file's plain entry. A copy in an image
format of the tool's own (qemu-img's qcow2) holds no source file's bytes, but
the virtual disk of one: that content is recorded as a content entry
(manifest.py). A copy whose disk is not the size digested is no copy of the
disk and fails (exit 0 or not): the one exception is a raw source that is no
whole number of 512-byte sectors, which qemu-img rounds up, whose copy is
then digested by the seal. The manifest then
records the disk's content at the snapshot instant: `hotvcb verify` (and the
check during every restore) proves the backup reproduces it, and a write
that went wrong on the target is found there instead of being sealed as the
truth. The choice and its measurements: docs/backup-format.md.

Where the source cannot be read (a host that refuses it), the copy is
digested by the seal as before.
"""

from typing import Dict, List, Optional, Tuple, Union

from .. import qcow2
from ..background import Background
from ..errors import CopyError, HostError
from ..hosts.base import Copied, Hypervisor, Progress
from ..model import Disk
from . import manifest

Digest = Union[manifest.FileDigest, manifest.ContentDigest]
SECTOR = 512


def copy_disk(host: Hypervisor, disk: Disk, dst: str, fmt: str, progress: Optional[Progress],
              log) -> Tuple[List[str], Dict[str, Digest]]:
    """`host.copy_disk`, plus {path of a file of the copy: its digest, taken from the source}.
    CopyError, the files written removed, where the copy is not the size of the disk digested."""
    copied = host.copied_as(disk, dst, fmt)
    if copied is None:
        return host.copy_disk(disk, dst, fmt, progress), {}
    shell = host.shell
    work = Background(lambda check: _digest(shell, copied, lambda _n: check()), "source-digest")
    try:
        files = host.copy_disk(disk, dst, fmt, progress)
    except BaseException:
        work.cancel()
        raise
    try:
        digest = work.result()
    except HostError as err:
        log.debug("%s: digest of the source failed (%s); the seal digests the copy" % (disk.path, err))
        return files, {}
    if copied.copy.rsplit("/", 1)[-1] not in files:
        log.debug("%s: the copy is not %s; the seal digests it" % (disk.path, copied.copy))
        return files, {}
    try:
        rounded = _rounded_up(shell, copied, digest)
    except HostError as err:  # no copy of the disk, whatever the tool said: the disk fails
        folder = dst.rsplit("/", 1)[0]
        for name in files:  # the caller knows dst, not the names the copy took (qemuimg.output_path)
            shell.remove_tree(folder + "/" + name)
        raise CopyError(disk.path, str(err), copied.copy) from err
    if rounded:
        log.debug("%s: qemu-img rounded the disk up to whole sectors; the seal digests the copy" % disk.path)
        return files, {}
    return files, {copied.copy: digest}


def _digest(shell, copied: Copied, on_block) -> Digest:
    disk = manifest.digest_content(shell, copied.source, copied.source_format or "raw", on_block=on_block)
    return manifest.ContentDigest(copied.content, disk) if copied.content else disk


def _rounded_up(shell, copied: Copied, digest: Digest) -> bool:
    """False where the copy holds a disk as large as the one digested; True where qemu-img rounded
    a raw source that is no whole sector up to the next one (the source's digest is then not the
    copy's: documented, the seal digests the copy); HostError for any other size: qemu-img or the
    target wrote another disk, whatever its exit status said. (A file copied as it is, vmkfstools'
    flat extent, needs no look.)"""
    if not copied.source_format:
        return False
    if isinstance(digest, manifest.ContentDigest):
        with shell.open_binary(copied.copy) as f:
            size, digested = qcow2.virtual_size(f.read(SECTOR), copied.copy), digest.digest.size
    else:
        size, digested = shell.file_size(copied.copy), digest.size
    if size == digested:
        return False
    if digested % SECTOR and size == digested + SECTOR - digested % SECTOR:
        return True
    raise HostError("the copy holds a disk of %d bytes, the source %d" % (size, digested))
