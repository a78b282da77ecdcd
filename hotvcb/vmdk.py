"""VMDK descriptors: which files make up a disk, and what kind of disk it is.

hotvcb never parses disk *contents* to back up (vmkfstools copies them); it
reads descriptors to learn the extent files to checksum, the adapter type to
pass to vmkfstools, whether a disk is a delta (and its parent) or a physical
RDM that cannot be snapshotted. A descriptor is either a small text file or
embedded in a hosted sparse extent (monolithicSparse: text at sector 1).
"""

import re
import struct
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

from .errors import HotvcbError
from .filetext import decoded, encoded
from .units import DIGITS_MAX, whole
from . import lazyre

_EXTENT = lazyre.compile(r'^(RW|RDONLY|NOACCESS)\s+([0-9]+)\s+(\w+)\s+"(.*)"(?:\s+[0-9]+)?\s*$')
_KEY = lazyre.compile(r'^\s*([A-Za-z0-9_.]+)\s*=\s*"?(.*?)"?\s*$')


@dataclass
class Extent:
    """An extent line of a descriptor: which file holds the disk's data, and how."""

    access: str
    sectors: int
    kind: str  # VMFS, VMFSSPARSE, SESPARSE, SPARSE, FLAT, VMFSRDM, VMFSRAW
    filename: str


@dataclass
class Descriptor:
    """What a copy, check or restore needs from a descriptor: its type, extents and parent."""

    create_type: str
    extents: List[Extent] = field(default_factory=list)
    parent_hint: Optional[str] = None
    adapter_type: str = "lsilogic"
    thin: bool = False
    parent_cid: Optional[str] = None  # "ffffffff" for a base disk

    @property
    def capacity(self) -> int:
        return sum(e.sectors for e in self.extents) * 512

    @property
    def is_delta(self) -> bool:
        return self.parent_hint is not None

    @property
    def is_rdm(self) -> bool:
        """A raw device mapping of either mode: its extent is a LUN, not a file of the datastore."""
        return self.create_type.lower() in ("vmfsrawdevicemap", "vmfspassthroughrawdevicemap")

    @property
    def is_physical_rdm(self) -> bool:
        return self.create_type.lower() == "vmfspassthroughrawdevicemap"


class NotADescriptor(ValueError):
    pass


class BadSize(HotvcbError):
    """An extent line whose size no disk can have (more than DIGITS_MAX digits): the descriptor is damaged or
    planted. Not a NotADescriptor, which callers take for another kind of file: this one names a disk."""


class Unwritable(HotvcbError, ValueError):
    """A path a descriptor line cannot hold: written into one it would be other lines, or another name.
    A HotvcbError, so a job reports it as its error, never as a traceback."""


# Control characters (C0, DEL, C1) and Unicode's line and paragraph separators: each either ends a
# descriptor line (a reader using str.splitlines ends one at \x0b, \x1c or \x85 too) or is no byte a file
# name on a datastore should hold. A descriptor has no escape for any of them.
_UNWRITABLE = lazyre.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")  # the last: bytes no UTF-8 holds


_LINES = lazyre.compile(r"[^\n]*\n|[^\n]+\Z")  # each line with its line feed: a descriptor's own line breaks kept


def writable(path: str, quoted: bool = False) -> str:
    """`path` as it may stand between the quotes of a descriptor line, or Unwritable naming it. `quoted`:
    the line's value ends at the first `"` (parentFileNameHint, `_LINK`), so it may hold none; an
    extent's name runs to the line's last quote and may."""
    if _UNWRITABLE.search(path) or (quoted and '"' in path):
        raise Unwritable("%r cannot be named in a disk descriptor (a line break or other control character%s, "
                         "or bytes that are not UTF-8, in it)" % (path, ", or a quote" if quoted else ""))
    return path


def parse(text: str) -> Descriptor:
    create_type = None
    desc = Descriptor(create_type="")
    for raw in text.split("\n"):  # lines end at a line feed only, as VMware reads them (_UNWRITABLE)
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _EXTENT.match(line)
        if m:
            sectors = whole(m.group(2))
            if sectors is None:
                raise BadSize("disk descriptor line %r: a size of %d digits (no disk's has more than %d); "
                              "the descriptor is damaged" % (_cut(line), len(m.group(2)), DIGITS_MAX))
            desc.extents.append(Extent(m.group(1), sectors, m.group(3).upper(), m.group(4)))
            continue
        m = _KEY.match(line)
        if not m:
            continue
        key, value = m.group(1), m.group(2)
        if key == "createType":
            create_type = value
        elif key == "parentCID":
            desc.parent_cid = value
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


SPARSE_MAGIC = b"KDMV"  # a hosted sparse extent (monolithicSparse, 2gbsparse's extents)


def embedded(head: bytes) -> Optional[bytes]:
    """The descriptor a hosted sparse extent embeds, cut from its first bytes `head` where its header
    puts it (descriptorOffset and descriptorSize, in sectors, at bytes 28 and 36; NULs pad it): None
    for another file, or an extent with none (2gbsparse's). NotADescriptor for a header that puts it
    past `head`: a disk keeps it in its first sectors, and a reader must not read a whole disk (a
    delta as big as what was written since) for a header's say-so."""
    if head[:4] != SPARSE_MAGIC:
        return None
    offset, sectors = struct.unpack_from("<QQ", head.ljust(44, b"\0"), 28)
    if not offset:
        return None
    if (offset + sectors) * 512 > len(head):
        raise NotADescriptor("its header puts its descriptor past its first %d KiB, where no disk keeps it"
                             % (len(head) >> 10))
    return head[offset * 512: (offset + sectors) * 512].split(b"\0", 1)[0]


def embedded_text(head: str, size: int) -> str:
    """`head` (a file's first `size` bytes, as the shell decoded them) itself, or for a hosted sparse extent
    the descriptor it embeds, decoded as a descriptor file is (UTF-8): the whole binary file fails UTF-8,
    and as Latin-1 an extent named `dä k.vmdk` would read `dÃ¤ k.vmdk`. NotADescriptor where there is none."""
    raw = embedded(encoded(head, size))
    if raw is None:
        if head.startswith(SPARSE_MAGIC.decode()):
            raise NotADescriptor("a sparse extent with no descriptor of its own")
        return head
    return decoded(raw)


def sparse_capacity(head: bytes) -> int:
    """The capacity (bytes) a hosted sparse extent's header gives (sectors at byte 12), which its
    embedded descriptor's extent line must agree with."""
    return struct.unpack_from("<Q", head.ljust(20, b"\0"), 12)[0] * 512


def _cut(line: str) -> str:
    """A line as an error names it: its start and end, not thousands of digits between them."""
    return line if len(line) <= 100 else "%s...%s" % (line[:60], line[-30:])


_DELTA_STEM = lazyre.compile(r"-\d{6}(\.vmdk)$")


def base_name(filename: str) -> str:
    """`vm-000001.vmdk` -> `vm.vmdk`: a clone of a snapshot chain is a whole disk, named as its base."""
    return _DELTA_STEM.sub(r"\1", filename)


def flat_beside(descriptor: str) -> str:
    """`…/web.vmdk` -> `…/web-flat.vmdk`: where ESXi keeps a VMFS flat disk's data, beside its descriptor."""
    return descriptor[:-len(".vmdk")] + "-flat.vmdk"


def rename_extent(text: str, filename: str) -> str:
    """A one-extent descriptor whose extent is `filename` (a disk stored under a new name), written
    between the quotes as it is, a `"` in it too: so vmkfstools writes a clone's extent, and an
    extent's name runs to the line's last quote (`_EXTENT`), so the descriptor names that very file."""
    return _renamed_extents(text, lambda _name: filename)


def extents_renamed(text: str, names: Dict[str, str]) -> str:
    """`text` with each extent named in `names` renamed to its value, every other line as it is."""
    return _renamed_extents(text, names.get)


def _renamed_extents(text: str, new_name: Callable[[str], Optional[str]]) -> str:
    """`text` with each extent line's name replaced by `new_name(name)` (checked by writable; the line
    kept as it is when that is None), every other line byte for byte."""
    out = []
    for raw in _LINES.findall(text):
        m = _EXTENT.match(raw.strip())
        if m:
            name = new_name(m.group(4))
            if name is not None:
                raw = raw.replace('"%s"' % m.group(4), '"%s"' % writable(name), 1)
        out.append(raw)
    return "".join(out)


def for_qemu(text: str) -> str:
    """The descriptor as qemu must be handed it to read it as VMware does: without blank lines. qemu
    (block/vmdk.c vmdk_parse_extents) scans each line with sscanf("%10s ..."), which skips line breaks
    too: a blank line right before an extent line reads that extent a second time (a disk of twice its
    size, the first extent's data read again). A comment line it reads as one, and skips."""
    return "".join(l for l in _LINES.findall(text) if l.strip())


def anchored(text: str, folder: str, parent: bool = True) -> str:
    """The descriptor with each extent and (`parent`) its parentFileNameHint named by absolute path in
    `folder` (names already absolute kept): the same disk, described by a copy of the descriptor kept in
    another folder (restore_write.py clones from such a copy of the text it checked; `parent=False`
    where the parent's checked copy is written beside it). Unwritable for a folder no descriptor line
    can name: a line break in it would make the rest of its name lines of their own (another extent)."""
    def hint(m):
        if not parent or m.group(2) != "parentFileNameHint" or m.group(4).startswith("/"):
            return m.group(0)
        path = writable("%s/%s" % (folder, m.group(4)), quoted=True)
        return '%s%s%s"%s"%s' % (m.group(1), m.group(2), m.group(3), path, m.group(5))
    text = _renamed_extents(text, lambda name: None if name.startswith("/") else "%s/%s" % (folder, name))
    return _LINK.sub(hint, text)


_DDB = lazyre.compile(r'^\s*ddb\.[^\r\n]*(\r?\n|$)', re.M)


def _set(text: str, key: str, value: str) -> str:
    """`key` set to `value` (quoted as its line was); a missing key is added after the last ddb line."""
    line = re.compile(r'^(\s*%s\s*=\s*)("?)[^"\r\n]*"?' % re.escape(key), re.M)
    if line.search(text):
        return line.sub(lambda m: m.group(1) + m.group(2) + value + m.group(2), text, count=1)
    ddb = list(_DDB.finditer(text))
    at = ddb[-1].end() if ddb else len(text)
    new = '%s = "%s"\n' % (key, value)
    if at and text[at - 1] != "\n":
        new = "\n" + new
    return text[:at] + new + text[at:]


def as_thin(text: str) -> str:
    """The descriptor of a VMFS flat disk marked thin (`ddb.thinProvisioned = "1"`, what ESXi writes
    for one), whatever the disk it describes was: the flat file beside it is sparse."""
    return _set(text, "ddb.thinProvisioned", "1")


def new_identity(text: str) -> str:
    """The descriptor of a copy of its disk: a new CID, ddb.longContentID (96 random bits, then the CID)
    and ddb.uuid (`60 00 C2 9x …`), in the shapes vmkfstools gives a clone, so two copies of one disk
    never claim one identity (a guest's /dev/disk/by-id, a disk vCenter tracks by its uuid)."""
    import secrets  # random, base64, hmac: for a copy's new identity, not every command that reads descriptors
    cid = "%08x" % secrets.randbits(32)
    raw = ["%02x" % b for b in secrets.token_bytes(14)]
    uuid = "60 00 C2 9%x %s-%s" % (secrets.randbits(4), " ".join(raw[:6]), " ".join(raw[6:]))
    text = _set(text, "CID", cid)
    text = _set(text, "ddb.longContentID", "%024x%s" % (secrets.randbits(96), cid))
    return _set(text, "ddb.uuid", uuid)


_LINK = lazyre.compile(r'^(\s*)(CID|parentCID|parentFileNameHint)(\s*=\s*)"?([^"\r\n]*)"?(\s*)$', re.M)


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
