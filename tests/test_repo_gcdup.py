"""GC reclaims the space the repository used to keep forever (issue 11): the duplicate packs of two
writers that stored the same chunks at once, and a pack verify found damaged once a backup has stored
its damaged chunks again; a pack kept for one stuck chunk holds its sound copies meanwhile
(docs/repository.md "Garbage collection and concurrency", "Damaged chunks"). Through prune's command line where what it prints matters, the library's API elsewhere, and SIGKILL
during the GC that drops a damaged pack."""

import hashlib
import os
import random
import signal
import subprocess

import pytest
from repotool import (HOUR, PYTHON, MiB, age, backup, cli, corrupt_chunk, corrupt_one_chunk, make_disk, new_repo, same,
                      write_mark)

from hotvcb.repo import gc
from hotvcb.repo.format import CHUNK_SIZE as CHUNK
from hotvcb.repo.reader import restore_disk
from hotvcb.repo.repository import CONDEMNED, DAMAGED, PACKS
from hotvcb.repo.verify import verify
from hotvcb.repo.writer import BackupWriter

TOOL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "repotool.py")


def prune_all(repo_path):
    """`hotvcb prune` keeping every backup: only its GC acts. Returns its output."""
    r = cli("prune", "--repo", repo_path, "--keep-last", 100)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def copies(repo):
    """Chunk -> the packs holding it, for every chunk a backup needs."""
    needed = set(repo.references(repo.snapshots()))
    out = {}
    for info in repo.backend.list(PACKS):
        for blob in repo.pack_blobs(info.name, info.size):
            if blob.digest in needed:
                out.setdefault(blob.digest, []).append(info.name)
    assert set(out) == needed
    return out


def restores(repo, tmp_path, disk):
    """Every backup restores to `disk` (a dict: to its VM's)."""
    for snap in repo.snapshots():
        out = tmp_path / ("restored-%s.raw" % snap.id)
        restore_disk(repo, snap, snap.disks[0], str(out))
        assert same(out, disk[snap.vm] if isinstance(disk, dict) else disk), snap
        out.unlink()


def store_twice_at_once(repo, disk):
    """Two writers (two hosts) that loaded the chunk map before either stored a chunk: both store all."""
    writers = [BackupWriter(repo, vm) for vm in ("web", "mail")]
    for w in writers:
        try:
            w.add_disk("disk.raw", str(disk))
            w.commit()
        finally:
            w.abort()


def test_two_writers_duplicate_packs_are_reclaimed_and_prune_says_why(tmp_path):
    disk = tmp_path / "disk.raw"
    make_disk(disk)
    repo = new_repo(tmp_path / "repo")
    store_twice_at_once(repo, disk)
    packs = repo.backend.list(PACKS)
    assert all(len(where) == 2 for where in copies(repo).values())  # every chunk stored twice
    age(tmp_path / "repo", HOUR)
    out = prune_all(tmp_path / "repo")
    half = len(packs) // 2
    assert "%d pack(s) marked (%d held only duplicates)" % (half, half) in out, out
    assert "0 chunk(s) copied" in out, out  # a duplicate's chunks are kept in the other pack: nothing to copy
    age(tmp_path / "repo", HOUR)
    out = prune_all(tmp_path / "repo")
    assert "%d deleted (" % half in out and "; %d held only duplicates)" % half in out, out
    after = repo.backend.list(PACKS)
    assert len(after) == half and sum(i.size for i in after) * 2 == sum(i.size for i in packs)
    assert all(len(where) == 1 for where in copies(repo).values())
    restores(repo, tmp_path, disk)
    r = cli("verify", "--repo", tmp_path / "repo")
    assert r.returncode == 0, r.stdout + r.stderr
    age(tmp_path / "repo", HOUR)
    assert "0 pack(s) marked, 0 deleted" in prune_all(tmp_path / "repo")  # what is left is all live: it stays


def test_two_backup_processes_at_once_leave_one_copy_of_each_chunk_after_gc(tmp_path):
    disk = tmp_path / "disk.raw"
    make_disk(disk)
    repo = new_repo(tmp_path / "repo")
    procs = [subprocess.Popen([PYTHON, TOOL, "backup", str(tmp_path / "repo"), vm, str(disk)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for vm in ("web", "mail")]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    if all(len(where) == 1 for where in copies(repo).values()):
        pytest.skip("the two backups did not overlap (one ended before the other loaded the chunk map)")
    for _ in range(2):  # mark, then sweep
        age(tmp_path / "repo", HOUR)
        gc.collect(repo)
    assert all(len(where) == 1 for where in copies(repo).values())  # however much the two overlapped
    restores(repo, tmp_path, disk)
    assert verify(repo, "all").ok


@pytest.fixture
def damaged(tmp_path):
    """A backup one of whose chunks is damaged, verify has said so, and the next backup stored it again."""
    disk = tmp_path / "disk.raw"
    make_disk(disk, size=6 * MiB)
    repo = new_repo(tmp_path / "repo")
    first = backup(repo, "web", disk)
    digest = corrupt_one_chunk(tmp_path / "repo", repo, first)
    r = cli("verify", "--repo", tmp_path / "repo")
    assert r.returncode == 4 and digest.hex() in r.stdout + r.stderr, r.stdout + r.stderr
    bad_pack = repo.chunk_map()[digest].pack
    assert backup(repo, "web", disk).disks[0]["new_chunks"] == 1
    return repo, disk, bad_pack


def test_a_damaged_pack_goes_once_its_damage_is_stored_again(damaged, tmp_path):
    repo, disk, bad_pack = damaged
    age(tmp_path / "repo", HOUR)
    out = prune_all(tmp_path / "repo")
    assert "1 held damaged chunks stored soundly elsewhere" in out, out
    age(tmp_path / "repo", HOUR)
    out = prune_all(tmp_path / "repo")
    assert "held damaged chunks stored soundly elsewhere)" in out, out
    assert repo.backend.stat(bad_pack) is None and repo.backend.list(DAMAGED) == []
    assert all(len(where) == 1 for where in copies(repo).values())
    r = cli("verify", "--repo", tmp_path / "repo")
    assert r.returncode == 0, r.stdout + r.stderr
    restores(repo, tmp_path, disk)


@pytest.mark.parametrize("point", ["repo-gc-before-mark", "repo-gc-sweep", "repo-gc-swept"])
def test_gc_killed_while_it_drops_a_damaged_pack(damaged, tmp_path, point):
    repo, disk, bad_pack = damaged
    age(tmp_path / "repo", HOUR)
    if point != "repo-gc-before-mark":
        gc.collect(repo)
        age(tmp_path / "repo", HOUR)
    env = dict(os.environ, HOTVCB_CRASH_AT=point)
    r = subprocess.run([PYTHON, TOOL, "gc", str(tmp_path / "repo")], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == -signal.SIGKILL, r.stdout + r.stderr
    report = verify(repo, "all")
    if point == "repo-gc-swept":  # the damaged pack is gone; its damage record and the mark are left
        assert repo.backend.stat(bad_pack) is None and repo.backend.list(DAMAGED) != []
        assert report.ok, report.problems
    else:  # the damaged pack is still there: verify names its known damage, and nothing else
        assert report.problems and all(bad_pack in p for p in report.problems), report.problems
    restores(repo, tmp_path, disk)
    r = subprocess.run([PYTHON, TOOL, "backup", str(tmp_path / "repo"), "web", str(disk)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    for _ in range(2):
        age(tmp_path / "repo", HOUR)
        gc.collect(repo)
    assert repo.backend.stat(bad_pack) is None and repo.backend.list(DAMAGED) == []
    assert all(len(where) == 1 for where in copies(repo).values())
    assert verify(repo, "all").ok
    restores(repo, tmp_path, disk)


def test_a_pack_whose_damaged_chunk_is_the_only_copy_stays_and_gc_says_why(tmp_path):
    disk = tmp_path / "disk.raw"
    make_disk(disk, size=6 * MiB)
    repo = new_repo(tmp_path / "repo")
    first = backup(repo, "web", disk)
    digest = corrupt_one_chunk(tmp_path / "repo", repo, first)
    assert not verify(repo, "all").ok
    bad_pack = repo.chunk_map()[digest].pack
    for _ in range(2):
        age(tmp_path / "repo", HOUR)
        out = prune_all(tmp_path / "repo")
        assert "0 pack(s) marked" in out and "keeping %s for now" % bad_pack in out and digest.hex() in out, out
    assert repo.backend.stat(bad_pack) is not None  # the damaged copy is all there is: never lose more
    assert backup(repo, "web", disk).disks[0]["new_chunks"] == 1  # the next backup stores it again ...
    for _ in range(2):
        age(tmp_path / "repo", HOUR)
        gc.collect(repo)
    assert repo.backend.stat(bad_pack) is None  # ... and then it goes
    assert verify(repo, "all").ok
    restores(repo, tmp_path, disk)


def test_of_two_identical_packs_the_damaged_one_goes_and_the_sound_one_stays(tmp_path):
    disk = tmp_path / "disk.raw"
    make_disk(disk)
    repo = new_repo(tmp_path / "repo")
    store_twice_at_once(repo, disk)
    first = repo.snapshots()[0]
    digest = repo.disk_index(first.disks[0]).entries[0][1]
    holders = copies(repo)[digest]
    kept = repo.chunk_map()[digest].pack  # the live copy, before any damage: the one a reader reads
    assert kept in holders and len(holders) == 2
    corrupt_one_chunk(tmp_path / "repo", repo, first)  # damages the live copy: the other becomes the one kept
    assert not verify(repo, "all").ok
    (other,) = set(holders) - {kept}
    assert repo.chunk_map()[digest].pack == other
    for _ in range(2):
        age(tmp_path / "repo", HOUR)
        report = gc.collect(repo)
    assert repo.backend.stat(kept) is None and repo.backend.stat(other) is not None
    assert report.chunks_copied == 0  # every chunk of the damaged pack had a sound copy elsewhere
    assert all(len(where) == 1 for where in copies(repo).values())
    assert verify(repo, "all").ok and repo.backend.list(DAMAGED) == []
    restores(repo, tmp_path, disk)


def test_a_chunk_rotting_in_both_copies_after_the_mark_keeps_both_and_the_sweep_goes_on(tmp_path):
    """The twin was marked as a duplicate; then the chunk rotted in it and in its live copy: the sweep cannot
    copy it out, so that twin stays (with its mark) and the live copy too, the other twins go, and once a
    backup stored the chunk again both damaged packs go."""
    disk = tmp_path / "disk.raw"
    make_disk(disk)
    repo = new_repo(tmp_path / "repo")
    store_twice_at_once(repo, disk)
    age(tmp_path / "repo", HOUR)
    gc.collect(repo)  # marks one pack of each identical pair
    condemned = repo.condemned()
    digest = repo.disk_index(repo.snapshots()[0].disks[0]).entries[0][1]
    (twin,) = [p for p in copies(repo)[digest] if p in condemned]
    (live,) = [p for p in copies(repo)[digest] if p not in condemned]
    for pack in (live, twin):
        corrupt_chunk(tmp_path / "repo", repo, pack, digest)
    assert not verify(repo, "all").ok
    age(tmp_path / "repo", HOUR)
    out = prune_all(tmp_path / "repo")
    assert "keeping %s for now: chunk(s) %s" % (twin, digest.hex()) in out, out
    assert "%d deleted" % (len(condemned) - 1) in out, out  # every other twin
    assert {p for p in condemned if repo.backend.stat(p) is not None} == {twin}
    assert repo.backend.stat(live) is not None
    assert [i.name for i in repo.backend.list(CONDEMNED)] == [condemned[twin]]  # tried again at the next sweep
    assert backup(repo, "web", disk).disks[0]["new_chunks"] == 1
    for _ in range(2):
        age(tmp_path / "repo", HOUR)
        prune_all(tmp_path / "repo")
    assert repo.backend.stat(live) is None and repo.backend.stat(twin) is None
    assert repo.backend.list(CONDEMNED) == [] and repo.backend.list(DAMAGED) == []
    assert all(len(where) == 1 for where in copies(repo).values())
    assert verify(repo, "all").ok
    restores(repo, tmp_path, disk)


def chunk_disk(path, *blocks):
    """A disk of one 64 KiB chunk per block: the same block in two disks is the same chunk."""
    with open(path, "wb") as f:
        for block in blocks:
            f.write(block)


def test_a_pack_kept_for_one_stuck_chunk_holds_its_sound_copies_so_a_damaged_copy_elsewhere_is_never_read(
        tmp_path):
    """Packs A (web's chunks S and Y) and B (mail's Y and Z) are condemned by one ripe mark; S rotted in A,
    its only copy, so A stays; Y rotted in B. A's sound Y holds Y: the sweep deletes B after copying out
    only Z, instead of reading B's damaged Y and stopping (the copy GC would have made is the damaged
    one). Once a backup stores S again, A goes too. The mark is written by hand:
    the state a mark and later rot leave, without staging the GC runs that lead there."""
    rnd = random.Random(7)
    s, y, z = (rnd.getrandbits(8 * CHUNK).to_bytes(CHUNK, "little") for _ in range(3))
    web, mail = tmp_path / "web.raw", tmp_path / "mail.raw"
    chunk_disk(web, s, y)
    chunk_disk(mail, y, z)
    repo = new_repo(tmp_path / "repo")
    writers = [BackupWriter(repo, vm) for vm in ("web", "mail")]  # both load the map before either stores
    for w, disk in zip(writers, (web, mail)):
        try:
            w.add_disk("disk.raw", str(disk))
            w.commit()
        finally:
            w.abort()
    digest = {name: hashlib.sha256(block).digest() for name, block in (("s", s), ("y", y), ("z", z))}
    where = copies(repo)
    (a,) = where[digest["s"]]
    (b,) = where[digest["z"]]
    assert sorted(where[digest["y"]]) == sorted([a, b]) and a != b
    corrupt_chunk(tmp_path / "repo", repo, a, digest["s"])
    corrupt_chunk(tmp_path / "repo", repo, b, digest["y"])
    assert len(verify(repo, "all").problems) == 2  # both recorded in damaged/
    write_mark(tmp_path / "repo", packs=sorted([a, b]))
    age(tmp_path / "repo", HOUR)
    out = prune_all(tmp_path / "repo")
    assert "keeping %s for now: chunk(s) %s" % (a, digest["s"].hex()) in out, out
    assert "1 deleted" in out and "1 chunk(s) copied" in out, out  # B went; only Z was copied out of it
    assert repo.backend.stat(a) is not None and repo.backend.stat(b) is None
    where = copies(repo)
    assert where[digest["y"]] == [a] and where[digest["s"]] == [a] and a not in where[digest["z"]]
    (mail_snap,) = [snap for snap in repo.snapshots() if snap.vm == "mail"]
    restore_disk(repo, mail_snap, mail_snap.disks[0], str(tmp_path / "mail-restored.raw"))
    assert same(tmp_path / "mail-restored.raw", mail)
    # S stored again (A is stuck no more), and Y, whose only copy lies in a condemned pack
    assert backup(repo, "web", web).disks[0]["new_chunks"] == 2
    for _ in range(2):
        age(tmp_path / "repo", HOUR)
        prune_all(tmp_path / "repo")
    assert repo.backend.stat(a) is None and repo.backend.list(CONDEMNED) == [] and repo.backend.list(DAMAGED) == []
    assert all(len(packs) == 1 for packs in copies(repo).values())
    assert verify(repo, "all").ok
    restores(repo, tmp_path, {"web": web, "mail": mail})
