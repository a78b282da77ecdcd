"""A repository a newer hotvcb made (its `config` of a version this one does not read) is refused by a backup
run, which then writes nothing into it: not even its failed run's record under `last-run/`, a folder this
release keeps there but a newer one's layout need not have."""

import json
import os

from simhost import hotvcb, needs_root, write_conf

REPO = "/vmfs/volumes/backup/repo"


@needs_root
def test_a_backup_refused_by_a_newer_repository_writes_nothing_into_it(host, tmp_path):
    host.create_vm("db", "datastore1", [{"size": "1M"}], power="on")
    conf = write_conf(host, VM_BACKUP_REPOSITORY=REPO)
    r = hotvcb(host, "backup", "-m", "db", "-g", conf, "-w", tmp_path / "work")
    assert r.returncode == 0, r.stdout + r.stderr
    repo = host.real(REPO)
    path = os.path.join(repo, "config")
    with open(path) as f:
        config = json.load(f)
    config["version"] = 99
    os.chmod(path, 0o644)
    with open(path, "w") as f:
        json.dump(config, f)
    assert "last-run" not in os.listdir(repo)
    r = hotvcb(host, "backup", "-m", "db", "-g", conf, "-w", tmp_path / "work")
    assert r.returncode != 0 and "newer hotvcb" in r.stdout + r.stderr, r.stdout + r.stderr
    assert "last-run" not in os.listdir(repo), os.listdir(repo)
