"""Numbers as people read them in logs and tables."""


def human_size(n: float, compact: bool = False) -> str:
    """1.5 GiB in log lines; compact ("1.5G") where a table column is narrow."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            shown = unit[0] if compact else " " + unit
            return ("%d%s" if unit == "B" else "%.1f%s") % (n, shown)
        n /= 1024.0
    return "%d B" % n  # pragma: no cover - the loop always returns
