"""hotvcb run on this machine as an admin runs it (a --qemu target, or no host at all), for the tests of
how its command line is read: the run, its words, its JSON, and an empty QMP folder to point it at."""

import json
import os
import subprocess
import sys

import pytest

SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def local(*args, timeout=120, cwd=None):
    return subprocess.run([sys.executable, "-m", "hotvcb"] + [str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout, cwd=str(cwd or SRC), env=dict(os.environ, PYTHONPATH=SRC))


def said(r):
    return r.stdout + r.stderr


def json_of(r):
    try:
        return json.loads(r.stdout)
    except ValueError:
        raise AssertionError("no JSON on stdout: %r" % said(r)) from None


@pytest.fixture
def qemu(tmp_path):
    """An empty QMP folder and a config sending backups to an empty volume: (folder, config)."""
    (tmp_path / "qmp").mkdir()
    (tmp_path / "vol").mkdir()
    conf = tmp_path / "hotvcb.conf"
    conf.write_text("VM_BACKUP_VOLUME=%s\nDISK_BACKUP_FORMAT=qcow2\n" % (tmp_path / "vol"))
    return tmp_path / "qmp", conf
