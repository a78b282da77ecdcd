"""Pack version 2 (named by the SHA-256 of its header and table, docs/repository.md "Packs") next
to version 1 (named by the SHA-256 of all its bytes): a repository written before version 2
(tests/data/repo-v1/, made by main at 765102e with tests/data/repo-v1.py) is still restored,
verified, backed up into, pruned and garbage-collected; verify still finds damage outside the
chunks of either version; and the writer's and restore's buffer handling (views of a ring of
read buffers, pwritev) stores and restores every byte."""

import datetime
import os
import runpy
import shutil
import subprocess
import time

import pytest
from repotool import PYTHON, ROOT, MiB, age, backup, keep_last, new_repo, same

from hotvcb.repo import codec, gc, prune
from hotvcb.repo.backend import LocalBackend
from hotvcb.repo.reader import read_file, restore_disk
from hotvcb.repo.repository import PACKS, Repository
from hotvcb.repo.verify import verify
from hotvcb.repo.writer import BackupWriter

DATA = os.path.join(ROOT, "tests", "data")
DISK = runpy.run_path(os.path.join(DATA, "repo-v1.py"))["disk"]  # the fixture's disks, by version


def old_repo(tmp_path):
    shutil.copytree(os.path.join(DATA, "repo-v1"), str(tmp_path / "repo"))
    return Repository.open(LocalBackend(str(tmp_path / "repo")))


def restored(repo, snap, path):
    restore_disk(repo, snap, snap.disks[0], str(path))
    return path.read_bytes()


def pack_versions(repo):
    """Pack name -> the version its header says."""
    return {i.name: repo.backend.get(i.name, 8, 1)[0] for i in repo.backend.list(PACKS)}


def damage(repo_path, pack, offset, data=None, insert=False):
    """Overwrite (or insert) bytes at `offset` of a pack; a negative offset counts from its end."""
    path = os.path.join(str(repo_path), pack)
    raw = bytearray(open(path, "rb").read())
    at = offset % len(raw)
    if insert:
        raw[at:at] = data
    else:
        raw[at] ^= 0xFF
    with open(path, "wb") as f:
        f.write(raw)


def hotvcb(*args):
    return subprocess.run([PYTHON, "-m", "hotvcb"] + [str(a) for a in args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120, env=dict(os.environ, PYTHONPATH=ROOT))


def test_a_repository_of_version_1_packs_restores_and_verifies_and_damage_to_a_header_is_found(tmp_path):
    repo = old_repo(tmp_path)
    assert set(pack_versions(repo).values()) == {1}
    snaps = repo.snapshots()
    assert [(s.vm, s.time.day) for s in snaps] == [("web", 28), ("web", 29), ("gone", 30)]
    for snap, version in zip(snaps, (1, 2, "gone")):
        assert restored(repo, snap, tmp_path / ("%s.raw" % snap.id)) == DISK(version)
        assert read_file(repo, snap, snap.vm + ".vmx") == ('displayName = "%s"\n' % snap.vm).encode()
    report = verify(repo, "all")
    assert report.ok and report.packs_read == len(pack_versions(repo))
    r = hotvcb("verify", "--repo", tmp_path / "repo")
    assert r.returncode == 0, r.stdout + r.stderr
    pack = sorted(pack_versions(repo))[0]
    damage(tmp_path / "repo", pack, 12)  # a byte of the nonce: no chunk covers it, only the whole-pack name
    report = verify(repo, "all")
    assert report.problems == ["%s: damaged outside its chunks (its bytes do not match its name)" % pack]


def test_backups_into_a_version_1_repository_then_prune_and_gc_keep_what_they_should(tmp_path):
    repo = old_repo(tmp_path)
    web1, web2, gone = repo.snapshots()
    src = tmp_path / "disk.raw"
    newer = bytearray(DISK(2))
    newer[128 * 1024:192 * 1024] = os.urandom(64 * 1024)  # a new chunk: goes into a version 2 pack
    src.write_bytes(bytes(newer))
    web3 = backup(repo, "web", src, when=datetime.datetime(2026, 12, 1, 21))
    versions = pack_versions(repo)
    assert sorted(versions.values()).count(2) >= 1 and sorted(versions.values()).count(1) == 5
    assert web3.disks[0]["new_chunks"] == 1  # the rest is in the old packs
    assert verify(repo, "all").ok
    # drop the oldest web and the other VM: GC must copy out what web2 and web3 still need of the old packs
    decisions = prune.plan(repo, {"last": 2}, vm="web", select=keep_last)
    assert {d.snapshot.id: d.kept for d in decisions} == {web1.id: False, web2.id: True, web3.id: True}
    age(tmp_path / "repo", 3600)  # every pack older than the grace period
    marked = prune.prune(repo, decisions + [prune.Decision(gone, False, None)])
    assert marked.packs_condemned > 0 and marked.chunks_copied > 0  # live chunks of old packs copied out first
    age(tmp_path / "repo", 3600)
    report = gc.collect(repo)
    assert report.packs_deleted == marked.packs_condemned and report.bytes_freed > 0
    assert {s.id for s in repo.snapshots()} == {web2.id, web3.id}
    now = pack_versions(repo)
    assert {now[p] for p in set(now) - set(versions)} == {2} and {now[p] for p in set(now) & set(versions)} == {1, 2}
    assert verify(repo, "all").ok
    assert restored(repo, web2, tmp_path / "web2.raw") == DISK(2)
    assert restored(repo, web3, tmp_path / "web3.raw") == bytes(newer)


def test_verify_finds_damage_outside_the_chunks_of_a_version_2_pack(tmp_path):
    src = tmp_path / "disk.raw"
    src.write_bytes(DISK(1))
    repo = new_repo(tmp_path / "repo", pack_size=128 * 1024)
    backup(repo, "web", src)
    versions = pack_versions(repo)
    assert set(versions.values()) == {2}
    assert verify(repo, "all").ok
    big = max(repo.backend.list(PACKS), key=lambda i: i.size).name
    table = repo.pack_blobs(big, repo.backend.stat(big).size)
    table_at = table[-1].offset + table[-1].stored_len
    outside = "%s: damaged outside its chunks (its bytes do not match its name)" % big
    for how in ("nonce", "inserted", "version"):
        shutil.rmtree(str(tmp_path / "repo" / "verified"), ignore_errors=True)
        saved = open(os.path.join(str(tmp_path / "repo"), big), "rb").read()
        if how == "nonce":
            damage(tmp_path / "repo", big, 20)
        elif how == "inserted":  # bytes between the last blob and the table: every chunk and the table still read
            damage(tmp_path / "repo", big, table_at, b"\0" * 100, insert=True)
            assert repo.pack_blobs(big, repo.backend.stat(big).size) == table
        else:
            damage(tmp_path / "repo", big, 8)  # version 0xFD
        expected = outside if how != "version" else "%s: pack version 253, made by a newer hotvcb" % big
        assert [p[:len(expected)] for p in verify(repo, "all").problems] == [expected], how
        with open(os.path.join(str(tmp_path / "repo"), big), "wb") as f:
            f.write(saved)
    assert verify(repo, "all").ok


def test_zero_blocks_between_slow_chunks_never_overwrite_a_buffer_still_being_hashed(tmp_path, monkeypatch):
    """The writer reads on while workers hash views of earlier read buffers; blocks of written zeros are
    read but never handed to a worker, so they must still count towards when a buffer is reused."""
    encode = codec.encode

    def slow(raw, use_zstd=False):
        time.sleep(0.002)
        return encode(raw, use_zstd)

    monkeypatch.setattr(codec, "encode", slow)
    src = tmp_path / "disk.raw"
    with open(str(src), "wb") as f:  # 1 MiB of data then 3 MiB of written zeros, 8 times; a short zero tail
        for i in range(8):
            f.write(os.urandom(MiB // 2) + (b"block %d " % i * MiB)[:MiB // 2])
            f.write(bytes(3 * MiB))
        f.write(bytes(1000))
    for workers in (1, 2, 3):
        repo = new_repo(tmp_path / ("repo%d" % workers))
        w = BackupWriter(repo, "web", workers=workers)
        disk = w.add_disk("disk.raw", str(src))
        w.commit()
        assert disk["chunks"] == 8 * 16  # no zero chunk stored, the short zero tail included
        out = tmp_path / ("out%d.raw" % workers)
        restore_disk(repo, repo.snapshots()[-1], disk, str(out))
        assert same(src, out)
        assert verify(repo, "all").ok


@pytest.mark.parametrize("how", ["short writes", "no pwritev"])
def test_a_restore_writes_every_byte_with_short_writes_and_without_pwritev(tmp_path, monkeypatch, how):
    src = tmp_path / "disk.raw"
    src.write_bytes(DISK(2) + os.urandom(3 * MiB) + DISK(1))
    repo = new_repo(tmp_path / "repo")
    snap = backup(repo, "web", src)
    if how == "no pwritev":
        monkeypatch.delattr(os, "pwritev")
    else:  # at most 70,000 bytes per call: parts are 64 KiB, so a call may end inside the first or the second
        monkeypatch.setattr(os, "pwritev", lambda fd, views, at: os.pwrite(fd, b"".join(views)[:70000], at))
    assert restored(repo, snap, tmp_path / "out.raw") == src.read_bytes()
