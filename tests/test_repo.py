"""The repository library through its public API: round trip, dedup, verify,
bad chunks named with their backups, prune and GC (docs/repository.md)."""

import datetime
import os

import pytest
from repotool import MiB, age, backup, corrupt_one_chunk, keep_last, make_disk, new_repo, same, scatter

from hotvcb.errors import RepoError
from hotvcb.repo import gc, prune
from hotvcb.repo.backend import LocalBackend
from hotvcb.repo.reader import read_file, restore_disk, restore_stream
from hotvcb.repo.chunks import BadChunk
from hotvcb.repo.records import Snapshot, machines
from hotvcb.repo.repository import PACKS, Repository
from hotvcb.repo.verify import verify
from hotvcb.repo.writer import BackupWriter


def restore(repo, snap, out):
    restore_disk(repo, snap, snap.disks[0], str(out))
    return out


def test_round_trip_keeps_content_holes_and_stores_no_zeros(tmp_path):
    disk = tmp_path / "disk-flat.vmdk"
    make_disk(disk)
    repo = new_repo(tmp_path / "repo")
    snap = backup(repo, "web", disk)
    out = restore(repo, snap, tmp_path / "out.raw")
    assert same(disk, out)
    assert os.path.getsize(out) == os.path.getsize(disk) == 24 * MiB
    assert os.stat(out).st_blocks * 512 < 12 * MiB  # zeros and holes stay holes
    index = repo.disk_index(snap.disks[0])
    chunk = repo.config.chunk_size
    with open(disk, "rb") as f:
        nonzero = [n for n in range(-(-(24 * MiB) // chunk)) if f.read(chunk).strip(b"\0")]
    assert [n for n, _d in index.entries] == nonzero  # every zero chunk (hole or written) left out
    stored = sum(i.size for i in repo.backend.list(PACKS))
    assert stored < len(nonzero) * chunk  # text compressed, random stored raw
    assert read_file(repo, snap, "web.vmx") == b'displayName = "web"\n'
    with open(tmp_path / "streamed.raw", "wb") as pipe_like:  # a stream: zeros written, never seeked over
        assert restore_stream(repo, snap.disks[0], pipe_like.write) == 24 * MiB
    assert (tmp_path / "streamed.raw").read_bytes() == disk.read_bytes()
    assert not os.listdir(tmp_path / "repo" / "tmp")


def test_second_backup_stores_only_the_chunks_scattered_writes_touched(tmp_path):
    disk = tmp_path / "disk.raw"
    make_disk(disk, seed=3)
    repo = new_repo(tmp_path / "repo")
    first = backup(repo, "db", disk)
    scatter(disk, 20)
    second = backup(repo, "db", disk)
    assert first.disks[0]["new_chunks"] > 100
    assert second.disks[0]["new_chunks"] <= 20  # one 64 KiB chunk per aligned 64 KiB write, nothing else
    assert second.disks[0]["new_bytes"] <= 20 * 65536
    assert same(disk, restore(repo, second, tmp_path / "second.raw"))
    assert not same(disk, restore(repo, first, tmp_path / "first.raw"))  # the first backup is still itself


def test_a_corrupted_chunk_is_found_and_named_with_every_backup_that_needs_it(tmp_path):
    disk = tmp_path / "disk.raw"
    make_disk(disk)
    repo = new_repo(tmp_path / "repo")
    first, second = backup(repo, "web", disk), backup(repo, "web", disk)
    other = backup(repo, "mail", tmp_path / "disk.raw")
    assert verify(repo, "all").ok
    digest = corrupt_one_chunk(tmp_path / "repo", repo, first)
    with pytest.raises(BadChunk) as err:
        restore(repo, second, tmp_path / "out.raw")
    assert err.value.digest == digest and {s.id for s in err.value.users} == {first.id, second.id, other.id}
    assert digest.hex() in str(err.value) and "web @" in str(err.value) and "mail @" in str(err.value)
    assert not (tmp_path / "out.raw").exists()  # nothing half-written that looks like a disk
    report = verify(repo, "all")
    assert not report.ok and any(digest.hex() in p and first.id in p and second.id in p for p in report.problems)


def test_verify_modes_read_all_a_sample_or_only_never_verified_packs(tmp_path):
    disk = tmp_path / "disk.raw"
    make_disk(disk)
    repo = new_repo(tmp_path / "repo")
    backup(repo, "web", disk)
    packs = len(repo.backend.list(PACKS))
    assert packs >= 4
    assert verify(repo, "sample", share=0.25).packs_read == round(packs * 0.25)
    first_new = verify(repo, "new")
    assert first_new.ok and first_new.packs_read == packs - round(packs * 0.25)
    assert verify(repo, "new").packs_read == 0
    scatter(disk, 3)
    backup(repo, "web", disk)
    assert verify(repo, "new").packs_read == 1  # only the new backup's pack
    assert verify(repo, "all").packs_read == packs + 1


def test_verify_finds_a_missing_pack_and_a_damaged_index(tmp_path):
    disk = tmp_path / "disk.raw"
    make_disk(disk)
    repo = new_repo(tmp_path / "repo")
    snap = backup(repo, "web", disk)
    victim = repo.backend.list(PACKS)[0]
    os.unlink(os.path.join(str(tmp_path / "repo"), victim.name))
    report = verify(repo, "all")
    assert any("missing from the repository" in p and snap.id in p for p in report.problems)
    with open(os.path.join(str(tmp_path / "repo"), snap.disks[0]["index"]), "r+b") as f:
        f.write(b"X")
    assert any("index is damaged" in p for p in verify(repo, "new").problems)
    (tmp_path / "repo" / "snapshots" / "20990101T000000Z-00000000").write_bytes(b"\0garbage")
    assert any("20990101T000000Z-00000000: damaged" in p for p in verify(repo, "new").problems)


def test_repository_refuses_garbage_a_newer_version_and_a_second_init(tmp_path):
    with pytest.raises(RepoError, match="no hotvcb repository"):
        Repository.open(LocalBackend(str(tmp_path)))
    new_repo(tmp_path / "repo")
    with pytest.raises(RepoError, match="already exists"):
        new_repo(tmp_path / "repo")
    cfg = tmp_path / "repo" / "config"
    cfg.write_text(cfg.read_text().replace('"version": 1', '"version": 7'))
    with pytest.raises(RepoError, match="newer hotvcb"):
        Repository.open(LocalBackend(str(tmp_path / "repo")))
    cfg.write_text("garbage")
    with pytest.raises(RepoError, match="damaged"):
        Repository.open(LocalBackend(str(tmp_path / "repo")))


def test_prune_then_gc_frees_what_only_dropped_backups_needed_after_the_grace_period(tmp_path):
    disk = tmp_path / "disk.raw"
    make_disk(disk)
    repo = new_repo(tmp_path / "repo")
    snaps = []
    for i in range(3):
        snaps.append(backup(repo, "web", disk, when=datetime.datetime(2026, 11, 28 + i, 21)))
        if i < 2:
            scatter(disk, 40, seed=10 + i)
    make_disk(tmp_path / "gone.raw", size=8 * MiB, seed=9)
    gone = backup(repo, "gone", tmp_path / "gone.raw")  # a VM whose chunks no other backup shares
    decisions = prune.plan(repo, {"last": 1}, vm="web", select=keep_last)
    assert {d.snapshot.id: d.kept for d in decisions} == {s.id: s is snaps[2] for s in snaps}
    before = sum(i.size for i in repo.backend.list(PACKS))
    report = prune.prune(repo, decisions + [prune.Decision(gone, False, None)])
    assert [s.id for s in repo.snapshots()] == [snaps[2].id]
    assert report.packs_condemned == 0  # packs younger than the grace period may belong to a running backup
    age(tmp_path / "repo", 3600)
    assert gc.collect(repo).packs_condemned > 0
    assert sum(i.size for i in repo.backend.list(PACKS)) >= before  # marked, not deleted yet (live chunks copied)
    age(tmp_path / "repo", 3600)
    report = gc.collect(repo)
    assert report.packs_deleted > 0
    after = sum(i.size for i in repo.backend.list(PACKS))
    assert after <= before - gone.disks[0]["new_bytes"]
    referenced = set(repo.references(repo.snapshots()))
    for info in repo.backend.list(PACKS):  # what is left is mostly live: garbage waits only below the repack share
        blobs = repo.pack_blobs(info.name, info.size)
        assert sum(b.digest not in referenced for b in blobs) < gc.REPACK_SHARE * len(blobs)
    assert verify(repo, "all").ok
    assert same(restore(repo, snaps[2], tmp_path / "kept.raw"), disk)
    with pytest.raises(RepoError, match="at least one"):
        prune.plan(repo, {"last": 0}, select=keep_last)


def test_gc_never_deletes_a_chunk_that_a_backup_running_across_the_mark_reuses(tmp_path):
    disk = tmp_path / "disk.raw"
    make_disk(disk)
    repo = new_repo(tmp_path / "repo")
    old = backup(repo, "web", disk)
    prune.prune(repo, [prune.Decision(old, False, None)])
    age(tmp_path / "repo", 3600)
    running = BackupWriter(repo, "web")  # loaded the chunk map: every chunk is there, none will be stored
    assert gc.collect(repo).packs_condemned > 0  # GC marks them: nothing references them yet
    running.add_disk("disk.raw", str(disk))
    assert running.disks[0]["new_chunks"] == 0
    snap = running.commit()
    age(tmp_path / "repo", 3600)
    report = gc.collect(repo)
    assert report.packs_deleted > 0 and report.chunks_copied > 0
    assert same(restore(repo, snap, tmp_path / "out.raw"), disk)
    assert verify(repo, "all").ok


def test_a_backup_that_starts_after_the_mark_stores_condemned_chunks_again(tmp_path):
    disk = tmp_path / "disk.raw"
    make_disk(disk)
    repo = new_repo(tmp_path / "repo")
    prune.prune(repo, [prune.Decision(backup(repo, "web", disk), False, None)])
    age(tmp_path / "repo", 3600)
    assert gc.collect(repo).packs_condemned > 0
    snap = backup(repo, "web", disk)
    assert snap.disks[0]["new_chunks"] == snap.disks[0]["chunks"]  # reuses nothing GC has condemned
    age(tmp_path / "repo", 3600)
    report = gc.collect(repo)
    assert report.packs_deleted > 0 and report.chunks_copied == 0
    assert same(restore(repo, snap, tmp_path / "out.raw"), disk)


def test_a_backup_slower_than_the_repository_limit_is_not_recorded(tmp_path):
    disk = tmp_path / "disk.raw"
    make_disk(disk, size=4 * MiB)
    repo = new_repo(tmp_path / "repo")
    w = BackupWriter(repo, "web")
    w.add_disk("disk.raw", str(disk))
    w.started -= repo.config.backup_limit + 1
    with pytest.raises(RepoError, match="backup limit"):
        w.commit()
    assert repo.snapshots() == []


def test_a_disk_whose_pack_could_not_be_written_never_lends_its_chunks_to_the_next(tmp_path):
    disk = tmp_path / "disk.raw"
    make_disk(disk, size=4 * MiB)

    class FullOnce(LocalBackend):
        failed = False

        def put_new_file(self, name, upload):
            if name.startswith(PACKS) and not self.failed:
                self.failed = True
                upload.discard()
                raise RepoError("cannot write %s: No space left on device" % name)
            return super().put_new_file(name, upload)

    new_repo(tmp_path / "repo")
    repo = Repository.open(FullOnce(str(tmp_path / "repo")))
    w = BackupWriter(repo, "web")
    with pytest.raises(RepoError, match="No space"):
        w.add_disk("a.raw", str(disk))
    w.add_disk("b.raw", str(disk))  # the same content: the chunks of the lost pack must be stored again
    snap = w.commit()
    assert [d["name"] for d in snap.disks] == ["b.raw"]
    assert same(restore(repo, snap, tmp_path / "out.raw"), disk)
    assert verify(repo, "all").ok


def test_first_use_creates_the_repository_only_in_an_existing_folder_that_holds_nothing_else(tmp_path):
    from hotvcb.jobs.repo_backup import open_repository

    with pytest.raises(RepoError, match="does not exist"):
        open_repository(str(tmp_path / "unmounted" / "repo"))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(RepoError, match="something other"):
        open_repository(str(tmp_path / "busy"))
    (tmp_path / "racing" / "tmp").mkdir(parents=True)  # another host is writing its config right now
    first = open_repository(str(tmp_path / "racing"))
    assert open_repository(str(tmp_path / "racing")).config.id == first.config.id


def _record(n, vm="web", host="", system=None, uuid=""):
    record = {"vm": vm, "host": host, "vm_uuid": uuid}
    if system is not None:  # records written before host_system lack the key
        record["host_system"] = system
    return Snapshot("s%d" % n, vm, datetime.datetime(2026, 1, n + 1), [], [], record)


def test_a_uuidless_vms_backups_are_one_vm_across_reboots_and_an_upgrade():
    """A host is known by either id (records.machines): its host id is new after each reboot (/var/run),
    its system id is recorded only since the upgrade; backups linked by one id are one VM's, in order."""
    old = _record(0, host="aaaa")  # before the upgrade: host id only
    linked = _record(1, host="aaaa", system="esx-1")  # upgraded, same boot
    rebooted = _record(2, host="bbbb", system="esx-1")  # after a reboot: new host id, same system id
    other = _record(3, host="cccc", system="esx-2")  # another host's `web`
    named = _record(4, host="bbbb", system="esx-1", uuid="42 00")  # a VM with a uuid is its own
    groups = sorted(machines([old, linked, rebooted, other, named]).values(), key=lambda g: g[0].id)
    assert [[s.id for s in g] for g in groups] == [["s0", "s1", "s2"], ["s3"], ["s4"]]
    assert rebooted.of_vm("web", "", "dddd", "esx-1") and old.of_vm("web", "", "aaaa", "esx-1")
    assert not other.of_vm("web", "", "bbbb", "esx-1")
