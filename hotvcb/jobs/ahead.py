"""A backup run's first questions to the host, asked at once as the run starts.

Before its first VM a run asks the host who it is (`vmware -v` for the log and
the clone's flags, `uname -n` for every backup's record), which VMs it has
(`getallvms`, read by the datastore listing) and how much room the target has
(the listing, then `datastore/info`). Each is a round trip to hostd (a Python
process on esxisim), and none waits on another's answer except the free space
on the listing, which the driver asks once for both. So, once the run holds
the host's lock, each is asked in a thread of its own (`background.Ahead`),
and the answer is taken where the question used to be asked: the error of a
question that failed is raised there, so the errors, and the order in which
the checks fail, are those of a run asking one after the other (the free space
alone is looked at again by the pre-flight, which then says why). The first VM's own
questions are asked as soon as the VMs are known, beside those still out, by the
serial loop's look-ahead (jobs/lookahead.py), which keeps the VM it read to ask them
for that VM's backup (on libvirt the read is two virsh calls, not to be made twice).

Only questions are asked ahead; what acts (snapshots, copies, removals) keeps
its order. With ENABLE_NON_PERSISTENT_NFS the run mounts its target first,
which changes the listing: only the host's name and version are asked ahead then.
"""

import time
from typing import List, Optional, Tuple

from ..background import Ahead
from ..hosts.base import Hypervisor
from ..model import VmRef
from ..settings import Settings
from ..store import volume

Look = Tuple[Optional[int], float]  # (free bytes, None outside any datastore; time.monotonic() when asked)


class RunStart:
    def __init__(self, host: Hypervisor, s: Settings):
        self.host, self.volume = host, s.vm_backup_volume
        # the driver keeps these two for the run; its callers wait for the answer asked here
        self._identity = [Ahead(host.describe, "run-start"), Ahead(host.host_name, "run-start")]
        self._vms = None  # type: Optional[Ahead[List[VmRef]]]
        self._space = None  # type: Optional[Ahead[Look]]
        if not s.enable_non_persistent_nfs:
            self._vms = Ahead(host.list_vms, "run-start")
            asked = time.monotonic()
            self._space = Ahead(lambda: (volume.check(host, s.vm_backup_volume, s.create_vm_backup_volume), asked),
                                "run-start")

    def vms(self) -> List[VmRef]:
        """The host's VMs: asked as the run started, or now."""
        vms, self._vms = self._vms, None
        return vms.answer() if vms is not None else self.host.list_vms()

    def look(self, path: str) -> Optional[Look]:
        """The run start's look at the backup volume's free bytes, once, if `path` is that volume and
        the look succeeded (the target's checks passed); else None, and the caller looks itself."""
        space = self._space
        if space is None or path != self.volume:
            return None
        self._space = None
        return space.take()

    def drop(self) -> None:
        """As the run ends: end questions still out (see Ahead.drop)."""
        for question in self._identity + [q for q in (self._vms, self._space) if q is not None]:
            question.drop()
        self._vms = self._space = None
