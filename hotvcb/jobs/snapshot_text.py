"""The description our snapshots carry: the run's record, the epoch the snapshot was asked at, the job.

The snapshot's name says the same second in the writer's wall-clock time, which carries no zone: a QEMU
overlay (whose host keeps no time of it) read back by `status` in another zone than the run that made it
(cron's TZ and a monitoring agent's) was hours old or dated ahead. The epoch is the same in every zone.
Descriptions written before it carry none; their name is read as before (jobs/leftovers.py asked_at).
"""

import time
from typing import Optional

from .. import lazyre
from ..runid import RunId
from ..units import whole

_ASKED = lazyre.compile(r", asked=([^\s,]*)(?:,|$)")


def describe(run: RunId, job_name: str) -> str:
    """The text a run gives its snapshot (job name last: it may hold anything)."""
    return "hotvcb backup %s, asked=%d, job %s" % (run.text(), int(time.time()), job_name)


def asked_epoch(description: str) -> Optional[float]:
    """The epoch the description says its snapshot was asked at; None without one or one not a number
    (anyone may plant a description: read with units.whole, never int() on any length)."""
    m = _ASKED.search(description.split(", job ", 1)[0])
    if m is None:
        return None
    epoch = whole(m.group(1))
    return None if epoch is None else float(epoch)
