"""`verify --sample`/`--new` choose which packs of a repository are read; a folder verify has no packs, and
dropped them silently (the admin's nightly `verify --all --sample 10` read every backup whole, or was
believed to check 10 % of a repository it never looked at). Refused with one line, exit 1."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("option", [["--sample", "10"], ["--new"]])
def test_a_repository_only_option_on_a_folder_verify_is_refused(tmp_path, option):
    (tmp_path / "vol").mkdir()
    conf = tmp_path / "hotvcb.conf"
    conf.write_text("VM_BACKUP_VOLUME=%s\n" % (tmp_path / "vol"))
    r = subprocess.run([sys.executable, "-m", "hotvcb", "verify", "--all", "-g", str(conf)] + option,
                       capture_output=True, text=True, timeout=60, env=dict(os.environ, PYTHONPATH=ROOT))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "%s is for a repository's verify" % option[0] in r.stderr and "Traceback" not in r.stderr, r.stderr
