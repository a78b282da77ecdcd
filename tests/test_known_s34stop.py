"""Testers' notes (session 34): a stopped copy in file-by-file SSH mode (hotvcb on a Linux box driving the
host command by command) must be gone before hotvcb cleans up after it, as a local run's already is.

Stopping hotvcb's ssh client returned at once, while the wrapper on the host (sshscripts.WRAPPER) ended the
copy some seconds later: the snapshot removal raced a vmkfstools still reading the base disk, and the
-partial folder was removed or renamed while the copy still wrote into it."""

import os
import signal
import subprocess
import time

import pytest

from simhost import backup_root, backups, host_lock_path, needs_root, ours, wait_for, write_conf
from sshd import needs_sshd, running_sshd
from sshsite import site  # noqa: F401  (the fixture)

pytestmark = [needs_root, needs_sshd]

DYING = 5  # seconds a stopped copy takes to go: within the wrapper's 10 s TERM->KILL grace

# In front of the host's vmkfstools: a clone (-i) that, told to stop, takes DYING seconds to go, then notes what
# was still there as it went: its destination folder, and the VM's snapshot (a delta beside the base disk).
SLOW_TO_DIE = """\
case " $* " in *" -i "*)
  for a; do dst=$a; done
  trap 'sleep %(dying)d; { [ -d "${dst%%/*}" ] && echo folder || echo no-folder
    ls /vmfs/volumes/datastore1/web | grep -q -- "-00000[0-9]*\\.vmdk$" && echo snapshot || echo no-snapshot
    } > %(rec)s.tmp; mv %(rec)s.tmp %(rec)s; exit 143' TERM
  echo "$$" > %(rec)s.pid
  "$0.real" "$@" &
  wait $!
  exit $?;;
esac
"""


def _slow_to_die(host, rec):
    from simhost import wrap_tool

    wrap_tool(host, "vmkfstools", SLOW_TO_DIE % {"dying": DYING, "rec": rec}, layer="usr_sbin")


def _gone(pid):
    return not os.path.exists("/proc/%d" % pid)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stopped_copy_over_ssh_is_gone_before_the_cleanup_starts(host, site, tmp_path, sig):
    """Ctrl-C (or systemd's SIGTERM) of a file-by-file backup mid-copy: when the copy goes, its folder and the
    snapshot it reads are still there (the cleanup waited for it), and once hotvcb has exited the copy is
    gone, the snapshot removed, and the backup folder recorded as failed."""
    host.create_vm("web", "datastore1", [{"size": "8M"}], power="on")
    conf = write_conf(host)
    rec = tmp_path / "copy-ended"
    _slow_to_die(host, rec)
    host.set_fault("clone.delay", "60")
    try:
        proc = subprocess.Popen(site.argv("backup", "--file-by-file", "-m", "web", "-g", conf),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=site.env(), text=True)
        wait_for(lambda: os.path.exists("%s.pid" % rec) or proc.poll() is not None, 60, "the copy to start")
        time.sleep(0.5)  # the copy under way
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=120)
        copy = int(open("%s.pid" % rec).read())
        copy_gone = _gone(copy)
        wait_for(lambda: _gone(copy), 30, "the copy to go")  # for the next assertions' sake
    finally:
        host.clear_faults()
    assert proc.returncode == 2 and "Traceback" not in out, out
    assert copy_gone, "hotvcb exited while its copy still ran on the host:\n" + out
    assert "; waiting up to 30 s for it to end" in out, "the wait for the host was not announced:\n" + out
    assert rec.read_text().split() == ["folder", "snapshot"], "cleaned up under a running copy:\n" + out
    assert not ours(host, [k for k in host.state()["vms"] if host.display_name(k) == "web"][0]), out
    assert not os.path.exists(host_lock_path(host))
    (folder,) = backups(host, "web")  # the failed backup, recorded as such; no -partial left to the next run
    assert not folder.endswith("-partial"), folder
    assert "STATUS.error" in os.listdir(os.path.join(backup_root(host, "web"), folder))


# -- the same, through the shell's API: a copy's timeout, and a host that does not confirm -----------------------

@pytest.fixture
def shell(tmp_path):
    from hotvcb.sshconnection import SshTarget
    from hotvcb.sshshell import SshShell

    with running_sshd(tmp_path / "sshd") as sshd:
        with SshShell(SshTarget(sshd.target, sshd.port, sshd.identity, sshd.known_hosts)) as s:
            s.sshd = sshd
            yield s


# a command that takes 3 s to go after a TERM, its pid in a file
TAKES_3S = "echo $$ > %s; trap 'sleep 3; exit 1' TERM; while :; do sleep 0.1; done"


def test_a_timed_out_command_over_ssh_is_gone_when_run_returns(shell, tmp_path):
    """A copy's timeout (hotvcb's idle or overall bound): run() returns once the host's command has gone, as
    LocalShell's tethered run does, not as soon as the ssh client is stopped."""
    from hotvcb.errors import TimeoutExpired

    pidfile = tmp_path / "pid"
    start = time.monotonic()
    with pytest.raises(TimeoutExpired) as raised:
        shell.run(["sh", "-c", TAKES_3S % pidfile], timeout=1)
    assert _gone(int(pidfile.read_text()))
    assert time.monotonic() - start >= 3.5
    assert "may still run" not in str(raised.value)


def test_a_host_that_does_not_confirm_the_stop_is_named_and_left(shell, monkeypatch):
    """The host says nothing once told to stop (the connection hangs): run() stops waiting after its bound,
    and its error says the command may still run on the host, so the admin checks before trusting the cleanup."""
    from hotvcb import sshconnection
    from hotvcb.errors import TimeoutExpired

    monkeypatch.setattr(sshconnection, "STOP_CONFIRM", 2)
    shell.run(["true"])  # the connection is up: sshd's process serving it is there to freeze
    frozen = [int(p) for p in subprocess.run(["pgrep", "-P", str(shell.sshd.proc.pid)], capture_output=True,
                                             text=True).stdout.split()]
    assert frozen
    for p in frozen:
        os.kill(p, signal.SIGSTOP)
    try:
        start = time.monotonic()
        with pytest.raises(TimeoutExpired) as raised:
            shell.run(["sleep", "60"], timeout=1)
        took = time.monotonic() - start
    finally:
        for p in frozen:
            os.kill(p, signal.SIGCONT)
    message = str(raised.value)
    assert "sleep 60" in message and "may still run on " + shell.target.destination in message, message
    assert took < 15, took
