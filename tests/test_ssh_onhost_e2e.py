"""SSH mode runs hotvcb on the host itself where the host's python can (issue 8: ≤ 15 ssh round
trips per VM): one session per run, whatever the number of VMs; the same backup as a local run;
Ctrl-C reaches the run on the host, which removes its snapshot; the pyz is sent once; a host
whose python is missing or too old is served file by file, and the log says so.

Round trips are the ssh client's sessions, counted by an `ssh` wrapper first on PATH (the
master connection and its control requests are not sessions); sshd runs inside esxisim.
"""

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from simhost import REPO, hotvcb, needs_root, sealed, write_conf, VOLUME
from sshd import needs_sshd, running_sshd
from test_ssh_e2e import _procs

pytestmark = [needs_root, needs_sshd]


class Site:
    """A simulated host behind a real sshd, and hotvcb on "the Linux box" with counted sessions."""

    def __init__(self, host, sshd, bindir, tmp):
        self.host, self.sshd, self.bindir, self.tmp = host, sshd, bindir, tmp
        self.sessions = tmp / "sessions"
        self.folder = tmp / "onhost"  # the host's cache of our builds (HOTVCB_HOST_FOLDER)

    def env(self):
        return dict(os.environ, PYTHONPATH=REPO, PATH="%s:%s" % (self.bindir, os.environ["PATH"]),
                    HOTVCB_HOST_FOLDER=str(self.folder))

    def argv(self, *args):
        return [sys.executable, "-m", "hotvcb"] + self.sshd.cli_args() + [str(a) for a in args]

    def run(self, *args):
        if self.sessions.exists():
            self.sessions.unlink()
        r = subprocess.run(self.argv(*args), capture_output=True, text=True, timeout=300, env=self.env(), cwd=REPO)
        r.out = r.stdout + r.stderr
        trips = self.sessions.read_text().splitlines() if self.sessions.exists() else []
        return r, trips

    def builds(self):
        return sorted(p for p in os.listdir(str(self.folder)) if p.endswith(".pyz"))


@pytest.fixture
def site(host, tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    sessions = tmp_path / "sessions"
    (bindir / "ssh").write_text('#!/bin/sh\ncase " $* " in *" -O "*|*" -N "*) ;; *) printf %%s "$*" | tr "\\n" " " >> %s; echo >> %s ;; esac\n'
                                'exec %s "$@"\n' % (sessions, sessions, shutil.which("ssh")))
    (bindir / "ssh").chmod(0o755)
    wrap = [sys.executable, "-m", "esxisim", "shell", host.root, "--"]
    with running_sshd(tmp_path / "sshd", wrap=wrap, env=dict(os.environ, PYTHONPATH=REPO)) as sshd:
        yield Site(host, sshd, bindir, tmp_path)


def test_one_round_trip_per_run_and_the_build_is_sent_once(host, site, tmp_path):
    for i in range(3):
        host.create_vm("vm %d" % i, "datastore1", [{"size": "4M"}], power="on")
    conf = write_conf(host)
    r, trips = site.run("backup", "-m", "vm 0", "-g", conf, "-l", tmp_path / "client.log")
    assert r.returncode == 0, r.out
    assert "Final status: All VMs backed up OK!" in r.stdout
    assert len(sealed(host, "vm 0")) == 1
    assert len(trips) <= 15, "\n".join(trips)
    assert len(trips) == 1, "\n".join(trips)  # check + send + run: one session
    (build,) = site.builds()
    first = os.stat(str(site.folder / build))
    # the log file named by -l on this machine got the host's lines as they came
    assert "Final status: All VMs backed up OK!" in (tmp_path / "client.log").read_text()
    assert os.listdir(str(site.folder)) == [build], "the run's folder (config copies) is removed"

    r, trips = site.run("backup", "-a", "-g", conf, "--json-report", tmp_path / "report.json")
    assert r.returncode == 0, r.out
    assert len(trips) <= 3 * 15 and len(trips) == 1, "\n".join(trips)
    assert [len(sealed(host, "vm %d" % i)) for i in range(3)] == [2, 1, 1]
    again = os.stat(str(site.folder / build))
    assert site.builds() == [build] and (again.st_ino, again.st_size) == (first.st_ino, first.st_size), \
        "the second run sent nothing: the host's copy was re-used"
    report = __import__("json").loads((tmp_path / "report.json").read_text())
    assert report["exit_code"] == 0 and sorted(v["vm"] for v in report["vms"]) == ["vm 0", "vm 1", "vm 2"]
