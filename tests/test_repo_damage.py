"""Chunks verify found damaged (docs/repository.md "Damaged chunks"): recorded once, stored again by the
next backup, read from a sound copy by a restore, dropped by GC with their pack; and the folder a
`restore --repo --to` builds, recorded so a killed one's never blocks the next restore for good."""

import os
import random
import signal
import subprocess
import time

import pytest
from repotool import PYTHON, ROOT, MiB, age, backup, cli, corrupt_one_chunk, make_disk, new_repo

from hotvcb.errors import RepoError
from hotvcb.repo import gc
from hotvcb.repo.reader import restore_disk
from hotvcb.repo.repository import DAMAGED, PACKS, SNAPSHOTS
from hotvcb.repo.verify import verify


@pytest.fixture
def damaged(tmp_path):
    """A backup one of whose chunks is damaged in its pack, and verify has said so."""
    src = tmp_path / "disk.raw"
    make_disk(src, size=4 * MiB)
    repo = new_repo(tmp_path / "repo")
    first = backup(repo, "web", src)
    digest = corrupt_one_chunk(tmp_path / "repo", repo, first)
    assert not verify(repo, "all").ok
    return repo, src, first, digest


def test_damage_is_recorded_once_stored_again_read_from_the_sound_copy_and_dropped_with_its_pack(damaged, tmp_path):
    repo, src, first, digest = damaged
    records = repo.backend.list(DAMAGED)
    assert len(records) == 1 and repo.damaged() == {repo.chunk_map()[digest].pack: {digest}}
    assert not verify(repo, "all").ok and repo.backend.list(DAMAGED) == records  # the same finding: no new object
    bad_pack = repo.chunk_map()[digest].pack
    later = backup(repo, "web", src)
    assert later.disks[0]["new_chunks"] == 1  # the damaged chunk, and only it, stored again
    assert repo.chunk_map()[digest].pack != bad_pack
    for snap in (first, later):  # the old backup restores again too: from the sound copy
        out = tmp_path / ("%s.raw" % snap.id)
        restore_disk(repo, snap, snap.disks[0], str(out))
        assert out.read_bytes() == src.read_bytes()
    for snap in (first, later):  # what prune does; then GC marks every pack, and sweeps them a grace later
        repo.backend.delete(SNAPSHOTS + snap.id)
    age(tmp_path / "repo", 10 ** 6)
    gc.collect(repo)
    age(tmp_path / "repo", 10 ** 6)
    gc.collect(repo)
    assert repo.backend.list(PACKS) == [] and repo.backend.list(DAMAGED) == []


def test_a_damage_record_that_does_not_read_stops_a_backup_but_no_restore(damaged, tmp_path):
    repo, src, first, digest = damaged
    # of a pack there: one naming a pack that is gone says nothing and stops nothing (docs "Damaged chunks")
    repo.backend.put_new(DAMAGED + repo.chunk_map()[digest].pack.rsplit("/", 1)[1] + ".0", b"{garbage")
    with pytest.raises(RepoError, match="damaged/"):
        backup(repo, "web", src)  # it cannot tell which chunks are sound: building on a bad one is worse
    out = tmp_path / "out.raw"
    with pytest.raises(RepoError, match=digest.hex()):  # the only copy is the damaged one: named, never zeros
        restore_disk(repo, first, first.disks[0], str(out))


def test_restore_to_records_its_folder_and_names_a_leftover_it_cannot_prove_dead(tmp_path):
    src = tmp_path / "disk.raw"
    make_disk(src, size=2 * MiB)
    repo = new_repo(tmp_path / "repo")
    snap = backup(repo, "web", src)
    out = tmp_path / "out"
    (tmp_path / "out.hotvcb-restoring").mkdir()  # an older hotvcb's, or one killed with no record: not ours to delete
    r = cli("restore", "--repo", tmp_path / "repo", snap.id, "--to", out)
    assert r.returncode == 1 and "killed" in r.stderr and "remove it by hand" in r.stderr, r.stdout + r.stderr
    assert (tmp_path / "out.hotvcb-restoring").is_dir() and not out.exists()
    (tmp_path / "out.hotvcb-restoring").rmdir()
    r = cli("restore", "--repo", tmp_path / "repo", snap.id, "--to", out)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (out / "disk.raw").read_bytes() == src.read_bytes()
    assert [p.name for p in tmp_path.iterdir() if "hotvcb" in p.name] == []  # neither folder nor record left


def test_cleanup_kvm_removes_a_killed_restore_to_folder_and_its_record(tmp_path):
    src = tmp_path / "disk.raw"
    with open(str(src), "wb") as f:
        for i in range(48):
            f.write(random.Random(i).getrandbits(8 * MiB).to_bytes(MiB, "little"))
    repo = new_repo(tmp_path / "repo", pack_size=8 * MiB)
    snap = backup(repo, "web", src)
    target = tmp_path / "t"
    target.mkdir()
    proc = subprocess.Popen([PYTHON, "-m", "hotvcb", "restore", "--repo", str(tmp_path / "repo"), snap.id, "--to",
                             str(target / "out")], cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not (target / "out.hotvcb-restoring" / "disk.raw").exists() and proc.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    if proc.wait() == 0:
        pytest.skip("the restore ended before it could be killed")
    assert len([n for n in os.listdir(str(target)) if n.endswith(".owner")]) == 1  # recorded before it was made
    r = cli("cleanup", "--kvm", target)
    assert r.returncode == 0 and "left by a restore that died" in r.stdout, r.stdout + r.stderr
    assert os.listdir(str(target)) == []
