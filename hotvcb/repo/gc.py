"""Garbage collection: mark unreferenced packs, sweep them a grace period later.

The rules (and why a running backup never loses a chunk it reuses) are in
docs/repository.md "Garbage collection and concurrency". One run does both
phases: first it sweeps the marks old enough (copying out any chunk a newer
backup has come to need), then it marks what is garbage now. Young packs are
never marked: they may belong to a backup still running.
"""

import uuid
from dataclasses import dataclass
from typing import Callable, Dict, List, Set

from .. import crashpoint
from ..errors import RepoError
from .backend import ObjectInfo
from .format import Blob, dumps, loads
from .gclock import gc_lock
from .packs import PackWriter
from .repository import CONDEMNED, DAMAGED, INDEXES, PACKS, VERIFIED, Location, Repository

REPACK_SHARE = 0.25  # a pack this much garbage is rewritten; below it, the garbage waits


@dataclass
class GcReport:
    packs_condemned: int = 0
    packs_deleted: int = 0
    bytes_freed: int = 0
    chunks_copied: int = 0
    indexes_deleted: int = 0
    uploads_discarded: int = 0


class _Collector:
    def __init__(self, repo: Repository, log: Callable[[str], None]):
        self.repo, self.log = repo, log
        self.backend = repo.backend
        self.now = self.backend.now()
        self.grace = repo.config.grace
        self.report = GcReport()
        snaps = repo.snapshots()
        self.snap_ids = {s.id for s in snaps}
        self.referenced = set(repo.references(snaps))  # type: Set[bytes]
        self.packs = {i.name: i for i in self.backend.list(PACKS)}  # type: Dict[str, ObjectInfo]
        self.tables = {}  # type: Dict[str, List[Blob]]
        for name, info in self.packs.items():
            try:
                self.tables[name] = repo.pack_blobs(name, info.size)
            except RepoError as err:
                log("leaving %s alone: %s (hotvcb verify --repo names what it hurts)" % (name, err))
        self.marks = {}  # type: Dict[str, List[str]]
        for info in self.backend.list(CONDEMNED):
            self.marks[info.name] = list(loads(self.backend.get(info.name), "hotvcb-condemned", info.name)["packs"])
        self.mark_age = {i.name: self.now - i.mtime for i in self.backend.list(CONDEMNED)}
        self.damaged = repo.damaged()  # a chunk a verify found bad holds nothing: copy a sound one out
        self.writer = PackWriter(self.backend, repo.config.pack_size)

    def copy_needed(self, leaving: Set[str], excluded: Set[str]) -> None:
        """Copy each referenced chunk of the `leaving` packs that no pack outside `excluded` holds."""
        held = {b.digest for name, blobs in self.tables.items() if name not in excluded for b in blobs
                if b.digest not in self.damaged.get(name, ())}
        for name in sorted(leaving):
            for blob in self.tables.get(name, []):
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
        self.copy_needed({p for mark in ripe for p in self.marks[mark]}, condemned)
        for mark in ripe:
            for name in self.marks.pop(mark):
                crashpoint.reached("repo-gc-sweep")
                self.backend.delete(name)
                self.backend.delete(VERIFIED + name.rsplit("/", 1)[-1])
                if name in self.packs:
                    self.report.packs_deleted += 1
                    self.report.bytes_freed += self.packs.pop(name).size
                self.tables.pop(name, None)
            self.backend.delete(mark)

    def mark(self) -> None:
        condemned = {p for packs in self.marks.values() for p in packs}
        doomed = set()  # type: Set[str]
        for name, blobs in sorted(self.tables.items()):
            if name in condemned or self.now - self.packs[name].mtime < self.grace or not blobs:
                continue
            garbage = sum(1 for b in blobs if b.digest not in self.referenced)
            if garbage and garbage >= REPACK_SHARE * len(blobs):
                doomed.add(name)
        if not doomed:
            return
        self.copy_needed(doomed, doomed | condemned)
        crashpoint.reached("repo-gc-before-mark")
        record = {"format": "hotvcb-condemned", "version": 1, "packs": sorted(doomed)}
        self.backend.put_new("%s%d-%s" % (CONDEMNED, int(self.now), uuid.uuid4().hex[:8]), dumps(record))
        self.report.packs_condemned += len(doomed)

    def orphans(self) -> None:
        """Indexes whose backup has no record (a killed backup or prune), markers and damage records of
        packs gone, uploads."""
        for info in self.backend.list(INDEXES):
            snap_id = info.name[len(INDEXES):].rsplit(".", 1)[0]
            if snap_id not in self.snap_ids and self.now - info.mtime >= self.grace:
                self.backend.delete(info.name)
                self.report.indexes_deleted += 1
        live = {name.rsplit("/", 1)[-1] for name in self.packs}
        for info in self.backend.list(VERIFIED):
            if info.name[len(VERIFIED):] not in live:
                self.backend.delete(info.name)
        for info in self.backend.list(DAMAGED):  # named <pack id>.<tag>: the pack's, once it is gone
            if info.name[len(DAMAGED):].split(".", 1)[0] not in live:
                self.backend.delete(info.name)
        self.report.uploads_discarded = self.backend.forget_uploads(self.grace)


def collect(repo: Repository, log: Callable[[str], None] = lambda msg: None) -> GcReport:
    repo.require_codec("collect its garbage")
    with gc_lock(repo):
        gc = _Collector(repo, log)
        try:
            gc.sweep()
            gc.mark()
            gc.orphans()
        finally:
            gc.writer.discard()
        return gc.report
