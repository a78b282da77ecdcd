"""A VM's pre-flight: everything that can fail its backup before anything on the host changes.

Which disks are copied (a VM left with none fails here), the user's
snapshots and stray delta files, what the driver cannot do (a format, a
power-down mode, in-guest hooks, a repository), the user's snapshot tree to
keep, and the room the backup takes on the target, reserved against the
other VMs of the run (jobs/space.py). What it finds is the `Plan` the copy
goes by, and a dry run shows (`show`).
"""

import functools
from dataclasses import dataclass, field
from datetime import datetime
from typing import Dict, List, Optional, Set

from ..errors import HotvcbError
from ..hosts.base import Hypervisor
from ..model import NO_DATA_FILE, Disk, Snapshot, SnapshotTree, Vm
from ..runid import parse
from ..settings import Settings
from ..store import layout, rotation, volume
from ..units import human_size, need_and_free
from ..vmdk import base_name
from .guest_hooks import refuse_unless_possible
from .leftovers import is_ours
from .snaptree import TREE, describe
from .space import SpaceLedger, need_text


@dataclass
class Plan:
    """What the checks before a VM's snapshot found: the room and progress the copy needs."""

    needed: int  # bytes the backup takes on the target
    capacity: Dict[str, int]  # disk key -> virtual size, for the copy's progress
    tree: Optional[SnapshotTree] = None  # the user's, to keep (BACKUP_SNAPSHOT_TREE)
    user_snapshots: List[str] = field(default_factory=list)  # their ids when the tree was read
    warnings: List[str] = field(default_factory=list)  # what the run warns of beside the backup it makes


def disk_names(vm: Vm, disk: Disk) -> Set[str]:
    """What VMDK_FILES_TO_BACKUP may call a disk.

    ghettoVCB's findVMDK compared each name with the disk's .vmx fileName as
    written: the file name for a disk in the VM's folder, a /vmfs/volumes/...
    path (by datastore UUID or name) for one elsewhere. Any of those, the
    disk's file name and its full path match, each also by the base name a
    disk running on a snapshot delta has (the name the backup gives it).
    """
    folder = disk.path.rsplit("/", 1)[0]
    names = set()  # type: Set[str]
    for path in (disk.path, folder + "/" + base_name(disk.filename)):
        names.update((path, path.rsplit("/", 1)[-1]))
        if path.startswith(vm.folder + "/"):
            names.add(path[len(vm.folder) + 1:])
        parts = path.split("/", 4)  # "", "vmfs", "volumes", <uuid or name>, <the rest>
        if disk.datastore and len(parts) == 5 and path.startswith("/vmfs/volumes/"):
            names.add("/vmfs/volumes/%s/%s" % (disk.datastore, parts[4]))
    return names


def refuse_run_format(host: Hypervisor, s: Settings) -> None:
    """The run's own DISK_BACKUP_FORMAT (the global config's), one this host cannot write, refused before any VM
    with its file:line, exit 1, as a config error: every VM failed on it one by one (exit 6), without the line to
    fix. A per-VM file's stays that VM's failure (`check`)."""
    if s.disk_backup_format not in host.formats:
        raise HotvcbError("%s: %s" % (s.where("disk_backup_format"), _unwritable(host, s.disk_backup_format)))


def _unwritable(host: Hypervisor, fmt: str) -> str:
    return "DISK_BACKUP_FORMAT=%s cannot be written on this %s host (allowed: %s)" % (
        fmt, host.kind, "|".join(host.formats))


def _refuse_power_down(host: Hypervisor, vm: Vm, key: str) -> None:
    """`key` (POWER_VM_DOWN_BEFORE_BACKUP, COLD_SNAPSHOT) on a host that cannot start a VM again (bare QEMU)
    refuses the VM, saying what the key does to it: a running one is shut down; a paused one is not (only a
    running guest is), but would be were it resumed before its backup starts, so it is refused too, and the
    key at 0 backs it up paused, by a snapshot."""
    if host.power_state(vm) == "on":
        raise HotvcbError("%s=1 shuts %s down, and this %s host cannot start it again; not backing it up"
                          % (key, vm.name, host.kind))
    raise HotvcbError("%s is paused; %s=1 shuts it down should it be resumed before its backup starts, and this %s "
                      "host cannot start it again; not backing it up (with %s=0 for it, a snapshot backs it up "
                      "paused)" % (vm.name, key, host.kind, key))


def warn_skipped(log, vm: Vm, disk: Disk) -> None:
    """A disk in no backup, named: at the pre-flight, or one the host found only at the snapshot."""
    log.warning("%s: skipping %s (%s): %s" % (vm.name, disk.key, disk.filename, disk.skip_reason))


def disks_to_copy(vm: Vm, s: Settings, log) -> List[Disk]:
    """The disks to copy; none at all fails the VM before any change.

    A backup without a disk is no backup: sealed as OK it would let
    rotation delete the real ones.
    """
    wanted = [n for n in s.vmdk_files_to_backup if n.lower() != "all"]
    out = []
    named = [disk_names(vm, disk) for disk in vm.disks]
    # a bare file name is, as the .vmx writes it, the disk in the VM's folder: a disk of that name on
    # another datastore (ESXi names a second disk there <vm>.vmdk too) only where the folder has none
    here = {n for disk, names in zip(vm.disks, named) if disk.path.startswith(vm.folder + "/") for n in names}
    named = [names if disk.path.startswith(vm.folder + "/") else {n for n in names if "/" in n or n not in here}
             for disk, names in zip(vm.disks, named)]
    for disk, names in zip(vm.disks, named):
        if disk.skip_reason:
            warn_skipped(log, vm, disk)
        elif wanted and not names.intersection(wanted):
            log.info("%s: %s not in VMDK_FILES_TO_BACKUP, skipping" % (vm.name, disk.filename))
        else:
            out.append(disk)
    unknown = [n for n in wanted if not any(n in names for names in named)]
    if unknown:
        log.warning("%s: VMDK_FILES_TO_BACKUP names %s, which this VM does not have (its disks: %s)"
                    % (vm.name, ", ".join(unknown), ", ".join(d.filename for d in vm.disks) or "none"))
    if not out:
        why = "every disk was skipped" if vm.disks else "the VM has no disk"
        reasons = {d.skip_reason for d in vm.disks}
        if len(reasons) == 1 and "" not in reasons:  # one for them all (a VM being migrated) is the VM's: said here
            why += ": " + reasons.pop()
        if wanted:
            why = "VMDK_FILES_TO_BACKUP=%s matches none of its disks (%s)" % (
                ",".join(wanted), ", ".join(d.filename for d in vm.disks) or "none")
        raise HotvcbError("nothing to back up: %s" % why)  # the log line names the VM
    return out


def _another_run(snap: Snapshot) -> str:
    """Why a VM another hotvcb run is backing up (its snapshot is on the disks: a second QMP folder's run, a
    run of another config) fails here, naming that run: "has 1 snapshot(s); set
    ALLOW_VMS_WITH_SNAPSHOTS_TO_BE_BACKEDUP=1" sent the admin to a setting that changes nothing."""
    return ("another hotvcb backup, %s, is backing it up (its snapshot %r is on the disks); not backing it up "
            "until that run ends" % (parse(snap.description) or "an earlier hotvcb run", snap.name))


def check(host: Hypervisor, s: Settings, log, space: SpaceLedger, vm: Vm, disks: List[Disk],
          snaps: List[Snapshot], pending: bool = False, unmounted: bool = False) -> Plan:
    """Everything that can fail before we change anything on the host (`snaps`: read just now).

    `pending`: a dry run left a dead run's snapshot in place; its deltas are
    still there, so stray deltas can only be told apart once it is gone.
    `unmounted`: the target is the NFS share a dry run would mount; until then
    there is nothing to check or measure (its free space is unknown, as nfs.py said).
    """
    if pending:
        log.info("%s: delta files are checked once the leftover snapshot is gone" % vm.name)
    # a snapshot's description with no overlay holds none of the guest's data: no snapshot on the disks (the
    # leftover sweep named or removed it). Counted, it failed the VM every night as "has 1 snapshot(s)"
    snaps = [x for x in snaps if x.state != NO_DATA_FILE]
    if any(x.foreign_job for x in snaps):  # not a snapshot: ALLOW_VMS_WITH_SNAPSHOTS_TO_BE_BACKEDUP has no say
        raise HotvcbError("another backup job is running on the domain (not hotvcb's); not backing it up "
                          "until that job ends")  # the log line names the VM
    running = [x for x in snaps if is_ours(x)] if not pending else []
    if running:  # left by the sweep: a live run's (or one that cannot be told dead); no snapshot of a user's
        raise HotvcbError(_another_run(running[0]))  # the log line names the VM
    deltas = [] if pending else host.delta_files(vm)
    allowed = s.allow_vms_with_snapshots_to_be_backedup or s.backup_snapshot_tree  # asked to keep them
    # asked with a dead run's snapshot still on top too (a dry run's): the host's mark of it stays under that
    unconsolidated = host.needs_consolidation(vm, None if pending else deltas)  # the deltas it listed, not again
    if unconsolidated and not allowed:  # said before the user's snapshots, whose setting consolidates nothing
        users = len([x for x in snaps if not is_ours(x)])
        raise HotvcbError("%s; not backing it up until it is consolidated%s" % (
            unconsolidated, " (it has %d snapshot(s) of the user's too)" % users if users else ""))
    if (snaps or deltas or vm.own_snapshots) and not allowed:
        what = "%d snapshot(s)" % len(snaps) if snaps else "delta files %s" % ", ".join(
            d.rsplit("/", 1)[-1] for d in deltas
        ) if deltas else "snapshots of its own: %s" % "; ".join(vm.own_snapshots)
        raise HotvcbError(
            "%s has %s; not backing it up (set ALLOW_VMS_WITH_SNAPSHOTS_TO_BE_BACKEDUP=1 to allow)"
            % (vm.name, what)
        )
    if s.guest_pre_backup_hook or s.guest_post_backup_hook:
        refuse_unless_possible(host, vm)
    modes = [k for k, on in (("POWER_VM_DOWN_BEFORE_BACKUP", s.power_vm_down_before_backup),
                             ("COLD_SNAPSHOT", s.cold_snapshot)) if on]
    if modes and not host.powers_on:
        _refuse_power_down(host, vm, modes[0])
    # its snapshot would be refused (a host that can neither quiesce nor start a VM again snapshots every VM not off)
    if s.vm_snapshot_quiesce and host.quiesce_refused and host.power_state(vm) != "off":
        raise HotvcbError("%s: %s" % (vm.name, host.quiesce_refused))
    if s.vm_backup_repository and host.kind == "libvirt":
        # the repository reads a base image as a file the snapshot holds still; libvirt's backup
        # job holds no file still (the guest goes on writing the image), it exports the instant over NBD
        raise HotvcbError("a repository cannot take libvirt domains yet (their images change during "
                          "libvirt's backup job); back %s up to a folder (VM_BACKUP_VOLUME)" % vm.name)
    if s.vm_backup_repository and s.backup_snapshot_tree:
        raise HotvcbError("BACKUP_SNAPSHOT_TREE=1 keeps delta files, which a repository does not store; "
                          "back this VM up to a folder (VM_BACKUP_VOLUME) instead")
    if s.backup_snapshot_tree and vm.history:  # asked to keep snapshots this driver cannot
        raise HotvcbError("BACKUP_SNAPSHOT_TREE=1 asks to keep its snapshots, which a %s backup cannot hold (%s); "
                          "not backing it up (set BACKUP_SNAPSHOT_TREE=0 for it to back up its current state)"
                          % (host.kind, "; ".join(vm.history)))
    fmt = s.disk_backup_format
    if fmt not in host.formats:
        raise HotvcbError(_unwritable(host, fmt))
    # a repository stores only new chunks: no estimate applies (nor its cost: `qemu-img measure` per qcow2)
    needed = 0 if s.vm_backup_repository else sum(host.bytes_needed(d, fmt) for d in disks)
    # each disk's size for the copy's progress, read now while the driver has the descriptors
    plan = Plan(needed, {d.key: host.bytes_needed(d, "eagerzeroedthick") for d in disks})
    if unconsolidated and pending:  # a dry run's note: the real run removes the dead run's snapshot first
        log.warning("%s %s (once the leftover snapshot is removed, the real run asks again)" % (vm.name, unconsolidated))
    elif unconsolidated:  # backed up as allowed, and named: a cold backup has no removal of ours to warn of it
        plan.warnings.append("%s %s" % (vm.name, unconsolidated))
    if s.backup_snapshot_tree and [x for x in snaps if not is_ours(x)]:
        # every chain of the tree is checked now: a missing delta fails the VM before any change; a dry run
        # plans it as the real run reads it, a dead run's snapshot removed (under-planned without it)
        plan.user_snapshots = [x.id for x in snaps if not is_ours(x)]
        plan.tree = host.snapshot_tree(vm, disks, plan.user_snapshots if pending and all(plan.user_snapshots) else None)
        needed += sum(host.bytes_needed(d, fmt) for d in plan.tree.bases) + sum(
            host.shell.file_size(f) for delta, _ in plan.tree.deltas for f in host.disk_files(delta))
        plan.needed = needed
        log.info("%s: keeping its snapshot tree, %s" % (vm.name, describe(plan.tree)))
    # the free bytes less those promised to other VMs of this run being backed up now (BACKUP_PARALLEL);
    # a repository stores only new chunks, so no estimate of the copy's size applies to it
    # a compressed backup's .gz, as large as its folder at most, is written while the folder is there
    archive = needed if s.enable_compression else 0
    target = functools.partial(volume.check, host, s.vm_backup_volume, s.create_vm_backup_volume)
    free = None if s.vm_backup_repository or unmounted else space.reserve(vm.name, s.vm_backup_volume, needed, target,
                                                             functools.partial(target, free=False), archive)
    if free is not None and needed > free:
        need, room = need_and_free(needed, free)
        raise HotvcbError("%s needs %s on %s but only %s is free" % (vm.name, need, s.vm_backup_volume, room))
    log.debug("%s: needs %s, %s free" % (vm.name, need_text(needed, archive),
                                          "unknown" if free is None else human_size(free)))
    if free is not None and needed + archive > free:
        log.info("%s: %s free may not hold its .gz beside its folder; if it does not, the backup is kept as a "
                 "folder" % (vm.name, human_size(free)))
    return plan


def _tools_needed(host: Hypervisor, s: Settings, log, vm: Vm) -> str:
    """What of the real run needs the guest's tools (VMware Tools), asked of the host as that run depends on
    it: a clean shutdown with no hard power off to fall back on, or a quiesced snapshot of a running VM.
    Returns why the real run would fail the VM (the host refuses a shutdown without Tools, and nothing
    follows it: jobs/power.py), for the dry run to fail it too; "" when it would not."""
    down = s.power_vm_down_before_backup or s.cold_snapshot
    if down and not s.enable_hard_power_off:
        needs = "guest shutdown (%s without ENABLE_HARD_POWER_OFF) will be refused" % (
            "COLD_SNAPSHOT" if s.cold_snapshot else "POWER_VM_DOWN_BEFORE_BACKUP")
    elif s.vm_snapshot_quiesce and not down:
        needs = "quiesced snapshot (VM_SNAPSHOT_QUIESCE) will fail"
    else:
        return ""
    try:
        running = host.guest_tools(vm)
    except HotvcbError as err:
        log.warning("%s: cannot ask whether VMware Tools is running (%s); if it is not, the real run's %s"
                    % (vm.name, err, needs))
        return ""
    if running is not False:
        return ""
    if down:
        return ("VMware Tools is not running in the guest of %s: the real run's %s, and it will not be backed up"
                % (vm.name, needs))
    log.warning("%s: VMware Tools is not running in the guest: the real run's %s" % (vm.name, needs))
    return ""


def dry_run(host: Hypervisor, s: Settings, log, vm: Vm, disks: List[Disk], plan: Plan, started: datetime) -> str:
    """What the backup would do, as ghettoVCB's dry run prints it, and what rotation would remove (into
    a repository: where it goes, and that prune, not rotation, removes its backups). Returns why the real
    run would fail the VM before its copy (_tools_needed), said after the listing; "" when it would not."""
    repo = s.vm_backup_repository
    if repo:
        target = "the repository %s (only the chunks it lacks are stored)" % repo
    else:
        target = layout.vm_root(s.vm_backup_volume, vm.name) + "/" + layout.backup_name(vm.name, started)
    log.dryrun("###############################################")
    log.dryrun("Virtual Machine: %s (vmid %s)" % (vm.name, vm.ref.vmid))
    log.dryrun("VM_VMX_PATH: %s" % vm.ref.vmx_path)
    log.dryrun("BACKUP_TO: %s" % target)
    state = host.power_state(vm)
    log.dryrun("POWER_STATE: %s" % state)
    failing = _tools_needed(host, s, log, vm) if state == "on" else ""
    for d in disks:
        log.dryrun("VMDK: %s (%s) -> %s, %s %s" % (
            d.path, d.key, "chunks" if repo else s.disk_backup_format, "at most" if repo else "needs",
            human_size(host.bytes_needed(d, "thin" if repo else s.disk_backup_format))))
    for f in vm.extra_files:
        log.dryrun("FILE: %s" % f)
    if plan.tree is not None:
        log.dryrun("SNAPSHOT TREE: %s -> %s/" % (describe(plan.tree), TREE))
    if repo:
        log.dryrun("TOTAL NEEDED: at most %s; ROTATION: none (a repository's backups go by hotvcb prune)"
                   % human_size(sum(host.bytes_needed(d, "thin") for d in disks)))  # check() counts none
        log.dryrun("###############################################")
        return failing
    archive = plan.needed if s.enable_compression else 0  # as preflight reserves
    log.dryrun("TOTAL NEEDED: %s; ROTATION: keep %d%s" % (
        need_text(plan.needed, archive), s.vm_backup_rotation_count,
        ", within %s" % human_size(s.vm_backup_rotation_size) if s.vm_backup_rotation_size else ""))
    # what rotation would remove once this backup is made (counted as the newest good one)
    rotation.rotate(host.shell, s.vm_backup_volume, vm.name, s.vm_backup_rotation_count, log,
                    source=(host.host_name(), vm.uuid), budget=s.vm_backup_rotation_size, dry_run=True,
                    phantom=plan.needed)
    log.dryrun("###############################################")
    return failing
