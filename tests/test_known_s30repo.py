"""Known behaviours, stop 30 (the deduplicating repository): outside testers' notes pinned through the CLI,
one test per defect.

Tiny disks; one simulated host per test where a host is needed.
"""

import datetime
import json
import os

from esxisim import proclog
from repotool import age, backup, cli, make_disk, new_repo
from simhost import hotvcb, needs_root, write_conf


# -- 1. a delta's temporary clone started on a datastore without room for it ----------------------------------------

@needs_root
def test_a_delta_clone_that_cannot_fit_on_the_repositorys_datastore_is_never_started(host, tmp_path):
    """A VM running on the admin's snapshot is cloned to a temporary thin disk in the repository's tmp/ before
    it is read. On a datastore without room the clone ran until the datastore was full and failed half-way:
    for that while every VM on that datastore could not write. The room is checked first, as a folder backup's
    is: the VM fails naming the datastore and the bytes the clone needs, and no clone is started."""
    host.add_datastore("small", 12 << 20)
    host.create_vm("app", "datastore1", [{"size": "32M"}], power="on", snapshots=["before upgrade"])
    repo = "/vmfs/volumes/small/repo"
    conf = write_conf(host, VM_BACKUP_REPOSITORY=repo, ALLOW_VMS_WITH_SNAPSHOTS_TO_BE_BACKEDUP=1)
    r = hotvcb(host, "backup", "-m", "app", "-g", conf, "-w", tmp_path / "work")
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert "its temporary clone into %s/tmp needs" % repo in out, out
    assert "MiB on the datastore /vmfs/volumes/small, which has only" in out, out
    clones = [c for c in proclog.read(host) if c["tool"] == "vmkfstools" and c["event"] == "start"
              and "-i" in c["args"]]
    assert clones == [], clones
    assert os.listdir(host.real(repo + "/tmp")) == []
    assert not os.path.exists(host.real(repo + "/snapshots")) or not os.listdir(host.real(repo + "/snapshots"))


# -- 2. a record whose disk size is not its index's restores a disk of the wrong size --------------------------------

def _edit_record(repo_path, snap, edit):
    """Rewrite a snapshot record as a bug or a hand edit would leave it (records are immutable to hotvcb)."""
    path = os.path.join(str(repo_path), "snapshots", snap.id)
    with open(path, encoding="utf-8") as f:
        record = json.load(f)
    edit(record)
    os.chmod(path, 0o644)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(record, f)


def test_a_record_whose_disk_size_is_not_its_indexs_is_damaged_to_verify_and_restore(tmp_path):
    """The record says the disk is 16 MiB; its index (checked by its SHA-256) covers 24 MiB. verify said OK, and
    restore wrote the index's disk while list and restore's room check went by the record: a disk of another size
    than the backup says, without a word. Both name the mismatch, with the disk, as damage of the record."""
    disk = tmp_path / "disk.raw"
    make_disk(disk)
    repo = new_repo(tmp_path / "repo")
    snap = backup(repo, "web", disk)

    def shrink(record):
        record["disks"][0]["size"] = 16 << 20
    _edit_record(tmp_path / "repo", snap, shrink)
    r = cli("verify", "--repo", tmp_path / "repo")
    damaged = [line for line in r.stdout.splitlines() if line.startswith("DAMAGED")]
    assert r.returncode == 4, r.stdout + r.stderr
    assert any(snap.id in line and "disk.raw" in line and "16777216" in line and "25165824" in line
               for line in damaged), r.stdout + r.stderr
    r = cli("restore", "--repo", tmp_path / "repo", snap.id, "--to", tmp_path / "out")
    assert r.returncode == 1 and "disk.raw" in r.stderr and "25165824" in r.stderr, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    assert not os.path.exists(tmp_path / "out") and not os.path.exists(str(tmp_path / "out") + ".hotvcb-restoring")


def _two_vms(tmp_path):
    """`web` backed up twice (its first backup's chunks overwritten since), `db` once, all older than GC's grace."""
    repo = new_repo(tmp_path / "repo")
    web, db = tmp_path / "web.raw", tmp_path / "db.raw"
    make_disk(web, size=4 << 20, seed=3)
    make_disk(db, size=4 << 20, seed=4)
    old = backup(repo, "web", web, when=datetime.datetime(2026, 11, 30, 21))
    (tmp_path / "web-old.raw").write_bytes(web.read_bytes())
    make_disk(web, size=4 << 20, seed=5)
    new = backup(repo, "web", web, when=datetime.datetime(2026, 12, 1, 21))
    dbsnap = backup(repo, "db", db, when=datetime.datetime(2026, 12, 1, 21))
    age(tmp_path / "repo", 3 * 3600)
    return repo, old, new, dbsnap


def _packs(repo_path):
    return sorted(os.path.join(d, f) for d, _sub, files in os.walk(os.path.join(str(repo_path), "packs"))
                  for f in files)


# -- 4. a record of a newer format reads as DAMAGED; prune and GC must keep what it uses ----------------------------

def test_a_record_of_a_newer_format_is_not_damage_and_keeps_its_chunks(tmp_path):
    """A newer hotvcb on another host wrote db's record in format 2. verify called it DAMAGED (exit 4) and sent
    the admin to restore from elsewhere; it is a good backup this hotvcb cannot read: verify says so ("written by
    a newer hotvcb (format 2)", upgrade), exit 3 (not checked)."""
    repo_path = tmp_path / "repo"
    _repo, old, new, dbsnap = _two_vms(tmp_path)

    def newer(record):
        record["version"] = 2
    _edit_record(repo_path, dbsnap, newer)
    r = cli("verify", "--repo", repo_path)
    out = r.stdout + r.stderr
    assert r.returncode == 3, out
    assert not [line for line in r.stdout.splitlines() if line.startswith("DAMAGED")], out
    assert "written by a newer hotvcb (format 2" in out and "upgrade" in out, out
