"""ENABLE_NON_PERSISTENT_NFS: mount the backup target for the run, unmount after.

As in ghettoVCB the backups go to /vmfs/volumes/<NFS_LOCAL_NAME>/<NFS_VM_BACKUP_DIR>.
A datastore of that name that is already mounted is used as it is and left
mounted: we only undo what we did. The unmount (UNMOUNT_NFS=1) also runs
after a failed or interrupted run.
"""

from dataclasses import replace

from ..errors import HotvcbError, UsageError
from ..hosts.base import Hypervisor
from ..settings import Settings


class NfsTarget:
    def __init__(self, host: Hypervisor, settings: Settings, log, dry_run: bool = False):
        self.host, self.s, self.log, self.dry_run = host, settings, log, dry_run
        self.mounted = False

    def __enter__(self) -> Settings:
        s = self.s
        if not s.enable_non_persistent_nfs:
            return s
        missing = [k for k in ("NFS_SERVER", "NFS_MOUNT", "NFS_LOCAL_NAME") if not getattr(s, k.lower())]
        if missing:
            raise UsageError("ENABLE_NON_PERSISTENT_NFS=1 needs %s" % ", ".join(missing))
        name = s.nfs_local_name
        if any(d.name == name for d in self.host.datastores()):
            self.log.info("NFS datastore %s is already mounted; using it and leaving it mounted" % name)
        elif self.dry_run:
            self.log.info("would mount NFS %s:%s as datastore %s" % (s.nfs_server, s.nfs_mount, name))
        else:
            self.log.info("Mounting NFS %s:%s as datastore %s" % (s.nfs_server, s.nfs_mount, name))
            try:
                self.host.mount_nfs(name, s.nfs_server, s.nfs_mount, s.nfs_version)
            except HotvcbError as err:
                raise HotvcbError("cannot mount NFS %s:%s as %s: %s" % (s.nfs_server, s.nfs_mount, name, err)) from err
            self.mounted = True
        volume = "/vmfs/volumes/%s/%s" % (name, s.nfs_vm_backup_dir.strip("/"))
        return replace(s, vm_backup_volume=volume.rstrip("/"))

    def __exit__(self, *exc) -> None:
        if self.mounted and self.s.unmount_nfs:
            self.log.info("Unmounting NFS datastore %s" % self.s.nfs_local_name)
            try:
                self.host.unmount_nfs(self.s.nfs_local_name)
            except HotvcbError as err:
                self.log.error("could not unmount NFS datastore %s: %s" % (self.s.nfs_local_name, err))
