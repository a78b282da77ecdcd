"""`hotvcb cleanup`: remove what a killed run left behind (ours only)."""

from .. import interrupt
from ..jobs.backup import SNAPSHOT_PREFIX
from ..jobs.leftovers import cleanup_host
from ..store.lock import WorkLock
from . import common


def register(subparsers) -> None:
    p = subparsers.add_parser("cleanup", help="remove leftover hotvcb snapshots and unfinished backups")
    common.add_host_options(p)
    p.set_defaults(handler=run)


def run(args) -> int:
    settings, log = common.load(args)
    interrupt.install()
    with WorkLock(args.workdir, log.warning):
        n = cleanup_host(common.connect(), settings.vm_backup_volume, log, SNAPSHOT_PREFIX, args.level == "dryrun")
    log.info("cleanup: %d leftover(s) %s" % (n, "found" if args.level == "dryrun" else "removed"))
    return 0
