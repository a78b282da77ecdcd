"""Is this backup good? The one answer rotation, list, verify, restore and the e-mail use.

A backup is good because of what it holds, not because of a marker:

- it has its final name (not `-partial`, not `-deleting`);
- its STATUS is `ok` (for a `.gz`, the STATUS inside the archive);
- its manifest says `ok`, lists at least one disk, every listed disk was
  copied, and every file the manifest names is there;
- every disk its .vmx names is copied, or its manifest says why not
  (unaccounted_disk);
- no later `hotvcb verify` found it damaged (the manifest's `verify_error`,
  or for a `.gz` its record, gz_record);
- an incremental's base backup (chain.py: its qcow2 disks name it) is there
  and good: without it the incremental restores nothing.

A backup made by ghettoVCB has no manifest: on STATUS.ok with at least one
.vmdk, exactly one .vmx (_vmx_count: both restores need one), each descriptor
readable and its extents there, a flat one at the size it gives, a hosted
sparse one as long as its tables need (sparsecheck), no -flat/-sNNN extent
without its descriptor (_ghettovcb_disks, as for its archive), and no disk its
.vmx names missing that an earlier ghettoVCB backup of the VM holds
(_missing_disk: an rsync cut between two disks), it is "unverifiable", which counts as good
(nothing better is known of it) but is shown as such (manifestless, which
verify reports too). So is one on STATUS.warn: ghettoVCB.sh writes that
only for a VM with independent disks, which no snapshot can copy (a disk that
failed gets STATUS.error), and the rest of the backup is whole; hotvcb skips
those disks too. hotvcb's own STATUS.warn means a disk it should have copied
failed, and its manifest says so: that backup is not good. ghettoVCB's
compressed backup holds no STATUS at all: good when it is whole and holds its
disks (_judge_ghettovcb_archive). A symlink named like a backup is none on
this volume (linked). Everything else is not good, with the reason; but a backup
that went away while it was read (went_away: renamed to `-deleting` by another
run's rotation, removed by hand) is "gone", never damaged.

The verdict is verdict.py's Health; the checks of ghettoVCB's backups are in ghettovcb_health.py, a .gz
backup's records (gz_record) in sidecar.py.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Set

from ..errors import HostError, NotABackup
from ..filetext import read_small
from ..shell import FileReader, Shell
from ..vmx import MAX_SIZE, VmxFile, as_vmware_reads
from . import backup_files, chain, layout, manifest
from .ghettovcb_health import (_ghettovcb, _judge_ghettovcb_archive, _keep_ghettovcb_verdict, _kept_ghettovcb_verdict,
                               manifestless)
from .sidecar import read_gz_verify
from .verdict import Health, _not_ok


def judge(shell: Shell, b: "layout.BackupSet", depth: int = 0, remember: bool = False, recorded: bool = True) -> Health:
    """`remember`: a ghettoVCB .gz's verdict, found by reading all of it, is kept in its record for
    every later look (a backup run's rotation asks: it writes to the volume anyway; list and status
    only read what it kept). `recorded`: False leaves out what an earlier verify recorded of the backup
    itself (its damage, a ghettoVCB archive's kept verdict), for verify, which is about to read it all again
    and record anew (a base backup's record still counts)."""
    if b.status == "partial":
        return Health("partial", "being written, or left by a run that died")
    if b.status == "deleting":
        return Health("deleting", "being removed by rotation")
    elsewhere = linked(shell, b.path)
    if elsewhere is not None:
        return elsewhere
    if b.compressed:
        return _unless_gone(shell, b.path, _judge_archive(shell, b.path, remember, recorded))
    verdict = _judge_contents(shell, b.path, b.status, recorded)
    return _unless_gone(shell, b.path, _judge_bases(shell, b.path, sorted((verdict.manifest or {}).get("files") or {}),
                                                    verdict, depth))


def judge_at(shell: Shell, path: str, recorded: bool = True) -> Health:
    """The verdict on the backup a path names, as verify and a KVM restore are given it: judge's where it lies in
    its VM's folder as list shows it (layout.from_path: NotABackup for a name with a time no calendar has),
    else that of a copy the admin made elsewhere, by what it holds (by_contents, as a restore of such a path
    judges it: no base backups, which stand beside a backup in its VM's folder)."""
    named = layout.from_path(shell, path)
    if named is not None:
        return judge(shell, named, recorded=recorded)
    if path.endswith(".gz") and not shell.isdir(path):
        return _unless_gone(shell, path, _judge_archive(shell, path, recorded=recorded))
    return _unless_gone(shell, path, _judge_contents(shell, path, layout.folder_status(shell, path), recorded))


GONE = "removed while it was read (rotated away by a running backup, or removed by hand)"


def went_away(shell: Shell, path: str) -> bool:
    """Whether the backup at `path` (a folder, or a .gz) is no longer there, proven by a look now (layout.gone). A
    read of a backup that failed because the backup went (another run's rotation renamed it to `-deleting`, an
    admin's `rm -rf`) says nothing of its data: it is gone, not damaged. A file missing from a backup folder still
    there is damage, and so is a read that failed where the host cannot tell whether the backup is there (an NFS
    share not answering: damaged, as read, never passed over as gone)."""
    return layout.gone(shell, path)


def _unless_gone(shell: Shell, path: str, verdict: Health) -> Health:
    """`verdict`, or "gone" where it is the damage or incompleteness a read of a backup that went away meanwhile
    finds (went_away): list, status, restore and verify say "damaged" only of a backup that is there."""
    if verdict.state not in ("damaged", "incomplete") or not went_away(shell, path):
        return verdict
    return Health("gone", GONE)


def _judge_contents(shell: Shell, path: str, status: str, recorded: bool = True) -> Health:
    """A backup folder's verdict by by_contents, its manifest read here. A listing that fails (the folder, or
    one below it, that cannot be listed) is said as such: not "manifest unreadable" of a manifest read fine."""
    try:  # whatever its STATUS: a failed backup of a newer hotvcb or another host is not ours to rotate
        data = manifest.load(shell, path)
    except manifest.NewerManifest as err:
        return _newer(err)
    except (ValueError, HostError) as err:
        return _not_ok(status) if status != "ok" else Health("damaged", "manifest unreadable: %s" % err)
    try:
        present = set(shell.list_files(path))
    except HostError as err:
        return _not_ok(status, data) if status != "ok" else Health("damaged", str(err), data)
    return by_contents(shell, path, status, data, present, recorded)


def by_contents(shell: Shell, path: str, status: str, data: Optional[Dict[str, Any]], present: Set[str],
                recorded: bool = True) -> Health:
    """The verdict on a backup folder by its STATUS (layout.folder_status), its manifest `data` (None: a
    ghettoVCB backup, manifestless) and the files `present` in it, all but its base backups (an incremental's,
    _judge_bases). Also what a restore asks of a backup folder lying outside its VM's folder (a copy the admin
    made), which judge never sees: one answer for both, so a copy whose manifest was edited (a disk's checksum
    or record dropped), or a ghettoVCB backup's copy cut short, is refused as the same folder in place is.
    `recorded`: as for judge."""
    if data is None:
        return manifestless(shell, path, status, present)
    if status != "ok":
        return _not_ok(status, data)
    return as_recorded(shell, path, data, present, recorded)


def as_recorded(shell: FileReader, path: str, data: Dict[str, Any], present: Set[str], recorded: bool = True) -> Health:
    """The verdict on a sealed backup folder by its manifest `data` and the files `present` in it (by_contents;
    `recorded`: as for judge)."""
    found = _judge_manifest(data)
    if found.state != "good":
        return found
    short = not_as_recorded(shell, path, data, present)
    if short is not None:
        return short
    try:
        dropped = unaccounted_disk(shell, path, data, present)
    except (HostError, OSError) as err:
        return Health("damaged", "cannot read its .vmx: %s" % err, data)
    if dropped:
        return Health("incomplete", dropped, data)
    return _verified(found, data.get("verify_error"), data.get("verified")) if recorded else found


def no_file(shell: FileReader, path: str) -> str:
    """Why a file a manifest names is not among the folder's files (Shell.list_files lists regular files only):
    "missing", or what stands in its place (a symlink, a FIFO, a device), as reading it says."""
    if not shell.exists(path):
        return "missing"
    try:
        shell.read_regular(path, 1)
    except HostError as err:
        return "unreadable: %s" % err
    return "missing"  # a regular file again by now: it came back since the listing


def not_as_recorded(shell: FileReader, path: str, data: Dict[str, Any], present: Set[str]) -> Optional[Health]:
    """The verdict on a backup a file its manifest names is missing from, or of another size (cut short by a
    copy that died), else None: one stat a file, no read."""
    files = data.get("files") or {}
    missing = sorted(set(files) - present)
    if missing:
        why = no_file(shell, path + "/" + missing[0])
        return Health("damaged", "%d file(s) named in the manifest are missing, first %s%s"
                      % (len(missing), missing[0], ": " + why if why != "missing" else ""), data)
    for rel in sorted(files):  # one stat each: a truncated disk is not good, verified or not
        try:
            size = shell.file_size(path + "/" + rel)
        except (HostError, OSError) as err:
            return Health("damaged", "cannot stat %s: %s" % (rel, err), data)
        if size != files[rel].get("size", size):
            return Health("damaged", "%s is %d bytes, the manifest says %d" % (rel, size, files[rel]["size"]), data)
    return None


def unaccounted_disk(shell: FileReader, path: str, data: Dict[str, Any], present: Set[str], whole: bool = True) -> str:
    """Why a disk the backup's .vmx names is missing from it, or "": a disk its manifest neither lists as
    copied ("disks") nor as left out (no snapshot copies it: "skipped"; VMDK_FILES_TO_BACKUP did not name it:
    "left_out") was dropped from the manifest after the backup, as when its files were deleted by hand to free
    room and the manifest edited to match; a restore would bring the VM back without it. Only a manifest that
    has "left_out" (manifest.py) accounts for every disk: an older one is taken at its word. `shell` reads the
backup's files: the shell, or a targz.ArchiveView of a .gz; `whole`: False where `present` holds only the
members read so far (an archive's judge), which then says nothing of whether the disk's files are there."""
    if not isinstance(data.get("left_out"), list):
        return ""
    names = backup_files.own_vmx(present, data)
    if len(names) != 1:  # a QEMU or libvirt backup keeps no .vmx (nor proves one: as_recorded's missing file)
        return ""
    vmx_path = path + "/" + names[0]
    vmx = VmxFile(as_vmware_reads(read_small(shell, vmx_path, MAX_SIZE), lambda: shell.file_size(vmx_path)))
    known = {e.get("key") for part in ("disks", "skipped", "left_out") for e in data.get(part) or []
             if isinstance(e, dict)}
    for dev, _bus, filename in vmx.disk_slots():
        if dev not in known:
            held = backup_files.disk_in_backup(shell, path, filename) is not None if whole else None
            return "its .vmx names disk %s (%s), which its manifest does not account for (not copied, skipped or " \
                "left out by VMDK_FILES_TO_BACKUP)%s" % (dev, filename, "" if held is None else
                                                         ": its files are in the backup, unproven" if held
                                                         else ", nor does the backup hold it")
    return ""


def _judge_bases(shell: Shell, path: str, files, verdict: Health, depth: int) -> Health:
    """An incremental is only as good as the backups it stands on."""
    if not verdict.good:
        return verdict
    try:
        needed = chain.bases(shell, path, files)
    except HostError as err:
        return Health("damaged", str(err), verdict.manifest)
    for name in needed:
        try:
            base = layout.from_path(shell, path.rsplit("/", 1)[0] + "/" + name)
        except NotABackup as err:
            return Health("incomplete", "its base is no backup: %s" % err, verdict.manifest)
        if base is None:
            return Health("incomplete", "its base backup %s is gone" % name, verdict.manifest)
        if depth >= chain.MAX_DEPTH:
            return Health("damaged", "its chain of base backups is longer than %d" % chain.MAX_DEPTH, verdict.manifest)
        below = judge(shell, base, depth + 1)
        if not below.good:
            return Health("incomplete", "its base backup %s is not good: %s" % (name, below.reason or below.state),
                          verdict.manifest)
    return verdict


def _judge_archive(shell: Shell, path: str, remember: bool = False, recorded: bool = True) -> Health:
    from .. import targz  # tarfile, bz2, lzma: only for .gz backups, not every backup run's start-up

    record = read_gz_verify(shell, path)  # one read serves the kept verdict and, for hotvcb's, its size and verify
    kept = _kept_ghettovcb_verdict(shell, path, record) if recorded else None
    if kept is not None:
        return kept

    wanted = (manifest.MANIFEST,) + layout.STATUS_FILES

    def enough(texts: Dict[str, str]) -> bool:
        """The manifest and STATUS, and where the manifest accounts for every disk of a VM with a .vmx
        (manifest.checks_vmx) the .vmx too, to check that (unaccounted_disk): hotvcb archives it next (seal.py);
        an older archive of this hotvcb's, after its disks."""
        return manifest.MANIFEST in texts and any(s in texts for s in layout.STATUS_FILES) and (
            not manifest.checks_vmx(texts[manifest.MANIFEST]) or bool(backup_files.top_vmx(texts)))

    try:  # hotvcb's archives: a few KiB read (manifest, STATUS, .vmx come first); ghettoVCB's: read whole
        top, members, texts = targz.scan(path, wanted=(lambda r: r in wanted or r.endswith(".vmdk")
                                                       or bool(backup_files.top_vmx([r])),),
                                         opener=shell.open_binary, enough=enough)
    except HostError as err:
        return Health("damaged", str(err))
    status = [s.split(".", 1)[1] for s in reversed(layout.STATUS_FILES) if s in texts]  # the worst wins
    if not status:
        if manifest.MANIFEST in texts:  # hotvcb writes STATUS before it compresses
            return Health("incomplete", "no STATUS file in the archive")
        verdict = _judge_ghettovcb_archive(members, texts)
        if remember:
            _keep_ghettovcb_verdict(shell, path, record, verdict)
        return verdict
    if manifest.MANIFEST not in texts and status[0] in ("ok", "warn"):
        return _ghettovcb(status[0], any(m.rel.endswith(".vmdk") for m in members), "archive")
    try:  # a newer hotvcb's manifest first: whatever its STATUS, rotation must leave that backup alone
        data = manifest.parse(texts[manifest.MANIFEST], path + ":" + manifest.MANIFEST) \
            if manifest.MANIFEST in texts else {}
    except manifest.NewerManifest as err:
        return _newer(err)
    except ValueError as err:
        if status[0] == "ok":
            return Health("damaged", "manifest unreadable: %s" % err)
        data = {}
    if status[0] != "ok":
        return _not_ok(status[0], data)
    found = _judge_manifest(data)
    if found.state != "good":
        return found
    written = record.get("archive_size")
    if isinstance(written, int):
        try:
            size = shell.file_size(path)
        except (HostError, OSError) as err:
            return Health("damaged", "cannot stat the archive: %s" % err, data)
        if size != written:
            return Health("damaged", "the archive is %d bytes, it was %d when written" % (size, written), data)
    try:
        dropped = unaccounted_disk(targz.ArchiveView.scanned(path, top, members, texts), path, data,
                                   {m.rel for m in members}, whole=False)
    except (HostError, OSError) as err:
        return Health("damaged", "cannot read its .vmx: %s" % err, data)
    if dropped:
        return Health("incomplete", dropped, data)
    return _verified(found, record.get("verify_error"), record.get("verified")) if recorded else found


def linked(shell: Shell, path: str) -> Optional[Health]:
    """The verdict on a symlink named like a backup (an old backup moved to other storage, a link left in
    its place), or None for a backup on this volume. Not good: what it names is not on this volume, may
    be gone or changed under it, and counted as a kept backup it would push a real one out; rotation
    removes the link (never what it names), and verify, restore and list all say so alike."""
    try:
        target = layout.linked_elsewhere(shell, path)
    except HostError:
        return None  # cannot tell: judged by what it holds, as every backup was
    if target is None:
        return None
    return Health("incomplete", "a symlink to %s, not a backup on this volume (verify or restore %s itself)"
                  % (target, target))


def _judge_manifest(data: Dict[str, Any]) -> Health:
    result = data.get("result")
    if result != "ok":
        return Health("warn" if result == "warn" else "error", "manifest says %s: %s" % (result, data.get("message") or ""), data)
    disks = data.get("disks") or []
    if not disks:
        return Health("empty", "holds no disk", data)
    failed = [d.get("key", "?") for d in disks if not d.get("ok")]
    if failed:
        return Health("warn", "disk(s) not copied: %s" % ", ".join(failed), data)
    unproven = unchecksummed(data)
    if unproven:
        return Health("damaged", unproven, data)
    return Health("good", "", data, warning=_left_out(data.get("skipped")))


def unchecksummed(data: Dict[str, Any]) -> str:
    """Why the manifest cannot prove the backup's data, or "": a file of a copied disk (its record's "files") or of
    the snapshot tree that has no checksum entry ("files"), as when the manifest was edited after the backup.
    A damaged backup to list, restore and verify alike (verify, which reads the entries there are, takes this
    verdict first: jobs/verify.verify_backup)."""
    files = data.get("files") or {}
    unlisted = [f for d in data.get("disks") or [] if d.get("ok") for f in d.get("files") or [] if f not in files]
    if unlisted:
        return "disk file %s has no checksum in the manifest" % unlisted[0]
    unlisted = [f for f in manifest.tree_files(data) if f not in files]
    if unlisted:
        return "snapshot tree file %s has no checksum in the manifest" % unlisted[0]
    return ""


def _left_out(skipped: Any) -> str:
    """The VM's disks its backup holds none of, by design (independent, RDM): a good backup, short of them."""
    if not isinstance(skipped, list) or not skipped:
        return ""
    names = ["%s (%s)" % (d.get("key", "?"), d.get("reason", "?")) if isinstance(d, dict) else "?" for d in skipped]
    return "the VM's disk(s) no snapshot copies are in no backup: %s" % ", ".join(names)


def _verified(found: Health, error: Any, verified: Any) -> Health:
    if error:
        message = error.get("message") if isinstance(error, dict) else str(error)
        return Health("damaged", "verify found it damaged: %s" % message, found.manifest, verified)
    found.verified = verified
    return found


def _newer(err: "manifest.NewerManifest") -> Health:
    """A backup whose manifest a newer hotvcb wrote: not good to this one (it cannot read it), whatever its
    STATUS says, nor damaged (a good backup as far as anyone knows: the repository's rule, docs/repository.md),
    and marked so that rotation leaves it to that hotvcb rather than remove it as broken."""
    return Health("newer", newer_reason(err), newer=True)


def newer_reason(err: "manifest.NewerManifest") -> str:
    """What list, status and verify say of a newer hotvcb's backup: one wording."""
    return "%s: not checked; upgrade hotvcb to read it" % err
