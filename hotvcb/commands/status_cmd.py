"""`hotvcb status`: every VM's backups, every snapshot, every datastore — one line each.

Exit codes follow the monitoring plugins' convention (Nagios, Icinga, Zabbix):
0 OK, 1 WARN, 2 CRIT, 3 UNKNOWN (the host or the config could not be read).
`--json` prints the report documented in docs/operations.md.
"""

import dataclasses
import sys
from typing import Any, Dict, List

from .. import config, interrupt, namelist
from ..errors import HotvcbError, Interrupted
from ..jobs.status import host_status
from ..jobs.status_report import RANK, Check, Limits
from ..runlog import say, say_json, shown
from ..units import parse_duration
from . import common, onhost, runtarget

UNKNOWN = 3


def register(subparsers) -> None:
    p = subparsers.add_parser("status", help="the state of the host's backups, snapshots and datastores, "
                              "with a monitoring exit code (0 OK, 1 WARN, 2 CRIT, 3 UNKNOWN)")
    p.add_argument("-g", dest="global_conf", metavar="FILE", help="global config (VM_BACKUP_VOLUME, format)")
    p.add_argument("-f", dest="vm_list", metavar="FILE", help="only the VMs in this list (a missing one is CRIT)")
    p.add_argument("-e", dest="exclude", metavar="FILE", help="leave these VMs out")
    common.add_confdir_option(p, "a VM whose file sets VM_BACKUP_VOLUME or VM_BACKUP_REPOSITORY has its "
                              "backups looked for there")
    p.add_argument("--json", action="store_true", help="machine-readable report")
    p.add_argument("--hosts", metavar="FILE", help="every host in FILE (one [user@]host[:port] a line) over SSH, "
                   "with --identity/--known-hosts/--ssh-option; the worst host decides the exit code")
    p.add_argument("--max-age", default="26h", metavar="AGE",
                   help="a VM's newest good backup older than this is WARN, twice as old CRIT (default 26h)")
    p.add_argument("--snapshot-age", default="24h", metavar="AGE",
                   help="a user snapshot older than this is WARN (default 24h)")
    p.add_argument("--power-state", type=str.lower, choices=("on", "off", "suspended", "any"),
                   help="as the backup's --power-state: a VM the job skips for its power state is said to be "
                   "skipped, not judged by its backups (overrides BACKUP_POWER_STATE)")
    common.add_repo_option(p)
    p.usage_exit = 3  # a bad command line is UNKNOWN to a monitor, not WARN
    onhost.add_option(p)
    p.set_defaults(handler=run, catches_signals=True)  # a signal is UNKNOWN, said (run)


def run(args) -> int:
    """Stopped by a signal (a monitor's timeout, Ctrl-C) the check is UNKNOWN, said as every UNKNOWN is
    (operations.md): on SSH the run on the host is told the signal and says it; here the hosts are read
    `interrupt.unless_stopped`."""
    try:
        if not args.hosts:
            code = onhost.command(args, UNKNOWN)
            if code is not None:
                return code
        return _many(args) if args.hosts else _here(args)
    except (HotvcbError, Interrupted) as err:
        return _say_unknown(args, str(err))


def _here(args) -> int:
    """This machine's (or, file by file over SSH, the host's) status; run says its errors UNKNOWN."""
    settings, warnings = _settings(args)
    limits, names, exclude = _scope(args)
    settings_of = common.per_vm_settings(settings, args.confdir, warnings)
    report = _read(args.host_target, settings, limits, names, exclude, settings_of)
    if args.json:
        say_json(report.as_dict(), indent=2)
    else:
        for w in warnings:
            say("hotvcb: warning: %s" % w, stream=sys.stderr)
        say(_headline(report.severity, report.host, report.checks))
        for c in sorted(report.checks, key=lambda c: -RANK[c.severity]):
            say(c.line())
    return RANK[report.severity]


def _settings(args):
    """The job's settings as its backup command line makes them (`--repo`, `--power-state`), and the config's
    warnings."""
    settings, warnings = config.load_settings(args.global_conf)
    if args.repo:
        settings = config.by_option(settings, "--repo", vm_backup_repository=args.repo)
    if args.power_state:
        settings = dataclasses.replace(settings, backup_power_state=args.power_state)
    return settings, warnings


def _say_unknown(args, message: str) -> int:
    """The UNKNOWN of a status that could not be had, as operations.md shows it; a host list's JSON has
    its `hosts` where one host's has its `checks`."""
    if args.json:
        say_json({"status": "UNKNOWN", "message": message, "hosts" if args.hosts else "checks": []})
    else:
        say(_unknown(message))
    return UNKNOWN


def _read(target, settings, limits, names, exclude, settings_of):
    """One host's report, read `interrupt.unless_stopped`: a signal meanwhile is the check's UNKNOWN (run)."""
    return interrupt.unless_stopped(lambda: host_status(common.connect(target), settings, limits, names, exclude,
                                                        settings_of=settings_of))


def _scope(args):
    limits = Limits(max_age=parse_duration(args.max_age), snapshot_age=parse_duration(args.snapshot_age))
    names = namelist.read_listed(args.vm_list) if args.vm_list else None  # none named: nothing watched, not OK
    exclude = namelist.read_names(args.exclude) if args.exclude else []
    return limits, names, exclude


def _unknown(message: str) -> str:
    """The one line of a status that could not be had: the message may quote the host or a file (a path, a
    command's output), escaped as one field so it stays one line."""
    return "UNKNOWN: %s" % shown(message, field=True)


def _headline(severity: str, host: str, checks) -> str:
    counts = {s: sum(1 for c in checks if c.severity == s) for s in RANK}
    return "%s: %s -- %d CRIT, %d WARN, %d OK" % (severity, shown(host, field=True), counts["CRIT"], counts["WARN"],
                                                  counts["OK"])


def _many(args) -> int:
    """Every host of a list: one report each; CRIT anywhere is CRIT, else an unreachable host is UNKNOWN."""
    settings, _warnings = _settings(args)
    limits, names, exclude = _scope(args)
    settings_of = common.per_vm_settings(settings, args.confdir, _warnings)
    hosts = runtarget.targets_in(args.hosts, args)
    reports = []  # type: List[Dict[str, Any]]
    for line, target in hosts:
        try:
            report = _read(target, settings, limits, names, exclude, settings_of)
            reports.append(dict(report.as_dict(), host=line, describe=report.host))
        except HotvcbError as err:
            reports.append({"host": line, "status": "UNKNOWN", "message": str(err), "checks": []})
    states = [r["status"] for r in reports]
    worst = "CRIT" if "CRIT" in states else "UNKNOWN" if "UNKNOWN" in states else "WARN" if "WARN" in states else "OK"
    if args.json:
        say_json({"status": worst, "hosts": reports}, indent=2)
    else:
        say("%s: %d host(s) -- %s" % (worst, len(reports), ", ".join(
            "%s %s" % (shown(r["host"], field=True), r["status"]) for r in reports)))
        for r in reports:
            if r["status"] == "UNKNOWN":
                say("UNKNOWN %s: %s" % (shown(r["host"], field=True), shown(r["message"], field=True)))
                continue
            for c in sorted(r["checks"], key=lambda c: -RANK[c["severity"]]):
                say(Check(**c).line(r["host"]))
    return UNKNOWN if worst == "UNKNOWN" else RANK[worst]
