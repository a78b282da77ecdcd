import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "tests" / "data" / "esxi-samples"
sys.path.insert(0, str(ROOT))


@pytest.fixture
def sample():
    def read(prefix: str) -> str:
        matches = sorted(SAMPLES.glob(prefix + "*"))
        assert matches, "no sample %s in %s" % (prefix, SAMPLES)
        return matches[0].read_text(encoding="utf-8")

    return read



@pytest.fixture
def host(tmp_path):
    """A simulated ESXi 7.0.3 host with datastore1 (VMFS6), ds5 (VMFS5) and backup."""
    from simhost import make_host

    h = make_host(tmp_path / "host")
    yield h
    h.stop()


@pytest.fixture
def tmpfs(tmp_path):
    """A small file system of its own (to fill it, or to make it read-only): mount(name, size)."""
    mounted = []

    def mount(name, size):
        where = tmp_path / name
        where.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s" % size, "tmpfs", str(where)], check=True)
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", str(where)])
