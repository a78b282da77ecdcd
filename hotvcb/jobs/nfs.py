"""ENABLE_NON_PERSISTENT_NFS: mount the backup target for the run, unmount after.

As in ghettoVCB the backups go to /vmfs/volumes/<NFS_LOCAL_NAME>/<NFS_VM_BACKUP_DIR>
(config.py makes that the run's VM_BACKUP_VOLUME, for every command). A datastore of
that name that is already mounted is used as it is and left mounted: we only undo
what we did. The unmount (UNMOUNT_NFS=1) also runs after a failed or interrupted run.
A dry run mounts nothing, as ghettoVCB's: the share it would mount is not there to be
checked or measured, so `would_mount` tells the pre-flight to take it on trust.
"""

from ..errors import HotvcbError
from ..hosts.base import Hypervisor
from ..settings import Settings


class NfsTarget:
    def __init__(self, host: Hypervisor, settings: Settings, log, dry_run: bool = False):
        self.host, self.s, self.log, self.dry_run = host, settings, log, dry_run
        self.mounted = self.would_mount = False

    def __enter__(self) -> "NfsTarget":
        s = self.s
        if not s.enable_non_persistent_nfs:
            return self
        name = s.nfs_local_name
        if any(d.name == name for d in self.host.datastores()):
            self.log.info("NFS datastore %s is already mounted; using it and leaving it mounted" % name)
        elif self.dry_run:
            self.log.info("would mount NFS %s:%s as datastore %s (a dry run mounts nothing: the room on it is not "
                          "known)" % (s.nfs_server, s.nfs_mount, name))
            self.would_mount = True
        else:
            self.log.info("Mounting NFS %s:%s as datastore %s" % (s.nfs_server, s.nfs_mount, name))
            try:
                self.host.mount_nfs(name, s.nfs_server, s.nfs_mount, s.nfs_version)
            except HotvcbError as err:
                raise HotvcbError("cannot mount NFS %s:%s as %s: %s" % (s.nfs_server, s.nfs_mount, name, err)) from err
            self.mounted = True
        return self

    def __exit__(self, *exc) -> None:
        if self.mounted and self.s.unmount_nfs:
            self.log.info("Unmounting NFS datastore %s" % self.s.nfs_local_name)
            try:
                self.host.unmount_nfs(self.s.nfs_local_name)
            except HotvcbError as err:
                self.log.error("could not unmount NFS datastore %s: %s" % (self.s.nfs_local_name, err))


def unmounted(shell, s: Settings) -> str:
    """Why a command that only reads the backups (it never mounts the share) finds none: the share
    is not mounted now (a run with UNMOUNT_NFS=1 leaves it so); "" when it is, or NFS is off."""
    if not s.enable_non_persistent_nfs or shell.isdir("/vmfs/volumes/" + s.nfs_local_name):
        return ""
    after = " (UNMOUNT_NFS=1 unmounts it as each run ends)" if s.unmount_nfs else ""
    return "the NFS share %s:%s (datastore %s) is not mounted; mount it or run a backup%s" % (
        s.nfs_server, s.nfs_mount, s.nfs_local_name, after)


def because(shell, s: Settings) -> str:
    """`unmounted` as a refusal's tail (`no good backup of 'web' under ...; the NFS share ...`), or ""."""
    why = unmounted(shell, s)
    return "; " + why if why else ""
