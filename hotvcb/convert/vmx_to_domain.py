"""An ESXi .vmx, read into a Machine for KVM.

VMware's paravirtual devices have no counterpart a guest already has drivers
for: pvscsi and vmxnet3 would become virtio, which a guest without virtio
drivers (most Windows installs, some appliances) cannot boot from or use. So
by default every disk goes to SATA and every NIC to e1000, which every guest
drives, and a note says what the admin can switch to once the guest has the
virtio drivers (`--disk-bus virtio`, `--nic-model virtio`).
"""

from typing import Callable, Optional, Tuple

from ..units import whole
from ..vmx import VmxFile
from .machine import (MAX_MEMORY_MIB, MAX_VCPUS, ConvertError, DiskSpec, Machine, NicSpec, new_mac, new_uuid,
                      normal_mac, normal_uuid, number_targets, positive_int)

# what a VMware NIC becomes when nothing is asked; "needs drivers" marks paravirtual ones
_NIC = {"e1000": "e1000", "e1000e": "e1000e", "vlance": "rtl8139", "flexible": "rtl8139",
        "vmxnet": "e1000", "vmxnet2": "e1000", "vmxnet3": "e1000"}
_PARAVIRTUAL = ("pvscsi", "vmxnet3", "vmxnet", "vmxnet2")

Resolve = Callable[[str, str], Optional[Tuple[str, str]]]  # (device, fileName) -> (image path, qemu format)


def machine_from_vmx(text: str, where: str, resolve: Resolve, disk_bus: Optional[str] = None,
                     nic_model: Optional[str] = None) -> Machine:
    """The .vmx's VM; `resolve` says where each disk's data is (None: not there, left out with a note)."""
    vmx = VmxFile(text)

    def value(key: str) -> Optional[str]:
        v = vmx.get(key)
        return None if v is None or not v.strip() else v

    name = value("displayName") or ""
    if not name:
        raise ConvertError("%s: no displayName" % where)
    raw_uuid = value("uuid.bios")
    m = Machine(name=name, uuid=normal_uuid(raw_uuid, where + ": uuid.bios") if raw_uuid else new_uuid())
    if value("numvcpus"):
        m.vcpus = positive_int(value("numvcpus") or "", "numvcpus", where, MAX_VCPUS)
    mem = value("memSize") or value("memsize")
    if mem is None:
        m.notes.append("the .vmx sets no memSize; the VM gets %d MiB" % m.memory_mib)
    else:
        m.memory_mib = positive_int(mem, "memSize", where, MAX_MEMORY_MIB)
    firmware = (value("firmware") or "bios").lower()
    if firmware not in ("bios", "efi"):
        raise ConvertError("%s: firmware %r is neither bios nor efi" % (where, firmware))
    m.firmware = firmware
    m.windows = (value("guestOS") or "").lower().startswith("win")
    _disks(vmx, m, where, resolve, disk_bus)
    _nics(vmx, m, where, nic_model)
    number_targets(m)
    return m


def _disks(vmx: VmxFile, m: Machine, where: str, resolve: Resolve, disk_bus: Optional[str]) -> None:
    for dev, bus, filename in vmx.disk_slots():
        found = resolve(dev, filename)
        if found is None:
            m.notes.append("disk %s (%s) is not in the backup; it is left out" % (dev, filename))
            m.left_out.append(dev)
            continue
        controller = bus
        if bus == "scsi":
            controller = (vmx.get(dev.split(":")[0] + ".virtualDev") or "lsilogic").lower()
        target = disk_bus or "sata"  # IDE too: libvirt's q35 has no IDE controller
        if not disk_bus and controller != target:
            extra = " (paravirtual: virtio needs the guest's virtio drivers)" if controller in _PARAVIRTUAL else ""
            m.restore_notes.append("disk %s was on %s%s; restored on %s, which every guest boots from "
                                   "(--disk-bus virtio once the guest has virtio drivers)"
                                   % (dev, controller, extra, target))
        m.disks.append(DiskSpec(source=found[0], fmt=found[1], bus=target, origin=dev))
    if not m.disks:
        raise ConvertError("%s: no disk of the .vmx is in the backup" % where)


def _slot_order(slot: str) -> Tuple[int, str]:
    """ethernet2 before ethernet10; a slot whose number is no bounded ASCII one (`units.whole`) after all."""
    n = whole(slot[len("ethernet"):])
    return (1 << 30 if n is None else n, slot)


def _nics(vmx: VmxFile, m: Machine, where: str, nic_model: Optional[str]) -> None:
    slots = sorted({k.split(".", 1)[0] for k in vmx.keys() if k.startswith("ethernet") and "." in k}, key=_slot_order)
    for slot in slots:
        if (vmx.get(slot + ".present") or "").upper() != "TRUE":
            continue
        dev = (vmx.get(slot + ".virtualDev") or "e1000").lower()
        if dev not in _NIC:
            raise ConvertError("%s: %s.virtualDev %r is not a VMware NIC type" % (where, slot, dev))
        model = nic_model or _NIC[dev]
        if not nic_model and model != dev:
            extra = " (paravirtual: virtio needs the guest's virtio drivers)" if dev in _PARAVIRTUAL else ""
            m.restore_notes.append("%s was %s%s; it becomes %s (--nic-model virtio once the guest has virtio "
                                   "drivers)" % (slot, dev, extra, model))
        address = vmx.get(slot + ".address") or vmx.get(slot + ".generatedAddress")
        mac = normal_mac(address, "%s: %s address" % (where, slot)) if address else new_mac()
        network = vmx.get(slot + ".networkName") or ""
        if network:
            m.restore_notes.append("%s was on the port group %r; it is attached to libvirt's network 'default'"
                                   % (slot, network))
        m.nics.append(NicSpec(model=model, mac=mac, network=network))
