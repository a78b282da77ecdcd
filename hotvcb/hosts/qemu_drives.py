"""What QEMU's query-block says of a VM's drives, as the QEMU driver reads it: a firmware flash is no disk, a temporary
snapshot overlay (-snapshot) no image to copy, a CD-ROM no disk, a floppy or a disk shared with another QEMU no disk to snapshot; our
overlays and the user's chain below them, the images a disk stands on and the internal snapshots its layers hold."""

from typing import Any, Dict, List

from ..model import Disk, Vm
from .disk_skips import SHAREABLE, WRITABLE_FLOPPY
from .openfiles import holders
from .qemu_blockgraph import absolute_names, device_key
from .qemu_overlay_names import OUR_MARK, layer_snapshot
from .qmp import QmpClient, QmpCommandError


def _qemu_temporary(path: str) -> bool:
    """QEMU's name for a disk's temporary snapshot overlay (`snapshot=on`, `-snapshot`: `$TMPDIR/vl.XXXXXX`,
    get_tmp_filename), which it unlinks once opened: nothing to copy, and the image below it is not what the
    guest sees."""
    base = path.rsplit("/", 1)[-1]
    return len(base) == 9 and base.startswith("vl.") and base[3:].isalnum()


def _below_ours(chain: List[Dict[str, Any]]) -> int:
    """The index of the image below our overlays: the one the guest wrote before our snapshot."""
    i = 0
    while i + 1 < len(chain) and (layer_snapshot(chain, i) or "").startswith(OUR_MARK):
        i += 1
    return i


def _below(chain: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """A disk's chain below our overlays: the user's, whose snapshots are Vm.history."""
    return chain[_below_ours(chain):]


def _backing(below: List[Dict[str, Any]]) -> List[str]:
    """The images the disk's image stands on (an external snapshot: `qemu-img create -b`, blockdev-snapshot-sync;
    or a linked clone's template, which no file tells apart), read through by the backup."""
    if len(below) < 2:
        return []
    return ["%s stands on %s" % (below[0].get("filename", "?"), ", ".join(l.get("filename", "?") for l in below[1:]))]


def _internal(below: List[Dict[str, Any]]) -> List[str]:
    """Each layer's internal snapshots (`qemu-img snapshot -c`, HMP `savevm`). Those of the image the guest
    writes (below[0]) are the VM's points to go back to (`loadvm` reverts the active layer). Those of an
    image it stands on are not: a linked clone's template keeps its versions so (reverting it would break
    every clone), and the backup reads the base through either way; they count only as history."""
    out = []  # type: List[str]
    for layer in below:
        names = [str(x.get("name", "?")) for x in layer.get("snapshots") or [] if isinstance(x, dict)]
        if names:
            out.append("%s holds internal snapshot(s) %s" % (layer.get("filename", "?"), ", ".join(names)))
    return out


def _is_flash(dev: Dict[str, Any]) -> bool:
    """A pflash drive (`-drive if=pflash`: the machine's firmware flash), not a disk of the guest's."""
    return str(dev.get("qdev", "")).startswith("/machine/system.flash") or \
        (str(dev.get("device", "")).startswith("pflash") and str(dev.get("device", ""))[6:].isdigit())


CDROM_DEVICES = ("ide-cd", "scsi-cd")  # QOM types of QEMU's CD-ROM drives (-cdrom, if=ide,media=cdrom, -device)


def disk_drives(qmp: QmpClient, blocks: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The drives of query-block that are disks: not empty, no firmware flash, no CD-ROM (its device's type,
    whatever the drive's read-only flag: `-drive if=none,file=x.iso -device ide-cd,drive=…` opens the ISO
    writable, and QEMU's CD device still never writes it), no read-only floppy. A writable drive QEMU calls
    removable otherwise is a USB stick's (`removable=on`, a disk) or a floppy's (skipped, named: device_skip)."""
    return [d for d in blocks if d.get("inserted") and not _is_flash(d)
            and not (d.get("removable") and (d["inserted"].get("ro")
                                             or _device_property(qmp, d, "type") in CDROM_DEVICES))]


def hot_plugged(qmp: QmpClient, vm: Vm) -> List[Disk]:
    """The disks the VM has now that it had not when it was loaded (hot-plugged since: the look-ahead loads a VM
    minutes before its snapshot), each skipped with the reason: the backup planned without them, and a disk
    missing from a backup said OK is found missing only at the restore."""
    loaded = {d.key for d in vm.disks}
    return [Disk(key=device_key(d), path=str(d["inserted"].get("file", "")), datastore="", adapter="",
                 skip_reason="hot-plugged after the VM was loaded for this backup, so not in it (the next backup "
                             "takes it)")
            for d in disk_drives(qmp, absolute_names(qmp, qmp.execute("query-block")))
            if device_key(d) not in loaded]


def device_skip(qmp: QmpClient, dev: Dict[str, Any]) -> str:
    """Why the backup leaves out a writable drive by its guest device (qom-get on its qdev path): a floppy (QEMU
    calls it removable, as a USB stick's `removable=on`, which is a disk), a disk shared with another QEMU;
    "" for a disk to back up."""
    if dev.get("removable") and _device_property(qmp, dev, "type") == "floppy":
        return WRITABLE_FLOPPY
    if _device_property(qmp, dev, "share-rw") is True:
        return _shared(qmp, str(dev["inserted"].get("file", "")))
    return ""


def _shared(qmp: QmpClient, image: str) -> str:
    """A device that lets others write its image (`share-rw=on`) shares it when another process holds the image
    open for writing too (a cluster's other QEMU, also one in another mount namespace: openfiles.holders); share-rw
    alone is no sharing (a block export of the same QEMU's needs it), nor is a reader (`qemu-nbd -r`), whose
    reads an overlay cuts off from nothing. Where /proc cannot tell, it is taken for shared: a private overlay
    over a shared disk splits the cluster."""
    if not image.startswith("/"):
        return ""
    others = holders([image], writers=True)
    if others is None:
        return SHAREABLE + "; %s is opened with share-rw=on and /proc cannot tell who else holds it" % image
    others = [p for p in others if p != qmp.peer_pid()]
    return SHAREABLE + "; share-rw=on, process(es) %s hold it open for writing too" % ", ".join(map(str, others)) \
        if others else ""


def _device_property(qmp: QmpClient, dev: Dict[str, Any], name: str) -> Any:
    """A property of the drive's guest device; None for a drive no device uses, or a QEMU without the property."""
    if not dev.get("qdev"):
        return None
    try:
        return qmp.execute("qom-get", {"path": dev["qdev"], "property": name})
    except QmpCommandError:
        return None
