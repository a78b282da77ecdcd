"""`hotvcb status` for VMs backed up into a repository (VM_BACKUP_REPOSITORY or `status --repo`).

A repository holds no half backups (a record is written last), so every backup
it lists is complete; what can still be wrong is its age, its chunks, and a
failed run since (its last-run record, store/lastrun.py: WARN as for a folder
backup, and named in the CRIT of a stale or never made backup, as there).
The newest backup of the VM (Snapshot.of_vm: its name and uuid, or
where there is none the host that made it: another host's VM of that name is
not this one) is judged by age as a folder backup is, and its last verify is
the oldest `verified/` marker among the packs that hold its chunks: the
backup was read whole no later than that. A pack without
a marker means "not wholly verified"; a chunk no pack holds is CRIT, and so is
one whose only copy a verify found damaged (`damaged/`): the pack's older
marker still stands for its other chunks, but the backup cannot be restored
until a later backup stores the chunk again. A record that does not read is
told on every VM's check (WARN at least: it may be any VM's newest), by kind
and way out (a newer hotvcb's: upgrade), which is judged on the records that read. So is a GC mark or
damaged/ object that does not read (every backup into the repository and every prune fail on it), in
verify's words.
The repository is read once per status run (records, pack tables, markers),
not once per VM.
"""

import time
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from .. import clockage
from ..errors import RepoError
from ..repo.backend import ObjectInfo
from ..repo.chunks import Location
from ..repo.records import Snapshot, Unreadable, by_kind, dated_ahead
from ..repo.repository import VERIFIED, Repository, open_path
from ..repo.verify import stopping
from ..units import human_size
from .status_backups import aged, no_good_backup
from .status_backups import dated_ahead as ahead_check
from .status_report import CRIT, OK, WARN, Check, Limits
from .status_report import _age as age_text


class RepoView:
    def __init__(self, path: str, host_id: str = "",
                 last_run: Callable[[str, str], Optional[Dict[str, Any]]] = lambda name, uuid: None,
                 system_id: str = ""):
        """`host_id`: this host's (runid.known_host_id), `system_id` its id that outlives reboots (the driver's);
        `last_run(name, uuid)`: the VM's last-run record."""
        self.path, self.host_id, self.system_id, self.last_run = path, host_id, system_id, last_run
        self._repo = None  # type: Optional[Repository]
        self._map = None  # type: Optional[Dict[bytes, Location]]
        self._marks = {}  # type: Dict[str, float]
        self._damaged = {}  # type: Dict[str, Set[bytes]]
        self._bad = []  # type: List[Unreadable]
        self._stopping = []  # type: List[str]  # the GC marks and damaged/ objects that do not read, as verify says

    def _open(self) -> Repository:
        """The repository, read; an error names it once (open_path's names it already: prefixed again, the
        admin read "repository F: repository F: ...")."""
        if self._repo is None:
            repo = open_path(self.path)
            try:
                # a record that does not read is said on every VM (it may be any one's newest), not CRIT for all
                self._snaps, self._bad = repo.readable_snapshots()
                self._marks = {i.name[len(VERIFIED):]: i.mtime for i in repo.objects(VERIFIED)}
                self._damaged = repo.damaged(failed=self._unread)
                repo.marks(failed=self._unread)
            except RepoError as err:
                raise self._named(err) from err
            self._repo = repo
        return self._repo

    def _unread(self, info: ObjectInfo, err: RepoError) -> None:
        """A GC mark or damaged/ object that does not read: every backup into the repository and every prune
        fail on it, so every VM's check names it (status said OK while they failed)."""
        self._stopping.append(stopping(info.name, err))

    def _named(self, err: RepoError) -> RepoError:
        return RepoError("repository %s: %s" % (self.path, err))

    def check(self, name: str, uuid: str, limits: Limits, now: float) -> Check:
        found = self._check(name, uuid, limits, now)
        if self._bad:
            found.message += "; %d backup record(s) in the repository do not read, maybe this VM's newest: %s" % (
                len(self._bad), unread(self._bad))
            found.details["unreadable_records"] = len(self._bad)
            found.details["newer_records"] = sum(1 for u in self._bad if u.newer)
            if found.severity == OK:
                found.severity = WARN
        if self._stopping:
            found.message += "; %s" % "; ".join(self._stopping)
            found.details["stopping_objects"] = len(self._stopping)
            if found.severity == OK:
                found.severity = WARN
        return found

    def _check(self, name: str, uuid: str, limits: Limits, now: float) -> Check:
        try:
            repo = self._open()
            mine = [s for s in self._snaps if s.of_vm(name, uuid, self.host_id, self.system_id)]
            if not mine:  # where a record does not read, it may be this VM's: "never" would be a guess
                return no_good_backup(name, "%s %s" % ("no backup this hotvcb reads in" if self._bad else
                                                       "never backed up into", self.path), self.last_run(name, uuid))
            ahead = dated_ahead(mine, now)  # set aside, as prune and restore --latest do
            newest = ([s for s in mine if s not in ahead] or mine)[-1]
            try:
                verified, damaged = self._verified(repo, newest)
            except RepoError as err:
                raise self._named(err) from err
        except RepoError as err:
            return Check(CRIT, "backup", name, str(err), {"repository": self.path})
        age = now - newest.began()
        size = sum(d["size"] for d in newest.disks)
        details = {"good_backups": len(mine), "newest_good": newest.id, "repository": self.path,
                   "age_seconds": int(age), "size_bytes": size,
                   "verified": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(verified)) if verified else None}
        if damaged:
            details.update(verified=None, damaged_chunks=len(damaged))
            return Check(CRIT, "backup", name, "newest backup %s needs %d chunk(s) a verify found damaged (chunk %s "
                         "in %s): it cannot be restored until the next backup of the VM stores them again" % (
                             newest.id, len(damaged), damaged[0][1].hex(), damaged[0][0]), details)
        text = "newest backup %s old (%s, %s), %d in the repository, %s" % (
            age_text(age), newest.id, human_size(size), len(mine),
            "verified %s" % details["verified"].replace("T", " ") if verified else "not wholly verified yet")
        if clockage.dated_ahead(age):
            return ahead_check(name, "newest backup " + newest.id, age, text, details)
        skew = newest.wall_skew()
        if abs(skew) > clockage.AHEAD_SLACK:
            return Check(WARN, "backup", name, "newest backup %s is named %s, %s %s of the instant it began, more "
                         "than any time zone is (the host's clock and the repository's disagreed when it was made: "
                         "one was wrong): its age cannot be told for sure; %s" % (
                             newest.id, newest.time.strftime("%Y-%m-%d %H:%M:%S"), age_text(abs(skew)),
                             "ahead" if skew > 0 else "behind", text), details)
        if ahead:
            text += "; %d backup(s) dated over a day ahead of the clock, set aside as prune and restore --latest " \
                "do (a clock that was ahead when they were made): %s" % (len(ahead), ", ".join(s.id for s in ahead))
            details["dated_ahead"] = [s.id for s in ahead]
        # a record's `time` is in whole seconds: one in the second the newest backup began is taken as after it
        # (it said OK for a run that failed a moment after the backup); a failure before it in that second was
        # overwritten by the good run (lastrun.settle)
        by_age = aged(name, text, details, age, limits, self.last_run(name, uuid),
                      int(newest.record.get("utc", 0)) - 1)
        return by_age or Check(WARN if age > limits.max_age or ahead else OK, "backup", name, text, details)

    def _verified(self, repo: Repository, snap: Snapshot) -> Tuple[Optional[float], List[Tuple[str, bytes]]]:
        """(When every pack holding the backup's chunks was last found good, the oldest such marker; the
        (pack, chunk)s whose copy a restore would read, the best there is, a verify found damaged)."""
        if self._map is None:
            self._map = repo.chunk_map()
        digests = set()  # type: Set[bytes]
        for disk in snap.disks:
            digests.update(d for _n, d in repo.disk_index(disk).entries)
        for f in snap.files:
            digests.update(bytes.fromhex(h) for h in f["chunks"])
        packs = set()  # type: Set[str]
        damaged = []  # type: List[Tuple[str, bytes]]
        for digest in digests:
            loc = self._map.get(digest)
            if loc is None:
                raise RepoError("backup %s needs chunk %s, which no pack holds" % (snap.id, digest.hex()))
            packs.add(loc.pack.rsplit("/", 1)[-1])
            if digest in self._damaged.get(loc.pack, ()):
                damaged.append((loc.pack, digest))
        times = [self._marks.get(p) for p in packs]  # type: List[Optional[float]]
        if not times or None in times:
            return None, sorted(damaged)
        return min(t for t in times if t is not None), sorted(damaged)


def unread(bad: List[Unreadable]) -> str:
    """The records that do not read, by kind, each with its way out (docs/repository.md "Records that do not read"):
    a newer hotvcb's is a good backup (upgrade), one this run could not read may be (access), a damaged one is
    verify's to name."""
    newer, unavailable, damaged = by_kind(bad)
    parts = []
    if newer:
        parts.append("%d written by a newer hotvcb (%s): upgrade hotvcb to read %s"
                     % (len(newer), ", ".join(u.record for u in newer), "it" if len(newer) == 1 else "them"))
    if unavailable:
        parts.append("%d this run cannot read (%s): give it access, or wait out the I/O error"
                     % (len(unavailable), "; ".join(str(u) for u in unavailable)))
    if damaged:
        parts.append("%d damaged (hotvcb verify --repo names them)" % len(damaged))
    return "; ".join(parts)
