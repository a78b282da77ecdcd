"""Which old backups to delete, and deleting them so no half-deleted one looks good.

ghettoVCB counted folders, so a run of failures could rotate away the last
good backup, and ROTATION_COUNT=0 deleted the backup just made. Here the
newest `count` good backups (health.judge) are kept, and only backups older
than the oldest of those are deleted. With fewer than `count` good backups
nothing is deleted at all. Failed or partial backups newer than that line
stay until good ones push them out, so an admin can still look at them.

A folder is first renamed to `<name>-deleting` (one atomic step out of the
good namespace), then removed; a run killed in between leaves a -deleting
folder that the next run of that VM removes (`finish_deleting`). A .gz is
one file: its unlink is atomic already.
"""

from typing import Callable, List

from .. import crashpoint
from ..errors import HostError
from ..shell import Shell
from ..treeview import ScannedShell
from . import health, layout
from .layout import BackupSet


def to_delete(backups: List[BackupSet], good: Callable[[BackupSet], bool], count: int) -> List[BackupSet]:
    if count < 1:
        raise ValueError("rotation count must be at least 1")
    done = [b for b in backups if b.status not in ("partial", "deleting")]
    kept = [b for b in done if good(b)]
    if len(kept) <= count:
        return []
    oldest_kept = sorted(kept, key=lambda b: (b.when, b.name))[-count]
    return [b for b in done if (b.when, b.name) < (oldest_kept.when, oldest_kept.name)]


def rotate(shell: Shell, volume: str, vm_name: str, count: int, log) -> List[str]:
    """Delete what to_delete names for this VM; the paths removed."""
    shell = ScannedShell(shell, layout.vm_root(volume, vm_name))  # one look at the VM's folder
    backups = layout.list_backups(shell, volume, vm_name)
    verdicts = {b.path: health.judge(shell, b) for b in backups if b.status not in ("partial", "deleting")}
    removed = []
    for old in to_delete(backups, lambda b: verdicts[b.path].good, count):
        log.info("Removing old backup %s (%s) per rotation count %d" % (old.path, verdicts[old.path].state, count))
        remove_backup(shell, old)
        removed.append(old.path)
    finish_deleting(shell, volume, vm_name, log)
    return removed


def remove_backup(shell: Shell, b: BackupSet) -> None:
    if b.compressed:
        shell.remove_tree(b.path)
        shell.remove_tree(b.path + health.GZ_VERIFY_SUFFIX)
        return
    doomed = b.path + layout.DELETING
    shell.rename(b.path, doomed)
    crashpoint.reached("rotation-renamed")
    shell.remove_tree(doomed)


def finish_deleting(shell: Shell, volume: str, vm_name: str, log) -> None:
    """Remove -deleting folders a killed run left (any host may: they are condemned)."""
    for b in layout.list_backups(shell, volume, vm_name):
        if b.status == "deleting":
            log.info("Finishing the removal of %s" % b.path)
            try:
                shell.remove_tree(b.path)
            except HostError as err:
                log.warning("could not remove %s: %s" % (b.path, err))
