"""Cron expressions: check them, and turn the common forms into systemd OnCalendar.

A cron expression has five fields, ``minute hour day-of-month month day-of-week``,
each ``*``, a number, a name (``jan``, ``mon``), a range ``a-b``, a step
``*/n`` or ``a-b/n``, or a comma list of these; ``@hourly`` … ``@yearly`` are
shorthands. Every field is expanded to its set of values, so a check rejects
anything busybox crond (ESXi) or cronie/vixie cron would not run the same way.

A date no calendar has (``0 2 30 2 *``, ``0 2 31 4,6,9,11 *``, ``0 2 30 2 */1``: a day of week that does
not widen it, _widens) is refused: cron and systemd take it without a word and never run the job, so no
backup is ever made and nothing says so.

Not convertible to OnCalendar (refused with an error naming the reason):
``@reboot``; day-of-month *and* day-of-week both restricted (cron runs when
*either* matches, OnCalendar only when *both* do).
"""

from typing import List, NamedTuple, Sequence, Set, Tuple

from ..errors import UsageError
from ..units import whole

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
_SYSTEMD_DAYS = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]


class _Field(NamedTuple):
    name: str
    low: int
    high: int
    names: Sequence[str]  # names[i] means low + i


_FIELDS = (
    _Field("minute", 0, 59, ()),
    _Field("hour", 0, 23, ()),
    _Field("day of month", 1, 31, ()),
    _Field("month", 1, 12, _MONTHS),
    _Field("day of week", 0, 7, _DAYS),  # 7 is Sunday as well
)


class CronExpr(NamedTuple):
    text: str  # the five fields as they go into a crontab
    values: Tuple[Tuple[int, ...], ...]  # expanded, sorted; day of week 7 folded to 0
    restricted: Tuple[bool, ...]  # field is not a bare "*"


def parse(expr: str, busybox: bool = False) -> CronExpr:
    """Check a cron expression; raise UsageError naming the bad field. `busybox`: the text is for ESXi's crond
    (busybox), written so that it reads it as Linux cron does, or refused where it cannot be (_same_days)."""
    text = " ".join(expr.split())
    if text.startswith("@"):
        if text == "@reboot":
            raise UsageError("cron expression @reboot is not a schedule; give five fields, e.g. \"0 17 * * 4\"")
        if text not in MACROS:
            raise UsageError("unknown cron shorthand %r (known: %s)" % (text, ", ".join(sorted(MACROS))))
        text = MACROS[text]
    parts = text.split(" ")
    if len(parts) != 5:
        raise UsageError(
            "cron expression %r has %d field(s); it needs 5: minute hour day-of-month month day-of-week"
            % (expr, len(parts))
        )
    values = []
    restricted = tuple(p != "*" for p in parts)
    for i, (field, part) in enumerate(zip(_FIELDS, parts)):
        found, parts[i] = _expand(field, part, expr, busybox)
        if field.name == "day of week" and 7 in found:
            # busybox crond (ESXi) knows days 0-6 only: write Sunday as 0
            found.discard(7)
            found.add(0)
            parts[4] = ",".join(str(d) for d in sorted(found))
        values.append(tuple(sorted(found)))
    if restricted[2] and not _widens(text.split(" ")[4], values[4]):
        _date_comes(values[2], values[3], expr, set(values[4]) == set(range(7)))
    if busybox:
        _same_days(text.split(" "), parts, values, expr)
    return CronExpr(" ".join(parts), tuple(values), restricted)


def _widens(dow: str, days: Sequence[int]) -> bool:
    """Whether the day-of-week field `dow` (as written; `days` expanded) makes cron run on those weekdays besides
    the days of month. Vixie cron, cronie and Debian's cron read a field starting with `*` (`*/1`, `*/2`) as no
    restriction and then require both fields; busybox crond (ESXi) drops a field naming every day (`0-6`). Only
    a field that is neither widens: a date that never comes with any other never runs on one of them."""
    return not dow.startswith("*") and set(days) != set(range(7))


_LONGEST = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # days of each month in its longest year


def _date_comes(days: Sequence[int], months: Sequence[int], expr: str, every_weekday: bool) -> None:
    """UsageError where none of the days of month comes in any of the months (February 29 comes in leap
    years). A day-of-week field naming all seven days (`0-6`) is read two ways: busybox crond (ESXi) never
    runs the job, Linux cron runs it on every day of those months; the message says both rather than "never"."""
    if any(d <= _LONGEST[m - 1] for d in days for m in months):
        return
    how = ("ESXi's crond never runs it and Linux cron runs it on every day of those months (day of week names "
           "all seven days)" if every_weekday else "the job would never back anything up")
    raise UsageError("cron expression %r: day of month %s never comes in %s (%s days at most), so %s; pick a "
                     "day of month those months have" % (
                         expr, ",".join(str(d) for d in days),
                         ", ".join(_MONTHS[m - 1].capitalize() for m in months),
                         ", ".join(str(_LONGEST[m - 1]) for m in months), how))


def _same_days(given: List[str], written: List[str], values: Sequence[Sequence[int]], expr: str) -> None:
    """UsageError where busybox crond (ESXi) would run the `written` line on other days than Linux cron runs the
    `given` expression. Linux (vixie cron, cronie: a field whose text starts with `*` sets DOM_STAR/DOW_STAR)
    needs both the day of month and the day of week to match when either field starts with `*`, else either.
    busybox (crond.c FixDayDow) knows no `*` text: a field filling all its slots (day of month: only `*`, `*/1`
    fill its slot 0) is dropped, and with both left either matches. So `0 2 */2 * 1` (odd days that are
    Mondays on Linux) ran on every odd day and every Monday on ESXi; no busybox line says "both"."""
    dom, dow = set(values[2]), set(values[4])
    dom_used = not any(item in ("*", "*/1") for item in written[2].split(","))
    dow_used = dow != set(range(7))

    def busybox_runs(day: int, weekday: int) -> bool:
        if dom_used and dow_used:
            return day in dom or weekday in dow
        return (day in dom or not dom_used) and (weekday in dow or not dow_used)

    both = given[2].startswith("*") or given[4].startswith("*")
    for day in range(1, 32):
        for weekday in range(7):
            linux = (day in dom and weekday in dow) if both else (day in dom or weekday in dow)
            if linux != busybox_runs(day, weekday):
                raise UsageError(
                    "cron expression %r: ESXi's crond cannot run it on the days it means: there a day of month "
                    "and a day of week both given run the job when EITHER matches, while a field starting with "
                    "`*` (as here) means on Linux that BOTH must; name the days of month without `*` (e.g. "
                    "1-31/2) for either, or give one of the two fields as `*`" % expr)


def _expand(field: _Field, part: str, expr: str, busybox: bool = False) -> Tuple[Set[int], str]:
    """The field's values, and the field as it goes into a crontab, written where busybox crond (ESXi) would
    read it otherwise than vixie cron and cronie (and this check) do; both read a range alike:
    * a step from a single start, `5/15`, written `5-59/15`: busybox's ParseField collapses a single number
      to a one-value range before it reads the step (minute 5 alone: once an hour, not four times);
    * for busybox only, a day-of-month step from `*`, `*/2`, written `1-31/2`: busybox's `*` there starts at
      slot 0 of its 32 (0..31), so `*/2` ran on days 2, 4, ..., 30, while Linux cron runs days 1, 3, ..., 31.
      Not in a Linux crontab: there a field starting with `*` makes a day of week given too a condition both
      must meet (_same_days), and `1-31/2` one either may."""
    def bad(why: str) -> UsageError:
        return UsageError("cron expression %r: %s field %r %s" % (expr, field.name, part, why))

    result = set()  # type: Set[int]
    written = []  # type: List[str]
    for item in part.split(","):
        base, _, step_text = item.partition("/")
        step = 1
        if step_text:
            given = whole(step_text)  # ASCII digits, few of them: isdigit() passes '³', and int() fails it
            if not given:
                raise bad("has a bad step %r" % step_text)
            step = given
        if base == "*":
            lo, hi = field.low, field.high
            if busybox and step > 1 and field.name == "day of month":
                item = "%d-%d/%d" % (lo, hi, step)
        elif "-" in base:
            a, _, b = base.partition("-")
            lo, hi = _number(field, a, bad), _number(field, b, bad)
            if lo > hi:
                raise bad("has a range that runs backwards")
        else:
            lo = _number(field, base, bad)
            hi = field.high if step_text else lo  # "5/15" means 5-max/15, as in vixie cron
            if step_text:
                item = "%d-%d/%d" % (lo, hi, step)
        if field.name == "day of week" and hi == 7 and base != "*":
            # busybox's days end at 6: a range to 7 is a parse error there (a 7 the step reaches, Sunday,
            # has the field written as a list by `parse`)
            item = "%d-6/%d" % (lo, step)
        if field.name == "day of week" and base == "*":
            hi = 6
        result.update(range(lo, hi + 1, step))
        written.append(item)
    return result, ",".join(written)


def _number(field: _Field, text: str, bad) -> int:
    low = text.lower()
    if low in field.names:
        return field.low + list(field.names).index(low)
    n = whole(text)
    if n is None:
        raise bad("is not a number, name, range or step" if text else "has an empty item")
    if not field.low <= n <= field.high:
        raise bad("is out of range %d-%d" % (field.low, field.high))
    return n


def to_oncalendar(expr: str) -> str:
    """systemd OnCalendar for a cron expression, or UsageError saying why not."""
    cron = parse(expr)
    minute, hour, dom, month, dow = cron.values
    if cron.restricted[2] and cron.restricted[4]:
        raise UsageError(
            "cron expression %r restricts both day of month and day of week; cron runs when either "
            "matches, a systemd timer only when both do. Use two jobs, or plain cron" % expr
        )
    date = "*-%s-%s" % (_render(month, 1, 12, 2), _render(dom, 1, 31, 2))
    time = "%s:%s:00" % (_render(hour, 0, 23, 2), _render(minute, 0, 59, 2))
    if cron.restricted[4] and set(dow) != set(range(7)):
        return "%s %s %s" % (_render_days(dow), date, time)
    return "%s %s" % (date, time)


def _render(values: Sequence[int], low: int, high: int, width: int) -> str:
    vals = list(values)
    if vals == list(range(low, high + 1)):
        return "*"
    if len(vals) > 2:
        step = vals[1] - vals[0]
        if vals == list(range(vals[0], high + 1, step)) and vals[-1] + step > high:
            return "%0*d/%d" % (width, vals[0], step)
    return ",".join(_runs(vals, lambda v: "%0*d" % (width, v)))


def _render_days(values: Sequence[int]) -> str:
    # systemd weeks start on Monday: put Sunday last so "fri-sun" stays a range.
    order = sorted(values, key=lambda d: (d + 6) % 7)
    keyed = [(d + 6) % 7 for d in order]
    return ",".join(_runs(keyed, lambda k: _SYSTEMD_DAYS[(k + 1) % 7]))


def _runs(vals: List[int], fmt) -> List[str]:
    """[1,2,3,5] -> ["1..3", "5"] (runs of three or more become ranges)."""
    out = []  # type: List[str]
    i = 0
    while i < len(vals):
        j = i
        while j + 1 < len(vals) and vals[j + 1] == vals[j] + 1:
            j += 1
        if j - i >= 2:
            out.append("%s..%s" % (fmt(vals[i]), fmt(vals[j])))
        else:
            out.extend(fmt(v) for v in vals[i : j + 1])
        i = j + 1
    return out
