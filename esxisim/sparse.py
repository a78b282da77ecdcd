"""On-disk sparse extent formats that qemu-img can read, so qemu is an independent witness.

- CowdExtent: ESX "vmfsSparse" redo log ("COWD" magic, 512-byte grains, 4096-entry L2
  tables) as written on VMFS5; layout follows qemu block/vmdk.c vmdk_open_vmfs_sparse.
- SeSparseExtent: "seSparse" (VMFS6 default) const/volatile headers, 4 KiB grains,
  4096-entry grain tables; the field encoding follows qemu vmdk_open_se_sparse.  The
  journal, free bitmap and backmap regions real ESXi keeps are left empty (qemu ignores
  them; ESXi itself would probably refuse such a file).
- HostedSparseExtent: hosted "KDMV" sparse extents used by 2gbsparse (grain 64 KiB,
  512-entry grain tables, redundant grain directory).

Each extent offers lookup(offset, length) -> (bytes or None, run): None means "not
allocated here, ask the parent".
"""
import os
import struct

SECTOR = 512


def _round_up(x, m):
    return (x + m - 1) // m * m


class _TableExtent:
    """Common lookup/write logic for two-level (directory -> table -> grain) formats."""

    entry_fmt = "<I"
    gt_entries = 4096

    def __init__(self, path, writable=False):
        self.path = path
        self.f = open(path, "r+b" if writable else "rb")
        self._gt_cache = {}
        self._load()

    def close(self):
        self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    # subclasses: _load, _gt_offset(l1_index)->bytes offset or None, _grain_offset(entry)->bytes or None
    @property
    def grain_bytes(self):
        return self.grain_sectors * SECTOR

    @property
    def capacity(self):
        return self.sectors * SECTOR

    def _table(self, l1):
        if l1 not in self._gt_cache:
            off = self._gt_offset(l1)
            if off is None:
                self._gt_cache[l1] = None
            else:
                size = struct.calcsize(self.entry_fmt)
                self.f.seek(off)
                raw = self.f.read(self.gt_entries * size)
                raw = raw.ljust(self.gt_entries * size, b"\0")
                self._gt_cache[l1] = list(struct.unpack("<%d%s" % (self.gt_entries, self.entry_fmt[1]), raw))
        return self._gt_cache[l1]

    def lookup(self, offset, length):
        g = self.grain_bytes
        span = g * self.gt_entries
        l1, rest = divmod(offset, span)
        table = self._table(l1)
        if table is None:
            return None, min(length, span - rest)
        gi, inner = divmod(rest, g)
        foff = self._grain_offset(table[gi])
        run = min(length, g - inner)
        if foff is None:
            # coalesce following unallocated grains of the same table
            while run < length and gi + 1 < self.gt_entries and self._grain_offset(table[gi + 1]) is None:
                gi += 1
                run = min(length, run + g)
            return None, run
        start = foff + inner
        # coalesce physically contiguous grains
        while run < length and gi + 1 < self.gt_entries:
            nxt = self._grain_offset(table[gi + 1])
            if nxt is None or nxt != foff + g:
                break
            gi += 1
            foff = nxt
            run = min(length, run + g)
        self.f.seek(start)
        data = self.f.read(run)
        return data.ljust(run, b"\0"), run

    def allocated_runs(self):
        """(offset, length) of every allocated grain, for merging a delta into its parent."""
        g = self.grain_bytes
        span = g * self.gt_entries
        for l1 in range(self.l1_size):
            table = self._table(l1)
            if table is None:
                continue
            for gi, e in enumerate(table):
                if self._grain_offset(e) is not None:
                    off = l1 * span + gi * g
                    if off < self.capacity:
                        yield off, min(g, self.capacity - off)

    def write(self, offset, data, parent_read):
        """Copy-on-write at grain granularity; parent_read fills partial new grains."""
        g = self.grain_bytes
        span = g * self.gt_entries
        pos = 0
        dirty = set()
        while pos < len(data):
            off = offset + pos
            l1, rest = divmod(off, span)
            gi, inner = divmod(rest, g)
            n = min(len(data) - pos, g - inner)
            table = self._table(l1)
            if table is None:
                table = self._alloc_table(l1)
            foff = self._grain_offset(table[gi])
            chunk = data[pos:pos + n]
            if foff is None:
                base = off - inner
                if n == g:
                    grain = chunk
                else:
                    old = bytearray(parent_read(base, g))
                    old[inner:inner + n] = chunk
                    grain = bytes(old)
                foff, entry = self._alloc_grain()
                self.f.seek(foff)
                self.f.write(grain)
                table[gi] = entry
                dirty.add(l1)
            else:
                self.f.seek(foff + inner)
                self.f.write(chunk)
            pos += n
        for l1 in dirty:
            self._write_table(l1)
        self.f.flush()


class CowdExtent(_TableExtent):
    """vmfsSparse redo log. Header: magic + 10 little-endian uint32 (qemu VMDK3Header)."""

    MAGIC = b"COWD"
    HDR = struct.Struct("<IIIIIIIIII")
    grain_sectors = 1
    gt_entries = 4096

    @classmethod
    def create(cls, path, sectors):
        l1_size = (sectors + cls.gt_entries * cls.grain_sectors - 1) // (cls.gt_entries * cls.grain_sectors)
        l1_off = 4  # 2 KiB header area, as VMware's redo logs have
        data_start = _round_up(l1_off * SECTOR + l1_size * 4, SECTOR) // SECTOR
        with open(path, "wb") as f:
            f.write(cls.MAGIC + cls.HDR.pack(1, 3, sectors, cls.grain_sectors, l1_off, l1_size,
                                             data_start, 0, 0, 0))
            f.truncate(data_start * SECTOR)

    def _load(self):
        raw = self.f.read(4 + self.HDR.size)
        if raw[:4] != self.MAGIC:
            raise ValueError("%s: not a vmfsSparse (COWD) extent" % self.path)
        (_v, _fl, self.sectors, self.grain_sectors, self.l1_off, self.l1_size, *_r) = self.HDR.unpack(raw[4:])
        self.f.seek(self.l1_off * SECTOR)
        self.l1 = list(struct.unpack("<%dI" % self.l1_size, self.f.read(self.l1_size * 4)))

    def _gt_offset(self, l1):
        return self.l1[l1] * SECTOR if l1 < self.l1_size and self.l1[l1] else None

    def _grain_offset(self, entry):
        return entry * SECTOR if entry else None

    def _end(self):
        self.f.seek(0, 2)
        return _round_up(self.f.tell(), SECTOR)

    def _alloc_table(self, l1):
        end = self._end()
        self.f.seek(end)
        self.f.write(b"\0" * self.gt_entries * 4)
        self.l1[l1] = end // SECTOR
        self.f.seek(self.l1_off * SECTOR + l1 * 4)
        self.f.write(struct.pack("<I", self.l1[l1]))
        self._gt_cache[l1] = [0] * self.gt_entries
        return self._gt_cache[l1]

    def _alloc_grain(self):
        end = self._end()
        return end, end // SECTOR

    def _write_table(self, l1):
        self.f.seek(self.l1[l1] * SECTOR)
        self.f.write(struct.pack("<%dI" % self.gt_entries, *self._gt_cache[l1]))
        self.f.seek(4 + 4 * 6)
        self.f.write(struct.pack("<I", self._end() // SECTOR))


class SeSparseExtent(_TableExtent):
    """seSparse delta (VMFS6). 64-bit entries; see module docstring for what is left out."""

    CONST_MAGIC = 0xCAFEBABE
    VOL_MAGIC = 0xCAFECAFE
    VERSION = 0x0000000200000001
    grain_sectors = 8
    gt_sectors = 64
    gt_entries = 4096
    entry_fmt = "<Q"
    CONST = struct.Struct("<26Q")

    @classmethod
    def create(cls, path, sectors):
        n_gt = max(1, (sectors + cls.gt_entries * cls.grain_sectors - 1) // (cls.gt_entries * cls.grain_sectors))
        gd_off = 8
        gd_size = max(1, _round_up(n_gt * 8, SECTOR) // SECTOR)
        gt_off = _round_up(gd_off + gd_size, 8)
        gt_size = n_gt * cls.gt_sectors
        grains_off = _round_up(gt_off + gt_size, 8)
        hdr = cls.CONST.pack(cls.CONST_MAGIC, cls.VERSION, sectors, cls.grain_sectors, cls.gt_sectors, 0,
                             0, 0, 0, 0,
                             1, 1,          # volatile header
                             2, 1, 3, 5,    # journal header / journal (left empty)
                             gd_off, gd_size, gt_off, gt_size,
                             0, 0, 0, 0,    # free bitmap, backmap: not kept
                             grains_off, sectors)
        vol = struct.pack("<4Q", cls.VOL_MAGIC, 0, 0, 0)
        with open(path, "wb") as f:
            f.write(hdr.ljust(SECTOR, b"\0"))
            f.write(vol.ljust(SECTOR, b"\0"))
            f.truncate(grains_off * SECTOR)

    def _load(self):
        h = self.CONST.unpack(self.f.read(self.CONST.size))
        if h[0] != self.CONST_MAGIC:
            raise ValueError("%s: not an seSparse extent" % self.path)
        self.sectors = h[2]
        self.gd_off, self.gd_size, self.gt_off, self.gt_size = h[16], h[17], h[18], h[19]
        self.grains_off = h[24]
        self.l1_size = max(1, (self.sectors + self.gt_entries * self.grain_sectors - 1)
                           // (self.gt_entries * self.grain_sectors))
        self.f.seek(self.gd_off * SECTOR)
        self.l1 = list(struct.unpack("<%dQ" % self.l1_size, self.f.read(self.l1_size * 8)))

    def _gt_offset(self, l1):
        e = self.l1[l1] if l1 < self.l1_size else 0
        if not e:
            return None
        return (self.gt_off + (e & 0xFFFFFFFF) * self.gt_sectors) * SECTOR

    def _grain_offset(self, e):
        if (e >> 60) != 3:
            return None
        idx = ((e & 0x0FFF000000000000) >> 48) | ((e & 0x0000FFFFFFFFFFFF) << 12)
        return (self.grains_off + idx * self.grain_sectors) * SECTOR

    def _alloc_table(self, l1):
        used = sum(1 for e in self.l1 if e)
        self.l1[l1] = 0x1000000000000000 | used
        self.f.seek(self.gd_off * SECTOR + l1 * 8)
        self.f.write(struct.pack("<Q", self.l1[l1]))
        self.f.seek(SECTOR + 8)
        self.f.write(struct.pack("<Q", used + 1))  # volatile header: free_gt_number
        self._gt_cache[l1] = [0] * self.gt_entries
        return self._gt_cache[l1]

    def _alloc_grain(self):
        self.f.seek(0, 2)
        end = max(self.f.tell(), self.grains_off * SECTOR)
        idx = (end - self.grains_off * SECTOR + self.grain_bytes - 1) // self.grain_bytes
        entry = 0x3000000000000000 | ((idx & 0xFFF) << 48) | (idx >> 12)
        return (self.grains_off * SECTOR) + idx * self.grain_bytes, entry

    def _write_table(self, l1):
        self.f.seek(self._gt_offset(l1))
        self.f.write(struct.pack("<%dQ" % self.gt_entries, *self._gt_cache[l1]))


class HostedSparseExtent(_TableExtent):
    """Hosted sparse ("KDMV") extent, read side; write_hosted_sparse() creates them."""

    MAGIC = b"KDMV"
    HDR = struct.Struct("<IIQQQQIQQQB4sH")
    gt_entries = 512

    def _load(self):
        raw = self.f.read(4 + self.HDR.size)
        if raw[:4] != self.MAGIC:
            raise ValueError("%s: not a hosted sparse extent" % self.path)
        (_v, self.flags, self.sectors, self.grain_sectors, _do, _ds, self.gt_entries,
         _rgd, self.gd_off, _ov, _u, _c, _comp) = self.HDR.unpack(raw[4:])
        self.l1_size = (self.sectors + self.gt_entries * self.grain_sectors - 1) // (self.gt_entries * self.grain_sectors)
        self.f.seek(self.gd_off * SECTOR)
        self.l1 = list(struct.unpack("<%dI" % self.l1_size, self.f.read(self.l1_size * 4)))

    def _gt_offset(self, l1):
        return self.l1[l1] * SECTOR if l1 < self.l1_size and self.l1[l1] else None

    def _grain_offset(self, e):
        if e == 0 or (e == 1 and self.flags & 4):
            return None
        return e * SECTOR


def write_hosted_sparse(path, sectors, read, grain_sectors=128, progress=None):
    """Write one hosted sparse extent of `sectors` whose content comes from read(off, n).

    All-zero grains stay unallocated, as VMware's disklib does for sparse clones.
    """
    gt_entries = 512
    n_gt = (sectors + gt_entries * grain_sectors - 1) // (gt_entries * grain_sectors)
    gd_sectors = max(1, _round_up(n_gt * 4, SECTOR) // SECTOR)
    gt_sectors = n_gt * gt_entries * 4 // SECTOR
    rgd_off = 1
    rgt_off = rgd_off + gd_sectors
    gd_off = rgt_off + gt_sectors
    gt_off = gd_off + gd_sectors
    overhead = _round_up(gt_off + gt_sectors, grain_sectors)
    gbytes = grain_sectors * SECTOR
    tables = [0] * (n_gt * gt_entries)
    with open(path, "wb") as f:
        f.truncate(overhead * SECTOR)
        f.seek(overhead * SECTOR)
        nxt = overhead
        total = sectors * SECTOR
        for gi in range(n_gt * gt_entries):
            off = gi * gbytes
            if off >= total:
                break
            n = min(gbytes, total - off)
            data = read(off, n)
            if progress:
                progress(n)
            if data == bytes(len(data)):
                continue
            f.write(data.ljust(gbytes, b"\0"))
            tables[gi] = nxt
            nxt += grain_sectors
        gd = [gt_off + i * (gt_entries * 4 // SECTOR) for i in range(n_gt)]
        rgd = [rgt_off + i * (gt_entries * 4 // SECTOR) for i in range(n_gt)]
        tbl = struct.pack("<%dI" % len(tables), *tables)
        f.seek(rgd_off * SECTOR)
        f.write(struct.pack("<%dI" % n_gt, *rgd))
        f.seek(rgt_off * SECTOR)
        f.write(tbl)
        f.seek(gd_off * SECTOR)
        f.write(struct.pack("<%dI" % n_gt, *gd))
        f.seek(gt_off * SECTOR)
        f.write(tbl)
        hdr = HostedSparseExtent.HDR.pack(1, 3, sectors, grain_sectors, 0, 0, gt_entries,
                                          rgd_off, gd_off, overhead, 0, b"\n \r\n", 0)
        f.seek(0)
        f.write(b"KDMV" + hdr)
    return os.path.getsize(path)


def open_extent(path, writable=False):
    with open(path, "rb") as f:
        magic = f.read(8)
    if magic[:4] == b"COWD":
        return CowdExtent(path, writable)
    if magic[:4] == b"KDMV":
        return HostedSparseExtent(path, writable)
    if struct.unpack("<Q", magic.ljust(8, b"\0"))[0] == SeSparseExtent.CONST_MAGIC:
        return SeSparseExtent(path, writable)
    raise ValueError("%s: unknown sparse extent" % path)
