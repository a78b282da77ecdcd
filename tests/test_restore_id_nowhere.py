"""`restore -g CONF <id>` of a backup in a repository only a per-VM file names: the global config names no
repository, so the id was taken for a folder and called missing ("backup <id> does not exist"), sending the
admin hunting for a backup `list VM -c DIR` had just shown. The run says where it looked, and what reads
a repository's backup, in its -l log too (where the missing backup and the final status are said)."""

import re

from simhost import hotvcb, needs_root, write_conf

ID = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{8}")


@needs_root
def test_a_backup_id_no_repository_was_looked_for_in_says_so(host, tmp_path):
    host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    conf = write_conf(host)
    confdir = tmp_path / "vmconf"
    confdir.mkdir()
    (confdir / "web").write_text("VM_BACKUP_REPOSITORY=/vmfs/volumes/backup/repo\n")
    r = hotvcb(host, "-m", "web", "-g", conf, "-c", confdir, "-w", tmp_path / "work")
    assert r.returncode == 0, r.stdout + r.stderr
    listed = hotvcb(host, "list", "-g", conf, "-c", confdir, "web")
    [sid] = ID.findall(listed.stdout)
    log = tmp_path / "restore.log"
    r = hotvcb(host, "restore", "-g", conf, sid, "--datastore", "datastore1", "-l", log)
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "backup %s does not exist" % sid in out, out
    for text in (out, log.read_text()):
        assert "names no VM_BACKUP_REPOSITORY, so no repository was looked in" in text and "--repo PATH" in text, text
    r = hotvcb(host, "restore", "--repo", "/vmfs/volumes/backup/repo", sid, "--datastore", "datastore1", "--name", "web2")
    assert r.returncode == 0, r.stdout + r.stderr
