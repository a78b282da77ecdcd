"""An outsider's attacks on the repository's codecs (zstd, zlib Z_RLE) and its background writes (pack
commits, restore flushes), through the public CLI: a host without `zstandard` (the ESXi host's python
never has it) meeting a zstd repository for verify/prune/list/restore, the new config key with garbage
and on a host that cannot honour it, a damaged zstd or Z_RLE chunk, a restore stopped by SIGTERM or a
full disk, a repository filling up as a pack is committed, a backup stopped (SIGTERM, SIGKILL) while a
pack commits in the background, two writers with and without zstd at once."""

import datetime
import os
import signal
import subprocess
import sys
import time

import pytest
from repotool import MiB, age, backup, make_disk, new_repo, same

from hotvcb.errors import RepoError
from hotvcb.repo import codec
from hotvcb.repo.backend import LocalBackend
from hotvcb.repo.format import ZSTD
from hotvcb.repo.repository import PACKS, SNAPSHOTS, Repository
from simhost import hotvcb as host_hotvcb
from simhost import needs_root, snapshot_names, vim, write_conf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the CLI in a python where `zstandard` cannot be imported, as on an ESXi host
HIDE_ZSTD = ("import sys, runpy; sys.modules['zstandard'] = None; sys.path.insert(0, %r); "
             "sys.argv = ['hotvcb'] + sys.argv[1:]; runpy.run_module('hotvcb', run_name='__main__')" % ROOT)


def cli(*args, zstd=True, timeout=60):
    argv = [sys.executable, "-m", "hotvcb"] if zstd else [sys.executable, "-c", HIDE_ZSTD]
    return subprocess.run(argv + [str(a) for a in args], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout, env=dict(os.environ, PYTHONPATH=ROOT))


def one_clear_line(r):
    """A refusal is one `hotvcb: error:` line, never a traceback or an internal error."""
    out = r.stdout + r.stderr
    assert "Traceback" not in out and "internal error" not in out, out
    errors = [l for l in r.stderr.splitlines() if l.startswith("hotvcb: error:")]
    assert len(errors) == 1, out
    return errors[0]


def tree(path):
    """Every file under path with its size and mtime."""
    out = {}
    for folder, _dirs, files in os.walk(str(path)):
        for name in files:
            st = os.lstat(os.path.join(folder, name))
            out[os.path.relpath(os.path.join(folder, name), str(path))] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture
def zstd_repo(tmp_path):
    """A zstd repository with an old and a new backup of different disks, sharing one pack, aged past GC's
    grace period: pruning the old one makes GC copy the new one's chunks out of the shared pack."""
    old, new = tmp_path / "old.raw", tmp_path / "new.raw"
    make_disk(old, size=6 * MiB)
    make_disk(new, size=6 * MiB, seed=5)
    repo = new_repo(tmp_path / "repo", compression="zstd", pack_size=8 * MiB)
    a = backup(repo, "web", old, when=datetime.datetime.now() - datetime.timedelta(hours=2))
    b = backup(repo, "web", new)
    age(tmp_path / "repo", 7200)
    return repo, a, b, new


# --- a host without zstandard meets a zstd repository ------------------------------------------------


def test_verify_without_zstandard_refuses_in_one_line_instead_of_calling_every_chunk_damaged(zstd_repo, tmp_path):
    """Bug: verify --repo on a host without the package printed one `DAMAGED:` line per zstd chunk, each
    "needed by" a backup, and exited 4 (damage found): a sound repository reported as destroyed."""
    repo, a, b, _disk = zstd_repo
    r = cli("verify", "--repo", tmp_path / "repo", zstd=False)
    line = one_clear_line(r)
    assert "DAMAGED" not in r.stdout and r.returncode not in (0, 4), r.stdout + r.stderr
    assert "zstandard" in line and "zstd" in line, line
    assert cli("verify", "--repo", tmp_path / "repo").returncode == 0  # where the package is, it is sound


def test_prune_without_zstandard_removes_nothing_before_the_gc_it_cannot_do(zstd_repo, tmp_path):
    """Bug: prune removed the old backup's record, then its GC stopped at the first zstd chunk it had to
    copy, with an error calling a sound chunk bad; every later prune there failed the same way."""
    repo, a, b, disk = zstd_repo
    before = tree(tmp_path / "repo")
    r = cli("prune", "--repo", tmp_path / "repo", "--keep-last", "1", zstd=False)
    line = one_clear_line(r)
    assert r.returncode != 0 and "zstandard" in line, r.stdout + r.stderr
    assert tree(tmp_path / "repo") == before  # nothing removed, nothing marked
    # the dry run needs no chunk and still works there
    d = cli("prune", "--repo", tmp_path / "repo", "--keep-last", "1", "--dry-run", zstd=False)
    assert d.returncode == 0 and "remove" in d.stdout, d.stdout + d.stderr
    # where the package is, the same prune works and the kept backup restores whole
    r = cli("prune", "--repo", tmp_path / "repo", "--keep-last", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    out = tmp_path / "restored"
    r = cli("restore", "--repo", tmp_path / "repo", b.id, "--to", out)
    assert r.returncode == 0, r.stdout + r.stderr
    assert cli("verify", "--repo", tmp_path / "repo").returncode == 0


def test_list_without_zstandard_still_lists_a_zstd_repository(zstd_repo, tmp_path):
    repo, a, b, _disk = zstd_repo
    r = cli("list", "--repo", tmp_path / "repo", zstd=False)
    assert r.returncode == 0 and a.id in r.stdout and b.id in r.stdout, r.stdout + r.stderr


# --- the new config key --------------------------------------------------------------------------------


@needs_root
def test_zstd_asked_of_a_host_without_zstandard_fails_before_any_snapshot_and_creates_nothing(host, tmp_path):
    """VM_BACKUP_REPOSITORY_COMPRESSION=zstd on an ESXi host (its python has no zstandard) for a new repository.
    Bug: the error was `compression 'zstd': zlib, or zstd where ...`, naming neither the key nor the repository."""
    vmid = host.create_vm("web", "datastore1", [{"size": "4M"}], power="on")
    repo = "/vmfs/volumes/backup/repo"
    conf = write_conf(host, VM_BACKUP_REPOSITORY=repo, VM_BACKUP_REPOSITORY_COMPRESSION="zstd")
    r = host_hotvcb(host, "backup", "-m", "web", "-g", conf, "-w", tmp_path / "work")
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "Traceback" not in out, out
    assert "zstandard" in out and "VM_BACKUP_REPOSITORY_COMPRESSION" in out, out
    assert snapshot_names(host, vmid) == [] and host.power_state(vmid) == "on"
    real = host.real(repo)
    assert not os.path.exists(real), os.listdir(real)
    # the same config with zlib then makes the repository there
    conf = write_conf(host, VM_BACKUP_REPOSITORY=repo, VM_BACKUP_REPOSITORY_COMPRESSION="zlib")
    r = host_hotvcb(host, "backup", "-m", "web", "-g", conf, "-w", tmp_path / "work")
    assert r.returncode == 0, r.stdout + r.stderr
    assert Repository.open(LocalBackend(real)).config.compression == "zlib"


@pytest.mark.parametrize("garbage", ["lz4", "zstd:3", "zstd,zlib"])
def test_a_garbage_codec_is_one_line_naming_the_key(tmp_path, garbage):
    conf = tmp_path / "hotvcb.conf"
    conf.write_text("VM_BACKUP_REPOSITORY=%s\nVM_BACKUP_REPOSITORY_COMPRESSION=%s\n" % (tmp_path / "repo", garbage))
    r = cli("prune", "-g", conf, "--keep-last", "1", "--dry-run")
    line = one_clear_line(r)
    assert r.returncode != 0 and "VM_BACKUP_REPOSITORY_COMPRESSION" in line and "zstd" in line, line
    assert not (tmp_path / "repo").exists()


# --- restores stopped halfway ----------------------------------------------------------------------------


def big_text_backup(tmp_path, size=384 * MiB):
    """A zstd backup whose restore writes `size` bytes (one text chunk over and over: small to store)."""
    disk = tmp_path / "big.raw"
    block = b"".join(b"log line %08d: the quick brown fox jumps over the lazy dog\n" % n for n in range(20000))[:MiB]
    with open(disk, "wb") as f:
        for _ in range(size // MiB):
            f.write(block)
    repo = new_repo(tmp_path / "repo", compression="zstd")
    return repo, backup(repo, "web", disk), disk


def test_sigterm_mid_restore_with_background_flushes_removes_the_output_and_exits_2(tmp_path):
    repo, snap, disk = big_text_backup(tmp_path)
    os.unlink(str(disk))
    to = tmp_path / "restored"
    work = str(to) + ".hotvcb-restoring"
    p = subprocess.Popen([sys.executable, "-m", "hotvcb", "restore", "--repo", str(tmp_path / "repo"), snap.id,
                          "--to", str(to)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                         env=dict(os.environ, PYTHONPATH=ROOT))
    target = os.path.join(work, "big.raw")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # stopped once data is written (a background flush has run or runs)
        try:
            if os.stat(target).st_blocks * 512 >= 80 * MiB:
                break
        except OSError:
            pass
        time.sleep(0.01)
    else:
        pytest.fail("the restore wrote nothing")
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 2, out + err
    assert "Traceback" not in out + err and "Exception in thread" not in err, out + err
    assert not to.exists() and not os.path.exists(work), os.listdir(str(tmp_path))


@needs_root
def test_a_restore_filling_its_disk_fails_in_one_line_and_leaves_nothing(zstd_repo, tmp_path, tmpfs):
    repo, a, b, disk = zstd_repo
    small = tmpfs("small", "1m")
    to = small / "restored"
    r = cli("restore", "--repo", tmp_path / "repo", b.id, "--to", to)
    line = one_clear_line(r)
    # refused before anything is written (the room is checked first), or by the file system on the way
    assert r.returncode != 0 and ("No space left on device" in line or "free there" in line), line
    assert os.listdir(str(small)) == []


# --- damaged chunks of either codec ----------------------------------------------------------------------


@pytest.mark.parametrize("method", ["zstd", "zlib"])
def test_a_damaged_chunk_of_either_codec_is_named_with_the_backups_that_need_it(tmp_path, method):
    disk = tmp_path / "disk.raw"
    make_disk(disk, size=6 * MiB, seed=3)
    repo = new_repo(tmp_path / "repo", compression=method)
    snap = backup(repo, "web", disk)
    want = ZSTD if method == "zstd" else 1
    loc = next(l for l in repo.chunk_map().values() if l.blob.method == want)
    with open(os.path.join(str(tmp_path / "repo"), loc.pack), "r+b") as f:
        f.seek(loc.blob.offset)
        stored = bytearray(f.read(loc.blob.stored_len))
        for at in range(len(stored) // 2, len(stored)):  # a byte whose change changes the content (in a deflate
            stored[at] ^= 0x55                           # stream some bits may say the same thing two ways)
            try:
                codec.decode(loc.blob.method, bytes(stored), loc.blob.raw_len, loc.blob.digest)
            except RepoError:
                break
            stored[at] ^= 0x55
        f.seek(loc.blob.offset)
        f.write(stored)
    v = cli("verify", "--repo", tmp_path / "repo")
    assert v.returncode == 4 and loc.blob.digest.hex() in v.stdout and snap.id in v.stdout, v.stdout + v.stderr
    to = tmp_path / "restored"
    r = cli("restore", "--repo", tmp_path / "repo", snap.id, "--to", to)
    line = one_clear_line(r)
    assert loc.blob.digest.hex() in line and snap.id in line, line
    assert not to.exists() and not os.path.exists(str(to) + ".hotvcb-restoring")


# --- the repository fills up while a pack is committed ------------------------------------------------------


@needs_root
def test_a_repository_filling_up_at_a_pack_commit_is_named_never_the_source_disk(tmp_path, tmpfs):
    """Bug: a pack's last buffered bytes reach the disk in its commit (close: flush + fsync, now in the
    background thread). When that flush hit ENOSPC, discarding the upload closed the file again, which
    re-raised the bare OSError over the RepoError: the backup failed as `cannot read <the VM's disk>: No
    space left on device` (blaming the source), or with an unhandled OSError when it was the index's."""
    import shutil

    full = tmpfs("full", "64k")
    disk = tmp_path / "disk.raw"
    failures = 0
    for n in range(280, 460, 4):  # chunks of ~120 stored bytes each: the repository fills at every step
        shutil.rmtree(str(full / "repo"), ignore_errors=True)  # of a pack's writing, commit and index
        with open(str(disk), "wb") as f:
            for i in range(n):
                f.write((b"chunk %d " % i).ljust(64 * 1024, b"\0"))
        repo = new_repo(full / "repo")
        try:
            backup(repo, "web", disk)
        except RepoError as err:
            failures += 1
            assert "cannot read" not in str(err) and str(full / "repo") in str(err), (n, str(err))
            assert "No space left on device" in str(err), (n, str(err))
            assert repo.backend.list(SNAPSHOTS) == [], n
    assert failures > 20


# --- an ESXi host restoring from a zstd repository -----------------------------------------------------------


@needs_root
def test_an_esxi_restore_of_zstd_chunks_fails_in_one_line_and_registers_nothing(host, tmp_path):
    """A Linux host (with zstandard) backed the VM up into a zstd repository on a shared datastore; the ESXi
    host restores it: refused in one line, no VM registered, no staging left, the source VM untouched."""
    from hotvcb.repo.writer import BackupWriter

    vmid = host.create_vm("web", "datastore1", [{"size": "4M"}], power="on")
    repo = new_repo(host.real("/vmfs/volumes/backup/repo"), compression="zstd")
    folder = host.real("/vmfs/volumes/datastore1/web")
    w = BackupWriter(repo, "web")
    try:
        w.add_disk("web.vmdk", os.path.join(folder, "web-flat.vmdk"))
        for name in ("web.vmx", "web.nvram", "web.vmdk"):
            with open(os.path.join(folder, name), "rb") as f:
                w.add_file(name, f.read())
        w.commit()
    finally:
        w.abort()
    assert ZSTD in {loc.blob.method for loc in repo.chunk_map().values()}
    before = vim(host, "vmsvc/getallvms")
    r = host_hotvcb(host, "restore", "--repo", "/vmfs/volumes/backup/repo", "--latest", "web", "--datastore",
                    "datastore1", "--name", "copy")
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "Traceback" not in out and "zstandard" in out, out
    vim_vms = vim(host, "vmsvc/getallvms")
    assert vim_vms == before and "copy" not in vim_vms, vim_vms
    assert not os.path.exists(host.real("/vmfs/volumes/datastore1/copy"))
    ds = host.real("/vmfs/volumes/datastore1")
    assert [e for e in os.listdir(ds) if e.startswith(".hotvcb") or "restoring" in e] == [], os.listdir(ds)
    assert host.power_state(vmid) == "on" and snapshot_names(host, vmid) == []


# --- a backup stopped while a pack is committed in the background ---------------------------------------------


@needs_root
@pytest.mark.parametrize("stop", ["SIGTERM", "SIGKILL"])
def test_a_backup_stopped_while_a_pack_commits_leaves_a_sound_repository(host, tmp_path, stop):
    """Stopped once its first pack is committed (the next fills, or commits): no record, verify --repo
    passes, the next backup succeeds, the VM keeps no snapshot. SIGKILL comes from the commit thread itself
    (HOTVCB_CRASH_AT=repo-pack-committed): the instant the first background commit has linked its pack."""
    from simhost import backup_once, hotvcb_background, lock_pid

    vmid = host.create_vm("web", "datastore1", [{"size": "128M"}], power="on")
    repo = "/vmfs/volumes/backup/repo"
    real = host.real(repo)
    conf = write_conf(host, VM_BACKUP_REPOSITORY=repo)
    if stop == "SIGKILL":
        r = backup_once(host, conf, "web", "-w", tmp_path / "work", env={"HOTVCB_CRASH_AT": "repo-pack-committed"})
        assert r.returncode != 0 and "recorded in the repository" not in r.stdout + r.stderr, r.stdout + r.stderr
        assert os.listdir(os.path.join(real, "packs"))  # the pack the commit thread had just linked
    else:
        p = hotvcb_background(host, "backup", "-m", "web", "-g", conf, "-w", tmp_path / "work")
        try:
            packs, deadline = os.path.join(real, "packs"), time.monotonic() + 60
            while not (os.path.isdir(packs) and os.listdir(packs)) and time.monotonic() < deadline:
                time.sleep(0.005)
            os.kill(lock_pid(host), signal.SIGTERM)
            out = p.communicate(timeout=60)[0]
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        assert p.returncode == 2 and "Traceback" not in out and "Exception in thread" not in out, out
        assert "recorded in the repository" not in out, out
        assert snapshot_names(host, vmid) == [] and host.power_state(vmid) == "on"
        assert os.listdir(os.path.join(real, "tmp")) == []
    assert not os.path.isdir(os.path.join(real, "snapshots")) or os.listdir(os.path.join(real, "snapshots")) == []
    v = cli("verify", "--repo", real)
    assert v.returncode == 0 and "0 backup(s)" in v.stdout, v.stdout + v.stderr
    r = backup_once(host, conf, "web", "-w", tmp_path / "work")
    assert r.returncode == 0, r.stdout + r.stderr
    assert snapshot_names(host, vmid) == [] and host.power_state(vmid) == "on"
    v = cli("verify", "--repo", real)
    assert v.returncode == 0 and "1 backup(s)" in v.stdout, v.stdout + v.stderr


# --- two writers at once, one with zstd and one without ----------------------------------------------------


def test_two_backups_at_once_with_and_without_zstd_then_prune_keep_a_whole_repository(tmp_path):
    """Both store the same chunks, one as zstd and one as zlib, in packs of their own; pruning one backup
    and collecting its garbage must leave the other whole, whichever copy of a chunk is found first."""
    disk = tmp_path / "disk.raw"
    make_disk(disk, size=24 * MiB, seed=4)
    new_repo(tmp_path / "repo", compression="zstd")
    tool = os.path.join(ROOT, "tests", "repotool.py")
    hide = ("import sys; sys.modules['zstandard'] = None; sys.argv = sys.argv[1:]; sys.path.insert(0, %r); "
            "import repotool; sys.exit(repotool.main(sys.argv))" % os.path.join(ROOT, "tests"))
    runs = [subprocess.Popen([sys.executable] + pre + ["backup", str(tmp_path / "repo"), "web", str(disk)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
            for pre in ([tool], ["-c", hide])]
    for p in runs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    repo = Repository.open(LocalBackend(str(tmp_path / "repo")))
    # (mostly both store every chunk, as zstd and as zlib; one that starts after the other ends stores none)
    assert {b.method for info in repo.backend.list(PACKS) for b in repo.pack_blobs(info.name, info.size)} & {1, ZSTD}
    r = cli("prune", "--repo", tmp_path / "repo", "--keep-last", 1)
    assert r.returncode == 0 and "remove" in r.stdout, r.stdout + r.stderr
    for _ in range(2):  # mark, then sweep, each after the grace period
        age(tmp_path / "repo", 100000)
        assert cli("prune", "--repo", tmp_path / "repo", "--keep-last", 1).returncode == 0
    v = cli("verify", "--repo", tmp_path / "repo")
    assert v.returncode == 0 and "1 backup(s)" in v.stdout, v.stdout + v.stderr
    [snap] = repo.snapshots()
    out = tmp_path / "restored"
    assert cli("restore", "--repo", tmp_path / "repo", snap.id, "--to", out).returncode == 0
    assert same(out / "disk.raw", disk)


@pytest.mark.parametrize("garbage", ["ZSTD", ["zstd"]])
def test_a_garbage_codec_in_the_repository_config_is_refused_in_one_line(zstd_repo, tmp_path, garbage):
    """Bug: any value was taken, and every writer then silently stored zlib (`ZSTD`, a typo'd `zstf`), while
    every other damaged field of the config is refused naming it."""
    import json

    repo, a, b, _disk = zstd_repo
    path = tmp_path / "repo" / "config"
    config = json.loads(path.read_text())
    config["compression"] = garbage
    path.write_text(json.dumps(config))
    for args in (["list"], ["restore", b.id, "--to", tmp_path / "out"]):
        r = cli(*(args[:1] + ["--repo", tmp_path / "repo"] + args[1:]))
        line = one_clear_line(r)
        assert r.returncode == 1 and "config" in line and "compression" in line, line
    assert not (tmp_path / "out").exists()
