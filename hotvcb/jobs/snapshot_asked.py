"""A snapshot a run asked for: the marker kept in the VM's folder from the request until the snapshot is removed
(hostd's task outlives a killed run), how long one is looked for, and a dead run's request awaited and its snapshot
removed once it shows (the rules of leftovers.py)."""

import time
from typing import List, Mapping

from .. import interrupt
from ..clockage import heartbeat
from ..errors import HotvcbError
from ..hosts.base import Hypervisor
from ..model import Snapshot
from ..runid import RECORD_MAX, RunId, parse
from ..settings import Settings
from .leftovers import is_ours, remove_our_snapshots, vm_marker
from .ownership import NONE_DEAD, made_at, owner_alive


# + ".<vmx file name>.run", in the VM's folder from our snapshot request until that snapshot is removed (or the
# host refused it): hostd's task outlives a killed run, and the next run waits for what it may still make
SNAPSHOT_MARKER = ".hotvcb-snapshot-asked"
# the marker's second line once the snapshot showed (mark_snapshot_made): the request was answered
MADE = "made="


def late_wait(s: Settings) -> float:
    """How much longer than SNAPSHOT_TIMEOUT the run that asked for a snapshot looks for it (jobs/backup_end.py):
    as long again, at most a minute."""
    return min(60.0, s.snapshot_timeout * 60.0)


# How long one run waits for a dead run's request (await_snapshot), however young it is: a run killed between
# its marker and its request (or a request hostd dropped) asked for nothing that will come, and the nightly
# backup must not stand still for SNAPSHOT_TIMEOUT (15 min by default) on it; a request still young then keeps
# its marker, and the next run (or `hotvcb cleanup`) looks again, as every run's sweep removes our snapshots.
PENDING_LOOK = 60.0


def snapshot_patience(s: Settings) -> float:
    """How long after its request a snapshot a dead run asked for is waited for (await_snapshot): as long as
    that run would have looked for it."""
    return s.snapshot_timeout * 60.0 + late_wait(s)


def snapshot_marker(vm) -> str:
    """One per VM, as power_marker; never ending as the VM's own file does (bare QEMU lists a folder's `.qmp`
    names as VMs, and a marker is left there while a killed run's request is pending)."""
    return vm_marker(vm, SNAPSHOT_MARKER, ".run")


def mark_snapshot_asked(host: Hypervisor, vm, run: RunId) -> None:
    host.shell.write_text(snapshot_marker(vm), run.text() + "\n")


def mark_snapshot_made(host: Hypervisor, vm, run: RunId, snap_id: str, log) -> None:
    """The request answered: its snapshot `snap_id` showed. A run killed later (after hostd removed it, before
    the marker went) leaves a marker the next run then takes as done, not as a request the host may still
    make: without this it waited a minute for a snapshot made and removed long before. A failure only costs
    that wait: named, not raised."""
    try:
        host.shell.write_text(snapshot_marker(vm), "%s\n%s%s\n" % (run.text(), MADE, snap_id or "?"))
    except HotvcbError as err:
        log.warning("%s: could not record in %s that its snapshot was made: %s" % (vm.name, snapshot_marker(vm), err))


def _made(text: str) -> bool:
    return any(line.startswith(MADE) for line in text.splitlines()[1:])


def clear_snapshot_mark(host: Hypervisor, vm, log) -> None:
    """A failure only costs the next run a look (or its wait: await_snapshot): named, not raised."""
    try:
        host.shell.remove_tree(snapshot_marker(vm))
    except HotvcbError as err:
        log.warning("%s: could not remove %s: %s" % (vm.name, snapshot_marker(vm), err))


def await_snapshot(host: Hypervisor, vm, log, run: RunId, seen: List[Snapshot], wait: float, dry_run: bool = False,
                   dead: Mapping[str, float] = NONE_DEAD, patient: bool = True) -> bool:
    """A dead run asked for a snapshot of this VM that the host did not list (`seen`, read before its leftovers
    were removed): hostd's task outlives its caller, so the snapshot may still appear. Look for it until that
    request is `wait` seconds old (0: once), remove it if it shows, then drop the marker. True if one was removed.
    Without this, a quick next run ended all OK and the VM then ran on the dead run's snapshot until a later run.
    Not `patient` (a sweep of every VM, `hotvcb cleanup`): a request younger than that is kept for the next look."""
    path = snapshot_marker(vm)
    if not host.shell.exists(path):
        return False
    try:
        text = host.shell.read_regular(path, RECORD_MAX)
    except HotvcbError as err:  # not ours (we write a file): planted
        log.warning("%s: cannot read %s: %s; leaving it" % (vm.name, path, err))
        return False
    owner = parse(text)
    if owner is not None and (owner.run == run.run
                              or owner_alive(owner, run, dead, lambda: made_at(host.shell.age(path))) is not False):
        return False  # ours, or a live run's (or one whose pid cannot tell): it looks after its own request
    if _made(text):  # answered: its snapshot is in `seen` (removed with the leftovers) or was removed before
        if not dry_run:
            clear_snapshot_mark(host, vm, log)
        return False
    said = False
    give_up = time.monotonic() + PENDING_LOOK
    while owner is not None and not any(_made_by(s, owner) for s in seen):
        age = host.shell.age(path)
        young = heartbeat(age, wait)
        if young is False:
            break
        if young is None and time.monotonic() >= give_up:
            # dated ahead (a clock stepped back): how old the request is cannot be told, and waiting for the clock
            # to pass it would make every run wait a minute for as long; looked for once, a snapshot the host
            # makes later is a dead run's leftover the next run's sweep removes (remove_our_snapshots)
            log.warning("%s: %s's snapshot request is dated ahead of the host's clock (its age cannot be told) "
                        "and nothing appeared in %d s; going on" % (vm.name, owner, PENDING_LOOK))
            said = False
            break
        age = max(0.0, age or 0.0)
        if dry_run or not patient or time.monotonic() >= give_up:
            log.info("%s: %s is gone, and the snapshot it asked for has not appeared yet (the host may still make "
                     "it); %s" % (vm.name, owner, "the real run waits up to %d s for it" % min(wait - age, PENDING_LOOK)
                                  if dry_run else "keeping its marker for a later look"))
            return False
        if not said:
            log.warning("%s: %s is gone, and the snapshot it asked for has not appeared yet (the host may still "
                        "make it); waiting up to %d s for it, to remove it"
                        % (vm.name, owner, min(wait - age, PENDING_LOOK)))
            said = True
        if interrupt.pending():
            interrupt.raise_pending()
        time.sleep(1.0)
        seen = host.snapshots(vm)
        if any(_made_by(s, owner) for s in seen):
            remove_our_snapshots(host, vm, log, run, snaps=seen, dead=dead)
            clear_snapshot_mark(host, vm, log)
            return True
    if said:
        log.warning("%s: %s's snapshot has not appeared in %d s; going on" % (vm.name, owner, wait))
    if not dry_run:
        clear_snapshot_mark(host, vm, log)
    return False


def _made_by(snap: Snapshot, owner: RunId) -> bool:
    mine = parse(snap.description)
    return is_ours(snap) and mine is not None and mine.run == owner.run
