"""`hotvcb verify [BACKUP|VM|--all]`: re-read backups against their manifests.

BACKUP is a backup folder or .gz path; VM checks every backup of that VM by its
final name (whatever its STATUS: health's verdict says what it is, as for BACKUP; one a run
is writing or removing, `-partial` or `-deleting`, is skipped; a .gz and the folder unpacked beside it are one,
good if either is, as list counts them); --all every such backup
under VM_BACKUP_VOLUME. With `-c DIR` (the backup's per-VM
config folder) a VM whose file sets VM_BACKUP_VOLUME is verified there too, where its
backups went (list_cmd reads the files alike). With --repo, a VM names
that VM's backups in the repository (repo_cmd); so does a VM (or --all) where
the config (-g) sets VM_BACKUP_REPOSITORY, as list and status read it. For
each damaged backup the first bad file and byte range are printed. The time
of a successful check is recorded in the manifest (see jobs/verify.py).
Exit codes: 0 nothing damaged (ghettoVCB backups without a manifest are
reported as unverifiable, not as damaged, where store/health.py calls them good,
and a failed one, one a disk failed in or one being rotated away as skipped, as is one removed after verify
listed it: rotation by a backup running beside verify), 4 some backups damaged, empty or
incomplete (store/health.py's verdict, as list says it: no STATUS file, a disk unaccounted for, a ghettoVCB
disk or .vmx cut short or lost, a symlink named like a backup), 6 all of those checked (a skipped one was not
checked and counts for neither: it never turns 6 into 4, nor reads as "1 backup(s) checked"), 1 usage (a path
that is no backup, or a folder of backups: a VM's or the backup volume; a VM or --all while the backup volume is
not there or the NFS share it is on is not mounted; with -c, a per-VM file's volume that is not there, named once
the rest is checked). A bare word is a VM's name, a path says so (`./web`, `/...`): `names_path`.
"""

import argparse
import math
import os
import shlex
import sys
from typing import Dict, List, Optional

from .. import config, interrupt
from ..errors import HostError, UsageError
from ..jobs import backup_check, boot_check
from ..jobs.verify import VerifyResult, verify_backup
from ..localshell import LocalShell
from ..restorefile import trim_path
from ..runlog import say, say_json
from ..shell import Shell
from ..store import layout, manifest
from ..treeview import ScannedShell
from . import common, list_cmd, onhost


def register(subparsers) -> None:
    p = subparsers.add_parser("verify", help="check backups against their manifests' checksums")
    p.add_argument("target", nargs="?", metavar="BACKUP|VM",
                   help="a backup folder/.gz, or a VM name (with --repo: a VM name)")
    p.add_argument("--all", action="store_true", help="every backup under the backup volume")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("-g", dest="global_conf", metavar="FILE", help="global config (for VM_BACKUP_VOLUME)")
    common.add_volume_or_repo(p)
    common.add_confdir_option(p, "a VM whose file sets VM_BACKUP_VOLUME has its backups verified there "
                              "(without --volume)")
    boot = p.add_argument_group("smoke boot", "boot a throw-away copy of the backup's VM under QEMU "
                                "(no network, nothing persists) and wait for a sign of life")
    boot.add_argument("--boot", action="store_true", help="boot the backup (its newest good one for a VM name)")
    boot.add_argument("--boot-pattern", metavar="REGEX", default=boot_check.DEFAULT_PATTERN,
                      help="console text that counts as alive (default %(default)r; '.' = any output)")
    boot.add_argument("--boot-timeout", metavar="SECONDS", type=_seconds, default=boot_check.DEFAULT_TIMEOUT,
                      help="give up after this long (default %(default)d)")
    boot.add_argument("--boot-accel", metavar="ACCEL", default="kvm:tcg",
                      help="QEMU accelerator: kvm, tcg, or kvm:tcg = KVM where available (default)")
    boot.add_argument("--console-log", metavar="FILE", help="write the serial console to this regular file "
                      "(default: in a temp folder)")
    onhost.add_option(p)
    p.add_argument("--sample", type=float, metavar="PCT", help="with --repo: read this share of the packs, 1 to 100")
    p.add_argument("--new", action="store_true", help="with --repo: read only packs never verified")
    p.set_defaults(handler=run, catches_signals=True)  # interrupt.install(): it unwinds on a signal


def _seconds(value: str) -> float:
    """A positive, finite number of seconds (NaN would never run out)."""
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (0 < seconds < math.inf):
        raise argparse.ArgumentTypeError("%r is not a positive number of seconds" % value)
    return seconds


def names_path(shell: Shell, target: str) -> bool:
    """Whether verify's BACKUP|VM `target` is a backup's path: one that says so (`/...`, `./web`, `../x`), or
    holds a '/' and is there. A bare word is a VM: taken for a path when the current folder held one, `verify
    web` from the backup volume verified the VM's folder as one backup (INCOMPLETE), and from the per-VM
    config folder the VM's config file."""
    return target.startswith(("/", "./", "../")) or "/" in target and shell.exists(target)


# a backup a run is writing or removing, by its name (layout): not sealed, so not checked; a sealed one whatever its
# STATUS is checked by health's verdict (jobs/verify.verify_backup), which skips a failed one itself
IN_FLIGHT = ("partial", "deleting")


def targets(shell: Shell, volume: str, target, all_backups: bool, elsewhere: Optional[Dict[str, str]] = None):
    """Backup paths to check, and notes on what was left out. `elsewhere`: {VM: the volume its per-VM file
    sends its backups to} (-c), looked in as well: without it `verify --all` passed over them, unchecked
    and unsaid. (paths, skipped, missing, unpacked): `missing` says each per-VM volume that is not there (an
    unmounted share, a typo), for `run` to name once the rest is checked; for one VM it is the error.
    `unpacked`: {a .gz among `paths`: the folder unpacked beside it, left out of `paths`} (_verify_pair).
    A VM's folder is said gone (_folder_gone) only where this run saw it, listing the volume: a VM a per-VM file
    sends to another volume where it was never backed up has no folder there, which is no error."""
    elsewhere = elsewhere or {}
    if bool(target) == bool(all_backups):
        raise UsageError("say what to verify: BACKUP, VM or --all (exactly one)")
    if target and names_path(shell, target):
        path = trim_path(target)
        if not (shell.isdir(path) or path.endswith(".gz") and shell.exists(path)):
            raise UsageError(layout.not_there(shell, path))
        _refuse_folder_of_backups(shell, path, volume)
        return [path], [], [], {}
    if not shell.isdir(volume):  # a share not mounted, a typo: "0 checked" must not read as all well
        raise UsageError("the backup volume %s is not there (a share not mounted, or a typo?): nothing to "
                         "verify" % volume)
    seen = [] if target else [(n, volume) for n in layout.vm_names(shell, volume)]  # their folders listed
    names = [(target, elsewhere.get(target, volume))] if target else seen + sorted(elsewhere.items())
    paths, skipped, missing = [], [], []  # type: List[str], List[str], List[str]
    unpacked = {}  # type: Dict[str, str]
    for name, where in names:
        if where != volume and not shell.isdir(where):  # as for the global volume: said, never "all well"
            missing.append("%s's backup volume %s (its per-VM file) is not there (a share not mounted, or a "
                           "typo?): its backups are not verified" % (name, where))
            continue
        found = layout.list_backups(shell, where, name, skipped.append)
        if not found and (name, where) in seen and not any(shell.isdir(r) for r in layout.vm_roots(where, name)):
            missing.append(_folder_gone(layout.vm_root(where, name)))  # listed, then removed: as _gone_meanwhile
            continue
        if target and not found:  # all `skipped` holds yet: this VM's folders named like backups that are none
            raise UsageError("no backups of %r under %s%s%s" % (name, where, layout.odd_named(skipped), (
                " (for the backup %s here, say ./%s)" % (target, target)) if shell.exists(target) else ""))
        pairs = layout.unpacked_pairs(found)  # a .gz and the folder unpacked beside it: one backup, as list shows
        unpacked.update(pairs)
        for b in found:
            if b.path in pairs.values():
                continue  # checked with its .gz (_verify_pair)
            if b.status in IN_FLIGHT:
                skipped.append("%s: %s, not checked" % (b.path, b.status))
            else:  # health's verdict, as `verify PATH` takes it: no STATUS file is INCOMPLETE, not passed over
                paths.append(b.path)
    if target and missing:
        raise UsageError(missing[0])
    return paths, skipped, missing, unpacked


def _refuse_folder_of_backups(shell: Shell, path: str, volume: str) -> None:
    """UsageError where the path given as a backup is a folder of backups: a VM's (`verify /vol/web`, or
    `verify web/` from the volume) or a backup volume's (`verify /backup`). Verified as one backup it was
    INCOMPLETE ("not sealed"), "1 backup(s) checked, 1 damaged", exit 6, where every backup in it may be good.
    Looked for only where the folder holds no STATUS file and no manifest (a backup, sealed or not, holds
    one: one listing); over SSH a volume's folders are read from one scan (one round trip, not one per VM).
    The error names the command that checks them (`volume`: the configured one, which needs no --volume)."""
    if not shell.isdir(path):  # a .gz
        return
    try:
        entries = shell.listdir(path)
    except HostError:  # a folder not to be listed: verify of it says why
        return
    if any(e in layout.STATUS_FILES or e == manifest.MANIFEST for e in entries):
        return
    where = _absolute(shell, path)
    parent, name = where.rsplit("/", 1)
    for vm in layout.folder_vms(name):
        if layout.list_backups(shell, parent or "/", vm):
            raise UsageError("%s is the folder of %s's backups, not a backup: `hotvcb verify %s --volume %s` checks "
                             "each of them, `hotvcb verify %s/BACKUP` one" % (
                                 path, vm, shlex.quote(vm), shlex.quote(parent or "/"), shlex.quote(path)))
    scanned = ScannedShell(shell, where, read=("STATUS.*",)) if shell.remote else shell  # here: a few syscalls
    if any(layout.list_backups(scanned, where, vm) for vm in layout.vm_names(scanned, where)):
        other = "" if volume and where == _absolute(shell, volume) else " --volume " + shlex.quote(where)
        raise UsageError("%s is a backup volume (its VMs' folders of backups), not a backup: `hotvcb verify --all%s` "
                         "checks every backup in it, `hotvcb verify VM%s` one VM's" % (path, other, other))


def _absolute(shell: Shell, path: str) -> str:
    """`path` normalised (no symlink resolved) and absolute: a relative one is the working folder's
    (docs/backup-format.md), here or, over SSH, the host's (which only the host can say). Split as a relative
    `web`, the VM's folder was looked for under "/" and passed over."""
    if not path.startswith("/"):
        path = shell.realpath(path) if shell.remote else os.path.abspath(path)
    return "/" + os.path.normpath(path).lstrip("/")


def run(args) -> int:
    settings, warnings = config.load_settings(args.global_conf)
    onhost.say_warnings(args, warnings, lambda w: say("hotvcb: warning: %s" % w, stream=sys.stderr))
    if args.boot:
        return _boot(args, settings)
    code = onhost.command(args, 1)
    if code is not None:
        return code
    # the digests and the archive reader stop between blocks on a recorded signal, a repository's verify
    # between packs and in a wait on a lagging listing (exit 2, one line); without the handler SIGTERM
    # killed verify mid-file, silently, with exit 143
    interrupt.install()
    _follow_repository(args, settings)
    if args.repo:
        from . import repo_cmd  # the repository's code, for --repo runs only

        repo_cmd.here_only(args)
        if args.target and args.all:
            raise UsageError("a VM name and --all: choose one (--repo alone verifies all of the repository)")
        return repo_cmd.verify_repository(args.repo, args.sample, args.new, args.json, args.target)
    if args.sample is not None or args.new:  # dropped, the admin's "10 % a night" read every backup whole, unsaid
        raise UsageError("%s is for a repository's verify (--repo PATH, or a config whose VM_BACKUP_REPOSITORY "
                         "names one); a backup folder is verified whole" % ("--sample" if args.sample is not None
                                                                             else "--new"))
    shell = common.connect(args.host_target).shell
    if list_cmd.say_unmounted(shell, settings, args.volume) and not (args.target or "").startswith("/"):
        # a monitor's `verify --all` between runs (UNMOUNT_NFS=1) must not read "0 checked" as all well
        raise UsageError("no backup on the backup volume can be verified while its NFS share is not mounted")
    own = {} if args.volume or not (args.all or args.target) else list_cmd.per_vm_settings(
        settings, args.confdir, None if args.all else args.target)
    paths, skipped, missing, unpacked = targets(shell, args.volume or settings.vm_backup_volume, args.target,
                                                args.all, list_cmd.volumes_elsewhere(settings, own, "verify", shell))
    results = []
    for path in paths:
        if not args.json:
            say("Verifying %s ..." % path)
        res = _verify_pair(shell, path, unpacked.get(path))
        gone = _gone_meanwhile(shell, res)
        if gone:
            (missing if gone.startswith(FOLDER_GONE) else skipped).append("%s: %s" % (path, gone))
            if not args.json:
                say("  %s" % gone)
            continue
        results.append(res)
        if not args.json:
            say("  %s: %s" % ("NOT CHECKED" if res.status == "newer" else res.status.upper(), res.message))
            for p in res.problems[1:]:
                say("  also: %s" % p)
            for n in res.notes:
                say("  note: %s" % n)
    if not args.json:
        for s in skipped:
            say("skipped %s" % s)
    newer = [r for r in results if r.status == "newer"]  # a good backup as far as anyone knows (repository's rule)
    checked = [r for r in results if r.status not in ("newer", "skipped")]  # SKIPPED was never read: no proof
    damaged = [r for r in checked if not r.ok]
    if args.json:
        say_json({"results": [{
            "path": r.path, "status": r.status, "files": r.files, "bytes": r.bytes, "message": r.message,
            "problems": [{"file": p.file, "message": p.message, "first": p.first, "last": p.last} for p in r.problems],
            "notes": r.notes} for r in results], "skipped": skipped, "missing": missing}, indent=2)
    else:
        say("%d backup(s) checked, %d damaged or incomplete%s" % (len(checked), len(damaged), (
            ", %d not checked (made by a newer hotvcb: upgrade hotvcb to verify them)" % len(newer)) if newer else ""))
    for m in missing:
        say("hotvcb: error: %s" % m, stream=sys.stderr)
    if not damaged:
        return 1 if missing else 3 if newer else 0
    return 6 if len(damaged) == len(checked) else 4


def _verify_pair(shell: Shell, path: str, unpacked: Optional[str]) -> VerifyResult:
    """The backup at `path`; `unpacked`: the folder a .gz was unpacked into beside it, one backup with it (as
    list and rotation count it: good if either is). The .gz is read; its folder only where the .gz is not
    good, and its verdict stands where it is good. Checked as two, `verify web` said "2 backup(s) checked" of the
    one backup list shows, and "1 damaged or incomplete" (exit 4) where the folder was a symlink to the copy
    moved elsewhere. A .gz gone meanwhile (rotated away) leaves the folder the backup: its verdict, damaged too
    (a note of the .gz's "gone" read as nothing checked, exit 0, of a damaged backup still there)."""
    res = verify_backup(shell, path)
    if unpacked is None:
        return res
    if res.status in GOOD_RESULTS + ("newer",):
        res.notes.append("%s, the folder it was unpacked into beside it, is the same backup: not read (`hotvcb "
                         "verify %s` reads it)" % (unpacked, shlex.quote(unpacked)))
        return res
    folder = verify_backup(shell, unpacked)
    if folder.status not in GOOD_RESULTS and res.status != "gone":
        res.notes.append("%s, the folder it was unpacked into beside it, is no better: %s: %s" % (
            unpacked, folder.status, folder.message))
        return res
    folder.notes.append("the .gz is %s (%s); read instead: %s, the folder it was unpacked into beside it, the "
                        "same backup" % (res.status, res.message, unpacked))
    return folder


GOOD_RESULTS = ("ok", "unverifiable")  # a backup read and found good (a skipped one was not read)
FOLDER_GONE = "NOT CHECKED: its VM's folder"


def _gone_meanwhile(shell: Shell, res: VerifyResult) -> str:
    """Why a backup that went away while verify read it (jobs/verify: "gone", not damaged) was not checked, or "".
    Removed after verify listed it, its VM's folder still there (rotation by a backup running beside verify, a
    prune): nor a page for the admin on call. Its VM's folder gone too (FOLDER_GONE: the share unmounted, by a
    backup run ending with UNMOUNT_NFS=1): an error, never all well on a night nothing was checked."""
    if res.status != "gone":
        return ""
    folder = res.path.rstrip("/").rpartition("/")[0]
    if shell.isdir(folder):
        return "REMOVED meanwhile: not checked (rotated away by a running backup?)"
    return _folder_gone(folder)


def _folder_gone(folder: str) -> str:
    """What verify says of a VM's folder that went away while it ran (the share unmounted, the VM's backups
    removed by hand), whether before or after its backups were listed: not checked, an error."""
    return "%s %s went away while verify ran (the backup volume unmounted?)" % (FOLDER_GONE, folder)


def _follow_repository(args, settings) -> None:
    """A VM or --all with a config (-g) whose VM_BACKUP_REPOSITORY sends the backups into a repository
    verifies that repository, as list, status and restore --latest read it: the backup volume, unused (or
    unmounted), said "nothing to verify", or verified last year's folders and said OK. A backup path, or
    --volume, is a folder's verify."""
    target = args.target or ""
    if args.repo or args.volume or not settings.vm_backup_repository or target and names_path(LocalShell(), target):
        return
    args.repo = settings.vm_backup_repository
    say("hotvcb: verifying the repository VM_BACKUP_REPOSITORY names (%s); backup folders: --volume %s"
        % (args.repo, settings.vm_backup_volume), stream=sys.stderr)


def _boot(args, settings) -> int:
    """0 when the VM showed a sign of life, 6 when it did not."""
    if args.all or not args.target:
        raise UsageError("--boot takes one BACKUP or VM (not --all)")
    if args.host_target:
        raise UsageError("--boot runs QEMU on this machine; drop --host/--qemu")
    shell = LocalShell()
    path = trim_path(args.target)
    named = not names_path(shell, args.target)  # a VM name: its newest good backup
    mine = list_cmd.per_vm_settings(settings, args.confdir, args.target).get(args.target, settings) if named \
        else settings
    repo = args.repo or (mine.vm_backup_repository if named and not args.volume else "")
    if repo:  # never a claim about a backup volume the VM's backups do not go to
        raise UsageError("--boot boots a backup folder or .gz, not a backup in the repository %s%s: restore it "
                         "first (hotvcb restore --repo %s --latest VM --kvm DIR) and start the restored VM%s" % (
                             repo, " (VM_BACKUP_REPOSITORY in its per-VM file)" if mine is not settings else "",
                             repo, "" if args.repo else "; --volume DIR boots the newest of its folder backups there"))
    if named:
        volume = args.volume or mine.vm_backup_volume
        odd = []  # type: List[str]
        newest = backup_check.newest_good(shell, volume, args.target, odd.append,
                                          lambda line: say("warning: verify --boot " + line))
        if newest is None:
            raise UsageError("no good backup of %r under %s to boot%s" % (args.target, volume, layout.odd_named(odd)))
        path = newest
    interrupt.install()
    say("Booting %s ..." % path)
    res = boot_check.smoke_boot(shell, path, lambda line: say("  " + line),
                                pattern=args.boot_pattern, timeout=args.boot_timeout, console=args.console_log,
                                accel=args.boot_accel)
    say("%s: %s (console log: %s)" % ("PASS" if res.ok else "FAIL", res.message, res.console))
    return 0 if res.ok else 6
