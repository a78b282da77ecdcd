"""Numbers as people read them in logs and tables, and as files and hosts spell them."""

from typing import Optional, Tuple

from . import lazyre

# 2**64 has 20 digits: no size, sector count, pid, epoch, tick or version number has more. A number read
# from a file or a host's output is matched with DIGITS (a longer run of digits is then no number at all)
# or read by `whole`, never handed to int() as it stands: Python 3.11+ (and 3.8.18) refuse int() of 4,300
# digits or more with a ValueError, and anyone who can write such a file can write that many.
DIGITS_MAX = 20
DIGITS = r"(?<![0-9])[0-9]{1,%d}(?![0-9])" % DIGITS_MAX
_WHOLE = lazyre.compile(DIGITS)


def whole(text: str) -> Optional[int]:
    """The number `text` spells in ASCII digits, or None: other characters, or more than DIGITS_MAX digits."""
    return int(text) if _WHOLE.fullmatch(text) else None


PAGE = 4096  # the least room a file with data takes on a datastore (a tmpfs page; VMFS's blocks are larger)


def in_pages(size: int) -> int:
    """The room a file of `size` bytes takes: whole pages. A restore's small files (descriptors, the
    .vmx, records) counted in bytes let a room check pass a datastore a few pages short."""
    return -(-size // PAGE) * PAGE


def human_size(n: float, compact: bool = False) -> str:
    """1.5 GiB in log lines; compact ("1.5G") where a table column is narrow."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            shown = unit[0] if compact else " " + unit
            return ("%d%s" if unit == "B" else "%.1f%s") % (n, shown)
        n /= 1024.0
    return "%d B" % n  # pragma: no cover - the loop always returns


def need_and_free(needed: int, free: int) -> Tuple[str, str]:
    """A room check's two sizes as its refusal says them: rounded to 0.1 they could read the same ("needs
    3.8 MiB, only 3.8 MiB free", or in two units, "needs 1.0 MiB, only 1024.0 KiB free"), which reads as a
    false refusal; then each also in bytes. The test is on the values shown, not on their text."""
    shown = human_size(needed), human_size(free)
    if _shown_value(needed) != _shown_value(free):
        return shown
    return "%s (%d bytes)" % (shown[0], needed), "%s (%d bytes)" % (shown[1], free)


def _shown_value(n: int) -> float:
    """The size `human_size` shows, in bytes: its number as rounded, times its unit."""
    number, unit = human_size(n).split()
    return float(number) * 1024 ** ("B", "KiB", "MiB", "GiB", "TiB").index(unit)


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds from `90s`, `30m`, `26h`, `7d` (a bare number is hours, as ages are read)."""
    from .errors import UsageError

    t = text.strip().lower()
    unit = t[-1:] if t[-1:] in _UNITS else "h"
    number = t[:-1] if t[-1:] in _UNITS else t
    try:
        value = float(number)
    except ValueError:
        raise UsageError("%r is not a duration (use e.g. 90s, 30m, 26h, 7d)" % text) from None
    if not 0 <= value < float("inf"):  # "nan" compares False with every age: nothing would ever be too old
        raise UsageError("%r is not a duration (use e.g. 90s, 30m, 26h, 7d)" % text)
    return value * _UNITS[unit]
