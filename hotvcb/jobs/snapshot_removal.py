"""Our snapshot's removal, carried past a broken SSH connection.

A removal whose session broke (errors.ConnectionLost) tells nothing of the snapshot: hostd may never have been
asked (the link dropped first), or have its removal task under way (killing vim-cmd does not cancel it, and a
long consolidation is when a link drops). Telling the admin to remove by hand a snapshot that hostd is removing,
or leaving one to grow on the VM while the host can be reached again, are both wrong: the removal is waited for
over a new connection (the master opened anew, sshconnection.py) as the driver waits for its own, the
snapshot listed and its deltas merged. No task is asked after (esxisim models none; a real host's `vim-cmd
vmsvc/get.tasklist` lists the VM's recent tasks, finished ones too, each's state only in `vimsvc/task_info`), so
the removal is asked again only once ours stayed listed REASK_AFTER seconds; a refusal of that second removal because the first
one is under way is waited out too, up to the removal's timeout. ATTEMPTS removals are asked for in all, the last
one waited for up to the removal's timeout.
"""

from typing import Optional

from ..errors import CommandFailed, ConnectionLost, HotvcbError, Unconsolidated
from ..hosts.base import Hypervisor
from ..model import Snapshot, Vm

ATTEMPTS = 3  # removals asked for in all, each given the full SNAPSHOT_REMOVE_TIMEOUT
REASK_AFTER = 10.0  # seconds ours stays listed after a broken removal before it is asked again
# vim-cmd's faults for a removal asked while the first is under way: TaskInProgress ("the virtual machine is busy")
# and InvalidState, RemoveSnapshot_Task's documented faults (vSphere API reference, vim.vm.Snapshot), or NotFound,
# the snapshot gone by the time the second task ran (esxisim's answer; no real host's output of it was found)
UNDER_WAY = ("TaskInProgress", "InvalidState", "NotFound")


def remove_snapshot(host: Hypervisor, vm: Vm, snap: Snapshot, timeout: float, log) -> None:
    """host.remove_snapshot (its errors), a removal whose connection broke waited for and asked again; the
    last ConnectionLost when the host cannot be reached to tell; when the snapshot outlived every attempt, the
    last attempt's error: its lost connection, or the host's refusal (InvalidState: the admin reads what the host
    said, not an earlier session's broken link)."""
    refused = None  # type: Optional[CommandFailed]  # the last attempt's refusal
    for attempt in range(ATTEMPTS):
        try:
            host.remove_snapshot(vm, snap, timeout)
            return
        except ConnectionLost as err:
            # the last removal is not asked again: it is waited for as long as any removal is
            lost, refused = err, None
            wait = timeout if attempt == ATTEMPTS - 1 else min(REASK_AFTER, timeout)
            log.warning("%s: removing snapshot %s: %s; waiting for the host to remove it, over a new connection"
                        % (vm.name, snap.id, lost))
        except CommandFailed as err:
            if not attempt or err.fault not in UNDER_WAY:
                raise
            refused, wait = err, timeout
            log.info("%s: the host refused to remove snapshot %s again (%s): its first removal is under way; "
                     "waiting for it" % (vm.name, snap.id, err.fault))
        if _removed(host, vm, snap, wait, lost, log):
            return
    if refused is not None:
        refused.message += "; snapshot %s is still listed after waiting %d s for the host's removal" % (
            snap.id, timeout)
        refused.args = (refused.message,)
        raise refused
    raise lost


def _removed(host: Hypervisor, vm: Vm, snap: Snapshot, wait: float, lost: ConnectionLost, log) -> bool:
    """Whether the host removed ours within `wait` seconds (Unconsolidated where its disks stay on deltas);
    `lost` raised when the host cannot be reached to tell."""
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
