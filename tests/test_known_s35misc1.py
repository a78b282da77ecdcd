"""Known behaviours of s35 pinned through the CLI: what `prune --dry-run` foresees of the prune's exit code, what
`status` says of a GC mark that does not read, where a `restore --to` of a missing id says so in its log, and
how rotation bounds the backups that ended with a warning."""

import os
import time

import pytest

from repotool import cli, two_vms
from simhost import backup_root, backups, hotvcb, needs_root, next_second, write_conf

REPO = "/vmfs/volumes/backup/repo"


# -- 1. prune --dry-run foresees the prune's exit code --------------------------------------------------------------

def _torn_record(repo_path, snap):
    record = os.path.join(str(repo_path), "snapshots", snap.id)
    os.chmod(record, 0o644)
    with open(record, "w") as f:
        f.write('{"format": "hotvcb-snapshot", "version": 1, "id": "')


def test_prune_dry_run_exits_3_where_the_prune_ends_in_a_warning(tmp_path):
    """A record that does not read stops the prune's GC: the prune exits 3. Its dry run warned of it and exited
    0, so the check an admin runs before the night read as OK."""
    _repo, _old, _new, dbsnap = two_vms(tmp_path)
    _torn_record(tmp_path / "repo", dbsnap)
    dry = cli("prune", "--repo", tmp_path / "repo", "--keep-last", "1", "--dry-run")
    assert dry.returncode == 3 and "the prune would collect no garbage" in dry.stderr, dry.stdout + dry.stderr
    assert "dry run: nothing removed" in dry.stdout
    real = cli("prune", "--repo", tmp_path / "repo", "--keep-last", "1")
    assert real.returncode == dry.returncode, real.stdout + real.stderr


def test_prune_dry_run_refuses_while_another_hosts_gc_holds_the_lock(tmp_path):
    """Another host's GC is at work (its fresh `locks/gc`): the prune refuses, exit 1; its dry run said
    "dry run: nothing removed", exit 0."""
    two_vms(tmp_path)
    locks = tmp_path / "repo" / "locks"
    locks.mkdir(exist_ok=True)
    (locks / "gc").write_text("run=0123456789ab machine=otherbox pid=4242 started=%d host=%s\n"
                              % (int(time.time()), "f" * 32))
    dry = cli("prune", "--repo", tmp_path / "repo", "--keep-last", "1", "--dry-run")
    assert dry.returncode == 1 and "another garbage collection" in dry.stderr, dry.stdout + dry.stderr
    assert "the prune would refuse" in dry.stderr and "remove " not in dry.stdout
    real = cli("prune", "--repo", tmp_path / "repo", "--keep-last", "1")
    assert real.returncode == 1 and "another garbage collection" in real.stderr, real.stdout + real.stderr


# -- 2. status names a GC mark that does not read --------------------------------------------------------------------

@needs_root
def test_status_names_a_gc_mark_that_does_not_read(host, tmp_path):
    """A `condemned/` mark holding garbage stops every backup into the repository and every prune; `verify`
    names it, `status` said OK."""
    host.create_vm("web", "datastore1", [{"size": "4M"}])
    conf = write_conf(host, VM_BACKUP_REPOSITORY=REPO)
    r = hotvcb(host, "backup", "-m", "web", "-g", conf, "-w", tmp_path / "work")
    assert r.returncode == 0, r.stdout + r.stderr
    condemned = os.path.join(host.real(REPO), "condemned")
    os.makedirs(condemned, exist_ok=True)
    with open(os.path.join(condemned, "1000-deadbeef"), "wb") as f:
        f.write(b"\x00garbage\xff")
    r = hotvcb(host, "status", "-g", conf)
    assert r.returncode != 0 and "condemned/1000-deadbeef" in r.stdout, r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr


# -- 3. restore --to of a missing id says so inside its log ---------------------------------------------------------

def test_restore_to_of_a_missing_id_says_so_inside_its_log(tmp_path):
    """`restore -g CONF <id> --to DIR -l LOG` with an id the repository does not hold: the error went to stderr
    alone, the log held no LOG START, no error, no final status (as every other restore failure has)."""
    two_vms(tmp_path)
    conf = tmp_path / "hotvcb.conf"
    conf.write_text("VM_BACKUP_REPOSITORY=%s\n" % (tmp_path / "repo"))
    log = tmp_path / "restore.log"
    r = cli("restore", "-g", conf, "nosuchid", "--to", tmp_path / "out", "-l", log)
    assert r.returncode == 1 and "no backup in the repository matches 'nosuchid'" in r.stderr, r.stdout + r.stderr
    lines = log.read_text().splitlines()
    at = [next((i for i, line in enumerate(lines) if what in line), -1)
          for what in ("LOG START", "error: no backup in the repository matches", "Final status: ERROR", "LOG END")]
    assert -1 not in at and at == sorted(at), lines
    assert not os.path.exists(str(tmp_path / "out"))


# -- 4. rotation bounds the backups that ended with a warning -------------------------------------------------------

@needs_root
def test_backups_ending_with_a_failed_disk_do_not_pile_up(host, tmp_path):
    """One disk of a VM fails every night: each backup is STATUS.warn (its other disk whole), none is good, and
    rotation, which deletes only behind the newest ROTATION_COUNT good backups, kept every one of them until
    the volume was full."""
    vm = "two disks"
    host.create_vm(vm, "datastore1", [{"size": "4M"}, {"size": "4M"}], power="on")
    host.set_fault("clone.fail_at", "50")
    host.set_fault("clone.match", vm + "_1.vmdk")
    conf = write_conf(host, VM_BACKUP_ROTATION_COUNT=2)
    for _ in range(4):
        next_second()
        r = hotvcb(host, "-m", vm, "-g", conf, "-w", tmp_path / "w")
        assert r.returncode == 8 and "completed with failed disk(s)" in r.stdout, r.stdout + r.stderr
    kept = backups(host, vm)
    assert len(kept) == 2, kept
    assert all(os.path.exists(os.path.join(backup_root(host, vm), b, "STATUS.warn")) for b in kept), kept
