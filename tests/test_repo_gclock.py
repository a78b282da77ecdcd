"""The GC lock through its API (hotvcb.repo.gclock): what a lock records, which locks are a GC at work,
and the take-over guard. The outside tester's attacks through the CLI are tests/test_outsider_fixrepo.py."""

import os
import socket

import pytest
from repotool import new_repo

from hotvcb import runid
from hotvcb.errors import RepoError
from hotvcb.repo import gclock
from hotvcb.runid import RunId, parse

ANCIENT = 978307200  # 2001-01-01: older than any grace period


@pytest.fixture
def repo(tmp_path):
    return new_repo(tmp_path / "repo", settle=0)


def put(repo, text, name=gclock.LOCK, mtime=None):
    assert repo.backend.put_new(name, text.encode())
    if mtime is not None:
        path = os.path.join(repo.backend.root, name)
        os.utime(path, (mtime, mtime))


def test_a_gcs_lock_names_this_machine_and_its_id(repo):
    with gclock.gc_lock(repo):
        held = parse(repo.backend.get(gclock.LOCK).decode())
        assert held.machine == socket.gethostname() and held.pid == os.getpid()
        assert held.host and held.host == gclock.this_host()
    assert repo.backend.stat(gclock.LOCK) is None


def test_without_a_machine_id_the_host_id_of_the_run_lock_is_used(tmp_path, monkeypatch):
    """An ESXi host has no /etc/machine-id: its GC locks carry the id its run lock's records carry."""
    monkeypatch.setattr(runid, "MACHINE_ID", str(tmp_path / "no-machine-id"))
    monkeypatch.setattr(gclock, "HOST_ID_DIR", str(tmp_path / "run"))
    gclock.this_host.cache_clear()
    try:
        first = gclock.this_host()
        with open(str(tmp_path / "run" / "hotvcb.hostid")) as f:
            assert first and f.read().strip() == first
    finally:
        gclock.this_host.cache_clear()


@pytest.mark.parametrize("host", ["", "this"])
def test_this_machines_lock_with_its_id_or_none_is_judged_by_its_pid(repo, host):
    """A lock written before locks carried an id is this machine's by its name alone; a dead pid is no GC
    however fresh its lock."""
    me = RunId.new()
    host = gclock.this_host() if host == "this" else ""
    put(repo, RunId("0123456789ab", me.machine, 999999999, 1000, host).text())
    assert gclock.stale(repo, me)


def test_a_lock_of_another_host_with_this_machines_name_is_judged_by_its_age(repo):
    me = RunId.new()
    put(repo, RunId("0123456789ab", me.machine, 999999999, 1000, "another-host").text())
    assert not gclock.stale(repo, me)  # fresh: a GC at work there, whatever its pid means here
    with pytest.raises(RepoError, match="another garbage collection"):
        with gclock.gc_lock(repo):
            pass
    os.utime(os.path.join(repo.backend.root, gclock.LOCK), (ANCIENT, ANCIENT))
    assert gclock.stale(repo, me)


def test_a_fresh_takeover_guard_refuses_and_a_dead_takers_is_removed(repo):
    dead = RunId("0123456789ab", socket.gethostname(), 999999999, 1000).text()
    put(repo, dead)
    put(repo, "run=ba9876543210 machine=x pid=1 started=1\n", name=gclock.GUARD)
    with pytest.raises(RepoError, match="taking the lock over just now"):
        with gclock.gc_lock(repo):
            pass
    assert repo.backend.get(gclock.LOCK).decode() == dead  # left to the taker at work
    os.utime(os.path.join(repo.backend.root, gclock.GUARD), (ANCIENT, ANCIENT))
    with gclock.gc_lock(repo):
        assert parse(repo.backend.get(gclock.LOCK).decode()).pid == os.getpid()
        assert repo.backend.stat(gclock.GUARD) is None
    assert repo.backend.stat(gclock.LOCK) is None
