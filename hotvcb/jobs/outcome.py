"""From per-VM results to ghettoVCB's final status line and exit code."""

from typing import List, Tuple

from ..model import VmResult

OK, DRYRUN = 0, 0
SOME_DISKS, SOME_VMS, SOME_VMS_AND_DISKS = 3, 4, 5
ALL_FAILED, NONE, EVERY_VM_PARTLY = 6, 7, 8


def final_status(results: List[VmResult], dry_run: bool = False) -> Tuple[str, int]:
    done = [r for r in results if r.status != "skipped"]
    errors = [r for r in done if r.status == "error"]
    warns = [r for r in done if r.status == "warn"]
    if not done:
        return "ERROR: No VMs backed up!", NONE
    if dry_run and not errors:
        return "OK, only a dryrun.", DRYRUN
    if not errors and not warns:
        return "All VMs backed up OK!", OK
    if len(errors) == len(done):
        return "ERROR: All VMs failed!", ALL_FAILED
    if not errors and len(warns) == len(done):
        return "ERROR: All VMs experienced at least a partial failure!", EVERY_VM_PARTLY
    if not errors:
        return "WARNING: All VMs backed up, but some disk(s) failed!", SOME_DISKS
    if warns:
        return "ERROR: Only some of the VMs backed up, and some disk(s) failed!", SOME_VMS_AND_DISKS
    return "ERROR: Only some of the VMs backed up!", SOME_VMS


def report(results: List[VmResult], status: str) -> str:
    """The few lines an admin reads first in the e-mail: one per VM."""
    lines = ["Final status: " + status, ""]
    for r in results:
        failed = [d.disk.key for d in r.disks if not d.ok]
        line = "%-7s %s" % (r.status.upper(), r.name)
        if r.backup_dir:
            line += "  -> " + r.backup_dir
        if failed:
            line += "  (failed disks: %s)" % ", ".join(failed)
        if r.message and r.status != "ok":
            line += "\n        " + r.message
        if r.status != "skipped":
            if r.good_backups:
                line += "\n        good backups: %d, newest %s" % (len(r.good_backups), r.good_backups[-1])
            elif r.status in ("error", "warn") or r.backup_dir:
                line += "\n        NO good backup of this VM exists"
        lines.append(line)
    return "\n".join(lines) + "\n"
