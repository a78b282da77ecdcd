"""`hotvcb status`: the state of one host at a glance, as checks a monitor can read.

Each check has a severity with Nagios/Icinga/Zabbix meaning (OK, WARN, CRIT);
the worst one is the host's. What is checked, and why it matters:

- each VM's backups (store/health.py): no good backup, or the newest good one
  older than the age limit, or the last run failed (status_backups.py);
- each snapshot on the host: ours left by a dead run (it grows until the
  datastore is full: CRIT), a user snapshot that is old or whose delta takes
  a large share of its datastore's free space (status_snapshots.py);
- each VM whose disks need consolidation (the driver says: delta files no snapshot owns, or the host's mark);
- each datastore's free space: a VM datastore running out (snapshot deltas
  need room to grow), the backup target with less room than the next run.

A check, the limits and the host's report are status_report.py's.
"""

from __future__ import annotations

import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from .. import namelist
from ..errors import HotvcbError, TemplateVm
from ..hosts.base import Hypervisor, powered
from ..model import Vm
from ..runid import RECORD_MAX, RunId, parse
from ..settings import Settings
from ..store.lock import LOCK_NAME, holder_alive
from ..units import human_size
from . import nfs
from .powermark import booted_since, power_marker
from .status_backups import _vm_backups
from .status_leftovers import leftover_checks
from .status_report import CRIT, OK, WARN, Check, Limits, Report
from .status_snapshots import _snapshots


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
    names = None if names is None else namelist.fitted(names, [r.name for r in listed])
    exclude = namelist.fitted(exclude, [r.name for r in listed])
    refs = [r for r in listed if not r.template and (names is None or r.name in names) and r.name not in exclude]
    templates = {r.name: ", ".join(t.vmx_path for t in listed if t.template and t.name == r.name)
                 for r in listed if r.template}  # each template of the name (one per datastore)
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


def _run_holding_lock(host: Hypervisor, me: RunId) -> bool:
    path = host.run_dir.rstrip("/") + "/" + LOCK_NAME
    try:
        if not host.shell.exists(path):
            return False
        # a heartbeat dated ahead (a clock stepped back) cannot tell: its run may well be at work
        return holder_alive(host.shell, path, parse(host.shell.read_regular(path, RECORD_MAX)), me) is not False
    except HotvcbError:
        return False


def _left_off(host: Hypervisor, vm: Vm, run_alive: bool, state: Optional[str] = None) -> List[Check]:
    """A VM a hotvcb run powered off for its backup and that run died (its marker is still there). `state`:
    its power state as _skipped just asked it, None where it did not."""
    path = power_marker(vm)
    try:
        if run_alive or not host.shell.exists(path) or (state or host.power_state(vm)) != "off":
            return []
        text = host.shell.read_regular(path, RECORD_MAX)
    except HotvcbError:
        return []
    if booted_since(host, vm, text):  # the admin's since: cleanup leaves it off, and removes the marker
        return []
    owner = parse(text)
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
