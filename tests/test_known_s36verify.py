"""Known defects of s35, pinned in s36 (verify takes store/health.py's verdict before it reads a byte).

- A sealed backup (STATUS.ok) whose manifest's `files` was emptied (an edit, a script gone wrong): `list` calls it
  damaged ("disk file ... has no checksum in the manifest"), a restore refuses it, but `verify` printed
  "SKIPPED: failed backup, holds no data to check" and exited 0, its own rule for a failed backup.
- A FIFO put where a backup's qcow2 disk was: whatever reads the image's header for its backing file (an
  incremental's base: store/chain.py, asked by health, rotation, a libvirt incremental's choice of base) opened
  it and blocked for ever. `list` and `verify` must finish and call the backup damaged.
"""

import json
import os
import subprocess
import sys

import pytest

from sealedbuild import REPO, TIMEOUT, VM, hotvcb, listed, sealed

from hotvcb.store import manifest

STAMP = "2026-12-01_21-00-01"


def test_verify_calls_a_sealed_backup_whose_manifest_lost_its_checksums_damaged_as_list_does(tmp_path):
    folder = sealed(tmp_path / "vol", STAMP)
    path = os.path.join(folder, manifest.MANIFEST)
    with open(path) as f:
        data = json.load(f)
    data["files"] = {}
    with open(path, "w") as f:
        json.dump(data, f)
    item = listed(tmp_path, folder)
    assert not item["good"] and "no checksum in the manifest" in item["reason"], item  # the control: list
    v = hotvcb(tmp_path, "verify", folder)
    assert v.returncode == 6 and "DAMAGED" in v.out and "no checksum in the manifest" in v.out, v.out
    assert "SKIPPED" not in v.out, v.out


def test_a_fifo_in_place_of_a_backups_disk_is_damaged_to_list_and_verify_which_finish(tmp_path):
    folder = sealed(tmp_path / "vol", STAMP)
    disk = os.path.join(folder, "vda.qcow2")
    os.remove(disk)
    os.mkfifo(disk)
    item = listed(tmp_path, folder)
    assert not item["good"] and "vda.qcow2" in item["reason"], item
    v = hotvcb(tmp_path, "verify", VM)
    assert v.returncode == 6 and "DAMAGED" in v.out and "vda.qcow2" in v.out, v.out


def test_the_backing_file_of_a_fifo_is_refused_not_waited_for(tmp_path):
    """An incremental whose base's disk is a FIFO: following its chain (a libvirt incremental's choice of base,
    rotation's sparing of bases) reads each image's header in turn, and must refuse the FIFO at once."""
    base = sealed(tmp_path / "vol", STAMP)
    inc = sealed(tmp_path / "vol", "2026-12-02_21-00-01", backing="../%s/vda.qcow2" % os.path.basename(base))
    os.remove(os.path.join(base, "vda.qcow2"))
    os.mkfifo(os.path.join(base, "vda.qcow2"))
    probe = ("import sys\nfrom hotvcb.errors import HostError\nfrom hotvcb.localshell import LocalShell\n"
             "from hotvcb.store import chain\n"
             "for ask in (lambda: chain.backing_file(LocalShell(), sys.argv[1] + '/vda.qcow2'),\n"
             "            lambda: chain.chain_length(LocalShell(), sys.argv[2] + '/vda.qcow2')):\n"
             "    try:\n        print('answered', ask())\n    except HostError as err:\n        print('refused', err)\n")
    try:
        r = subprocess.run([sys.executable, "-c", probe, base, inc], capture_output=True, text=True, timeout=TIMEOUT,
                           env=dict(os.environ, PYTHONPATH=REPO))
    except subprocess.TimeoutExpired:
        pytest.fail("reading a FIFO's qcow2 header still blocked after %d s" % TIMEOUT)
    lines = r.stdout.splitlines()
    assert r.returncode == 0 and len(lines) == 2, r.stdout + r.stderr
    assert all(l.startswith("refused") and "not a regular file" in l for l in lines), lines
    r = hotvcb(tmp_path, "list", "--json", VM)
    verdicts = {b["name"]: b for b in json.loads(r.stdout)["backups"]}
    assert not verdicts[os.path.basename(inc)]["good"] and not verdicts[os.path.basename(base)]["good"], verdicts
