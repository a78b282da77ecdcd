"""`hotvcb list|verify|restore --repo` and `hotvcb prune` on a repository, through the CLI
(on Python 3.8 where pyenv has it)."""

import datetime
import importlib.util
import json
import os

import pytest
from repotool import age, backup, cli, corrupt_chunk, corrupt_one_chunk, make_disk, new_repo, same, scatter


def hotvcb(*args):
    return cli(*args, timeout=120)


@pytest.fixture
def filled(tmp_path):
    disk = tmp_path / "disk.raw"
    make_disk(disk)
    repo = new_repo(tmp_path / "repo")
    first = backup(repo, "Web Server (prod)", disk, when=datetime.datetime(2026, 11, 30, 21))
    (tmp_path / "first.raw").write_bytes(disk.read_bytes())
    scatter(disk, 10)
    second = backup(repo, "Web Server (prod)", disk, when=datetime.datetime(2026, 12, 1, 21))
    return repo, disk, first, second


def test_list_and_restore_by_id_prefix_into_a_new_folder(tmp_path, filled):
    repo, disk, first, second = filled
    r = hotvcb("list", "--repo", tmp_path / "repo", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)["backups"]
    assert [row["id"] for row in rows] == [first.id, second.id]
    assert rows[1]["new_bytes"] < rows[0]["new_bytes"]
    assert first.id in hotvcb("list", "--repo", tmp_path / "repo").stdout
    r = hotvcb("restore", "--repo", tmp_path / "repo", first.id[:-2], "--to", tmp_path / "out")
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(os.listdir(tmp_path / "out")) == ["Web Server (prod).vmx", "disk.raw"]
    assert same(tmp_path / "out" / "disk.raw", tmp_path / "first.raw")
    r = hotvcb("restore", "--repo", tmp_path / "repo", "--latest", "Web Server (prod)", "--to", tmp_path / "newest")
    assert r.returncode == 0 and same(tmp_path / "newest" / "disk.raw", disk), r.stdout + r.stderr
    again = hotvcb("restore", "--repo", tmp_path / "repo", second.id, "--to", tmp_path / "out")
    assert again.returncode == 1 and "never overwrites" in again.stderr and "Traceback" not in again.stderr
    nothing = hotvcb("restore", "--repo", tmp_path / "repo", "2099", "--to", tmp_path / "none")
    assert nothing.returncode == 1 and "no backup" in nothing.stderr


def test_verify_exit_codes_and_a_damaged_restore_leaves_nothing(tmp_path, filled):
    repo, disk, first, second = filled
    r = hotvcb("verify", "--repo", tmp_path / "repo")
    assert r.returncode == 0 and "OK" in r.stdout, r.stdout + r.stderr
    assert "0 pack(s)" in hotvcb("verify", "--repo", tmp_path / "repo", "--new").stdout
    r = hotvcb("verify", "--repo", tmp_path / "repo", "--sample", "100", "--json")  # 1..100 read; 0 is refused
    assert r.returncode == 0 and json.loads(r.stdout)["mode"] == "sample" and json.loads(r.stdout)["packs_read"] > 0
    for below in ("0.001", "0.99"):  # what the message says is what is accepted
        r = hotvcb("verify", "--repo", tmp_path / "repo", "--sample", below)
        assert r.returncode == 1 and "1 to 100" in r.stderr and "packs_read" not in r.stdout, r.stdout + r.stderr
    r = hotvcb("verify", "--repo", tmp_path / "repo", "--sample", "1", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["packs_read"] == 1, r.stdout + r.stderr
    digest = corrupt_one_chunk(tmp_path / "repo", repo, first)
    r = hotvcb("verify", "--repo", tmp_path / "repo")
    assert r.returncode == 4
    assert any(digest.hex() in line and first.id in line and second.id in line
               for line in r.stdout.splitlines() if line.startswith("DAMAGED"))
    r = hotvcb("restore", "--repo", tmp_path / "repo", second.id, "--to", tmp_path / "out")
    assert r.returncode == 1 and digest.hex() in r.stderr and "Traceback" not in r.stderr
    assert not os.path.exists(tmp_path / "out") and not os.path.exists(str(tmp_path / "out") + ".hotvcb-restoring")


def test_verify_of_one_vm_reads_its_packs_only(tmp_path, filled):
    """`verify --repo R VM`: that VM's backups and the packs holding their chunks; another VM's damage is not
    its finding, its own is (the outsider's typo case, a name with no backup, is test_outsider_s28docs)."""
    repo, disk, first, second = filled
    other = tmp_path / "db.raw"
    make_disk(other, size=4 << 20, seed=7)
    db = backup(repo, "db", other)
    whole = json.loads(hotvcb("verify", "--repo", tmp_path / "repo", "--json").stdout)
    r = hotvcb("verify", "--repo", tmp_path / "repo", "db", "--json")
    one = json.loads(r.stdout)
    assert r.returncode == 0 and one["vm"] == "db" and one["backups"] == 1, r.stdout + r.stderr
    assert 0 < one["packs_read"] < whole["packs_read"]
    where = repo.chunk_map()
    db_packs = {where[d].pack for _n, d in repo.disk_index(db.disks[0]).entries}
    digest = next(d for _n, d in repo.disk_index(first.disks[0]).entries if where[d].pack not in db_packs)
    corrupt_chunk(tmp_path / "repo", repo, where[digest].pack, digest)
    assert hotvcb("verify", "--repo", tmp_path / "repo", "db").returncode == 0
    r = hotvcb("verify", "--repo", tmp_path / "repo", "Web Server (prod)")
    assert r.returncode == 4 and digest.hex() in r.stdout and "of 'Web Server (prod)'" in r.stdout, r.stdout


@pytest.mark.skipif(importlib.util.find_spec("hotvcb.repo.retention") is None,
                    reason="the keep rules (hotvcb/repo/retention.py) come from the retention branch")
def test_prune_dry_run_then_prune(tmp_path, filled):
    repo, disk, first, second = filled
    r = hotvcb("prune", "--repo", tmp_path / "repo", "--keep-last", 1, "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "remove   %s" % first in r.stdout and "keep     %s" % second in r.stdout
    assert len(repo.snapshots()) == 2
    age(tmp_path / "repo", 3600)
    r = hotvcb("prune", "--repo", tmp_path / "repo", "--keep-last", 1)
    assert r.returncode == 0, r.stderr
    assert [s.id for s in repo.snapshots()] == [second.id]
    assert hotvcb("prune", "--repo", tmp_path / "repo").returncode == 1  # no rule: would drop everything
