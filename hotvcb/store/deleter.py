"""Rotation's removals, done in a thread while the run goes on.

Freeing a backup's blocks takes time of its own (ext4 with `discard`: 0.2-0.4 s
per GiB on the test machine; a thick disk on VMFS or a busy NFS server: more),
and rotation can only start once the new backup is sealed, so a run that
removed its old backups in line waited for each one before its next VM, and
its last VM's removal was pure wait. Rotation therefore renames a doomed
backup to `-deleting` first (one atomic step out of the good namespace: list,
verify, restore and ghettoVCB's listing never see it as a backup) and hands
the renamed path here. The run waits for every removal before it ends
(`wait`, before its final status and report), so the space is free when the
run says it is done; a run killed meanwhile leaves a `-deleting` folder that
the next run of that VM, or `hotvcb cleanup`, finishes (rotation.finish_deleting).
"""

import threading
from typing import Callable, List, Optional, Set

from .. import crashpoint


class Deleter:
    def __init__(self, remove: Callable[[str], None]):
        """`remove(path)`: remove one condemned path (logging, not raising, a host's refusal)."""
        self._remove = remove
        self._todo = []  # type: List[str]
        self._queued = set()  # type: Set[str]  # queued or being removed: never handed twice
        self._busy = threading.Condition()
        self._thread = None  # type: Optional[threading.Thread]
        self._error = None  # type: Optional[BaseException]
        self._removed = 0  # removals finished: a look at the free space taken before one ended is stale

    def remove(self, path: str) -> None:
        """Queue a path already renamed out of the good namespace."""
        with self._busy:
            if path in self._queued:
                return
            self._queued.add(path)
            self._todo.append(path)
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="hotvcb-deleter", daemon=True)
                self._thread.start()

    def _work(self) -> None:
        path = None  # type: Optional[str]
        error = None  # type: Optional[BaseException]
        while True:
            with self._busy:  # the thread ends in the same hold that finds nothing left to do
                if path is not None:
                    self._queued.discard(path)  # done, or raised: handed again, it is tried again
                    self._removed += 1  # a removal that raised may have freed part of its space too
                    if self._error is None:
                        self._error = error
                if not self._todo:
                    self._thread = None
                    self._busy.notify_all()
                    return
                path = self._todo.pop(0)
            error = None
            try:
                crashpoint.reached("rotation-deleting")
                self._remove(path)
            except BaseException as err:  # a defect, not a refusal: raised by wait() in the owner's thread,
                error = err  # once the paths queued behind it are removed too (they are condemned either way)

    @property
    def removed(self) -> int:
        """How many removals have finished so far (never decreases)."""
        with self._busy:
            return self._removed

    def wait(self) -> bool:
        """Block until every queued removal is done; whether there was any to wait for. The first
        defect a removal raised (the others were still done) is raised here."""
        with self._busy:
            waited = self._thread is not None
            while self._thread is not None:
                self._busy.wait()
            error, self._error = self._error, None
        if error is not None:
            raise error
        return waited
