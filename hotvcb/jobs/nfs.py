"""ENABLE_NON_PERSISTENT_NFS: mount the backup target for the run, unmount after.

As in ghettoVCB the backups go to /vmfs/volumes/<NFS_LOCAL_NAME>/<NFS_VM_BACKUP_DIR>
(config.py makes that the run's VM_BACKUP_VOLUME, for every command). A datastore of
that name that is already there must be the share NFS_SERVER:NFS_MOUNT names: another
(a local VMFS, another NAS's share mounted under that name) is refused before any VM, or
the backups the admin means to be off the host would land on it, while the log names the
share. One that is the share is used as it is and left mounted: we only undo what we did.

What we did is on record: a mount marker in the host's run folder (beside the run lock),
written before `nas_create` and removed once the share is unmounted, carrying the run's
record. A run killed after the mount (SIGKILL, OOM) leaves it, so the next run, which holds
the host's lock, knows the share is one a dead run of ours mounted and, with UNMOUNT_NFS=1,
unmounts it as it ends, rather than leave it mounted for good as "already mounted". The run
folder is in memory on ESXi: a reboot forgets the marker (as it does the lock), and a share
still mounted after it is taken as someone else's.

The unmount (UNMOUNT_NFS=1) also runs after a failed or interrupted run; one that fails
(hostd refuses: the datastore is browsed, an ISO on it is attached) is `left_mounted`,
which the run's final status and exit code carry (backup_cmd), and its marker stays for
the next run to try again.
A dry run mounts nothing, as ghettoVCB's: the share it would mount is not there to be
checked or measured, so `would_mount` tells the pre-flight to take it on trust.
"""

from typing import Callable, Mapping, Optional

from ..errors import HotvcbError
from ..hosts.base import Hypervisor
from ..model import DatastoreInfo
from ..runid import RECORD_MAX, RunId, parse
from ..settings import Settings
from ..store import layout

MOUNT_MARKER = "hotvcb-nfs-mounted."  # + NFS_LOCAL_NAME, in the host's run_dir while the share is ours


class NfsTarget:
    def __init__(self, host: Hypervisor, settings: Settings, log, run: RunId, dry_run: bool = False,
                 dead: Optional[Callable[[], Mapping[str, float]]] = None):
        # dead: the runs whose lock this run took over (HostLock.takeovers), as ownership.owner_alive takes them;
        # asked only when a mount marker is found (a read of the host's run folder: a round trip over SSH)
        self.host, self.s, self.log, self.run, self.dry_run = host, settings, log, run, dry_run
        self.dead = dead or dict
        self.mounted = self.would_mount = False
        self.left_mounted = ""  # why the share this run was to unmount is still mounted

    @property
    def marker(self) -> str:
        return "%s/%s%s" % (self.host.run_dir.rstrip("/"), MOUNT_MARKER, self.s.nfs_local_name)

    def __enter__(self) -> "NfsTarget":
        s = self.s
        if not s.enable_non_persistent_nfs:
            return self
        name = s.nfs_local_name
        found = [d for d in self.host.datastores() if d.name == name]
        if found:
            self._check_share(found[0])
            who = self._mounted_by_us()
            if not who:
                self.log.info("NFS datastore %s is already mounted; using it and leaving it mounted" % name)
            elif not s.unmount_nfs:
                self.log.info("NFS datastore %s was mounted by %s; leaving it mounted (UNMOUNT_NFS=0)" % (name, who))
            elif self.dry_run:
                self.log.info("NFS datastore %s was mounted by %s, which did not unmount it; the run would unmount "
                              "it as it ends" % (name, who))
            else:
                self.log.info("NFS datastore %s was mounted by %s, which did not unmount it; using it and unmounting "
                              "it as this run ends (UNMOUNT_NFS=1)" % (name, who))
                self._mark()  # ours now: should this run be killed too, the next one knows
                self.mounted = True
        elif self.dry_run:
            self.log.info("would mount NFS %s:%s as datastore %s (a dry run mounts nothing: the room on it is not "
                          "known)" % (s.nfs_server, s.nfs_mount, name))
            self.would_mount = True
        else:
            self.log.info("Mounting NFS %s:%s as datastore %s" % (s.nfs_server, s.nfs_mount, name))
            self._mark()  # first: a run killed during or right after the mount leaves the record
            try:
                self.host.mount_nfs(name, s.nfs_server, s.nfs_mount, s.nfs_version)
            except HotvcbError as err:
                self.host.shell.remove_tree(self.marker)
                raise HotvcbError("cannot mount NFS %s:%s as %s: %s" % (s.nfs_server, s.nfs_mount, name, err)) from err
            self.mounted = True
        return self

    def __exit__(self, *exc) -> None:
        if not (self.mounted and self.s.unmount_nfs):
            return
        name = self.s.nfs_local_name
        self.log.info("Unmounting NFS datastore %s" % name)
        try:
            self.host.unmount_nfs(name)
        except HotvcbError as err:
            self.log.error("could not unmount NFS datastore %s: %s" % (name, err))
            self.left_mounted = "NFS datastore %s is still mounted (UNMOUNT_NFS=1): %s" % (name, err)
            return
        self.host.shell.remove_tree(self.marker)

    def _check_share(self, store: DatastoreInfo) -> None:
        """Refuse a datastore named NFS_LOCAL_NAME that is not the share NFS_SERVER:NFS_MOUNT."""
        s = self.s
        wanted = "the NFS share %s:%s that NFS_SERVER and NFS_MOUNT name" % (s.nfs_server, s.nfs_mount)
        fix = "the backups would go there instead; set NFS_LOCAL_NAME to a name no datastore has, or free this one"
        if not store.type.upper().startswith("NFS"):
            raise HotvcbError("datastore %s (NFS_LOCAL_NAME) is a %s datastore, not %s: %s"
                              % (store.name, store.type or "non-NFS", wanted, fix))
        share = self.host.nfs_share(store.name)
        if share is None:
            self.log.warning("NFS datastore %s: its host does not say which share it mounts; taking it for %s:%s"
                             % (store.name, s.nfs_server, s.nfs_mount))
            return
        servers = {h.lower() for h in share.servers}
        if not ({h.strip().lower() for h in s.nfs_server.split(",") if h.strip()} <= servers
                and _export(share.path) == _export(s.nfs_mount)):
            raise HotvcbError("datastore %s (NFS_LOCAL_NAME) is the NFS share %s:%s, not %s: %s"
                              % (store.name, ",".join(share.servers), share.path, wanted, fix))

    def _mounted_by_us(self) -> str:
        """Who mounted the share, when it was a run of ours that is gone (its marker: it did not unmount it,
        killed, or it ran with UNMOUNT_NFS=0); "" when it was not, or that run may still use it."""
        from .ownership import owner_alive  # what only a backup run asks; list and restore import this module too

        shell = self.host.shell
        if not shell.exists(self.marker):
            return ""
        try:
            owner = parse(shell.read_regular(self.marker, RECORD_MAX))
        except HotvcbError as err:  # not ours (we write a file): something planted in the run folder
            self.log.warning("cannot read the NFS mount marker %s: %s; leaving the share mounted" % (self.marker, err))
            return ""
        if owner is not None and owner_alive(owner, self.run, self.dead()) is not False:
            return ""  # its run may still use it (its lock was taken over, yet it runs): it unmounts it itself
        return str(owner) if owner else "an earlier hotvcb run"

    def _mark(self) -> None:
        self.host.shell.makedirs(self.host.run_dir)
        self.host.shell.write_text(self.marker, self.run.text() + "\n")


def _export(path: str) -> str:
    """An export path as the server means it: `/export/backups/` is `/export/backups`."""
    return path.rstrip("/") or "/"


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


def volume_missing(shell, s: Settings, conf_given: bool) -> str:
    """Why a command reading the backups finds none because the backup volume itself is not there (a
    datastore not mounted after a reinstall, a typo, or `-g` forgotten: ghettoVCB's built-in
    VM_BACKUP_VOLUME), or is something else than a folder (a file tab completion took), or "" when it is
    a folder, or when `unmounted` says why (the share a run mounts). Never "no backup of VM under X" for
    an X that does not exist: the admin would take the backups for lost; nor "does not exist" of a file
    they can `ls`. The volume is named with where it was set (a per-VM file, the -g file), so the admin
    looks there, not for a forgotten -g."""
    volume = s.vm_backup_volume
    if shell.isdir(volume) or unmounted(shell, s):
        return ""
    what = layout.not_a_folder(shell, volume)
    where = s.where("vm_backup_volume")
    if where == "default":
        origin = "; no -g CONF was given, so this is ghettoVCB's built-in default" if not conf_given else \
            "; VM_BACKUP_VOLUME is set nowhere, so this is ghettoVCB's built-in default"
    else:
        origin = "; VM_BACKUP_VOLUME is set at %s" % where
    if what != "does not exist":
        return "the backup volume %s %s%s" % (volume, what, origin)
    parts = volume.split("/")
    why = "a typo, or a share not mounted?"
    if volume.startswith("/vmfs/volumes/") and len(parts) > 3 and not shell.exists("/".join(parts[:4])):
        why = "no datastore %s is mounted" % parts[3]
    return "the backup volume %s does not exist (%s)%s" % (volume, why, origin)
