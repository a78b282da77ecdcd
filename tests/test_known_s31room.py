"""Testers' notes (session 31), pinned through the public command line: what the room check counts for a
virtual RDM, parallel clones into one repository's datastore, a CD-ROM's ISO in the VM's own folder after a
restore under a new name, and a suspended VM's state file."""

import os
import re
import subprocess
import time

import pytest

from simhost import hotvcb, make_host, needs_root, write_conf


@needs_root
def test_room_for_a_thin_copy_of_a_virtual_rdm_is_the_luns_size_not_the_mapping_files(host, tmp_path):
    """`db` has an 8 MiB virtual-mode RDM. On VMFS its mapping file allocates next to nothing (esxisim's
    fresh stand-in: a hole), whatever the LUN holds, and `vmkfstools -i -d thin` writes the LUN's data, up to
    its whole size. The room check counted the mapping file's allocation (0 bytes), so a backup started
    onto a datastore with far less room than the LUN could need, and ran it full. The need counted is the
    LUN's virtual size, for a folder backup and a repository's temporary clone alike (one estimate)."""
    host.create_vm("db", "datastore1", [{"size": "1M"}, {"size": "8M", "rdm": "virtual"}], power="on")
    for keys in ({}, {"VM_BACKUP_REPOSITORY": "/vmfs/volumes/backup/repo"}):
        conf = write_conf(host, **keys)
        r = hotvcb(host, "backup", "-m", "db", "-g", conf, "-w", tmp_path / "work", "-d", "dryrun")
        assert r.returncode == 0, r.stdout + r.stderr
        [line] = [l for l in (r.stdout + r.stderr).splitlines() if "VMDK:" in l and "db_1.vmdk" in l]
        assert re.search(r"(needs|at most) 8(\.0)? ?MiB", line), line


@pytest.fixture
def small_host(tmpfs):
    """A simulated host whose files all lie on a tmpfs: a datastore filled to its simulated capacity costs
    no disk (esxisim binds its /vmfs without the mounts under it, so a tmpfs on one datastore is not seen)."""
    h = make_host(tmpfs("esx", "96m") / "host")
    yield h
    h.stop()


@needs_root
def test_parallel_temporary_clones_into_one_repository_reserve_their_room_and_the_second_waits(small_host, tmp_path):
    """BACKUP_PARALLEL=2 into a repository on a small datastore; `a` and `b` each run on a user's snapshot,
    so each disk is first cloned to a temporary thin disk in the repository's tmp/. The second night (their
    chunks stored already) each clone needs 80 % of the free space: both checks passed against the same free
    bytes, both clones ran at once, and the datastore filled under them. The first clone now holds its room
    until its temporary disk is gone; the second waits for it, the log naming both, and both are backed up."""
    host = small_host
    for name, ds in (("a", "datastore1"), ("b", "ds5")):
        host.create_vm(name, ds, [{"size": "4M"}], power="on", snapshots=("s1",))
    host.add_datastore("repods", 32 << 20)
    conf = write_conf(host, VM_BACKUP_REPOSITORY="/vmfs/volumes/repods/repo", BACKUP_PARALLEL=2,
                      ALLOW_VMS_WITH_SNAPSHOTS_TO_BE_BACKEDUP=1)
    r = hotvcb(host, "backup", "-a", "-g", conf, "-w", tmp_path / "work")
    assert r.returncode == 0, r.stdout + r.stderr
    r = hotvcb(host, "backup", "-a", "-g", conf, "-w", tmp_path / "work", "-d", "dryrun")
    need = max(float(n) for n in re.findall(r"VMDK: .* at most ([\d.]+) MiB", r.stdout + r.stderr))
    with open(host.real("/vmfs/volumes/repods/someone-elses-file"), "wb") as f:
        os.posix_fallocate(f.fileno(), 0, host.ds_free("repods") - int(need / 0.8 * (1 << 20)))
    host.set_fault("clone.delay", "2")  # the two clones overlap, as two VMs' clones of real size do
    time.sleep(1.05)  # backup names have one-second resolution
    r = hotvcb(host, "backup", "-a", "-g", conf, "-w", tmp_path / "work")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert re.search(r"(a|b): waiting for room on .*repods.* \((b|a)\)", out), out
