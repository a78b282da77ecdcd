"""Named points where a test may kill the run with SIGKILL (HOTVCB_CRASH_AT=NAME).

A crash can come at any instant; the tests must be able to pick the instants
that matter (after the snapshot, between disks, between the manifest and
STATUS, in the middle of rotation) and prove that the next run repairs
everything. SIGKILL, not an exception: nothing of ours may run afterwards,
exactly as with a power cut. Unset (always, outside tests) this is a dict
lookup.
"""

import os
import signal

ENV = "HOTVCB_CRASH_AT"


def reached(name: str) -> None:
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
