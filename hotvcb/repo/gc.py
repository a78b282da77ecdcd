"""Garbage collection: mark packs that hold nothing live, sweep them a grace period later.

The rules (and why a running backup never loses a chunk it reuses) are in
docs/repository.md "Garbage collection and concurrency". One run does both
phases: first it sweeps the marks old enough (copying out any chunk a newer
backup has come to need), then it marks what is garbage now: packs whose
chunks no backup needs, duplicates of chunks whose live copy (copy_rank) lies
in another pack, damaged packs whose damage has been stored again, mostly
dead packs. Young packs are never marked: they may belong to a backup still
running.
"""

from dataclasses import dataclass, field
from typing import AbstractSet, Callable, Dict, List, Set, Tuple

from .. import crashpoint
from ..errors import RepoError
from .backend import ObjectInfo, random_hex
from .format import Blob, dumps
from .gclock import gc_lock
from .packs import PackWriter
from .backend import Unavailable
from .chunks import Location, Mark, copy_rank
from .records import IndexUnreadable, Snapshot, Unreadable, by_kind
from .repository import CONDEMNED, DAMAGED, INDEXES, PACKS, SNAPSHOTS, VERIFIED, Repository

REPACK_SHARE = 0.25  # a pack this much dead (garbage or duplicates) is rewritten; below it, the dead part waits
WHY = {  # a mark's reason per pack (its "why"), as prune prints it
    "garbage": "held only chunks no backup needs",
    "duplicates": "held only duplicates",
    "damaged": "held damaged chunks stored soundly elsewhere",
    "repack": "were mostly dead (live chunks copied)",
}
FIRST_PASS = ("damaged", "repack")  # reasons that copy live chunks out: decided before duplicates are


@dataclass
class GcReport:
    """What a GC did (or why it did not run), for prune's report."""

    not_run: str = ""  # why GC did not run (blocked): prune dropped its backups all the same
    packs_condemned: int = 0
    packs_deleted: int = 0
    bytes_freed: int = 0
    chunks_copied: int = 0
    indexes_deleted: int = 0
    uploads_discarded: int = 0
    condemned_why: Dict[str, int] = field(default_factory=dict)  # reason (WHY's keys) -> packs marked for it
    deleted_why: Dict[str, int] = field(default_factory=dict)  # reason -> packs deleted ("" from an older mark)


def _id(pack: str) -> str:
    """A pack's id, the last part of its name: what its verified/ marker and damaged/ records are named by."""
    return pack.rsplit("/", 1)[-1]


def blocked(unreadable: List[Unreadable], lead: str = "garbage collection did not run") -> str:
    """Why GC cannot run while these records do not read, and the way out: GC must know every chunk every backup
    uses, and theirs are unknown, so it never guesses (it could delete the chunks of a good backup). A record a
    newer hotvcb wrote is a good backup: the way out is that hotvcb. One this run could not read (permission, an
    I/O error) may be a good backup too: the way out is access, never moving it aside. A damaged one restores
    nothing (list and restore leave it out): moved out of snapshots/, its chunks are collected like any dropped
    backup's."""
    newer, unavailable, damaged = by_kind(unreadable)
    ways = []
    if newer:
        ways.append("%s written by a newer hotvcb: run prune with that hotvcb, or upgrade this one (never move "
                    "such a record aside: it is a good backup, and GC would then delete its chunks)"
                    % ", ".join(u.record for u in newer))
    if unavailable:
        ways.append("%s: this run could not read %s, which may be a good backup: give the run access (its owner and "
                    "mode; on NFS, root_squash reads root as nobody) or wait out the I/O error, then run again "
                    "(never move such a record aside: GC would then delete its chunks)"
                    % ("; ".join(str(u) for u in unavailable), "it" if len(unavailable) == 1 else "them"))
    if damaged:
        them, files = ("it", "the file") if len(damaged) == 1 else ("them", "the files")
        ways.append("%s: no backup restores from %s (list and restore leave %s out); to collect garbage again, "
                    "move %s out of the repository's snapshots/ folder (keep %s for a bug report), and the next "
                    "prune frees the chunks no other backup uses"
                    % ("; ".join(str(u) for u in damaged), them, them, files, them))
    return ("%s: it must know every chunk every backup uses, and %d record(s) do not read: %s"
            % (lead, len(unreadable), "; ".join(ways)))


def needed(repo: Repository, snaps: List[Snapshot]) -> Set[bytes]:
    """Every chunk the backups need. A backup whose index does not read refuses GC (and the prune, before it
    removes anything): its chunks are unknown, and GC never guesses. The refusal names the backup and the way
    out, where "indexes/<id>.0 is missing" alone left every VM's prune failing night after night."""
    try:
        return set(repo.references(snaps))
    except IndexUnreadable as err:
        if isinstance(err.error, Unavailable):
            way = ("this run could not read its index, which may be sound: give the run access to it (its owner "
                   "and mode; on NFS, root_squash reads root as nobody) or wait out the I/O error, then run again")
        else:
            way = ("that backup cannot be restored as it is (hotvcb verify --repo says what else is hurt); to "
                   "collect garbage again, move its record, the file %s%s, out of the repository's snapshots/ "
                   "folder (keep it for a bug report), and the next prune frees the chunks no other backup uses"
                   % (SNAPSHOTS, err.snap.id))
        raise RepoError("garbage collection cannot run, and prune removes nothing, while a backup's index does not "
                        "read (GC must know every chunk every backup uses): %s: %s" % (err, way)) from err


def reads(repo: Repository, snaps: List[Snapshot]) -> Tuple[Set[bytes], List[Mark], Dict[str, Set[bytes]]]:
    """What GC works from that refuses it where it does not read, read before GC changes anything: the chunks
    the backups `snaps` need (needed), the marks, the damage records. Prune's dry run reads them too, so that
    it refuses where the prune will (it promised removals the prune then refused)."""
    return needed(repo, snaps), repo.marks(), repo.damaged()


def pack_tables(repo: Repository, log: Callable[[str], None], check: Callable[[], None] = lambda: None
                ) -> Tuple[Dict[str, ObjectInfo], Dict[str, List[Blob]]]:
    """The packs GC starts from (a packs/<xx> folder that cannot be listed refuses it) and the tables of those
    whose table reads (one that does not is left alone, logged). Prune's dry run reads them too."""
    packs = {i.name: i for i in repo.objects(PACKS)}  # type: Dict[str, ObjectInfo]
    tables = {}  # type: Dict[str, List[Blob]]
    for name, info in packs.items():
        check()
        try:
            tables[name] = repo.pack_blobs(name, info.size)
        except RepoError as err:
            log("leaving %s alone: %s (hotvcb verify --repo names what it hurts)" % (name, err))
    return packs, tables


def describe(why: Dict[str, int]) -> str:
    """"2 held only duplicates, 1 held damaged chunks ..." for a report's counts by reason."""
    return ", ".join("%d %s" % (n, WHY.get(reason, "marked by an older hotvcb"))
                     for reason, n in sorted(why.items()) if n)


class _Collector:
    def __init__(self, repo: Repository, log: Callable[[str], None], check: Callable[[], None],
                 dropping: AbstractSet[str]):
        self.repo, self.log, self.check = repo, log, check  # check: raises Interrupted once a signal came
        self.backend = repo.backend
        self.now = self.backend.now()
        self.grace = repo.config.grace
        self.report = GcReport()
        snaps, unreadable = repo.readable_snapshots(sizes=True)
        if unreadable:
            raise RepoError(blocked(unreadable))
        snaps = [s for s in snaps if s.id not in dropping]
        self.snap_ids = {s.id for s in snaps}
        self.referenced, marks, self.damaged = reads(repo, snaps)  # a chunk a verify found bad holds nothing
        self.packs, self.tables = pack_tables(repo, log, check)
        self.listed = {_id(name) for name in self.packs}  # the packs there as GC began
        self.marks = {}  # type: Dict[str, List[str]]
        self.mark_age = {}  # type: Dict[str, float]
        self.why = {}  # type: Dict[str, str]  # condemned pack -> its mark's reason (WHY)
        for mark in marks:
            self.marks[mark.name] = [p for p in mark.packs if p.startswith(PACKS)]
            for other in sorted(set(mark.packs) - set(self.marks[mark.name])):  # a hand-edited mark
                log("ignoring %s in %s: GC condemns only packs" % (other, mark.name))
            self.mark_age[mark.name] = self.now - mark.mtime
            self.why.update(mark.why)
        self.writer = PackWriter(self.backend, repo.config.pack_size)

    def copy_needed(self, leaving: Set[str], excluded: Set[str]) -> None:
        """Copy each referenced chunk of the `leaving` packs that no pack outside `excluded` holds soundly,
        from its best copy among them (a damaged copy is read only where there is no other: it stops GC)."""
        held = {b.digest for name, blobs in self.tables.items() if name not in excluded for b in blobs
                if b.digest not in self.damaged.get(name, ())}
        copies = sorted(((name, blob) for name in leaving for blob in self.tables.get(name, [])),
                        key=lambda nb: copy_rank(nb[0], nb[1].digest, self.damaged, ()))
        for name, blob in copies:
            self.check()
            if blob.digest in self.referenced and blob.digest not in held:
                stored = self.repo.read_stored(Location(name, blob))  # a bad chunk stops GC: never lose more
                self.writer.add(blob.digest, blob.method, blob.raw_len, stored)
                held.add(blob.digest)
                self.report.chunks_copied += 1
        self.writer.flush()
        for new in self.writer.committed:
            info = self.backend.stat(new)
            if info is not None:
                self.packs[new] = info
                self.tables[new] = self.repo.pack_blobs(new, info.size)

    def sweep(self) -> None:
        condemned = {p for packs in self.marks.values() for p in packs}
        ripe = sorted(mark for mark in self.marks if self.mark_age[mark] >= self.grace)
        leaving = {p for mark in ripe for p in self.marks[mark]}
        # a chunk whose copies here and in packs no mark names are all damaged (they rotted after the mark)
        # cannot be copied out: the packs holding it stay, and their marks, until a backup stores it again
        live = self.live_copies(condemned - leaving)
        kept = {name for name in sorted(leaving) if self.keeping(name, live)}
        self.copy_needed(leaving - kept, condemned - kept)  # what a kept pack holds soundly is held: it stays
        for mark in ripe:
            for name in self.marks[mark]:
                if name not in self.tables or name in kept:
                    continue  # gone (a sweep cut short), or no pack whose table reads: "leaving ... alone" above
                self.check()
                crashpoint.reached("repo-gc-sweep")
                self.backend.delete(name)
                crashpoint.reached("repo-gc-swept")  # the pack gone, its markers and mark not yet
                self.backend.delete(VERIFIED + _id(name))
                self.report.packs_deleted += 1
                self.report.bytes_freed += self.packs.pop(name).size
                why = self.why.get(name, "")
                self.report.deleted_why[why] = self.report.deleted_why.get(why, 0) + 1
                del self.tables[name]
            if not kept.intersection(self.marks[mark]):
                self.backend.delete(mark)
                del self.marks[mark]

    def live_copies(self, excluded: Set[str]) -> Dict[bytes, str]:
        """Referenced chunk -> the pack holding its live copy: of the packs outside `excluded`, the first by
        copy_rank (the copy every reader reads); its other copies are duplicates."""
        live = {}  # type: Dict[bytes, str]
        for name, blobs in self.tables.items():
            if name in excluded:
                continue
            for b in blobs:
                if b.digest in self.referenced:
                    have = live.get(b.digest)
                    if have is None or (copy_rank(name, b.digest, self.damaged, ())
                                        < copy_rank(have, b.digest, self.damaged, ())):
                        live[b.digest] = name
        return live

    def keeping(self, name: str, live: Dict[bytes, str]) -> bool:
        """Whether pack `name` must stay for chunks stuck in it (and the log line that says so)."""
        stuck = self.stuck(name, self.tables.get(name, []), live)
        if stuck:
            self.log("keeping %s for now: chunk(s) %s, damaged in it, have no sound copy yet (the next backup "
                     "of a VM needing them stores them again)" % (name, ", ".join(stuck)))
        return bool(stuck)

    def stuck(self, name: str, blobs: List[Blob], live: Dict[bytes, str]) -> List[str]:
        """The chunks damaged in this pack whose live copy is damaged too, this one or another's (no sound copy
        that GC keeps): copying them out would fail, so every pack holding them stays until a backup stores
        them again."""
        bad = self.damaged.get(name, set())
        return sorted(b.digest.hex() for b in blobs
                      if b.digest in bad and b.digest in self.damaged.get(live.get(b.digest, ""), ()))

    def verdict(self, name: str, blobs: List[Blob], live: Dict[bytes, str]) -> str:
        """Why pack `name` goes (a WHY key), or "" if it stays."""
        if self.stuck(name, blobs, live):
            return ""
        mine = sum(1 for b in blobs if live.get(b.digest) == name)
        if not mine:
            return "duplicates" if any(b.digest in self.referenced for b in blobs) else "garbage"
        if name in self.damaged:
            return "damaged"
        return "repack" if len(blobs) - mine >= REPACK_SHARE * len(blobs) else ""

    def mark(self) -> None:
        condemned = {p for packs in self.marks.values() for p in packs}
        old = {name: blobs for name, blobs in sorted(self.tables.items())
               if name not in condemned and self.now - self.packs[name].mtime >= self.grace and blobs}
        live = self.live_copies(condemned)
        doomed = {name: why for name, why in ((n, self.verdict(n, b, live)) for n, b in old.items())
                  if why in FIRST_PASS}
        # then the packs that copy nothing out: a duplicate of a chunk whose live copy is about to be copied
        # out (a pack doomed above) becomes its live copy instead
        live = self.live_copies(condemned | set(doomed))
        for name, blobs in old.items():
            why = doomed.get(name) or self.verdict(name, blobs, live)
            if why:
                doomed[name] = why
            else:
                self.keeping(name, live)
        if not doomed:
            return
        self.copy_needed(set(doomed), set(doomed) | condemned)
        crashpoint.reached("repo-gc-before-mark")
        record = {"format": "hotvcb-condemned", "version": 1, "packs": sorted(doomed), "why": doomed}
        self.backend.put_new("%s%d-%s" % (CONDEMNED, int(self.now), random_hex(4)), dumps(record))
        self.report.packs_condemned += len(doomed)
        for why in doomed.values():
            self.report.condemned_why[why] = self.report.condemned_why.get(why, 0) + 1

    def orphans(self) -> None:
        """Indexes whose backup has no record (a killed backup or prune), markers and damage records of
        packs gone, uploads."""
        for info in self.repo.objects(INDEXES):
            snap_id = info.name[len(INDEXES):].rsplit(".", 1)[0]
            if snap_id not in self.snap_ids and self.now - info.mtime >= self.grace:
                self.backend.delete(info.name)
                self.report.indexes_deleted += 1
        here = {_id(name) for name in self.packs}
        for info in self.repo.objects(VERIFIED):
            if self.gone(info.name[len(VERIFIED):], info, here):
                self.backend.delete(info.name)
        for info in self.repo.objects(DAMAGED):  # named <pack id>.<tag>
            if self.gone(info.name[len(DAMAGED):].split(".", 1)[0], info, here):
                self.backend.delete(info.name)
        self.report.uploads_discarded = self.backend.forget_uploads(self.grace)

    def gone(self, pack: str, about: ObjectInfo, here: Set[str]) -> bool:
        """Whether the pack (by id) a marker or damage record is `about` is gone: not `here` now, and there as
        this GC began (its sweep deleted it), or not though the record was older than the grace period then
        (so was its pack, which every listing shows by then). A record another host's verify wrote during
        this GC about a pack written meanwhile is not yet in our listing of packs, and stays."""
        return pack not in here and (pack in self.listed or self.now - about.mtime >= self.grace)


def collect(repo: Repository, log: Callable[[str], None] = lambda msg: None,
            check: Callable[[], None] = lambda: None) -> GcReport:
    """`check` is called between steps (a chunk copied, a pack deleted) and raises to stop GC there: a
    signal handler must only record the signal, as everywhere (docs/architecture.md "Signals"), for an
    exception raised at any instant splits steps that hand a file from one owner to the next."""
    repo.require_codec("collect its garbage")
    with gc_lock(repo):
        return collect_held(repo, log, check)


def collect_held(repo: Repository, log: Callable[[str], None], check: Callable[[], None],
                 dropping: AbstractSet[str] = frozenset(), drop: Callable[[], None] = lambda: None) -> GcReport:
    """collect's work, for a caller that holds the GC lock already (prune: it drops its backups under it).
    GC first reads all it works from (every record, the indexes of the backups not `dropping`, pack tables,
    marks, damage records), and only then calls `drop` (prune's removals): a damaged index or record GC
    cannot run past refuses the prune before it removes any backup, not after (it removed the only whole
    one, then failed)."""
    gc = _Collector(repo, log, check, dropping)
    drop()
    try:
        gc.sweep()
        gc.mark()
        gc.orphans()
    finally:
        gc.writer.discard()
    return gc.report
