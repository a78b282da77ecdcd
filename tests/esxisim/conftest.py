"""Fixtures for the esxisim tests."""
import os

import pytest

from simtools import Host  # noqa: F401  (puts the repo on sys.path)


@pytest.fixture
def host(tmp_path):
    h = Host.create(str(tmp_path / "host"), version="7.0.3", crond=False)
    h.add_datastore("datastore1", 2 << 30, vmfs=6)
    h.add_datastore("ds5", 2 << 30, vmfs=5)
    yield h
    h.stop()


@pytest.fixture(scope="session", autouse=True)
def _root_only():
    if os.geteuid() != 0:
        pytest.skip("esxisim needs root (mount namespaces)")
