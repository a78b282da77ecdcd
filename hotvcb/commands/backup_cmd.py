"""`hotvcb backup`: ghettoVCB's flags, hotvcb's guarantees."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
from datetime import datetime
from typing import List, Optional, Sequence, Tuple

from .. import adminfile, config, confkeys, interrupt, mailgate, namelist, schedule
from ..errors import HostError, HotvcbError, Interrupted, TemplateVm, UnclearLine, UsageError, VmNotFound
from ..store import volume
from ..jobs.ahead import RunStart
from ..jobs.backup import BackupJob
from ..jobs.nfs import NfsTarget
from ..jobs import outcome, preflight
from ..jobs.outcome import final_status
from ..runlog import open_log, say, with_warning
from . import cmdline, common, onhost, runtarget
from .workdir import WorkDir


def register(subparsers) -> None:
    p = subparsers.add_parser("backup", help="back up running VMs (ghettoVCB-compatible flags)")
    add_options(p)
    p.set_defaults(handler=run, catches_signals=True)  # interrupt.install(): it unwinds on a signal


def add_options(p: argparse.ArgumentParser) -> None:
    # not exclusive: ghettoVCB took them together, -a over -m over -f (`overridden`)
    p.add_argument("-a", dest="all_vms", action="store_true", help="every VM on the host (overrides -m and -f)")
    p.add_argument("-f", dest="vm_list", metavar="FILE", help="file with one VM display name a line")
    p.add_argument("-m", dest="vm_names", metavar="NAME", action="append",
                   help="one VM (repeatable; overrides -f)")
    p.add_argument("-e", dest="exclude", metavar="FILE", help="file of VM names to leave out")
    p.add_argument("-c", dest="confdir", metavar="DIR", help="folder of per-VM config files named after VMs")
    p.add_argument("-j", dest="job_name", metavar="NAME", default=schedule.DEFAULT_JOB, type=_job_name,
                   help="job name for log and mail (ASCII letters, digits, '.', '_' and '-')")
    p.add_argument("--json-report", metavar="FILE", help="also write the run's per-VM report as JSON to FILE")
    p.add_argument("--json", dest="json_report", nargs="?", metavar="FILE", action=_JsonReport, help=argparse.SUPPRESS)
    p.add_argument("--power-state", type=str.lower, choices=("on", "off", "suspended", "any"),  # any case, as the
                   # config's BACKUP_POWER_STATE: `--power-state Suspended` was refused where the key took it
                   help="back up only the VMs that are powered on (or off, or suspended: a paused QEMU/KVM guest); "
                   "overrides BACKUP_POWER_STATE")
    p.add_argument("--parallel", metavar="N", type=_vms_at_once,
                   help="back up up to N VMs at a time (1-16); overrides BACKUP_PARALLEL")
    p.add_argument("--outbox", type=onhost.outbox_fd, help=argparse.SUPPRESS)  # an on-host run for an SSH client
    onhost.add_option(p)
    p.add_argument("--repo", metavar="PATH", help="back up into the deduplicating repository at PATH "
                   "(overrides VM_BACKUP_REPOSITORY; docs/repository.md)")
    common.add_host_options(p)


class _JsonReport(cmdline.StoreOnce):
    """`--json FILE`, the spelling jobs scheduled while argparse read it as an abbreviation of --json-report,
    still writes the report there; a bare `--json` (typed as `list --json` is) says where the report goes,
    instead of taking the next word (`-g`, a VM list) for the file or "--json-report: expected one argument".
    It is --json-report given again (StoreOnce): `--json-report A --json B` wrote only B, without a word."""

    def __call__(self, parser, namespace, values, option_string=None):
        if values is None:
            raise argparse.ArgumentError(self, "a backup has no --json output; its JSON report goes to a file: "
                                               "--json-report FILE")
        super().__call__(parser, namespace, values, option_string)


def _job_name(text: str) -> str:
    """The rule `schedule --job` applies, for the same name: a line break in it (`-j "$(cat jobname)"` of
    a CRLF file) split the log's HOST line and made the report mail's Subject unsendable."""
    try:
        return schedule.check_job_name(text)
    except UsageError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _vms_at_once(text: str) -> int:
    # ASCII digits, as the config's BACKUP_PARALLEL: isdigit() also passes '³' (int() fails) and '٣'
    if not (re.fullmatch(r"[0-9]{1,2}", text) and 1 <= int(text) <= 16):
        raise argparse.ArgumentTypeError("%r: a whole number from 1 to 16" % text)
    return int(text)


def parse(argv: Sequence[str]) -> argparse.Namespace:
    """`[global options] ARGS` of `hotvcb [global options] backup ARGS`, parsed as the run will parse
    them (global options may stand anywhere here); errors are UsageErrors."""
    return cmdline.unglue(parser().parse_args(list(argv)))


def parser() -> argparse.ArgumentParser:
    """The backup command's options with the global ones, as a scheduled job's words are read: by `parse`,
    and by `schedule.backup_argv`, which makes the path options' values absolute in every spelling."""
    p = cmdline.RaisingParser(prog="hotvcb backup", add_help=False)
    runtarget.add_target_options(p)
    add_options(p)
    return p


def split_global_options(words: Sequence[str]) -> Tuple[List[str], List[str]]:
    """(the global options among a backup's words, each by its full name; the backup's own words, a leading
    command word `backup` dropped). Read with the run's own parser, so an abbreviation (`--qem DIR`) is the
    global option it stands for here too: `schedule install` checked `--qem` as --qemu but installed it after
    `backup`, where every night's run refused it; and `hotvcb -a -g F --qemu DIR` (the target appended to a
    ghettoVCB line) runs as `hotvcb --qemu DIR backup -a -g F`, as `schedule install` takes the same words.
    A global `--libvirt` takes the next word only when it is a URI (`runtarget.libvirt_value`)."""
    options = cmdline.options_of(parser())
    glob, rest = [], []  # type: Tuple[List[str], List[str]]
    i = 0
    while i < len(words) and words[i] != "--":
        word = words[i]
        hit = cmdline.option_of(word, options) if word.startswith("-") else None
        takes = 0 if hit is None or hit[0].nargs is not None or hit[2] is not None else 1
        name = hit[0].option_strings[-1] if hit is not None else ""
        if hit is not None and name in runtarget.GLOBAL_VALUED:
            if name == "--libvirt" and takes and not runtarget.libvirt_value(list(words[i + 1:])):
                glob.append("--libvirt=" + runtarget.LIBVIRT_DEFAULT)
                takes = 0
            else:
                glob += [name if hit[2] is None else name + "=" + hit[2]] + list(words[i + 1:i + 1 + takes])
        elif word != "backup" or rest:  # `--qemu DIR backup -m web`: the run's own line, its command word
            rest += words[i:i + 1 + takes]
        i += 1 + takes
    return glob, rest + list(words[i:])


def overridden(args) -> List[str]:
    """ghettoVCB's choice among -a, -m and -f given together, made on `args`, and the warning naming what it
    overrides (empty: nothing was). ghettoVCB.sh's getopts let each of them set its VM list; `-m` wrote its
    name into whichever list file was set (`-m` overrides -f, its usage says), and `-a` then filled that file
    with every VM: `-a` over `-m` over `-f`, in any order. A wrapper passing its usual `-f vms_to_backup` and
    adding `-m web` for one more run of web was refused as a usage error, and nothing was backed up. The
    overridden option is dropped from `args`: its list is not read, nor sent to the host in SSH mode (where
    `-a` sends every per-VM file), and a scheduled job's check reads what its run will."""
    dropped = ["-f %s" % adminfile.shown_as(args.vm_list)] if args.vm_list and (args.all_vms or args.vm_names) else []
    if args.all_vms and args.vm_names:
        dropped.append(_names_given(args.vm_names))
        args.vm_names = None
    if not dropped:
        return []
    args.vm_list = None
    chosen = "-a" if args.all_vms else _names_given(args.vm_names)
    return ["%s overrides %s, as in ghettoVCB: %s backed up" % (
        chosen, " and ".join(dropped), "every VM is" if args.all_vms else "only the VM(s) -m names are")]


def _names_given(names: List[str]) -> str:
    return " ".join("-m %s" % name for name in names)


def selection(args) -> Tuple[Optional[Sequence[str]], Sequence[str]]:
    """(names or None for -a, excluded names): the list files are read now. Of -a, -m and -f given
    together, ghettoVCB's choice counts (`overridden`, which says it).

    A list naming no VM (only comments, say) is refused as a missing one is: a
    nightly run that backs up nothing by design is a mistake, and `schedule
    install` refuses the same list.
    """
    if not (args.all_vms or args.vm_list or args.vm_names):
        raise UsageError("say which VMs: -a (all), -f FILE or -m NAME")
    common.check_confdir(args.confdir)  # else every VM would fail on it: exit 6, not 1
    names = None if args.all_vms else (namelist.read_listed(args.vm_list) if args.vm_list else args.vm_names)
    exclude = namelist.read_names(args.exclude) if args.exclude else []
    return names, exclude


def check(args, target: "runtarget.Target") -> List[str]:
    """Everything a run checks before its first VM, and nothing changed on the host: the VMs to back up,
    the list files, the config, the command line (`prepare`), the log file (made, as the run makes it),
    that the host answers (as a user who may do the work), the backup target (the repository's too),
    and that every named VM is there. Used by `schedule install`; returns the warnings to show."""
    chosen = overridden(args)
    names, exclude = selection(args)
    settings, warnings = config.load_settings(args.global_conf)
    warnings += chosen
    common.check_output_paths(args, settings)
    settings = prepare(args, settings)
    if settings.log_level == "dryrun":
        warnings.append("%s: LOG_LEVEL=dryrun makes every run of this job a dry run, as in ghettoVCB: it never backs "
                        "anything up" % settings.where("log_level"))
    if args.log_file:
        open_log(args.log_file).close()  # as the run opens it (common.load): a folder or a pipe is refused
    try:
        host = common.connect(target)
        common.require_root(host, target.ssh is not None)
        preflight.refuse_run_format(host, settings)
        listed = host.list_vms()
    except HostError as err:
        raise HostError("cannot reach the host to check the job: %s" % err) from err
    present = [ref.name for ref in listed if not ref.template]
    templates = {ref.name for ref in listed if ref.template}
    unclear = [] if names is None else namelist.unclear(names, present + sorted(templates))
    if unclear:
        raise UsageError("; ".join(str(UnclearLine("-f", namelist.written(n), meant)) for n, meant in unclear))
    warnings += namelist.unclear_excluded(exclude, present + sorted(templates))
    exclude = namelist.fitted(exclude, present + sorted(templates))
    names = None if names is None else namelist.fitted(names, present + sorted(templates))
    missing = [n for n in (names or []) if n not in present and n not in exclude]
    if missing:
        raise UsageError("; ".join(str(TemplateVm(n) if n in templates else VmNotFound(n, present)) for n in missing))
    warnings += namelist.excluding_nothing(exclude, present + sorted(templates))
    warnings += [w for w in [mailgate.unsendable(settings)] if w]
    targets = {_target(settings)}
    for name in [n for n in (present if names is None else names) if n not in exclude]:
        vm_settings, vm_warnings = config.for_vm(settings, args.confdir, name)  # per-VM files parse too
        warnings += vm_warnings + [w for w in [config.dry_run_refused(vm_settings, settings.log_level == "dryrun")] if w]
        targets.add(_target(vm_settings))
    if settings.enable_non_persistent_nfs:
        warnings.append("the backups go to %s, on the NFS share mounted at run time (ENABLE_NON_PERSISTENT_NFS); "
                        "not checked now" % settings.vm_backup_volume)
    else:
        for repo, compression, path, create in sorted(targets):
            if repo:
                from ..jobs import repo_backup  # the repository's code only for a job that uses one

                repo_backup.check_target(host, repo, compression)
            else:
                volume.check(host, path, create)
    return warnings


def _target(s) -> Tuple[str, str, str, bool]:
    """Where a VM's backup goes, as `check` checks it: the repository, else the backup volume."""
    return s.vm_backup_repository, s.vm_backup_repository_compression, s.vm_backup_volume, s.create_vm_backup_volume


def prepare(args, settings):
    """The run's command line applied to its settings, and its own paths checked, before anything runs:
    by the run, and by `schedule install` (`check`), so that what the run refuses is refused at install,
    not at every scheduled run. Returns the settings the run uses."""
    if args.power_state:
        settings = dataclasses.replace(settings, backup_power_state=args.power_state)
    if args.parallel:
        settings = dataclasses.replace(settings, backup_parallel=args.parallel)
    if args.repo:
        if not args.repo.startswith("/"):  # as VM_BACKUP_REPOSITORY: relative to wherever cron or a shell runs us
            raise UsageError("--repo %s: an absolute path such as /vmfs/volumes/<datastore>/repo" % args.repo)
        settings = config.by_option(settings, "--repo", vm_backup_repository=args.repo)
    if args.json_report:
        _report_folder(args.json_report)
    return settings


def run(args) -> int:
    no_log = ""
    if not (args.log_file or args.outbox):  # ghettoVCB's "Logging output to ..." (an on-host run's log is the client's)
        args.log_file, no_log = common.default_log(args.workdir, common.dry_run_asked(args))
        if args.log_file:
            say('Logging output to "%s" ...' % args.log_file)
    settings, log = common.load(args, prepare)
    if no_log:
        log.warning(no_log)
    started = datetime.now().isoformat(timespec="seconds")
    dry_run = args.level == "dryrun"
    interrupt.install()
    for warning in overridden(args):  # said here: what it dropped is not sent to the host in SSH mode either
        log.warning(warning)
    try:  # once the config is read: a list file gone (its NAS not mounted after a reboot) is mailed as a failed run,
        names, exclude = selection(args)  # and a signal while a list's pipe is read ends it as an interrupted run
    except (UsageError, Interrupted) as err:
        log.error(str(err))
        return _deliver(args, settings, log, onhost.ended(args, log, started, "ERROR: %s" % err, err.exit_code,
                                                          args.host_target.name()),
                        interrupt.mark() if isinstance(err, Interrupted) else NONE_SAID)
    report = onhost.backup(args, log)  # SSH mode: the whole run on the host, where it can
    if report is not None:  # the signals passed on to the host are its report's, where it says it was interrupted
        return _deliver(args, settings, log, report,
                        interrupt.mark() if report.code == Interrupted.exit_code else NONE_SAID)
    no_mail = mailgate.unsendable(settings)  # said where the run runs (on the host, once)
    if no_mail:
        log.warning(no_mail)
    code = 1
    status = "ERROR: did not start"
    results = []  # type: list
    job = None  # type: Optional[BackupJob]
    lock = work = asked = nfs = None
    said = NONE_SAID
    host_name = args.host_target.name()
    try:
        host = common.connect(args.host_target, log)
        preflight.refuse_run_format(host, settings)  # the config's, before the lock: exit 1 with its file:line
        lock, run = common.lock_host(host, log, args.host_target)
        host_name = host.host_name()  # file by file over SSH: the ESXi host's name, not this Linux box's
        asked = RunStart(host, settings)  # the run's first questions, at once (jobs/ahead.py)
        work = WorkDir(args.workdir, run, settings.workdir_debug, log)
        log.info("============================== hotvcb LOG START ==============================")
        onhost.say_why_here(args, log)
        log.info("HOST: %s (%s), job %s, %s" % (host.shell.description, host.describe(), args.job_name, run))
        log.info("CONFIG: %s; %s" % (adminfile.shown_as(args.global_conf or "built-in defaults"), settings.summary()))
        if confkeys.repository_ignores(settings):
            log.warning(confkeys.repository_ignores(settings))
        if dry_run:
            log.info("DRY RUN: nothing will be changed")
        nfs = NfsTarget(host, settings, log, run, dry_run, lock.takeovers)
        with nfs:
            job = BackupJob(host, settings, log, run, asked=asked, lock=lock, confdir=args.confdir,
                            dry_run=dry_run, job_name=args.job_name, unmounted=nfs.would_mount)
            results = job.run(names, exclude)
        status, code = final_status(results, dry_run)
        for r in results:
            log.debug("%s: %s %s" % (r.name, r.status, r.message))
    except Interrupted as err:
        status, code, said = "ERROR: %s" % err, err.exit_code, interrupt.mark()
        results = list(job.results) if job is not None else results  # what the run got to
    except HotvcbError as err:
        onhost.say_why_here(args, log)  # a run stopped before its frame: why it went file by file, all the same
        log.error(str(err))
        status, code = "ERROR: %s" % err, err.exit_code
    finally:
        if asked is not None:
            asked.drop()
        if lock is not None:
            lock.release()
    for line in outcome.table(outcome.rows(results)) if results else []:
        log.info(line)
    down = [r.name for r in results if r.down]
    down += [n for n in (job.power.left_down if job is not None else []) if n not in down]
    if down:
        log.error("!!! VM(s) DOWN, powered off for a backup and NOT on again: %s !!!" % outcome.names(down))
        status = "VM DOWN: %s; %s" % (outcome.names(down), status)
        if code in (0, 3):
            code = 4  # a VM this run powered off is down: never an OK run
    if nfs is not None and nfs.left_mounted:  # after the VMs left down: a share's exit 9 must not hide one as "all OK"
        status, code = with_warning(status, code, nfs.left_mounted)
    return _deliver(args, settings, log, onhost.ended(args, log, started, status, code, host_name, results, work),
                    said)


NONE_SAID = (0, 0)  # interrupt.mark() of a status that says no signal


def _deliver(args, settings, log, report: "onhost.Report", said: Tuple[int, int]) -> int:
    """The JSON report and the mail, or (an on-host run) the outbox the SSH client does both from;
    their status and code count the log lost since the final status line (and over SSH, ours). `said`
    (interrupt.mark()): the signals the report's status already tells; one recorded since, at whatever point
    before the exit (after the run's last look at them, while or after the mail is sent), ends the run as
    interrupted too: exit 2, not the 0 of a run no one stopped."""
    _restate(log, report)
    said = _late(args, log, report, said, "as the run ended")
    _json_out(args, log, report)
    mailed = not args.outbox and mailgate.wanted(settings, report.code != 0)
    if mailed:
        from .. import notify  # smtplib, ssl, email: ~0.1 s of imports that a run without mail skips

        mail = notify.Mail(
            host=report.host, job=args.job_name, status_line=report.status, failed=report.code != 0,
            log_text=report.log_text, report_text=report.report_text, report_html=report.report_html)
        try:  # a relay that takes the connection and never answers held Ctrl-C and cron's SIGTERM for 30 s
            interrupt.unless_stopped(lambda: notify.send_report(settings, mail, logger=log), after=said)
        except Interrupted as err:
            log.warning("e-mail report not sent: %s while it was sent" % err)
            said = _stopped(args, log, report, err, "while the report was mailed")
    _late(args, log, report, said, "as the report was mailed" if mailed else "as the run ended")  # it went out
    if args.outbox:  # the SSH client's report and exit code: saved once no signal can change them
        try:
            report.save(args.outbox)
        except OSError as err:  # the host's end is gone (killed): no one to tell but our own log
            log.warning("cannot hand the run's report to the SSH client: %s" % (err.strerror or err))
    # a sink lost while the report and the mail were written (their lines): the exit code counts it too
    _status, code = log.account(report.status, report.code)
    log.close()
    return code


def _restate(log, report: "onhost.Report") -> None:
    """The report's status and code with the sinks lost since its final status line was said, and that line
    said again when they change it, in the log and the mail's copy of it: in SSH mode the line the terminal
    and cron read last is the host's, which knows nothing of this machine's -l lost on a full /var/log, and
    said "All VMs backed up OK!" of a run that exits 9 (README: such a run's status starts with the warning)."""
    status, code = log.account(report.status, report.code)
    if status == report.status:
        return
    report.status, report.code = status, code
    said = len(log.lines)
    log.info("###### Final status: %s ######" % status)
    report.log_text = "\n".join([report.log_text] + log.lines[said:])


def _late(args, log, report: "onhost.Report", said: Tuple[int, int], when: str) -> Tuple[int, int]:
    """The report stopped by a signal recorded since `said`, if one was (`_stopped`); what it says now."""
    try:
        interrupt.raise_pending(after=said)
    except Interrupted as err:
        return _stopped(args, log, report, err, when)
    return said


def _json_out(args, log, report: "onhost.Report") -> None:
    """The JSON report with the report's status and code, if the run writes one."""
    report.json_report.update(status=report.status, exit_code=report.code)
    said = len(log.lines)
    if args.json_report and not _write_json_report(args.json_report, log, report.json_report):
        # as a lost log: said in the status the mail gives, exit 9 for a run otherwise OK (the monitoring that
        # reads the report sees nothing, or an old run), and in a final status line said again (as _restate
        # does): the last one the log and cron's grep read said "All VMs backed up OK!" of a run that exits 9
        report.status, report.code = with_warning(report.status, report.code,
                                                  "the JSON report could not be written to %s" % args.json_report)
        log.info("###### Final status: %s ######" % report.status)
        report.log_text = "\n".join([report.log_text] + log.lines[said:])


def _stopped(args, log, report: "onhost.Report", err: Interrupted, when: str) -> Tuple[int, int]:
    """A signal once the run had ended (`when`: as it ended, while the report was mailed) ends the run as a
    signal ends it elsewhere: exit 2 and a final status saying so, in the log and the JSON report. The run's
    own status is kept after it: the backups it reports stand. Returns the signals its status now says."""
    report.status, report.code = "ERROR: %s %s; the run had ended: %s" % (err, when, report.status), err.exit_code
    log.info("###### Final status: %s ######" % report.status)
    _json_out(args, log, report)
    return interrupt.mark()


def _report_folder(path: str) -> None:
    """The JSON report's folder, made now as -l's is (a typo'd or not yet made folder is found before the run,
    not by a warning after its last line). The report is written whole, by a rename over the path: a path
    that is not a file (a folder, a pipe or /dev/stdout, which the rename would replace) is refused."""
    if path.endswith("/") or os.path.isdir(path):
        raise UsageError("--json-report %s is a folder; name the report's file" % path)
    if os.path.exists(path) and not os.path.isfile(path):
        raise UsageError("--json-report %s is not a regular file (a pipe or a device); name a file, which is "
                         "written whole when the run ends" % path)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as err:
        raise UsageError("--json-report %s: cannot make its folder: %s" % (path, err.strerror or err)) from err


def _write_json_report(path: str, log, data) -> bool:
    """For machines (monitoring, dashboards); written whole or not at all (False, said)."""
    tmp = "%s.%d.tmp" % (path, os.getpid())
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, ensure_ascii=False)
            f.write("\n")
        os.replace(tmp, path)
        return True
    except OSError as err:
        log.warning("cannot write the JSON report %s: %s" % (path, err.strerror or err))
        try:
            os.unlink(tmp)
        except OSError:
            pass
        return False
