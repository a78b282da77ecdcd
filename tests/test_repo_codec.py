"""The repository's two codecs (docs/repository.md "Compression"): zstd where the
`zstandard` package is (scripts/install-test-deps installs it), zlib everywhere
else (the ESXi host); repositories holding both, or holding the zlib level 1
chunks of older hotvcb, read back whole; a reader without the package names the
problem instead of failing halfway; restores write in order with holes kept."""

import errno
import hashlib
import os
import random
import subprocess
import sys
import threading
import zlib

import pytest

import zstandard  # noqa: F401  # the zstd path is tested, never skipped: install-test-deps installs it
from repotool import PYTHON, ROOT, MiB, backup, make_disk, new_repo, same, scatter

from hotvcb.errors import HotvcbError, RepoError
from hotvcb.repo import codec
from hotvcb.repo.format import RAW, ZLIB, ZSTD
from hotvcb import sparsewrite
from hotvcb.repo.reader import restore_disk
from hotvcb.repo.repository import PACKS
from hotvcb.repo.verify import verify

# run a python with `zstandard` unimportable, as on an ESXi host: "-c" this, then the code to run
WITHOUT_ZSTD = "import sys; sys.modules['zstandard'] = None; sys.path.insert(0, %r); " % ROOT


def methods(repo):
    """How many chunks the repository holds per method."""
    out = {}
    for info in repo.backend.list(PACKS):
        for blob in repo.pack_blobs(info.name, info.size):
            out[blob.method] = out.get(blob.method, 0) + 1
    return out


def restore(repo, snap, out):
    restore_disk(repo, snap, snap.disks[0], str(out))
    return out


def without_zstd(code, *args):
    return subprocess.run([PYTHON, "-c", WITHOUT_ZSTD + code] + [str(a) for a in args], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, cwd=ROOT, timeout=120)


def test_a_zstd_repository_stores_text_as_zstd_random_raw_and_reads_back(tmp_path):
    disk = tmp_path / "disk.raw"
    make_disk(disk)
    repo = new_repo(tmp_path / "repo", compression="zstd")
    snap = backup(repo, "web", disk)
    found = methods(repo)
    assert found.get(ZSTD) and found.get(RAW) and not found.get(ZLIB)
    assert same(disk, restore(repo, snap, tmp_path / "out.raw"))
    assert verify(repo, "all").ok


def test_zlib_chunks_are_plain_zlib_streams_and_older_level_1_chunks_still_read(tmp_path, monkeypatch):
    disk = tmp_path / "disk.raw"
    make_disk(disk, seed=5)
    repo = new_repo(tmp_path / "repo")
    monkeypatch.setattr(codec, "_zlib_rle", lambda data, probe=0: zlib.compress(data, 1))  # what hotvcb wrote before
    old = backup(repo, "db", disk)
    monkeypatch.undo()
    scatter(disk, 12, align=4096)
    with open(disk, "r+b") as f:  # text the old backup does not hold: new chunks, in today's encoding
        f.seek(3 * MiB)
        f.write(b"".join(b"row %d: a new line of text\n" % n for n in range(40000))[:MiB])
    new = backup(repo, "db", disk)
    assert same(disk, restore(repo, new, tmp_path / "new.raw"))
    assert not same(disk, restore(repo, old, tmp_path / "old.raw"))
    assert verify(repo, "all").ok
    for info in repo.backend.list(PACKS):  # no format change: the standard library reads every zlib chunk
        data = repo.backend.get(info.name)
        for blob in repo.pack_blobs(info.name, info.size):
            if blob.method == ZLIB:
                assert len(zlib.decompress(data[blob.offset:blob.offset + blob.stored_len])) == blob.raw_len


def _text(n):
    return b"".join(b"line %d of a log that compresses well\n" % i for i in range(n // 20))[:n]


@pytest.mark.parametrize("parts, method", [
    ((("text", 65536),), ZLIB),  # the probe's 4 KiB go on in the same stream: one zlib stream, whole
    ((("random", 4096), ("text", 61440)), RAW),  # the probe saw random data: the rest is not compressed
    ((("text", 4096), ("random", 61440)), RAW),  # the probe passed, but the whole does not shrink by 1/32
    ((("text", 2048), ("random", 2048), ("text", 61440)), ZLIB),  # the probe's block ends inside the text
    ((("zeros", 60000), ("random", 5536)), ZLIB),  # a run of one byte: Z_RLE's case
    ((("text", 8192),), ZLIB),  # no longer than two probes: compressed whole, unprobed
    ((("random", 8192),), RAW),
])
def test_a_zlib_chunk_is_one_standard_stream_and_what_does_not_shrink_is_raw(parts, method):
    rnd = random.Random(3)
    raw = b"".join({"text": _text, "random": rnd.randbytes, "zeros": bytes}[kind](n) for kind, n in parts)
    got, stored = codec.encode(memoryview(raw))
    assert got == method
    if method == ZLIB:  # what any hotvcb reads: zlib.decompress of the stored bytes, nothing more
        assert zlib.decompress(stored) == raw and len(stored) <= len(raw) - len(raw) // 32
    else:
        assert bytes(stored) == raw
    assert bytes(codec.decode(got, stored, len(raw), hashlib.sha256(raw).digest())) == raw


def test_a_repository_written_with_and_without_zstd_reads_back_whole(tmp_path):
    disk = tmp_path / "disk.raw"
    make_disk(disk, seed=7)
    repo = new_repo(tmp_path / "repo", compression="zstd")
    # a writer without the package (an ESXi host backing up into a zstd repository) writes zlib
    r = without_zstd("sys.argv = sys.argv[1:]; sys.path.insert(0, 'tests'); import repotool; "
                     "sys.exit(repotool.main(sys.argv))", "backup", tmp_path / "repo", "esx", disk)
    assert r.returncode == 0, r.stderr
    first = repo.snapshot(r.stdout.strip())
    scatter(disk, 20, seed=9)
    with open(disk, "r+b") as f:
        f.seek(5 * MiB)
        f.write(b"".join(b"log line %d: written after the first backup\n" % n for n in range(30000))[:MiB])
    second = backup(repo, "linux", disk)
    found = methods(repo)
    assert found.get(ZLIB) and found.get(ZSTD)
    assert same(disk, restore(repo, second, tmp_path / "second.raw"))
    assert not same(disk, restore(repo, first, tmp_path / "first.raw"))
    assert verify(repo, "all").ok


def test_a_reader_without_zstandard_names_the_package_and_leaves_nothing_behind(tmp_path):
    disk = tmp_path / "disk.raw"
    make_disk(disk, seed=11)
    repo = new_repo(tmp_path / "repo", compression="zstd")
    snap = backup(repo, "web", disk)
    out = tmp_path / "restored"
    r = without_zstd("sys.argv = ['hotvcb'] + sys.argv[1:]; import runpy; runpy.run_module('hotvcb', "
                     "run_name='__main__')", "restore", "--repo", tmp_path / "repo", snap.id, "--to", out)
    assert r.returncode != 0
    assert "zstandard package is not installed" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not out.exists() and not os.path.exists(str(out) + ".hotvcb-restoring")
    # nor can such a host make a zstd repository it could not read itself
    r = without_zstd("from hotvcb.repo.backend import LocalBackend; from hotvcb.repo.repository import Repository; "
                     "from hotvcb.errors import RepoError\ntry: Repository.init(LocalBackend(sys.argv[1]), "
                     "compression='zstd')\nexcept RepoError as e: print(e)", tmp_path / "repo2")
    assert "zstandard package is installed" in r.stdout, r.stdout + r.stderr
    assert not (tmp_path / "repo2" / "config").exists()


def test_a_parallel_restore_writes_every_run_in_place_and_leaves_holes_as_holes(tmp_path, monkeypatch):
    # data islands of 1-3 chunks between holes, more runs than the pool has tasks in flight, so runs
    # finish out of order in the workers and must still land at their own offsets
    disk = tmp_path / "disk.raw"
    chunk = 64 * 1024
    with open(disk, "wb") as f:
        f.truncate(64 * MiB)
        for n in range(0, 1024, 7):
            f.seek(n * chunk)
            f.write(os.urandom(chunk) if n % 2 else ((b"chunk %d " % n) * chunk)[:chunk * (1 + n % 3)])
    repo = new_repo(tmp_path / "repo", compression="zstd")
    snap = backup(repo, "web", disk)
    out = tmp_path / "out.raw"
    monkeypatch.setattr(sparsewrite, "FLUSH_EVERY", MiB)  # background flushes run while later runs are written
    restore_disk(repo, snap, snap.disks[0], str(out), workers=4)
    assert same(disk, out)
    assert data_extents(out) == data_extents(disk)  # every hole of the source is a hole of the restore


def data_extents(path):
    """[(start, end)] of the file's data as the filesystem reports it (SEEK_DATA / SEEK_HOLE)."""
    out = []
    with open(str(path), "rb") as f:
        fd, at, size = f.fileno(), 0, os.fstat(f.fileno()).st_size
        while at < size:
            try:
                start = os.lseek(fd, at, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole is left
                break
            at = os.lseek(fd, start, os.SEEK_HOLE)
            out.append((start, at))
    return out


def test_the_config_key_chooses_the_codec_of_a_repository_made_on_first_use(tmp_path):
    from hotvcb.config import load_settings
    from hotvcb.jobs.repo_backup import open_repository

    conf = tmp_path / "hotvcb.conf"
    conf.write_text("VM_BACKUP_REPOSITORY=%s\nVM_BACKUP_REPOSITORY_COMPRESSION=ZSTD\n" % (tmp_path / "repo"))
    s, _warnings = load_settings(str(conf))
    made = open_repository(s.vm_backup_repository, s.vm_backup_repository_compression)
    assert made.config.compression == "zstd"
    assert open_repository(s.vm_backup_repository, "zlib").config.compression == "zstd"  # chosen once, kept
    conf.write_text("VM_BACKUP_REPOSITORY_COMPRESSION=lz4\n")
    with pytest.raises(HotvcbError, match="zlib|zstd"):
        load_settings(str(conf))


def test_a_disk_error_in_a_background_flush_fails_the_restore_and_removes_it(tmp_path, monkeypatch):
    disk = tmp_path / "disk.raw"
    make_disk(disk, seed=13)
    repo = new_repo(tmp_path / "repo")
    snap = backup(repo, "web", disk)
    monkeypatch.setattr(sparsewrite, "FLUSH_EVERY", MiB)

    def failing(fd):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "fdatasync", failing)  # the disk under the restore fails as it writes back
    out = tmp_path / "out.raw"
    with pytest.raises(RepoError, match="cannot write .*out.raw: Input/output error"):
        restore_disk(repo, snap, snap.disks[0], str(out))
    assert not out.exists()


def test_a_write_failing_in_a_worker_fails_the_restore_removes_it_and_no_worker_writes_after(tmp_path, monkeypatch):
    disk = tmp_path / "disk.raw"
    make_disk(disk, seed=17)
    repo = new_repo(tmp_path / "repo")
    snap = backup(repo, "web", disk)
    real, calls = os.pwritev, []

    def filling(fd, views, at):  # the target fills up after a few runs, whichever worker writes next
        calls.append(at)
        if len(calls) > 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, views, at)

    monkeypatch.setattr(os, "pwritev", filling)
    out = tmp_path / "out.raw"
    before = threading.active_count()
    with pytest.raises(RepoError, match="cannot write .*out.raw: No space left on device"):
        restore_disk(repo, snap, snap.disks[0], str(out), workers=4)
    assert not out.exists()
    assert threading.active_count() == before  # no worker is left to write into a closed (or reused) fd
    assert len(calls) < sum(1 for _ in repo.disk_index(snap.disks[0]).entries)  # it stopped at the error


@pytest.mark.parametrize("level,wbits", [(1, 15), (9, 15), (6, 9), (0, 15)])
def test_any_plain_zlib_stream_decodes_and_a_damaged_or_dictionary_one_is_refused(level, wbits):
    raw = b"".join(b"line %d of a text chunk\n" % n for n in range(3000))[:65536]
    digest = hashlib.sha256(raw).digest()
    z = zlib.compressobj(level, zlib.DEFLATED, wbits)
    stream = z.compress(raw) + z.flush()
    assert bytes(codec.decode(ZLIB, memoryview(stream), len(raw), digest)) == raw
    for damaged in (stream[:len(stream) // 2], stream[:40] + bytes([stream[40] ^ 0xFF]) + stream[41:]):
        with pytest.raises(RepoError, match="cannot be decompressed|does not match its hash"):
            codec.decode(ZLIB, damaged, len(raw), digest)
    z = zlib.compressobj(level, zlib.DEFLATED, wbits, zdict=b"line of a text chunk")
    with pytest.raises(RepoError, match="cannot be decompressed"):  # no hotvcb writes one: refused, not misread
        codec.decode(ZLIB, z.compress(raw) + z.flush(), len(raw), digest)
