"""ESXi driver: vim-cmd and vmkfstools through a Shell.

Works the same on the host (LocalShell) and from a Linux box over SSH,
because every action is a host command or a host file read. vim-cmd reports
many faults with exit status 0, so its output is checked for a fault block
as well as its exit status. A disk's copy is vmkfstools' business, with
answers of its own kept for the run: esxi_disks.py.
"""

import io
import re
import time
from dataclasses import replace
from typing import Dict, List, Optional, Tuple

from .. import interrupt, vmdk
from ..background import Kept
from ..errors import (CommandFailed, HostError, Interrupted, SnapshotError, TimeoutExpired, Unconsolidated, VmGone,
                      VmNotFound)
from ..model import DatastoreInfo, Disk, NfsShare, Snapshot, SnapshotTree, Vm, VmRef
from ..runlog import RunLog
from ..settings import DISK_FORMATS
from ..shell import Shell
from ..store import layout
from ..treeview import ScannedShell
from ..vmx import MAX_SIZE, VmxFile, as_vmware_reads
from . import esxi_release, esxi_rows, esxi_tree, vimcmd
from .base import Copied
from .esxi_disks import EsxiDisks
from .. import lazyre

VIM_CMD = "/bin/vim-cmd"
# ESXi keeps its configuration in /etc/vmware/esx.conf, saved to the boot bank (state.tgz) and restored at each
# boot; its `/system/uuid` is the host's system UUID, the one `esxcli system uuid get` prints
ESX_CONF = "/etc/vmware/esx.conf"
_SYSTEM_UUID = lazyre.compile(r'^/system/uuid\s*=\s*"([0-9A-Fa-f][0-9A-Fa-f-]{15,63})"\s*$', re.M)
_FAULT = lazyre.compile(r"^\((vim|vmodl)\.fault\.(\w+)\)", re.M)
_DELTA = lazyre.compile(r"-\d{6}(-delta|-sesparse)?\.vmdk$")
_DELTA_SUFFIXES = lazyre.compile(r"(-\d{6})*(-delta|-sesparse|-flat)?\.vmdk$")
POLL = 1.0
# vim-cmd verbs that only read: they leave the driver's scans of VM folders valid
_QUERIES = frozenset(["vmsvc/getallvms", "vmsvc/snapshot.get", "vmsvc/power.getstate", "vmsvc/get.guest",
                      "hostsvc/datastore/listsummary", "hostsvc/datastore/info"])
SNAPSHOTS_REUSED_FOR = 120.0  # seconds a snapshot list serves as create_snapshot's "before"
# the first release whose snapshot.get Ids are known to be the .vmsd's uids (samples from 5.5 on;
# ESX 4.x prints no Id at all): from it on a new snapshot's id is read from the .vmsd
VMSD_UIDS_FROM = (5, 5)


def _disk_stem(filename: str) -> str:
    """`web_1-000002-sesparse.vmdk`, `web_1-000001.vmdk`, `web_1.vmdk` -> `web_1`: the base disk a
    delta belongs to (ESXi names a snapshot's delta after the disk it was taken of)."""
    return _DELTA_SUFFIXES.sub("", filename)


class EsxiHost:
    kind = "esxi"
    formats = DISK_FORMATS  # type: Tuple[str, ...]
    powers_on = True
    # VMware Tools' guest operations are the vSphere API's (GuestOperationsManager); a standalone
    # host's vim-cmd has no guest exec (docs/config-reference.md, GUEST_PRE_BACKUP_HOOK)
    runs_in_guest = False
    run_dir = "/var/run"  # the host's run lock and id (ramdisk: a reboot ends every run anyway)

    def __init__(self, shell: Shell, log: Optional[RunLog] = None):
        self.shell = shell
        self.log = log or RunLog("info", stream=io.StringIO())  # no log given: a contract check, a listing
        # the driver's reads of VM folders and disk descriptors: one scan per folder, kept
        # until the next host command (which may change them: a snapshot, a clone)
        self._files = ScannedShell(shell)
        self._version = Kept()  # type: Kept[Tuple[str, str]]
        self._name = Kept()  # type: Kept[str]
        self._system = Kept()  # type: Kept[str]
        self._invalid = {}  # type: Dict[str, str]
        self._disks = EsxiDisks(shell, self._files, self.log, self._release)
        # Few host commands (each is a round trip to hostd, and over SSH one more):
        # the datastore listing is read once per run for names and roots (only a
        # mount or unmount of ours changes it), the free-space figure is refreshed
        # with `datastore/info` of the one datastore; the last snapshot list per VM
        # is kept for create_snapshot's "before" set (it only has to exclude
        # snapshots older than ours, which has a name of its own).
        self._stores = Kept()  # type: Kept[List[DatastoreInfo]]
        self._roots = {}  # type: Dict[str, str]  # real path of /vmfs/volumes/<name> -> name
        self._store_of = {}  # type: Dict[str, Optional[str]]  # path asked about -> its datastore
        self._seen_snaps = {}  # type: Dict[str, Tuple[float, List[Snapshot]]]

    # -- host ----------------------------------------------------------------
    def why_root(self) -> str:
        return ("the run lock lives in %s, and vim-cmd snapshots and vmkfstools disk copies need root; or run it "
                "from a Linux box in SSH mode (--host root@HOST)" % self.run_dir)

    def describe(self) -> str:
        return self._release()[0] or "unknown ESXi"

    def _release(self) -> Tuple[str, str]:
        """(`vmware -v`'s line naming the host's ESX(i) release or "", what it printed instead)."""
        return self._version.get(lambda: esxi_release.release(self.shell, self.run_dir))

    def host_name(self) -> str:
        """The host's name as it calls itself (backups record it: hosts may share a volume)."""
        def ask() -> str:
            out = self.shell.run(["uname", "-n"], timeout=60)
            return out.output.strip() if out.returncode == 0 and out.output.strip() else "unknown"
        return self._name.get(ask)

    def system_id(self) -> str:
        """The host's system UUID (esx.conf's `/system/uuid`), which outlives a reboot; "" where esx.conf does
        not hold one (read once per run: one file read, no esxcli process)."""
        def read() -> str:
            try:
                found = _SYSTEM_UUID.search(self.shell.read_text(ESX_CONF))
            except HostError:
                return ""
            return found.group(1).lower() if found else ""
        return self._system.get(read)

    def _vim(self, args: List[str], timeout: float = 300, interruptible: bool = True) -> str:
        # a query leaves the files as they are; anything else may change them (a snapshot, a
        # registration), so the driver's scans of VM folders are dropped
        runner = self.shell.run if args[0] in _QUERIES else self._files.run
        out = runner([VIM_CMD] + args, timeout=timeout, interruptible=interruptible)
        fault = _FAULT.search(out.output)
        if out.returncode != 0 or fault:
            raise CommandFailed(out.argv, out.returncode, _fault_message(out.output), fault.group(2) if fault else "")
        return out.output

    def datastores(self) -> List[DatastoreInfo]:
        """The full listing, read now (free space included); also refreshes the cached names."""
        stores = self._stores.value = self._listing()
        return list(stores)

    def _listing(self) -> List[DatastoreInfo]:
        return vimcmd.parse_datastore_listsummary(self._vim(["hostsvc/datastore/listsummary"]))

    def _known_stores(self) -> List[DatastoreInfo]:
        """Names and urls: the listing read at most once until a mount or unmount changes it."""
        return list(self._stores.get(self._listing))

    def _forget_stores(self) -> None:
        self._stores.value = None
        self._roots, self._store_of = {}, {}

    def mount_nfs(self, name: str, server: str, share: str, version: str) -> None:
        """ghettoVCB's non-persistent mount: `nas_create name version path readonly server`.

        vim-cmd takes `nfs` (v3) or `nfsv41`; the config's ghettoVCB-style `nfs41` means the latter.
        """
        version = {"nfs41": "nfsv41"}.get(version, version)
        try:
            self._vim(["hostsvc/datastore/nas_create", name, version, share, "0", server], timeout=120)
        finally:
            self._forget_stores()

    def unmount_nfs(self, name: str) -> None:
        try:
            self._vim(["hostsvc/datastore/destroy", name], timeout=120, interruptible=False)
        finally:
            self._forget_stores()

    def nfs_share(self, name: str) -> Optional[NfsShare]:
        """`datastore/info NAME`'s NAS block; None for a VMFS datastore, or a host whose `info` fails."""
        try:
            return vimcmd.parse_nas_share(self._vim(["hostsvc/datastore/info", name]))
        except CommandFailed:
            return None

    # -- inventory -----------------------------------------------------------
    def list_vms(self) -> List[VmRef]:
        """The inventory, each VM named by its .vmx displayName (the truth; the listing is ambiguous)."""
        out = self._vim(["vmsvc/getallvms"])
        # the datastores' names after the inventory: a run asks the listing ahead, beside it
        names = {d.name: "/vmfs/volumes/" + d.name for d in self._known_stores()}
        listing = vimcmd.getallvms_candidates(out, names)
        skipped = vimcmd.invalid_vmids(out)
        rows = listing.rows
        # every candidate's .vmx in one go (over SSH one round trip, not one per VM)
        texts = self.shell.read_texts(sorted({ref.vmx_path for cands in rows for ref in cands}))
        # an annotation's line may forge a row: only rows that tell their VM pick a vmid (esxi_rows.py)
        refs, doubtful = esxi_rows.settle([self._confirmed(cands, texts) for cands in rows],
                                          set(listing.unreadable) | set(skipped))
        self._invalid = dict(listing.unreadable, **doubtful)
        self._invalid.update((vmid, vimcmd.SKIPPED) for vmid in skipped)
        return refs

    def invalid_vms(self) -> Dict[str, str]:
        """vmid -> why, from the last list_vms: VMs hostd skips, rows of its listing no reading fits, vmids
        whose rows cannot be told from a forged one."""
        return dict(self._invalid)

    def _confirmed(self, cands: List[VmRef], texts: Dict[str, str]) -> VmRef:
        """The candidate whose .vmx exists and names it; else the first readable one, by its displayName."""
        readable = []
        for ref in cands:
            if ref.vmx_path not in texts:
                continue
            shown = self._vmx(ref.vmx_path, texts[ref.vmx_path]).get("displayName")
            if shown is None or shown == ref.name:
                return ref
            if shown.strip() == ref.name:
                return replace(ref, name=shown)  # blanks the listing cannot show
            readable.append(replace(ref, name=shown))
        return readable[0] if readable else cands[0]

    def _vmx(self, path: str, text: Optional[str] = None) -> VmxFile:
        """A VM's .vmx as hostd reads it (vmx.as_vmware_reads): in the charset its `.encoding` declares, a
        UTF-8 one line by line. An old VM made on Windows declares windows-1252, whose euro sign and quotes
        (0x80-0x9F) the shell's Latin-1 misreads; one Latin-1 byte in a UTF-8 .vmx made the shell read all
        of it as Latin-1: either way its name was not the one hostd lists and `-m` names. The file's size,
        which says how the shell decoded it, is asked only where the text cannot tell (another charset
        declared, or only Latin-1's characters beyond ASCII): not of most VMs a listing reads."""
        if text is None:
            text = self._files.read_text(path)
        return VmxFile(as_vmware_reads(text, lambda: self._files.file_size(path)))

    def load_vm(self, ref: VmRef) -> Vm:
        return self._load(ref, {})

    def without_snapshots(self, vm: Vm, snaps: List[Snapshot]) -> Vm:
        """Each disk a snapshot of `snaps` put on a delta (the current one, and its parents among them) named by
        the file that snapshot froze, as the .vmx names it once they are removed (esxi_tree.frozen_files)."""
        frozen = esxi_tree.frozen_files(self._files, vm, {s.id for s in snaps if s.id})
        return self._load(vm.ref, frozen) if frozen else vm

    def _load(self, ref: VmRef, frozen: Dict[str, str]) -> Vm:
        """The VM as its .vmx names it, a disk of `frozen` (lower-case device: file) as named there."""
        try:
            vmx = self._vmx(ref.vmx_path)
        except HostError as err:
            raise VmNotFound(ref.name) from err
        folder = ref.vmx_path.rsplit("/", 1)[0]
        # ESXi writes another datastore's disk as /vmfs/volumes/<uuid>/...
        names = {d.url.rsplit("/", 1)[-1]: d.name for d in self._known_stores()}
        vm = Vm(ref=ref, datastore=_datastore_of(ref.vmx_path, names), folder=folder, vmx=vmx,
                uuid=vmx.bios_uuid())
        for dev, bus, name in vmx.disk_slots():
            vm.disks.append(self._disk(vmx, folder, dev, bus, frozen.get(dev.lower(), name), names))
        base = ref.vmx_path.rsplit(".", 1)[0]  # <name>.vmx, a template's <name>.vmtx
        for key, default in (("nvram", base + ".nvram"), ("extendedConfigFile", base + ".vmxf")):
            path = esxi_tree.absolute(folder, vmx.get(key) or default)
            if self._files.exists(path):
                vm.extra_files.append(path)
        return vm

    def _disk(self, vmx: VmxFile, folder: str, dev: str, bus: str, name: str, names: Dict[str, str]) -> Disk:
        path = esxi_tree.absolute(folder, name)
        mode = (vmx.get(dev + ".mode") or "persistent").lower()
        skip, adapter = "", bus if bus == "ide" else "lsilogic"
        try:
            desc = vmdk.parse(esxi_tree.descriptor_text(self._files, path))
            adapter = desc.adapter_type or adapter
            self._disks.loaded(path, desc)
            if desc.is_physical_rdm:
                skip = "physical RDM (vmfsPassthroughRawDeviceMap) cannot be snapshotted"
        except (HostError, vmdk.NotADescriptor) as err:
            skip = "descriptor unreadable: %s" % err
        if "independent" in mode:
            skip = "independent disk (%s) is not part of snapshots" % mode
        return Disk(key=dev, path=path, datastore=_datastore_of(path, names), adapter=adapter, mode=mode,
                    skip_reason=skip, kept_in=layout.disk_folder(name)[0])

    def backup_config(self, vm: Vm, disk_names: Dict[str, str]) -> Tuple[str, str]:
        """The .vmx as a backup holds it: each disk named as the backup names it (its base
        name: a clone of a chain is whole; or the distinct name two same-named disks get). A .vmx past
        vmx.MAX_SIZE, which no restore reads, fails the backup rather than make one that cannot come back."""
        size = self._files.file_size(vm.ref.vmx_path)
        if size > MAX_SIZE:
            raise HostError("%s is %d bytes, more than the %d MiB of a .vmx hotvcb restores: not backed up"
                            % (vm.ref.vmx_path, size, MAX_SIZE >> 20))
        vmx = self._vmx(vm.ref.vmx_path)
        vmx.declare_utf8()
        for disk in vm.disks:
            current = vmx.get(disk.key + ".fileName") or ""
            folder, _, name = current.rpartition("/")
            wanted = disk_names.get(disk.key) or vmdk.base_name(name)
            if wanted != name:
                vmx.set(disk.key + ".fileName", (folder + "/" if folder else "") + wanted)
        return vm.ref.vmx_path.rsplit("/", 1)[-1], vmx.text()

    # -- power ---------------------------------------------------------------
    def power_state(self, vm: Vm) -> str:
        # not interruptible: cleanup after Ctrl-C asks it before powering a VM on again
        out = self._vim(["vmsvc/power.getstate", vm.ref.vmid], interruptible=False)
        try:
            return vimcmd.parse_power_state(out)
        except ValueError as err:
            raise HostError(str(err)) from err

    def guest_tools(self, vm: Vm) -> Optional[bool]:
        return vimcmd.parse_tools_running(self._vim(["vmsvc/get.guest", vm.ref.vmid]))

    def shutdown(self, vm: Vm) -> None:
        self._vim(["vmsvc/power.shutdown", vm.ref.vmid])

    def power_off(self, vm: Vm) -> None:
        self._vim(["vmsvc/power.off", vm.ref.vmid], interruptible=False)

    def power_on(self, vm: Vm) -> None:
        self._vim(["vmsvc/power.on", vm.ref.vmid], interruptible=False)

    # -- snapshots -----------------------------------------------------------
    def snapshots(self, vm: Vm, interruptible: bool = True) -> List[Snapshot]:
        """The VM's snapshots as hostd lists them now (always asked: callers poll this)."""
        try:
            out = self._vim(["vmsvc/snapshot.get", vm.ref.vmid], interruptible=interruptible)
        except CommandFailed as err:
            if err.fault == "NotFound":  # the only object snapshot.get names is the VM
                raise VmGone(vm.name, vm.ref.vmid) from err
            raise
        snaps = vimcmd.parse_snapshot_get(out)
        self._seen_snaps[vm.ref.vmid] = (time.monotonic(), snaps)
        return list(snaps)

    def _recent_snapshots(self, vm: Vm) -> List[Snapshot]:
        """The list a caller fetched moments ago (leftover check, pre-flight), else asked now."""
        seen = self._seen_snaps.get(vm.ref.vmid)
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

    def create_snapshot(
        self, vm: Vm, name: str, description: str, memory: bool, quiesce: bool, timeout: float
    ) -> Snapshot:
        # ours is told apart by its name (a timestamp) and by not being in `before`:
        # a list from seconds ago serves, as no snapshot made since has our name
        try:
            before = {s.id for s in self._recent_snapshots(vm)}
            interrupt.raise_pending()
        except Interrupted as err:  # a signal while the snapshots were listed: no create is sent, so the run
            err.unasked = True  # waits for none to show up late (one sent may finish in hostd after its vim-cmd)
            raise
        self._seen_snaps.pop(vm.ref.vmid, None)
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

    def remove_snapshot(self, vm: Vm, snap: Snapshot, timeout: float) -> None:
        if not snap.id:
            raise SnapshotError("this host prints no snapshot ids (ESX 4.x); remove %r by hand" % snap.name)
        deadline = time.monotonic() + timeout
        self._seen_snaps.pop(vm.ref.vmid, None)
        self._vim(["vmsvc/snapshot.remove", vm.ref.vmid, snap.id], timeout=timeout, interruptible=False)
        # the .vmsd is hostd's own record of the tree: when it no longer holds ours (and no delta
        # is left over), hostd need not be asked; else hostd is asked until it is gone
        if esxi_tree.holds(self._files, vm, snap) is False and not self._orphaned_deltas(vm):
            return self._consolidated(vm)
        while True:
            still = [s for s in self.snapshots(vm, interruptible=False) if s.id == snap.id]
            if not still and not self._orphaned_deltas(vm):
                return self._consolidated(vm)
            if time.monotonic() > deadline:
                raise TimeoutExpired("snapshot %s of %s to be consolidated" % (snap.id, vm.name), timeout)
            time.sleep(POLL)

    def _consolidated(self, vm: Vm) -> None:
        """After a removal: the VM's disks are on their bases again, or Unconsolidated. VMware documents a
        removal that drops the snapshot from the tree but leaves the VM running on its delta, "Needs
        Consolidation" (.vmsd `snapshot.needConsolidate`): a disk of the .vmx on a delta with no snapshot
        left to own it, or that flag, is that. Costs one listing when no delta is left (the usual case)."""
        deltas = self.delta_files(vm)
        if not deltas:
            return
        vmsd = esxi_tree.snapshot_dictionary(self._files, vm)
        flagged = vmsd is not None and (vmsd.get("snapshot.needConsolidate") or "").upper() == "TRUE"
        owned = vmsd is not None and esxi_tree.snapshot_count(vmsd) > 0
        tops = {esxi_tree.absolute(vm.folder, name) for _dev, _bus, name in self._vmx(vm.ref.vmx_path).disk_slots()}
        on_delta = sorted(f.rsplit("/", 1)[-1] for f in deltas if f in tops)
        if flagged or (on_delta and not owned):
            raise Unconsolidated(
                "%s needs consolidation: its snapshot was removed, but the host left the VM running on %s "
                "instead of committing it into the base disk (it grows until then); consolidate it: %s"
                % (vm.name, ", ".join(on_delta) or "its delta files", vimcmd.consolidate_how(vm.ref.vmid)))

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

    # -- disks: vmkfstools clones and the files they read (esxi_disks.py) ----
    def copy_disk(self, disk: Disk, dst: str, fmt: str, progress=None) -> List[str]:
        return self._disks.copy(disk, dst, fmt, progress)

    def copied_as(self, disk: Disk, dst: str, fmt: str) -> Optional[Copied]:
        return self._disks.copied_as(disk, dst, fmt)

    def disk_files(self, descriptor_path: str) -> List[str]:
        return self._disks.files(descriptor_path)

    def bytes_needed(self, disk: Disk, fmt: str) -> int:
        return self._disks.bytes_needed(disk, fmt)

    def guest_exec(self, vm: Vm, argv: List[str], env: List[str], timeout: float,
                   interruptible: bool = True) -> Tuple[int, str]:
        raise HostError("%s: vim-cmd cannot run a command in the guest (that is the vSphere API's "
                        "GuestOperationsManager)" % vm.name)

    def snapshot_tree(self, vm: Vm, disks: List[Disk]) -> SnapshotTree:
        return esxi_tree.read_tree(self._files, vm, disks)

    def free_space(self, path: str) -> Optional[int]:
        """Free bytes of the datastore holding path; None for a path outside /vmfs/volumes.

        A /vmfs/volumes path on no datastore (a typo in VM_BACKUP_VOLUME, an
        NFS share that is not mounted) is an error: writing there would fill
        the host's ramdisk instead of the backup target.
        """
        if path not in self._store_of:
            self._store_of[path] = self._datastore_holding(path)
        name = self._store_of[path]
        if name is None:
            return None
        return self._free_of(name)

    def _datastore_holding(self, path: str) -> Optional[str]:
        real = self.shell.realpath(path)
        stores = self._known_stores()
        for ds in stores:
            if ds.name not in self._roots:
                self._roots[ds.name] = self.shell.realpath("/vmfs/volumes/" + ds.name)
            roots = {ds.url, "/vmfs/volumes/" + ds.name, self._roots[ds.name]}
            if any(real == r or real.startswith(r.rstrip("/") + "/") for r in roots if r):
                return ds.name
        if path.startswith("/vmfs/volumes/"):
            raise HostError("%s is not on a datastore of this host (datastores: %s)"
                            % (path, ", ".join(sorted(d.name for d in stores)) or "none"))
        return None

    def _free_of(self, name: str) -> int:
        """One datastore's free bytes now: `datastore/info NAME`, not the whole listing."""
        try:
            free = vimcmd.parse_datastore_free(self._vim(["hostsvc/datastore/info", name]))
        except (CommandFailed, ValueError):
            free = None  # an old host without `info`, or output we cannot read: the listing says it
        if free is None:
            found = [d.free for d in self.datastores() if d.name == name]
            if not found:
                raise HostError("datastore %s is gone" % name)
            return found[0]
        return free

    # -- registration (restore) ----------------------------------------------
    def register_vm(self, vmx_path: str) -> str:
        """`vim-cmd solo/registervm <vmx>` -> the new vmid, or the vmid the inventory already has at that path.

        ESXi 5.1+ prints the vmid on a line of its own; ESX/ESXi 4.x printed
        nothing on success, so the id is then looked up in the inventory.
        Faults (NotFound, AlreadyExists) raise CommandFailed via _vim, but an
        AlreadyExists for a VM hostd kept registered, invalid, while its files
        were lost (a VM restored into its own folder) is that VM, found again.
        """
        try:
            out = self._vim(["solo/registervm", vmx_path], interruptible=False)
        except CommandFailed as err:
            kept = self._reloaded_at(vmx_path) if err.fault == "AlreadyExists" else None
            if kept is None:
                raise
            return kept
        m = re.search(r"^\s*(\d+)\s*$", out, re.M)
        if m:
            return m.group(1)
        found = self._reloaded_at(vmx_path)
        if found is None:
            raise HostError("registered %s but it does not show up in the inventory" % vmx_path)
        return found

    def registered_at(self, vmx_path: str) -> Optional[str]:
        """The vmid the inventory lists for this .vmx, or None; compared by real path, as getallvms names a
        datastore by its UUID where the restore named it by its label."""
        real = self.shell.realpath(vmx_path)
        for ref in self.list_vms():
            if ref.vmx_path == vmx_path or self.shell.realpath(ref.vmx_path) == real:
                return ref.vmid
        return None

    def _reloaded_at(self, vmx_path: str) -> Optional[str]:
        """registered_at, a VM hostd skips as invalid (its .vmx was gone) reloaded first (`vmsvc/reload`):
        with its .vmx back at its path, hostd reads it again."""
        found = self.registered_at(vmx_path)
        skipped = [vmid for vmid, why in self._invalid.items() if why == vimcmd.SKIPPED]
        if found is not None or not skipped:
            return found
        for vmid in skipped:
            try:
                self._vim(["vmsvc/reload", vmid], interruptible=False)
            except CommandFailed:
                continue  # still invalid: another lost VM's
        return self.registered_at(vmx_path)


def _datastore_of(path: str, names: Dict[str, str]) -> str:
    """Datastore name of a /vmfs/volumes path, whether it names the UUID or the label."""
    parts = path.split("/")
    if len(parts) > 3 and parts[1] == "vmfs" and parts[2] == "volumes":
        return names.get(parts[3], parts[3])
    return ""


def _fault_message(output: str) -> str:
    m = re.search(r'msg = "(.*)",?\s*$', output, re.M)
    if not m:
        return output.strip()
    # PlatformConfigFault's msg is generic ("An error occurred during host configuration."):
    # the cause is in its text field
    detail = re.search(r'^\s*text = "(.+)",?\s*$', output, re.M)
    return "%s: %s" % (m.group(1).rstrip("."), detail.group(1)) if detail else m.group(1)
