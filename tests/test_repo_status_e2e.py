"""`hotvcb status` with VM_BACKUP_REPOSITORY on a simulated ESXi host: each VM's newest backup in
the repository, its age and its last verify; a VM never backed up there and a damaged backup are CRIT."""

import json

from simhost import hotvcb, needs_root, write_conf

from hotvcb.repo.repository import open_path

pytestmark = needs_root
REPO = "/vmfs/volumes/backup/repo"


def status(host, conf, *extra):
    r = hotvcb(host, "status", "-g", conf, "--json", *extra)
    report = json.loads(r.stdout)
    return r.returncode, {c["name"]: c for c in report["checks"] if c["kind"] == "backup"}


def test_status_reads_each_vms_newest_backup_and_its_last_verify_from_the_repository(host, tmp_path):
    host.create_vm("web", "datastore1", [{"size": "4M"}])
    host.create_vm("db", "datastore1", [{"size": "4M"}])
    conf = write_conf(host, VM_BACKUP_REPOSITORY=REPO)
    for _ in range(2):
        r = hotvcb(host, "backup", "-m", "web", "-g", conf, "-w", tmp_path / "work")
        assert r.returncode == 0, r.stdout + r.stderr
    code, checks = status(host, conf)
    assert code == 2 and checks["db"]["severity"] == "CRIT" and "never backed up" in checks["db"]["message"]
    web = checks["web"]
    newest = open_path(host.real(REPO)).snapshots("web")[-1]
    assert web["severity"] == "OK" and web["details"]["good_backups"] == 2, web
    assert web["details"]["newest_good"] == newest.id and web["details"]["verified"] is None
    assert "not wholly verified" in web["message"]
    assert hotvcb(host, "verify", "--repo", REPO).returncode == 0
    _code, checks = status(host, conf)
    assert checks["web"]["details"]["verified"] is not None and "verified 20" in checks["web"]["message"]
    # older than the limit: WARN, then CRIT at twice the limit (the age is the backup's, not the status run's)
    _code, checks = status(host, conf, "--max-age", "0s")
    assert checks["web"]["severity"] == "CRIT", checks["web"]
    # `status --repo` names the repository without a config key; a chunk no pack holds is CRIT
    repo = open_path(host.real(REPO))
    plain = write_conf(host, name="plain.conf")
    loc = repo.chunk_map()[repo.disk_index(newest.disks[0]).entries[0][1]]
    repo.backend.delete(loc.pack)
    code, checks = status(host, plain, "--repo", REPO, "-f", _names(host, "web"))
    assert code == 2 and checks["web"]["severity"] == "CRIT" and "no pack holds" in checks["web"]["message"]


def _names(host, *names):
    path = host.root + "/vms.txt"
    with open(path, "w") as f:
        f.write("".join(n + "\n" for n in names))
    return path
