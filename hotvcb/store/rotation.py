"""Which old backups to delete: only ever because enough good ones are newer.

ghettoVCB counted folders, so a run of failures could rotate away the last
good backup, and ROTATION_COUNT=0 deleted the backup just made. Here the
newest `count` good (STATUS.ok) backups are kept, and only backups older than
the oldest of those are deleted. With fewer than `count` good backups
nothing is deleted at all. Failed or partial backups newer than that line
stay until good ones push them out, so an admin can still look at them.
"""

from typing import List

from .layout import BackupSet


def to_delete(backups: List[BackupSet], count: int) -> List[BackupSet]:
    if count < 1:
        raise ValueError("rotation count must be at least 1")
    done = [b for b in backups if b.status != "partial"]
    good = [b for b in done if b.good]
    if len(good) <= count:
        return []
    oldest_kept = sorted(good, key=lambda b: (b.when, b.name))[-count]
    return [b for b in done if (b.when, b.name) < (oldest_kept.when, oldest_kept.name)]
