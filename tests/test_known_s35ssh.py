"""Known defects, stop 35: SSH mode's master connection after it died, and a file read past a long greeting (a real
sshd on loopback).

1. Every command is a session on one master connection (ControlMaster): one handshake per run. Once that master
   died (its TCP connection cut, the ssh client killed), each later command's ssh found no master and made a full
   connection of its own: a backup of many VMs then logs in hundreds of times, which a host with MaxStartups or
   fail2ban refuses. A master found dead is to be opened anew, once, and said so once in the run's log.
3. A file read over SSH (`open_binary`: verify, restore, archive reads) skipped a greeting of the host's login shell
   only up to 64 KiB, then failed with `the host's login shell did not run the command`, which it did.
"""

import contextlib
import os
import signal
import subprocess
import time

import pytest

from sshd import needs_sshd, running_sshd
from sshsite import sshd_children

from hotvcb.sshconnection import REOPEN_MAX, SshTarget
from hotvcb.sshshell import SshShell


@pytest.fixture
def shell_with(tmp_path):
    """(an SshShell to a loopback sshd whose login shell runs `startup` first, its sshd, what it said)"""
    with contextlib.ExitStack() as stack:
        def make(startup=""):
            d = stack.enter_context(running_sshd(tmp_path / "sshd"))
            (d.dir / ".bashrc").write_text(startup)
            said = []
            shell = SshShell(SshTarget(d.target, d.port, d.identity, d.known_hosts), say=said.append)
            stack.callback(shell.close)
            return shell, d, said

        yield make


def _logins(sshd) -> int:
    return sshd.log.read_text().count("Accepted publickey")


def _master_pid(shell) -> int:
    check = subprocess.run(shell._ssh("-O", "check", "--", shell.target.destination), capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    return int(check.stderr.split("pid=")[1].split(")")[0])


# -- 1. a dead master is opened anew, not replaced by a handshake per command ---------------------------------

@needs_sshd
@pytest.mark.parametrize("how", ["connection cut", "client killed"])
def test_a_master_connection_that_died_is_opened_anew_once(shell_with, how):
    shell, sshd, said = shell_with()
    assert shell.run(["echo", "up"]).output == "up\n"
    before = _logins(sshd)
    if how == "connection cut":  # the host's side of it goes (a reboot of its sshd, a firewall's reset)
        for pid in sshd_children(sshd):
            os.kill(pid, signal.SIGKILL)
    else:  # the OOM killer takes our master
        os.kill(_master_pid(shell), signal.SIGKILL)
    time.sleep(1)
    for n in range(6):
        assert shell.run(["echo", str(n)]).output == "%d\n" % n
        assert shell.read_text(str(sshd.dir / "sshd_config")).startswith("Port ")
    assert _logins(sshd) - before == 1, sshd.log.read_text()
    assert len([s for s in said if "master" in s or "connection" in s]) == 1, said
    os.kill(_master_pid(shell), 0)  # the new one serves them


@needs_sshd
def test_a_master_that_keeps_dying_is_reopened_a_bounded_number_of_times(shell_with):
    """A host that cuts every connection is not logged into again and again for masters: after REOPEN_MAX new
    ones, said once, each command connects on its own (as it did before masters were reopened) and still runs."""
    shell, _sshd, said = shell_with()
    assert shell.run(["echo", "up"]).output == "up\n"
    for n in range(REOPEN_MAX + 2):
        with contextlib.suppress(AssertionError):  # no master left to kill once they are given up
            os.kill(_master_pid(shell), signal.SIGKILL)
        time.sleep(0.5)
        assert shell.run(["echo", str(n)]).output == "%d\n" % n
    assert [s.split("; ")[1] for s in said] == ["opening a new one"] * REOPEN_MAX + [
        "each command now connects on its own"], said


# -- 3. a file read past a greeting of any length ------------------------------------------------------------

@pytest.mark.xfail(strict=True, reason="DEFECT 3: a greeting over 64 KiB fails a file read")
@needs_sshd
def test_a_file_is_read_past_a_greeting_of_a_megabyte(shell_with, tmp_path):
    shell, _sshd, _said = shell_with("yes 'Welcome to esxi01 - authorized use only' | head -c 1000000; echo\n")
    data = os.urandom(300000)
    path = tmp_path / "disk-flat.vmdk"
    path.write_bytes(data)
    with shell.open_binary(str(path)) as f:
        assert f.read() == data
    with shell.open_binary(str(path)) as f:
        assert f.read(10) == data[:10]
