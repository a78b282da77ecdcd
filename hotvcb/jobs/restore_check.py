"""A restore's check of the backup's checksums, while its disks are written.

The backup is verified in a thread while the disks are cloned (one read in
time rather than a verify and then a clone): damage found stops the clone at
its next progress line, and nothing is renamed before the check passed
(restore.py). The disks a thin restore copies itself (restore_copy.py) are
proved by the copy's own read; the thread waits for that decision before any
file such a copy could prove and leaves those to it, so no disk is read twice.
The check of a folder backup starts as soon as the backup is found, so it also
reads while the pre-checks wait on their host commands (`start_early`). Where
nothing is copied beside it (a dry run, a KVM backup before it is staged, a
.gz's dry run) the backup is verified at once instead.
"""

import io
import threading
from typing import Any, Callable, Dict, Optional, Set

from ..background import POLL, Background
from ..errors import HotvcbError
from ..restorefile import RestoreRequest
from ..shell import Shell
from ..store import manifest
from . import restore_copy, restore_stage
from .restore_plan import Plan, RestoreError
from .verify import Problem, VerifyResult, compare, not_restoring_gone, verify_folder, verify_gz


def refuse_damaged(req: RestoreRequest, log, res: VerifyResult) -> None:
    _refuse(req, res)
    log.info("Checksums hold: %s" % res.message)


def _refuse(req: RestoreRequest, res: VerifyResult) -> None:
    """Refuse a backup that fails its checksums, whose manifest a newer hotvcb wrote (not checked: this
    hotvcb cannot read what it holds), or that went away while it was read (verify._unless_gone)."""
    if res.status == "gone":
        raise RestoreError(not_restoring_gone(req.backup, res))
    if res.status == "damaged":
        raise RestoreError(damaged(req, res.problems[0]))
    if res.status == "newer":
        raise RestoreError("%s: %s" % (req.backup, res.message))


def damaged(req: RestoreRequest, problem: Problem) -> str:
    return "%s fails verification, not restoring it: %s" % (req.backup, problem)


class OwnCopies:
    """The disks this restore copies itself (restore_copy.py), known once the plan is made. The
    background check reads every other file at once but waits for that decision before a file such
    a copy could prove (`provable`), so a disk copied here is never read a second time."""

    def __init__(self, provable: Set[str]):
        self.provable = provable
        self.by_source = {}  # type: Dict[str, restore_copy.OwnCopy]  # by the disk's descriptor in the backup
        self._decided = threading.Event()

    def decide(self, by_source: "Dict[str, restore_copy.OwnCopy]") -> None:
        self.by_source = by_source
        self._decided.set()

    def skips(self, rel: str, check: Callable[[], None]) -> bool:
        """Whether the background check leaves `rel` to the copy; `check` raises once it is cancelled."""
        if rel not in self.provable:
            return False
        while not self._decided.wait(POLL):
            check()
        return any(own.rel == rel for own in self.by_source.values())


class Checking:
    """The backup's checksums as the copy sees them: verified in the background (but for the disks
    the copy proves itself: `own`), or not at all (`work` None: no manifest, or --no-verify)."""

    def __init__(self, req: RestoreRequest, log, work: "Optional[Background[VerifyResult]]",
                 own: Optional[OwnCopies] = None):
        self.req, self.log, self.work = req, log, work
        self.own = own or OwnCopies(set())

    def watching(self, progress: Callable[[int], None]) -> Callable[[int], None]:
        """`progress` that also stops the clone (by raising) as soon as the check found damage."""
        def watch(pct: int) -> None:
            progress(pct)
            self.stop_if_damaged()
        return progress if self.work is None else watch

    def stop_if_damaged(self) -> None:
        """Stop the copy once the check found damage, or found the backup gone (it reads what the copy reads)."""
        status = self.work.result().status if self.work is not None and self.work.done() else ""
        if status in ("damaged", "gone"):
            self.log.info("The backup %s during the copy: copy stopped" % (
                "failed verification" if status == "damaged" else "went away"))
            self.wait()

    def wait(self) -> None:
        if self.work is not None:
            refuse_damaged(self.req, self.log, self.work.result())

    def cancel(self) -> None:
        if self.work is not None:
            self.work.cancel()


def prove_descriptors(req: RestoreRequest, plan: Plan, backup: str, data: Dict[str, Any]) -> None:
    """Each descriptor text as the plan read it (a disk's, a delta's parents', a kept snapshot tree's
    deltas'), proved against the manifest `data`. The clone, the self-copy and the tree's copy use
    those texts (restore_write._checked, restore_copy.py, restore_tree.copy), while the background
    check reads the files on its own: a descriptor swapped between the two reads would have the check
    prove one text and the restore use another. (Text decoded as UTF-8, else Latin-1: either encoding
    gives the bytes back.)"""
    files = data.get("files") or {}
    texts = [(d.source, d.text) for d in plan.disks if not d.embedded]  # a sparse extent: the disk, read by the check
    texts += [(path, text) for d in plan.disks for path, text in d.parents if text is not None]
    texts += [(plan.tree.folder + "/" + name, text) for name, text in plan.tree.texts.items()] if plan.tree else []
    for path, text in texts:
        rel = path[len(backup) + 1:]
        entry = files.get(rel)
        if entry is not None and path.startswith(backup + "/"):  # else not a disk's
            _prove(req, rel, entry, text)


def _prove(req: RestoreRequest, rel: str, entry: Dict[str, Any], text: str) -> None:
    try:
        block_size, whole = manifest.block_size_for(entry, manifest.BLOCK_SIZE)
    except ValueError as err:
        raise RestoreError(damaged(req, Problem(rel, "manifest entry unusable: %s" % err))) from err
    problem = None  # type: Optional[Problem]
    for codec in ("utf-8", "latin-1"):
        try:
            raw = text.encode(codec)
        except UnicodeEncodeError:
            continue
        problem = compare(rel, entry, manifest.digest_stream(io.BytesIO(raw).read, block_size, whole=whole))
        if problem is None:
            break
    if problem is not None:
        raise RestoreError(damaged(req, problem))


def verify_now(shell: Shell, req: RestoreRequest, log, backup: str) -> None:
    log.info("Verifying checksums of %s" % req.backup)
    refuse_damaged(req, log, verify_folder(shell, backup, record=False))


def verify_gz_now(shell: Shell, req: RestoreRequest, log, gz: str) -> None:
    log.info("Verifying checksums inside %s" % gz)
    res = verify_gz(shell, gz, record=False)
    _refuse(req, res)
    log.info("Checksums: %s" % res.message)


def start_early(shell: Shell, req: RestoreRequest, log, source: str) -> Optional[Checking]:
    """The background check of a folder backup that will be checked (a manifest that says ok, an ESXi
    backup; the caller rules out a .gz, --no-verify and a dry run), started before the pre-checks' host
    commands (~0.1 s each on esxisim; a round trip to hostd each on a host) instead of after them; None
    otherwise. Nothing is judged here: the pre-checks still say, in their order, why a backup is
    refused, and one that refuses it cancels this check (it only reads)."""
    try:
        data = manifest.load(shell, source)
        if data is None or data.get("result") not in ("ok", None) or restore_stage.kvm_machine(shell, source):
            return None
    except (HotvcbError, ValueError):
        return None
    return start(shell, req, log, source, data, compressed=False)


def start(shell: Shell, req: RestoreRequest, log, backup: str, data: Dict[str, Any], compressed: bool) -> Checking:
    """The background check against the manifest `data`, told which files a copy by this process
    could prove instead."""
    provable = restore_copy.provable(data.get("files") or {}) \
        if restore_copy.copies_itself(shell, req, compressed) else set()
    return _in_background(shell, req, log, backup, provable)


def _in_background(shell: Shell, req: RestoreRequest, log, backup: str, provable: Set[str]) -> Checking:
    """Read the backup for its checksums while the clone reads it (one read in time, not two
    in a row); the copy stops early on damage and renames nothing before the check passed.
    The disks the copy proves itself (`provable`, once decided) are left to it."""
    log.info("Verifying checksums of %s while copying" % req.backup)
    own = OwnCopies(provable)
    return Checking(req, log, Background(
        lambda check: verify_folder(shell, backup, record=False, progress=lambda _n: check(),
                                    skip=lambda rel: own.skips(rel, check)), "restore-verify"), own)
