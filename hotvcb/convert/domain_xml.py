"""libvirt domain XML: read one into a Machine, write one from a Machine.

A backup made by libvirt holds `virsh dumpxml --inactive`. Restoring it keeps
that XML (every device and tuning we do not model survives) and rewrites
only what must change: name, UUID, MACs, each disk's file and format, the
UEFI variables file (a copy must not share the original's), and for a copy
under a new name the passed-through LUNs and writable floppy images (the
original's storage, which a copy beside it must not write) and the files,
sockets and ports the domain holds as its own (domain_files.py). A VM from ESXi
or bare QEMU gets a definition built from the Machine.
"""

import posixpath
import xml.etree.ElementTree as ET
from typing import Callable, Dict, Optional, Tuple

from .domain_files import give_own
from .firmware import ovmf
from .machine import (DISK_BUSES, MAX_MEMORY_MIB, MAX_VCPUS, ConvertError, DiskSpec, Machine, NicSpec, at_most, new_uuid,
                      normal_mac, normal_uuid)
from .. import lazyre

_UNITS = {"b": 1, "bytes": 1, "kb": 1000, "k": 1024, "kib": 1024, "mb": 1000 ** 2, "m": 1 << 20, "mib": 1 << 20,
          "gb": 1000 ** 3, "g": 1 << 30, "gib": 1 << 30, "tb": 1000 ** 4, "t": 1 << 40, "tib": 1 << 40}

_DEV = lazyre.compile(r"^[A-Za-z0-9_-]+$")  # vda, sdb, hdc, xvda: it names the restored image file
Resolve = Callable[[str, str], Optional[Tuple[str, str]]]  # (target dev, source file) -> (image path, format)


def machine_from_xml(text: str, where: str, resolve: Resolve) -> Machine:
    root = _parse(text, where)
    name = (root.findtext("name") or "").strip()
    if not name:
        raise ConvertError("%s: the domain has no <name>" % where)
    raw_uuid = (root.findtext("uuid") or "").strip()
    m = Machine(name=name, uuid=normal_uuid(raw_uuid, where + ": <uuid>") if raw_uuid else new_uuid())
    m.memory_mib = _memory_mib(root, where)
    vcpu = (root.findtext("vcpu") or "1").strip()
    try:
        m.vcpus = int(vcpu)
    except ValueError:
        m.vcpus = 0
    if m.vcpus <= 0:
        raise ConvertError("%s: <vcpu> %r is not a CPU count" % (where, vcpu))
    at_most(m.vcpus, MAX_VCPUS, "<vcpu>", where)
    os_el = root.find("os")
    if os_el is not None and (os_el.get("firmware") == "efi" or os_el.find("loader") is not None):
        m.firmware = "efi"
    clock = root.find("clock")
    m.windows = root.find("features/hyperv") is not None or (clock is not None and clock.get("offset") == "localtime")
    for disk in root.findall("devices/disk"):
        if disk.get("device", "disk") != "disk":
            _host_disk(m, disk)
            continue
        target = disk.find("target")
        dev = target.get("dev", "") if target is not None else ""
        bus = target.get("bus", "") if target is not None else ""
        if not dev:
            raise ConvertError("%s: a <disk> without <target dev>" % where)
        if not _DEV.match(dev):
            raise ConvertError("%s: <target dev=%r> is not a device name" % (where, dev))
        source = disk.find("source")
        path = "" if source is None else source.get("file") or source.get("dev") or source.get("name") or ""
        found = resolve(dev, path)
        if found is None:
            m.notes.append("disk %s (%s) is not in the backup; it is left out" % (dev, path or "no source"))
            m.left_out.append(dev)
            continue
        if bus not in DISK_BUSES:
            m.restore_notes.append("disk %s was on %r; it is restored on sata" % (dev, bus))
            bus = "sata"
        m.disks.append(DiskSpec(source=found[0], fmt=found[1], bus=bus, origin=dev, target=dev))
    if not m.disks:
        raise ConvertError("%s: no disk of the domain is in the backup" % where)
    for i, nic in enumerate(root.findall("devices/interface")):
        mac_el, model_el, src = nic.find("mac"), nic.find("model"), nic.find("source")
        mac = normal_mac(mac_el.get("address", ""), "%s: interface %d" % (where, i)) if mac_el is not None else ""
        network = "" if src is None else src.get("network") or src.get("bridge") or ""
        m.nics.append(NicSpec(model=model_el.get("type", "e1000") if model_el is not None else "e1000",
                              mac=mac, network=network))
    return m


def _host_disk(m: Machine, disk: ET.Element) -> None:
    """A passed-through LUN or a writable floppy image: the host's storage itself, kept by a restore under
    the VM's own name (the original is gone), left out of a copy (machine.renamed). Every LUN, whatever
    its source: one reached over the network (`<source protocol='iscsi' name='iqn…/0'>`, QEMU's own
    initiator) is the original's SAN LUN all the same, which a copy started beside it would write."""
    device, source, target = disk.get("device", ""), disk.find("source"), disk.find("target")
    dev = target.get("dev", "") if target is not None else ""
    path = "" if source is None else source.get("dev") or source.get("file") or source.get("volume") or ""
    if device == "lun" and dev:
        if not path and source is not None and source.get("name"):
            path = "%s:%s" % (source.get("protocol") or "network", source.get("name"))
        m.host_disks.append((dev, "passed-through LUN %s" % (path or "(no source)")))
        return
    if not dev or not path or (device == "floppy" and disk.find("readonly") is not None):
        return
    if device == "floppy":
        m.host_disks.append((dev, "floppy image %s" % path))


def _parse(text: str, where: str) -> ET.Element:
    try:
        root = ET.fromstring(text)
    except ET.ParseError as err:
        raise ConvertError("%s is not a domain definition: %s" % (where, err)) from None
    if root.tag != "domain":
        raise ConvertError("%s is not a domain definition: its root is <%s>, not <domain>" % (where, root.tag))
    return root


def _memory_mib(root: ET.Element, where: str) -> int:
    el = root.find("memory")
    if el is None:
        raise ConvertError("%s: the domain has no <memory>" % where)
    unit = (el.get("unit") or "KiB").lower()
    try:
        amount = int((el.text or "").strip()) * _UNITS[unit]
    except (ValueError, KeyError):
        amount = 0
    if amount < 1 << 20:
        raise ConvertError("%s: <memory unit=%r> %r is not a memory size" % (where, el.get("unit"), el.text))
    return at_most(amount >> 20, MAX_MEMORY_MIB, "<memory> (MiB)", where)


def render(m: Machine, base: Optional[str] = None, where: str = "domain.xml") -> str:
    """`virsh define`-able XML: `base` (the backup's own) rewritten for m, or a new definition."""
    root = _rewrite(_parse(base, where), m) if base is not None else _build(m)
    _indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def _indent(el: ET.Element, level: int = 0) -> None:
    """Two spaces a level, for the admin who reads it (ElementTree's own indent is 3.9+)."""
    pad = "\n" + "  " * level
    if len(el):
        if not (el.text or "").strip():
            el.text = pad + "  "
        for child in el:
            _indent(child, level + 1)
            child.tail = pad + "  "
        el[-1].tail = pad
    if level and not (el.tail or "").strip():
        el.tail = pad


def _rewrite(root: ET.Element, m: Machine) -> ET.Element:
    copy = (root.findtext("name") or "").strip() != m.name
    root.attrib.pop("id", None)
    _child(root, "name").text = m.name
    _child(root, "uuid").text = m.uuid
    os_el = root.find("os")
    nvram = os_el.find("nvram") if os_el is not None else None
    if os_el is not None and nvram is not None:
        os_el.remove(nvram)  # libvirt makes a fresh one from the template; a copy must not share it
    by_target = {d.origin: d for d in m.disks}  # type: Dict[str, DiskSpec]
    devices = _child(root, "devices")
    for disk in devices.findall("disk"):
        target = disk.find("target")
        if disk.get("device", "disk") != "disk":
            if target is not None and target.get("dev", "") in m.left_out:
                devices.remove(disk)  # the original's LUN or floppy image: not a copy's to write
            continue
        spec = by_target.get(target.get("dev", "") if target is not None else "")
        if spec is None:
            devices.remove(disk)  # not in the backup
            continue
        disk.set("type", "file")
        for el in list(disk):
            if el.tag in ("source", "backingStore"):
                disk.remove(el)
        ET.SubElement(disk, "source", file=spec.source)
        _child(disk, "driver").set("type", spec.fmt)
        _child(disk, "driver").set("name", "qemu")
    for nic, spec_nic in zip(devices.findall("interface"), m.nics):
        _child(nic, "mac").set("address", spec_nic.mac)
    if copy and m.disks:  # its serial log, sockets, display: its own, in its folder (that of its disks)
        give_own(devices, posixpath.dirname(m.disks[0].source), m.name)
    return root


def _build(m: Machine) -> ET.Element:
    root = ET.Element("domain", type="kvm")
    ET.SubElement(root, "name").text = m.name
    ET.SubElement(root, "uuid").text = m.uuid
    ET.SubElement(root, "memory", unit="MiB").text = str(m.memory_mib)
    ET.SubElement(root, "vcpu").text = str(m.vcpus)
    os_el = ET.SubElement(root, "os")
    ET.SubElement(os_el, "type", arch="x86_64", machine="q35").text = "hvm"
    if m.firmware == "efi":
        found = ovmf()
        if found is None:
            os_el.set("firmware", "efi")  # libvirt picks the firmware where the VM runs
        else:
            ET.SubElement(os_el, "loader", readonly="yes", type="pflash").text = found[0]
            ET.SubElement(os_el, "nvram", template=found[1])
    ET.SubElement(os_el, "boot", dev="hd")
    features = ET.SubElement(root, "features")
    ET.SubElement(features, "acpi")
    ET.SubElement(features, "apic")
    ET.SubElement(root, "clock", offset="localtime" if m.windows else "utc")
    devices = ET.SubElement(root, "devices")
    if any(d.bus == "scsi" for d in m.disks):  # virtio-scsi, as qemu_argv.py has it (libvirt would pick lsilogic)
        ET.SubElement(devices, "controller", type="scsi", index="0", model="virtio-scsi")
    for d in m.disks:
        disk = ET.SubElement(devices, "disk", type="file", device="disk")
        ET.SubElement(disk, "driver", name="qemu", type=d.fmt)
        ET.SubElement(disk, "source", file=d.source)
        ET.SubElement(disk, "target", dev=d.target, bus=d.bus)
    for n in m.nics:
        nic = ET.SubElement(devices, "interface", type="network")
        ET.SubElement(nic, "mac", address=n.mac)
        ET.SubElement(nic, "source", network="default")
        ET.SubElement(nic, "model", type=n.model)
    for tag in ("serial", "console"):
        ET.SubElement(devices, tag, type="pty")
    return root


def _child(parent: ET.Element, tag: str) -> ET.Element:
    el = parent.find(tag)
    return el if el is not None else ET.SubElement(parent, tag)
