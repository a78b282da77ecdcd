"""Reviewer's read-back of s35's changes: rotation bounds a run's failed backups by their verdict (not their STATUS
word), prune's dry run judges a GC lock without writing to the repository, and the start script of a bare-QEMU
restore falls back to a short QMP socket whatever the length of the VM's name."""

import io
import os
import shutil
import subprocess
import tempfile
import time

import pytest

from hotvcb.convert.machine import Machine
from hotvcb.convert.qemu_argv import SOCKET_PATH_MAX, start_script
from hotvcb.errors import RepoError
from hotvcb.localshell import LocalShell
from hotvcb.repo import prune
from hotvcb.runlog import RunLog
from hotvcb.store import rotation
from repotool import two_vms
from test_outsider_interop import ghettovcb_folder

OK = "Successfully completed backup"


# -- 5. a ghettoVCB STATUS.warn backup judged damaged is no run's failure ------------------------------------------

def test_a_ghettovcb_warn_backup_found_incomplete_stays_as_one_with_status_ok(tmp_path):
    """ghettoVCB's STATUS.warn is a good backup: one found incomplete since (its .vmx lost) is a backup verify found
    wanting, not a run's failure, and stays as the same folder with STATUS.ok does. Rotation counted it among the
    failures a run left (by its STATUS word) and deleted it beyond the newest VM_BACKUP_ROTATION_COUNT."""
    assert _rotated(tmp_path / "ok", "STATUS.ok") == []
    assert _rotated(tmp_path / "warn", "STATUS.warn") == []


def _rotated(vol, status: str):
    vm = "web"
    for day in (1, 2):
        ghettovcb_folder(vol, vm, "2026-11-0%d_21-00-01" % day, "STATUS.ok", OK)
    for day in (3, 4, 5, 6):
        folder = ghettovcb_folder(vol, vm, "2026-11-0%d_21-00-01" % day, status, OK)
        os.remove(str(folder / (vm + ".vmx")))  # lost since: incomplete
    return rotation.rotate(LocalShell(), str(vol), vm, 3, RunLog(stream=io.StringIO()), remove=lambda path: None)


# -- 6. prune --dry-run writes nothing where another machine's GC lock is ----------------------------------------

def _gc_lock(repo_dir, age: float) -> None:
    locks = repo_dir / "locks"
    locks.mkdir(exist_ok=True)
    lock = locks / "gc"
    lock.write_text("run=0123456789ab machine=otherbox pid=4242 started=%d host=%s\n" % (int(time.time()), "f" * 32))
    when = time.time() - age
    os.utime(str(lock), (when, when))


def _foresee(tmp_path, monkeypatch, age: float):
    repo, _old, _new, _db = two_vms(tmp_path)
    _gc_lock(tmp_path / "repo", age)

    def probe():
        raise AssertionError("the dry run probed the repository's clock: it wrote an upload to tmp/")

    monkeypatch.setattr(repo.backend, "now", probe)
    return prune.foresee(repo, prune.plan(repo, {"last": 1}))


def test_prune_dry_run_judges_another_machines_gc_lock_without_writing(tmp_path, monkeypatch):
    """Another machine's GC lock is judged by its age: the dry run read it on the repository's clock, which
    `backend.now` reads by creating an upload in tmp/ -- a write, where the dry run promises none."""
    with pytest.raises(RepoError, match="another garbage collection"):
        _foresee(tmp_path, monkeypatch, 0)


@pytest.mark.parametrize("past_grace", [-60.0, 60.0, 86400.0])
def test_prune_dry_run_cannot_tell_a_gc_lock_near_the_grace_period_by_its_own_clock(tmp_path, monkeypatch,
                                                                                       past_grace):
    """By this machine's clock a lock near the grace period's end may be live or stale on the repository's (a
    clock that lags): the dry run foresees the refusal and says it cannot tell; one far past it is stale, and
    refuses nothing."""
    grace = _grace(tmp_path / "first")
    if abs(past_grace) < 3600:
        with pytest.raises(RepoError, match="cannot tell"):
            _foresee(tmp_path, monkeypatch, grace + past_grace)
    else:
        _foresee(tmp_path, monkeypatch, grace + past_grace)


def _grace(where) -> float:
    where.mkdir()
    repo, _old, _new, _db = two_vms(where)
    return repo.config.grace


# -- 7. the start script falls back to a short QMP socket whatever the name's length -------------------------------

def test_a_60_byte_name_in_a_long_qmp_folder_gets_a_socket_path_that_fits(tmp_path, request):
    """`<name>.qmp` of 64 bytes passes 107 bytes in a QMP folder of 43 or more: the script set qmp to the whole
    name without a check (the fallback was only written for longer names), and QEMU ended at once."""
    name = "w" * 60
    base = tempfile.mkdtemp(prefix="q", dir="/tmp")
    request.addfinalizer(lambda: shutil.rmtree(base))
    qmp = base + "/" + "d" * (50 - len(base))
    fake = tmp_path / "qemu"
    fake.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\0" "$a"; done > "$0.args"\n')
    fake.chmod(0o755)
    script = tmp_path / "vm.sh"
    script.write_text(start_script(Machine(name, "0f4c2a56-5d0b-4d6c-9a3e-6c1f0e9d1a11"), [str(fake)]))
    subprocess.run(["sh", str(script)], check=True, timeout=30, env={"PATH": "/usr/bin:/bin", "HOTVCB_QMP_DIR": qmp})
    args = (tmp_path / "qemu.args").read_text().split("\0")
    socket = args[args.index("-qmp") + 1][len("unix:"):-len(",server=on,wait=off")]
    assert len(socket.encode()) <= SOCKET_PATH_MAX and socket.startswith(qmp + "/"), socket


def test_a_qmp_folder_too_long_for_any_socket_name_ends_the_script_saying_so(tmp_path, request):
    """Where even the short socket name passes 107 bytes, the script ends saying which folder is too long,
    before QEMU starts (which ended at once on a socket path it cannot bind)."""
    base = tempfile.mkdtemp(prefix="q", dir="/tmp")
    request.addfinalizer(lambda: shutil.rmtree(base))
    qmp = base + "/" + "d" * (100 - len(base))
    fake = tmp_path / "qemu"
    fake.write_text('#!/bin/sh\ntouch "$0.ran"\n')
    fake.chmod(0o755)
    script = tmp_path / "vm.sh"
    script.write_text(start_script(Machine("web", "0f4c2a56-5d0b-4d6c-9a3e-6c1f0e9d1a11"), [str(fake)]))
    r = subprocess.run(["sh", str(script)], timeout=30, env={"PATH": "/usr/bin:/bin", "HOTVCB_QMP_DIR": qmp},
                       stderr=subprocess.PIPE, universal_newlines=True)
    assert r.returncode == 1 and "HOTVCB_QMP_DIR" in r.stderr and qmp in r.stderr, r.stderr
    assert not (tmp_path / "qemu.ran").exists()
