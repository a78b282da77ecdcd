"""Our snapshot's removal, carried past a broken SSH connection.

A removal whose session broke (errors.ConnectionLost) tells nothing of the snapshot: hostd may never have been
asked (the link dropped first), or have its removal task under way (killing vim-cmd does not cancel it, and a
long consolidation is when a link drops). Telling the admin to remove by hand a snapshot that hostd is removing,
or leaving one to grow on the VM while the host can be reached again, are both wrong: the removal is waited for
over a new connection (the master opened anew, sshconnection.py) as the driver waits for its own, the
snapshot listed and its deltas merged. No task is asked after (esxisim models none; a real host's `vim-cmd
vmsvc/get.tasklist` lists the VM's recent tasks, finished ones too, each's state only in `vimsvc/task_info`), so
the removal is asked again only once ours stayed listed REASK_AFTER seconds; a refusal of that second removal
because the first one is under way is waited out too. Up to ATTEMPTS removals are asked for, all within the one
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
# vim-cmd's faults for a removal asked while the first is under way: TaskInProgress ("the virtual machine is busy")
# and InvalidState, RemoveSnapshot_Task's documented faults (vSphere API reference, vim.vm.Snapshot), or NotFound,
# the snapshot gone by the time the second task ran (esxisim's answer; no real host's output of it was found)
UNDER_WAY = ("TaskInProgress", "InvalidState", "NotFound")


def remove_snapshot(host: Hypervisor, vm: Vm, snap: Snapshot, timeout: float, log) -> None:
    """host.remove_snapshot (its errors), a removal whose connection broke waited for and asked again, all
    within `timeout` seconds and REASK_AFTER (the first removal's own wait may take all of `timeout`, and ours is
    looked past once); the last ConnectionLost when the host cannot be reached to tell; when the snapshot
    outlived every attempt, the last attempt's error: its lost connection, or the host's refusal (InvalidState:
    the admin reads what the host said, not an earlier session's broken link), with how long it was waited for."""
    began = time.monotonic()
    deadline = began + timeout + REASK_AFTER
    refused = None  # type: Optional[CommandFailed]  # the last attempt's refusal
    for attempt in range(ATTEMPTS):
        left = deadline - time.monotonic()
        if attempt and left <= 0:
            break
        try:
            host.remove_snapshot(vm, snap, min(timeout, left))
            return
        except ConnectionLost as err:
            # the last removal is not asked again: it is waited for as long as is left
            lost, refused = err, None
            left = deadline - time.monotonic()
            wait = left if attempt == ATTEMPTS - 1 else min(REASK_AFTER, left)
            log.warning("%s: removing snapshot %s: %s; waiting for the host to remove it, over a new connection"
                        % (vm.name, snap.id, lost))
        except CommandFailed as err:
            if not attempt or err.fault not in UNDER_WAY:
                raise
            refused, wait = err, deadline - time.monotonic()
            log.info("%s: the host refused to remove snapshot %s again (%s): its first removal is under way; "
                     "waiting for it" % (vm.name, snap.id, err.fault))
        if _removed(host, vm, snap, wait, lost, log):
            return
    last = refused if refused is not None else lost  # type: HotvcbError
    last.message += "; snapshot %s is still listed after waiting %d s for the host's removal" % (
        snap.id, time.monotonic() - began)
    last.args = (last.message,)
    raise last


def _removed(host: Hypervisor, vm: Vm, snap: Snapshot, wait: float, lost: ConnectionLost, log) -> bool:
    """Whether the host removed ours within `wait` seconds (looked at once where none is left; Unconsolidated
    where its disks stay on deltas); `lost` raised when the host cannot be reached to tell."""
    try:
        gone = host.await_snapshot_removal(vm, snap, wait)
    except Unconsolidated:
        raise
    except HotvcbError as err:
        log.warning("%s: cannot look at its snapshots again: %s" % (vm.name, err))
        raise lost from err
    if gone:
        log.info("%s: snapshot %s is gone: the host carried its removal through" % (vm.name, snap.id))
    return gone
