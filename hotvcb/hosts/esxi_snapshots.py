"""The ESXi driver's snapshots: hostd's list (the last one kept a while as a create's "before"), a VM's
delta files, a snapshot made (its id read from the .vmsd where the release lets it) and removed (done once
the .vmsd no longer holds it and no delta is left over; hostd asked only while it may still be there)."""

import time
from typing import Callable, Dict, List, Optional, Tuple

from .. import interrupt, lazyre, vmdk
from ..errors import CommandFailed, HostError, Interrupted, SnapshotError, TimeoutExpired, Unconsolidated, VmGone
from ..model import Snapshot, Vm
from ..treeview import ScannedShell
from ..vmx import VmxFile
from . import esxi_tree, vimcmd
from .esxi_disks import EsxiDisks
from .esxi_vim import Vim

_DELTA = lazyre.compile(r"-\d{6}(-delta|-sesparse)?\.vmdk$")
_DELTA_SUFFIXES = lazyre.compile(r"(-\d{6})*(-delta|-sesparse|-flat)?\.vmdk$")
POLL = 1.0
SNAPSHOTS_REUSED_FOR = 120.0  # seconds a snapshot list serves as create_snapshot's "before"
# the first release whose snapshot.get Ids are known to be the .vmsd's uids (samples from 5.5 on;
# ESX 4.x prints no Id at all): from it on a new snapshot's id is read from the .vmsd
VMSD_UIDS_FROM = (5, 5)


def _disk_stem(filename: str) -> str:
    """`web_1-000002-sesparse.vmdk`, `web_1-000001.vmdk`, `web_1.vmdk` -> `web_1`: the base disk a
    delta belongs to (ESXi names a snapshot's delta after the disk it was taken of)."""
    return _DELTA_SUFFIXES.sub("", filename)


class EsxiSnapshots:
    """`release`: the host's `vmware -v` line (and what it printed instead), asked once per run; `vmx`: a
    VM's .vmx as hostd reads it (EsxiHost._vmx)."""

    def __init__(self, vim: Vim, files: ScannedShell, disks: EsxiDisks, release: Callable[[], Tuple[str, str]],
                 vmx: Callable[[str], VmxFile]):
        self._vim, self._files, self._disks, self._release, self._vmx = vim, files, disks, release, vmx
        # the last snapshot list per VM is kept for create's "before" set (it only has to exclude
        # snapshots older than ours, which has a name of its own)
        self._seen = {}  # type: Dict[str, Tuple[float, List[Snapshot]]]

    def snapshots(self, vm: Vm, interruptible: bool = True) -> List[Snapshot]:
        """The VM's snapshots as hostd lists them now (always asked: callers poll this)."""
        try:
            out = self._vim(["vmsvc/snapshot.get", vm.ref.vmid], interruptible=interruptible)
        except CommandFailed as err:
            if err.fault == "NotFound":  # the only object snapshot.get names is the VM
                raise VmGone(vm.name, vm.ref.vmid) from err
            raise
        snaps = vimcmd.parse_snapshot_get(out)
        self._seen[vm.ref.vmid] = (time.monotonic(), snaps)
        return list(snaps)

    def _recent(self, vm: Vm) -> List[Snapshot]:
        """The list a caller fetched moments ago (leftover check, pre-flight), else asked now."""
        seen = self._seen.get(vm.ref.vmid)
        if seen is not None and time.monotonic() - seen[0] < SNAPSHOTS_REUSED_FOR:
            return list(seen[1])
        return self.snapshots(vm)

    def delta_files(self, vm: Vm) -> List[str]:
        """Delta disks next to the VM's disks and named after them: snapshots hostd may not show.
        Another VM's deltas in a shared folder are not this VM's (BACKUP_PARALLEL snapshots both)."""
        folders = {vm.folder} | {d.path.rsplit("/", 1)[0] for d in vm.disks}
        stems = {_disk_stem(d.path.rsplit("/", 1)[-1]) for d in vm.disks}
        found = []
        for folder in sorted(folders):
            for name in self._files.listdir(folder):
                if _DELTA.search(name) and _disk_stem(name) in stems:
                    found.append(folder + "/" + name)
        return found

    def create(self, vm: Vm, name: str, description: str, memory: bool, quiesce: bool, timeout: float) -> Snapshot:
        # ours is told apart by its name (a timestamp) and by not being in `before`:
        # a list from seconds ago serves, as no snapshot made since has our name
        try:
            before = {s.id for s in self._recent(vm)}
            interrupt.raise_pending()
        except Interrupted as err:  # a signal while the snapshots were listed: no create is sent, so the run
            err.unasked = True  # waits for none to show up late (one sent may finish in hostd after its vim-cmd)
            raise
        self._seen.pop(vm.ref.vmid, None)
        args = ["vmsvc/snapshot.create", vm.ref.vmid, name, description, str(int(memory)), str(int(quiesce))]
        deadline = time.monotonic() + timeout
        try:
            self._vim(args, timeout=timeout)
        except CommandFailed as err:
            if err.fault == "NotFound":  # the only object snapshot.create names is the VM
                raise VmGone(vm.name, vm.ref.vmid) from err
            raise SnapshotError("snapshot of %s failed: %s" % (vm.name, err.output.strip())) from err
        # hostd writes the new snapshot into the .vmsd as it creates it: a file read, not a round
        # trip to hostd; where the .vmsd does not name ours (yet), hostd is asked until it lists it
        version = vimcmd.parse_version(self._release()[0])
        if version is not None and version[:2] >= VMSD_UIDS_FROM:
            written = esxi_tree.created(self._files, vm, name, before)
            if written is not None:
                return written
        while True:
            mine = [s for s in self.snapshots(vm) if s.name == name and s.id not in before]
            if mine:
                return mine[-1]
            if time.monotonic() > deadline:
                raise TimeoutExpired("snapshot %r of %s to appear" % (name, vm.name), timeout)
            time.sleep(POLL)

    def remove(self, vm: Vm, snap: Snapshot, timeout: float) -> None:
        if not snap.id:
            raise SnapshotError("this host prints no snapshot ids (ESX 4.x); remove %r by hand" % snap.name)
        deadline = time.monotonic() + timeout
        self._seen.pop(vm.ref.vmid, None)
        self._vim(["vmsvc/snapshot.remove", vm.ref.vmid, snap.id], timeout=timeout, interruptible=False)
        # the .vmsd is hostd's own record of the tree: when it no longer holds ours (and no delta
        # is left over), hostd need not be asked; else hostd is asked until it is gone
        if esxi_tree.holds(self._files, vm, snap) is False and not self._orphaned_deltas(vm):
            return self._consolidated(vm)
        if not self.await_removal(vm, snap, deadline - time.monotonic()):
            raise TimeoutExpired("snapshot %s of %s to be consolidated" % (snap.id, vm.name), timeout)

    def await_removal(self, vm: Vm, snap: Snapshot, timeout: float) -> bool:
        """True once hostd no longer lists ours and no delta is left over (then Unconsolidated where the disks
        stay on deltas); False when `timeout` seconds pass first. A removal's own wait, and the wait for one
        whose vim-cmd died with its SSH session: hostd's task carries on (jobs/snapshot_removal.py)."""
        deadline = time.monotonic() + timeout
        while True:
            still = [s for s in self.snapshots(vm, interruptible=False) if s.id == snap.id]
            if not still and not self._orphaned_deltas(vm):
                self._consolidated(vm)
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(POLL)

    def _consolidated(self, vm: Vm) -> None:
        """After a removal: the VM's disks are on their bases again, or Unconsolidated."""
        why = self.needs_consolidation(vm)
        if why:
            raise Unconsolidated("%s %s" % (vm.name, why))

    def needs_consolidation(self, vm: Vm, deltas: Optional[List[str]] = None) -> str:
        """Why the VM's disks need consolidation ("needs consolidation: ..." with how), "" when they do not: the
        one judgement of it, which a removal's check, the pre-flight (and its dry run), status and cleanup all
        ask. VMware documents a removal that drops the snapshot from the tree but leaves the VM running on its
        delta, "Needs Consolidation": the .vmsd's `snapshot.needConsolidate`, or delta files with no snapshot
        left in the .vmsd to own them. The flag counts beside the user's snapshots (and beside a dead run's
        snapshot taken on top): a check made only where no snapshot is left called such a VM fine. Costs one
        listing when no delta is there (the usual case), none where the caller gives the `deltas` delta_files
        just listed."""
        deltas = self.delta_files(vm) if deltas is None else deltas
        if not deltas:
            return ""
        vmsd = esxi_tree.snapshot_dictionary(self._files, vm)
        flagged = vmsd is not None and (vmsd.get("snapshot.needConsolidate") or "").upper() == "TRUE"
        names = esxi_tree.snapshot_names(vmsd) if vmsd is not None else []
        if names and not flagged:
            return ""
        if not flagged:
            deltas = [d for d in deltas if self._left_by_removal(d)]
            if not deltas:
                return ""
        tops = {esxi_tree.absolute(vm.folder, name) for _dev, _bus, name in self._vmx(vm.ref.vmx_path).disk_slots()}
        on_delta = sorted(f.rsplit("/", 1)[-1] for f in deltas if f in tops)
        files = ", ".join(on_delta or sorted(f.rsplit("/", 1)[-1] for f in deltas))
        return ("needs consolidation: %s, and its disks %s %s, which grow until they are committed into the base "
                "disks; consolidate it: %s"
                % ("the host marks it so (the .vmsd's snapshot.needConsolidate)" if flagged
                   else "delta files and no snapshot to own them (a removal left its disks on them)",
                   "run on" if on_delta else "have", files, vimcmd.consolidate_how(vm.ref.vmid, names)))

    def _left_by_removal(self, delta: str) -> bool:
        """Whether a delta with no snapshot to own it is a removal's leftover: one over a disk of its own name
        beside it (web-000001 over web), as ESXi names and places a snapshot's delta. A linked clone's disk is
        a delta over another VM's base (B-000001 over ../A/A.vmdk, or a copied template's disk-000001 over
        ../tpl/disk.vmdk): that is how the VM is made, nothing to consolidate. Where the
        chain does not read, it counts (the careful answer). A delta's data file (-sesparse, -delta) is judged
        by its descriptor."""
        for extent in ("-sesparse.vmdk", "-delta.vmdk"):
            if delta.endswith(extent):
                delta = delta[: -len(extent)] + ".vmdk"
        try:
            links = esxi_tree.chain(self._files, delta, delta.rsplit("/", 1)[-1])
        except (HostError, vmdk.NotADescriptor):
            return True
        if len(links) < 2:
            return True
        parent, child = links[1][0].rsplit("/", 1), delta.rsplit("/", 1)
        return parent[0] == child[0] and _disk_stem(parent[-1]) == _disk_stem(child[-1])

    def _orphaned_deltas(self, vm: Vm) -> List[str]:
        """Delta files no disk chain of the VM uses any more: consolidation not done.

        A chain is the current state's (the .vmx) or a user snapshot's (the .vmsd): after a
        revert, the deltas of the branch left behind belong to its snapshots, not to the .vmx.
        """
        vmx = self._vmx(vm.ref.vmx_path)
        tops = [name for _dev, _bus, name in vmx.disk_slots()]
        vmsd_path = esxi_tree.vmsd_of(vm.ref.vmx_path)
        if self._files.exists(vmsd_path):
            vmsd = VmxFile(esxi_tree.read_dictionary(self._files, vmsd_path))
            tops += [vmsd.get(k) or "" for k in vmsd.keys() if ".disk" in k and k.endswith(".filename")]
        used = set()  # type: set
        for name in tops:
            try:
                used.update(self._disks.chain_files(esxi_tree.absolute(vm.folder, name)))
            except (HostError, vmdk.NotADescriptor):
                continue
        return [f for f in self.delta_files(vm) if f not in used]
