"""Which backups a prune keeps: Proxmox Backup Server's keep rules.

Admins who run PBS, Proxmox VE or borg already think in keep-last / daily /
weekly / monthly; a rotation count cannot say "a week of dailies and a year of
monthlies". The semantics are PBS's (`pbs-datastore/src/prune.rs`,
`compute_prune_info`), so its prune simulator predicts what hotvcb does:

- The rules run in the order keep-last, keep-hourly, keep-daily, keep-weekly,
  keep-monthly, keep-yearly, each over the backups newest first.
- A rule's periods are the hour, day, ISO week (Monday to Sunday; the ISO
  year, so 2021-01-01 belongs to 2020's week 53), month and year of a
  backup's wall-clock time (`.time` as given: pass local time, as PBS uses
  the server's local time); an aware `.time` is sorted by the instant it
  names. keep-last counts backups, not times.
- A rule skips a period that holds a backup an earlier rule kept, and backups
  an earlier rule already decided on. In each other period it keeps the
  newest backup and decides "remove" for the rest of that period, so no later
  rule takes them up (a week's older backups cannot become a month's
  representative) -- until it has kept N periods.
- Periods without backups do not count: keep-daily 7 keeps the newest backup
  of each of the last 7 days *that have one*.
- A rule left out (None) and a rule of 0 keep nothing. When no rule keeps
  anything (all None or 0), everything is kept (rule "keep-all"), as PBS's
  prune API does: a prune without rules must not empty a repository.
- Backups with equal times: the one earlier in the input counts as the newer.
  keep-last counts each of them (PBS could never have two, its times are its
  names); to every other rule they share one period.

Where it plugs in: `hotvcb prune` on a repository (`hotvcb/repo/`), and later
folder-mode rotation (`store/rotation.to_delete` keeps the newest N good
backups; a VM's good `BackupSet`s wrapped as `.id` = path, `.time` = `.when`
would go through `select` instead).
"""

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Dict, Generic, Hashable, List, Optional, Protocol, Sequence, Set, TypeVar

from ..errors import UsageError

RULES = ("keep-last", "keep-hourly", "keep-daily", "keep-weekly", "keep-monthly", "keep-yearly")
KEEP_ALL = "keep-all"

_PERIODS = {
    "keep-hourly": lambda t: (t.year, t.month, t.day, t.hour),
    "keep-daily": lambda t: (t.year, t.month, t.day),
    "keep-weekly": lambda t: tuple(t.isocalendar()[:2]),
    "keep-monthly": lambda t: (t.year, t.month),
    "keep-yearly": lambda t: (t.year,),
}  # type: Dict[str, Callable[[datetime], Hashable]]


class Dated(Protocol):
    """What a prune needs of a backup (a repository snapshot, a backup folder)."""

    @property
    def id(self) -> object: ...

    @property
    def time(self) -> datetime: ...


B = TypeVar("B", bound=Dated)


@dataclass(frozen=True)
class Decision(Generic[B]):
    backup: B
    kept: bool
    rule: Optional[str]  # the rule that keeps it ("keep-daily", ...); None when removed


def select(backups: Sequence[B], keep_last: Optional[int] = None, keep_hourly: Optional[int] = None,
           keep_daily: Optional[int] = None, keep_weekly: Optional[int] = None,
           keep_monthly: Optional[int] = None, keep_yearly: Optional[int] = None,
           newest_first: bool = False) -> List[Decision[B]]:
    """One decision per backup, newest first (the PBS rules of the module docstring). `newest_first`:
    the backups are in that order already, by the instant each was made (a repository's `utc`), and
    are not sorted by `.time`, a wall clock that goes back the night summer time ends or when a
    host's clock is set back (sorted by it, keep-last 1 kept the older of two backups that night)."""
    counts = (keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly, keep_yearly)
    for rule, n in zip(RULES, counts):
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
            raise UsageError("--%s must be a whole number of 0 or more, not %r" % (rule, n))
    ordered = list(backups) if newest_first else sorted(backups, key=lambda b: _instant(b.time), reverse=True)
    # (sorted is stable: ties keep the input's order)
    if not any(counts):
        return [Decision(b, True, KEEP_ALL) for b in ordered]
    marks = {}  # type: Dict[int, Optional[str]]  # position -> rule that keeps it, or None: removed
    for rule, n in zip(RULES, counts):
        if n:
            _mark(rule, n, ordered, marks)
    return [Decision(b, marks.get(i) is not None, marks.get(i)) for i, b in enumerate(ordered)]


def _instant(t: datetime) -> datetime:
    """What to sort by: an aware time as the instant it names, as PBS sorts by epoch (Python
    compares two times of one zone by their wall clocks, so the repeated hour when summer time
    ends would sort 02:30 CET before 02:30 CEST)."""
    return t if t.tzinfo is None else t.astimezone(timezone.utc)


def _mark(rule: str, keep: int, ordered: Sequence[Dated], marks: Dict[int, Optional[str]]) -> None:
    """One rule's pass: PBS's mark_selections."""
    period = _PERIODS.get(rule)

    def of(i: int) -> Hashable:
        return i if period is None else period(ordered[i].time)

    covered = {of(i) for i, by in marks.items() if by is not None}
    kept = set()  # type: Set[Hashable]
    for i in range(len(ordered)):
        if i in marks:
            continue
        p = of(i)
        if p in covered:
            continue
        if p in kept:
            marks[i] = None
        elif len(kept) < keep:
            kept.add(p)
            marks[i] = rule
        else:
            break


def format_decisions(decisions: Sequence[Decision[Any]]) -> List[str]:
    """`prune --dry-run` lines: time, backup id, and what happens to it and why."""
    ids = [str(d.backup.id) for d in decisions]
    width = max((len(i) for i in ids), default=0)
    return ["%s  %-*s  %s" % (d.backup.time.strftime("%Y-%m-%d %H:%M:%S"), width, i,
                              "keep (%s)" % d.rule if d.kept else "remove")
            for d, i in zip(decisions, ids)]
