"""Known defects, stop 34: what an ESXi host's login shell prints around a command reached over SSH (a real sshd
on loopback; the host shell's startup file in the session's HOME, as tests/test_outsider_s33ssh.py does).

A security team's startup file may greet every session (`Welcome to esxi01`) and say goodbye as it ends (`trap
'echo "esxi01: session closed"' EXIT`), on stdout or stderr. Neither may be read as a command's answer, nor as
the reason a command failed.
"""

import contextlib
import os
import subprocess

import pytest

from simhost import REPO, VOLUME, backup_root, manifest, needs_root, sealed, write_conf
from sshd import needs_sshd, running_sshd
from sshsite import site  # noqa: F401  (the fixture)

from hotvcb.errors import HostError
from hotvcb.sshconnection import SshTarget
from hotvcb.sshshell import SshShell

GREETING = 'echo "Welcome to esxi01 - authorized use only"\n'
FAREWELL = "trap 'echo \"esxi01: session closed\"' EXIT\n"
FAREWELL_ON_STDERR = "trap 'echo \"esxi01: session closed\" >&2' EXIT\n"


def _run(site, *args):
    r = subprocess.run(site.argv(*args), capture_output=True, text=True, timeout=300, env=site.env(), cwd=REPO)
    r.out = r.stdout + r.stderr
    return r


@pytest.fixture
def shell_with(tmp_path):
    """An SshShell to a loopback sshd whose login shell runs `startup` (its .bashrc) first."""
    with contextlib.ExitStack() as stack:
        def make(startup):
            d = stack.enter_context(running_sshd(tmp_path / "sshd"))
            (d.dir / ".bashrc").write_text(startup)
            shell = SshShell(SshTarget(d.target, d.port, d.identity, d.known_hosts))
            stack.callback(shell.close)
            return shell

        yield make


# -- 2. SshConnection.run: the command's output framed by marks, as the short commands' and cat's are ----------

@needs_root
@needs_sshd
def test_a_farewell_never_becomes_part_of_the_host_name_a_file_by_file_backup_records(host, site):
    """The host's shell says goodbye as each session ends. A backup on the host is fine; the same VM backed up
    file by file (every ESXi 6.x host) fails: `web: unexpected power state output: 'esxi01: session closed'`,
    vim-cmd's answer read through SshConnection.run, whose output had no end mark. Had it gone through, the
    backup would record its host (`source_host`, by which rotation and status tell a host's own backups) as
    `esxi01\nesxi01: session closed`."""
    host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    conf = write_conf(host)
    on_host = _run(site, "backup", "-m", "web", "-g", conf)
    assert on_host.returncode == 0, on_host.out
    (site.sshd.dir / ".bashrc").write_text(GREETING + FAREWELL)
    r = _run(site, "backup", "--file-by-file", "-m", "web", "-g", conf)
    assert r.returncode == 0, r.out
    first, second = sorted(sealed(host, "web"))
    names = [manifest(host, "web", b)["source_host"] for b in (first, second)]
    assert names[0] == names[1] and "session closed" not in names[1] and "Welcome" not in names[1], names


@needs_root
@needs_sshd
def test_a_command_run_over_ssh_answers_between_a_greeting_and_a_farewell(shell_with):
    """vim-cmd, scans and block digests go through SshConnection.run: its answer, and what its progress reader
    is fed, is the command's output alone, and a command the host does not have is named so (the wrapper's
    word, read today only when nothing came before it)."""
    shell = shell_with(GREETING + FAREWELL)
    seen = []
    done = shell.run(["printf", "a\\nb\\n"], on_output=seen.append)
    assert (done.returncode, done.output, seen) == (0, "a\nb\n", ["a", "b"])
    with pytest.raises(HostError) as err:
        shell.run(["no-such-tool", "--version"])
    assert "cannot run no-such-tool" in str(err.value) and "not found" in str(err.value), str(err.value)


@needs_root
@needs_sshd
def test_a_greeting_of_over_64_kib_is_no_part_of_a_commands_answer(shell_with):
    shell = shell_with("head -c 70000 /dev/zero | tr '\\\\0' x; echo\n")
    done = shell.run(["echo", "answer"])
    assert done.output == "answer\n", done.output[:100] + "..." + done.output[-100:]


# -- 3. a farewell on the host shell's stderr is never the reason a command failed ---------------------------

@needs_root
@needs_sshd
def test_a_farewell_on_stderr_is_never_the_reason_the_admin_is_given(host, site):
    """The host's shell says goodbye on stderr as each session ends. A file stands where the VM's backup folder
    goes: the file-by-file backup fails, and should say why as the host's `mkdir` did (`...: File exists`);
    it said `...: session closed`, the last line of the session's stderr, which is the shell's, not mkdir's."""
    host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    conf = write_conf(host)
    os.makedirs(host.real(VOLUME), exist_ok=True)
    with open(backup_root(host, "web"), "w") as f:
        f.write("in the way\n")
    (site.sshd.dir / ".bashrc").write_text(FAREWELL_ON_STDERR)
    r = _run(site, "backup", "--file-by-file", "-m", "web", "-g", conf)
    assert r.returncode != 0 and "File exists" in r.out and "session closed" not in r.out, r.out


@needs_root
@needs_sshd
def test_every_kind_of_host_call_quotes_the_commands_own_complaint(shell_with):
    """A short command's, a remote cat's and a run's error each quote the command's last words, never a greeting
    or a farewell the host's shell prints on stderr."""
    shell = shell_with("echo 'esxi01: audited session' >&2\n" + FAREWELL_ON_STDERR)
    missing = "/no/such/file"
    calls = [lambda: shell.read_text(missing), lambda: shell.open_binary(missing).read(),
             lambda: shell.sha256(missing), lambda: shell.file_size(missing)]
    for call in calls:
        with pytest.raises(HostError) as err:
            call()
        said = str(err.value)
        assert "No such file or directory" in said and "esxi01" not in said, said
