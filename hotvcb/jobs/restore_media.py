"""Files a restored VM's .vmx names beside its disks that no backup holds.

A backup holds a VM's disks and its own small files (.vmx, .nvram, .vmxf),
never the ISO images its CD-ROMs hold nor a suspended VM's state file (nor
did ghettoVCB's). Left as they are, the restored VM's .vmx names files that
are not in its folder, and nothing said so.

An image named by a relative file name lies in the VM's folder, so a VM
restored into a new folder (a new name, another datastore) would point at
nothing. Where the image still lies in the original VM's folder (the VM of the
backup's name is still registered), the restored VM is pointed at it by full
path: the one the admin had mounted, and an image is opened read-only, so the
two VMs can share it. Otherwise the restore warns, naming the device and the
file, and leaves the line for the admin to point elsewhere.

A VM suspended when it was backed up names its state file (`.vmss`) in
`checkpoint.vmState`; its disks are those of the suspended guest, without the
memory that file held. The line is emptied, as ESXi empties it once a state
is resumed or discarded, with a warning: the restored VM starts from its
disks, as after a power loss.
"""

from typing import Callable, List, Optional

from ..vmx import VmxFile


def rehome(vmx: VmxFile, put: Callable[[str, Optional[str]], None], original: Callable[[], Optional[str]],
           exists: Callable[[str], bool]) -> List[str]:
    """Points each present CD-ROM image named relative to the VM's folder at the same file in `original()`
    (the original VM's folder, or None where it is unknown: asked only for such an image) where `exists`
    finds it; what to tell the admin of each, for one left as it is what the restored VM will lack."""
    said = []
    for dev, _bus in vmx.devices():
        image = vmx.get(dev + ".fileName") or ""
        if (vmx.get(dev + ".present") or "").upper() != "TRUE" or not image or image.startswith("/") \
                or (vmx.get(dev + ".deviceType") or "").lower() != "cdrom-image":
            continue
        folder = original()
        where = folder + "/" + image if folder else None
        if where is not None and exists(where):
            put(dev + ".fileName", where)
            said.append("CD-ROM %s's image %s lay in the VM's own folder, which the backup does not hold: it now "
                        "points at %s, the original VM's" % (dev, image, where))
        else:
            said.append("CD-ROM %s's image %s lay in the VM's own folder, which the backup does not hold, and is "
                        "not found there%s: the restored VM's CD-ROM points at nothing (give it an image)"
                        % (dev, image, " (%s)" % where if where else " (no VM of the backup's name is registered)"))
    return said


def drop_suspended_state(vmx: VmxFile, put: Callable[[str, Optional[str]], None]) -> Optional[str]:
    """Empties `checkpoint.vmState` where it names a suspended state, which the backup does not hold; what
    to warn the admin of, or None."""
    state = vmx.get("checkpoint.vmState") or ""
    if not state:
        return None
    put("checkpoint.vmState", "")
    return ("the VM was suspended when it was backed up: its suspended state %s is not in the backup, so the "
            "restored VM starts from its disks, as after a power loss (checkpoint.vmState emptied)" % state)
