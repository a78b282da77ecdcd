"""libvirt driver: domains backed up through libvirt's own backup API (pull mode), read with qemu-img.

libvirt owns its domains' QMP monitor; hotvcb never talks to it. Everything
goes through `virsh` (virsh.py), so the domain is not tainted (but for
in-guest hooks, below):

- inventory: `virsh list --all`, one VM per domain, named by the domain name;
  `virsh dumpxml` gives the disks (`<target dev>` is the disk's key; CD-ROMs
  and empty or read-only floppies are no disks; read-only, shareable,
  transient and network disks, passed-through LUNs and writable floppy images
  are skipped with the reason, so the run names them and ends WARNING;
  libvirt_domain.py).
- snapshot: `virsh backup-begin` in pull mode (pulljob.py) with a checkpoint
  named as the job names its snapshot, the run record in the checkpoint's
  description.
  From then on libvirt serves each disk as it was at that instant over NBD
  on a unix socket of ours (writes of the guest go on; qemu copies the old
  data to a scratch file first). With a checkpoint of ours to start from,
  the export also carries the dirty bitmap since that checkpoint.
- copy: `qemu-img convert` of the export into DISK_BACKUP_FORMAT, or, for
  qcow2 when the previous good backup holds the checkpoint the bitmap starts
  at, only the dirty clusters into a qcow2 overlay on that backup's disk
  (nbdcopy.py). Anything else (no checkpoint, a VM restarted, a checkpoint
  deleted by hand or made again under its name (its creation time is not
  the one the base backup recorded, checked once backup-begin took the
  bitmap), the base backup rotated away or bad, its chain at MAX_CHAIN) is a
  full copy, and the log says why (libvirt_incremental.py).
- remove: `virsh domjobabort` ends the pull job (libvirt deletes the scratch
  files), then the checkpoints: after a backup whose every disk was copied
  only its own checkpoint stays (the next incremental starts there); after a
  failed or a dead run's backup its checkpoint goes (no backup holds it).
- quiesce (VM_SNAPSHOT_QUIESCE=1): `virsh domfsfreeze` before backup-begin,
  `domfsthaw` right after it in a finally, both bounded; a guest without an
  agent is backed up crash-consistent, which the log says.
- in-guest hooks: `virsh qemu-agent-command` with guest-exec and
  guest-exec-status (virsh 9 has no guest-exec of its own), polled as for
  bare QEMU (qga.run_in_guest). libvirt marks a domain that got a raw agent
  command tainted (custom-ga-command) in its log; only a domain whose config
  asks for an in-guest hook ever gets one.

Why pull mode and not push (libvirt writing the file itself): the job's
snapshot -> copy -> remove states map one to one (the point in time is fixed
before the backup folder is chosen), every DISK_BACKUP_FORMAT is written by
the same qemu-img as for bare QEMU, and a job left by a killed run is found
by `backup-dumpxml` and ended by the next run with no file written behind
its back (a push job goes on writing into a folder the next run removes).
Measured in docs/kvm.md.

The host is this machine: the NBD socket and the images are local files, so
a remote URI (qemu+ssh://) is refused.
"""

import io
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime
from typing import Collection, Dict, List, NoReturn, Optional, Sequence, Set, Tuple

from ..errors import CopyError, HostError, SnapshotError, VmNotFound
from ..runlog import RunLog
from ..model import Disk, Snapshot, Vm, VmRef
from ..shell import Shell
from . import libvirt_bootlog, nbdcopy, qemuimg
from .checkpoints import Checkpoints
from .libvirt_domain import DomainConfig, disk_of, not_copied, parse, qemu_owner, with_live_disks
from .libvirt_incremental import CHECKPOINT_FILE, incremental_base
from .localkvm import LocalKvmHost
from .pulljob import PullJobs, checkpoint_fault, job_snapshot, own_folder, safe
from .qemu_overlay_names import OUR_MARK
from .qga import run_in_guest
from .virsh import DEFAULT_URI, BackupJob, Virsh, VirshError, together


@dataclass
class _Active:
    """The pull job of a snapshot this process made, for copy_disk and remove_snapshot."""

    domain: str
    job: BackupJob
    disks: Set[str]  # keys of the disks in the job
    older: List[str]  # our checkpoints before this one: dropped once every disk is copied
    made_at: str  # libvirt's creation time of the job's checkpoint: recorded in the backup
    base_at: str  # that of the checkpoint the bitmap starts at, read after backup-begin ("" if none)
    copied: Set[str] = field(default_factory=set)


class LibvirtHost(LocalKvmHost):
    kind = "libvirt"
    powers_on = True  # `virsh start` brings a shut-down domain back
    snapshot_starts_vm = True  # a shut-down domain is started paused for its backup job (create_snapshot)
    formats = tuple(qemuimg.FORMATS)

    def __init__(self, shell: Shell, uri: str = DEFAULT_URI, qemu_img: str = qemuimg.QEMU_IMG,
                 log: Optional[RunLog] = None, run_root: str = "/run/hotvcb"):
        if "+" in uri.split(":", 1)[0] or not uri.split("://", 1)[-1].startswith("/"):
            raise HostError("--libvirt %s: only a local libvirt (qemu:///system, qemu:///session) can be backed up; "
                            "run hotvcb on that host" % uri)
        self.shell, self.uri, self.qemu_img = shell, uri, qemu_img
        self.virsh = Virsh(shell, uri)
        self.log = log or RunLog("info", stream=io.StringIO())  # no log given: a contract check, a listing
        self.run_dir = run_root.rstrip("/") + "/libvirt-" + safe(uri.split("://", 1)[-1]).strip("_")
        self._formats = {}  # type: Dict[str, str]  # image path -> format
        self._active = {}  # type: Dict[str, _Active]  # snapshot name -> its job
        # domain -> `uid:gid` its QEMU runs as, from load_vm's live XML: the NBD socket's folder is
        # handed to it without one more `virsh dumpxml` (the label is qemu.conf's, not per start)
        self._owners = {}  # type: Dict[str, str]
        self.checkpoints = Checkpoints(self.virsh, self.log)  # the leftover check's list serves the job
        self._sizes = {}  # type: Dict[str, Tuple[int, int]]  # image -> qemuimg.sizes, for the VM load_vm read
        self._downed = set()  # type: Set[str]  # domains this run shut down or powered off
        self.jobs = PullJobs(shell, self.virsh, self.log, self.run_dir)

    # -- host ----------------------------------------------------------------
    def describe(self) -> str:
        return "libvirt %s" % self.uri

    def why_root(self) -> str:
        """Not libvirtd's socket alone (virsh as a member of the libvirt group reaches qemu:///system): qemu-img
        reads the domains' disk images, which are root's or libvirt-qemu's, and each pull job's NBD folder is
        made and handed (chown) to the domain's QEMU user (docs/kvm.md)."""
        return ("the run lock lives in %s, and access to %s is not enough: qemu-img reads the domains' disk "
                "images, and each backup's NBD socket folder is handed (chown) to the domain's QEMU user, which only "
                "root may do" % (self.run_dir, self.uri))

    # -- inventory -----------------------------------------------------------
    def list_vms(self) -> List[VmRef]:
        return [VmRef(vmid=name, name=name, vmx_path="%s#%s" % (self.uri, name)) for name in self.virsh.domains()]

    def invalid_vms(self) -> Dict[str, str]:
        return {}

    def kept_for_gone(self, known: Collection[str]) -> List[str]:
        """What a run left under the run dir (a job's scratch folder in jobs/<domain>/, a marker in vms/<domain>/)
        of domains none of `known` is: once a domain is undefined, nothing else removes it (its job and
        checkpoints went with it). A domain's folders are named by own_folder, one to each name, so nothing of a
        domain libvirt still has is taken for a gone one's; the empty folder every run leaves is no leftover."""
        own = {own_folder(name) for name in known}
        found = []  # type: List[str]
        for kind in ("jobs", "vms"):
            top = "%s/%s" % (self.run_dir, kind)
            if not self.shell.isdir(top):
                continue
            for folder in sorted(set(self.shell.listdir(top)) - own):
                if self.shell.isdir(top + "/" + folder):
                    found += ["%s/%s/%s" % (top, folder, e) for e in sorted(self.shell.listdir(top + "/" + folder))]
        return found

    def load_vm(self, ref: VmRef) -> Vm:
        self._sizes.clear()  # a new look at the VM: its images' sizes are read again
        try:
            live, inactive = together(lambda: self.virsh.dumpxml(ref.name),
                                      lambda: self.virsh.dumpxml(ref.name, inactive=True))
        except VirshError as err:
            if "ailed to get domain" in err.text or "not found" in err.text:
                raise VmNotFound(ref.name) from err
            raise
        root = parse(live, ref.name)
        self._owners[ref.name] = qemu_owner(root)
        folder = self.run_dir + "/vms/" + own_folder(ref.name)
        self.shell.makedirs(folder)  # where a power-down marker of ours goes
        vm = Vm(ref=ref, datastore="", folder=folder, vmx=None, uuid=root.findtext("uuid") or "")
        for d in root.findall("devices/disk"):
            if d.get("device", "disk") == "disk":
                vm.disks.append(self._disk(d))
            else:
                passed = not_copied(d)
                if passed is not None:
                    vm.disks.append(passed)
        vm.vmx = DomainConfig(with_live_disks(inactive, root, [d.key for d in vm.disks if not d.skip_reason],
                                              ref.name))
        return vm

    def _disk(self, d: ET.Element) -> Disk:
        disk, fmt = disk_of(d, self.virsh.vol_path)
        if fmt:
            self._formats[disk.path] = fmt
        return disk

    def backup_config(self, vm: Vm, disk_names: Dict[str, str]) -> Tuple[str, str]:
        """`virsh dumpxml --inactive` as it was at backup time (restore defines a domain from it)."""
        if not isinstance(vm.vmx, DomainConfig):
            raise HostError("%s was not loaded by this driver" % vm.name)
        return vm.vmx.filename, vm.vmx.text()

    # -- power ---------------------------------------------------------------
    def power_state(self, vm: Vm) -> str:
        return self.virsh.state(vm.name)

    def guest_tools(self, vm: Vm) -> Optional[bool]:
        return None  # virsh shutdown falls back to ACPI; a quiesce failure is told by the backup job

    def shutdown(self, vm: Vm) -> None:
        self._downed.add(vm.name)
        self.virsh.power("shutdown", vm.name)

    def power_off(self, vm: Vm) -> None:
        self._downed.add(vm.name)
        self.virsh.power("destroy", vm.name)

    def power_on(self, vm: Vm) -> None:
        """Start it, or resume it: a domain hotvcb powered down is paused when it was started for a
        cold snapshot's job (create_snapshot), and a run killed then left it so."""
        state = self.virsh.state(vm.name)
        if state != "on":
            self.virsh.power("resume" if state == "suspended" else "start", vm.name)

    def boot_stamp(self, vm: Vm) -> str:
        """The last start of the domain, as its QEMU log tells it (libvirt_bootlog.py)."""
        return libvirt_bootlog.boot_stamp(self.shell, self.uri, vm.name)

    # -- snapshots: pull-mode backup jobs + checkpoints --------------------------
    def snapshots(self, vm: Vm, interruptible: bool = True) -> List[Snapshot]:  # noqa: ARG002
        """The domain's running backup job, if any: ours is named by its checkpoint (whose
        description is the run record), another tool's shows as a snapshot that is not ours.
        With no job, a checkpoint whose scratch folder is still there is one of a run that died
        between ending its job and dropping the checkpoint. The checkpoint list is asked beside the
        job (one virsh start's time) and kept for create_snapshot."""
        job, listed = together(lambda: self.virsh.backup_job(vm.name), lambda: self.checkpoints.listed(vm.name))
        if job is None:  # a run killed after its job ended left its scratch folder, named after its checkpoint
            left = self.jobs.left(vm.name)
            return [Snapshot(id=c, name=c, description=self.virsh.checkpoint_description(vm.name, c), created="",
                             state="", depth=0) for c in listed if c in left]
        name = job_snapshot(job)
        if not name:
            return [Snapshot(id="libvirt-backup-job", name="a libvirt backup job of another tool", description="",
                             created="", state="", depth=0, foreign_job=True)]
        described = self.virsh.checkpoint_description(vm.name, name) if name in listed else ""
        return [Snapshot(id=name, name=name, description=described, created="", state="", depth=0)]

    def delta_files(self, vm: Vm) -> List[str]:
        return []  # libvirt keeps its scratch files to itself and deletes them when the job ends

    def needs_consolidation(self, vm: Vm, deltas: Optional[List[str]] = None) -> str:
        return ""  # no delta of a backup job's stays on the disks

    def without_snapshots(self, vm: Vm, snaps: List[Snapshot]) -> Vm:
        return vm  # a backup job with its checkpoint puts no disk on a delta

    def create_snapshot(
        self, vm: Vm, name: str, description: str, memory: bool, quiesce: bool, timeout: float
    ) -> Snapshot:
        disks = [d for d in vm.disks if not d.skip_reason]
        if not disks:
            raise SnapshotError("%s has no disk to back up" % vm.name)
        if vm.name in self._downed and self.virsh.state(vm.name) == "off":
            # COLD_SNAPSHOT: libvirt backs up running domains only. Started paused, the domain's QEMU
            # holds its disks as they were shut down, and nothing of the guest runs until power_on
            # resumes it, after backup-begin; a domain not powered down by us is never started here
            self.log.info("%s: started paused for its backup job" % vm.name)
            self.virsh.power("start", vm.name, "--paused")
        ours = [c for c in self.checkpoints.known(vm.name) if c.startswith(OUR_MARK)]
        if name in ours:  # named by the second a run started: a backup begun in this same second holds it
            self.log.info("%s: checkpoint %s of a backup begun in the same second holds this run's name; a full "
                          "backup instead" % (vm.name, name))
            self.checkpoints.drop(vm.name, name)
            ours.remove(name)
        since = ours[-1] if ours else ""
        if not since:
            self.log.info("%s: no checkpoint of ours to start from: a full backup" % vm.name)
        scratch = self.jobs.prepare(vm.name, name, self._owners.get(vm.name, ""))
        try:
            job = self.jobs.begin(vm, name, description, disks, self._formats, scratch, since, quiesce, timeout)
        except VirshError as err:
            if not since or not checkpoint_fault(err.text):  # a lock timeout, a domain gone: the checkpoint is fine
                self.shell.remove_tree(scratch)
                raise SnapshotError("backup-begin of %s failed: %s" % (vm.name, err.text)) from err
            # the checkpoint cannot serve (its bitmap is gone or inconsistent: a crash, a restart without it)
            self.log.info("%s: no incremental from checkpoint %s (%s); a full backup instead"
                          % (vm.name, since, err.text))
            self.checkpoints.drop(vm.name, since)
            ours.remove(since)
            since = ""
            try:
                job = self.jobs.begin(vm, name, description, disks, self._formats, scratch, since, quiesce, timeout)
            except VirshError as again:
                self.shell.remove_tree(scratch)
                raise SnapshotError("backup-begin of %s failed: %s" % (vm.name, again.text)) from again
        # asked after backup-begin took the bitmap: a base made again under its name before it shows here
        self.checkpoints.listed(vm.name)
        # backup-begin returned once QEMU serves the exports, named by us: no backup-dumpxml to ask
        # what they are; the socket being there is libvirt's own sign that this job is the one serving
        if not self.shell.exists(job.socket):
            raise SnapshotError("%s: libvirt shows no NBD socket of ours after backup-begin (%s)" % (vm.name, job.socket))
        self._active[name] = _Active(vm.name, job, {d.key for d in disks}, ours,
                                     self.checkpoints.created(vm.name, name),
                                     self.checkpoints.created(vm.name, since) if since else "")
        return Snapshot(id=name, name=name, description=description,
                        created=datetime.now().isoformat(timespec="seconds"), state="", depth=0)

    def remove_snapshot(self, vm: Vm, snap: Snapshot, timeout: float) -> None:
        """End the pull job named by snap, then keep only the checkpoint a complete backup holds."""
        self.jobs.end(vm.name, snap.name, timeout)
        active = self._active.pop(snap.name, None)
        if active is not None and active.disks <= active.copied:  # the next incremental starts here
            for cp in active.older:
                self.checkpoints.drop(vm.name, cp)
        else:  # a failed or a dead run's backup: no backup holds this checkpoint
            self.checkpoints.drop(vm.name, snap.name)
        self.jobs.remove(vm.name, snap.name)

    # -- disks ---------------------------------------------------------------
    def copy_disk(self, disk: Disk, dst: str, fmt: str, progress=None) -> List[str]:
        """The disk as it was at backup-begin: only its dirty clusters when a good base holds the
        bitmap's checkpoint and fmt is qcow2, else all of it; a domain that is off, from its image."""
        found = [(n, a) for n, a in self._active.items() if disk.key in a.disks]
        if not found:  # the domain is off (no snapshot was taken): its image holds still
            return qemuimg.copy_to(self.shell, disk, disk.path, self._formats.get(disk.path, "raw"),
                                   "%s/%s" % (dst.rsplit("/", 1)[0], safe(disk.key)), fmt, progress,
                                   self._sizes_of(disk)[0], self.qemu_img)
        name, active = found[-1]
        exports = [d for d in active.job.disks if d.target == disk.key]
        if not exports:
            raise CopyError(disk.path, "the backup job does not export %s" % disk.key, dst)
        export, folder = exports[0], dst.rsplit("/", 1)[0]
        base = incremental_base(self.shell, self.log, active.domain, active.base_at, export.incremental,
                                export.bitmap, disk, dst, fmt)
        if base:
            out = "%s/%s.qcow2" % (folder, safe(disk.key))
            ranges, size = nbdcopy.dirty_ranges(self.shell, active.job.socket, export.export, export.bitmap,
                                                self.qemu_img)
            self.log.info("%s: %s is incremental on %s: %d dirty range(s), %d MiB" % (
                active.domain, disk.key, base.split("/")[1], len(ranges), sum(l for _o, l in ranges) >> 20))
            nbdcopy.copy_incremental(self.shell, active.job.socket, export.export, ranges, out, base, size, progress,
                                     self.qemu_img)
            files = [out.rsplit("/", 1)[-1]]
        else:
            src = nbdcopy.export_uri(active.job.socket, export.export)
            files = qemuimg.copy_to(self.shell, disk, src, "raw", "%s/%s" % (folder, safe(disk.key)),
                                    fmt, progress, self._sizes_of(disk)[0], self.qemu_img)
        self.shell.write_text(folder + "/" + CHECKPOINT_FILE, "%s\n%s\n" % (name, active.made_at))
        active.copied.add(disk.key)
        return files

    def disk_files(self, descriptor_path: str) -> List[str]:
        return [descriptor_path]

    def _sizes_of(self, disk: Disk) -> Tuple[int, int]:
        """qemuimg.sizes of the disk's image, asked once per load_vm."""
        if disk.path not in self._sizes:
            self._sizes[disk.path] = qemuimg.sizes(qemuimg.info(self.shell, disk.path, self.qemu_img))
        return self._sizes[disk.path]

    def bytes_needed(self, disk: Disk, fmt: str) -> int:
        """From one `qemu-img info` per image and load_vm: the pre-flight asks for each disk twice
        (its need in the format, its size for the progress), seconds apart."""
        virtual, allocated = self._sizes_of(disk)
        spec = qemuimg.FORMATS.get(fmt)
        return virtual if spec is None or spec.thick else min(allocated, virtual) or virtual

    runs_in_guest = True  # through libvirt's connection to the guest agent (virsh qemu-agent-command)
    quiesce_refused = ""  # `virsh domfsfreeze`, or a crash-consistent backup said so (pulljob.py)

    def guest_unreachable(self, vm: Vm) -> str:
        return ""  # libvirt holds the agent's channel: one the domain lacks is told by the hook's own command

    def guest_exec(self, vm: Vm, argv: List[str], env: List[str], timeout: float,
                   interruptible: bool = True) -> Tuple[int, str]:
        """In-guest hooks, asked for by the admin: the one use of raw agent commands, which taint the domain."""
        return run_in_guest(lambda command, arguments: self.virsh.agent_command(vm.name, command, arguments), argv,
                            env, timeout, interruptible)

    # what main's Hypervisor asks since BACKUP_SNAPSHOT_TREE landed beside this branch

    def snapshot_tree(self, vm: Vm, disks: List[Disk], users: Optional[Sequence[str]] = None) -> NoReturn:
        raise HostError("%s: BACKUP_SNAPSHOT_TREE=1 is for ESXi; a libvirt backup holds the disks' current "
                        "state" % vm.name)

    def register_vm(self, vmx_path: str) -> str:
        raise HostError("restoring into libvirt is `hotvcb restore`'s (not this driver's) work")

    def registered_at(self, vmx_path: str) -> Optional[str]:
        return None  # register_vm registers nothing here

