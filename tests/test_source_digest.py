"""store/source_digest.py through its API with a real copy (qemu-img convert to raw): the digest
taken from the source during the copy is the copy's, keyed by the copy's path; a source that
cannot be read leaves the copy to the seal; a failed copy raises its own error. A qcow2 copy
(the QEMU driver's own copied_as) gets the content digest of its source, raw or qcow2, and a raw
copy of a qcow2 image its virtual disk's as a plain digest, unless the reader refuses the source or
the copy's disk is not the source's size."""

import logging
import os

import pytest

from qemuvm import make_initial, needs_qemu, qemu_img

from hotvcb.errors import HostError
from hotvcb.hosts.base import Copied
from hotvcb.hosts.qemu import QemuHost
from hotvcb.localshell import LocalShell
from hotvcb.store import source_digest
from hotvcb.model import Disk
from hotvcb.store import manifest

pytestmark = needs_qemu


class RawHost(QemuHost):
    """The QEMU driver, told that a raw copy holds the bytes of `source` (a raw image: it does)."""

    def __init__(self, tmp, source):
        super().__init__(LocalShell(), str(tmp))
        self.source = source

    def copied_as(self, disk, dst, fmt):
        return Copied(self.source, dst[: -len(".img")] + ".raw")


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


def qemu_host(tmp_path, disk, fmt):
    host = QemuHost(LocalShell(), str(tmp_path))
    host._formats[disk.path] = fmt  # what load_vm learns from query-block
    return host


@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_a_qcow2_copy_gets_the_content_of_its_source(tmp_path, disk, fmt):
    if fmt == "qcow2":
        image = str(tmp_path / "d.qcow2")
        assert qemu_img("convert", "-O", "qcow2", disk.path, image).returncode == 0
        disk = Disk(key=disk.key, path=image, datastore="", adapter="")
    host = qemu_host(tmp_path, disk, fmt)
    files, digests = source_digest.copy_disk(host, disk, str(tmp_path / "out" / "d.img"), "qcow2", None,
                                             logging.getLogger("t"))
    copy = str(tmp_path / "out" / "d.qcow2")
    assert files == ["d.qcow2"] and list(digests) == [copy]
    assert isinstance(digests[copy], manifest.ContentDigest)
    assert digests[copy].digest.entry() == manifest.digest_content(LocalShell(), copy, "qcow2").entry()


@pytest.mark.parametrize("fmt, copy", [("qcow2", "d.qcow2"), ("raw", "d.raw"), ("thin", "d-flat.vmdk")])
def test_a_raw_source_of_no_whole_sector_leaves_the_copy_to_the_seal(tmp_path, fmt, copy):
    """qemu-img rounds the disk up to 512 bytes: the raw file's digest is not the copy's (content)."""
    src = str(tmp_path / "odd.img")
    make_initial(src, 1000001, 4096)
    (tmp_path / "out").mkdir()
    disk = Disk(key="drive0", path=src, datastore="", adapter="")
    files, digests = source_digest.copy_disk(qemu_host(tmp_path, disk, "raw"), disk, str(tmp_path / "out" / "d.img"),
                                             fmt, None, logging.getLogger("t"))
    assert copy in files and digests == {}


@pytest.mark.parametrize("fmt, copy", [("raw", "d.raw"), ("eagerzeroedthick", "d-flat.vmdk")])
def test_a_raw_copy_of_a_qcow2_image_gets_its_disks_digest_as_the_files(tmp_path, disk, fmt, copy):
    image = str(tmp_path / "d.qcow2")
    assert qemu_img("convert", "-O", "qcow2", disk.path, image).returncode == 0
    disk = Disk(key=disk.key, path=image, datastore="", adapter="")
    files, digests = source_digest.copy_disk(qemu_host(tmp_path, disk, "qcow2"), disk, str(tmp_path / "out" / "d.img"),
                                             fmt, None, logging.getLogger("t"))
    path = str(tmp_path / "out" / copy)
    assert copy in files and list(digests) == [path]
    assert digests[path].entry() == manifest.digest_file(LocalShell(), path).entry()


def test_which_copies_of_a_raw_or_qcow2_image_hold_its_disk(tmp_path, disk):
    """qcow2: a content copy; raw and the flat VMDKs: the copy file holds the disk as it is; a sparse
    VMDK (qemu-img's own layout) or a source of another format: none."""
    out = str(tmp_path / "out")

    def copied(src_format, fmt):
        return qemu_host(tmp_path, disk, src_format).copied_as(disk, out + "/d.img", fmt)

    assert copied("raw", "qcow2") == Copied(disk.path, out + "/d.qcow2", "qcow2", "raw")
    assert copied("qcow2", "raw") == Copied(disk.path, out + "/d.raw", "", "qcow2")
    for fmt in ("thin", "zeroedthick", "eagerzeroedthick"):
        assert copied("raw", fmt) == Copied(disk.path, out + "/d-flat.vmdk", "", "raw")
    assert copied("raw", "2gbsparse") is None
    assert copied("vmdk", "qcow2") is None and copied("vmdk", "raw") is None
