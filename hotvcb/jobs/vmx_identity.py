"""Answer ESXi's "moved or copied?" question before it is asked.

A restored VM powers on without a prompt only when the .vmx says how its
identity should be treated. Restoring under the backup's own name means the
original is gone and this is it (uuid.action = "keep": BIOS UUID, MACs and
vCenter id stay). A new name means a copy that may run next to the original,
so uuid.action = "create" and the values that would clash are dropped:
uuid.bios, vc.uuid and generated MAC addresses. Either way a workingDir or
sched.swap.dir naming the original's folder (its swap and snapshot deltas) is dropped: the restored VM
lives in a folder of its own. A static MAC is the admin's own choice: it is kept, with a warning (and
the copy is not powered on beside a VM that runs with it: restore_write.power_on).
"""

from typing import Callable, Collection, List, Optional, Set

from ..vmx import VmxFile
from .. import lazyre

_MAC = lazyre.compile(r"^(ethernet\d+)\.addresstype$")

Put = Callable[[str, Optional[str]], None]  # set a key, or drop it with None


_OWN_FOLDER = ("workingDir", "sched.swap.dir")  # where snapshot deltas and the swap file go (the .vmx's folder if unset)


def answer_moved_or_copied(vmx: VmxFile, copy: bool, put: Put, original_folders: Collection[str] = ()) -> List[str]:
    """Apply the identity rewrites through put; return warnings for the log. `original_folders`: the
    names the folder of the VM the backup is of may have: its display name's, and its .vmx file's stem
    (ESXi names folder and .vmx alike when the VM is created, and keeps both when it is renamed in the
    client: "web01" renamed "Web Server" still lives in web01/web01.vmx)."""
    put("sched.swap.derivedName", None)  # points into the old folder; ESXi recreates it
    put("uuid.location", None)  # the old location; ESXi writes the new one
    for key in _OWN_FOLDER:
        # set explicitly to the original's folder (as the vSphere client writes them): the restored VM's swap
        # and snapshot deltas (named as the original's) would go there, onto the datastore it was restored
        # away from, moved or copied alike; unset, they go to the restored VM's own folder
        value = (vmx.get(key) or "").rstrip("/")
        if value and value.rsplit("/", 1)[-1] in original_folders:
            put(key, None)
    if not copy:
        put("uuid.action", "keep")
        return []
    put("uuid.action", "create")
    put("uuid.bios", None)
    put("vc.uuid", None)
    warnings = []
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
