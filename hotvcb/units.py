"""Numbers as people read them in logs and tables."""


def human_size(n: float, compact: bool = False) -> str:
    """1.5 GiB in log lines; compact ("1.5G") where a table column is narrow."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            shown = unit[0] if compact else " " + unit
            return ("%d%s" if unit == "B" else "%.1f%s") % (n, shown)
        n /= 1024.0
    return "%d B" % n  # pragma: no cover - the loop always returns


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
    if value < 0:
        raise UsageError("%r is not a duration (use e.g. 90s, 30m, 26h, 7d)" % text)
    return value * _UNITS[unit]
