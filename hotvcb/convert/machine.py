"""The neutral VM description every format converts to and from.

Only what a restored VM needs to boot and be recognisable is kept: CPUs,
memory, firmware, disks (image, format, bus) and NICs (model, MAC, network).
`notes` collect what the reader had to change or drop, for the log: a
restore that silently moved a Windows disk from pvscsi to SATA would leave
the admin guessing why the guest behaves differently. `restore_notes` are
those about the devices a restored VM gets (disk bus, NIC model, network)
and the restore's options that choose them: a smoke boot (`verify --boot`),
which has no such options and boots without network, says none of them.
"""

import re
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from ..errors import HotvcbError
from .. import lazyre

# buses a restored disk can sit on; sata is the default because every guest
# (Linux, Windows since Vista) boots from AHCI without extra drivers
DISK_BUSES = ("sata", "ide", "scsi", "virtio")
BUILT_BUSES = ("sata", "scsi", "virtio")  # what a definition we build uses (q35 has no IDE)
# NIC models; e1000 is the default for the same reason (virtio and vmxnet3 need guest drivers)
NIC_MODELS = ("e1000", "e1000e", "rtl8139", "virtio", "vmxnet3")
FIRMWARES = ("bios", "efi")
_MAC = lazyre.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_TARGET_PREFIX = {"sata": "sd", "scsi": "sd", "ide": "hd", "virtio": "vd"}


class ConvertError(HotvcbError):
    """A VM definition we cannot carry over (a garbage value, an unknown bus)."""


@dataclass
class DiskSpec:
    """A disk of a VM definition: its image, format and bus, and the device it came from."""

    source: str  # the image file (in the backup, or restored)
    fmt: str  # its qemu format: qcow2, raw, vmdk
    bus: str  # one of DISK_BUSES
    origin: str  # where it came from: a .vmx device key (scsi0:0) or a libvirt target (vda)
    target: str = ""  # the libvirt target dev (sda, vdb, ...), assigned by number_targets


@dataclass
class NicSpec:
    """A network card of a VM definition."""

    model: str
    mac: str  # lower case, colon-separated
    network: str  # the network it was on (a portgroup or libvirt network name)


@dataclass
class Machine:
    """A VM's definition apart from its hypervisor: what is carried across .vmx, libvirt XML and QEMU argv."""

    name: str
    uuid: str  # 8-4-4-4-12
    vcpus: int = 1
    memory_mib: int = 1024
    firmware: str = "bios"
    windows: bool = False  # RTC in local time, as Windows expects
    disks: List[DiskSpec] = field(default_factory=list)
    nics: List[NicSpec] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    restore_notes: List[str] = field(default_factory=list)
    left_out: List[str] = field(default_factory=list)  # devices of disks the backup does not hold
    # (device, what it is on the host): disks the definition passes through to the host's own storage (a
    # libvirt <disk device='lun'>, a writable floppy image), not in the backup; a copy must not keep them
    host_disks: List[Tuple[str, str]] = field(default_factory=list)


# beyond what any VM can have (vSphere 8: 768 vCPUs, 24 TiB; QEMU q35: 4096 vCPUs): a definition
# asking for more is garbage, refused before a VM that can never start is written
MAX_VCPUS = 4096
MAX_MEMORY_MIB = 24 << 20


def positive_int(value: str, what: str, where: str, most: Optional[int] = None) -> int:
    try:
        n = int(value.strip())
    except ValueError:
        n = 0
    if n <= 0:
        raise ConvertError("%s: %s %r is not a positive whole number" % (where, what, value))
    return at_most(n, most, what, where)


def at_most(n: int, most: Optional[int], what: str, where: str) -> int:
    if most is not None and n > most:
        raise ConvertError("%s: %s %d is more than a VM can have (%d)" % (where, what, n, most))
    return n


def normal_uuid(value: str, where: str) -> str:
    """VMware's `56 4d 12 ...-...` and libvirt's 8-4-4-4-12 both, as 8-4-4-4-12."""
    import uuid  # on 3.8 its import runs `uname -p` in a subprocess: only conversions pay it
    try:
        return str(uuid.UUID(hex=re.sub(r"[\s-]", "", value)))
    except ValueError:
        raise ConvertError("%s: %r is not a UUID" % (where, value)) from None


def normal_mac(value: str, where: str) -> str:
    mac = value.strip().lower().replace("-", ":")
    if not _MAC.match(mac):
        raise ConvertError("%s: %r is not a MAC address" % (where, value))
    return mac


def new_uuid() -> str:
    import uuid  # on 3.8 its import runs `uname -p` in a subprocess: only conversions pay it
    return str(uuid.uuid4())


def new_mac() -> str:
    """A locally administered address in QEMU's 52:54:00 range, as libvirt makes them."""
    import random  # only a conversion makes a NIC; every command that reads a backup imports this module
    return "52:54:00:%02x:%02x:%02x" % tuple(random.randrange(256) for _ in range(3))


def number_targets(machine: Machine) -> None:
    """sda, sdb... per bus family, in the order the disks were found (the boot disk first)."""
    used = {}  # type: dict
    for d in machine.disks:
        prefix = _TARGET_PREFIX[d.bus]
        n = used.get(prefix, 0)
        used[prefix] = n + 1
        d.target = prefix + _letters(n)


def _letters(n: int) -> str:
    out = ""
    n += 1
    while n:
        n, r = divmod(n - 1, 26)
        out = chr(ord("a") + r) + out
    return out


def renamed(machine: Machine, name: str, keep_macs: bool) -> None:
    """A copy that can run beside the original: new UUID, new MACs unless kept, none of the original's
    passed-through host storage."""
    if name == machine.name:
        return
    machine.name, machine.uuid = name, new_uuid()
    for dev, what in machine.host_disks:  # started beside the original, both would write it
        machine.notes.append("disk %s is the original's %s, which a copy must not write beside it: it is left out "
                             "(attach it by hand if this VM replaces the original)" % (dev, what))
        machine.left_out.append(dev)
    if not keep_macs:
        for nic in machine.nics:
            nic.mac = new_mac()
