"""sparsecheck: a hosted sparse extent is as long as its header, grain directory and tables need."""

import os
import shutil
import subprocess

import pytest

from hotvcb import sparsecheck

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")


def extent(tmp_path):
    """The bytes of a 2gbsparse extent (qemu-img's twoGbMaxExtentSparse) of an 8 MiB disk, 3 MiB written."""
    raw = tmp_path / "raw"
    raw.write_bytes(os.urandom(3 << 20) + bytes(5 << 20))
    subprocess.run(["qemu-img", "convert", "-O", "vmdk", "-o", "subformat=twoGbMaxExtentSparse", str(raw),
                    str(tmp_path / "d.vmdk")], check=True)
    return (tmp_path / "d-s001.vmdk").read_bytes()


def test_a_whole_extent_and_other_files_pass(tmp_path):
    data = extent(tmp_path)
    assert sparsecheck.cut_short(lambda n: data[:n], len(data)) is None
    assert sparsecheck.cut_short(lambda n: b"# Disk DescriptorFile\n"[:n], 22) is None


@pytest.mark.parametrize("keep, part", [(-1, "grain tables point"), (0.5, "grain tables point"),
                                        (1000, "grain directory"), (100, "header")])
def test_an_extent_cut_short_is_named(tmp_path, keep, part):
    data = extent(tmp_path)
    cut = len(data) - 1 if keep == -1 else int(len(data) * keep) if keep < 1 else keep
    why = sparsecheck.cut_short(lambda n: data[:min(n, cut)], cut)
    assert why is not None and part in why, why
