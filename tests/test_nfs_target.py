"""ENABLE_NON_PERSISTENT_NFS as ghettoVCB.sh reads it: one backup volume, made from the NFS keys,
for every command; in milliseconds (config files in tmp_path, in-process CLI calls; the dry run and
the backups on a share are tested on esxisim in test_outsider_interop.py and test_operations_e2e.py)."""

import shutil
from pathlib import Path

import pytest

from hotvcb import cli
from hotvcb.config import for_vm, load_settings
from hotvcb.errors import UsageError

GHETTO = Path(__file__).resolve().parent / "data" / "ghettovcb-files"
SHARE = "/vmfs/volumes/nfs_storage_backup/mybackups"  # the real file's NFS_LOCAL_NAME / NFS_VM_BACKUP_DIR
UNMOUNTED = "the NFS share 172.30.0.195:/nfsshare (datastore nfs_storage_backup) is not mounted; mount it or run a backup"


@pytest.fixture
def nfs_conf(tmp_path):
    """The real ghettoVCB.conf with its NFS keys turned on (its VM_BACKUP_VOLUME line stays, as in every such file)."""
    text = (GHETTO / "ghettoVCB.conf").read_text().replace("ENABLE_NON_PERSISTENT_NFS=0", "ENABLE_NON_PERSISTENT_NFS=1")
    path = tmp_path / "ghettoVCB.conf"
    path.write_text(text)
    return path


def test_the_nfs_keys_are_the_backup_volume_whatever_vm_backup_volume_says(nfs_conf):
    s, warnings = load_settings(str(nfs_conf))
    assert warnings == [] and s.vm_backup_volume == SHARE
    assert s.where("vm_backup_volume") == s.where("nfs_vm_backup_dir")  # errors about it name the line to edit


def test_a_per_vm_volume_does_not_move_its_vm_off_the_share_and_says_so(nfs_conf, tmp_path):
    """ghettoVCB's per-VM template starts with a VM_BACKUP_VOLUME line; with NFS on ghettoVCB ignored it."""
    glob, _ = load_settings(str(nfs_conf))
    (tmp_path / "vms").mkdir()
    shutil.copy(str(GHETTO / "ghettoVCB-vm_backup_configuration_template"), str(tmp_path / "vms" / "VCAP"))
    s, warnings = for_vm(glob, str(tmp_path / "vms"), "VCAP")
    assert s.vm_backup_volume == SHARE and s.iter_to_wait_shutdown == 4  # the file's other keys still apply
    assert warnings == ["%s:1: VM_BACKUP_VOLUME ignored: ENABLE_NON_PERSISTENT_NFS=1 puts every VM in %s, as "
                        "ghettoVCB did" % (tmp_path / "vms" / "VCAP", SHARE)]


@pytest.mark.parametrize("key, value, refusal", [
    ("NFS_VM_BACKUP_DIR", "", "ENABLE_NON_PERSISTENT_NFS=1 needs NFS_VM_BACKUP_DIR"),  # ghettoVCB: exit 1, never the root
    ("NFS_LOCAL_NAME", "", "ENABLE_NON_PERSISTENT_NFS=1 needs NFS_LOCAL_NAME"),
    ("NFS_VM_BACKUP_DIR", "/", "is no folder on the share"),
    ("NFS_VM_BACKUP_DIR", "../other", "is no folder on the share"),
    ("NFS_LOCAL_NAME", "nfs/x", "is no folder on the share"),
])
def test_nfs_keys_that_name_no_folder_on_the_share_stop_every_command(nfs_conf, key, value, refusal):
    """Named at the line that turns NFS on: the keys it needs may be set nowhere."""
    with open(str(nfs_conf), "a") as f:
        f.write("%s=%s\n" % (key, value))
    with pytest.raises(UsageError, match=r"ghettoVCB\.conf:12: .*" + refusal.replace(".", r"\.")):
        load_settings(str(nfs_conf))


def test_list_verify_and_restore_say_the_share_is_not_mounted(nfs_conf, tmp_path, capsys):
    """They read the backups and never mount the share (a backup with UNMOUNT_NFS=1 leaves it unmounted):
    "no backups" alone would send the admin looking for lost backups."""
    assert cli.main(["list", "-g", str(nfs_conf)]) == 0
    out, err = capsys.readouterr()
    assert "no backups under %s" % SHARE in out and UNMOUNTED in err
    assert cli.main(["verify", "--all", "-g", str(nfs_conf)]) == 1  # checked nothing: no pass (test_outsider_r2b)
    assert UNMOUNTED in capsys.readouterr().err
    assert cli.main(["restore", "--kvm", str(tmp_path / "kvm"), "--latest", "VCAP", "-g", str(nfs_conf)]) == 1
    assert "no good backup of 'VCAP' under %s; %s" % (SHARE, UNMOUNTED) in capsys.readouterr().err
