"""What a restore from the repository -g's config names tells the admin when it refuses: the list command they
use (-g, not a --repo they never typed), a --kvm target that is a file called a file, and --to accepted with -g.
Also folderwrite.not_folder, which names a repository path that is no folder (a file, a dangling link).

Tiny disks (1 MiB); one simulated host per test.
"""

import os
import re

from simhost import hotvcb, needs_root, write_conf

from hotvcb import folderwrite

ID = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{8}")


def _out(r):
    return r.stdout + r.stderr


def _repo_backup(host, tmp_path):
    host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    conf = write_conf(host, VM_BACKUP_REPOSITORY="/vmfs/volumes/backup/repo")
    r = hotvcb(host, "backup", "-m", "web", "-g", conf, "-w", tmp_path / "work")
    assert r.returncode == 0, _out(r)
    [sid] = ID.findall(hotvcb(host, "list", "-g", conf).stdout)
    return conf, sid


@needs_root
def test_an_id_no_backup_matches_names_the_list_command_of_the_config(host, tmp_path):
    conf, _sid = _repo_backup(host, tmp_path)
    r = hotvcb(host, "restore", "-g", conf, "20000101T000000Z-deadbeef", "--datastore", "datastore1")
    assert r.returncode == 1, _out(r)
    assert "hotvcb list -g %s shows them" % conf in r.stderr, _out(r)
    r = hotvcb(host, "restore", "--repo", "/vmfs/volumes/backup/repo", "nope", "--to", tmp_path / "out")
    assert r.returncode == 1 and "hotvcb list --repo /vmfs/volumes/backup/repo shows them" in r.stderr, _out(r)


@needs_root
def test_a_kvm_target_that_is_a_file_is_called_a_file(host, tmp_path):
    conf, sid = _repo_backup(host, tmp_path)
    target = tmp_path / "kvm"
    target.write_text("")
    r = hotvcb(host, "restore", "-g", conf, sid, "--kvm", target, "-d", "1")
    assert r.returncode != 0 and "is a file, not a folder" in _out(r), _out(r)
    assert "does not exist" not in _out(r)


@needs_root
def test_to_dir_takes_the_repository_from_the_config(host, tmp_path):
    conf, sid = _repo_backup(host, tmp_path)
    out = tmp_path / "out"
    r = hotvcb(host, "restore", "-g", conf, sid, "--to", out)
    assert r.returncode == 0, _out(r)
    assert any(n.endswith(".vmx") for n in os.listdir(out)), os.listdir(out)


@needs_root
def test_to_dir_without_a_repository_says_how_to_name_one(host, tmp_path):
    r = hotvcb(host, "restore", "/vmfs/volumes/backup/web/web-2026", "--to", tmp_path / "out")
    assert r.returncode == 1 and "--repo PATH, or with -g CONF" in r.stderr, _out(r)


def test_not_folder_names_a_file_and_a_dangling_link(tmp_path):
    (tmp_path / "file").write_text("x")
    os.symlink(str(tmp_path / "gone"), str(tmp_path / "link"))
    assert folderwrite.not_folder(str(tmp_path / "file")) == "is not a folder"
    assert folderwrite.not_folder(str(tmp_path / "link")) == "is a dangling link to %s" % (tmp_path / "gone")
    assert folderwrite.not_folder(str(tmp_path)) == ""
    assert folderwrite.not_folder(str(tmp_path / "missing")) == ""
