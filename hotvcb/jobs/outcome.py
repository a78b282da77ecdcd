"""From per-VM results to ghettoVCB's final status line, exit code, and the run report.

A VM has two answers. Its backup's (`VmResult.status`, what its STATUS file
and manifest say): "warn" there means a disk it should have copied failed,
and the backup is not good. And the run's (`shown`): a VM whose good backup
lacks a disk no snapshot can copy (independent, physical RDM) warns too, as
ghettoVCB's run did ("some disk(s) failed", exit 3), so that cron wrappers and
EMAIL_ALERT hear of a disk that is in no backup.
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

from ..model import VmResult
from ..runlog import columns
from ..units import human_size

OK, DRYRUN = 0, 0
SOME_DISKS, SOME_VMS, SOME_VMS_AND_DISKS = 3, 4, 5
ALL_FAILED, NONE, EVERY_VM_PARTLY = 6, 7, 8


def shown(r: VmResult) -> str:
    """The VM's result in the run: its backup's, or "warn" for a good one some disk is not in, or beside
    which something was left the admin must see to (VmResult.warnings)."""
    return "warn" if r.status == "ok" and (r.skipped_disks or r.warnings) else r.status


def notes(r: VmResult) -> List[str]:
    """What a VM warns of beside its result (whatever that is: a VM with a failed disk may have one in no
    backup too): each disk that is in no backup and why, then its warnings. The mail's lines and the JSON
    report's `message` alike, so a monitor reads the reason the mail gives."""
    return ["%s is in no backup: %s" % (d.key, d.skip_reason) for d in r.skipped_disks] + list(r.warnings)


def final_status(results: List[VmResult], dry_run: bool = False) -> Tuple[str, int]:
    done = [r for r in results if r.status != "skipped"]
    errors = [r for r in done if r.status == "error"]
    warns = [r for r in done if shown(r) == "warn"]
    partly = [r for r in done if r.status == "warn"]  # no good backup of it from this run
    if not done and results:
        return "OK, no VM to back up: all %d skipped for their power state" % len(results), OK
    if not done:
        return "ERROR: No VMs backed up!", NONE
    if dry_run:
        # a disk no snapshot can copy, one the real run's copy refuses, a VM warning (one needing consolidation)
        # are problems the real run exits 3 or more on; what a dry run only notes (a VM that may need
        # consolidation once a dead run's snapshot is removed first) is logged, never a VM warning (preflight)
        found = [r for r in done if shown(r) != "ok"]
        if not found:
            return "OK, only a dryrun.", DRYRUN
        return dry_run_found(found, done, final_status(results)[1])
    if not errors and not warns:
        return "All VMs backed up OK!", OK
    if len(errors) == len(done):
        return "ERROR: All VMs failed!", ALL_FAILED
    if not errors and len(partly) == len(done):
        return "ERROR: All VMs experienced at least a partial failure!", EVERY_VM_PARTLY
    if not errors:
        return "WARNING: All VMs backed up, but some disk(s) failed!", SOME_DISKS
    if warns:
        return "ERROR: Only some of the VMs backed up, and some disk(s) failed!", SOME_VMS_AND_DISKS
    return "ERROR: Only some of the VMs backed up!", SOME_VMS


def dry_run_found(errors: List[VmResult], done: List[VmResult], code: int) -> Tuple[str, int]:
    """A dry run that found what a real run would fail on (a VM list's typo): said as a dry run's finding,
    never as "All VMs failed!" or "Only some of the VMs backed up!", which read as a night whose backups
    failed (or some were made) in the log, the mail's subject and the JSON report. It exits the code the
    real run would (README): a check before a real run must not read as OK."""
    names = ", ".join(r.name for r in errors[:5]) + (", ..." if len(errors) > 5 else "")
    return "%s: DRY RUN found problems with %d of %d VM(s) (%s); nothing was changed" % (
        "WARNING" if code == SOME_DISKS else "ERROR", len(errors), len(done), names), code


def rows(results: List[VmResult]) -> List[Dict[str, Any]]:
    """One record per VM: what the table, the HTML mail and --json-report show."""
    out = []
    for r in results:
        copied = [d for d in r.disks if d.ok]
        size = sum(d.bytes for d in copied)
        copy_seconds = sum(d.seconds for d in copied)
        out.append({
            "vm": r.name, "result": shown(r), "message": message(r),
            "disks_ok": len(copied),
            "disks": None if r.disks_unknown else
            (len(r.disks) if r.disks_to_copy is None else r.disks_to_copy) + len(r.skipped_disks),
            "failed_disks": [d.disk.key for d in r.disks if not d.ok],
            "skipped_disks": [d.key for d in r.skipped_disks],
            "bytes": size, "seconds": round(r.seconds, 1),
            "rate_bytes_per_second": int(size / copy_seconds) if copy_seconds > 0 else None,
            "backup": r.backup_dir, "good_backups": len(r.good_backups),
            "newest_good": r.good_backups[-1] if r.good_backups else None,
        })
    return out


def message(r: VmResult) -> str:
    """A VM's JSON `message`: the lines the mail gives under its row (`report`), its notes then the error, so
    a VM with a failed disk and one in no backup is not an empty message (a monitor's ticket 'wf: warning:'
    with nothing after it), nor an error VM's message without the kept snapshot the mail warns of."""
    return "; ".join(notes(r) + ([r.message] if r.message and r.status != "ok" else []))


def named(vm: str) -> str:
    """A VM's name in the mail's lines and the table's cells: one that starts or ends with a blank is ended by
    a colon, as `status` ends every name (`OK   backup  db :`). The column's padding hid the blank, so VMs `db`
    and `db ` were both rows `db`, one OK and one ERROR, and the admin could not tell which had failed; they
    are `db` and `db :`. Other names stay as they were: scripts read a row's first word as its VM."""
    return vm + ":" if vm != vm.strip() else vm


def names(vms: List[str]) -> str:
    """VMs in one line, each as `named` shows it: in `VM(s) DOWN ... NOT on again: db ` the blank at the line's
    end was invisible, and the admin powered on `db`, not `db `."""
    return ", ".join(named(vm) for vm in vms)


def disk_count(record: Dict[str, Any]) -> str:
    """A row's DISKS: copied of all, `0/?` when its disks could not be read (VmResult.disks_unknown)."""
    return "%d/%s" % (record["disks_ok"], "?" if record["disks"] is None else record["disks"])


def table(records: List[Dict[str, Any]]) -> List[str]:
    """The per-VM table logged at the end of every run."""
    head = ("VM", "RESULT", "DISKS", "SIZE", "TIME", "RATE", "GOOD KEPT")
    lines = [head]
    for r in records:
        rate = "%.1f MB/s" % (r["rate_bytes_per_second"] / 1e6) if r["rate_bytes_per_second"] else "-"
        lines.append((named(r["vm"]), r["result"].upper(), disk_count(r),
                      human_size(r["bytes"], compact=True), _clock(r["seconds"]), rate, str(r["good_backups"])))
    return columns(lines)


def report(results: List[VmResult], status: str) -> str:
    """The few lines an admin reads first in the e-mail: one per VM."""
    down = [r.name for r in results if r.down]
    lines = (["VM(s) DOWN, powered off for a backup and NOT on again: %s" % names(down), ""] if down else [])
    lines += ["Final status: " + status, ""]
    for r in results:
        failed = [d.disk.key for d in r.disks if not d.ok]
        line = "%-7s %s" % (shown(r).upper(), named(r.name))
        if r.backup_dir:
            line += "  -> " + r.backup_dir
        if failed:
            line += "  (failed disks: %s)" % ", ".join(failed)
        for note in notes(r):
            line += "\n        " + note
        if r.message and r.status != "ok":
            line += "\n        " + r.message
        if r.status != "skipped":
            if r.good_backups:
                line += "\n        good backups: %d, newest %s" % (len(r.good_backups), r.good_backups[-1])
            elif r.status in ("error", "warn") or r.backup_dir:
                line += "\n        NO good backup of this VM exists"
        lines.append(line)
    lines += [""] + table(rows(results))
    return "\n".join(lines) + "\n"


_COLOURS = {"ok": "#1a7f37", "warn": "#9a6700", "error": "#cf222e"}


def report_html(results: List[VmResult], status: str, host: str, job: str) -> str:
    """The e-mail's HTML part: the status first, then one table row per VM."""
    import html  # its entity table: for a backup's report, not every command that imports this module
    e = html.escape
    worst = _worst(status)
    cells = []
    for r in rows(results):
        colour = _COLOURS.get(r["result"], "#57606a")
        rate = "%.1f MB/s" % (r["rate_bytes_per_second"] / 1e6) if r["rate_bytes_per_second"] else "&ndash;"
        note = e(r["message"]) if r["message"] else ""
        if r["failed_disks"]:
            note += (" " if note else "") + "failed disks: " + e(", ".join(r["failed_disks"]))
        if r["skipped_disks"]:
            note += (" " if note else "") + "in no backup: " + e(", ".join(r["skipped_disks"]))
        kept = ("%d, newest %s" % (r["good_backups"], e(r["newest_good"].rsplit("/", 1)[-1]))
                if r["newest_good"] else "<b>none</b>")
        cells.append(
            "<tr><td>%s</td><td style=\"color:%s;font-weight:bold\">%s</td><td>%s</td><td>%s</td>"
            "<td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>"
            % (e(named(r["vm"])), colour, e(r["result"].upper()), disk_count(r),
               e(human_size(r["bytes"])), _clock(r["seconds"]), rate, kept, note))
    return (
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>hotvcb %s %s</title></head>"
        "<body style=\"font-family:sans-serif\">"
        "<h2 style=\"color:%s\">%s</h2><p>host <b>%s</b>, job <b>%s</b></p>"
        "<table id=\"vms\" cellpadding=\"6\" style=\"border-collapse:collapse\" border=\"1\">"
        "<thead><tr><th>VM</th><th>Result</th><th>Disks</th><th>Size</th><th>Time</th><th>Rate</th>"
        "<th>Good backups kept</th><th>Notes</th></tr></thead><tbody>%s</tbody></table>"
        "<p>The full log is in the text part of this message.</p></body></html>\n"
        % (e(host), e(job), _COLOURS[worst], e(status), e(host), e(job), "".join(cells)))


def _worst(status: str) -> str:
    """The headline's colour, from the worst of the status's parts: a run that left a VM down reads
    `VM DOWN: web; ERROR: ...`, whose first word alone gave it the green of a good night."""
    parts = [p.strip() for p in status.split(";")]
    if any(p.startswith(("VM DOWN", "ERROR")) for p in parts):
        return "error"
    return "warn" if any(p.startswith("WARNING") for p in parts) else "ok"


def _clock(seconds: float) -> str:
    s = int(seconds)
    return "%d:%02d:%02d" % (s // 3600, s % 3600 // 60, s % 60)
