"""Verify a repository: its metadata always, its packs all / a sample / the never-verified.

Metadata first (every record's disk indexes are there and are the ones
recorded, every chunk they name is in some pack's table), then packs are read
whole: each chunk is decompressed and hash-checked, and the pack's name
checked against its bytes (format.pack_id; a version-1 pack's name is the
SHA-256 of all of them). A pack found good gets a `verified/` marker,
which the "new" mode skips; one with bad chunks a `damaged/` record naming
them, so the next backup stores them again instead of building on them.
A pack that went while verify ran is listed for again: one a fresh listing,
or one made while waiting for its chunks, names again is read again (it came
back, or a read failed for a moment); one gone still at the end that a sweep
deleted (a GC mark names it), or whose chunks lie in packs still there, is no
damage. A chunk a backup needs that no listed pack holds, while a GC may have
moved it, is looked for again as long as the listing may lag, as a restore
does (settle.py). Every problem names the backups it hurts. A signal
ends verify between packs (interrupt.Interrupted).
"""

import hashlib
import random
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Set, Tuple

from .. import interrupt
from ..errors import RepoError
from . import codec
from .backend import NotFound, ObjectInfo, Unavailable
from .format import (PACK_HEADER, Blob, NewerFormat, TRAILER_SIZE, dumps, pack_id, pack_version, parse_table,
                     table_length)
from .chunks import BadChunk
from .records import Snapshot
from .repository import CONDEMNED, DAMAGED, PACKS, VERIFIED, Repository, check_file_size
from .settle import Say, Settle, silent

MODES = ("all", "sample", "new")


@dataclass
class VerifyReport:
    backups: int = 0
    packs_read: int = 0
    chunks_read: int = 0
    problems: List[str] = field(default_factory=list)
    newer: List[str] = field(default_factory=list)  # records a newer hotvcb wrote: not checked, not damaged
    not_read: List[str] = field(default_factory=list)  # records this run could not read (access, I/O): not checked
    marker_error: str = ""  # why a good pack's verified/ marker could not be written (a read-only repository)
    foreign: List[str] = field(default_factory=list)  # names in the folders it listed that are no object (objnames)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(repo: Repository, mode: str = "all", share: float = 0.1, rng: Optional[random.Random] = None,
           log: Callable[[str], None] = lambda msg: None, say: Say = silent, vm: Optional[str] = None) -> VerifyReport:
    """`log`: each pack as it is read; `say`: what the user must hear of (a wait on a lagging listing);
    `vm`: that VM's backups only, and of the packs only those holding their chunks (a record that does not
    read may be one of its backups, so it is reported still)."""
    if mode not in MODES:
        raise RepoError("verify mode %r: one of %s" % (mode, ", ".join(MODES)))
    repo.require_codec("verify it")
    report = VerifyReport()
    snaps, unreadable = repo.readable_snapshots(vm)  # a damaged record is a finding, not the end
    report.problems.extend(str(bad) for bad in unreadable if bad.damaged)
    report.newer.extend(str(bad) for bad in unreadable if bad.newer)
    report.not_read.extend(str(bad) for bad in unreadable if bad.unavailable)
    report.backups = len(snaps)
    report.problems.extend(stopping(name, err) for name, err in repo.unread_objects())
    users = {}  # type: Dict[bytes, List[Snapshot]]
    for snap in snaps:
        try:
            for digest, needing in repo.references([snap]).items():
                users.setdefault(digest, []).extend(needing)
        except RepoError as err:  # IndexUnreadable: it names the backup
            report.problems.append(str(err))
    marked = set(repo.condemned(strict=False))  # before the listing: a sweep deletes only packs a mark names
    packs = repo.objects(PACKS)
    found = Found({}, {}, {})
    _read_tables(repo, packs, found.tables, found.gone, report)
    held = packs if vm is None else [info for info in packs
                                     if any(blob.digest in users for blob in found.tables.get(info.name, ()))]
    _check_files(snaps, found.tables, report)
    chosen = _choose(repo, held, mode, share, rng or random.Random())
    for info in chosen:  # (a pack whose table did not read is reported once, by _read_tables)
        if info.name not in found.gone and info.name in found.tables:
            _read_pack(repo, info, users, found, log, report)
    seen = {info.name for info in packs}

    def relist() -> None:
        _relist(repo, users, found, seen, {info.name for info in chosen}, log, report)
    if found.gone:
        relist()
        marked |= set(repo.condemned(strict=False))  # with the fresh listing: a sweep deletes its mark last
    for digest in _lacking(users, found, relist, Settle(repo, say)):
        report.problems.append(str(BadChunk(digest, "", "missing from the repository", users[digest])))
    _report_gone(found, marked, report)
    report.foreign = sorted(repo.strays)  # those its listings met (of records, marks, damage records, packs)
    return report


def stopping(name: str, err: RepoError) -> str:
    """A GC mark or damaged/ object that does not read, as verify and status report it: what it stops, and the
    way out. Verify is where an admin whose every backup fails on one looks (it said OK, never reading them),
    and status what a monitor reads (it said OK too)."""
    stops = ("%s: every backup into the repository and every prune fail on it (they cannot tell which %s)"
             % (err, "packs are condemned" if name.startswith(CONDEMNED) else "chunks are sound"))
    if isinstance(err, (NewerFormat, Unavailable)):
        return stops  # a newer hotvcb's, or one this run may not read: its own words say the way out
    if name.startswith(CONDEMNED):
        return stops + ("; move it out of the repository's %s folder (keep it for a bug report): the packs it "
                        "named then stay until a later prune marks them again" % CONDEMNED.rstrip("/"))
    return stops + ("; move it out of the repository's %s folder (keep it for a bug report) and verify again: "
                    "reading its pack whole records the damage found there anew" % DAMAGED.rstrip("/"))


def _check_files(snaps: List[Snapshot], tables: Dict[str, List[Blob]], report: VerifyReport) -> None:
    """Each backup's small files (.vmx, .nvram) as long as their records say, by the lengths the pack tables
    give their chunks (a file with a chunk in no pack is reported as that chunk missing, not here)."""
    lengths = {blob.digest: blob.raw_len for blobs in tables.values() for blob in blobs}
    for snap in snaps:
        for f in snap.files:
            sizes = [lengths.get(bytes.fromhex(h)) for h in f["chunks"]]
            try:
                if None not in sizes:
                    check_file_size(snap.id, f, sum(n for n in sizes if n is not None))
            except RepoError as err:
                report.problems.append(str(err))


@dataclass(frozen=True)
class Gone:
    """A pack verify listed that was gone when it came to read it: why, and its table if that was read."""

    why: str
    table: Optional[List[Blob]]


@dataclass(frozen=True)
class Found:
    """What verify learnt of the packs so far: each one's table, those gone when it came to read them, and the
    chunks found bad in each pack read whole."""

    tables: Dict[str, List[Blob]]
    gone: Dict[str, Gone]
    bad: Dict[str, List[bytes]]


def _read_tables(repo: Repository, packs: List[ObjectInfo], tables: Dict[str, List[Blob]], gone: Dict[str, Gone],
                 report: VerifyReport) -> None:
    """Each pack's table into `tables`; a pack gone since the listing into `gone` (judged at the end), with
    the table an earlier read of it found."""
    for info in packs:
        interrupt.raise_pending()
        try:
            tables[info.name] = repo.pack_blobs(info.name, info.size)
        except NotFound as err:
            gone[info.name] = Gone(str(err), tables.get(info.name))
        except RepoError as err:
            report.problems.append("%s; it may hold chunks of any backup" % err)


def _read_pack(repo: Repository, info: ObjectInfo, users: Dict[bytes, List[Snapshot]], found: Found,
               log: Callable[[str], None], report: VerifyReport) -> None:
    """Read one pack whole (_check_pack) into `found`: its bad chunks, or that it went since it was listed (for
    _relist). Its verified/ or damaged/ marker is written."""
    interrupt.raise_pending()
    log("reading %s" % info.name)
    try:
        bad, chunks = _check_pack(repo, info, users, report)
    except NotFound as err:
        found.gone[info.name] = Gone(str(err), found.tables.get(info.name))
        return
    found.bad[info.name] = [chunk.digest for chunk in chunks]
    if (chunks or not bad) and not report.marker_error:
        try:  # a marker only spares --new a re-read or a backup a bad chunk: failing never hides what was found
            _mark(repo, info.name, found.bad[info.name])
        except RepoError as err:
            report.marker_error = str(err)


def _relist(repo: Repository, users: Dict[bytes, List[Snapshot]], found: Found, seen: Set[str], chosen: Set[str],
            log: Callable[[str], None], report: VerifyReport) -> None:
    """List the packs again. One gone that the listing names again (it came back, or a read failed for a
    moment) is read once more, as a restore would (whole, if it was to be); the tables of packs never listed
    before are read (`seen`: the packs listed so far, each new one read once)."""
    listing = repo.objects(PACKS)
    for info in listing:
        if info.name in found.gone:  # gone again, it stays gone, with the table an earlier read found
            del found.gone[info.name]
            _read_tables(repo, [info], found.tables, found.gone, report)
            if info.name in chosen and info.name not in found.gone:
                _read_pack(repo, info, users, found, log, report)
    fresh = [info for info in listing if info.name not in seen]
    seen.update(info.name for info in fresh)
    _read_tables(repo, fresh, found.tables, {}, report)  # a pack gone as soon as written held nothing for verify


def _report_gone(found: Found, marked: Set[str], report: VerifyReport) -> None:
    """The packs that went while verify ran and stayed gone: no damage where a GC mark names one (a sweep
    deleted it) or its chunks all lie soundly in packs still there (a duplicate); any other is reported."""
    sound = {blob.digest for name, blobs in found.tables.items() if name not in found.gone for blob in blobs
             if blob.digest not in found.bad.get(name, ())}
    for name, pack in sorted(found.gone.items()):
        if name not in marked and (pack.table is None or any(b.digest not in sound for b in pack.table)):
            report.problems.append("%s; it may hold chunks of any backup" % pack.why)


def check_backup(repo: Repository, snap: Snapshot, say: Say = silent) -> List[str]:
    """What a restore of `snap` would meet, found as verify finds it and nothing written (a restore's dry run,
    docs/restore.md section 3: it said "every check passed" of a backup whose pack was gone, which verify,
    status and the restore failed): its indexes and small files as recorded, each pack holding a chunk it
    needs read whole and every chunk hash-checked, a chunk in no pack looked for as verify does (`say`: a
    wait on a lagging listing). Only what hurts this backup counts: a bad chunk of another in a pack they
    share, or a pack's table that does not read while its chunks lie elsewhere too, the restore reads past."""
    try:
        users = repo.references([snap])
    except RepoError as err:  # IndexUnreadable: it names the backup
        return [str(err)]
    scratch = VerifyReport()  # verify's findings in those packs, of which only this backup's chunks count
    packs = repo.objects(PACKS)
    found = Found({}, {}, {})
    tables = VerifyReport()  # the packs whose table does not read: why a chunk is in none
    _read_tables(repo, packs, found.tables, found.gone, tables)
    files = VerifyReport()
    _check_files([snap], found.tables, files)
    bad = _read_needed(repo, packs, users, found, scratch)
    seen = {info.name for info in packs}

    def relist() -> None:
        _relist(repo, users, found, seen, set(), lambda msg: None, scratch)
    if found.gone:
        relist()
    lacking = _lacking(users, found, relist, Settle(repo, say))
    sound = {blob.digest for name, blobs in found.tables.items() if name not in found.gone for blob in blobs
             if blob.digest not in found.bad.get(name, ())}
    unsound = [str(chunk) for digest, chunk in sorted(bad.items()) if digest not in sound]  # no good copy left
    why = "missing from the repository%s" % (" (unreadable: %s)" % "; ".join(tables.problems) if tables.problems
                                             else "")
    return files.problems + unsound + [str(BadChunk(digest, "", why, users[digest])) for digest in lacking]


def _read_needed(repo: Repository, packs: List[ObjectInfo], users: Dict[bytes, List[Snapshot]], found: Found,
                 report: VerifyReport) -> Dict[bytes, BadChunk]:
    """Each pack holding a chunk in `users` read whole (_check_pack) into `found`, nothing marked (a dry run
    writes nothing): the chunks found bad, by digest."""
    bad = {}  # type: Dict[bytes, BadChunk]
    for info in packs:
        if info.name in found.gone or not any(blob.digest in users for blob in found.tables.get(info.name, ())):
            continue
        interrupt.raise_pending()
        try:
            chunks = _check_pack(repo, info, users, report)[1]
        except NotFound as err:
            found.gone[info.name] = Gone(str(err), found.tables.get(info.name))
            continue
        found.bad[info.name] = [chunk.digest for chunk in chunks]
        bad.update((chunk.digest, chunk) for chunk in chunks)
    return bad


def _lacking(users: Dict[bytes, List[Snapshot]], found: Found, relist: Callable[[], None], settle: Settle
             ) -> List[bytes]:
    """The chunks a backup needs that no pack still there holds, once a listing begun after they were missed
    (`relist`) lacks them too; while a GC may have moved them (a pack went while verify ran, or a GC is at
    work), until one begun the settle time after (docs/repository.md "Verify")."""
    moved = bool(found.gone)
    since, listed, waited = time.monotonic(), float("-inf"), False
    while True:
        held = {blob.digest for name, blobs in found.tables.items() if name not in found.gone for blob in blobs}
        lacking = sorted(digest for digest in users if digest not in held)
        if not lacking:
            return []
        missing = BadChunk(lacking[0], "", "missing from the repository", users[lacking[0]])
        if listed >= since:
            if not settle.again("", missing, since, listed, moved, len(lacking) - 1):
                if waited:
                    settle.give_up("", missing, since, len(lacking) - 1)
                return lacking
            waited = True
        listed = time.monotonic()
        relist()


def _mark(repo: Repository, pack: str, damaged: List[bytes]) -> None:
    """A good pack's verified/ marker, or the record of its damaged chunks, which the next backup
    stores again (docs/repository.md "Damaged chunks"): named by what was found, so verifying
    again and finding the same writes nothing."""
    pack_id_ = pack.rsplit("/", 1)[-1]
    now = repo.backend.now()
    if not damaged:
        repo.backend.put_new(VERIFIED + pack_id_, dumps({"format": "hotvcb-verified", "version": 1, "time": now}))
        return
    found = sorted(d.hex() for d in damaged)
    tag = hashlib.sha256(" ".join(found).encode("ascii")).hexdigest()[:16]
    repo.backend.put_new("%s%s.%s" % (DAMAGED, pack_id_, tag), dumps({"format": "hotvcb-damaged", "version": 1,
                                                                     "time": now, "pack": pack, "chunks": found}))


def _choose(repo: Repository, packs: List[ObjectInfo], mode: str, share: float, rng: random.Random) -> List[ObjectInfo]:
    if mode == "all":
        return packs
    if mode == "sample":
        return rng.sample(packs, min(len(packs), max(1, int(round(len(packs) * share))))) if packs else []
    done = {info.name[len(VERIFIED):] for info in repo.objects(VERIFIED)}
    return [p for p in packs if p.name.rsplit("/", 1)[-1] not in done]


def _check_pack(repo: Repository, info: ObjectInfo, users: Dict[bytes, List[Snapshot]],
                report: VerifyReport) -> Tuple[bool, List[BadChunk]]:
    """Read one pack whole; (whether something in it is bad, the chunks found bad), each reported. NotFound:
    the pack went since it was listed (for the caller to judge)."""
    report.packs_read += 1
    try:
        data = repo.backend.get(info.name)
        length, digest = table_length(data[-TRAILER_SIZE:], info.name)
        table_at = len(data) - TRAILER_SIZE - length
        blobs = parse_table(data[table_at:len(data) - TRAILER_SIZE], digest, info.name)
    except NotFound:
        report.packs_read -= 1  # not read: counted once it is, should a new listing name it again
        raise
    except RepoError as err:
        report.problems.append("%s; it may hold chunks of any backup" % err)
        return True, []
    bad = []  # type: List[BadChunk]
    for blob in blobs:
        report.chunks_read += 1
        try:
            stored = data[blob.offset:blob.offset + blob.stored_len]
            if blob.offset < PACK_HEADER or len(stored) != blob.stored_len:
                raise RepoError("lies outside its pack")
            codec.decode(blob.method, stored, blob.raw_len, blob.digest)
        except RepoError as err:
            bad.append(BadChunk(blob.digest, info.name, str(err), users.get(blob.digest, [])))
            report.problems.append(str(bad[-1]))
    if not bad:  # damage outside any chunk (the header, bytes between blobs); the chunks themselves read fine
        try:
            if pack_version(data, info.name) == 1:
                whole = hashlib.sha256(data).hexdigest()
            else:  # the blobs fill the pack from its header to its table, each checked above by its chunk's hash
                fill = sum(b.stored_len for b in blobs) == table_at - PACK_HEADER
                whole = pack_id(data, data[table_at:]) if fill else ""
            if whole != info.name.rsplit("/", 1)[-1]:
                raise RepoError("%s: damaged outside its chunks (its bytes do not match its name)" % info.name)
        except RepoError as err:
            report.problems.append(str(err))
            return True, bad
    return bool(bad), bad
