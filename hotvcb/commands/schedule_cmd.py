"""`hotvcb schedule install|remove|show`: run backups unattended, also after a reboot."""

import argparse
import sys

from .. import schedule
from ..errors import UsageError
from ..schedule import cron, esxi, linux


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
    inst.add_argument("backup_args", nargs=argparse.REMAINDER, metavar="-- BACKUP ARGS", help="arguments for hotvcb backup")
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
    p.add_argument("--job", default=schedule.DEFAULT_JOB, metavar="NAME", help="job name (default %(default)s)")
    p.add_argument("--platform", choices=("auto", "esxi", "linux"), default="auto", help=argparse.SUPPRESS)
    p.add_argument("--unit-dir", default=linux.UNIT_DIR, help=argparse.SUPPRESS)


def _usage(p: argparse.ArgumentParser) -> int:
    p.print_help(sys.stderr)
    return 1


def _warn(msg: str) -> None:
    print("hotvcb: warning: %s" % msg, file=sys.stderr)


def _on_esxi(args) -> bool:
    if args.platform != "auto":
        return args.platform == "esxi"
    return esxi.is_esxi()


def _scheduler(args, on_esxi: bool):
    if on_esxi:
        if args.systemd:
            raise UsageError("--systemd is for Linux; ESXi has busybox crond only")
        return esxi.EsxiScheduler(warn=_warn)
    if args.systemd:
        return linux.SystemdScheduler(unit_dir=args.unit_dir, warn=_warn)
    return linux.CrontabScheduler()


def run_install(args) -> int:
    on_esxi = _on_esxi(args)
    name = schedule.check_job_name(args.job)
    expr = cron.parse(args.cron).text
    remote = schedule.remote_argv(getattr(args, "host", None), getattr(args, "port", None),
                                  getattr(args, "identity", None), getattr(args, "known_hosts", None),
                                  getattr(args, "ssh_option", None) or [])
    if remote and on_esxi:
        raise UsageError("--host schedules a backup of another host from this one; run it from Linux, "
                         "or install the schedule on the ESXi host itself without --host")
    argv = schedule.self_command(on_esxi) + remote + schedule.backup_argv(args.backup_args)
    log = args.log or (None if args.systemd else schedule.default_log(name, on_esxi))
    job = schedule.Job(name, expr, argv, log)
    sched = _scheduler(args, on_esxi)
    result = sched.install(job)
    if args.systemd:
        print("installed %s.timer (OnCalendar=%s) running: %s" % (linux.unit_name(name), result, schedule.shell_line(argv)))
    else:
        print("installed job %s: %s" % (name, result))
        if on_esxi:
            print("persisted in %s (re-added and crond restarted at boot)" % sched.boot_file())
    return 0


def run_remove(args) -> int:
    on_esxi = _on_esxi(args)
    job = None if args.all_jobs else schedule.check_job_name(args.job)
    found = _scheduler(args, on_esxi).remove(job)
    if not found:
        print("no hotvcb job %s installed; nothing to remove" % ("at all" if job is None else repr(job)))
        return 0
    print("removed job(s): %s" % ", ".join(found))
    return 0


def run_show(args) -> int:
    on_esxi = _on_esxi(args)
    sched = _scheduler(args, on_esxi)
    if not on_esxi:
        entries = sched.status()
        if not entries:
            print("no hotvcb jobs installed")
        for e in entries:
            print("job %s in %s:\n  %s" % (e.job, e.where, e.text.replace("\n", "\n  ")))
        if entries:
            print("survives a reboot: yes (%s)" % ("systemd units are files on disk" if args.systemd else "crontab is on disk"))
        return 0
    status = sched.status()
    jobs = sorted({e.job for e in status.entries})
    if not jobs:
        print("no hotvcb jobs installed")
    for name in jobs:
        lines = [e for e in status.entries if e.job == name and e.where == esxi.CRONTAB]
        blocks = [e for e in status.entries if e.job == name and e.where != esxi.CRONTAB]
        print("job %s" % name)
        if lines:
            for e in lines:
                print("  cron line in %s:\n    %s" % (esxi.CRONTAB, e.text))
        else:
            print("  cron line: MISSING from %s (not active until the next boot re-adds it)" % esxi.CRONTAB)
        if blocks:
            same = bool(lines) and all(_quoted(lines[0].text) in b.text for b in blocks)
            print("  boot block in %s: present%s" % (status.boot_file, "" if same or not lines else " (re-adds a different line; re-run install)"))
        else:
            print("  boot block in %s: MISSING" % status.boot_file)
        print("  survives a reboot: %s" % _survives(bool(blocks), status.secure_boot))
    print("crond: %s" % ("running" if status.crond_running else "NOT running (no job will start)"))
    if status.secure_boot:
        _warn("UEFI Secure Boot is enabled: ESXi does not run %s at boot" % status.boot_file)
    return 0


def _quoted(line: str) -> str:
    return schedule.shell_line([line])


def _survives(block: bool, secure_boot) -> str:
    if not block:
        return "no (no boot block)"
    if secure_boot:
        return "no (UEFI Secure Boot is on, so ESXi skips local.sh)"
    if secure_boot is None:
        return "yes, unless UEFI Secure Boot is on (could not tell)"
    return "yes"
