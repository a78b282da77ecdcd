"""`hotvcb restore --repo PATH`: a repository's backup written back as files.

`restore --repo PATH ID|--latest VM --to DIR` writes the VM's files and disks
into a new folder, whole or not at all (`restore`): a VMDK disk is its
descriptor plus a sparse `-flat.vmdk` (a thin disk); other disks are sparse
`.raw` images, each under a name of its own (_restored_names). `restore --repo
PATH ID --datastore DS [--format F] [--name N]` and `restore --kvm` stage the
backup as a sealed folder (`staged`) and hand it to the folder restore, which
converts the disks and registers the VM. Finding the backup is repo_cmd.find's.
"""

import itertools
import json
import os
import shutil
import sys
from contextlib import contextmanager
from typing import Callable, Dict, Iterator, List, Set

from .. import folderwrite, interrupt, runlog, vmdk, vmdknames
from ..errors import HostError, HotvcbError, RepoError, UsageError
from ..jobs.repo_backup import flat_name, stored_names
from ..jobs.restore_scratch import OWN_FILES, RESTORING, Records, record_of
from ..jobs.restore_sweep import sweep
from ..localshell import LocalShell
from ..repo.reader import Where, read_file, restore_disk, whole_or_nothing
from ..repo.records import Snapshot
from ..repo.repository import Repository, open_path
from ..repo.settle import Say
from ..repo.verify import check_backup
from ..store import layout
from ..thishost import known_this_host, this_host
from ..units import PAGE, human_size, in_pages, need_and_free
from ..vmx import VmxFile
from .repo_cmd import find


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
