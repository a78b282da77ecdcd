"""The QEMU driver's snapshots: external qcow2 overlays, made in one transaction, removed by block-commit.

Where an overlay goes and its name are qemu_overlay_names.py's; the commit
that removes one is qemu_commit.py's. This module is the snapshot as the job
sees it: made for every disk in one `transaction` or for none, found again
in the disks' chains (qemu_overlay_find.py's OverlayFinder, which Overlays
builds on), removed by committing every overlay of its name and
deleting the overlay and its description. The snapshot's description (the
run record that makes it provably ours) sits beside each overlay in
`<overlay>.description`, qcow2 having no place for text, with the VM's QMP
socket on its second line.
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

import os
from datetime import datetime
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from .. import crashpoint
from ..errors import HostError, SnapshotBypassed, SnapshotError, SnapshotHeld, SnapshotKept, TimeoutExpired
from ..model import Snapshot, Vm
from ..runid import parse
from ..shell import Shell
from . import qemu_overlay_names as naming  # DEVICE_OVERLAYS read where tests may have pointed it
from .qemu_blockgraph import FILTERS, absolute_names, chain_of, format_node, inserted, top_file
from .qemu_blockjobs import in_the_way, jobs_on
from .qemu_commit import Deadline, commit, find_overlay, finish_killed_runs_jobs
from .qemu_drives import hot_plugged
from .qemu_migration import migrated_during_backup, migrating, migration
from .qemu_overlay_find import CLAIM_SUFFIX, DESCRIPTION_SUFFIX, MADE_BY, OverlayFinder
from .qemu_overlay_names import OUR_MARK, layer_snapshot, overlay_path
from .qemu_runas import make_overlay, qemu_user, unopenable
from .openfiles import holders
from .qmp import QmpClient, QmpCommandError, QmpError, QmpUnavailable


class Overlays(OverlayFinder):
    def __init__(self, shell: Shell, connect: Callable[[str], QmpClient], qmp_timeout: float,
                 qemu_img: str = "qemu-img"):
        self.shell, self.connect, self.qmp_timeout, self.qemu_img = shell, connect, qmp_timeout, qemu_img
        # orphans that hold the guest's writes, kept and named by remove: no snapshot or delta file of the
        # running VM any more for this run (its pre-flight would refuse the VM for them)
        self.kept = set()  # type: Set[str]
        # (QMP socket, snapshot name) of the snapshots this process made: at their removal, a disk whose image
        # its QEMU writes without our overlay above it was written past the snapshot (remove)
        self.made = set()  # type: Set[Tuple[str, str]]

    def create(self, vm: Vm, name: str, description: str, timeout: float) -> Snapshot:
        """One transaction: every disk gets its overlay, or none does."""
        disks = [d for d in vm.disks if not d.skip_reason]
        if not disks:
            raise SnapshotError("%s has no disk to snapshot" % vm.name)
        token = os.urandom(4).hex()
        with self.connect(vm.ref.vmx_path) as qmp:
            away = migrating(qmp)  # since the VM was loaded (the look-ahead's may be minutes old)
            if away:
                raise SnapshotError("snapshot of %s not taken (QEMU was not asked): %s" % (vm.name, away))
            current = inserted(qmp)
            vm.disks += hot_plugged(qmp, vm)  # named by the job, skipped: the backup was planned without them
            owner = qemu_user(qmp)  # a QEMU dropped to another user: overlays made for it (qemu_runas.py)
            actions, planned = [], []  # type: List[Dict[str, Any]], List[Tuple[str, str]]
            to_make = []  # type: List[Tuple[str, str, Optional[int], str]]  # image, its format and size, overlay
            for i, disk in enumerate(disks):
                ins = current.get(disk.key)
                above = self._ours_above(ins, disk.path) if ins is not None else None
                if ins is not None and above is not None and (vm.ref.vmx_path, above) not in self.made:
                    raise SnapshotError("%s: disk %s is under snapshot %s of another backup (%s): one backup of a VM "
                                        "at a time, so not snapshotting it again (that run removes it when it ends; "
                                        "a dead run's, `hotvcb --qemu DIR cleanup`)" % (
                                            vm.name, disk.key, above, self._holder(top_file(ins))))
                if ins is None or top_file(ins) != disk.path:
                    raise SnapshotError("%s: disk %s is no longer %s (now %s)" % (
                        vm.name, disk.key, disk.path, top_file(ins) if ins else "gone"))
                node = self._top_node(qmp, ins, disk.path)
                overlay = overlay_path(disk.path, name)
                if overlay.startswith(naming.DEVICE_OVERLAYS + "/") and owner:
                    raise SnapshotError("snapshot of %s not taken (QEMU was not asked): disk %s is on a block device, "
                                        "whose overlay goes in %s, root's only, which its QEMU running as %s cannot "
                                        "open; not supported: run that QEMU as root to back it up"
                                        % (vm.name, disk.key, naming.DEVICE_OVERLAYS, owner))
                if overlay.startswith(naming.DEVICE_OVERLAYS + "/"):
                    # root's only: the guest's writes during the copy land here (QEMU makes the overlay 0644),
                    # and unlike an image's own folder nothing else guards them from the host's other users;
                    # one made 0755 by an older hotvcb is tightened
                    self.shell.makedirs(naming.DEVICE_OVERLAYS)
                    try:
                        self.shell.chmod(naming.DEVICE_OVERLAYS, 0o700)
                    except (OSError, HostError) as err:
                        raise SnapshotError("%s: cannot make %s private: %s"
                                            % (vm.name, naming.DEVICE_OVERLAYS, err)) from err
                if self.shell.exists(overlay):
                    raise SnapshotError("%s: %s exists already" % (vm.name, overlay))
                actions.append({"type": "blockdev-snapshot-sync", "data": {
                    "node-name": node, "snapshot-file": overlay,
                    "snapshot-node-name": "hvsnap%d-%s" % (i, token),  # node names: 31 characters at most
                    "format": "qcow2", "mode": "existing" if owner else "absolute-paths",
                }})
                planned.append((disk.key, overlay))
                top = chain_of(ins.get("image") or {})[0]
                to_make.append((disk.path, str(top.get("format", "")), top.get("virtual-size"), overlay))
            unreached = unopenable(qmp, owner, [o for _k, o in planned])  # chrooted, or a root-only folder
            if unreached:
                raise SnapshotError("snapshot of %s not taken (QEMU was not asked): %s" % (vm.name, unreached))
            tops = {d.key: current[d.key].get("node-name", "") for d in disks}
            busy = jobs_on(qmp, tops)
            if busy:  # a backup job's disk takes the snapshot, and our overlay could not be committed after it
                raise SnapshotError("snapshot of %s not taken (QEMU was not asked): %s" % (vm.name, in_the_way(busy)))
            self._describe([o for _k, o in planned], description, vm)
            crashpoint.reached("qemu-snapshot-described")
            if owner:
                self._make_for(owner, to_make)
            try:
                qmp.execute("transaction", {"actions": actions}, timeout=max(timeout, 1.0))
            except QmpCommandError as err:
                self._remove_unused(qmp, [o for _k, o in planned])
                for _key, overlay in planned:
                    self.shell.remove_tree(overlay + DESCRIPTION_SUFFIX)
                busy = jobs_on(qmp, tops) if "is busy" in err.desc else []  # one started since the look above
                raise SnapshotError("snapshot of %s failed: %s%s" % (
                    vm.name, err.desc, "; " + in_the_way(busy) if busy else "")) from err
            now = inserted(qmp)
        wrong = [k for k, o in planned if top_file(now.get(k) or {}) != o]
        if wrong:
            raise SnapshotError("%s: after the snapshot %s do not write to the overlay" % (vm.name, ", ".join(wrong)))
        self.made.add((vm.ref.vmx_path, name))
        return Snapshot(id=name, name=name, description=description,
                        created=datetime.now().isoformat(timespec="seconds"), state="", depth=0)

    def _make_for(self, owner: str, to_make: List[Tuple[str, str, Optional[int], str]]) -> None:
        """Each overlay made and handed to the QEMU's user `owner` (its descriptions claimed: the names are this
        run's), or none: a failure removes those made and the descriptions, before QEMU is asked."""
        try:
            for image, fmt, size, overlay in to_make:
                make_overlay(self.shell, self.qemu_img, owner, image, fmt, size, overlay)
        except SnapshotError:
            for _image, _fmt, _size, overlay in to_make:
                self.shell.remove_tree(overlay)
                self.shell.remove_tree(overlay + DESCRIPTION_SUFFIX)
            raise

    def _top_node(self, qmp: QmpClient, ins: Dict[str, Any], path: str) -> str:
        """The node of the disk's image, where its overlay goes: the drive's own, or under a filter node the
        image's format node (the overlay then takes its place below the filter, which stays)."""
        chain = chain_of(ins.get("image") or {})
        if not chain or (ins.get("image") or {}).get("format") not in FILTERS:
            return ins["node-name"]
        nodes = absolute_names(qmp, qmp.execute("query-named-block-nodes", {"flat": True}))
        node = format_node(nodes, path, chain[0].get("format"))
        if node is None:
            raise SnapshotError("no block node for %s below its filter node %s" % (path, ins.get("node-name")))
        return node

    def _ours_above(self, ins: Dict[str, Any], path: str) -> Optional[str]:
        """The name of our snapshot whose overlay the disk's guest writes above `path` (its image as loaded):
        unless this process made it, another run's (a second QMP folder's run on the same VM), which it is
        backing up now."""
        chain = chain_of(ins.get("image") or {})
        for i, layer in enumerate(chain):
            if layer.get("filename") == path:
                return None
            name = layer_snapshot(chain, i)
            if name is not None and name.startswith(OUR_MARK):
                return name
        return None

    def _describe(self, overlays: List[str], description: str, vm: Vm) -> None:
        """Each overlay's description, written before QEMU is asked for any overlay: all of them, or (a full
        file system, a read-only folder) none, and a SnapshotError, so the job knows no snapshot will show
        up late (nothing was asked of QEMU) and no file is left that no overlay explains. Each is claimed
        (Shell.link_new): a run on another QMP folder of the same VM asking for a snapshot of the same name in
        the same instant (names are seconds) gets none, rather than QEMU recreating, empty, the overlay the
        other run's guest writes to."""
        claimed = []  # type: List[str]
        try:
            for overlay in overlays:
                mine = "%s%s.%d%s" % (overlay, DESCRIPTION_SUFFIX, os.getpid(), CLAIM_SUFFIX)
                self.shell.write_text(mine, "%s\n%s%s\n" % (description, MADE_BY, vm.ref.vmx_path))
                crashpoint.reached("qemu-description-written")
                try:
                    won = self.shell.link_new(mine, overlay + DESCRIPTION_SUFFIX)
                finally:
                    self.shell.remove_tree(mine)
                if not won:
                    raise SnapshotError("snapshot of %s not taken (QEMU was not asked): %s is another backup's "
                                        "(%s): one backup of a VM at a time" % (vm.name, overlay, self._holder(overlay)))
                claimed.append(overlay)
        except HostError as err:  # a SnapshotError too
            for overlay in claimed:
                self.shell.remove_tree(overlay + DESCRIPTION_SUFFIX)
            if isinstance(err, SnapshotError):
                raise
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
        deadline = Deadline(timeout, self.qmp_timeout)
        try:
            qmp = self.connect(vm.ref.vmx_path).connect()
        except QmpUnavailable as err:
            raise self._orphaned(vm, snap, err) from err
        try:
            mine = self._overlay_files(qmp, snap.name)
            away = migration(qmp)  # its images another QEMU's: the commit would fail "Block node is read-only"
            if away:
                raise migrated_during_backup(vm.name, away, sorted(f for f in mine if self.shell.exists(f)))
            finish_killed_runs_jobs(qmp, vm, deadline)
            for _ in range(256):
                target = find_overlay(qmp, snap.name)
                if target is None:
                    break
                self.shell.remove_tree(commit(qmp, vm, target, deadline))
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
        owner = parse(snap.description)
        for f in self._strays(vm).get(snap.name, []):
            # a claim copy only of the run this snapshot is (another folder's run may claim the name right now)
            if f.endswith(DESCRIPTION_SUFFIX) or (owner is not None and self._run_of(f) == owner.run):
                self.shell.remove_tree(f)
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
        """No QMP socket with our overlay on top: the guest's writes are in it, so it is no leftover to delete.
        Either QEMU died, or (its socket deleted by a tmp cleaner or systemd's RuntimeDirectory) a QEMU still
        runs on the overlay: then it is no stopped VM to commit. That QEMU is found by the overlay it holds
        open (openfiles.holders), not by the socket's peer, which may be a proxy in front of it; where that
        cannot be told, the admin is told so, never that QEMU is gone."""
        kept = [o for o in (overlay_path(d.path, snap.name) for d in vm.disks if d.path) if self.shell.exists(o)]
        if not kept:
            return SnapshotError("%s: %s" % (vm.name, err))
        pids = holders(kept)
        if pids:
            return SnapshotHeld(
                "%s: its QMP socket is gone (%s), but its QEMU (pid %s) still runs, writing the guest's writes "
                "since the snapshot into %s: do not delete or `qemu-img commit` it while that QEMU runs; commit it "
                "live through another monitor of that QEMU (block-commit), or shut the guest down and then "
                "`qemu-img commit` each into its image before the VM is started again; the next backup or "
                "`hotvcb --qemu DIR cleanup` then removes the emptied overlay"
                % (vm.name, err, ", ".join(str(p) for p in pids), ", ".join(kept)))
        if pids is None:
            return SnapshotHeld(
                "%s: its QMP socket is gone (%s), and whether a QEMU still writes the guest's writes since the "
                "snapshot into %s cannot be told here (/proc shows not every process): do not delete it; once no "
                "QEMU runs on it, `qemu-img commit` each into its image before the VM is started again; the next "
                "backup or `hotvcb --qemu DIR cleanup` then removes the emptied overlay" % (vm.name, err, ", ".join(kept)))
        return SnapshotHeld(
            "%s: its QEMU is gone (%s); the guest's writes since the snapshot are in %s: `qemu-img commit` each "
            "into its image before the VM is started again (deleting one loses those writes); the next backup "
            "or `hotvcb --qemu DIR cleanup` then removes the emptied overlay"
            % (vm.name, err, ", ".join(kept)))

    def _overlay_files(self, qmp: QmpClient, name: Optional[str]) -> Set[str]:
        """Files of the VM's disk chains: overlays called name, or (None) every layer."""
        files = set()  # type: Set[str]
        for ins in inserted(qmp).values():
            chain = chain_of(ins.get("image") or {})
            files.update(l["filename"] for i, l in enumerate(chain) if name is None or layer_snapshot(chain, i) == name)
        return files

    def _remove_unused(self, qmp: QmpClient, files: List[str]) -> None:
        """Delete overlay files a failed transaction may have created, unless in use."""
        used = self._overlay_files(qmp, None)
        for f in files:
            if f not in used and self.shell.exists(f):
                self.shell.remove_tree(f)

