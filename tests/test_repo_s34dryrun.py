"""Dry runs that must exit as the real run does, on what the real run fails on at its first write (s34 fixes):
a repository whose `tmp` is a file (prune), and a restore's target on a file system mounted read-only
(`restore --repo ... --to`, `--kvm`). A dry run asks the file system (hotvcb/folderwrite.py), never
writing a probe.

Tiny disks (2 MiB).
"""

import os
import subprocess

import pytest

from repotool import backup, cli, make_disk, new_repo
from simhost import needs_root


def _out(r):
    out = r.stdout + r.stderr
    assert "Traceback" not in out and "internal error" not in out, out
    return out


@pytest.fixture
def repo_path(tmp_path):
    """A repository holding one backup of `web`."""
    path = tmp_path / "repo"
    disk = tmp_path / "web.raw"
    make_disk(disk, size=2 << 20, seed=3, regions=2)
    backup(new_repo(path), "web", disk)
    return path


def test_prune_dry_run_of_a_repository_whose_tmp_is_a_file_fails_as_the_prune_does(repo_path):
    """A NAS client left a file named `tmp` in the repository: every write (the prune's first) fails. The
    prune said only "tmp/: File exists", and its dry run said nothing was wrong. Both now say tmp is no
    folder, with the same exit code."""
    os.rmdir(str(repo_path / "tmp"))  # empty: the backup's uploads are gone
    (repo_path / "tmp").write_text("not a folder")
    real = cli("prune", "--repo", repo_path, "--keep-last", "1")
    dry = cli("prune", "--repo", repo_path, "--keep-last", "1", "--dry-run")
    assert real.returncode != 0 and "tmp/ is not a folder" in _out(real), _out(real)
    assert dry.returncode == real.returncode and "tmp/ is not a folder" in _out(dry), _out(dry)


@needs_root
@pytest.mark.parametrize("how", ["to", "kvm"])
def test_a_dry_run_restore_onto_a_read_only_file_system_exits_as_the_restore_does(repo_path, tmpfs, how):
    """The admin checks a restore onto the NAS export before running it; the export is read-only. The dry
    run said "every check passed" (--kvm) or wrote its plan, exit 0, while the restore failed writing its
    folder's owner record. Both now fail naming the folder and "Read-only file system"."""
    where = tmpfs("ro", "16m")
    subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)
    target = ["--to", where / "web"] if how == "to" else ["--kvm", where]
    real = cli("restore", "--repo", repo_path, "--latest", "web", *target)
    dry = cli("restore", "--repo", repo_path, "--latest", "web", *target, "-d", "1")
    assert real.returncode != 0 and "Read-only file system" in _out(real), _out(real)
    assert dry.returncode == real.returncode and "Read-only file system" in _out(dry), _out(dry)
    assert str(where) in _out(dry) and os.listdir(str(where)) == []
