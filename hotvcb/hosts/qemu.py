"""QEMU/KVM driver: QMP for the running VM, qemu-img for the copy.

The inventory is a folder of QMP sockets, `<dir>/<VM name>.qmp` (QEMU started
with `-qmp unix:<dir>/<name>.qmp,server=on,wait=off`); the VM's name is the
file name, taken literally. QEMU serves one client per QMP socket, so the
driver connects for each step and lets go again.

The backup, in the job's words:

- disks: `query-block`; empty and removable drives (CD-ROM, floppy) are no
  disks, read-only ones are skipped with a warning. A disk's path is its
  current image file (a chain the user built stays, the copy flattens it),
  or the image below an overlay of ours.
- snapshot: an external qcow2 overlay per disk, all in one `transaction` of
  `blockdev-snapshot-sync`, named `<image file>.<snapshot name>.qcow2` next
  to the image. From then on the image is read-only and QEMU writes to the
  overlay. An overlay named that way is reported by `snapshots()` (the job
  recognises ours by the `hotvcb-snapshot-` name and removes leftovers).
- copy: `qemu-img convert -p` of the now read-only image (formats: qemuimg.py).
- remove: `block-commit` of the overlay into its backing image — for the
  active layer wait for it to be ready, `block-job-complete`, wait for the
  job to end, all bounded by the timeout — then delete the overlay file.
  A commit job of ours still running from a killed run is finished first.
- the backup holds `<name>.json` (name, disks, QEMU version) in place of a .vmx.

Not supported for QEMU: POWER_VM_DOWN_BEFORE_BACKUP — a guest shut down
(`system_powerdown`) or hard powered off (`quit`) usually ends the QEMU
process, and hotvcb cannot start it again (power_on says so; a process kept
by `-no-shutdown` is reset and continued). VM_SNAPSHOT_QUIESCE (it needs the
guest agent) fails the snapshot; VM_SNAPSHOT_MEMORY is ignored (a disk-only
overlay holds no memory, and a backup never copied it). NFS mounting and
restore registration are ESXi's.
"""

import json
import os
import re
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Dict, List, Optional, Set, Tuple

from .. import vmdk
from ..errors import CopyError, HostError, SnapshotError, TimeoutExpired, VmNotFound
from ..model import DatastoreInfo, Disk, Snapshot, Vm, VmRef
from ..shell import Shell
from . import qemuimg
from .qmp import QmpClient, QmpCommandError, QmpError, QmpUnavailable

SOCKET_SUFFIX = ".qmp"
OVERLAY_SUFFIX = ".qcow2"
OUR_MARK = "hotvcb-snapshot-"  # = jobs.backup.SNAPSHOT_PREFIX (a driver imports no job)
JOB_PREFIX = "hotvcb-commit-"
QMP_TIMEOUT = 30.0
POLL = 0.5
_IMAGE_EXT = re.compile(r"\.(qcow2|img|raw|vmdk|qed|vdi|vhdx?)$", re.I)
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass
class VmDescription:
    """What a QEMU backup holds in place of a .vmx (the Sealer writes `text()` to `filename`)."""

    filename: str
    data: Dict[str, Any] = field(default_factory=dict)

    def text(self) -> str:
        return json.dumps(self.data, indent=2, sort_keys=True) + "\n"


def overlay_path(image: str, snapshot_name: str) -> str:
    return "%s.%s%s" % (image, snapshot_name, OVERLAY_SUFFIX)


def overlay_name(filename: str, backing: str) -> Optional[str]:
    """The snapshot name if `filename` is an overlay of `backing` named the way this driver names them."""
    if not backing or filename.rsplit("/", 1)[0] != backing.rsplit("/", 1)[0]:
        return None
    head = backing + "."
    if filename.startswith(head) and filename.endswith(OVERLAY_SUFFIX):
        name = filename[len(head): -len(OVERLAY_SUFFIX)]
        return name if name and "/" not in name else None
    return None


def _chain(image: Dict[str, Any]) -> List[Dict[str, Any]]:
    """query-block's image and its backing images, top first."""
    out = []  # type: List[Dict[str, Any]]
    while image and len(out) < 256:
        out.append(image)
        image = image.get("backing-image") or {}
    return out


def _layer_snapshot(chain: List[Dict[str, Any]], i: int) -> Optional[str]:
    backing = chain[i + 1].get("filename", "") if i + 1 < len(chain) else ""
    return overlay_name(chain[i].get("filename", ""), backing)


def _key(dev: Dict[str, Any]) -> str:
    return dev.get("device") or dev.get("qdev") or "?"


class QemuHost:
    kind = "qemu"
    formats = tuple(qemuimg.FORMATS)

    def __init__(self, shell: Shell, qmp_dir: str, qemu_img: str = qemuimg.QEMU_IMG, qmp_timeout: float = QMP_TIMEOUT):
        self.shell, self.qmp_dir = shell, qmp_dir.rstrip("/") or "/"
        self.run_dir = self.qmp_dir  # the run lock sits beside the VMs it guards
        self.qemu_img, self.qmp_timeout = qemu_img, qmp_timeout
        self._formats = {}  # type: Dict[str, str]  # image path -> format, from load_vm

    def _qmp(self, socket_path: str) -> QmpClient:
        return QmpClient(socket_path, self.qmp_timeout)

    # -- host ----------------------------------------------------------------
    def describe(self) -> str:
        return "QEMU/KVM, QMP sockets in %s" % self.qmp_dir

    def datastores(self) -> List[DatastoreInfo]:
        return []

    def mount_nfs(self, name: str, server: str, share: str, version: str) -> None:
        raise HostError("ENABLE_NON_PERSISTENT_NFS is for ESXi; on a QEMU host mount %s:%s yourself" % (server, share))

    def unmount_nfs(self, name: str) -> None:
        raise HostError("ENABLE_NON_PERSISTENT_NFS is for ESXi")

    # -- inventory -----------------------------------------------------------
    def list_vms(self) -> List[VmRef]:
        refs = []
        for entry in self.shell.listdir(self.qmp_dir):
            if entry.endswith(SOCKET_SUFFIX) and len(entry) > len(SOCKET_SUFFIX):
                name = entry[: -len(SOCKET_SUFFIX)]
                refs.append(VmRef(vmid=name, name=name, vmx_path=self.qmp_dir + "/" + entry))
        return refs

    def host_name(self) -> str:
        return socket.gethostname()

    def load_vm(self, ref: VmRef) -> Vm:
        if not self.shell.exists(ref.vmx_path):
            raise VmNotFound(ref.name)  # its QEMU is gone since the listing
        with self._qmp(ref.vmx_path) as qmp:
            version = qmp.execute("query-version")
            status = qmp.execute("query-status")
            blocks = qmp.execute("query-block")
        vm = Vm(ref=ref, datastore="", folder=self.qmp_dir, vmx=None)
        for dev in blocks:
            if dev.get("inserted") and not dev.get("removable"):  # empty drives, CD-ROMs: no disks
                vm.disks.append(self._disk(dev))
        described = "%s.qemu.json" if ref.name == "hotvcb" else "%s.json"  # hotvcb.json is the manifest
        vm.vmx = VmDescription(described % ref.name, {
            "name": ref.name,
            "hypervisor": "qemu",
            "qmp_socket": ref.vmx_path,
            "qemu_version": version,
            "status": status.get("status"),
            "disks": [
                {"key": d.key, "image": d.path, "format": self._formats.get(d.path, ""), "skipped": d.skip_reason}
                for d in vm.disks
            ],
        })
        return vm

    def _disk(self, dev: Dict[str, Any]) -> Disk:
        key, ins = _key(dev), dev["inserted"]

        def skipped(reason: str, path: str = "") -> Disk:
            return Disk(key=key, path=path, datastore="", adapter="", skip_reason=reason)

        chain = _chain(ins.get("image") or {})
        i = 0  # below our overlays: the image the guest wrote before our snapshot
        while i + 1 < len(chain) and (_layer_snapshot(chain, i) or "").startswith(OUR_MARK):
            i += 1
        path = chain[i].get("filename", "") if chain else ins.get("file", "")
        if ins.get("ro"):
            return skipped("read-only drive", path)
        if not path.startswith("/"):
            return skipped("not a local image file: %s" % path[:200])
        self._formats[path] = chain[i].get("format", "") if chain else ""
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

    # -- snapshots -----------------------------------------------------------
    def snapshots(self, vm: Vm, interruptible: bool = True) -> List[Snapshot]:  # noqa: ARG002 - QMP is not interruptible
        """Overlays named `<image>.<name>.qcow2` in the VM's disk chains, one Snapshot per name."""
        with self._qmp(vm.ref.vmx_path) as qmp:
            blocks = qmp.execute("query-block")
        found = {}  # type: Dict[str, Snapshot]
        for dev in blocks:
            chain = _chain((dev.get("inserted") or {}).get("image") or {})
            depth = 0
            for i in reversed(range(len(chain))):
                name = _layer_snapshot(chain, i)
                if name is None:
                    continue
                if name not in found:
                    found[name] = Snapshot(id=name, name=name, description="overlay " + chain[i]["filename"],
                                           created="", state="", depth=depth)
                depth += 1
        return list(found.values())

    def delta_files(self, vm: Vm) -> List[str]:
        """Overlay files (ours or named like ours) on top of the VM's images, in use or not."""
        found = []
        by_folder = {}  # type: Dict[str, List[str]]
        for d in vm.disks:
            if d.path:
                folder, name = d.path.rsplit("/", 1)
                by_folder.setdefault(folder or "/", []).append(name)
        for folder, names in sorted(by_folder.items()):
            for entry in self.shell.listdir(folder):
                if any(overlay_name(folder + "/" + entry, folder + "/" + n) for n in names):
                    found.append(folder + "/" + entry)
        return found

    def create_snapshot(
        self, vm: Vm, name: str, description: str, memory: bool, quiesce: bool, timeout: float
    ) -> Snapshot:
        """One transaction: every disk gets its overlay, or none does."""
        if quiesce:
            raise SnapshotError("%s: a quiesced snapshot needs the QEMU guest agent, which hotvcb does not use "
                                "yet; set VM_SNAPSHOT_QUIESCE=0 for QEMU VMs" % vm.name)
        disks = [d for d in vm.disks if not d.skip_reason]
        if not disks:
            raise SnapshotError("%s has no disk to snapshot" % vm.name)
        token = os.urandom(4).hex()
        with self._qmp(vm.ref.vmx_path) as qmp:
            current = self._inserted(qmp)
            actions, planned = [], []  # type: List[Dict[str, Any]], List[Tuple[str, str]]
            for i, disk in enumerate(disks):
                ins = current.get(disk.key)
                if ins is None or ins.get("file") != disk.path:
                    raise SnapshotError("%s: disk %s is no longer %s (now %s)" % (
                        vm.name, disk.key, disk.path, ins.get("file") if ins else "gone"))
                overlay = overlay_path(disk.path, name)
                if self.shell.exists(overlay):
                    raise SnapshotError("%s: %s exists already" % (vm.name, overlay))
                actions.append({"type": "blockdev-snapshot-sync", "data": {
                    "node-name": ins["node-name"], "snapshot-file": overlay,
                    "snapshot-node-name": "hvsnap%d-%s" % (i, token),  # node names: 31 characters at most
                    "format": "qcow2", "mode": "absolute-paths",
                }})
                planned.append((disk.key, overlay))
            try:
                qmp.execute("transaction", {"actions": actions}, timeout=max(timeout, 1.0))
            except QmpCommandError as err:
                self._remove_unused(qmp, [o for _k, o in planned])
                raise SnapshotError("snapshot of %s failed: %s" % (vm.name, err.desc)) from err
            now = self._inserted(qmp)
        wrong = [k for k, o in planned if (now.get(k) or {}).get("file") != o]
        if wrong:
            raise SnapshotError("%s: after the snapshot %s do not write to the overlay" % (vm.name, ", ".join(wrong)))
        return Snapshot(id=name, name=name, description=description,
                        created=datetime.now().isoformat(timespec="seconds"), state="", depth=0)

    def remove_snapshot(self, vm: Vm, snap: Snapshot, timeout: float) -> None:
        """Commit every overlay called snap.name into its backing image, then delete it."""
        deadline = time.monotonic() + timeout
        with self._qmp(vm.ref.vmx_path) as qmp:
            mine = self._overlay_files(qmp, snap.name)
            for job in qmp.execute("query-block-jobs"):
                if str(job.get("device", "")).startswith(JOB_PREFIX):
                    self._wait_job(qmp, vm, job["device"], deadline, timeout)  # a killed run's commit
            for _ in range(256):
                target = self._find_overlay(qmp, snap.name)
                if target is None:
                    break
                self._commit(qmp, vm, target, deadline, timeout)
            used = self._overlay_files(qmp, None)
        for f in sorted(mine - used):  # committed by a killed run's job, which died before deleting it
            if self.shell.exists(f):
                self.shell.remove_tree(f)
        left = [overlay_path(d.path, snap.name) for d in vm.disks if d.path]
        left = [f for f in left if self.shell.exists(f)]
        if left:
            raise SnapshotError("%s: %s still there after the commit" % (vm.name, ", ".join(left)))

    def _inserted(self, qmp: QmpClient) -> Dict[str, Dict[str, Any]]:
        return {_key(dev): dev["inserted"] for dev in qmp.execute("query-block") if dev.get("inserted")}

    def _overlay_files(self, qmp: QmpClient, name: Optional[str]) -> Set[str]:
        """Files of the VM's disk chains: overlays called name, or (None) every layer."""
        files = set()  # type: Set[str]
        for ins in self._inserted(qmp).values():
            chain = _chain(ins.get("image") or {})
            files.update(l["filename"] for i, l in enumerate(chain) if name is None or _layer_snapshot(chain, i) == name)
        return files

    def _find_overlay(self, qmp: QmpClient, name: str) -> Optional[Tuple[str, Dict[str, Any], int, List[Dict[str, Any]]]]:
        for key, ins in sorted(self._inserted(qmp).items()):
            chain = _chain(ins.get("image") or {})
            for i in range(len(chain) - 1):
                if _layer_snapshot(chain, i) == name:
                    return key, ins, i, chain
        return None

    def _commit(self, qmp: QmpClient, vm: Vm, target, deadline: float, timeout: float) -> None:
        key, ins, i, chain = target
        overlay, backing = chain[i]["filename"], chain[i + 1]
        nodes = qmp.execute("query-named-block-nodes", {"flat": True})
        base = _node(nodes, backing.get("filename"), backing.get("format"))
        if base is None:
            raise SnapshotError("%s: no block node for %s, the image below %s" % (vm.name, backing.get("filename"), overlay))
        job_id = JOB_PREFIX + _UNSAFE.sub("-", key)
        args = {"job-id": job_id, "device": ins["node-name"], "base-node": base}  # type: Dict[str, Any]
        if i > 0:  # not the active layer: an ordinary commit of one layer
            top = _node(nodes, overlay, chain[i].get("format"))
            if top is None:
                raise SnapshotError("%s: no block node for %s" % (vm.name, overlay))
            args["top-node"] = top
        try:
            qmp.execute("block-commit", args, timeout=self._left(deadline, timeout))
        except QmpCommandError as err:
            raise SnapshotError("%s: commit of %s failed: %s" % (vm.name, overlay, err.desc)) from err
        error = self._wait_job(qmp, vm, job_id, deadline, timeout)
        still = any(l.get("filename") == overlay for l in _chain((self._inserted(qmp).get(key) or {}).get("image") or {}))
        if still:
            raise SnapshotError("%s: commit of %s ended but the disk still uses it%s"
                                % (vm.name, overlay, ": " + error if error else ""))
        self.shell.remove_tree(overlay)

    def _wait_job(self, qmp: QmpClient, vm: Vm, job_id: str, deadline: float, timeout: float) -> str:
        """Drive a commit job to its end (complete it once ready); its error text, "" if none."""
        completing, error = False, ""

        def mine(ev: Dict[str, Any]) -> bool:
            data = ev.get("data") or {}
            return data.get("device") == job_id or data.get("id") == job_id

        while True:
            jobs = {j.get("device"): j for j in qmp.execute("query-block-jobs", timeout=self._left(deadline, timeout))}
            job = jobs.get(job_id)
            if job is None or job.get("status") in ("concluded", "null"):
                break
            if job.get("ready") and not completing:
                qmp.execute("block-job-complete", {"device": job_id}, timeout=self._left(deadline, timeout))
                completing = True
            if time.monotonic() > deadline:
                try:
                    qmp.execute("block-job-cancel", {"device": job_id, "force": True}, timeout=10)
                except QmpError:
                    pass
                raise TimeoutExpired("commit %s of %s" % (job_id, vm.name), timeout)
            ev = qmp.wait_event(mine, POLL)
            error = _job_error(ev) or error
        for ev in [e for e in qmp.events if mine(e)]:
            error = _job_error(ev) or error
        qmp.take_events("JOB_STATUS_CHANGE")
        return error

    def _left(self, deadline: float, timeout: float) -> float:
        return max(min(deadline - time.monotonic(), self.qmp_timeout), 5.0)

    def _remove_unused(self, qmp: QmpClient, files: List[str]) -> None:
        """Delete overlay files a failed transaction may have created, unless in use."""
        used = self._overlay_files(qmp, None)
        for f in files:
            if f not in used and self.shell.exists(f):
                self.shell.remove_tree(f)

    # -- disks ---------------------------------------------------------------
    def copy_disk(self, disk: Disk, dst: str, fmt: str, progress=None) -> List[str]:
        """qemu-img convert to dst's folder; the file name keeps dst's stem and takes fmt's extension.

        On any failure (or interruption) the files this copy started are removed again.
        """
        try:
            spec = qemuimg.output_format(fmt)
        except HostError as err:
            raise CopyError(disk.path, str(err), dst) from err
        folder, name = dst.rsplit("/", 1)
        stem = _IMAGE_EXT.sub("", name) or name
        out = "%s/%s%s" % (folder, stem, spec.extension)
        if self.shell.exists(out):  # two disks with one file name (from different folders)
            out = "%s/%s-%s%s" % (folder, stem, _UNSAFE.sub("-", disk.key).strip("-"), spec.extension)
        src_format = self._formats.get(disk.path) or qemuimg.info(self.shell, disk.path, self.qemu_img)[0].format
        argv = qemuimg.convert_argv(disk.path, src_format, out, spec, self.qemu_img)

        def watch(fragment: str) -> None:
            pct = qemuimg.percent(fragment)
            if pct is not None and progress is not None:
                progress(pct)

        before = set(self.shell.listdir(folder))
        try:
            result = self.shell.run(argv, timeout=None, idle_timeout=1800, on_output=watch)
            if result.returncode != 0:
                raise CopyError(disk.path, qemuimg.error_line(result.output), out)
        except BaseException:
            for f in set(self.shell.listdir(folder)) - before:
                self.shell.remove_tree(folder + "/" + f)
            raise
        made = set(self.shell.listdir(folder)) - before
        first = out.rsplit("/", 1)[-1]
        return sorted(made, key=lambda f: (f != first, f))

    def disk_files(self, descriptor_path: str) -> List[str]:
        if not descriptor_path.lower().endswith(".vmdk"):
            return [descriptor_path]
        folder = descriptor_path.rsplit("/", 1)[0]
        desc = vmdk.parse(self.shell.read_text(descriptor_path))
        return [descriptor_path] + [folder + "/" + e.filename for e in desc.extents]

    def bytes_needed(self, disk: Disk, fmt: str) -> int:
        """Thick formats take the virtual size; the others what the chain has allocated."""
        virtual, allocated = qemuimg.sizes(qemuimg.info(self.shell, disk.path, self.qemu_img))
        spec = qemuimg.FORMATS.get(fmt)
        return virtual if spec is None or spec.thick else min(allocated, virtual)

    def free_space(self, path: str) -> Optional[int]:
        """Free bytes where path is (or would be created); QMP is local, so is this."""
        probe = path
        while probe and not os.path.exists(probe):
            parent = os.path.dirname(probe.rstrip("/"))
            if parent == probe:
                break
            probe = parent
        try:
            st = os.statvfs(probe or "/")
        except OSError:
            return None
        return st.f_bavail * st.f_frsize

    def backup_config(self, vm: Vm, disk_names: Dict[str, str]) -> Tuple[str, str]:
        """The VM's description (image formats, disk nodes) in place of a .vmx."""
        desc = vm.vmx
        if not isinstance(desc, VmDescription):
            raise HostError("%s was not loaded by this driver" % vm.name)
        return desc.filename, desc.text()

    # -- registration (restore) ----------------------------------------------
    def register_vm(self, vmx_path: str) -> str:
        raise HostError("restoring to a QEMU host is not supported yet")

def _node(nodes: List[Dict[str, Any]], filename: Optional[str], fmt: Optional[str]) -> Optional[str]:
    """The format node (not the protocol node below it) of an image file."""
    for n in nodes:
        if n.get("file") == filename and n.get("drv") == fmt and n.get("node-name"):
            return n["node-name"]
    return None


def _job_error(ev: Optional[Dict[str, Any]]) -> str:
    if not ev:
        return ""
    data = ev.get("data") or {}
    if ev.get("event") == "BLOCK_JOB_COMPLETED" and data.get("error"):
        return str(data["error"])
    if ev.get("event") == "BLOCK_JOB_ERROR":
        return "I/O error (%s)" % data.get("operation", "?")
    return ""
