"""Outside tester: restore's inputs after 'looserestore' (merge 6cbfa1e): .nvram/.vmxf only as regular
files, VM names with control characters refused (restore and backup), a delta's parents checked down
to the base and cloned from checked copies.

Attacked through the CLI: on esxisim for the ESXi restore and backup (host, hooks and helpers from
test_outsider_restoresplit.py / test_outsider_fixrestore.py / test_restore_inputs.py, imported), and
on this machine for `restore --kvm` / `verify --boot` (helpers from test_outsider_crosshv.py).
"""

import os
import shutil
import subprocess
import tarfile

import pytest

from esxisim import disks
from simhost import VOLUME, hotvcb, snapshot_names, write_conf
from test_outsider_crosshv import QEMU_IMG, TS, cli, esxi_backup, seal
from test_outsider_fixrestore import gone, no_traceback, restored  # noqa: F401
from test_outsider_restoresplit import (DS1, clear_hooks, hand_backup, holds, on_clone, out, registered,  # noqa: F401
                                        reseal, site, victim)
from test_restore_inputs import delta_backup, one_error, restore

MiB = 1 << 20
needs_qemu_img = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)


# -- restore --kvm: qemu-img follows a delta's parents too --------------------------------------------
def kvm_delta_backup(tmp_path, secret_data):
    """An ESXi-style backup (no esxisim host needed) whose disk is a vmfsSparse delta `disk-000001.vmdk`
    of `disk.vmdk`; disk.vmdk's extent is then pointed at another VM's disk by absolute path. Sealed
    after the edit (the checksums hold). (backup folder, the secret file)."""
    secret = str(tmp_path / "other-vm-flat.vmdk")
    with open(secret, "wb") as f:
        f.write(secret_data)
    real = esxi_backup(tmp_path / "vol", "kd", keys={"scsi0:0.fileName": "disk-000001.vmdk"})
    disks.create_delta(os.path.join(real, "disk.vmdk"), sesparse=False)
    p = os.path.join(real, "disk.vmdk")
    _write(p, open(p).read().replace('"disk-flat.vmdk"', '"%s"' % secret))
    seal(real, "kd", [("scsi0:0", ["disk-000001.vmdk", "disk-000001-delta.vmdk", "disk.vmdk", "disk-flat.vmdk"])])
    return real, secret


def tree_holds(folder, data):
    probe = data[4096: 4096 + (64 << 10)]
    for root, _d, files in os.walk(folder):
        for n in files:
            with open(os.path.join(root, n), "rb") as f:
                if probe in f.read():
                    return True
    return False


@needs_qemu_img
@pytest.mark.xfail(strict=True, reason="DEFECT: restore --kvm checks only the top descriptor of a delta; its "
                   "parent's extent outside the backup is converted as the disk")
def test_kvm_restore_of_a_delta_whose_parent_names_another_vms_disk(tmp_path):
    """The ESXi restore checks a delta's parents down to the base (require_parents_inside); restore --kvm
    reads the same chain with qemu-img convert, so the same backup must be refused there too."""
    data = b"\0" * 4096 + os.urandom(MiB - 4096)
    backup, secret = kvm_delta_backup(tmp_path, data)
    dst = tmp_path / "out"
    dst.mkdir()
    r = cli("restore", backup, "--kvm", dst, "--format", "raw")
    assert "Traceback" not in r.out, r.out
    assert not tree_holds(str(dst), data), "another VM's disk restored as this backup's: " + r.out
    assert r.returncode == 6 and "outside the backup" in r.out, r.out


@needs_qemu_img
@pytest.mark.xfail(strict=True, reason="DEFECT: a monolithicSparse disk's embedded parentFileNameHint is never "
                   "checked (require_extents_inside returns None for a sparse file); qemu-img follows it")
def test_kvm_restore_of_a_sparse_disk_whose_embedded_parent_lies_outside(tmp_path):
    """The backup's disk is one monolithicSparse file (hotvcb checks its magic and stops: 'its embedded
    descriptor names only itself'), but its embedded descriptor names a parent by absolute path, another
    VM's disk; qemu-img follows it and reads the parent as the disk's data."""
    data = b"\0" * 4096 + os.urandom(MiB - 4096)
    secret = str(tmp_path / "other-vm.raw")
    with open(secret, "wb") as f:
        f.write(data)
    parent = str(tmp_path / "other-vm.vmdk")
    subprocess.run([QEMU_IMG, "convert", "-q", "-O", "vmdk", "-f", "raw", secret, parent], check=True, timeout=60)
    real = esxi_backup(tmp_path / "vol", "sp")
    for n in ("disk.vmdk", "disk-flat.vmdk"):
        os.unlink(os.path.join(real, n))
    subprocess.run([QEMU_IMG, "create", "-q", "-f", "vmdk", "-F", "vmdk", "-b", parent,
                    os.path.join(real, "disk.vmdk")], check=True, timeout=60)
    with open(os.path.join(real, "disk.vmdk"), "rb") as f:
        assert f.read(4) == b"KDMV"
    seal(real, "sp", [("scsi0:0", ["disk.vmdk"])])
    dst = tmp_path / "out"
    dst.mkdir()
    r = cli("restore", real, "--kvm", dst, "--format", "raw")
    assert "Traceback" not in r.out, r.out
    assert not tree_holds(str(dst), data), "another VM's disk restored as this backup's: " + r.out
    assert r.returncode == 6, r.out


def test_kvm_restore_of_a_backup_named_with_a_line_break_is_refused(tmp_path):
    """restore --kvm without --name: the backup's displayName holds a line feed (`|0A`): refused, nothing
    written; with a plain --name it restores."""
    real = esxi_backup(tmp_path / "vol", "kn", keys={"displayName": "k\nn"})
    dst = tmp_path / "out"
    dst.mkdir()
    r = cli("restore", real, "--kvm", dst, "--no-verify")
    assert "Traceback" not in r.out, r.out
    assert r.returncode == 6 and "'k\\nn' cannot be the restored VM's name" in r.out, r.out
    assert os.listdir(str(dst)) == []
    r = cli("restore", real, "--kvm", dst, "--no-verify", "--name", "kn2", "--format", "raw")
    assert r.returncode == 0, r.out
    assert os.path.isdir(str(dst / "kn2"))
