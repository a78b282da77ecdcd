"""Whether a QEMU process holds its VM's images, or a migration has them (or is about to) on another host's QEMU.

A QEMU migrated away (run state postmigrate, finish-migrate on its way there) has released its images to the
other host's QEMU, which writes them now; one started with `-incoming` (inmigrate) has not taken them yet; one
migrating now hands them over at the switch-over. An overlay of ours over them would be put in the wrong QEMU's
chain (its commit then fails "Block node is read-only", every night) or, on shared storage, under a QEMU that
never heard of it. So the VM is refused before any change, naming the migration (qemu.py's load_vm, as every
disk's skip reason), and asked again right before the snapshot (qemu_overlays.py), since the look-ahead may
have loaded the VM minutes before. One that comes during the backup's copy is named again at the snapshot's
removal (qemu_overlays.py), where its commit would fail "Block node is read-only" and the overlay, which no later
backup of this QEMU can commit (it refuses the VM as above), holds the guest's writes up to the switch-over.
"""

from typing import List

from ..errors import SnapshotHeld
from .qmp import QmpClient

_STATES = {
    "inmigrate": "its QEMU waits for an incoming migration (run state inmigrate, `-incoming`): its images are not "
                 "its own until the migration comes",
    "postmigrate": "its QEMU migrated the VM away (run state postmigrate): its images are the other host's QEMU's "
                   "now, and this one waits to be quit",
    "finish-migrate": "its QEMU is finishing a migration away (run state finish-migrate): its images go to the other "
                      "host's QEMU",
}
# query-migrate's statuses of a migration under way (not none, completed, failed or cancelled)
_UNDER_WAY = frozenset(("setup", "active", "pre-switchover", "device", "postcopy-active", "postcopy-paused",
                        "postcopy-recover", "wait-unplug", "cancelling", "colo"))


def migrating(qmp: QmpClient) -> str:
    """Why the VM behind `qmp` cannot be snapshotted for a migration; "" when no migration has its images."""
    why = migration(qmp)
    return why + "; back it up where it runs" if why else ""


def migration(qmp: QmpClient) -> str:
    """The migration that has (or is about to have) the images of the VM behind `qmp`; "" when none has."""
    state = str(qmp.execute("query-status").get("status", ""))
    why = _STATES.get(state, "")
    if not why:
        status = str(qmp.execute("query-migrate").get("status", ""))
        if status in _UNDER_WAY:
            why = "it is being migrated (migration status %s): at the switch-over the other host's QEMU takes its " \
                  "images, without the snapshot's overlay" % status
    return why


def migrated_during_backup(vm_name: str, why: str, overlays: List[str]) -> SnapshotHeld:
    """The snapshot's removal refused for the migration `why` (migration's): the overlays hold the guest's
    writes from the snapshot up to the switch-over, which this QEMU can no longer commit; what to do depends
    on how the migration ends, which it may not have yet."""
    return SnapshotHeld(
        "%s: the VM was migrated during the backup: %s; so the snapshot's overlay(s) %s, which hold the guest's "
        "writes from the snapshot up to the migration, are not committed, and the backup is not sealed: do not "
        "delete them; if the migration fails or is cancelled (the VM runs on here), the next backup or "
        "`hotvcb --qemu DIR cleanup` commits them; if it completed, this QEMU can commit them no more (the next "
        "backup refuses it as migrated: quit it), and the other host's QEMU runs without the writes in them "
        "unless it was started on them: check the guest's disk there, and `qemu-img commit` an overlay into its "
        "image only while nothing has written that image since the migration"
        % (vm_name, why, ", ".join(overlays) or "(none left)"))
