"""Which backup a libvirt incremental stands on: the good backup taken at the checkpoint the job's bitmap
starts at (its `hotvcb-checkpoint` file names the checkpoint and libvirt's creation time of it, so one made
again under its name is told), unless it is compressed, not good, written since its seal or at the end of
a chain of MAX_CHAIN incrementals. Anything else is a full copy, and the log says why."""

from ..errors import HostError
from ..model import Disk
from ..runlog import RunLog
from ..shell import Shell
from ..store import health, layout
from ..store.chain import chain_length, written_after_seal
from .pulljob import safe

CHECKPOINT_FILE = "hotvcb-checkpoint"  # in a backup: the checkpoint it was taken at
CHECKPOINT_MAX = 4096  # its two short lines; one planted on the backup volume is read no further
MAX_CHAIN = 7  # incrementals on one full: then a full again, so rotation can free space


def incremental_base(shell: Shell, log: RunLog, domain: str, base_at: str, since: str, bitmap: str, disk: Disk,
                     dst: str, fmt: str) -> str:
    """`../<backup>/<disk>.qcow2` of the good backup taken at checkpoint `since`, or "" (a full copy). `base_at`:
    libvirt's creation time of that checkpoint, read after backup-begin took the bitmap ("" if none)."""
    if not since or not bitmap:
        return ""
    if fmt != "qcow2":
        log.info("%s: incremental backups are written as qcow2 overlays; with DISK_BACKUP_FORMAT=%s every "
                 "backup is full" % (domain, fmt))
        return ""
    volume = dst.rsplit("/", 3)[0]  # <volume>/<VM>/<backup>-partial/<disk>
    disk_file = "%s.qcow2" % safe(disk.key)
    for b in reversed(layout.list_backups(shell, volume, domain)):
        if b.compressed or b.status != "ok":
            continue
        marker = b.path + "/" + CHECKPOINT_FILE
        try:  # read_regular: anyone who can write the backup volume may plant a FIFO there
            text = shell.read_regular(marker, CHECKPOINT_MAX) if shell.exists(marker) else ""
        except HostError:
            text = ""  # not a marker of ours: no base for an incremental
        lines = text.splitlines()
        if not lines or lines[0].strip() != since:
            continue
        recorded = lines[1].strip() if len(lines) > 1 else ""
        if not recorded:
            log.info("%s: the backup %s records no creation time of checkpoint %s (an older hotvcb's), so "
                     "the checkpoint cannot be told from one made again; a full backup instead"
                     % (domain, b.name, since))
            return ""
        if recorded != base_at:
            log.info("%s: checkpoint %s is not the one the backup %s was taken at (created %s, the backup "
                     "recorded %s): made again under its name, its bitmap misses writes; a full backup "
                     "instead" % (domain, since, b.name, base_at or "?", recorded))
            return ""
        verdict = health.judge(shell, b)
        if not verdict.good or not shell.exists(b.path + "/" + disk_file):
            log.info("%s: the backup %s taken at checkpoint %s is not good (%s); a full backup instead"
                     % (domain, b.name, since, verdict.reason or "no " + disk_file))
            return ""
        if chain_length(shell, b.path + "/" + disk_file) >= MAX_CHAIN:
            log.info("%s: %d incrementals on one full; a full backup this time" % (domain, MAX_CHAIN))
            return ""
        changed = written_after_seal(shell, b.path + "/" + disk_file)
        if changed:
            log.info("%s: %s was written after its backup was sealed; a full backup instead"
                     % (domain, changed))
            return ""
        return "../%s/%s" % (b.name, disk_file)
    log.info("%s: no good backup holds checkpoint %s (rotated away, failed or compressed); a full backup "
             "instead" % (domain, since))
    return ""
