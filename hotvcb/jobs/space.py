"""Room on the backup target, promised to the VMs being backed up now.

One VM at a time, the pre-flight's look at the target's free space is the
truth: nothing else of ours writes there. With several VMs at once
(BACKUP_PARALLEL) every pre-flight would see the same free bytes, and three
copies could start where one fits. So a VM's pre-flight reserves what it
needs against what the other VMs of this run hold: it waits while they hold
the room it lacks, and fails only when it does not fit with no other VM of
ours holding any and none of this run's rotation removals still freeing
space (store/deleter.py: it waits for those, then looks again) — the
verdict a serial run gives. A reservation lasts until its VM is done
(sealed and rotated, or failed); a repository backup's temporary clone
(jobs/repo_backup.py) reserves the same way, until the clone is removed.

A compressed backup (ENABLE_COMPRESSION) writes its .gz beside the folder it
packs, and the folder goes only once the archive is whole (store/seal.py):
for a while it takes its size again, at most, so it reserves that too, and
another VM of ours does not copy into the bytes the archive is about to
take. Alone, a VM whose folder fits goes ahead as a serial run does: an
archive that does not fit then leaves the backup a sealed folder.

The free figure read while others copy already lacks what they have
written so far, and their reservations count in full: the check errs on the
side of waiting, never of promising the same bytes twice. Targets are told
apart by datastore (`/vmfs/volumes/<name>`, resolved, so the datastore's name and
its UUID path are one target); anything else by its path.

A free figure serves the VMs after it for REUSE_FOR seconds (each look is a
host command, a round trip to hostd on ESXi), less everything this run
reserved since, while it holds a VM's need twice over and no other VM of
ours holds room there: then a fresh look could not change the verdict
unless something else filled half the target within that time. A look
taken while another VM of ours held room there serves no one after: that VM
went on writing into bytes the look still counted as free, and "reserved
since" does not hold them. Otherwise,
and once a VM that held room there failed (a copy out of room, say), the
target is looked at again. The target's own checks (mounted, a folder)
run for every VM either way. The first look is the run's own, asked as it
starts beside its other questions (jobs/ahead.py): it checked the target
too, and serves the first VM's pre-flight by the same rules.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Dict, List, Optional, Protocol, Tuple

from .. import interrupt
from ..errors import HotvcbError
from ..units import human_size

RECHECK = 5.0  # seconds between looks at the free space while others hold the room
REUSE_FOR = 60.0  # seconds a look at the free space serves the next VMs' pre-flights


class Removals(Protocol):
    """This run's removals of rotated backups (store/deleter.Deleter)."""

    @property
    def removed(self) -> int:
        """How many have finished so far."""

    def wait(self) -> bool:
        """Block until none is pending; whether there was any."""


class _NoRemovals:
    removed = 0

    def wait(self) -> bool:
        return False


def need_text(needed: int, archive: int) -> str:
    """A backup's need as the log says it: its folder's, and its archive's while it is compressed."""
    more = " and up to %s more while it is compressed" % human_size(archive) if archive else ""
    return human_size(needed) + more


def pool_of(volume: str) -> str:
    """The target whose free space a backup volume shares: its datastore."""
    parts = volume.split("/")
    if len(parts) > 3 and parts[1:3] == ["vmfs", "volumes"]:
        return "/".join(parts[:4])
    return ""


class SpaceLedger:
    def __init__(self, log, resolve: Optional[Callable[[str], str]] = None,
                 first_look: Optional[Callable[[str], Optional[Tuple[Optional[int], float]]]] = None,
                 removals: Optional["Removals"] = None):
        """`resolve`: the host's realpath, so `/vmfs/volumes/<name>` and `/vmfs/volumes/<uuid>` (one
        datastore, as a per-VM file may name it) are one pool; parallel.run sets it. `first_look(volume)`:
        a look at its free bytes asked as the run started (jobs/ahead.py), (free, when) or None.
        `removals`: this run's rotation removals going on in a thread (store/deleter.py): a VM that does
        not fit looks again once they freed their space."""
        self.log, self.resolve, self.first_look = log, resolve, first_look
        self.removals = removals if removals is not None else _NoRemovals()
        self._roots = {}  # type: Dict[str, str]  # datastore path as written -> resolved
        self._held = {}  # type: Dict[str, Tuple[str, int]]  # VM name -> (pool, bytes reserved)
        # pool -> [free bytes seen, when, bytes reserved since, removals finished before the look,
        #          1 if another VM held room there as it was taken (it never serves again) else 0]
        self._looked = {}  # type: Dict[str, List[float]]
        self._changed = threading.Condition()

    def reserve(self, vm: str, volume: str, needed: int, measure: Callable[[], Optional[int]],
                check: Callable[[], object] = lambda: None, archive: int = 0) -> Optional[int]:
        """The free bytes `vm` may count on: `measure()` less the other VMs' reservations.

        `measure` checks the target and looks at its free bytes; where an
        earlier look serves, only `check` runs. Reserves `needed` and `archive`
        (what its .gz may take beside its folder) when they fit, or when
        `needed` fits with no other VM holding room there; while they do not
        and other VMs hold room on this target, waits for them (re-measuring);
        None when the target has no free-space figure (nothing is reserved then).
        """
        held = needed + archive
        pool = self._pool(volume) or volume
        checked = self._first(volume, pool)
        told = False
        while True:
            seen = self._seen(vm, pool, held)
            if seen is not None:
                free, removed, look = seen
                if not checked:
                    check()
            else:
                removed = self.removals.removed
                busy = self._others_hold(vm, pool)
                measured = measure()
                if measured is None:
                    return None
                free = measured
                look = [free, time.monotonic(), 0, removed, busy or self._others_hold(vm, pool)]
                with self._changed:
                    self._looked[pool] = look
            with self._changed:
                if seen is not None and self._looked.get(pool) is not look:
                    continue  # a VM failed there while the target was checked (release): look again
                others = sum(n for name, (p, n) in self._held.items() if p == pool and name != vm)
                room = free - others
                alone = not others
                if held <= room or (alone and needed <= room):
                    self._held[vm] = (pool, held)
                    latest = self._looked.get(pool)  # this VM's look, a newer one, or none since a failure
                    if latest is not None:
                        latest[2] += held
                    return room
                if not alone:
                    if not told:
                        holders = sorted(name for name, (p, n) in self._held.items() if p == pool and name != vm)
                        self.log.info("%s: waiting for room on %s: needs %s, %s free, of which %s is promised to "
                                      "VMs being backed up now (%s)" % (vm, volume, need_text(needed, archive),
                                                                        human_size(free), human_size(others),
                                                                        ", ".join(holders)))
                        told = True
                    self._changed.wait(RECHECK)
            if alone:
                # A removal that ended after the look (while this VM measured, or just now) freed room
                # the figure does not show: look again, as after a wait.
                if not self.removals.wait() and self.removals.removed == removed:
                    return room  # alone, it does not fit: the caller fails it as a serial run would
                with self._changed:
                    self._looked.pop(pool, None)  # looked at before the removals freed their space
            checked = False
            if interrupt.pending():
                interrupt.raise_pending()

    def _first(self, volume: str, pool: str) -> bool:
        """Whether the run's start looked at this target just now (jobs/ahead.py): the look is then
        recorded as a pre-flight's would be, served by the same rules, and the target's checks that
        came with it need not run again for the VM that takes it."""
        look = self.first_look(volume) if self.first_look is not None else None
        if look is None or look[0] is None:
            return False
        with self._changed:
            self._looked.setdefault(pool, [look[0], look[1], 0, 0, 0])  # asked before any removal or copy began
        return True

    def _seen(self, vm: str, pool: str, needed: int) -> Optional[Tuple[int, int, List[float]]]:
        """The free bytes an earlier look says are left, where they settle this VM's need, how many
        removals had finished before that look, and the look (dropped meanwhile, it serves no more)."""
        with self._changed:
            looked = self._looked.get(pool)
            if looked is None or looked[4] or self._others_hold(vm, pool):
                return None
            free, when, since, removed, _busy = looked
            left = int(free - since)
            fresh = time.monotonic() - when < REUSE_FOR and 2 * needed <= left
            return (left, int(removed), looked) if fresh else None

    def _others_hold(self, vm: str, pool: str) -> bool:
        with self._changed:
            return any(p == pool and name != vm for name, (p, _n) in self._held.items())

    def _pool(self, volume: str) -> str:
        pool = pool_of(volume)
        if not pool or self.resolve is None:
            return pool
        if pool not in self._roots:
            try:
                self._roots[pool] = self.resolve(pool)
            except HotvcbError:
                return pool
        return self._roots[pool]

    def release(self, vm: str, failed: bool = False) -> None:
        """`vm` is done; `failed`: its figure is not to serve the next VMs (a copy that ran out of
        room says the target holds less than the last look saw: something else is writing there)."""
        with self._changed:
            held = self._held.pop(vm, None)
            if held is not None:
                if failed:
                    self._looked.pop(held[0], None)
                self._changed.notify_all()
