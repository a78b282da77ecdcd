"""`hotvcb cleanup`: undo what a killed run left behind (a dead run's only)."""

from .. import interrupt
from ..jobs import restore_scratch
from ..jobs.leftovers import cleanup_host
from . import common, onhost


def register(subparsers) -> None:
    p = subparsers.add_parser("cleanup", help="remove leftover hotvcb snapshots, unfinished backups and killed "
                              "restores' scratch folders, power on VMs a killed run left off")
    common.add_host_options(p)
    onhost.add_option(p)
    p.set_defaults(handler=run)


def run(args) -> int:
    settings, log = common.load(args)
    interrupt.install()
    code = onhost.command(args, 1, log)
    if code is not None:
        return code
    host = common.connect(args.host_target)
    lock, me = common.lock_host(host, log, args.host_target)
    before = len(log.lines)
    try:
        n = cleanup_host(host, settings.vm_backup_volume, log, me, args.level == "dryrun")
        n += restore_scratch.sweep(host.shell, [d.url for d in host.datastores()], log, me, args.level == "dryrun")
        if args.level != "dryrun":
            lock.sweep_done()
    finally:
        lock.release()
    failed = sum(" -- error: " in line for line in log.lines[before:])  # a VM's or a folder's cleanup
    log.info("cleanup: %d leftover(s) %s%s" % (n, "found" if args.level == "dryrun" else "removed",
                                               ", %d failed (see above)" % failed if failed else ""))
    return 1 if failed else 0
