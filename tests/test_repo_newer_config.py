"""A repository a newer hotvcb made (its `config` of a version this one does not read) is refused by a backup
run, which then writes nothing into it: not even its failed run's record under `last-run/`, a folder this
release keeps there but a newer one's layout need not have."""

import os

from simhost import backed_up_into_repository, hotvcb, needs_root, set_version

REPO = "/vmfs/volumes/backup/repo"


@needs_root
def test_a_backup_refused_by_a_newer_repository_writes_nothing_into_it(host, tmp_path):
    conf = backed_up_into_repository(host, REPO, "db", "1M", tmp_path / "work")
    repo = host.real(REPO)
    set_version(os.path.join(repo, "config"), 99)
    assert "last-run" not in os.listdir(repo)
    r = hotvcb(host, "backup", "-m", "db", "-g", conf, "-w", tmp_path / "work")
    assert r.returncode != 0 and "newer hotvcb" in r.stdout + r.stderr, r.stdout + r.stderr
    assert "last-run" not in os.listdir(repo), os.listdir(repo)
