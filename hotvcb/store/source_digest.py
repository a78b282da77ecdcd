"""Copy a disk and digest its source at the same time, instead of reading the copy back.

The seal needs a digest of every file of the backup. Read after the clone,
a disk's data is read twice in a row (once by the clone, once by the seal):
on NFS over 1 GbE that doubles every night's traffic, and here it adds the
digest's time to the clone's. Where the driver says a source file holds the
same bytes as a file of the copy (`Hypervisor.copied_as`: a flat base disk
cloned to a flat format, held still by the snapshot), that source is
digested in a thread while the clone reads it, and the seal uses that digest
for the copy's file (store/seal.py). The manifest then
records the disk's content at the snapshot instant: `hotvcb verify` (and the
check during every restore) proves the backup reproduces it, and a write
that went wrong on the target is found there instead of being sealed as the
truth. The choice and its measurements: docs/backup-format.md.

Where the source cannot be read (a host that refuses it), the copy is
digested by the seal as before.
"""

from typing import Dict, List, Optional, Tuple

from ..background import Background
from ..errors import HostError
from ..hosts.base import Hypervisor, Progress
from ..model import Disk
from . import manifest


def copy_disk(host: Hypervisor, disk: Disk, dst: str, fmt: str, progress: Optional[Progress],
              log) -> Tuple[List[str], Dict[str, manifest.FileDigest]]:
    """`host.copy_disk`, plus {path of a file of the copy: its digest, taken from the source}."""
    pair = host.copied_as(disk, dst, fmt)
    if pair is None:
        return host.copy_disk(disk, dst, fmt, progress), {}
    source, copy = pair
    shell = host.shell
    work = Background(lambda check: manifest.digest_file(shell, source, on_block=lambda _n: check()),
                      "source-digest")
    try:
        files = host.copy_disk(disk, dst, fmt, progress)
    except BaseException:
        work.cancel()
        raise
    try:
        return files, {copy: work.result()}
    except HostError as err:
        log.debug("%s: digest of the source failed (%s); the seal digests the copy" % (disk.path, err))
        return files, {}
