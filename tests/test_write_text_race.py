"""Two runs recording one file at once (two verifies of one backup, found by an outside tester):
each must leave the file whole, one writer's text or the other's, never a mix or a truncation."""

import os
import subprocess
import sys

from hotvcb.localshell import LocalShell

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WRITER = """
import sys
from hotvcb.localshell import LocalShell
shell, path, mark = LocalShell(), sys.argv[1], sys.argv[2]
for _ in range(150):
    shell.write_text(path, mark * (256 * 1024))
"""


def test_concurrent_writers_never_leave_a_mixed_or_short_file(tmp_path):
    path = str(tmp_path / "manifest.json")
    LocalShell().write_text(path, "a" * (256 * 1024))
    env = dict(os.environ, PYTHONPATH=ROOT)
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, path, mark], env=env) for mark in "ab"]
    seen = set()
    while any(w.poll() is None for w in writers):
        with open(path) as f:
            text = f.read()
        seen.add((len(text), text[:1], text[-1:]))
        assert len(text) == 256 * 1024 and text == text[0] * len(text), "a torn %d-byte file" % len(text)
    assert [w.wait() for w in writers] == [0, 0]
    assert [n for n in os.listdir(str(tmp_path)) if n != "manifest.json"] == []  # no temp left behind
