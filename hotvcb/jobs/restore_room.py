"""Whether a restore fits where it goes: the target is a folder on a datastore of this host, with
room for all the restore writes there (the VM; a .gz unpacked beside it; a KVM backup's staged
VMDKs; a repository's backup staged). Checked before anything is written; the free space is the
one asked ahead (restore.py)."""

from typing import Callable, Optional

from ..hosts.base import Hypervisor
from ..restorefile import RestoreRequest
from ..shell import Shell
from ..store import layout
from ..targz import ArchiveView
from ..units import human_size, need_and_free
from . import backup_check, restore_stage
from .restore_plan import Plan, RestoreError

FORMAT_2GB_NOTE = (
    "2gbsparse is a hosted format: ESXi opens it only with the multiextent module loaded "
    "(`esxcli system module load -m multiextent`); prefer thin"
)


def free_on_target(host: Hypervisor, target: str, room: Callable[[], Optional[int]]) -> Optional[int]:
    """The target's free bytes (`room()`: the answer asked ahead, restore.py), once the target is known to
    be a folder on a datastore."""
    if not host.shell.isdir(target):
        raise RestoreError("target datastore path %s %s" % (target, layout.not_a_folder(host.shell, target)))
    inside = backup_check.inside_a_backup(host.shell, target)
    if inside:
        raise RestoreError("target datastore path %s" % inside)
    free = room()
    if free is None:
        names = ", ".join(d.name for d in host.datastores()) or "none"
        raise RestoreError("%s is not on a datastore of this host (datastores: %s)" % (target, names))
    return free


def check_unpack_room(req: RestoreRequest, view: ArchiveView, gz: str, free: Optional[int], plan: Plan,
                      verified: bool) -> bool:
    """The archive unpacked and the VM cloned beside it: its content once, then the restored VM (`plan`,
    as planned from the archive: a thick format's disks take their whole capacity), or its content again
    where that is more. Checked before unpacking, so the dry run refuses what the real run would only refuse
    once it had unpacked. Returns whether it fits only by the data the manifest's block digests locate
    (datasize.measure): those the archive's checksums must prove before it is unpacked (`verified`: they
    will be; under --no-verify the members count whole, as for a ghettoVCB archive)."""
    size = sum(view.unpacked_size(view.root + "/" + rel) for rel in view.sizes)
    needed = size + max(size, plan.needed)
    whole = sum(view.sizes.values())
    if free is None or whole + max(whole, plan.needed) <= free:
        return False
    if needed > free or not verified:
        need, room = need_and_free(needed if needed > free else whole + max(whole, plan.needed), free)
        raise RestoreError("%s needs up to %s to unpack and restore on %s, only %s free%s" % (
            gz, need, req.target, room, "" if needed > free else " (counted whole: the smaller count by the data "
            "its manifest's block digests locate needs them proved by its checksums, which --no-verify skips)"))
    return True


def check_staged_room(shell: Shell, req: RestoreRequest, kvm: "restore_stage.Found", folder: str,
                      free: Optional[int]) -> int:
    """A KVM backup's disks are staged on the target as VMDKs, then restored beside them. Returns the room
    the VM keeps once the staged VMDKs are removed (what a dry run's tally holds for the lines after)."""
    staged, restored = restore_stage.bytes_needed(shell, kvm, req.disk_format)
    check_staging_room(req, folder, "the staged VMDKs", staged + restored, free)
    return restored


def check_staging_room(req: RestoreRequest, what: str, staged: str, needed: int, free: Optional[int]) -> None:
    """A backup staged on the target (a KVM backup's VMDKs, a repository's backup) and the VM `what`
    restored beside it need `needed` together; refused before the staging writes anything."""
    if free is not None and needed > free:
        need, room = need_and_free(needed, free)
        raise RestoreError("restoring %s as %s needs up to %s on %s (%s and the VM), only %s free"
                           % (what, req.disk_format, need, req.target, staged, room))


def check_room(req: RestoreRequest, log, plan: Plan) -> None:
    if req.disk_format == "2gbsparse":
        log.warning(FORMAT_2GB_NOTE)
    if plan.free is not None and plan.needed > plan.free:
        need, room = need_and_free(plan.needed, plan.free)
        raise RestoreError("restoring %s as %s needs %s on %s but only %s is free" % (
            plan.name, req.disk_format, need, req.target, room))
    log.debug("%s: %s needed, %s free" % (
        plan.name, human_size(plan.needed), "unknown" if plan.free is None else human_size(plan.free)))
