"""`hotvcb status`'s check of each snapshot on the host: ours left by a dead run (it grows until the datastore is
full: CRIT), a user snapshot that is old or whose delta takes a large share of its datastore's free space."""

from datetime import datetime
from typing import List, Optional

from .. import clockage, lazyre
from ..errors import HotvcbError
from ..hosts.base import Hypervisor
from ..model import HOLDS_DATA, NO_DATA_FILE, Snapshot, Vm
from ..runid import RunId, parse
from ..units import human_size
from .leftovers import UNTOLD, asked_at, is_ours, no_data_file, snapshot_run_alive
from .status_backups import _made_at
from .status_report import CRIT, OK, WARN, Check, Limits, _age


_CREATED = lazyre.compile(r"(\d{1,2})/(\d{1,2})/(\d{4}) (\d{1,2}):(\d{1,2}):(\d{1,2})")


def _snapshots(host: Hypervisor, vm: Vm, limits: Limits, now: float, run_alive: bool, me: RunId) -> List[Check]:
    checks = []
    snaps = host.snapshots(vm)
    deltas = host.delta_files(vm)
    delta_bytes = sum(_usage(host, f) for f in deltas)
    # the driver's judgement, the user's snapshots beside it or not, of the deltas just listed (not listed again)
    unconsolidated = host.needs_consolidation(vm, deltas)
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
