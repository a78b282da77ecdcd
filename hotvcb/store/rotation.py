"""Which old backups to delete, and deleting them so no half-deleted one looks good.

ghettoVCB counted folders, so a run of failures could rotate away the last
good backup, and ROTATION_COUNT=0 deleted the backup just made. Here the
newest `count` good backups (health.judge) are kept, and only backups older
than the oldest of those are deleted. With fewer than `count` good backups
no good one is deleted at all. Failed or partial backups newer than that line
stay until good ones push them out, so an admin can still look at them; of
those a run failed (by their verdict: hotvcb's STATUS.warn, STATUS.error), only the newest `count` stay,
so a disk failing every night does not fill the volume with them.
Backups named more than a day after the host's clock (a clock that ran ahead,
set back since: dated_ahead) are set aside, neither counted nor removed; so are
backups whose manifest a newer hotvcb wrote (verdict.Health.newer): this release
cannot read who made them (another host sharing the volume, upgraded first).

A backup (a folder, or a .gz file) is first renamed to `<name>-deleting` (one
atomic step out of the good namespace), then removed: by the run's Deleter,
in a thread while the run goes on (deleter.py), or at once. A run killed in
between, or a removal the host refused, leaves a -deleting entry that the next
run of that VM (before its pre-flight counts the room) or `hotvcb cleanup`
removes (`finish_deleting`).
"""

from __future__ import annotations

import functools
from datetime import datetime, timedelta
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .. import clockage, crashpoint
from ..errors import HostError
from ..shell import Shell
from ..treeview import ScannedShell
from . import chain, health, layout, sidecar, verdict
from ..units import human_size
from .layout import BackupSet


# verdicts (verdict._not_ok's) on a backup a run could not make whole (hotvcb's STATUS.warn, STATUS.error)
FAILED = ("warn", "error")


def to_delete(backups: List[BackupSet], state: Callable[[BackupSet], str], count: int) -> List[BackupSet]:
    """The backups older than the oldest of the newest `count` good ones, and the failed ones (verdict FAILED) but
    the newest `count` of those; `backups` oldest first, in the order they were made (layout.list_backups: not by
    name in the hour summer time ends repeats); `state` a backup's verdict (verdict.Health.state). A failed
    backup is kept to be looked at, never counted as a good one; but a disk that failed every night made a
    STATUS.warn folder, most of a backup's size, every night, and none was ever deleted (none is behind a good
    one when no good one is made): the volume filled. Failed by the verdict, not by the STATUS word: ghettoVCB's
    STATUS.warn is a good backup, and one verify found wanting since (its .vmx lost) is no run's failure."""
    if count < 1:
        raise ValueError("rotation count must be at least 1")
    done = [b for b in backups if b.status not in ("partial", "deleting")]
    kept = [b for b in done if state(b) in verdict.GOOD_STATES]
    behind = done[:done.index(kept[-count])] if len(kept) > count else []
    failed = [b for b in done[len(behind):] if state(b) in FAILED]
    extra = failed[:-count]
    return behind + [b for b in done if b in extra]


def over_budget(backups: List[BackupSet], good: Callable[[BackupSet], bool], size: Callable[[BackupSet], int],
                budget: int, keep: Sequence[str] = ()) -> List[BackupSet]:
    """The oldest backups (`backups` in the order to_delete takes) to delete until the rest fit in `budget` bytes.

    The newest good backup always stays (a budget smaller than one backup
    keeps that one), and so do the paths in `keep` (the backup just made).
    """
    done = [b for b in backups if b.status not in ("partial", "deleting")]  # oldest first, as to_delete's
    goods = [b for b in done if good(b)]
    protected = set(keep) | ({goods[-1].path} if goods else set())
    total = sum(size(b) for b in done)
    doomed = []
    for b in done:
        if total <= budget:
            break
        if b.path in protected:
            continue
        doomed.append(b)
        total -= size(b)
    return doomed


PHANTOM = "(the backup this run makes)"


def rotate(shell: Shell, volume: str, vm_name: str, count: int, log, just_made: Optional[str] = None,
           source: Tuple[str, str] = ("", ""), budget: int = 0, dry_run: bool = False,
           phantom: Optional[int] = None, remove: Optional[Callable[[str], None]] = None) -> List[str]:
    """Delete what to_delete names for this VM (and, with a size budget, what over_budget
    names: the stricter rule wins); the paths removed, or with dry_run those that would be.
    `phantom` (a dry run's forecast): the size of the backup the run would make, counted as the
    newest good one.

    The backup this run just made is never among them, whatever the names say
    (a clock that ran ahead once names older backups "newer"): rotation then
    keeps one more than the count until time catches up, and says so.

    `source` is (host name, VM uuid) of the VM backed up. ghettoVCB's layout
    has one folder per VM *name*: two hosts sharing a volume, each with a VM
    called `web`, write into one folder. Backups whose manifest says another
    host made them of another VM are that host's to rotate, never ours.

    `remove(path)` removes what has been renamed to -deleting (a Deleter's, so the removal
    overlaps the rest of the run); by default it is removed here and now.
    """
    remove = remove or functools.partial(remove_now, shell, log)
    shell = ScannedShell(shell, layout.vm_root(volume, vm_name))  # one look at the VM's folder
    backups = layout.list_backups(shell, volume, vm_name, log.warning)  # where a backup run names odd folders, once
    verdicts = {b.path: health.judge(shell, b, remember=not dry_run) for b in backups
                if b.status not in ("partial", "deleting")}
    backups, unpacked = one_per_time(backups, verdicts)
    ahead = dated_ahead(backups, shell.now())
    if ahead:
        log.warning("%s: %d backup(s) are named later than the host's clock (%s): was the clock ahead when they "
                    "were made? Rotation neither counts nor removes them until the clock passes their names "
                    "(remove them by hand if they are stale)" % (vm_name, len(ahead), ", ".join(b.name for b in ahead)))
        backups = [b for b in backups if b not in ahead]
    newer = [b for b in backups if b.path in verdicts and verdicts[b.path].newer]
    if newer:
        log.warning("%s: %d backup(s) were made by a newer hotvcb (%s): this one cannot read their manifests, so "
                    "cannot tell whose they are or whether they are good; left alone, neither counted nor removed "
                    "(rotate them with that hotvcb, or upgrade this one)"
                    % (vm_name, len(newer), ", ".join(b.name for b in newer)))
        backups = [b for b in backups if b not in newer]
    if phantom is not None:
        newest = BackupSet(vm_name, PHANTOM, datetime.max, "ok")
        backups.append(newest)
        verdicts[PHANTOM] = verdict.Health("good")
        just_made = PHANTOM
    foreign = [b for b in backups if b.path in verdicts and made_elsewhere(verdicts[b.path].manifest, source)]
    if foreign:
        hosts = sorted({str((verdicts[b.path].manifest or {}).get("source_host")) for b in foreign})
        log.warning("%s: %d backup(s) in %s were made on %s of another VM with this name; they are left to "
                    "that host's rotation" % (vm_name, len(foreign), layout.vm_root(volume, vm_name), ", ".join(hosts)))
        backups = [b for b in backups if b not in foreign]
    removed = []
    doomed = to_delete(backups, lambda b: verdicts[b.path].state, count)
    why = {b.path: "rotation count %d" % count for b in doomed}
    if just_made is not None and just_made != PHANTOM and any(b.path == just_made for b in doomed):
        log.warning("%s: backups named later than the one just made exist (was the clock ahead?); "
                    "keeping %s" % (vm_name, just_made))
    doomed = [b for b in doomed if b.path != just_made]
    if budget:
        sizes = {}  # type: Dict[str, int]

        def size(b: BackupSet) -> int:
            if b.path == PHANTOM:
                return phantom or 0
            if b.path not in sizes:
                sizes[b.path] = backup_size(shell, b.path)
                if b.path in unpacked:
                    sizes[b.path] += backup_size(shell, unpacked[b.path])
            return sizes[b.path]

        rest = [b for b in backups if b not in doomed]
        for b in over_budget(rest, lambda b: verdicts[b.path].good, size, budget, [just_made] if just_made else []):
            doomed.append(b)
            why[b.path] = "size budget %s" % human_size(budget)
        left = sum(size(b) for b in rest if b not in doomed and b.status not in ("partial", "deleting"))
        if left > budget:
            log.warning("%s: its backups take %s, over the %s budget, but the newest good one always stays"
                        % (vm_name, human_size(left), human_size(budget)))
    # an incremental set aside stands on its base
    doomed = _spare_bases(shell, backups + ahead + newer, doomed, verdicts, log)
    for old in sorted(doomed, key=lambda b: (b.when, b.name)):
        state = verdicts[old.path].state
        if dry_run:
            log.info("Would remove old backup %s (%s) per %s" % (old.path, state, why[old.path]))
        else:
            log.info("Removing old backup %s (%s) per %s" % (old.path, state, why[old.path]))
            doomed_path = condemn(shell, old, unpacked.get(old.path), log)
            if doomed_path is not None:
                remove(doomed_path)
        removed.append(old.path)
        if old.path in unpacked:
            removed.append(unpacked[old.path])
    if not dry_run:  # in the folders older writers named too: their backups are rotated as this VM's
        for root in [r for r in layout.vm_roots(volume, vm_name) if shell.isdir(r)]:
            _tidy_records(shell, root, log)
    return removed


AHEAD = timedelta(seconds=clockage.SET_ASIDE)


def dated_ahead(backups: List[BackupSet], now: datetime) -> List[BackupSet]:
    """The backups named more than AHEAD after the host's clock `now`: made while it ran ahead (then set
    back: NTP, a fixed BIOS clock). Counted, they would be the "newest" for as long as the clock takes
    to pass them, and each run would remove the backup the run before made, the newest real data but
    its own; removed, a clock error would cost backups. So they are set aside, and said each run."""
    return [b for b in backups if b.when > now + AHEAD]


def one_per_time(backups: List[BackupSet], verdicts: Dict[str, "verdict.Health"]) -> Tuple[
        List[BackupSet], Dict[str, str]]:
    """The backups with a folder and a .gz of one name counted once, as the .gz (good if either is),
    and {that .gz: the folder} (layout.unpacked_pairs): one backup, which must not count twice toward the
    rotation count nor be condemned twice to one -deleting name."""
    unpacked = layout.unpacked_pairs([b for b in backups if b.path in verdicts])
    for gz, folder in unpacked.items():
        if not verdicts[gz].good:
            verdicts[gz] = verdicts[folder]
    return [b for b in backups if b.path not in unpacked.values()], unpacked


def restorable(path: str, own: Dict[str, "verdict.Health"], unpacked: Dict[str, str]) -> str:
    """Where to restore a backup one_per_time counted from: the path itself, or, where that is a .gz not
    good by its own verdict (`own`, as judged before one_per_time), the folder unpacked beside it."""
    twin = unpacked.get(path)
    return twin if twin and not own[path].good else path


def _tidy_records(shell: Shell, root: str, log) -> None:
    """Move the records (sidecar.gz_record) an older hotvcb kept beside their .gz backups, where
    ghettoVCB's rotation takes them for backups, into their folder; remove those of backups gone
    without hotvcb's rotation (ghettoVCB's, for an admin who went back to it for a while, or a hand's),
    but not one of a .gz being sealed (its record is written once `.<name>.gz.tmp` exists and before the
    archive has its name: seal.py) or being removed. The records are listed first and the VM's folder
    after, right before the removals: a record listed was then written after its archive's .gz.tmp
    appeared, so that listing sees the archive (a seal on another host sharing the volume included); a
    listing taken before the moves would not, and its record would be removed under the seal."""
    suffix = ".gz" + sidecar.GZ_VERIFY_SUFFIX
    folder = root + "/" + sidecar.GZ_RECORDS
    try:
        for entry in [e for e in shell.listdir(root) if e.endswith(suffix)]:
            old, new = root + "/" + entry, folder + "/" + entry
            if shell.exists(new):
                shell.remove_tree(old)
            else:
                shell.makedirs(folder)
                shell.rename(old, new)
        records = [e for e in (shell.listdir(folder) if shell.isdir(folder) else []) if e.endswith(suffix)]
        # each record by the name its backup gives it (a long one's is fitted: sidecar.gz_record)
        kept = {sidecar.gz_record(root + "/" + stem + ".gz").rpartition("/")[2]
                for stem in _gz_stems(shell.listdir(root))}
        for entry in [e for e in records if e not in kept]:
            shell.remove_tree(folder + "/" + entry)
    except HostError as err:
        log.warning("could not tidy the records of %s's compressed backups: %s" % (root, err))


def _gz_stems(entries: List[str]) -> List[str]:
    """`<VM>-<time>` of each .gz backup in a VM's folder: published, being removed, or being sealed."""
    stems = []
    for e in entries:
        for head, tail in (("", ".gz"), ("", layout.DELETING), (".", ".gz.tmp")):
            if e.startswith(head) and e.endswith(tail) and len(e) > len(head + tail):
                stems.append(e[len(head): -len(tail)])
    return stems


def _spare_bases(shell: Shell, backups: List[BackupSet], doomed: List[BackupSet],
                 verdicts: Dict[str, "verdict.Health"], log) -> List[BackupSet]:
    """Never delete a backup that a kept one stands on (an incremental's base, and its base)."""
    by_name = {b.name: b for b in backups}
    needed = {}  # type: Dict[str, str]  # base name -> the backup standing on it
    todo = [b for b in backups if b not in doomed and b.path in verdicts]
    while todo:
        b = todo.pop()
        files = sorted(((verdicts.get(b.path) and verdicts[b.path].manifest) or {}).get("files") or {})
        try:
            names = chain.bases(shell, b.path, files) if not b.compressed else []
        except HostError:
            names = []
        for name in names:
            if name not in needed and name in by_name:
                needed[name] = b.name
                todo.append(by_name[name])
    for b in doomed:
        if b.name in needed:
            log.info("Keeping %s: %s is an incremental on it" % (b.path, needed[b.name]))
    return [b for b in doomed if b.name not in needed]


def backup_size(shell: Shell, path: str) -> int:
    """Bytes a backup (a folder or .gz) takes on disk (a thin disk counts its allocated blocks), as rotation's
    budget, list and status count it; none for a symlink named like one (health.linked): what it names is
    elsewhere, and removing the link frees nothing here."""
    try:
        if layout.linked_elsewhere(shell, path) is not None:
            return 0
        if not shell.isdir(path):
            return shell.disk_usage(path)
        return sum(_usage(shell, path + "/" + rel) for rel in shell.list_files(path))
    except (HostError, OSError):
        return 0


def _usage(shell: Shell, path: str) -> int:
    """A file's bytes on disk; none for one that cannot be stat'ed (a link leading nowhere: the link to itself
    old ghettoVCB's RSYNC_LINK left in its backups), which must not make the whole backup count 0 B."""
    try:
        return shell.disk_usage(path)
    except (HostError, OSError):
        return 0


def made_elsewhere(data: Optional[Dict[str, Any]], source: Tuple[str, str]) -> bool:
    """A backup another host made of another VM with this name (a shared volume)."""
    host, uuid = source
    if not data or not host or not data.get("source_host"):
        return False  # ghettoVCB's, or an older hotvcb's: ours, as they always were
    if data["source_host"] == host:
        return False
    return not (uuid and data.get("vm_uuid") == uuid)  # the same VM, registered on another host now


def condemn(shell: Shell, b: BackupSet, unpacked: Optional[str] = None, log=None) -> Optional[str]:
    """Rename a backup out of the good namespace; the -deleting path, for removal. `unpacked`: the
    folder of a .gz unpacked beside it (one_per_time), condemned with it under the one -deleting name
    both would take: the .gz goes into that folder first, so a kill between the two renames leaves one
    folder for the next rotation, never a .gz whose -deleting name a folder holds. None where another run
    got there first (_removed_meanwhile): nothing left to remove."""
    doomed = (b.path[: -len(".gz")] if b.compressed else b.path) + layout.DELETING
    if unpacked is not None and layout.linked_elsewhere(shell, unpacked) is not None:
        # a hand linked an unpacked copy kept elsewhere in: the .gz moved through the link would live on
        # there, where no rotation looks. The link goes (what it names is not this volume's to remove).
        shell.remove_tree(unpacked)
        unpacked = None
    try:
        if unpacked is not None:
            shell.rename(b.path, unpacked + "/" + b.name)
        shell.rename(unpacked or b.path, doomed)
    except HostError as err:
        if not _removed_meanwhile(shell, b, unpacked, err, log):
            raise
        return None
    crashpoint.reached("rotation-renamed")
    if b.compressed:
        for record in sidecar.gz_records(b.path):  # its size and what verify found of it: moot now
            shell.remove_tree(record)
    return doomed


def _removed_meanwhile(shell: Shell, b: BackupSet, unpacked: Optional[str], err: HostError, log) -> bool:
    """Whether a rename that failed (`err`) failed because the backup is gone already: another run's rotation
    (a second host on a shared volume) renamed it to `-deleting` first, or an admin removed it. Its removal is
    what rotation wanted, done: said, never the failure of a VM whose new backup is sealed and good. Only where
    it is proven gone (layout.gone): a rename an NFS share that stopped answering failed is the failure it is."""
    if not (layout.gone(shell, b.path) and (unpacked is None or layout.gone(shell, unpacked))):
        return False
    if log is not None:
        log.info("%s is gone already (%s): removed meanwhile by another run's rotation, or by hand" % (b.path, err))
    return True


def remove_now(shell: Shell, log, path: str) -> None:
    """Remove a condemned path; a refusal is a warning (the next run, or `hotvcb cleanup`, tries again)."""
    try:
        shell.remove_tree(path)
    except HostError as err:
        log.warning("could not remove %s: %s" % (path, err))


def finish_deleting(shell: Shell, volume: str, vm_name: str, log, remove: Optional[Callable[[str], None]] = None,
                    dry_run: bool = False) -> int:
    """Finish the removals a killed run, or one the host refused, left of this VM's backups (any host
    may: they are condemned). Each `-deleting` entry goes to `remove` (a backup's Deleter: removed
    while its pre-flight goes on, which waits for it before refusing the VM for room), or by default
    is removed here and now, a refusal then an error (`hotvcb cleanup` exits 1 on it; the entry
    stays for the next run). How many were handed on or removed (with `dry_run`: found)."""
    done = 0
    for path in _condemned(shell, volume, vm_name):
        if dry_run:
            log.info("would finish the removal of %s" % path)
            done += 1
            continue
        log.info("Finishing the removal of %s" % path)
        if remove is not None:
            remove(path)
            done += 1
            continue
        try:
            shell.remove_tree(path)
            done += 1
        except HostError as err:
            log.error("could not finish the removal of %s: %s -- it stays for the next run or cleanup" % (path, err))
    return done


def _condemned(shell: Shell, volume: str, vm_name: str) -> List[str]:
    """The VM's `-deleting` entries, each with what verify recorded of it as a .gz where a kill came
    between the rename and that record's removal (condemn)."""
    found = []
    for b in layout.list_backups(shell, volume, vm_name):
        if b.status == "deleting":
            found.append(b.path)
            found += [r for r in sidecar.gz_records(b.path[: -len(layout.DELETING)] + ".gz") if shell.exists(r)]
    return found
