"""`hotvcb list [VM]`: every backup under VM_BACKUP_VOLUME and its health (or, with --repo or
VM_BACKUP_REPOSITORY and no --volume, the repository's backups: repo_cmd.list_backups).

With `-c DIR` (the backup's per-VM config folder) a VM whose file sets
VM_BACKUP_VOLUME is listed from that volume, where its backups went; `list VM -c DIR`
of a VM whose file sets VM_BACKUP_REPOSITORY lists that repository. Listing the repository the
global config names, each VM a per-VM file sends elsewhere (folders, another repository) is named
on stderr with the `list` that shows its backups.

A table on a terminal (or whenever --json is not given); `--json` prints one
JSON document for scripts and monitoring (`volume`: the global one, or with
VM and -c that VM's):

    {"volume": path, "backups": [{"vm", "name", "path", "time", "age_seconds",
      "size_bytes", "format", "status", "good", "reason", "sealed", "compressed",
      "manifest", "verified", "verify_error", "warning"}, ...]}

status is store/health.py's verdict, the same one rotation and restore use:
good, unverifiable (a ghettoVCB backup: good, nothing to check against),
warn, error, damaged (a file missing, or verify found damage), empty (no
disk), incomplete (no STATUS file; a ghettoVCB backup's disk or .vmx cut
short or lost; a symlink to a backup kept elsewhere), partial (being written, or left by a
killed run), deleting (being removed by rotation); one removed while list read it (health's "gone") is
not listed. `good` is true for the
first two; `reason` says why a backup is not good, `warning` what a good
one lacks that its VM has (ghettoVCB's STATUS.warn: its independent
disks; the table says it below itself). size_bytes is what the
files take on disk (thin disks count only their allocated blocks). format
comes from the manifest, or for ghettoVCB backups from the first disk
descriptor (thin | 2gbsparse | thick).

A backup volume that is not there (a typo, a datastore not mounted, -g forgotten) is an error
naming it, exit 1, never "no backups under" it, which reads as backups lost; the NFS share a
backup run mounts (ENABLE_NON_PERSISTENT_NFS) is said to be unmounted instead. A per-VM file's
volume (-c) that is not there is a warning naming it and its VM; the error only when no volume is.
"""

from __future__ import annotations

import os
import posixpath
import sys
from datetime import datetime
from typing import Any, Callable, Dict, List, Optional, Tuple

from .. import config, vmdk
from ..errors import HostError, HotvcbError, UsageError
from ..jobs import nfs, outcome
from ..runlog import columns, say, say_json
from ..settings import Settings
from ..shell import Shell
from ..store import health, layout, manifest, rotation
from ..treeview import ScannedShell
from ..units import human_size
from . import common

def register(subparsers) -> None:
    p = subparsers.add_parser("list", help="list backups with age, size, format, status and last verification")
    p.add_argument("vm", nargs="?", metavar="VM", help="only this VM's backups")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("-g", dest="global_conf", metavar="FILE", help="global config (VM_BACKUP_VOLUME, or "
                   "VM_BACKUP_REPOSITORY: that repository is listed unless --volume is given)")
    common.add_volume_or_repo(p)
    common.add_confdir_option(p, "a VM whose file sets VM_BACKUP_VOLUME has its backups listed from there "
                              "(without --volume), `list VM` of one whose file sets VM_BACKUP_REPOSITORY "
                              "that repository")
    p.set_defaults(handler=run)


def backup_rows(shell: Shell, volume: str, vm: Optional[str] = None, now: Optional[datetime] = None,
                odd: Optional[Callable[[str], None]] = None) -> List[Dict[str, Any]]:
    """`odd`: told of each entry named like a backup that is none (layout.list_backups)."""
    # one look at the whole tree (one round trip over SSH), not one per file; made first, as over
    # SSH its answer also carries the host's clock
    root = layout.vm_root(volume, vm) if vm else volume
    shell = ScannedShell(shell, root)
    shell.exists(root)
    now = now or shell.now()  # the host's wall clock, which named its backups (another zone than ours, maybe)
    rows = []
    for name in [vm] if vm else layout.vm_names(shell, volume):
        described = [describe(shell, b, now) for b in layout.list_backups(shell, volume, name, odd)]
        # one removed after the scan (another run's rotation, a hand) is not shown: a list answers from what is there
        rows += _one_per_time([r for r in described if r["status"] != "gone"])
    return rows


def _one_per_time(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """A .gz and the folder ghettoVCB-restore unpacked beside it are one backup, as rotation counts them
    (rotation.one_per_time): one row, the .gz's, good if either is (then with that one's verdict),
    `unpacked` naming the folder and the size both take."""
    folders = {r["path"]: r for r in rows if not r["compressed"]}
    out = []
    for r in rows:
        twin = folders.pop(r["path"][: -len(".gz")], None) if r["compressed"] else None
        if twin is not None:
            size = r["size_bytes"] + twin["size_bytes"]
            if twin["good"] and not r["good"]:
                r = dict(twin, path=r["path"], name=r["name"], compressed=True)
            r = dict(r, size_bytes=size, unpacked=twin["path"])
        out.append(r)
    return [r for r in out if r["compressed"] or r["path"] in folders]


def describe(shell: Shell, b: "layout.BackupSet", now: datetime) -> Dict[str, Any]:
    verdict = health.judge(shell, b)
    data = verdict.manifest
    error = verdict.reason if verdict.state == "damaged" else None
    if data is None and not b.compressed and verdict.state not in ("partial", "deleting"):
        try:
            data = manifest.load(shell, b.path)
        except (ValueError, HostError):
            data = None
    listable = not b.compressed and verdict.state not in ("partial", "deleting")
    fmt = (data or {}).get("disk_format") or (_detect_format(shell, b.path) if listable else None)
    return {
        "vm": b.vm,
        "name": b.name,
        "path": b.path,
        "time": b.when.isoformat(timespec="seconds"),
        "age_seconds": int((now - b.when).total_seconds()),
        "size_bytes": rotation.backup_size(shell, b.path),
        "format": fmt,
        "status": verdict.state,
        "good": verdict.good,
        "reason": verdict.reason,
        "sealed": verdict.state not in ("incomplete", "partial", "deleting"),
        "compressed": b.compressed,
        "manifest": data is not None,
        "verified": verdict.verified or (data or {}).get("verified"),
        "verify_error": error,
        "warning": verdict.warning,
        "unpacked": None,
    }


def _detect_format(shell: Shell, folder: str) -> Optional[str]:
    try:
        names = shell.list_files(folder)
    except HostError:
        return None
    for rel in names:
        if not rel.endswith(".vmdk") or rel.endswith("-flat.vmdk") or rel[-9:-5].startswith("-s"):
            continue
        path = folder + "/" + rel
        try:
            if shell.file_size(path) > 65536:
                continue
            desc = vmdk.parse(shell.read_text(path))
        except (OSError, HostError, vmdk.NotADescriptor):
            continue
        if desc.create_type.lower() == "twogbmaxextentsparse":
            return "2gbsparse"
        return "thin" if desc.thin else "thick"
    return None


def run(args) -> int:
    if not args.repo:
        settings, warnings = config.load_settings(args.global_conf)
        for w in warnings:
            say("hotvcb: warning: %s" % w, stream=sys.stderr)
        own = {} if args.volume else per_vm_settings(settings, args.confdir, args.vm)
        mine = own.pop(args.vm, settings) if args.vm else settings
        if mine.vm_backup_repository and not args.volume:  # where backup, prune and status look
            args.repo = mine.vm_backup_repository
            say("hotvcb: listing the repository VM_BACKUP_REPOSITORY names%s; backup folders: --volume %s"
                % (" in %s's per-VM file" % args.vm if mine is not settings else "", mine.vm_backup_volume),
                stream=sys.stderr)
            if not args.vm:
                _outside_repository(mine.vm_backup_repository, own, args)
    if args.repo:
        from . import repo_cmd  # the repository's code, for repository runs only

        repo_cmd.here_only(args)
        return repo_cmd.list_backups(args.repo, args.vm, args.json)
    volume = args.volume or mine.vm_backup_volume
    shell = common.connect(args.host_target).shell
    elsewhere = volumes_elsewhere(settings, own, "list", shell)
    # on stderr, as the config's warnings: --json's stdout stays one JSON document
    say_unmounted(shell, settings, args.volume)
    rows = backup_rows(shell, volume, args.vm, odd=_warn)
    if not rows and args.volume and not shell.isdir(args.volume):  # asked only then: over SSH a round trip
        # a typo must not read as a volume whose backups are gone
        raise UsageError("--volume %s: no such folder (a typo, or a share not mounted?)" % args.volume)
    missing = "" if rows or args.volume else nfs.volume_missing(shell, mine, bool(args.global_conf))
    looked = [] if missing else [volume]  # the volumes "no backups under" may name: none that is not there
    for name, target in sorted(elsewhere.items()):
        gone = nfs.volume_missing(shell, own[name], True)
        if gone:  # as the global volume's: named, so neither taken for lost nor looked for under the global one
            _warn("%s: %s's backups are not listed" % (gone, name))
            continue
        rows += backup_rows(shell, target, name, odd=_warn)
        looked.append(target)
    if missing and not looked:  # as for --volume: "no backups under" a missing folder reads as backups lost
        raise UsageError(missing)
    if missing:  # the VMs per-VM files send elsewhere are listed; every other VM's backups are not lost
        _warn("%s: only the backups of the VMs per-VM files send elsewhere are listed" % missing)
    if args.json:
        say_json({"volume": volume, "backups": rows}, indent=2)
    else:
        say(table(rows) if rows else "no backups under %s%s"
            % (" or ".join(looked), " for %r" % args.vm if args.vm else ""))
    return 0


def _warn(line: str) -> None:
    say("hotvcb: warning: %s" % line, stream=sys.stderr)


def per_vm_settings(settings: Settings, confdir: Optional[str], vm: Optional[str]) -> Dict[str, Settings]:
    """{VM: its settings with its per-VM file in `confdir` (the backup's -c)}: where the backup sent it. `vm`:
    that VM's only; else every file's (each names its VM). A file that cannot be read is said; what the
    backup warns of in one that can is the backup's to say. `list` and `verify` read them alike."""
    settings_of = common.per_vm_settings(settings, confdir, [])
    if settings_of is None:
        return {}
    out = {}
    for name in [vm] if vm else sorted(os.listdir(confdir or "")):
        try:
            out[name] = settings_of(name)
        except HotvcbError as err:
            _warn("%s; the backups it may send elsewhere are not listed" % err)
    return out


def _outside_repository(repository: str, own: Dict[str, Settings], args) -> None:
    """Name each VM a per-VM file sends out of the repository the global config names (into folders, or
    another repository), with the `list` that shows its backups: the repository's list holds none of them,
    and a VM left out of it without a word reads as never backed up. On stderr: --json's stdout stays one
    JSON document."""
    for name, s in sorted(own.items()):
        if not s.vm_backup_repository:
            _warn("%s's per-VM file sends its backups to folders under %s, not this repository: hotvcb list -g %s "
                  "-c %s %s lists them" % (name, s.vm_backup_volume, args.global_conf, args.confdir, name))
        elif posixpath.normpath(s.vm_backup_repository) != posixpath.normpath(repository):
            _warn("%s's per-VM file sends its backups to the repository %s: hotvcb list %s --repo %s reads them"
                  % (name, s.vm_backup_repository, name, s.vm_backup_repository))


def volumes_elsewhere(settings: Settings, own: Dict[str, Settings], command: str, shell: Shell) -> Dict[str, str]:
    """{VM: the backup volume its per-VM file sends it to}, where that is not the global one. A VM its file
    sends into a repository is named, with the `command` (list, verify) that reads it there: its backups
    are not a folder's."""
    out = {}
    for name, s in own.items():
        if s.vm_backup_repository:
            _warn("%s's per-VM file sends its backups to the repository %s: hotvcb %s %s --repo %s reads them"
                  % (name, s.vm_backup_repository, command, name, s.vm_backup_repository))
        elif not same_folder(shell, s.vm_backup_volume, settings.vm_backup_volume):
            out[name] = s.vm_backup_volume
    return out


def same_folder(shell: Shell, a: str, b: str) -> bool:
    """Whether two spellings name one folder: a per-VM file's `.../hotvcb/` or `/vmfs/volumes/<uuid>/hotvcb`
    (as `pwd` shows it) for the global volume listed and verified that VM's backups twice. Spelling first;
    the host's realpath (a round trip over SSH) only for the few that differ."""
    if posixpath.normpath(a) == posixpath.normpath(b):
        return True
    try:
        return shell.realpath(a) == shell.realpath(b)
    except (OSError, HostError):
        return False


def say_unmounted(shell: Shell, settings, volume: Optional[str]) -> str:
    """Why `list` and `verify` (which never mount) may find no backups: the NFS share the backups are on is
    not mounted (said, and returned; "" when it is). Not for a --volume of the admin's own."""
    why = "" if volume else nfs.unmounted(shell, settings)
    if why:
        say("hotvcb: warning: %s" % why, stream=sys.stderr)
    return why


def table(rows: List[Dict[str, Any]]) -> str:
    head = ("VM", "TIME", "AGE", "SIZE", "FORMAT", "STATUS", "VERIFIED")
    lines = [head]  # type: List[Tuple[str, ...]]
    for r in rows:
        status = r["status"] + (" (gz+unpacked)" if r.get("unpacked") else " (gz)" if r["compressed"] else "")
        if r["verify_error"]:
            verified = "FAILED: " + r["verify_error"]
        else:
            verified = (r["verified"] or "never").replace("T", " ")
        lines.append((outcome.named(r["vm"]), r["time"].replace("T", " "), age(r["age_seconds"]),
                      human_size(r["size_bytes"], compact=True), r["format"] or "?", status, verified))
    notes = ["%s: %s" % (r["path"], r["warning"]) for r in rows if r["warning"]]
    return "\n".join(columns(lines) + ([""] + notes if notes else []))


def age(seconds: int) -> str:
    if seconds < 0:
        return "future"
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= n:
            return "%d%s" % (seconds // n, unit)
    return "%ds" % seconds

