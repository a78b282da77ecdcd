"""hotvcb in SSH mode against a simulated host behind a real sshd, with its ssh sessions counted.

Round trips are the ssh client's sessions, counted by an `ssh` wrapper first on PATH (the master
connection and its control requests are not sessions): behaviour, not time. sshd runs inside
the host's namespace (`esxisim shell HOST -- sshd`), so every session sees the host's tools.
"""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from simhost import REPO, make_host, on_host, wait_for
from sshd import running_sshd


class Site:
    def __init__(self, host, sshd, bindir, tmp):
        self.host, self.sshd, self.bindir = host, sshd, bindir
        self.sessions = tmp / "sessions"
        self.folder = tmp / "onhost"  # the host's folder of our builds (HOTVCB_HOST_FOLDER)

    def env(self):
        return dict(os.environ, PYTHONPATH=REPO, PATH="%s:%s" % (self.bindir, os.environ["PATH"]),
                    HOTVCB_HOST_FOLDER=str(self.folder))

    def argv(self, *args):
        return [sys.executable, "-m", "hotvcb"] + self.sshd.cli_args() + [str(a) for a in args]

    def cut(self, args, ready, what, timeout=120):
        """hotvcb `args` whose SSH connection is cut (the sshd processes serving it killed) once the file
        `ready` exists: (its exit code, its output)."""
        proc = subprocess.Popen(self.argv(*args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=self.env(),
                                text=True, cwd=REPO)
        try:
            wait_for(lambda: ready.exists() or proc.poll() is not None, 60, what)
            time.sleep(0.5)
            for p in sshd_children(self.sshd):
                os.kill(p, signal.SIGKILL)
            out, _ = proc.communicate(timeout=timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        return proc.returncode, out

    def run(self, *args, **env):
        """(completed process with .out = stdout + stderr, the ssh sessions it opened); `env`: more variables"""
        if self.sessions.exists():
            self.sessions.unlink()
        r = subprocess.run(self.argv(*args), capture_output=True, text=True, timeout=300, env=dict(self.env(), **env), cwd=REPO)
        r.out = r.stdout + r.stderr
        trips = self.sessions.read_text().splitlines() if self.sessions.exists() else []
        return r, trips

    def builds(self):
        return sorted(p for p in os.listdir(str(self.folder)) if p.endswith(".pyz"))

    def kept(self):
        """What the host's folder keeps between runs: each build's pyz and the build unpacked beside it."""
        return sorted(self.builds() + [p[: -len(".pyz")] for p in self.builds()])


def sshd_children(sshd):
    """The processes serving sshd's connections (hotvcb's master connection, once it is up)."""
    listener = int((sshd.dir / "sshd.pid").read_text())
    out = subprocess.run(["pgrep", "-P", str(listener)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


@pytest.fixture
def site(host, tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    sessions = tmp_path / "sessions"
    (bindir / "ssh").write_text('#!/bin/sh\ncase " $* " in *" -O "*|*" -N "*) ;; *) printf %%s "$*" | tr "\\n" " " >> %s; echo >> %s ;; esac\n'
                                'exec %s "$@"\n' % (sessions, sessions, shutil.which("ssh")))
    (bindir / "ssh").chmod(0o755)
    with host_sshd(host, tmp_path / "sshd") as sshd:
        yield Site(host, sshd, bindir, tmp_path)


def host_sshd(host, folder):
    """An sshd on loopback whose sessions run inside the simulated host, as a real ESXi's sshd's do
    (a context manager: running_sshd's server). The server process is sshd itself, entered into the host
    directly (on_host): `esxisim shell` kept a Python in between for the server's life, a Python start
    (25-60 ms of CPU) per server, one per test of the ~550 on the `site` fixture."""
    return running_sshd(folder, wrap=on_host(host, "env"))


@contextlib.contextmanager
def web_host_behind_sshd(tmp):
    """A simulated host under tmp/host with one VM, `web` (1 MiB, powered on), and an sshd in front of it
    under tmp/sshd: (host, sshd), the host stopped after. The one host a file of SSH-mode outsider tests
    shares (a module-scoped lab), written once so the files set it up alike."""
    host = make_host(tmp / "host")
    try:
        host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
        with host_sshd(host, tmp / "sshd") as sshd:
            yield host, sshd
    finally:
        host.stop()


def replace_host_python(host, make) -> None:
    """The simulated host's python and python3 replaced by what `make(path)` puts there (nothing,
    an older python, a script that misbehaves): the host states SSH mode must cope with."""
    from esxisim import toolgen

    usr_bin = toolgen.upper(host, "usr_bin")
    for name in ("python", "python3"):
        path = os.path.join(usr_bin, name)
        if os.path.lexists(path):
            os.unlink(path)
        make(path)
