"""Answer ESXi's "moved or copied?" question before it is asked.

A restored VM powers on without a prompt only when the .vmx says how its
identity should be treated. Restoring under the backup's own name means the
original is gone and this is it (uuid.action = "keep": BIOS UUID, MACs and
vCenter id stay). A new name means a copy that may run next to the original,
so uuid.action = "create" and the values that would clash are dropped:
uuid.bios, vc.uuid and generated MAC addresses. Either way a workingDir or
sched.swap.dir naming the original's folder (its swap and snapshot deltas) is dropped: the restored VM
lives in a folder of its own. One the admin set to another folder on purpose (the VM's deltas on an SSD
datastore, in a folder named after the VM) is kept, and said. A static MAC is the admin's own choice: it
is kept, with a warning (and the copy is not powered on beside a VM that runs with it: restore_write.power_on).
"""

from typing import Callable, Collection, List, Optional, Protocol, Set

from ..vmx import VmxFile
from .. import lazyre

_MAC = lazyre.compile(r"^(ethernet\d+)\.addresstype$")

Put = Callable[[str, Optional[str]], None]  # set a key, or drop it with None


_OWN_FOLDER = ("workingDir", "sched.swap.dir")  # where snapshot deltas and the swap file go (the .vmx's folder if unset)


class Folders(Protocol):
    """What is asked of the host (its Shell) about a workingDir: its full path (realpath: a datastore's name
    and UUID path are one folder), and whether it is a folder."""

    def realpath(self, path: str) -> str: ...

    def isdir(self, path: str) -> bool: ...


def answer_moved_or_copied(vmx: VmxFile, copy: bool, put: Put, original_folders: Collection[str] = (),
                           original: Optional[str] = None, host: Optional[Folders] = None) -> List[str]:
    """Apply the identity rewrites through put; return warnings for the log. `original`: the folder of the VM
    the backup is of, by its full path as `host` resolves it (realpath), where the backup says (its manifest's
    source_vmx), with `host` given; `original_folders`: the names that folder may have, for a backup that does not
    say: its display name's, and its .vmx file's stem (ESXi names folder and .vmx alike when the VM is created,
    and keeps both when it is renamed in the client: "web01" renamed "Web Server" still lives in web01/web01.vmx)."""
    put("sched.swap.derivedName", None)  # points into the old folder; ESXi recreates it
    put("uuid.location", None)  # the old location; ESXi writes the new one
    warnings = [w for w in (_own_folder(vmx, key, put, original_folders, original, host)
                            for key in _OWN_FOLDER) if w]
    if not copy:
        put("uuid.action", "keep")
        return warnings
    put("uuid.action", "create")
    put("uuid.bios", None)
    put("vc.uuid", None)
    for key in vmx.keys():
        m = _MAC.match(key)
        if not m:
            continue
        nic = m.group(1)
        kind = (vmx.get(key) or "").lower()
        if kind in ("generated", "vpx"):
            put(nic + ".generatedAddress", None)
            put(nic + ".generatedAddressOffset", None)
        elif kind == "static":
            warnings.append("%s keeps its static MAC address %s; change it if the original VM still runs"
                            % (nic, vmx.get(nic + ".address")))
    return warnings


def _own_folder(vmx: VmxFile, key: str, put: Put, names: Collection[str], original: Optional[str],
                host: Optional["Folders"]) -> str:
    """Drop `key` (workingDir, sched.swap.dir) where it is the original VM's own folder, as the vSphere client
    writes it: the restored VM's swap and snapshot deltas (named as the original's) would go there, onto the
    datastore it was restored away from, moved or copied alike; unset, they go to its own folder. A folder set
    apart on purpose (another datastore's, named after the VM all the same) is kept, and said: dropped, the
    restored VM swapped and snapshotted silently onto the slow datastore. Where the backup does not say where
    the original lived, or the folder is not there, one named as the original's folder is dropped, and said,
    naming it. Returns the warning or ""."""
    value = (vmx.get(key) or "").rstrip("/")
    if not value.startswith("/"):
        return ""  # unset, or relative to the VM's own folder (the restored VM's)
    named = value.rsplit("/", 1)[-1] in names
    if host is None:
        original = None
    elif original is not None and host.realpath(value) == original:
        put(key, None)
        return ""
    if not named:
        return ""
    if host is not None and original is not None and host.isdir(value):
        return ("%s %s kept: it is not the original VM's folder (%s) but one set apart for it; the restored VM "
                "keeps its swap and snapshot deltas there" % (key, value, original))
    put(key, None)
    return ("%s %s dropped: named as the original VM's folder, and %s; the restored VM keeps its swap and snapshot "
            "deltas in its own folder (set %s again if a folder set apart for it is meant)" % (
                key, value, "the backup does not say where that was" if original is None else "no such folder", key))


def identity(vmx: VmxFile) -> Set[str]:
    """What a VM is known by on the host and the network: its BIOS UUID and its MAC addresses. Two VMs
    sharing any of them clash when both run, whatever their names (a same-name restore keeps them all,
    beside an original the admin may have renamed to keep it)."""
    found = set()
    bios = vmx.bios_uuid()
    if bios:
        found.add("uuid.bios " + bios)
    for key in vmx.keys():
        m = _MAC.match(key)
        if m:
            kind = (vmx.get(key) or "").lower()
            mac = vmx.get(m.group(1) + (".address" if kind == "static" else ".generatedAddress")) or ""
            if mac:
                found.add("MAC " + mac.lower())
    return found
