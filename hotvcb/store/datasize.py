"""How many bytes a .gz backup's members take once unpacked: fewer than their sizes where the manifest shows
blocks of zeros, since the unpack (targz.extract) writes no all-zero chunk. A thin disk of 40 GiB holding 2 GiB
is 40 GiB to the tar header; counted so, a restore's room checks refused restores that fit. Where the manifest
does not tell (a ghettoVCB archive, a content entry, digests that do not match the member's size) a member
counts whole: never less than it may take.
"""

import json
from typing import TYPE_CHECKING, Any

from .manifest import BLOCK_HEX, CONTENT, MANIFEST, MAX_BLOCK_SIZE, MIN_BLOCK_SIZE

if TYPE_CHECKING:  # tarfile and friends only where an archive is read
    from ..targz import ArchiveView


def measure(view: "ArchiveView") -> None:
    """Tell the view what each member of a hotvcb archive takes unpacked (ArchiveView.unpacked_size)."""
    from ..targz import CHUNK

    try:
        files = json.loads(view.texts.get(MANIFEST, "{}")).get("files")
    except (ValueError, AttributeError):
        return
    if not isinstance(files, dict):
        return
    for rel, size in view.sizes.items():
        entry = files.get(rel)
        if isinstance(entry, dict) and entry.get("size") == size and CONTENT not in entry:
            view.data[rel] = _written(entry.get("blocks"), size, CHUNK)


def list_differs(entry: Any, blocks: str, block_size: int) -> bool:
    """Whether a manifest entry's block digest list (what `measure` counts room by) differs from `blocks`, the
    list the member's data gives as its checksum is verified: the checksum (sha256_of_blocks) proves the data,
    never the list beside it, so a list that lies (bit rot, an edit) would pass and let an unpack fill the
    datastore. Only a list of the width and block size that was computed is compared."""
    listed = entry.get("blocks") if isinstance(entry, dict) else None
    if not isinstance(listed, dict) or not blocks or listed.get("size") != block_size or listed.get("hex") != BLOCK_HEX:
        return False
    return listed.get("digests") != blocks


def _written(blocks: Any, size: int, chunk: int) -> int:
    """The bytes of the `chunk`-sized pieces of a file of `size` that hold a block of data by its digests."""
    if not isinstance(blocks, dict):
        return size
    block, width, digests = blocks.get("size"), blocks.get("hex"), blocks.get("digests")
    if type(block) is not int or not MIN_BLOCK_SIZE <= block <= MAX_BLOCK_SIZE or width != BLOCK_HEX \
            or not isinstance(digests, str):
        return size
    count = -(-size // block)
    if len(digests) != count * width:
        return size
    import hashlib  # a .gz backup's only: every restore imports this module

    full = hashlib.sha256(bytes(block)).hexdigest()[:width]
    last = hashlib.sha256(bytes(size - (count - 1) * block)).hexdigest()[:width] if count else full
    pieces = set()  # type: set
    for i in range(count):
        if digests[i * width:(i + 1) * width] != (last if i == count - 1 else full):
            start, end = i * block, min((i + 1) * block, size)
            pieces.update(range(start // chunk, (end - 1) // chunk + 1))
    return sum(min(chunk, size - k * chunk) for k in pieces)
