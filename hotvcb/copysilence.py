"""How long a disk's copy may print nothing before it is taken for hung.

A copy is bounded by its silence rather than its length (shell.run's `idle_timeout`): a hung copy
is caught, a long one runs on as long as it reports progress. vmkfstools and `qemu-img convert -p`
print whole percents only, so between two of its lines 1 % of the disk is written: 90 GB of a 9 TB disk, half an hour
at 50 MB/s, and a fixed half hour of silence killed such a copy at its first slow stretch. The
silence allowed is the longer of half an hour and the time 1 % of the disk takes at a floor rate
a healthy target exceeds (a busy NFS share, a slow array): a small disk's hung copy is still
caught within half an hour, a huge one's within hours, never a working copy.

It is capped at CAP, six hours: uncapped, a hung copy of a 62 TB disk (VMFS's largest) went unsaid
for 16 hours, its VM's snapshot growing on the VM's own datastore and the next night's run kept
out by the lock. The cap binds from 1 % of some 22 TB up; six hours of silence is 1 % of 62 TB at
29 MB/s, a rate at which that disk's whole copy takes 25 days: no backup of a disk that size runs
that slowly, so a copy silent that long is hung, not slow.
"""

SILENCE = 1800.0  # seconds: the least silence any copy is allowed
FLOOR_BYTES_PER_SECOND = 10 << 20  # the slowest rate a working copy is taken to write at
CAP = 6 * 3600.0  # seconds: the most silence any copy is allowed


def allowed(capacity: int) -> float:
    """Seconds a copy of a disk of `capacity` bytes may go without a progress line (1 % at a time)."""
    return between(capacity / 100.0)


def between(step: float) -> float:
    """Seconds a copy that prints a line per `step` bytes written may go without one."""
    return min(CAP, max(SILENCE, step / FLOOR_BYTES_PER_SECOND))
