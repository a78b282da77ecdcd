"""Outsider round s30 (second pass on the repository): records that do not read, prune's way out, and the per-host
last-run files, tried as an admin would. Each defect is a strict xfail asserting the right behaviour.

Tiny disks (4 MiB); one simulated host per test where a host is needed.
"""

import json
import os
import subprocess

import pytest

from repotool import PYTHON, ROOT, cli, edit_record, record_path, two_vms
from simhost import backed_up_into_repository, hotvcb, needs_root, set_version, write_conf


# -- 1. a record whose disk size is not its index's still blocks every VM's prune -----------------------------------

def test_a_record_whose_size_disagrees_with_its_index_does_not_block_every_vms_prune(tmp_path):
    """db's record says its disk is 2 MiB, its index 4 MiB (a hand edit, a faulty writer). docs/repository.md lists
    exactly this under "Records that do not read" as a *damaged* record: prune applies the rules to what reads, GC
    does not run, exit 3, naming the record and the way out (move snapshots/<id> aside); `--dry-run` says so
    beforehand. Instead `prune --keep-last 1` keeps the damaged db record as db's backup, reads its index with GC,
    and refuses the whole prune (exit 1, one line about db's disk size): web's old backups stay for ever, which is
    the very failure the 2026-12-04 change set out to end. The dry run meanwhile says nothing at all (exit 0)."""
    repo_path = tmp_path / "repo"
    _repo, old, new, dbsnap = two_vms(tmp_path)

    def halve(record):
        record["disks"][0]["size"] = 2 << 20
    edit_record(repo_path, dbsnap, halve)
    r = cli("prune", "--repo", repo_path, "--keep-last", "1", "--dry-run")
    assert r.returncode == 3 and "the prune would collect no garbage" in r.stderr, r.stdout + r.stderr
    assert "snapshots/%s" % dbsnap.id in r.stderr, r.stdout + r.stderr
    r = cli("prune", "--repo", repo_path, "--keep-last", "1")
    out = r.stdout + r.stderr
    assert r.returncode == 3 and "Traceback" not in out, out
    assert not os.path.exists(record_path(repo_path, old)), out  # web's old backup went
    assert os.path.exists(record_path(repo_path, new)) and os.path.exists(record_path(repo_path, dbsnap))
    assert "garbage collection did not run" in r.stderr and "snapshots/%s" % dbsnap.id in r.stderr, out
    assert "move the file" in r.stderr, out


# -- 2. a record that cannot be read right now is called damaged, and the admin told to move it aside -------------

@needs_root
def test_a_record_this_run_cannot_read_is_not_sent_aside_as_damaged(tmp_path):
    """One record of db is unreadable to this run: here its mode is 000 and the run lacks CAP_DAC_OVERRIDE (as on
    an NFS share with root_squash, a file another host wrote with another owner); the same path is taken by an
    I/O error on a flaky NFS mount. The record itself is intact. `prune` says "cannot read ... Permission denied:
    no backup restores from it ...; to collect garbage again, move the file out of the repository's snapshots/
    folder ..., and the next prune frees the chunks no other backup uses": an admin who follows it has GC delete
    a good backup's chunks. docs/repository.md calls damaged only a record that is not JSON, lacks a field, has
    one of the wrong kind or a size not its index's; one that cannot be read must be named as such (fix access,
    run again), never sent aside as damage."""
    repo_path = tmp_path / "repo"
    _repo, _old, _new, dbsnap = two_vms(tmp_path)
    os.chmod(record_path(repo_path, dbsnap), 0)
    r = subprocess.run(["setpriv", "--inh-caps=-dac_override,-dac_read_search",
                        "--bounding-set=-dac_override,-dac_read_search", PYTHON, "-m", "hotvcb", "prune", "--repo",
                        str(repo_path), "--keep-last", "1"], capture_output=True, text=True, cwd=ROOT, timeout=60,
                       env=dict(os.environ, PYTHONPATH=ROOT))
    out = r.stdout + r.stderr
    assert "Permission denied" in r.stderr, out  # the record is named with why it did not read
    assert "move the file" not in r.stderr and "no backup restores from it" not in r.stderr, out


# -- 3. status on a newer hotvcb's record: "never backed up", not the line the docs promise -----------------------

REPO = "/vmfs/volumes/backup/repo"


def _status(host, conf):
    r = hotvcb(host, "status", "-g", conf, "--json")
    return r, {c["name"]: c for c in json.loads(r.stdout)["checks"] if c["kind"] == "backup"}


@needs_root
def test_status_says_a_record_a_newer_hotvcb_wrote_is_one(host, tmp_path):
    """db's backup was written by a newer hotvcb (format 2); this hotvcb's `verify` says NOT CHECKED ... written by
    a newer hotvcb ...: upgrade hotvcb. docs/repository.md ("Records that do not read") promises that `list`,
    `restore` and `status` leave it out *with that line*. `status` instead calls db "never backed up into
    /vmfs/volumes/backup/repo" (CRIT) and adds "1 backup record(s) in the repository do not read, maybe this
    VM's newest (hotvcb verify --repo names them)": nowhere a newer hotvcb, nowhere the way out (upgrade). The
    admin on the pager reads a VM that was never backed up and a damaged repository."""
    conf = backed_up_into_repository(host, REPO, "db", "2M", tmp_path / "work")
    snaps = host.real(REPO + "/snapshots")
    (name,) = os.listdir(snaps)
    set_version(os.path.join(snaps, name), 2)
    r, checks = _status(host, conf)
    db = checks["db"]
    assert "newer hotvcb" in db["message"] and "upgrade" in db["message"], db
    text = hotvcb(host, "status", "-g", conf)
    assert "newer hotvcb" in text.stdout + text.stderr, text.stdout + text.stderr


# -- 4. a reinstalled host (new system id) loses its VMs' failed-run records -----------------------------------------

@needs_root
def test_a_reinstalled_host_still_sees_its_vms_failed_last_run(host, tmp_path):
    """web backs up into the repository, then its next backup fails (snapshot refused): `status` says WARN, last run
    was error. The admin then reinstalls ESXi on the box (same host name, the VM re-registered from its .vmx, so
    the same uuid.bios; the repository still counts web's backups as this VM's by that uuid) and checks status:
    OK. The failed run was recorded in last-run/web/.hotvcb-last-run.esxi01.<16 hex of the old system UUID>.json,
    and status now looks only for the new id's file (or the name-only file of hotvcb before 2026-12-04). Until
    today the file was keyed on the host name and survived a reinstall; now a failure is hidden by it. status
    should still find the VM's own record (it names the VM's uuid) written under the host's earlier system id."""
    from esxisim.toolgen import upper

    host.create_vm("web", "datastore1", [{"size": "2M"}], power="on")
    conf = write_conf(host, VM_BACKUP_REPOSITORY=REPO)
    r = hotvcb(host, "backup", "-m", "web", "-g", conf, "-w", tmp_path / "work")
    assert r.returncode == 0, r.stdout + r.stderr
    host.set_fault("snapshot.create", "fail")
    r = hotvcb(host, "backup", "-m", "web", "-g", conf, "-w", tmp_path / "work")
    assert r.returncode != 0, r.stdout + r.stderr
    host.clear_faults()
    r, checks = _status(host, conf)
    assert r.returncode == 1 and checks["web"]["severity"] == "WARN", checks["web"]
    esx_conf = os.path.join(upper(host, "etc"), "vmware", "esx.conf")
    with open(esx_conf, "w") as f:  # the reinstall: ESXi makes a new system UUID at its first boot
        f.write('/system/uuid = "5f0c1234-aaaa-bbbb-cccc-001122334455"\n')
    r, checks = _status(host, conf)
    web = checks["web"]
    assert web["severity"] == "WARN" and "last run was error" in web["message"], web
    assert r.returncode == 1
