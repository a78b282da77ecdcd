"""Where the QEMU driver's overlays go and how they are named, so one is known for ours by its file name.

An overlay is named `<image file>.<snapshot name>.qcow2` next to the image;
an image on a block device (an LV, /dev/loopN) has its overlay in
DEVICE_OVERLAYS instead, named after the device's path (`%2F` for `/`):
beside the device it would be in /dev, a devtmpfs, so the guest's writes
during the backup would live in RAM (lost with a power cut, ENOSPC at its
few MiB); that folder is 0700, as the device node keeps ordinary users off
the disk's data. A name too long to carry whole (an image's file name,
a device's path) is cut short and a digest added (_digest_name).
"""

import hashlib
import os
import stat
from typing import Any, Dict, List, Optional

from .. import lazyre

OVERLAY_SUFFIX = ".qcow2"
OUR_MARK = "hotvcb-snapshot-"  # = jobs.backup.SNAPSHOT_PREFIX (a driver imports no job)
UNSAFE = lazyre.compile(r"[^A-Za-z0-9_.-]+")  # what a name of ours made from another name leaves out
# overlays of images on block devices: on the host's own persistent storage, root's (a module value, so tests
# can point it elsewhere)
DEVICE_OVERLAYS = "/var/lib/hotvcb/qemu-overlays"


def on_device(image: str) -> bool:
    """An image whose folder is no place for an overlay: a block device (or a path under /dev, one gone)."""
    if image.startswith("/dev/"):
        return True
    try:
        return stat.S_ISBLK(os.stat(image).st_mode)
    except OSError:
        return False


# bytes of an image's file name, or a device's escaped path, in an overlay's name: the longest name made of it,
# `<stem>.<snapshot>.qcow2.description.<pid>-new` (the claim of its description), stays under 255
STEM_MAX = 150


def _digest_name(path: str) -> str:
    """A name too long to carry whole, one to one still: its base name cut short, `%23` and a digest of the whole
    path (an escaped device path has `%` only in `%25` and `%2F`, and an image name past STEM_MAX is never
    kept whole, so no stem kept whole is taken for one of these)."""
    digest = hashlib.sha256(path.encode("utf-8", "surrogateescape")).hexdigest()[:40]
    return UNSAFE.sub("_", path.rsplit("/", 1)[-1])[:48] + "%23" + digest


def _too_long(name: str) -> bool:
    return len(name.encode("utf-8", "surrogateescape")) > STEM_MAX


def _device_stem(image: str) -> str:
    """The device's path as one file name in DEVICE_OVERLAYS, one to one (/dev/vg0/a-b and /dev/vg0-a/b differ).
    A long path (a device linked deep in a VM's folder tree, a /dev/disk/by-path/…-iscsi-iqn…-lun-N name) would
    make a name past the 255 bytes a file system allows: it is then _digest_name's."""
    escaped = image.replace("%", "%25").replace("/", "%2F")
    return DEVICE_OVERLAYS + "/" + (_digest_name(image) if _too_long(escaped) else escaped)


def _file_stem(image: str) -> str:
    """An image file's overlay stem beside it: the image's own path, or for a file name too long to take the
    ~65 bytes an overlay's description claim adds (a provisioning tool's 200-byte name; ext4 and xfs take 255),
    _digest_name's in the same folder, else no backup of it could ever be made ("File name too long")."""
    folder, base = image.rsplit("/", 1)
    return folder + "/" + _digest_name(image) if _too_long(base) else image


def overlay_path(image: str, snapshot_name: str) -> str:
    return "%s.%s%s" % (_device_stem(image) if on_device(image) else _file_stem(image), snapshot_name, OVERLAY_SUFFIX)


def overlay_name(filename: str, backing: str) -> Optional[str]:
    """The snapshot name if `filename` is an overlay of `backing` named the way this driver names them
    (beside it, or for a device in DEVICE_OVERLAYS; for a long image name also as an older hotvcb named it,
    the whole name, so its leftover is still found). The name has no dot, as ours never do: `web.data`'s
    overlay `<web.data>.hotvcb-snapshot-….qcow2` is no overlay of `web` called `data.hotvcb-snapshot-…`
    (two LVs of one volume group, two VMs: one's backup would refuse the other for the other's snapshot)."""
    if not backing:
        return None
    for head in (backing + ".", _device_stem(backing) + ".", _file_stem(backing) + "."):
        if filename.rsplit("/", 1)[0] != head.rsplit("/", 1)[0]:
            continue
        if filename.startswith(head) and filename.endswith(OVERLAY_SUFFIX):
            name = filename[len(head): -len(OVERLAY_SUFFIX)]
            return name if name and "/" not in name and "." not in name else None
    return None


def layer_snapshot(chain: List[Dict[str, Any]], i: int) -> Optional[str]:
    backing = chain[i + 1].get("filename", "") if i + 1 < len(chain) else ""
    return overlay_name(chain[i].get("filename", ""), backing)
