"""The repository side of `list`, `verify` and `restore` (`--repo PATH`).

`hotvcb list --repo PATH [VM]`, `hotvcb verify --repo PATH [VM] [--sample PCT |
--new]` and `hotvcb restore --repo PATH ID|--latest VM --to DIR` read the repository
directly (docs/repository.md); they need no hypervisor. A restored VMDK disk
is its descriptor plus a sparse `-flat.vmdk` (a thin disk); other disks are
sparse `.raw` images, each under a name of its own (_restored_names).
`hotvcb restore --repo PATH ID --datastore DS [--format F] [--name N]` stages
the backup as a sealed folder on the target datastore (`staged`) and hands it
to the folder restore, which converts the disks and registers the VM.
`hotvcb prune` is commands/prune_cmd.py. Exit codes of verify: 0 all good, 4 something damaged, 3 nothing
damaged but a record not checked (a newer hotvcb's, or one this run could not read).
"""

import itertools
import json
import os
import shutil
import sys
import time
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Optional, Set, Tuple

from .. import folderwrite, interrupt, runlog, vmdk, vmdknames
from ..errors import HostError, HotvcbError, RepoError, UsageError, VmNotFound, did_you_mean
from ..jobs.repo_backup import flat_name, stored_names
from ..jobs.restore_scratch import OWN_FILES, RESTORING, Records, record_of
from ..jobs.restore_sweep import sweep
from ..localshell import LocalShell
from ..repo.reader import Where, read_file, restore_disk, whole_or_nothing
from ..repo.records import Snapshot, Unreadable, dated_ahead, machines
from ..repo.repository import SNAPSHOTS, Repository, open_path
from ..repo.settle import Say
from ..repo.verify import check_backup, verify
from ..thishost import known_this_host, this_host
from ..store import layout
from ..units import PAGE, human_size, in_pages, need_and_free
from ..vmx import VmxFile


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


def written(repo: Repository, snap: Snapshot) -> int:
    """Room restoring `snap` as files takes: each disk's chunks (zeros stay holes) and the VM's files, each
    in whole pages, and the folder's owner record."""
    return sum(in_pages(repo.disk_index(d).stored_bytes()) for d in snap.disks) + sum(
        in_pages(f["size"]) for f in snap.files) + PAGE


def staging_room(repo: Repository, snap: Snapshot, disk_format: str) -> int:
    """Room `staged` and the folder restore after it need on the target together, at most: the staged
    backup (and its STATUS), and beside it the VM (as much again for a thin or 2gbsparse disk, else the
    disk's whole size; its files again, each disk's descriptor and checked copy, the restore's own
    files: restore_plan), as the folder restore's own check counts it once the backup is staged. Asked
    before staging, so a datastore too small is refused untouched, not filled to its last block first."""
    return written(repo, snap) + PAGE + restored_room(repo, snap, disk_format)


def restored_room(repo: Repository, snap: Snapshot, disk_format: str) -> int:
    """The VM's part of staging_room: what stays on the target once the staged backup is removed (a dry
    run's tally holds it for the lines after, not the staged copy)."""
    if disk_format in ("thin", "2gbsparse"):
        return written(repo, snap) + PAGE
    thick = sum(in_pages(d["size"]) for d in snap.disks) + sum(in_pages(f["size"]) for f in snap.files)
    return thick + PAGE * (2 * len(snap.disks) + OWN_FILES)


def check_restorable(repo: Repository, snap: Snapshot, say: Say) -> None:
    """RepoError naming what a restore of `snap` would fail on (verify.check_backup: each chunk it needs read
    and hash-checked), for a dry run, which must refuse what the restore will (docs/restore.md section 3)."""
    problems = check_backup(repo, snap, say)
    if problems:
        more = len(problems) - 1
        raise RepoError("the restore would fail: %s%s" % (problems[0], " (and %d more problem(s); hotvcb verify "
                                                          "--repo names them)" % more if more else ""))


def _no_parent(to: str, parent: str) -> str:
    """Why `parent` is no folder to restore into: a file in the way is named as such (a mistyped path
    through a disk image), so the admin is not sent checking mounts that are fine."""
    way = parent
    while not os.path.lexists(way) and os.path.dirname(way) != way:
        way = os.path.dirname(way)
    if os.path.lexists(way) and not os.path.isdir(way):
        return "%s: %s is a file, not a folder" % (to, way)
    return "%s: its folder %s does not exist (is the datastore mounted?)" % (to, parent)


def restore(path: str, ident: str, to: str, log, latest: str = "", dry_run: bool = False,
            lister: str = "hotvcb list --repo") -> int:
    """Each disk (thin VMDK or sparse raw) plus the VM's files into the new folder `to`, whole or not at all.

    It is written as `to`.hotvcb-restoring, recorded the way a KVM restore records its folder
    (restore_scratch.Records: host id, pid, heartbeat), so that the folder of a killed restore is
    removed by the next restore into the same parent folder, or by `hotvcb cleanup --kvm PARENT`,
    once that restore is provably dead, and never blocks a later restore for good. Refused before
    anything is written where the parent's file system has no room for it; a dry run stops there,
    saying what it would write."""
    if os.path.lexists(to):
        raise UsageError("%s exists; restore never overwrites" % to)
    parent = os.path.dirname(os.path.abspath(to.rstrip("/")))
    if not os.path.isdir(parent):  # a typo'd or unmounted datastore: never fill the host's ramdisk instead
        raise UsageError(_no_parent(to, parent))
    unwritable = folderwrite.unwritable(parent)  # asked, not probed: a dry run said OK of a read-only export
    if unwritable:
        raise RepoError("cannot restore into %s: %s: %s" % (to, parent, unwritable))
    repo = open_path(path)
    snap = find(repo, ident, latest, lister)
    needed, free = written(repo, snap), shutil.disk_usage(parent).free
    if needed > free:
        raise RepoError("restoring %s into %s needs %s, only %s free there" % ((snap, to) + need_and_free(needed, free)))
    work = os.path.abspath(to.rstrip("/")) + RESTORING  # absolute: its record goes beside it (record_of)
    shell = LocalShell()
    records = Records(shell, known_this_host if dry_run else this_host)  # a dry run makes no host-id file
    swept = set()  # type: Set[str]  # a dry run's: the dead restores' folders the real run's sweep removes
    sweep(shell, [os.path.dirname(record_of(work))], log, records.run(), dry_run, swept)
    if dry_run:
        if work not in swept and os.path.lexists(work):  # what records.claim refuses in the real run
            raise RepoError(_restoring_taken(work, to))
        check_restorable(repo, snap, log.info)
        _dry_run(path, snap, to, needed, free, log)
        return 0

    def drop(folder: str) -> None:
        try:
            records.remove(folder)
        except HostError as err:  # not over the error that brought us here
            log.error("%s -- remove it by hand" % err)

    try:
        records.claim(work)
    except HostError as err:
        if not os.path.lexists(work):
            raise
        raise RepoError(_restoring_taken(work, to)) from err
    names = _materialize(repo, snap, work, drop, log.info)
    try:
        os.rename(work, to)
    except OSError as err:
        drop(work)
        raise RepoError("cannot rename %s to %s: %s" % (work, to, err.strerror or err)) from err
    try:
        records.release(work)
    except HostError as err:  # the backup is restored; a record naming no folder is harmless
        log.warning("%s -- remove it by hand" % err)
    log.info("Restored %s into %s: %s" % (snap, to, ", ".join(names)))
    return 0


def _restoring_taken(work: str, to: str) -> str:
    """Why a restore to `to` stops at the folder `work` it would be written as: there already (the real run's
    claim refuses it, and its dry run says so too)."""
    return ("%s exists: another restore to %s is running, or one that was killed left it and its death cannot "
            "be proven here (`hotvcb cleanup --kvm %s` says why; remove it by hand if no restore is running)"
            % (work, to, os.path.dirname(work)))


def _dry_run(path: str, snap: Snapshot, to: str, needed: int, free: int, log) -> None:
    """What `restore` would write into `to`, said by the run's log; nothing is written."""
    log.dryrun("RESTORE: %s from the repository %s into %s (written as %s%s, renamed when complete)" % (
        snap, path, to, to.rstrip("/"), RESTORING))
    descriptors = _descriptor_names(snap)
    for f in snap.files:  # a file is named after the VM, whose name may hold a line feed: one field each
        log.dryrun("FILE: %s" % runlog.shown(descriptors.get(f["name"], os.path.basename(f["name"])), field=True))
    files = _restored_names(snap)
    for disk in snap.disks:
        log.dryrun("DISK: %s -> %s (%s, sparse)" % (runlog.shown(disk["name"], field=True),
                                                    runlog.shown(files[disk["name"]], field=True),
                                                    human_size(disk["size"])))
    log.dryrun("ROOM: needs %s, %s free" % (human_size(needed), human_size(free)))
    log.info("Dry run for %s: every check passed, nothing written" % snap)


@contextmanager
def staged(path: str, ident: str, target: str, records: Records, say: Say, latest: str = "") -> Iterator[str]:
    """The backup as a sealed backup folder (thin disks, STATUS.ok) on the target datastore, for the
    folder restore to convert and register; removed afterwards, whatever happens. `say`: the run's log."""
    repo = open_path(path)
    snap = find(repo, ident, latest)
    scratch = records.make(target)  # its record lets `hotvcb cleanup` remove it if we are killed
    folder = scratch + "/" + layout.backup_name(snap.vm, snap.time)
    try:
        records.shell.makedirs(folder)
        _materialize(repo, snap, folder, lambda p: shutil.rmtree(p, ignore_errors=True), say)
        with open(os.path.join(folder, "STATUS.ok"), "w") as f:
            f.write("restored from the repository %s, backup %s (every chunk hash-checked)\n" % (path, snap.id))
        yield folder
    except HotvcbError as err:
        if scratch in str(err):  # the error names a file of the staged copy, gone once it reaches the admin
            runlog.say("hotvcb: note: %s, named below, held backup %s as staged from the repository %s; it is "
                       "removed now (the repository is untouched)" % (scratch, snap.id, path), stream=sys.stderr)
        raise
    finally:
        try:
            records.remove(scratch)
        except HostError as err:  # not over the error that brought us here
            runlog.say("hotvcb: warning: %s -- remove %s by hand" % (err, scratch), stream=sys.stderr)


def _materialize(repo: Repository, snap: Snapshot, work: str, remove: Callable[[str], None], say: Say) -> List[str]:
    """Write the backup's files and disks into the new, empty folder `work`; on any failure `remove` it.
    `say` tells of a wait for a pack another host's GC moved (repo/settle.py)."""
    with whole_or_nothing(work, remove):
        where = Where(repo, None, say)  # one for all: a pack one disk found gone is waited for once
        names = []  # type: List[str]
        files = _restored_names(snap)
        descriptors = _descriptor_names(snap)
        for f in snap.files:
            data = read_file(repo, snap, f["name"], where=where)
            name = descriptors.get(f["name"], os.path.basename(f["name"]))
            if name != os.path.basename(f["name"]):  # renamed: it names its data under the new name
                data = vmdk.rename_extent(data.decode("utf-8", "surrogateescape"), flat_name(name)).encode(
                    "utf-8", "surrogateescape")
            with open(os.path.join(work, name), "xb") as out:  # never over a file of another disk
                out.write(data)
        for disk in snap.disks:
            name = files[disk["name"]]
            runlog.say("Restoring %s (%s) ..." % (disk["name"], human_size(disk["size"])))
            restore_disk(repo, snap, disk, os.path.join(work, name), check=_check, where=where)
            names.append(name)
        for f in snap.files:
            if f["name"].lower().endswith(".vmx"):
                _name_disks_in_folder(os.path.join(work, os.path.basename(f["name"])),
                                      {os.path.basename(d["name"]): descriptors.get(d["name"], os.path.basename(d["name"]))
                                       for d in snap.disks})
            elif f["name"].lower().endswith(".json"):
                _name_qemu_disks(os.path.join(work, os.path.basename(f["name"])), snap, files)
        return names


def _restored_names(snap: Snapshot) -> Dict[str, str]:
    """Each disk's name -> the file it is restored as, no two alike (nor alike a file of the VM's): a VMDK's
    descriptor comes back with the VM's files, its data goes where it points; any other disk is a sparse
    raw image, `<stem>.raw`. A disk stored as `<x>.raw` keeps its name; one whose `<stem>.raw` is taken (a
    QEMU VM's `data.img` beside its `data.raw`) comes back as `<name>.raw` (`data.img.raw`): every disk
    under a name of its own, or the backup could never be restored as files."""
    own = {f["name"] for f in snap.files}
    descriptors = _descriptor_names(snap)
    names = {disk: flat_name(name) for disk, name in descriptors.items()}
    taken = {os.path.basename(n).lower() for n in own} | {n.lower() for n in names.values()} | {
        n.lower() for n in descriptors.values()}
    raws = sorted((d["name"] for d in snap.disks if d["name"] not in own), key=lambda n: not n.lower().endswith(".raw"))
    for name in raws:
        base = os.path.basename(name)
        stem = os.path.splitext(base)[0]
        file = next(c for c in itertools.chain((stem + ".raw", base + ".raw"),
                                               ("%s_%d.raw" % (stem, n) for n in itertools.count(2)))
                    if c.lower() not in taken)
        taken.add(file.lower())
        names[name] = file
    return names


def _descriptor_names(snap: Snapshot) -> Dict[str, str]:
    """Each VMDK disk's name -> the name its descriptor comes back under: its own, unless that name or its
    data file's is a file another disk's copy writes (a disk named `d-flat.vmdk` beside `d.vmdk`, whose
    data is `d-flat.vmdk`): then `<stem>_2.vmdk`... (vmdknames.py). The VM's other files keep theirs."""
    own = {f["name"] for f in snap.files}
    disks = [d["name"] for d in snap.disks if d["name"] in own]
    others = {os.path.basename(n) for n in own - set(disks)}
    picked = []  # type: List[vmdknames.Files]
    for name in disks:
        picked.append(vmdknames.pick(os.path.basename(name), "thin", picked, others))
    return {name: files.name for name, files in zip(disks, picked)}


def _name_disks_in_folder(vmx_path: str, disks: Dict[str, str]) -> None:
    """The .vmx names each disk by its file in the folder. Its backup kept a disk on another datastore by
    full path (`/vmfs/volumes/<ds5>/FS/FS_2.vmdk`: a file that exists nowhere once the repository gave
    two same-named disks distinct names, and the original's file, not the restore's, where it did not);
    every disk of the repository is a file of this folder, named uniquely. `disks`: each disk's stored name
    -> its descriptor's name in the folder (_descriptor_names)."""
    with open(vmx_path, "rb") as f:
        vmx = VmxFile(f.read().decode("utf-8", "surrogateescape"))  # as written, byte for byte (backup_config)
    named = [(dev, disks[filename.rsplit("/", 1)[-1]]) for dev, _bus, filename in vmx.disk_slots()
             if filename.rsplit("/", 1)[-1] in disks and filename != disks[filename.rsplit("/", 1)[-1]]]
    for dev, filename in named:
        vmx.set(dev + ".fileName", filename)
    if named:
        with open(vmx_path, "wb") as f:
            f.write(vmx.text().encode("utf-8", "surrogateescape"))


def _name_qemu_disks(path: str, snap: Snapshot, restored: Dict[str, str]) -> None:
    """A bare-QEMU VM's description names each disk by the image it backed up; a folder backup's manifest
    says which file holds which disk, and a repository's backup has none. So each disk the description
    names gets `file`, the file it is restored as (restored), found by the name it was stored under
    (repo_backup.stored_names of its image), for a KVM restore to read (jobs/machine_of.py). Only where the
    backup holds exactly the disks the description names (all but the skipped ones): else no disk is named
    and the restore says which file holds which disk is unknown, never guessing one disk's file for another."""
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read().decode("utf-8"))
    except (OSError, ValueError):
        return  # no description of ours (any .json a VM's files hold): nothing to name
    if not isinstance(data, dict) or data.get("hypervisor") != "qemu" or not isinstance(data.get("disks"), list):
        return
    disks = [d for d in data["disks"] if isinstance(d, dict) and not d.get("skipped")]
    names = stored_names([str(d.get("image") or "").rsplit("/", 1)[-1] for d in disks])
    if sorted(names) != sorted(d["name"] for d in snap.disks):
        return
    for disk, name in zip(disks, names):
        disk["file"] = restored[name]
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _check() -> None:
    if interrupt.pending():
        interrupt.raise_pending()
