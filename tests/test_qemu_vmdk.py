"""The VMDK descriptors qemu-img is handed out of a backup (jobs/qemu_vmdk.py, vmdk.for_qemu): a blank
line right before an extent line, which VMware skips and qemu's sscanf reads past into the extent (read
twice: a disk of twice its size), is removed from the copy qemu reads; what qemu-img then reads at
another size than a descriptor gives is refused in one line naming that descriptor. Local files and the
real qemu-img: no host."""

import os
import subprocess

import pytest

from hotvcb import vmdk
from hotvcb.errors import HotvcbError
from hotvcb.hosts import qemuimg
from hotvcb.jobs import qemu_vmdk
from hotvcb.shell import LocalShell

MiB = 1 << 20
BLANK = '# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType="monolithicFlat"\n' \
        '\nRW 2048 FLAT "disk-flat.vmdk" 0\n\nddb.adapterType = "lsilogic"\n'


def backup(tmp_path, text=BLANK):
    """A folder with disk.vmdk (`text`) over 1 MiB of random data; (folder, the data)."""
    folder = tmp_path / "bk"
    folder.mkdir()
    data = os.urandom(MiB)
    (folder / "disk-flat.vmdk").write_bytes(data)
    (folder / "disk.vmdk").write_text(text)
    return folder, data


def raw_of(path, tmp_path):
    out = str(tmp_path / "out.raw")
    subprocess.run(["qemu-img", "convert", "-f", "vmdk", "-O", "raw", path, out], check=True)
    with open(out, "rb") as f:
        return f.read()


def test_for_qemu_drops_blank_and_comment_lines_but_the_first_and_describes_the_same_disk():
    text = BLANK.replace("\n\nRW", "\n# Extent description\n  \r\nRW").replace("0\n\nddb", "0\r\n\r\nddb")
    fixed = vmdk.for_qemu(text)
    assert fixed.startswith("# Disk DescriptorFile\n")
    lines = fixed.split("\n")
    assert not [l for l in lines[1:-1] if not l.strip() or l.startswith("#")], fixed
    assert vmdk.parse(fixed) == vmdk.parse(text)
    assert vmdk.for_qemu(fixed) == fixed


def test_a_blank_line_before_the_extent_is_read_as_the_one_disk_from_a_copy(tmp_path):
    folder, data = backup(tmp_path)
    path = str(folder / "disk.vmdk")
    assert len(raw_of(path, tmp_path)) == 2 * MiB  # the defect the copy is for: qemu reads the extent twice
    work = str(tmp_path / "work")
    opened = qemu_vmdk.opened(LocalShell(), path, work)
    assert opened == work + "/disk.vmdk"
    assert raw_of(opened, tmp_path) == data
    assert (folder / "disk.vmdk").read_text() == BLANK  # the backup only read


def test_a_descriptor_qemu_reads_as_it_is_is_handed_over_as_it_is(tmp_path):
    folder, data = backup(tmp_path, vmdk.for_qemu(BLANK))
    work = tmp_path / "work"
    assert qemu_vmdk.opened(LocalShell(), str(folder / "disk.vmdk"), str(work)) == str(folder / "disk.vmdk")
    assert not work.exists()


def test_a_parent_qemu_reads_at_another_size_is_refused_naming_it(tmp_path):
    """A sparse delta over the blank-line descriptor: the delta is not copied (its parent hint is in its
    own sparse file), so qemu reads the parent as 2 MiB: refused, naming the parent and both sizes."""
    folder, _data = backup(tmp_path)
    subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", "-F", "vmdk", "-b", "disk.vmdk", "top.vmdk", "1M"],
                   cwd=str(folder), check=True)
    assert [l.virtual_size for l in qemuimg.info(LocalShell(), str(folder / "top.vmdk"))] == [MiB, 2 * MiB]
    with pytest.raises(HotvcbError, match=r"disk\.vmdk: qemu-img reads it as a disk of 2097152 bytes, its "
                                          r"descriptor gives 1048576"):
        qemu_vmdk.opened(LocalShell(), str(folder / "top.vmdk"), str(tmp_path / "work"))
