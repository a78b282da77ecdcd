"""`hotvcb schedule install|remove|show`: run backups unattended, also after a reboot."""

import argparse
import os
import stat
import sys
from typing import List, Optional, Tuple

from .. import schedule
from ..errors import HostError, UsageError
from ..runlog import open_log, say
from ..schedule import cron, esxi, linux
from . import backup_cmd, cmdline, runtarget, schedule_hosts


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "schedule", help="install, remove or show a scheduled backup (ESXi cron, Linux crontab or systemd timer)"
    )
    sub = p.add_subparsers(dest="action", metavar="ACTION")

    inst = sub.add_parser(
        "install", help="add (or replace) a scheduled backup job",
        description="Example: hotvcb schedule install --cron \"0 17 * * 4\" -- "
        "-f /vmfs/volumes/ds/vms_to_backup -g /vmfs/volumes/ds/hotvcb.conf",
    )
    inst.add_argument("--cron", required=True, metavar="EXPR", help='when, as a cron expression, e.g. "0 17 * * 4"')
    inst.add_argument("--log", metavar="FILE", help="append the job's output to FILE (default /var/log/hotvcb-JOB.log)")
    inst.add_argument("--systemd", action="store_true", help="Linux: a systemd .service + .timer instead of crontab")
    _common(inst)
    inst.add_argument("backup_args", nargs=argparse.REMAINDER, metavar="-- BACKUP ARGS",
                      help="arguments for hotvcb backup; global options (--qemu, --host, ...) may stand here "
                      "too. They are checked as the run checks them (config, lists, target, host) first")
    inst.set_defaults(handler=run_install)

    rem = sub.add_parser("remove", help="remove a scheduled job and what keeps it across reboots")
    rem.add_argument("--all", dest="all_jobs", action="store_true", help="every hotvcb job")
    rem.add_argument("--systemd", action="store_true", help="Linux: the systemd timer instead of crontab")
    _common(rem)
    rem.set_defaults(handler=run_remove)

    show = sub.add_parser("show", help="show the scheduled jobs and whether they survive a reboot")
    show.add_argument("--systemd", action="store_true", help="Linux: systemd timers instead of crontab")
    _common(show)
    show.set_defaults(handler=run_show)
    p.set_defaults(handler=lambda args: _usage(p))


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--job", metavar="NAME", help="job name (default %s; for an SSH host, --host, the host's "
                   "name, so each host has a job of its own)" % schedule.DEFAULT_JOB)
    p.add_argument("--platform", choices=("auto", "esxi", "linux"), default="auto", help=argparse.SUPPRESS)
    p.add_argument("--unit-dir", default=linux.UNIT_DIR, help=argparse.SUPPRESS)


def _usage(p: argparse.ArgumentParser) -> int:
    p.print_help(sys.stderr)
    return 1


def _warn(msg: str) -> None:
    say("hotvcb: warning: %s" % msg, stream=sys.stderr)


def _on_esxi(args) -> bool:
    if args.platform != "auto":
        return args.platform == "esxi"
    return esxi.is_esxi()


def _scheduler(args, on_esxi: bool, change: bool = True):
    if on_esxi:
        if args.systemd:
            raise UsageError("--systemd is for Linux; ESXi has busybox crond only")
        if os.geteuid() != 0:
            raise UsageError("hotvcb schedule must run as root on ESXi (this is uid %d): the job goes into root's "
                             "crontab %s, crond is restarted, and %s keeps it across reboots"
                             % (os.geteuid(), esxi.CRONTAB, esxi.LOCAL_SH))
        return esxi.EsxiScheduler(warn=_warn)
    if args.systemd:
        folder = args.unit_dir if os.path.isdir(args.unit_dir) else os.path.dirname(args.unit_dir.rstrip("/"))
        if change and os.geteuid() != 0 and not os.access(folder, os.W_OK):
            raise UsageError("hotvcb schedule --systemd must run as root (this is uid %d): the .service and "
                             ".timer go into %s and systemctl enables them" % (os.geteuid(), args.unit_dir))
        return linux.SystemdScheduler(unit_dir=args.unit_dir, warn=_warn)
    return linux.CrontabScheduler()


def split_job_args(words: List[str]) -> Tuple[List[str], List[str]]:
    """What follows `--`: (global options such as --qemu DIR / --host H, the backup arguments), read as
    the run will read them (`backup_cmd.split_global_options`)."""
    words = list(words)
    if words and words[0] == "--":
        words = words[1:]
    return backup_cmd.split_global_options(cmdline.glue_dash_values(words))  # `-m -web` as the run reads it


def job_command(args):
    """(where the job runs, the backup arguments as written), global options from either side of `--`."""
    glob, rest = split_job_args(args.backup_args)
    if not rest:
        raise UsageError("say what to back up after --, e.g. -- -a -g /vmfs/volumes/ds/hotvcb.conf")
    try:
        parsed = backup_cmd.parse(glob + rest)
    except UsageError as err:
        raise UsageError("the backup arguments are not valid: %s" % err) from None
    inner = runtarget.target_of(parsed)
    outer = runtarget.target_of(args)
    if inner and outer and inner != outer:
        raise UsageError("the job's target is given twice (before `schedule` and after --) and differently; "
                         "give --qemu / --host once")
    return (inner or outer), rest, parsed


def _refuse_piped_lists(parsed) -> None:
    """A backup reads `-f <(...)` once (ghettoVCB's `cat`); a job would be installed with `/dev/fd/63`,
    which names nothing when cron starts it."""
    for option, path in (("-f", parsed.vm_list), ("-e", parsed.exclude)):
        try:
            piped = bool(path) and stat.S_ISFIFO(os.stat(path).st_mode)
        except OSError:
            piped = False  # the backup's own check names a missing list
        if piped:
            raise UsageError("%s %s is a pipe: a scheduled job reads its list every time it runs; give a file"
                             % (option, path))


def job_name(args, target: runtarget.Target) -> str:
    """`--job`, or the default for the job's target (`schedule.default_job`: an SSH host's own name).
    `--job ""` (a variable left empty in a script) is a name, refused: taken for no --job, it removed
    or replaced the default job `hotvcb`, the production one."""
    if args.job is not None:
        return schedule.check_job_name(args.job)
    ssh = target.ssh
    return schedule.default_job(ssh.hostname if ssh else None, ssh.port if ssh else None)


def run_install(args) -> int:
    on_esxi = _on_esxi(args)
    if args.job is not None:
        schedule.check_job_name(args.job)  # a bad name is refused before the slower checks
    expr = cron.parse(args.cron, busybox=on_esxi).text
    if args.systemd:
        cron.to_oncalendar(expr)  # a form a timer cannot express is refused before the slower checks
    target, rest, parsed = job_command(args)
    _refuse_piped_lists(parsed)
    name = job_name(args, target)
    words = schedule.backup_argv(rest)
    sched = _scheduler(args, on_esxi)  # may refuse (not root) before the host is asked
    for w in backup_cmd.check(parsed, target):  # the run's own checks, with the paths as written
        _warn(w)
    if parsed.level == "dryrun":  # installed as given (a test of cron itself), but never silently
        _warn("the job runs with -d dryrun: it never backs anything up; install it without -d dryrun "
              "for real backups")
    argv = schedule.self_command(on_esxi) + runtarget.target_argv(target, schedule.absolute) + words
    log = None if args.systemd else schedule.default_log(name, on_esxi)  # type: Optional[str]
    if args.log:
        log = schedule.absolute(args.log)
    if log is not None:
        _check_log(log, given=bool(args.log))
    job = schedule.Job(name, expr, argv, log, schedule.carried_env())
    if on_esxi:
        _warn_ramdisk(parsed, log)
    others = [] if target.ssh is None else schedule_hosts.jobs_of_host(sched, on_esxi, name,
                                                                        target.ssh.destination, target.ssh.port)
    now = {schedule_hosts.host_key(target.ssh.destination, target.ssh.port)} if target.ssh else set()
    dropped = sorted(set().union(*[schedule_hosts.hosts_in(e.text) for e in schedule_hosts.installed(sched, on_esxi)
                                   if e.job == name]) - now)
    result = sched.install(job)
    if args.systemd:
        say("installed %s.timer (OnCalendar=%s) running: %s" % (linux.unit_name(name), result, schedule.shell_line(argv)))
    else:
        say("installed job %s: %s" % (name, result))
        if on_esxi:
            say("persisted in %s (re-added and crond restarted at boot)" % sched.boot_file())
    if not on_esxi:
        _take_from_other(args, name, sched)
    if dropped:  # `--job NAME` of another host's job: that host has lost its nightly backup
        _warn("job %s backed up %s until now and backs up %s from now on: %s no longer backed up by it "
              "(give each host a job of its own: --job another name, or none for the host's own)" % (
                  name, ", ".join("%s:%d" % h for h in dropped), target.ssh.describe() if target.ssh else "this host",
                  "that host is" if len(dropped) == 1 else "those hosts are"))
    if others:
        older = " (an older hotvcb named every job `%s`)" % schedule.DEFAULT_JOB if schedule.DEFAULT_JOB in others else ""
        removes = " and ".join("`hotvcb schedule remove%s --job %s`" % (" --systemd" if args.systemd else "", o)
                               for o in others)
        _warn("job%s %s also back%s up %s%s: remove %s with %s unless both are meant to run"
              % ("s" if len(others) > 1 else "", ", ".join(others), "" if len(others) > 1 else "s",
                 target.ssh.describe(), older, "them" if len(others) > 1 else "it", removes))
    return 0


def _warn_ramdisk(parsed, log: Optional[str]) -> None:
    """ESXi: the program and the files the job reads each night, where they lie on the in-memory root (a pyz
    tried out of /tmp, then scheduled from there): local.sh puts the line back after a reboot, and it then
    runs a file that is gone, every night, into a log no one reads. The log's folder too, unless the image
    makes it at boot (esxi.BOOT_FOLDERS): gone, cron's `>> LOG` fails and the backup never starts."""
    folder = os.path.dirname(log) if log else None
    if folder and folder not in esxi.BOOT_FOLDERS and esxi.on_ramdisk(folder):
        _warn("the job's log %s is in a folder on ESXi's ramdisk, not on a datastore (%s...): after a reboot the "
              "folder is gone, the line's `>> LOG` fails and the backup never starts, every night, with no log; "
              "give --log a file on a datastore" % (log, esxi.DATASTORES))
    program = schedule.running_pyz() or schedule.source_root()
    inputs = [program] + [getattr(parsed, dest, None) for dest in ("vm_list", "exclude", "global_conf", "confdir")]
    for path in [schedule.absolute(p) for p in inputs if p]:
        if esxi.on_ramdisk(path):
            _warn("%s is on ESXi's ramdisk, not on a datastore (%s...): it is gone after a reboot, while the job's "
                  "line comes back and fails every night; put it on a datastore and install from there"
                  % (path, esxi.DATASTORES))


def _check_log(log: str, given: bool) -> None:
    """The job's log checked now: a folder (or a pipe) given, or a default `~/.hotvcb-JOB.log` under a home
    folder never made (a service user's, `useradd -r`), fails cron's `>> LOG` every night, and the shell then
    never starts the backup: no run, no log, no mail. `--log FILE` is made now, as -l's file (its folder
    too); the default one is left to the job's first run, and only its folder must be there to take it (an
    existing file is judged as -l's)."""
    if given or os.path.lexists(log):
        open_log(log).close()
        return
    folder = os.path.dirname(log)
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError("the job's default log %s cannot be made: its folder %s %s; give the job a log it can "
                         "write: --log FILE" % (log, folder, "is not writable" if os.path.isdir(folder)
                                                else "does not exist"))


def _other_scheduler(args):
    """Linux: the scheduler this command did not pick, the crontab for --systemd, the systemd timers without
    it. A job name is one job: installed in both, the job runs twice a night."""
    return linux.CrontabScheduler() if args.systemd else linux.SystemdScheduler(unit_dir=args.unit_dir, warn=_warn)


def _scheduler_name(systemd: bool, job: Optional[str]) -> str:
    """The crontab, or job's systemd timer (systemd timers, for no one job)."""
    if not systemd:
        return "the crontab"
    return "a systemd timer (%s.timer)" % linux.unit_name(job) if job else "systemd timers"


def _other_name(args, job: Optional[str]) -> str:
    return _scheduler_name(not args.systemd, job)


def _jobs_elsewhere(args, job: Optional[str]) -> List[str]:
    """The jobs (`job`, or all when None) the other Linux scheduler holds; none where it cannot be read (no
    crontab(1) on a systemd-only box, a cron refusing this user): only the scheduler the command was given
    is one it must read, and its failure is the command's error."""
    try:
        return sorted({e.job for e in _other_scheduler(args).status() if job is None or e.job == job})
    except (HostError, OSError):
        return []


def _take_from_other(args, name: str, sched) -> None:
    """After an install, the same job taken out of the other scheduler (moved from the crontab to a timer,
    or back): left there, both started the backup every night, one failing on the run lock or, minutes
    apart, the two rotating the kept backups away twice as fast. A user's crontab job leaves the timer of
    the same name, root's (it may be another job), alone: said, not done. A timer not known to be enabled
    (systemd not running here, systemctl missing: only warned about) leaves the crontab's job where it is:
    taken out, the job ran nowhere while install said it ran from the timer."""
    if not _jobs_elsewhere(args, name):
        return
    other, remove = _other_name(args, name), "hotvcb schedule remove%s --job %s" % ("" if args.systemd else " --systemd",
                                                                                       name)
    if args.systemd and sched.enabled(name) is not True:
        _warn("job %s stays in %s too: its timer is not enabled here; once it is (`systemctl enable --now %s.timer`), "
              "both run it: then take it out with `%s`" % (name, other, linux.unit_name(name), remove))
        return
    if not args.systemd and os.geteuid() != 0:
        _warn("job %s is also installed as root's %s: both run it; remove one (as root: `%s`)" % (name, other, remove))
        return
    try:
        _other_scheduler(args).remove(name)
    except (HostError, OSError) as err:
        _warn("job %s is also installed in %s and could not be taken out there (%s): both run it; remove it "
              "with `%s`" % (name, other, err, remove))
        return
    say("job %s taken out of %s: it runs from the %s only" % (name, other, "systemd timer" if args.systemd else "crontab"))


def run_remove(args) -> int:
    if args.all_jobs and args.job is not None:  # --all silently won: `--job daily --all` removed weekly too
        raise UsageError("schedule remove: give --job %s or --all, not both" % args.job)
    on_esxi = _on_esxi(args)
    job = None if args.all_jobs else job_name(args, runtarget.target_of(args))
    sched = _scheduler(args, on_esxi)
    found = sched.remove(job)
    elsewhere = [] if on_esxi else _jobs_elsewhere(args, job)
    # said where the job still runs: "nothing to remove" while a timer (or the crontab) backed up every night
    still = "%s %s %s: remove %s with `hotvcb schedule remove%s %s`" % (
        _other_name(args, None), "holds" if args.systemd else "hold", ", ".join(elsewhere),
        "it" if len(elsewhere) == 1 else "them", "" if args.systemd else " --systemd",
        "--all" if job is None else "--job %s" % job)
    if elsewhere and not found:
        raise UsageError("no hotvcb job %s in %s; %s" % ("at all" if job is None else repr(job),
                                                         _scheduler_name(args.systemd, None), still))
    if not found:
        there = sorted({e.job for e in schedule_hosts.installed(sched, on_esxi)})
        say("no hotvcb job %s installed; nothing to remove%s" % (
            "at all" if job is None else repr(job), " (installed: %s; say which with --job)" % ", ".join(there)
            if there else ""))
        return 0
    say("removed job(s): %s" % ", ".join(found))
    if elsewhere:
        _warn("still scheduled: " + still)
    return 0


def run_show(args) -> int:
    if args.job is not None:
        schedule.check_job_name(args.job)
    on_esxi = _on_esxi(args)
    sched = _scheduler(args, on_esxi, change=False)
    if not on_esxi:
        return 0 if _show_linux(args, sched) else 1
    status = sched.status()
    jobs = sorted({e.job for e in status.entries if _asked(args, e.job)})
    if not jobs:
        say(_none_installed(args))
    for name in jobs:
        lines = [e for e in status.entries if e.job == name and e.where == esxi.CRONTAB]
        blocks = [e for e in status.entries if e.job == name and e.where != esxi.CRONTAB]
        say("job %s" % name)
        if lines:
            for e in lines:
                say("  cron line in %s:\n    %s" % (esxi.CRONTAB, e.text))
        else:
            say("  cron line: MISSING from %s (not active until the next boot re-adds it)" % esxi.CRONTAB)
        if blocks:
            same = bool(lines) and all(_quoted(lines[0].text) in b.text for b in blocks)
            say("  boot block in %s: present%s" % (status.boot_file, "" if same or not lines else " (re-adds a different line; re-run install)"))
        else:
            say("  boot block in %s: MISSING" % status.boot_file)
        say("  survives a reboot: %s" % _survives(bool(blocks), status.secure_boot,
                                                    status.boot_file if name in status.unreached else "",
                                                    status.boot_file, status.windows_ends))
    say("crond: %s" % ("running" if status.crond_running else "NOT running (no job will start)"))
    if status.secure_boot:
        _warn("UEFI Secure Boot is enabled: ESXi does not run %s at boot" % status.boot_file)
    return 0 if jobs or args.job is None else 1


def _asked(args, job: str) -> bool:
    """Whether `show` is to show `job`: all, or the one --job names."""
    return args.job is None or job == args.job


def _none_installed(args, where: str = "installed") -> str:
    """A job asked for by name and not there says so plainly, and `show` then exits 1: a script asking
    whether its job is installed (or an admin's typo) is not told yes by exit 0."""
    if args.job is None:
        return "no hotvcb jobs %s" % where
    return "hotvcb job %r is not installed%s" % (args.job, "" if where == "installed" else " " + where)


def _show_linux(args, sched) -> bool:
    """The crontab's jobs, or the systemd timers' (each saying whether its timer is enabled), and the jobs
    the other one holds named: `show` said "no hotvcb jobs installed" while a timer ran the job. False: the
    job --job names is in neither."""
    entries = [e for e in sched.status() if _asked(args, e.job)]
    elsewhere = _jobs_elsewhere(args, args.job)
    if not entries:
        say(_none_installed(args, "in " + _scheduler_name(args.systemd, None) if elsewhere else "installed"))
    for name in sorted({e.job for e in entries}):
        for e in entries:
            if e.job == name:
                say("job %s in %s:\n  %s" % (e.job, e.where, e.text.replace("\n", "\n  ")))
        if args.systemd:
            say("  survives a reboot: %s" % _timer_survives(sched.enabled(name), linux.unit_name(name)))
    if entries and not args.systemd:
        say("survives a reboot: yes (crontab is on disk)")
    if elsewhere:
        say("also in %s: %s (see `hotvcb schedule show%s`)" % (_other_name(args, None), ", ".join(elsewhere),
                                                               "" if args.systemd else " --systemd"))
    return bool(entries or elsewhere or args.job is None)


def _timer_survives(enabled: Optional[bool], unit: str) -> str:
    """A timer's unit files are on disk; it runs (now and after a reboot) only enabled."""
    if enabled:
        return "yes (%s.timer is enabled; systemd units are files on disk)" % unit
    if enabled is None:
        return "cannot tell (whether %s.timer is enabled: `systemctl is-enabled %s.timer`)" % (unit, unit)
    return "no (%s.timer is not enabled, so it never runs: `systemctl enable --now %s.timer`)" % (unit, unit)


def _quoted(line: str) -> str:
    return schedule.shell_line([line])


def _survives(block: bool, secure_boot, below_exit: str, boot: str, crlf: int) -> str:
    """`below_exit`: the boot file whose `exit` line comes before the block (the shell never reaches it);
    `crlf`: the first command line of the boot file `boot` with a CR LF end (0: none), which sh does not run
    as written."""
    if not block:
        return "no (no boot block)"
    if crlf:
        return "no (%s is saved with Windows (CRLF) line ends: its line %d, a command, ends in a CR, which sh " \
               "does not run as written; convert it with `%s`)" % (boot, crlf, esxi.crlf_fix(boot))
    if below_exit:
        return "no (the boot block is below an `exit` line of %s, so it never runs; re-run install to move it " \
               "above)" % below_exit
    if secure_boot:
        return "no (UEFI Secure Boot is on, so ESXi skips local.sh)"
    if secure_boot is None:
        return "yes, unless UEFI Secure Boot is on (could not tell)"
    return "yes"
