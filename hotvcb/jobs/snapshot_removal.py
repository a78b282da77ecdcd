"""Our snapshot's removal, carried past a broken SSH connection.

A removal whose session broke (errors.ConnectionLost) tells nothing of the snapshot: hostd may never have been
asked (the link dropped first), or carried the removal through while vim-cmd's session died. Telling the admin
to remove by hand a snapshot that is gone, or leaving one to grow on the VM while the host can be reached again,
are both wrong: the VM's snapshots are looked at over a new connection (ssh makes one of its own once the master
is gone), and the removal is asked again while ours is still listed, ATTEMPTS times in all.
"""

from ..errors import ConnectionLost, HotvcbError, Unconsolidated
from ..hosts.base import Hypervisor
from ..model import Snapshot, Vm

ATTEMPTS = 3  # removals asked for in all, each given the full SNAPSHOT_REMOVE_TIMEOUT


def remove_snapshot(host: Hypervisor, vm: Vm, snap: Snapshot, timeout: float, log) -> None:
    """host.remove_snapshot (its errors), a removal whose connection broke looked at again and asked again; the
    last ConnectionLost when the host cannot be reached to tell, or the snapshot outlived every attempt."""
    for _ in range(ATTEMPTS):
        try:
            host.remove_snapshot(vm, snap, timeout)
            return
        except ConnectionLost as err:
            lost = err
        log.warning("%s: removing snapshot %s: %s; looking at the VM's snapshots again over a new connection"
                    % (vm.name, snap.id, lost))
        try:
            listed = any(s.id == snap.id for s in host.snapshots(vm, interruptible=False))
            why = "" if listed else host.needs_consolidation(vm)
        except HotvcbError as err:
            log.warning("%s: cannot look at its snapshots again: %s" % (vm.name, err))
            raise lost from err
        if why:
            raise Unconsolidated("%s %s" % (vm.name, why))
        if not listed:
            log.info("%s: snapshot %s is gone: the host carried its removal through" % (vm.name, snap.id))
            return
    raise lost
