"""The small Protocol every hypervisor driver implements.

The backup job speaks only this vocabulary, so a second hypervisor (QEMU/KVM
through QMP) plugs into the same job. Contracts:

- `create_snapshot` returns only once the snapshot is visible (bounded by
  `timeout`), raising SnapshotError/TimeoutExpired otherwise.
- `remove_snapshot` removes exactly that snapshot (never "all") and returns
  once its delta files are gone, bounded by `timeout`.
- `copy_disk` writes the disk to `dst` in `fmt`, calls `progress(percent)` as
  it goes and returns the names of the files it wrote; it raises CopyError
  (or Interrupted) and leaves cleanup of partial files to the caller.
- `copied_as` names a source whose bytes one file of the copy will hold, byte
  for byte (so the job can digest the source while the copy is made, instead
  of reading the copy back): the source file's own, or its virtual disk (a raw
  copy of a qcow2 image); or, for a copy in an image format of the copying
  tool's own (qcow2), a source whose virtual disk is the one the copy's image
  holds (`Copied.content`); or None where no file does.
"""

import datetime
from typing import Callable, Collection, Dict, List, NamedTuple, Optional, Protocol, Sequence, Tuple

from ..model import DatastoreInfo, Disk, NfsShare, Snapshot, SnapshotTree, Vm, VmRef
from ..shell import Shell
from .. import lazyre

Progress = Callable[[int], None]


class Copied(NamedTuple):
    """`copied_as`'s answer. With `content` "" the copy file holds the source's bytes: the file's own
    (`source_format` ""), or the virtual disk of the source read as `source_format` ("raw": the file
    is the disk, or "qcow2"); else the copy is an image of format `content` whose virtual disk is
    the source's, read as `source_format`: the manifest then records a content entry."""

    source: str
    copy: str
    content: str = ""
    source_format: str = ""


def powered(state: str) -> str:
    """A `power_state()` answer as a sentence says it: "powered on", "powered off", but "suspended" (the
    admin read "powered suspended")."""
    return state if state == "suspended" else "powered " + state


# boot_stamp's value where nothing tells the VM's last power on. A power on always leaves a stamp, so a VM found
# with none since a stamp was recorded was not told powered on: its log was deleted or rotated away
NO_BOOT_STAMP = "none"
# starts boot_stamp's value where the VM's last start failed (the vmx, or libvirt's QEMU, began and gave up: a disk
# locked or missing): no power on, as NO_BOOT_STAMP is none; whoever asked it (the admin, a run of ours) wanted the
# VM on, so a marker judged by it still powers the VM on (jobs/powermark.py)
FAILED_START = "failed start: "


# joins a boot_stamp's process (ESXi: its vmx's pid) and the host's boot time, where the driver tells it: a pid is
# given again after a reboot, so the process is told by both while it started in the host's current boot, by its
# pid alone once the host has rebooted since (it ran in an earlier boot, which the host no longer says). A marker
# judges the two parts apart (jobs/powermark.py): a reboot alone is no power on
IN_HOST_BOOT = "; in the host's boot of "
# then, where the driver reads it, the whole first line of the log the process began (ESXi: vmware.log's header,
# its time and pid): while the VM is off no process runs to begin or rotate a log, so the same line read then and
# later proves no power on in between, whatever the host's clock or boots did (jobs/powermark.py)
LOG_BEGUN = "; its log begun by "
# two host boot times this close are one boot: hostd derives bootTime from the clock and the uptime, so a clock
# stepped by NTP moves it by the step (seconds, a minute for a drifted RTC); two real boots lie minutes apart at
# least (the host's shutdown, the server's POST, the boot until hostd answers, a VM started and powered off for
# a backup in between)
BOOT_SLACK = 120.0
# a UTC time as hosts give them: hostd's bootTime ("2026-12-06T04:00:00.250123Z"), vmware.log's lines
_UTC = lazyre.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?Z")


def stamp_parts(stamp: str) -> Tuple[str, str, str]:
    """A boot_stamp value as (its process, the host's boot it started in, its log's first line: "" where it does
    not say them)."""
    stamp, _, begun = stamp.partition(LOG_BEGUN)
    process, _, boot = stamp.partition(IN_HOST_BOOT)
    return process, boot, begun


def utc(text: str) -> Optional[datetime.datetime]:
    """The UTC time `text` starts with, None where it does not start with one."""
    m = _UTC.match(text)
    if m is None:
        return None
    try:
        year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
        return datetime.datetime(year, month, day, hour, minute, second, int((m.group(7) or "")[:6].ljust(6, "0")))
    except ValueError:  # a 13th month, a 61st second
        return None


def same_boot(one: str, other: str) -> bool:
    """Whether two host boot times (UTC) tell one boot: within BOOT_SLACK of each other; texts that are no
    times, only where they are the same."""
    a, b = utc(one), utc(other)
    if a is None or b is None:
        return one == other
    return abs((a - b).total_seconds()) <= BOOT_SLACK


def powered_on_by(stamp: str) -> bool:
    """Whether a boot_stamp value tells a power on that succeeded (neither NO_BOOT_STAMP nor a FAILED_START)."""
    return stamp != NO_BOOT_STAMP and not stamp.startswith(FAILED_START)


class Hypervisor(Protocol):
    shell: Shell
    kind: str
    formats: Tuple[str, ...]  # the DISK_BACKUP_FORMAT values this driver can write
    run_dir: str  # folder on the host for its run lock and host id (store/lock.py)
    powers_on: bool  # can start a VM it shut down (power-down modes need it)
    # create_snapshot of a VM that is off starts it (libvirt: paused, for its backup job), changing its boot stamp:
    # a cold snapshot's power-off marker then holds no stamp while it is taken (jobs/vm_backup.py)
    snapshot_starts_vm: bool
    runs_in_guest: bool  # can run a command inside a guest (in-guest hooks need it)
    # why this host cannot take a quiesced snapshot (VM_SNAPSHOT_QUIESCE=1), "" where it can: the pre-flight
    # refuses such a VM before any change, so a dry run says what its real run's snapshot would fail on
    quiesce_refused: str

    def describe(self) -> str: ...

    # why this host's work needs root here, for the one line that refuses a run by another user
    # (commands/common.require_root): what this driver does that only root may, and where its run lock lives
    def why_root(self) -> str: ...

    def host_name(self) -> str: ...

    # the host's own id that outlives its reboots ("" where it has none): the host id kept in run_dir is new
    # after one on ESXi (/var/run is a ramdisk), so a repository matches a uuid-less VM's backups by this too
    def system_id(self) -> str: ...

    def datastores(self) -> List[DatastoreInfo]: ...

    def mount_nfs(self, name: str, server: str, share: str, version: str) -> None: ...

    def unmount_nfs(self, name: str) -> None: ...

    # the share an NFS datastore of that name mounts; None: no NFS datastore, or one its host does not say
    def nfs_share(self, name: str) -> Optional[NfsShare]: ...

    def list_vms(self) -> List[VmRef]: ...

    def invalid_vms(self) -> Dict[str, str]: ...  # vmid -> why: what the last list_vms saw registered but unusable

    # what runs left that the driver keeps apart from a VM's own files (libvirt: a pull job's scratch folder, a
    # marker) of VMs none of `known` (list_vms' names) is: deleted since, so no VM's cleanup meets it
    def kept_for_gone(self, known: Collection[str]) -> List[str]: ...

    def load_vm(self, ref: VmRef) -> Vm: ...

    def backup_config(self, vm: Vm, disk_names: Dict[str, str]) -> Tuple[str, str]: ...

    def power_state(self, vm: Vm) -> str: ...

    # whether the guest's tools run, which a clean shutdown and a quiesced snapshot need (ESXi: VMware
    # Tools); None where the host cannot tell or needs none: a dry run asks it, so it changes nothing
    def guest_tools(self, vm: Vm) -> Optional[bool]: ...

    def shutdown(self, vm: Vm) -> None: ...

    def power_off(self, vm: Vm) -> None: ...

    def power_on(self, vm: Vm) -> None: ...

    # an opaque value that changes whenever the VM is powered on, by anyone (NO_BOOT_STAMP where nothing tells one:
    # a VM never powered on, its log deleted or emptied by a rotation; FAILED_START + a stamp where its last start
    # failed); a power-off marker records it, so a gone run's marker powers on only a VM nobody started since
    # (jobs/powermark.py): one the admin started by hand and later switched off stays off
    def boot_stamp(self, vm: Vm) -> str: ...

    def snapshots(self, vm: Vm, interruptible: bool = True) -> List[Snapshot]: ...

    def delta_files(self, vm: Vm) -> List[str]: ...

    # why the VM's disks need consolidation ("needs consolidation: ..." and how), "" when they do not: the
    # driver's one judgement, asked after a removal, by the pre-flight, status and cleanup; `deltas`: the VM's
    # delta files as the caller's delta_files(vm) just listed them, not listed again (None: the driver lists them)
    def needs_consolidation(self, vm: Vm, deltas: Optional[List[str]] = None) -> str: ...

    # a dry run leaves a dead run's snapshots in place: the VM as the real run, having removed them, finds it
    def without_snapshots(self, vm: Vm, snaps: List[Snapshot]) -> Vm: ...

    def create_snapshot(
        self, vm: Vm, name: str, description: str, memory: bool, quiesce: bool, timeout: float
    ) -> Snapshot: ...

    def remove_snapshot(self, vm: Vm, snap: Snapshot, timeout: float) -> None: ...

    # a removal whose command died with its connection, waited for: True once the snapshot is gone and its
    # changes merged (Unconsolidated where the disks stay on deltas), False when `timeout` seconds pass first
    def await_snapshot_removal(self, vm: Vm, snap: Snapshot, timeout: float) -> bool: ...

    # the user's snapshots as files (BACKUP_SNAPSHOT_TREE), read and checked before any change; `users`: the ids
    # of those to keep (None: all), so that a dead run's snapshot a dry run leaves in place is not planned
    def snapshot_tree(self, vm: Vm, disks: List[Disk], users: Optional[Sequence[str]] = None) -> SnapshotTree: ...

    # an in-guest hook: (exit code, output) of argv run in the guest, `env` its whole environment
    def guest_exec(self, vm: Vm, argv: List[str], env: List[str], timeout: float,
                   interruptible: bool = True) -> Tuple[int, str]: ...

    # why guest_exec cannot reach this VM's guest, as far as the host tells without running anything in it
    # ("" where it may: a guest whose agent does not answer is told by the hook itself); the pre-flight asks it
    def guest_unreachable(self, vm: Vm) -> str: ...

    def copy_disk(self, disk: Disk, dst: str, fmt: str, progress: Optional[Progress]) -> List[str]: ...

    def copied_as(self, disk: Disk, dst: str, fmt: str) -> Optional[Copied]: ...

    def disk_files(self, descriptor_path: str) -> List[str]: ...

    def bytes_needed(self, disk: Disk, fmt: str) -> int: ...

    def free_space(self, path: str) -> Optional[int]: ...

    # restore (issue 3): register a restored .vmx and return its vmid
    def register_vm(self, vmx_path: str) -> str: ...

    # the vmid the inventory lists for a .vmx, or None (what a registration cut off on its way left)
    def registered_at(self, vmx_path: str) -> Optional[str]: ...

