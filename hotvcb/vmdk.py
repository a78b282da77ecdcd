"""VMDK descriptors: which files make up a disk, and what kind of disk it is.

hotvcb never parses disk *contents* to back up (vmkfstools copies them); it
reads descriptors to learn the extent files to checksum, the adapter type to
pass to vmkfstools, whether a disk is a delta (and its parent) or a physical
RDM that cannot be snapshotted. A descriptor is either a small text file or
embedded in a hosted sparse extent (monolithicSparse: text at sector 1).
"""

import re
from dataclasses import dataclass, field
from typing import List, Optional

_EXTENT = re.compile(r'^(RW|RDONLY|NOACCESS)\s+(\d+)\s+(\w+)\s+"(.*)"(?:\s+\d+)?\s*$')
_KEY = re.compile(r'^\s*([A-Za-z0-9_.]+)\s*=\s*"?(.*?)"?\s*$')


@dataclass
class Extent:
    access: str
    sectors: int
    kind: str  # VMFS, VMFSSPARSE, SESPARSE, SPARSE, FLAT, VMFSRDM, VMFSRAW
    filename: str


@dataclass
class Descriptor:
    create_type: str
    extents: List[Extent] = field(default_factory=list)
    parent_hint: Optional[str] = None
    adapter_type: str = "lsilogic"
    thin: bool = False

    @property
    def capacity(self) -> int:
        return sum(e.sectors for e in self.extents) * 512

    @property
    def is_delta(self) -> bool:
        return self.parent_hint is not None

    @property
    def is_physical_rdm(self) -> bool:
        return self.create_type.lower() == "vmfspassthroughrawdevicemap"


class NotADescriptor(ValueError):
    pass


def parse(text: str) -> Descriptor:
    create_type = None
    desc = Descriptor(create_type="")
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _EXTENT.match(line)
        if m:
            desc.extents.append(Extent(m.group(1), int(m.group(2)), m.group(3).upper(), m.group(4)))
            continue
        m = _KEY.match(line)
        if not m:
            continue
        key, value = m.group(1), m.group(2)
        if key == "createType":
            create_type = value
        elif key == "parentFileNameHint":
            desc.parent_hint = value
        elif key == "ddb.adapterType":
            desc.adapter_type = value
        elif key == "ddb.thinProvisioned":
            desc.thin = value == "1"
    if create_type is None:
        raise NotADescriptor("no createType line")
    desc.create_type = create_type
    return desc


_DELTA_STEM = re.compile(r"-\d{6}(\.vmdk)$")


def base_name(filename: str) -> str:
    """`vm-000001.vmdk` -> `vm.vmdk`: a clone of a snapshot chain is a whole disk, named as its base."""
    return _DELTA_STEM.sub(r"\1", filename)


def rename_extent(text: str, filename: str) -> str:
    """A one-extent descriptor whose extent is `filename` (a disk stored under a new name)."""
    out = []
    for raw in text.splitlines(True):
        m = _EXTENT.match(raw.strip())
        if m:
            raw = raw.replace('"%s"' % m.group(4), '"%s"' % filename.replace('"', ""), 1)
        out.append(raw)
    return "".join(out)

_THIN = re.compile(r'^(\s*ddb\.thinProvisioned\s*=\s*)"?[^"\r\n]*"?', re.M)
_DDB = re.compile(r'^\s*ddb\.[^\r\n]*(\r?\n|$)', re.M)


def as_thin(text: str) -> str:
    """The descriptor of a VMFS flat disk marked thin (`ddb.thinProvisioned = "1"`, what ESXi writes
    for one), whatever the disk it describes was: the flat file beside it is sparse."""
    if _THIN.search(text):
        return _THIN.sub(r'\g<1>"1"', text, count=1)
    ddb = list(_DDB.finditer(text))
    at = ddb[-1].end() if ddb else len(text)
    line = 'ddb.thinProvisioned = "1"\n'
    if at and text[at - 1] != "\n":
        line = "\n" + line
    return text[:at] + line + text[at:]


_LINK = re.compile(r'^(\s*)(CID|parentCID|parentFileNameHint)(\s*=\s*)"?([^"\r\n]*)"?(\s*)$', re.M)


def content_id(text: str) -> str:
    """The descriptor's CID: what a child's parentCID must name for the chain to open."""
    for m in _LINK.finditer(text):
        if m.group(2) == "CID":
            return m.group(4)
    raise NotADescriptor("no CID line")


def relinked(text: str, parent_hint: str, parent_cid: str) -> str:
    """A delta's descriptor pointing at a parent in a new place (KB 1007969's fix, done on purpose).

    Only parentFileNameHint and parentCID change; the delta's own CID and
    extents stay, so its own children still open. Used where the parent was
    cloned (vmkfstools gives a clone a new CID) or moved (backup, restore).
    """
    def swap(m):
        value = {"parentCID": parent_cid, "parentFileNameHint": '"%s"' % parent_hint}.get(m.group(2))
        return m.group(0) if value is None else m.group(1) + m.group(2) + m.group(3) + value + m.group(5)

    return _LINK.sub(swap, text)
