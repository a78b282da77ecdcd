"""Smaller defects the outsider round s33 noted beside its pinned ones (docs/repository.md): a record whose file
size its chunks contradict, the backup-limit message under a second, a `tmp` that is a plain file."""

import json
import os

import pytest

from repotool import backup, cli, make_disk, new_repo, record_path, two_vms

from hotvcb.errors import RepoError
from hotvcb.repo.backend import LocalBackend
from hotvcb.repo.repository import Repository


def test_a_record_whose_file_size_its_chunks_contradict_is_damaged_to_verify_and_restore(tmp_path):
    """web.vmx is 40 bytes by its chunk, 140 by the edited record: verify said OK and restore wrote 40."""
    repo_path = tmp_path / "repo"
    _repo, _old, new, _db = two_vms(tmp_path)
    path = record_path(repo_path, new)
    record = json.loads(open(path).read())
    record["files"][0]["size"] += 100
    os.chmod(path, 0o644)
    with open(path, "w") as f:
        f.write(json.dumps(record))
    r = cli("verify", "--repo", repo_path)
    assert r.returncode == 4 and "snapshots/%s: damaged (file web.vmx" % new.id in r.stdout, r.stdout + r.stderr
    r = cli("restore", "--repo", repo_path, new.id, "--to", tmp_path / "out")
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "snapshots/%s" % new.id in out and "Traceback" not in out, out
    assert not os.path.exists(str(tmp_path / "out"))


def test_a_backup_over_a_limit_under_a_second_says_both_times_as_they_are(tmp_path):
    repo = Repository.init(LocalBackend(str(tmp_path / "repo")), backup_limit=0.001, settle=0)
    disk = tmp_path / "web.raw"
    make_disk(disk, size=2 << 20)
    with pytest.raises(RepoError) as err:
        backup(repo, "web", disk)
    assert "backup limit (0.001s)" in str(err.value) and "took 0s" not in str(err.value), str(err.value)


def test_a_tmp_that_is_a_plain_file_is_named_when_a_backup_cannot_write(tmp_path):
    repo = new_repo(tmp_path / "repo")
    os.rmdir(str(tmp_path / "repo" / "tmp"))
    (tmp_path / "repo" / "tmp").write_text("")
    disk = tmp_path / "web.raw"
    make_disk(disk, size=2 << 20)
    with pytest.raises(RepoError, match="tmp/ is not a folder"):
        backup(repo, "web", disk)


def test_a_restore_failing_on_a_staged_file_says_the_staging_folder_is_gone(tmp_path, capsys):
    """A KVM (or datastore) restore of a repository's backup that fails on a file of its staged copy names a
    path under the staging folder, which is removed by the time the admin reads it: the run says so."""
    from hotvcb.commands import repo_restore
    from hotvcb.jobs.restore_kvm import KvmRestoreError
    from hotvcb.jobs.restore_scratch import Records
    from hotvcb.localshell import LocalShell

    _repo, _old, new, _db = two_vms(tmp_path)
    target = tmp_path / "kvm"
    target.mkdir()
    with pytest.raises(KvmRestoreError):
        with repo_restore.staged(str(tmp_path / "repo"), new.id, str(target), Records(LocalShell(), lambda: ""),
                             lambda line: None) as folder:
            raise KvmRestoreError("qemu-img cannot read %s/web.raw" % folder)
    err = capsys.readouterr().err
    assert "held backup %s as staged from the repository" % new.id in err and "removed now" in err, err
    assert os.listdir(str(target)) == []
