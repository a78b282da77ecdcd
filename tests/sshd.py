"""A real OpenSSH sshd on 127.0.0.1 for the SSH-mode tests.

A real server rather than a mocked ssh, so the tests see what an ESXi host
would do to us: the remote shell's quoting, channel close on interrupt, host
key refusal. Everything (config, host key, client key, authorized_keys,
known_hosts) lives in one temp dir; the daemon runs in the foreground (-D) as
our child and is stopped by its pid.

`force_command` puts every session under a wrapper, e.g. an esxisim host:
``python3 -m esxisim shell HOST -- sh -c "$SSH_ORIGINAL_COMMAND"`` (about a
second per session). `wrap` starts sshd itself under a prefix instead, e.g.
``python3 -m esxisim shell HOST --``: every session then inherits the host's
mount namespace at no cost per command.
"""

import os
import shutil
import signal
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Sequence

import pytest

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


class Sshd:
    def __init__(self, tmp: Path, port: int, proc: "subprocess.Popen"):
        self.dir = tmp
        self.port = port
        self.proc = proc
        self.identity = str(tmp / "id_ed25519")
        self.known_hosts = str(tmp / "known_hosts")
        self.empty_known_hosts = str(tmp / "known_hosts.empty")
        self.log = tmp / "sshd.log"
        self.user = "root"
        self.host = "127.0.0.1"

    @property
    def target(self) -> str:
        return "%s@%s" % (self.user, self.host)

    def cli_args(self, known_hosts: Optional[str] = None):
        """The hotvcb top-level options that reach this server."""
        return ["--host", self.target, "--port", str(self.port), "--identity", self.identity,
                "--known-hosts", known_hosts or self.known_hosts]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path, comment: str) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True, stdin=subprocess.DEVNULL)


def available() -> bool:
    return os.path.exists(SSHD) and shutil.which("ssh") is not None and shutil.which("ssh-keygen") is not None


needs_sshd = pytest.mark.skipif(
    not available() or os.geteuid() != 0,
    reason="needs OpenSSH sshd and ssh (scripts/install-test-deps) and root",
)


@contextmanager
def running_sshd(tmp: Path, force_command: Optional[str] = None,
                 wrap: Sequence[str] = (), env: Optional[dict] = None) -> Iterator[Sshd]:
    tmp.mkdir(parents=True, exist_ok=True)
    os.chmod(str(tmp), 0o700)
    _keygen(tmp / "host_ed25519", "hotvcb-test-host")
    _keygen(tmp / "id_ed25519", "hotvcb-test-client")
    shutil.copy(str(tmp / "id_ed25519.pub"), str(tmp / "authorized_keys"))
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation dir
    port = _free_port()
    lines = [
        "Port %d" % port,
        "ListenAddress 127.0.0.1",
        "HostKey %s" % (tmp / "host_ed25519"),
        "PidFile %s" % (tmp / "sshd.pid"),
        "AuthorizedKeysFile %s" % (tmp / "authorized_keys"),
        "PermitRootLogin prohibit-password",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "StrictModes no",  # the temp dir sits under world-writable /tmp
        "PrintMotd no",
        "MaxSessions 50",
        "MaxStartups 50",
        "LogLevel VERBOSE",
        # a clean home: the login shell must not run this machine's ~/.bashrc (an ESXi root has none)
        "SetEnv HOME=%s" % tmp,
    ]
    if force_command:
        lines.append("ForceCommand %s" % force_command)
    (tmp / "sshd_config").write_text("\n".join(lines) + "\n")
    hostkey = (tmp / "host_ed25519.pub").read_text().split()
    (tmp / "known_hosts").write_text("[127.0.0.1]:%d %s %s\n" % (port, hostkey[0], hostkey[1]))
    (tmp / "known_hosts.empty").write_text("")
    log = open(str(tmp / "sshd.log"), "wb")
    proc = subprocess.Popen(list(wrap) + [SSHD, "-D", "-e", "-f", str(tmp / "sshd_config")],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env)
    sshd = Sshd(tmp, port, proc)
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                raise RuntimeError("sshd exited: %s" % (tmp / "sshd.log").read_text())
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield sshd
    finally:
        proc = sshd.proc  # a test that restarted the server (a management network blip) left its own here
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        _end_masters(str(tmp / "id_ed25519"))


def _end_masters(identity: str) -> None:
    """End the ssh clients still holding this server's identity: a master a killed or failed run left
    (ControlPersist) lives on for minutes after its test, with the server's child of its connection, in
    every later test's process table and load."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if os.path.basename(argv[0]) == b"ssh" and identity.encode() in argv:
            try:
                os.kill(int(pid), signal.SIGTERM)
            except OSError:
                pass
