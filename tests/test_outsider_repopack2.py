"""An outsider's attacks on the reworked repository writer and restore path (pack version 2, views of
a ring of read buffers, pwritev): disks whose data, zeros and holes sit at odd offsets, a disk that
changes size while it is read, every kind of damage to a pack of either version, a FIFO where a pack
should be, SIGKILL at odd moments, two writers at once into the old-format repository, and a
repository that fills up at every step of a backup."""

import os
import random
import shutil
import signal
import subprocess
import time

import pytest
from repotool import PYTHON, ROOT, MiB, age, backup, cli, corrupt_one_chunk, make_disk, new_repo, one_clear_line, same

from hotvcb.errors import RepoError
from hotvcb.repo.backend import LocalBackend
from hotvcb.repo.reader import restore_disk, restore_stream
from hotvcb.repo.repository import PACKS, Repository
from hotvcb.repo.verify import verify
from hotvcb.repo.writer import BackupWriter

KiB = 1024
CHUNK = 64 * KiB
TOOL = os.path.join(ROOT, "tests", "repotool.py")
DATA = os.path.join(ROOT, "tests", "data")



def rand(n, seed):
    return random.Random(seed).getrandbits(8 * n).to_bytes(n, "little") if n else b""


def text(n, seed=0):
    return b"".join(b"line %d of %d: odd offsets everywhere\n" % (i, seed) for i in range(n // 20 + 1))[:n]


# --- disks whose data / zeros / holes sit at odd offsets ------------------------------------------------


def _layout(path, kind):
    """Write a disk of `kind`; returns nothing, the file is the truth."""
    with open(str(path), "wb") as f:
        if kind == "empty":
            return
        if kind == "one-byte":
            f.write(b"x")
        elif kind == "one-zero-byte":
            f.write(b"\0")
        elif kind == "written-zeros-odd-size":
            f.write(bytes(3 * MiB + 5))
        elif kind == "all-random-odd-size":
            f.write(rand(3 * MiB + CHUNK - 1, 1))
        elif kind == "tail-only":  # a hole, then data in the last 100 bytes of a partial chunk
            f.truncate(5 * MiB + 100)
            f.seek(5 * MiB)
            f.write(rand(100, 2))
        elif kind == "mib-straddle":  # single bytes and runs just across every 1 MiB and chunk border
            f.truncate(4 * MiB + 3)
            for at in (CHUNK - 1, MiB - 1, 2 * MiB - 2, 3 * MiB - CHUNK - 1, 4 * MiB - 1):
                f.seek(at)
                f.write(b"\xa5\x5a" + text(3, at))
            f.seek(4 * MiB)
            f.write(b"end")
        elif kind == "islands-in-holes":  # 4 KiB of data inside chunks that are otherwise holes
            f.truncate(3 * MiB)
            for at in (8 * KiB, CHUNK + 60 * KiB, MiB + 4 * KiB, 2 * MiB - 4 * KiB, 3 * MiB - 4 * KiB):
                f.seek(at)
                f.write(text(4 * KiB, at))
        elif kind == "repeated-chunks":  # one chunk again and again, apart and side by side, among others
            a, b = rand(CHUNK, 3), text(CHUNK, 4)
            for i in range(64):
                f.write(a if i % 3 else (b if i % 5 else bytes(CHUNK)))
            f.write(a[:1000])
        elif kind == "zeros-before-partial-tail":
            f.write(text(MiB, 5) + bytes(CHUNK) + rand(10, 6))
        elif kind == "size-mib-minus-one":
            f.write(text(MiB - 1, 7))
        elif kind == "alternating-zero-chunks":  # written zeros every other chunk: batches of 16 with gaps
            for i in range(3 * 16 + 3):
                f.write(bytes(CHUNK) if i % 2 else text(CHUNK, i))
        else:
            raise AssertionError(kind)


KINDS = ["empty", "one-byte", "one-zero-byte", "written-zeros-odd-size", "all-random-odd-size", "tail-only",
         "mib-straddle", "islands-in-holes", "repeated-chunks", "zeros-before-partial-tail", "size-mib-minus-one",
         "alternating-zero-chunks"]


def nonzero_chunks(path):
    data = open(str(path), "rb").read()
    return sum(1 for i in range(0, len(data), CHUNK) if data[i:i + CHUNK].strip(b"\0"))


@pytest.mark.parametrize("kind", KINDS)
def test_a_disk_with_data_at_odd_offsets_restores_byte_equal_and_stores_no_zero_chunk(tmp_path, kind):
    src = tmp_path / "disk.raw"
    _layout(src, kind)
    repo = new_repo(tmp_path / "repo", pack_size=256 * KiB)
    for workers in (1, 3):
        w = BackupWriter(repo, "odd", workers=workers)
        try:
            disk = w.add_disk("disk.raw", str(src))
            snap = w.commit()
        finally:
            w.abort()
        assert disk["size"] == os.path.getsize(str(src))
        assert disk["chunks"] == nonzero_chunks(src), kind
        out = tmp_path / ("out%d.raw" % workers)
        restore_disk(repo, snap, snap.disks[0], str(out), workers=workers)
        assert out.read_bytes() == src.read_bytes(), kind
        streamed = []
        restore_stream(repo, snap.disks[0], streamed.append, workers=workers)
        assert b"".join(streamed) == src.read_bytes(), kind
    assert verify(repo, "all").ok


def test_a_second_backup_of_the_same_chunks_in_another_order_restores_byte_equal(tmp_path):
    """Chunks reused from old packs in an order unlike the pack's: the restore's side-by-side reads and
    runs must still put each where the index says."""
    src = tmp_path / "disk.raw"
    blocks = [text(CHUNK, i) if i % 2 else rand(CHUNK, i) for i in range(40)]
    src.write_bytes(b"".join(blocks))
    repo = new_repo(tmp_path / "repo", pack_size=512 * KiB)
    first = backup(repo, "web", src)
    order = list(range(40))
    random.Random(5).shuffle(order)
    shuffled = [blocks[i] for i in order[:20]] + [bytes(CHUNK)] + [blocks[i] for i in order[20:]] + [blocks[0]] * 3
    src.write_bytes(b"".join(shuffled) + b"!")
    second = backup(repo, "web", src)
    assert second.disks[0]["new_chunks"] == 1  # only the one-byte tail
    for snap, want in ((first, b"".join(blocks)), (second, src.read_bytes())):
        out = tmp_path / ("%s.raw" % snap.id)
        restore_disk(repo, snap, snap.disks[0], str(out), workers=2)
        assert out.read_bytes() == want


# --- a disk that changes size while it is read ------------------------------------------------------------


def test_a_disk_that_shrinks_while_it_is_read_is_never_recorded_as_a_whole_backup(tmp_path):
    """The chunker stops where the file now ends, but the index keeps the size the disk had when it was
    opened: what was past the new end is restored as zeros, and nothing said the disk changed."""
    src = tmp_path / "disk.raw"
    src.write_bytes(text(4 * MiB, 1))
    repo = new_repo(tmp_path / "repo")
    calls = []

    def shrink():
        calls.append(1)
        if len(calls) == 2:
            os.truncate(str(src), MiB + 1000)

    w = BackupWriter(repo, "web", workers=1)
    try:
        try:
            w.add_disk("disk.raw", str(src), check=shrink)
            snap = w.commit()
        except RepoError as err:  # the right answer: the disk changed under the reader
            assert "disk.raw" in str(err)
            assert repo.snapshots() == []
            return
    finally:
        w.abort()
    out = tmp_path / "out.raw"
    restore_disk(repo, snap, snap.disks[0], str(out))
    # recorded: then it must be a disk that existed, either the one opened or the one left
    got = out.read_bytes()
    assert got in (text(4 * MiB, 1), text(4 * MiB, 1)[:MiB + 1000]), \
        "recorded as a whole %d-byte disk, restored with %d bytes of zeros where the data was" % (
            len(got), len(got) - len(got.rstrip(b"\0")) if got.rstrip(b"\0") else len(got))


def test_a_disk_that_grows_while_it_is_read_is_stored_as_it_was_when_opened(tmp_path):
    src = tmp_path / "disk.raw"
    src.write_bytes(text(3 * MiB + 7, 2))
    repo = new_repo(tmp_path / "repo")
    calls = []

    def grow():
        calls.append(1)
        if len(calls) == 2:
            with open(str(src), "ab") as f:
                f.write(rand(2 * MiB, 3))

    w = BackupWriter(repo, "web", workers=2)
    try:
        w.add_disk("disk.raw", str(src), check=grow)
        snap = w.commit()
    finally:
        w.abort()
    out = tmp_path / "out.raw"
    restore_disk(repo, snap, snap.disks[0], str(out))
    assert out.read_bytes() == text(3 * MiB + 7, 2)


# --- damaged packs ------------------------------------------------------------------------------------------


def _flip(path, offset):
    with open(str(path), "r+b") as f:
        f.seek(offset % os.path.getsize(str(path)))
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0x41]))


@pytest.fixture
def packed(tmp_path):
    """One backup whose chunks lie in several packs (pack version 2)."""
    src = tmp_path / "disk.raw"
    src.write_bytes(text(MiB, 1) + rand(MiB, 2) + text(MiB // 2 + 3, 3))
    repo = new_repo(tmp_path / "repo", pack_size=512 * KiB)
    snap = backup(repo, "web", src)
    packs = sorted(i.name for i in repo.backend.list(PACKS))
    assert len(packs) >= 3
    return repo, snap, src, packs


def _table_at(repo, pack):
    size = repo.backend.stat(pack).size
    blobs = repo.pack_blobs(pack, size)
    return blobs[-1].offset + blobs[-1].stored_len, blobs


DAMAGE = ["blob", "magic", "version", "nonce", "table", "trailer-length", "trailer-sha", "trailer-end",
          "truncate-1", "truncate-half", "append", "renamed", "swapped", "moved-to-another-prefix"]
MUST_REFUSE = {"blob", "table", "trailer-length", "trailer-sha", "trailer-end", "truncate-1", "truncate-half",
               "append"}


@pytest.mark.parametrize("how", DAMAGE)
def test_a_damaged_pack_is_named_by_verify_and_never_restored_wrong(packed, tmp_path, how):
    repo, snap, src, packs = packed
    root = tmp_path / "repo"
    # a pack holding chunks of the backup and compressed text (the first pack) and the next one
    pack, other = packs[0], packs[1]
    path = root / pack
    table_at, blobs = _table_at(repo, pack)
    named = [pack]
    if how == "blob":
        _flip(path, blobs[len(blobs) // 2].offset + 3)
    elif how == "magic":
        _flip(path, 2)
    elif how == "version":
        _flip(path, 8)
    elif how == "nonce":
        _flip(path, 20)
    elif how == "table":
        _flip(path, table_at + 40)  # the second entry's method/lengths
    elif how == "trailer-length":
        _flip(path, -44 + 3)
    elif how == "trailer-sha":
        _flip(path, -30)
    elif how == "trailer-end":
        _flip(path, -1)
    elif how.startswith("truncate"):
        size = os.path.getsize(str(path))
        os.truncate(str(path), size - 1 if how == "truncate-1" else size // 2)
    elif how == "append":
        with open(str(path), "ab") as f:
            f.write(b"\0" * 17)
    elif how == "renamed":  # another valid-looking name in its own folder
        new = pack[:-6] + "abcdef" if not pack.endswith("abcdef") else pack[:-6] + "fedcba"
        os.rename(str(path), str(root / new))
        named = [new]
    elif how == "swapped":
        tmp = str(path) + ".swap"
        os.rename(str(path), tmp)
        os.rename(str(root / other), str(path))
        os.rename(tmp, str(root / other))
        named = [pack, other]
    elif how == "moved-to-another-prefix":
        prefix = "00" if not pack.startswith(PACKS + "00") else "ff"
        new = PACKS + prefix + "/" + pack.rsplit("/", 1)[1]
        os.makedirs(str(root / PACKS / prefix), exist_ok=True)
        os.rename(str(path), str(root / new))
        named = []  # its bytes still match its name: verify may call it good or misplaced
    r = cli("verify", "--repo", root)
    assert "Traceback" not in r.stdout + r.stderr and "internal error" not in r.stdout + r.stderr
    if named:
        assert r.returncode == 4, (how, r.stdout, r.stderr)
        for n in named:
            assert any(n in l for l in r.stdout.splitlines() if l.startswith("DAMAGED")), (how, n, r.stdout)
    out = tmp_path / "out"
    r = cli("restore", "--repo", root, snap.id, "--to", out)
    if how in MUST_REFUSE:
        assert r.returncode == 1, (how, r.stdout, r.stderr)
        one_clear_line(r)
        assert pack in r.stderr, (how, r.stderr)
        assert not os.path.exists(str(out)) and not os.path.exists(str(out) + ".hotvcb-restoring")
    else:  # the chunks themselves are whole: a restore may succeed, but only byte-equal
        assert r.returncode in (0, 1), (how, r.stdout, r.stderr)
        if r.returncode == 0:
            assert (out / "disk.raw").read_bytes() == src.read_bytes(), how
        else:
            one_clear_line(r)
            assert not os.path.exists(str(out))
    # and the next backup does not build on the damage: it restores whole
    healed = backup(repo, "web", src)
    out2 = tmp_path / "healed.raw"
    if how in MUST_REFUSE - {"blob"}:  # an unreadable table: its chunks are stored again
        restore_disk(repo, healed, healed.disks[0], str(out2))
        assert out2.read_bytes() == src.read_bytes()


def test_damage_to_version_1_packs_is_named_and_a_restore_needing_them_refuses(tmp_path):
    shutil.copytree(os.path.join(DATA, "repo-v1"), str(tmp_path / "repo"))
    repo = Repository.open(LocalBackend(str(tmp_path / "repo")))
    web1, web2, gone = repo.snapshots()
    where = repo.chunk_map()
    gone_packs = sorted({where[d].pack for _n, d in repo.disk_index(gone.disks[0]).entries})
    web_packs = sorted({where[d].pack for s in (web1, web2) for _n, d in repo.disk_index(s.disks[0]).entries})
    only_gone = [p for p in gone_packs if p not in web_packs]
    assert only_gone
    victim = only_gone[0]
    blobs = repo.pack_blobs(victim, repo.backend.stat(victim).size)
    _flip(tmp_path / "repo" / victim, blobs[0].offset + 5)
    r = cli("verify", "--repo", tmp_path / "repo")
    assert r.returncode == 4 and victim in r.stdout and gone.id in r.stdout, r.stdout + r.stderr
    assert web1.id not in r.stdout and web2.id not in r.stdout, r.stdout  # only the backup that needs it
    r = cli("restore", "--repo", tmp_path / "repo", gone.id, "--to", tmp_path / "g")
    assert r.returncode == 1 and victim in r.stderr, r.stdout + r.stderr
    one_clear_line(r)
    assert not os.path.exists(str(tmp_path / "g"))
    r = cli("restore", "--repo", tmp_path / "repo", web2.id, "--to", tmp_path / "w")
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_backup_after_verify_named_a_damaged_chunk_does_not_build_on_it(tmp_path):
    """verify names the damaged chunk, but the chunk map still lists it (the pack's table reads), so every
    later backup reuses it: each is recorded as good (exit 0) and none of them restores; prune's GC
    leaves the pack alone, so nothing ever heals. A chunk of an unreadable pack is stored again
    (docs/repository.md "Verify"); one found damaged must not be counted on either."""
    src = tmp_path / "disk.raw"
    make_disk(src, size=4 * MiB)
    repo = new_repo(tmp_path / "repo")
    first = backup(repo, "web", src)
    digest = corrupt_one_chunk(tmp_path / "repo", repo, first)
    r = cli("verify", "--repo", tmp_path / "repo")
    assert r.returncode == 4 and digest.hex() in r.stdout, r.stdout + r.stderr
    r = cli("prune", "--repo", tmp_path / "repo", "--keep-last", "5")
    assert r.returncode == 0, r.stdout + r.stderr
    later = backup(repo, "web", src)
    out = tmp_path / "later.raw"
    try:
        restore_disk(repo, later, later.disks[0], str(out))
    except RepoError as err:
        pytest.fail("the backup made after verify reported the damage was recorded as good and does not "
                    "restore: %s" % str(err)[:160])
    assert out.read_bytes() == src.read_bytes()


# --- something other than a file where a disk or a pack should be -----------------------------------------


def test_a_disk_that_is_a_symlink_to_a_block_device_is_never_stored_as_an_empty_disk(tmp_path):
    """fstat's st_size of a block device is 0: a raw image that is a symlink to an LV or a loop device was
    recorded as a whole 0-byte disk (chunks 0) and the backup succeeded."""
    img = tmp_path / "backing"
    img.write_bytes(rand(3 * MiB, 8))
    r = subprocess.run(["losetup", "-f", "--show", str(img)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip("no loop device: " + r.stderr.strip())
    dev = r.stdout.strip()
    try:
        os.symlink(dev, str(tmp_path / "disk.img"))
        repo = new_repo(tmp_path / "repo")
        try:
            snap = backup(repo, "web", tmp_path / "disk.img")
        except RepoError as err:  # refused, naming the disk: fine
            assert "disk.img" in str(err) or dev in str(err), str(err)
            assert repo.snapshots() == []
            return
        out = tmp_path / "out.raw"
        restore_disk(repo, snap, snap.disks[0], str(out))
        assert snap.disks[0]["size"] == 3 * MiB and out.read_bytes() == img.read_bytes(), \
            "stored as a %d-byte disk of %d chunks" % (snap.disks[0]["size"], snap.disks[0]["chunks"])
    finally:
        subprocess.run(["losetup", "-d", dev])


# --- something other than a file where a pack should be ---------------------------------------------------


def test_a_fifo_among_the_packs_is_named_by_verify_instead_of_hanging_it(packed, tmp_path):
    repo, snap, src, packs = packed
    fifo = tmp_path / "repo" / PACKS / "ee" / ("ee" + "0" * 62)
    os.makedirs(str(fifo.parent), exist_ok=True)
    os.mkfifo(str(fifo))
    proc = subprocess.Popen([PYTHON, "-m", "hotvcb", "verify", "--repo", str(tmp_path / "repo")], cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        out, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("verify --repo hangs for good on a FIFO named like a pack (it opens it to read it whole)")
    assert proc.returncode == 4 and "ee" + "0" * 62 in out, out + err
    r = cli("restore", "--repo", tmp_path / "repo", snap.id, "--to", tmp_path / "out", timeout=30)
    assert r.returncode == 0 and (tmp_path / "out" / "disk.raw").read_bytes() == src.read_bytes()


# --- SIGKILL at odd moments -------------------------------------------------------------------------------


def _sound(tmp_path, repo, disk, snaps):
    assert len(repo.snapshots()) == snaps
    report = verify(repo, "all")
    assert report.ok, report.problems
    r = subprocess.run([PYTHON, TOOL, "backup", str(tmp_path / "repo"), "web", str(disk)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    snap = repo.snapshot(r.stdout.strip())
    out = tmp_path / ("after-%s.raw" % snap.id)
    restore_disk(repo, snap, snap.disks[0], str(out))
    assert same(out, disk)
    os.unlink(str(out))


def test_sigkill_of_backups_and_prunes_at_odd_moments_leaves_a_sound_repository(tmp_path):
    disk = tmp_path / "disk.raw"
    make_disk(disk, size=24 * MiB + 4321)
    repo = new_repo(tmp_path / "repo")
    backup(repo, "web", disk)
    snaps = 1
    rnd = random.Random(11)
    for round_ in range(3):
        with open(str(disk), "r+b") as f:  # new data so the next backup writes packs
            f.seek(rnd.randrange(0, 20 * MiB))
            f.write(rand(2 * MiB, round_))
        proc = subprocess.Popen([PYTHON, TOOL, "backup", str(tmp_path / "repo"), "web", str(disk)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(rnd.uniform(0.15, 0.6))
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        now = len(repo.snapshots())  # killed just after its record, or before: either, never half
        assert now in (snaps, snaps + 1)
        snaps = now
        _sound(tmp_path, repo, disk, snaps)
        snaps += 1
    age(tmp_path / "repo", 3600)
    proc = subprocess.Popen([PYTHON, "-m", "hotvcb", "prune", "--repo", str(tmp_path / "repo"), "--keep-last", "1"],
                            cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    time.sleep(0.4)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    r = cli("prune", "--repo", tmp_path / "repo", "--keep-last", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    age(tmp_path / "repo", 3600)
    r = cli("prune", "--repo", tmp_path / "repo", "--keep-last", "1")  # the sweep
    assert r.returncode == 0, r.stdout + r.stderr
    _sound(tmp_path, repo, disk, 1)
    r = cli("verify", "--repo", tmp_path / "repo")
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_restore_killed_mid_way_leaves_nothing_that_blocks_the_next_restore_to_that_folder(tmp_path):
    """A SIGKILLed `restore --repo --to DIR` leaves DIR.hotvcb-restoring with a half-written disk; it has no
    owner record, so `hotvcb cleanup` cannot know it, and every later restore to DIR fails with
    `cannot create DIR.hotvcb-restoring: File exists`, not saying it is a dead restore's leftover."""
    src = tmp_path / "disk.raw"
    with open(str(src), "wb") as f:
        for i in range(48):
            f.write(rand(MiB, i) if i % 2 else text(MiB, i))
    repo = new_repo(tmp_path / "repo", pack_size=8 * MiB)
    snap = backup(repo, "web", src)
    out = tmp_path / "out"
    work = tmp_path / "out.hotvcb-restoring"
    proc = subprocess.Popen([PYTHON, "-m", "hotvcb", "restore", "--repo", str(tmp_path / "repo"), snap.id, "--to",
                             str(out)], cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while not (work / "disk.raw").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    if proc.returncode == 0:
        pytest.skip("the restore ended before it could be killed")
    assert not out.exists() and work.exists(), (proc.returncode, os.listdir(str(tmp_path)))  # nothing looks complete
    r = cli("restore", "--repo", tmp_path / "repo", snap.id, "--to", out)
    if r.returncode != 0:
        one_clear_line(r)
        said = r.stderr.replace(str(tmp_path), "DIR")  # the test's own folder name says "killed"
        assert "remove" in said or "killed" in said or "interrupted" in said, \
            "the next restore to the folder: " + said.strip()
    else:
        assert (out / "disk.raw").read_bytes() == src.read_bytes() and not work.exists()


def test_verify_sample_0_is_refused_like_every_other_share_outside_1_to_100(packed, tmp_path):
    """--sample 0 read every pack (it was taken as no --sample at all) where -5, 1000 and nan are refused
    as `a percentage of the packs, 1 to 100`."""
    r = cli("verify", "--repo", tmp_path / "repo", "--sample", "0")
    assert r.returncode == 1 and "1 to 100" in r.stderr, r.stdout + r.stderr
    for bad in ("-5", "1000", "nan"):
        r = cli("verify", "--repo", tmp_path / "repo", "--sample", bad)
        assert r.returncode == 1 and "1 to 100" in r.stderr, (bad, r.stdout + r.stderr)


def test_a_huge_sparse_disk_with_bytes_at_its_far_ends_is_read_and_restored_at_the_cost_of_its_data(tmp_path):
    src = tmp_path / "disk.raw"
    size = 64 * 1024 * MiB + 4095  # 64 GiB + 4095: data at the very start, at 32 GiB - 1 and in the last bytes
    with open(str(src), "wb") as f:
        f.truncate(size)
        for at, data in ((0, b"first"), (32 * 1024 * MiB - 1, b"\x01\x02"), (size - 3, b"end")):
            f.seek(at)
            f.write(data)
    repo = new_repo(tmp_path / "repo")
    started = time.monotonic()
    snap = backup(repo, "web", src)
    assert snap.disks[0]["chunks"] == 4 and snap.disks[0]["size"] == size
    out = tmp_path / "out.raw"
    restore_disk(repo, snap, snap.disks[0], str(out))
    assert time.monotonic() - started < 20
    assert os.path.getsize(str(out)) == size and os.stat(str(out)).st_blocks * 512 < 4 * MiB
    assert same(out, src)


# --- the old-format repository with new backups, two writers at once --------------------------------------


def test_two_writers_at_once_into_the_version_1_repository_then_verify_and_restore_everything(tmp_path):
    shutil.copytree(os.path.join(DATA, "repo-v1"), str(tmp_path / "repo"))
    import runpy
    disk_of = runpy.run_path(os.path.join(DATA, "repo-v1.py"))["disk"]
    a, b = tmp_path / "a.raw", tmp_path / "b.raw"
    a.write_bytes(disk_of(2) + rand(CHUNK + 17, 1))  # old chunks plus new ones, odd size
    b.write_bytes(disk_of("gone")[:600 * KiB] + rand(MiB, 1)[:CHUNK + 17])  # shares the new tail with a
    procs = [subprocess.Popen([PYTHON, TOOL, "backup", str(tmp_path / "repo"), vm, str(p)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for vm, p in (("web", a), ("gone", b))]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    r = cli("verify", "--repo", tmp_path / "repo")
    assert r.returncode == 0 and "5 backup(s)" in r.stdout, r.stdout + r.stderr
    repo = Repository.open(LocalBackend(str(tmp_path / "repo")))
    for (out, _err), path in zip(outs, (a, b)):
        sid = out.strip()
        r = cli("restore", "--repo", tmp_path / "repo", sid, "--to", tmp_path / sid)
        assert r.returncode == 0, r.stdout + r.stderr
        assert (tmp_path / sid / path.name).read_bytes() == path.read_bytes()
    web1 = repo.snapshots()[0]
    r = cli("restore", "--repo", tmp_path / "repo", web1.id, "--to", tmp_path / "old")
    assert r.returncode == 0 and (tmp_path / "old" / web1.disks[0]["name"]).read_bytes() == disk_of(1)


# --- a repository that fills up at every step of a backup ---------------------------------------------------


def test_a_repository_filling_up_at_any_step_leaves_no_half_backup_and_the_next_one_succeeds(tmp_path, tmpfs):
    src = tmp_path / "disk.raw"
    src.write_bytes(rand(MiB + 300 * KiB, 4) + text(700 * KiB, 4) + b"\1")
    fs = tmpfs("full", "8m")
    root = fs / "repo"
    repo = new_repo(root, pack_size=256 * KiB)
    filler = fs / "filler"
    outcomes = set()
    for free in range(64 * KiB, 2 * MiB + 256 * KiB, 96 * KiB):
        st = os.statvfs(str(fs))
        have = st.f_bavail * st.f_frsize
        with open(str(filler), "wb") as f:
            f.truncate(0)
            f.write(b"\1" * max(0, have - free))
        before = {s.id for s in repo.snapshots()}
        try:
            snap = backup(repo, "web", src)
            outcomes.add("ok")
        except RepoError as err:
            outcomes.add("full")
            assert "No space left on device" in str(err) and str(root) in str(err), str(err)
            assert {s.id for s in repo.snapshots()} == before
        else:
            out = tmp_path / "out.raw"
            os.unlink(str(filler))
            restore_disk(repo, snap, snap.disks[0], str(out))
            assert out.read_bytes() == src.read_bytes()
            os.unlink(str(out))
        assert os.listdir(str(root / "tmp")) == [], free
        report = verify(repo, "all")
        assert report.ok, (free, report.problems)
        if os.path.exists(str(filler)):
            os.unlink(str(filler))
        shutil.rmtree(str(root / "verified"), ignore_errors=True)
    assert outcomes == {"ok", "full"}
    snap = backup(repo, "web", src)
    out = tmp_path / "final.raw"
    restore_disk(repo, snap, snap.disks[0], str(out))
    assert out.read_bytes() == src.read_bytes()
