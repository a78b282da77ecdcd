"""Is VM_BACKUP_VOLUME the backup target the admin meant, before anything is written there?

A folder that is missing, or a mount point with nothing mounted on it, is where an unmounted
NAS share or a typo sends a backup onto the host's own disk or ramdisk (filling `/` on a KVM
host, the ramdisk on ESXi). So, in every mode:

* an existing folder is used, unless `/etc/fstab` says a share belongs at or above it and nothing
  is mounted there (the classic "NAS not mounted" case, where the empty mount point exists);
* a missing folder is created only where the storage is known to be the right one: a subfolder of
  a mounted ESXi datastore (ghettoVCB's `mkdir -p` on a datastore), or anywhere when the config
  says `CREATE_VM_BACKUP_VOLUME=1`;
* anything else is refused with what to do.

The host's own `free_space` still refuses a `/vmfs/volumes` path on no datastore.
"""

from typing import List, Optional

from ..errors import HostError

CREATE_KEY = "CREATE_VM_BACKUP_VOLUME"


def check(host, volume: str, create: bool, free: bool = True) -> Optional[int]:
    """Raise HostError unless `volume` is a safe place to write backups to (nothing is changed);
    its free bytes (None outside any datastore), so the caller need not ask the host again.
    `free=False`: the checks only, for a caller who knows the free bytes (None for a folder)."""
    shell = host.shell
    volume = volume.rstrip("/") or "/"
    share = unmounted_share(shell, volume)
    if share:
        raise HostError("VM_BACKUP_VOLUME %s: %s is a mount point in /etc/fstab but nothing is mounted there; "
                        "mount it first (writing there would fill the host's own disk)" % (volume, share))
    if shell.isdir(volume):
        # a /vmfs/volumes path on no datastore is refused by the driver
        return host.free_space(volume) if free else None
    if shell.exists(volume):
        raise HostError("VM_BACKUP_VOLUME %s exists but is not a folder" % volume)
    free = host.free_space(volume)  # raises for /vmfs/volumes/<no datastore>/...
    if create:
        return free
    if host.kind == "esxi" and volume.startswith("/vmfs/volumes/") and free is not None:
        return free  # a subfolder of a mounted datastore: created by the backup, as ghettoVCB did
    raise HostError("VM_BACKUP_VOLUME %s does not exist; if it is a share, it is not mounted (writing there "
                    "would fill the host's own disk). Mount it or create the folder, or set %s=1 in the "
                    "config to have hotvcb create it" % (volume, CREATE_KEY))


def refuse_unmounted(shell, path: str, key: str) -> None:
    """HostError when /etc/fstab puts a share at or above `path` and nothing is mounted there."""
    share = unmounted_share(shell, path.rstrip("/") or "/")
    if share:
        raise HostError("%s %s: %s is a mount point in /etc/fstab but nothing is mounted there; mount it first "
                        "(writing there would fill the host's own disk)" % (key, path, share))


def unmounted_share(shell, volume: str) -> Optional[str]:
    """The /etc/fstab mount point at or above `volume` (the deepest) when nothing is mounted there."""
    points = _fstab_points(shell)
    covering = [p for p in points if p != "/" and (volume == p or volume.startswith(p + "/"))]
    if not covering:
        return None
    point = max(covering, key=len)
    mounted = _mounted_points(shell)
    if mounted is None or point in mounted:
        return None
    return point


def _read(shell, path: str) -> Optional[str]:
    try:
        return shell.read_text(path)  # a missing file is an error too: one call, not two
    except HostError:
        return None


def _fstab_points(shell) -> List[str]:
    text = _read(shell, "/etc/fstab") or ""
    out = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 3 or fields[0].startswith("#") or fields[2] == "swap" or not fields[1].startswith("/"):
            continue
        out.append(_unescape(fields[1]).rstrip("/") or "/")
    return out


def _mounted_points(shell) -> Optional[List[str]]:
    text = _read(shell, "/proc/mounts")
    if text is None:
        return None
    return [_unescape(f[1]).rstrip("/") or "/" for f in (ln.split() for ln in text.splitlines()) if len(f) > 1]


def _unescape(field: str) -> str:
    """fstab and /proc/mounts write a space as \\040 (and tab, newline, backslash likewise)."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field

