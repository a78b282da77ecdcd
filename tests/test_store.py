"""Rotation, outcome codes, folder naming and the run lock (its holder told by pid, start time and heartbeat;
planted records): the rules admins rely on."""

import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from pidviews import hotvcb_holder, start_of  # noqa: F401  (the fixture: a live hotvcb process)
from repotool import cli, one_clear_line

from hotvcb import pids, runid
from hotvcb.cli import main
from hotvcb.errors import LockError
from hotvcb.jobs import outcome, restore_source, status_backups, status_report
from hotvcb.jobs.outcome import final_status
from hotvcb.localshell import LocalShell
from hotvcb.model import Disk, DiskResult, VmResult
from hotvcb.restorefile import RestoreRequest
from hotvcb.runid import RunId, parse
from hotvcb.runlog import RunLog
from hotvcb.settings import Settings
from hotvcb.store import ghettovcb_health, health, layout, lock, manifest, rotation
from hotvcb.store.lock import HostLock

T0 = datetime(2026, 11, 1, 21, 30, 0)


def sets(*statuses):
    return [layout.BackupSet("vm", "/b/vm-%d" % i, T0 + timedelta(days=i), s) for i, s in enumerate(statuses)]


def ok(b):
    return b.status == "ok"


def state(b):
    """A verdict as a STATUS file alone gives it (verdict._not_ok's for a run's failure)."""
    return "good" if ok(b) else b.status


def test_rotation_keeps_newest_good_and_never_counts_failures():
    backups = sets("ok", "ok", "ok", "error", "error", "error")
    assert rotation.to_delete(backups, state, 3) == []  # failures never push out good backups
    backups = sets("ok", "warn", "ok", "ok", "error", "ok")
    gone = rotation.to_delete(backups, state, 3)
    assert [b.path for b in gone] == ["/b/vm-0", "/b/vm-1"]


def test_rotation_counts_only_what_the_predicate_calls_good():
    backups = sets("ok", "ok", "ok", "ok")
    damaged = {"/b/vm-2", "/b/vm-3"}
    gone = rotation.to_delete(backups, lambda b: "damaged" if b.path in damaged else "good", 2)
    assert gone == []  # two "ok" markers are damaged: only two good ones, nothing may go


def test_rotation_refuses_zero_and_ignores_partial_and_deleting():
    with pytest.raises(ValueError):
        rotation.to_delete(sets("ok"), state, 0)
    gone = rotation.to_delete(sets("partial", "deleting", "ok", "ok"), state, 1)
    assert [b.status for b in gone] == ["ok"]


def test_list_backups_matches_names_literally(tmp_path):
    root = tmp_path / "Web (prod)"
    for name in ("Web (prod)-2026-11-01_21-30-00", "Web (prod)-2026-11-02_21-30-00-partial",
                 "Web (prod)-2026-11-03_21-30-00.gz", "Web (prod) 2-2026-11-01_21-30-00", "junk"):
        (root / name).mkdir(parents=True) if not name.endswith(".gz") else (root / name).write_bytes(b"")
    (root / "Web (prod)-2026-11-01_21-30-00" / "STATUS.ok").write_text("ok")
    found = layout.list_backups(LocalShell(), str(tmp_path), "Web (prod)")
    assert [(b.name, b.status) for b in found] == [
        ("Web (prod)-2026-11-01_21-30-00", "ok"),
        ("Web (prod)-2026-11-02_21-30-00-partial", "partial"),
        ("Web (prod)-2026-11-03_21-30-00.gz", "archived"),  # its STATUS is inside: health.judge reads it
    ]


INDEPENDENT = Disk("scsi0:1", "/vmfs/volumes/ds1/db/db_1.vmdk", "ds1", "lsilogic", "independent-persistent",
                   "independent disk (independent-persistent) is not part of snapshots")


def vm_result(name: str, status: str) -> VmResult:
    """"short": a good backup without a disk no snapshot can copy, as ghettoVCB's STATUS.warn."""
    if status != "short":
        return VmResult(name=name, status=status)
    return VmResult(name=name, status="ok", skipped_disks=[INDEPENDENT],
                    disks=[DiskResult(Disk("scsi0:0", "/vmfs/volumes/ds1/db/db.vmdk", "ds1", "lsilogic"), True)])


@pytest.mark.parametrize(
    "statuses, code",
    [
        (["ok", "ok"], 0), (["ok", "warn"], 3), (["ok", "error"], 4), (["warn", "error"], 5),
        (["error", "error"], 6), ([], 7), (["warn", "warn"], 8),
        # ghettoVCB's VMDK_FAILED: "All VMs backed up, but some disk(s) failed!"; the backups are good, so never 8
        (["ok", "short"], 3), (["short"], 3), (["short", "warn"], 3), (["short", "error"], 5),
    ],
)
def test_exit_codes(statuses, code):
    results = [vm_result("vm%d" % i, s) for i, s in enumerate(statuses)]
    assert final_status(results)[1] == code


def test_the_run_report_names_the_disk_no_backup_has():
    """Its backup is good (STATUS.ok, counted as kept), and the run says which disk is in none."""
    short = vm_result("db", "short")
    short.backup_dir, short.good_backups = "/b/db/db-1", ["/b/db/db-1"]
    (row,) = outcome.rows([short])
    assert (row["result"], row["disks_ok"], row["disks"], row["skipped_disks"]) == ("warn", 1, 2, ["scsi0:1"])
    assert row["message"].startswith("scsi0:1 is in no backup: independent disk"), row  # --json-report's reason
    text = outcome.report([short], final_status([short])[0])
    assert "WARN    db  -> /b/db/db-1" in text and "scsi0:1 is in no backup: independent disk" in text, text
    assert "good backups: 1" in text and "NO good backup" not in text, text
    assert "in no backup: scsi0:1" in outcome.report_html([short], "WARNING", "esx1", "job")


def test_the_report_tells_apart_two_vms_that_differ_by_a_trailing_blank():
    """`db` and `db `: the mail's lines and the table end the second with a colon, as status does; an
    ordinary name stays as it was, its row's first word."""
    results = [vm_result("db", "ok"), vm_result("db ", "error")]
    text = outcome.report(results, final_status(results)[0])
    assert "\nOK      db\n" in text and "\nERROR   db :\n" in text, text
    assert [row.split("  ")[0] for row in outcome.table(outcome.rows(results))[1:]] == ["db", "db :"]


def ghettovcb_backup(volume, stamp: str, status: str, disk: bool = True) -> str:
    """ghettoVCB's folder: .vmx, disk, STATUS.<status> (never a hotvcb.json)."""
    folder = volume / "db" / ("db-" + stamp)
    folder.mkdir(parents=True)
    (folder / "db.vmx").write_text('displayName = "db"\n')
    if disk:
        (folder / "db.vmdk").write_text('# Disk DescriptorFile\ncreateType="vmfs"\nRW 2048 VMFS "db-flat.vmdk"\n')
        (folder / "db-flat.vmdk").write_bytes(bytes(2048 * 512))
    (folder / ("STATUS." + status)).write_text("WARN: db has some Independent VMDKs that can not be backed up\n")
    return str(folder)


def test_ghettovcbs_status_warn_is_a_good_backup_and_hotvcbs_is_not(tmp_path):
    """ghettoVCB.sh wrote STATUS.warn only for a VM with independent disks: the rest is whole, and
    rotation, restore and list take it; hotvcb's own STATUS.warn (its manifest there) means a disk
    it should have copied failed."""
    shell, volume = LocalShell(), tmp_path / "vol"
    older = ghettovcb_backup(volume, "2026-12-01_21-00-01", "warn")
    newer = ghettovcb_backup(volume, "2026-12-02_21-00-01", "warn")
    verdict = health.judge(shell, layout.from_path(shell, newer))
    assert verdict.good and verdict.state == "unverifiable" and "independent" in verdict.warning, verdict
    restore_source.check_sealed(shell, RestoreRequest(newer, "/vmfs/volumes/ds1", "thin"), shell, newer)
    removed = rotation.rotate(shell, str(volume), "db", 1, RunLog(stream=io.StringIO()), just_made=newer,
                              remove=lambda path: None)
    assert removed == [older]  # the newer one counts as the one good backup to keep
    hotvcbs = ghettovcb_backup(volume, "2026-12-03_21-00-01", "warn")
    (Path(hotvcbs) / manifest.MANIFEST).write_text(json.dumps({"version": 2, "vm": "db", "result": "warn"}))
    assert health.judge(shell, layout.from_path(shell, hotvcbs)).state == "warn"
    no_disk = ghettovcb_backup(volume, "2026-12-04_21-00-01", "warn", disk=False)
    assert health.judge(shell, layout.from_path(shell, no_disk)).state == "empty"
    archive = str(volume / "db" / "db-2026-12-05_21-00-01.gz")  # the same rule inside a .gz
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(newer, arcname="db-2026-12-05_21-00-01")
    verdict = health.judge(shell, layout.from_path(shell, archive))
    assert verdict.good and verdict.warning == ghettovcb_health.GHETTOVCB_WARN, verdict


def test_a_ghettovcb_folder_whose_disk_was_cut_short_is_not_good(tmp_path):
    """As for ghettoVCB's .gz (no manifest to check against): each descriptor's extents there, a flat
    one at the size it gives; one an rsync or a failed copy cut short is incomplete, not good."""
    from test_outsider_interop import ghettovcb_folder

    from hotvcb.jobs.verify import verify_backup

    shell = LocalShell()
    folder = ghettovcb_folder(tmp_path, "db", "2026-12-01_21-00-01", "STATUS.ok", "Successfully completed backup")
    assert health.judge(shell, layout.from_path(shell, str(folder))).state == "unverifiable"
    os.truncate(str(folder / "db-flat.vmdk"), 512 << 10)
    verdict = health.judge(shell, layout.from_path(shell, str(folder)))
    assert verdict.state == "incomplete" and "db-flat.vmdk is 524288 bytes, db.vmdk says 1048576" in verdict.reason
    assert verify_backup(shell, str(folder)).status == "incomplete"  # verify fails it (exit 4/6), as list does not count it
    os.remove(str(folder / "db-flat.vmdk"))
    verdict = health.judge(shell, layout.from_path(shell, str(folder)))
    assert verdict.state == "incomplete" and "names db-flat.vmdk, which is not in the folder" in verdict.reason


def test_list_and_status_show_what_a_good_ghettovcb_backup_lacks(tmp_path, capsys):
    backup = ghettovcb_backup(tmp_path / "vol", "2026-12-01_21-00-01", "warn")
    conf = tmp_path / "ghettoVCB.conf"
    conf.write_text("VM_BACKUP_VOLUME=%s\n" % (tmp_path / "vol"))
    assert main(["list", "-g", str(conf)]) == 0
    out = capsys.readouterr().out
    assert "unverifiable" in out and "%s: %s" % (backup, ghettovcb_health.GHETTOVCB_WARN) in out, out
    host = SimpleNamespace(shell=LocalShell(), host_name=lambda: "esx1", system_id=lambda: "")
    check = status_backups._backups(host, Settings(vm_backup_volume=str(tmp_path / "vol")), "db", "",
                                    status_report.Limits(), time.mktime(datetime(2026, 12, 2, 8).timetuple()))
    assert check.severity == status_report.OK and ghettovcb_health.GHETTOVCB_WARN in check.message, check


def run_id(machine=None, pid=None):
    me = RunId.new()
    return RunId(me.run, machine or me.machine, pid or me.pid, me.started, "host1")


def write_lock(folder, text, age=0.0):
    path = folder / lock.LOCK_NAME
    path.write_text(text)
    if age:
        past = time.time() - age
        os.utime(path, (past, past))
    return path


def dead_pid():
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True).stdout)


HOLDER = """
import sys, time
sys.path.insert(0, %r)
from hotvcb.localshell import LocalShell
from hotvcb.runid import RunId
from hotvcb.store.lock import HostLock
HostLock(LocalShell(), sys.argv[1], RunId.new()).acquire()
print("held", flush=True)
time.sleep(60)
"""


def test_lock_refuses_a_second_run_and_frees_after_its_holder_is_killed(tmp_path):
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = tmp_path / "holder_hotvcb.py"
    script.write_text(HOLDER % repo)
    folder = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, str(script), str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockError, match="another hotvcb run holds .*pid %d" % holder.pid):
            HostLock(LocalShell(), str(folder), run_id()).acquire()
    finally:
        holder.kill()
        holder.wait()
    mine = HostLock(LocalShell(), str(folder), run_id()).acquire()  # kill -9 left it: provably dead now
    mine.release()
    assert not (folder / lock.LOCK_NAME).exists()


@pytest.mark.parametrize("holder, age, taken", [
    ("dead pid, this machine", 0, True),
    ("pid 1, not hotvcb", 0, True),
    ("empty file, fresh", 0, False),  # a run between creating and writing it (old versions)
    ("empty file, old", 2 * lock.STALE_AFTER, True),
    ("other machine, heartbeat fresh", 0, False),
    ("other machine, heartbeat stopped", 2 * lock.STALE_AFTER, True),
])
def test_lock_takes_over_only_a_provably_dead_holder(tmp_path, holder, age, taken):
    me = socket.gethostname()
    text = {
        "dead pid, this machine": RunId("aaaa", me, dead_pid(), 1).text(),
        "pid 1, not hotvcb": RunId("aaaa", me, 1, 1).text(),
        "empty file, fresh": "", "empty file, old": "",
        "other machine, heartbeat fresh": RunId("aaaa", "linuxbox-2", 4242, 1).text(),
        "other machine, heartbeat stopped": RunId("aaaa", "linuxbox-2", 4242, 1).text(),
    }[holder]
    write_lock(tmp_path, text, age)
    said = []
    mine = HostLock(LocalShell(), str(tmp_path), run_id(), said.append)
    if not taken:
        with pytest.raises(LockError, match="another hotvcb run holds"):
            mine.acquire()
        assert (tmp_path / lock.LOCK_NAME).read_text() == text
        return
    mine.acquire()
    assert "run=%s" % mine.run.run in (tmp_path / lock.LOCK_NAME).read_text()
    assert said and "taking over" in said[0]
    mine.release()


RACER = """
import sys, time
sys.path.insert(0, %r)
from hotvcb.errors import LockError
from hotvcb.localshell import LocalShell
from hotvcb.runid import RunId
from hotvcb.store.lock import HostLock
start = float(sys.argv[2])
while time.time() < start:
    pass
lock = HostLock(LocalShell(), sys.argv[1], RunId.new())
try:
    lock.acquire()
except LockError:
    print("refused")
    sys.exit(0)
t0 = time.time()
time.sleep(0.3)
t1 = time.time()
lock.release()
print("held %%f %%f" %% (t0, t1))
"""


def test_lock_four_runs_at_once_over_a_stale_lock_never_share_it(tmp_path):
    """Reproduces the race that let two of four runs hold the lock together."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = tmp_path / "racer_hotvcb.py"
    script.write_text(RACER % repo)
    for trial in range(15):
        folder = tmp_path / ("t%d" % trial)
        folder.mkdir()
        write_lock(folder, RunId("dead", socket.gethostname(), dead_pid(), 1).text())
        start = time.time() + 0.5
        procs = [subprocess.Popen([sys.executable, str(script), str(folder), str(start)], stdout=subprocess.PIPE,
                                  text=True) for _ in range(4)]
        spans = []
        for p in procs:
            out = p.communicate(timeout=60)[0].split()
            if out and out[0] == "held":
                spans.append((float(out[1]), float(out[2])))
        assert spans, "nobody took the stale lock"
        spans.sort()
        for (a0, a1), (b0, b1) in zip(spans, spans[1:]):
            assert b0 >= a1, "two runs held the lock at once in trial %d: %s" % (trial, spans)


# --- a dead run's pid reused by another hotvcb; records no process has -------------------------------------------

def lock_text(pid, pid_start=None, machine=None, started="1000"):
    """A run lock's record as another run of this machine wrote it (numbers as text: a planted one's may have
    any length)."""
    return "run=0123456789ab machine=%s pid=%s started=%s host=host1%s\n" % (
        machine or socket.gethostname(), pid, started, "" if pid_start is None else " pidstart=%s" % pid_start)


def cleanup(run_dir):
    """`hotvcb cleanup` on a QEMU host whose QMP folder (the run lock's run_dir) is `run_dir`: it takes the run
    lock as a backup does."""
    return cli("--qemu", run_dir, "cleanup")


def test_the_run_lock_records_when_its_process_started(tmp_path):
    mine = HostLock(LocalShell(), str(tmp_path), run_id()).acquire()
    try:
        held = parse((tmp_path / lock.LOCK_NAME).read_text())
        assert held.run == mine.run.run and held.pid == os.getpid() and held.pid_start == start_of(os.getpid())
    finally:
        mine.release()


def test_the_sweep_record_keeps_the_newest_dead_runs_and_drops_what_is_no_record(tmp_path):
    """Runs that each took the lock over and died before their sweep: the record names the last SWEEP_KEEP of them,
    newest last, bounded however many die; a planted line naming no run is not carried on."""
    dead = [RunId("%012x" % n, socket.gethostname(), 0, 1, "h") for n in range(lock.SWEEP_KEEP + 1)]
    (tmp_path / lock.SWEEP_NAME).write_text("garbage\n" + "".join(r.text() + "\n" for r in dead[:-1]))
    (tmp_path / lock.LOCK_NAME).write_text(dead[-1].text() + "\n")  # pid 0: no process has it
    mine = HostLock(LocalShell(), str(tmp_path), run_id()).acquire()
    try:
        assert mine.took_over and mine.dead_runs() == tuple(r.run for r in dead[1:])
        assert "garbage" not in (tmp_path / lock.SWEEP_NAME).read_text()
    finally:
        mine.release()


def test_a_run_lock_whose_pid_now_is_another_hotvcb_started_later_is_taken_over(tmp_path, hotvcb_holder):
    """The run that wrote the lock died; its pid is a hotvcb process again (the next nightly run, a prune),
    one that started at another time than the lock records: no holder, so cleanup takes the lock over."""
    write_lock(tmp_path, lock_text(hotvcb_holder, start_of(hotvcb_holder) - 1))
    r = cleanup(tmp_path)
    assert r.returncode == 0 and "taking over the run lock" in r.stdout + r.stderr, r.stdout + r.stderr
    assert not (tmp_path / lock.LOCK_NAME).exists()


@pytest.mark.parametrize("recorded", ["its own", "none"])
def test_a_run_lock_of_a_live_hotvcb_that_started_when_it_records_or_records_no_time_is_held(tmp_path, hotvcb_holder,
                                                                                             recorded):
    """The lock's own process, or a lock of an older hotvcb without the field (the rule before it: a live hotvcb
    at the pid holds the lock)."""
    text = lock_text(hotvcb_holder, start_of(hotvcb_holder) if recorded == "its own" else None)
    path = write_lock(tmp_path, text)
    r = cleanup(tmp_path)
    assert r.returncode == 1 and "another hotvcb run holds" in r.stderr, r.stdout + r.stderr
    one_clear_line(r)
    assert path.read_text() == text


def test_where_the_start_time_cannot_be_read_a_live_hotvcb_holds_the_lock(tmp_path, hotvcb_holder, monkeypatch):
    """ESXi has no /proc: a live hotvcb at the lock's pid holds it whatever start time the lock records, and
    the lock a run writes there has no `pidstart`."""
    monkeypatch.setattr(pids, "started", lambda pid: None)
    write_lock(tmp_path, lock_text(hotvcb_holder, 12345))
    with pytest.raises(LockError, match="another hotvcb run holds .*pid %d" % hotvcb_holder):
        HostLock(LocalShell(), str(tmp_path), run_id()).acquire()
    (tmp_path / lock.LOCK_NAME).unlink()
    mine = HostLock(LocalShell(), str(tmp_path), run_id()).acquire()
    try:
        held = (tmp_path / lock.LOCK_NAME).read_text()
        assert parse(held).run == mine.run.run and "pidstart" not in held
    finally:
        mine.release()


HUGE = "9" * 5000  # more digits than Python 3.11+ (and 3.8.14+) turns into an int


@pytest.mark.parametrize("field", ["pid", "pidstart", "started"])
def test_a_run_lock_with_a_number_no_process_has_is_judged_as_a_planted_lock_never_an_internal_error(
        tmp_path, hotvcb_holder, field):
    """A planted lock of this machine is judged as one naming pid 0 or a 29-digit pid: a pid, or a start time,
    that no process has is a dead run's lock, taken over at once; its date only names it. `hotvcb status` reads
    the lock too."""
    pid, pid_start, started = hotvcb_holder, start_of(hotvcb_holder), "1000"
    if field == "pid":
        pid, pid_start = HUGE, None
    elif field == "pidstart":
        pid_start = HUGE
    else:
        started = HUGE
    text = lock_text(pid, pid_start, started=started)
    path = write_lock(tmp_path, text)
    r = cli("--qemu", tmp_path, "status")  # CRIT for the folder with no VM to watch, not UNKNOWN for the lock
    assert r.returncode == 2 and "internal error" not in r.stderr and "no VM found" in r.stdout, r.stdout + r.stderr[:500]
    r = cleanup(tmp_path)
    out = r.stdout + r.stderr
    if field == "started":  # its own process, alive: it holds the lock, whatever its date
        assert r.returncode == 1 and "another hotvcb run holds" in r.stderr, out[:1000]
        assert "pid %d on %s, started at epoch <over 20 digits>" % (hotvcb_holder, socket.gethostname()) in out
        one_clear_line(r)
        assert path.read_text() == text
    else:
        assert r.returncode == 0 and "taking over the run lock" in out and "internal error" not in out, out[:1000]
        assert not path.exists()


@pytest.mark.parametrize("digits", [20, 21])
def test_a_records_numbers_are_read_whole_up_to_20_digits_and_past_that_as_no_number_a_process_has(digits):
    """2**64 has 20 digits. A longer number is read as runid.TOO_LONG, never cut short (a pidstart of 21 digits
    is not one of 20, nor a record without one) and never by int() of what may be thousands of digits."""
    number = "1" * digits
    expected = int(number) if digits == 20 else runid.TOO_LONG
    assert parse(lock_text(number)).pid == expected
    assert parse(lock_text(1, started=number)).started == expected
    assert parse(lock_text(1, number)).pid_start == expected


@pytest.mark.parametrize("age, held", [(0, True), (lock.STALE_AFTER + 60, False)])
def test_a_run_lock_of_another_pid_namespace_of_this_machine_is_judged_by_its_heartbeat(tmp_path, hotvcb_holder,
                                                                                        age, held):
    """A run in a container on this machine (its hostname) counts its own pids: its fresh lock is held though the pid
    is dead here, and a lock whose heartbeat stopped is free though the pid is a live hotvcb here that started when
    the lock says (the GC lock's rule: runid.running)."""
    pid, pid_start = (dead_pid(), 5) if held else (hotvcb_holder, start_of(hotvcb_holder))
    text = lock_text(pid, pid_start).replace(" pidstart=", " pidns=%d pidstart=" % (
        os.stat("/proc/self/ns/pid").st_ino + 1))
    path = write_lock(tmp_path, text, age=age)
    r = cleanup(tmp_path)
    if held:
        assert r.returncode == 1 and "another hotvcb run holds" in r.stderr, r.stdout + r.stderr
        assert path.read_text() == text
    else:
        assert r.returncode == 0 and "taking over the run lock" in r.stdout + r.stderr, r.stdout + r.stderr


def test_a_run_lock_whose_start_time_was_seen_with_another_boot_time_offset_is_held_by_its_live_hotvcb(
        tmp_path, hotvcb_holder):
    """/proc shows start times shifted by the reader's time namespace: a start time recorded with another offset
    than ours cannot be compared, and the live hotvcb at the pid is taken at its word."""
    text = lock_text(hotvcb_holder, "%d bootoffset=1000000000000" % (start_of(hotvcb_holder) + 100000))
    path = write_lock(tmp_path, text)
    r = cleanup(tmp_path)
    assert r.returncode == 1 and "another hotvcb run holds" in r.stderr, r.stdout + r.stderr
    assert path.read_text() == text


def test_a_holder_dated_past_any_calendar_is_named_in_one_line(tmp_path):
    """Another machine's fresh lock (judged by its heartbeat) whose start date no clock can show."""
    write_lock(tmp_path, lock_text(4242, machine="linuxbox-2", started="9" * 20))
    r = cleanup(tmp_path)
    assert r.returncode == 1 and "another hotvcb run holds" in r.stderr and "pid 4242 on linuxbox-2" in r.stderr, \
        r.stdout + r.stderr
    one_clear_line(r)
