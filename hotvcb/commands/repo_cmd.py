"""The repository side of `list` and `verify` (`--repo PATH`), and finding a backup in it.

`hotvcb list --repo PATH [VM]` and `hotvcb verify --repo PATH [VM] [--sample PCT |
--new]` read the repository directly (docs/repository.md); they need no
hypervisor. `find` picks the backup a restore names (by id or --latest VM);
the restore itself is commands/repo_restore.py, `hotvcb prune`
commands/prune_cmd.py. Exit codes of verify: 0 all good, 4 something damaged, 3 nothing
damaged but a record not checked (a newer hotvcb's, or one this run could not read).
"""

import os
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

from .. import runlog
from ..errors import UsageError, VmNotFound, did_you_mean
from ..repo.records import Snapshot, Unreadable, dated_ahead, machines
from ..repo.repository import SNAPSHOTS, Repository, open_path
from ..repo.verify import verify
from ..units import human_size


def here_only(args) -> None:
    """A repository path names a folder on the machine the command runs on: over SSH that is the
    host, so the command must run there (SSH mode does so where the host's python can); a
    repository command that reached the file-by-file path would read the client's own disk."""
    if args.repo and args.host_target.ssh is not None:
        raise UsageError("--repo works on the host itself: over SSH it needs the host's python 3.8 "
                         "(ESXi 7/8) and no --file-by-file; or run hotvcb on the host")


def row(snap: Snapshot) -> Dict[str, Any]:
    return {"vm": snap.vm, "id": snap.id, "time": snap.time.isoformat(),
            "host": snap.record.get("host") or "", "host_system": snap.record.get("host_system") or "", "vm_uuid": snap.record.get("vm_uuid") or "",
            "size_bytes": sum(d["size"] for d in snap.disks),
            "new_bytes": sum(d["new_bytes"] for d in snap.disks),
            "disks": [d["name"] for d in snap.disks]}


def _readable(repo: Repository, vm: str = "") -> Tuple[List[Snapshot], List[Unreadable]]:
    """The backups whose records read (a disk size not its index's included: no restore from it), each other
    record said on stderr as left out; and those others, for `list --json` to name."""
    snaps, bad = repo.readable_snapshots(vm or None, sizes=True)
    for problem in bad:
        runlog.say("hotvcb: warning: %s (left out; hotvcb verify --repo names what it hurts)" % problem,
                   stream=sys.stderr)
    return snaps, bad


def kind(bad: Unreadable) -> str:
    """A record that does not read, as `list --json` names its kind (docs/repository.md "Records that do not read")."""
    return "newer" if bad.newer else "unavailable" if bad.unavailable else "damaged"


def list_backups(path: str, vm: str, as_json: bool) -> int:
    snaps, bad = _readable(open_path(path), vm)
    rows = [row(s) for s in snaps]
    if as_json:  # a script must see that a backup may be missing, not only a human reading stderr
        runlog.say_json({"repository": path, "backups": rows,
                         "unreadable": [{"record": u.record, "kind": kind(u), "error": str(u)} for u in bad]},
                        indent=2)
        return 0
    if not rows:
        runlog.say("no backups in %s%s" % (path, " for %r" % vm if vm else ""))
        return 0
    lines = [("VM", "TIME", "ID", "SIZE", "STORED NEW")] + [
        (r["vm"], r["time"].replace("T", " "), r["id"], human_size(r["size_bytes"], compact=True),
         human_size(r["new_bytes"], compact=True)) for r in rows]
    for line in runlog.columns(lines):  # each cell one field: a line feed in a VM's name forged a row
        runlog.say(line)
    return 0


def verify_repository(path: str, sample: Optional[float], new_only: bool, as_json: bool,
                      vm: Optional[str] = None) -> int:
    """`sample` None: no --sample (0 is a share like any other, refused: it read every pack). `vm`: that VM's
    backups only; a name the repository holds nothing of is refused, never OK (a typo checks nothing)."""
    if sample is not None and new_only:
        raise UsageError("--sample and --new: choose one")
    if sample is not None and not 1 <= sample <= 100:  # NaN fails every comparison: refused too
        raise UsageError("--sample %s: a percentage of the packs, 1 to 100" % sample)
    mode = "sample" if sample is not None else "new" if new_only else "all"
    report = verify(open_path(path), mode, share=(sample or 0) / 100.0, say=_say, vm=vm)
    if vm is not None and not report.backups and not report.problems and not report.newer and not report.not_read:
        if os.path.lexists(vm):  # `verify --repo R /backups/web/web-2026-...`: a folder's verify is without --repo
            raise UsageError("%s is a path: --repo verifies the repository's backups, all or one VM's by its name; "
                             "a backup folder or .gz is verified without --repo" % vm)
        raise UsageError("no backup of %r in the repository %s (hotvcb list --repo shows them)" % (vm, path))
    if report.marker_error:
        runlog.say("hotvcb: warning: what verify found is not recorded (--new reads good packs again; a backup "
                   "reuses chunks found damaged): %s" % report.marker_error, stream=sys.stderr)
    if report.foreign:  # a NAS client's .DS_Store, say: no damage, and nothing reads or deletes it
        runlog.say("hotvcb: note: no hotvcb object, left alone by every command (a file manager's or NAS client's "
                   "file?): %s" % ", ".join(report.foreign), stream=sys.stderr)
    if as_json:
        runlog.say_json({"repository": path, "vm": vm, "mode": mode, "backups": report.backups,
                         "packs_read": report.packs_read, "chunks_read": report.chunks_read,
                         "problems": report.problems, "newer": report.newer, "not_read": report.not_read,
                         "foreign": report.foreign}, indent=2)
    else:
        for problem in report.problems:
            runlog.say("DAMAGED: %s" % problem)
        for newer in report.newer:  # a good backup as far as anyone knows, which this hotvcb cannot check
            runlog.say("NOT CHECKED: %s" % newer)
        for record in report.not_read:  # nothing known of it: never called damaged (it would be moved aside)
            runlog.say("NOT CHECKED: %s (give this run access to it, or wait out the I/O error, and verify again)"
                       % record)
        unchecked = "".join("; %d record(s) %s not checked" % (len(which), whose) for which, whose in (
            (report.newer, "of a newer hotvcb"), (report.not_read, "this run could not read")) if which)
        runlog.say("%d backup(s)%s, %d pack(s) and %d chunk(s) read (%s): %s%s" % (
            report.backups, " of %r" % vm if vm is not None else "", report.packs_read, report.chunks_read, mode,
            "OK" if report.ok else "%d problem(s)" % len(report.problems), unchecked))
    # 3, as a run that warns: nothing found damaged, but not everything could be checked
    return 4 if not report.ok else 3 if report.newer or report.not_read else 0


def _say(line: str) -> None:
    """Verify's word of a wait goes to stderr: stdout is its report (--json's a document)."""
    runlog.say("hotvcb: %s" % line, stream=sys.stderr)


def find(repo: Repository, ident: str, latest: str = "", lister: str = "hotvcb list --repo") -> Snapshot:
    """A backup by its id or an unambiguous prefix of it, or the newest of the VM `latest`. `lister`: the
    command the admin lists the repository's backups with (common.repository_lister), named when none matches."""
    if latest:
        every = _readable(repo)[0]
        snaps = [snap for snap in every if snap.vm == latest]
        if not snaps:
            close = VmNotFound(latest, sorted({snap.vm for snap in every})).suggestions
            raise UsageError("no backup of %r in the repository%s (%s shows them)" % (
                latest, did_you_mean(latest, close), lister))
        # two hosts' VMs may share a name (records.machines)
        newest = {key: found[-1] for key, found in machines(snaps).items()}
        if len(newest) > 1:
            raise UsageError("%d VMs called %r are in the repository; restore one by its backup's id: %s" % (
                len(newest), latest, "; ".join("newest of uuid %s (host %s): %s" % (
                    snap.record.get("vm_uuid") or "-", snap.record.get("host_system") or snap.record.get("host") or "?",
                    snap.id)
                    for _key, snap in sorted(newest.items()))))
        ahead = dated_ahead(snaps, time.time())  # as a folder restore --latest passes over them
        real = [s for s in snaps if s not in ahead]
        if ahead:
            runlog.say("hotvcb: warning: %s of %r dated over a day ahead of the clock (made while it "
                       "ran ahead): %s; %s" % (
                           "passing over the backup(s)" if real else "every backup", latest,
                           ", ".join(s.id for s in ahead),
                           "their data may be older than the newest real one's: restore one by its id if it is the "
                           "one" if real else "taking the newest of them"), stream=sys.stderr)
        return (real or snaps)[-1]
    ids = [i.name[len(SNAPSHOTS):] for i in repo.objects(SNAPSHOTS)]  # by name: another record's
    matches = [i for i in ids if i.startswith(ident)] if ident else []    # damage must not stop this restore
    if len(matches) != 1:
        raise UsageError("%s backup in the repository matches %r (%s shows them)"
                         % ("no" if not matches else "more than one", ident, lister))
    return repo.snapshot(matches[0])
