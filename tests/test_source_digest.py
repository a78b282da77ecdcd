"""store/source_digest.py through its API with a real copy (qemu-img convert to raw): the digest
taken from the source during the copy is the copy's, keyed by the copy's path; a source that
cannot be read leaves the copy to the seal; a failed copy raises its own error."""

import logging
import os

import pytest

from qemuvm import make_initial, needs_qemu

from hotvcb.errors import HostError
from hotvcb.hosts.qemu import QemuHost
from hotvcb.store import source_digest
from hotvcb.model import Disk
from hotvcb.shell import LocalShell
from hotvcb.store import manifest

pytestmark = needs_qemu


class RawHost(QemuHost):
    """The QEMU driver, told that a raw copy holds the bytes of `source` (a raw image: it does)."""

    def __init__(self, tmp, source):
        super().__init__(LocalShell(), str(tmp))
        self.source = source

    def copied_as(self, disk, dst, fmt):
        return self.source, dst[: -len(".img")] + ".raw"


@pytest.fixture
def disk(tmp_path):
    src = str(tmp_path / "d.img")
    make_initial(src, 8 << 20, 3 << 20)
    (tmp_path / "out").mkdir()
    return Disk(key="drive0", path=src, datastore="", adapter="")


def test_the_source_digest_is_the_copys(tmp_path, disk):
    host = RawHost(tmp_path, disk.path)
    dst = str(tmp_path / "out" / "d.img")
    files, digests = source_digest.copy_disk(host, disk, dst, "raw", None, logging.getLogger("t"))
    copy = str(tmp_path / "out" / "d.raw")
    assert files == ["d.raw"] and list(digests) == [copy]
    assert digests[copy].entry() == manifest.digest_file(LocalShell(), copy).entry()


def test_an_unreadable_source_leaves_the_copy_to_the_seal(tmp_path, disk):
    host = RawHost(tmp_path, str(tmp_path / "gone.img"))
    files, digests = source_digest.copy_disk(host, disk, str(tmp_path / "out" / "d.img"), "raw", None,
                                             logging.getLogger("t"))
    assert files == ["d.raw"] and digests == {}


def test_a_failed_copy_raises_its_own_error(tmp_path, disk):
    host = RawHost(tmp_path, disk.path)
    with pytest.raises(HostError):
        source_digest.copy_disk(host, disk, str(tmp_path / "missing" / "d.img"), "raw", None, logging.getLogger("t"))
    assert not os.path.exists(str(tmp_path / "missing"))
