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
this volume (linked). Everything else is not good, with the reason.
"""

import json
from dataclasses import dataclass
from typing import Any, Callable, Dict, Match, Optional, Set, Tuple, Union

from .. import lazyre, sparsecheck, vmdk
from ..errors import HostError, NotABackup
from ..filetext import encoded, read_small
from ..shell import FileReader, Shell
from ..vmx import MAX_SIZE, VmxFile, as_vmware_reads
from . import chain, layout, manifest

GOOD_STATES = ("good", "unverifiable")
GHETTOVCB_VERDICT = "ghettovcb_verdict"  # in a ghettoVCB .gz's record: what reading all of it found (judge)
GHETTOVCB_WARN = "STATUS.warn: ghettoVCB left out the VM's independent disk(s)"
GZ_VERIFY_SUFFIX = ".verify.json"  # a .gz's record, which cannot go into the archive (not rewritten in place)
GZ_RECORDS = ".hotvcb-gz-records"  # the folder, in the VM's, that holds them (gz_record)
FLAT_EXTENTS = ("VMFS", "FLAT")  # extents whose file is the disk's size (thin ones too: their apparent size)
EXTENT_NAME = lazyre.compile(r"(.*)-(flat|s\d{3})\.vmdk")  # a disk's data file beside its descriptor `\1.vmdk`
# what is no descriptor by its name: data (flat, 2gbsparse's, a snapshot delta's: vmfsSparse, SEsparse), an RDM's
# mapping, change tracking; any other .vmdk a descriptor is read from, and holding none it is cut short
DATA_NAME = lazyre.compile(r".*-(flat|s\d{3}|delta|sesparse|rdm|rdmp|ctk)\.vmdk")
SPARSE_READ = 256 << 10  # a hosted sparse extent's start read for its tables (sparsecheck): all of a 2 GiB one's
DESCRIPTOR_READ = 64 << 10  # a ghettoVCB folder's .vmdk up to this is read as a descriptor (as a scan reads it)


@dataclass
class Health:
    """The one verdict on a backup that rotation, list, status and restore all go by."""

    state: str  # good | unverifiable | warn | error | damaged | empty | incomplete | newer | partial | deleting
    reason: str = ""
    manifest: Optional[Dict[str, Any]] = None
    verified: Optional[str] = None  # when a verify last passed
    warning: str = ""  # what a good backup lacks that its VM has: shown, never held against it
    newer: bool = False  # its manifest is a newer hotvcb's (manifest.NewerManifest): rotation leaves it alone

    @property
    def good(self) -> bool:
        return self.state in GOOD_STATES


def judge(shell: Shell, b: "layout.BackupSet", depth: int = 0, remember: bool = False) -> Health:
    """`remember`: a ghettoVCB .gz's verdict, found by reading all of it, is kept in its record for
    every later look (a backup run's rotation asks: it writes to the volume anyway; list and status
    only read what it kept)."""
    if b.status == "partial":
        return Health("partial", "being written, or left by a run that died")
    if b.status == "deleting":
        return Health("deleting", "being removed by rotation")
    elsewhere = linked(shell, b.path)
    if elsewhere is not None:
        return elsewhere
    if b.compressed:
        return _judge_archive(shell, b.path, remember)
    return _judge_folder(shell, b.path, b.status, depth)


def _judge_folder(shell: Shell, path: str, status: str, depth: int = 0) -> Health:
    if status not in ("ok", "warn"):
        return _not_ok(status)
    try:
        data = manifest.load(shell, path)
        present = set(shell.list_files(path))
    except manifest.NewerManifest as err:
        return _newer(err)
    except (ValueError, HostError) as err:
        return _not_ok(status) if status != "ok" else Health("damaged", "manifest unreadable: %s" % err)
    if data is None:
        return manifestless(shell, path, status, present)
    if status != "ok":
        return _not_ok(status)
    found = _judge_manifest(data)
    if found.state != "good":
        return found
    files = data.get("files") or {}
    short = not_as_recorded(shell, path, data, present)
    if short is not None:
        return short
    try:
        dropped = unaccounted_disk(shell, path, data, present)
    except (HostError, OSError) as err:
        return Health("damaged", "cannot read its .vmx: %s" % err, data)
    if dropped:
        return Health("incomplete", dropped, data)
    verdict = _verified(found, data.get("verify_error"), data.get("verified"))
    return _judge_bases(shell, path, sorted(files), verdict, depth)


def not_as_recorded(shell: FileReader, path: str, data: Dict[str, Any], present: Set[str]) -> Optional[Health]:
    """The verdict on a backup a file its manifest names is missing from, or of another size (cut short by a
    copy that died), else None: one stat a file, no read. Also what a restore asks of a backup folder lying
    outside its VM's folder (a copy the admin made), which judge never sees."""
    files = data.get("files") or {}
    missing = sorted(set(files) - present)
    if missing:
        return Health("damaged", "%d file(s) named in the manifest are missing, first %s" % (len(missing), missing[0]), data)
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
    names = layout.top_vmx(present)
    if len(names) != 1:  # a QEMU or libvirt backup keeps no .vmx; two are the manifest's files' business
        return ""
    vmx_path = path + "/" + names[0]
    vmx = VmxFile(as_vmware_reads(read_small(shell, vmx_path, MAX_SIZE), lambda: shell.file_size(vmx_path)))
    known = {e.get("key") for part in ("disks", "skipped", "left_out") for e in data.get(part) or []
             if isinstance(e, dict)}
    for dev, _bus, filename in vmx.disk_slots():
        if dev not in known:
            held = layout.disk_in_backup(shell, path, filename) is not None if whole else None
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


def _judge_archive(shell: Shell, path: str, remember: bool = False) -> Health:
    from .. import targz  # tarfile, bz2, lzma: only for .gz backups, not every backup run's start-up

    record = read_gz_verify(shell, path)  # one read serves the kept verdict and, for hotvcb's, its size and verify
    kept = _kept_ghettovcb_verdict(shell, path, record)
    if kept is not None:
        return kept

    wanted = (manifest.MANIFEST,) + layout.STATUS_FILES

    def enough(texts: Dict[str, str]) -> bool:
        """The manifest and STATUS, and where the manifest accounts for every disk ("left_out", a key its text
        names) the .vmx too, to check that (unaccounted_disk): hotvcb archives it next (seal.py); an older
        archive of this hotvcb's, after its disks."""
        return manifest.MANIFEST in texts and any(s in texts for s in layout.STATUS_FILES) and (
            '"left_out"' not in texts[manifest.MANIFEST] or bool(layout.top_vmx(texts)))

    try:  # hotvcb's archives: a few KiB read (manifest, STATUS, .vmx come first); ghettoVCB's: read whole
        top, members, texts = targz.scan(path, wanted=(lambda r: r in wanted or r.endswith(".vmdk")
                                                       or bool(layout.top_vmx([r])),),
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
        return _not_ok(status[0])
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
    return _verified(found, record.get("verify_error"), record.get("verified"))


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


def manifestless(shell: Shell, path: str, status: str, present: Set[str]) -> Health:
    """The verdict on a backup folder without a manifest (ghettoVCB's), by its STATUS (layout.folder_status)
    and files (`present`, relative): judge's, and what `verify` of the folder reports."""
    if status not in ("ok", "warn"):
        return _not_ok(status)
    if status == "warn" and any(rel.startswith(".") and rel.endswith(".vmxf") for rel in present):
        # hotvcb's STATUS.warn (a disk it should have copied failed), known by the .vmxf kept as only it
        # keeps one (layout.side_file_name), whose manifest is gone: not ghettoVCB's warn, which is good
        return Health("damaged", "a hotvcb backup with a disk that failed (STATUS.warn) whose manifest is gone")
    odd = _vmx_count(present, "folder") or _ghettovcb_folder_disks(shell, path, present)
    if odd is not None:
        return odd
    return _ghettovcb(status, any(rel.endswith(".vmdk") for rel in present), "folder")


def _vmx_count(names, where: str) -> Optional[Health]:
    """Why a ghettoVCB backup (its files' relative `names`) does not hold the one .vmx both restores need
    (ghettoVCB-restore's `ls | grep .vmx`, restore_plan's), or None. ghettoVCB.sh copies it before
    anything else: none is a .vmx lost since (a hand, an rsync), two a copy's leftover (`web (1).vmx`)."""
    vmxs = sorted(n for n in names if "/" not in n and not n.startswith(".") and n.lower().endswith(".vmx"))
    if len(vmxs) == 1:
        return None
    if not vmxs:
        return Health("incomplete", "ghettoVCB backup: the %s holds no .vmx (lost since it was made?)" % where)
    return Health("damaged", "ghettoVCB backup: the %s holds %d .vmx files (%s), a restore needs exactly one"
                  % (where, len(vmxs), ", ".join(vmxs)))


def _judge_ghettovcb_archive(members, texts: Dict[str, str]) -> Health:
    """ghettoVCB tars a backup before it writes its STATUS (then into the folder it has removed): a
    good archive of its holds none, nor a manifest. What it does hold is judged instead, having been
    read whole (targz.scan: gzip's CRC and length, so never a truncated one): a .vmx, and disks each
    with every extent its descriptor names, a flat one at the size the descriptor gives. A disk the
    .vmx names but the archive lacks is not held against it (VMDK_FILES_TO_BACKUP, independent disks)."""
    sizes = {m.rel: m.size for m in members}
    if not any(rel.endswith(".vmx") for rel in sizes):
        return Health("incomplete", "no STATUS file in the archive, nor the .vmx of a ghettoVCB backup")
    several = _vmx_count(sizes, "archive")
    if several is not None:
        return several
    disks = _ghettovcb_disks(sizes, texts, "archive")
    if isinstance(disks, Health):
        return disks
    if not disks:
        return Health("empty", "no STATUS file in the archive, nor a disk")
    return Health("unverifiable", "ghettoVCB backup (compressed): no STATUS or manifest to check against")


def _ghettovcb_disks(sizes: Dict[str, int], texts: Dict[str, str], where: str,
                     sparse_short: Callable[[str], Optional[str]] = lambda rel: None) -> Union[int, Health]:
    """The disks of a ghettoVCB backup (no manifest to check them against) whose descriptors (of
    `texts`, by relative name) each have every extent they name among `sizes`, a flat one at the size
    the descriptor gives, a hosted sparse one as long as its tables need (`sparse_short`: why not, for
    a folder's; an archive read whole holds none cut short) (a copy that died half way, an rsync cut
    off, is incomplete); or the Health of the first that has not. `where`: "archive" or "folder", for
    the message."""
    disks = 0
    named = set()  # type: Set[str]
    for rel in sorted(r for r in texts if r.endswith(".vmdk")):
        try:  # a small hosted sparse extent was read whole: the descriptor it embeds, decoded as one
            desc = vmdk.parse(vmdk.embedded_text(texts[rel], sizes[rel]))
        except vmdk.NotADescriptor as err:
            if DATA_NAME.fullmatch(rel):
                continue  # an extent small enough to have been read
            # a descriptor's name (an extent's is <disk>-flat/-sNNN) holding none: emptied or cut short by a
            # copy, and the disk with it (restore: "not a readable disk descriptor")
            return Health("incomplete", "ghettoVCB backup: %s is not a readable disk descriptor (%s): cut short "
                          "by a copy?" % (rel, err))
        except vmdk.BadSize as err:
            return Health("damaged", "%s: %s" % (rel, err))
        if not desc.extents:
            return Health("incomplete", "ghettoVCB backup: the disk descriptor %s names no extent: cut short by "
                          "a copy?" % rel)
        folder = rel.rpartition("/")[0]
        for extent in desc.extents:
            name = folder + "/" + extent.filename if folder else extent.filename
            named.add(name)
            if name not in sizes:
                return Health("incomplete", "ghettoVCB backup: %s names %s, which is not in the %s (a copy "
                              "that failed)" % (rel, extent.filename, where))
            if extent.kind in FLAT_EXTENTS and name != rel and sizes[name] != extent.sectors * 512:
                return Health("incomplete", "ghettoVCB backup: %s is %d bytes, %s says %d (a copy that failed)"
                              % (name, sizes[name], rel, extent.sectors * 512))
            short = sparse_short(name) if extent.kind == "SPARSE" else None
            if short:
                return Health("incomplete", "ghettoVCB backup: %s is cut short: %s (a copy that failed)" % (name, short))
        disks += 1
    orphan = _orphan_extent(sizes, named)
    if orphan:
        return Health("damaged", "ghettoVCB backup: the %s holds %s, a disk's data, but not its descriptor %s "
                      "(deleted by hand?)" % ((where,) + orphan))
    return disks


def _orphan_extent(sizes: Dict[str, int], named: Set[str]) -> Optional[Tuple[str, str]]:
    """(a -flat/-sNNN extent, its descriptor's name) where no descriptor names the extent and its own is
    gone: the disk was backed up and lost its descriptor, which the restore refuses as damage
    (layout.descriptor_lost), so list, verify, --latest and rotation must not call the backup good."""
    for rel in sorted(sizes):
        match = EXTENT_NAME.fullmatch(rel)
        if match and rel not in named and match.group(1) + ".vmdk" not in sizes:
            return rel, match.group(1).rpartition("/")[2] + ".vmdk"
    return None


def _ghettovcb_folder_disks(shell: Shell, path: str, present: Set[str]) -> Optional[Health]:
    """A ghettoVCB folder's disks judged as its archive's are (_ghettovcb_disks): a stat of each file,
    and the text of each .vmdk small enough to be a descriptor (a ScannedShell has read them all);
    then each disk its .vmx names (_missing_disk); None when they are whole."""
    try:
        sizes = {rel: shell.file_size(path + "/" + rel) for rel in present}
        texts = {rel: read_small(shell, path + "/" + rel, DESCRIPTOR_READ) for rel in present
                 if rel.endswith(".vmdk") and sizes[rel] <= DESCRIPTOR_READ}
        disks = _ghettovcb_disks(sizes, texts, "folder",
                                 lambda rel: _sparse_short(shell, path + "/" + rel, sizes[rel]))
        return disks if isinstance(disks, Health) else _missing_disk(shell, path, present)
    except (HostError, OSError) as err:
        return Health("damaged", "ghettoVCB backup: %s" % err)


def _missing_disk(shell: Shell, path: str, present: Set[str]) -> Optional[Health]:
    """Why a disk the folder's .vmx names is missing from it by a cut, or None. ghettoVCB.sh leaves a disk
    out with STATUS.ok only where VMDK_FILES_TO_BACKUP names others (an independent disk gets
    STATUS.warn, a physical RDM STATUS.error). A disk that a ghettoVCB backup of the VM (no manifest) made
    before this one, or at its time (the .gz an unpacked folder came from), holds and this one lacks is a
    copy cut short (an rsync killed between two disks copies a folder's files in name order: the .vmx and
    the first disk, nothing of the next; it copies older folders first). A newer backup holding it is no
    evidence: the disk may have been added to the selection since, and hotvcb's backups, which copy every
    disk after the switch, say in their manifests what they left out. Only the other backups' file names are
    read (an archive's member list, none of its data kept)."""
    (name,) = layout.top_vmx(present)
    vmx_path = path + "/" + name
    vmx = VmxFile(as_vmware_reads(read_small(shell, vmx_path, MAX_SIZE), lambda: shell.file_size(vmx_path)))
    lacking = [(dev, filename) for dev, _bus, filename in vmx.disk_slots()
               if not (vmx.get(dev + ".mode") or "").lower().startswith("independent")
               and layout.disk_in_backup(shell, path, filename) is None]
    root, _, own = path.rpartition("/")
    mine = layout.named(own)
    if not lacking or mine is None:  # a folder not laid out as a backup has no other backups to hold its disks
        return None
    siblings = sorted((root + "/" + e for e in shell.listdir(root)
                       if e != own and _same_vm_before(layout.named(e), mine)),
                      key=lambda other: other.endswith(".gz"))  # folders first: an archive is read through
    views = {}  # type: Dict[str, Optional[FileReader]]
    for dev, filename in lacking:
        for other in siblings:
            if other not in views:
                views[other] = _ghettovcb_files(shell, other)
            view = views[other]
            if view is not None and layout.disk_in_backup(view, other, filename) is not None:
                return Health("incomplete", "ghettoVCB backup: its .vmx names disk %s (%s), which is not in "
                              "the folder, though %s, made before it, holds it: a copy cut short"
                              % (dev, filename, other))
    return None


def _same_vm_before(entry: Optional[Match[str]], mine: Match[str]) -> bool:
    """Whether a VM folder's entry (layout.named) is a finished backup of the VM `mine` (layout.named of this
    backup) is of, named no later than it: a folder, or a .gz (ghettoVCB's ENABLE_COMPRESSION=1), whose disks
    tell a folder cut short as well."""
    if entry is None or entry.group(1) != mine.group(1) or entry.group(3) not in (None, ".gz"):
        return False
    try:
        return layout.stamp_time(entry.group(2)) <= layout.stamp_time(mine.group(2))
    except ValueError:  # a name no calendar has is no backup (layout)
        return False


def _ghettovcb_files(shell: Shell, other: str) -> Optional[FileReader]:
    """What reads the file names of another ghettoVCB backup: the shell for a folder, the member list of a .gz
    (read through once, no member kept), or None: no folder, an archive that does not read, or a backup with a
    manifest (hotvcb's, which says what it left out, and may be another VM's in a shared folder: owner.py)."""
    if not other.endswith(".gz"):
        return shell if shell.isdir(other) and not shell.exists(other + "/" + manifest.MANIFEST) else None
    from .. import targz  # tarfile, bz2, lzma: only for .gz backups

    try:
        view = targz.ArchiveView(other, opener=shell.open_binary, texts=False)
    except (HostError, OSError):
        return None
    return None if manifest.MANIFEST in view.sizes else view


def _sparse_short(shell: Shell, path: str, size: int) -> Optional[str]:
    """sparsecheck.cut_short of one extent, its start read once (a second time only for tables past it)."""
    got = [b""]

    def read(n: int) -> bytes:
        if len(got[0]) < min(n, size):
            length = min(size, max(n, SPARSE_READ))
            got[0] = encoded(shell.read_regular(path, length), length)
        return got[0][:n]

    return sparsecheck.cut_short(read, size)


def _kept_ghettovcb_verdict(shell: Shell, path: str, record: Dict[str, Any]) -> Optional[Health]:
    """The verdict a rotation kept of this ghettoVCB archive, while the archive is the size it had then
    (ghettoVCB never rewrites one; one cut short or replaced is judged again)."""
    kept = record.get(GHETTOVCB_VERDICT)
    if record.get("verify_error") or not isinstance(kept, dict) or not isinstance(kept.get("size"), int):
        return None
    try:
        if shell.file_size(path) != kept["size"]:
            return None
    except (HostError, OSError):
        return None
    state, reason = kept.get("state"), kept.get("reason")
    if state not in ("unverifiable", "incomplete", "damaged", "empty") or not isinstance(reason, str):
        return None
    return Health(state, reason)


def _keep_ghettovcb_verdict(shell: Shell, path: str, record: Dict[str, Any], verdict: Health) -> None:
    """Best effort: a volume that takes no record only costs the next look its read."""
    try:
        data = dict(record)
        data[GHETTOVCB_VERDICT] = {"size": shell.file_size(path), "state": verdict.state, "reason": verdict.reason}
        write_gz_sidecar(shell, path, data)
    except (HostError, OSError):
        pass


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
    files = data.get("files") or {}
    unlisted = [f for d in disks for f in d.get("files") or [] if f not in files]
    if unlisted:
        return Health("damaged", "disk file %s has no checksum in the manifest" % unlisted[0], data)
    unlisted = [f for f in manifest.tree_files(data) if f not in files]
    if unlisted:
        return Health("damaged", "snapshot tree file %s has no checksum in the manifest" % unlisted[0], data)
    return Health("good", "", data, warning=_left_out(data.get("skipped")))


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


def _ghettovcb(status: str, has_disk: bool, where: str) -> Health:
    """A backup without a manifest, ghettoVCB's: good on a disk and its word alone."""
    if not has_disk:
        return Health("empty", "STATUS.%s but no .vmdk in the %s" % (status, where))
    if status == "warn":
        return Health("unverifiable", "ghettoVCB backup: no manifest to check against", warning=GHETTOVCB_WARN)
    return Health("unverifiable", "ghettoVCB backup: no manifest to check against")


def _newer(err: "manifest.NewerManifest") -> Health:
    """A backup whose manifest a newer hotvcb wrote: not good to this one (it cannot read it), whatever its
    STATUS says, nor damaged (a good backup as far as anyone knows: the repository's rule, docs/repository.md),
    and marked so that rotation leaves it to that hotvcb rather than remove it as broken."""
    return Health("newer", newer_reason(err), newer=True)


def newer_reason(err: "manifest.NewerManifest") -> str:
    """What list, status and verify say of a newer hotvcb's backup: one wording."""
    return "%s: not checked; upgrade hotvcb to read it" % err


def _not_ok(status: str) -> Health:
    reasons = {
        "warn": "STATUS.warn: some disks failed",
        "error": "STATUS.error: the backup failed",
        "incomplete": "not sealed (no STATUS file): never finished, or not a backup",
    }
    return Health(status if status in ("warn", "error") else "incomplete", reasons.get(status, status))


SIDECAR_MAX = 1 << 20  # a size and verify's finding: a few hundred bytes


def gz_record(path: str) -> str:
    """Where a .gz backup's record is kept: `<VM folder>/.hotvcb-gz-records/<name>.gz.verify.json`.
    Not beside the archive, where hotvcb kept it first (old_gz_record): ghettoVCB's rotation takes
    every entry `ls` shows whose name holds `<VM>-<time>` for a backup, and an admin going back to
    it would lose a real backup early for each record. `ls` shows no dot-folder, nor does its name
    hold a backup's time."""
    root, _, name = path.rpartition("/")
    return "%s/%s/%s%s" % (root, GZ_RECORDS, name, GZ_VERIFY_SUFFIX)


def old_gz_record(path: str) -> str:
    return path + GZ_VERIFY_SUFFIX


def write_gz_sidecar(shell: Shell, path: str, data: Dict[str, Any]) -> None:
    """Write the record, and drop one of the old place (read_gz_verify read it into `data`)."""
    record = gz_record(path)
    shell.makedirs(record.rpartition("/")[0])
    shell.write_text(record, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    shell.remove_tree(old_gz_record(path))


def read_gz_verify(shell: Shell, path: str) -> Dict[str, Any]:
    """A .gz backup's record: its size when written, verify's last finding ({} if none); where an
    older hotvcb kept it, until the next write moves it."""
    for side in gz_records(path):
        try:
            if shell.exists(side):
                data = json.loads(shell.read_regular(side, SIDECAR_MAX))  # anyone may have planted a FIFO there
                return data if isinstance(data, dict) else {}
        except (ValueError, HostError):
            return {"verify_error": {"message": "%s is unreadable" % side}}
    return {}


def gz_records(path: str) -> Tuple[str, str]:
    """Every place a .gz backup's record may be, the one it is kept in first."""
    return gz_record(path), old_gz_record(path)
