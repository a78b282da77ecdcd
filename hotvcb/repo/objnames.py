"""Which names in a repository's folders are its objects (docs/repository.md "Layout"), and which are foreign.

A repository on a NAS share gets files no hotvcb wrote: a Mac Finder's `.DS_Store` in each folder it showed,
Windows' `Thumbs.db`, a Synology's `@eaDir/`, an NFS client's `.nfs…` of a file deleted while open. Read as
objects, one such file failed every backup and prune (a `damaged/` or `condemned/` object that does not read),
stopped GC for ever (a "damaged record" in `snapshots/`) or was called damage that "may hold chunks of any
backup" (`packs/`). Every reader therefore lists a folder through `ours`: a name no hotvcb writes there is no
object, left alone by all of them (GC deletes none) and named by verify only."""

from typing import Iterable, List

from .. import lazyre

PACKS, INDEXES, SNAPSHOTS, CONDEMNED, VERIFIED = "packs/", "indexes/", "snapshots/", "condemned/", "verified/"
DAMAGED = "damaged/"

_ID = r"[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}"  # a snapshot id: records.new_snapshot_id
# each folder's objects by name; a mark's <random> and a damaged/ object's <tag> as loose as hotvcb ever was
_NAME = lazyre.compile(r"(?:packs/[0-9a-f]{2}/[0-9a-f]{64}[^/]*|indexes/%s\.[0-9]+|snapshots/%s"
                       r"|condemned/[0-9]+-[^/]+|verified/[0-9a-f]{64}|damaged/[0-9a-f]{64}\.[^/]+)" % (_ID, _ID))


def ours(name: str) -> bool:
    """Whether `name` (a listing's, `packs/ab/ab…`) is named as hotvcb names the objects of its folder. A pack's
    name may go on after its 64 hex: a copy made by hand (`<hex>.bak`) is a pack, which GC drops as a
    duplicate (tests/test_outsider_gcdup.py)."""
    return _NAME.fullmatch(name) is not None


def foreign(names: Iterable[str]) -> List[str]:
    """Those of `names` that are no hotvcb object, in order."""
    return [name for name in names if not ours(name)]
