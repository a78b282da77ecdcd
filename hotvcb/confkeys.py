"""The keys of a ghettoVCB.conf or per-VM file hotvcb takes: each one's values, checked, and where each
applies (the whole run, not one VM; folder backups, not a repository)."""

import re
from typing import Callable, Dict, Optional, Sequence, Tuple

from hotvcb.filemode import FileMode
from hotvcb.settings import DISK_FORMATS, IMAGE_FORMATS, Settings
from . import lazyre

_COUNT = lazyre.compile(r"[0-9]{1,9}")


class Invalid(Exception):
    """A value check failed; the caller knows file, line and key."""

    def __init__(self, allowed: str):
        super().__init__(allowed)
        self.allowed = allowed


def _boolean(text: str) -> bool:
    word = text.lower()
    if word in ("1", "yes", "true"):
        return True
    if word in ("0", "no", "false"):
        return False
    raise Invalid("0 or 1 (also yes/no, true/false)")


def _count(minimum: int, maximum: int = 999999999, why: str = "") -> Callable[[str], int]:
    """Digits only: shell arithmetic would read '010' as octal and '-1' as true. The error names both limits
    (and `why` the lower one, where it needs saying): an admin told only ">= 1" of a count too large cannot
    tell what to write instead."""
    allowed = "a whole number from %d to %d%s" % (minimum, maximum, "; " + why if why else "")

    def check(text: str) -> int:
        if _COUNT.fullmatch(text) and minimum <= int(text) <= maximum:
            return int(text)
        raise Invalid(allowed)

    return check


def _minutes(minimum: int) -> Callable[[str], float]:
    """Minutes as ghettoVCB counts them; hotvcb also takes `90s` or `2m`.

    Seconds let an admin (and our own tests) bound a wait more tightly than
    whole minutes without a second set of keys.
    """
    allowed = "a whole number of minutes >= %d, or seconds with an s suffix such as 90s" % minimum

    def check(text: str) -> float:
        m = _DURATION.fullmatch(text.lower())
        if not m:
            raise Invalid(allowed)
        value = int(m.group(1))
        if m.group(2) == "s":
            if value < 1:
                raise Invalid(allowed)
            return value / 60.0
        if value < minimum:
            raise Invalid(allowed)
        return value

    return check


def _choice(options: Sequence[str], aliases: Optional[Dict[str, str]] = None) -> Callable[[str], str]:
    aliases = aliases or {}
    allowed = "|".join(list(options) + sorted(aliases))

    def check(text: str) -> str:
        word = text.lower()
        if word in options:
            return word
        if word in aliases:
            return aliases[word]
        raise Invalid(allowed)

    return check


def _absolute_path(text: str) -> str:
    if text.startswith("/"):
        return text
    raise Invalid("an absolute path such as /vmfs/volumes/<datastore>/backups")


def _mode(text: str) -> str:
    """Octal or symbolic, as ghettoVCB's `chmod -R` took it (`filemode.py`)."""
    if text:
        try:
            FileMode(text)
        except ValueError as err:
            raise Invalid(str(err)) from None
    return text


_SIZE = lazyre.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?", re.I)


def _size(text: str) -> int:
    """Bytes from `500G`, `1.5T`, `800MiB`; 0 or empty: no budget."""
    if not text.strip():
        return 0
    m = _SIZE.fullmatch(text.strip())
    allowed = "a size such as 500G, 1.5T or 800M, at most 1000000T (0: no budget)"
    if not m or len(m.group(1)) > 20:
        raise Invalid(allowed)
    value = float(m.group(1)) * 1024 ** "bkmgt".index((m.group(2) or "b").lower())
    if not value < 1e6 * 2 ** 40:
        raise Invalid(allowed)
    return int(value)


def _names(text: str) -> Tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


_ADDRESS_LIST = lazyre.compile("[,;]")


def _addresses(text: str) -> Tuple[str, ...]:
    """ghettoVCB's comma list of mail addresses; a `;` separates too, as Outlook writes a list (ghettoVCB put
    `a@x;b@x` in one RCPT TO, which a server refuses; smtplib's parser kept `a@x` alone): no address holds one."""
    return tuple(item.strip() for item in _ADDRESS_LIST.split(text) if item.strip())


def _vmdk_files(text: str) -> Tuple[str, ...]:
    """'all' beside file names is refused: ghettoVCB would have looked for a disk called 'all'."""
    names = _names(text)
    if not names or tuple(n.lower() for n in names) == ("all",):
        return ("all",)
    if "all" in (n.lower() for n in names):
        raise Invalid("all, or a comma list of .vmdk file names")
    return names


_DURATION = lazyre.compile(r"(\d{1,9})([sm]?)")
_ROTATION = "ghettoVCB's 0 deleted the backup it had just made, so hotvcb refuses it"

# Each key's field in Settings is the key in lower case.
KEYS = {
    "VM_BACKUP_VOLUME": _absolute_path,
    "DISK_BACKUP_FORMAT": _choice(DISK_FORMATS + IMAGE_FORMATS, {"thick": "zeroedthick"}),
    "VM_BACKUP_ROTATION_COUNT": _count(1, why=_ROTATION),
    "POWER_VM_DOWN_BEFORE_BACKUP": _boolean,
    "ENABLE_HARD_POWER_OFF": _boolean,
    "ITER_TO_WAIT_SHUTDOWN": _minutes(1),
    "POWER_DOWN_TIMEOUT": _minutes(1),
    "ENABLE_COMPRESSION": _boolean,
    "VM_SNAPSHOT_MEMORY": _boolean,
    "VM_SNAPSHOT_QUIESCE": _boolean,
    "ALLOW_VMS_WITH_SNAPSHOTS_TO_BE_BACKEDUP": _boolean,
    "BACKUP_SNAPSHOT_TREE": _boolean,
    "ENABLE_NON_PERSISTENT_NFS": _boolean,
    "UNMOUNT_NFS": _boolean,
    "NFS_SERVER": str,
    "NFS_VERSION": _choice(("nfs", "nfsv41"), {"nfs41": "nfsv41"}),  # nas_create takes nfs | nfsv41
    "NFS_MOUNT": str,
    "NFS_LOCAL_NAME": str,
    "NFS_VM_BACKUP_DIR": str,
    "SNAPSHOT_TIMEOUT": _minutes(1),
    "EMAIL_ALERT": _boolean,
    "EMAIL_LOG": _boolean,
    "EMAIL_SERVER": str,
    "EMAIL_SERVER_PORT": _count(1, 65535),
    "EMAIL_DELAY_INTERVAL": _count(0),
    "EMAIL_USER_NAME": str,
    "EMAIL_USER_PASSWORD": str,
    "EMAIL_FROM": str,
    "EMAIL_TO": _addresses,
    "EMAIL_ERRORS_TO": _addresses,
    "EMAIL_TLS": _choice(("none", "starttls", "smtps", "auto")),
    "WORKDIR_DEBUG": _boolean,
    "VM_SHUTDOWN_ORDER": _names,
    "VM_STARTUP_ORDER": _names,
    "RSYNC_LINK": _boolean,
    "BACKUP_FILES_CHMOD": _mode,
    "VMDK_FILES_TO_BACKUP": _vmdk_files,
    "SNAPSHOT_REMOVE_TIMEOUT": _minutes(1),
    "CREATE_VM_BACKUP_VOLUME": _boolean,
    "BACKUP_POWER_STATE": _choice(("on", "off", "suspended", "any")),
    "VM_BACKUP_REPOSITORY": lambda text: text and _absolute_path(text),
    "VM_BACKUP_REPOSITORY_COMPRESSION": _choice(("zlib", "zstd")),
    "VM_BACKUP_ROTATION_SIZE": _size,
    "COLD_SNAPSHOT": _boolean,
    "PRE_BACKUP_HOOK": str,
    "POST_BACKUP_HOOK": str,
    "HOOK_TIMEOUT": _minutes(1),
    "BACKUP_PARALLEL": _count(1, 16),
    "BACKUP_PARALLEL_PER_DATASTORE": _count(1, 16),
    "GUEST_PRE_BACKUP_HOOK": str,
    "GUEST_POST_BACKUP_HOOK": str,
    "LOG_LEVEL": _choice(("info", "debug", "dryrun")),
}  # type: Dict[str, Callable[[str], object]]

# Keys whose empty value (`EMAIL_SERVER_PORT=`, as many a ghettoVCB.conf has them, whose shell read them as
# nothing set) means the default: refused as no number, it stopped every run, mail on or off
EMPTY_IS_DEFAULT = ("EMAIL_SERVER_PORT", "EMAIL_DELAY_INTERVAL", "LOG_LEVEL")

# Keys that act once per run (mail, NFS mount, start/stop order, work dir):
# in a per-VM file they would silently do nothing, so we say so.
RUN_WIDE = frozenset(
    [key for key in KEYS if key.startswith(("EMAIL_", "NFS_"))]
    + ["ENABLE_NON_PERSISTENT_NFS", "UNMOUNT_NFS", "VM_SHUTDOWN_ORDER", "VM_STARTUP_ORDER", "WORKDIR_DEBUG",
       "BACKUP_PARALLEL", "BACKUP_PARALLEL_PER_DATASTORE", "LOG_LEVEL"]
)

NOTICES = {
    ("DISK_BACKUP_FORMAT", "thick"): "thick is the ESX 3.x name that vmkfstools no longer takes; using zeroedthick",
}


# BACKUP_FILES_CHMOD is one run's or VM's, and a repository's packs hold chunks of every VM and host that wrote
# them: no per-VM mode can be applied to objects shared so (the repository's folder is what to restrict)
FOLDER_ONLY = ("disk_backup_format", "enable_compression", "vm_backup_rotation_count", "vm_backup_rotation_size",
               "backup_files_chmod", "rsync_link")


def repository_ignores(settings: Settings) -> str:
    """The warning for the folder backups' keys set (in a file, not by default) where the backups go into a
    repository, which ignores them; "" if none is. A migrating admin's ghettoVCB config sets them all, and
    the run said nothing, so they looked kept (a rotation count) or chosen (a disk format)."""
    if not settings.vm_backup_repository:
        return ""
    keys = ["%s (%s)" % (name.upper(), settings.where(name)) for name in FOLDER_ONLY
            if settings.where(name) != "default"]
    if not keys:
        return ""
    private = settings.where("backup_files_chmod") != "default"
    return ("%s: only for folder backups, ignored with VM_BACKUP_REPOSITORY (its disks are stored as their "
            "content and restored thin; hotvcb prune --keep-* keeps its backups%s)" % (", ".join(keys), (
                "; its objects are shared by every VM and written as the umask makes them: restrict who may read "
                "them with the mode of the repository's folder, e.g. chmod go-rwx %s" % settings.vm_backup_repository)
                if private else ""))
