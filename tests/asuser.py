"""hotvcb run as another user (nobody) from a checkout that user may not reach.

A clone often lies under a 0700 folder (a fresh CI clone in `mktemp -d`, root's home), and the pyenv
interpreters live under /root: the other user runs the system python on a world-readable copy.
"""

import os
import shutil
import tempfile
from contextlib import contextmanager

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYS_PYTHON = "/usr/bin/python3"  # one another user can run


@contextmanager
def readable_code():
    """A folder holding a copy of the hotvcb package that every user may read: put it on PYTHONPATH."""
    code = tempfile.mkdtemp(prefix="hotvcb-code-")
    try:
        shutil.copytree(os.path.join(ROOT, "hotvcb"), os.path.join(code, "hotvcb"),
                        ignore=shutil.ignore_patterns("__pycache__"))
        for folder, _dirs, files in os.walk(code):
            os.chmod(folder, 0o755)
            for name in files:
                os.chmod(os.path.join(folder, name), 0o644)
        yield code
    finally:
        shutil.rmtree(code)
