"""Restore a disk's virtual content from a backup, every chunk hash-checked,
to a sparse raw file or to a stream.

Chunks are fetched in disk order, and decompressed, checked and (to a file)
written in a pool of one thread per core: each worker writes what it checked
at its offset, so no thread funnels the output; chunks the index does not
name are zeros and stay holes in the output. A pack found gone (a sweep deleted it after copying out what
backups need) makes the restore look again where its chunks lie now, for as
long as another host's listing may lag (the settle time; settle.py, which
says so in the run's log). A bad or
missing chunk stops the restore with a BadChunk that names it and the backups
that need it, and a restore to a path removes its
partial output, so nothing half-written looks like a disk. The output is
flushed to disk in the background as it grows (sparsewrite.Flusher), so the fsync that
ends a restore waits for the last part only.
"""

import collections
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing, contextmanager
from typing import Callable, Deque, Dict, Generator, Iterator, List, Optional, Tuple, TypeVar

from .. import interrupt
from ..errors import RepoError
from ..sparsewrite import Flusher, write_at
from . import codec
from .format import DiskIndex
from .chunks import Location, PackGone
from .records import Snapshot
from .repository import Repository, check_file_size
from .settle import Say, Settle, silent

Check = Optional[Callable[[], None]]
Run = Tuple[int, List[codec.Data]]  # chunks lying back to back in the disk from an offset


def find_disk(snap: Snapshot, name: str) -> Dict:
    for disk in snap.disks:
        if disk["name"] == name:
            return disk
    raise RepoError("backup %s has no disk %r (it has %s)" % (snap, name, ", ".join(d["name"] for d in snap.disks)))


def restore_disk(repo: Repository, snap: Snapshot, disk: Dict, out_path: str, check: Check = None,
                 chunk_map: Optional[Dict[bytes, Location]] = None, workers: Optional[int] = None,
                 say: Say = silent, where: Optional["Where"] = None) -> int:
    """Write the disk as a sparse raw file at `out_path` (must not exist); returns its size. `say`: the
    run's log line, for a wait on a lagging listing (settle.py). `where`: the run's, where it reads several
    disks and files (then `chunk_map` and `say` are its)."""
    try:
        fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as err:
        raise RepoError("cannot create %s: %s" % (out_path, err.strerror or err)) from err
    flusher = Flusher(fd)
    try:
        with whole_or_nothing(out_path, os.unlink):
            size = _restore_fd(repo, disk, fd, check, where or Where(repo, chunk_map, say),
                               workers or os.cpu_count() or 1, flusher.wrote)
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


def _restore_fd(repo: Repository, disk: Dict, fd: int, check: Check, where: "Where", workers: int,
                wrote: Callable[[int], None]) -> int:
    index = repo.disk_index(disk)
    os.ftruncate(fd, index.size)

    def write(runs: List[Run]) -> int:  # in the worker that checked them: the writes use every core too
        return sum(write_at(fd, offset, parts) for offset, parts in runs)

    # closing(): the pool has stopped (no worker writes any more) before the caller closes fd
    with closing(fetched(where, index, check, workers, write)) as written:
        for n in written:
            wrote(n)
    return index.size


def restore_stream(repo: Repository, disk: Dict, write: Callable[[bytes], object], check: Check = None,
                   chunk_map: Optional[Dict[bytes, Location]] = None, workers: Optional[int] = None,
                   say: Say = silent, where: Optional["Where"] = None) -> int:
    """Write the disk's whole virtual content, zeros included, to a stream (a pipe, stdout, ssh); the
    other arguments as restore_disk's."""
    index = repo.disk_index(disk)
    zeros = bytes(index.chunk_size)
    at = 0
    for runs in fetched(where or Where(repo, chunk_map, say), index, check, workers or os.cpu_count() or 1, list):
        for offset, parts in runs:
            for at in range(at, offset, len(zeros)):
                write(zeros[:min(len(zeros), offset - at)])
            data = b"".join(parts)
            write(data)
            at = offset + len(data)
    for at in range(at, index.size, len(zeros)):
        write(zeros[:min(len(zeros), index.size - at)])
    return index.size


class Where:
    """Where a restore reads each chunk: the chunk map it was given (or built), brought up to date where it
    has no place for a chunk. One serves all of a run's disks and files, so what a disk learnt (where chunks
    lie now, which packs are gone, which waits were said) holds for the next. A sweep that ran
    meanwhile copied the chunks a backup needs out of the packs it deleted, into packs a fresh map lists;
    a listing may lag by up to the repository's settle time, so a chunk a fresh map still has no place for
    is looked for again, after pauses, until a listing begun that long after it was first missed has none
    (docs/repository.md "Restore"). Each chunk's search is bounded by that time, so this ends."""

    def __init__(self, repo: Repository, given: Optional[Dict[bytes, Location]], say: Say):
        self.repo, self.settle = repo, Settle(repo, say)
        self.map = given if given is not None else repo.chunk_map()
        self.listed = float("-inf")  # when the listing behind the map began (a given map's: before any miss)
        self.gone = {}  # type: Dict[str, float]  # pack -> when a read found it gone; until a listing names it
        self.lock = threading.Lock()  # one rebuild at a time; the map is read under it too

    def locate(self, digest: bytes, since: Optional[float] = None) -> Location:
        """Where the chunk lies; `since`: when it was first missed, if before (a read found its pack gone)."""
        with interrupt.held(self.lock):
            moved = since is not None  # a read found a pack gone: something is deleting packs
            pack = None  # type: Optional[str]  # the pack found gone that a wait is for ("": none listed holds it)
            users = None  # type: Optional[List[Snapshot]]
            waited = False
            while True:
                loc = self.map.get(digest)
                if loc is not None and loc.pack not in self.gone:
                    return loc
                moved = moved or loc is not None
                pack = (loc.pack if loc is not None else "") if pack is None else pack
                went = self.gone[loc.pack] if loc is not None else time.monotonic()
                since = went if since is None else min(since, went)
                if self.listed >= since:  # a listing begun after the miss has no place for it either
                    users = self.repo.users_of(digest) if users is None else users
                    missing = self.repo.missing(digest, users)
                    if not self.settle.again(pack, missing, since, self.listed, moved):
                        if waited:
                            self.settle.give_up(pack, missing, since)
                        raise missing
                    waited = True
                self.listed = time.monotonic()
                fresh = self.repo.chunk_map()
                for name in {where.pack for where in fresh.values()}:
                    self.gone.pop(name, None)  # a listing that names it again is trusted: it is read again
                self.map.update(fresh)

    def read(self, locs: List[Location], since: Optional[float] = None) -> List[codec.Data]:
        """The chunks of `locs` (side by side in one pack); where that pack is gone, wherever they lie now."""
        try:
            return self.repo.read_chunks(locs)
        except PackGone as err:
            with interrupt.held(self.lock):
                went = self.gone.setdefault(err.pack, time.monotonic())
        since = went if since is None else since
        return [chunk for loc in locs for chunk in self.read([self.locate(loc.blob.digest, since)], since)]


# chunks per task: 1 MiB at 64 KiB, so pool and syscall costs are paid per MiB, not per chunk. Not more: on
# Linux 6.18 (ext4) a pwrite of 2 or 4 MiB at an offset aligned to its size took 10-20x the CPU of 1 MiB
# ones (the kernel's copy into the page cache; bench/README.md)
BATCH = 16
T = TypeVar("T")


def fetched(where: Where, index: DiskIndex, check: Check, workers: int,
            then: Callable[[List[Run]], T]) -> Generator[T, None, None]:
    """`then` of each batch of a disk's stored chunks, in disk order: the batch's (offset, chunks) runs,
    fetched, checked and handed to `then` in a worker of a pool (`then` may write them, or return them).

    Consecutive chunks come back as one run (one write), and chunks lying side by side in a pack are
    read with one ranged read. Once this generator is closed or has raised, no worker runs `then`."""
    window = collections.deque()  # type: Deque[Future]
    batch = []  # type: List[Tuple[int, Location]]

    def task(todo: List[Tuple[int, Location]]) -> T:
        return then(_fetch(where, todo, index.chunk_size))

    with ThreadPoolExecutor(workers) as pool:  # its exit waits for the running tasks
        try:
            for number, digest in index.entries:
                if check is not None and not len(batch):
                    check()
                batch.append((number, where.locate(digest)))
                if len(batch) < BATCH:
                    continue
                window.append(pool.submit(task, batch))
                batch = []
                if len(window) >= 2 * workers:
                    yield interrupt.result(window.popleft())
            if batch:
                window.append(pool.submit(task, batch))
            while window:
                yield interrupt.result(window.popleft())
        finally:
            for fut in window:
                fut.cancel()


def _fetch(where: Where, batch: List[Tuple[int, Location]], chunk_size: int) -> List[Run]:
    """A batch of chunks, read (side-by-side blobs in one read), checked and cut into runs — in a worker."""
    runs = []  # type: List[Run]
    nxt = -1
    i = 0
    while i < len(batch):
        j = i + 1  # batch[i:j]: blobs lying side by side in one pack
        while (j < len(batch) and batch[j][1].pack == batch[i][1].pack
               and batch[j][1].blob.offset == batch[j - 1][1].blob.offset + batch[j - 1][1].blob.stored_len):
            j += 1
        data = where.read([loc for _n, loc in batch[i:j]])
        for (number, _loc), raw in zip(batch[i:j], data):
            if number != nxt:
                runs.append((number * chunk_size, []))
            runs[-1][1].append(raw)
            nxt = number + 1
        i = j
    return runs


def read_file(repo: Repository, snap: Snapshot, name: str, chunk_map: Optional[Dict[bytes, Location]] = None,
              say: Say = silent, where: Optional[Where] = None) -> bytes:
    """One of the VM's small files (.vmx, .nvram) as stored in the backup; the other arguments as
    restore_disk's."""
    where = where or Where(repo, chunk_map, say)
    for f in snap.files:
        if f["name"] == name:
            parts = []
            for h in f["chunks"]:
                parts.extend(where.read([where.locate(bytes.fromhex(h))]))
            data = b"".join(parts)
            check_file_size(snap.id, f, len(data))
            return data
    raise RepoError("backup %s has no file %r" % (snap, name))
