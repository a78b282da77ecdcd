"""Restore a disk's virtual content from a backup, every chunk hash-checked,
to a sparse raw file or to a stream.

Chunks are fetched in disk order, and decompressed and checked in a pool of
one thread per core; chunks the index does not name are zeros and stay holes
in the output. A bad or missing chunk stops the restore with a BadChunk that
names it and the backups that need it, and a restore to a path removes its
partial output, so nothing half-written looks like a disk. The output is
flushed to disk in the background as it grows (sparsewrite.Flusher), so the fsync that
ends a restore waits for the last part only.
"""

import collections
import os
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Callable, Deque, Dict, Iterator, List, Optional, Tuple

from ..errors import RepoError
from ..sparsewrite import Flusher, write_at
from . import codec
from .format import DiskIndex
from .repository import Location, Repository, Snapshot

Check = Optional[Callable[[], None]]
Run = Tuple[int, List[codec.Data]]  # chunks lying back to back in the disk from an offset


def find_disk(snap: Snapshot, name: str) -> Dict:
    for disk in snap.disks:
        if disk["name"] == name:
            return disk
    raise RepoError("backup %s has no disk %r (it has %s)" % (snap, name, ", ".join(d["name"] for d in snap.disks)))


def restore_disk(repo: Repository, snap: Snapshot, disk: Dict, out_path: str, check: Check = None,
                 chunk_map: Optional[Dict[bytes, Location]] = None, workers: Optional[int] = None) -> int:
    """Write the disk as a sparse raw file at `out_path` (must not exist); returns its size."""
    try:
        fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as err:
        raise RepoError("cannot create %s: %s" % (out_path, err.strerror or err)) from err
    flusher = Flusher(fd)
    try:
        with whole_or_nothing(out_path, os.unlink):
            size = _restore_fd(repo, disk, fd, check, chunk_map, workers or os.cpu_count() or 1, flusher.wrote)
            flusher.finish()
    finally:
        flusher.join()  # never close the fd under a running fdatasync
        os.close(fd)
    return size


@contextmanager
def whole_or_nothing(path: str, remove: Callable[[str], None]) -> Iterator[None]:
    """On any failure in the body, `path` is removed (nothing half-written may look complete);
    an OSError becomes a RepoError naming it."""
    try:
        yield
    except OSError as err:
        remove(path)
        raise RepoError("cannot write %s: %s" % (path, err.strerror or err)) from err
    except BaseException:
        remove(path)
        raise


def _restore_fd(repo: Repository, disk: Dict, fd: int, check: Check, chunk_map: Optional[Dict[bytes, Location]],
                workers: int, wrote: Callable[[int], None]) -> int:
    index = repo.disk_index(disk)
    os.ftruncate(fd, index.size)
    for offset, parts in chunks(repo, index, check, chunk_map, workers):
        wrote(write_at(fd, offset, parts))
    return index.size


def restore_stream(repo: Repository, disk: Dict, write: Callable[[bytes], object], check: Check = None,
                   chunk_map: Optional[Dict[bytes, Location]] = None, workers: Optional[int] = None) -> int:
    """Write the disk's whole virtual content, zeros included, to a stream (a pipe, stdout, ssh)."""
    index = repo.disk_index(disk)
    zeros = bytes(index.chunk_size)
    at = 0
    for offset, parts in chunks(repo, index, check, chunk_map, workers or os.cpu_count() or 1):
        for at in range(at, offset, len(zeros)):
            write(zeros[:min(len(zeros), offset - at)])
        data = b"".join(parts)
        write(data)
        at = offset + len(data)
    for at in range(at, index.size, len(zeros)):
        write(zeros[:min(len(zeros), index.size - at)])
    return index.size


BATCH = 16  # chunks per task: 1 MiB at 64 KiB, so pool and syscall costs are paid per MiB, not per chunk


def chunks(repo: Repository, index: DiskIndex, check: Check, chunk_map: Optional[Dict[bytes, Location]],
           workers: int) -> Iterator[Run]:
    """(offset, chunks) runs of a disk's stored chunks in disk order, fetched and checked in a pool.

    Consecutive chunks come back as one run (one write for the caller), and chunks lying side by
    side in a pack are read with one ranged read."""
    where = chunk_map if chunk_map is not None else repo.chunk_map()
    window = collections.deque()  # type: Deque[Future]
    batch = []  # type: List[Tuple[int, Location]]
    with ThreadPoolExecutor(workers) as pool:
        try:
            for number, digest in index.entries:
                if check is not None and not len(batch):
                    check()
                loc = where.get(digest)
                if loc is None:
                    raise repo.missing(digest)
                batch.append((number, loc))
                if len(batch) < BATCH:
                    continue
                window.append(pool.submit(_fetch, repo, batch, index.chunk_size))
                batch = []
                if len(window) >= 2 * workers:
                    yield from window.popleft().result()
            if batch:
                window.append(pool.submit(_fetch, repo, batch, index.chunk_size))
            while window:
                yield from window.popleft().result()
        finally:
            for fut in window:
                fut.cancel()


def _fetch(repo: Repository, batch: List[Tuple[int, Location]], chunk_size: int) -> List[Run]:
    """A batch of chunks, read (side-by-side blobs in one read), checked and cut into runs — in a worker."""
    runs = []  # type: List[Run]
    nxt = -1
    i = 0
    while i < len(batch):
        j = i + 1  # batch[i:j]: blobs lying side by side in one pack
        while (j < len(batch) and batch[j][1].pack == batch[i][1].pack
               and batch[j][1].blob.offset == batch[j - 1][1].blob.offset + batch[j - 1][1].blob.stored_len):
            j += 1
        data = repo.read_chunks([loc for _n, loc in batch[i:j]])
        for (number, _loc), raw in zip(batch[i:j], data):
            if number != nxt:
                runs.append((number * chunk_size, []))
            runs[-1][1].append(raw)
            nxt = number + 1
        i = j
    return runs


def read_file(repo: Repository, snap: Snapshot, name: str, chunk_map: Optional[Dict[bytes, Location]] = None) -> bytes:
    """One of the VM's small files (.vmx, .nvram) as stored in the backup."""
    where = chunk_map if chunk_map is not None else repo.chunk_map()
    for f in snap.files:
        if f["name"] == name:
            parts = []
            for h in f["chunks"]:
                digest = bytes.fromhex(h)
                loc = where.get(digest)
                if loc is None:
                    raise repo.missing(digest)
                parts.append(repo.read_chunk(loc))
            return b"".join(parts)
    raise RepoError("backup %s has no file %r" % (snap, name))
