"""A file a run writes on this machine (-l, --json-report, -w) named under /vmfs/volumes/<datastore>.

/vmfs/volumes holds one entry per mounted datastore, and nothing else belongs there: a folder made
for a log under a name that is no datastore (a typo, or the NFS share ENABLE_NON_PERSISTENT_NFS is
yet to mount) is a plain folder in the host's root ramdisk, where the share's mount then fails
("already exists"), that night and every night after, with or without the log. So such a path is
refused, naming the datastore it lacks, before anything is made; a folder inside a datastore that
is there is made as before, as a VM_BACKUP_VOLUME on no datastore is refused (the driver's free_space).
"""

import os
from typing import Optional

from .errors import UsageError

VOLUMES = "/vmfs/volumes/"


def missing_datastore(path: str) -> Optional[str]:
    """The datastore name `path` lies on when no datastore (nor anything else) of that name is there,
    else None (a path outside /vmfs/volumes, or on a mounted datastore)."""
    full = os.path.normpath(os.path.abspath(path))
    if full.startswith("//"):  # normpath keeps POSIX's leading `//`; Linux and ESXi's busybox read it as `/`
        full = "/" + full.lstrip("/")
    if not full.startswith(VOLUMES):
        return None
    name = full[len(VOLUMES):].split("/", 1)[0]
    if not name or os.path.lexists(VOLUMES + name):
        return None
    return name


def refuse_missing(path: str, what: str, nfs_local_name: str = "") -> None:
    """UsageError for `what` (`-l FILE`, `--json-report FILE`) on a datastore that is not there;
    `nfs_local_name`: the share the run mounts (ENABLE_NON_PERSISTENT_NFS), named as such."""
    name = missing_datastore(path)
    if name is None:
        return
    if name == nfs_local_name:
        raise UsageError(
            "%s lies on the NFS share %s, which this run mounts only for its backups and which is not mounted "
            "now: hotvcb makes no folder in /vmfs/volumes, where it would stand in the share's way; keep it on a "
            "datastore that is always mounted (or a local folder)" % (what, name))
    raise UsageError("%s: no datastore %s is mounted here (a typo, or a datastore not mounted?); hotvcb makes no "
                     "folder in /vmfs/volumes, where only datastores belong" % (what, name))
