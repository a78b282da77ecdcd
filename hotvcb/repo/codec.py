"""A chunk's stored form: compressed when that pays, checked when read back.

zstd is used in a repository made with it (`compression: zstd`, chosen at
init when the `zstandard` package is importable there) by a writer that has
the package; zlib level 1 otherwise, which every hotvcb reads. Data that does not shrink by 1/32 is stored raw:
random data then costs no CPU on restore; a chunk whose first 4 KiB do not
shrink is not compressed at all (it costs ~1/10 of zlib's speed to find out
the long way).
"""

import hashlib
import zlib
from typing import Any, Optional, Tuple

from ..errors import RepoError
from .format import RAW, ZLIB, ZSTD

_zstd = None  # type: Any


def _zstd_module() -> Optional[Any]:
    global _zstd
    if _zstd is None:
        try:
            import zstandard  # type: ignore  # optional extra
            _zstd = zstandard
        except ImportError:
            _zstd = False
    return _zstd or None


PROBE = 4096  # compressing this much first tells random data from the rest at ~1/16 of the cost


def available() -> bool:
    """Can this python write and read zstd chunks?"""
    return _zstd_module() is not None


def encode(raw: bytes, use_zstd: bool = False) -> Tuple[int, bytes]:
    """(method, stored bytes) for a chunk."""
    if len(raw) > 2 * PROBE and len(zlib.compress(raw[:PROBE], 1)) > PROBE - PROBE // 32:
        return RAW, bytes(raw)  # random-looking (encrypted, already compressed): zlib would run at ~1/10 speed for nothing
    zstd = _zstd_module() if use_zstd else None
    if zstd is not None:
        method, packed = ZSTD, zstd.ZstdCompressor(level=3).compress(raw)
    else:
        method, packed = ZLIB, zlib.compress(raw, 1)
    if len(packed) > len(raw) - len(raw) // 32:
        return RAW, bytes(raw)
    return method, packed


def decode(method: int, stored: bytes, raw_len: int, digest: bytes) -> bytes:
    """The chunk's bytes; RepoError (caller names the chunk) if they are not what `digest` says."""
    try:
        if method == RAW:
            raw = stored
        elif method == ZLIB:
            raw = zlib.decompress(stored)
        elif method == ZSTD:
            zstd = _zstd_module()
            if zstd is None:
                raise RepoError("stored with zstd, and the zstandard package is not installed")
            raw = zstd.ZstdDecompressor().decompress(stored, max_output_size=raw_len)
        else:
            raise RepoError("unknown compression method %d" % method)
    except RepoError:
        raise
    except Exception as err:  # zlib.error, zstd.ZstdError: the stored bytes are damaged
        raise RepoError("cannot be decompressed (%s)" % err) from err
    if len(raw) != raw_len or hashlib.sha256(raw).digest() != digest:
        raise RepoError("its content does not match its hash")
    return raw
