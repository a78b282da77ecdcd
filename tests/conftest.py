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
