"""`hotvcb cleanup`: undo what a killed run left behind (a dead run's only).

`--kvm DIR` looks only in DIR, a `restore --kvm` or `restore --to DIR/NAME` target on this machine
(and, for a DIR on a datastore, at its root, where `--to` keeps its records): a `--kvm` folder is on no
host's datastore, so the host's cleanup cannot find the records there, and it needs no host lock
(restores take none). It names, and leaves, a restore's unfinished VM folder no record names: what
refuses a restore into DIR, whose refusal sends the admin here. It also removes the work folders killed `restore --kvm` runs left in this
machine's temp folder (tmpwork.py): the next restore --kvm would, but a machine that restored once
after a disaster may never run another.
"""

import argparse
import os
from typing import List

from .. import interrupt, tmpwork
from ..errors import UsageError
from ..jobs import nfs, restore_sweep
from ..jobs.host_cleanup import cleanup_host
from ..jobs.restore_scratch import records_roots_of
from ..jobs.snapshot_asked import snapshot_patience
from ..localshell import LocalShell
from ..runid import RunId
from ..thishost import known_this_host, this_host
from ..store.lock import gone_here
from . import common, onhost, workdir


def register(subparsers) -> None:
    p = subparsers.add_parser("cleanup", help="remove leftover hotvcb snapshots, unfinished backups and killed "
                              "restores' scratch folders, power on VMs a killed run left off")
    common.add_host_options(p)
    p.add_argument("--kvm", metavar="DIR", help="only remove what killed `restore --kvm DIR` (or `restore --to DIR/NAME`) "
                   "runs of this machine left in DIR")
    p.add_argument("--gone-run", action="append", default=[], help=argparse.SUPPRESS)  # store/lock.gone_here's
    onhost.add_option(p)
    p.set_defaults(handler=run, catches_signals=True)  # interrupt.install(): it unwinds on a signal


def run(args) -> int:
    if args.kvm is not None:
        return _kvm(args)
    settings, log = common.load(args)
    interrupt.install()
    code = onhost.command(args, 1, log, _gone_here)
    if code is not None:
        return code
    onhost.say_why_here(args, log)  # a cleanup's log has no frame
    host = common.connect(args.host_target, log)  # what the driver says (its boot time untold) is the run's
    lock, me = common.lock_host(host, log, args.host_target, args.gone_run)
    before = len(log.lines)
    try:
        unmounted = nfs.unmounted(host.shell, settings)
        if unmounted:
            log.warning("%s; leftovers on the share were not looked for" % unmounted)
        swept = cleanup_host(host, settings.vm_backup_volume, log, me, args.level == "dryrun", lock.takeovers(),
                             snapshot_patience(settings))
        n = swept.found + restore_sweep.sweep(host.shell, [d.url for d in host.datastores()], log, me,
                                                args.level == "dryrun")
        workdir.sweep(args.workdir, me, log, args.level == "dryrun")  # this machine's, said apart, not counted
        if swept.complete and args.level != "dryrun":
            lock.sweep_done()
    finally:
        lock.release()
    return _summary(args, log, n, before, swept.undecided)


def _gone_here(shell) -> List[str]:
    """For the cleanup on an ESXi host: its lock's holder, where this machine finds it a dead run of its own
    (a kill -9'd file-by-file run), so the host does not wait out its heartbeat."""
    from ..hosts.esxi import EsxiHost  # where the run on the host keeps its lock

    return [arg for run in gone_here(shell, EsxiHost.run_dir) for arg in ("--gone-run", run)]


def _kvm(args) -> int:
    from ..jobs.restore_kvm import WORK_PREFIX  # with convert's libvirt XML: a KVM cleanup's only

    if args.host_target:
        raise UsageError("--kvm DIR is a folder on this machine; drop --host/--qemu/--libvirt")
    if not os.path.isdir(args.kvm):
        raise UsageError("--kvm %s: no such folder" % args.kvm)
    _settings, log = common.load(args)
    dry = args.level == "dryrun"
    roots = records_roots_of(os.path.abspath(args.kvm))
    n = restore_sweep.sweep(LocalShell(), roots, log, RunId.new().on_host(known_this_host() if dry else this_host()), dry)
    # said apart, not counted: they may be of restores into another DIR (the last line counts DIR's)
    for folder in tmpwork.sweep(WORK_PREFIX, dry=dry):
        log.info("%s %s: a killed restore --kvm's work folder" % ("would remove" if dry else "removed", folder))
    return _summary(args, log, n, 0)


def _summary(args, log, n: int, before: int, undecided: int = 0) -> int:
    """The last line: what was removed (found), failed, and what a dry run could not tell about (`undecided`:
    counted as found, and said apart: the real cleanup may remove it, so "0 found" would promise nothing is
    there, and a wrapper reading the count would miss it)."""
    # a VM's cleanup, a folder, a condemned backup's removal: each named on its error line
    failed = sum(" -- error: " in line for line in log.lines[before:])
    line, code = log.account("cleanup: %d leftover(s) %s%s%s" % (
        n + undecided, "found" if args.level == "dryrun" else "removed",
        ", %d of them undecided: run `hotvcb cleanup`" % undecided if undecided else "",
        ", %d failed (see above), left for the next cleanup" % failed if failed else ""), 1 if failed else 0)
    log.info(line)  # a cleanup whose log could not be written everywhere exits 9, as a backup does
    return log.account(line, code)[1]  # this line may be the first to meet a closed stdout
