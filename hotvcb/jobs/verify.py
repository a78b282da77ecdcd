"""Prove a backup still holds what it held when it was sealed.

Every file the manifest names is re-read and compared by size and SHA-256.
Where the manifest carries per-block digests (manifest.BLOCK_SIZE blocks) the
first differing byte range is reported; otherwise the range is the whole file.
A disk with a content entry (a qcow2 made by qemu-img, manifest version 3) is
checked by the virtual disk it holds, read by qcow2.py, and damage is located
in virtual bytes; in a .gz, by its file's own proof (the seal adds one there).
Files in the folder the manifest does not name are reported as notes, not
damage (an admin's README does not break a backup).

Whether a backup is good is store/health.py's to say, for verify as for list,
status, rotation and restore (verify_backup asks health.judge_at first, leaving
out only verify's own earlier finding, which it is about to renew): verify reads
the checksums of a backup health calls good, and of any other says what health
says (_not_good): no rule of its own (on STATUS files, a failed or edited
manifest, a disk unaccounted for) to drift from theirs.

A successful check of a backup folder is recorded in its manifest
(`"verified": iso time`, and `"verify_error"` cleared); a failed one records
`"verify_error": {"at", "file", "message"}` and keeps the last good
`verified` time. The manifest is rewritten atomically (Shell.write_text), the folder's modification
time kept: ghettoVCB's rotation (an admin going back to it) keeps the folders `ls -t` lists first, and a
verified old backup must not become the newest there.
A compressed backup is checked by streaming the archive (through the
Shell, so over SSH too); its result goes to its record (sidecar.gz_record:
the archive cannot be rewritten in place). Either
record is what store/health.py reads: a damaged backup is not good.
Backups without a manifest (made by ghettoVCB) cannot be verified: a good one
is reported as "unverifiable", which is not a failure. A failed backup
(STATUS.error), one a disk failed in (hotvcb's STATUS.warn) and one being
rotated away are "skipped"; one that is partial, incomplete, empty or damaged
is that, a failure (a symlink named like a backup: "incomplete", as list calls it).
"""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Dict, List, Optional

from .. import qcow2, targz
from ..errors import HostError
from ..shell import Shell
from ..store import datasize, health, layout, manifest, sidecar

# Files a backup folder holds besides the ones the manifest lists.
BOOKKEEPING = (manifest.MANIFEST,) + layout.STATUS_FILES


@dataclass
class Problem:
    """Something wrong with one file of a backup, with the damaged range where it is known."""

    file: str
    message: str
    first: Optional[int] = None  # byte range of the first damage, when known
    last: Optional[int] = None
    unit: str = "bytes"  # "virtual bytes": the range is in the disk an image holds

    def __str__(self) -> str:
        where = ""
        if self.first is not None:
            where = " (%s %d-%s)" % (self.unit, self.first, self.last)
        return "%s: %s%s" % (self.file, self.message, where)


@dataclass
class VerifyResult:
    """One backup's verdict, with what was checked and what was wrong."""

    path: str
    status: str = "ok"  # ok | damaged | incomplete | empty | unverifiable | skipped | newer (a newer hotvcb's) | gone
    files: int = 0
    bytes: int = 0
    problems: List[Problem] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status in ("ok", "unverifiable", "skipped")


def verify_backup(shell: Shell, path: str, record: bool = True, progress=None) -> VerifyResult:
    """Check one backup folder or .gz: health's verdict first (health.judge_at), then, for a backup it calls
    good, every file against the manifest. NotABackup for a path named like a backup with no calendar's time."""
    archive = path.endswith(".gz") and not shell.isdir(path)
    if not archive and not shell.isdir(path):
        return _unless_gone(shell, _no_folder(path, layout.not_there(shell, path)))
    verdict = health.judge_at(shell, path, recorded=False)
    if not verdict.good:
        return _not_good(path, verdict)
    if verdict.state == "unverifiable":
        return VerifyResult(path, "unverifiable", message=NO_MANIFEST)
    if archive:
        return verify_gz(shell, path, record=record)
    return verify_folder(shell, path, record=record, progress=progress)


NO_MANIFEST = "no %s (a ghettoVCB backup): nothing to check against" % manifest.MANIFEST


def _not_good(path: str, verdict: "health.Health") -> VerifyResult:
    """What verify says of a backup health calls not good, by its verdict: a failed one, one a disk failed in
    (hotvcb's STATUS.warn) or one being rotated away is skipped, not checked; one being written or left by a
    dead run is incomplete; a newer hotvcb's is not checked; the rest (damaged, incomplete, empty) is that."""
    if verdict.newer:
        return VerifyResult(path, "newer", message=verdict.reason)
    if verdict.state == "error":
        return VerifyResult(path, "skipped", message="failed backup (%s), holds no data to check" % verdict.reason)
    if verdict.state in ("warn", "deleting"):
        return VerifyResult(path, "skipped", message="not a good backup (%s): not checked" % verdict.reason)
    return VerifyResult(path, "incomplete" if verdict.state == "partial" else verdict.state, message=verdict.reason)


def _no_folder(folder: str, why: str) -> VerifyResult:
    return VerifyResult(folder, "damaged", problems=[Problem(folder, "no backup folder")], message=why)


def _unlisted(folder: str, err: HostError) -> VerifyResult:
    """A backup folder whose files could not be listed (Shell.list_files: the folder, or one below it, that
    cannot be listed), said as such: "no backup folder" was said of one that is there."""
    return VerifyResult(folder, "damaged", problems=[Problem(folder, str(err))], message=str(err))


def _unless_gone(shell: Shell, result: VerifyResult) -> VerifyResult:
    """`result`, or "gone" where its damage is what reading a backup that went away meanwhile finds (another
    run's rotation renamed it to `-deleting`, an admin removed it: health.went_away): a file that cannot be read
    because its backup is no longer there says nothing of the backup's data. verify skips it, a restore stops
    saying so (restore_check._refuse), never "fails verification"; nothing is recorded of it."""
    if result.status != "damaged" or not health.went_away(shell, result.path):
        return result
    return VerifyResult(result.path, "gone", message=health.GONE)


def not_restoring_gone(backup: str, res: VerifyResult) -> str:
    """What a restore says of a backup that went away while its checksums were read: not that it failed them
    (read as a corrupt backup). It stops: the copy read from it too. A rerun of `--latest` takes the newest good
    backup left (restarting here would restore a backup other than the one the restore said it takes)."""
    return "%s: %s; not restoring it (restore --latest again takes the newest good backup left)" % (
        backup, res.message)


def verify_folder(shell: Shell, folder: str, record: bool = True, progress=None,
                  skip: Optional[Callable[[str], bool]] = None) -> VerifyResult:
    """Read every file the manifest names against its checksums: the work verify adds to health's verdict, for a
    backup health calls good (verify_backup; a restore judged it with check_sealed). `skip(rel)`: a file not to
    read here, because its reader checks it (a restore copying a disk itself, restore_copy.py); it is neither
    read nor counted."""
    result = VerifyResult(folder)
    if not shell.isdir(folder):
        return _unless_gone(shell, _no_folder(folder, layout.not_there(shell, folder)))
    try:
        data = manifest.load(shell, folder)
    except manifest.NewerManifest as err:
        return _newer(result, err)
    except (ValueError, HostError) as err:
        result.status, result.message = "damaged", "manifest unreadable: %s" % err
        result.problems.append(Problem(manifest.MANIFEST, "unreadable: %s" % err))
        return _unless_gone(shell, result)
    if data is None:
        result.status, result.message = "unverifiable", NO_MANIFEST
        return result
    files = data.get("files") or {}
    try:
        present = set(shell.list_files(folder))
    except HostError as err:  # removed since its manifest was read (another host's rotation), or unreadable
        return _unless_gone(shell, _unlisted(folder, err))
    for rel in sorted(files):
        if skip is not None and skip(rel):
            continue
        entry = files[rel]
        problem = _check_file(shell, folder + "/" + rel, rel, entry, rel in present, progress)
        result.files += 1
        result.bytes += int(entry.get("size", 0))
        if problem is not None:
            result.problems.append(problem)
    for rel in sorted(present - set(files) - set(BOOKKEEPING)):
        if not rel.startswith(".") and "/." not in rel:
            result.notes.append("%s is not in the manifest" % rel)
    _finish(result)
    result = _unless_gone(shell, result)
    if record and result.status != "gone":
        _record(shell, folder, data, result)
    return result


def _check_file(shell: Shell, path: str, rel: str, entry: Dict, present: bool, progress) -> Optional[Problem]:
    if not present:
        return Problem(rel, health.no_file(shell, path))
    content = entry.get(manifest.CONTENT)
    try:
        if content is None:
            return compare(rel, entry, manifest.digest_file(shell, path, on_block=progress, entry=entry))
        size = shell.file_size(path)
        if size != entry.get("size", size):  # cut short or grown: no need to read it
            return Problem(rel, "size %d, manifest says %d" % (size, entry["size"]))
        if size < qcow2.HEADER_V2:  # (also what a FIFO or device put there says: never opened)
            return Problem(rel, "%d bytes cannot hold a disk image" % size)
        digest = manifest.digest_content(shell, path, content.get("format", ""), on_block=progress, entry=content)
    except HostError as err:
        return Problem(rel, "unreadable: %s" % err)
    except ValueError as err:  # the manifest's entry for it is damaged
        return Problem(rel, "manifest entry unusable: %s" % err)
    problem = compare(rel, content, digest)
    if problem is not None:
        problem.message, problem.unit = "content " + problem.message, "virtual bytes"
    return problem


def compare(rel: str, entry: Dict, digest: "manifest.FileDigest") -> Optional[Problem]:
    """The problem with a file's digest against its manifest entry, or None."""
    size = int(entry.get("size", -1))
    if digest.matches(entry):
        return None
    span = manifest.first_bad_block(entry, digest)
    if digest.size != size:
        shorter = min(digest.size, size)
        if span is None or span[0] >= shorter:
            span = (shorter, max(digest.size, size) - 1)
        return Problem(rel, "size %d, manifest says %d" % (digest.size, size), *span)
    if span is None:
        if entry.get("blocks"):
            return Problem(rel, "SHA-256 mismatch", 0, max(size - 1, 0))
        return Problem(rel, "SHA-256 mismatch (no block digests in this manifest: somewhere in bytes 0-%d)" % max(size - 1, 0))
    return Problem(rel, "SHA-256 mismatch", *span)


def verify_gz(shell: Shell, path: str, record: bool = True) -> VerifyResult:
    """Stream a compressed backup once, hashing each member, then compare; record the
    finding (damage too: a truncated archive must stop counting as good)."""
    result = _unless_gone(shell, _check_gz(shell, path))
    # no record for an archive removed meanwhile (rotation): nothing would ever read it, or remove it
    if record and result.status in ("ok", "damaged") and shell.exists(path):
        _record_gz(shell, path, result)
    return result


def _check_gz(shell: Shell, path: str) -> VerifyResult:
    result = VerifyResult(path)
    digests = {}  # type: Dict[str, manifest.FileDigest]

    def on_file(rel, tar, info):
        digests[rel] = manifest.digest_stream(targz.member_data(tar, info).read)

    try:
        _top, members, texts = targz.scan(path, wanted=(lambda r: r == manifest.MANIFEST,), on_file=on_file,
                                          opener=shell.open_binary)
    except HostError as err:
        result.status, result.message = "damaged", str(err)
        result.problems.append(Problem(path.rsplit("/", 1)[-1], str(err)))
        return result
    if manifest.MANIFEST not in texts:
        result.status, result.message = "unverifiable", NO_MANIFEST
        return result
    try:
        data = manifest.parse(texts[manifest.MANIFEST], path + ":" + manifest.MANIFEST)
    except manifest.NewerManifest as err:
        return _newer(result, err)
    except ValueError as err:
        result.status, result.message = "damaged", "manifest unreadable: %s" % err
        result.problems.append(Problem(manifest.MANIFEST, "unreadable: %s" % err))
        return result
    files = data.get("files") or {}
    for rel in sorted(files):
        result.files += 1
        result.bytes += int(files[rel].get("size", 0))
        if rel not in digests:
            result.problems.append(Problem(rel, "missing from the archive"))
            continue
        if manifest.CONTENT in files[rel] and not ({manifest.PROOF, "sha256"} & set(files[rel])):
            result.problems.append(Problem(rel, "holds only a disk's content digest, which is not read inside a "
                                                ".gz (unpack the archive and verify the folder)"))
            continue
        problem = compare(rel, files[rel], digests[rel])
        if problem is None and datasize.list_differs(files[rel], digests[rel].blocks, digests[rel].block_size):
            problem = Problem(rel, "its data is intact, but the manifest's block digest list does not match it (the "
                                   "list a restore counts the room of the unpacked archive by)")
        if problem is not None:
            result.problems.append(problem)
    for m in members:
        if m.rel not in files and m.rel not in BOOKKEEPING:
            result.notes.append("%s is not in the manifest" % m.rel)
    _finish(result)
    return result


def _newer(result: VerifyResult, err: manifest.NewerManifest) -> VerifyResult:
    """A backup a newer hotvcb made: not checked, not damaged (verify says NOT CHECKED, as for a repository's)."""
    result.status, result.message = "newer", health.newer_reason(err)
    return result


def _finish(result: VerifyResult) -> None:
    if result.problems:
        result.status = "damaged"
        result.message = "%d of %d file(s) damaged; first: %s" % (len(result.problems), result.files, result.problems[0])
    else:
        result.message = "%d file(s), %d bytes intact" % (result.files, result.bytes)


def _record_gz(shell: Shell, path: str, result: VerifyResult) -> None:
    data = sidecar.read_gz_verify(shell, path)
    _apply(data, result)
    try:
        sidecar.write_gz_sidecar(shell, path, data)
    except HostError as err:
        result.notes.append("could not record the result: %s" % err)


def _apply(data: Dict, result: VerifyResult) -> None:
    now = datetime.now().isoformat(timespec="seconds")
    if result.status == "ok":
        data["verified"] = now
        data.pop("verify_error", None)
    else:
        first = result.problems[0]
        data["verify_error"] = {"at": now, "file": first.file, "message": str(first)}


def _record(shell: Shell, folder: str, data: Dict, result: VerifyResult) -> None:
    _apply(data, result)
    try:
        shell.write_text(folder + "/" + manifest.MANIFEST, manifest.dumps(data), keep_folder_time=True)
    except HostError as err:
        result.notes.append("could not record the result: %s" % err)
