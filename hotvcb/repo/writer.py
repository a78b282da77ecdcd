"""One backup into a repository: chunk, hash, compress and store, in one pass.

The disk is read once (holes skipped, blockdigest.read_blocks); each chunk
is hashed, and compressed only if the repository lacks it, in a pool of one
thread per core (hashlib and zlib release the GIL) while the main thread
reads ahead and fills packs in disk order. Write order: packs, then the
disk's index, then — in `commit` — the snapshot record.

The main thread touches each byte of data once, to tell zero chunks (one
memcmp each, no copy); everything else gets views of a ring of read
buffers, so the data path copies nothing that it neither hashes, compresses
nor writes (bench/README.md "Issue 11" has what the copies cost).
"""

import collections
import datetime
import hashlib
import os
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Deque, Dict, List, Optional, Set, Tuple

from .. import crashpoint, interrupt
from ..blockdigest import file_size, read_blocks
from ..errors import RepoError
from . import codec
from .format import DiskIndex, dumps, encode_index
from .packs import PackWriter
from .records import Snapshot, new_snapshot_id
from .repository import INDEXES, SNAPSHOTS, Repository

Check = Optional[Callable[[], None]]
Stored = Tuple[int, codec.Data]  # method, the chunk as stored (may be a view of the read buffer)
Prepared = Tuple[int, int, bytes, Optional[Stored]]  # chunk number, length, digest, stored form
BATCH = 16  # chunks read at once and handed to a worker together: 1 MiB at 64 KiB


def _prepare(data: codec.Data, known: Set[bytes], use_zstd: bool) -> Tuple[bytes, Optional[Stored]]:
    """(digest, stored form or None when the repository has the chunk) — runs in a worker."""
    digest = hashlib.sha256(data).digest()
    if digest in known:
        return digest, None
    return digest, codec.encode(data, use_zstd)


def _prepare_batch(batch: List[Tuple[int, memoryview]], known: Set[bytes], use_zstd: bool) -> List[Prepared]:
    """_prepare for a batch of (chunk number, bytes): the pool's cost is paid per batch, not per chunk."""
    return [(number, len(data)) + _prepare(data, known, use_zstd) for number, data in batch]


class BackupWriter:
    def __init__(self, repo: Repository, vm: str, host: str = "", run: str = "", workers: Optional[int] = None,
                 vm_uuid: str = "", host_system: str = ""):
        """`host`: the host id of the run (runid.host_id), `host_system`: the host's id that outlives its reboots
        (the driver's system_id): a backup of a VM with no `vm_uuid` is matched to its VM by them."""
        self.repo, self.vm, self.host, self.run, self.vm_uuid = repo, vm, host, run, vm_uuid
        self.host_system = host_system
        self.use_zstd = repo.config.compression == "zstd"  # falls back to zlib where the package is missing
        self.started = repo.backend.now()  # before the map: the backup limit counts from here
        self.known = set(repo.chunk_map(usable_only=True))  # type: Set[bytes]
        self.snap_id = new_snapshot_id(self.started)
        self.packs = PackWriter(repo.backend, repo.config.pack_size)
        self.disks = []  # type: List[Dict[str, Any]]
        self.files = []  # type: List[Dict[str, Any]]
        self.workers = workers or os.cpu_count() or 1

    def add_disk(self, name: str, path: str, check: Check = None,
                 progress: Optional[Callable[[int], None]] = None) -> Dict[str, Any]:
        """Store the virtual content of the disk at `path` (a -flat, raw or sparse file, a block device).
        A disk that shrinks while it is read is refused, naming it: its index would record the size it had."""
        try:
            with open(path, "rb", buffering=0) as f:
                size = file_size(f.fileno())
                entries, new_chunks, new_bytes, read = self._chunk(f, check, progress)
                now = file_size(f.fileno())
            if read < size or now < size:  # the index would say `size`: what is past the new end would restore as zeros
                raise RepoError("%s (%s) shrank from %d to %d bytes while it was read: not stored, back it up again"
                                % (name, path, size, min(read, now)))
            self.packs.flush()  # every chunk the index names is in a committed pack before the index exists
        except BaseException as err:
            # the open pack's chunks are stored nowhere now: the next disk must not count on them
            self.known -= self.packs.discard()
            if isinstance(err, OSError):
                raise RepoError("cannot read %s: %s" % (path, err.strerror or err)) from err
            raise
        index = encode_index(DiskIndex(self.repo.config.chunk_size, size, entries))
        index_name = "%s%s.%d" % (INDEXES, self.snap_id, len(self.disks))
        self.repo.backend.put_new(index_name, index)
        disk = {"name": name, "size": size, "index": index_name, "index_sha256": hashlib.sha256(index).hexdigest(),
                "chunks": len(entries), "new_chunks": new_chunks, "new_bytes": new_bytes}
        self.disks.append(disk)
        return disk

    def _chunk(self, f: Any, check: Check, progress: Optional[Callable[[int], None]]):
        chunk_size = self.repo.config.chunk_size
        zero = bytes(chunk_size)
        entries = []  # type: List[Tuple[int, bytes]]
        new = [0, 0, 0]  # new chunks, their stored bytes, where the reading ended
        window = collections.deque()  # type: Deque[Tuple[int, Future]]  # (read number, its batch's future)
        window_size = 2 * self.workers
        ring = window_size + 1

        def settle_one() -> None:
            for number, length, digest, stored in interrupt.result(window.popleft()[1]):
                entries.append((number, digest))
                if stored is not None and digest not in self.known:
                    self.packs.add(digest, stored[0], length, stored[1])
                    self.known.add(digest)
                    new[0] += 1
                    new[1] += len(stored[1])

        with ThreadPoolExecutor(self.workers) as pool:
            try:
                # BATCH chunks per read: blocks stay chunk-aligned, holes are still skipped unread. Workers get
                # views of the read buffers (a ring: a block stays valid while the next ring - 1 are read), and
                # a batch's stored forms may be views too, so it is settled before its buffer is read into again
                reads = 0
                for off, length, data in read_blocks(f, BATCH * chunk_size, check, ring=ring):
                    new[2] = off + length
                    if progress is not None:
                        progress(length)
                    if data is None:
                        continue
                    reads += 1
                    view = memoryview(data)
                    batch = [(off // chunk_size + i // chunk_size, view[i:i + chunk_size])
                             for i in range(0, len(data), chunk_size)
                             if not data.startswith(zero if len(data) - i >= chunk_size else zero[:len(data) - i],
                                                    i, i + chunk_size)]  # memcmp in place, no copy
                    if batch:  # zeros are never stored: the index has no entry there
                        window.append((reads, pool.submit(_prepare_batch, batch, self.known, self.use_zstd)))
                    while window and (len(window) >= window_size or window[0][0] <= reads + 1 - ring):
                        settle_one()
                while window:
                    settle_one()
            finally:
                for _n, fut in window:
                    fut.cancel()
        return entries, new[0], new[1], new[2]

    def add_file(self, name: str, data: bytes) -> None:
        """A small file of the VM (.vmx, .nvram), stored as chunks like a disk."""
        step = self.repo.config.chunk_size
        digests = []
        for off in range(0, len(data), step):
            digest, stored = _prepare(data[off:off + step], self.known, self.use_zstd)
            if stored is not None and digest not in self.known:
                self.packs.add(digest, stored[0], len(data[off:off + step]), stored[1])
                self.known.add(digest)
            digests.append(digest.hex())
        self.files.append({"name": name, "size": len(data), "chunks": digests})

    def commit(self, when: Optional[datetime.datetime] = None) -> Snapshot:
        """Write the snapshot record, the step that makes the backup exist."""
        self.packs.flush()
        crashpoint.reached("repo-before-record")
        took = self.repo.backend.now() - self.started
        if took > self.repo.config.backup_limit:
            # %g: a limit under a second (a test's, a hand edit's) read "took 0s, longer than ... (0s)"
            raise RepoError("the backup took %gs, longer than the repository's backup limit (%gs): garbage "
                            "collection may have removed chunks it reused; not recorded, run it again"
                            % (took, self.repo.config.backup_limit))
        local = when or datetime.datetime.now()
        record = {"format": "hotvcb-snapshot", "version": 1, "id": self.snap_id, "vm": self.vm,
                  "time": local.strftime("%Y-%m-%dT%H:%M:%S"), "utc": round(self.started, 6), "host": self.host,
                  "host_system": self.host_system, "vm_uuid": self.vm_uuid, "run": self.run, "disks": self.disks,
                  "files": self.files}
        if not self.repo.backend.put_new(SNAPSHOTS + self.snap_id, dumps(record)):
            raise RepoError("backup id %s exists already" % self.snap_id)
        return self.repo.snapshot(self.snap_id)

    def abort(self) -> None:
        """Drop the open pack's upload; committed packs stay for GC (nothing references them)."""
        self.known -= self.packs.discard()
