"""`restore` given a VM's folder on the backup volume (which holds its backups) where a backup's folder
belongs, as a path or a restore file's line: the refusal says what the folder is and what to give."""

import os

from simhost import hotvcb, needs_root, write_conf

pytestmark = [needs_root]


def test_a_vms_folder_of_backups_given_as_the_backup_is_named_as_such(host, tmp_path):
    host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    conf = write_conf(host)
    r = hotvcb(host, "backup", "-m", "web", "-g", conf)
    assert r.returncode == 0, r.stdout + r.stderr
    folder = "/vmfs/volumes/backup/hotvcb/web"
    (backup,) = [e for e in os.listdir(host.real(folder)) if e.startswith("web-")]
    r = hotvcb(host, "restore", folder, "--datastore", "datastore1", "--name", "web2")
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "Traceback" not in out, out
    assert "holds 0 .vmx files, expected 1: it is a folder of 1 backup(s), not a backup" in out, out
    assert "%s/%s" % (folder, backup) in out and "--latest" in out, out
