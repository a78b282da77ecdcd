"""What a dry run's earlier requests would take, so each later one is planned as the real run meets it.

A restore file's dry run plans line by line, and nothing is written: without a tally, two lines
restoring one name onto one datastore, or two VMs that fit only one at a time, both "pass", and
the real run then refuses the second. The real run finds the folder the line before made, and the
room it took; the dry run counts them here instead (a backup's dry run reserves room VM by VM alike).
And with --power-on, the VMs the lines before would power on: the real run finds them running.

Folders and datastores are kept by the path the host resolves them to (`resolve`: Shell.realpath), as
the real run meets them: one line may name a datastore `ds5`, the next `/vmfs/volumes/<uuid>` (what
`esxcli storage filesystem list` prints), and both are one folder, one free space.
"""

from typing import Callable, Dict, List, Optional, Set, Tuple

from ..restorefile import RestoreRequest
from .restore_scratch import records_root


class Tally:
    def __init__(self, resolve: Callable[[str], str]) -> None:
        self.resolve = resolve
        self.folders = {}  # type: Dict[str, str]  # a VM folder a request before would make -> which request
        self.room = {}  # type: Dict[str, int]  # a datastore's root -> the bytes requests before would take
        self.running = []  # type: List[Tuple[str, Set[str]]]  # (name, identity) of VMs it would power on

    def hold(self, req: RestoreRequest, folder: str, needed: int) -> None:
        """The dry run of `req` passed: its folder and room are taken for the requests after it. `needed`:
        what stays on the datastore once the request is done (not a staged or unpacked copy it removes)."""
        real = self.resolve(folder)
        self.folders[real] = req.where or req.backup
        root = records_root(real)
        self.room[root] = self.room.get(root, 0) + needed

    def taken(self, folder: str) -> Optional[str]:
        """The refusal of a VM folder a request before would make, or None: the real run finds it there."""
        if not self.folders:  # a real run's tally, or a dry run's first line: no host round trip
            return None
        real = self.resolve(folder)
        if real not in self.folders:
            return None
        return "target folder %s is the one %s restores first; not overwriting it (give one of them another " \
               "name)" % (folder, self.folders[real])

    def left(self, target: str, free: Optional[int]) -> Optional[int]:
        """The target's free bytes once the requests before took theirs."""
        if free is None or not self.room:
            return free
        return max(0, free - self.room.get(records_root(self.resolve(target.rstrip("/")) + "/x"), 0))

    def powered_on(self, name: str, identity: Set[str]) -> None:
        """The dry run would power this VM on: the requests after it find it running."""
        self.running.append((name, identity))
