"""Stop 38 (compat): gaps earlier stops left, each pinned through the public CLI (or the contract a module
keeps) before its fix.

1. A ghettoVCB backup whose .nvram or .vmxf is no regular file of the folder (a symlink to a file inside the
   folder or elsewhere, a FIFO): one verdict from list, verify and restore.
2. SSH mode going file by file (no python on the host) says so inside the run's log frame.
3. The simulated host's C `enter` helper: a failed build's marker does not outlive the missing compiler.
4. Shell.list_files of a missing folder: one answer from every Shell.
5. A restore stopped before its frame (a config that does not read) still leaves its error in the -l file.
"""

import json
import os
import shutil
import stat

import pytest

from esxisim import enter
from hotvcb.errors import HostError
from hotvcb.localshell import LocalShell
from localcli import local, said
from simhost import VOLUME, hotvcb, needs_root, write_conf
from sshd import needs_sshd
from sshsite import replace_host_python, site  # noqa: F401  (the fixture)
from test_outsider_interop import ghettovcb_folder

OK = "Successfully completed backup"
START = "LOG START"


# -- 1. a ghettoVCB .nvram / .vmxf that is no regular file -------------------------------------------------------

def _plant(folder, kind, name):
    """`name` in the backup folder made a `kind`: a link to a file beside it or elsewhere, or a FIFO."""
    if kind == "link-inside":
        (folder / (".kept" + name)).write_text("nvram bytes")
        os.symlink(".kept" + name, str(folder / name))
    elif kind == "link-elsewhere":
        other = folder.parent.parent / ("other-vm" + name)
        other.write_text("another VM's bytes")
        os.symlink(str(other), str(folder / name))
    else:
        os.mkfifo(str(folder / name))


@needs_root
@pytest.mark.parametrize("kind", ["link-inside", "link-elsewhere", "fifo"])
@pytest.mark.parametrize("key, name", [("nvram", "web.nvram"), ("extendedConfigFile", "web.vmxf")])
def test_a_side_file_that_is_no_regular_file_is_damage_for_list_verify_and_restore_alike(host, kind, key, name):
    """ghettoVCB.sh copies a VM's files with cp and vmkfstools: it never leaves a link in a backup. A link there
    (even one to a regular file, beside it or elsewhere) was put there since, and what it reads is whatever it
    points at now, maybe another VM's; a FIFO would be waited on for ever. The restore refuses both; list and
    verify must not call such a backup good (restore --latest and rotation rely on their verdict)."""
    volume = __import__("pathlib").Path(host.real(VOLUME))
    folder = ghettovcb_folder(volume, "web", "2026-11-01_21-00-01", "STATUS.ok", OK, '%s = "%s"\n' % (key, name))
    _plant(folder, kind, name)
    conf = write_conf(host)
    r = hotvcb(host, "list", "--json", "-g", conf)
    assert r.returncode == 0, r.stdout + r.stderr
    (row,) = json.loads(r.stdout)["backups"]
    assert not row["good"] and name in row["reason"] and "not a regular file" in row["reason"], row
    path = VOLUME + "/web/" + folder.name
    r = hotvcb(host, "verify", "-g", conf, path)
    assert r.returncode == 6 and "DAMAGED" in r.stdout and name in r.stdout, r.stdout + r.stderr
    r = hotvcb(host, "restore", "-d", "1", "-g", conf, path, "--datastore", "datastore1", "--name", "web2")
    assert r.returncode == 6 and "not a regular file" in r.stdout and "not restoring from it" in r.stdout, \
        r.stdout + r.stderr
    r = hotvcb(host, "restore", "-d", "1", "-g", conf, "--latest", "web", "--datastore", "datastore1")
    assert r.returncode == 1 and "no good backup" in r.stderr, r.stdout + r.stderr


@needs_root
@needs_sshd
@pytest.mark.parametrize("kind", ["link-elsewhere", "fifo"])
def test_over_ssh_file_by_file_the_side_file_is_judged_alike(host, site, kind):  # noqa: F811
    """The same verdict where SshShell reads the folder (`find -type f`, the host's `test -e`)."""
    volume = __import__("pathlib").Path(host.real(VOLUME))
    folder = ghettovcb_folder(volume, "web", "2026-11-01_21-00-01", "STATUS.ok", OK, 'nvram = "web.nvram"\n')
    _plant(folder, kind, "web.nvram")
    conf = write_conf(host)
    r, _trips = site.run("list", "--json", "-g", conf)
    assert r.returncode == 0, r.out
    (row,) = json.loads(r.stdout)["backups"]
    assert not row["good"] and "web.nvram" in row["reason"], row
    r, _trips = site.run("restore", "-d", "1", "--file-by-file", "-g", conf, VOLUME + "/web/" + folder.name,
                         "--datastore", "datastore1", "--name", "web2")
    assert r.returncode == 6 and "not restoring from it" in r.out, r.out


# -- 2. SSH mode's fallback to file by file, inside the log frame --------------------------------------------------

def _lines_from(log_path):
    with open(str(log_path)) as f:
        return f.read().splitlines()


@needs_root
@needs_sshd
@pytest.mark.parametrize("command", ["backup", "restore"])
def test_the_fallback_to_file_by_file_is_said_inside_the_runs_log_frame(host, site, tmp_path, command):  # noqa: F811
    """A host with no python: SSH mode goes file by file and says why. The line came before `hotvcb LOG START`,
    outside the frame a log watcher (ghettoVCB's parsers) reads a run's lines from."""
    replace_host_python(host, lambda path: os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(0, 0)))  # whiteout: none
    host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    log = tmp_path / ("%s.log" % command)
    conf = write_conf(host)
    if command == "backup":
        args = ["backup", "-m", "web", "-g", conf, "-w", tmp_path / "work"]
    else:
        args = ["restore", "-d", "1", "-g", conf, VOLUME + "/web/web-2026-11-01_21-00-01", "--datastore",
                "datastore1"]
    r, _trips = site.run(*args, "-l", log)
    assert "going file by file" in r.out, r.out
    lines = _lines_from(log)
    (start,) = [i for i, line in enumerate(lines) if START in line]
    (note,) = [i for i, line in enumerate(lines) if "going file by file" in line]
    assert start < note, lines


def enter_in(tmp_path, monkeypatch):
    """esxisim's enter helper built from a copy of its source in tmp_path, its build folder there: (cc, the
    path its executable is built as). Skipped where this machine has no C compiler."""
    import zlib

    cc = shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler here")
    src = os.path.join(os.path.dirname(enter.__file__), "enter.c")
    shutil.copy(src, str(tmp_path / "enter.c"))
    monkeypatch.setattr(enter, "_HERE", str(tmp_path))
    with open(src, "rb") as f:
        return cc, tmp_path / "_build" / ("enter-%08x-%s" % (zlib.crc32(f.read()), os.uname().machine))


# -- 3. the C enter helper's failure marker ------------------------------------------------------------------------

def test_a_failed_enter_build_is_tried_again_once_a_compiler_is_there(tmp_path, monkeypatch):
    """No cc when the first test ran left `_build/enter-*.failed`; cc installed since, every host command still
    started a Python (some 30 ms of CPU each, thousands a test run) until the marker was removed by hand."""
    cc, exe = enter_in(tmp_path, monkeypatch)
    bare = tmp_path / "bare"
    bare.mkdir()
    monkeypatch.setenv("PATH", str(bare))  # no cc
    assert enter._build() is None
    failed = exe.parent / (exe.name + ".failed")
    assert failed.exists()
    os.symlink(cc, str(bare / "cc"))  # cc installed
    monkeypatch.setenv("PATH", "%s:%s" % (bare, os.path.dirname(os.path.realpath(cc))))
    exe = enter._build()
    assert exe is not None and os.access(exe, os.X_OK) and not failed.exists()


# -- 4. list_files of a missing folder --------------------------------------------------------------------------

def test_list_files_of_a_missing_folder_is_an_error_not_an_empty_backup(tmp_path):
    """LocalShell said [] (os.walk passes over what it cannot list), SshShell raised: a backup folder removed
    while it was judged read as a folder holding nothing, a folder that could not be read as an empty one. The
    contract (shell.py) says HostError; tests/test_shell_contract.py holds every Shell to it."""
    with pytest.raises(HostError):
        LocalShell().list_files(str(tmp_path / "gone"))


# -- 5. a restore stopped before its frame ------------------------------------------------------------------------

@pytest.mark.parametrize("how", [["deadbeef", "--to", "{out}"], ["--latest", "web", "--kvm", "{out}"]])
def test_a_restore_whose_config_does_not_read_says_so_in_its_log_file(tmp_path, how):
    """`restore -g CONF ... -l LOG` with CONF gone (its NAS not mounted): the error went to stderr only, and the
    admin's -l file (cron output to /dev/null) held no line of the run; a backup says it there
    (common.load's runlog.stopped). The restore does as the backup does."""
    log = tmp_path / "restore.log"
    r = local("restore", "-g", tmp_path / "gone.conf", *[w.format(out=tmp_path / "out") for w in how], "-l", log)
    assert r.returncode == 1 and "gone.conf" in r.stderr, said(r)
    text = log.read_text() if log.exists() else ""
    assert "gone.conf" in text and "Final status: ERROR" in text, text
