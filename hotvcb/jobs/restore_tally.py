"""What a dry run's earlier requests would take, so each later one is planned as the real run meets it.

A restore file's dry run plans line by line, and nothing is written: without a tally, two lines
restoring one name onto one datastore, or two VMs that fit only one at a time, both "pass", and
the real run then refuses the second. The real run finds the folder the line before made, and the
room it took; the dry run counts them here instead (a backup's dry run reserves room VM by VM alike).
"""

from typing import Dict, Optional

from ..restorefile import RestoreRequest
from .restore_scratch import records_root


class Tally:
    def __init__(self) -> None:
        self.folders = {}  # type: Dict[str, str]  # a VM folder a request before would make -> which request
        self.room = {}  # type: Dict[str, int]  # a datastore's root -> the bytes requests before would take

    def hold(self, req: RestoreRequest, folder: str, needed: int) -> None:
        """The dry run of `req` passed: its folder and room are taken for the requests after it."""
        self.folders[folder] = req.where or req.backup
        root = records_root(folder)
        self.room[root] = self.room.get(root, 0) + needed

    def taken(self, folder: str) -> Optional[str]:
        """The refusal of a VM folder a request before would make, or None: the real run finds it there."""
        if folder not in self.folders:
            return None
        return "target folder %s is the one %s restores first; not overwriting it (give one of them another " \
               "name)" % (folder, self.folders[folder])

    def left(self, target: str, free: Optional[int]) -> Optional[int]:
        """The target's free bytes once the requests before took theirs."""
        if free is None:
            return None
        return max(0, free - self.room.get(records_root(target.rstrip("/") + "/x"), 0))
