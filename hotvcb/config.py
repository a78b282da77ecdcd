"""ghettoVCB.conf and per-VM files -> one frozen Settings.

ghettoVCB `source`d these files as root on the hypervisor; we parse them, so a
`$(...)` in a value stays text.  Every value is checked here, once, so a typo
stops the run before any VM is touched instead of failing half-way through a
night, and the jobs can trust what Settings holds.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import replace
from typing import Any, Dict, List, Optional, Tuple

from hotvcb.errors import ConfigError, UsageError
from hotvcb.model import hostd_name
from hotvcb.settings import Settings
from . import adminfile, confkeys, confsyntax, lazyre

_CONTROL = lazyre.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


# host path -> why the SSH client did not send that per-VM file (larger than adminfile.MAX_FILE_BYTES, not a
# regular file, unreadable): a run on the host fails that VM as a run on the client would, rather
# than back it up with the global settings as if it had no file
_UNSENT = {}  # type: Dict[str, str]


def unsent_files(reasons: Dict[str, str]) -> None:
    _UNSENT.update(reasons)


def _value(path: str, number: int, key: str, raw: str, warnings: List[str]) -> object:
    secret = "PASSWORD" in key
    shown = confsyntax.shown(raw.strip(), secret)
    try:
        text, notes = confsyntax.unquote(raw, key.endswith("_HOOK"), secret)
        shown = confsyntax.shown(text, secret)
        if _CONTROL.search(text):
            raise confkeys.Invalid("printable text without control characters")
        value = getattr(Settings(), key.lower()) if text == "" and key in confkeys.EMPTY_IS_DEFAULT \
            else confkeys.KEYS[key](text)
    except confkeys.Invalid as bad:
        raise ConfigError(path, number, key, shown, bad.allowed) from None
    notice = confkeys.NOTICES.get((key, text.lower()))
    warnings.extend("%s:%d: %s: %s" % (path, number, key, note) for note in notes + ([notice] if notice else []))
    return value


def _unknown(where: str, key: str) -> str:
    """A key hotvcb does not take: ghettoVCB's own named as such (ghettokeys.py), never steered to a
    look-alike of hotvcb's; a typo gets the close key, of hotvcb's or of ghettoVCB's."""
    import difflib  # only a config with a typo pays for it
    from . import ghettokeys

    known = ghettokeys.ignored(where, key)
    if known:
        return known
    guess = difflib.get_close_matches(key.upper(), list(confkeys.KEYS) + list(ghettokeys.IGNORED), 1)
    hint = " (did you mean %s?)" % guess[0] if guess else ""
    return "%s: unknown key %s ignored%s" % (where, confsyntax.shown(key), hint)


def _asks_nothing(raw: str) -> bool:
    """An empty value (`VM_SHUTDOWN_ORDER=`, as ghettoVCB.conf ships it and per-VM files copied from it
    keep it) sets nothing, so a run-wide key left so in a per-VM file is no mistake to warn about every night."""
    try:
        return confsyntax.unquote(raw, False)[0] == ""
    except confkeys.Invalid:
        return False


def _asks_dry_run(raw: str) -> bool:
    """A LOG_LEVEL value saying dryrun: in a per-VM file it is kept (for `dry_run_refused`), never dropped with
    a warning, for ghettoVCB made that VM's turn a dry run and a real backup in its place may shut the VM down."""
    try:
        return confsyntax.unquote(raw, False)[0].strip().lower() == "dryrun"
    except confkeys.Invalid:
        return False


def dry_run_refused(vm_settings: Settings, dry_run: bool) -> str:
    """Why a VM's turn in a real run (`dry_run` False) is refused before anything is done to it: its per-VM
    file says LOG_LEVEL=dryrun. ghettoVCB.sh sourced that file in its VM loop and dry-ran the VM; a run here
    is dry or real as a whole, and a file asking for a dry run must never turn into a VM shut down and copied
    (POWER_VM_DOWN_BEFORE_BACKUP beside it). "" where the VM may go ahead."""
    if dry_run or vm_settings.log_level != "dryrun":
        return ""
    return ("%s: LOG_LEVEL=dryrun asks for a dry run of this VM, and hotvcb dry-runs whole runs only: not backed "
            "up, nothing done to it (try it with `-d dryrun`; remove the line for real backups)"
            % vm_settings.where("log_level"))


def _read_settings_file(path: str, per_vm: bool) -> Tuple[Dict[str, Tuple[object, str]], List[str]]:
    """Return {field: (value, "path:line")} for the keys the file sets, and warnings.

    As in the shell, a key set twice takes the later value; we warn because
    the earlier line is then a trap for whoever edits it next.
    """
    text, warnings = adminfile.read_text(path, "per-VM config file" if per_vm else "config file")
    path = adminfile.shown_as(path)
    values = {}  # type: Dict[str, Tuple[object, str]]
    lines = {}  # type: Dict[str, int]
    for number, key, raw in confsyntax.entries(path, text):
        where = "%s:%d" % (path, number)
        if key not in confkeys.KEYS:
            warnings.append(_unknown(where, key))
        elif per_vm and key in confkeys.RUN_WIDE and not (key == "LOG_LEVEL" and _asks_dry_run(raw)):
            if _asks_nothing(raw):
                continue
            warnings.append("%s: %s applies to the whole run, not one VM; set it in the global config" % (where, key))
        else:
            if key in lines:
                warnings.append("%s: %s was already set on line %d; this line wins" % (where, key, lines[key]))
            lines[key] = number
            values[key.lower()] = (_value(path, number, key, raw, warnings), where)
    return values, warnings


def _apply(base: Settings, values: Dict[str, Tuple[object, str]]) -> Settings:
    origin = dict(base.origin)
    origin.update((name, where) for name, (_, where) in values.items())
    changes = {name: value for name, (value, _) in values.items()}  # type: Dict[str, Any]
    return replace(base, origin=tuple(origin.items()), **changes)


def by_option(settings: Settings, option: str, **changes: Any) -> Settings:
    """`changes` made by the command line's `option` (`--repo`): their origin is the option, and a per-VM
    file does not override them (for_vm), as the option's help promises of the key."""
    origin = dict(settings.origin)
    origin.update((name, option) for name in changes)
    return replace(settings, origin=tuple(origin.items()), **changes)


def run_level(option: str, settings: Settings) -> str:
    """The run's log level from `-d` (`option`, "info" unless given) and the config's LOG_LEVEL. ghettoVCB
    sourced -g after reading its options, so the file's LOG_LEVEL was the run's: a test config saying
    `LOG_LEVEL=dryrun` made every run with it a dry run, and hotvcb's "ignored" backed up for real. Here
    either one asking for a dry run makes it one (a `-d dryrun` is never turned into a real run by a file
    saying info, as ghettoVCB's was), else either asking for debug gives debug lines."""
    levels = (option, settings.log_level)
    return "dryrun" if "dryrun" in levels else "debug" if "debug" in levels else "info"


def load_settings(global_path: Optional[str], base: Settings = Settings()) -> Tuple[Settings, List[str]]:
    """Settings for the run: `base` overlaid with the global file (-g), if any.

    `origin` records "path:line" by Settings field name (the key in lower case).
    """
    if global_path is None:
        return base, []
    values, warnings = _read_settings_file(global_path, per_vm=False)
    return _nfs_target(_apply(base, values)), warnings


NFS_NEEDS = ("NFS_SERVER", "NFS_MOUNT", "NFS_LOCAL_NAME", "NFS_VM_BACKUP_DIR")


def _nfs_target(s: Settings) -> Settings:
    """With ENABLE_NON_PERSISTENT_NFS=1 the backup volume is /vmfs/volumes/<NFS_LOCAL_NAME>/<NFS_VM_BACKUP_DIR>
    whatever VM_BACKUP_VOLUME says, as in ghettoVCB (whose template keeps that line in every file). It is
    made here, once, so that `list`, `status`, `verify`, `restore` and `cleanup` look where `backup` wrote.
    ghettoVCB exits before its first VM when NFS_LOCAL_NAME or NFS_VM_BACKUP_DIR is empty (never the share's
    root); a name with `..` or `/` in it would leave the share."""
    if not s.enable_non_persistent_nfs:
        return s
    where = s.where("enable_non_persistent_nfs")
    missing = [key for key in NFS_NEEDS if not getattr(s, key.lower())]
    if missing:
        raise UsageError("%s: ENABLE_NON_PERSISTENT_NFS=1 needs %s" % (where, ", ".join(missing)))
    folder = "/".join(p for p in s.nfs_vm_backup_dir.split("/") if p)  # `mkdir -p a//b` made a/b, as ghettoVCB's did
    volume = "/vmfs/volumes/%s/%s" % (s.nfs_local_name, folder)
    if "/" in s.nfs_local_name or posixpath.normpath(volume) != volume:
        raise UsageError("%s: NFS_LOCAL_NAME=%r with NFS_VM_BACKUP_DIR=%r is no folder on the share (a datastore "
                         "name, then a folder path without . or ..)" % (where, s.nfs_local_name, s.nfs_vm_backup_dir))
    origin = dict(s.origin, vm_backup_volume=s.where("nfs_vm_backup_dir"))
    return replace(s, vm_backup_volume=volume, origin=tuple(origin.items()))


def _can_be_file_name(vm_name: str) -> bool:
    return vm_name not in ("", ".", "..") and "/" not in vm_name and "\0" not in vm_name


def for_vm(settings: Settings, confdir: Optional[str], vm_name: str) -> Tuple[Settings, List[str]]:
    """Settings for one VM: the run's settings overlaid with `<confdir>/<vm_name>`.

    Always starts from the run's settings, never from the previous VM's, so
    one VM's overrides cannot leak into the next (a ghettoVCB pitfall).  The
    name is used literally as the file name, or as getallvms shows it (model.hostd_name: `SAP%2fDB` for
    `SAP/DB`, `CORP%5cDC1` for `CORP\\DC1`), the name ghettoVCB.sh sourced `<confdir>/<name>` by; a VM
    without a file is normal.
    """
    if not confdir:
        return settings, []
    if not os.path.isdir(confdir):
        raise UsageError("per-VM config directory %s is not a directory" % adminfile.shown_as(confdir))
    names = [n for n in dict.fromkeys((vm_name, hostd_name(vm_name))) if _can_be_file_name(n)]
    if not names:
        return settings, ["VM %r cannot have a per-VM file in %s; using the global settings" % (vm_name, adminfile.shown_as(confdir))]
    found = [p for p in (os.path.join(confdir, n) for n in names) if p in _UNSENT or os.path.lexists(p)]
    if not found:
        return settings, []
    path = found[0]
    if path in _UNSENT:
        raise UsageError(_UNSENT[path])
    values, warnings = _read_settings_file(path, per_vm=True)
    warnings[:0] = ["%s ignored: %s is %s's per-VM file (its name as getallvms shows it is read only where there "
                    "is no file of its own name)" % (adminfile.shown_as(other), adminfile.shown_as(path), vm_name)
                    for other in found[1:]]
    for name in sorted(n for n in values if settings.where(n).startswith("--")):  # set by the command line
        warnings.append("%s: %s ignored: %s on the command line overrides it" % (
            values.pop(name)[1], name.upper(), settings.where(name)))
    if settings.enable_non_persistent_nfs and "vm_backup_volume" in values:
        warnings.append("%s: VM_BACKUP_VOLUME ignored: ENABLE_NON_PERSISTENT_NFS=1 puts every VM in %s, as "
                        "ghettoVCB did" % (values.pop("vm_backup_volume")[1], settings.vm_backup_volume))
    repository = values["vm_backup_repository"][0] if "vm_backup_repository" in values else \
        settings.vm_backup_repository
    if repository and "vm_backup_volume" in values:  # the VM goes into the repository, not to the folder named
        warnings.append("%s: VM_BACKUP_VOLUME ignored: the VM is backed up into the repository %s "
                        "(VM_BACKUP_REPOSITORY; set it empty in this file for folder backups)" % (
                            values.pop("vm_backup_volume")[1], repository))
    return replace(_apply(settings, values), per_vm_file=adminfile.shown_as(path)), warnings
