"""An outsider's attacks on the deduplicating repository (backup/restore/list/verify/prune --repo),
through the public CLI: a disk that fails, a full or read-only repository, garbage in the config and
in a snapshot record, a truncated pack, prune's dry run and garbage keep values, a restore into a
folder on a missing volume."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time

import pytest
from repotool import PYTHON, MiB, backup, cli, corrupt_one_chunk, make_disk, new_repo, one_clear_line, same
from simhost import hotvcb as host_hotvcb
from simhost import needs_root, snapshot_names, unmounted_share, write_conf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = "/vmfs/volumes/backup/repo"



def tree(path):
    """Every file and folder under path with its bytes and mtime: a dry run must leave all of it alone."""
    out = {}
    for folder, dirs, files in os.walk(str(path)):
        for name in dirs + files:
            p = os.path.join(folder, name)
            st = os.lstat(p)
            data = b""
            if os.path.isfile(p):
                with open(p, "rb") as f:
                    data = hashlib.sha256(f.read()).digest()
            out[os.path.relpath(p, str(path))] = (st.st_size, st.st_mtime_ns, data)
    return out


@pytest.fixture
def two_backups(tmp_path):
    a_disk, b_disk = tmp_path / "a.raw", tmp_path / "b.raw"
    make_disk(a_disk, size=3 * MiB + 1234)  # not a multiple of the chunk size
    make_disk(b_disk, size=3 * MiB, seed=9)
    repo = new_repo(tmp_path / "repo")
    return repo, backup(repo, "A", a_disk), backup(repo, "B", b_disk), a_disk, b_disk


# --- a backup that lost a disk is not a backup ----------------------------------------------------


@needs_root
def test_a_backup_whose_second_disk_failed_is_not_recorded_as_a_whole_backup(host, tmp_path):
    """A partly failed folder backup is STATUS.warn and never `good`; in the repository it was
    recorded like any other, so `restore --latest` gave back one disk of two with exit 0."""
    vmid = host.create_vm("two", "datastore1", [{"size": "4M"}, {"size": "4M", "format": "2gbsparse"}])
    host.power_on(vmid)
    r = host_hotvcb(host, "backup", "-m", "two", "-g", write_conf(host), "--repo", REPO, "-w", tmp_path / "work")
    assert r.returncode not in (0, 3), r.stdout + r.stderr  # not "OK", not "some disks failed" (a usable backup)
    assert "two_1.vmdk" in r.stdout + r.stderr and "Traceback" not in r.stdout + r.stderr
    assert snapshot_names(host, vmid) == [] and host.power_state(vmid) == "on"
    listed = host_hotvcb(host, "list", "--repo", REPO, "--json")
    assert listed.returncode == 0 and json.loads(listed.stdout)["backups"] == [], listed.stdout
    r = host_hotvcb(host, "restore", "--repo", REPO, "--latest", "two", "--to", "/vmfs/volumes/datastore1/two-r")
    assert r.returncode == 1 and "no backup of 'two'" in r.stderr, r.stdout + r.stderr
    assert not os.path.exists(host.real("/vmfs/volumes/datastore1/two-r"))


# --- a full repository ------------------------------------------------------------------------------


@needs_root
def test_a_full_repository_fails_the_vm_naming_the_repository_and_the_next_backup_succeeds(host, tmp_path, tmpfs):
    """ENOSPC while writing a pack was reported as `cannot read <the VM's -flat disk>`."""
    full = tmpfs("full", "256k")
    repo = str(full / "repo")
    vmid = host.create_vm("big", "datastore1", [{"size": "8M"}])
    host.power_on(vmid)
    conf = write_conf(host)
    r = host_hotvcb(host, "backup", "-m", "big", "-g", conf, "--repo", repo, "-w", tmp_path / "work")
    out = r.stdout + r.stderr
    assert r.returncode == 6, out  # the only VM failed
    assert "No space left on device" in out and repo in out and "cannot read" not in out, out
    assert "Traceback" not in out
    assert snapshot_names(host, vmid) == [] and host.power_state(vmid) == "on"
    assert os.listdir(os.path.join(repo, "tmp")) == [] and not os.path.exists(os.path.join(repo, "snapshots"))
    subprocess.run(["mount", "-o", "remount,size=64m", str(full)], check=True)
    r = host_hotvcb(host, "backup", "-m", "big", "-g", conf, "--repo", repo, "-w", tmp_path / "work")
    assert r.returncode == 0, r.stdout + r.stderr
    v = cli("verify", "--repo", repo)
    assert v.returncode == 0 and "1 backup(s)" in v.stdout, v.stdout + v.stderr


# --- a read-only repository -------------------------------------------------------------------------


def test_verify_of_a_read_only_repository_still_reports_what_it_found(tmp_path, tmpfs):
    """verify stopped at the first `verified/` marker it could not write: exit 1, no finding shown,
    so damage in a read-only replica went unreported."""
    ro = tmpfs("ro", "32m")
    disk = tmp_path / "disk.raw"
    make_disk(disk, size=3 * MiB)
    repo = new_repo(ro / "repo")
    first = backup(repo, "Wébserver \"prod\" 'eu'", disk)
    subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
    r = cli("verify", "--repo", ro / "repo")
    assert r.returncode == 0 and "OK" in r.stdout and "read-only" in r.stderr.lower(), r.stdout + r.stderr
    r = cli("restore", "--repo", ro / "repo", "--latest", "Wébserver \"prod\" 'eu'", "--to", tmp_path / "out")
    assert r.returncode == 0 and same(tmp_path / "out" / "disk.raw", disk), r.stdout + r.stderr
    subprocess.run(["mount", "-o", "remount,rw", str(ro)], check=True)
    digest = corrupt_one_chunk(ro / "repo", repo, first)
    subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
    r = cli("verify", "--repo", ro / "repo")
    assert r.returncode == 4, r.stdout + r.stderr
    assert any(digest.hex() in l and first.id in l for l in r.stdout.splitlines() if l.startswith("DAMAGED")), r.stdout


# --- garbage in the repository ----------------------------------------------------------------------


@pytest.mark.parametrize("garbage", [
    {"disks": [1], "utc": "yesterday"}, {"disks": [{"name": "x.vmdk"}], "vm": 5},
    {"files": [{"name": "a.vmx", "size": 1, "chunks": ["zz"]}]},
], ids=["disk-int", "disk-without-index", "file-chunk-not-hex"])
def test_garbage_in_a_snapshot_record_is_named_never_an_internal_error(two_backups, tmp_path, garbage):
    repo, a, b, _a_disk, _b_disk = two_backups
    path = tmp_path / "repo" / "snapshots" / a.id
    record = json.loads(path.read_text())
    record.update(garbage)
    path.write_text(json.dumps(record))
    r = cli("verify", "--repo", tmp_path / "repo")
    assert r.returncode == 4, r.stdout + r.stderr
    assert "internal error" not in r.stdout + r.stderr
    assert any("snapshots/" + a.id in l and "damaged" in l for l in r.stdout.splitlines() if l.startswith("DAMAGED"))
    r = cli("restore", "--repo", tmp_path / "repo", a.id, "--to", tmp_path / "out")
    assert r.returncode == 1 and "snapshots/" + a.id in r.stderr, r.stdout + r.stderr
    one_clear_line(r)
    assert not os.path.exists(tmp_path / "out")


def test_a_truncated_pack_hurts_only_the_backups_that_need_it(two_backups, tmp_path):
    """One truncated pack made every restore fail (also of backups that do not need it) and every
    later backup fail: the chunk map refused the whole repository. And prune's GC left the pack
    alone without a word (its log went nowhere)."""
    repo, a, b, a_disk, b_disk = two_backups
    where = repo.chunk_map()
    only_b = sorted({where[d].pack for _n, d in repo.disk_index(b.disks[0]).entries}
                    - {where[d].pack for _n, d in repo.disk_index(a.disks[0]).entries})[0]
    with open(str(tmp_path / "repo" / only_b), "r+b") as f:
        f.truncate(os.path.getsize(str(tmp_path / "repo" / only_b)) // 2)
    r = cli("restore", "--repo", tmp_path / "repo", a.id, "--to", tmp_path / "a")
    assert r.returncode == 0 and same(tmp_path / "a" / "a.raw", a_disk), r.stdout + r.stderr
    r = cli("restore", "--repo", tmp_path / "repo", b.id, "--to", tmp_path / "b")
    assert r.returncode == 1 and b.id in r.stderr and only_b in r.stderr, r.stdout + r.stderr
    one_clear_line(r)
    assert not os.path.exists(tmp_path / "b") and not os.path.exists(str(tmp_path / "b") + ".hotvcb-restoring")
    r = cli("verify", "--repo", tmp_path / "repo")
    assert r.returncode == 4 and only_b in r.stdout and b.id in r.stdout, r.stdout
    r = cli("prune", "--repo", tmp_path / "repo", "--keep-last", 1)  # GC leaves the pack alone: and says so
    assert r.returncode == 0 and "leaving %s alone" % only_b in r.stdout, r.stdout + r.stderr
    healed = backup(repo, "B", b_disk)  # stores what only the damaged pack held once more
    r = cli("restore", "--repo", tmp_path / "repo", healed.id, "--to", tmp_path / "b2")
    assert r.returncode == 0 and same(tmp_path / "b2" / "b.raw", b_disk), r.stdout + r.stderr


CONFIGS = {"chunk-0": {"chunk_size": 0, "backup_limit_seconds": float("nan")}, "pack-0": {"pack_size": 0},
           "newer": {"version": 2}}


@pytest.mark.parametrize("garbage", sorted(CONFIGS))
def test_garbage_in_the_repository_config_is_refused_in_one_line(two_backups, tmp_path, garbage):
    _repo, a, _b, _a_disk, _b_disk = two_backups
    path = tmp_path / "repo" / "config"
    config = json.loads(path.read_text())
    config.update(CONFIGS[garbage])
    path.write_text(json.dumps(config))
    r = cli("restore", "--repo", tmp_path / "repo", a.id, "--to", tmp_path / "out")
    # which config: the repository's, not the user's hotvcb.conf
    assert r.returncode == 1 and "repository %s: config" % (tmp_path / "repo") in r.stderr, r.stdout + r.stderr
    one_clear_line(r)
    assert not os.path.exists(tmp_path / "out")


@needs_root
def test_a_backup_into_a_repository_with_a_garbage_config_fails_before_any_snapshot(host, tmp_path):
    """chunk_size 3 in the config made the backup hang chunking the disk 3 bytes at a time."""
    vmid = host.create_vm("db", "datastore1", [{"size": "4M"}])
    host.power_on(vmid)
    new_repo(host.real(REPO))
    path = host.real(REPO + "/config")
    with open(path) as f:
        config = json.load(f)
    config["chunk_size"] = 3
    with open(path, "w") as f:
        json.dump(config, f)
    r = host_hotvcb(host, "backup", "-m", "db", "-g", write_conf(host), "--repo", REPO, "-w", tmp_path / "w",
                    timeout=60)
    assert r.returncode == 6 and "chunk size 3" in r.stdout + r.stderr, r.stdout + r.stderr
    assert snapshot_names(host, vmid) == [] and "Traceback" not in r.stdout + r.stderr


# --- prune ------------------------------------------------------------------------------------------


def test_prune_dry_run_and_refused_keep_values_change_nothing_byte_for_byte(two_backups, tmp_path):
    """Also: of two backups of a VM made in one second (times have one-second resolution), keep-last 1
    kept the older one and removed the newer."""
    repo, a, b, _a_disk, b_disk = two_backups
    newer = backup(repo, "B", b_disk, when=b.time)
    before = tree(tmp_path / "repo")
    r = cli("prune", "--repo", tmp_path / "repo", "--keep-last", 1, "--dry-run")
    assert r.returncode == 0 and "nothing removed" in r.stdout, r.stdout + r.stderr
    assert ("remove   %s" % b) in r.stdout and ("keep     %s" % newer) in r.stdout, r.stdout
    r = cli("prune", "--repo", tmp_path / "repo", "--keep-last", 1, "-m", "b")  # a typo: it is "B"
    assert r.returncode == 1 and "no backup of 'b'" in r.stderr, r.stdout + r.stderr  # not "removed 0 backup(s)"
    for bad in (("--keep-last", "-1"), ("--keep-last", "0")):
        r = cli("prune", "--repo", tmp_path / "repo", *bad)
        assert r.returncode == 1, (bad, r.stdout + r.stderr)
        assert "Traceback" not in r.stderr and "internal error" not in r.stderr
    assert tree(tmp_path / "repo") == before


# --- restore ----------------------------------------------------------------------------------------


def test_restore_into_a_folder_on_a_missing_volume_creates_nothing(two_backups, tmp_path, tmpfs):
    """--to /vmfs/volumes/<typo>/web created the whole path (makedirs): on ESXi, in the ramdisk.
    (A restore that fills its target is refused and leaves nothing: that held.)"""
    _repo, a, _b, _a_disk, _b_disk = two_backups
    small = tmpfs("small", "512k")
    r = cli("restore", "--repo", tmp_path / "repo", a.id, "--to", small / "web")
    # refused before anything is written (the room is checked first), or by the file system on the way
    assert r.returncode == 1 and ("No space left on device" in r.stderr or "free there" in r.stderr), r.stderr
    assert os.listdir(str(small)) == [], r.stderr
    one_clear_line(r)
    r = cli("restore", "--repo", tmp_path / "repo", a.id, "--to", tmp_path / "unmounted" / "web")
    assert r.returncode == 1 and "does not exist" in r.stderr, r.stdout + r.stderr
    one_clear_line(r)
    assert not os.path.exists(tmp_path / "unmounted")
    (tmp_path / "exists").mkdir()
    r = cli("restore", "--repo", tmp_path / "repo", a.id, "--to", tmp_path / "exists")
    assert r.returncode == 1 and "never overwrites" in r.stderr and os.listdir(tmp_path / "exists") == []


def test_prune_stopped_by_sigterm_during_gc_gives_the_gc_lock_back(two_backups, tmp_path):
    """SIGTERM killed prune outright in GC: `locks/gc` stayed, and another host on the shared volume is
    refused GC until the lock is older than the grace period (a day by default)."""
    repo_path = tmp_path / "repo"
    # GC names each pack it cannot read, under its lock: with stdout unread, the pipe fills and GC blocks
    # there, so SIGTERM comes mid-GC (a FIFO among the objects no longer blocks anything: it is refused)
    junk = repo_path / "packs" / "ff"
    junk.mkdir(exist_ok=True)  # a real pack's name begins with ff once in 256 backups
    for i in range(1000):
        (junk / ("ff%062x" % i)).write_bytes(b"junk")
    proc = subprocess.Popen([PYTHON, "-m", "hotvcb", "prune", "--repo", str(repo_path), "--keep-last", "1"],
                            cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(str(repo_path / "locks" / "gc")) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 2 and "interrupted by SIGTERM" in err, (proc.returncode, out, err)
    assert not os.path.exists(str(repo_path / "locks" / "gc"))
    shutil.rmtree(str(junk))
    r = cli("prune", "--repo", repo_path, "--keep-last", "1")
    assert r.returncode == 0, r.stdout + r.stderr


@needs_root
def test_a_vm_named_with_quotes_and_umlauts_and_two_odd_disks_restores_whole(host, tmp_path):
    """A VM named with `"`: the stored descriptor names its extent without the quote (a quote cannot be
    inside the quoted name), restore wrote the data under the name with it; `--to` gave a VMDK whose
    extent is missing (exit 0), `--datastore` failed ("the snapshot chain is broken"). And a `-d dryrun`
    restore --datastore (or one to a name that exists) wrote the whole backup to the datastore first."""
    name = "Wé \"Q\" 'x' Ümlaut"
    vmid = host.create_vm(name, "datastore1", [{"size": "0"}, {"size": "1000K", "datastore": "ds5"}])  # 0 B; not 64K-aligned
    host.power_on(vmid)
    r = host_hotvcb(host, "backup", "-m", name, "-g", write_conf(host), "--repo", REPO, "-w", tmp_path / "work")
    assert r.returncode == 0, r.stdout + r.stderr
    r = host_hotvcb(host, "restore", "--repo", REPO, "--latest", name, "--to", "/vmfs/volumes/datastore1/r")
    assert r.returncode == 0, r.stdout + r.stderr
    for (_node, path, _mode), restored in zip(host.vm_disks(vmid), (name + ".vmdk", name + "_1.vmdk")):
        raw = tmp_path / "disk.raw"
        raw.write_bytes(host.read_disk(path))
        cmp = subprocess.run(["qemu-img", "compare", "-f", "vmdk", "-F", "raw",
                              host.real("/vmfs/volumes/datastore1/r/" + restored), str(raw)],
                             capture_output=True, text=True)
        assert cmp.returncode == 0, restored + ": " + cmp.stdout + cmp.stderr
    os.makedirs(host.real("/vmfs/volumes/ds5/taken"))
    ds5 = os.stat(host.real("/vmfs/volumes/ds5")).st_mtime_ns  # staging there and removing it changes it
    r = host_hotvcb(host, "restore", "--repo", REPO, "--latest", name, "--datastore", "ds5", "--name", "taken")
    assert r.returncode != 0 and "already exists" in r.stdout + r.stderr, r.stdout + r.stderr
    assert os.listdir(host.real("/vmfs/volumes/ds5/taken")) == []
    # a dry run, and a restore to a name that exists, used to stage the whole backup on the datastore first
    r = host_hotvcb(host, "restore", "-d", "dryrun", "--repo", REPO, "--latest", name, "--datastore", "ds5",
                    "--name", "fresh")
    assert r.returncode == 0 and "dry run" in r.stdout.lower(), r.stdout + r.stderr
    assert os.stat(host.real("/vmfs/volumes/ds5")).st_mtime_ns == ds5
    assert not [e for e in os.listdir(host.real("/vmfs/volumes/ds5")) if e.startswith(".hotvcb")]  # staging gone
    assert snapshot_names(host, vmid) == []


@needs_root
def test_a_backup_failing_before_its_first_disk_leaves_no_upload_in_the_repository(host, tmp_path):
    """The .vmx goes into a pack upload first; a VM failing before its disks (here: the snapshot)
    left that upload in tmp/ (RepoSink.fail never ran: the job only calls it for a folder)."""
    vmid = host.create_vm("db", "datastore1", [{"size": "4M"}])
    host.power_on(vmid)
    host.set_fault("snapshot.create", "fail")
    r = host_hotvcb(host, "backup", "-m", "db", "-g", write_conf(host), "--repo", REPO, "-w", tmp_path / "w")
    assert r.returncode == 6 and "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr
    assert os.listdir(host.real(REPO + "/tmp")) == [] and not os.path.exists(host.real(REPO + "/snapshots"))
    assert snapshot_names(host, vmid) == [] and host.power_state(vmid) == "on"


def test_one_damaged_record_does_not_stop_list_and_restore_of_the_other_backups(two_backups, tmp_path):
    """Garbage in one snapshot record made `list --repo` and every restore (by id or --latest) of
    every other backup fail: they read all records and stopped at the first damaged one."""
    _repo, a, b, _a_disk, b_disk = two_backups
    (tmp_path / "repo" / "snapshots" / a.id).write_bytes(b"\0garbage")
    r = cli("list", "--repo", tmp_path / "repo", "--json")
    assert r.returncode == 0 and [x["id"] for x in json.loads(r.stdout)["backups"]] == [b.id], r.stdout + r.stderr
    assert "snapshots/%s: damaged" % a.id in r.stderr
    r = cli("restore", "--repo", tmp_path / "repo", b.id[:-3], "--to", tmp_path / "b")
    assert r.returncode == 0 and same(tmp_path / "b" / "b.raw", b_disk), r.stdout + r.stderr
    r = cli("restore", "--repo", tmp_path / "repo", "--latest", "B", "--to", tmp_path / "latest")
    assert r.returncode == 0 and same(tmp_path / "latest" / "b.raw", b_disk), r.stdout + r.stderr


@needs_root
def test_a_repository_under_an_unmounted_share_is_refused_before_any_snapshot(host, tmp_path):
    """VM_BACKUP_VOLUME refuses a folder under an /etc/fstab mount point with nothing mounted; the
    repository took the empty mount point and created itself there, on the host's own disk. And a
    relative --repo was taken relative to wherever hotvcb runs (on ESXi: the ramdisk)."""
    point = unmounted_share(host)
    vmid = host.create_vm("db", "datastore1", [{"size": "4M"}])
    host.power_on(vmid)
    r = host_hotvcb(host, "backup", "-m", "db", "-g", write_conf(host, VM_BACKUP_REPOSITORY=point + "/repo"),
                    "-w", tmp_path / "w")
    assert r.returncode == 6 and "nothing is mounted there" in r.stdout + r.stderr, r.stdout + r.stderr
    assert os.listdir(host.real(point)) == [] and snapshot_names(host, vmid) == []
    # a relative --repo (VM_BACKUP_REPOSITORY must be absolute) landed wherever hotvcb was started
    relative = os.path.relpath(str(tmp_path / "rel"), ROOT)
    r = host_hotvcb(host, "backup", "-m", "db", "-g", write_conf(host), "--repo", relative, "-w", tmp_path / "w")
    assert r.returncode == 1 and "absolute path" in r.stderr, r.stdout + r.stderr
    assert not os.path.exists(str(tmp_path / "rel")) and snapshot_names(host, vmid) == []


def test_a_deleted_disk_index_is_named_by_verify_and_restore_leaves_nothing(tmp_path):
    """Withstood: kept because a restore that stopped at its second disk must never leave the first."""
    first, second = tmp_path / "first.raw", tmp_path / "second.raw"
    make_disk(first, size=2 * MiB)
    make_disk(second, size=2 * MiB, seed=4)
    repo = new_repo(tmp_path / "repo")
    snap = backup(repo, "two disks", first, second)
    os.unlink(str(tmp_path / "repo" / snap.disks[1]["index"]))
    r = cli("verify", "--repo", tmp_path / "repo")
    assert r.returncode == 4 and any(snap.id in l and snap.disks[1]["index"] in l for l in r.stdout.splitlines()
                                     if l.startswith("DAMAGED")), r.stdout
    r = cli("restore", "--repo", tmp_path / "repo", snap.id, "--to", tmp_path / "out")
    assert r.returncode == 1 and snap.disks[1]["index"] in r.stderr, r.stdout + r.stderr
    one_clear_line(r)
    assert not os.path.exists(tmp_path / "out") and not os.path.exists(str(tmp_path / "out") + ".hotvcb-restoring")
