"""`hotvcb verify [BACKUP|VM|--all]`: re-read backups against their manifests.

BACKUP is a backup folder or .gz path; VM checks every sealed backup of that
VM; --all every sealed backup under VM_BACKUP_VOLUME. For each damaged backup
the first bad file and byte range are printed. The time of a successful check
is recorded in the manifest (see jobs/verify.py).
Exit codes: 0 nothing damaged (ghettoVCB backups without a manifest are
reported as unverifiable, not as damaged), 4 some backups damaged or
incomplete (no STATUS file), 6 all of them, 1 usage.
"""

import json
import sys

from .. import config
from ..errors import UsageError
from ..jobs.verify import verify_backup
from ..restorefile import trim_path
from ..shell import Shell
from ..store import layout
from . import common, list_cmd, repo_cmd


def register(subparsers) -> None:
    p = subparsers.add_parser("verify", help="check backups against their manifests' checksums")
    p.add_argument("target", nargs="?", metavar="BACKUP|VM", help="a backup folder/.gz, or a VM name")
    p.add_argument("--all", action="store_true", help="every backup under the backup volume")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("-g", dest="global_conf", metavar="FILE", help="global config (for VM_BACKUP_VOLUME)")
    p.add_argument("--volume", metavar="DIR", help="backup volume (overrides VM_BACKUP_VOLUME)")
    repo_cmd.add_repo_option(p)
    p.add_argument("--sample", type=float, default=0, metavar="PCT", help="with --repo: read this share of the packs")
    p.add_argument("--new", action="store_true", help="with --repo: read only packs never verified")
    p.set_defaults(handler=run)


def targets(shell: Shell, volume: str, target, all_backups: bool):
    """Backup paths to check, and notes on what was left out."""
    if bool(target) == bool(all_backups):
        raise UsageError("say what to verify: BACKUP, VM or --all (exactly one)")
    if target and target.startswith("/") or (target and shell.exists(target)):
        path = trim_path(target)
        if not shell.exists(path):
            raise UsageError("backup %s does not exist" % path)
        return [path], []
    names = [target] if target else list_cmd.vm_names(shell, volume)
    paths, skipped = [], []
    for name in names:
        found = layout.list_backups(shell, volume, name)
        if target and not found:
            raise UsageError("no backups of %r under %s" % (name, volume))
        for b in found:
            if b.status in ("ok", "warn", "archived"):
                paths.append(b.path)
            else:
                skipped.append("%s: %s, not checked" % (b.path, b.status))
    return paths, skipped


def run(args) -> int:
    if args.repo:
        return repo_cmd.verify_repository(args.repo, args.sample, args.new, args.json)
    settings, warnings = config.load_settings(args.global_conf)
    for w in warnings:
        print("hotvcb: warning: %s" % w, file=sys.stderr)
    shell = common.connect(args.host_target).shell
    paths, skipped = targets(shell, args.volume or settings.vm_backup_volume, args.target, args.all)
    results = []
    for path in paths:
        if not args.json:
            print("Verifying %s ..." % path, flush=True)
        res = verify_backup(shell, path)
        results.append(res)
        if not args.json:
            print("  %s: %s" % (res.status.upper(), res.message))
            for p in res.problems[1:]:
                print("  also: %s" % p)
            for n in res.notes:
                print("  note: %s" % n)
    if not args.json:
        for s in skipped:
            print("skipped %s" % s)
    damaged = [r for r in results if not r.ok]
    if args.json:
        print(json.dumps({"results": [{
            "path": r.path, "status": r.status, "files": r.files, "bytes": r.bytes, "message": r.message,
            "problems": [{"file": p.file, "message": p.message, "first": p.first, "last": p.last} for p in r.problems],
            "notes": r.notes} for r in results], "skipped": skipped}, indent=2, ensure_ascii=False))
    else:
        print("%d backup(s) checked, %d damaged or incomplete" % (len(results), len(damaged)))
    if not damaged:
        return 0
    return 6 if len(damaged) == len(results) else 4
