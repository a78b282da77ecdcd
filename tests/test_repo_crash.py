"""SIGKILL during a repository backup, prune and GC; two writers at once.

Each run is a process of its own (on Python 3.8 where pyenv has it, the
ESXi host's version), killed at a named point (HOTVCB_CRASH_AT) or from
outside while it writes a pack. Afterwards: no half backup is visible,
verify passes, the next backup succeeds and restores, and GC (after the
grace period) removes what the dead run left.
"""

import os
import shutil
import signal
import subprocess
import time

import pytest
from repotool import PYTHON, MiB, age, backup, make_disk, new_repo, same, scatter

from hotvcb.repo import gc
from hotvcb.repo.reader import restore_disk
from hotvcb.repo.repository import INDEXES, PACKS, Repository
from hotvcb.repo.backend import LocalBackend
from hotvcb.repo.verify import verify

TOOL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "repotool.py")


def tool(*args, crash=None):
    env = dict(os.environ)
    env.pop("HOTVCB_CRASH_AT", None)
    if crash:
        env["HOTVCB_CRASH_AT"] = crash
    return subprocess.run([PYTHON, TOOL] + [str(a) for a in args], capture_output=True, text=True, env=env,
                          timeout=120)


def killed(r):
    return r.returncode == -signal.SIGKILL


def healthy_after(tmp_path, repo, disk, expect_snaps):
    """The checks every crash must pass: nothing half visible, verify ok, next backup ok, GC cleans up."""
    assert len(repo.snapshots()) == expect_snaps
    assert verify(repo, "all").ok
    r = tool("backup", tmp_path / "repo", "web", disk)
    assert r.returncode == 0, r.stderr
    snap = repo.snapshot(r.stdout.strip())
    out = tmp_path / ("restored-%d.raw" % len(os.listdir(str(tmp_path))))
    restore_disk(repo, snap, snap.disks[0], str(out))
    assert same(out, disk)
    for _ in range(2):  # mark, then sweep
        age(tmp_path / "repo", 3600)
        assert tool("gc", tmp_path / "repo").returncode == 0
    referenced = set(repo.references(repo.snapshots()))
    for info in repo.backend.list(PACKS):
        assert any(b.digest in referenced for b in repo.pack_blobs(info.name, info.size)), "orphan pack left"
    ids = {s.id for s in repo.snapshots()}
    assert all(i.name[len(INDEXES):].rsplit(".", 1)[0] in ids for i in repo.backend.list(INDEXES))
    assert os.listdir(str(tmp_path / "repo" / "tmp")) == []
    assert verify(repo, "all").ok


@pytest.fixture
def setup(tmp_path):
    disk = tmp_path / "disk.raw"
    make_disk(disk)
    repo = new_repo(tmp_path / "repo")
    return repo, disk


@pytest.mark.parametrize("point", ["repo-pack-writing", "repo-pack-committed", "repo-before-record"])
def test_backup_killed_leaves_no_half_backup(tmp_path, setup, point):
    repo, disk = setup
    backup(repo, "web", disk)
    scatter(disk, 30)
    assert killed(tool("backup", tmp_path / "repo", "web", disk, crash=point))
    healthy_after(tmp_path, repo, disk, 1)


def test_backup_killed_from_outside_while_it_writes_a_pack(tmp_path, setup):
    repo, disk = setup
    big = tmp_path / "big.raw"
    with open(big, "wb") as f:
        for i in range(64):
            f.write(os.urandom(MiB))
    proc = subprocess.Popen([PYTHON, TOOL, "backup", str(tmp_path / "repo"), "web", str(big)])
    tmp = tmp_path / "repo" / "tmp"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (tmp.is_dir() and any(p.stat().st_size > 0 for p in tmp.iterdir())):
        time.sleep(0.01)
    proc.kill()
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    healthy_after(tmp_path, repo, disk, 0)


def test_prune_killed_between_record_and_indexes(tmp_path, setup):
    repo, disk = setup
    for i in range(2):
        backup(repo, "web", disk)
        scatter(disk, 30, seed=20 + i)
    assert killed(tool("prune", tmp_path / "repo", 1, crash="repo-prune-record-deleted"))
    healthy_after(tmp_path, repo, disk, 1)


@pytest.mark.parametrize("point", ["repo-gc-before-mark", "repo-gc-sweep"])
def test_gc_killed_mid_way(tmp_path, setup, point):
    repo, disk = setup
    make_disk(tmp_path / "gone.raw", seed=5)
    gone = backup(repo, "gone", tmp_path / "gone.raw")
    backup(repo, "web", disk)
    scatter(disk, 30)
    backup(repo, "web", disk)
    assert tool("prune", tmp_path / "repo", 1).returncode == 0  # web keeps one, gone keeps its only one
    repo.backend.delete("snapshots/" + gone.id)
    age(tmp_path / "repo", 3600)
    if point == "repo-gc-sweep":
        assert tool("gc", tmp_path / "repo").returncode == 0
        age(tmp_path / "repo", 3600)
    assert killed(tool("gc", tmp_path / "repo", crash=point))
    assert repo.backend.stat("locks/gc") is not None  # the dead GC's lock: the next one must take it over
    healthy_after(tmp_path, repo, disk, 1)


def test_gc_refuses_to_run_beside_a_live_gc(tmp_path, setup):
    repo, _disk = setup
    holder = subprocess.Popen([PYTHON, "-c", "import time; time.sleep(60)", "hotvcb", "gc"])  # names hotvcb
    try:
        repo.backend.put_new("locks/gc", ("run=abc machine=%s pid=%d started=1\n" % (os.uname()[1], holder.pid))
                             .encode())
        with pytest.raises(Exception, match="another garbage collection"):
            gc.collect(repo)
        assert repo.backend.stat("locks/gc") is not None  # refused: the holder's lock is left as it was
    finally:
        holder.kill()
        holder.wait()
    gc.collect(repo)  # its holder is dead now: taken over
    assert repo.backend.stat("locks/gc") is None


def test_two_writers_at_once_into_one_repository_both_succeed(tmp_path, setup):
    repo, disk = setup
    other = tmp_path / "other.raw"
    shutil.copyfile(str(disk), str(other))
    scatter(other, 50, seed=7)  # shares most chunks with disk: both store them at the same time
    procs = [subprocess.Popen([PYTHON, TOOL, "backup", str(tmp_path / "repo"), vm, str(path)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for vm, path in (("web", disk), ("mail", other))]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    repo = Repository.open(LocalBackend(str(tmp_path / "repo")))
    for (out, _err), path in zip(outs, (disk, other)):
        snap = repo.snapshot(out.strip())
        restore_disk(repo, snap, snap.disks[0], str(tmp_path / (snap.vm + ".raw")))
        assert same(tmp_path / (snap.vm + ".raw"), path)
    assert verify(repo, "all").ok
