"""A domain's definition as the libvirt driver reads it (`virsh dumpxml`): its XML parsed, each <disk> a Disk
or one skipped with why, the user its QEMU runs as, and the definition a backup keeps in place of a .vmx
(`DomainConfig`: `dumpxml --inactive`, with the disks only the running domain has added)."""

import copy
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

from ..errors import HostError
from ..model import Disk
from .disk_skips import SHAREABLE, WRITABLE_FLOPPY
from .virsh import VirshError

CONFIG_NAME = "domain.xml"


@dataclass
class DomainConfig:
    """What a libvirt backup holds in place of a .vmx: `virsh dumpxml --inactive` at backup time."""

    xml: str
    filename: str = CONFIG_NAME

    def text(self) -> str:
        return self.xml


def disk_of(d: ET.Element, vol_path: Callable[[str, str], str]) -> Tuple[Disk, str]:
    """A device='disk' <disk> as a Disk, and its image's format ("" for one skipped, with why: not a local
    image, read-only, shareable, transient); `vol_path`: a storage pool volume's path (virsh vol-path)."""
    target = d.find("target")
    key = target.get("dev", "?") if target is not None else "?"
    bus = target.get("bus", "") if target is not None else ""
    source = d.find("source")
    kind = d.get("type", "file")
    path = ""
    if source is not None:
        path = source.get("file") or source.get("dev") or ""
    driver = d.find("driver")
    reason = ""
    if kind == "volume" and source is not None and source.get("pool") and source.get("volume"):
        # a storage pool's volume (cockpit, attach-disk --source-type): a dir pool's is a plain file,
        # a logical pool's an LV, both read as such; a network pool's (rbd, gluster) is no local path
        try:
            path = vol_path(source.get("pool", ""), source.get("volume", ""))
        except VirshError as err:
            reason = "storage pool volume %s/%s: %s" % (source.get("pool"), source.get("volume"), err.text)
        kind = "file" if path.startswith("/") else kind
    if reason:
        path = ""
    elif kind not in ("file", "block") or not path.startswith("/"):
        reason = "not a local image (%s disk)" % kind
    elif d.find("readonly") is not None:
        reason = "read-only disk"
    elif d.find("shareable") is not None:
        reason = SHAREABLE
    elif d.find("transient") is not None:
        reason = "transient disk (its writes are thrown away)"
    fmt = "" if reason else driver.get("type", "raw") if driver is not None else "raw"
    return Disk(key=key, path=path, datastore="", adapter=bus, mode="persistent", skip_reason=reason), fmt


def with_live_disks(inactive: str, live: ET.Element, copied: List[str], name: str) -> str:
    """The definition a restore defines: `dumpxml --inactive`, plus the disks a backup copies that only the
    running domain has (attached `--live`, without `--config`), or a restore would leave out a disk the backup
    holds without a word. Unchanged where there is none."""
    config = parse(inactive, name)
    devices = config.find("devices")
    have = {t.get("dev") for t in config.findall("devices/disk/target")}
    added = 0
    for d in live.findall("devices/disk"):
        target = d.find("target")
        dev = target.get("dev", "") if target is not None else ""
        if d.get("device", "disk") != "disk" or dev not in copied or dev in have or devices is None:
            continue
        disk = copy.deepcopy(d)
        for el in list(disk):
            if el.tag in ("alias", "backingStore"):  # the running QEMU's, not a definition's
                disk.remove(el)
        source = disk.find("source")
        if source is not None:
            source.attrib.pop("index", None)
        devices.append(disk)
        added += 1
    return ET.tostring(config, encoding="unicode") + "\n" if added else inactive


def not_copied(d: ET.Element) -> Optional[Disk]:
    """A <disk> that holds the guest's data but is no device='disk' a backup job exports, as a disk skipped with
    why (the job names it, the run ends WARNING, as for an ESXi physical RDM); None for a CD-ROM, an empty or
    read-only floppy."""
    target, source = d.find("target"), d.find("source")
    key = target.get("dev", "?") if target is not None else "?"
    bus = target.get("bus", "") if target is not None else ""
    path = "" if source is None else source.get("dev") or source.get("file") or source.get("volume") or ""
    device = d.get("device", "")
    if device == "lun":
        reason = "passed-through LUN (its data is on the host's storage, which a backup does not copy)"
    elif device == "floppy" and path and d.find("readonly") is None:
        reason = WRITABLE_FLOPPY
    else:
        return None
    return Disk(key=key, path=path, datastore="", adapter=bus, mode="persistent", skip_reason=reason)


def parse(text: str, name: str) -> ET.Element:
    try:
        return ET.fromstring(text)
    except ET.ParseError as err:
        raise HostError("virsh dumpxml %s printed no readable XML: %s" % (name, err)) from err


def qemu_owner(root: ET.Element) -> str:
    """`uid:gid` the domain's QEMU runs as (its DAC seclabel in the live XML), "" when unknown or root."""
    for label in root.findall("seclabel"):
        if label.get("model") == "dac":
            text = (label.findtext("label") or "").replace("+", "")
            if re.match(r"^\d+:\d+$", text) and text != "0:0":
                return text
    return ""
