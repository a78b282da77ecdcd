"""ESXi driver: vim-cmd and vmkfstools through a Shell.

Works the same on the host (LocalShell) and from a Linux box over SSH,
because every action is a host command or a host file read. vim-cmd reports
many faults with exit status 0, so its output is checked for a fault block
as well as its exit status (esxi_vim.py). This module is the driver's face
(`Hypervisor`) and its inventory: the VMs, their .vmx and disks, their power.
The rest is done by one module per job, each with answers of its own kept for
the run: datastores and NFS mounts (esxi_stores.py), snapshots
(esxi_snapshots.py), a disk's copy, vmkfstools' business (esxi_disks.py),
and registering a restored VM (esxi_register.py).
"""

import io
import re
from dataclasses import replace
from typing import Collection, Dict, List, Optional, Sequence, Tuple

from .. import lazyre, vmdk
from ..background import Kept
from ..errors import HostError, HotvcbError, VmNotFound
from ..model import DatastoreInfo, Disk, NfsShare, Snapshot, SnapshotTree, Vm, VmRef
from ..runlog import RunLog
from ..settings import DISK_FORMATS
from ..shell import Shell
from ..store import backup_files
from ..treeview import ScannedShell
from ..vmx import MAX_SIZE, VmxFile, as_vmware_reads
from . import esxi_bootstamp, esxi_release, esxi_rows, esxi_tree, vimcmd
from .base import Copied
from .esxi_disks import EsxiDisks
from .esxi_register import EsxiRegistry
from .esxi_snapshots import EsxiSnapshots
from .esxi_stores import EsxiStores, datastore_of
from .esxi_vim import Vim

# ESXi keeps its configuration in /etc/vmware/esx.conf, saved to the boot bank (state.tgz) and restored at each
# boot; its `/system/uuid` is the host's system UUID, the one `esxcli system uuid get` prints
ESX_CONF = "/etc/vmware/esx.conf"
_SYSTEM_UUID = lazyre.compile(r'^/system/uuid\s*=\s*"([0-9A-Fa-f][0-9A-Fa-f-]{15,63})"\s*$', re.M)


def _is_vmx(name: str) -> bool:
    """A VM's .vmx by its name, not a hidden file (a marker a run keeps beside it, named after it)."""
    return name.lower().endswith(".vmx") and not name.startswith(".")


class EsxiHost:
    kind = "esxi"
    formats = DISK_FORMATS  # type: Tuple[str, ...]
    powers_on = True
    snapshot_starts_vm = False
    # VMware Tools' guest operations are the vSphere API's (GuestOperationsManager); a standalone
    # host's vim-cmd has no guest exec (docs/config-reference.md, GUEST_PRE_BACKUP_HOOK)
    runs_in_guest = False
    quiesce_refused = ""  # VMware Tools quiesces (a VM without them is warned of by the dry run: guest_tools)
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
        self._booted = Kept()  # type: Kept[str]
        self._boot_untold = False  # said in the log that the host's boot time cannot be told (host_booted)
        self._invalid = {}  # type: Dict[str, str]
        self._vim = Vim(shell, self._files)
        self._disks = EsxiDisks(shell, self._files, self.log, self._release)
        self._stores = EsxiStores(shell, self._vim)
        self._snaps = EsxiSnapshots(self._vim, self._files, self._disks, self._release, self._vmx)
        self._registry = EsxiRegistry(shell, self._vim, self.list_vms, self.invalid_vms)

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

    # -- storage: the datastores and NFS mounts (esxi_stores.py) ---------------
    def datastores(self) -> List[DatastoreInfo]:
        return self._stores.datastores()

    def mount_nfs(self, name: str, server: str, share: str, version: str) -> None:
        self._stores.mount_nfs(name, server, share, version)

    def unmount_nfs(self, name: str) -> None:
        self._stores.unmount_nfs(name)

    def nfs_share(self, name: str) -> Optional[NfsShare]:
        return self._stores.nfs_share(name)

    def free_space(self, path: str) -> Optional[int]:
        return self._stores.free_space(path)

    # -- inventory -----------------------------------------------------------
    def list_vms(self) -> List[VmRef]:
        """The inventory, each VM named by its .vmx displayName (the truth; the listing is ambiguous)."""
        out = self._vim(["vmsvc/getallvms"])
        # the datastores' names after the inventory: a run asks the listing ahead, beside it
        names = {d.name: "/vmfs/volumes/" + d.name for d in self._stores.known()}
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

    def kept_for_gone(self, known: Collection[str]) -> List[str]:  # noqa: ARG002
        """Nothing: what a run keeps of a VM is in the VM's folder, which an unregistered VM's files still are."""
        return []

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
            # gone since the listing (unregistered, its datastore unmounted): a VM no longer there; any other
            # failure (a host python that dies at start, a read refused) is named, never taken for that
            if not self._vmx_exists(ref.vmx_path):
                raise VmNotFound(ref.name) from err
            raise HostError("cannot read %s of %s: %s" % (ref.vmx_path, ref.name, err)) from err
        folder = ref.vmx_path.rsplit("/", 1)[0]
        # ESXi writes another datastore's disk as /vmfs/volumes/<uuid>/...
        names = {d.url.rsplit("/", 1)[-1]: d.name for d in self._stores.known()}
        vm = Vm(ref=ref, datastore=datastore_of(ref.vmx_path, names), folder=folder, vmx=vmx,
                uuid=vmx.bios_uuid())
        for dev, bus, name in vmx.disk_slots():
            vm.disks.append(self._disk(vmx, folder, dev, bus, frozen.get(dev.lower(), name), names))
        base = ref.vmx_path.rsplit(".", 1)[0]  # <name>.vmx, a template's <name>.vmtx
        for key, default in (("nvram", base + ".nvram"), ("extendedConfigFile", base + ".vmxf")):
            path = esxi_tree.absolute(folder, vmx.get(key) or default)
            if self._files.exists(path):
                vm.extra_files.append(path)
        return vm

    def _vmx_exists(self, path: str) -> bool:
        """Whether a .vmx is there, asked of the shell itself (not the scan that may have failed); True when
        that cannot be told either."""
        try:
            return self.shell.exists(path)
        except HostError:
            return True

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
        return Disk(key=dev, path=path, datastore=datastore_of(path, names), adapter=adapter, mode=mode,
                    skip_reason=skip, kept_in=backup_files.disk_folder(name)[0])

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

    def boot_stamp(self, vm: Vm) -> str:
        """The vmx process of the VM's last power on, in the host's boot it started in, and whether its start
        failed (esxi_bootstamp.py), read from the host each time, never from the driver's folder scans: a power
        on by someone else drops none of them. A HostError where the folder itself holds another .vmx (one in a
        subfolder, a copy an admin keeps, runs no VM there): every VM there writes the one vmware.log, so a
        neighbour's power on would pass for this VM's (a hidden file is none: a marker of a run's,
        `.hotvcb-powered-off.<VM>.vmx`); one whose .vmx logs elsewhere or not at all (logged_elsewhere)."""
        if sum(_is_vmx(name) for name in self._files.list_files(vm.folder) if "/" not in name) > 1:
            raise HostError("%s shares its folder, and its vmware.log, with another VM: its power ons cannot be "
                            "told" % vm.name)
        elsewhere = esxi_bootstamp.logged_elsewhere(vm.vmx if isinstance(vm.vmx, VmxFile)
                                                    else self._vmx(vm.ref.vmx_path))
        if elsewhere:
            raise HostError("%s writes no vmware.log in its folder (its .vmx's %s): its power ons cannot be told"
                            % (vm.name, elsewhere))
        return esxi_bootstamp.boot_stamp(self.shell, vm.folder, self.host_booted, begun=True)

    def host_booted(self) -> str:
        """When the host last booted (hostd's runtime.bootTime, UTC), asked once per run (a reboot ends the run's
        VMs, and its SSH link); "" where hostd does not say it, or cannot now (not kept: asked again next time).
        Either is said in the run's log, once: a VM's stamp is then its vmx pid alone, which a reboot may give
        again, so a power on across a reboot may pass unseen where no log header tells it (powermark)."""
        try:
            booted = self._booted.get(lambda: vimcmd.parse_boot_time(self._vim(["hostsvc/hostsummary"],
                                                                                interruptible=False)))
        except HotvcbError as err:
            booted, why = "", str(err)
        else:
            why = "hostd gave no runtime.bootTime"
        if not booted and not self._boot_untold:
            self._boot_untold = True
            self.log.warning("cannot tell when the host last booted (`vim-cmd hostsvc/hostsummary`: %s): a VM "
                             "powered off for its backup is told powered on since by its vmx pid alone, which a "
                             "host reboot may give again" % why)
        return booted

    # -- snapshots (esxi_snapshots.py) -----------------------------------------
    def snapshots(self, vm: Vm, interruptible: bool = True) -> List[Snapshot]:
        return self._snaps.snapshots(vm, interruptible)

    def delta_files(self, vm: Vm) -> List[str]:
        return self._snaps.delta_files(vm)

    def needs_consolidation(self, vm: Vm, deltas: Optional[List[str]] = None) -> str:
        return self._snaps.needs_consolidation(vm, deltas)

    def create_snapshot(
        self, vm: Vm, name: str, description: str, memory: bool, quiesce: bool, timeout: float
    ) -> Snapshot:
        return self._snaps.create(vm, name, description, memory, quiesce, timeout)

    def remove_snapshot(self, vm: Vm, snap: Snapshot, timeout: float) -> None:
        self._snaps.remove(vm, snap, timeout)

    def await_snapshot_removal(self, vm: Vm, snap: Snapshot, timeout: float) -> bool:
        return self._snaps.await_removal(vm, snap, timeout)

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

    def guest_unreachable(self, vm: Vm) -> str:
        return ""  # never asked: runs_in_guest refuses in-guest hooks first

    def snapshot_tree(self, vm: Vm, disks: List[Disk], users: Optional[Sequence[str]] = None) -> SnapshotTree:
        return esxi_tree.read_tree(self._files, vm, disks, users)

    # -- registration (restore; esxi_register.py) --------------------------------
    def register_vm(self, vmx_path: str) -> str:
        return self._registry.register_vm(vmx_path)

    def registered_at(self, vmx_path: str) -> Optional[str]:
        return self._registry.registered_at(vmx_path)

