"""`hotvcb prune --repo PATH --keep-*`: drop what the keep rules do not keep, then collect garbage.

The rules are Proxmox Backup Server's, per VM (hotvcb/repo/retention.py);
`--dry-run` prints every backup with the rule that keeps it, or "remove",
and changes nothing. The repository is `--repo` or VM_BACKUP_REPOSITORY (-g).
"""

import sys
from .. import config, interrupt
from ..errors import RepoError, UsageError
from ..repo import gc, prune
from ..repo.repository import open_path
from ..runlog import say
from ..units import human_size


def register(subparsers) -> None:
    p = subparsers.add_parser("prune", help="apply keep rules to a repository, then collect garbage")
    p.add_argument("--repo", metavar="PATH", help="the repository (overrides VM_BACKUP_REPOSITORY)")
    p.add_argument("-g", dest="global_conf", metavar="FILE", help="global config (for VM_BACKUP_REPOSITORY)")
    p.add_argument("-m", dest="vm", metavar="NAME", help="only this VM's backups")
    for rule in prune.KEEP_RULES:
        p.add_argument("--keep-" + rule, type=int, default=0, metavar="N", help="keep-%s (PBS semantics)" % rule)
    p.add_argument("--dry-run", action="store_true", help="show what is kept (by which rule) and removed")
    p.set_defaults(handler=run, catches_signals=True)  # interrupt.install(): it unwinds on a signal


def run(args) -> int:
    settings, warnings = config.load_settings(args.global_conf)
    for w in warnings:
        say("hotvcb: warning: %s" % w, stream=sys.stderr)
    path = args.repo or settings.vm_backup_repository
    if args.host_target.ssh is not None:
        raise UsageError("prune works on the host itself (the repository is a folder there); run hotvcb there")
    if not path:
        raise UsageError("which repository? --repo PATH or VM_BACKUP_REPOSITORY in -g FILE")
    keep = {rule: getattr(args, "keep_" + rule) for rule in prune.KEEP_RULES}
    if any(n < 0 for n in keep.values()):
        raise UsageError("--keep-* values are counts (0 or more)")
    repo = open_path(path)
    decisions = prune.plan(repo, keep, args.vm)
    # a typo (or an empty -m "" from a script's blank line) would otherwise "prune" nothing and say so as a success
    if args.vm is not None and not decisions:
        raise UsageError("no backup of %r in the repository %s (hotvcb list --repo shows them)" % (args.vm, path))
    foreseen = prune.Foresight([])
    if args.dry_run:  # what the real prune would refuse on (raised, exit 1) or warn of, before the night it runs
        try:
            foreseen = prune.foresee(repo, decisions)
        except RepoError as err:
            raise RepoError("the prune would refuse and remove nothing: %s" % err) from err
    for d in decisions:
        say("%-8s %s%s" % ("keep" if d.kept else "remove", d.snapshot, " (%s)" % d.rule if d.rule else ""))
    if args.dry_run:
        for warning in foreseen.warnings + [foreseen.not_run] * bool(foreseen.not_run):
            say("hotvcb: warning: %s" % warning, stream=sys.stderr)
        say("dry run: nothing removed")
        return 3 if foreseen.not_run else 0  # the prune's own code: a check before the night must not read as OK
    # a signal stops GC at its next step, through `finally` blocks, so the GC lock is given back: another host
    # would wait out the grace period (a day) for a dead one's. Never at any instant: a handler raising between
    # an open and the object that owns its descriptor made that descriptor closed twice
    interrupt.install()
    report = prune.prune(repo, decisions, log=lambda msg: say(msg),  # GC says what it leaves alone
                         check=interrupt.raise_pending)
    if report.not_run:
        say("removed %d backup(s); no chunk freed" % sum(not d.kept for d in decisions))
        say("hotvcb: warning: %s" % report.not_run, stream=sys.stderr)
        return 3  # as a run that warns: the backups went, their space did not
    marked, deleted = gc.describe(report.condemned_why), gc.describe(report.deleted_why)
    say("removed %d backup(s); garbage collection: %d pack(s) marked%s, %d deleted (%s freed%s), %d chunk(s) "
        "copied" % (sum(not d.kept for d in decisions), report.packs_condemned, " (%s)" % marked if marked else "",
                      report.packs_deleted, human_size(report.bytes_freed), "; " + deleted if deleted else "",
                      report.chunks_copied))
    return 0
