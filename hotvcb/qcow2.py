"""The virtual disk a qcow2 image holds, read with the standard library.

A QEMU backup written as qcow2 is `qemu-img convert`'s own file, so no source
file holds its bytes; the manifest records the disk's *content* instead (the
virtual disk, store/manifest.py "content entries"), digested from the source
while qemu-img copies it. Verify and restore's check then need the content of
the qcow2 back without qemu (ESXi has none, and the backup host need not):
this reader yields it in the blocks blockdigest.py hashes.

What it reads is what `qemu-img convert -O qcow2` writes (QEMU 7.2: version 3,
zlib, 16-bit refcounts, 64 KiB clusters, no backing file) and the images users
make with `qemu-img create`: header version 2 or 3, any cluster size QEMU
allows, standard L2 entries of uncompressed clusters; an unallocated cluster
and a cluster with the zero flag (L2 bit 0, version 3) read as zeros. Internal
snapshots are ignored (the active L1 table is the disk). Refcounts are never
read: they say which clusters are in use, not what the disk holds, so an image
left dirty (lazy refcounts) reads fine.

Everything else is refused with one ImageError line rather than read wrong:
a backing file (the content is partly elsewhere), encryption, an external data
file, extended L2 entries, compressed clusters, unknown incompatible features,
an image marked corrupt, and damage: sizes beyond what QEMU writes, tables or
clusters not cluster-aligned, outside the file or with reserved bits set.
Nothing can loop: the lookup is one fixed level (L1 -> L2 -> cluster); and an
image that maps more tables and clusters than its file holds (some used twice)
is refused as it is met, so a damaged small file is never read a terabyte long.
"""

import os
import struct
from typing import BinaryIO, Iterator, Optional, Tuple

from . import blockdigest
from .errors import HostError

MAGIC = b"QFI\xfb"
HEADER_V2 = 72  # bytes of a version-2 header; version 3 says its own length
MAX_L1_BYTES = 32 << 20  # QEMU's QCOW_MAX_L1_SIZE
MAX_VIRTUAL_SIZE = 1 << 61  # the most QEMU's largest L1 table can map: 4 Mi entries x 512 GiB (2 MiB clusters)
MIN_CLUSTER_BITS, MAX_CLUSTER_BITS = 9, 21  # 512 B to 2 MiB, as QEMU allows

_INCOMPATIBLE = {  # bit -> (readable, name)
    0: (True, "dirty"),  # refcounts may be stale: not read here
    1: (False, "marked corrupt by QEMU"),
    2: (False, "an external data file"),
    3: (True, "compression type"),  # matters for compressed clusters only, which are refused anyway
    4: (False, "extended L2 entries"),
}
_L1_RESERVED = 0x7F000000000001FF  # bits 0-8 and 56-62 of an L1 entry
_OFFSET = 0x00FFFFFFFFFFFE00  # bits 9-55: a host offset
_COMPRESSED = 1 << 62
_ZERO = 1
_L2_RESERVED = 0x3F000000000001FE  # bits 1-8 and 56-61 of a standard L2 entry


class ImageError(HostError):
    """A qcow2 this reader refuses (unsupported, or damaged): one line naming the file and why."""


class Image(object):
    """An open qcow2 file's header and L1 table; `blocks()` reads its virtual disk."""

    def __init__(self, f: BinaryIO, name: str):
        self.f, self.name = f, name
        self.file_size = blockdigest.file_size(f.fileno())  # a qcow2 on an LV: the device's size, not 0
        head = self._read(0, 512)
        self.version, self.cluster_bits, self.size, l1_entries, l1_offset = header_fields(head, name)
        self.cluster = 1 << self.cluster_bits
        self.l2_entries = self.cluster // 8
        span = self.cluster * self.l2_entries  # virtual bytes one L2 table maps
        if l1_entries < (self.size + span - 1) // span:
            raise self._bad("its L1 table (%d entries) is too small for %d bytes" % (l1_entries, self.size))
        self._aligned(l1_offset, "L1 table")
        raw = self._read(l1_offset, l1_entries * 8)
        if len(raw) != l1_entries * 8:
            raise self._bad("its L1 table ends beyond the end of the file")
        self.l1 = struct.unpack(">%dQ" % l1_entries, raw)
        self._l2_index, self._l2 = -1, ()  # type: int, Tuple[int, ...]
        self._used, self._last = 0, -1  # L2 tables and data clusters met so far, the last cluster (_count)

    def _bad(self, why: str) -> ImageError:
        return ImageError("%s: cannot read this qcow2: %s" % (self.name, why))

    def _read(self, offset: int, n: int) -> bytes:
        self.f.seek(offset)
        return self.f.read(n) or b""

    def _aligned(self, offset: int, what: str) -> None:
        if offset % self.cluster or offset < self.cluster or offset >= self.file_size:
            raise self._bad("its %s is at offset %d (not a cluster of the file)" % (what, offset))

    def _table(self, index: int) -> Tuple[int, ...]:
        """The L2 table of L1 entry `index` (() where none is allocated), the last one kept."""
        if index != self._l2_index:
            entry = self.l1[index]
            if entry & _L1_RESERVED:
                raise self._bad("L1 entry %d has reserved bits set (%#x)" % (index, entry))
            offset = entry & _OFFSET
            if offset:
                self._aligned(offset, "L2 table %d" % index)
                raw = self._read(offset, self.cluster)
                if len(raw) != self.cluster:
                    raise self._bad("L2 table %d ends beyond the end of the file" % index)
                self._l2 = struct.unpack(">%dQ" % self.l2_entries, raw)
                self._count()
            else:
                self._l2 = ()
            self._l2_index = index
        return self._l2

    def host_offset(self, cluster: int) -> Optional[int]:
        """Where virtual cluster `cluster` is in the file; None where it reads as zeros."""
        table = self._table(cluster // self.l2_entries)
        if not table:
            return None
        entry = table[cluster % self.l2_entries]
        if entry & _COMPRESSED:
            raise self._bad("cluster %d is compressed (not supported)" % cluster)
        if entry & _L2_RESERVED or (entry & _ZERO and self.version < 3):
            raise self._bad("the L2 entry of cluster %d has reserved bits set (%#x)" % (cluster, entry))
        offset = entry & _OFFSET
        if entry & _ZERO or not offset:
            return None
        self._aligned(offset, "cluster %d" % cluster)
        if cluster != self._last:  # a cluster larger than a block is looked up once per block
            self._last = cluster
            self._count()
        return offset

    def _count(self) -> None:
        """One more L2 table or data cluster met. The disk is read in order, so each virtual cluster and
        each L2 table is met once, and a sound image gives each its own cluster of the file after the header:
        more of them than the file has clusters means tables or clusters used twice (damage), and a
        terabyte mapped onto one cluster is refused here rather than read a terabyte long."""
        self._used += 1
        if self._used * self.cluster > self.file_size:
            raise self._bad("it maps more clusters than its %d bytes hold (tables or clusters used twice)"
                            % self.file_size)

    def blocks(self, block_size: int, check=None, ring: int = 1) -> Iterator[Tuple[int, int, Optional[bytearray]]]:
        """(offset, length, data) over the virtual disk, as blockdigest.read_blocks gives a file's:
        `data` None for a run of whole zero blocks (never read), else the block, in one of `ring`
        buffers used in turn (valid while the next ring-1 are read)."""
        bufs = [bytearray(block_size) for _ in range(max(1, ring))]
        self._used, self._last, self._l2_index = 0, -1, -1  # each read of the disk counts anew (_count)
        turn = 0
        zeros = bytes(min(block_size, self.cluster))
        span = self.cluster * self.l2_entries
        off, run = 0, 0  # a run of zero blocks not yet yielded starts at off - run
        while off < self.size:
            if check is not None:
                check()
            skip = self._unmapped(off, span, block_size)
            if skip:  # a whole L2 table's span with none: a terabyte disk's empty half is no loop
                run += skip
                off += skip
                continue
            n = min(block_size, self.size - off)
            pieces = self._pieces(off, n)
            if all(host is None for _, host, _ in pieces):
                run += n
                off += n
                continue
            if run:
                yield off - run, run, None
                run = 0
            turn = (turn + 1) % len(bufs)
            view = memoryview(bufs[turn])
            for at, host, length in pieces:
                part = view[at - off : at - off + length]
                if host is None:
                    for i in range(0, length, len(zeros)):
                        part[i : i + len(zeros)] = zeros[: length - i]
                else:
                    self._fill(part, host)
            yield off, n, bufs[turn] if n == block_size else bytearray(view[:n])
            off += n
        if run:
            yield off - run, run, None

    def _unmapped(self, off: int, span: int, block_size: int) -> int:
        """Whole blocks from `off` (a block boundary) inside L2 spans without a table, or 0. Spans
        in a row are taken together: with clusters of 2 KiB or less one span is less than a block."""
        index = last = off // span
        while last < len(self.l1) and not self.l1[last] & (_OFFSET | _L1_RESERVED):
            last += 1
        if last == index:
            return 0
        end = min(last * span, self.size)
        return end - off if end == self.size else (end - off) // block_size * block_size

    def _pieces(self, off: int, n: int):
        """[(virtual offset, host offset or None, length)] covering [off, off+n), runs merged."""
        out = []  # type: list
        end = off + n
        at = off
        while at < end:
            cluster, within = divmod(at, self.cluster)
            host = self.host_offset(cluster)
            length = min(self.cluster - within, end - at)
            if host is not None:
                host += within
            if out:
                v, h, l = out[-1]
                if (h is None and host is None) or (h is not None and host is not None and h + l == host):
                    out[-1] = (v, h, l + length)
                    at += length
                    continue
            out.append((at, host, length))
            at += length
        return out

    def _fill(self, part: memoryview, host: int) -> None:
        """Read len(part) bytes at `host`; what lies past the end of the file reads as zeros (as QEMU
        reads it: a cluster at the end need not be written whole)."""
        self.f.seek(host)
        got = 0
        while got < len(part):
            k = self.f.readinto(part[got:])  # type: ignore[attr-defined]
            if not k:
                break
            got += k
        part[got:] = bytes(len(part) - got)


def is_image(path: str) -> bool:
    """Whether the file on this machine at `path` starts as a qcow2 image does (False where it cannot be read:
    its reader says why). Non-blocking, so a FIFO planted under a disk's name never holds the run."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return False
    try:
        return os.read(fd, len(MAGIC)) == MAGIC
    except OSError:
        return False
    finally:
        os.close(fd)


def header_fields(head: bytes, name: str) -> Tuple[int, int, int, int, int]:
    """(version, cluster bits, virtual size, L1 entries, L1 offset) of a qcow2 header, or ImageError."""

    def bad(why: str) -> ImageError:
        return ImageError("%s: cannot read this qcow2: %s" % (name, why))

    if len(head) < HEADER_V2 or head[:4] != MAGIC:
        raise bad("it is not a qcow2 image (no qcow2 header)")
    (version, backing_offset, _backing_len, cluster_bits, size, crypt, l1_entries, l1_offset,
     ) = struct.unpack(">IQIIQIIQ", head[4:48])
    if version not in (2, 3):
        raise bad("qcow2 version %d is not supported" % version)
    if version == 3:
        if len(head) < 104:
            raise bad("its version-3 header is cut short")
        incompatible = struct.unpack(">Q", head[72:80])[0]
        for bit in range(64):
            if incompatible >> bit & 1:
                readable, what = _INCOMPATIBLE.get(bit, (False, "unknown incompatible feature bit %d" % bit))
                if not readable:
                    raise bad("it has %s (not supported)" % what)
    if backing_offset:
        raise bad("it has a backing file (its content is partly in another image)")
    if crypt:
        raise bad("it is encrypted")
    if not MIN_CLUSTER_BITS <= cluster_bits <= MAX_CLUSTER_BITS:
        raise bad("cluster bits %d are outside what QEMU allows" % cluster_bits)
    if size > MAX_VIRTUAL_SIZE:
        raise bad("a virtual size of %d bytes is beyond what QEMU writes" % size)
    if l1_entries * 8 > MAX_L1_BYTES:
        raise bad("an L1 table of %d entries is beyond what QEMU writes" % l1_entries)
    return version, cluster_bits, size, l1_entries, l1_offset


def virtual_size(head: bytes, name: str) -> int:
    """The virtual size a qcow2 header states (its first 512 bytes are enough), or ImageError."""
    return header_fields(head, name)[2]
