"""The domain, as plain data: what a job reads from a host and records.

Every dataclass has a docstring: for one without, @dataclass writes one from inspect.signature at
import, ~0.2 ms a class on Python 3.8, paid by every command's start-up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Protocol, Tuple


def hostd_name(vm_name: str) -> str:
    """A display name as hostd shows it (getallvms, the vSphere API's entity names): `%` as `%25`, `/` as
    `%2f`, `\\` as `%5c`. ghettoVCB.sh took this name for a VM's backup folder and its per-VM file."""
    return vm_name.replace("%", "%25").replace("/", "%2f").replace("\\", "%5c")


@dataclass(frozen=True)
class VmRef:
    """A row of the host's inventory: enough to find the VM, nothing more."""

    vmid: str
    name: str
    vmx_path: str  # absolute host path of the .vmx (a template's .vmtx)
    # a template (ESXi: registered by its <name>.vmtx): listed like a VM, never powered on, not backed up
    template: bool = False


@dataclass(frozen=True)
class DatastoreInfo:
    """A datastore as its host reports it: where a backup or restore can go, and the room it has."""

    name: str
    url: str  # where it is mounted, /vmfs/volumes/<uuid> on ESXi
    capacity: int
    free: int
    type: str  # VMFS, NFS, ...


@dataclass(frozen=True)
class NfsShare:
    """The share an NFS datastore mounts, as its host reports it: which server(s) and export path.
    Told apart from the share a config names before backups go to a datastore of that name."""

    servers: Tuple[str, ...]  # remoteHost, and NFS 4.1's remoteHostNames
    path: str  # remotePath, the export on the server


@dataclass(frozen=True)
class Disk:
    """A VM's disk as its config names it: what a backup copies, or says why it cannot."""

    key: str  # "scsi0:1", "nvme0:0", ...
    path: str  # absolute host path of the base descriptor (never a delta)
    datastore: str  # datastore holding the disk
    adapter: str  # lsilogic, pvscsi, sata, ide, nvme, ... (for vmkfstools -a)
    mode: str = "persistent"
    skip_reason: str = ""  # why the disk cannot be backed up (independent, pRDM)
    # the backup's sub-folder for it: the datastore a .vmx names it on by full path (store/seal.plan_disks)
    kept_in: str = ""

    @property
    def filename(self) -> str:
        return self.path.rsplit("/", 1)[-1]


class VmConfig(Protocol):
    """A VM's config as its driver read it; the driver alone knows its shape."""

    def text(self) -> str: ...


@dataclass
class Vm:
    """A VM as its driver loaded it: its files, so a job can copy, check and restore them."""

    ref: VmRef
    datastore: str
    folder: str  # absolute folder holding the .vmx
    vmx: Optional["VmConfig"]  # the driver's: a VmxFile (ESXi), a VmDescription (QEMU); None when only powered
    disks: List[Disk] = field(default_factory=list)
    extra_files: List[str] = field(default_factory=list)  # .nvram, .vmxf
    uuid: str = ""  # the VM's own id (ESXi uuid.bios), the same on whichever host it is registered
    # snapshots the driver reads through but reports as none (bare QEMU: a disk's own backing chain, a qcow2's
    # internal snapshots), one phrase each: what BACKUP_SNAPSHOT_TREE=1 cannot keep, so refuses the VM for
    history: List[str] = field(default_factory=list)
    # those of `history` that are snapshots the admin took to go back to (a qcow2's internal snapshots, which the
    # backup does not hold), not a disk's base: ALLOW_VMS_WITH_SNAPSHOTS_TO_BE_BACKEDUP=0 refuses the VM for them
    own_snapshots: List[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.ref.name


# Snapshot.state of a dead run's snapshot the driver keeps because it holds data (a QEMU overlay no disk uses,
# holding the guest's writes): the next run or cleanup keeps it too, so only the admin can clear it
HOLDS_DATA = "holds data"
# Snapshot.state of a snapshot's description file with no data file beside it (a QEMU `.description` whose
# overlay was never made or is gone: a run killed around its snapshot, a power cut, an admin's note): no
# snapshot is on the VM's disks and nothing of the guest's is in it, so it never refuses the VM's backup; its
# id names the file(s). One whose record names a dead run is removed as that run's snapshot; the rest are named
NO_DATA_FILE = "no data file"


@dataclass(frozen=True)
class Snapshot:
    """A snapshot as the host lists it: ours to remove, or the user's to leave and report."""

    id: str  # "" on ESX 4.x, whose snapshot.get prints no Id
    name: str
    description: str
    created: str
    state: str
    depth: int  # 0 = a root snapshot
    # another tool's backup job (libvirt): it holds the domain, so no backup of ours can start beside it
    foreign_job: bool = False


@dataclass
class SnapshotTree:
    """The user's snapshots as files, read before our snapshot: what BACKUP_SNAPSHOT_TREE keeps.

    Every file is named by its base name in the backup (one folder), so the
    deltas' parent hints and the .vmsd's disk names resolve there and after
    a restore. The texts are the user's, before our snapshot changed them, as hostd reads them (in
    the charset they declare), declared UTF-8 where they declared another: they are written as UTF-8.
    """

    vmx_name: str
    vmx_text: str  # the .vmx naming the user's current deltas
    vmsd_name: str
    vmsd_text: str
    snapshots: List[str]  # the user's snapshot names, tree order
    state_files: List[str] = field(default_factory=list)  # .vmsn/.vmem paths, copied as they are
    bases: List[Disk] = field(default_factory=list)  # disks without a parent: cloned in the backup's format
    deltas: List[Tuple[str, str]] = field(default_factory=list)  # (delta, its parent) descriptors, parents first


@dataclass
class DiskResult:
    """How one disk's copy went: the VM's result, the report and the mail are made of these."""

    disk: Disk
    ok: bool
    files: List[str] = field(default_factory=list)  # names inside the backup
    error: str = ""
    seconds: float = 0.0
    bytes: int = 0  # the disk's size as copied (its capacity)


@dataclass
class VmResult:
    """How one VM's backup went; `cli` turns a list of these into an exit code."""

    name: str
    status: str = "pending"  # ok | warn | error | skipped
    message: str = ""
    backup_dir: Optional[str] = None
    sealed: bool = False  # its backup is published (ok or warn): good, whatever stops the run after that
    disks: List[DiskResult] = field(default_factory=list)
    # how many it was to copy, once its disks were read: a VM refused before any copy (a user's snapshot, no
    # room) is `0/2` in the report's DISKS, where `0/0` read as a VM without a disk
    disks_to_copy: Optional[int] = None
    # its disks could not be read (a VM refused for its per-VM file whose .vmx the host did not give): its
    # DISKS are unknown, `0/?` and JSON `"disks": null`, never `0/0` (a VM without a disk nobody looks at)
    disks_unknown: bool = False
    # in no backup: no snapshot can copy them (independent, physical RDM); its backup is good without them
    skipped_disks: List[Disk] = field(default_factory=list)
    # what the run warns of beside a good backup (an overlay kept that still holds the guest's writes)
    warnings: List[str] = field(default_factory=list)
    good_backups: List[str] = field(default_factory=list)  # after the run, oldest first (store/health.py)
    down: bool = False  # we powered it off and it did not come back on: the run's first news
    seconds: float = 0.0
