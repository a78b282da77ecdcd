"""VMDK descriptors and disk chains: create, read, write, clone, merge, delete.

Descriptor text follows what ESXi writes (samples vmdk_01..04): base disks are
createType="vmfs" + a -flat.vmdk, snapshot deltas vmfsSparse (VMFS5/NFS) or seSparse
(VMFS6), 2gbsparse is twoGbMaxExtentSparse with -s00N.vmdk hosted sparse extents.
"""
import errno
import os
import struct

from . import sparse

SECTOR = 512
CHUNK = 1 << 20
EXTENT_2GB_SECTORS = 4192256  # what VMware's disklib uses for 2gbsparse extents (sample vmdk_04)


def _extent(s):
    r"""(access, sectors, type, file, offset or None) of a stripped extent line, else None; as
    ^(RW|RDONLY|NOACCESS)\s+(\d+)\s+(\w+)\s+"(.*)"(?:\s+(\d+))?\s*$ reads it, with str methods
    (a vmkfstools call need not import re for one pattern): str.split(), isspace(), isdecimal()
    and isalnum() are re's \s, \d and \w (with "_"); the file name runs to the line's last
    quote, as `(.*)"` backtracks to it."""
    parts = s.split(None, 3)
    if len(parts) < 4:
        return None
    acc, sectors, typ, rest = parts
    if acc not in ("RW", "RDONLY", "NOACCESS") or not sectors.isdecimal():
        return None
    if not all(c.isalnum() or c == "_" for c in typ):
        return None
    end = rest.rfind('"')
    if not rest.startswith('"') or end < 1:
        return None
    tail = rest[end + 1:]
    if not tail:
        return acc, int(sectors), typ, rest[1:end], None
    if not tail[0].isspace() or not tail.strip().isdecimal():
        return None
    return acc, int(sectors), typ, rest[1:end], int(tail.strip())


class Descriptor:
    def __init__(self):
        self.header = []        # [(key, raw value)] in file order
        self.extents = []       # [(access, sectors, type, file, offset)]
        self.ddb = []           # [(key, value)]

    def get(self, key, default=None):
        for k, v in self.header:
            if k == key:
                return v.strip('"')
        return default

    def set(self, key, value):
        for i, (k, _v) in enumerate(self.header):
            if k == key:
                self.header[i] = (k, value)
                return
        self.header.append((key, value))

    def ddb_get(self, key, default=None):
        return dict(self.ddb).get(key, default)

    @property
    def create_type(self):
        return self.get("createType", "")

    @property
    def sectors(self):
        return sum(e[1] for e in self.extents)

    @classmethod
    def parse(cls, text):
        d = cls()
        for line in text.split("\n"):  # a line feed ends a line, as ESXi reads .vmx and descriptor files
            s = line.strip()
            if not s or s.startswith("#"):
                continue
            ext = _extent(s)
            if ext:
                d.extents.append(ext)
            elif s.startswith("ddb."):
                k, _, v = s.partition("=")
                d.ddb.append((k.strip(), v.strip().strip('"')))
            elif "=" in s:
                k, _, v = s.partition("=")
                d.header.append((k.strip(), v.strip()))
        return d

    def render(self, blank_before_extents=True):
        out = ["# Disk DescriptorFile"]
        out += ["%s=%s" % kv for kv in self.header]
        if blank_before_extents:
            out.append("")
        out.append("# Extent description")
        for acc, sec, typ, fn, off in self.extents:
            out.append('%s %d %s "%s"%s' % (acc, sec, typ, fn, " %d" % off if off is not None else ""))
        out += ["", "# The Disk Data Base", "#DDB", ""]
        out += ['%s = "%s"' % kv for kv in self.ddb]
        return "\n".join(out) + "\n"


def read_descriptor(path):
    """The descriptor of the disk at path: its text, or a hosted sparse disk's embedded one
    (monolithicSparse, `_embedded`); a sparse extent without one is no disk of its own."""
    with open(path, "rb") as f:
        head = f.read(4)
        if head == b"KDMV":
            return _embedded(path, f)
        if head == b"COWD":
            raise ValueError("%s is a sparse extent, not a descriptor" % path)
        f.seek(0)
        return Descriptor.parse(f.read(65536).decode("utf-8", "replace"))


def _embedded(path, f):
    """A monolithicSparse disk's descriptor, embedded where its header's descriptorOffset and
    descriptorSize (sectors, at bytes 28 and 36) put it; an extent of a 2gbsparse disk has none.
    The disk is the file itself, of the header's capacity, whatever file its embedded extent line
    names (guess: VMware's spec places the descriptor in the extent, no sample shows a renamed one)."""
    f.seek(12)
    capacity, _grain, offset, size = struct.unpack("<QQQQ", f.read(32))
    if not offset:
        raise ValueError("%s is a sparse extent, not a descriptor" % path)
    f.seek(offset * SECTOR)
    d = Descriptor.parse(f.read(size * SECTOR).split(b"\0", 1)[0].decode("utf-8", "replace"))
    d.extents = [("RW", capacity, "SPARSE", os.path.basename(path), None)]
    return d


def write_descriptor(path, desc, blank_before_extents=True):
    with open(path, "w", encoding="utf-8") as f:
        f.write(desc.render(blank_before_extents))


class _Urandom:
    """The rng the tools use: random's getrandbits, from os.urandom. `import random` (math, bisect,
    operator, a SHA-512) was about a millisecond of each snapshot.create and vmkfstools -i call, thousands
    per test run; Host.create_vm passes a seeded random.Random where the same disks must come again."""

    @staticmethod
    def getrandbits(k):
        return int.from_bytes(os.urandom((k + 7) // 8), "big") >> (-k % 8)


URANDOM = _Urandom()


def new_cid(rng=URANDOM):
    return "%08x" % rng.getrandbits(32)


def _long_content_id(cid, rng=URANDOM):
    return "%024x%s" % (rng.getrandbits(96), cid)


def _ddb_uuid(rng=URANDOM):
    b = [rng.getrandbits(8) for _ in range(14)]
    h = ["%02x" % x for x in b]
    return "60 00 C2 9%x %s %s %s %s %s %s-%s %s %s %s %s %s %s %s" % (
        rng.getrandbits(4), *h[:6], *h[6:14])


def geometry(sectors, adapter):
    if adapter == "ide":
        heads, spt = 16, 63
    else:
        heads, spt = 255, 63
    return max(1, sectors // (heads * spt)), heads, spt


def _delta_stem(name):
    """The name without ".vmdk" and a delta's "-NNNNNN"; as re.sub(r"-\\d{6}$", "", stem) cut it
    (`$` also before a final line feed), without importing re."""
    stem = name[:-5] if name.lower().endswith(".vmdk") else name
    core, nl = (stem[:-1], "\n") if stem.endswith("\n") else (stem, "")
    if len(core) >= 7 and core[-7] == "-" and core[-6:].isdecimal():
        return core[:-7] + nl
    return stem


def base_descriptor(flat_name, sectors, adapter, thin, hw_version, rng=URANDOM):
    d = Descriptor()
    cid = new_cid(rng)
    d.header = [("version", "1"), ("encoding", '"UTF-8"'), ("CID", cid), ("parentCID", "ffffffff"),
                ("isNativeSnapshot", '"no"'), ("createType", '"vmfs"')]
    d.extents = [("RW", sectors, "VMFS", flat_name, None)]
    c, h, s = geometry(sectors, adapter)
    d.ddb = [("ddb.adapterType", adapter), ("ddb.geometry.cylinders", str(c)),
             ("ddb.geometry.heads", str(h)), ("ddb.geometry.sectors", str(s)),
             ("ddb.longContentID", _long_content_id(cid, rng))]
    if thin:
        d.ddb.append(("ddb.thinProvisioned", "1"))
    d.ddb += [("ddb.toolsInstallType", "4"), ("ddb.toolsVersion", "12352"),
              ("ddb.uuid", _ddb_uuid(rng)), ("ddb.virtualHWVersion", str(hw_version))]
    return d


# ---------------------------------------------------------------- reading chains

class _FlatLayer:
    def __init__(self, path, sectors, offset=0):
        self.path, self.size, self.offset = path, sectors * SECTOR, (offset or 0) * SECTOR
        self.f = None

    def lookup(self, off, n):
        if self.f is None:
            self.f = os.open(self.path, os.O_RDONLY)
        pos = self.offset + off
        try:  # a hole reads as zeros without touching the page cache
            if os.lseek(self.f, pos, os.SEEK_DATA) >= pos + n:
                return bytes(n), n
        except OSError as e:
            if e.errno == errno.ENXIO and pos < os.fstat(self.f).st_size:
                return bytes(n), n  # nothing but hole from pos to the end
            # beyond EOF or SEEK_DATA unsupported: read (short reads are padded)
        data = os.pread(self.f, n, pos)
        return data.ljust(n, b"\0"), n

    def close(self):
        if self.f is not None:
            os.close(self.f)
            self.f = None


class _Layer:
    """One link of a chain: a descriptor and its extents laid end to end."""

    def __init__(self, path, writable=False):
        self.path = path
        self.desc = read_descriptor(path)
        folder = os.path.dirname(path)
        self.parts = []  # (start, end, extent obj)
        pos = 0
        for _acc, sectors, typ, fn, off in self.desc.extents:
            p = fn if os.path.isabs(fn) else os.path.join(folder, fn)
            if typ in ("VMFS", "FLAT"):
                ext = _FlatLayer(p, sectors, off)
            elif typ in ("VMFSSPARSE", "SESPARSE", "SPARSE"):
                ext = sparse.open_extent(p, writable)
            elif typ in ("VMFSRDM", "VMFSRAW"):
                ext = _FlatLayer(p, sectors, off)
            else:
                raise ValueError("unsupported extent type %s" % typ)
            self.parts.append((pos, pos + sectors * SECTOR, ext))
            pos += sectors * SECTOR
        self.size = pos
        self.parent = None
        hint = self.desc.get("parentFileNameHint")
        if hint:
            self.parent = hint if os.path.isabs(hint) else os.path.join(folder, hint)

    def lookup(self, off, n):
        for start, end, ext in self.parts:
            if start <= off < end:
                return ext.lookup(off - start, min(n, end - off))
        return b"\0" * n, n

    def close(self):
        for _s, _e, ext in self.parts:
            ext.close()


class Disk:
    """A disk chain, top (the file given) first. Reads flatten the chain."""

    def __init__(self, path, writable=False, resolve=None):
        self.layers = []
        p = path
        seen = set()
        while p:
            if p in seen:
                raise ValueError("descriptor chain loops at %s" % p)
            seen.add(p)
            real = resolve(p) if resolve else p
            layer = _Layer(real, writable and not self.layers)
            self.layers.append(layer)
            p = layer.parent
        self.size = self.layers[0].size

    def close(self):
        for layer in self.layers:
            layer.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def _read(self, level, off, n):
        if level >= len(self.layers):
            return b"\0" * n
        out = []
        end = off + n
        while off < end:
            data, run = self.layers[level].lookup(off, end - off)
            if data is None:
                data = self._read(level + 1, off, run)
            out.append(data)
            off += run
        return b"".join(out)

    def read(self, off, n):
        n = max(0, min(n, self.size - off))
        return self._read(0, off, n)

    def write(self, off, data):
        top = self.layers[0]
        for start, end, ext in top.parts:
            if start <= off < end:
                if isinstance(ext, _FlatLayer):
                    with open(ext.path, "r+b") as f:
                        f.seek(ext.offset + off - start)
                        f.write(data)
                else:
                    ext.write(off - start, data, lambda o, n: self._read(1, o + start, n))
                return


def read_all(path, resolve=None):
    with Disk(path, resolve=resolve) as d:
        return d.read(0, d.size)


def chain_files(path):
    """Every file that belongs to the disk at `path` and its ancestors (descriptors + extents)."""
    files = []
    p = path
    while p:
        d = read_descriptor(p)
        files.append(p)
        folder = os.path.dirname(p)
        for e in d.extents:
            files.append(e[3] if os.path.isabs(e[3]) else os.path.join(folder, e[3]))
        hint = d.get("parentFileNameHint")
        p = (hint if os.path.isabs(hint) else os.path.join(folder, hint)) if hint else None
    return files


def own_files(path):
    """The descriptor and its extents, without the parents."""
    d = read_descriptor(path)
    folder = os.path.dirname(path)
    return [path] + [e[3] if os.path.isabs(e[3]) else os.path.join(folder, e[3]) for e in d.extents]


# ---------------------------------------------------------------- creating disks

def fill_pattern(seed, index, n):
    import hashlib  # here, not at the top: it loads OpenSSL, and only new VMs' disks are filled
    return hashlib.shake_256(("%s:%d" % (seed, index)).encode()).digest(n)


def create_base(path, size, fmt="thin", adapter="lsilogic", hw_version=19, seed=None, rng=URANDOM):
    """Base disk (descriptor + -flat.vmdk). With `seed`, fill it with reproducible data:
    every 64 KiB block is data, partly zero, or a hole, so copies have something to prove."""
    sectors = size // SECTOR
    stem = path[:-5]
    flat = stem + "-flat.vmdk"
    with open(flat, "wb") as f:
        f.truncate(sectors * SECTOR)
        if fmt == "zeroedthick" and sectors:
            os.posix_fallocate(f.fileno(), 0, sectors * SECTOR)
        elif fmt == "eagerzeroedthick":
            for off in range(0, sectors * SECTOR, CHUNK):
                f.write(b"\0" * min(CHUNK, sectors * SECTOR - off))
        if seed is not None:
            blk = 65536
            for i in range(0, sectors * SECTOR // blk):
                kind = int.from_bytes(fill_pattern(seed, -1 - i, 1), "big") % 8
                if kind < 3:
                    continue  # hole / zero block
                data = fill_pattern(seed, i, blk)
                if kind == 3:
                    data = data[:blk // 2] + b"\0" * (blk // 2)
                f.seek(i * blk)
                f.write(data)
    d = base_descriptor(os.path.basename(flat), sectors, adapter, fmt == "thin", hw_version, rng)
    write_descriptor(path, d)
    return d


def create_rdm(path, size, mode="physical", rng=URANDOM):
    sectors = size // SECTOR
    stem = path[:-5]
    suffix = "-rdmp.vmdk" if mode == "physical" else "-rdm.vmdk"
    mapping = stem + suffix
    with open(mapping, "wb") as f:
        f.truncate(sectors * SECTOR)  # sparse stand-in for the LUN mapping file
    d = Descriptor()
    cid = new_cid(rng)
    d.header = [("version", "1"), ("encoding", '"UTF-8"'), ("CID", cid), ("parentCID", "ffffffff"),
                ("isNativeSnapshot", '"no"'),
                ("createType", '"vmfsPassthroughRawDeviceMap"' if mode == "physical" else '"vmfsRawDeviceMap"')]
    d.extents = [("RW", sectors, "VMFSRDM", os.path.basename(mapping), None)]
    c, h, s = geometry(sectors, "lsilogic")
    d.ddb = [("ddb.adapterType", "lsilogic"), ("ddb.geometry.cylinders", str(c)), ("ddb.geometry.heads", str(h)),
             ("ddb.geometry.sectors", str(s)), ("ddb.longContentID", _long_content_id(cid, rng)),
             ("ddb.uuid", _ddb_uuid(rng)), ("ddb.virtualHWVersion", "19")]
    write_descriptor(path, d)


def next_delta_name(parent_path):
    folder = os.path.dirname(parent_path)
    stem = _delta_stem(os.path.basename(parent_path))
    n = 1
    while True:
        name = "%s-%06d.vmdk" % (stem, n)
        if not any(os.path.exists(os.path.join(folder, x)) for x in
                   (name, name[:-5] + "-delta.vmdk", name[:-5] + "-sesparse.vmdk")):
            return os.path.join(folder, name)
        n += 1


def create_delta(parent_path, sesparse, rng=URANDOM):
    """Snapshot delta next to its parent (ESXi default without snapshot.redoNotWithParent)."""
    parent = read_descriptor(parent_path)
    path = next_delta_name(parent_path)
    sectors = parent.sectors
    stem = path[:-5]
    cid = new_cid(rng)
    d = Descriptor()
    if sesparse:
        data = stem + "-sesparse.vmdk"
        sparse.SeSparseExtent.create(data, sectors)
        d.header = [("version", "1"), ("CID", cid), ("parentCID", parent.get("CID")),
                    ("createType", '"seSparse"'),
                    ("parentFileNameHint", '"%s"' % os.path.basename(parent_path))]
        d.extents = [("RW", sectors, "SESPARSE", os.path.basename(data), None)]
        d.ddb = [("ddb.encoding", "UTF-8"), ("ddb.grain", "8"), ("ddb.longContentID", _long_content_id(cid, rng))]
    else:
        data = stem + "-delta.vmdk"
        sparse.CowdExtent.create(data, sectors)
        d.header = [("version", "1"), ("encoding", '"UTF-8"'), ("CID", cid), ("parentCID", parent.get("CID")),
                    ("isNativeSnapshot", '"no"'), ("createType", '"vmfsSparse"'),
                    ("parentFileNameHint", '"%s"' % os.path.basename(parent_path))]
        d.extents = [("RW", sectors, "VMFSSPARSE", os.path.basename(data), None)]
        d.ddb = [("ddb.longContentID", _long_content_id(cid, rng))]
    write_descriptor(path, d, blank_before_extents=False)
    return path


def is_delta(path):
    return read_descriptor(path).create_type in ("vmfsSparse", "seSparse")


def parent_of(path):
    d = read_descriptor(path)
    hint = d.get("parentFileNameHint")
    if not hint:
        return None
    return hint if os.path.isabs(hint) else os.path.join(os.path.dirname(path), hint)


def merge_into_parent(delta_path):
    """Write every grain the delta holds into its parent (consolidation); return the parent."""
    parent_path = parent_of(delta_path)
    merge_into(delta_path, parent_path)
    return parent_path


def repoint_children(old_parent, new_parent, candidates):
    """Deltas that named old_parent now name new_parent (after a merge removed old_parent)."""
    newd = read_descriptor(new_parent)
    for c in candidates:
        if not os.path.exists(c) or not is_delta(c):
            continue
        if os.path.normpath(parent_of(c)) == os.path.normpath(old_parent):
            d = read_descriptor(c)
            same_dir = os.path.dirname(c) == os.path.dirname(new_parent)
            d.set("parentFileNameHint", '"%s"' % (os.path.basename(new_parent) if same_dir else new_parent))
            d.set("parentCID", newd.get("CID"))
            write_descriptor(c, d, blank_before_extents=False)


def delete(path):
    for p in own_files(path):
        if os.path.exists(p):
            os.unlink(p)


def allocated_bytes(path):
    st = os.stat(path)
    return st.st_blocks * 512


def disk_format(path):
    d = read_descriptor(path)
    ct = d.create_type
    if ct == "twoGbMaxExtentSparse":
        return "2gbsparse"
    if ct == "monolithicSparse":
        return ct
    if ct in ("vmfsSparse", "seSparse"):
        return ct
    if ct.startswith("vmfsPassthrough"):
        return "rdmp"
    if ct == "vmfsRawDeviceMap":
        return "rdm"
    return "thin" if d.ddb_get("ddb.thinProvisioned") == "1" else "thick"


def clone(src, dst, fmt, progress=None, rng=URANDOM):
    """Full copy of the (flattened) disk at src into a new disk at dst in format fmt.

    progress(done_bytes, total_bytes) may raise to abort; the caller cleans up.
    """
    with Disk(src) as disk:
        base = disk.layers[-1].desc
        adapter = base.ddb_get("ddb.adapterType", "lsilogic")
        hw = base.ddb_get("ddb.virtualHWVersion", "19")
        size = disk.size
        sectors = size // SECTOR
        done = [0]

        def tick(n):
            done[0] += n
            if progress:
                progress(done[0], size)

        stem = dst[:-5] if dst.lower().endswith(".vmdk") else dst
        if fmt == "2gbsparse":
            d = Descriptor()
            cid = new_cid(rng)
            d.header = [("version", "1"), ("encoding", '"UTF-8"'), ("CID", cid), ("parentCID", "ffffffff"),
                        ("isNativeSnapshot", '"no"'), ("createType", '"twoGbMaxExtentSparse"')]
            pos, i = 0, 1
            while pos < sectors or (sectors == 0 and i == 1):
                n = min(EXTENT_2GB_SECTORS, sectors - pos)
                name = "%s-s%03d.vmdk" % (os.path.basename(stem), i)
                start = pos * SECTOR
                sparse.write_hosted_sparse(os.path.join(os.path.dirname(dst), name), n,
                                           lambda o, k, s=start: disk.read(s + o, k), progress=tick)
                d.extents.append(("RW", n, "SPARSE", name, None))
                pos += n
                i += 1
                if sectors == 0:
                    break
            c, h, s = geometry(sectors, adapter)
            d.ddb = [("ddb.adapterType", adapter), ("ddb.geometry.cylinders", str(c)),
                     ("ddb.geometry.heads", str(h)), ("ddb.geometry.sectors", str(s)),
                     ("ddb.longContentID", _long_content_id(cid, rng)), ("ddb.toolsInstallType", "4"),
                     ("ddb.toolsVersion", "12352"), ("ddb.uuid", _ddb_uuid(rng)),
                     ("ddb.virtualHWVersion", hw)]
            write_descriptor(dst, d)
            return
        flat = stem + "-flat.vmdk"
        d = base_descriptor(os.path.basename(flat), sectors, adapter, fmt == "thin", hw, rng)
        with open(flat, "wb") as f:
            f.truncate(size)
            if fmt == "zeroedthick" and size:
                os.posix_fallocate(f.fileno(), 0, size)
            for off in range(0, size, CHUNK):
                data = disk.read(off, CHUNK)
                if fmt == "eagerzeroedthick":
                    f.seek(off)
                    f.write(data)
                else:  # leave all-zero 64 KiB blocks unwritten: holes stay holes
                    for sub in range(0, len(data), 65536):
                        piece = data[sub:sub + 65536]
                        if piece != bytes(len(piece)):
                            f.seek(off + sub)
                            f.write(piece)
                tick(len(data))
        write_descriptor(dst, d)


def rename(src, dst):
    """vmkfstools -E: rename descriptor and extents, rewrite extent names."""
    d = read_descriptor(src)
    if d.create_type == "monolithicSparse":  # one file, its descriptor inside
        os.rename(src, dst)
        return
    sfolder, dfolder = os.path.dirname(src), os.path.dirname(dst)
    sstem, dstem = os.path.basename(src)[:-5], os.path.basename(dst)[:-5]
    new_ext = []
    for acc, sec, typ, fn, off in d.extents:
        newfn = dstem + fn[len(sstem):] if fn.startswith(sstem) else fn
        os.rename(os.path.join(sfolder, fn), os.path.join(dfolder, newfn))
        new_ext.append((acc, sec, typ, newfn, off))
    d.extents = new_ext
    hint = d.get("parentFileNameHint")
    if hint and not os.path.isabs(hint) and sfolder != dfolder:
        d.set("parentFileNameHint", '"%s"' % os.path.join(sfolder, hint))
    write_descriptor(dst, d, blank_before_extents=not is_delta(src))
    os.unlink(src)


def merge_into(delta_path, target_path):
    """Apply the grains held by one delta (not its parents) onto target's top layer."""
    top = _Layer(delta_path)
    try:
        with Disk(target_path, writable=True) as target:
            for start, _end, ext in top.parts:
                for off, n in ext.allocated_runs():
                    data, _ = ext.lookup(off, n)
                    target.write(start + off, data)
    finally:
        top.close()
