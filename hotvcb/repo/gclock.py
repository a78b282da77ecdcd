"""One garbage collection at a time per repository: the `locks/gc` object.

Backups never take it (they only add objects; docs/repository.md "Garbage
collection and concurrency" says why that is safe). It holds the run record
of its GC, with this machine's id as its `host` and, where /proc tells it, its
process's start time as its `pidstart`: host names are not unique (ESXi hosts
are called `localhost` by default), so a lock is judged by its pid only where
both name and id are this machine's, and by its age otherwise; and a pid is
reused, by another hotvcb too, so where the lock and /proc both tell the
process's start time they must agree. A lock whose pid cannot tell (a GC in
another pid namespace of this machine, a process /proc hides from us) is
judged by its age, as another machine's (runid.running).

A stale lock is taken over as store/lock.py takes over the run lock: inside a
short-lived second object `locks/gc.takeover` (written with put_new, so one
taker at a time), and only if the lock still holds the record judged stale.
Of two prunes that both found a dead GC's lock, one replaces it; the other
then finds a live GC's lock, not the dead one, and refuses. Each verdict
judges the text read for it (`stale` reads no lock itself), so the record a
takeover removes is the very one judged, read once before the guard and once
inside it.
"""

import time
from contextlib import contextmanager
from typing import Iterator, Optional

from ..clockage import UNPROBED_STALE
from ..errors import RepoError
from ..runid import RunId, machine_name, parse, running
from ..thishost import known_this_host, this_host
from .backend import NotFound
from .repository import Repository

LOCK = "locks/gc"
GUARD = LOCK + ".takeover"
GUARD_STALE = 60.0  # a takeover takes milliseconds; a guard this far from the repository's clock is no taker
SHOWN = 200  # characters of a lock quoted in a refusal (a planted one may be megabytes of anything)


def stale(repo: Repository, me: RunId, lock: Optional[bytes]) -> bool:
    """Whether the lock whose content is `lock` (read(): None where none is) is free to take: absent, or left
    by a GC that cannot be at work. A lock of this machine (its name, and its id or none: a lock written
    before locks carried one) is judged by its pid: a process that is no hotvcb (gone, reused by another
    program, pid 0), that is `me`'s pid in another run, or that started at another time than the lock
    records (the pid reused by another hotvcb; a lock without the time, an older hotvcb's, a host
    without /proc or a reader whose boot-time offset differs cannot tell) is no GC. Where its pid cannot tell
    (runid.running: a GC in another pid namespace of this machine, a process /proc hides from us), and for
    any other lock, it is judged by its age on the repository's clock:
    older than the grace period, or dated more than that ahead (clock garbage no GC writes), it is stale.
    Readers ask it too (settle.py): a stale lock is no GC moving packs. This machine's id is `me`'s (a GC's,
    made by gc_lock), else read where it exists: a reader (a read-only command) makes no host-id file."""
    if lock is None:
        return True
    by_pid = _stale_by_pid(me, lock)
    if by_pid is not None:
        return by_pid
    info = repo.backend.stat(LOCK)
    return info is None or abs(repo.backend.now() - info.mtime) > repo.config.grace


def _stale_by_pid(me: RunId, lock: bytes) -> Optional[bool]:
    """Whether this machine's lock `lock` is stale by its pid (stale's rules); None where its pid cannot tell
    (another machine's lock, a pid namespace or /proc that hides it): then its age judges."""
    holder = parse(lock.decode("utf-8", "replace"))
    if holder is not None and holder.same_machine(me) and me.machine == machine_name() \
            and holder.host in ("", me.host or known_this_host()):
        by_pid = running(holder, me)
        if by_pid is not None:
            return not by_pid
    return None


def read(repo: Repository) -> Optional[bytes]:
    """The lock's content now, for one verdict of `stale`; None where there is none (or a name that holds no
    object: a dangling symlink)."""
    try:
        return repo.backend.get(LOCK)
    except NotFound:
        return None


def _shown(data: Optional[bytes]) -> str:
    """A lock's content for one line of an error: bounded, control characters and line breaks as '?'."""
    text = (data or b"").decode("utf-8", "replace").strip()
    cut = text[:SHOWN] + ("..." if len(text) > SHOWN else "")
    return "".join(c if c.isprintable() else "?" for c in cut) or "an empty lock"


def _running(judged: Optional[bytes]) -> RepoError:
    """The refusal of a GC (and of a prune, and of its dry run) while the live GC whose lock is `judged` runs."""
    return RepoError("another garbage collection of this repository is running (%s)" % _shown(judged))


def refuse_if_held(repo: Repository) -> None:
    """Raise what taking the lock now would raise while a live GC holds it, taking nothing: prune's dry run
    foresees the refusal of the prune (it said "nothing removed", exit 0, where the prune then refused, exit 1).
    Judged as stale judges it, but a lock its pid cannot tell is aged by this machine's clock: the repository's
    (backend.now) is read by writing a probe, and a dry run writes nothing. That clock may differ from the
    repository's by UNPROBED_STALE (an NTP-less NFS server), so only a lock past the grace period by more is
    stale here; one within the margin of it is foreseen as refusing, saying it cannot tell (the prune tells)."""
    judged = read(repo)
    if judged is None:
        return
    by_pid = _stale_by_pid(RunId.new(), judged)
    if by_pid is not None:
        if not by_pid:
            raise _running(judged)
        return
    info = repo.backend.stat(LOCK)
    if info is None:
        return
    age = abs(time.time() - info.mtime)
    grace = repo.config.grace
    if age > grace + UNPROBED_STALE:
        return
    if age < grace - UNPROBED_STALE:
        raise _running(judged)
    raise RepoError("cannot tell whether another garbage collection of this repository is running (%s): its lock "
                    "is %d s old by this machine's clock, within %d s of the grace period (%d s) that the prune judges "
                    "it by on the repository's clock" % (_shown(judged), age, UNPROBED_STALE, grace))


def _take(repo: Repository, me: RunId, record: bytes) -> None:
    if repo.backend.put_new(LOCK, record):
        return
    judged = read(repo)  # only this very record is removed as stale
    if not stale(repo, me, judged):
        raise _running(judged)
    _take_over(repo, me, record, judged)
    if not repo.backend.put_new(LOCK, record):
        raise RepoError("another garbage collection of this repository started just now (%s)"
                        % _shown(read(repo)))


def _take_over(repo: Repository, me: RunId, record: bytes, judged: Optional[bytes]) -> None:
    """Remove the stale lock `judged`, inside the guard, if it is still there and still stale."""
    _enter_guard(repo, record)
    try:
        now = read(repo)  # inside the guard, judged afresh: the verdict outside it may be old by now
        if now == judged and stale(repo, me, now):
            repo.backend.delete(LOCK)
    finally:
        try:
            if repo.backend.get(GUARD) == record:
                repo.backend.delete(GUARD)
        except NotFound:
            pass  # deleted as stale by another taker: ours no longer


def _enter_guard(repo: Repository, record: bytes) -> None:
    """The takeover guard stored as ours, or RepoError while another taker holds it.

    A guard is a taker at work only while it holds an object dated within GUARD_STALE of the
    repository's clock, either way (a takeover takes milliseconds): one older is a taker that died
    mid-way, one dated ahead is clock garbage, and a name that holds no object twice over (a dangling
    symlink) is no taker at all. Each of those is removed once; none of them may block GC for ever."""
    empty_once = removed = False
    while not repo.backend.put_new(GUARD, record):
        info = repo.backend.stat(GUARD)
        if info is None and not empty_once:
            empty_once = True  # its taker has just finished: try again
            continue
        if removed or (info is not None and abs(repo.backend.now() - info.mtime) <= GUARD_STALE):
            raise RepoError("another garbage collection of this repository is taking the lock over just now")
        repo.backend.delete(GUARD)
        removed = True


@contextmanager
def gc_lock(repo: Repository) -> Iterator[None]:
    """Held for the body. Given back on any way out once taking it began: a put_new that stored the lock and
    then failed (a PUT that timed out after the server stored it, Ctrl-C right after the link where no
    handler records it) must not leave it for the grace period. Only our own record is removed (its run id
    is ours alone)."""
    me = RunId.new().on_host(this_host()).with_process_start()
    record = (me.text() + "\n").encode("utf-8")
    try:
        _take(repo, me, record)
        yield
    finally:
        if read(repo) == record:  # absent: never stored, or taken over as stale while we ran (a GC
            repo.backend.delete(LOCK)  # longer than the grace period)
