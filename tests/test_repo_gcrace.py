"""GC, prune, verify and restore beside other hosts' work on one repository (docs/repository.md "Garbage
collection and concurrency", "Verify", "Restore"): a damage record another host's verify writes during a GC,
a backup pruned between GC reading its record and its index, a restore whose chunk map a sweep made stale,
a pack deleted under a verify by no sweep, a restore waiting out the settle time for a pack gone for good,
and a hand-edited mark naming what is no pack. Through the library's API, with backends that do the other
host's step at the moment it hurts."""

import os
import shutil
import signal
import threading
import time

import pytest
from repotool import HOUR, MiB, age, backup, cli, corrupt_one_chunk, first_pack, make_disk, new_repo, same, write_mark
from test_repo_gcdup import copies, store_twice_at_once

from hotvcb import interrupt
from hotvcb.errors import Interrupted, RepoError
from hotvcb.repo import gc
from hotvcb.repo.backend import LocalBackend, NotFound
from hotvcb.repo.reader import read_file, restore_disk
from hotvcb.repo.chunks import BadChunk
from hotvcb.repo.repository import CONDEMNED, DAMAGED, PACKS, SNAPSHOTS, Repository
from hotvcb.repo.verify import verify



@pytest.fixture
def repo_disk(tmp_path):
    disk = tmp_path / "disk.raw"
    make_disk(disk, size=4 * MiB, regions=4)
    repo = new_repo(tmp_path / "repo")
    return repo, disk


class Beside(LocalBackend):
    """A backend that runs `act` (another host's step) once, when `when(call, name)` first says so."""

    def __init__(self, root, when, act):
        super().__init__(root)
        self.when, self.act = when, act

    def _maybe(self, call, name):
        if self.act is not None and self.when(call, name):
            act, self.act = self.act, None
            act()

    def list(self, prefix):
        self._maybe("list", prefix)
        return super().list(prefix)

    def get(self, name, offset=0, length=None):
        data = super().get(name, offset, length)
        self._maybe("get", name)
        return data


def test_a_damage_record_written_during_gc_for_a_pack_written_meanwhile_stays(tmp_path, repo_disk):
    repo, disk = repo_disk
    backup(repo, "web", disk)
    age(tmp_path / "repo", HOUR)
    other = tmp_path / "other.raw"
    make_disk(other, size=4 * MiB, seed=9, regions=4)

    def other_host():  # after GC listed the packs: a backup commits new ones, a verify finds one damaged
        mail = backup(repo, "mail", other)
        corrupt_one_chunk(tmp_path / "repo", repo, mail)
        assert not verify(repo, "all").ok
    racing = Repository(Beside(str(tmp_path / "repo"), lambda call, name: name == DAMAGED, other_host), repo.config)
    gc.collect(racing)
    records = [i.name for i in repo.backend.list(DAMAGED)]
    assert len(records) == 1 and repo.damaged(), "the record of a pack GC did not list was deleted"
    (pack,) = repo.damaged()
    assert repo.backend.stat(pack) is not None
    age(tmp_path / "repo", HOUR)
    gc.collect(repo)  # the pack is listed now: its record stays while the pack does
    assert [i.name for i in repo.backend.list(DAMAGED)] == records
    repo.backend.delete(pack)  # once the pack is gone, and the record is old, GC deletes it
    age(tmp_path / "repo", HOUR)
    gc.collect(repo)
    assert repo.backend.list(DAMAGED) == []


def test_a_backup_pruned_between_gc_reading_its_record_and_its_index_is_skipped(tmp_path, repo_disk):
    repo, disk = repo_disk
    old = backup(repo, "web", disk)
    new = backup(repo, "web", disk)

    def other_prune():  # another host prunes the record GC just read, then its index
        repo.backend.delete(SNAPSHOTS + old.id)
        for d in old.disks:
            repo.backend.delete(d["index"])
    racing = Repository(Beside(str(tmp_path / "repo"), lambda call, name: name == SNAPSHOTS + old.id, other_prune),
                        repo.config)
    gc.collect(racing)
    assert [s.id for s in repo.snapshots()] == [new.id]
    out = tmp_path / "restored.raw"
    restore_disk(repo, new, new.disks[0], str(out))
    assert same(out, disk)


def test_an_index_missing_beside_its_record_still_stops_gc(tmp_path, repo_disk):
    repo, disk = repo_disk
    snap = backup(repo, "web", disk)
    repo.backend.delete(snap.disks[0]["index"])
    packs = [i.name for i in repo.backend.list(PACKS)]
    age(tmp_path / "repo", HOUR)
    with pytest.raises(RepoError, match=snap.disks[0]["index"]):
        gc.collect(repo)
    assert [i.name for i in repo.backend.list(PACKS)] == packs and repo.backend.list(CONDEMNED) == []


def test_a_restore_finds_chunks_moved_since_its_map_was_built(tmp_path, repo_disk):
    """What a sweep does to a restore's map, done by hand: the packs' chunks now lie under other names."""
    repo, disk = repo_disk
    snap = backup(repo, "web", disk)
    stale = repo.chunk_map()
    root = str(tmp_path / "repo")
    packs = repo.backend.list(PACKS)
    # a folder none of them lies in: a pack already under it would not move, and the restore would
    # have no miss to bring the map up to date with (1 in 256 per pack, as a pack's name is its hash)
    to = min("%02x" % n for n in range(256) if "%02x" % n not in {i.name.split("/")[1] for i in packs})
    for info in packs:
        moved = os.path.join(root, "packs", to, info.name.rsplit("/", 1)[-1])
        os.makedirs(os.path.dirname(moved), exist_ok=True)
        shutil.move(os.path.join(root, info.name), moved)
    assert read_file(repo, snap, "web.vmx", dict(stale)) == b'displayName = "web"\n'
    out = tmp_path / "restored.raw"
    restore_disk(repo, snap, snap.disks[0], str(out), chunk_map=stale)
    assert same(out, disk)
    assert {loc.pack.split("/")[1] for loc in stale.values()} == {to}  # brought up to date for the next disk
    out.unlink()
    restore_disk(repo, snap, snap.disks[0], str(out), chunk_map={})  # a map built before the packs were seen
    assert same(out, disk)


def test_a_restore_whose_pack_went_with_no_copy_elsewhere_names_the_chunk(tmp_path, repo_disk):
    repo, disk = repo_disk
    snap = backup(repo, "web", disk)
    stale = repo.chunk_map()
    digest = repo.disk_index(snap.disks[0]).entries[0][1]
    pack = stale[digest].pack
    repo.backend.delete(pack)
    out = tmp_path / "restored.raw"
    with pytest.raises(BadChunk, match="in no pack: missing from the repository; needed by web") as err:
        restore_disk(repo, snap, snap.disks[0], str(out), chunk_map=stale)
    assert stale[err.value.digest].pack == pack  # one of the chunks that lay only there
    assert not out.exists()


class DeletedUnmarked(LocalBackend):
    """Someone deletes `pack`, with no GC mark naming it (by hand: no sweep does that), once this host has
    listed the packs: before verify reads its table, or (`whole`) as verify comes to read it whole."""

    def __init__(self, root, pack, whole):
        super().__init__(root)
        self.pack, self.whole, self.armed = pack, whole, True

    def _delete_once(self):
        if self.armed:
            self.armed = False
            self.delete(self.pack)

    def list(self, prefix):
        out = super().list(prefix)
        if prefix == PACKS and not self.whole:
            self._delete_once()
        return out

    def get(self, name, offset=0, length=None):
        if name == self.pack and length is None and self.whole:
            self._delete_once()
        return super().get(name, offset, length)


@pytest.mark.parametrize("whole", [False, True])
def test_a_pack_deleted_under_a_verify_by_no_sweep_is_damage_when_it_took_chunks_with_it(tmp_path, repo_disk,
                                                                                         whole):
    repo, disk = repo_disk
    snap = backup(repo, "web", disk)
    pack = first_pack(repo, snap)
    report = verify(Repository(DeletedUnmarked(str(tmp_path / "repo"), pack, whole), repo.config), "all")
    assert repo.backend.stat(pack) is None
    assert any(p.startswith("%s is missing from the repository" % pack) for p in report.problems), report.problems
    assert any("in no pack: missing from the repository; needed by web" in p for p in report.problems)


@pytest.mark.parametrize("whole", [False, True])
def test_a_duplicate_deleted_under_a_verify_by_no_sweep_is_damage_only_where_its_table_was_not_read(tmp_path,
                                                                                                     whole):
    """A pack gone whose chunks verify saw in it all lie in packs still there took nothing with it; one gone
    before its table was read, and named by no mark, may have held anything: that is reported."""
    disk = tmp_path / "disk.raw"
    make_disk(disk, size=4 * MiB, regions=4)
    repo = new_repo(tmp_path / "repo")
    store_twice_at_once(repo, disk)
    pack = sorted(copies(repo).values())[0][0]  # every chunk of every pack has its twin's copy too
    report = verify(Repository(DeletedUnmarked(str(tmp_path / "repo"), pack, whole), repo.config), "all")
    assert repo.backend.stat(pack) is None
    if whole:
        assert report.ok, report.problems
    else:
        assert [p for p in report.problems if pack in p] == [p for p in report.problems], report.problems
        assert len(report.problems) == 1 and "missing from the repository" in report.problems[0]


class CountingLists(LocalBackend):
    """Notes when this host lists packs/ (calling `on_list` each time) and when a read finds an object gone."""

    def __init__(self, root, on_list=lambda: None):
        super().__init__(root)
        self.on_list, self.listed, self.missed = on_list, [], []

    def list(self, prefix):
        if prefix == PACKS:
            self.listed.append(time.monotonic())
            self.on_list()
        return super().list(prefix)

    def get(self, name, offset=0, length=None):
        try:
            return super().get(name, offset, length)
        except NotFound:
            self.missed.append(time.monotonic())
            raise


def gone_for_good(tmp_path, settle):
    """A backup, a chunk map built before the pack holding its first chunks was deleted (no copy elsewhere)."""
    disk = tmp_path / "disk.raw"
    make_disk(disk, size=4 * MiB, regions=4)
    repo = new_repo(tmp_path / "repo", settle=settle)
    snap = backup(repo, "web", disk)
    stale = repo.chunk_map()
    repo.backend.delete(first_pack(repo, snap))
    return repo, snap, stale


def test_a_restore_whose_pack_is_gone_for_good_looks_again_at_the_settle_time_then_names_the_chunk(tmp_path):
    """A listing may lag by the settle time: the restore lists once at once and once more when that has passed
    since the pack was found gone (none in between: the pause doubles from 1 s), then gives up. (The bound
    on when is a lower one, kept by a sleep: no machine's speed can break it.)"""
    repo, snap, stale = gone_for_good(tmp_path, settle=1)
    counting = Repository(CountingLists(str(tmp_path / "repo")), repo.config)
    out = tmp_path / "restored.raw"
    with pytest.raises(BadChunk, match="in no pack: missing from the repository; needed by web"):
        restore_disk(counting, snap, snap.disks[0], str(out), chunk_map=stale, workers=1)
    listed, missed = counting.backend.listed, counting.backend.missed
    assert len(listed) == 2 and listed[1] >= missed[0] + repo.config.settle, (listed, missed)
    assert not out.exists()


def test_a_chunk_missing_with_no_gc_at_work_is_named_at_once_not_after_the_settle_time(tmp_path):
    """A pack deleted before the restore built its map, with no GC lock or mark about: nothing can have moved
    the chunk, so waiting out a (here hour-long) settle time in silence would only delay the bad news."""
    repo, snap, _stale = gone_for_good(tmp_path, settle=3600)
    counting = Repository(CountingLists(str(tmp_path / "repo")), repo.config)
    out = tmp_path / "restored.raw"
    with pytest.raises(BadChunk, match="in no pack: missing from the repository; needed by web"):
        restore_disk(counting, snap, snap.disks[0], str(out), workers=1)
    assert len(counting.backend.listed) == 2 and not out.exists(), counting.backend.listed


def test_a_restore_waiting_for_a_lagging_listing_stops_on_sigterm(tmp_path):
    """SIGTERM comes as the restore says it waits, and the restore goes on only once the signal is recorded
    (interrupt.pending), so the pause begins with it pending however slowly the signal lands: the pause must
    end at once, before the restore lists the packs again. Were the signal ignored, the restore would list
    again after 1 s, 2 s ... and give up after the settle time with BadChunk, not Interrupted."""
    repo, snap, stale = gone_for_good(tmp_path, settle=30)
    said, unhandled = [], []

    def say(line):
        said.append(line)
        # the signal taken by this worker thread, as the kernel may hand a process's signal to whichever
        # thread returns from a syscall first: Python runs the handler only in the main thread
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)
        deadline = time.monotonic() + 60  # a bound for a test gone wrong, never a timing the test relies on
        while not interrupt.pending():
            if time.monotonic() > deadline:  # the main thread never ran the handler while this worker waited
                unhandled.append(line)
                return
            time.sleep(0.01)

    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    interrupt.install()
    try:
        counting = Repository(CountingLists(str(tmp_path / "repo")), repo.config)
        out = tmp_path / "restored.raw"
        with pytest.raises(Interrupted):
            restore_disk(counting, snap, snap.disks[0], str(out), chunk_map=stale, workers=1, say=say)
    finally:
        interrupt.reset()
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    assert not unhandled, "the main thread waited on the worker's lock and never ran the signal's handler"
    assert len(said) == 1 and said[0].startswith("waiting up to"), said
    assert len(counting.backend.listed) == 1 and not out.exists()


def test_a_mark_naming_a_record_beside_a_pack_sweeps_only_the_pack_and_says_so(tmp_path, repo_disk):
    repo, disk = repo_disk
    snap = backup(repo, "web", disk)
    pack = repo.backend.list(PACKS)[0].name
    mark = write_mark(tmp_path / "repo", packs=[SNAPSHOTS + snap.id, pack, "packs/../config"])
    age(tmp_path / "repo", HOUR)
    r = cli("prune", "--repo", tmp_path / "repo", "--keep-last", 100)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ignoring %s in %s: GC condemns only packs" % (SNAPSHOTS + snap.id, mark) in r.stdout, r.stdout
    assert repo.backend.stat(pack) is None and repo.backend.stat(mark) is None  # its chunks copied out first
    assert [s.id for s in repo.snapshots()] == [snap.id] and repo.backend.stat("config") is not None
    assert verify(repo, "all").ok
    out = tmp_path / "restored.raw"
    restore_disk(repo, snap, snap.disks[0], str(out))
    assert same(out, disk)
