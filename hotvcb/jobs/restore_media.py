"""Files a restored VM's .vmx names beside its disks that no backup holds.

A backup holds a VM's disks and its own small files (.vmx, .nvram, .vmxf),
never the ISO images its CD-ROMs hold, the images of its floppies, nor a suspended VM's state file (nor
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

from typing import Callable, List, Optional, Tuple

from .. import lazyre
from ..vmx import VmxFile

_FLOPPY = lazyre.compile(r"^floppy[0-9]$")


def rehome(vmx: VmxFile, put: Callable[[str, Optional[str]], None], original: Callable[[], Optional[str]],
           exists: Callable[[str], bool]) -> List[str]:
    """Points each present CD-ROM or floppy image named relative to the VM's folder at the same file in
    `original()` (the original VM's folder, or None where it is unknown: asked only for such an image) where
    `exists` finds it; what to tell the admin of each, for one left as it is what the restored VM will lack."""
    said = []
    for dev, what in _images(vmx):
        image = vmx.get(dev + ".fileName") or ""
        if not image or image.startswith("/"):
            continue
        folder = original()
        where = folder + "/" + image if folder else None
        if where is not None and exists(where):
            put(dev + ".fileName", where)
            said.append("%s %s's image %s lay in the VM's own folder, which the backup does not hold: it now "
                        "points at %s, the original VM's" % (what, dev, image, where))
        else:
            said.append("%s %s's image %s lay in the VM's own folder, which the backup does not hold, and is "
                        "not found there%s: the restored VM's %s points at nothing (give it an image)"
                        % (what, dev, image, " (%s)" % where if where else " (no VM of the backup's name is "
                           "registered)", what))
    return said


def _images(vmx: VmxFile) -> List[Tuple[str, str]]:
    """(device, what it is) of each present device backed by an image the guest reads: a CD-ROM's ISO
    (`deviceType = "cdrom-image"`) and a floppy's (`floppyN.fileType = "file"`, as a driver floppy of an old
    Windows guest). A serial or parallel port's file is its output, made anew where the VM runs: no image."""
    devices = [(dev, "CD-ROM") for dev, _bus in vmx.devices()
               if (vmx.get(dev + ".deviceType") or "").lower() == "cdrom-image"]
    devices += [(dev, "floppy") for dev in sorted({k.split(".", 1)[0] for k in vmx.keys()})
                if _FLOPPY.match(dev) and (vmx.get(dev + ".fileType") or "").lower() == "file"]
    return [(dev, what) for dev, what in devices if (vmx.get(dev + ".present") or "").upper() == "TRUE"]


def drop_suspended_state(vmx: VmxFile, put: Callable[[str, Optional[str]], None]) -> Optional[str]:
    """Empties `checkpoint.vmState` where it names a suspended state, which the backup does not hold; what
    to warn the admin of, or None."""
    state = vmx.get("checkpoint.vmState") or ""
    if not state:
        return None
    put("checkpoint.vmState", "")
    return ("the VM was suspended when it was backed up: its suspended state %s is not in the backup, so the "
            "restored VM starts from its disks, as after a power loss (checkpoint.vmState emptied)" % state)
