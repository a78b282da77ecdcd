"""Prune: drop the backups the keep rules do not keep, then collect garbage.

The rules are Proxmox Backup Server's, applied per VM by
`hotvcb.repo.retention.select` (a pure function). A dropped backup's record
is deleted first (it stops existing in one step), then its disk indexes;
the chunks go later, through GC's grace period (gc.py).
"""

import importlib
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

from .. import crashpoint
from ..errors import RepoError
from .gc import GcReport, blocked, collect_held, needed, pack_tables, reads
from .gclock import gc_lock, refuse_if_held
from .records import Snapshot, dated_ahead, machines
from .repository import SNAPSHOTS, Repository

KEEP_RULES = ("last", "hourly", "daily", "weekly", "monthly", "yearly")
AHEAD_RULE = "dated over a day ahead of the clock: neither counted nor removed"


@dataclass
class Decision:
    """Whether the keep rules keep a backup, and by which rule."""

    snapshot: Snapshot
    kept: bool
    rule: Optional[str]


def plan(repo: Repository, keep: Dict[str, int], vm: Optional[str] = None,
         select: Optional[Callable[..., List[Any]]] = None) -> List[Decision]:
    """What the keep rules keep (and by which rule) and what they drop, VM by VM."""
    unknown = set(keep) - set(KEEP_RULES)
    if unknown:
        raise RepoError("unknown keep rule(s): %s" % ", ".join(sorted(unknown)))
    if not any(keep.values()):
        raise RepoError("prune needs at least one --keep-* rule above 0 (it would drop every backup)")
    choose = select or importlib.import_module(".retention", __package__).select
    # a record that does not read is never dropped, and counts for no VM: the rules keep as many readable
    # backups as they would without it (prune then leaves GC alone: gc.blocked)
    by_vm = machines(repo.readable_snapshots(vm, sizes=True)[0])  # two hosts' VMs of one name are two VMs (by uuid.bios, or host)
    out = []  # type: List[Decision]
    args = {"keep_" + rule: n for rule, n in keep.items() if n}
    now = time.time()  # not the backend's (it writes a probe): a dry run and a read-only repository write nothing
    for name in sorted(by_vm):
        ahead = dated_ahead(by_vm[name], now)
        out.extend(Decision(s, True, AHEAD_RULE) for s in ahead[::-1])
        # newest first by the instant each began (the listing's order, `utc`), not by the local wall time
        for d in choose([s for s in by_vm[name][::-1] if s not in ahead], newest_first=True, **args):
            out.append(Decision(d.backup, bool(d.kept), d.rule))
    return out


@dataclass
class Foresight:
    """What prune's dry run foresees of the prune: lines it would warn of, and (`not_run`, as GcReport's) why its
    GC would not run, which makes the prune end in a warning (exit 3)."""
    warnings: List[str]
    not_run: str = ""


def foresee(repo: Repository, decisions: List[Decision]) -> Foresight:
    """For prune's dry run, which promised removals the prune then refused: what the prune of `decisions` would
    refuse on before it removes anything (a repository it cannot write to, a live GC's lock, a kept backup's
    index, the packs/ listing, a GC mark or damage record that does not read), raised as the prune raises it, by
    the same reads; and what it would warn of or cannot do here (a pack table GC leaves alone, a record that
    stops its GC), returned. Reads only (no probe of the backend's clock, no lock taken): a dry run writes
    nothing. A zstd repository on a host without the package is a warning, not a refusal: the plan needs no
    chunk and is worth seeing there."""
    unwritable = repo.backend.unwritable()
    if unwritable:
        raise RepoError(unwritable)
    refuse_if_held(repo)
    warnings = []  # type: List[str]
    try:
        repo.require_codec("prune it")
    except RepoError as err:
        warnings.append(str(err))
    gone = {d.snapshot.id for d in decisions if not d.kept}
    readable, unreadable = repo.readable_snapshots(sizes=True)
    kept = [s for s in readable if s.id not in gone]
    if unreadable:
        needed(repo, kept)
        return Foresight(warnings, blocked(unreadable, "the prune would collect no garbage"))
    reads(repo, kept)
    pack_tables(repo, lambda msg: warnings.append("the prune's garbage collection: " + msg))
    return Foresight(warnings)


def prune(repo: Repository, decisions: List[Decision], log: Callable[[str], None] = lambda msg: None,
          check: Callable[[], None] = lambda: None) -> GcReport:
    """Delete the dropped backups (record, then indexes), then run GC; `check` as collect's. All under the
    GC lock, taken first: a GC running elsewhere refuses the prune before it drops any backup (it dropped
    them, then failed on the lock, exit 1); and only once GC has read what it needs (collect_held), so a
    damaged index it could not run past refuses the prune before it removes anything. A record that does
    not read (damaged, or a newer hotvcb's) stops GC, not the prune: the backups are dropped, GC is not run,
    and the report's `not_run` says why and the way out (one such record of any VM kept every VM's old
    backups for ever)."""
    repo.require_codec("prune it")  # before any record goes: its GC could not finish
    dropped = [d.snapshot for d in decisions if not d.kept]

    def drop() -> None:
        for snap in dropped:
            check()
            log("removing backup %s" % snap)
            repo.backend.delete(SNAPSHOTS + snap.id)
            crashpoint.reached("repo-prune-record-deleted")
            for disk in snap.disks:
                repo.backend.delete(disk["index"])

    with gc_lock(repo):
        readable, unreadable = repo.readable_snapshots(sizes=True)
        if not unreadable:
            return collect_held(repo, log, check, {s.id for s in dropped}, drop)
        # GC cannot run (it must know every chunk); the records alone go, after the kept backups' indexes were
        # read: one that does not read refuses the prune before it drops the older whole backup
        gone = {s.id for s in dropped}
        needed(repo, [s for s in readable if s.id not in gone])
        drop()
        return GcReport(not_run=blocked(unreadable))
