"""A VMware checkpoint file: a snapshot's `.vmsn`, a suspended VM's `.vmss`.

Binary, as the vmx writes it (the layout VMware's own reader in the crash utility, vmware_vmss.h, reads): a
12-byte header (magic 0xbed2bed2, version, number of groups), that many 80-byte group entries (a NUL-padded
64-byte name, the group's offset and size), then each group's tags. A tag is a 16-bit word (name length,
number of indexes, value size), its name and indexes, then its value: up to 61 bytes inline, or, with value
size 63 (a block), its length and in-memory length (64 bits each), a 16-bit padding size, the padding and the
bytes. A tag word of 0 ends a group. The configuration a revert puts back is the `Snapshot` group's block
`cfgFile`: the .vmx text among binary bytes, its length recorded before it. The guest's saved state proper
(cpu, devices, memory) is not simulated: its groups are absent, as they are from a powered-off VM's .vmsn.
"""

import struct

MAGIC = 0xBED2BED2
VERSION = 8  # guess: no sample records one
_BLOCK = 0x3F  # the value size marking a block tag
_GROUP = struct.Struct("<64sQQ")
_HEADER = struct.Struct("<III")


def _tag(name: bytes, value: bytes, block: bool) -> bytes:
    size = _BLOCK if block else len(value)
    word = struct.pack("<H", len(name) << 8 | size)
    if block:
        return word + name + struct.pack("<QQH", len(value), len(value), 0) + value
    return word + name + value


def _group(tags) -> bytes:
    return b"".join(_tag(name, value, block) for name, value, block in tags) + b"\0\0"


def render(vmx_text: bytes) -> bytes:
    """A checkpoint file whose configuration is `vmx_text` (the .vmx as rendered)."""
    groups = [
        (b"Checkpoint", [(b"id", struct.pack("<I", 0), False)]),
        (b"Snapshot", [(b"cfgFile", vmx_text, True)]),
    ]
    bodies = [_group(tags) for _, tags in groups]
    offset = _HEADER.size + _GROUP.size * len(groups)
    table = b""
    for (name, _), body in zip(groups, bodies):
        table += _GROUP.pack(name, offset, len(body))
        offset += len(body)
    return _HEADER.pack(MAGIC, VERSION, len(groups)) + table + b"".join(bodies)
