"""Opening a repository and reading what it holds: config, backups, chunk map.

Everything here only reads (and `init` writes the config once), so the
writer, restore, verify and GC share one view of the format. What is read is
described in repoconfig.py (the config), records.py (a backup's record) and
chunks.py (where a chunk lies, and a chunk that does not read).
"""

import datetime
import hashlib
import math
import string
from typing import Any, Callable, Dict, Iterator, List, Optional, Set, Tuple, TypeVar

from ..errors import RepoError
from ..runlog import shown
from . import codec
from .backend import Backend, LocalBackend, NotFound, ObjectInfo, random_hex
from .chunks import BadChunk, Location, Mark, PackGone, copy_rank
from .format import (BACKUP_LIMIT, CHUNK_SIZE, CONFIG, INDEX_HEAD_SIZE, PACK_HEADER, PACK_SIZE, SETTLE, TRAILER_SIZE,
                     VERSION, Blob, DiskIndex, decode_index, dumps, index_head_size, loads, parse_table, table_length)
from .records import DamagedRecord, IndexUnreadable, Snapshot, Unreadable
from .repoconfig import Config, check_config

from .objnames import CONDEMNED, DAMAGED, INDEXES, PACKS, SNAPSHOTS, VERIFIED, foreign, ours
T = TypeVar("T")


def _check_record(data: Dict[str, Any], snap_id: str) -> None:
    """The shape every reader of a snapshot record relies on: one that lacks it is damaged, never half-read."""
    def need(ok: bool, what: str) -> None:
        if not ok:
            raise ValueError("bad %s" % what)

    need(data["id"] == snap_id and isinstance(data["vm"], str), "id or vm")
    utc = data.get("utc", 0)  # Python's json takes NaN and -Infinity (no JSON): neither newer nor older than any
    need(isinstance(utc, (int, float)) and not isinstance(utc, bool) and math.isfinite(utc), "utc")
    need(isinstance(data["disks"], list) and isinstance(data["files"], list), "disks or files")
    # a backup holds at least one disk (a VM with none to copy fails "nothing to back up", recording nothing):
    # one with none restored nothing, where verify, status and the restore's dry run had called it good
    need(bool(data["disks"]), "disks (none listed)")
    for n, d in enumerate(data["disks"]):
        need(isinstance(d, dict) and all(isinstance(d.get(k), str) for k in ("name", "index", "index_sha256"))
             and all(isinstance(d.get(k), int) for k in ("size", "chunks", "new_chunks", "new_bytes")), "disk entry")
        # its own index only (writer.py names it so): prune deletes what a dropped record names, and a
        # record naming `config` or another backup's index had it delete the repository's config
        need(d["index"] == "%s%s.%d" % (INDEXES, snap_id, n), "disk index name %.80r" % d["index"])
    for f in data["files"]:
        need(isinstance(f, dict) and isinstance(f.get("name"), str) and isinstance(f.get("size"), int)
             and isinstance(f.get("chunks"), list) and all(isinstance(h, str) and len(h) == 64 and
                                                          set(h) <= set(string.hexdigits) for h in f["chunks"]),
             "file entry")


def _check_covers(index: DiskIndex, disk: Dict[str, Any]) -> None:
    """RepoError, naming the record as damaged, where a record's disk and its index disagree on the disk: a
    restore writes what the index covers, while list, status and a restore's room check go by the record, so
    a disk of another size than the backup says was restored without a word (a record edited by hand, or
    written by a faulty hotvcb; the index is checked by the SHA-256 the record names)."""
    name = disk["index"]
    record = SNAPSHOTS + name[len(INDEXES):].rpartition(".")[0]
    if index.size != disk["size"]:
        raise DamagedRecord("%s: damaged (disk %s is %d bytes by the record, %d by its index %s)"
                        % (record, shown(disk["name"], field=True), disk["size"], index.size, name))
    last = max((n for n, _digest in index.entries), default=-1)
    if last * index.chunk_size >= index.size:
        raise DamagedRecord("%s: damaged (disk %s: its index %s names chunk %d, past the disk's %d bytes)"
                        % (record, shown(disk["name"], field=True), name, last, index.size))


def check_file_size(snap_id: str, f: Dict[str, Any], size: int) -> None:
    """DamagedRecord where a record's small file (.vmx, .nvram) is `size` bytes by its chunks, not the size the
    record gives it: a restore wrote the chunks' bytes while the record promised others (edited by hand, or
    written by a faulty hotvcb), and verify said OK."""
    if size != f["size"]:
        raise DamagedRecord("%s%s: damaged (file %s is %d bytes by the record, %d by its chunks)"
                            % (SNAPSHOTS, snap_id, shown(f["name"], field=True), f["size"], size))


def _whole(data: Dict[str, Any], key: str) -> int:
    """A config size as a whole number; RepoError naming the key where it is none (`1e999` is JSON's infinity,
    which int() refuses with an OverflowError every command died of)."""
    try:
        return int(data[key])
    except (TypeError, ValueError, OverflowError) as err:
        raise RepoError("%s %.40r: not a whole number of bytes" % (key, data[key])) from err


Failed = Callable[[ObjectInfo, RepoError], None]  # what to do with an object that does not read


def _failing(strict: bool) -> Failed:
    """Raise the error of an object that does not read (`strict`), or skip the object."""
    def failed(_info: ObjectInfo, err: RepoError) -> None:
        if strict:
            raise err
    return failed


def pack_name(digest_hex: str) -> str:
    return "%s%s/%s" % (PACKS, digest_hex[:2], digest_hex)


class Repository:
    def __init__(self, backend: Backend, config: Config):
        self.backend, self.config = backend, config
        self.unreadable = {}  # type: Dict[str, str]  # pack -> why its table could not be read (chunk_map)
        self.strays = set()  # type: Set[str]  # names `objects` met that are no object (objnames): verify's to name

    @classmethod
    def init(cls, backend: Backend, chunk_size: int = CHUNK_SIZE, pack_size: int = PACK_SIZE,
             backup_limit: float = BACKUP_LIMIT, settle: float = SETTLE, compression: str = "zlib") -> "Repository":
        check_config(chunk_size, pack_size, backup_limit, settle)
        data = {"format": "hotvcb-repository", "version": VERSION, "id": random_hex(16),
                "chunk_size": chunk_size, "pack_size": pack_size, "backup_limit_seconds": backup_limit,
                "settle_seconds": settle, "compression": compression}
        if compression not in ("zlib", "zstd") or compression == "zstd" and not codec.available():
            raise RepoError("compression %r: zlib, or zstd where the zstandard package is installed" % compression)
        if not backend.put_new(CONFIG, dumps(data)):
            raise RepoError("a repository already exists there")
        return cls.open(backend)

    @classmethod
    def open(cls, backend: Backend) -> "Repository":
        try:
            raw = backend.get(CONFIG)
        except NotFound as err:
            raise RepoError("no hotvcb repository there (no %s file)" % CONFIG) from err
        data = loads(raw, "hotvcb-repository", CONFIG)
        try:
            chunk_size, pack_size = _whole(data, "chunk_size"), _whole(data, "pack_size")
            backup_limit, settle = check_config(chunk_size, pack_size, data["backup_limit_seconds"],
                                                 data["settle_seconds"])
            config = Config(str(data["id"]), chunk_size, pack_size, backup_limit, settle,
                            str(data.get("compression", "zlib")))
            if config.compression not in ("zlib", "zstd"):  # a writer would silently fall back to zlib
                raise RepoError("compression %r: zlib or zstd" % data.get("compression"))
        except (KeyError, TypeError, ValueError, RepoError) as err:
            raise RepoError("%s: damaged (%s)" % (CONFIG, err)) from err
        return cls(backend, config)

    def objects(self, prefix: str) -> List[ObjectInfo]:
        """The objects under `prefix` (a folder of objnames): its listing less the names no hotvcb writes there
        (a NAS client's .DS_Store is no damaged record, pack or mark), which are kept in `strays`."""
        listed = self.backend.list(prefix)
        self.strays.update(foreign(info.name for info in listed))
        return [info for info in listed if ours(info.name)]

    # --- backups ---------------------------------------------------------

    def snapshots(self, vm: Optional[str] = None) -> List[Snapshot]:
        """Every backup whose record exists (oldest first); a damaged record is an error, never skipped."""
        return self._listed(vm, None)

    def readable_snapshots(self, vm: Optional[str] = None,
                           sizes: bool = False) -> Tuple[List[Snapshot], List[Unreadable]]:
        """(the backups whose record reads, oldest first; each other record, with why it does not): for list,
        restore, verify and prune, where one damaged record must not hide the others (GC, which must know every
        chunk, refuses while there is one: gc.blocked). `sizes`: also a record whose disk size is not its
        index's is one that does not read (DamagedRecord), as prune, GC and list must count it: a look at each
        index's header, the whole index read only where they disagree."""
        bad = []  # type: List[Unreadable]
        good = self._listed(vm, bad)
        if not sizes:
            return good, bad
        sound = []  # type: List[Snapshot]
        for snap in good:
            err = self._size_disagrees(snap)
            if err is None:
                sound.append(snap)
            else:
                bad.append(Unreadable(SNAPSHOTS + snap.id, err))
        return sound, bad

    def _size_disagrees(self, snap: Snapshot) -> Optional[DamagedRecord]:
        """Why the record damages itself by a disk size its index does not have, None where none does. An index
        that does not read at all is the backup's trouble, not the record's: GC refuses on it (and restore)."""
        for disk in snap.disks:
            try:
                if index_head_size(self.backend.get(disk["index"], 0, INDEX_HEAD_SIZE)) in (None, disk["size"]):
                    continue
                self.disk_index(disk)  # the whole index: its checksum says whether the header is to be believed
            except DamagedRecord as err:
                return err
            except RepoError:
                continue
        return None

    def _listed(self, vm: Optional[str], bad: Optional[List[Unreadable]]) -> List[Snapshot]:
        """The backups the listing names, oldest first. A record gone since the listing (another host pruned
        it: a listing may lag) is no backup any more and is skipped; one that does not read goes to `bad`, or
        is raised where there is no `bad`."""
        good = []  # type: List[Snapshot]
        for info in self.objects(SNAPSHOTS):
            try:
                good.append(self._record(info.name[len(SNAPSHOTS):]))
            except NotFound:
                continue
            except RepoError as err:
                if bad is None:
                    raise
                bad.append(Unreadable(info.name, err))
        good.sort(key=lambda s: (s.record.get("utc", 0), s.id))
        return [s for s in good if vm is None or s.vm == vm]

    def snapshot(self, snap_id: str) -> Snapshot:
        try:
            return self._record(snap_id)
        except NotFound as err:
            raise RepoError("no backup %s in the repository" % snap_id) from err

    def _record(self, snap_id: str) -> Snapshot:
        """A backup's record; NotFound if it does not exist."""
        name = SNAPSHOTS + snap_id
        data = loads(self.backend.get(name), "hotvcb-snapshot", name)
        try:
            when = datetime.datetime.strptime(data["time"], "%Y-%m-%dT%H:%M:%S")
            _check_record(data, snap_id)
            return Snapshot(data["id"], data["vm"], when, list(data["disks"]), list(data["files"]), data)
        except (KeyError, TypeError, ValueError) as err:
            raise RepoError("%s: damaged (%s)" % (name, err)) from err

    def disk_index(self, disk: Dict[str, Any]) -> DiskIndex:
        """A disk's index, checked to be the one its record names and to cover the disk the record says."""
        name = disk["index"]
        data = self.backend.get(name)
        if hashlib.sha256(data).hexdigest() != disk["index_sha256"]:
            raise RepoError("%s: the disk index is damaged (not the one its backup recorded)" % name)
        index = decode_index(data, name)
        _check_covers(index, disk)
        return index

    def references(self, snaps: List[Snapshot]) -> Dict[bytes, List[Snapshot]]:
        """Every chunk the backups need -> the backups needing it; IndexUnreadable where an index does not read."""
        users = {}  # type: Dict[bytes, List[Snapshot]]
        for snap in snaps:
            digests = set()  # type: Set[bytes]
            try:
                for disk in snap.disks:
                    digests.update(d for _n, d in self.disk_index(disk).entries)
            except NotFound as err:
                if self.backend.stat(SNAPSHOTS + snap.id) is None:
                    continue  # pruned since its record was read (record first, then indexes): it needs nothing
                raise IndexUnreadable(snap, err) from err
            except RepoError as err:
                raise IndexUnreadable(snap, err) from err
            for f in snap.files:
                digests.update(bytes.fromhex(h) for h in f["chunks"])
            for d in digests:
                users.setdefault(d, []).append(snap)
        return users

    def users_of(self, digest: bytes) -> List[Snapshot]:
        """The backups that need a chunk (for naming them beside a bad one)."""
        try:
            return self.references(self.snapshots()).get(digest, [])
        except RepoError:
            return []  # naming users is a courtesy; the bad chunk is the error

    # --- packs -----------------------------------------------------------

    def pack_blobs(self, name: str, size: int) -> List[Blob]:
        """A pack's table, read from its tail without reading its chunks."""
        if size < PACK_HEADER + TRAILER_SIZE:
            raise RepoError("%s: too short to be a pack" % name)
        length, digest = table_length(self.backend.get(name, size - TRAILER_SIZE, TRAILER_SIZE), name)
        if length > size - PACK_HEADER - TRAILER_SIZE:
            raise RepoError("%s: not a pack (bad trailer)" % name)
        return parse_table(self.backend.get(name, size - TRAILER_SIZE - length, length), digest, name)

    def _objects(self, prefix: str, kind: str, read: Callable[[ObjectInfo, Dict[str, Any]], T],
                 failed: "Failed") -> Iterator[T]:
        """`read` of each `kind` object under `prefix`. One gone since the listing is skipped (GC deleted it,
        after what it was about); one that does not read goes to `failed` (which raises it, or not: skipped)."""
        for info in self.objects(prefix):
            try:
                data = loads(self.backend.get(info.name), kind, info.name)
                try:
                    item = read(info, data)
                except (KeyError, TypeError, ValueError) as err:
                    raise RepoError("%s: damaged (%s)" % (info.name, err)) from err
            except NotFound:
                continue
            except RepoError as err:
                failed(info, err)
                continue
            yield item

    def marks(self, strict: bool = True, failed: Optional["Failed"] = None) -> List[Mark]:
        """Every GC mark (docs/repository.md "Garbage collection and concurrency"). One that does not read is
        raised (`strict`), skipped, or handed to `failed`."""
        def read(info: ObjectInfo, data: Dict[str, Any]) -> Mark:
            packs, why = data.get("packs"), data.get("why")
            if not isinstance(packs, list) or not all(isinstance(p, str) for p in packs):
                raise ValueError("no list of packs")
            why = {str(p): str(r) for p, r in why.items()} if isinstance(why, dict) else {}
            return Mark(info.name, info.mtime, packs, why)
        return list(self._objects(CONDEMNED, "hotvcb-condemned", read, failed or _failing(strict)))

    def condemned(self, strict: bool = True) -> Dict[str, str]:
        """Pack -> the GC mark that condemned it."""
        return {pack: mark.name for mark in self.marks(strict) for pack in mark.packs}

    def damaged(self, strict: bool = True, failed: Optional["Failed"] = None) -> Dict[str, Set[bytes]]:
        """Pack -> the chunks in it a verify found damaged (docs/repository.md "Damaged chunks"). One that does
        not read is raised (`strict`), skipped, or handed to `failed` -- unless the pack its name names is gone:
        nothing can be unsound in a pack that is not there, and GC deletes the object as any naming no pack
        (raised, it stopped every backup and prune for ever, GC included)."""
        def read(_info: ObjectInfo, data: Dict[str, Any]) -> Tuple[str, Set[bytes]]:
            return str(data["pack"]), {bytes.fromhex(h) for h in data["chunks"]}

        def unread(info: ObjectInfo, err: RepoError) -> None:
            if self.backend.stat(pack_name(info.name[len(DAMAGED):].split(".", 1)[0])) is not None:
                (failed or _failing(strict))(info, err)
        out = {}  # type: Dict[str, Set[bytes]]
        for pack, chunks in self._objects(DAMAGED, "hotvcb-damaged", read, unread):
            out.setdefault(pack, set()).update(chunks)
        return out

    def unread_objects(self) -> List[Tuple[str, RepoError]]:
        """The GC marks and damaged/ objects that do not read, by name: each stops every backup (it cannot tell
        what is sound or condemned), prune and GC, so verify names them."""
        found = []  # type: List[Tuple[str, RepoError]]
        self.marks(failed=lambda info, err: found.append((info.name, err)))
        self.damaged(failed=lambda info, err: found.append((info.name, err)))
        return found

    def chunk_map(self, usable_only: bool = False) -> Dict[bytes, Location]:
        """Where each stored chunk lies: of its copies, the first by copy_rank (the live copy GC keeps).
        `usable_only`: leave out condemned packs and chunks a verify found damaged (a backup may not reuse
        those: it stores a damaged one again). Else a damaged or condemned copy is where a chunk lies only
        when no better one is (a restore reads the sound one; of the records, those that read)."""
        # a backup must not build on what it cannot tell is sound; to a restore they only say which copy to
        # prefer, so one record that does not read costs only what it would have said
        damaged, condemned = self.damaged(usable_only), set(self.condemned(usable_only))
        out = {}  # type: Dict[bytes, Location]
        for info in self.objects(PACKS):
            if usable_only and info.name in condemned:
                continue
            try:
                blobs = self.pack_blobs(info.name, info.size)
            except RepoError as err:  # one damaged pack hurts only the backups that need it (verify names them):
                self.unreadable[info.name] = str(err)  # its chunks are missing to a restore, absent to a backup
                continue
            bad = damaged.get(info.name, set())
            for blob in blobs:
                if usable_only and blob.digest in bad:
                    continue
                have = out.get(blob.digest)
                if have is None or (copy_rank(info.name, blob.digest, damaged, condemned)
                                    < copy_rank(have.pack, blob.digest, damaged, condemned)):
                    out[blob.digest] = Location(info.name, blob)
        return out

    def require_codec(self, doing: str) -> None:
        """Refuse `doing` (reading every chunk it meets) where this repository's zstd chunks cannot be
        read: each would look damaged, and GC, which copies only chunks it has checked, would stop halfway."""
        if self.config.compression == "zstd" and not codec.available():
            raise RepoError("cannot %s here: the repository compresses with zstd and the zstandard package is "
                            "not installed (run it where it is; list and restore work here)" % doing)

    def missing(self, digest: bytes, users: Optional[List[Snapshot]] = None) -> BadChunk:
        """A chunk no readable pack holds, with the backups that need it (`users` where known: finding them reads
        every record) and the packs that could not be read."""
        why = "missing from the repository"
        if self.unreadable:
            why += " (unreadable: %s)" % "; ".join(sorted(self.unreadable.values()))
        return BadChunk(digest, "", why, self.users_of(digest) if users is None else users)

    def read_stored(self, loc: Location) -> bytes:
        """A chunk as stored (compressed), after checking that it decodes to its hash."""
        b = loc.blob
        try:
            stored = self.backend.get(loc.pack, b.offset, b.stored_len)
            codec.decode(b.method, stored, b.raw_len, b.digest)
            return stored
        except RepoError as err:
            raise BadChunk(b.digest, loc.pack, str(err), self.users_of(b.digest)) from err

    def read_chunk(self, loc: Location) -> codec.Data:
        """A chunk's bytes, hash-checked; BadChunk (naming its users) if they are not what was stored."""
        return self.read_chunks([loc])[0]

    def read_chunks(self, locs: List[Location]) -> List[codec.Data]:
        """Chunks lying side by side in one pack, read with one ranged read, each hash-checked (a chunk
        stored raw comes back as a view of what was read: no copy)."""
        first, last = locs[0].blob, locs[-1].blob
        try:
            data = memoryview(self.backend.get(locs[0].pack, first.offset,
                                               last.offset + last.stored_len - first.offset))
        except NotFound as err:
            raise PackGone(first.digest, locs[0].pack, str(err)) from err
        except RepoError as err:
            raise BadChunk(first.digest, locs[0].pack, str(err), self.users_of(first.digest)) from err
        out = []
        for loc in locs:
            b = loc.blob
            try:
                out.append(codec.decode(b.method, data[b.offset - first.offset:b.offset - first.offset + b.stored_len],
                                        b.raw_len, b.digest))
            except RepoError as err:
                raise BadChunk(b.digest, loc.pack, str(err), self.users_of(b.digest)) from err
        return out

def open_path(path: str) -> Repository:
    """The repository in a folder (local disk, VMFS, NFS); an error names the folder (its `config` is
    not the user's hotvcb.conf)."""
    try:
        return Repository.open(LocalBackend(path))
    except RepoError as err:
        raise RepoError("repository %s: %s" % (path, err)) from err
