"""How long ago a thing was stamped, read off a clock that may have been wrong.

`Shell.age` is signed: a negative age is a stamp dated ahead of the host's clock now (a clock that ran
ahead when it was written, a wrong BIOS clock NTP set right since). Such an age is no age: read as 0 ("just
now") it made a dead run's lock dated a day ahead a live heartbeat for a day, and an admin's snapshot taken
while the clock ran a month ahead "0s old" for a month. A writer that is alive stamps by the very clock that
reads the stamp, so its stamps are never ahead of it by more than a rounding -- once it has stamped since the
clock was set. Right after a clock is stepped back, a live writer's last stamp is dated ahead too, until its
next beat: so a stamp dated ahead is "cannot tell" (`heartbeat` says None), never "dead" by itself. A caller that
may keep what it cannot tell (a sweep of `-partial` folders, restore folders, markers) keeps it; one that cannot
(a run lock, a takeover guard: refused, each run would be refused until the clock passes the stamp) watches it
(`beating`): a stamp that has not moved for longer than its writer's beat is a dead writer's."""

import time
from typing import Callable, NamedTuple, Optional, Tuple

from . import interrupt

SET_ASIDE = 86400.0  # a backup dated more than this ahead of the clock (more than zones and the clocks of hosts
# sharing a volume disagree by) was made while the clock ran ahead: rotation, prune, restore --latest and
# status set it aside, or it would be the "newest" until the clock passes it, each run dropping the one before
AHEAD_SLACK = 300.0  # seconds a stamp may be ahead of the clock reading it and still count (named at a run's
# start, clocks stepped by NTP, timestamps to the second)


WATCH_MARGIN = 1 / 3  # of a beat's period: a beat that late (a slow round trip, a loaded host) still counts
WATCH_SLOP = 3.0  # seconds two reads of a stamp that did not move may disagree by (stamps to the second, round trips)


UNPROBED_STALE = 1800.0  # seconds by this machine's clock past which a run that writes no clock probe (status, a
# dry run: jobs/ownership.py's volume_age, repo/gclock.py's refuse_if_held) calls a thing stale: past any lag of a
# volume's or repository's clock behind ours it allows for (an NTP-less NFS server's minutes); STALE_AFTER alone
# let a lag of 5 minutes make a live folder a dead run's

def heartbeat(age: Optional[float], within: float) -> Optional[bool]:
    """Whether a thing `age` seconds old (Shell.age) was stamped within `within` seconds of now: True; False when
    it is gone (None) or older; None when it is dated further ahead than that: its writer's clock was ahead, or
    this clock was just stepped back and a live writer has not stamped it since -- cannot tell."""
    if age is None:
        return False
    if age <= -within:
        return None
    return age < within


class Reading(NamedTuple):
    """A stamp's age (Shell.age; None: gone) and when it was read (time.monotonic, which no clock step moves)."""
    age: Optional[float]
    at: float


def moved(before: Reading, after: Reading) -> bool:
    """Whether the stamp was stamped anew (or made, or removed) between two readings: one that was not aged by
    just the time between them."""
    if before.age is None or after.age is None:
        return (before.age is None) != (after.age is None)
    return abs(after.age - before.age - (after.at - before.at)) > WATCH_SLOP


def beating(age_of: Callable[[], Optional[float]], within: float, period: float, since: Optional[Reading] = None,
            watching: Callable[[float, float], None] = lambda age, seconds: None) -> Tuple[bool, Reading]:
    """Whether a stamp its writer renews every `period` seconds (read by `age_of`) is a live writer's, and the
    reading that decided. Judged by `heartbeat`; one it cannot tell (dated ahead) is watched: read again after
    a period and WATCH_MARGIN (`watching(age, seconds)` is told first, to say why the run waits), alive if it
    moved, dead if not. `since`: the reading this returned for the same stamp a moment ago (a takeover's
    second look): compared with, not waited for again -- it ended a watch, or the stamp has moved since."""
    now = Reading(age_of(), time.monotonic())
    verdict = heartbeat(now.age, within)
    if verdict is not None:
        return verdict, now
    if since is None:
        assert now.age is not None
        wait = period * (1 + WATCH_MARGIN)
        watching(now.age, wait)
        interrupt.sleep_until(time.monotonic() + wait, step=1.0)
        since, now = now, Reading(age_of(), time.monotonic())
    return moved(since, now), now


def dated_ahead(age: Optional[float]) -> bool:
    """Whether `age` says its thing was stamped by a clock that was ahead (or is behind now), beyond the slack:
    its real age cannot be told."""
    return age is not None and age < -AHEAD_SLACK
