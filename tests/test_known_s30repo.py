"""Known behaviours, stop 30 (the deduplicating repository): outside testers' notes pinned through the CLI,
one test per defect.

Tiny disks; one simulated host per test where a host is needed.
"""

import json
import os
import time

from esxisim import proclog
from repotool import backup, cli, edit_record, make_disk, new_repo, two_vms
from simhost import hotvcb, needs_root, write_conf

from hotvcb.repo.repository import open_path


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
    edit_record(tmp_path / "repo", snap, shrink)
    r = cli("verify", "--repo", tmp_path / "repo")
    damaged = [line for line in r.stdout.splitlines() if line.startswith("DAMAGED")]
    assert r.returncode == 4, r.stdout + r.stderr
    assert any(snap.id in line and "disk.raw" in line and "16777216" in line and "25165824" in line
               for line in damaged), r.stdout + r.stderr
    r = cli("restore", "--repo", tmp_path / "repo", snap.id, "--to", tmp_path / "out")
    assert r.returncode == 1 and "disk.raw" in r.stderr and "25165824" in r.stderr, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    assert not os.path.exists(tmp_path / "out") and not os.path.exists(str(tmp_path / "out") + ".hotvcb-restoring")


# -- 3. one damaged record of another VM blocks prune for every VM, with no way out said --------------------------

def _packs(repo_path):
    return sorted(os.path.join(d, f) for d, _sub, files in os.walk(os.path.join(str(repo_path), "packs"))
                  for f in files)


def test_a_damaged_record_of_another_vm_lets_prune_drop_backups_and_says_how_to_get_gc_back(tmp_path):
    """db's only record is damaged (a torn copy, a bad sector). `prune --keep-last 1` refused for every VM, and
    neither the message nor the docs said what to do: web's old backups piled up for ever. Now prune drops what
    the rules drop (records only: no chunk goes, GC must know every chunk a backup uses), says that garbage
    collection did not run, names the record and how to get out (move it out of snapshots/), exit 3; once it is
    moved aside, prune collects as before."""
    repo_path = tmp_path / "repo"
    _repo, old, new, dbsnap = two_vms(tmp_path)
    record = os.path.join(str(repo_path), "snapshots", dbsnap.id)
    os.chmod(record, 0o644)
    with open(record, "w") as f:
        f.write('{"format": "hotvcb-snapshot", "version": 1, "id": "')  # torn
    packs = _packs(repo_path)
    r = cli("prune", "--repo", repo_path, "--keep-last", "1", "--dry-run")
    assert r.returncode == 3 and "the prune would collect no garbage" in r.stderr, r.stdout + r.stderr
    r = cli("prune", "--repo", repo_path, "--keep-last", "1")
    out = r.stdout + r.stderr
    assert r.returncode == 3 and "Traceback" not in out, out
    assert not os.path.exists(os.path.join(str(repo_path), "snapshots", old.id)), out  # web's old backup went
    assert os.path.exists(os.path.join(str(repo_path), "snapshots", new.id))
    assert _packs(repo_path) == packs and os.path.exists(record)  # nothing a damaged record may use is deleted
    assert "garbage collection did not run" in r.stderr and "snapshots/%s" % dbsnap.id in r.stderr, out
    assert "move the file out of the repository's snapshots/ folder" in r.stderr, out
    aside = tmp_path / "damaged-record"
    os.rename(record, str(aside))  # what the message tells the admin to do
    r = cli("prune", "--repo", repo_path, "--keep-last", "1")
    assert r.returncode == 0 and "garbage collection:" in r.stdout, r.stdout + r.stderr
    assert _packs(repo_path) != packs


def test_prune_refuses_before_it_drops_a_backup_where_a_kept_ones_index_is_damaged(tmp_path):
    """The other side of proceeding past a damaged record: a kept backup whose index is gone must still refuse
    the prune before it removes the older whole backup (it would leave the VM with no backup that restores)."""
    repo_path = tmp_path / "repo"
    _repo, old, new, dbsnap = two_vms(tmp_path)
    os.chmod(os.path.join(str(repo_path), "snapshots", dbsnap.id), 0o644)
    with open(os.path.join(str(repo_path), "snapshots", dbsnap.id), "w") as f:
        f.write("garbage")
    os.unlink(os.path.join(str(repo_path), "indexes", new.id + ".0"))
    r = cli("prune", "--repo", repo_path, "--keep-last", "1")
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stdout + r.stderr
    assert os.path.exists(os.path.join(str(repo_path), "snapshots", old.id))


# -- 4. a record of a newer format reads as DAMAGED; prune and GC must keep what it uses ----------------------------

def test_a_record_of_a_newer_format_is_not_damage_and_keeps_its_chunks(tmp_path):
    """A newer hotvcb on another host wrote db's record in format 2. verify called it DAMAGED (exit 4) and sent
    the admin to restore from elsewhere; it is a good backup this hotvcb cannot read: verify says so ("written by
    a newer hotvcb (format 2)", upgrade), exit 3 (not checked), and prune keeps every chunk it may use and does
    not tell the admin to move it aside."""
    repo_path = tmp_path / "repo"
    _repo, old, new, dbsnap = two_vms(tmp_path)

    def newer(record):
        record["version"] = 2
    edit_record(repo_path, dbsnap, newer)
    r = cli("verify", "--repo", repo_path)
    out = r.stdout + r.stderr
    assert r.returncode == 3, out
    assert not [line for line in r.stdout.splitlines() if line.startswith("DAMAGED")], out
    assert "written by a newer hotvcb (format 2" in out and "upgrade" in out, out
    packs = _packs(repo_path)
    r = cli("prune", "--repo", repo_path, "--keep-last", "1")
    out = r.stdout + r.stderr
    assert r.returncode == 3 and "upgrade" in r.stderr and "move the file" not in r.stderr, out
    assert _packs(repo_path) == packs

    def older(record):
        record["version"] = 1
    edit_record(repo_path, dbsnap, older)  # the upgraded hotvcb reads it: its backup restores whole
    r = cli("restore", "--repo", repo_path, dbsnap.id, "--to", tmp_path / "out")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "out" / "db.raw").read_bytes() == (tmp_path / "db.raw").read_bytes()


# -- 5. two hosts named `localhost` share one last-run file per VM in a repository ---------------------------------

def _status_of(host, conf, vm):
    r = hotvcb(host, "status", "-g", conf, "--json")
    return {c["name"]: c for c in json.loads(r.stdout)["checks"] if c["kind"] == "backup"}[vm]


@needs_root
def test_two_hosts_named_localhost_keep_their_own_last_run_record_in_a_shared_repository(tmp_path):
    """Two ESXi hosts left with ESXi's default name `localhost` back up into one repository on a shared NFS
    volume, each its own VM `web`. Host a's `web` fails tonight, then host b's: both records went to
    last-run/web/.hotvcb-last-run.localhost.json, b's overwrote a's, and a's status, which leaves out a
    record naming another VM's uuid, said OK: a's failure was gone. Each host now keeps its own record (named
    by its system id, as the repository tells hosts apart), and one written under the old name still reads."""
    from simhost import Host, SHARED_VOLUME

    nfs = tmp_path / "nfs"
    nfs.mkdir()
    hosts = []
    try:
        for n in ("a", "b"):
            h = Host.create(str(tmp_path / n), version="7.0.3", hostname="localhost", nfs_root=str(nfs), crond=False)
            hosts.append(h)
            h.add_datastore("datastore1", 2 << 30, vmfs=6)
            h.add_nfs("nfsbackup", "10.0.0.5", "/export", 4 << 30)
            h.create_vm("web", "datastore1", [{"size": "2M"}], power="on")
        a, b = hosts
        os.makedirs(a.real(SHARED_VOLUME))
        repo = SHARED_VOLUME + "/repo"
        conf_a, conf_b = (write_conf(h, VM_BACKUP_REPOSITORY=repo) for h in hosts)
        for h, conf in ((a, conf_a), (b, conf_b)):
            r = hotvcb(h, "backup", "-m", "web", "-g", conf, "-w", tmp_path / "work")
            assert r.returncode == 0, r.stdout + r.stderr
        a.set_fault("snapshot.create", "fail")
        r = hotvcb(a, "backup", "-m", "web", "-g", conf_a, "-w", tmp_path / "work")
        assert r.returncode != 0, r.stdout + r.stderr
        assert _status_of(a, conf_a, "web")["severity"] == "WARN"
        b.set_fault("snapshot.create", "fail")
        r = hotvcb(b, "backup", "-m", "web", "-g", conf_b, "-w", tmp_path / "work")
        assert r.returncode != 0, r.stdout + r.stderr
        for h, conf in ((a, conf_a), (b, conf_b)):
            web = _status_of(h, conf, "web")
            assert web["severity"] == "WARN" and "last run was error" in web["message"], web
        records = os.listdir(a.real(repo + "/last-run/web"))
        assert len(records) == 2, records
        # a record an older hotvcb wrote under the host's name alone still reads
        folder = a.real(repo + "/last-run/web")
        a.clear_faults()
        for name in records:
            os.unlink(os.path.join(folder, name))
        assert _status_of(a, conf_a, "web")["severity"] == "OK"
        uuid = open_path(a.real(repo)).snapshots("web")[0].record["vm_uuid"]
        with open(os.path.join(folder, ".hotvcb-last-run.localhost.json"), "w") as f:
            f.write(json.dumps({"vm": "web", "host": "localhost", "vm_uuid": uuid, "time": int(time.time()) + 2,
                                "result": "error", "message": "pre-backup hook of web failed (exit 1)"}) + "\n")
        assert _status_of(a, conf_a, "web")["severity"] == "WARN"
    finally:
        for h in hosts:
            h.stop()
