"""Our snapshot's removal, carried past a broken SSH connection.

A removal whose session broke (errors.ConnectionLost) tells nothing of the snapshot: hostd may never have been
asked (the link dropped first), or have its removal task under way (killing vim-cmd does not cancel it, and a
long consolidation is when a link drops). Telling the admin to remove by hand a snapshot that hostd is removing,
or leaving one to grow on the VM while the host can be reached again, are both wrong: the removal is waited for
over a new connection (the master opened anew, sshconnection.py) as the driver waits for its own, the
snapshot listed and its deltas merged. No task is asked after (esxisim models none; a real host's `vim-cmd
vmsvc/get.tasklist` lists the VM's recent tasks, finished ones too, each's state only in `vimsvc/task_info`), so
the removal is asked again only once ours stayed listed REASK_AFTER seconds; a refusal of that second removal
because the first one is under way is waited out too, and a look the host cannot be reached for (its sshd
restarting) is tried again every LOOK_PAUSE seconds. Up to ATTEMPTS removals are asked for, all within the one
removal's timeout (and the first look's REASK_AFTER): the systemd stop window (schedule/linux.py STOP_TIMEOUT) and
docs/operations.md give a removal SNAPSHOT_REMOVE_TIMEOUT once, and this wait cannot be interrupted.
"""

import time
from typing import Optional

from ..errors import CommandFailed, ConnectionLost, HotvcbError, Unconsolidated
from ..hosts.base import Hypervisor
from ..model import Snapshot, Vm

ATTEMPTS = 3  # removals asked for at most, all within one SNAPSHOT_REMOVE_TIMEOUT (and REASK_AFTER)
REASK_AFTER = 10.0  # seconds ours stays listed after a broken removal before it is asked again
LOOK_PAUSE = 3  # seconds between looks at the host that could not be made (its sshd down), within the deadline
# vim-cmd's faults for a removal asked while the first is under way: TaskInProgress ("the virtual machine is busy")
# and InvalidState, RemoveSnapshot_Task's documented faults (vSphere API reference, vim.vm.Snapshot), or NotFound,
# the snapshot gone by the time the second task ran (esxisim's answer; no real host's output of it was found)
UNDER_WAY = ("TaskInProgress", "InvalidState", "NotFound")


def remove_snapshot(host: Hypervisor, vm: Vm, snap: Snapshot, timeout: float, log) -> None:
    """host.remove_snapshot (its errors), a removal whose connection broke waited for and asked again, all
    within `timeout` seconds and REASK_AFTER (the first removal's own wait may take all of `timeout`, and ours is
    looked past once). Every way out of that wait but the snapshot's end (and Unconsolidated: its disks on
    deltas) says how long it was waited for in all: the last ConnectionLost when the host cannot be reached to
    tell; when the snapshot outlived every attempt, the last attempt's error: its lost connection, or the host's
    refusal (InvalidState: the admin reads what the host said, not an earlier session's broken link), or the
    re-asked removal's own timeout (its "timed out after" names only what was left of the deadline)."""
    began = time.monotonic()
    try:
        host.remove_snapshot(vm, snap, timeout)
        return
    except ConnectionLost as err:
        lost = err
    try:
        _carried_through(host, vm, snap, timeout, began + timeout + REASK_AFTER, lost, log)
    except Unconsolidated:
        raise
    except HotvcbError as err:
        err.message += "; snapshot %s is still listed after waiting %d s for the host's removal" % (
            snap.id, time.monotonic() - began)
        err.args = (err.message,)
        raise


def _carried_through(host: Hypervisor, vm: Vm, snap: Snapshot, timeout: float, deadline: float,
                     lost: ConnectionLost, log) -> None:
    """After the first removal's connection broke (`lost`): waited for, and asked again, until `deadline`;
    returns once the snapshot is gone, else raises the last attempt's error (remove_snapshot)."""
    refused = None  # type: Optional[CommandFailed]  # the last attempt's refusal
    for attempt in range(1, ATTEMPTS + 1):
        if attempt > 1:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                host.remove_snapshot(vm, snap, min(timeout, left))
                return
            except ConnectionLost as err:
                lost, refused = err, None
            except CommandFailed as err:
                if err.fault not in UNDER_WAY:
                    raise
                refused = err
                log.info("%s: the host refused to remove snapshot %s again (%s): its first removal is under way; "
                         "waiting for it" % (vm.name, snap.id, err.fault))
        left = deadline - time.monotonic()
        if refused is None:
            # the last removal is not asked again: it is waited for as long as is left
            left = left if attempt == ATTEMPTS else min(REASK_AFTER, left)
            log.warning("%s: removing snapshot %s: %s; waiting for the host to remove it, over a new connection"
                        % (vm.name, snap.id, lost))
        if _removed(host, vm, snap, time.monotonic() + left, deadline, lost, log):
            return
    raise refused if refused is not None else lost


def _removed(host: Hypervisor, vm: Vm, snap: Snapshot, until: float, deadline: float, lost: ConnectionLost,
             log) -> bool:
    """Whether the host removed ours by `until` (looked at once where that has passed; Unconsolidated where its
    disks stay on deltas). A look that fails (sshd restarting, the host's management network back in a few
    seconds) is tried again every LOOK_PAUSE seconds until `deadline`, the removal's one deadline: a blip is no
    reason to leave the snapshot to grow on the VM; `lost` raised when the host cannot be reached by then."""
    while True:
        try:
            gone = host.await_snapshot_removal(vm, snap, max(0.0, until - time.monotonic()))
            break
        except Unconsolidated:
            raise
        except HotvcbError as err:
            if time.monotonic() + LOOK_PAUSE > deadline:
                log.warning("%s: cannot look at its snapshots again: %s" % (vm.name, err))
                raise lost from err
            log.warning("%s: cannot look at its snapshots again: %s; trying again in %d s"
                        % (vm.name, err, LOOK_PAUSE))
            time.sleep(LOOK_PAUSE)
    if gone:
        log.info("%s: snapshot %s is gone: the host carried its removal through" % (vm.name, snap.id))
    return gone
