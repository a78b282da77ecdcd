"""A restore's check of the backup's checksums while its disks are written.

The backup is verified in a thread while the disks are cloned (one read in
time rather than a verify and then a clone): damage found stops the clone at
its next progress line, and nothing is renamed before the check passed
(restore.py). The disks a thin restore copies itself (restore_copy.py) are
proved by the copy's own read; the thread waits for that decision before any
file such a copy could prove and leaves those to it, so no disk is read twice.
"""

import threading
from typing import Callable, Dict, Optional, Set

from ..background import POLL, Background
from ..restorefile import RestoreRequest
from ..shell import Shell
from . import restore_copy
from .restore_plan import RestoreError
from .verify import Problem, VerifyResult, verify_folder


def refuse_damaged(req: RestoreRequest, log, res: VerifyResult) -> None:
    if res.status == "damaged":
        raise RestoreError(damaged(req, res.problems[0]))
    log.info("Checksums hold: %s" % res.message)


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
        if self.work is not None and self.work.done() and self.work.result().status == "damaged":
            self.log.info("The backup failed verification during the copy: copy stopped")
            self.wait()

    def wait(self) -> None:
        if self.work is not None:
            refuse_damaged(self.req, self.log, self.work.result())

    def cancel(self) -> None:
        if self.work is not None:
            self.work.cancel()


def in_background(shell: Shell, req: RestoreRequest, log, backup: str, provable: Set[str]) -> Checking:
    """Read the backup for its checksums while the clone reads it (one read in time, not two
    in a row); the copy stops early on damage and renames nothing before the check passed.
    The disks the copy proves itself (`provable`, once decided) are left to it."""
    log.info("Verifying checksums of %s while copying" % req.backup)
    own = OwnCopies(provable)
    return Checking(req, log, Background(
        lambda check: verify_folder(shell, backup, record=False, progress=lambda _n: check(),
                                    skip=lambda rel: own.skips(rel, check)), "restore-verify"), own)
