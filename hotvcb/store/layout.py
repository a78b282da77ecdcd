"""The ghettoVCB folder layout, which existing users' tooling depends on.

    <VOLUME>/<VM>/<VM>-YYYY-MM-DD_HH-MM-SS/     a backup (STATUS.ok|warn|error)
    <VOLUME>/<VM>/<VM>-YYYY-MM-DD_HH-MM-SS.gz   a compressed backup (tar+gzip)
    <VOLUME>/<VM>/<VM>-YYYY-MM-DD_HH-MM-SS-partial/    ours, being written
    <VOLUME>/<VM>/<VM>-YYYY-MM-DD_HH-MM-SS-deleting/   being removed by rotation

ghettoVCB.sh names a backup `<VM>-$(date +%F_%k-%M-%S)` where VM_BACKUP_DIR_NAMING_CONVENTION is
empty (its fallback): `%k` pads the hour with a space, `web-2026-11-30_ 3-00-02`. Such a name is read
as the same time as `_03-00-02`; hotvcb itself writes `%H`.

Write order for a backup: files into the -partial folder, then hotvcb.json,
then STATUS.*, then the rename to the final name. Deletion runs the other
way: the rename to -deleting first (out of the good namespace in one atomic
step), then the removal, which the next run finishes if this one is killed.
Whether a final-named backup is good is health.py's answer, nobody else's; a
-partial folder belongs to the run its owner file names (seal.py) and is
removed only once that run is provably gone (jobs/leftovers.py).
A name of this shape whose time no calendar has (month 13, 30 February: a
copy named by hand) is no backup of any kind: nothing counts, rotates or
removes it, and the callers a user reads (list, status, verify, rotation's
log) name it.

Backups are in the order their names say (ghettoVCB's), except where names fall in the hour that comes
twice the night summer time ends (`repeated_hour`): a backup made at 01:59 before the clocks went back is
named later than one made at 01:10 after, so those are put in the order their files were written
(`made_order`). Rotation, restore --latest and status all take this one order from `list_backups`.
"""

from __future__ import annotations

import itertools
import os
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Callable, Dict, List, Optional

from ..errors import HostError, HotvcbError, NotABackup
from ..model import hostd_name
from ..namefit import NAME_MAX
from ..shell import FileReader, Shell
from .. import lazyre
from . import owner

TS_FORMAT = "%Y-%m-%d_%H-%M-%S"
PARTIAL = "-partial"
DELETING = "-deleting"
STATUS_FILES = ("STATUS.ok", "STATUS.warn", "STATUS.error")
STATUS_MAX = 4096  # a STATUS file holds one line of why; more is not shown
# a backup name's time and state; the hour also space-padded, as ghettoVCB.sh's fallback `date +%F_%k-%M-%S` writes it
_STAMP = r"(\d{4}-\d{2}-\d{2}_(?:\d| )\d-\d{2}-\d{2})(-partial|-deleting|\.gz)?$"
_TS = lazyre.compile("^" + _STAMP)  # after "<the VM's folder name>-"
_NAMED = lazyre.compile("^(.+)-" + _STAMP)  # any VM's


@dataclass
class BackupSet:
    """A backup as its folder name and STATUS file show it, before health.py judges it."""

    vm: str
    path: str
    when: datetime
    status: str  # the STATUS file's word: ok | warn | error | incomplete | partial | deleting
    compressed: bool = False

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


def folder_name(vm_name: str) -> str:
    """A display name as a single path component ('/' cannot be one), one to one: `%` is written `%25`
    and `/` `%2f`, hostd's own escapes, so the folder is the one ghettoVCB.sh made (it names it after
    getallvms' name, `a%2fb` for `a/b`, `a%25b` for `a%b`), and VMs `a/b` and `a%2fb` (`a%252fb`) never
    share one. A name without `%` or `/` is its own folder, as hotvcb always wrote it. Folders older
    writers named otherwise (ghettoVCB's `%5c` for a backslash, older hotvcb's unescaped `a%b`) are read
    too: older_folders."""
    return vm_name.replace("%", "%25").replace("/", "%2f")


def datastore_folder(vm_name: str) -> str:
    """A restored VM's folder (and .vmx) name on its datastore: its display name, a '/' written `%2f`
    (a restore refuses such a name, unusable_name, so this is the name itself). `%` stays as it is: unlike
    backups of many VMs in one volume (folder_name), a restore never shares a folder, it refuses one that
    exists, and restored folders have always been named so."""
    return vm_name.replace("/", "%2f")


_ESCAPE = lazyre.compile("%(25|2f)")
_UNESCAPED = lazyre.compile("%(?!25|2f)")
_HOSTD_ESCAPE = lazyre.compile("%(25|2f|5c)")  # getallvms' escapes of %, / and \ (hosts/vimcmd.unescape_name)
_HOSTD_UNESCAPED = lazyre.compile("%(?!25|2f|5c)")


def vm_of_folder(folder: str) -> Optional[str]:
    """The VM name whose folder_name is `folder`, or None where no name's is (a `%` that starts neither
    `%25` nor `%2f`): its exact inverse, shared by every reader of a volume (list, verify, from_path)."""
    if _UNESCAPED.search(folder):
        return None
    return _ESCAPE.sub(lambda m: "%" if m.group(1) == "25" else "/", folder)


def older_vm(folder: str) -> Optional[str]:
    """The VM whose backups without a manifest (ghettoVCB's) are in `folder`, a folder no name's folder_name is
    (vm_of_folder None), or None: ghettoVCB.sh named a VM's folder after getallvms' name, where hostd also writes
    a backslash as `%5c` (`a%5cb` for a VM `a<backslash>b`), read back where every `%` starts one of its escapes;
    otherwise the name as it stands (hotvcb before `%` was escaped in every name kept `a%b`'s in `a%b`). A
    folder other VMs' older backups may be in too is folder_vms's."""
    if vm_of_folder(folder) is not None:
        return None
    if _HOSTD_UNESCAPED.search(folder):
        return folder
    return _HOSTD_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), folder)


def name_owner(folder: str) -> Optional[str]:
    """The VM a backup without a manifest in `folder` is of: the one its name reads as (ghettoVCB's name it)."""
    return vm_of_folder(folder) or older_vm(folder)


def folder_vms(folder: str) -> List[str]:
    """Every VM whose backups may be in `folder`: name_owner's, and where it holds a `%`, the VM named as the
    folder (hotvcb before `%` was escaped kept a VM `a%25b`'s in `a%25b`, today's folder of `a%b`, and a VM
    `a%5cb`'s in ghettoVCB's folder of `a<backslash>b`). Where that is more than one, each backup's manifest
    says whose it is (owner.py; list_backups)."""
    return [v for v in dict.fromkeys((name_owner(folder), folder if "%" in folder else None)) if v is not None]


def older_folders(vm_name: str) -> List[str]:
    """The folders besides folder_name's that may hold a VM's backups older writers made (folder_vms): its
    backups there are listed, counted, rotated and restored as its own; new backups go to folder_name's."""
    hostd = hostd_name(vm_name)
    return [f for f in dict.fromkeys((hostd, vm_name)) if f != folder_name(vm_name) and "/" not in f
            and vm_name in folder_vms(f)]


# C0 and C1 control characters, DEL and Unicode's line and paragraph separators: no display name or
# folder name of a VM holds one sanely (a line break ends a .vmx line, a getallvms row, a log line)
_CONTROL = lazyre.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def unusable_name(name: str, own: bool = False) -> Optional[str]:
    """Why a name for a restored VM cannot be its display and folder name (one line), or None; `own`:
    the backup's own name (no new one given), which the line then asks for. A '/' would be
    datastore_folder's escape in the folder but the name itself in vSphere and libvirt; NUL ends the name
    in C; "", "." and ".." are no folder of their own; a control character or line separator
    (control_character)."""
    why = backup_unnameable(name) or ("it holds '/'" if "/" in name else None) or _unrestorable_length(name)
    if why is None:
        return None
    return "%r cannot be the restored VM's name: %s%s" % (
        name, why, " (the backup's own name): restore it under a new name (--name, or a restore file's 4th field)"
        if own else "")


def _unrestorable_length(name: str) -> Optional[str]:
    """Why a restored VM's folder cannot be made for the name's length, or None: the restore writes it as
    `<VM>.hotvcb-restoring` first, and a name past NAME_MAX bytes fails there ("File name too long") after
    every check, a dry run's too, had passed."""
    size = len(folder_name(name).encode("utf-8", "replace"))
    if size + len(RESTORING) <= NAME_MAX:
        return None
    return "its name is %d bytes in UTF-8 as its folder writes it, and the restore writes the folder as `<VM>%s` " \
           "first: %d bytes, past the %d a folder name may have (a name of at most %d bytes fits)" % (
               size, RESTORING, size + len(RESTORING), NAME_MAX, NAME_MAX - len(RESTORING))


def backup_unnameable(name: str) -> Optional[str]:
    """Why no backup can be named after a VM's display name, or None: a control character
    (control_character), or only dots and spaces: "." and ".." name the backup volume itself and the
    folder above it, not a folder of the VM's own (its backups and their rotation would land among the
    other VMs' folders, or outside the volume, where `list` shows none), and a restore refuses every
    such name (unusable_name). A '/' is no reason: folder_name escapes it."""
    return control_character(name) or ("its name is empty" if not name else "it is only dots and spaces"
                                       if not name.strip(" .") else None)


RESTORING = ".hotvcb-restoring"  # a restore's VM folder until complete (jobs/restore_scratch.py)
_LONGEST = "-" + "2026-01-01_00-00-00" + max((PARTIAL, DELETING, ".gz"), key=len)  # the longest name a backup takes


def too_long(name: str) -> Optional[str]:
    """Why no backup of a VM can be named after its display name for its length, or None: the longest folder
    hotvcb makes for a backup of it, `<folder_name>-<time>-deleting`, would pass NAME_MAX bytes. Said before
    anything is written: the run failed at `cannot create …-partial: File name too long` after its snapshot, for
    a name whose final folder would have fitted."""
    size = len(folder_name(name).encode("utf-8", "replace"))
    if size + len(_LONGEST) <= NAME_MAX:
        return None
    own = len(name.encode("utf-8", "replace"))
    return "its name is %d bytes in UTF-8%s, and its backups' folders are named after it: the longest, `<VM>%s`, " \
        "would be %d bytes, past the %d a folder name may have (a name of at most %d bytes fits)" % (
            own, " (%d as its folder writes it)" % size if size != own else "",
            _LONGEST.replace("2026-01-01_00-00-00", "<time>"), size + len(_LONGEST), NAME_MAX, NAME_MAX - len(_LONGEST))


def control_character(name: str) -> Optional[str]:
    """Why a VM name holding a control character or line separator is none (a NUL, a line break, an
    escape sequence), or None: a line break would end the .vmx line of its displayName, a getallvms
    row and a log line, and ESXi's folders are named after display names."""
    m = _CONTROL.search(name)
    if m is None:
        return None
    return "it holds a NUL character" if m.group() == "\0" else \
        "it holds a line break or other control character (%r)" % m.group()


def vm_root(volume: str, vm_name: str) -> str:
    return volume.rstrip("/") + "/" + folder_name(vm_name)


def vm_roots(volume: str, vm_name: str) -> List[str]:
    """Every folder a VM's backups may be in: today's (vm_root) and those older writers named (older_folders)."""
    return [vm_root(volume, vm_name)] + [volume.rstrip("/") + "/" + f for f in older_folders(vm_name)]


def vm_names(shell: Shell, volume: str) -> List[str]:
    """VM names that have a folder under the volume (vm_of_folder: a folder no name's folder_name is, is
    none), whether or not a host still has such a VM: `list` shows them all, `cleanup` looks in each for a dead
    run's leftovers. No name is set aside for looking like hotvcb's own: a VM may be called `.web` or
    `.hotvcb-x`, and its backups are in `<volume>/.hotvcb-x/`. What hotvcb keeps there itself is files (a
    folder's clock probe, a restore's records) or a folder holding no backup named after it (a restore's
    `.hotvcb-extract-…` scratch, were the volume its target), which shows none."""
    if not shell.isdir(volume):
        return []
    out = []  # type: List[str]
    for entry in shell.listdir(volume):
        names = folder_vms(entry)  # a VM's folder, or one older writers named (for some, several VMs')
        if names and shell.isdir(volume + "/" + entry):
            out += [n for n in names if n not in out]
    return out


def backup_name(vm_name: str, when: datetime) -> str:
    return "%s-%s" % (folder_name(vm_name), when.strftime(TS_FORMAT))


def named(entry: str) -> Optional[re.Match]:
    """`entry` as the name of any VM's backup: (VM folder name, time, state suffix), or None."""
    return _NAMED.match(entry)


def parse_entry(vm_name: str, entry: str, folder: Optional[str] = None) -> Optional[re.Match]:
    """Match `entry` as a backup of exactly this VM (literal prefix, no regex); `folder`: the VM's folder it
    is in, where not folder_name's (older_folders)."""
    prefix = (folder or folder_name(vm_name)) + "-"
    if not entry.startswith(prefix):
        return None
    return _TS.match(entry[len(prefix) :])


def stamp_time(stamp: str) -> datetime:
    """A backup's or our snapshot's name's TS_FORMAT time: the fields as strptime would read them (a month
    13 is a ValueError too), without its import (_strptime, calendar: ~2 ms of every run's start-up). An
    hour padded with a space (ghettoVCB's `%k`: `_ 3-00-02`) is the same time as `_03-00-02`."""
    if not stamp.isascii():  # int() takes any script's digits; strptime refused them (hotvcb and date(1) write ASCII)
        raise ValueError("time data %r: digits other than 0-9" % stamp)
    year, month, day, hour, minute, second = (int(n) for n in re.split("[-_]", stamp.replace("_ ", "_0")))
    return datetime(year, month, day, hour, minute, second)


def _no_time(path: str, stamp: str, err: ValueError) -> str:
    return "%s: named like a backup, but %s is no date and time (%s); not taken for one" % (path, stamp, err)


def list_backups(shell: Shell, volume: str, vm_name: str,
                 odd: Optional[Callable[[str], None]] = None) -> List[BackupSet]:
    """Every backup of one VM, oldest first, in its folder and those older writers named (older_folders). An
    entry named like one with a time no calendar has is left out (see above), and said to `odd` as one line
    naming it, by a caller a user reads."""
    found = []  # type: List[BackupSet]
    for folder in [folder_name(vm_name)] + older_folders(vm_name):
        backups = _backups_in(shell, volume.rstrip("/") + "/" + folder, vm_name, folder, odd)
        found += backups if len(folder_vms(folder)) == 1 else [b for b in backups if _owner(shell, b, folder) == vm_name]
    return made_order(shell, sorted(found, key=lambda b: (b.when, b.name)))


def _owner(shell: Shell, b: BackupSet, folder: str) -> Optional[str]:
    """The VM a backup in a folder several VMs' may share (folder_vms) is of: its manifest's, else its folder
    name's (ghettoVCB's, which keeps no manifest). A backup whose manifest names another VM is never this one's:
    not listed, counted, removed by its rotation, nor restored by its --latest; nor is one whose manifest does
    not read (owner.UNKNOWN), which a guess by the folder's name could have rotated away."""
    vm = owner.manifest_vm(shell, b.path, b.compressed)
    return name_owner(folder) if vm is None else vm


def _backups_in(shell: Shell, root: str, vm_name: str, folder: str,
                odd: Optional[Callable[[str], None]]) -> List[BackupSet]:
    found = []  # type: List[BackupSet]
    for entry in _entries(shell, root):
        m = parse_entry(vm_name, entry, folder)
        if not m:
            continue
        path = root + "/" + entry
        try:
            when = stamp_time(m.group(1))
        except ValueError as err:
            if odd is not None:
                odd(_no_time(path, m.group(1), err) + ": never counted, rotated or removed")
            continue
        if m.group(2) == PARTIAL:
            found.append(BackupSet(vm_name, path, when, "partial"))
        elif m.group(2) == DELETING:
            found.append(BackupSet(vm_name, path, when, "deleting"))
        elif m.group(2) == ".gz":
            # the STATUS file is inside the archive: health.judge reads it
            found.append(BackupSet(vm_name, path, when, "archived", compressed=True))
        elif shell.isdir(path):
            found.append(BackupSet(vm_name, path, when, folder_status(shell, path)))
    return found



def _entries(shell: Shell, root: str) -> List[str]:
    """What a VM's folder holds; nothing where it is not there, also where it went away between the look and
    the listing (a VM decommissioned: `rm -rf` of its folder, the share unmounted): one removed a moment earlier
    held no backups either, and a listing's HostError stopped `verify --all` and `list` for every VM. A folder
    there that cannot be listed is the error it is."""
    if not shell.isdir(root):
        return []
    try:
        return shell.listdir(root)
    except HostError:
        if not gone(shell, root):
            raise
        return []


def gone(shell: Shell, path: str) -> bool:
    """Whether nothing is at `path`, proven by a look now (Shell.absent: its lstat failed with ENOENT or ENOTDIR);
    False where the host cannot tell. What a read that failed is taken for a backup or a VM's folder gone on
    (health.went_away, rotation._removed_meanwhile, _entries): `isdir` and `exists` say False of an NFS share
    that stopped answering for a moment too, and a backup read as damaged then was passed over as "gone"."""
    try:
        return shell.absent(path)
    except HostError:
        return False


def unpacked_pairs(backups: List[BackupSet]) -> Dict[str, str]:
    """{a .gz's path: the folder of its name beside it} among `backups`: ghettoVCB-restore.sh unpacks a .gz it
    restores beside itself (`tar -xzf X.gz -C <its folder>`) and leaves the folder (or an admin left a symlink
    to the unpacked copy moved elsewhere). The two are one backup, good if either is: rotation counts it once
    (rotation.one_per_time), list shows it once, verify checks it once."""
    folders = {b.path for b in backups if not b.compressed}
    return {b.path: b.path[: -len(".gz")] for b in backups if b.compressed and b.path[: -len(".gz")] in folders}


def repeated_hour(when: datetime) -> bool:
    """Whether the wall time `when` came twice in the zone hotvcb runs in (the host's, where it runs on the
    host; an ESXi host keeps UTC, which repeats no hour): the hour summer time ends. A name in it does not say
    which of the two it was."""
    try:
        return when.replace(fold=0).timestamp() < when.replace(fold=1).timestamp()
    except (OverflowError, OSError, ValueError):  # a year the platform's clock functions do not reach
        return False


def sealed_age(shell: Shell, b: BackupSet) -> Optional[float]:
    """Seconds since the backup's files were last written, by the host's clock whatever its zone: its STATUS
    file's age (written last), a .gz's or a folder without one its own; None where that cannot be read."""
    paths = [b.path] if b.compressed else [b.path + "/" + n for n in STATUS_FILES] + [b.path]
    try:
        ages = (shell.age(p) for p in paths)
        return next((a for a in ages if a is not None), None)
    except HotvcbError:
        return None


def made_order(shell: Shell, backups: List[BackupSet]) -> List[BackupSet]:
    """`backups` (in name order) in the order they were made: each run of names in a repeated hour ordered by
    their files' ages (sealed_age), the rest by name as ghettoVCB orders them. By name, rotation in that hour
    removed the second-newest backup, restore --latest took the older one, and status called a fresh backup
    dated an hour ahead. Where a file's age cannot be read, the run keeps its name order."""
    out = []  # type: List[BackupSet]
    for repeated, group in itertools.groupby(backups, key=lambda b: repeated_hour(b.when)):
        run = list(group)
        if repeated and len(run) > 1:
            ages = {r.path: sealed_age(shell, r) for r in run}
            known = {path: age for path, age in ages.items() if age is not None}
            if len(known) == len(run):
                run.sort(key=lambda r: -known[r.path])  # the oldest files first; a tie keeps the name order
        out.extend(run)
    return out


def from_path(shell: Shell, path: str) -> Optional[BackupSet]:
    """The BackupSet a backup path names, or None where the path is not laid out as one:
    `<volume>/<VM folder>/<VM folder>-<TS>[.gz]` (a folder `restore --kvm` wrote for a VM the admin named
    `app-2026-13-01_00-00-00` is a plain folder). NotABackup for a path laid out so with a time no calendar
    has: None would have restore and verify --boot take it for a plain folder, good on a STATUS.ok alone,
    under a name that says backup. A relative path is this machine's working folder's (over SSH it names
    nothing we can place: None). Any path is read normalised (`//`, `/.`, `x/..` folded, no symlink
    resolved): `VOL//web/web-…-partial` or `…-partial/.` was no backup by its last component, and judged as
    a copy by what it holds, OK where `list` calls it partial."""
    if not path.startswith("/"):
        if shell.remote:
            return None
        path = os.path.abspath(path)
    path = "/" + os.path.normpath(path).lstrip("/")  # normpath keeps a leading "//" (POSIX's own meaning)
    root, _, entry = path.rpartition("/")
    m = named(entry)
    volume, _, vm_folder = root.rpartition("/")
    if not m or vm_folder != m.group(1):
        return None
    try:
        stamp_time(m.group(2))
    except ValueError as err:
        raise NotABackup(_no_time(path, m.group(2), err)) from None
    for vm in folder_vms(m.group(1)):
        for b in list_backups(shell, volume or "/", vm) if shell.isdir(root) else []:
            if b.path == path:
                return b
    return None


def not_there(shell: Shell, path: str) -> str:
    """Why a path given as a backup (a folder or a .gz file) names none: missing, or something else that
    exists (a restore file, a tarball not named .gz), or not yet (its `-partial` folder is there: a backup
    running, or a dead run's). Told apart: an admin told that a file they can see "does not exist" stops
    believing what hotvcb says."""
    if shell.exists(path):
        return "%s is not a backup: a backup is a folder or a .gz file" % path
    if named(path.rstrip("/").rsplit("/", 1)[-1] + PARTIAL) and shell.isdir(path.rstrip("/") + PARTIAL):
        return ("backup %s does not exist yet: %s%s is being written under that name, or was left by a run that "
                "died (`hotvcb cleanup` removes it then)" % (path, path.rstrip("/"), PARTIAL))
    return "backup %s does not exist" % path


def not_a_folder(shell: Shell, path: str) -> str:
    """What `path`, which is no folder, is, as the admin would see it with `ls -l`: an error telling of a
    file they can see that it "does not exist" is one they stop believing."""
    if not shell.exists(path):
        return "does not exist"
    try:
        real = shell.realpath(path)
    except HostError:
        return "is not a folder"
    if not shell.exists(real):
        return "is a symlink to %s, which does not exist" % real
    return "is a file, not a folder" if not shell.isdir(real) else "is not a folder"


def linked_elsewhere(shell: Shell, path: str) -> Optional[str]:
    """Where a backup's entry leads if it is a symlink (to a copy kept elsewhere), else None; asked with
    realpath (the Shell contract's own question for it; a ScannedShell answers it from its scan): such an
    entry is no backup on this volume (health.judge), and rotation removes the link, never what it names.
    The target is returned so the verdict naming it (health.linked) asks no second realpath: the link's is
    the one a ScannedShell cannot answer from its scan, a round trip over SSH."""
    parent, name = path.rsplit("/", 1)
    real = shell.realpath(path)
    return real if real != shell.realpath(parent or "/").rstrip("/") + "/" + name else None


def odd_named(odd: List[str]) -> str:
    """The folders named like backups that are none, as a refusal's tail (`no good backup of 'web'; ...`)."""
    return "".join("; " + line for line in odd)


def folder_status(shell: FileReader, path: str) -> str:
    """The worst STATUS file present: a stray STATUS.ok never outvotes STATUS.error. STATUS.ok seals only as
    a regular file (sealed): a directory, FIFO or symlink of that name, which no run writes, counted as one."""
    for name in reversed(STATUS_FILES):
        if shell.exists(path + "/" + name):
            word = name.split(".", 1)[1]
            return word if word != "ok" or sealed(shell, path + "/" + name) else "incomplete"
    return "incomplete"


def sealed(shell: FileReader, status_ok: str) -> bool:
    """Whether a STATUS.ok that exists is a regular file (Shell.read_regular refuses a link, FIFO or device and
    never blocks on a FIFO; a scan that read it answers without asking the host: a list over SSH stays one look)."""
    try:
        shell.read_regular(status_ok, STATUS_MAX)
    except HostError:
        return False
    return True
