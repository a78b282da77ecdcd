"""Where a repository's chunk lies (`Location`), which of its copies is the one read and kept (`copy_rank`),
the GC marks that condemn packs (`Mark`), and a chunk that cannot be read back, named with the backups that
need it (`BadChunk`, `PackGone`)."""

from dataclasses import dataclass
from typing import Container, Dict, Iterable, List, Set, Tuple

from ..errors import RepoError
from .format import Blob
from .records import Snapshot


@dataclass(frozen=True)
class Location:
    """Where a chunk is stored: its pack and the blob in it."""

    pack: str
    blob: Blob


@dataclass(frozen=True)
class Mark:
    """A GC mark (`condemned/<time>-<random>`): the packs it condemns, and why each (only said, never acted on)."""

    name: str
    mtime: float
    packs: List[str]
    why: Dict[str, str]


def needed_by(users: Iterable[Snapshot]) -> str:
    """The backups that need a chunk, as every line naming the chunk words them."""
    return "needed by " + ", ".join(str(u) for u in users)


class BadChunk(RepoError):
    """A chunk that cannot be read back as its hash says, named with the backups that need it."""

    def __init__(self, digest: bytes, pack: str, reason: str, users: Iterable[Snapshot] = ()):
        users = list(users)
        needed = "; " + needed_by(users) if users else ""
        super().__init__("chunk %s in %s: %s%s" % (digest.hex(), pack or "no pack", reason, needed))
        self.digest, self.pack, self.reason, self.users = digest, pack, reason, users


class PackGone(BadChunk):
    """The pack a chunk map named is gone: a sweep deleted it since the map was built, after copying out
    what a backup needs (a reader builds its map again rather than report the chunk lost)."""


def copy_rank(pack: str, digest: bytes, damaged: Dict[str, Set[bytes]],
              condemned: Container[str]) -> Tuple[bool, bool, bool, str]:
    """Of a chunk's copies, the smallest is the one read and the one GC keeps (its live copy): a sound
    copy, then one in a pack no mark names, then one in a pack without recorded damage (GC drops such a
    pack), then the smallest pack name, so that of two writers' identical packs every reader and GC
    pick the same one (docs/repository.md "Garbage collection and concurrency")."""
    bad = damaged.get(pack, ())
    return digest in bad, pack in condemned, bool(bad), pack
