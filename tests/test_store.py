"""Rotation, outcome codes, folder naming and the lock: the rules admins rely on."""

import os
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta

import pytest

from hotvcb.errors import LockError
from hotvcb.jobs.outcome import final_status
from hotvcb.model import VmResult
from hotvcb.runid import RunId
from hotvcb.shell import LocalShell
from hotvcb.store import layout, lock, rotation
from hotvcb.store.lock import HostLock

T0 = datetime(2026, 11, 1, 21, 30, 0)


def sets(*statuses):
    return [layout.BackupSet("vm", "/b/vm-%d" % i, T0 + timedelta(days=i), s) for i, s in enumerate(statuses)]


def ok(b):
    return b.status == "ok"


def test_rotation_keeps_newest_good_and_never_counts_failures():
    backups = sets("ok", "ok", "ok", "error", "error", "error")
    assert rotation.to_delete(backups, ok, 3) == []  # failures never push out good backups
    backups = sets("ok", "warn", "ok", "ok", "error", "ok")
    gone = rotation.to_delete(backups, ok, 3)
    assert [b.path for b in gone] == ["/b/vm-0", "/b/vm-1"]


def test_rotation_counts_only_what_the_predicate_calls_good():
    backups = sets("ok", "ok", "ok", "ok")
    damaged = {"/b/vm-2", "/b/vm-3"}
    gone = rotation.to_delete(backups, lambda b: b.path not in damaged, 2)
    assert gone == []  # two "ok" markers are damaged: only two good ones, nothing may go


def test_rotation_refuses_zero_and_ignores_partial_and_deleting():
    with pytest.raises(ValueError):
        rotation.to_delete(sets("ok"), ok, 0)
    gone = rotation.to_delete(sets("partial", "deleting", "ok", "ok"), ok, 1)
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


@pytest.mark.parametrize(
    "statuses, code",
    [
        (["ok", "ok"], 0), (["ok", "warn"], 3), (["ok", "error"], 4), (["warn", "error"], 5),
        (["error", "error"], 6), ([], 7), (["warn", "warn"], 8),
    ],
)
def test_exit_codes(statuses, code):
    results = [VmResult(name="vm%d" % i, status=s) for i, s in enumerate(statuses)]
    assert final_status(results)[1] == code


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
from hotvcb.runid import RunId
from hotvcb.shell import LocalShell
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
from hotvcb.runid import RunId
from hotvcb.shell import LocalShell
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
