"""Known gaps of s35 (misc 3): SSH mode's run on the host past a host that floods stderr, and a restore's lines
in its -l log all inside its LOG START / LOG END frame. (What list_files lists of links is a clause of the Shell
contract: tests/test_shell_contract.py.)

2. SSH mode's run on the host (hostrun.py) reads its session's stdout and stderr, both piped: a host whose login
   shell greets every session with megabytes on stderr, or whose python warns as much before it answers, must
   not leave the run hanging on a full pipe.
3. ghettoVCB's log parsers read a restore's run as the lines from LOG START to LOG END, the last but one its final
   status: the repository `restore -g CONF <id>` reads from was named before LOG START, and a restore file that
   does not read (or holds no line to restore) was logged with no LOG START.
"""

import os
import subprocess

from esxisim import toolgen
from repotool import cli, two_vms
from simhost import REPO, needs_root, write_conf
from sshd import needs_sshd
from sshsite import replace_host_python, site  # noqa: F401  (the fixture)

FLOOD = "head -c 3000000 /dev/zero | tr '\\0' w >&2; echo >&2\n"  # 3 MB on stderr, far past a pipe's 64 KiB


# -- 2. a host that floods stderr does not hang the run on the host -----------------------------------------------

def _status_over_ssh(site, conf):
    r = subprocess.run(site.argv("status", "-g", conf), capture_output=True, text=True, timeout=120,
                       env=site.env(), cwd=REPO)
    out = r.stdout + r.stderr
    assert r.returncode == 2 and "web: never backed up" in out, out[-2000:]  # CRIT: no backup yet
    assert "going file by file" not in out and "wwww" not in out, out[-2000:]
    assert site.builds(), out[-2000:]  # hotvcb was sent to the host and ran there


@needs_root
@needs_sshd
def test_a_greeting_of_megabytes_on_stderr_does_not_hang_the_run_on_the_host(host, site):
    host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    conf = write_conf(host)
    (site.sshd.dir / ".bashrc").write_text(FLOOD)
    _status_over_ssh(site, conf)


@needs_root
@needs_sshd
def test_a_host_python_warning_megabytes_on_stderr_does_not_hang_the_run_on_the_host(host, site):
    host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    conf = write_conf(host)
    real = os.readlink(os.path.join(toolgen.upper(host, "usr_bin"), "python"))

    def noisy(path):
        with open(path, "w") as f:
            f.write("#!/bin/sh\n" + FLOOD + 'exec %s "$@"\n' % real)
        os.chmod(path, 0o755)

    replace_host_python(host, noisy)
    _status_over_ssh(site, conf)


# -- 3. every line of a restore's run lies inside its frame -------------------------------------------------------

def _framed(log):
    """The -l log holds one run, framed: LOG START first, its final status, then LOG END last."""
    lines = log.read_text().splitlines()
    assert lines and "restore LOG START" in lines[0], lines
    assert "restore LOG END" in lines[-1] and "Final status: " in lines[-2], lines
    return lines


def test_the_repository_a_config_names_is_said_inside_the_restores_log(tmp_path):
    two_vms(tmp_path)
    conf = tmp_path / "hotvcb.conf"
    conf.write_text("VM_BACKUP_REPOSITORY=%s\n" % (tmp_path / "repo"))
    log = tmp_path / "restore.log"
    r = cli("restore", "-g", conf, "nosuchid", "--to", tmp_path / "out", "-l", log)
    assert r.returncode == 1, r.stdout + r.stderr
    lines = _framed(log)
    assert any("from the repository VM_BACKUP_REPOSITORY names" in line for line in lines), lines


def test_a_repository_restore_refused_as_a_usage_error_is_framed(tmp_path):
    """An id and --latest both given for the repository the config names: refused, in a framed log."""
    conf = tmp_path / "hotvcb.conf"
    conf.write_text("VM_BACKUP_REPOSITORY=%s\n" % (tmp_path / "repo"))
    log = tmp_path / "restore.log"
    r = cli("restore", "-g", conf, "nosuchid", "--latest", "web", "-l", log)
    assert r.returncode == 1, r.stdout + r.stderr
    _framed(log)


def test_a_restore_file_without_lines_to_restore_is_framed(tmp_path):
    restore_file = tmp_path / "vms_to_restore"
    restore_file.write_text("# nothing yet\n")
    log = tmp_path / "restore.log"
    r = cli("restore", "-c", restore_file, "-l", log)
    assert r.returncode == 1 and "has no lines to restore" in r.stderr, r.stdout + r.stderr
    lines = _framed(log)
    assert any("error: restore file" in line for line in lines), lines


def test_a_restore_file_that_does_not_read_is_framed(tmp_path):
    log = tmp_path / "restore.log"
    r = cli("restore", "-c", tmp_path / "nosuch", "-l", log)
    assert r.returncode == 1 and "cannot read restore file" in r.stderr, r.stdout + r.stderr
    _framed(log)
