"""hotvcb.json: what a backup holds and how to prove it.

Written into the backup folder after every file is copied and hashed, and
before STATUS.*; see layout.py for the whole write order. Format (version 1):

    {"format": "hotvcb-backup", "version": 1,
     "vm": name, "vmid": id, "source_vmx": path, "host": text,
     "started": iso, "finished": iso, "result": "ok|warn|error", "message": text,
     "disk_format": fmt, "snapshot": {"name": n, "id": id, "memory": b, "quiesce": b},
     "disks": [{"key": "scsi0:0", "source": path, "files": [name...], "ok": b, "error": text}],
     "files": {relative name: {"size": n, "sha256": hex}},
     "verified": iso or null}
"""

import json
from typing import Any, Dict, Optional, Tuple

MANIFEST = "hotvcb.json"
FORMAT = "hotvcb-backup"
VERSION = 1


def dumps(data: Dict[str, Any]) -> str:
    body = {"format": FORMAT, "version": VERSION}
    body.update(data)
    return json.dumps(body, indent=2, ensure_ascii=False, sort_keys=False) + "\n"


def load(shell, folder: str) -> Optional[Dict[str, Any]]:
    """The manifest of a backup, or None for one made by ghettoVCB."""
    path = folder + "/" + MANIFEST
    if not shell.exists(path):
        return None
    data = json.loads(shell.read_text(path))
    if data.get("format") != FORMAT:
        raise ValueError("%s is not a hotvcb manifest" % path)
    return data


# -- block digests (added for `hotvcb verify`) ---------------------------------
# A whole-file SHA-256 proves a file intact but cannot say *where* it broke.
# Backward-compatible addition to version 1: a file entry may carry
#
#     "blocks": {"size": 1048576, "hex": 16, "digests": "<16 hex chars per block>"}
#
# i.e. the first 64 bits of the SHA-256 of each 1 MiB block, concatenated in
# file order (100 GiB of disk -> 1.6 MB of text). The whole-file "sha256"
# stays the proof; the block digests only locate the first damaged range.
# Readers that do not know "blocks" ignore it; manifests without it verify
# as before, with the byte range reported as unknown.

BLOCK_SIZE = 1 << 20
BLOCK_HEX = 16


class FileDigest(object):
    """Size, whole-file SHA-256 and per-block digests of one file."""

    def __init__(self, size: int, sha256: str, blocks: str, block_size: int = BLOCK_SIZE):
        self.size, self.sha256, self.blocks, self.block_size = size, sha256, blocks, block_size

    def entry(self) -> Dict[str, Any]:
        """The manifest "files" entry for this file."""
        return {
            "size": self.size,
            "sha256": self.sha256,
            "blocks": {"size": self.block_size, "hex": BLOCK_HEX, "digests": self.blocks},
        }


def digest_stream(read, block_size: int = BLOCK_SIZE, on_block=None) -> FileDigest:
    """Digest what `read(n)` returns until it returns b"" (a file, a tar member)."""
    import hashlib

    from .. import interrupt

    whole = hashlib.sha256()
    parts = []
    size = 0
    while True:
        if interrupt.pending():
            interrupt.raise_pending()
        block = _read_full(read, block_size)
        if not block:
            break
        whole.update(block)
        parts.append(hashlib.sha256(block).hexdigest()[:BLOCK_HEX])
        size += len(block)
        if on_block is not None:
            on_block(len(block))
    return FileDigest(size, whole.hexdigest(), "".join(parts), block_size)


def digest_file(shell, path: str, block_size: int = BLOCK_SIZE, on_block=None) -> FileDigest:
    """Digest a host file in one pass (holes read as zeros).

    LocalShell files are opened directly, as LocalShell.sha256 does; a shell
    with `open_binary` is read through it; any other shell (SSH) hashes on the
    host via `shell.sha256`, without block digests.
    """
    from ..errors import HostError
    from ..shell import LocalShell

    opener = getattr(shell, "open_binary", None)
    if opener is None and not isinstance(shell, LocalShell):
        # e.g. SSH mode: the host hashes the file, no block digests
        return FileDigest(shell.file_size(path), shell.sha256(path, on_block), "", block_size)
    opener = opener or (lambda p: open(p, "rb"))
    try:
        with opener(path) as f:
            return digest_stream(f.read, block_size, on_block)
    except OSError as err:
        raise HostError("cannot read %s: %s" % (path, err.strerror or err)) from err


def first_bad_block(entry: Dict[str, Any], digest: FileDigest) -> Optional[Tuple[int, int]]:
    """(first, last) byte of the first block whose digest differs, or None.

    None also when the entry has no usable block digests (older manifests).
    """
    blocks = entry.get("blocks") or {}
    recorded = blocks.get("digests")
    width = blocks.get("hex", BLOCK_HEX)
    size = blocks.get("size", 0)
    if not recorded or size != digest.block_size or width != BLOCK_HEX:
        return None
    count = max(len(recorded), len(digest.blocks)) // width
    for i in range(count):
        a = recorded[i * width : (i + 1) * width]
        b = digest.blocks[i * width : (i + 1) * width]
        if a != b:
            start = i * size
            end = min(start + size, max(digest.size, int(entry.get("size", 0)))) - 1
            return start, max(end, start)
    return None


def _read_full(read, n: int) -> bytes:
    """read() may return short blocks (pipes, tar streams); fill to n or EOF."""
    chunks = []
    want = n
    while want > 0:
        data = read(want)
        if not data:
            break
        chunks.append(data)
        want -= len(data)
    return b"".join(chunks)
