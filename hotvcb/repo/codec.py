"""A chunk's stored form: compressed when that pays, checked when read back.

zstd level 1 is used in a repository made with it (`compression: zstd`,
chosen at init when the `zstandard` package is importable there) by a writer
that has the package; elsewhere zlib with the Z_RLE strategy (Huffman coding
plus runs of one byte, no string matching), in an ordinary zlib stream that
every hotvcb reads with zlib.decompress: ~1.6x the speed of zlib level 1 on
text for a ~1/6 larger result (docs/repository.md "Compression" has the
numbers). Data that does not shrink by 1/32 is stored raw: random data then
costs no CPU on restore; with zlib, a chunk whose first 4 KiB do not shrink
is not compressed further, and one whose first 4 KiB do goes on in the same
stream (the probe is not compressed twice).
"""

import hashlib
import threading
import zlib
from typing import Any, Optional, Tuple, Union

from ..errors import RepoError
from .format import RAW, ZLIB, ZSTD

_zstd = None  # type: Any
Data = Union[bytes, bytearray, memoryview]  # a chunk; the writer hands out views of its read buffers


def _zstd_module() -> Optional[Any]:
    global _zstd
    if _zstd is None:
        try:
            import zstandard  # type: ignore  # optional extra
            _zstd = zstandard
        except ImportError:
            _zstd = False
    return _zstd or None


_contexts = threading.local()


def _zstd_contexts(zstd: Any) -> Tuple[Any, Any]:
    """This thread's (compressor, decompressor): making a zstd context cost more than compressing a
    64 KiB chunk with it, and one may not be used by two threads at once."""
    pair = getattr(_contexts, "zstd", None)
    if pair is None:
        pair = _contexts.zstd = (zstd.ZstdCompressor(level=ZSTD_LEVEL), zstd.ZstdDecompressor())
    return pair


PROBE = 4096  # compressing this much first tells random data from the rest at ~1/16 of the cost
ZSTD_LEVEL = 1  # level 3 stores ~7 % less of text-like data at ~0.6x the speed


def _zlib_rle(data: Data, probe: int = 0) -> Optional[bytes]:
    """A standard zlib stream (header, deflate, adler32): only the encoder's strategy differs. With `probe`,
    None if the first `probe` bytes, ended as a deflate block of their own (Z_BLOCK: no bytes added), do not
    shrink by 1/32; else the stream goes on from there: a second compressor and a second compression of the
    probe cost ~5 % of compressing text (bench/compress_cost.py)."""
    z = zlib.compressobj(1, zlib.DEFLATED, 15, 8, zlib.Z_RLE)
    if not probe:
        return z.compress(data) + z.flush()
    head = z.compress(data[:probe]) + z.flush(zlib.Z_BLOCK)
    if len(head) > probe - probe // 32:
        return None
    return head + z.compress(data[probe:]) + z.flush()


def available() -> bool:
    """Can this python write and read zstd chunks?"""
    return _zstd_module() is not None


def encode(raw: Data, use_zstd: bool = False) -> Tuple[int, Data]:
    """(method, stored bytes) for a chunk; stored raw, it is `raw` itself (a view stays a view: no copy)."""
    zstd = _zstd_module() if use_zstd else None
    if zstd is not None:  # zstd gives up on random data by itself, at ~2.5 GB/s: no probe
        method, packed = ZSTD, _zstd_contexts(zstd)[0].compress(raw)
    else:  # random-looking (encrypted, already compressed): compressing the rest would cost for nothing
        method, packed = ZLIB, _zlib_rle(raw, PROBE if len(raw) > 2 * PROBE else 0)
    if packed is None or len(packed) > len(raw) - len(raw) // 32:
        return RAW, raw
    return method, packed


def _inflate(stored: Data, raw_len: int) -> bytes:
    """A zlib stream's content, decoded as the standard stream it is (header and adler32 checked): a chunk
    that zlib.decompress refuses (older hotvcb reads it so) must fail verify and never be copied on by GC,
    even where its content's SHA-256 still matches; the adler32 costs ~4 % of a zlib restore's CPU. The
    output stops one byte past raw_len: 64 KiB stored can inflate to 64 MiB, in each restore worker."""
    z = zlib.decompressobj(zlib.MAX_WBITS)
    raw = z.decompress(stored, raw_len + 1)
    if len(raw) > raw_len:
        raise RepoError("cannot be decompressed (it inflates past its %d bytes)" % raw_len)
    if not z.eof:
        raise RepoError("cannot be decompressed (its zlib stream is cut short)")
    if z.unused_data:
        raise RepoError("cannot be decompressed (bytes follow its zlib stream)")
    return raw


def decode(method: int, stored: Data, raw_len: int, digest: bytes) -> Data:
    """The chunk's bytes (stored raw: `stored` itself); RepoError (caller names the chunk) if they are not
    what `digest` says."""
    try:
        if method == RAW:
            raw = stored
        elif method == ZLIB:
            raw = _inflate(stored, raw_len)
        elif method == ZSTD:
            zstd = _zstd_module()
            if zstd is None:
                raise RepoError("stored with zstd, and the zstandard package is not installed")
            raw = _zstd_contexts(zstd)[1].decompress(stored, max_output_size=raw_len)
        else:
            raise RepoError("unknown compression method %d" % method)
    except RepoError:
        raise
    except Exception as err:  # zlib.error, zstd.ZstdError: the stored bytes are damaged
        raise RepoError("cannot be decompressed (%s)" % err) from err
    if len(raw) != raw_len or hashlib.sha256(raw).digest() != digest:
        raise RepoError("its content does not match its hash")
    return raw
