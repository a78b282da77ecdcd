"""Whether the run whose record a thing carries is still at work: the one rule by which every leftover of
ours is judged before it is removed (a backup's snapshot, power-off and volume markers, `-partial` folder, a
restore's scratch and unfinished VM folders, the NFS mount marker), so none of them is taken from a live run.

A record of this machine whose process still runs (owner_alive: its lock
file may have been deleted under it) is never a leftover, and one whose
process cannot be told from here (another pid namespace, a process /proc
hides) is kept, or judged by its heartbeat where it has one: never removed
on a guess. The runs whose locks were taken over as gone (store/lock.py:
HostLock.takeovers, by a stale heartbeat where the pid cannot tell) are
dead for everything carrying their run ids whose pid cannot tell either,
made before the takeover: a run only stopped (SIGSTOP past STALE_AFTER) may
go on after it, until its heartbeat finds its lock taken, and what it makes
then (a snapshot named after then, a power-off marker written, a `-partial`
owner file touched by its heartbeat) is a live run's. A dead run made
nothing in the STALE_AFTER - HEARTBEAT seconds before its lock was taken
over (it missed its heartbeats): HEARTBEAT of that is slack for clocks and
timestamps to the second. A pid that says alive still wins (the record is a
file anyone who can write the run folder may plant).
"""

import time
from typing import Callable, Mapping, Optional

from ..clockage import UNPROBED_STALE, dated_ahead
from ..errors import HotvcbError
from ..runid import RunId, running
from ..shell import Shell
from ..store.lock import HEARTBEAT

NONE_DEAD = {}  # type: Mapping[str, float]  # no lock taken over: the `dead` default


def owner_alive(owner: RunId, run: RunId, dead: Mapping[str, float] = NONE_DEAD,
                made: Callable[[], Optional[float]] = lambda: None) -> Optional[bool]:
    """Whether the run that wrote `owner` still runs, told by its pid as the locks tell theirs
    (runid.running: a live hotvcb that started when the record says), even if its lock file was
    deleted under it: the lock is not the only proof we go by. None where its pid cannot tell (another
    pid namespace of this machine, a live process /proc hides from us): what it owns is kept, or judged
    by its heartbeat where it has one. False for another machine's record, whose pid tells nothing
    here (its host id and heartbeat do). A run in `dead` (its lock was taken over as gone) is dead where
    its pid cannot tell, never against a pid that says alive (anyone who can write the run folder can plant
    that record), unless the thing was `made` (epoch; None: not known) after the takeover: then it runs on.
    """
    alive = running(owner, run) if owner.same_machine(run) else None
    if alive is not None:
        return alive
    if owner.run in dead:
        when = made()
        return when is not None and when > dead[owner.run] - HEARTBEAT
    return None if owner.same_machine(run) else False


def made_at(age: Optional[float]) -> Optional[float]:
    """When a thing `age` seconds old by its host's clock was made, by ours (the clocks may disagree on the
    time, not on how long ago); None where that cannot be told: gone, or dated ahead of the clock
    (clockage.py), which read as "just now" made a dead run's marker a live run's, made after the takeover."""
    return None if age is None or dated_ahead(age) else time.time() - age


def volume_age(shell: Shell, path: str, folder: str, run: RunId, dry_run: bool = False) -> Optional[float]:
    """How long since path was touched, by the clock of the volume that holds it and `folder`.

    An NFS server stamps mtimes with its own clock; a host whose clock is off
    by minutes would otherwise see another host's live, heartbeating folder as
    stale. A probe touched now in `folder` gives the volume's "now". Negative: dated ahead of the volume's
    clock (clockage.py). A dry run writes nothing there, no probe either: its age is by this machine's clock,
    which `unprobed_doubt` allows for.
    """
    age = shell.age(path)
    if age is None or dry_run:
        return age
    probe = folder.rstrip("/") + "/.hotvcb-clock." + run.run
    try:
        shell.write_text(probe, "")
        skew = shell.age(probe) or 0.0
    except HotvcbError:
        return age
    finally:
        try:
            shell.remove_tree(probe)
        except HotvcbError:
            pass
    return age - skew


def unprobed_doubt(age: Optional[float], within: float) -> bool:
    """Whether a dry run's volume_age (status, `-d dryrun`: by this machine's clock, no probe having read the
    volume's) cannot tell fresh from stale by `within`: the volume's clock may be off ours either way by as
    much as UNPROBED_STALE allows for a lag (UNPROBED_STALE - within), so only an age past UNPROBED_STALE is
    stale beyond doubt and only one fresh even on a volume that far ahead (below within - that) is fresh beyond
    doubt. In between it may be a live writer's on a lagging volume or a dead one's on a volume ahead (a stamp
    of 3 minutes ago by a NAS 10 minutes ahead reads "3 minutes in the future" here) -- cannot tell (the real
    cleanup probes and tells)."""
    skew = UNPROBED_STALE - within
    return age is not None and within - skew <= age < UNPROBED_STALE
