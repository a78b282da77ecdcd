"""Byte layouts of a repository's objects (docs/repository.md is the spec).

Only encoding and decoding live here, so the spec and its constants sit side
by side; who writes what, and when, is in writer.py, gc.py and prune.py.
"""

import hashlib
import json
import os
import struct
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from ..errors import RepoError

VERSION = 1
CONFIG = "config"
CHUNK_SIZE = 64 * 1024  # why: docs/repository.md "Why 64 KiB"
PACK_SIZE = 32 * 1024 * 1024
BACKUP_LIMIT = 24 * 3600
SETTLE = 600

PACK_MAGIC = b"HVCBPACK"
PACK_VERSION = 2  # 1 (still read): named by the SHA-256 of all its bytes; 2: see pack_id
PACK_HEADER = len(PACK_MAGIC) + 1 + 16  # magic, version, 16 random bytes: no two packs are ever the same object
PACK_END = b"HVCBPEND"
_ENTRY = struct.Struct(">32sBII")  # sha256, method, raw length, stored length
_TRAILER = struct.Struct(">I32s8s")  # table length, sha256 of the table, end magic
TRAILER_SIZE = _TRAILER.size

INDEX_MAGIC = b"HVCBIDX1"
_INDEX_HEAD = struct.Struct(">8sIQQ")
_INDEX_ENTRY = struct.Struct(">Q32s")

RAW, ZLIB, ZSTD = 0, 1, 2


@dataclass(frozen=True)
class Blob:
    """Where one stored chunk lies in a pack."""

    digest: bytes
    method: int
    raw_len: int
    offset: int
    stored_len: int


def pack_header() -> bytes:
    return PACK_MAGIC + bytes([PACK_VERSION]) + os.urandom(16)


def pack_version(header: bytes, where: str) -> int:
    """The version a pack's header says (1 or 2); RepoError for a header that is not a pack's."""
    if len(header) < PACK_HEADER or header[:len(PACK_MAGIC)] != PACK_MAGIC:
        raise RepoError("%s: not a pack (bad header)" % where)
    version = header[len(PACK_MAGIC)]
    if version not in (1, 2):
        raise RepoError("%s: pack version %d, made by a newer hotvcb (this one reads 1 and 2)" % (where, version))
    return version


def pack_id(header: bytes, tail: bytes) -> str:
    """A version-2 pack's name (64 hex): the SHA-256 of its header and of its table and trailer (`tail`).

    Not of its blobs: hashing every stored byte a second time cost a backup as much CPU as
    hashing the disk's data did. The name still covers the whole pack: the header is in it, the
    table gives each blob's place and length (they fill the pack between the header and the
    table) and the SHA-256 of the chunk it decodes to, which every read checks."""
    return hashlib.sha256(header[:PACK_HEADER] + tail).hexdigest()


def pack_table(blobs: List[Blob]) -> bytes:
    """The table and trailer that end a pack."""
    table = b"".join(_ENTRY.pack(b.digest, b.method, b.raw_len, b.stored_len) for b in blobs)
    return table + _TRAILER.pack(len(table), hashlib.sha256(table).digest(), PACK_END)


def table_length(trailer: bytes, where: str) -> Tuple[int, bytes]:
    """(table length, its sha256) from a pack's last TRAILER_SIZE bytes."""
    if len(trailer) != TRAILER_SIZE:
        raise RepoError("%s: too short to be a pack" % where)
    length, digest, end = _TRAILER.unpack(trailer)
    if end != PACK_END or length % _ENTRY.size:
        raise RepoError("%s: not a pack (bad trailer)" % where)
    return length, digest


def parse_table(table: bytes, digest: bytes, where: str) -> List[Blob]:
    if hashlib.sha256(table).digest() != digest:
        raise RepoError("%s: the pack's table is damaged (checksum mismatch)" % where)
    blobs = []
    offset = PACK_HEADER
    for i in range(0, len(table), _ENTRY.size):
        d, method, raw_len, stored_len = _ENTRY.unpack_from(table, i)
        blobs.append(Blob(d, method, raw_len, offset, stored_len))
        offset += stored_len
    return blobs


@dataclass(frozen=True)
class DiskIndex:
    """Which chunk lies at which chunk number of one disk; absent numbers are zeros."""

    chunk_size: int
    size: int
    entries: List[Tuple[int, bytes]]

    def stored_bytes(self) -> int:
        """What a restore of the disk writes: its chunks (the last cut at the disk's end); the zeros
        between them stay holes. What a restore must find room for, before it writes any."""
        return sum(max(0, min(self.chunk_size, self.size - n * self.chunk_size)) for n, _digest in self.entries)


def encode_index(index: DiskIndex) -> bytes:
    body = _INDEX_HEAD.pack(INDEX_MAGIC, index.chunk_size, index.size, len(index.entries))
    body += b"".join(_INDEX_ENTRY.pack(n, d) for n, d in index.entries)
    return body + hashlib.sha256(body).digest()


def decode_index(data: bytes, where: str) -> DiskIndex:
    body, check = data[:-32], data[-32:]
    if len(data) < _INDEX_HEAD.size + 32 or hashlib.sha256(body).digest() != check:
        raise RepoError("%s: the disk index is damaged (checksum mismatch)" % where)
    magic, chunk_size, size, count = _INDEX_HEAD.unpack_from(body)
    if magic != INDEX_MAGIC or len(body) != _INDEX_HEAD.size + count * _INDEX_ENTRY.size:
        raise RepoError("%s: not a disk index" % where)
    entries = [_INDEX_ENTRY.unpack_from(body, _INDEX_HEAD.size + i * _INDEX_ENTRY.size) for i in range(count)]
    return DiskIndex(chunk_size, size, entries)


INDEX_HEAD_SIZE = _INDEX_HEAD.size


def index_head_size(head: bytes) -> Optional[int]:
    """The disk size a disk index's first INDEX_HEAD_SIZE bytes say, unchecked (the checksum covers the whole
    index); None where they are no index's header. For a cheap look at many backups' indexes."""
    if len(head) < _INDEX_HEAD.size:
        return None
    magic, _chunk_size, size, _count = _INDEX_HEAD.unpack_from(head)
    return size if magic == INDEX_MAGIC else None


def dumps(data: Dict[str, Any]) -> bytes:
    return (json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def loads(data: bytes, kind: str, where: str) -> Dict[str, Any]:
    """A JSON object of `kind` ("hotvcb-repository", "hotvcb-snapshot", ...), refused if newer, foreign, or of a
    version no hotvcb writes."""
    try:
        out = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise RepoError("%s: damaged (%s)" % (where, err)) from err
    if not isinstance(out, dict) or out.get("format") != kind:
        raise RepoError("%s: not a %s object" % (where, kind))
    version = out.get("version")
    if type(version) is not int or version < 1:  # true is an int to Python, and 0 and -1 were read as version 1
        # no hotvcb wrote it: a damaged or hand-edited object (calling it newer sent the admin looking for one)
        raise RepoError("%s: format version %s, which no hotvcb writes (a whole number from 1; this one reads %d): "
                        "damaged or edited" % (where, "missing" if "version" not in out else json.dumps(version),
                                               VERSION))
    if version > VERSION:
        raise NewerFormat(where, version)
    return out


class NewerFormat(RepoError):
    """An object a newer hotvcb wrote: sound as far as anyone knows, only not readable by this one. Not damage:
    verify says so apart, and nothing deletes what it may use (docs/repository.md "Records that do not read")."""

    def __init__(self, where: str, version: int):
        super().__init__("%s: written by a newer hotvcb (format %d; this one reads %d): upgrade hotvcb to read it"
                         % (where, version, VERSION))
        self.version = version
