"""`hotvcb status`: the state of one host at a glance, as checks a monitor can read.

Each check has a severity with Nagios/Icinga/Zabbix meaning (OK, WARN, CRIT);
the worst one is the host's. What is checked, and why it matters:

- each VM's backups (store/health.py): no good backup, or the newest good one
  older than the age limit, or the last run failed;
- each snapshot on the host: ours left by a dead run (it grows until the
  datastore is full: CRIT), a user snapshot that is old or whose delta takes
  a large share of its datastore's free space;
- each VM whose disks need consolidation (the driver says: delta files no snapshot owns, or the host's mark);
- each datastore's free space: a VM datastore running out (snapshot deltas
  need room to grow), the backup target with less room than the next run.
"""

import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .. import clockage
from ..errors import HotvcbError, TemplateVm
from ..hosts.base import Hypervisor, powered
from ..localshell import LocalShell
from ..model import HOLDS_DATA, NO_DATA_FILE, Snapshot, Vm
from ..runlog import shown
from ..runid import RECORD_MAX, RunId, known_host_id, parse
from ..settings import Settings
from ..store import health, lastrun, layout, rotation
from ..store.lock import LOCK_NAME, holder_alive
from ..treeview import BACKUP_TEXTS, ScannedShell
from ..units import human_size
from . import nfs
from .leftovers import UNTOLD, asked_at, is_ours, no_data_file, power_marker, snapshot_run_alive
from .. import lazyre

OK, WARN, CRIT = "OK", "WARN", "CRIT"
RECORDS = (lastrun.PREFIX + ".*.json",)  # read by the scan of a VM's backups: its last-run records
RANK = {OK: 0, WARN: 1, CRIT: 2}
_CREATED = lazyre.compile(r"(\d{1,2})/(\d{1,2})/(\d{4}) (\d{1,2}):(\d{1,2}):(\d{1,2})")


@dataclass
class Limits:
    """Where a check turns WARN or CRIT (--max-age and --snapshot-age move the first two)."""

    max_age: float = 26 * 3600  # a nightly job that missed one night is late
    snapshot_age: float = 24 * 3600
    delta_share: float = 0.10  # of the datastore's free space: WARN; five times that: CRIT
    datastore_free: float = 0.10  # of capacity: WARN below, half of it: CRIT


@dataclass
class Check:
    """One finding: a monitor reads its line, a script its JSON."""

    severity: str
    kind: str  # backup | snapshot | consolidation | leftover | datastore | host
    name: str
    message: str
    details: Dict[str, Any] = field(default_factory=dict)

    def line(self, host: str = "") -> str:
        """One line a monitor parses: the name (a VM's or a datastore's, from the host) and the message
        (which quotes the host and the backup volume: paths, a manifest's or a record's text) are each
        one field of it, so a line feed or tab in them cannot forge a line of another severity."""
        return "%-4s %s%-13s %s: %s" % (self.severity, shown(host, field=True) + " " if host else "", self.kind,
                                        shown(self.name, field=True), shown(self.message, field=True))


@dataclass
class Report:
    """All of a host's findings: the worst decides the exit code a monitor acts on."""

    host: str
    checks: List[Check] = field(default_factory=list)

    @property
    def severity(self) -> str:
        return max((c.severity for c in self.checks), key=RANK.__getitem__, default=OK)

    def as_dict(self) -> Dict[str, Any]:
        return {"host": self.host, "status": self.severity, "checks": [asdict(c) for c in self.checks]}


def host_status(host: Hypervisor, settings: Settings, limits: Limits, names: Optional[Sequence[str]] = None,
                exclude: Sequence[str] = (), now: Optional[float] = None,
                settings_of: Optional[Callable[[str], Settings]] = None) -> Report:
    """`settings_of(name)`: a VM's own settings (its per-VM file, the backup's -c), where its backups are
    looked for (a per-VM VM_BACKUP_VOLUME or VM_BACKUP_REPOSITORY) and whose target's room its next backup
    needs; a HotvcbError
    from it (a file the backup refuses, failing that VM every night) is the VM's CRIT check."""
    now = time.time() if now is None else now
    report = Report(host.describe())
    # a template is no VM to back up (errors.TemplateVm)
    listed = host.list_vms()
    refs = [r for r in listed if not r.template and (names is None or r.name in names) and r.name not in exclude]
    templates = {r.name: r.vmx_path for r in listed if r.template}
    for vmid, why in sorted(host.invalid_vms().items()):
        report.checks.append(Check(CRIT, "backup", "vmid " + vmid, "registered but invalid: %s; it cannot be "
                                   "backed up" % why))
    for missing in sorted(set(names or ()) - {r.name for r in refs} - set(exclude)):
        # a listed VM made a template: said as the backup says it, not as a VM the admin must hunt for
        why = str(TemplateVm(missing, templates[missing])) if missing in templates else \
            "listed, but no VM of that name is on this host"
        report.checks.append(Check(CRIT, "backup", missing, why))
    me = RunId.new()  # this status run, as every record it judges is judged against
    run_alive = _run_holding_lock(host, me)
    repos = {}  # type: Dict[str, Callable[..., Check]]  # repository path -> its check, each read once a run
    needed = {_target(settings): 0}  # type: Dict[str, int]  # where backups go -> what the next run needs there
    for ref in refs:
        try:
            vm = host.load_vm(ref)
        except HotvcbError as err:
            # a VM whose QEMU died (a stale socket) or whose .vmx cannot be read: its backups are still judged,
            # which need only its name; else status went from CRIT to WARN just as its backups stopped for good
            report.checks.append(Check(WARN, "backup", ref.name, "cannot read the VM: %s" % err))
            own, refused = _own_settings(settings, settings_of, ref.name)
            report.checks.append(refused or _vm_backups(host, own, repos, ref.name, "", limits, now))
            continue
        own, refused = _own_settings(settings, settings_of, vm.name)
        if refused:
            state = None  # type: Optional[str]
            report.checks.append(refused)
        else:
            skipped, state = _skipped(host, own, vm)
            report.checks.append(skipped or _vm_backups(host, own, repos, vm.name, vm.uuid, limits, now))
            if skipped:  # its job leaves it alone: nothing to judge of its backups, no room for its next one
                report.checks.extend(_snapshots(host, vm, limits, now, run_alive, me))
                continue
        report.checks.extend(_snapshots(host, vm, limits, now, run_alive, me))
        report.checks.extend(_left_off(host, vm, run_alive, state))
        try:  # one VM's image that cannot be sized (`qemu-img measure` of a deleted file) is its problem only
            needed[_target(own)] = needed.get(_target(own), 0) + sum(
                host.bytes_needed(d, own.disk_backup_format) for d in vm.disks if not d.skip_reason)
        except HotvcbError as err:
            report.checks.append(Check(WARN, "backup", vm.name, "cannot size its disks, so the room its next "
                                       "backup needs is not counted: %s" % err))
    from .status_leftovers import leftover_checks  # it builds on this module's checks
    report.checks.extend(leftover_checks(host, settings, settings_of, [r.name for r in refs], me))
    if not any(c.kind == "backup" for c in report.checks):  # nothing watched is not OK
        report.checks.append(Check(CRIT, "backup", "all", "no VM found to watch%s: none is backed up (a backup of "
                                   "all ends 'No VMs backed up!')" % (" (after -f/-e)" if names or exclude else "")))
    report.checks.extend(_datastores(host, limits, needed))
    unmounted = "" if settings.vm_backup_repository else nfs.unmounted(host.shell, settings)
    if unmounted:  # why every VM has no backup: the backups are where this command does not look
        report.checks.append(Check(WARN, "datastore", settings.nfs_local_name + " (backup target)", unmounted))
    return report


def _skipped(host: Hypervisor, settings: Settings, vm: Vm) -> Tuple[Optional[Check], Optional[str]]:
    """The check of a VM its job skips on purpose (BACKUP_POWER_STATE, `--power-state`: jobs/backup.py), said
    as such: judged by its backups it was CRIT "never backed up" every night for the admin's own choice. A VM
    a dead run powered off (its marker is there) is not skipped: the job judges it by the state it had.
    With it the power state asked (None: none was), which _left_off takes rather than ask again. Asked per
    VM: nothing status reads before carries it (getallvms has no power column, a libvirt domain's XML does not
    tell paused from running, and status asks no look-ahead), and with no rule set it is never asked."""
    rule = settings.backup_power_state
    if rule == "any":
        return None, None
    state = host.power_state(vm)
    if state == rule or host.shell.exists(power_marker(vm)):
        return None, state
    return Check(OK, "backup", vm.name, "skipped: %s, and BACKUP_POWER_STATE=%s backs up only VMs %s; its backups "
                 "are not judged" % (powered(state), rule, powered(rule)),
                 {"skipped": "power_state", "power_state": state}), state


def _own_settings(settings: Settings, settings_of: Optional[Callable[[str], Settings]],
                  name: str) -> Tuple[Settings, Optional[Check]]:
    """The VM's own settings (its per-VM file), or the global ones with the VM's CRIT where its file is
    refused: that fails its backup every night."""
    try:
        return (settings if settings_of is None else settings_of(name)), None
    except HotvcbError as err:
        return settings, Check(CRIT, "backup", name, "its per-VM config is refused, which fails its backup: %s"
                               % err)


def _target(settings: Settings) -> str:
    return settings.vm_backup_repository or settings.vm_backup_volume


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


def _run_holding_lock(host: Hypervisor, me: RunId) -> bool:
    path = host.run_dir.rstrip("/") + "/" + LOCK_NAME
    try:
        if not host.shell.exists(path):
            return False
        # a heartbeat dated ahead (a clock stepped back) cannot tell: its run may well be at work
        return holder_alive(host.shell, path, parse(host.shell.read_regular(path, RECORD_MAX)), me) is not False
    except HotvcbError:
        return False


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
    done = [(b, v) for b, v in verdicts if v.state not in ("partial", "deleting")]
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


def _snapshots(host: Hypervisor, vm: Vm, limits: Limits, now: float, run_alive: bool, me: RunId) -> List[Check]:
    checks = []
    snaps = host.snapshots(vm)
    deltas = host.delta_files(vm)
    delta_bytes = sum(_usage(host, f) for f in deltas)
    unconsolidated = host.needs_consolidation(vm)  # the driver's judgement, the user's snapshots beside it or not
    if unconsolidated:
        checks.append(Check(CRIT, "consolidation", vm.name, "%s (%d delta file(s), %s)"
                            % (unconsolidated, len(deltas), human_size(delta_bytes)),
                            {"delta_files": deltas, "delta_bytes": delta_bytes}))
    free = _free_of(host, vm.folder)
    for snap in snaps:
        stamped = _snapshot_age(host, snap, now)
        ahead = clockage.dated_ahead(stamped)
        age = None if stamped is None or ahead else max(0, stamped)
        share = delta_bytes / free if free else 0.0
        details = {"id": snap.id, "snapshot": snap.name, "created": snap.created, "age_seconds": age,
                   "delta_bytes": delta_bytes, "ours": is_ours(snap)}
        label = "%s %r (id %s, %s, deltas %s)" % (
            "hotvcb snapshot" if details["ours"] else "snapshot", snap.name, snap.id or "?",
            "%s old" % _age(age) if age is not None else "dated %s ahead of the host's clock" % _age(-stamped)
            if ahead and stamped is not None else "age unknown", human_size(delta_bytes))
        if snap.state == NO_DATA_FILE and not details["ours"]:  # no snapshot, but a file to remove by hand
            checks.append(Check(WARN, "snapshot", vm.name, no_data_file(snap), details))
        elif details["ours"]:
            owner = parse(snap.description)
            alive = True if run_alive else snapshot_run_alive(snap, me)
            if alive:
                checks.append(Check(OK, "snapshot", vm.name, label + ": a backup is running", details))
            elif alive is None:
                checks.append(Check(WARN, "snapshot", vm.name, label + ": left by %s, which %s" % (owner, UNTOLD),
                                    details))
            elif snap.state == HOLDS_DATA:  # cleanup keeps it: its own warning said what to do
                checks.append(Check(WARN, "snapshot", vm.name, label + ": left by %s, no disk uses it but it holds the "
                                    "guest's writes, so hotvcb keeps it: if nothing wrote its image since, "
                                    "`qemu-img commit` it into its image (the next run removes it), else move it "
                                    "away" % (owner or "a hotvcb run"), details))
            elif snap.state == NO_DATA_FILE:  # no snapshot on the disks: the VM's backups go on
                checks.append(Check(WARN, "snapshot", vm.name, label + ": only its description, no overlay, left by "
                                    "%s, which is gone; `hotvcb cleanup` removes it" % (owner or "a hotvcb run"),
                                    details))
            else:
                checks.append(Check(CRIT, "snapshot", vm.name, label + ": left by %s, which is gone; run `hotvcb cleanup`"
                                    % (owner or "a hotvcb run"), details))
        elif share > 5 * limits.delta_share:
            checks.append(Check(CRIT, "snapshot", vm.name, label + ": deltas take %d%% of the datastore's free space"
                                % (100 * share), details))
        elif share > limits.delta_share or (age is not None and age > limits.snapshot_age):
            checks.append(Check(WARN, "snapshot", vm.name, label + ": a snapshot grows until it is removed", details))
        elif ahead:  # taken while the clock ran ahead: it may be as old as that, growing all along
            checks.append(Check(WARN, "snapshot", vm.name, label + " (a clock that was ahead when it was taken, or "
                                "is behind now): its age cannot be told, and a snapshot grows until it is removed",
                                details))
        else:
            checks.append(Check(OK, "snapshot", vm.name, label, details))
    return checks


def _left_off(host: Hypervisor, vm: Vm, run_alive: bool, state: Optional[str] = None) -> List[Check]:
    """A VM a hotvcb run powered off for its backup and that run died (its marker is still there). `state`:
    its power state as _skipped just asked it, None where it did not."""
    path = power_marker(vm)
    try:
        if run_alive or not host.shell.exists(path) or (state or host.power_state(vm)) != "off":
            return []
        owner = parse(host.shell.read_regular(path, RECORD_MAX))
    except HotvcbError:
        return []
    return [Check(CRIT, "power", vm.name, "powered off by %s for a backup, which died; it is still off "
                  "(`hotvcb cleanup` powers it on)" % (owner or "a hotvcb run"))]


def _datastores(host: Hypervisor, limits: Limits, needed: Dict[str, int]) -> List[Check]:
    """`needed`: bytes the next run writes to each backup volume (the global one, those per-VM files chose)."""
    checks = []
    try:
        stores = host.datastores()
    except HotvcbError as err:
        return [Check(WARN, "datastore", "all", "cannot list datastores: %s" % err)]
    targets = {}  # type: Dict[int, int]  # id() of a backup target's datastore -> what the next run needs there
    for volume, size in needed.items():
        target = _target_store(host, volume, stores)
        if target is not None:
            targets[id(target)] = targets.get(id(target), 0) + size
    for ds in stores:
        share = ds.free / ds.capacity if ds.capacity else 1.0
        details = {"free_bytes": ds.free, "capacity_bytes": ds.capacity}
        text = "%s free of %s (%d%%)" % (human_size(ds.free), human_size(ds.capacity), 100 * share)
        if id(ds) in targets:
            need = targets[id(ds)]
            details["next_run_bytes"] = need
            text += "; the next run needs %s" % human_size(need)
            severity = CRIT if ds.free < need else WARN if ds.free < 1.5 * need else OK
            checks.append(Check(severity, "datastore", ds.name + " (backup target)", text, details))
            continue
        severity = CRIT if share < limits.datastore_free / 2 else WARN if share < limits.datastore_free else OK
        checks.append(Check(severity, "datastore", ds.name, text, details))
    return checks


def _target_store(host: Hypervisor, volume: str, stores):
    try:
        real = host.shell.realpath(volume)
    except HotvcbError:
        return None
    for ds in stores:
        for root in (ds.url, "/vmfs/volumes/" + ds.name):
            if root and (real == root or real.startswith(root.rstrip("/") + "/") or volume.startswith(root.rstrip("/") + "/")):
                return ds
    return None


def _free_of(host: Hypervisor, folder: str) -> Optional[int]:
    try:
        return host.free_space(folder)
    except HotvcbError:
        return None


def _usage(host: Hypervisor, path: str) -> int:
    try:
        return host.shell.disk_usage(path)
    except HotvcbError:
        return 0


def _snapshot_age(host: Hypervisor, snap: Snapshot, now: float) -> Optional[int]:
    """Seconds since `Created On` (M/D/YYYY H:M:S, the host's local time, unpadded), or for one of ours the host
    keeps no time of (a QEMU overlay) since the second its name says; negative: dated ahead (clockage.py)."""
    m = _CREATED.search(snap.created or "")
    if not m:
        named = asked_at(snap) if is_ours(snap) else None
        return None if named is None else int(now - named)
    month, day, year, hour, minute, second = (int(x) for x in m.groups())
    try:
        created = datetime(year, month, day, hour, minute, second)
    except ValueError:
        return None
    return int(now - _made_at(host, created))


def _age(seconds: float) -> str:
    seconds = int(seconds)
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= n:
            return "%d%s" % (seconds // n, unit)
    return "%ds" % seconds
