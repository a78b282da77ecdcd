"""The checks a backup passes before it is converted or booted (restore --kvm, verify --boot).

The same answers the ESXi restore gives (store/health.py decides what is
good; jobs/verify.py re-reads the checksums), for the jobs that read a
backup on this machine rather than through a hypervisor driver.
"""

from __future__ import annotations

import os
from typing import Callable, List, Optional, Tuple

from .. import targz, vmdk
from ..convert.machine import Machine
from ..filetext import decoded, encoded
from ..hosts import esxi_tree, qemuimg
from ..errors import HostError, HotvcbError
from ..shell import FileReader, Shell
from ..store import chain, health, layout, manifest, verdict
from .verify import not_restoring_gone, verify_backup
from .. import lazyre

DESCRIPTOR_MAX = 64 << 10  # a VMDK descriptor file is a few hundred bytes; a sparse extent embeds one within this
TEXT_MAX = 1 << 20  # a backup's descriptor past this is refused rather than read (a .vmx or .vmsd: vmx.MAX_SIZE)
SPARSE_MAGICS = ("KDMV", "COWD", "\xbe\xba\xfe\xca")  # hosted sparse, vmfsSparse, seSparse (its LE 0xcafebabe)
QEMU_DESC_SIZE = 20 * 512  # the bytes qemu searches for a parentFileNameHint (block/vmdk.c DESC_SIZE)
# the hint as qemu finds it (strstr): anywhere, its name from the 2nd byte after the key to the next quote
_QEMU_HINT = lazyre.compile(r'parentFileNameHint[^\0][^\0]([^"\0]*)"')


def is_backup(shell: Shell, folder: str) -> bool:
    """A backup has a STATUS file or a manifest; a folder `restore --kvm` wrote has neither. A copy that lost its
    STATUS.ok (a `cp -a` cut short) still holds the manifest: taken for a restored folder, `verify --boot` booted
    what verify and restore --kvm call incomplete."""
    return any(shell.exists(folder + "/" + s) for s in layout.STATUS_FILES + (manifest.MANIFEST,))


def require_good(shell: Shell, folder: str) -> None:
    """health's one verdict at the path (judge_at), also for a copy outside its VM's folder: a STATUS.ok
    alone once let `restore --kvm --no-verify` take a copy whose manifest or disks were missing."""
    verdict = health.judge_at(shell, folder)
    if not verdict.good:
        raise HotvcbError("%s is not a good backup (%s)" % (folder, verdict.reason))


def inside(path: str, backup: str) -> bool:
    """path is the backup (a .gz) or in its folder: somewhere a job that only reads it must not write."""
    path, backup = os.path.realpath(path), os.path.realpath(backup)
    return path == backup or path.startswith(backup.rstrip("/") + "/")


def inside_a_backup(shell: Shell, target: str) -> str:
    """Why `target` may take no restore, as its tail (`<target> lies inside the backup …`), or "": it is a
    backup folder or lies in one, spelled as typed or as the host resolves it (`//`, `/./`, a symlink to
    the backup: the host's realpath, so over SSH too). Rotation would remove the restored VM with it."""
    backup = backup_around(target) or backup_around(shell.realpath(target))
    if backup is None:
        return ""
    return ("%s lies inside the backup %s, which rotation removes with everything in it (the restored VM too); "
            "restore onto a folder outside the backups" % (target, backup))


def backup_around(target: str) -> Optional[str]:
    """The backup folder `target` is, or lies in, by its path (`<VM folder>/<VM folder>-<time>`, what
    rotation removes: store/layout.named), else None. Told by the names alone: no round trip per folder."""
    parts = target.rstrip("/").split("/")
    for i in range(len(parts) - 1, 0, -1):
        m = layout.named(parts[i])
        if m is not None and m.group(1) == parts[i - 1]:
            return "/".join(parts[: i + 1])
    return None


def require_whole(shell: Shell, m: Machine, qemu_img: str = qemuimg.QEMU_IMG) -> None:
    """A backup's qcow2 disk stands alone: a backing file its header names is not the backup's, yet
    qemu-img convert and the smoke boot's overlay would read it as the disk's data."""
    for d in m.disks:
        if d.fmt == "qcow2":
            layers = qemuimg.info(shell, d.source, qemu_img)
            if layers and layers[0].backing_filename:
                require_base_beside(shell, d.source)


def require_base_beside(shell: Shell, path: str) -> None:
    """A backing file is allowed only as an incremental's base: the same disk in a backup beside
    this one (which health.py judged good before anything reads it); anything else would be read
    as the backup's data."""
    folder, rel = path.rsplit("/", 1)
    try:
        chain.bases(shell, folder, [rel])
    except HostError as err:
        raise HotvcbError("%s has a backing file that is not part of the backup: %s" % (path, err)) from err


def require_extents_inside(fs: FileReader, path: str, parent: bool = True) -> Optional[str]:
    """vmkfstools and qemu open the files a VMDK descriptor names: they must be the backup's own,
    beside it (a descriptor naming /dev/sda or ../other/vm-flat.vmdk would have that read as the
    backup's disk, and a ghettoVCB backup has no checksums to notice). `parent=False`: the
    parentFileNameHint is not followed (a snapshot-tree delta is relinked by name). Returns the
    text read (None for a sparse extent, whose descriptor is embedded: `_sparse_hint`), so a caller
    that parses the descriptor too does not read it a second time. A disk's whole chain:
    require_chain_inside."""
    return _inside(fs, path, parent)[0]


def named_parent(fs: FileReader, path: str) -> Optional[str]:
    """The parent a disk's descriptor names (its file's or, embedded, a sparse disk's), checked as
    require_extents_inside checks it; None for a base."""
    return link(fs, path)[1]


def link(fs: FileReader, path: str) -> Tuple[Optional[str], Optional[str]]:
    """One file of a disk's chain, checked as require_extents_inside checks it: (its descriptor text, None
    for a sparse extent; the parent it names, None for a base)."""
    return _inside(fs, path, True)


def require_chain_inside(fs: FileReader, path: str) -> Tuple[Optional[str], List[Tuple[str, Optional[str]]]]:
    """The one check of a disk that a job reads out of a backup (restore to ESXi or KVM, verify --boot):
    vmkfstools and qemu follow each parentFileNameHint down to the base, and each parent's extents are
    read as the disk's data, so each descriptor in the chain is checked as the disk's own
    (require_extents_inside: beside it in the backup, as its hint already must be). (the disk's text
    read, None for a sparse extent; its parents (path, text read), nearest first)."""
    folder, out, seen = path.rsplit("/", 1)[0], [], {path}  # type: str, List[Tuple[str, Optional[str]]], set
    text, hint = _inside(fs, path, True)
    while hint:
        parent = folder + "/" + hint
        if parent in seen or len(out) >= esxi_tree.MAX_DEPTH:
            raise HotvcbError("%s: its chain of parents loops or is deeper than %d; not restoring from it"
                              % (path, esxi_tree.MAX_DEPTH))
        seen.add(parent)
        if not fs.exists(parent):
            raise HotvcbError("%s names its parent %s, which is not in the backup"
                              % (out[-1][0] if out else path, hint))
        read, hint = _inside(fs, parent, True)
        if read is not None:
            _parsed(parent, read)  # a parent is a disk: a file no descriptor is refused here, not by the clone
        out.append((parent, read))
    return text, out


def _inside(fs: FileReader, path: str, parent: bool) -> Tuple[Optional[str], Optional[str]]:
    """require_extents_inside's check: (the text read, None for a sparse extent; the parent it names,
    None for a base or with `parent=False`).

    A sparse extent is told by its magic, whatever its size (qemu-img's empty monolithicSparse disk
    is exactly 64 KiB, no bigger than a descriptor may be); anything else is a text descriptor, even
    one padded with comments past DESCRIPTOR_MAX (still a descriptor to vmkfstools), so it is read
    whole and checked (up to TEXT_MAX; past that it is refused). Read with read_regular: a FIFO planted as a descriptor
    would block a plain read for ever, a symlink lead out of the backup."""
    try:
        size, magic = fs.file_size(path), len(SPARSE_MAGICS[0])
        text = fs.read_regular(path, DESCRIPTOR_MAX if size <= DESCRIPTOR_MAX else magic)  # one read of a descriptor
        if text[:magic] in SPARSE_MAGICS:
            if size > DESCRIPTOR_MAX:
                text = fs.read_regular(path, DESCRIPTOR_MAX)
            return None, _sparse_hint(path, encoded(text, min(size, DESCRIPTOR_MAX))) if parent else None
        if size > TEXT_MAX:
            raise HotvcbError("%s is %d bytes and no sparse extent: too big for a disk descriptor; not "
                              "restoring from it" % (path, size))
        if size > DESCRIPTOR_MAX:
            text = fs.read_regular(path, TEXT_MAX)
        desc = vmdk.parse(text)
    except (HostError, UnicodeDecodeError) as err:
        raise HotvcbError("%s cannot be read: %s" % (path, err)) from None
    except vmdk.NotADescriptor:
        return text, None
    if not desc.extents:  # every disk has one; a descriptor whose extent line we cannot read is checked by none
        raise HotvcbError("%s names no extent we can read; not restoring from it" % path)
    _require_inside(path, *(e.filename for e in desc.extents))
    return text, _one_hint(path, [desc.parent_hint] + _QEMU_HINT.findall(text)) if parent else None


def _sparse_hint(path: str, head: bytes) -> Optional[str]:
    """A sparse extent (its first DESCRIPTOR_MAX bytes `head`, as read) names files too: a hosted sparse
    one (KDMV) embeds a descriptor where its header says (vmdk.embedded), whose parentFileNameHint
    vmkfstools follows and whose extents qemu opens (an image of capacity 0); qemu looks for the hint
    itself in the 20 sectors from sector 1, whatever the header says (block/vmdk.c vmdk_parent_open).
    Each is checked as a text descriptor's, and the header's capacity must be its descriptor's (else
    the room planned is not the clone's, which fails only after the checked copies were written); the
    parent named, if any."""
    window = head[512: 512 + QEMU_DESC_SIZE].split(b"\0", 1)[0]  # a C string to qemu
    hints = _QEMU_HINT.findall(decoded(window))  # type: List[Optional[str]]
    try:
        raw = vmdk.embedded(head.ljust(DESCRIPTOR_MAX, b"\0"))
    except vmdk.NotADescriptor:
        raise HotvcbError("%s embeds its descriptor past its first %d KiB, where no disk keeps it; not "
                          "restoring from it" % (path, DESCRIPTOR_MAX >> 10)) from None
    if raw is not None:
        try:
            desc = vmdk.parse(decoded(raw))
        except vmdk.NotADescriptor:
            return _one_hint(path, hints)  # no descriptor for VMware to follow: qemu's look (the window) is all
        _require_inside(path, *(e.filename for e in desc.extents))
        if desc.capacity != vmdk.sparse_capacity(head):
            raise HotvcbError("%s: its header says %d bytes, its embedded descriptor %d; not restoring from it"
                              % (path, vmdk.sparse_capacity(head), desc.capacity))
        hints.append(desc.parent_hint)
    return _one_hint(path, hints)


def _require_inside(path: str, *names: str) -> None:
    """The files a descriptor names (extents, parent) are names beside it in the backup, never paths."""
    for named in names:
        if "/" in named or named in ("..", "."):
            raise HotvcbError("%s names %r, a file outside the backup" % (path, named))


def _one_hint(path: str, hints: List[Optional[str]]) -> Optional[str]:
    """The parent the descriptor names, as VMware reads it (its parentFileNameHint line) and as qemu does
    (the first `parentFileNameHint` anywhere, a comment's too): both must name the same file, or the one
    checked would not be the one read."""
    named = sorted({h for h in hints if h is not None})
    _require_inside(path, *named)
    if len(named) > 1:
        raise HotvcbError("%s names its parent twice (%s): qemu and vmkfstools would read different disks; "
                          "not restoring from it" % (path, ", ".join(repr(h) for h in named)))
    return named[0] if named else None


def _parsed(path: str, text: str) -> vmdk.Descriptor:
    try:
        return vmdk.parse(text)
    except vmdk.NotADescriptor as err:
        raise HotvcbError("%s is not a readable disk descriptor: %s" % (path, err)) from None


def require_regular(fs: FileReader, path: str) -> None:
    """A file a restore copies or clones (extent, delta, .nvram, .vmxf) must be a regular file of the
    backup: a symlink leading to another VM's disk would be read as this backup's (its bytes, copied
    beside the link, even pass the checksums), a FIFO waited on for ever. Looked at just before the
    file is read (and by the plan, for the files it names)."""
    try:
        fs.read_regular(path, 1)
    except HostError as err:
        raise _refused(err) from err


def copy_regular(shell: Shell, src: str, dst: str) -> None:
    """A file the restore copies as it is (.nvram, .vmxf), refused as require_regular refuses one, by the
    copy's own open (Shell.copy_regular): one swapped for a symlink after any look is not followed."""
    try:
        shell.copy_regular(src, dst)
    except HostError as err:
        raise _refused(err) from err


def _refused(err: HostError) -> HostError:
    return HostError("%s: not restoring from it (a file the restore reads must be a regular file of the "
                     "backup, not a symlink)" % err)


def is_archive(shell: Shell, path: str) -> bool:
    """A compressed backup (ENABLE_COMPRESSION=1): one .gz file."""
    return path.endswith(".gz") and shell.exists(path) and not shell.isdir(path)


def unpack(shell: Shell, gz: str, dest: str, log) -> str:
    """A .gz backup unpacked into dest (which the caller removes); the backup folder inside it."""
    log("Unpacking %s into %s" % (gz, dest))
    try:
        return targz.extract(gz, dest)
    except HostError as err:
        raise HotvcbError("%s: %s" % (gz, err)) from None


def require_checksums(shell: Shell, path: str, log) -> None:
    """Every file against the manifest (a .gz: its members, streamed), as `hotvcb verify` reads it: health's
    verdict first (a copy outside its VM's folder too), so what verify
    fails is refused; a good ghettoVCB backup (no manifest) passes unverified."""
    res = verify_backup(shell, path, record=False)
    if res.status == "newer":
        raise HotvcbError("%s: %s" % (path, res.message))
    if res.status == "unverifiable":
        log("%s: %s; checksums not available" % (path, res.message))
        return
    if res.status == "gone":
        raise HotvcbError(not_restoring_gone(path, res))
    if res.status != "ok":
        raise HotvcbError("%s fails verification: %s" % (path, res.problems[0] if res.problems else res.message))
    log("Checksums hold: %s" % res.message)


def newest_good(shell: Shell, volume: str, vm: str, odd: Optional[Callable[[str], None]] = None,
                skipped: Optional[Callable[[str], None]] = None) -> Optional[str]:
    """The newest good backup (folder or .gz) of a VM; `odd`: as layout.list_backups's; `skipped`: told
    each newer backup passed over (`passed_over`)."""
    verdicts = [(b, health.judge(shell, b)) for b in layout.list_backups(shell, volume, vm, odd)]
    good = [b.path for b, v in verdicts if v.good]
    if good and skipped:
        for line in passed_over(vm, verdicts, good[-1]):
            skipped(line)
    return good[-1] if good else None


def passed_over(vm: str, verdicts: "List[Tuple[layout.BackupSet, verdict.Health]]", chosen: str) -> List[str]:
    """One line per backup of `vm` newer than `chosen` (the newest good one, which --latest takes) that
    is not good, with why: the one before a damaged backup restored without a word is taken by the admin
    for the VM's latest state, and the days between are missed."""
    newer = [b.path for b, _ in verdicts].index(chosen) + 1
    return ["%s: skipped the newer backup %s, which is %s: %s; taking %s" % (
        vm, b.path, v.state, v.reason or v.state, chosen) for b, v in verdicts[newer:] if not v.good]


def named_ahead(vm: str, ahead: "List[layout.BackupSet]", chosen: str) -> List[str]:
    """One line for the good backups of `vm` named more than a day after the host's clock (rotation.dated_ahead:
    made while it ran ahead), which --latest passes over as rotation and status distrust them: their names say
    nothing of when their data is from, which may be weeks older than last night's. Where every good backup is
    so named, `chosen` is one of them, and the line says so."""
    if not ahead:
        return []
    names = ", ".join(b.path for b in ahead if b.path != chosen)
    if any(b.path == chosen for b in ahead):
        return ["%s: taking %s, named later than the host's clock (was the clock ahead when it was made?): its "
                "data may be older than its name says%s" % (vm, chosen, "; so are " + names if names else "")]
    return ["%s: skipped %s, named later than the host's clock (was the clock ahead when it was made?): its data "
            "may be older than its name says; taking %s (restore one by its path if it is the one)" % (vm, names, chosen)]

