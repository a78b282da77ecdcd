"""Rotation, outcome codes, folder naming and the lock: the rules admins rely on."""

import os
import subprocess
import sys
from datetime import datetime, timedelta

import pytest

from hotvcb.errors import LockError
from hotvcb.jobs.outcome import final_status
from hotvcb.model import VmResult
from hotvcb.shell import LocalShell
from hotvcb.store import layout, rotation
from hotvcb.store.lock import WorkLock

T0 = datetime(2026, 11, 1, 21, 30, 0)


def sets(*statuses):
    return [layout.BackupSet("vm", "/b/vm-%d" % i, T0 + timedelta(days=i), s) for i, s in enumerate(statuses)]


def test_rotation_keeps_newest_good_and_never_counts_failures():
    backups = sets("ok", "ok", "ok", "error", "error", "error")
    assert rotation.to_delete(backups, 3) == []  # failures never push out good backups
    backups = sets("ok", "warn", "ok", "ok", "error", "ok")
    gone = rotation.to_delete(backups, 3)
    assert [b.path for b in gone] == ["/b/vm-0", "/b/vm-1"]


def test_rotation_refuses_zero_and_ignores_partial():
    with pytest.raises(ValueError):
        rotation.to_delete(sets("ok"), 0)
    assert all(b.status != "partial" for b in rotation.to_delete(sets("partial", "ok", "ok"), 1))


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
        ("Web (prod)-2026-11-03_21-30-00.gz", "ok"),
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


def test_lock_refuses_second_run_and_takes_over_stale(tmp_path):
    first = WorkLock(str(tmp_path)).acquire()
    with pytest.raises(LockError, match="another hotvcb run"):
        WorkLock(str(tmp_path)).acquire()
    first.release()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / "hotvcb.lock").write_text(dead.stdout)
    said = []
    WorkLock(str(tmp_path), said.append).acquire().release()
    assert said and "stale" in said[0]
    assert not os.path.exists(tmp_path / "hotvcb.lock")
