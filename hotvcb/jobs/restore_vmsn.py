"""A restored snapshot's state file (`.vmsn`) made to name no file of the original VM.

A .vmsn holds, besides the VM's saved state, the configuration a revert to its snapshot puts back: the .vmx
text as it was when the snapshot was taken (the `cfgFile` entry of the state file's binary layout, whose
offsets and lengths are recorded around it; esxisim's is a marker and that text). A disk line in it naming a
file outside the VM's folder (by absolute path: a disk on another datastore, an independent one the
backup does not hold) names the original VM's file. Copied as it is, a revert of the restored VM attaches
the original's live disk: two VMs writing one disk, what the restored .vmx is kept from
(restore_plan._unnamed). So each such line is rewritten in place at its own length, every offset and length
of the layout holding: it names the disk's restored file, as the restored .vmsd names it for that snapshot
(padded with spaces after the `=`), or, for a disk the snapshot did not cover (an independent one) or a name
that does not fit, it is blanked to a comment (`#` and spaces): no disk there once reverted.
"""

from typing import Dict, List

from .. import lazyre
from ..errors import HotvcbError
from ..shell import Shell
from ..vmx import VmxFile

STATE_MAX = 256 * 2 ** 20  # bytes of a .vmsn read whole to be rewritten (its memory is in the .vmem beside it)

# a disk slot's fileName line naming a path (a "/" in it: outside the VM's folder)
_DISK_LINE = lazyre.compile(rb'(?im)^[ \t]*((?:scsi|sata|ide|nvme)\d+:\d+)\.filename[ \t]*=[ \t]*"[^"\r\n]*/[^"\r\n]*"'
                            rb'[ \t]*(?=\r?$)')


def read_state(shell: Shell, path: str) -> bytes:
    """The whole state file, read to its end (a read cut short by the host is a HostError, never a short
    file written), at most STATE_MAX bytes: one grown past it since the plan's look is refused."""
    chunks = []  # type: List[bytes]
    size = 0
    with shell.open_binary(path) as f:
        while True:
            chunk = f.read(2 ** 20)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > STATE_MAX:
                raise HotvcbError("%s grew past %d MiB since the restore began" % (path, STATE_MAX >> 20))
            chunks.append(chunk)


def disk_names(vmsd: VmxFile, state: str) -> Dict[str, str]:
    """The disk file (by slot, lower case) the restored .vmsd names for the snapshot whose state file is `state`."""
    names = {}  # type: Dict[str, str]
    for key in vmsd.keys():
        if key.startswith("snapshot") and key.count(".") == 1 and key.endswith(".filename") and \
                vmsd.get(key) == state:
            prefix = key[: -len("filename")]
            for node_key in vmsd.keys():
                if node_key.startswith(prefix + "disk") and node_key.endswith(".node"):
                    node, name = vmsd.get(node_key), vmsd.get(node_key[: -len("node")] + "filename")
                    if node and name:
                        names[node.lower()] = name
    return names


def rewritten(data: bytes, names: Dict[str, str]) -> bytes:
    """`data` (a .vmsn) with each disk line naming a file outside the VM's folder rewritten at its own length."""
    out = []  # type: List[bytes]
    end = 0
    for m in _DISK_LINE.finditer(data):
        line = m.group(0)
        name = names.get(m.group(1).decode("ascii").lower())
        new = b"#" + b" " * (len(line) - 1)
        if name is not None and '"' not in name and "/" not in name:
            head, tail = m.group(1) + b".fileName =", b' "' + name.encode("utf-8") + b'"'
            if len(head) + len(tail) <= len(line):
                new = head + b" " * (len(line) - len(head) - len(tail)) + tail
        out += [data[end: m.start()], new]
        end = m.end()
    return b"".join(out + [data[end:]])
