"""ghettoVCB.conf and per-VM files -> one frozen Settings.

ghettoVCB `source`d these files as root on the hypervisor; we parse them, so a
`$(...)` in a value stays text.  Every value is checked here, once, so a typo
stops the run before any VM is touched instead of failing half-way through a
night, and the jobs can trust what Settings holds.
"""

import codecs
import os
import posixpath
import re
import stat
from dataclasses import replace
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Set, Tuple

from hotvcb.errors import ConfigError, UsageError
from hotvcb.filemode import FileMode
from hotvcb.settings import DISK_FORMATS, IMAGE_FORMATS, Settings
from . import lazyre, pipetext

# Config and list files are a few hundred bytes; the cap makes `-g some.vmdk`
# fail at once instead of reading gigabytes into memory.
MAX_FILE_BYTES = 4 * 1024 * 1024

_LINE = lazyre.compile(r"(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)\Z", re.S)
_DOUBLE = lazyre.compile(r'"((?:[^"\\]|\\.)*)"(.*)\Z', re.S)
_DOUBLE_ESCAPE = lazyre.compile(r'\\([\\"$`])')
_SINGLE = lazyre.compile(r"'([^']*)'(.*)\Z", re.S)
_AFTER_WORD = lazyre.compile(r"[ \t]+(?:#.*)?\Z", re.S)
_TRAILING_COMMENT = lazyre.compile(r"\s#")
_EXPANDS = r"\$[A-Za-z0-9_{($!?#@*-]|`"  # a name, ${, $(, the special parameters ($$ $! ...), a backquote
_EXPANDS_HERE = lazyre.compile(_EXPANDS)
_EXPANSION = lazyre.compile(r"(?<!\\)(?:%s)" % _EXPANDS)
_CONTROL = lazyre.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_COUNT = lazyre.compile(r"[0-9]{1,9}")


class _Invalid(Exception):
    """A value check failed; the caller knows file, line and key."""

    def __init__(self, allowed: str):
        super().__init__(allowed)
        self.allowed = allowed


# host path -> the name to show for it: files an SSH client sent to a run on the host are named
# as the admin wrote them on the client (commands/onhost.py), never by the run's temp folder
_SHOWN_AS = {}  # type: Dict[str, str]


def show_files_as(names: Dict[str, str]) -> None:
    _SHOWN_AS.update(names)


# host path -> why the SSH client did not send that per-VM file (larger than MAX_FILE_BYTES, not a
# regular file, unreadable): a run on the host fails that VM as a run on the client would, rather
# than back it up with the global settings as if it had no file
_UNSENT = {}  # type: Dict[str, str]


def unsent_files(reasons: Dict[str, str]) -> None:
    _UNSENT.update(reasons)


def shown_as(path: str) -> str:
    """How messages name a file (or a file in a folder) given on the command line."""
    for here, there in _SHOWN_AS.items():
        if path == here or path.startswith(here.rstrip("/") + "/"):
            return there + path[len(here):]
    return path


def read_text(path: str, what: str, pipes: bool = False) -> Tuple[str, List[str]]:
    """Read a small text file an admin wrote, refusing anything that is not one.

    Only regular files are opened, so a FIFO or /dev/zero cannot hang the run;
    with `pipes` (a VM list, `-f <(...)` as ghettoVCB's `cat` read it) a pipe
    too, once and bounded (pipetext.py).
    A line that is not UTF-8 was most likely written as Latin-1 by an old
    editor or locale; decoding that line so (decode_lines) keeps umlauts in
    VM names right, in it and in every other line.
    """
    path, name = shown_as(path), path  # messages name `path`; `name` is opened
    try:
        mode = os.stat(name).st_mode
        if pipes and stat.S_ISFIFO(mode):
            data = pipetext.read(name, path, what, MAX_FILE_BYTES)
        elif not stat.S_ISREG(mode):
            raise UsageError("%s %s is not a regular file" % (what, path))
        else:
            with open(name, "rb") as handle:
                data = handle.read(MAX_FILE_BYTES + 1)
    except (OSError, ValueError) as err:
        reason = getattr(err, "strerror", None) or str(err)
        raise UsageError("cannot read %s %s: %s" % (what, path, reason)) from err
    if len(data) > MAX_FILE_BYTES:
        raise UsageError("%s %s is larger than %d bytes: not a %s" % (what, path, MAX_FILE_BYTES, what))
    text, latin = decode_lines(data)
    if not latin:
        return text, []
    return text, ["%s: not valid UTF-8 on line%s %s, read as Latin-1 (those lines only)" % (
        path, "s" if len(latin) > 1 else "", ", ".join(str(n) for n in latin[:10]) + (", ..." if len(latin) > 10 else ""))]


def decode_lines(data: bytes) -> Tuple[str, List[int]]:
    """The text of a file an admin wrote, each line decoded on its own: UTF-8, else Latin-1 for that
    line only; and the numbers of the Latin-1 lines. A file edited over the years mixes the two
    (`echo '# Müller' >>` under a Latin-1 locale appends one Latin-1 line to a UTF-8 file): decoding
    the whole file as Latin-1 would turn every UTF-8 umlaut of the other lines into two characters,
    and a VM name into one no VM has."""
    lines, latin = [], []
    for number, raw in enumerate(data.split(b"\n"), 1):
        if raw.startswith(codecs.BOM_UTF8):  # not only the first: `cat a b` of two files saved with one each
            raw = raw[len(codecs.BOM_UTF8):]
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            lines.append(raw.decode("latin-1"))
            latin.append(number)
    return "\n".join(lines), latin


def _boolean(text: str) -> bool:
    word = text.lower()
    if word in ("1", "yes", "true"):
        return True
    if word in ("0", "no", "false"):
        return False
    raise _Invalid("0 or 1 (also yes/no, true/false)")


def _count(minimum: int, maximum: int = 999999999, allowed: str = "") -> Callable[[str], int]:
    """Digits only: shell arithmetic would read '010' as octal and '-1' as true."""
    allowed = allowed or "a whole number from %d to %d" % (minimum, maximum)

    def check(text: str) -> int:
        if _COUNT.fullmatch(text) and minimum <= int(text) <= maximum:
            return int(text)
        raise _Invalid(allowed)

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
            raise _Invalid(allowed)
        value = int(m.group(1))
        if m.group(2) == "s":
            if value < 1:
                raise _Invalid(allowed)
            return value / 60.0
        if value < minimum:
            raise _Invalid(allowed)
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
        raise _Invalid(allowed)

    return check


def _absolute_path(text: str) -> str:
    if text.startswith("/"):
        return text
    raise _Invalid("an absolute path such as /vmfs/volumes/<datastore>/backups")


def _mode(text: str) -> str:
    """Octal or symbolic, as ghettoVCB's `chmod -R` took it (`filemode.py`)."""
    if text:
        try:
            FileMode(text)
        except ValueError as err:
            raise _Invalid(str(err)) from None
    return text


_SIZE = lazyre.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?", re.I)


def _size(text: str) -> int:
    """Bytes from `500G`, `1.5T`, `800MiB`; 0 or empty: no budget."""
    if not text.strip():
        return 0
    m = _SIZE.fullmatch(text.strip())
    allowed = "a size such as 500G, 1.5T or 800M, at most 1000000T (0: no budget)"
    if not m or len(m.group(1)) > 20:
        raise _Invalid(allowed)
    value = float(m.group(1)) * 1024 ** "bkmgt".index((m.group(2) or "b").lower())
    if not value < 1e6 * 2 ** 40:
        raise _Invalid(allowed)
    return int(value)


def _names(text: str) -> Tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _vmdk_files(text: str) -> Tuple[str, ...]:
    """'all' beside file names is refused: ghettoVCB would have looked for a disk called 'all'."""
    names = _names(text)
    if not names or tuple(n.lower() for n in names) == ("all",):
        return ("all",)
    if "all" in (n.lower() for n in names):
        raise _Invalid("all, or a comma list of .vmdk file names")
    return names


_DURATION = lazyre.compile(r"(\d{1,9})([sm]?)")
_ROTATION = "a whole number >= 1; ghettoVCB's 0 deleted the backup it had just made, so hotvcb refuses it"

# Each key's field in Settings is the key in lower case.
KEYS = {
    "VM_BACKUP_VOLUME": _absolute_path,
    "DISK_BACKUP_FORMAT": _choice(DISK_FORMATS + IMAGE_FORMATS, {"thick": "zeroedthick"}),
    "VM_BACKUP_ROTATION_COUNT": _count(1, allowed=_ROTATION),
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
    "EMAIL_TO": _names,
    "EMAIL_ERRORS_TO": _names,
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

_NOTICES = {
    ("DISK_BACKUP_FORMAT", "thick"): "thick is the ESX 3.x name that vmkfstools no longer takes; using zeroedthick",
}


def _shown(text: str, secret: bool = False) -> str:
    """Keep messages one readable line, and passwords out of logs that get mailed."""
    if secret:
        return "***"
    return text if len(text) <= 80 else text[:77] + "..."


def _entries(path: str, text: str) -> Iterator[Tuple[int, str, str]]:
    """Yield (line number, KEY, text after '=') for each assignment line."""
    for number, line in enumerate(text.split("\n"), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if not match:
            allowed = "KEY=value with no spaces around '=', a # comment or a blank line"
            raise ConfigError(path, number, "line", _shown(line, "PASSWORD" in line.upper()), allowed)
        yield number, match.group(1), match.group(2)


_EXPANDED = "the shell would have expanded $ or ` here; hotvcb takes it literally"
_ESCAPED = ("a backslash before a character the shell gives no meaning to stands for that character alone, "
            "as in the shell (quote the value with '...' to keep the backslash)")
_SHELL_MEANS = " \t$`\"'\\;&|<>()#*?[~"  # what a backslash rightly escapes for /bin/sh: no warning then


def _unquote(raw: str, command: bool = False) -> Tuple[str, List[str]]:
    """Return what the shell would assign, and what to warn about it.

    ghettoVCB `source`d the file, so a value that is one shell word means what
    /bin/sh made of it: an unquoted backslash escapes the next character (`pa\\$\\$`,
    `nas\\ backups`), nothing is special inside single quotes, and inside double
    quotes a backslash escapes only $ ` " and itself. Anything else (a hook's
    command line with blanks or `;`, which the shell would have run as a
    command; a quote left open) is taken as written, as it always was. So is a
    hook's unquoted `command` line (the *_HOOK keys, hotvcb's own): `sh -c` reads
    it again, so `/opt/pre\\ backup.sh` must keep its backslash.
    We never expand: the warning tells the admin that a `$` in, say, a
    password now means itself, where ghettoVCB's shell replaced it.
    """
    text = raw.lstrip(" \t")
    if command and text != raw and text.startswith("#"):
        return "", []
    word = None if command and not text.startswith(('"', "'")) else _shell_word(raw)
    if word is not None:
        return word
    raw = raw.strip()
    if raw.startswith(('"', "'")):
        quoted = _DOUBLE.match(raw) or _SINGLE.match(raw)
        raise _Invalid("one quoted value, optionally followed by ' # comment'" if quoted
                       else "a value with its closing quote")
    value = _TRAILING_COMMENT.split(raw, 1)[0].strip()
    return value, [_EXPANDED] if _EXPANSION.search(value) else []


def _shell_word(raw: str) -> Optional[Tuple[str, List[str]]]:
    """`_unquote`'s answer if `raw` is one shell word with at most a comment after it; else None.

    Blanks before the word are skipped as before (the shell would have assigned
    nothing and run the word), but a `#` after them starts a comment there too:
    `EMAIL_SERVER=   # none yet` is empty, as in the shell. A backslash before
    a character the shell gives no meaning to is warned about: the shell drops
    it, which a value written for hotvcb alone (`DOMAIN\\user`, `Xy\\!9`) did not expect.
    """
    text = raw.lstrip(" \t")
    if text.startswith("#") and text != raw:
        return "", []
    out = []  # type: List[str]
    notes = set()  # type: Set[str]
    i = 0
    while i < len(text):
        c = text[i]
        if c in " \t":
            return ("".join(out), sorted(notes)) if _AFTER_WORD.match(text, i) else None
        if c in ";&|<>()":  # the shell's operators: a command line, not a word
            return None
        if c == "\\":
            if i + 1 == len(text):  # a line continuation: not one line's word
                return None
            if text[i + 1] not in _SHELL_MEANS:
                notes.add(_ESCAPED)
            out.append(text[i + 1])
            i += 2
        elif c == "'":
            end = text.find("'", i + 1)
            if end < 0:
                return None
            out.append(text[i + 1:end])
            i = end + 1
        elif c == '"':
            quoted = _DOUBLE.match(text, i)
            if not quoted:
                return None
            inner = quoted.group(1)
            if _EXPANDS_HERE.search(_DOUBLE_ESCAPE.sub("", inner)):
                notes.add(_EXPANDED)
            out.append(_DOUBLE_ESCAPE.sub(r"\1", inner))
            i = quoted.end(1) + 1
        else:
            if _EXPANDS_HERE.match(text, i):
                notes.add(_EXPANDED)
            out.append(c)
            i += 1
    return "".join(out), sorted(notes)


def _value(path: str, number: int, key: str, raw: str, warnings: List[str]) -> object:
    secret = "PASSWORD" in key
    shown = _shown(raw.strip(), secret)
    try:
        text, notes = _unquote(raw, key.endswith("_HOOK"))
        shown = _shown(text, secret)
        if _CONTROL.search(text):
            raise _Invalid("printable text without control characters")
        value = getattr(Settings(), key.lower()) if text == "" and key in EMPTY_IS_DEFAULT else KEYS[key](text)
    except _Invalid as bad:
        raise ConfigError(path, number, key, shown, bad.allowed) from None
    notice = _NOTICES.get((key, text.lower()))
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
    guess = difflib.get_close_matches(key.upper(), list(KEYS) + list(ghettokeys.IGNORED), 1)
    hint = " (did you mean %s?)" % guess[0] if guess else ""
    return "%s: unknown key %s ignored%s" % (where, _shown(key), hint)


def _asks_nothing(raw: str) -> bool:
    """An empty value (`VM_SHUTDOWN_ORDER=`, as ghettoVCB.conf ships it and per-VM files copied from it
    keep it) sets nothing, so a run-wide key left so in a per-VM file is no mistake to warn about every night."""
    try:
        return _unquote(raw, False)[0] == ""
    except _Invalid:
        return False


def _read_settings_file(path: str, per_vm: bool) -> Tuple[Dict[str, Tuple[object, str]], List[str]]:
    """Return {field: (value, "path:line")} for the keys the file sets, and warnings.

    As in the shell, a key set twice takes the later value; we warn because
    the earlier line is then a trap for whoever edits it next.
    """
    text, warnings = read_text(path, "per-VM config file" if per_vm else "config file")
    path = shown_as(path)
    values = {}  # type: Dict[str, Tuple[object, str]]
    lines = {}  # type: Dict[str, int]
    for number, key, raw in _entries(path, text):
        where = "%s:%d" % (path, number)
        if key not in KEYS:
            warnings.append(_unknown(where, key))
        elif per_vm and key in RUN_WIDE:
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
    name is used literally as the file name; a VM without a file is normal.
    """
    if not confdir:
        return settings, []
    if not os.path.isdir(confdir):
        raise UsageError("per-VM config directory %s is not a directory" % shown_as(confdir))
    if not _can_be_file_name(vm_name):
        return settings, ["VM %r cannot have a per-VM file in %s; using the global settings" % (vm_name, shown_as(confdir))]
    path = os.path.join(confdir, vm_name)
    if path in _UNSENT:
        raise UsageError(_UNSENT[path])
    if not os.path.lexists(path):
        return settings, []
    values, warnings = _read_settings_file(path, per_vm=True)
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
    return replace(_apply(settings, values), per_vm_file=shown_as(path)), warnings
