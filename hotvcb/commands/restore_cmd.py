"""`hotvcb restore`: ghettoVCB-restore's file, a backup path, or a VM's latest backup.

    hotvcb restore -c FILE [-d 1|2] [-l LOG]
    hotvcb restore BACKUP --datastore DS [--format thin] [--name NEW]
    hotvcb restore --latest VM -g CONF [--vm-configs DIR] --datastore DS [--format thin] [--name NEW]

`-d 1` is a dry run (every step, source, destination and .vmx rewrite is
printed, nothing changes); `-d 2` also prints the rewritten .vmx whole.
Exit codes: 0 all restored (or a clean dry run), 3 all restored but some
short of a disk the backup does not hold or not powered on (--power-on
refused by the host), 4 some requests failed (5 and some such), 6 all
failed, 1 usage.
"""

import dataclasses
from typing import List, Optional

from .. import interrupt
from ..errors import HotvcbError, Interrupted, UsageError
from ..jobs import backup_check, nfs, restore_room
from ..jobs.restore import RestoreJob, RestoreResult
from ..jobs.restore_plan import require_usable_name
from ..localshell import LocalShell
from ..restorefile import BadLine, RestoreRequest, datastore_path, disk_format, read_restore_file, trim_path
from ..runlog import RunLog
from ..store import health, layout, rotation
from ..units import human_size
from . import common, onhost, restore_frame, restore_kvm_cmd
from .latest_hint import require_volume, why_none

LEVELS = {"0": "info", "info": "info", "1": "dryrun", "dryrun": "dryrun", "2": "dryrun2", "debug": "debug"}


def register(subparsers) -> None:
    p = subparsers.add_parser("restore", help="restore backups and register the VMs (ghettoVCB-restore compatible)")
    p.add_argument("backup", nargs="?", metavar="BACKUP", help="a backup folder or .gz; or a backup's id in the repository --repo or "
                   "-g's VM_BACKUP_REPOSITORY names")
    p.add_argument("-c", dest="restore_file", metavar="FILE",
                   help='ghettoVCB-restore file: "<backup>;<datastore path>;<format 1-4>[;<new name>]" a line')
    p.add_argument("--latest", metavar="VM", help="the latest good backup of this VM under VM_BACKUP_VOLUME (-g), "
                   "or in VM_BACKUP_REPOSITORY where the config names one")
    p.add_argument("--vm-configs", dest="confdir", metavar="DIR",
                   help="with --latest: the backup's per-VM config folder (its -c): a VM whose file sets "
                   "VM_BACKUP_VOLUME has its latest backup looked for there")
    p.add_argument("--datastore", metavar="DS", help="datastore name or path to restore into")
    p.add_argument("--format", metavar="FMT",
                   help="zeroedthick|2gbsparse|thin|eagerzeroedthick or 1-4 (default thin); qcow2|raw with --kvm "
                   "(default qcow2)")
    p.add_argument("--name", metavar="NEW", help="display name of the restored VM (default: the backup's)")
    p.add_argument("--no-verify", action="store_true",
                   help="do not check the manifest's checksums (checked while the disks are copied)")
    p.add_argument("--power-on", action="store_true", help="power the VM on after registering it")
    common.add_repo_option(p)
    p.add_argument("--to", metavar="DIR", help="with --repo: a new folder for the raw disks and the VM's files")
    p.add_argument("-g", dest="global_conf", metavar="FILE", help="global config (for --latest, and a backup's id in its VM_BACKUP_REPOSITORY)")
    p.add_argument("-l", dest="log_file", metavar="FILE", help="also write the log to FILE")
    p.add_argument("-d", dest="level", default="info", choices=sorted(LEVELS),
                   help="1 or dryrun: show what would happen; 2: the same with the rewritten .vmx; debug: more log")
    restore_kvm_cmd.add_options(p)
    onhost.add_option(p)
    p.set_defaults(handler=run, catches_signals=True)  # interrupt.install(): it unwinds on a signal


def requests_from(args, settings, skipped: List[str]) -> list:
    """RestoreRequests (and BadLines) the command line asks for; `skipped` is told the newer backups
    --latest passed over (backup_check.passed_over)."""
    given = [x for x in (args.backup, args.restore_file, args.latest) if x]
    if len(given) != 1:
        raise UsageError("say what to restore: BACKUP, -c FILE or --latest VM (exactly one)")
    if args.restore_file:
        if args.datastore or args.name or args.format:
            raise UsageError("-c FILE names datastore, format and name per line; drop --datastore/--format/--name")
        return read_restore_file(args.restore_file)
    if not args.datastore:
        raise UsageError("say where to restore to: --datastore NAME or PATH")
    try:
        fmt = disk_format(args.format or "thin")
    except ValueError as err:
        raise UsageError(str(err)) from err
    target = datastore_path(args.datastore)
    if args.repo:  # staged from the repository, then the folder restore (_restore)
        return [RestoreRequest(args.backup or "", trim_path(target), fmt, args.name or None, repo=args.repo,
                               latest=args.latest or "")]
    backup = args.backup
    if args.latest:
        host = common.connect(args.host_target)
        shell = host.shell
        # never another host's backup of another VM with this name (a shared volume)
        here = [r for r in host.list_vms() if r.name == args.latest]
        source = (host.host_name(), host.load_vm(here[0]).uuid if len(here) == 1 else "")
        require_volume(shell, settings, bool(args.global_conf), args.latest)
        odd = []  # type: List[str]
        verdicts = [(b, health.judge(shell, b)) for b in layout.list_backups(shell, settings.vm_backup_volume,
                                                                            args.latest, odd.append)]
        good = [b for b, v in verdicts if v.good and not rotation.made_elsewhere(v.manifest, source)]
        if not good:
            newest = verdicts[-1] if verdicts and not verdicts[-1][1].good else None
            why = "; its newest backup %s is %s: %s" % (newest[0].path, newest[1].state, newest[1].reason or
                                                         newest[1].state) if newest else ""
            raise UsageError("no good backup of %r under %s%s%s%s%s" % (
                args.latest, settings.vm_backup_volume,
                why_none(shell, settings.vm_backup_volume, args.latest, bool(verdicts)),
                why, layout.odd_named(odd), nfs.because(shell, settings)))
        ahead = rotation.dated_ahead(good, shell.now())  # as rotation and status, which set them aside
        backup = ([b for b in good if b not in ahead] or good)[-1].path
        skipped += backup_check.passed_over(args.latest, verdicts, backup)
        skipped += backup_check.named_ahead(args.latest, ahead, backup)
    return [RestoreRequest(trim_path(backup), trim_path(target), fmt, args.name or None)]


def _no_repository_looked_in(args, log) -> None:
    """A BACKUP that is no path (a backup's id, as `list` shows it) and no folder or .gz here, where no
    repository is named to look in: said so, with where it did look, before the folder restore fails it as
    any missing backup (in the -l log, with its final status). "backup <id> does not exist" alone sent the
    admin hunting for a backup `list VM -c DIR` had just shown, in a repository only a per-VM file names
    (the global config's is the one a restore reads)."""
    if layout.not_there(LocalShell(), args.backup) != "backup %s does not exist" % args.backup:
        return  # something is there (a -partial folder, a file): the folder restore says what
    conf = "%s names no VM_BACKUP_REPOSITORY" % args.global_conf if args.global_conf else "no -g config was given"
    log.warning("%s: no folder or .gz of that name here, and %s, so no repository was looked in; a backup's id in "
                "a repository (one a per-VM file names too) is restored with --repo PATH" % (args.backup, conf))


def check_options(args) -> None:
    """Options the chosen restore would not use are refused, never dropped: at 3 a.m. the admin believes
    what they typed (a VM named by --name to boot on --datastore, where --to only wrote files)."""
    if args.to is None:
        return
    unused = [option for option, given in (("--datastore", args.datastore), ("--name", args.name),
                                           ("--format", args.format), ("--power-on", args.power_on),
                                           ("--kvm", args.kvm is not None)) if given]
    if unused:
        raise UsageError("--to DIR writes the backup's files and disks as they are, no VM is made: drop %s "
                         "(or restore the VM with --datastore DS instead of --to)" % ", ".join(unused))


def run(args) -> int:
    restore_kvm_cmd.check_options(args)
    check_options(args)
    if args.kvm is not None:
        return restore_kvm_cmd.run(args, LEVELS[args.level])
    level = LEVELS[args.level]
    dry_run = level in ("dryrun", "dryrun2")
    settings, warnings = common.restore_settings(args)
    log = RunLog("debug" if level in ("debug", "dryrun2") else "info", path=args.log_file)
    held = []  # type: List[str]  # the config's warnings, said inside the frame of a restore that stays here
    onhost.say_warnings(args, warnings, held.append)
    interrupt.install()
    code = onhost.command(args, 1, log)  # SSH mode: the restore on the host, where it can (its log its own)
    if code is not None:
        return code
    log.info(restore_frame.LOG_START)  # every line of the run from here, so inside its frame (ghettoVCB's log parsers')
    onhost.say_why_here(args, log)
    for warning in held:
        log.warning(warning)
    try:
        lister = _repository(args, settings, log)
    except UsageError as err:
        restore_frame.refused(log, err)
        raise
    if args.to:
        return _restore_files(args, log, dry_run, lister)
    failed = done = partial = left_off = 0
    try:
        skipped = []  # type: List[str]
        items = requests_from(args, settings, skipped)
        host = common.connect(args.host_target)
        log.info("HOST: %s" % host.host_name())  # file by file over SSH: the ESXi host's name, not this Linux box's
        for line in skipped:
            log.warning("--latest " + line)
        if dry_run:
            log.info("DRY RUN: nothing will be changed")
        job = RestoreJob(host, log, dry_run=dry_run, verbose=level == "dryrun2",
                         verify=not args.no_verify, power_on=args.power_on)
        for item in items:
            done += 1
            if isinstance(item, BadLine):
                log.error(str(item))
                failed += 1
                continue
            result = _restore(job, item, log, dry_run, lister)
            if result is None or result.status != "ok":
                failed += 1
            else:
                partial += bool(result.disconnected) and not dry_run
                left_off += bool(result.left_off)
            if interrupt.pending():
                interrupt.raise_pending()
        status, code = _final(done, failed, partial, dry_run, left_off)
    except Interrupted as err:
        status, code = "ERROR: %s; unfinished restore folders removed" % err, err.exit_code
    except UsageError as err:  # a mistyped --latest, an id pruned since `list -g` showed it, a bad restore file
        restore_frame.refused(log, err)
        raise
    except HotvcbError as err:
        log.error(str(err))
        status, code = "ERROR: %s" % err, err.exit_code
    return restore_frame.end(log, status, code)


def _repository(args, settings, log: RunLog) -> str:
    """The repository the restore reads (args.repo, set from -g's VM_BACKUP_REPOSITORY where that names one, and
    said so) and the options it takes checked (UsageError); how the admin lists its backups (repo_cmd.find)."""
    named = common.config_repository(args, settings)
    lister = common.repository_lister(args, args.repo or named)  # before args.repo is set from the config
    if named:
        args.repo = named
        log.info("%s: from the repository VM_BACKUP_REPOSITORY names, %s"
                 % ("--latest " + args.latest if args.latest else "backup " + args.backup, named))
    if args.to is not None and not args.repo:  # asked once -g's VM_BACKUP_REPOSITORY may have named it
        raise UsageError("--to DIR writes a repository's backup as files: name the repository with --repo PATH, or "
                         "with -g CONF whose VM_BACKUP_REPOSITORY holds the backup's id; a backup folder or .gz is "
                         "restored with --datastore DS")
    if not args.repo and args.backup and "/" not in args.backup:
        _no_repository_looked_in(args, log)
    if args.repo:
        from . import repo_cmd  # the repository's code, for --repo runs only

        repo_cmd.here_only(args)
        if bool(args.backup) == bool(args.latest):
            raise UsageError("say which backup of the repository: its ID, or --latest VM (exactly one)")
        if not args.to and not args.datastore:
            raise UsageError("restore --repo needs --to DIR, or --datastore DS to restore the VM")
    return lister


def _restore_files(args, log: RunLog, dry_run: bool, lister: str) -> int:
    """`--to DIR`: a repository's backup written as files, its log framed as every restore's (LOG START, run's,
    final status, LOG END): its errors went to stderr alone, and the -l file of the admin's job, output sent to
    /dev/null, held no error and no final status. An error is still said on stderr by the CLI, as before, and
    in the log (a usage error's way: once on the terminal is enough)."""
    from . import repo_restore  # the repository's code, for --repo runs only

    try:
        code = repo_restore.restore(args.repo, args.backup, args.to, log, args.latest, dry_run, lister)
    except (HotvcbError, Interrupted) as err:
        restore_frame.refused(log, err)
        raise
    return restore_frame.end(log, "OK, only a dryrun." if dry_run else "Backup restored OK as files!", code)


def _restore(job: RestoreJob, req: RestoreRequest, log, dry_run: bool,
             lister: str = "hotvcb list --repo") -> Optional[RestoreResult]:
    """One request; a repository's backup is first written (every chunk hash-checked) as a sealed
    folder on the target datastore, then restored like any folder: formats, checks, registration.
    `lister`: how the admin lists the repository's backups (repo_cmd.find)."""
    if not req.repo:
        return job.restore_one(req)
    from ..repo.repository import open_path  # the repository's code, for its backups only
    from . import repo_cmd, repo_restore
    try:
        if not isinstance(job.shell, LocalShell):
            raise UsageError("a repository is read on the host itself: run hotvcb there (SSH mode does so "
                             "where the host has python 3.8)")
        if req.new_name is not None:  # before the whole backup is staged
            require_usable_name(req.new_name)
        repo = open_path(req.repo)
        snap = repo_cmd.find(repo, req.backup, req.latest, lister)
        final = "%s/%s" % (req.target.rstrip("/"), layout.datastore_folder(req.new_name or snap.vm))
        if job.shell.exists(final):  # before the whole backup is staged on the datastore
            raise HotvcbError("target folder %s already exists; not overwriting it" % final)
        taken = job.tally.taken(final)
        if taken is not None:
            raise HotvcbError(taken)
        job.reclaim(req.target)  # a killed restore's staging there: its room, before the room is counted
        free = job.tally.left(req.target, restore_room.free_on_target(
            job.host, req.target, lambda: job.host.free_space(req.target)))
        needed = repo_restore.staging_room(repo, snap, req.disk_format)
        restore_room.check_staging_room(req, final, "the backup staged", needed, free)
        if dry_run:
            repo_restore.check_restorable(repo, snap, log.info)
            log.dryrun("RESTORE: %s from the repository %s to %s as %s%s (staged on the target datastore, then "
                       "restored as a folder backup)" % (snap, req.repo, req.target, req.disk_format,
                                                          ", named " + req.new_name if req.new_name else ""))
            log.dryrun("ROOM: needs up to %s, %s free" % (human_size(needed), "unknown" if free is None
                                                           else human_size(free)))
            log.info("Dry run for %s: every check passed, nothing changed" % (req.new_name or snap.vm))
            job.tally.hold(req, final, repo_restore.restored_room(repo, snap, req.disk_format))  # the staged copy goes
            return RestoreResult(req, "ok")
        early = job.ask_early()  # beside the staging: the host's answers are ready when its pre-checks run
        try:
            with repo_restore.staged(req.repo, snap.id, req.target, job.records, log.info) as folder:
                staged = dataclasses.replace(req, backup=folder, repo="", latest="", staged=True)
                return job.restore_one(staged)
        finally:
            for question in early:
                question.drop()
    except Interrupted:
        raise
    except HotvcbError as err:
        if isinstance(err, UsageError) and not req.where:  # the command line's own (a mistyped --latest): exit 1
            raise
        log.error("%s%s" % (req.where + ": " if req.where else "", err))
        return None


def _final(done: int, failed: int, partial: int, dry_run: bool, left_off: int = 0):
    """`partial`: VMs restored with a disk left disconnected, because their backup does not hold it (an
    independent disk or RDM that no snapshot copies): a VM short of a disk is not "restored OK", and
    ghettoVCB's own backup of it said "some disk(s) failed" (exit 3, as for the backup). `left_off`: VMs
    --power-on left powered off (their original runs, or the host refused: restore_write.power_on), each
    named in the log: not what was asked, nor failed (the VM is there; restoring it again would meet its
    folder), so a warning as well; a dry run counts those it would leave off (restore_write.say_power_on),
    says so, and exits the code the real run would (README: a check before the real run must not read as OK)."""
    if dry_run and failed == 0 and left_off:
        return "WARNING: DRY RUN: %d VM(s) would be left powered off (see above); nothing was changed" % left_off, 3
    buts = [what for n, what in ((partial, "some disk(s) were not in the backup and are left disconnected"),
                                 (left_off, "%d VM(s) were left powered off (see above)" % left_off)) if n]
    if failed == 0 and buts:
        return "WARNING: All VMs restored, but %s!" % ", and ".join(buts), 3
    if failed == 0:
        return ("OK, only a dryrun." if dry_run else "All VMs restored OK!"), 0
    if failed == done:
        return "ERROR: All VMs failed to restore!", 6
    if buts:
        return "ERROR: %d of %d VM(s) failed to restore, and %s!" % (failed, done, ", and ".join(buts)), 5
    return "ERROR: %d of %d VM(s) failed to restore!" % (failed, done), 4
