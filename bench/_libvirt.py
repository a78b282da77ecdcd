"""What the libvirt benchmarks share: the repository and tests/ on the path, a running libvirtd, a scratch folder."""

import os
import sys
import tempfile
from typing import Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

import kvmguest  # noqa: E402


def scratch(prefix: str) -> Optional[str]:
    """A folder libvirt's QEMU user can read, or None (and why, printed) where libvirt cannot run."""
    why = kvmguest.available()
    if why:
        print("skipped: %s" % why)
        return None
    kvmguest.ensure_libvirtd()
    root = tempfile.mkdtemp(prefix=prefix, dir="/var/tmp")
    os.chmod(root, 0o755)
    return root
