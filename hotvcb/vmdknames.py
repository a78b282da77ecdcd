"""The files a disk's copy creates beside its descriptor, and a name for a copy that takes none of them.

A copy named `X.vmdk` writes more than `X.vmdk`: its data goes to `X-flat.vmdk` (thin, zeroedthick,
eagerzeroedthick) or `X-s001.vmdk`, `X-s002.vmdk`... (2gbsparse). A VM's disks are legal under any name,
`d-flat.vmdk` or `e-s001.vmdk` too (a `vmkfstools -i ... d-flat.vmdk` makes one), so copies made unique by
their descriptor names alone meet: one copy's descriptor is another's data file, a clone fails "The file
already exists" or, worse, a writer replaces the other disk's data. Backup (store/seal.py), folder
restore (jobs/restore_plan.py) and the repository's staging (commands/repo_restore.py) name their copies
here, so no copy ever writes a file another copy (or the folder) holds.
"""

import re
from typing import Collection, Iterable, List, Optional, Tuple

from . import lazyre

SPARSE_EXTENT = r"-s\d{3}"  # 2gbsparse's extents: as many as 2 GiB pieces of the disk
_LITERAL = {"thin": ("", "-flat"), "zeroedthick": ("", "-flat"), "eagerzeroedthick": ("", "-flat"),
            "2gbsparse": ("",)}
_SPARSE = {"2gbsparse"}
_VMDK = lazyre.compile(r"\.vmdk$", re.I)


class Files:
    """The files one copy writes: its descriptor and data files (`fmt` None: whatever any format
    writes, for a copy restored later in a format not known yet). A name that is no .vmdk (a QEMU image)
    is its only file."""

    def __init__(self, name: str, fmt: Optional[str]) -> None:
        self.name = name
        vmdk = _VMDK.search(name) is not None
        self.stem = name[: -len(".vmdk")] if vmdk else name
        self.literal = tuple((self.stem + s + ".vmdk").lower() for s in _LITERAL.get(fmt or "", ("", "-flat"))) \
            if vmdk else (name.lower(),)
        self.sparse = vmdk and (fmt is None or fmt in _SPARSE)

    def holds(self, filename: str) -> bool:
        """Whether this copy writes a file of that name (folded: a share may fold case)."""
        folded = filename.lower()
        if folded in self.literal:
            return True
        return self.sparse and re.fullmatch(re.escape(self.stem.lower()) + SPARSE_EXTENT + r"\.vmdk", folded) is not None

    def meets(self, other: "Files") -> bool:
        """Whether the two copies would write one file. Two sparse extents `a-sNNN` and `b-sNNN` are one
        name only if the stems are; every other name is one of the literal ones of either side."""
        if self.sparse and other.sparse and self.stem.lower() == other.stem.lower():
            return True
        return any(other.holds(f) for f in self.literal) or any(self.holds(f) for f in other.literal)


def pick(name: str, fmt: Optional[str], others: Iterable[Files], existing: Collection[str] = ()) -> Files:
    """The copy's files under `name`, or `<stem>_2.vmdk`, `_3`... the first whose files meet no file of
    the `others` (the copies already named into that folder) and none of the `existing` names there."""
    others = list(others)
    folded = {e.lower() for e in existing}
    stem, ext = (name[: -len(".vmdk")], name[-len(".vmdk"):]) if _VMDK.search(name) else _split(name)
    candidate, n = name, 1
    while True:
        files = Files(candidate, fmt)
        if not any(files.meets(o) for o in others) and not any(files.holds(e) for e in folded):
            return files
        n += 1
        candidate = "%s_%d%s" % (stem, n, ext)


def _split(name: str) -> Tuple[str, str]:
    dot = name.rfind(".")
    return (name[:dot], name[dot:]) if dot > 0 else (name, "")


def unique(names: Iterable[str], fmt: Optional[str]) -> List[str]:
    """Names for copies of these (in order) into one folder, none writing another's file: the first of a
    clash keeps its name."""
    picked = []  # type: List[Files]
    for name in names:
        picked.append(pick(name, fmt, picked))
    return [p.name for p in picked]
