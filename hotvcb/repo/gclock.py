"""One garbage collection at a time per repository: the `locks/gc` object.

Backups never take it (they only add objects; docs/repository.md "Garbage
collection and concurrency" says why that is safe). It holds the run record
of its GC, with this machine's id as its `host`: host names are not unique
(ESXi hosts are called `localhost` by default), so a lock is judged by its pid
only where both name and id are this machine's, and by its age otherwise.

A stale lock is taken over as store/lock.py takes over the run lock: inside a
short-lived second object `locks/gc.takeover` (written with put_new, so one
taker at a time), and only if the lock still holds the record judged stale.
Of two prunes that both found a dead GC's lock, one replaces it; the other
then finds a live GC's lock, not the dead one, and refuses.
"""

import functools
import socket
from contextlib import contextmanager
from typing import Iterator, Optional

from ..errors import HotvcbError, RepoError
from ..pids import is_hotvcb
from ..runid import RunId, machine_id, parse
from ..shell import LocalShell
from ..store.lock import TAKEOVER_STALE, host_id
from .backend import NotFound
from .repository import Repository

LOCK = "locks/gc"
GUARD = LOCK + ".takeover"
HOST_ID_DIR = "/var/run"  # hosts/esxi.py's run_dir: where an ESXi host (no /etc/machine-id) keeps its host id
SHOWN = 200  # characters of a lock quoted in a refusal (a planted one may be megabytes of anything)


@functools.lru_cache(maxsize=None)
def this_host() -> str:
    """This machine's id: /etc/machine-id, or on an ESXi host the id its run lock's records carry; "" if
    neither can be had (this machine's locks are then told from others' by name alone)."""
    try:
        return machine_id() or host_id(LocalShell(), HOST_ID_DIR)
    except HotvcbError:
        return ""


def stale(repo: Repository, me: RunId) -> bool:
    """Whether the lock is free to take: absent, or left by a GC that cannot be at work. A lock of this machine
    (its name, and its id or none: a lock written before locks carried one) is judged by its pid: a process
    that is no hotvcb (gone, reused by another program, pid 0) or that is `me`'s pid in another run is no GC.
    Any other lock is judged by its age on the repository's clock: older than the grace period, or dated
    more than that ahead (clock garbage no GC writes), it is stale. Readers ask it too (settle.py): a stale
    lock is no GC moving packs."""
    try:
        text = repo.backend.get(LOCK).decode("utf-8", "replace")
    except NotFound:
        return True
    info = repo.backend.stat(LOCK)
    holder = parse(text)
    if holder is not None and holder.machine == me.machine == socket.gethostname() \
            and holder.host in ("", this_host()):
        return not is_hotvcb(holder.pid) or (holder.pid == me.pid and holder.run != me.run)
    return info is None or abs(repo.backend.now() - info.mtime) > repo.config.grace


def _text(repo: Repository) -> Optional[bytes]:
    try:
        return repo.backend.get(LOCK)
    except NotFound:
        return None


def _shown(data: Optional[bytes]) -> str:
    """A lock's content for one line of an error: bounded, control characters and line breaks as '?'."""
    text = (data or b"").decode("utf-8", "replace").strip()
    cut = text[:SHOWN] + ("..." if len(text) > SHOWN else "")
    return "".join(c if c.isprintable() else "?" for c in cut) or "an empty lock"


def _take(repo: Repository, me: RunId, record: bytes) -> None:
    if repo.backend.put_new(LOCK, record):
        return
    judged = _text(repo)  # read before the verdict: only this very record is removed as stale
    if not stale(repo, me):
        raise RepoError("another garbage collection of this repository is running (%s)" % _shown(_text(repo)))
    _take_over(repo, me, record, judged)
    if not repo.backend.put_new(LOCK, record):
        raise RepoError("another garbage collection of this repository started just now (%s)"
                        % _shown(_text(repo)))


def _take_over(repo: Repository, me: RunId, record: bytes, judged: Optional[bytes]) -> None:
    """Remove the stale lock `judged`, inside the guard, if it is still there and still stale."""
    _enter_guard(repo, record)
    try:
        if _text(repo) == judged and stale(repo, me):  # None: a name that holds no object (a dangling symlink)
            repo.backend.delete(LOCK)
    finally:
        try:
            if repo.backend.get(GUARD) == record:
                repo.backend.delete(GUARD)
        except NotFound:
            pass  # deleted as stale by another taker: ours no longer


def _enter_guard(repo: Repository, record: bytes) -> None:
    """The takeover guard stored as ours, or RepoError while another taker holds it.

    A guard is a taker at work only while it holds an object dated within TAKEOVER_STALE of the
    repository's clock, either way (a takeover takes milliseconds): one older is a taker that died
    mid-way, one dated ahead is clock garbage, and a name that holds no object twice over (a dangling
    symlink) is no taker at all. Each of those is removed once; none of them may block GC for ever."""
    empty_once = removed = False
    while not repo.backend.put_new(GUARD, record):
        info = repo.backend.stat(GUARD)
        if info is None and not empty_once:
            empty_once = True  # its taker has just finished: try again
            continue
        if removed or (info is not None and abs(repo.backend.now() - info.mtime) <= TAKEOVER_STALE):
            raise RepoError("another garbage collection of this repository is taking the lock over just now")
        repo.backend.delete(GUARD)
        removed = True


@contextmanager
def gc_lock(repo: Repository) -> Iterator[None]:
    """Held for the body. Given back on any way out once taking it began: a put_new that stored the lock and
    then failed (a PUT that timed out after the server stored it, Ctrl-C right after the link where no
    handler records it) must not leave it for the grace period. Only our own record is removed (its run id
    is ours alone)."""
    me = RunId.new().on_host(this_host())
    record = (me.text() + "\n").encode("utf-8")
    try:
        _take(repo, me, record)
        yield
    finally:
        if _text(repo) == record:  # absent: never stored, or taken over as stale while we ran (a GC
            repo.backend.delete(LOCK)  # longer than the grace period)
