"""A repository's backups as their records say (docs/repository.md "Snapshot record"): one backup
(`Snapshot`), whose VM it is of and how backups group by VM (`machines`), a record that does not read and of
which kind (`Unreadable`, `by_kind`), and a new record's id. Plain data: reading the records is
repository.py's."""

import datetime
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, NamedTuple, Set, Tuple

from .. import clockage
from ..errors import RepoError
from ..runlog import shown
from .backend import Unavailable, random_hex
from .format import NewerFormat


ZONES = (-12 * 3600.0, 14 * 3600.0)  # the UTC offsets local wall times have (Baker Island to Kiritimati)


@dataclass
class Snapshot:
    """One backup: what its record says (docs/repository.md "Snapshot record")."""

    id: str
    vm: str
    time: datetime.datetime  # local wall time, naive: what retention counts periods in
    disks: List[Dict[str, Any]]
    files: List[Dict[str, Any]]
    record: Dict[str, Any] = field(repr=False)

    def __str__(self) -> str:
        """How every line names the backup (prune's keep/remove lines, restore, a chunk's users): its VM's name
        as one field, a line feed or tab in it escaped, so a name cannot forge or shift a line of prune's plan."""
        return "%s @ %s (%s)" % (shown(self.vm, field=True), self.time.strftime("%Y-%m-%d %H:%M:%S"), self.id)

    def began(self) -> float:
        """The instant the backup began (epoch): its record's `utc`, the same whatever zone reads it (`time`
        read in the reader's zone made a fresh backup a day old under a monitor in another zone); a record
        without one (a tool's) by its local `time` in ours."""
        utc = self.record.get("utc")
        return float(utc) if utc else time.mktime(self.time.timetuple())

    def wall_skew(self) -> float:
        """How far its local `time` is off its instant `utc` beyond any time zone's offset (seconds; positive:
        ahead), 0 within them or without `utc`: the host's clock that gave `time` and the repository's that
        gave `utc` disagreed when it was made (one of them was wrong), so its age cannot be told for sure."""
        utc = self.record.get("utc")
        if not utc:
            return 0.0
        offset = (self.time.replace(tzinfo=datetime.timezone.utc).timestamp() - float(utc))
        return max(0.0, offset - ZONES[1]) or min(0.0, offset - ZONES[0])

    def hosts(self) -> Set[str]:
        """The ids of the host that made it: the run's host id (`host`, kept in the host's run folder: new
        after each reboot of an ESXi host, or of a QEMU host whose QMP folder is a tmpfs) and its system id
        (`host_system`, which outlives them; absent from records written before it). A record naming
        neither is of the host whose id is "" (one test's, a tool's)."""
        ids = {"host " + str(self.record.get("host") or "")}
        system = self.record.get("host_system")
        if system:
            ids.add("system " + str(system))
        return ids

    def of_vm(self, name: str, uuid: str, host: str, system: str = "") -> bool:
        """Whether this is a backup of the VM `name` with `uuid` (ESXi's uuid.bios, "" where it has none or is
        not known) on the host whose ids are `host` (runid's, kept until its next reboot) and `system` (its
        system id, "" where it has none): by uuid where both the VM and the record have one, else by the host
        that made it, known by either id (hosts). Another host's VM of that name is not this one, also where
        no uuid tells them apart (status took it for this VM's, which was never backed up)."""
        recorded = self.record.get("vm_uuid") or ""
        if self.vm != name:
            return False
        if recorded and uuid:
            return recorded == uuid
        return bool(self.hosts() & ({"host " + host} | ({"system " + system} if system else set())))


class DamagedRecord(RepoError):
    """A record that reads but disagrees with its own disk index on the disk (its size, its last chunk): damaged
    as a record that is not JSON is (docs/repository.md "Records that do not read"), found only once its index
    is read."""


class IndexUnreadable(RepoError):
    """A backup one of whose disk indexes does not read (missing, damaged, or not readable by this run): named
    with the backup (VM, time, id), which a bare "indexes/<id>.0 is missing" left the admin to find."""

    def __init__(self, snap: "Snapshot", error: RepoError):
        super().__init__("backup %s: %s" % (snap, error))
        self.snap, self.error = snap, error


@dataclass(frozen=True)
class Unreadable:
    """A snapshot record that does not read: which (`snapshots/<id>`), and why. Of three kinds, each with its
    own way out: written by a newer hotvcb (`newer`), not readable by this run now (`unavailable`: access, an
    I/O error), or else damaged (`damaged`: read, and not a whole record)."""

    record: str
    error: RepoError

    def __str__(self) -> str:
        return str(self.error)

    @property
    def newer(self) -> bool:
        """Written by a newer hotvcb: a backup this one cannot read, not a damaged one."""
        return isinstance(self.error, NewerFormat)

    @property
    def unavailable(self) -> bool:
        """This run could not read it (permission, an I/O error): nothing is known of it, a good backup perhaps."""
        return isinstance(self.error, Unavailable)

    @property
    def damaged(self) -> bool:
        """Read, and found not to be a whole record: no hotvcb restores from it."""
        return not (self.newer or self.unavailable)


class Kinds(NamedTuple):
    """Records that do not read, by kind: each kind has its own way out, which every message naming them gives
    (list, status, GC each say it their own way; the split is one)."""

    newer: List[Unreadable]
    unavailable: List[Unreadable]
    damaged: List[Unreadable]


def by_kind(bad: Iterable[Unreadable]) -> Kinds:
    """These records split into newer / unavailable / damaged, each kept in the order given."""
    bad = list(bad)
    return Kinds([u for u in bad if u.newer], [u for u in bad if u.unavailable], [u for u in bad if u.damaged])


def dated_ahead(snaps: Iterable[Snapshot], now: float) -> List[Snapshot]:
    """The backups that began (`utc`) more than a day (clockage.SET_ASIDE) after `now`, this machine's clock
    (the backend's, which `utc` is, would need a probe written; a day is far more than a file server's clock
    and ours disagree by): recorded while it ran ahead, set back since. Prune neither counts nor removes them and `restore
    --latest` passes over them, as rotation and restore do with a folder backup named so
    (store/rotation.dated_ahead): counted, such a backup was the "newest" for as long as the clock took to
    pass it, so keep-last 1 kept it and removed each night's real backup."""
    return [s for s in snaps if s.began() > now + clockage.SET_ASIDE]


def machines(snaps: Iterable[Snapshot]) -> Dict[Tuple[str, str], List[Snapshot]]:
    """The backups (in the order given) by the VM they are of, as prune keeps them and `restore --latest`
    picks one: a VM is its name and uuid, or where none was recorded (a QEMU VM has none) its name and the
    host that backed it up, so two hosts' VMs of one name are two VMs. A host is known by either of its
    ids (Snapshot.hosts): backups sharing one are of one host, so those made before and after a reboot
    (a new host id, the same system id), or before and after records carried the system id (the same host
    id), are one VM's. The key: (name, uuid), or (name, one of its host's ids)."""
    snaps = list(snaps)
    parent = {}  # type: Dict[Tuple[str, str], Tuple[str, str]]  # (name, host id) -> one linked to it

    def root(node: Tuple[str, str]) -> Tuple[str, str]:
        while parent.setdefault(node, node) != node:
            node = parent[node]
        return node

    for snap in snaps:
        if not snap.record.get("vm_uuid"):
            first, *rest = sorted((snap.vm, i) for i in snap.hosts())
            for node in rest:
                parent[root(node)] = root(first)
    groups = {}  # type: Dict[Tuple[str, str], List[Snapshot]]
    for snap in snaps:
        uuid = str(snap.record.get("vm_uuid") or "")
        key = (snap.vm, uuid) if uuid else root((snap.vm, min(snap.hosts())))
        groups.setdefault(key, []).append(snap)
    return groups


def new_snapshot_id(utc: float) -> str:
    stamp = datetime.datetime.fromtimestamp(int(utc), datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return "%s-%s" % (stamp, random_hex(4))
