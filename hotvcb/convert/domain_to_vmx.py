"""A Machine (from a libvirt or bare-QEMU backup) as an ESXi .vmx.

The opposite direction of vmx_to_domain.py, with the same rule: devices a
guest already drives. virtio has no VMware counterpart, so virtio and SCSI
disks go to SATA (AHCI, which Linux and Windows drive without extras) and
virtio NICs to e1000; a note says so. MAC addresses are left to ESXi to
generate (a static MAC outside VMware's range is refused at power-on); the
BIOS UUID is carried, and restore's moved-or-copied answer (vmx_identity.py)
drops it for a copy under a new name.
"""

from typing import List

from ..vmx import VmxFile
from .machine import ConvertError, Machine

HW_VERSION = "14"  # ESXi 6.7 and later; SATA needs 10, EFI secure boot 13
_NIC = {"e1000": "e1000", "e1000e": "e1000e", "vmxnet3": "vmxnet3", "rtl8139": "e1000", "virtio": "e1000"}
_IDE_SLOTS = ("ide0:0", "ide0:1", "ide1:0", "ide1:1")
SATA_SLOTS = 30


def vmx_uuid(value: str) -> str:
    """8-4-4-4-12 as VMware writes uuid.bios: `56 4d 12 ... 34-56 78 ...`."""
    import uuid  # on 3.8 its import runs `uname -p` in a subprocess: only a KVM->ESXi conversion pays it
    raw = uuid.UUID(value).hex
    pairs = [raw[i:i + 2] for i in range(0, 32, 2)]
    return " ".join(pairs[:8]) + "-" + " ".join(pairs[8:])


def vmx_from_machine(m: Machine, disk_files: List[str]) -> str:
    """The .vmx text; disk_files[i] is the .vmdk (in the VM's folder) of m.disks[i]."""
    lines = [(".encoding", "UTF-8"), ("config.version", "8"), ("virtualHW.version", HW_VERSION),
             ("displayName", m.name), ("guestOS", "windows9-64" if m.windows else "otherlinux-64"),
             ("memSize", str(m.memory_mib)), ("numvcpus", str(m.vcpus)), ("uuid.bios", vmx_uuid(m.uuid))]
    if m.firmware == "efi":
        lines.append(("firmware", "efi"))
    ide = [d for d in m.disks if d.bus == "ide"]
    if len(ide) > len(_IDE_SLOTS) or len(m.disks) - len(ide) > SATA_SLOTS:
        raise ConvertError("%s has more disks than one SATA and two IDE controllers hold" % m.name)
    sata = 0
    if len(ide) < len(m.disks):
        lines.append(("sata0.present", "TRUE"))
    for d, filename in zip(m.disks, disk_files):
        if d.bus == "ide":
            slot = _IDE_SLOTS[ide.index(d)]
        else:
            slot, sata = "sata0:%d" % sata, sata + 1
            if d.bus != "sata":
                m.notes.append("disk %s was on %s; it goes to SATA (%s), which the guest drives without "
                               "extra drivers" % (d.origin, d.bus, slot))
        lines += [(slot + ".present", "TRUE"), (slot + ".fileName", filename)]
    for i, n in enumerate(m.nics):
        model = _NIC.get(n.model, "e1000")
        if model != n.model:
            m.notes.append("NIC %d was %s; it becomes %s" % (i, n.model, model))
        lines += [("ethernet%d.present" % i, "TRUE"), ("ethernet%d.virtualDev" % i, model),
                  ("ethernet%d.networkName" % i, "VM Network"), ("ethernet%d.addressType" % i, "generated")]
    if m.nics:
        m.notes.append("NICs are on the port group 'VM Network' with MAC addresses ESXi generates")
    vmx = VmxFile("")
    for key, value in lines:
        vmx.set(key, value)
    return vmx.text().lstrip("\n")
