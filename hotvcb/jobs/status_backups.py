"""`hotvcb status`'s check of each VM's backups (store/health.py): no good backup, the newest good one older than
the age limit, or the last run failed; in a folder or a repository (jobs/repo_status.py)."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any, Callable, Dict, List, Optional

from .. import clockage
from ..errors import HotvcbError
from ..hosts.base import Hypervisor
from ..localshell import LocalShell
from ..runid import known_host_id
from ..settings import Settings
from ..store import health, lastrun, layout, rotation
from ..treeview import BACKUP_TEXTS, ScannedShell
from ..units import human_size
from .status_report import CRIT, OK, WARN, Check, Limits, _age


RECORDS = (lastrun.PREFIX + ".*.json",)  # read by the scan of a VM's backups: its last-run records


def _vm_backups(host: Hypervisor, settings: Settings, repos: Dict[str, Callable[..., Check]], name: str,
                uuid: str, limits: Limits, now: float) -> Check:
    """The VM's backup check where its settings send its backups: a repository (`repos` keeps each one's
    check, so a repository several VMs share is read once) or a backup volume."""
    path = settings.vm_backup_repository
    if not path:
        return _backups(host, settings, name, uuid, limits, now)
    if path not in repos:
        repos[path] = _repository(host, path)
    return repos[path](name, uuid, limits, now)


def _repository(host: Hypervisor, path: str) -> Callable[..., Check]:
    """The check of a VM's backups in the repository at `path` (jobs/repo_status.py)."""
    if not isinstance(host.shell, LocalShell):  # a repository path is a folder where hotvcb runs
        return lambda name, uuid, limits, now: Check(WARN, "backup", name, "the repository %s is read only by "
                                                     "hotvcb on the host itself" % path)
    from .repo_status import RepoView  # it builds on this module's checks
    # a VM without a uuid is told from another host's of its name by the host that made its backups (either id)
    return RepoView(path, known_host_id(host.shell, host.run_dir),
                    lambda name, uuid: lastrun.last(host.shell, lastrun.in_repository(path), name, host.host_name(),
                                                    uuid, host.system_id()),
                    host.system_id()).check


def _backups(host: Hypervisor, settings: Settings, name: str, uuid: str, limits: Limits, now: float) -> Check:
    """The VM's backup check, its message naming each folder named like a backup that is none: such a
    folder changes nothing that can be restored, so not the severity either."""
    odd = []  # type: List[str]
    check = _judged(host, settings, name, uuid, limits, now, odd.append)
    if odd:
        check.message += "; " + "; ".join(odd)
    return check


def _judged(host: Hypervisor, settings: Settings, name: str, uuid: str, limits: Limits, now: float,
            odd: Callable[[str], None]) -> Check:
    # one look, not one per file, also for the VM's last-run records (store/lastrun.py) beside its backups
    shell = ScannedShell(host.shell, layout.vm_root(settings.vm_backup_volume, name), BACKUP_TEXTS + RECORDS)
    found = layout.list_backups(shell, settings.vm_backup_volume, name, odd)
    source = (host.host_name(), uuid)
    judged = {b.path: health.judge(shell, b) for b in found}
    own = dict(judged)  # one_per_time gives a .gz its unpacked twin's verdict where its own is not good
    found, unpacked = rotation.one_per_time(found, judged)  # a .gz and the folder unpacked beside it: one, as list shows
    verdicts = [(b, judged[b.path]) for b in found if not rotation.made_elsewhere(judged[b.path].manifest, source)]
    tried = lastrun.last(shell, settings.vm_backup_volume, name, host.host_name(), uuid, host.system_id())
    # those rotation and restore --latest set aside (named over a day ahead: a clock that ran ahead) are not
    # judged while a good one is not: behind one of them a VM whose backups stopped stayed WARN, never CRIT
    ahead = rotation.dated_ahead([b for b, _v in verdicts], host.shell.now())
    if any(v.good and b not in ahead for b, v in verdicts):
        verdicts = [(b, v) for b, v in verdicts if b not in ahead]
    else:
        ahead = []
    good = [(b, v) for b, v in verdicts if v.good]
    done = [(b, v) for b, v in verdicts if v.state not in ("partial", "deleting", "gone")]
    if not good:
        why = (_volume_gone(host, settings.vm_backup_volume) or _never(name)) if not done else \
            "no good backup (newest: %s, %s)" % (done[-1][1].state, done[-1][1].reason)
        return no_good_backup(name, why, tried, round(_made_at(host, done[-1][0].when)) - 1 if done else 0)
    newest, verdict = good[-1]
    made = _made(host, shell, newest)
    age = now - made
    # a pair's path is the good one of the two (a script restores it), its size both (as list gives it)
    size = sum(rotation.backup_size(shell, p) for p in (newest.path, unpacked.get(newest.path)) if p)
    details = {"good_backups": len(good), "newest_good": rotation.restorable(newest.path, own, unpacked),
               "age_seconds": int(age), "size_bytes": size, "verified": verdict.verified}  # type: Dict[str, Any]
    text = "newest good backup %s old (%s), %d kept%s" % (
        _age(age), human_size(size), len(good),
        ", verified %s" % verdict.verified.replace("T", " ") if verdict.verified else ", never verified")
    if verdict.warning:
        text += "; " + verdict.warning
    if clockage.dated_ahead(age):
        return dated_ahead(name, "newest good backup " + newest.path.rsplit("/", 1)[-1], age, text, details)
    if ahead:
        text += "; %d backup(s) named more than a day after the host's clock, set aside as rotation and restore " \
            "--latest do (a clock that was ahead when they were made): %s; remove them by hand if they are stale" % (
                len(ahead), ", ".join(b.name for b in ahead))
        details["dated_ahead"] = [b.path for b in ahead]
    # a record's `time` is in whole seconds, and a good run overwrites a failure's record (lastrun.settle): one
    # in the second the newest backup began came after it (it said OK for a run that failed a moment later)
    by_age = aged(name, text, details, age, limits, tried, round(made) - 1)
    if by_age:
        return by_age
    if done and done[-1][0].path != newest.path:
        last = done[-1][1]
        return Check(WARN, "backup", name, "last backup %s (%s); %s" % (last.state, last.reason, text), details)
    if age > limits.max_age or ahead:
        return Check(WARN, "backup", name, text, details)
    return Check(OK, "backup", name, text, details)


def _never(name: str) -> str:
    """Why a VM without backups has none: the run refuses its name (jobs/backup.select: blanks, a control
    character, too long for its folders), or it was never backed up."""
    refused = layout.backup_unnameable(name) or layout.too_long(name)
    return "never backed up: the run refuses its name, as %s; rename the VM" % refused if refused else "never backed up"


def no_good_backup(name: str, why: str, tried: Optional[Dict[str, Any]], made: float = 0) -> Check:
    """The CRIT of a VM without a good backup, on a volume or in a repository (`why`: "never backed up", ...),
    naming why its last run failed where it failed since `made` (failed_since): a VM the job never tried and
    one whose runs fail every night are not the same page, and a failed backup's STATUS.error says only that
    it failed."""
    failed = failed_since(tried, made)
    if failed:
        return Check(CRIT, "backup", name, "%s; %s" % (why, failed), {"good_backups": 0, "last_run": tried})
    return Check(CRIT, "backup", name, why, {"good_backups": 0})


def aged(name: str, text: str, details: Dict[str, Any], age: float, limits: Limits,
         tried: Optional[Dict[str, Any]], made: float) -> Optional[Check]:
    """The check of a VM's newest good backup (`text`, made at `made`, `age` seconds old), on a volume or in
    a repository: CRIT when older than twice max-age, WARN when a run since failed; None where neither
    decides. Either way a failed run's reason leads the message: a stale backup's CRIT said only its age,
    dropping why the runs fail just when the admin on call needs it most."""
    failed = failed_since(tried, made)
    if failed:
        details["last_run"] = tried
        text = "%s; %s" % (failed, text)
    if age > 2 * limits.max_age:
        return Check(CRIT, "backup", name, text, details)
    if failed:
        return Check(WARN, "backup", name, text, details)
    return None


def failed_since(tried: Optional[Dict[str, Any]], made: float) -> str:
    """"last run was error (why)" where the VM's last run (store/lastrun.py) did not end well and came after
    its newest good backup, made at `made` (epoch); "" where it ended well or is older."""
    if not tried or tried.get("result") in ("ok", "skipped") or tried["time"] <= made:
        return ""
    reason = str(tried.get("message") or ("some disks failed" if tried.get("result") == "warn" else "failed"))
    return "last run was %s (%s)" % (tried.get("result"), reason)


def _volume_gone(host: Hypervisor, volume: str) -> str:
    """Why no backup is seen where a VM's backups go, when it is the volume itself that is not there (a NAS
    datastore gone from the host: rebooted, APD), named as the backup names it; "" when the volume is."""
    try:
        host.free_space(volume)
    except HotvcbError as err:
        return "no backup can be seen: %s" % err
    return ""


def dated_ahead(name: str, what: str, age: float, text: str, details: Dict[str, Any]) -> Check:
    """The check of a newest backup named or recorded by a clock that was ahead then (or is behind now): not
    OK, whatever its negative age, for it may be old and no backup made since (it said "OK, -86395s old")."""
    return Check(WARN, "backup", name, "%s is dated %s ahead of the host's clock (a clock that was ahead when it "
                 "was made, or is behind now): its age cannot be told; %s" % (what, _age(-age), text), details)


def _made_at(host: Hypervisor, when: datetime) -> float:
    """The epoch of a time the host's wall clock gave (a backup's name): now, less how long ago that was
    on the host's clock. No zone of ours enters: read as our local time, a monitoring box in another zone
    than the host (an ESXi host keeps UTC) judged a fresh backup hours old, or a stopped one fresh, and
    one whose summer time ended since the backup an hour off."""
    return time.time() - (host.shell.now() - when).total_seconds()


def _made(host: Hypervisor, shell: ScannedShell, backup: layout.BackupSet) -> float:
    """The epoch a backup was made: by its name (_made_at), or by its files' age (layout.sealed_age, by the host's
    clock whatever the zone) where its name cannot say: in the hour summer time ends repeats (layout.repeated_hour:
    by its name, a backup made seconds before the clocks went back was 'dated 59m ahead' for an hour), or ahead of
    the clock as this process reads it in its zone while its files are not -- a name carries no zone, and one
    made under cron's (the host's local time) read by a monitoring agent with TZ=UTC was 'dated 59m ahead' every
    night. Files dated ahead as well were written by a clock that ran ahead: the name stands, dated ahead."""
    made = _made_at(host, backup.when)
    if layout.repeated_hour(backup.when) or clockage.dated_ahead(time.time() - made):
        age = layout.sealed_age(shell, backup)
        if age is not None and not clockage.dated_ahead(age):
            return time.time() - age
    return made
