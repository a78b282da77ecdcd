"""An outside tester's attacks on GC racing everything else on one repository (docs/repository.md "Garbage
collection and concurrency", "Restore", "Verify"): many backup, prune, restore and verify processes at once,
prune SIGKILLed at seeded random moments, a restore whose pack vanishes and comes back, an NFS-like listing
that lags, `verify --new/--sample` after GC, keep rules dropping backups with damage records, and SIGTERM /
SIGINT of a restore while a prune sweeps. A test marked xfail(strict) is a defect the current code has."""

import os
import random
import shutil
import signal
import subprocess
import time

import pytest
from repotool import PYTHON, ROOT, MiB, age, backup, cli, corrupt_chunk, make_disk, new_repo, same, scatter
from test_repo_gcdup import copies, store_twice_at_once

from hotvcb.repo import gc
from hotvcb.repo.backend import LocalBackend, NotFound
from hotvcb.repo.reader import restore_disk
from hotvcb.repo.repository import DAMAGED, PACKS, SNAPSHOTS, VERIFIED, Repository
from hotvcb.repo.verify import verify
from hotvcb.repo.writer import BackupWriter

TOOL = os.path.join(ROOT, "tests", "repotool.py")
HOUR = 3600  # past the test repositories' grace period


def popen_cli(*args):
    return subprocess.Popen([PYTHON, "-m", "hotvcb"] + [str(a) for a in args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))


def popen_tool(*args):
    env = dict(os.environ)
    env.pop("HOTVCB_CRASH_AT", None)
    return subprocess.Popen([PYTHON, TOOL] + [str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def finish(proc, timeout=120):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def gc_refused(rc, err):
    return rc == 1 and "another garbage collection" in err


def restore_all_by_cli(tmp_path, repo_path, sources):
    """Every backup the repository lists, restored by `hotvcb restore --repo`, equal to what it was taken of."""
    repo = Repository.open(LocalBackend(str(repo_path)))
    snaps = repo.snapshots()
    assert snaps
    for snap in snaps:
        to = tmp_path / ("check-%s" % snap.id)
        r = cli("restore", "--repo", repo_path, snap.id, "--to", to)
        assert r.returncode == 0, r.stdout + r.stderr
        (disk,) = [d["name"] for d in snap.disks]
        assert same(to / disk, sources[snap.id]), snap
        shutil.rmtree(str(to))
    return snaps


def clean_state(repo_path):
    """After GC has run twice: one verify that finds nothing, no mark naming a pack that is gone, no upload."""
    repo = Repository.open(LocalBackend(str(repo_path)))
    r = cli("verify", "--repo", repo_path)
    assert r.returncode == 0, r.stdout + r.stderr
    packs = {i.name for i in repo.backend.list(PACKS)}
    assert set(repo.condemned()) <= packs
    assert repo.backend.stat("locks/gc") is None
    assert os.listdir(os.path.join(str(repo_path), "tmp")) == []


# --- many processes at once ----------------------------------------------------------------------------------

def test_backups_prunes_restore_and_verify_all_at_once_rounds_then_everything_restores(tmp_path):
    """Per round: 4 backup processes (two of one disk: duplicates), 2 prunes, a restore and a verify of one
    repository at once, on a repository aged so that every prune's GC marks and sweeps."""
    repo_path = tmp_path / "repo"
    repo = new_repo(repo_path)
    rnd = random.Random(4711)
    disks = {}
    for n, vm in enumerate(("web", "mail", "db")):
        disks[vm] = tmp_path / ("%s.raw" % vm)
        make_disk(disks[vm], size=10 * MiB, seed=n + 1, regions=10)
    sources = {}  # backup id -> a copy of the disk as it was backed up

    for vm in disks:
        snap_id = backup(repo, vm, disks[vm]).id
        sources[snap_id] = tmp_path / ("src-%s.raw" % snap_id)
        shutil.copyfile(str(disks[vm]), str(sources[snap_id]))
    for rnd_no in range(3):
        for vm in disks:
            scatter(disks[vm], 8, seed=rnd.randrange(1 << 30))
        snapshot = {vm: tmp_path / ("round%d-%s.raw" % (rnd_no, vm)) for vm in disks}
        for vm in disks:
            shutil.copyfile(str(disks[vm]), str(snapshot[vm]))
        age(repo_path, HOUR)
        target = repo.snapshots(vm="mail")[-1]  # kept by keep-last 2 after this round's one mail backup
        procs = [("backup", vm, popen_tool("backup", repo_path, vm, snapshot[vm])) for vm in disks]
        procs.append(("backup", "web", popen_tool("backup", repo_path, "web", snapshot["web"])))  # duplicates
        procs += [("prune", "", popen_cli("prune", "--repo", repo_path, "--keep-last", 2)) for _ in range(2)]
        procs.append(("restore", "", popen_cli("restore", "--repo", repo_path, target.id, "--to",
                                               tmp_path / ("out%d" % rnd_no))))
        procs.append(("verify", "", popen_cli("verify", "--repo", repo_path)))
        results = [(kind, vm) + finish(p) for kind, vm, p in procs]
        for kind, vm, rc, out, err in results:
            if kind == "backup":
                assert rc == 0, (out, err)
                sources[out.strip()] = snapshot[vm]
            elif kind == "prune":
                assert rc == 0 or gc_refused(rc, err), (out, err)
            elif kind == "restore":
                assert rc == 0, (out, err)
                assert same(tmp_path / ("out%d" % rnd_no) / target.disks[0]["name"], sources[target.id])
        assert 0 in [rc for kind, _vm, rc, _o, _e in results if kind == "prune"], results
        assert repo.backend.stat("locks/gc") is None
        # the concurrent verify finds no damage, not even in the packs a sweep deleted under it
        rc, out, err = [(rc, o, e) for kind, _vm, rc, o, e in results if kind == "verify"][0]
        assert rc == 0 and "DAMAGED" not in out + err, out + err
    for _ in range(2):
        age(repo_path, HOUR)
        r = cli("prune", "--repo", repo_path, "--keep-last", 2)
        assert r.returncode == 0, r.stdout + r.stderr
    clean_state(repo_path)
    snaps = restore_all_by_cli(tmp_path, repo_path, sources)
    assert sorted(s.vm for s in snaps) == ["db", "db", "mail", "mail", "web", "web"]
    assert all(len(where) == 1 for where in copies(repo).values())  # the duplicates went


class SweepBeside(LocalBackend):
    """Runs `act` (another host's prune) once, right after this host first lists `prefix`."""

    def __init__(self, root, prefix, act):
        super().__init__(root)
        self.prefix, self.act = prefix, act

    def list(self, prefix):
        out = super().list(prefix)
        if prefix == self.prefix and self.act is not None:
            act, self.act = self.act, None
            act()
        return out


@pytest.fixture
def twins(tmp_path):
    """Two writers stored one disk at once, and a GC marked the duplicates: the next GC sweeps them."""
    disk = tmp_path / "disk.raw"
    make_disk(disk, size=4 * MiB, regions=4)
    repo = new_repo(tmp_path / "repo")
    store_twice_at_once(repo, disk)
    age(tmp_path / "repo", HOUR)
    gc.collect(repo)
    age(tmp_path / "repo", HOUR)
    assert repo.condemned()
    return repo, disk


def test_a_verify_beside_a_sweep_reports_no_problem_for_the_packs_swept(tmp_path, twins):
    repo, disk = twins
    swept = set(repo.condemned())

    def other_host_prunes():
        assert gc.collect(repo).packs_deleted == len(swept)
    racing = Repository(SweepBeside(str(tmp_path / "repo"), PACKS, other_host_prunes), repo.config)
    report = verify(racing, "all")
    assert not swept & {i.name for i in repo.backend.list(PACKS)}  # the sweep did run under the verify
    assert report.ok, report.problems  # nothing is damaged: every chunk a backup needs is where the map says


def test_a_verify_beside_a_sweep_still_finds_real_damage(tmp_path, twins):
    """What a fix of the defect above must keep: a pack that is still there and damaged is reported."""
    repo, disk = twins
    keep = sorted(set(i.name for i in repo.backend.list(PACKS)) - set(repo.condemned()))[0]
    digest = repo.pack_blobs(keep, repo.backend.stat(keep).size)[0].digest
    corrupt_chunk(tmp_path / "repo", repo, keep, digest)
    racing = Repository(SweepBeside(str(tmp_path / "repo"), PACKS, lambda: gc.collect(repo)), repo.config)
    report = verify(racing, "all")
    assert any(digest.hex() in p and keep in p for p in report.problems), report.problems
    assert repo.damaged() == {keep: {digest}}


# --- PackGone: a pack that vanishes and comes back, a listing that lags ----------------------------------------

class Blip(LocalBackend):
    """A pack's chunk read finds it gone once, and it is back at once: a pack moved away and back by an admin
    (or re-created under its name from a copy), an NFS server's transient ENOENT."""

    def __init__(self, root, pack):
        super().__init__(root)
        self.pack, self.blipped = pack, False

    def get(self, name, offset=0, length=None):
        if name == self.pack and length is not None and offset < 4096 and not self.blipped:
            self.blipped = True
            raise NotFound("%s is missing from the repository" % name)
        return super().get(name, offset, length)


def test_a_restore_rereads_a_pack_that_went_and_came_back_under_its_name(tmp_path):
    disk = tmp_path / "disk.raw"
    make_disk(disk, size=4 * MiB, regions=4)
    repo = new_repo(tmp_path / "repo")
    snap = backup(repo, "web", disk)
    mapped = repo.chunk_map()
    first = mapped[repo.disk_index(snap.disks[0]).entries[0][1]].pack
    blip = Repository(Blip(str(tmp_path / "repo"), first), repo.config)
    out = tmp_path / "restored.raw"
    restore_disk(blip, snap, snap.disks[0], str(out), chunk_map=mapped, workers=1)
    assert blip.backend.blipped and same(out, disk)


def test_a_restore_whose_pack_stays_gone_gives_up_naming_the_chunk_and_does_not_loop(tmp_path):
    """The other side of the retry: a pack gone for good with no copy elsewhere ends the restore, each pack's
    rebuild once (a restore with a map rebuilt for every chunk would list the packs again and again)."""
    disk = tmp_path / "disk.raw"
    make_disk(disk, size=8 * MiB, regions=8)
    repo = new_repo(tmp_path / "repo", pack_size=MiB)
    snap = backup(repo, "web", disk)
    mapped = repo.chunk_map()
    for info in repo.backend.list(PACKS)[::2]:
        repo.backend.delete(info.name)
    lists = []

    class Counting(LocalBackend):
        def list(self, prefix):
            lists.append(prefix)
            return super().list(prefix)
    counting = Repository(Counting(str(tmp_path / "repo")), repo.config)
    out = tmp_path / "restored.raw"
    with pytest.raises(Exception, match="missing from the repository; needed by web"):
        restore_disk(counting, snap, snap.disks[0], str(out), chunk_map=mapped)
    assert not out.exists()
    assert lists.count(PACKS) <= len(mapped) + 1, lists  # bounded: once per gone pack, once for a lacking chunk
    assert lists.count(PACKS) <= len(repo.backend.list(PACKS)) * 2 + 2, lists


class LaggingPacks(LocalBackend):
    """An NFS client's listing of packs/ as it was up to `lag` seconds ago (attribute caching), which the
    storage contract allows up to settle_seconds. Reads of named objects are never stale."""

    def __init__(self, root, lag):
        super().__init__(root)
        self.lag, self.seen = lag, None

    def list(self, prefix):
        if prefix != PACKS:
            return super().list(prefix)
        if self.seen is None or time.monotonic() - self.seen[0] >= self.lag:
            self.seen = (time.monotonic(), super().list(prefix))
        return self.seen[1]


def test_a_restore_across_a_sweep_with_a_listing_that_lags_within_settle_keeps_working(tmp_path):
    disk = tmp_path / "disk.raw"
    make_disk(disk, size=4 * MiB, regions=4)
    repo = new_repo(tmp_path / "repo", settle=1)
    store_twice_at_once(repo, disk)
    writer = BackupWriter(repo, "late")  # loads the map before the mark: reuses what GC is about to condemn
    for s in repo.snapshots():
        repo.backend.delete(SNAPSHOTS + s.id)
    age(tmp_path / "repo", HOUR)
    gc.collect(repo)
    try:
        writer.add_disk("disk.raw", str(disk))
        late = writer.commit()
    finally:
        writer.abort()
    lagging = Repository(LaggingPacks(str(tmp_path / "repo"), lag=repo.config.settle), repo.config)
    mapped = lagging.chunk_map()  # the restore begins: its host's listing is now cached for `settle`
    age(tmp_path / "repo", HOUR)
    assert gc.collect(repo).chunks_copied  # the sweep copies the late backup's chunks, then deletes the packs
    out = tmp_path / "restored.raw"
    restore_disk(lagging, late, late.disks[0], str(out), chunk_map=mapped)
    assert same(out, disk)


# --- verify --new / --sample after GC -----------------------------------------------------------------------

def test_verify_new_and_sample_after_gc_read_only_what_is_there(tmp_path):
    """After a GC deleted duplicates and a damaged pack and copied chunks out: --new reads exactly the packs GC
    (or the healing backup) wrote, nothing reports a pack GC deleted, and the markers of deleted packs go."""
    disk = tmp_path / "disk.raw"
    make_disk(disk, size=6 * MiB, regions=6)
    repo_path = tmp_path / "repo"
    repo = new_repo(repo_path)
    store_twice_at_once(repo, disk)
    r = cli("verify", "--repo", repo_path)
    assert r.returncode == 0, r.stdout + r.stderr
    before = {i.name for i in repo.backend.list(PACKS)}
    assert {i.name[len(VERIFIED):] for i in repo.backend.list(VERIFIED)} == {p.rsplit("/", 1)[-1] for p in before}
    digest = repo.disk_index(repo.snapshots()[0].disks[0]).entries[0][1]
    live = repo.chunk_map()[digest].pack
    corrupt_chunk(repo_path, repo, live, digest)
    r = cli("verify", "--repo", repo_path, "--sample", 100)
    assert r.returncode != 0 and digest.hex() in r.stdout + r.stderr, r.stdout + r.stderr
    scatter(disk, 4, seed=3)
    backup(repo, "web", disk)  # the damaged chunk is not reused: stored again
    for _ in range(2):
        age(repo_path, HOUR)
        r = cli("prune", "--repo", repo_path, "--keep-last", 1)
        assert r.returncode == 0, r.stdout + r.stderr
    after = {i.name for i in repo.backend.list(PACKS)}
    assert live not in after
    assert repo.backend.list(DAMAGED) == []
    markers = {i.name[len(VERIFIED):] for i in repo.backend.list(VERIFIED)}
    assert markers <= {p.rsplit("/", 1)[-1] for p in after}  # no marker outlives its pack
    unverified = {p for p in after if p.rsplit("/", 1)[-1] not in markers}
    assert unverified == after - before
    r = cli("verify", "--repo", repo_path, "--new")
    assert r.returncode == 0, r.stdout + r.stderr
    assert {i.name[len(VERIFIED):] for i in repo.backend.list(VERIFIED)} == {p.rsplit("/", 1)[-1] for p in after}
    for share in (1, 50, 100):
        r = cli("verify", "--repo", repo_path, "--sample", share)
        assert r.returncode == 0, r.stdout + r.stderr
    r = cli("verify", "--repo", repo_path, "--new")
    assert r.returncode == 0, r.stdout + r.stderr
    out = tmp_path / "out"
    snap = repo.snapshots()[-1]
    assert cli("restore", "--repo", repo_path, snap.id, "--to", out).returncode == 0
    assert same(out / "disk.raw", disk)


# --- keep rules and damage records -----------------------------------------------------------------------------

def test_keep_rules_dropping_the_only_backup_needing_a_damaged_chunk_free_its_pack_and_record(tmp_path):
    repo_path = tmp_path / "repo"
    repo = new_repo(repo_path)
    web, mail = tmp_path / "web.raw", tmp_path / "mail.raw"
    make_disk(web, size=4 * MiB, seed=1, regions=4)
    make_disk(mail, size=4 * MiB, seed=2, regions=4)
    old_web = backup(repo, "web", web)
    old_chunks = {d for _n, d in repo.disk_index(old_web.disks[0]).entries}
    scatter(web, 40, seed=5)
    new_web = backup(repo, "web", web)
    backup(repo, "mail", mail)
    only_old = sorted(old_chunks - {d for _n, d in repo.disk_index(new_web.disks[0]).entries})
    assert only_old
    digest = only_old[0]
    pack = repo.chunk_map()[digest].pack
    corrupt_chunk(repo_path, repo, pack, digest)
    assert cli("verify", "--repo", repo_path).returncode != 0
    assert repo.damaged() == {pack: {digest}}
    age(repo_path, HOUR)
    r = cli("prune", "--repo", repo_path, "--keep-last", 1, "--keep-daily", 1, "--keep-weekly", 1)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "keeping" not in r.stdout, r.stdout  # the damaged chunk is needed by no backup kept: nothing is stuck
    assert [s.id for s in repo.snapshots(vm="web")] == [new_web.id]
    age(repo_path, HOUR)
    r = cli("prune", "--repo", repo_path, "--keep-last", 1)
    assert r.returncode == 0, r.stdout + r.stderr
    assert repo.backend.stat(pack) is None and repo.backend.list(DAMAGED) == []
    clean_state(repo_path)
    restore_all_by_cli(tmp_path, repo_path, {new_web.id: web, repo.snapshots(vm="mail")[0].id: mail})


def test_keep_rules_keeping_a_backup_whose_chunk_is_damaged_keep_its_pack_and_say_so(tmp_path):
    repo_path = tmp_path / "repo"
    repo = new_repo(repo_path)
    web = tmp_path / "web.raw"
    make_disk(web, size=4 * MiB, regions=4)
    backup(repo, "web", web)
    scatter(web, 10, seed=6)
    newest = backup(repo, "web", web)
    digest = repo.disk_index(newest.disks[0]).entries[0][1]
    pack = repo.chunk_map()[digest].pack
    corrupt_chunk(repo_path, repo, pack, digest)
    assert cli("verify", "--repo", repo_path).returncode != 0
    for _ in range(2):
        age(repo_path, HOUR)
        r = cli("prune", "--repo", repo_path, "--keep-last", 1)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "keeping %s" % pack in r.stdout and digest.hex() in r.stdout, r.stdout
    assert repo.backend.stat(pack) is not None and repo.damaged() == {pack: {digest}}
    assert [s.id for s in repo.snapshots()] == [newest.id]
    healed = backup(repo, "web", web)  # stores the damaged chunk again
    for _ in range(2):
        age(repo_path, HOUR)
        r = cli("prune", "--repo", repo_path, "--keep-last", 1)
        assert r.returncode == 0, r.stdout + r.stderr
    assert repo.backend.stat(pack) is None and repo.backend.list(DAMAGED) == []
    clean_state(repo_path)
    restore_all_by_cli(tmp_path, repo_path, {healed.id: web})


def test_a_prune_dropping_backups_beside_an_unreadable_damage_record_stops_its_gc_in_one_line(tmp_path):
    """An unreadable damaged/ record stops GC (it cannot tell which copies are sound): the prune drops what its
    rules drop (the records go before GC runs), then stops in one line, gives the lock back, and what it kept
    restores; once the record is removed by hand, the next prune finishes."""
    repo_path = tmp_path / "repo"
    repo = new_repo(repo_path)
    web = tmp_path / "web.raw"
    make_disk(web, size=4 * MiB, regions=4)
    backup(repo, "web", web)
    scatter(web, 10, seed=6)
    newest = backup(repo, "web", web)
    record = DAMAGED + repo.backend.list(PACKS)[0].name.rsplit("/", 1)[1] + ".0"  # of a pack there (one of a
    repo.backend.put_new(record, b"\x00 not json")  # pack gone stops nothing: docs/repository.md "Damaged chunks")
    r = cli("prune", "--repo", repo_path, "--keep-last", 1)
    assert r.returncode == 1 and DAMAGED in r.stderr, r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    assert repo.backend.stat("locks/gc") is None
    assert newest.id in [s.id for s in repo.snapshots()]
    out = tmp_path / "out"
    assert cli("restore", "--repo", repo_path, newest.id, "--to", out).returncode == 0
    assert same(out / "web.raw", web)
    repo.backend.delete(record)
    for _ in range(2):
        age(repo_path, HOUR)
        r = cli("prune", "--repo", repo_path, "--keep-last", 1)
        assert r.returncode == 0, r.stdout + r.stderr
    clean_state(repo_path)


# --- prune SIGKILLed at random moments -------------------------------------------------------------------------

def test_prune_sigkilled_at_seeded_random_moments_then_verify_backup_and_restore_work(tmp_path):
    rnd = random.Random(20261202)
    repo_path = tmp_path / "repo"
    repo = new_repo(repo_path, pack_size=MiB)
    disk = tmp_path / "disk.raw"
    make_disk(disk, size=16 * MiB, regions=16)
    sources = {}

    def take():
        src = tmp_path / ("src-%d.raw" % len(sources))
        shutil.copyfile(str(disk), str(src))
        rc, out, err = finish(popen_tool("backup", repo_path, "web", src))
        assert rc == 0, err
        sources[out.strip()] = src
        return out.strip()

    take()
    killed = 0
    for _ in range(8):
        scatter(disk, 40, seed=rnd.randrange(1 << 30))
        take()
        age(repo_path, HOUR)
        proc = popen_cli("prune", "--repo", repo_path, "--keep-last", 2)
        time.sleep(rnd.uniform(0.05, 0.4))
        proc.kill()
        rc, out, err = finish(proc)
        killed += rc == -signal.SIGKILL
        assert rc in (0, -signal.SIGKILL), out + err
        r = cli("verify", "--repo", repo_path)  # a dead prune leaves nothing damaged or missing
        assert r.returncode == 0, r.stdout + r.stderr
        scatter(disk, 10, seed=rnd.randrange(1 << 30))
        newest = take()  # the next backup works (and takes the dead GC's lock over at the next prune)
        to = tmp_path / ("out-%s" % newest)
        r = cli("restore", "--repo", repo_path, newest, "--to", to)
        assert r.returncode == 0, r.stdout + r.stderr
        assert same(to / sources[newest].name, sources[newest])
        shutil.rmtree(str(to))
    print("prunes killed while running: %d of 8" % killed)
    assert killed, "no prune was killed while it ran"
    for _ in range(3):
        age(repo_path, HOUR)
        r = cli("prune", "--repo", repo_path, "--keep-last", 2)
        assert r.returncode == 0, r.stdout + r.stderr
    clean_state(repo_path)
    assert all(len(where) == 1 for where in copies(repo).values())
    referenced = set(repo.references(repo.snapshots()))
    for info in repo.backend.list(PACKS):
        assert any(b.digest in referenced for b in repo.pack_blobs(info.name, info.size)), "orphan pack left"
    assert len(restore_all_by_cli(tmp_path, repo_path, sources)) == 2


# --- a restore stopped by a signal while a prune sweeps --------------------------------------------------------

def restore_hit_while_a_prune_sweeps(tmp_path, sig):
    """A restore of two writers' twins, sent `sig` once it is writing its disk, while a prune sweeps the
    duplicates marked before: (the repository, the disk, the backup, its --to folder, the restore's result)."""
    disk = tmp_path / "disk.raw"
    make_disk(disk, size=40 * MiB, regions=40)
    repo_path = tmp_path / "repo"
    repo = new_repo(repo_path)
    store_twice_at_once(repo, disk)
    age(repo_path, HOUR)
    gc.collect(repo)  # marks one of each pair of twins: the prune below sweeps them
    age(repo_path, HOUR)
    snap = repo.snapshots()[0]
    to = tmp_path / "out"
    restore = popen_cli("restore", "--repo", repo_path, snap.id, "--to", to)
    work = tmp_path / ("out" + ".hotvcb-restoring")
    deadline = time.monotonic() + 30
    while restore.poll() is None and time.monotonic() < deadline and not (
            (work / "disk.raw").exists() and (work / "disk.raw").stat().st_blocks > 0):
        time.sleep(0.002)
    prune = popen_cli("prune", "--repo", repo_path, "--keep-last", 100)
    restore.send_signal(sig)
    result = finish(restore)
    prc, pout, perr = finish(prune)
    assert prc == 0, pout + perr
    assert not repo.condemned() and all(len(w) == 1 for w in copies(repo).values())  # the sweep ran
    if result[0] == 0 or (result[0] == -sig and "Restored " in result[1]):
        # done before the signal, or done and already exiting: Python gives the default handlers back as it
        # shuts down, so a signal then ends the process by that signal after the restore said it was done
        pytest.skip("the restore ended before the signal")
    return repo_path, disk, snap, to, result


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_restore_stopped_by_a_signal_while_a_prune_sweeps_leaves_nothing_and_restores_again(tmp_path, sig):
    repo_path, disk, snap, to, (rc, out, err) = restore_hit_while_a_prune_sweeps(tmp_path, sig)
    assert rc == 2 and "interrupted" in out + err and "Traceback" not in out + err, out + err
    assert sorted(os.listdir(str(tmp_path))) == ["disk.raw", "repo"]  # no --to folder, nothing half restored
    r = cli("restore", "--repo", repo_path, snap.id, "--to", to)
    assert r.returncode == 0, r.stdout + r.stderr
    assert same(to / "disk.raw", disk)


def test_a_restore_sigkilled_while_a_prune_sweeps_is_cleared_by_the_next_restore(tmp_path):
    repo_path, disk, snap, to, (rc, out, err) = restore_hit_while_a_prune_sweeps(tmp_path, signal.SIGKILL)
    assert rc == -signal.SIGKILL and not to.exists()
    assert (tmp_path / "out.hotvcb-restoring").exists()  # what the dead restore left, with its record
    r = cli("restore", "--repo", repo_path, snap.id, "--to", to)
    assert r.returncode == 0 and "left by a restore that died" in r.stdout + r.stderr, r.stdout + r.stderr
    assert same(to / "disk.raw", disk)
    assert sorted(os.listdir(str(tmp_path))) == ["disk.raw", "out", "repo"]


# --- a nearly full repository while a sweep copies chunks out --------------------------------------------------

def test_a_sweep_that_must_copy_out_on_a_full_repository_deletes_nothing_and_finishes_later(tmp_path, tmpfs):
    """A backup reused chunks of packs GC had condemned; at the sweep they must be copied out first, and the
    small file system fills while they are: no condemned pack may go, the late backup restores, and the
    sweep finishes once there is room."""
    disk = tmp_path / "disk.raw"
    make_disk(disk, size=8 * MiB, regions=8)
    where = tmpfs("fs", "24m")
    repo_path = where / "repo"
    repo = new_repo(repo_path)
    store_twice_at_once(repo, disk)
    writer = BackupWriter(repo, "late")
    for s in repo.snapshots():
        repo.backend.delete(SNAPSHOTS + s.id)
    age(repo_path, HOUR)
    gc.collect(repo)
    try:
        writer.add_disk("disk.raw", str(disk))
        late = writer.commit()
    finally:
        writer.abort()
    condemned = set(repo.condemned())
    assert condemned == {i.name for i in repo.backend.list(PACKS)}  # every chunk lies only in condemned packs
    st = os.statvfs(str(where))
    with open(str(where / "filler"), "wb") as f:
        f.write(bytes(max(0, st.f_bavail * st.f_frsize - MiB // 2)))
    age(repo_path, HOUR)
    r = cli("prune", "--repo", repo_path, "--keep-last", 100)
    assert r.returncode == 1 and "No space left" in r.stderr, r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    assert condemned == {i.name for i in repo.backend.list(PACKS)} and set(repo.condemned()) == condemned
    assert repo.backend.stat("locks/gc") is None and os.listdir(str(repo_path / "tmp")) == []
    out = tmp_path / "late.raw"
    restore_disk(repo, late, late.disks[0], str(out))
    assert same(out, disk)
    os.unlink(str(where / "filler"))
    for _ in range(2):
        age(repo_path, HOUR)
        r = cli("prune", "--repo", repo_path, "--keep-last", 100)
        assert r.returncode == 0, r.stdout + r.stderr
    assert not condemned & {i.name for i in repo.backend.list(PACKS)}
    clean_state(repo_path)
    restore_all_by_cli(tmp_path, repo_path, {late.id: disk})
