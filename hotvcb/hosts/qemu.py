"""QEMU/KVM driver: QMP for the running VM, qemu-img for the copy.

The inventory is a folder of QMP sockets, `<dir>/<VM name>.qmp` (QEMU started
with `-qmp unix:<dir>/<name>.qmp,server=on,wait=off`); the VM's name is the
file name, taken literally. QEMU serves one client per QMP socket, so the
driver connects for each step and lets go again.

The backup, in the job's words:

- disks: `query-block`; empty drives, CD-ROMs (by their device's type, even
  on a drive opened writable) and read-only floppies are no disks; read-only
  ones, writable floppies, disks shared with another QEMU (`share-rw=on`),
  encrypted images (LUKS, plain or in qcow2) and every disk of a VM a
  migration has (or is about to have) on another QEMU are skipped
  with a warning; a writable USB stick (`removable=on`) is a disk; pflash
  drives are the UEFI firmware, no disks (the VM is recorded as UEFI, its
  variable store copied beside the disks). A disk's path is its
  current image file (a chain the user built stays, the copy flattens it),
  or the image below an overlay of ours.
- snapshot: an external qcow2 overlay per disk, all in one `transaction` of
  `blockdev-snapshot-sync`, named `<image file>.<snapshot name>.qcow2` next
  to the image. From then on the image is read-only and QEMU writes to the
  overlay. An overlay named that way is reported by `snapshots()`, with the
  description it was made with (the job knows ours by name *and* run record).
  The overlay machinery is in qemu_overlays.py (create, find, remove),
  qemu_overlay_names.py (where an overlay goes) and qemu_commit.py (the
  block-commit state machine).
- copy: `qemu-img convert -p` of the now read-only image (formats: qemuimg.py).
- remove: `block-commit` of the overlay into its backing image — for the
  active layer wait for it to be ready, `block-job-complete`, wait for the
  job to end, all bounded by the timeout — then delete the overlay file.
  A commit job of ours still running from a killed run is finished first.
- the backup holds `<name>.json` (name, disks, vCPUs, memory, QEMU version) in place of a .vmx.

Not supported for QEMU: POWER_VM_DOWN_BEFORE_BACKUP — a guest shut down
(`system_powerdown`) or hard powered off (`quit`) usually ends the QEMU
process, and hotvcb cannot start it again (power_on says so; a process kept
by `-no-shutdown` is reset and continued). VM_SNAPSHOT_QUIESCE (it needs the
guest agent) fails the snapshot; VM_SNAPSHOT_MEMORY is ignored (a disk-only
overlay holds no memory, and a backup never copied it). NFS mounting and
restore registration are ESXi's.
"""

import json
import socket
import threading
from dataclasses import dataclass, field
from typing import Any, Collection, Dict, List, Optional, Sequence, Tuple

from .. import pids, vmdk
from ..errors import HostError, SnapshotError, VmNotFound, VmStopped
from ..model import Disk, Snapshot, SnapshotTree, Vm, VmRef
from ..shell import Shell
from . import qemu_overlay_names as naming  # DEVICE_OVERLAYS read where tests may have pointed it
from . import qemuimg
from .base import NO_BOOT_STAMP, Copied
from .localkvm import LocalKvmHost, local_sizes
from .qemu_blockgraph import absolute_names, chain_of, device_key, relative_name
from .qemu_drives import _backing, _below, _below_ours, _internal, _is_flash, _qemu_temporary, device_skip, \
    disk_drives
from .qemu_migration import migrating
from .qemu_overlay_names import OUR_MARK
from .qemu_overlays import Overlays
from .qemu_same_image import skip_images_on_two_drives
from .qga import SOCKET_SUFFIX as QGA_SUFFIX, GuestAgent
from .qmp import QmpClient, QmpError, QmpNotListening, QmpUnavailable

SOCKET_SUFFIX = ".qmp"
QMP_TIMEOUT = 30.0


@dataclass
class VmDescription:
    """What a QEMU backup holds in place of a .vmx (the Sealer writes `text()` to `filename`)."""

    filename: str
    data: Dict[str, Any] = field(default_factory=dict)

    def text(self) -> str:
        return json.dumps(self.data, indent=2, sort_keys=True) + "\n"


class QemuHost(LocalKvmHost):
    kind = "qemu"
    powers_on = False  # a guest shut down ends its QEMU process, which hotvcb cannot start again
    snapshot_starts_vm = False
    runs_in_guest = True  # through the guest agent's socket beside the QMP one (qga.py)
    quiesce_refused = ("a quiesced snapshot (VM_SNAPSHOT_QUIESCE=1) needs the QEMU guest agent's fsfreeze, which "
                       "hotvcb does not use yet; set VM_SNAPSHOT_QUIESCE=0 for QEMU VMs")
    formats = tuple(qemuimg.FORMATS)

    def __init__(self, shell: Shell, qmp_dir: str, qemu_img: str = qemuimg.QEMU_IMG, qmp_timeout: float = QMP_TIMEOUT):
        self.shell, self.qmp_dir = shell, qmp_dir.rstrip("/") or "/"
        self.run_dir = self.qmp_dir  # the run lock sits beside the VMs it guards
        self.qemu_img, self.qmp_timeout = qemu_img, qmp_timeout
        self._formats = {}  # type: Dict[str, str]  # image path -> format, from load_vm
        # image path -> (virtual, allocated by its chain) as query-block showed them at load_vm,
        # so the pre-flight needs no `qemu-img info` process per disk and question
        self._sizes = {}  # type: Dict[str, Tuple[int, int]]
        self._data = {}  # type: Dict[str, int]  # image path -> its chain as a qcow2, qemu-img measure (bytes_needed)
        self._turns = {}  # type: Dict[str, threading.Lock]  # QMP socket -> its client's turn
        self._turns_lock = threading.Lock()
        self.overlays = Overlays(shell, self._qmp, qmp_timeout, qemu_img)

    def _qmp(self, socket_path: str) -> QmpClient:
        with self._turns_lock:  # one client per VM's monitor at a time, whichever thread asks
            turn = self._turns.setdefault(socket_path, threading.Lock())
        return QmpClient(socket_path, self.qmp_timeout, turn)

    # -- host ----------------------------------------------------------------
    def describe(self) -> str:
        return "QEMU/KVM, QMP sockets in %s" % self.qmp_dir

    def why_root(self) -> str:
        return "the run lock lives in %s with the QMP sockets, and the VMs' sockets and disk images are root's" \
            % self.run_dir

    # -- inventory -----------------------------------------------------------
    def list_vms(self) -> List[VmRef]:
        refs = []
        for entry in self.shell.listdir(self.qmp_dir):
            if entry.endswith(SOCKET_SUFFIX) and len(entry) > len(SOCKET_SUFFIX):
                name = entry[: -len(SOCKET_SUFFIX)]
                refs.append(VmRef(vmid=name, name=name, vmx_path=self.qmp_dir + "/" + entry))
        return refs

    def invalid_vms(self) -> Dict[str, str]:
        return {}  # a socket with no QEMU behind it is no VM at all

    def kept_for_gone(self, known: Collection[str]) -> List[str]:  # noqa: ARG002
        return []  # a VM's markers are beside its socket, in the admin's folder: nothing of ours apart

    def load_vm(self, ref: VmRef) -> Vm:
        if not self.shell.exists(ref.vmx_path):
            raise VmNotFound(ref.name)  # its QEMU is gone since the listing
        try:
            with self._qmp(ref.vmx_path) as qmp:
                version = qmp.execute("query-version")
                status = qmp.execute("query-status")
                blocks = absolute_names(qmp, qmp.execute("query-block"))  # `file=web.qcow2` is QEMU's cwd's
                cpus = qmp.execute("query-cpus-fast")
                memory = qmp.execute("query-memory-size-summary")
                away = migrating(qmp)
                drives = disk_drives(qmp, blocks)
                skips = {id(d): away or ("" if d["inserted"].get("ro") else device_skip(qmp, d)) for d in drives}
        except QmpNotListening as err:
            raise VmStopped(
                "%s: its QEMU ended without removing the socket (killed, crashed, or its host lost power), so "
                "no QEMU runs the VM: start it again, or remove the socket if the VM is gone for good; if it died "
                "during a backup, an overlay `<image>.%s<time>.qcow2` beside its images (for a disk on a block "
                "device, an LV: `<device path, / as %%2F>.%s<time>.qcow2` in %s) holds the guest's last writes: "
                "`qemu-img commit` it into its image before the VM is started again"
                % (err, OUR_MARK, OUR_MARK, naming.DEVICE_OVERLAYS)) from err
        vm = Vm(ref=ref, datastore="", folder=self.qmp_dir, vmx=None)
        flash = []  # type: List[Dict[str, Any]]
        for dev in blocks:
            if dev.get("inserted") and _is_flash(dev):
                flash.append(dev["inserted"])
            elif id(dev) in skips:  # the drives that are disks (not empty ones, CD-ROMs, read-only floppies)
                vm.disks.append(self._disk(dev, skips[id(dev)]))
                if not vm.disks[-1].skip_reason:  # a disk the backup skips loses no snapshot (BACKUP_SNAPSHOT_TREE)
                    below = _below(chain_of(dev["inserted"].get("image") or {}))
                    vm.own_snapshots += _internal(below[:1])  # the image it writes: a base's are no VM's
                    vm.history += _backing(below) + _internal(below)
        vm.disks = skip_images_on_two_drives(vm.disks, self.shell.file_id)
        # UEFI firmware on pflash (OVMF code, read-only, and the VM's variable store): no disks. The store is
        # the VM's own (boot entries), kept beside the disks as an ESXi VM's .nvram is
        vm.extra_files = [f.get("file", "") for f in flash if not f.get("ro") and f.get("file", "").startswith("/")]
        described = "%s.qemu.json" if ref.name == "hotvcb" else "%s.json"  # hotvcb.json is the manifest
        vm.vmx = VmDescription(described % ref.name, {
            "name": ref.name,
            "hypervisor": "qemu",
            "qmp_socket": ref.vmx_path,
            "qemu_version": version,
            "status": status.get("status"),
            "vcpus": len(cpus),  # what a restore to KVM or ESXi gives the VM (jobs/machine_of.py)
            "memory_mib": int(memory.get("base-memory", 0)) >> 20,
            "firmware": "efi" if flash else "bios",  # what a restore boots the VM with (jobs/machine_of.py)
            "disks": [
                {"key": d.key, "image": d.path, "format": self._formats.get(d.path, ""), "skipped": d.skip_reason}
                for d in vm.disks
            ],
        })
        return vm

    def _disk(self, dev: Dict[str, Any], skip: str) -> Disk:
        """The drive as a disk to copy, or skipped (read-only; `skip`: a floppy, a shared disk, a VM migrating)."""
        key, ins = device_key(dev), dev["inserted"]

        def skipped(reason: str, path: str = "") -> Disk:
            return Disk(key=key, path=path, datastore="", adapter="", skip_reason=reason)

        chain = chain_of(ins.get("image") or {})
        i = _below_ours(chain)
        path = chain[i].get("filename", "") if chain else ins.get("file", "")
        if skip:  # first: a migration is every disk's reason, so the VM is failed naming it (jobs/preflight.py)
            return skipped(skip, path)
        if ins.get("ro"):
            return skipped("read-only drive", path)
        if path and relative_name(path):  # absolute_names could not prove which file QEMU has open under it
            return skipped("image %s is named relative to its QEMU's working directory, and which file that is "
                           "cannot be proven (the process behind the QMP socket holds no one file open by that "
                           "name: a proxy's socket?): not copying a same-named file; start QEMU with absolute "
                           "image names" % path[:200], path)
        if not path.startswith("/"):
            return skipped("not a local image file: %s" % path[:200])
        if len(chain) > i + 1 and _qemu_temporary(path) and not self.shell.exists(path):
            image = chain[i + 1].get("filename", "")
            return skipped("QEMU runs it in snapshot mode (`snapshot=on` or `-snapshot`): the guest writes to a "
                           "temporary overlay over the image that QEMU deleted at once and throws away when it "
                           "exits, so the image holds none of the guest's writes; run it without snapshot mode to "
                           "back it up", image)
        below = chain[i:]
        if any(l.get("encrypted") for l in below):
            # qemu-img measure and convert would fail on it ("Parameter 'encrypt.key-secret' is required")
            return skipped("%s: not supported, qemu-img cannot read it without the secret only its QEMU holds"
                           % _encrypted_kind(below), path)
        self._formats[path] = chain[i].get("format", "") if chain else ""
        if below and all("virtual-size" in l and "actual-size" in l for l in below):
            self._sizes[path] = local_sizes([qemuimg.ImageLayer(l.get("filename", ""), l.get("format", ""),
                                                                int(l["virtual-size"]), int(l["actual-size"]), "")
                                             for l in below])
        return Disk(key=key, path=path, datastore="", adapter="", mode="persistent")

    # -- power ---------------------------------------------------------------
    def power_state(self, vm: Vm) -> str:
        """on = running; off = no QEMU process any more; suspended = paused, shut down but kept, ..."""
        try:
            with self._qmp(vm.ref.vmx_path) as qmp:
                status = qmp.execute("query-status")
        except QmpUnavailable:
            return "off"
        return "on" if status.get("status") == "running" else "suspended"

    def guest_tools(self, vm: Vm) -> Optional[bool]:
        return None  # system_powerdown is ACPI's, no agent's; a quiesce failure is told by the snapshot

    def shutdown(self, vm: Vm) -> None:
        with self._qmp(vm.ref.vmx_path) as qmp:
            qmp.execute("system_powerdown")

    def power_off(self, vm: Vm) -> None:
        """`quit`: the QEMU process ends; hotvcb cannot start it again."""
        with self._qmp(vm.ref.vmx_path) as qmp:
            try:
                qmp.execute("quit")
            except QmpError:
                pass  # QEMU may close the socket before it answers

    def power_on(self, vm: Vm) -> None:
        try:
            with self._qmp(vm.ref.vmx_path) as qmp:
                status = qmp.execute("query-status").get("status")
                if status == "running":
                    return
                if status in ("shutdown", "guest-panicked"):
                    qmp.execute("system_reset")
                qmp.execute("cont")
        except QmpUnavailable as err:
            raise HostError(
                "%s: its QEMU process is gone and hotvcb cannot start a QEMU VM again "
                "(POWER_VM_DOWN_BEFORE_BACKUP is not supported for QEMU); start it the way it was started"
                % vm.name) from err

    def boot_stamp(self, vm: Vm) -> str:
        """The QEMU process serving the VM's QMP socket, by its pid and start time: a VM is powered on by
        starting one (hotvcb never does); "none" while none runs. A guest a `-no-shutdown` process keeps after
        its shutdown, reset and continued in that process, keeps its stamp: QEMU counts no boots."""
        try:
            with self._qmp(vm.ref.vmx_path) as qmp:
                pid = qmp.peer_pid()
        except QmpUnavailable:
            return NO_BOOT_STAMP
        if pid is None:
            raise HostError("%s: the process behind its QMP socket cannot be told" % vm.name)
        return "%d:%s" % (pid, pids.started(pid))

    # -- snapshots -----------------------------------------------------------
    # -- snapshots: qemu_overlays.py -------------------------------------------
    def snapshots(self, vm: Vm, interruptible: bool = True) -> List[Snapshot]:  # noqa: ARG002 - QMP is not interruptible
        return self.overlays.snapshots(vm)

    def delta_files(self, vm: Vm) -> List[str]:
        return self.overlays.delta_files(vm)

    def needs_consolidation(self, vm: Vm, deltas: Optional[List[str]] = None) -> str:
        return ""  # an overlay left over is our snapshot's, listed and judged as such (qemu_overlays.py)

    def without_snapshots(self, vm: Vm, snaps: List[Snapshot]) -> Vm:
        return vm  # load_vm names each disk's image below our overlays already (_below_ours)

    def guest_exec(self, vm: Vm, argv: List[str], env: List[str], timeout: float,
                   interruptible: bool = True) -> Tuple[int, str]:
        # a mute agent (hung, or not started in the guest: QEMU's socket accepts anyway) is bounded by
        # the hook's own timeout too, and a signal ends the wait
        agent = self._agent(vm, min(self.qmp_timeout, timeout))
        agent.interruptible = interruptible
        agent.connect()
        try:
            return agent.run(argv, env, timeout, interruptible)
        finally:
            agent.close()

    def guest_unreachable(self, vm: Vm) -> str:
        """The agent's socket not there or not listened on (QEMU started without it): its message; a socket
        QEMU listens on says nothing of qemu-ga in the guest, which only a command finds (the hook's)."""
        try:
            self._agent(vm, self.qmp_timeout).probe()
        except QmpUnavailable as err:
            return str(err)
        return ""

    def _agent(self, vm: Vm, timeout: float) -> GuestAgent:
        return GuestAgent(self.qmp_dir + "/" + vm.name + QGA_SUFFIX, timeout)

    def snapshot_tree(self, vm: Vm, disks: List[Disk], users: Optional[Sequence[str]] = None) -> SnapshotTree:
        """QEMU keeps no snapshot tree hotvcb could restore as one (overlays carry no .vmsd)."""
        raise HostError("%s: BACKUP_SNAPSHOT_TREE=1 is for ESXi; on QEMU the backup holds the current state "
                        "(the overlay chain read through)" % vm.name)

    def create_snapshot(
        self, vm: Vm, name: str, description: str, memory: bool, quiesce: bool, timeout: float
    ) -> Snapshot:
        if quiesce:
            raise SnapshotError("%s: %s" % (vm.name, self.quiesce_refused))  # the pre-flight refuses it first
        return self.overlays.create(vm, name, description, timeout)

    def remove_snapshot(self, vm: Vm, snap: Snapshot, timeout: float) -> None:
        self.overlays.remove(vm, snap, timeout)

    def copied_as(self, disk: Disk, dst: str, fmt: str) -> Optional[Copied]:
        """The image's virtual disk, which our overlay keeps read-only (a raw image is that disk, a qcow2
        one is read by qcow2.py: one with a backing chain or anything else it refuses leaves the copy to
        the seal), is byte for byte what a raw copy holds and the flat extent of a flat VMDK (qemu-img
        writes the disk into it as it is, -S 0 only allocates every block), and what a qcow2 copy's
        image holds. A sparse VMDK's extents hold qemu-img's own layout: the seal hashes those."""
        src_format = self._formats.get(disk.path, "")
        spec = qemuimg.FORMATS.get(fmt)
        if spec is None or src_format not in ("raw", "qcow2"):
            return None
        out = qemuimg.output_path(self.shell, disk, dst, spec)
        if spec.driver == "qcow2":
            return Copied(disk.path, out, fmt, src_format)
        if spec.driver == "raw":
            return Copied(disk.path, out, "", src_format)
        if spec.options == qemuimg.FLAT_VMDK:
            return Copied(disk.path, out[: -len(spec.extension)] + "-flat" + spec.extension, "", src_format)
        return None

    def copy_disk(self, disk: Disk, dst: str, fmt: str, progress=None) -> List[str]:
        """qemu-img convert of the image (read-only under our overlay) into dst's folder.

        With -U (force share): under our overlay QEMU writes no new data to the image, but a drive with
        copy-on-read=on keeps the write-unchanged permission (and its lock) on it, which a convert asking
        for a consistent read refuses ('Is another process using the image?'), every run. Writes that
        change nothing visible cannot make the copy inconsistent, and the VM's QEMU, which holds the image,
        lets no other process take a write lock on it (a second writer is refused by QEMU's lock, not ours)."""
        src_format = self._formats.get(disk.path) or qemuimg.info(self.shell, disk.path, self.qemu_img)[0].format
        return qemuimg.copy_to(self.shell, disk, disk.path, src_format, dst, fmt, progress, self._sizes_of(disk)[0],
                               self.qemu_img, force_share=True)

    def disk_files(self, descriptor_path: str) -> List[str]:
        if not descriptor_path.lower().endswith(".vmdk"):
            return [descriptor_path]
        folder = descriptor_path.rsplit("/", 1)[0]
        desc = vmdk.parse(self.shell.read_text(descriptor_path))
        return [descriptor_path] + [folder + "/" + e.filename for e in desc.extents]

    def _sizes_of(self, disk: Disk) -> Tuple[int, int]:
        """(virtual size, bytes allocated) of the disk's chain: as load_vm read them, else asked of qemu-img."""
        return self._sizes.get(disk.path) or local_sizes(qemuimg.info(self.shell, disk.path, self.qemu_img))

    def bytes_needed(self, disk: Disk, fmt: str) -> int:
        """Thick formats take the virtual size; a qcow2 copy what `qemu-img measure` says it takes (the chain's
        data and qcow2's own tables: the data alone fell short of what the copy wrote); the others what the
        chain has allocated, or for a qcow2 (which may be compressed: its file is then a fraction of the data
        any copy writes) its data's size."""
        virtual, allocated = self._sizes_of(disk)
        spec = qemuimg.FORMATS.get(fmt)
        if spec is None or spec.thick:
            return virtual
        source = self._formats.get(disk.path, "")
        if source and spec.driver == "qcow2":
            return self._measured(disk.path, source)
        if source == "qcow2":
            allocated = max(allocated, self._measured(disk.path, source))
        return min(allocated, virtual)

    def _measured(self, path: str, source: str) -> int:
        """`qemu-img measure`'s size of the image's chain as a qcow2, asked once per image."""
        if path not in self._data:
            self._data[path] = qemuimg.data_size(self.shell, path, source, self.qemu_img)
        return self._data[path]

    def backup_config(self, vm: Vm, disk_names: Dict[str, str]) -> Tuple[str, str]:
        """The VM's description (image formats, disk nodes) in place of a .vmx."""
        desc = vm.vmx
        if not isinstance(desc, VmDescription):
            raise HostError("%s was not loaded by this driver" % vm.name)
        return desc.filename, desc.text()

    # -- registration (restore) ----------------------------------------------
    def register_vm(self, vmx_path: str) -> str:
        raise HostError("restoring to a QEMU host is not supported yet")

    def registered_at(self, vmx_path: str) -> Optional[str]:
        return None  # register_vm registers nothing here


def _encrypted_kind(chain: List[Dict[str, Any]]) -> str:
    """What an encrypted disk is, as the admin made it: a LUKS image QEMU opens itself (`format=luks`, `qemu-img
    create -f luks`) is no qcow2, and a skip naming qcow2 had the admin look for an image that is not there."""
    if any(l.get("format") == "luks" for l in chain):
        return "encrypted image (a LUKS image, format luks)"
    return "encrypted image (LUKS in qcow2)"
