"""hotvcb.json: what a backup holds and how to prove it.

Written into the backup folder after every file is copied and hashed, and
before STATUS.*; see layout.py for the whole write order. Format (version 3;
a manifest without content entries is still written as version 2):

    {"format": "hotvcb-backup", "version": 2,
     "vm": name, "vmid": id, "source_vmx": path, "host": text,
     "started": iso, "finished": iso, "result": "ok|warn|error", "message": text,
     "disk_format": fmt, "snapshot": {"name": n, "id": id, "memory": b, "quiesce": b},
     "disks": [{"key": "scsi0:0", "source": path, "files": [name...], "ok": b, "error": text}],
     "files": {relative name: {"size": n, "sha256_of_blocks": hex,
                               "blocks": {"size": 1048576, "hex": 16, "digests": hex...}},
               relative name: {"size": n, "content": {"format": "qcow2", "size": virtual n,
                               "sha256_of_blocks": hex, "blocks": {...}}}},   version 3, see below
     "verified": iso or null,
     "snapshot_tree": {"folder": "snapshot-tree", "vmx": name, "vmsd": name, "snapshots": [name...],
                       "files": [relative name...]},      only with BACKUP_SNAPSHOT_TREE (jobs/snaptree.py)
     "skipped": [{"key": "scsi0:1", "source": path, "reason": text}],   only for disks no snapshot copies
     "left_out": [{"key": "scsi0:2", "source": path}]}   the VM's disks VMDK_FILES_TO_BACKUP did not name
                                                         ([]: none); absent in manifests written before it

Version 2 differs from version 1 only in the "files" entries: the proof of a
file is derived from its 1 MiB block digests (one pass, one hash per block,
holes not read) instead of a whole-file SHA-256 computed beside them; see
"file digests" below and blockdigest.py. Version-1 manifests, and version-1
entries inside a version-2 manifest, keep verifying. A manifest of a newer
version than this code knows is refused rather than misread.

Version 3 adds content entries ("content entries" below): a disk image whose
proof is the virtual disk it holds rather than its file's bytes. Only a
manifest holding one is written as version 3, so an older hotvcb refuses
exactly the backups it could not check, and reads every other.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Tuple

from .. import blockdigest, qcow2
from ..errors import HostError
from ..filetext import read_small
from ..hostdigest import check_interrupt
from ..shell import FileReader, Shell

MANIFEST = "hotvcb.json"
FORMAT = "hotvcb-backup"
VERSION = 3
CONTENT = "content"
CONTENT_FORMATS = ("qcow2",)  # how the virtual disk is read from the file (qcow2.py)
# Read with read_small, bounded: a FIFO planted as hotvcb.json would block a plain read for ever.
# BLOCK_HEX (16) digits per 1 MiB block make a manifest 1/65536 of the disks it proves: 1 GiB is the
# proof of 64 TiB of disks (a whole VMFS-6 datastore of them), the per-file entries besides.
MANIFEST_MAX = 1 << 30


class NewerManifest(ValueError):
    """A manifest of a version this hotvcb does not know: a newer hotvcb's backup, sound as far as anyone
    knows, not damage. Rotation leaves such a backup alone (it cannot tell whose it is, nor whether it is
    good); every reader refuses it alike."""


def dumps(data: Dict[str, Any]) -> str:
    files = data.get("files") or {}
    body = {"format": FORMAT, "version": VERSION if any(CONTENT in e for e in files.values()) else 2}
    body.update(data)
    return json.dumps(body, indent=2, ensure_ascii=False, sort_keys=False) + "\n"


def load(shell: FileReader, folder: str) -> Optional[Dict[str, Any]]:
    """The manifest of a backup, or None for one made by ghettoVCB; ValueError when unusable."""
    path = folder + "/" + MANIFEST
    if not shell.exists(path):
        return None
    return parse(read_small(shell, path, MANIFEST_MAX), path)


def readable(shell: FileReader, folder: str) -> Optional[Dict[str, Any]]:
    """The manifest of a backup where it reads, else None (none, or unusable): for a restore's plan, which
    takes from it which .vmx is the backup's (backup_files.own_vmx) and where the VM lived; whether the backup
    is good, its manifest readable, is health's and verify's to judge before."""
    try:
        return load(shell, folder)
    except (ValueError, HostError):
        return None


def checks_vmx(text: str) -> bool:
    """Whether a manifest's text has its backup's .vmx read to check every disk it names is accounted for
    (health.unaccounted_disk): it accounts for all ("left_out") of a VM that has a .vmx. A QEMU or libvirt
    VM's `source_vmx` is its QMP socket or domain, and their backups hold no .vmx: a .gz's judge read on for
    one, and decompressed the whole archive at every rotation, status, list and restore --latest."""
    if '"left_out"' not in text:
        return False
    try:
        source = json.loads(text).get("source_vmx")
    except (ValueError, AttributeError):
        return True  # judged as unreadable once read
    return not isinstance(source, str) or source.lower().endswith(".vmx")


def parse(text: str, where: str) -> Dict[str, Any]:
    """A manifest's JSON, checked for the shape every reader relies on.

    A hand-edited or damaged manifest must make one backup "damaged", never
    crash list, verify, restore or the rotation of every other backup.
    """
    try:
        data = json.loads(text)
    except ValueError as err:
        raise ValueError("%s is not JSON: %s" % (where, err)) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError("%s is not a hotvcb manifest" % where)
    version = data.get("version", 1)  # version 1 wrote none
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:  # true is an int to Python
        raise ValueError("%s has no usable version (%s): damaged or edited" % (where, json.dumps(version)))
    if version > VERSION:
        raise NewerManifest("%s is manifest version %s, made by a newer hotvcb (this one reads up to %d)"
                         % (where, version, VERSION))
    files, disks = data.get("files", {}), data.get("disks", [])
    if not isinstance(files, dict) or not all(
            isinstance(k, str) and isinstance(v, dict) and isinstance(v.get("size", 0), int)
            and isinstance(v.get("blocks") or {}, dict) for k, v in files.items()):
        raise ValueError("%s: \"files\" is not a table of file entries" % where)
    if not all(_content_shape(v.get(CONTENT, {})) for v in files.values()):
        raise ValueError("%s: a \"content\" entry is not a record of a disk's content" % where)
    if not isinstance(disks, list) or not all(
            isinstance(d, dict) and isinstance(d.get("files", []), list) for d in disks):
        raise ValueError("%s: \"disks\" is not a list of disk records" % where)
    for key in ("result", "message", "verified", "disk_format"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise ValueError("%s: \"%s\" is not text" % (where, key))
    if data.get("verify_error") is not None and not isinstance(data["verify_error"], dict):
        raise ValueError("%s: \"verify_error\" is not a record" % where)
    tree = data.get("snapshot_tree")
    if tree is not None and not (isinstance(tree, dict) and isinstance(tree.get("files"), list)
                                 and all(isinstance(f, str) for f in tree["files"])):
        raise ValueError("%s: \"snapshot_tree\" is not a record listing its files" % where)
    return data


def _content_shape(content: Any) -> bool:
    return isinstance(content, dict) and isinstance(content.get("size", 0), int) and isinstance(
        content.get("blocks") or {}, dict) and isinstance(content.get("format", ""), str)


def tree_files(data: Dict[str, Any]) -> List[str]:
    """The files of the user's snapshot tree kept in the backup (BACKUP_SNAPSHOT_TREE), by relative name."""
    tree = data.get("snapshot_tree")
    return list(tree["files"]) if isinstance(tree, dict) else []


# -- file digests -------------------------------------------------------------
# Version 1 proved a file by its whole-file SHA-256 ("sha256") and, added later
# for `hotvcb verify`, could carry
#
#     "blocks": {"size": 1048576, "hex": 16, "digests": "<16 hex chars per block>"}
#
# i.e. the first 64 bits of the SHA-256 of each 1 MiB block, concatenated in
# file order, used only to locate the first damaged range. Computing both
# meant two hashes of every byte, holes included.
#
# Version 2 (see blockdigest.py) hashes each block once and derives the proof
# from the block digests:
#
#     {"size": n, "sha256_of_blocks": hex,
#      "blocks": {"size": 1048576, "hex": 16, "digests": "..."}}
#
# sha256_of_blocks = SHA-256 of the concatenated full 32-byte SHA-256 digests
# of the blocks of blocks.size bytes (the last one shorter; SHA-256("") for an
# empty file). "blocks" keeps the version-1 meaning, so the same code locates
# damage in both. An all-zero block's digest is the SHA-256 of its zeros, so
# the proof follows the content, not the allocation; holes are skipped without
# being read. An entry without "sha256_of_blocks" is a version-1 entry (also
# written by a version-2 sealer over SSH to a host without python: "size" and
# the host's `sha256sum` only) and is checked by its whole-file SHA-256.

BLOCK_SIZE = 1 << 20
MIN_BLOCK_SIZE, MAX_BLOCK_SIZE = 4096, 64 << 20  # what a manifest's "blocks.size" may say
BLOCK_HEX = 16
PROOF = "sha256_of_blocks"


class FileDigest(object):
    """Size, proof and per-block digests of one file.

    `sha256_of_blocks` is the version-2 proof, `sha256` the whole-file SHA-256
    of version 1; either may be None when it was not computed. `blocks` is
    BLOCK_HEX hex digits per block ("" when unknown).
    """

    def __init__(self, size: int, sha256: Optional[str], blocks: str, block_size: int = BLOCK_SIZE,
                 sha256_of_blocks: Optional[str] = None):
        self.size, self.sha256, self.blocks, self.block_size = size, sha256, blocks, block_size
        self.sha256_of_blocks = sha256_of_blocks

    def entry(self) -> Dict[str, Any]:
        """The manifest "files" entry for this file (version 2 when the proof is known)."""
        if self.sha256_of_blocks is None:
            out = {"size": self.size, "sha256": self.sha256}  # type: Dict[str, Any]
        else:
            out = {"size": self.size, PROOF: self.sha256_of_blocks}
        if self.blocks:
            out["blocks"] = {"size": self.block_size, "hex": BLOCK_HEX, "digests": self.blocks}
        return out

    def matches(self, entry: Dict[str, Any]) -> bool:
        """Whether this digest proves the file the entry describes (either version)."""
        if self.size != int(entry.get("size", -1)):
            return False
        if PROOF in entry:
            blocks = entry.get("blocks") or {}
            return (self.sha256_of_blocks is not None and self.sha256_of_blocks == entry[PROOF]
                    and blocks.get("size", BLOCK_SIZE) == self.block_size)
        return self.sha256 is not None and self.sha256 == entry.get("sha256")


def from_blockdigest(out: Dict[str, Any], block_size: int) -> FileDigest:
    """blockdigest's result as a FileDigest (also what a restore that digests as it copies gets)."""
    return FileDigest(int(out["size"]), out.get("sha256"), out.get("blocks") or "", block_size,
                      out.get(PROOF))


def block_size_for(entry: Optional[Dict[str, Any]], block_size: int) -> Tuple[int, bool]:
    """(block size, whole-file SHA-256 wanted) to check `entry`; new files get version 2.
    ValueError for a block size no hotvcb writes."""
    if entry is None:
        return block_size, False
    blocks = entry.get("blocks") or {}
    size = (blocks.get("size") or block_size) if isinstance(blocks, dict) else None
    if type(size) is not int or not MIN_BLOCK_SIZE <= size <= MAX_BLOCK_SIZE:
        # the manifest is input: a size it cannot hold would end verify in a ValueError, or make the
        # threaded reader allocate its ring of buffers of that size (gigabytes)
        raise ValueError("its block size %.40r is not one hotvcb writes (%d to %d bytes)"
                         % (size, MIN_BLOCK_SIZE, MAX_BLOCK_SIZE))
    return size, PROOF not in entry


def digest_stream(read, block_size: int = BLOCK_SIZE, on_block=None, whole: bool = True) -> FileDigest:
    """Digest what `read(n)` returns until it returns b"" (a file, a tar member).

    A stream has no holes, but all-zero blocks are still not hashed (unless
    `whole`, the version-1 whole-file SHA-256, is wanted: on by default,
    because a .gz member is hashed before its manifest entry is known).
    """
    out = blockdigest.digest_read(read, block_size, whole, on_block, check_interrupt)
    return from_blockdigest(out, block_size)


def digest_file(shell: Shell, path: str, block_size: int = BLOCK_SIZE, on_block=None,
                entry: Optional[Dict[str, Any]] = None) -> FileDigest:
    """Digest a host file in one pass over its data (holes are not read).

    Without `entry` (sealing) the version-2 digest is computed; with the
    manifest entry the file is checked against, what that entry needs
    (version 1: also the whole-file SHA-256). The shell computes it where the
    file is (Shell.block_digests); a host without python gives the host's
    `sha256sum` instead (a version-1 entry without block digests).
    """
    from ..errors import HostError

    block_size, whole = block_size_for(entry, block_size)
    out = shell.block_digests(path, block_size, whole, on_block)
    if out is None:
        if entry is not None and PROOF in entry:
            raise HostError("cannot check %s: the host has no python to compute block digests" % path)
        return FileDigest(shell.file_size(path), shell.sha256(path, on_block), "", block_size)
    return from_blockdigest(out, block_size)


def first_bad_block(entry: Dict[str, Any], digest: FileDigest) -> Optional[Tuple[int, int]]:
    """(first, last) byte of the first block whose digest differs, or None.

    None also when the entry has no usable block digests (older manifests).
    """
    blocks = entry.get("blocks") or {}
    recorded = blocks.get("digests")
    width = blocks.get("hex", BLOCK_HEX)
    size = blocks.get("size", 0)
    if not isinstance(recorded, str) or not recorded or size != digest.block_size or width != BLOCK_HEX:
        return None  # (digests that are not text, from a damaged manifest, locate nothing)
    count = max(len(recorded), len(digest.blocks)) // width
    for i in range(count):
        a = recorded[i * width : (i + 1) * width]
        b = digest.blocks[i * width : (i + 1) * width]
        if a != b:
            start = i * size
            end = min(start + size, max(digest.size, int(entry.get("size", 0)))) - 1
            return start, max(end, start)
    return None


# -- content entries (version 3) ------------------------------------------------
# A disk written by `qemu-img convert -O qcow2` holds no file's bytes: qemu-img
# lays the clusters out itself. Its entry keeps the file's "size" (health.py
# compares it without reading) and proves the *virtual disk* instead:
#
#     {"size": file bytes, "content": {"format": "qcow2", "size": virtual bytes,
#                                      "sha256_of_blocks": hex, "blocks": {...}}}
#
# "content" is a version-2 file entry of the virtual disk (its bytes from 0 to
# its virtual size; unallocated and zero-flag clusters are zeros): the same
# block digests, proof and damage location, in virtual offsets. It is taken
# from the *source* while qemu-img copies it (store/source_digest.py), so the
# seal reads nothing back, and verify proves the copy reproduces the disk as
# the snapshot held it. A backup packed to .gz also gets the file's own proof
# (version-2 fields beside "content"), as a stream cannot be read as a qcow2:
# the archive is read whole to be packed anyway, and verify_gz checks that
# proof; a folder is checked by its content.


class ContentDigest(object):
    """The virtual disk an image holds (read as `fmt`), digested: a content entry's "content"."""

    def __init__(self, fmt: str, digest: FileDigest):
        self.format, self.digest = fmt, digest

    def entry(self, file_size: int, whole: Optional[FileDigest] = None) -> Dict[str, Any]:
        """The "files" entry: the file's size, the content, and the file's own proof if given."""
        out = whole.entry() if whole is not None else {}
        out["size"] = file_size
        out[CONTENT] = dict(self.digest.entry(), format=self.format)
        return out


def digest_content(shell: Shell, path: str, fmt: str, block_size: int = BLOCK_SIZE, on_block=None,
                   entry: Optional[Dict[str, Any]] = None) -> FileDigest:
    """Digest the virtual disk in `path`, an image of format `fmt` ("raw": the file is the disk; qcow2.py).

    With `entry` (a content entry's "content") its block size; ValueError for
    a format hotvcb does not read, HostError where the image cannot be read.
    """
    if fmt == "raw":
        return digest_file(shell, path, block_size, on_block, entry)
    if fmt not in CONTENT_FORMATS:
        raise ValueError("its content format %.40r is not one hotvcb reads (%s)" % (fmt, ", ".join(CONTENT_FORMATS)))
    block_size, _whole = block_size_for(entry, block_size)
    if entry is not None:
        with shell.open_binary(path) as f:
            stated = qcow2.virtual_size(f.read(512), path)
        if stated != entry.get("size"):  # a damaged header may claim petabytes: not read, not digested
            return FileDigest(stated, None, "", block_size)
    out = shell.block_digests(path, block_size, False, on_block, content=fmt)
    if out is None:
        from ..errors import HostError

        raise HostError("cannot check %s: the host has no python to read its disk" % path)
    return from_blockdigest(out, block_size)
