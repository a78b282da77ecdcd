"""ghettoVCB-restore files: one VM to restore a line.

    "<backup dir or .gz>;<target datastore path or name>;<format 1-4>[;<new display name>]"
    "repo:<repository path>#<backup id or prefix>;<target>;<format>[;<name>]"
    "repo:<repository path>#latest=<VM>;<target>;<format>[;<name>]"

Format numbers are ghettoVCB's: 1 zeroedthick, 2 2gbsparse, 3 thin,
4 eagerzeroedthick (hotvcb also takes the names). Every `"` of a line is
dropped, as ghettoVCB-restore did (`sed 's/"//g'` on each field), so a field
quoted on its own or a quoted new name reads as it did there, blanks inside the quotes kept; a pair of `'`
around the whole line is stripped too. Blank lines and lines starting with `#`
are skipped, a trailing `/` on either path is tolerated, and so are empty fields after the 4th
(`...;3;New Name;`): ghettoVCB-restore read fields 1-4 only. A `;` inside a path or name has no
escape (ghettoVCB-restore split at every one): such a line is refused naming the command line that
restores it (SEMICOLON). A line that cannot be used becomes a
`BadLine` naming file:line, so the caller can report it and still restore the
other lines; ghettoVCB-restore either stopped at the first bad line or
silently restored something else.
"""

from dataclasses import dataclass
from typing import List, Optional, Union

from .adminfile import read_text, shown_as
from .errors import UsageError
from . import lazyre

FORMATS = {"1": "zeroedthick", "2": "2gbsparse", "3": "thin", "4": "eagerzeroedthick"}
FORMAT_NAMES = tuple(FORMATS.values())
REPO_PREFIX = "repo:"  # field 1 naming a backup in a repository (docs/restore.md)
_CONTROL = lazyre.compile(r"[\x00-\x1f\x7f]")
# a line split where a name holds ';' (too many fields, or a format where a later field is one): ghettoVCB-restore
# split at every ';' (`awk -F ';'`) with no escape, nor quotes that keep one, so no such line can name it
SEMICOLON = (": a ';' inside a path or name splits the line there, and such a line has no way to escape it; "
             "restore that backup with the command line instead: `hotvcb restore PATH --datastore DS --format F "
             "[--name NEW]`, or `hotvcb restore --repo REPO --latest VM --datastore DS ...` (docs/restore.md)")


@dataclass(frozen=True)
class RestoreRequest:
    """One backup to restore, from a restore file's line or the command line."""

    backup: str  # backup folder or .gz, no trailing "/"
    target: str  # datastore path the VM folder is created in, no trailing "/"
    disk_format: str  # one of FORMAT_NAMES
    new_name: Optional[str] = None
    where: str = ""  # "file:line" for messages, "" for the command-line form
    repo: str = ""  # `backup` is then a backup id (or prefix) in this repository, or "" with `latest`
    latest: str = ""  # with `repo`: the newest backup of this VM
    staged: bool = False  # `backup` is a copy this run made on the target datastore (restore --repo)


@dataclass(frozen=True)
class BadLine:
    """A restore file's line that cannot be used, and why."""

    where: str
    message: str

    def __str__(self) -> str:
        return "%s: %s" % (self.where, self.message)


def disk_format(text: str) -> str:
    """'3' or 'thin' -> 'thin'; `thick` is the ESX 3.x name for zeroedthick."""
    value = text.strip().lower()
    if value in FORMATS:
        return FORMATS[value]
    if value == "thick":
        return "zeroedthick"
    if value in FORMAT_NAMES:
        return value
    raise ValueError(
        "disk format %r is not valid (allowed: 1=zeroedthick, 2=2gbsparse, 3=thin, 4=eagerzeroedthick)" % text
    )


def trim_path(path: str) -> str:
    """Drop trailing slashes, but keep "/" itself."""
    stripped = path.rstrip("/")
    return stripped or path


def parse_line(line: str, where: str) -> Union[RestoreRequest, BadLine, None]:
    """One line -> a request, a BadLine, or None for blank/comment lines."""
    text = line.strip(" \t\r\n")
    if not text or text.startswith("#"):
        return None
    if len(text) >= 2 and text[0] == text[-1] == "'":
        text = text[1:-1]
    if _CONTROL.search(text):
        return BadLine(where, "control character in line")
    # ghettoVCB-restore dropped every '"' (`sed 's/"//g'`): around the line or a field they go; one inside
    # a field is part of a name, and dropped it would name another backup (q"a -> qa): refused
    fields = [_unquoted(f) for f in text.split(";")]
    inside = [i for i, f in enumerate(fields, 1) if '"' in f]
    if inside:
        return BadLine(where, 'a " inside field %d: ghettoVCB-restore removed it, which would name another '
                       "folder; restore that backup with `hotvcb restore PATH` instead" % inside[0])
    # ghettoVCB-restore read fields 1-4 (`awk -F ';'`) and never looked past them: empty ones after the
    # 4th (`...;web-restored;`, a script ending every field with ';') mean nothing and are dropped,
    # while real content there is refused (it might be meant, and would be ignored)
    while len(fields) > 4 and not fields[-1]:
        fields.pop()
    if len(fields) not in (3, 4):
        return BadLine(
            where,
            "expected 3 or 4 fields separated by ';' "
            '("<backup dir or .gz>;<datastore path>;<format 1-4>[;<new name>]"), found %d%s'
            % (len(fields), SEMICOLON if len(fields) > 4 else ""),
        )
    backup, target, fmt = fields[0], fields[1], fields[2]
    if not backup:
        return BadLine(where, "the backup folder (field 1) is empty")
    if not target:
        return BadLine(where, "the target datastore path (field 2) is empty")
    try:
        fmt_name = disk_format(fmt)
    except ValueError as err:
        return BadLine(where, str(err) + (SEMICOLON if len(fields) == 4 and _is_format(fields[3]) else ""))
    new_name = fields[3] if len(fields) == 4 and fields[3] else None
    if backup.startswith(REPO_PREFIX):
        path, _sep, which = backup[len(REPO_PREFIX):].rpartition("#")
        latest = which[len("latest="):] if which.startswith("latest=") else ""
        if not path or not which or which == "latest=":
            return BadLine(where, "a repository backup is %s<repository>#<backup id> or %s<repository>#latest=<VM>"
                           % (REPO_PREFIX, REPO_PREFIX))
        if not latest and "#latest=" in path:  # `latest=Web #2`: split inside the VM's name, not after the path
            return BadLine(where, "the VM name after latest= holds a '#', which such a line cannot carry (the "
                           "backup follows the last '#'): name the backup by its id (hotvcb list --repo %s)"
                           % path[:path.rindex("#latest=")])
        return RestoreRequest("" if latest else which, trim_path(datastore_path(target)), fmt_name, new_name, where,
                              repo=trim_path(path), latest=latest)
    return RestoreRequest(trim_path(backup), trim_path(datastore_path(target)), fmt_name, new_name, where)


def _is_format(text: str) -> bool:
    try:
        disk_format(text)
    except ValueError:
        return False
    return True


def _unquoted(field: str) -> str:
    """A field without the blanks around it and its `"`s, keeping the blanks the quotes hold: VM `trail `
    (a trailing blank from a copy-paste) is `"repo:...#latest=trail "`, as ghettoVCB-restore, which cut
    no blank, read it. A blank outside the quotes, or in an unquoted field, is layout and goes."""
    field = field.strip(" \t")
    start, end = field.startswith('"'), len(field) > 1 and field.endswith('"')
    inner = field[1 if start else 0: len(field) - 1 if end else len(field)]
    inner = inner if start else inner.lstrip(" \t")
    return inner if end else inner.rstrip(" \t")


def datastore_path(target: str) -> str:
    """A datastore name (`datastore1`, `datastore1/restored`) means /vmfs/volumes/<it>, as --datastore does."""
    return target if target.startswith("/") else "/vmfs/volumes/" + target


def read_restore_file(path: str) -> List[Union[RestoreRequest, BadLine]]:
    """Every usable or unusable line of a restore file, in file order.

    Lines are named by the file as the admin gave it (`adminfile.shown_as`): run on the host over SSH, the
    file read is the client's copy in the run's temp folder, a path on another machine, gone when the
    command ends."""
    text, _warnings = read_text(path, "restore file")
    shown = shown_as(path)
    out = []  # type: List[Union[RestoreRequest, BadLine]]
    for number, line in enumerate(text.split("\n"), 1):
        item = parse_line(line, "%s:%d" % (shown, number))
        if item is not None:
            out.append(item)
    if not out:
        raise UsageError("restore file %s has no lines to restore" % shown)
    return out
