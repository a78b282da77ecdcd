"""One garbage collection at a time per repository: the `locks/gc` object.

Backups never take it (they only add objects; docs/repository.md "Garbage
collection and concurrency" says why that is safe). It holds the run record
of its GC; a holder that is a dead process on this machine, or a lock older
than the repository's grace period, is taken over.
"""

import socket
from contextlib import contextmanager
from typing import Iterator

from ..errors import RepoError
from ..pids import alive
from ..runid import RunId, parse
from .backend import NotFound
from .repository import Repository

LOCK = "locks/gc"


def stale(repo: Repository, me: RunId) -> bool:
    """Whether the lock is free to take: absent, or left by a GC that cannot be at work (a dead process on this
    machine, one that was `me`'s pid before, or older than the grace period from another machine). Readers
    ask it too (settle.py): a stale lock is no GC moving packs."""
    try:
        text = repo.backend.get(LOCK).decode("utf-8", "replace")
    except NotFound:
        return True
    info = repo.backend.stat(LOCK)
    holder = parse(text)
    if holder is not None and holder.machine == me.machine == socket.gethostname():
        return not alive(holder.pid) or (holder.pid == me.pid and holder.run != me.run)
    return info is None or repo.backend.now() - info.mtime > repo.config.grace


def _take(repo: Repository, me: RunId, record: bytes) -> None:
    if not repo.backend.put_new(LOCK, record):
        if not stale(repo, me):
            raise RepoError("another garbage collection of this repository is running (%s)"
                            % repo.backend.get(LOCK).decode("utf-8", "replace").strip())
        repo.backend.delete(LOCK)
        if not repo.backend.put_new(LOCK, record):
            raise RepoError("another garbage collection of this repository started just now")


@contextmanager
def gc_lock(repo: Repository) -> Iterator[None]:
    """Held for the body. Given back on any way out once taking it began: a put_new that stored the lock and
    then failed (a PUT that timed out after the server stored it, Ctrl-C right after the link where no
    handler records it) must not leave it for the grace period. Only our own record is removed (its run id
    is ours alone)."""
    me = RunId.new()
    record = (me.text() + "\n").encode("utf-8")
    try:
        _take(repo, me, record)
        yield
    finally:
        try:
            mine = repo.backend.get(LOCK) == record
        except NotFound:
            mine = False  # never stored, or taken over as stale while we ran (a GC longer than the grace period)
        if mine:
            repo.backend.delete(LOCK)
