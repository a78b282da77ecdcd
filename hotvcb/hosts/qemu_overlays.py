"""The QEMU driver's snapshots: external qcow2 overlays, made in one transaction, removed by block-commit.

An overlay is named `<image file>.<snapshot name>.qcow2` next to the image;
an image on a block device (an LV, /dev/loopN) has its overlay in
DEVICE_OVERLAYS instead, named after the device's path (`%2F` for `/`):
beside the device it would be in /dev, a devtmpfs, so the guest's writes
during the backup would live in RAM (lost with a power cut, ENOSPC at its
few MiB); that folder is 0700, as the device node keeps ordinary users off
the disk's data;
the snapshot's description (the run record that makes it provably ours) sits
beside it in `<overlay>.description`, qcow2 having no place for text.
Removal is a small state machine per overlay: `block-commit` into the backing
image; for the active layer wait until the job is ready, `block-job-complete`,
wait for it to end — all bounded by one deadline — then delete the overlay
and its description. A commit job of ours still running from a killed run is
waited for first, and an overlay it committed but did not delete is removed.
An overlay no disk uses (its QEMU died during a backup, the VM runs again; its
disk was unplugged during the backup) is a leftover too: removed once it holds
nothing (`qemu-img commit` by hand, as the log says, empties it), kept and
named (SnapshotKept, a warning) while it holds the guest's writes; the running
VM, which does not use it, is backed up. An overlay whose commit failed holds
the guest's writes: the error says to commit it, never to delete it
(SnapshotHeld). A disk of this run's snapshot whose image its QEMU writes with
no overlay of ours above it (a QEMU restarted on the same socket and image
during the copy) was written past the snapshot: no backup (SnapshotBypassed).
"""

import hashlib
import json
import os
import stat
import time
from datetime import datetime
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from ..errors import HostError, SnapshotBypassed, SnapshotError, SnapshotHeld, SnapshotKept, TimeoutExpired
from ..model import HOLDS_DATA, Snapshot, Vm
from ..runid import RECORD_MAX
from ..shell import Shell
from .qmp import QmpClient, QmpCommandError, QmpError, QmpUnavailable
from .. import lazyre

OVERLAY_SUFFIX = ".qcow2"
DESCRIPTION_SUFFIX = ".description"  # beside an overlay: the snapshot's description
MADE_BY = "qmp "  # the description's second line: the QMP socket of the VM whose disk the overlay was on
OUR_MARK = "hotvcb-snapshot-"  # = jobs.backup.SNAPSHOT_PREFIX (a driver imports no job)
JOB_PREFIX = "hotvcb-commit-"
POLL = 0.5
_UNSAFE = lazyre.compile(r"[^A-Za-z0-9_.-]+")
# overlays of images on block devices: on the host's own persistent storage, root's (a module value, so tests
# can point it elsewhere)
DEVICE_OVERLAYS = "/var/lib/hotvcb/qemu-overlays"


def on_device(image: str) -> bool:
    """An image whose folder is no place for an overlay: a block device (or a path under /dev, one gone)."""
    if image.startswith("/dev/"):
        return True
    try:
        return stat.S_ISBLK(os.stat(image).st_mode)
    except OSError:
        return False


STEM_MAX = 150  # bytes of a device's escaped path in an overlay's name: with `.<snapshot>.qcow2.description` under 255


def _device_stem(image: str) -> str:
    """The device's path as one file name in DEVICE_OVERLAYS, one to one (/dev/vg0/a-b and /dev/vg0-a/b differ).
    A long path (a device linked deep in a VM's folder tree, a /dev/disk/by-path/…-iscsi-iqn…-lun-N name) would
    make a name past the 255 bytes a file system allows: it is then the device's base name and `%23` and a
    digest of the whole path, still one to one (an escaped path has `%` only in `%25` and `%2F`, so never `%23`)."""
    escaped = image.replace("%", "%25").replace("/", "%2F")
    if len(escaped.encode("utf-8", "surrogateescape")) > STEM_MAX:
        digest = hashlib.sha256(image.encode("utf-8", "surrogateescape")).hexdigest()[:40]
        escaped = _UNSAFE.sub("_", image.rsplit("/", 1)[-1])[:48] + "%23" + digest
    return DEVICE_OVERLAYS + "/" + escaped


def overlay_path(image: str, snapshot_name: str) -> str:
    return "%s.%s%s" % (_device_stem(image) if on_device(image) else image, snapshot_name, OVERLAY_SUFFIX)


def overlay_name(filename: str, backing: str) -> Optional[str]:
    """The snapshot name if `filename` is an overlay of `backing` named the way this driver names them
    (beside it, or for a device in DEVICE_OVERLAYS). The name has no dot, as ours never do: `web.data`'s
    overlay `<web.data>.hotvcb-snapshot-….qcow2` is no overlay of `web` called `data.hotvcb-snapshot-…`
    (two LVs of one volume group, two VMs: one's backup would refuse the other for the other's snapshot)."""
    if not backing:
        return None
    for head in (backing + ".", _device_stem(backing) + "."):
        if filename.rsplit("/", 1)[0] != head.rsplit("/", 1)[0]:
            continue
        if filename.startswith(head) and filename.endswith(OVERLAY_SUFFIX):
            name = filename[len(head): -len(OVERLAY_SUFFIX)]
            return name if name and "/" not in name and "." not in name else None
    return None


def absolute_names(qmp: QmpClient, rows: Any) -> Any:
    """query-block's or query-named-block-nodes' rows with image names absolute. QEMU reports a file as it
    was named, so `-drive file=web.qcow2` started in /srv/vms is `web.qcow2`, relative to QEMU's working
    directory, not ours: every name the driver compares, copies or puts an overlay beside is made absolute
    (QmpClient.peer_file: the file QEMU holds open under that name), in one place, so they all agree. A name
    that cannot be proven stays relative, and the driver skips that disk, saying why. A node over a filter
    node (qcow2 over `preallocate` over `file`) is named `json:{...}` by QEMU: it is the file below the
    filters (below_filters)."""
    found = {}  # type: Dict[str, Optional[str]]

    def fix(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                fix(item)
        elif isinstance(node, dict):
            for key, value in node.items():
                if key in ("file", "filename") and isinstance(value, str):
                    value = node[key] = below_filters(value)
                if key in ("file", "filename") and isinstance(value, str) and relative_name(value):
                    if value not in found:
                        found[value] = qmp.peer_file(value)
                    node[key] = found[value] or value
                else:
                    fix(value)

    fix(rows)
    return rows


def below_filters(name: str) -> str:
    """The local file a `json:{"driver": FORMAT, "file": {"driver": "preallocate", "file": {"driver": "file",
    "filename": F}}}` name stands for (F: filter nodes between a format node and its file hold no data, as
    QEMU documents `preallocate`); any other name as it is (nbd, ssh, a json: of more than that)."""
    if not name.startswith("json:"):
        return name
    try:
        node = json.loads(name[len("json:"):])
    except ValueError:
        return name
    node = node.get("file") if isinstance(node, dict) else None
    while isinstance(node, dict) and node.get("driver") in FILTERS:
        node = node.get("file")
    if isinstance(node, dict) and node.get("driver") == "file" and isinstance(node.get("filename"), str) \
            and set(node) <= {"driver", "filename"}:
        return node["filename"]
    return name


def relative_name(name: str) -> bool:
    """A file name relative to QEMU's directory (not `/…`, and no `nbd:`, `json:`… protocol prefix)."""
    return bool(name) and not name.startswith("/") and ":" not in name.split("/", 1)[0]


# block drivers that hold no data, only pass I/O on to their one child (query-block shows it as their
# backing image): a throttle node an admin puts over an image (-blockdev), copy-on-read, ...
FILTERS = frozenset(("throttle", "copy-on-read", "preallocate", "compress", "copy-before-write"))


def chain_of(image: Dict[str, Any]) -> List[Dict[str, Any]]:
    """query-block's image and its backing images, top first, filter nodes looked through: the disk is the
    image below a filter, where its overlay goes and what is copied."""
    out = []  # type: List[Dict[str, Any]]
    seen = 0
    while image and seen < 256:
        if image.get("format") not in FILTERS:
            out.append(image)
        image, seen = image.get("backing-image") or {}, seen + 1
    return out


def top_file(ins: Dict[str, Any]) -> str:
    """The image the disk's guest writes to: its chain's top, below any filter node."""
    chain = chain_of(ins.get("image") or {})
    return chain[0].get("filename", "") if chain else ins.get("file", "")


def layer_snapshot(chain: List[Dict[str, Any]], i: int) -> Optional[str]:
    backing = chain[i + 1].get("filename", "") if i + 1 < len(chain) else ""
    return overlay_name(chain[i].get("filename", ""), backing)


def device_key(dev: Dict[str, Any]) -> str:
    return dev.get("device") or dev.get("qdev") or "?"


class Overlays:
    def __init__(self, shell: Shell, connect: Callable[[str], QmpClient], qmp_timeout: float,
                 qemu_img: str = "qemu-img"):
        self.shell, self.connect, self.qmp_timeout, self.qemu_img = shell, connect, qmp_timeout, qemu_img
        # orphans that hold the guest's writes, kept and named by remove: no snapshot or delta file of the
        # running VM any more for this run (its pre-flight would refuse the VM for them)
        self.kept = set()  # type: Set[str]
        # (QMP socket, snapshot name) of the snapshots this process made: at their removal, a disk whose image
        # its QEMU writes without our overlay above it was written past the snapshot (remove)
        self.made = set()  # type: Set[Tuple[str, str]]

    def snapshots(self, vm: Vm) -> List[Snapshot]:
        """Overlays named `<image>.<name>.qcow2` in the VM's disk chains, one Snapshot per name."""
        with self.connect(vm.ref.vmx_path) as qmp:
            blocks = absolute_names(qmp, qmp.execute("query-block"))
        found = {}  # type: Dict[str, Snapshot]
        used = set()  # type: Set[str]
        for dev in blocks:
            chain = chain_of((dev.get("inserted") or {}).get("image") or {})
            used.update(l.get("filename", "") for l in chain)
            depth = 0
            for i in reversed(range(len(chain))):
                name = layer_snapshot(chain, i)
                if name is None:
                    continue
                if name not in found:
                    found[name] = Snapshot(id=name, name=name, description=self._description(chain[i]["filename"]),
                                           created="", state="", depth=depth)
                depth += 1
        # an overlay of ours the running QEMU does not use: left by a QEMU that died during a backup (then
        # committed by hand, as the log said, or not), named so the leftover check of a dead run removes it
        for name, overlay in self._unused(vm, used):
            if name.startswith(OUR_MARK) and name not in found:
                found[name] = Snapshot(id=name, name=name, description=self._description(overlay), created="",
                                       state="" if self._holds_nothing(overlay) else HOLDS_DATA, depth=0)
        return list(found.values())

    def _unused(self, vm: Vm, used: Set[str]) -> List[Tuple[str, str]]:
        """(snapshot name, file) of the overlay files beside the VM's images that no disk chain uses: of its
        disks, or of a disk it no longer has (unplugged during a backup) whose description names its QMP socket."""
        out = []  # type: List[Tuple[str, str]]
        for f in self.delta_files(vm):
            if f in used:
                continue
            for d in vm.disks:
                name = overlay_name(f, d.path) if d.path else None
                if name:
                    out.append((name, f))
                    break
        for f in self._described_for(vm, {f for _n, f in out} | used | self.kept):
            out.append((f[:-len(OVERLAY_SUFFIX)].rsplit(".", 1)[1], f))
        return out

    def _described_for(self, vm: Vm, known: Set[str]) -> List[str]:
        """Our overlay files (but `known`) in the folders of the VM's images whose description says this VM's
        QMP socket made them (_describe): the overlay of a disk the VM no longer has (unplugged during a
        backup), which no name of its disks leads to."""
        out = []  # type: List[str]
        folders = {d.path.rsplit("/", 1)[0] or "/" for d in vm.disks if d.path and not on_device(d.path)}
        if self.shell.isdir(DEVICE_OVERLAYS):
            folders.add(DEVICE_OVERLAYS)
        for folder in sorted(folders):
            for entry in self.shell.listdir(folder):
                stem = entry[:-len(OVERLAY_SUFFIX)] if entry.endswith(OVERLAY_SUFFIX) else ""
                f = folder + "/" + entry
                if "." in stem and stem.rsplit(".", 1)[1].startswith(OUR_MARK) and f not in known \
                        and self._made_by(f) == vm.ref.vmx_path:
                    out.append(f)
        return out

    def _made_by(self, overlay: str) -> str:
        """The QMP socket the overlay's description names (_describe), "" if none."""
        try:
            if self.shell.exists(overlay + DESCRIPTION_SUFFIX):
                lines = self.shell.read_regular(overlay + DESCRIPTION_SUFFIX, RECORD_MAX).splitlines()
                return next((l[len(MADE_BY):] for l in lines[1:] if l.startswith(MADE_BY)), "")
        except HostError:
            pass
        return ""

    def _holds_nothing(self, overlay: str) -> bool:
        """No cluster of the overlay's own is allocated (data or zeroes): `qemu-img commit` empties the overlay
        it committed, so deleting it loses nothing. Any doubt (qemu-img fails, its backing is gone) says no."""
        out = self.shell.run([self.qemu_img, "map", "-U", "--output=json", "-f", "qcow2", overlay], timeout=120)
        if out.returncode != 0:
            return False
        try:
            extents = json.loads(out.output)
        except ValueError:
            return False
        return isinstance(extents, list) and all(isinstance(e, dict) and e.get("depth", 0) > 0 for e in extents)

    def _description(self, overlay: str) -> str:
        """What create_snapshot was told (the run record), kept beside the overlay: qcow2 has no place for it."""
        try:
            if self.shell.exists(overlay + DESCRIPTION_SUFFIX):
                # beside the VM's images, where others may write: a planted FIFO must not hang the run
                text = self.shell.read_regular(overlay + DESCRIPTION_SUFFIX, RECORD_MAX).strip()
                return text.splitlines()[0] if text else text  # the next line: its VM (_made_by)
        except HostError:
            pass
        return "overlay " + overlay

    def delta_files(self, vm: Vm) -> List[str]:
        """Overlay files (ours or named like ours) on top of the VM's images, in use or not."""
        found = []
        by_folder = {}  # type: Dict[str, List[str]]
        for d in vm.disks:
            if d.path:
                folder, name = d.path.rsplit("/", 1)
                by_folder.setdefault(folder or "/", []).append(name)
                if on_device(d.path):  # its overlays are in DEVICE_OVERLAYS, named after its whole path
                    by_folder.setdefault(DEVICE_OVERLAYS, []).append(d.path)
        for folder, names in sorted(by_folder.items()):
            if folder == DEVICE_OVERLAYS and not self.shell.isdir(folder):
                continue
            for entry in self.shell.listdir(folder):
                if folder + "/" + entry in self.kept:
                    continue
                if any(overlay_name(folder + "/" + entry, n if n.startswith("/") else folder + "/" + n) for n in names):
                    found.append(folder + "/" + entry)
        return found

    def create(self, vm: Vm, name: str, description: str, timeout: float) -> Snapshot:
        """One transaction: every disk gets its overlay, or none does."""
        disks = [d for d in vm.disks if not d.skip_reason]
        if not disks:
            raise SnapshotError("%s has no disk to snapshot" % vm.name)
        token = os.urandom(4).hex()
        with self.connect(vm.ref.vmx_path) as qmp:
            current = self.inserted(qmp)
            actions, planned = [], []  # type: List[Dict[str, Any]], List[Tuple[str, str]]
            for i, disk in enumerate(disks):
                ins = current.get(disk.key)
                if ins is None or top_file(ins) != disk.path:
                    raise SnapshotError("%s: disk %s is no longer %s (now %s)" % (
                        vm.name, disk.key, disk.path, top_file(ins) if ins else "gone"))
                node = self._top_node(qmp, ins, disk.path)
                overlay = overlay_path(disk.path, name)
                if not overlay.startswith(disk.path + "."):
                    # root's only: the guest's writes during the copy land here (QEMU makes the overlay 0644),
                    # and unlike an image's own folder nothing else guards them from the host's other users;
                    # one made 0755 by an older hotvcb is tightened
                    self.shell.makedirs(DEVICE_OVERLAYS)
                    try:
                        self.shell.chmod(DEVICE_OVERLAYS, 0o700)
                    except (OSError, HostError) as err:
                        raise SnapshotError("%s: cannot make %s private: %s" % (vm.name, DEVICE_OVERLAYS, err)) from err
                if self.shell.exists(overlay):
                    raise SnapshotError("%s: %s exists already" % (vm.name, overlay))
                actions.append({"type": "blockdev-snapshot-sync", "data": {
                    "node-name": node, "snapshot-file": overlay,
                    "snapshot-node-name": "hvsnap%d-%s" % (i, token),  # node names: 31 characters at most
                    "format": "qcow2", "mode": "absolute-paths",
                }})
                planned.append((disk.key, overlay))
            self._describe([o for _k, o in planned], description, vm)
            try:
                qmp.execute("transaction", {"actions": actions}, timeout=max(timeout, 1.0))
            except QmpCommandError as err:
                self._remove_unused(qmp, [o for _k, o in planned])
                for _key, overlay in planned:
                    self.shell.remove_tree(overlay + DESCRIPTION_SUFFIX)
                raise SnapshotError("snapshot of %s failed: %s" % (vm.name, err.desc)) from err
            now = self.inserted(qmp)
        wrong = [k for k, o in planned if top_file(now.get(k) or {}) != o]
        if wrong:
            raise SnapshotError("%s: after the snapshot %s do not write to the overlay" % (vm.name, ", ".join(wrong)))
        self.made.add((vm.ref.vmx_path, name))
        return Snapshot(id=name, name=name, description=description,
                        created=datetime.now().isoformat(timespec="seconds"), state="", depth=0)

    def _top_node(self, qmp: QmpClient, ins: Dict[str, Any], path: str) -> str:
        """The node of the disk's image, where its overlay goes: the drive's own, or under a filter node the
        image's format node (the overlay then takes its place below the filter, which stays)."""
        chain = chain_of(ins.get("image") or {})
        if not chain or (ins.get("image") or {}).get("format") not in FILTERS:
            return ins["node-name"]
        nodes = absolute_names(qmp, qmp.execute("query-named-block-nodes", {"flat": True}))
        node = _node(nodes, path, chain[0].get("format"))
        if node is None:
            raise SnapshotError("no block node for %s below its filter node %s" % (path, ins.get("node-name")))
        return node

    def _describe(self, overlays: List[str], description: str, vm: Vm) -> None:
        """Each overlay's description, written before QEMU is asked for any overlay: all of them, or (a full
        file system, a read-only folder) none, and a SnapshotError, so the job knows no snapshot will show
        up late (nothing was asked of QEMU) and no file is left that no overlay explains."""
        try:
            for overlay in overlays:
                self.shell.write_text(overlay + DESCRIPTION_SUFFIX, "%s\n%s%s\n" % (description, MADE_BY,
                                                                                    vm.ref.vmx_path))
        except HostError as err:
            for overlay in overlays:
                self.shell.remove_tree(overlay + DESCRIPTION_SUFFIX)
            raise SnapshotError("snapshot of %s not taken (QEMU was not asked): %s" % (vm.name, err)) from err

    def remove(self, vm: Vm, snap: Snapshot, timeout: float) -> None:
        """Commit every overlay called snap.name into its backing image, then delete it. An overlay left
        because its commit failed holds the guest's writes since the snapshot: the error says so, and that
        `qemu-img commit`, never deleting it, is what to do (SnapshotHeld), whatever stopped the commit
        (a QEMU error, a timeout, no monitor: another QMP client holds it, or QEMU died)."""
        try:
            self._remove(vm, snap, timeout)
        except (SnapshotKept, SnapshotBypassed, SnapshotHeld):
            raise
        except (SnapshotError, TimeoutExpired, QmpError) as err:
            # a QMP error too: another client holds the monitor, or QEMU died during the commit
            left = [o for o in (overlay_path(d.path, snap.name) for d in vm.disks if d.path) if self.shell.exists(o)]
            if not left:
                raise
            raise SnapshotHeld(
                "%s -- the guest's writes since the snapshot are in %s: do not delete it; the next backup or "
                "`hotvcb --qemu DIR cleanup` commits it, or stop the VM and `qemu-img commit` it into its image"
                % (err, ", ".join(left))) from err

    def _remove(self, vm: Vm, snap: Snapshot, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        try:
            qmp = self.connect(vm.ref.vmx_path).connect()
        except QmpUnavailable as err:
            raise self._orphaned(vm, snap, err) from err
        try:
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
        finally:
            qmp.close()
        for f in sorted(mine - used):  # committed by a killed run's job, which died before deleting it
            if self.shell.exists(f):
                self.shell.remove_tree(f)
        held = []  # type: List[str]
        for _name, f in self._unused(vm, used):  # a QEMU that died left it; no QEMU writes it now
            if _name != snap.name:
                continue
            if self._holds_nothing(f):  # committed by hand, as _orphaned says, and emptied by qemu-img
                self.shell.remove_tree(f)
                self.shell.remove_tree(f + DESCRIPTION_SUFFIX)
            else:
                held.append(f)
        for d in vm.disks:
            if d.path and not self.shell.exists(overlay_path(d.path, snap.name)):
                self.shell.remove_tree(overlay_path(d.path, snap.name) + DESCRIPTION_SUFFIX)
        left = [overlay_path(d.path, snap.name) for d in vm.disks if d.path]
        left = [f for f in left if self.shell.exists(f) and f not in held]
        if left:
            raise SnapshotError("%s: %s still there after the commit" % (vm.name, ", ".join(left)))
        made = (vm.ref.vmx_path, snap.name) in self.made
        written = self._file_ids(used) if made else set()  # under any name (a symlinked folder, a bind mount)
        bypassed = [d.path for d in vm.disks if made and d.path and not d.skip_reason
                    and self._file_ids([d.path]) & written and overlay_path(d.path, snap.name) not in mine]
        self.made.discard((vm.ref.vmx_path, snap.name))
        if bypassed:  # a new QEMU on the same socket and image: it wrote the image while it was copied
            also = ("; %s kept: it holds the old QEMU's writes, which committing would mix with the new one's "
                    "(move it away)" % ", ".join(held)) if held else ""
            raise SnapshotBypassed(
                "%s: its QEMU writes %s without the snapshot's overlay above it: the QEMU was restarted (or the "
                "disk replaced) during the backup, so the copy may hold writes made after the snapshot; the "
                "backup is not sealed%s" % (vm.name, ", ".join(bypassed), also))
        if held:  # history: the running VM does not use it, so its backup is sound; it is only named
            self.kept.update(held)
            raise SnapshotKept(
                "%s: %s not in use by its QEMU (its disk was unplugged, or a QEMU died), but still holding the "
                "guest's writes; "
                "kept, and the VM is backed up without it: if nothing wrote its image since (the disk not plugged "
                "in again, the VM not started on it), `qemu-img commit` each into its image (then the next run "
                "removes it); if something did, committing would mix the two: move the overlay away"
                % (vm.name, ", ".join(held)))

    def _file_ids(self, files: Any) -> Set[str]:
        """The files' device:inode (Shell.file_id), or their name for one that cannot be looked at."""
        out = set()  # type: Set[str]
        for f in files:
            try:
                out.add(self.shell.file_id(f))
            except HostError:
                out.add(f)
        return out

    def _orphaned(self, vm: Vm, snap: Snapshot, err: QmpUnavailable) -> SnapshotError:
        """QEMU died with our overlay on top: the guest's last writes are in it, so it is no leftover to delete."""
        kept = [o for o in (overlay_path(d.path, snap.name) for d in vm.disks if d.path) if self.shell.exists(o)]
        if not kept:
            return SnapshotError("%s: %s" % (vm.name, err))
        return SnapshotHeld(
            "%s: its QEMU is gone (%s); the guest's writes since the snapshot are in %s: `qemu-img commit` each "
            "into its image before the VM is started again (deleting one loses those writes); the next backup "
            "or `hotvcb --qemu DIR cleanup` then removes the emptied overlay"
            % (vm.name, err, ", ".join(kept)))

    def inserted(self, qmp: QmpClient) -> Dict[str, Dict[str, Any]]:
        return {device_key(dev): dev["inserted"] for dev in absolute_names(qmp, qmp.execute("query-block"))
                if dev.get("inserted")}

    def _overlay_files(self, qmp: QmpClient, name: Optional[str]) -> Set[str]:
        """Files of the VM's disk chains: overlays called name, or (None) every layer."""
        files = set()  # type: Set[str]
        for ins in self.inserted(qmp).values():
            chain = chain_of(ins.get("image") or {})
            files.update(l["filename"] for i, l in enumerate(chain) if name is None or layer_snapshot(chain, i) == name)
        return files

    def _find_overlay(self, qmp: QmpClient, name: str) -> Optional[Tuple[str, Dict[str, Any], int, List[Dict[str, Any]]]]:
        for key, ins in sorted(self.inserted(qmp).items()):
            chain = chain_of(ins.get("image") or {})
            for i in range(len(chain) - 1):
                if layer_snapshot(chain, i) == name:
                    return key, ins, i, chain
        return None

    def _commit(self, qmp: QmpClient, vm: Vm, target, deadline: float, timeout: float) -> None:
        key, ins, i, chain = target
        overlay, backing = chain[i]["filename"], chain[i + 1]
        _refuse_internal_snapshots(vm, chain[i])
        nodes = absolute_names(qmp, qmp.execute("query-named-block-nodes", {"flat": True}))
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
        still = any(l.get("filename") == overlay for l in chain_of((self.inserted(qmp).get(key) or {}).get("image") or {}))
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


def _refuse_internal_snapshots(vm: Vm, layer: Dict[str, Any]) -> None:
    """An internal snapshot taken while our overlay was the disk's active layer (HMP `savevm`, virsh
    snapshot-create-as) lives in the overlay file: committing it would change the disk under that snapshot and
    deleting the file would destroy it, so the overlay stays, the VM on it, and the error names both."""
    names = [str(x.get("name", "?")) for x in layer.get("snapshots") or [] if isinstance(x, dict)]
    if names:
        raise SnapshotHeld(
            "%s: %s holds internal snapshot(s) %s taken during the backup: not committed, so they are kept, and "
            "the VM goes on writing that overlay; to keep them, leave it; once they are not needed (`delvm` in "
            "the VM's monitor), the next backup or `hotvcb --qemu DIR cleanup` commits it; never delete the file, "
            "which holds them and the guest's writes since the backup"
            % (vm.name, layer.get("filename", "?"), ", ".join(names)))


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
