"""One image on two drives of one VM (dm-multipath tested in a guest: two virtio devices, both `share-rw=on`, on
the same raw image): no disk to snapshot.

An overlay per drive would split the image in two: the guest's writes through one path would be unseen by reads
through the other, which dm-multipath takes for one disk, and both overlays would later be committed into the
one image. A single overlay under both drives is not what `blockdev-snapshot-sync` of either drive makes. And
both drives planned onto the same overlay file failed the whole VM as "another backup's" snapshot (its own
claim). So every drive on such an image is skipped, named; the VM's other disks are backed up (exit 3).
"""

from dataclasses import replace
from typing import Callable, Dict, List

from ..errors import HostError
from ..model import Disk


def skip_images_on_two_drives(disks: List[Disk], file_id: Callable[[str], str]) -> List[Disk]:
    """`disks` with every drive whose image (its file, under whatever name) another drive uses too skipped."""
    drives = {}  # type: Dict[str, List[str]]  # the image's file id: its drives' keys
    ids = {}  # type: Dict[str, str]
    for disk in disks:
        if disk.skip_reason or not disk.path:
            continue
        try:
            ids[disk.key] = file_id(disk.path)
        except HostError:
            ids[disk.key] = disk.path
        drives.setdefault(ids[disk.key], []).append(disk.key)
    out = []
    for disk in disks:
        keys = drives.get(ids.get(disk.key, ""), [])
        if len(keys) > 1:
            disk = replace(disk, skip_reason=(
                "image %s is on drives %s of this VM (multipath?): an overlay per drive would split the guest's "
                "writes between its paths, so it is not backed up" % (disk.path, ", ".join(keys))))
        out.append(disk)
    return out
