"""The checkpoints of the libvirt domains one run backs up, as libvirt listed them and as the run changed them since.

Every `virsh` call is a process start and a connection, and an incremental
copies only a few MiB, so those calls decide its time. The list asked beside
the leftover check's `backup-dumpxml` serves the job's start (which
checkpoint of ours it is incremental from) and end (which older ones of ours
to drop): the run holds the host's lock, so no other hotvcb run makes or
drops ours meanwhile. A list older than REUSED_FOR is asked again; one of
ours deleted by hand meanwhile makes `backup-begin` fail, which falls back to
a full backup (hosts/libvirt.py), and a drop of one already gone is no error.

A name is not enough to know a checkpoint: one deleted and made again under
the same name (by hand, from its saved XML, description and all) has a
bitmap that starts at its re-creation, and an incremental from it would miss
every write before. So the list keeps libvirt's creation times, and the
driver asks it once more after `backup-begin` (the instant the bitmap was
taken): the new checkpoint's time goes into the backup, the base's is
checked against the one its backup recorded.
"""

import time
from typing import Dict, List, Tuple

from ..runlog import RunLog
from .virsh import Virsh, VirshError

REUSED_FOR = 60.0  # seconds a list serves


class Checkpoints:
    def __init__(self, virsh: Virsh, log: RunLog):
        self.virsh, self.log = virsh, log
        # domain -> (time.monotonic() read, [(name, creation time)])
        self._lists = {}  # type: Dict[str, Tuple[float, List[Tuple[str, str]]]]

    def listed(self, domain: str) -> List[str]:
        """Asked now, oldest first."""
        rows = self.virsh.checkpoints(domain)
        self._lists[domain] = (time.monotonic(), rows)
        return [name for name, _created in rows]

    def known(self, domain: str) -> List[str]:
        """As the last list, with this run's changes since, has them; asked now if that is old."""
        if domain not in self._lists or time.monotonic() - self._lists[domain][0] > REUSED_FOR:
            return self.listed(domain)
        return [name for name, _created in self._lists[domain][1]]

    def created(self, domain: str, name: str) -> str:
        """The checkpoint's creation time as the last list had it, "" when it had none of that name."""
        return dict(self._lists.get(domain, (0.0, []))[1]).get(name, "")

    def drop(self, domain: str, name: str) -> None:
        """Delete a checkpoint of ours; one whose bitmap QEMU cannot use any more is forgotten by libvirt."""
        try:
            self.virsh.delete_checkpoint(domain, name)
        except VirshError as err:
            if "no domain checkpoint with matching name" not in err.text:
                self.log.warning("%s: checkpoint %s: %s; libvirt forgets it instead" % (domain, name, err.text))
                self.virsh.delete_checkpoint(domain, name, metadata_only=True)
        if domain in self._lists:
            read, names = self._lists[domain]
            self._lists[domain] = (read, [c for c in names if c[0] != name])
