"""Prune keep rules (hotvcb/repo/retention.py) keep exactly what Proxmox Backup Server keeps.

Three witnesses: a generated calendar against a table worked out by hand (below), the cases of
PBS's own test suite (proxmox-backup `tests/prune.rs`, times as local times), and hypothesis
against a re-statement of the rules written the other way round (group into periods first).
"""

from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
from hypothesis import given, settings, strategies as st

from hotvcb.errors import UsageError
from hotvcb.repo.retention import RULES, format_decisions, select


@dataclass(frozen=True)
class B:
    id: str
    time: datetime


def at(text: str, suffix: str = "") -> B:
    return B(text + suffix, datetime.strptime(text, "%Y-%m-%d %H:%M"))


def kept(decisions):
    return [(d.backup.id, d.rule) for d in decisions if d.kept]


def calendar():
    """A backup every day at 23:00 from 2024-12-20 to 2026-01-04, none from 2025-11-03 to
    2025-12-20 (the host was off), and on Monday 2026-01-05 four in the morning, two of them at
    the same minute. Oldest first, so the selection has to sort."""
    out = []
    day = datetime(2024, 12, 20, 23, 0)
    while day <= datetime(2026, 1, 4, 23, 0):
        if not datetime(2025, 11, 3) <= day <= datetime(2025, 12, 21):
            out.append(B(day.strftime("%Y-%m-%d %H:%M"), day))
        day += timedelta(days=1)
    out += [at("2026-01-05 06:00"), at("2026-01-05 07:00"), at("2026-01-05 07:30"),
            at("2026-01-05 08:00", " a"), at("2026-01-05 08:00", " b")]
    return out


# Worked by hand for keep-last 3, keep-hourly 2, keep-daily 3, keep-weekly 3, keep-monthly 3,
# keep-yearly 2 over calendar(); weekdays: 2026-01-05 is a Monday (ISO 2026-W02), Mon
# 2025-12-29 .. Sun 2026-01-04 is ISO 2026-W01, Mon 2025-10-27 .. Sun 2025-11-02 is 2025-W44.
#   keep-last   the three newest: both 08:00 (keep-last counts backups, not times), 07:30.
#   keep-hourly hours 08 and 07 are covered, so 07:00 is skipped; keeps 06:00 and 01-04 23:00.
#   keep-daily  01-05 and 01-04 covered; keeps 01-03, 01-02, 01-01.
#   keep-weekly 2026-W02 and 2026-W01 covered (so 12-29..12-31 of 2025 are skipped: ISO weeks,
#               not calendar weeks); keeps 12-28 (W52, removing 12-22..12-27), 12-21 (W51: the
#               gap's days do not count), 11-02 (W44, removing 10-27..11-01).
#   keep-monthly 2026-01, 2025-12, 2025-11 covered; October's newest *undecided* backup is 10-26
#               (10-27..10-31 were removed by keep-weekly), then 09-30 and 08-31.
#   keep-yearly 2026 and 2025 covered; keeps 2024-12-31 only (a year already represented does not
#               count towards N).
#   Every other backup is removed.
HAND_WORKED = [
    ("2026-01-05 08:00 a", "keep-last"),
    ("2026-01-05 08:00 b", "keep-last"),
    ("2026-01-05 07:30", "keep-last"),
    ("2026-01-05 06:00", "keep-hourly"),
    ("2026-01-04 23:00", "keep-hourly"),
    ("2026-01-03 23:00", "keep-daily"),
    ("2026-01-02 23:00", "keep-daily"),
    ("2026-01-01 23:00", "keep-daily"),
    ("2025-12-28 23:00", "keep-weekly"),
    ("2025-12-21 23:00", "keep-weekly"),
    ("2025-11-02 23:00", "keep-weekly"),
    ("2025-10-26 23:00", "keep-monthly"),
    ("2025-09-30 23:00", "keep-monthly"),
    ("2025-08-31 23:00", "keep-monthly"),
    ("2024-12-31 23:00", "keep-yearly"),
]


def test_calendar_against_the_hand_worked_table():
    backups = calendar()
    decisions = select(backups, keep_last=3, keep_hourly=2, keep_daily=3, keep_weekly=3, keep_monthly=3,
                       keep_yearly=2)
    assert kept(decisions) == HAND_WORKED
    # newest first; the two 08:00 backups stay in the input's order (a, then b)
    assert [d.backup for d in decisions] == backups[-2:] + backups[-3::-1]
    assert all(d.rule is None for d in decisions if not d.kept)
    assert len(decisions) - len(HAND_WORKED) == len(backups) - 15


def test_calendar_weekly_alone_uses_iso_weeks_across_the_new_year():
    decisions = select(calendar(), keep_weekly=3)
    # 2026-W02 (Monday 01-05), 2026-W01 (whose Sunday is 01-04), 2025-W52; a calendar-year week
    # would have kept 2025-12-31 as well
    assert kept(decisions) == [("2026-01-05 08:00 a", "keep-weekly"), ("2026-01-04 23:00", "keep-weekly"),
                               ("2025-12-28 23:00", "keep-weekly")]


# proxmox-backup tests/prune.rs: (backups, rules, what is kept)
PBS_SIMPLE = ["2019-12-02 11:59", "2019-12-03 11:59", "2019-12-04 11:59", "2019-12-04 12:59"]
PBS_SIMPLE2 = ["2018-11-15 11:59", "2019-11-15 11:59", "2019-11-21 11:59", "2019-11-22 11:59", "2019-11-29 11:59",
               "2019-12-01 11:59", "2019-12-02 11:59", "2019-12-03 11:59", "2019-12-04 11:59"]
PBS_HOURLY = ["2019-11-15 09:39", "2019-11-15 10:49", "2019-11-15 10:59", "2019-11-15 11:39", "2019-11-15 11:49",
              "2019-11-15 11:59"]
PBS_CASES = [
    (PBS_HOURLY, dict(keep_hourly=3), ["2019-11-15 11:59", "2019-11-15 10:59", "2019-11-15 09:39"]),
    (PBS_HOURLY, dict(keep_hourly=2), ["2019-11-15 11:59", "2019-11-15 10:59"]),
    (PBS_SIMPLE2, dict(keep_daily=1), ["2019-12-04 11:59"]),
    (PBS_SIMPLE2, dict(keep_last=1, keep_daily=1), ["2019-12-04 11:59", "2019-12-03 11:59"]),
    (PBS_SIMPLE2, dict(keep_daily=1, keep_weekly=1), ["2019-12-04 11:59", "2019-12-01 11:59"]),
    # 2019-11-29 shares a week with the weekly pick 12-01, so monthly takes 11-22, not 11-29
    (PBS_SIMPLE2, dict(keep_daily=1, keep_weekly=1, keep_monthly=1),
     ["2019-12-04 11:59", "2019-12-01 11:59", "2019-11-22 11:59"]),
    (PBS_SIMPLE2, dict(keep_monthly=1, keep_yearly=1), ["2019-12-04 11:59", "2018-11-15 11:59"]),
    (PBS_SIMPLE, dict(keep_last=4), PBS_SIMPLE[::-1]),
    (PBS_SIMPLE, dict(keep_last=3), PBS_SIMPLE[:0:-1]),
    (PBS_SIMPLE, dict(keep_last=2), PBS_SIMPLE[:1:-1]),
    (PBS_SIMPLE, dict(keep_last=1), PBS_SIMPLE[:2:-1]),
    (PBS_SIMPLE, dict(keep_last=2, keep_daily=2), PBS_SIMPLE[::-1]),
    (PBS_SIMPLE, dict(keep_daily=3), ["2019-12-04 12:59", "2019-12-03 11:59", "2019-12-02 11:59"]),
    (PBS_SIMPLE, dict(keep_daily=2), ["2019-12-04 12:59", "2019-12-03 11:59"]),
    (PBS_SIMPLE, dict(keep_weekly=5), ["2019-12-04 12:59"]),
    (PBS_SIMPLE, dict(keep_daily=1, keep_weekly=5), ["2019-12-04 12:59"]),
    (PBS_SIMPLE, dict(keep_monthly=6), ["2019-12-04 12:59"]),
    (PBS_SIMPLE, dict(keep_yearly=7), ["2019-12-04 12:59"]),
    (PBS_SIMPLE, dict(keep_weekly=5, keep_monthly=6, keep_yearly=7), ["2019-12-04 12:59"]),
]


@pytest.mark.parametrize("times, rules, expected", PBS_CASES)
def test_cases_of_pbs_own_test_suite(times, rules, expected):
    decisions = select([at(t) for t in times], **rules)
    assert [d.backup.id for d in decisions if d.kept] == expected


def test_a_rule_of_zero_keeps_nothing_but_rules_all_zero_or_none_keep_everything():
    backups = [at(t) for t in PBS_SIMPLE]
    assert kept(select(backups, keep_last=0, keep_daily=1)) == [("2019-12-04 12:59", "keep-daily")]
    for rules in ({}, dict(keep_last=0), dict(keep_last=0, keep_hourly=0, keep_daily=0, keep_weekly=0,
                                                keep_monthly=0, keep_yearly=0)):
        decisions = select(backups, **rules)
        assert [d.rule for d in decisions] == ["keep-all"] * 4
    assert select([], keep_last=3) == []


def test_aware_times_sort_by_instant_and_fall_into_wall_clock_periods():
    from zoneinfo import ZoneInfo  # Python >= 3.9: the tests, not hotvcb, use it

    berlin = ZoneInfo("Europe/Berlin")
    # summer time ends at 03:00 CEST on 2025-10-26: the hour from 02:00 comes twice
    first = B("02:30 CEST", datetime(2025, 10, 26, 2, 30, tzinfo=berlin))
    second = B("02:30 CET", datetime(2025, 10, 26, 2, 30, fold=1, tzinfo=berlin))
    earlier = B("01:30 CEST", datetime(2025, 10, 26, 1, 30, tzinfo=berlin))
    decisions = select([first, earlier, second], keep_hourly=2)
    assert kept(decisions) == [("02:30 CET", "keep-hourly"), ("01:30 CEST", "keep-hourly")]
    assert [d.backup for d in decisions] == [second, first, earlier]


@pytest.mark.parametrize("bad", [-1, 1.5, "3", True])
def test_a_count_that_is_not_a_whole_number_is_refused(bad):
    with pytest.raises(UsageError, match="--keep-weekly"):
        select([at("2026-01-01 00:00")], keep_weekly=bad)


def test_dry_run_lines_name_time_id_and_the_rule():
    backups = [B("web-1", datetime(2026, 1, 5, 8, 0, 0)), B("web-22", datetime(2026, 1, 5, 7, 0, 5)),
               B("web-3", datetime(2026, 1, 4, 23, 0, 0))]
    assert format_decisions(select(backups, keep_last=1, keep_daily=5)) == [
        "2026-01-05 08:00:00  web-1   keep (keep-last)",
        "2026-01-05 07:00:05  web-22  remove",
        "2026-01-04 23:00:00  web-3   keep (keep-daily)",
    ]
    assert format_decisions([]) == []


# --- hypothesis: the rules re-stated period by period ----------------------------------------

REFERENCE_PERIOD = {
    "keep-last": None,
    "keep-hourly": lambda t: t.replace(minute=0, second=0, microsecond=0),
    "keep-daily": lambda t: t.date(),
    "keep-weekly": lambda t: t.date() - timedelta(days=t.weekday()),  # its Monday names an ISO week
    "keep-monthly": lambda t: t.strftime("%Y-%m"),
    "keep-yearly": lambda t: t.year,
}


def reference(backups, counts):
    """Each rule in turn: list the periods (newest first) of the backups no earlier rule decided
    and that no earlier rule's kept backup already represents; in the first N of them keep the
    newest backup and remove the others. Nothing to keep at all means keep everything."""
    order = [b for _, b in sorted(enumerate(backups), key=lambda p: (p[1].time, -p[0]), reverse=True)]
    if not any(counts.values()):
        return [(b, "keep-all") for b in order]
    decided = {}  # position in order -> rule or None
    for rule in RULES:
        n = counts.get(rule) or 0
        if not n:
            continue
        period = REFERENCE_PERIOD[rule]
        keys = [period(b.time) if period else i for i, b in enumerate(order)]
        covered = {keys[i] for i, r in decided.items() if r is not None}
        groups = OrderedDict()
        for i in range(len(order)):
            if i not in decided and keys[i] not in covered:
                groups.setdefault(keys[i], []).append(i)
        for members in list(groups.values())[:n]:
            decided[members[0]] = rule
            decided.update((m, None) for m in members[1:])
    return [(b, decided.get(i)) for i, b in enumerate(order)]


START = datetime(2023, 12, 25)
times = st.builds(lambda h, m: START + timedelta(hours=h, minutes=m),
                  st.integers(0, 3 * 366 * 24), st.sampled_from([0, 0, 30]))
counts = st.fixed_dictionaries({rule: st.one_of(st.none(), st.integers(0, 6)) for rule in RULES})


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(times, st.sampled_from([START, START + timedelta(days=7)])), max_size=60), counts,
       st.randoms(use_true_random=False))
def test_select_matches_the_reference(stamps, rules, rnd):
    backups = [B("b%d" % i, t) for i, t in enumerate(stamps)]
    rnd.shuffle(backups)
    decisions = select(backups, **{r.replace("-", "_"): n for r, n in rules.items()})
    assert [(d.backup, d.rule) for d in decisions] == reference(backups, rules)
    assert all(d.kept == (d.rule is not None) for d in decisions)
    if backups and any(rules.values()):
        assert decisions[0].kept  # the newest backup is never pruned while any rule keeps something
    for rule, n in rules.items():
        assert sum(d.rule == rule for d in decisions) <= (n or 0)


def test_the_reference_itself_agrees_with_pbs_and_the_hand_worked_table():
    """A reference that is wrong the same way as select would prove nothing."""
    for times, rules, expected in PBS_CASES:
        result = reference([at(t) for t in times], {r.replace("_", "-"): n for r, n in rules.items()})
        assert [b.id for b, r in result if r] == expected
    rules = {"keep-last": 3, "keep-hourly": 2, "keep-daily": 3, "keep-weekly": 3, "keep-monthly": 3, "keep-yearly": 2}
    assert [(b.id, r) for b, r in reference(calendar(), rules) if r] == HAND_WORKED
