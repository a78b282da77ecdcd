"""Outside test, stop 33 round 2: this morning's SSH-mode and repository fixes, tried as an admin (a real sshd
on loopback in front of an esxisim host; repositories made by tests/repotool.py). Each defect is a strict xfail
asserting the right behaviour.

Tried and found sound (no test here): the greeting mark of file-by-file reads with a greeting printed without
a trailing newline and one on stdout and stderr at once (backup and verify file by file); --identity /
--known-hosts paths holding % " \\ ' # = spaces, tabs, umlauts, a leading '-' or a trailing backslash reach
ssh as the same path (`ssh -G`, OpenSSH 9.2); a hand copy `<hex>.bak` of a pack and a `.DS_Store` in each
repository folder; prune's dry run over a damaged kept index, mark or damage record (it refuses alike).
"""

import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from repotool import ROOT, cli, record_path, two_vms
from simhost import REPO, needs_root, sealed, write_conf
from sshd import needs_sshd
from sshsite import site  # noqa: F401  (the fixture)

from hotvcb.errors import HostError
from hotvcb.sshconnection import SshTarget
from hotvcb.sshshell import SshShell


def _run(site, *args, env=None, timeout=300):
    r = subprocess.run(site.argv(*args), capture_output=True, text=True, timeout=timeout,
                       env=dict(site.env(), **(env or {})), cwd=REPO)
    r.out = r.stdout + r.stderr
    return r


# -- SSH file by file: what the host's shell prints around a command ---------------------------------------------

@needs_root
@needs_sshd
def test_file_by_file_reads_past_a_greeting_without_newline_and_one_on_stderr(host, site):
    """Control for the greeting fix: `printf` greeting (no newline) on stdout plus a line on stderr."""
    host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    conf = write_conf(host)
    (site.sshd.dir / ".bashrc").write_text('printf "Welcome to esxi01"\necho "esxi01: audited session" >&2\n')
    r = _run(site, "backup", "--file-by-file", "-m", "web", "-g", conf)
    assert r.returncode == 0 and len(sealed(host, "web")) == 1, r.out
    r = _run(site, "verify", "--file-by-file", "-g", conf, "web")
    assert r.returncode == 0 and "DAMAGED" not in r.out and "INCOMPLETE" not in r.out, r.out


@needs_root
@needs_sshd
def test_a_farewell_on_the_host_shells_exit_never_makes_a_good_backup_incomplete(host, site):
    """The security team's startup file on the ESXi host prints a line as every session ends (`trap 'echo
    "esxi01: session closed"' EXIT`). This morning's fix skips what the shell prints BEFORE a command (the
    greeting mark), but what it prints AFTER is still taken for the command's answer: `verify --file-by-file
    web` (the way for an ESXi 6.x host) reads the backup folder's realpath as `<path>\\nesxi01: session
    closed` and reports `INCOMPLETE: a symlink to <path> esxi01: session closed, not a backup on this volume`,
    `1 damaged or incomplete`, non-zero exit - of a backup that `verify` on the host calls OK. The admin would
    start a re-run or a restore drill for nothing, or delete a good backup. The command's answer should end
    where the command ends (a closing mark), or the run say that the host's shell printed text after it."""
    host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    conf = write_conf(host)
    assert _run(site, "backup", "-m", "web", "-g", conf).returncode == 0
    (site.sshd.dir / ".bashrc").write_text("trap 'echo \"esxi01: session closed\"' EXIT\n")
    on_host = _run(site, "verify", "-g", conf, "web")
    assert on_host.returncode == 0 and "OK" in on_host.out, on_host.out  # control: the run on the host copes
    r = _run(site, "verify", "--file-by-file", "-g", conf, "web")
    # (the summary of a clean run reads "1 backup(s) checked, 0 damaged or incomplete")
    assert "DAMAGED" not in r.out and "INCOMPLETE" not in r.out and ", 0 damaged or incomplete" in r.out, r.out
    assert r.returncode == 0, r.out


@needs_root
@needs_sshd
def test_a_binary_read_on_a_lost_connection_names_the_connection_not_the_hosts_shell(host, site):
    """During a file-by-file verify of a compressed backup (or a qcow2 chain's headers) the link to esxi01 drops:
    the master connection is gone and the host no longer answers. A text read (`read_text`) then says `lost the
    SSH connection to root@esxi01: ssh: connect to host ... Connection refused`. A binary read (`open_binary`,
    which this morning's fix made skip a greeting) says `cannot read ...: the host's login shell did not run the
    command`: the admin is sent to the host's .profile, while the network is at fault. (Before the fix the
    read ended with ssh's own words.) A read whose session broke must say so, as every other call does."""
    d = site.sshd
    shell = SshShell(SshTarget(d.target, d.port, d.identity, d.known_hosts))
    path = "/vmfs/volumes/datastore1/probe.txt"
    try:
        shell.write_text(path, "hello\n")
        with shell.open_binary(path) as f:
            assert f.read() == b"hello\n"  # control: the connection works
        listening = subprocess.run(["ss", "-ltnpH", "sport = :%d" % d.port], capture_output=True, text=True).stdout
        for pid in set(re.findall(r"pid=(\d+)", listening)):  # our sshd's listener: the host stops answering
            os.kill(int(pid), signal.SIGKILL)
        check = subprocess.run(shell._ssh("-O", "check", "--", d.target), capture_output=True, text=True)
        os.kill(int(re.search(r"pid=(\d+)", check.stdout + check.stderr).group(1)), signal.SIGKILL)  # our master
        time.sleep(0.5)
        with pytest.raises(HostError) as text_err:
            shell.read_text(path)
        assert "lost the SSH connection" in str(text_err.value)  # control: a text read names it
        with pytest.raises(HostError) as err:
            with shell.open_binary(path) as f:
                f.read()
        said = str(err.value)
        assert "login shell" not in said and ("SSH connection" in said or "Connection refused" in said), said
    finally:
        shell.close()


# -- prune --dry-run must refuse where the prune will ------------------------------------------------------------

def test_prune_dry_run_refuses_a_symlinked_packs_folder_as_the_prune_does(tmp_path):
    """The repository's disk filled up; the admin moved one of its packs/<xx> folders to another disk and left a
    symlink in its place. `prune --keep-last 1 --dry-run` lists `remove web @ 2026-11-30 ...`, `dry run: nothing
    removed`, exit 0. The real prune with the same rules then refuses: `packs/65 ... is a symlink to a folder
    (...): its objects cannot be listed; move them back into the repository`, exit 1. This morning's fix made
    the dry run read what the prune refuses on (records, kept indexes, marks, damage records) - but not the
    packs listing GC starts with. The dry run should refuse alike, naming the folder."""
    repo_path = tmp_path / "repo"
    _repo, old, _new, _db = two_vms(tmp_path)
    sub = sorted(glob.glob(str(repo_path / "packs" / "*")))[0]
    shutil.move(sub, str(tmp_path / "elsewhere"))
    os.symlink(str(tmp_path / "elsewhere"), sub)
    name = os.path.relpath(sub, str(repo_path))
    real = cli("prune", "--repo", repo_path, "--keep-last", "1")
    assert real.returncode == 1 and name in real.stderr, real.stdout + real.stderr  # control
    assert os.path.exists(record_path(repo_path, old))
    dry = cli("prune", "--repo", repo_path, "--keep-last", "1", "--dry-run")
    dry_out = dry.stdout + dry.stderr
    assert dry.returncode == real.returncode and name in dry_out, dry_out


@needs_root
def test_prune_dry_run_on_a_read_only_repository_says_the_prune_cannot_run(tmp_path):
    """The repository share is mounted read-only on this box (the NAS exports it ro to all but the backup
    host, or it went ro after an error). The admin checks with `prune --keep-last 1 --dry-run`: `remove web @
    ...`, `dry run: nothing removed`, exit 0. The real prune: `cannot write to the repository ...: tmp/:
    Read-only file system`, exit 1. A dry run need not write to know this (statvfs says ST_RDONLY): it should
    refuse alike, or at least warn that the prune cannot run there."""
    repo_path = tmp_path / "repo"
    two_vms(tmp_path)
    real = _read_only_prune(repo_path)
    assert real.returncode == 1 and "Read-only" in real.stderr, real.stdout + real.stderr  # control
    dry = _read_only_prune(repo_path, "--dry-run")
    dry_out = dry.stdout + dry.stderr
    assert dry.returncode == 1 or "read-only" in dry.stderr.lower(), dry_out


def _read_only_prune(repo_path, *more):
    """`prune --keep-last 1` run where repo_path is mounted read-only (a bind mount in a mount namespace)."""
    script = 'mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" && shift && exec "$@"'
    argv = [sys.executable, "-m", "hotvcb", "prune", "--repo", str(repo_path), "--keep-last", "1"] + list(more)
    return subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", str(repo_path)] + argv, capture_output=True,
                          text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), timeout=120)
