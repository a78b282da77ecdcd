"""What a command's start-up imports: `python -m hotvcb COMMAND` loads the CLI and that command's module,
and every run pays for what they import, thousands of times a night across cron jobs and this suite. The
modules below are for some runs only (an archive's, SSH mode's, a repository's, a mailed one's, a driver's
once connected), so they are imported where those runs need them; each test fails when an eager import
brings one back into a command's chain. How long the chains take is measured by `bench/startup.py`.
"""

import json
import os
import subprocess
import sys

import pytest

from hotvcb.cli import COMMANDS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY38 = "/root/.pyenv/versions/3.8.18/bin/python3.8"
PYTHON = PY38 if os.path.exists(PY38) else sys.executable  # the ESXi host's python where pyenv has it

# imported by some runs only, never by a command's start-up
LATE = (
    "tarfile", "gzip", "zipfile",  # .gz backups (targz), SSH mode's reads (sshscripts), a run from the pyz
    "hashlib",  # hashing runs, when they hash (blockdigest.Digester)
    "pkgutil",  # blockdigest's source shipped to an SSH host (hostdigest)
    "tempfile",  # a work folder (tmpwork)
    "xml.etree.ElementTree",  # libvirt XML: KVM restores and cleanups
    "smtplib",  # a mailed run's report
    "hotvcb.repo", "hotvcb.commands.repo_cmd", "hotvcb.commands.repo_restore",  # repository runs
    "hotvcb.sshshell", "hotvcb.sshconnection", "hotvcb.hostrun", "hotvcb.pyzpack",  # SSH mode
    "hotvcb.notify",
    "hotvcb.hosts.esxi", "hotvcb.hosts.qemu", "hotvcb.hosts.libvirt",  # the driver, at common.connect
    "hotvcb.jobs.restore_kvm",  # restore --kvm, cleanup --kvm
)
OWN = {"prune": ("hotvcb.repo", "hashlib")}  # prune works on a repository only


def _imported(command: str):
    """Which of LATE the start-up of `command` imported, in a fresh interpreter, as __main__ imports."""
    script = ("import json, sys\n"
              "import hotvcb.interrupt, hotvcb.pyzcopy, hotvcb.cli, hotvcb.commands.%s_cmd\n"
              "print(json.dumps([m for m in sys.argv[1:] if m in sys.modules]))\n" % command)
    env = dict(os.environ, PYTHONPATH=ROOT)
    done = subprocess.run([PYTHON, "-c", script] + list(LATE), cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("command", COMMANDS)
def test_start_up_leaves_out_what_some_runs_need(command):
    late = [m for m in _imported(command) if m not in OWN.get(command, ())]
    assert late == [], "%s's start-up imports %s: import it where the run needs it" % (command, late)


def test_the_cli_alone_imports_no_command():
    """`hotvcb --version` and the parser's first look at argv import no command's module."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    script = "import sys, hotvcb.cli\nprint(sorted(m for m in sys.modules if m.endswith('_cmd')))\n"
    done = subprocess.run([PYTHON, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done
