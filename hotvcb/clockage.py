"""How long ago a thing was stamped, read off a clock that may have been wrong.

`Shell.age` is signed: a negative age is a stamp dated ahead of the host's clock now (a clock that ran
ahead when it was written, a wrong BIOS clock NTP set right since). Such an age is no age: read as 0 ("just
now") it made a dead run's lock dated a day ahead a live heartbeat for a day, and an admin's snapshot taken
while the clock ran a month ahead "0s old" for a month. A writer that is alive stamps by the very clock that
reads the stamp, so its stamps are never ahead of it by more than a rounding; one dated further ahead is
clock garbage, as the repository's GC lock judges its own (repo/gclock.py)."""

from typing import Optional

SET_ASIDE = 86400.0  # a backup dated more than this ahead of the clock (more than zones and the clocks of hosts
# sharing a volume disagree by) was made while the clock ran ahead: rotation, prune, restore --latest and
# status set it aside, or it would be the "newest" until the clock passes it, each run dropping the one before
AHEAD_SLACK = 300.0  # seconds a stamp may be ahead of the clock reading it and still count (named at a run's
# start, clocks stepped by NTP, timestamps to the second)


def fresh(age: Optional[float], within: float) -> bool:
    """Whether a thing `age` seconds old (Shell.age; None: gone) was stamped within `within` seconds of now,
    either way: a heartbeat dated further ahead than that is no sign of life."""
    return age is not None and abs(age) < within


def dated_ahead(age: Optional[float]) -> bool:
    """Whether `age` says its thing was stamped by a clock that was ahead (or is behind now), beyond the slack:
    its real age cannot be told."""
    return age is not None and age < -AHEAD_SLACK
