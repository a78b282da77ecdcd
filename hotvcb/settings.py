"""The one frozen Settings object every job reads.

Field names are the ghettoVCB.conf keys in lower case, so an admin can map
what they wrote to what hotvcb does; keys hotvcb adds are marked (hotvcb).
`config.py` builds it from files; nothing else constructs it from text.
"""

from dataclasses import dataclass, field
from typing import Tuple

DISK_FORMATS = ("zeroedthick", "eagerzeroedthick", "thin", "2gbsparse")  # what vmkfstools writes
IMAGE_FORMATS = ("qcow2", "raw")  # (hotvcb) QEMU/KVM hosts only


@dataclass(frozen=True)
class Settings:
    """Checked once by config.py, then trusted by every job (a docstring also spares @dataclass
    writing one from inspect.signature over 52 fields at every start-up)."""

    vm_backup_volume: str = "/vmfs/volumes/mini-local-datastore-hdd/backups"
    disk_backup_format: str = "thin"
    vm_backup_rotation_count: int = 3
    power_vm_down_before_backup: bool = False
    enable_hard_power_off: bool = False
    iter_to_wait_shutdown: float = 3  # minutes (config also takes "90s")
    power_down_timeout: float = 5  # minutes until the VM is given up on
    enable_compression: bool = False
    vm_snapshot_memory: bool = False
    vm_snapshot_quiesce: bool = False
    allow_vms_with_snapshots_to_be_backedup: bool = False
    backup_snapshot_tree: bool = False  # (hotvcb) also keep the user's snapshot tree, restorable as snapshots
    enable_non_persistent_nfs: bool = False
    unmount_nfs: bool = False
    nfs_server: str = ""
    nfs_version: str = "nfs"
    nfs_mount: str = ""
    nfs_local_name: str = ""
    nfs_vm_backup_dir: str = ""
    snapshot_timeout: float = 15  # minutes
    email_alert: bool = False
    email_log: bool = False
    email_server: str = ""
    email_server_port: int = 25
    email_delay_interval: int = 1
    email_user_name: str = ""
    email_user_password: str = ""
    email_from: str = ""
    email_to: Tuple[str, ...] = ()
    email_errors_to: Tuple[str, ...] = ()
    email_tls: str = "auto"  # (hotvcb) none | starttls | smtps | auto
    workdir_debug: bool = False
    vm_shutdown_order: Tuple[str, ...] = ()
    vm_startup_order: Tuple[str, ...] = ()
    rsync_link: bool = False
    backup_files_chmod: str = ""  # a mode as chmod takes it (filemode.py), "" = leave as created
    vmdk_files_to_backup: Tuple[str, ...] = ("all",)
    snapshot_remove_timeout: float = 30  # (hotvcb) minutes to wait for consolidation
    create_vm_backup_volume: bool = False  # (hotvcb) create a missing VM_BACKUP_VOLUME (store/volume.py)
    pre_backup_hook: str = ""  # (hotvcb) command run on the host before each VM's backup
    post_backup_hook: str = ""  # (hotvcb) ... and after it, on every path that ran the pre-hook
    hook_timeout: float = 10  # (hotvcb) minutes
    guest_pre_backup_hook: str = ""  # (hotvcb) command run inside the guest before the snapshot (QEMU agent)
    guest_post_backup_hook: str = ""  # (hotvcb) ... and after it is gone
    cold_snapshot: bool = False  # (hotvcb) shut down, snapshot, power on, then copy
    vm_backup_rotation_size: int = 0  # (hotvcb) bytes a VM's backups may take; 0 = no budget
    backup_power_state: str = "any"  # (hotvcb) on | off | suspended | any: back up only VMs in this power state
    backup_parallel: int = 1  # (hotvcb) VMs backed up at once (jobs/parallel.py)
    backup_parallel_per_datastore: int = 2  # (hotvcb) ... of them at most this many reading one datastore
    vm_backup_repository: str = ""  # (hotvcb) back up into this deduplicating repository (docs/repository.md)
    vm_backup_repository_compression: str = "zlib"  # (hotvcb) zlib | zstd: a new repository's codec
    log_level: str = ""  # info | debug | dryrun, as ghettoVCB sourced it over -d ("": -d's); see config.run_level
    # where each value came from, "file:line" by key, for messages
    origin: Tuple[Tuple[str, str], ...] = field(default=(), compare=False)
    # the per-VM file (-c) these settings were read with, "" for the run's own: the log names it
    per_vm_file: str = field(default="", compare=False)

    def summary(self) -> str:
        """Where the backups go and how, as the log's CONFIG lines say it (the run's, and a per-VM file's)."""
        if self.vm_backup_repository:
            return "backups into the repository %s" % self.vm_backup_repository
        nfs = " (NFS %s:%s)" % (self.nfs_server, self.nfs_mount) if self.enable_non_persistent_nfs else ""
        return "backups to %s%s as %s, keep %d" % (self.vm_backup_volume, nfs, self.disk_backup_format,
                                                   self.vm_backup_rotation_count)

    def where(self, key: str) -> str:
        for k, v in self.origin:
            if k == key:
                return v
        return "default"
