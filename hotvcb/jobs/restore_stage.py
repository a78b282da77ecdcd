"""A KVM backup (libvirt or bare QEMU) made ready for the ESXi restore.

vmkfstools reads VMDKs only, so each qcow2/raw disk is first converted with
`qemu-img convert` into a hosted monolithicFlat VMDK in a staging folder on
the target datastore, beside a .vmx generated from the VM's definition
(convert/domain_to_vmx.py). The folder is then shaped like an ESXi backup,
and the ordinary restore (restore_plan.py, restore.py) clones it into the
format asked for and registers it; the staging folder is removed at the
end, as an unpacked .gz is. qemu-img runs through the host's shell, so it
must be on the host the restore writes to: esxisim's namespace has the
test machine's; a real ESXi host has none, and the error says so. It dies
with hotvcb (tether.py), as restore --kvm's conversion does.
"""

from typing import TYPE_CHECKING, List, Optional, Tuple

from .. import interrupt
from ..errors import HostError
from ..hosts import qemuimg
from ..shell import FileReader, Shell
from ..store import layout
from . import backup_check, qemu_vmdk

if TYPE_CHECKING:  # machine_of, xml.etree and the converters load for a KVM backup only (kvm_machine)
    from .machine_of import Found

NO_QEMU_IMG = ("restoring a KVM backup to ESXi converts its disks with qemu-img where the restore writes, and "
               "this host has none (%s)")
# a hosted VMDK vmkfstools -i imports; lsilogic, as ESXi writes for disks it creates
STAGED = qemuimg.OutputFormat("vmdk", "subformat=monolithicFlat,adapter_type=lsilogic", ".vmdk", False)


def kvm_machine(fs: FileReader, backup: str) -> "Optional[Found]":
    """The VM of a libvirt or bare-QEMU backup; None for anything else (an ESXi backup has a .vmx)."""
    entries = fs.listdir(backup)
    if any(e.lower().endswith(".vmx") for e in entries):
        return None
    if not any(e.endswith(".xml") or (e.endswith(".json") and e != "hotvcb.json") for e in entries):
        return None
    from .machine_of import machine_of  # an ESXi backup, every restore's, has returned above

    found = machine_of(fs, backup)
    return found if found.kind in ("libvirt", "qemu") else None


def bytes_needed(shell: Shell, found: "Found", disk_format: str) -> Tuple[int, int]:
    """Room for the staged VMDKs (holes kept) and for the restored disks in disk_format: (staged, restored),
    apart because the staged ones go once cloned; a qcow2 standing on anything but an incremental's base
    beside it is refused."""
    total_staged = total_restored = 0
    for d in found.machine.disks:
        layers = qemuimg.info(shell, d.source)
        if d.fmt == "qcow2" and layers and layers[0].backing_filename:  # qemu-img would read it as the disk
            backup_check.require_base_beside(shell, d.source)
        virtual, allocated = qemuimg.sizes(layers)
        staged = min(virtual, allocated)
        total_staged += staged
        total_restored += staged if disk_format in ("thin", "2gbsparse") else virtual
    return total_staged, total_restored


def stage(shell: Shell, found: "Found", dest: str, log, qemu_img: str = qemuimg.QEMU_IMG) -> None:
    """Fill dest with `<target dev>.vmdk` per disk and `<VM>.vmx`; raise HostError on failure (HotvcbError for
    a VMDK disk qemu-img would read at another size than its descriptor gives: qemu_vmdk.py)."""
    from ..convert.domain_to_vmx import vmx_from_machine
    m = found.machine
    names = []  # type: List[str]
    for i, d in enumerate(m.disks):
        if interrupt.pending():
            interrupt.raise_pending()
        name, work = d.target + ".vmdk", "%s/.hotvcb-vmdk%d" % (dest, i)  # removed before the plan reads dest
        log.info("Converting %s (%s) to a VMDK ESXi can import: %s/%s" % (d.source, d.fmt, dest, name))
        try:
            source = d.source if d.fmt != "vmdk" else qemu_vmdk.opened(shell, d.source, work, qemu_img)
            argv = qemuimg.convert_argv(source, d.fmt, dest + "/" + name, STAGED, qemu_img)
            capacity = qemuimg.sizes(qemuimg.info(shell, d.source, qemu_img))[0]  # as bytes_needed read it
            try:
                out = qemuimg.convert(shell, argv, capacity)  # tethered: a SIGKILLed restore ends it too
            except HostError as err:
                raise HostError(NO_QEMU_IMG % err) from err
        finally:
            if shell.exists(work):
                shell.remove_tree(work)
        if out.returncode == 127:  # the shell's "not found" (over SSH)
            raise HostError(NO_QEMU_IMG % qemuimg.failure(out))
        if out.returncode != 0:
            raise HostError("converting %s for ESXi failed: %s" % (d.source, qemuimg.failure(out)))
        names.append(name)
    vmx = vmx_from_machine(m, names)
    for note in m.notes + m.restore_notes:
        log.warning("%s: %s" % (m.name, note))
    shell.write_text(dest + "/" + layout.datastore_folder(m.name) + ".vmx", vmx)
