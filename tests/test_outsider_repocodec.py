"""An outsider's attacks on the repository's codecs (zstd, zlib Z_RLE) and its background writes (pack
commits, restore flushes), through the public CLI: a host without `zstandard` (the ESXi host's python
never has it) meeting a zstd repository for verify/prune/list/restore, the new config key with garbage
and on a host that cannot honour it, a damaged zstd chunk, a restore stopped by SIGTERM or a full disk."""

import datetime
import os
import signal
import subprocess
import sys
import time

import pytest
from repotool import MiB, age, backup, make_disk, new_repo, same

from hotvcb.repo import codec
from hotvcb.repo.backend import LocalBackend
from hotvcb.repo.format import ZSTD
from hotvcb.repo.repository import PACKS, SNAPSHOTS, Repository
from simhost import hotvcb as host_hotvcb
from simhost import needs_root, snapshot_names, write_conf

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
