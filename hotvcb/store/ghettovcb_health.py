"""Is a backup ghettoVCB made good? It has no manifest: its folder's or archive's disks are checked as they stand
(the rules are in store/health.py's docstring); the verdict reading all of an archive found is kept in its record."""

from __future__ import annotations

from typing import Any, Callable, Dict, Match, Optional, Set, Tuple, Union

from .. import lazyre, sparsecheck, vmdk
from ..errors import HostError
from ..filetext import encoded, read_small
from ..shell import FileReader, Shell
from ..vmx import MAX_SIZE, VmxFile, as_vmware_reads
from . import backup_files, layout, manifest
from .sidecar import write_gz_sidecar
from .verdict import Health, _not_ok


GHETTOVCB_VERDICT = "ghettovcb_verdict"  # in a ghettoVCB .gz's record: what reading all of it found (judge)
GHETTOVCB_WARN = "STATUS.warn: ghettoVCB left out the VM's independent disk(s)"
FLAT_EXTENTS = ("VMFS", "FLAT")  # extents whose file is the disk's size (thin ones too: their apparent size)
EXTENT_NAME = lazyre.compile(r"(.*)-(flat|s\d{3})\.vmdk")  # a disk's data file beside its descriptor `\1.vmdk`
# what is no descriptor by its name: data (flat, 2gbsparse's, a snapshot delta's: vmfsSparse, SEsparse), an RDM's
# mapping, change tracking; any other .vmdk a descriptor is read from, and holding none it is cut short
DATA_NAME = lazyre.compile(r".*-(flat|s\d{3}|delta|sesparse|rdm|rdmp|ctk)\.vmdk")
SPARSE_READ = 256 << 10  # a hosted sparse extent's start read for its tables (sparsecheck): all of a 2 GiB one's
DESCRIPTOR_READ = 64 << 10  # a ghettoVCB folder's .vmdk up to this is read as a descriptor (as a scan reads it)


def manifestless(shell: Shell, path: str, status: str, present: Set[str]) -> Health:
    """The verdict on a backup folder without a manifest (ghettoVCB's), by its STATUS (layout.folder_status)
    and files (`present`, relative): judge's, and what `verify` of the folder reports."""
    if status not in ("ok", "warn"):
        return _not_ok(status)
    if status == "warn" and any(rel.startswith(".") and rel.endswith(".vmxf") for rel in present):
        # hotvcb's STATUS.warn (a disk it should have copied failed), known by the .vmxf kept as only it
        # keeps one (backup_files.side_file_name), whose manifest is gone: not ghettoVCB's warn, which is good
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
    (backup_files.descriptor_lost), so list, verify, --latest and rotation must not call the backup good."""
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
        sizes = _sizes(shell, path, present)
        texts = {rel: read_small(shell, path + "/" + rel, DESCRIPTOR_READ) for rel in present
                 if rel.endswith(".vmdk") and sizes[rel] <= DESCRIPTOR_READ}
        disks = _ghettovcb_disks(sizes, texts, "folder",
                                 lambda rel: _sparse_short(shell, path + "/" + rel, sizes[rel]))
        return disks if isinstance(disks, Health) else _missing_disk(shell, path, present)
    except (HostError, OSError) as err:
        return Health("damaged", "ghettoVCB backup: %s" % err)


def _sizes(shell: Shell, path: str, present: Set[str]) -> Dict[str, int]:
    """The size of each file of the folder. `present` holds regular files only (Shell.list_files): a link is
    no file of the backup, so the one old ghettoVCB's RSYNC_LINK left in every backup but the newest (before
    its 2015 fix, `ln -sf ./<VM>-B <VM>-symlink`, the link pointing at this folder, made `<VM>-B -> ./<VM>-B`
    in it, a link to itself) is passed over; one the restore would read is judged by _side_file_unread."""
    return {rel: shell.file_size(path + "/" + rel) for rel in present}


def _vmx(shell: Shell, path: str, present: Set[str]) -> VmxFile:
    """The folder's one .vmx (_vmx_count has made sure of it), read as VMware reads it."""
    (name,) = backup_files.top_vmx(present)
    vmx_path = path + "/" + name
    return VmxFile(as_vmware_reads(read_small(shell, vmx_path, MAX_SIZE), lambda: shell.file_size(vmx_path)))


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
    vmx = _vmx(shell, path, present)
    unread = _side_file_unread(shell, path, present, vmx)
    if unread:
        return unread
    lacking = [(dev, filename) for dev, _bus, filename in vmx.disk_slots()
               if not (vmx.get(dev + ".mode") or "").lower().startswith("independent")
               and backup_files.disk_in_backup(shell, path, filename) is None]
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
            if view is not None and backup_files.disk_in_backup(view, other, filename) is not None:
                return Health("incomplete", "ghettoVCB backup: its .vmx names disk %s (%s), which is not in "
                              "the folder, though %s, made before it, holds it: a copy cut short"
                              % (dev, filename, other))
    return None


def _side_file_unread(shell: Shell, path: str, present: Set[str], vmx: VmxFile) -> Optional[Health]:
    """Damage where the .nvram or .vmxf a restore copies (backup_files.side_file) is there but no regular file
    (a dangling link, a link, a FIFO): the restore refuses it, so list, verify and rotation must not call the
    backup good."""
    name = backup_files.top_vmx(present)[0]
    for key, ext in backup_files.SIDE_FILES:
        side = backup_files.side_file(shell, path, name, vmx.get(key), ext)
        if side is not None and side[len(path) + 1:] not in present:
            return Health("damaged", "ghettoVCB backup: %s, which a restore copies as the VM's %s, is not a regular "
                          "file" % (side[len(path) + 1:], ext))
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


def _ghettovcb(status: str, has_disk: bool, where: str) -> Health:
    """A backup without a manifest, ghettoVCB's: good on a disk and its word alone."""
    if not has_disk:
        return Health("empty", "STATUS.%s but no .vmdk in the %s" % (status, where))
    if status == "warn":
        return Health("unverifiable", "ghettoVCB backup: no manifest to check against", warning=GHETTOVCB_WARN)
    return Health("unverifiable", "ghettoVCB backup: no manifest to check against")
