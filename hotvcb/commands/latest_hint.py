"""Why `restore --latest VM` found no good backup, as its refusal's tail: the same words whichever restore
asked (to ESXi, to KVM), so a mistyped VM name gets its close names from each (README: `restore --latest`
is answered with the close names); the folder-volume KVM restore said only "no good backup of 'Web'"."""

from ..errors import HotvcbError, UsageError, VmNotFound
from ..jobs import nfs
from ..settings import Settings
from ..store import layout


def require_volume(shell, settings: Settings, conf_given: bool, name: str) -> None:
    """Refuses `--latest name` up front when the backup volume itself is not there or is no folder
    (nfs.volume_missing), for either restore (to ESXi, to KVM): "no good backup of 'web' under" a volume
    that is not mounted reads as backups lost."""
    missing = nfs.volume_missing(shell, settings, conf_given)
    if missing:
        raise UsageError("no backup of %r can be found: %s" % (name, missing))


def why_none(shell, volume: str, name: str, listed: bool) -> str:
    """The VM's folder is there but holds none hotvcb takes for a backup (`listed`: whether any was listed;
    the names it set aside follow, layout.odd_named), or the close folder names where it is not there. Each
    folder looked in is named, those older writers named too (layout.older_folders, as list_backups reads
    them): the admin sees `c%5cd/` there and is told it was looked in. Never a "did you mean" the very name
    given."""
    roots = [r for r in layout.vm_roots(volume, name) if shell.isdir(r)]
    if not roots:
        return close_names(shell, volume, name)
    return "" if listed else "".join("; %s holds no backup" % r for r in roots)


def close_names(shell, volume: str, name: str) -> str:
    """` (did you mean 'Web Server (prod)'?)` from the VM folders under the backup volume, or ""."""
    try:
        present = [e for e in shell.listdir(volume) if shell.isdir(volume + "/" + e)]
    except HotvcbError:
        return ""
    hint = str(VmNotFound(name, present))
    return hint[hint.index(" (did you mean"):] if " (did you mean" in hint else ""
