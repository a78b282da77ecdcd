"""Stop 38 (gone): the "gone" verdict's gaps a review found, each pinned before its fix (the CLI where it can be
driven so, else the public module API).

1. verify --all with a per-VM file that sends a VM to a volume where it was never backed up: no error.
2. A backup whose reads fail with EIO (a soft-mounted NFS blip) is not "gone": only a positive "not there" is.
3. A subfolder that cannot be walked: verify and health say so, not "no backup folder" / "manifest unreadable".
4. A .gz gone with the folder unpacked beside it damaged: the folder's verdict.
6. restore --kvm: every exit after LOG START ends the frame.
7. esxisim enter: the failure marker says how to retry, and a failure not the compiler's is retried in time.
"""

import builtins
import errno
import os
import shutil
import time
import zlib

import pytest

from esxisim import enter
from hotvcb import cli
from hotvcb.errors import HostError, Interrupted
from hotvcb.jobs import backup_check
from hotvcb.jobs.verify import verify_backup, verify_folder
from hotvcb.localshell import LocalShell
from hotvcb.commands import verify_cmd
from hotvcb.store import health, layout, rotation
from sealedbuild import VM, hotvcb, sealed


# -- 1. verify --all: a per-VM volume the VM was never backed up to -----------------------------------------------

def test_verify_all_says_no_error_of_a_vm_never_backed_up_on_its_per_vm_volume(tmp_path):
    """`verify --all -c /confs` with a per-VM file sending newvm to /vol2, where no backup of it was ever made:
    'NOT CHECKED: its VM's folder /vol2/newvm went away while verify ran', exit 1, every night. A folder this run
    never saw did not go away."""
    sealed(tmp_path / "vol")
    (tmp_path / "vol2").mkdir()
    confs = tmp_path / "confs"
    confs.mkdir()
    (confs / "newvm").write_text("VM_BACKUP_VOLUME=%s\n" % (tmp_path / "vol2"))
    r = hotvcb(tmp_path, "verify", "--all", "-c", confs)
    assert r.returncode == 0 and "went away" not in r.out and "1 backup(s) checked, 0 damaged" in r.out, r.out


# -- 2. an I/O error is no proof the backup went -------------------------------------------------------------------

def _blip(monkeypatch, folder):
    """Every look into `folder` (itself too) fails with EIO from here on, as on a soft-mounted NFS share that
    stops answering: os.path's isdir/exists say False, every read and rename fails."""
    under = str(folder)

    def hit(path):
        path = os.fsdecode(path) if isinstance(path, (str, bytes, os.PathLike)) else ""
        return path == under or path.startswith(under + "/")

    def failing(real):
        def call(path, *args, **kwargs):
            if hit(path):
                raise OSError(errno.EIO, os.strerror(errno.EIO), os.fsdecode(path))
            return real(path, *args, **kwargs)
        return call

    for name in ("stat", "lstat", "scandir", "listdir", "open", "rename", "replace"):
        monkeypatch.setattr(os, name, failing(getattr(os, name)))
    monkeypatch.setattr(builtins, "open", failing(builtins.open))


def test_a_backup_whose_reads_fail_with_an_io_error_is_not_gone(tmp_path, monkeypatch):
    """health.went_away took isdir/exists saying False for proof: they say so of EIO, ESTALE, EACCES too. A
    damaged-read backup on an NFS blip became 'gone': verify said 'REMOVED meanwhile', list hid it."""
    folder = sealed(tmp_path / "vol")
    shell = LocalShell()
    (b,) = layout.list_backups(shell, str(tmp_path / "vol"), VM)
    _blip(monkeypatch, folder)
    assert not health.went_away(shell, folder)
    assert health.judge(shell, b).state != "gone"
    assert health.judge_at(shell, folder).state != "gone"
    assert verify_backup(shell, folder).status != "gone"
    assert verify_folder(shell, folder).status != "gone"


def test_rotation_takes_a_failed_rename_of_a_backup_it_cannot_see_for_a_failure(tmp_path, monkeypatch):
    """rotation._removed_meanwhile took exists() saying False for 'gone already': an NFS blip's failed rename was
    logged 'gone already' and counted removed, the backup left in the good namespace."""
    folder = sealed(tmp_path / "vol")
    shell = LocalShell()
    (b,) = layout.list_backups(shell, str(tmp_path / "vol"), VM)
    _blip(monkeypatch, folder)
    with pytest.raises(HostError):
        rotation.condemn(shell, b)


def test_a_backup_removed_is_still_gone(tmp_path):
    """The proof that stays: a backup folder no longer there (ENOENT) is gone."""
    folder = sealed(tmp_path / "vol")
    shutil.rmtree(folder)
    assert health.went_away(LocalShell(), folder)
    assert health.went_away(LocalShell(), folder + ".gz")


# -- 3. a subfolder that cannot be walked --------------------------------------------------------------------------

def test_a_subfolder_that_cannot_be_listed_is_said_as_such(tmp_path, monkeypatch):
    """LocalShell.list_files raises where a subfolder cannot be walked: verify said 'no backup folder' of a
    folder that is there, health 'manifest unreadable' of a manifest that read fine."""
    folder = sealed(tmp_path / "vol")
    os.mkdir(os.path.join(folder, "sub"))
    _blip(monkeypatch, os.path.join(folder, "sub"))
    res = verify_folder(LocalShell(), folder)
    assert res.status == "damaged" and all(p.message != "no backup folder" for p in res.problems), res
    assert "cannot list" in res.message and "sub" in res.message, res
    verdict = health.judge_at(LocalShell(), folder)
    assert "manifest unreadable" not in verdict.reason and "cannot list" in verdict.reason, verdict


# -- 4. a .gz gone beside its damaged unpacked folder --------------------------------------------------------------

def test_a_gz_gone_beside_its_damaged_unpacked_folder_is_the_folders_verdict(tmp_path):
    """_verify_pair returned the .gz's 'gone' (REMOVED meanwhile: not checked, exit 0) and the folder's damage
    was a note: the backup left is damaged."""
    folder = sealed(tmp_path / "vol")
    with open(os.path.join(folder, "vda.qcow2"), "r+b") as f:
        f.truncate(10)
    res = verify_cmd._verify_pair(LocalShell(), folder + ".gz", folder)
    assert res.status == "damaged" and res.path == folder, res


# -- 6. restore --kvm's frame on every exit ------------------------------------------------------------------------

@pytest.mark.parametrize("error", [HostError("cannot list /vol/web: Input/output error"), Interrupted(15)])
def test_restore_kvm_ends_its_log_frame_when_choosing_the_latest_fails(tmp_path, monkeypatch, error):
    """After LOG START, newest_good's HostError (a folder that cannot be listed) or a signal left the -l file
    without its final status and LOG END: read as a restore that died."""
    sealed(tmp_path / "vol")
    conf = tmp_path / "hotvcb.conf"
    conf.write_text("VM_BACKUP_VOLUME=%s\n" % (tmp_path / "vol"))

    def fails(*_a, **_k):
        raise error

    monkeypatch.setattr(backup_check, "newest_good", fails)
    log = tmp_path / "restore.log"
    code = cli.main(["restore", "-g", str(conf), "--latest", VM, "--kvm", str(tmp_path / "out"), "-l", str(log)])
    assert code != 0
    lines = log.read_text().splitlines()
    assert sum("LOG START" in line for line in lines) == 1 and sum("LOG END" in line for line in lines) == 1, lines
    assert "Final status: ERROR" in lines[-2] and "LOG END" in lines[-1], lines


# -- 7. esxisim enter's failure marker -----------------------------------------------------------------------------

def _marker(tmp_path):
    src = os.path.join(os.path.dirname(enter.__file__), "enter.c")
    with open(src, "rb") as f:
        return tmp_path / "_build" / ("enter-%08x-%s.failed" % (zlib.crc32(f.read()), os.uname().machine))


def _own_sources(tmp_path, monkeypatch):
    shutil.copy(os.path.join(os.path.dirname(enter.__file__), "enter.c"), str(tmp_path / "enter.c"))
    monkeypatch.setattr(enter, "_HERE", str(tmp_path))


def test_the_failure_marker_says_how_to_retry(tmp_path, monkeypatch):
    """The hint 'remove it to retry' went with the marker's new content: the admin who installed libc headers
    read nowhere how to have it built."""
    _own_sources(tmp_path, monkeypatch)
    bare = tmp_path / "bare"
    bare.mkdir()
    monkeypatch.setenv("PATH", str(bare))
    assert enter._build() is None
    assert "remove" in _marker(tmp_path).read_text()
    doc = open(os.path.join(os.path.dirname(os.path.dirname(enter.__file__)), "docs", "esxisim.md")).read()
    assert "remove it to" in doc and "change time" not in doc


def test_a_build_failed_with_the_same_compiler_is_tried_again_in_time(tmp_path, monkeypatch):
    """A build that failed for another reason than the compiler (libc headers installed later) never retried:
    the marker named the same cc for ever."""
    if shutil.which("cc") is None:
        pytest.skip("no C compiler here")
    _own_sources(tmp_path, monkeypatch)
    marker = _marker(tmp_path)
    marker.parent.mkdir()
    marker.write_text(enter._compiler())
    old = time.time() - 2 * enter.FAILED_RETRY
    os.utime(str(marker), (old, old))
    exe = enter._build()
    assert exe is not None and not marker.exists()


def test_a_fresh_failure_marker_still_spares_the_compiler(tmp_path, monkeypatch):
    """What the marker is for: processes right after a failure do not each run cc again."""
    _own_sources(tmp_path, monkeypatch)
    marker = _marker(tmp_path)
    marker.parent.mkdir()
    marker.write_text(enter._compiler())
    monkeypatch.setattr(enter, "_compile", lambda *_a: pytest.fail("cc run again"))
    assert enter._build() is None
    assert marker.exists()
