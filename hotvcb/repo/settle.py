"""Waiting out a listing that lags behind another host's sweep, for restore and verify alike.

A sweep on another host copies the chunks backups need out of the packs it
deletes into new packs; this host's listing of packs/ may not show those for up
to the repository's settle time (the backend contract: NFS attribute caching).
So a reader that finds a chunk in no listed pack, while something may have moved
it, lists again after pauses of 1, 2, 4 ... s, the last once the settle time has
passed since the chunk was first missed, and only then gives up. It says so once
per pack (or chunk) a run waits for, naming the chunk and the backups that need
it (the default settle time is 10 minutes: a silent wait that long looks like a
hang), and again, worded alike, when it gives up. A signal ends the wait
(interrupt.Interrupted), so Ctrl-C or SIGTERM never waits the settle time out.
"""

import math
import time
from typing import Callable, Set

from .. import interrupt
from ..errors import RepoError
from ..runid import RunId
from .gclock import LOCK, read, stale
from .chunks import BadChunk, needed_by
from .repository import Repository

Say = Callable[[str], None]


def silent(_line: str) -> None:
    """The library's default `say`: a caller that shows nothing to anyone (a test, a tool)."""


class Settle:
    """A run's waits, shared by all it reads (each disk and file of a restore): `say` is the run's log line,
    and each pack or chunk waited for is named in it once."""

    def __init__(self, repo: Repository, say: Say):
        self.repo, self.say = repo, say
        self.me = RunId.new()  # who asks whether the GC lock is stale: a reader, never its holder
        self.waited = set()  # type: Set[str]
        self.unsure = False  # whether it was said that the GC lock does not read

    def again(self, pack: str, missing: BadChunk, since: float, listed: float, moved: bool, more: int = 0) -> bool:
        """Whether to list again for the chunk `missing` names (in `pack`, which a read found gone; "": in no
        listed pack, with `more` others), first missed at `since` (time.monotonic), which the listing begun at
        `listed` lacked; True after the pause before that listing. False (give up) once a listing begun the
        settle time after the miss lacked it, or at once where nothing can have moved it: no read found its
        pack gone (`moved`) and no GC is at work (a chunk simply missing, its pack's table damaged, say, is
        bad news that a silent wait would only delay). The wait is said once per pack (or chunk) a run
        waits for, however many disks or listings meet it."""
        settle = self.repo.config.settle
        if listed >= since + settle or not (moved or self.sweeping()):
            return False
        now = time.monotonic()
        key = pack or missing.digest.hex()
        if key not in self.waited:
            self.waited.add(key)
            self.say("waiting up to %d s for %s: a GC on another host may be moving packs, and this host's listing "
                     "of them may lag behind it that long (the repository's settle_seconds)"
                     % (math.ceil(max(0.0, since + settle - now)), naming(pack, missing, more)))
        interrupt.sleep_until(min(since + settle, now + max(1.0, now - since)))  # 1, 2, 4 ... s, the last at settle
        return True

    def give_up(self, pack: str, missing: BadChunk, since: float, more: int = 0) -> None:
        """Say that a wait (one `again` made) ended without the chunk `missing` names, worded as where it began."""
        self.say("gave up waiting for %s after %d s: %s"
                 % (naming(pack, missing, more), round(time.monotonic() - since), missing.reason))

    def sweeping(self) -> bool:
        """Is a GC at work (its lock held, or a mark of packs to delete waiting)? A lock gclock would take over
        (its GC dead) is none; one that does not read is judged by the marks alone, said once: the report
        of a lost chunk must not wait on, or be lost to, a lock nobody can read."""
        try:
            held = not stale(self.repo, self.me, read(self.repo))
        except RepoError as err:
            if not self.unsure:
                self.unsure = True
                self.say("cannot tell whether a GC holds %s (%s): going by its marks alone" % (LOCK, err))
            held = False
        return held or bool(self.repo.marks(strict=False))


def naming(pack: str, missing: BadChunk, more: int = 0) -> str:
    """What a wait is for, worded alike where it begins and where it is given up: the chunk (and how many more
    lack with it), the pack a read found gone or that no listed pack holds it, and the backups needing it."""
    return "chunk %s%s in %s%s" % (missing.digest.hex(), " and %d more" % more if more else "",
                                   "pack %s" % pack if pack else "no listed pack",
                                   " (%s)" % needed_by(missing.users) if missing.users else "")

