"""Writing a disk image into a sparse file: runs of data at their offsets (holes are never
written, so they stay holes; a block's pages of zeros can be left out of its runs: data_runs)
and the file flushed to disk as it grows, so the fsync that ends the write waits for the last
part only.

Shared by the two places hotvcb writes a disk's bytes itself: the repository's restore
(repo/reader.py) and a folder backup restored thin (jobs/restore_copy.py).
"""

import os
import threading
from typing import List, Optional, Sequence, Tuple, Union

from .units import PAGE  # what a hole can be, and what the room check counts a file in (in_pages)

Data = Union[bytes, bytearray, memoryview]


def data_runs(data: Union[bytes, bytearray], page: int = PAGE) -> List[Tuple[int, int]]:
    """(start, end) of the runs of `data` that are not whole zero pages (pages aligned to its start, as a
    block read at a multiple of `page` is): what a sparse copy writes, so a page of zeros stays a hole,
    as a block of them does. A block that is zeros but one byte allocates one page, not the block: the
    room a copy takes is then the backup's own allocation, counted in pages, which the restore's room
    check counts. [] for zeros alone. One memcmp per page, stopping at its first byte that is not zero:
    a few per cent of the hashing the same block gets."""
    zero = bytes(page)
    runs = []  # type: List[Tuple[int, int]]
    start = None  # type: Optional[int]
    for off in range(0, len(data), page):
        if off + page <= len(data) and data.startswith(zero, off):
            if start is not None:
                runs.append((start, off))
                start = None
        elif start is None:
            start = off
    if start is not None:
        runs.append((start, len(data)))
    return runs


def write_at(fd: int, offset: int, parts: Sequence[Data]) -> int:
    """Write `parts` back to back at `offset`, with one pwritev where python has it (joining them
    first would copy every restored byte once more); a short write is continued, never lost."""
    pwritev = getattr(os, "pwritev", None)
    views = [memoryview(p) for p in parts] if pwritev is not None else [memoryview(b"".join(parts))]
    total = 0
    while views:
        n = pwritev(fd, views, offset) if pwritev is not None else os.pwrite(fd, views[0], offset)
        offset, total = offset + n, total + n
        while views and n >= len(views[0]):
            n -= len(views.pop(0))
        if n:
            views[0] = views[0][n:]
    return total


FLUSH_EVERY = 64 << 20  # bytes written between two background flushes


class Flusher:
    """fdatasync of the output in a thread, every FLUSH_EVERY bytes written, one at a time: the disk
    writes the data while the next is produced (decompressed, read from a backup), instead of all of it in a final fsync
    (a restore is durable when it returns; the page cache alone is not a restore)."""

    def __init__(self, fd: int):
        self.fd, self.unflushed = fd, 0
        self.thread = None  # type: Optional[threading.Thread]
        self.error = None  # type: Optional[OSError]

    def wrote(self, n: int) -> None:
        self.unflushed += n
        if self.unflushed >= FLUSH_EVERY and (self.thread is None or not self.thread.is_alive()):
            self.unflushed = 0
            self.thread = threading.Thread(target=self._sync, name="restore-flush", daemon=True)
            self.thread.start()

    def _sync(self) -> None:
        try:
            getattr(os, "fdatasync", os.fsync)(self.fd)  # a python without fdatasync (not every Unix has it)
        except OSError as err:  # raised by finish(): a later fsync may no longer report it
            self.error = err

    def join(self) -> None:
        if self.thread is not None:
            self.thread.join()

    def finish(self) -> None:
        """Everything written is on disk, or the OSError that says why not."""
        self.join()
        if self.error is not None:
            raise self.error
        os.fsync(self.fd)
