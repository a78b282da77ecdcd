"""Is a hosted sparse extent (`KDMV`: 2gbsparse's `-s001.vmdk`, monolithicSparse) as long as its own
tables say it must be? A ghettoVCB backup has no manifest to check its disks' sizes against, and a
sparse extent has no size in its descriptor: one cut short (a backup share that filled up, an rsync
cut off) still parses, and a restore would read its lost grains as zeros.

Cheap: the header, the grain directory and the grain tables it points to (4 bytes per grain: 2 KiB
per 32 MiB of disk with 64 KiB grains) are read from the extent's start, never its grains. The
longest a table region may be for that is TABLES_MAX; past it only the tables' own ends are checked.
"""

import struct
from typing import Callable, Optional

from .vmdk import SPARSE_MAGIC

HEADER = 512  # the SparseExtentHeader's sector
SECTOR = 512
TABLES_MAX = 16 << 20  # the tables of a 2 GiB extent are ~0.3 MiB; a header claiming more is read no further
GD_AT_END = 0xFFFFFFFFFFFFFFFF  # streamOptimized: the directory is in a footer, not checked here
COMPRESSED = 1 << 16  # flags: grains are compressed, each as long as it compressed to


def cut_short(read: Callable[[int], bytes], size: int) -> Optional[str]:
    """Why the hosted sparse extent of `size` bytes, whose first n bytes are `read(n)`, is shorter than
    its tables need (its grain directory, a grain table or a grain they point to lies past its end);
    None when it is long enough, or is no hosted sparse extent."""
    head = read(HEADER)
    if head[:4] != SPARSE_MAGIC:
        return None
    if len(head) < HEADER:
        return "its header is cut short (%d bytes)" % size
    flags, capacity, grain = struct.unpack_from("<IQQ", head, 8)
    per_table, = struct.unpack_from("<I", head, 44)
    directory, = struct.unpack_from("<Q", head, 56)
    if directory == GD_AT_END:
        return None
    if not grain or not per_table:
        return "its header gives grains of %d sectors, %d to a table" % (grain, per_table)
    tables = -(-capacity // (grain * per_table))
    directory_end = directory * SECTOR + tables * 4
    if directory_end > size:
        return "its grain directory ends at byte %d, past its end (%d bytes)" % (directory_end, size)
    if directory_end > TABLES_MAX:
        return None
    data = read(directory_end)
    starts = [s * SECTOR for s in struct.unpack_from("<%dI" % tables, data, directory * SECTOR) if s]
    tables_end = max((s + per_table * 4 for s in starts), default=0)
    if tables_end > size:
        return "a grain table ends at byte %d, past its end (%d bytes)" % (tables_end, size)
    if tables_end > TABLES_MAX:
        return None
    data = read(tables_end)
    last = max((max(struct.unpack_from("<%dI" % per_table, data, s)) for s in starts), default=0)
    if last <= 1:  # 0: not written; 1: a grain of zeros (no data)
        return None
    needed = last * SECTOR + (SECTOR if flags & COMPRESSED else grain * SECTOR)
    if needed > size:
        return "its grain tables point at data up to byte %d, past its end (%d bytes)" % (needed, size)
    return None
