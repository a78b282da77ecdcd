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
from hotvcb.jobs import qemu_vmdk, restore_stage
from hotvcb.jobs.machine_of import machine_of
from hotvcb.localshell import LocalShell
from fakelog import Log

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


def test_for_qemu_drops_blank_lines_only_and_describes_the_same_disk():
    text = BLANK.replace("\n\nRW", "\n# Extent description\n  \r\nRW").replace("0\n\nddb", "0\r\n\r\nddb")
    fixed = vmdk.for_qemu(text)
    assert fixed == text.replace("  \r\n", "").replace("\r\n\r\n", "\r\n")
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


def test_a_sparse_delta_over_a_blank_line_descriptor_reads_its_parent_from_a_copy(tmp_path):
    """qemu-img's delta (its hint inside the sparse file) over the blank-line descriptor: the delta is
    linked into the work folder beside the parent's copy, and the chain reads as the 1 MiB disk."""
    folder, data = backup(tmp_path)
    subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", "-F", "vmdk", "-b", "disk.vmdk", "top.vmdk", "1M"],
                   cwd=str(folder), check=True)
    assert [l.virtual_size for l in qemuimg.info(LocalShell(), str(folder / "top.vmdk"))] == [MiB, 2 * MiB]
    opened = qemu_vmdk.opened(LocalShell(), str(folder / "top.vmdk"), str(tmp_path / "work"))
    assert raw_of(opened, tmp_path) == data


def test_an_extent_line_qemu_reads_and_vmware_does_not_is_refused_naming_the_descriptor(tmp_path):
    """A second extent line with a word after its offset: no extent line to VMware (or hotvcb's check
    of the files a descriptor names), one more extent to qemu's sscanf (a 2 MiB disk): refused."""
    folder, _data = backup(tmp_path, vmdk.for_qemu(BLANK).replace(
        ' 0\n', ' 0\nRW 2048 FLAT "disk-flat.vmdk" 0 x\n'))
    with pytest.raises(HotvcbError, match=r"disk\.vmdk: qemu-img reads it as a disk of 2097152 bytes, its "
                                          r"descriptor gives 1048576"):
        qemu_vmdk.opened(LocalShell(), str(folder / "disk.vmdk"), str(tmp_path / "work"))


def test_a_libvirt_backups_blank_line_vmdk_is_staged_for_esxi_as_the_one_disk(tmp_path):
    """The ESXi restore of a KVM backup converts its disks first (restore_stage.stage): a .vmdk disk
    there is read through the same copy, and the work folder is gone before the plan reads the stage."""
    folder, data = backup(tmp_path)
    (folder / "domain.xml").write_text(
        "<domain type='kvm'><name>lv</name><memory unit='MiB'>64</memory><vcpu>1</vcpu><os><type arch='x86_64'>"
        "hvm</type></os><devices><disk type='file' device='disk'><driver type='vmdk'/><source file='disk.vmdk'/>"
        "<target dev='sda' bus='sata'/></disk></devices></domain>")
    dest = tmp_path / "stage"
    dest.mkdir()
    restore_stage.stage(LocalShell(), machine_of(LocalShell(), str(folder)), str(dest), Log())
    assert sorted(n for n in os.listdir(str(dest)) if not n.endswith(".vmx")) == ["sda-flat.vmdk", "sda.vmdk"]
    assert raw_of(str(dest / "sda.vmdk"), tmp_path) == data


def test_an_extent_with_a_quote_is_read_through_a_name_without_one(tmp_path):
    """qemu ends an extent's name at its first `"` (`Web "prod"-flat.vmdk` opened as `Web `): the copy names
    it by a link without the quote, one no other file of the chain has (the descriptor is called
    `Web _prod_-flat.vmdk` here)."""
    text = BLANK.replace("\n\nRW", "\nRW").replace('"disk-flat.vmdk"', '"Web "prod"-flat.vmdk"')
    folder, data = backup(tmp_path, text)
    os.rename(str(folder / "disk-flat.vmdk"), str(folder / 'Web "prod"-flat.vmdk'))
    os.rename(str(folder / "disk.vmdk"), str(folder / "Web _prod_-flat.vmdk"))
    path = str(folder / "Web _prod_-flat.vmdk")
    work = str(tmp_path / "work")
    opened = qemu_vmdk.opened(LocalShell(), path, work)
    assert opened == work + "/Web _prod_-flat.vmdk"
    assert '"1-Web _prod_-flat.vmdk"' in open(opened).read()
    assert raw_of(opened, tmp_path) == data
    assert (folder / "Web _prod_-flat.vmdk").read_text() == text  # the backup only read
