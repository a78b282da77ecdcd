"""KVM backups across (issue 12, items 3-5): a bare-QEMU backup and a libvirt-layout backup
restore to KVM (defined in libvirt) and to ESXi (esxisim, every VMDK format), and garbage
definitions are one clear error.

The libvirt-layout backup (domain.xml + `<target dev>.qcow2` + hotvcb.json + STATUS.ok) is
made here from a real QEMU backup, sealed with hotvcb's own digests, until the libvirt driver
(issue 12 items 1, 2) writes them.
"""

import json
import os
import shutil
import subprocess

import pytest

from bootguest import make_boot_disk
from hotvcb.localshell import LocalShell
from hotvcb.store import manifest
from qemuvm import PYTHON, QemuVm, env, hotvcb_argv, needs_qemu, same_content, short_dir
from simhost import VOLUME, hotvcb, make_host, needs_root

pytestmark = needs_qemu
VIRSH = shutil.which("virsh")
LIBVIRT_XML = """<domain type='kvm'>
  <name>lv</name>
  <uuid>0f4c2a56-5d0b-4d6c-9a3e-6c1f0e9d1a11</uuid>
  <memory unit='KiB'>65536</memory>
  <vcpu placement='static'>2</vcpu>
  <os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type><boot dev='hd'/></os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/lv.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'><target dev='sda' bus='sata'/><readonly/></disk>
    <interface type='network'>
      <mac address='52:54:00:12:34:56'/><source network='default'/><model type='virtio'/>
    </interface>
  </devices>
</domain>
"""


def cli(*args, timeout=300):
    args = tuple(str(a) for a in args)
    if "--boot" in args:
        args += ("--boot-accel", "tcg")  # nested KVM here is slower than TCG
    r = subprocess.run([PYTHON, "-m", "hotvcb"] + list(args), capture_output=True, text=True, timeout=timeout,
                       env=env())
    r.out = r.stdout + r.stderr
    return r


def seal(folder, disks):
    """hotvcb.json and STATUS.ok for a hand-made backup folder, with hotvcb's own digests."""
    shell = LocalShell()
    files = {f: manifest.digest_file(shell, os.path.join(folder, f)).entry() for f in sorted(os.listdir(folder))}
    data = {"format": manifest.FORMAT, "version": manifest.VERSION, "vm": "lv", "result": "ok", "message": "",
            "disk_format": "qcow2", "disks": [{"key": k, "source": "", "files": [f], "ok": True, "error": ""}
                                              for k, f in disks],
            "files": files, "verified": None}
    with open(os.path.join(folder, manifest.MANIFEST), "w") as f:
        f.write(manifest.dumps(data))
    with open(os.path.join(folder, "STATUS.ok"), "w") as f:
        f.write("ok\n")


@pytest.fixture(scope="module")
def kvm(tmp_path_factory):
    """A bare-QEMU backup of a running VM holding the test guest, and a libvirt-layout backup of it."""
    root = tmp_path_factory.mktemp("kvm")
    sockets = short_dir("hx")
    image = str(root / "guest.raw")
    make_boot_disk(image, 4 << 20)
    for sub in ("inv", "ctl"):
        os.makedirs(os.path.join(sockets, sub))
    vm = QemuVm("guest", image, "raw", os.path.join(sockets, "inv"), os.path.join(sockets, "ctl"),
                str(root / "qemu.log"))
    try:
        volume = root / "backups"
        conf = root / "hotvcb.conf"
        conf.write_text("VM_BACKUP_VOLUME=%s\nDISK_BACKUP_FORMAT=qcow2\nCREATE_VM_BACKUP_VOLUME=1\n" % volume)
        r = subprocess.run(hotvcb_argv(os.path.join(sockets, "inv"), "backup", "-m", "guest", "-g", conf,
                                       "-w", root / "work"), capture_output=True, text=True, timeout=300, env=env())
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        vm.quit()
        shutil.rmtree(sockets, ignore_errors=True)
    (qemu_backup,) = [str(volume / "guest" / e) for e in os.listdir(volume / "guest")]
    lv = volume / "lv" / "lv-2026-12-01_21-00-00"
    lv.mkdir(parents=True)
    (disk,) = [f for f in os.listdir(qemu_backup) if f.endswith(".qcow2")]
    shutil.copyfile(os.path.join(qemu_backup, disk), str(lv / "vda.qcow2"))
    (lv / "domain.xml").write_text(LIBVIRT_XML)
    seal(str(lv), [("vda", "vda.qcow2")])
    return {"qemu": qemu_backup, "libvirt": str(lv), "image": image}


def test_qemu_backup_restores_to_kvm_defines_in_libvirt_and_boots(kvm, tmp_path):
    define = ("--libvirt", "test:///default") if VIRSH else ()
    r = cli("restore", kvm["qemu"], "--kvm", tmp_path, "--name", "guest copy", "--format", "raw", "--disk-bus",
            "virtio", *define)
    assert r.returncode == 0, r.out
    folder = tmp_path / "guest copy"
    assert sorted(os.listdir(folder)) == ["guest copy.sh", "guest copy.xml", "vda.raw"]  # as the VM had it
    assert same_content(kvm["image"], str(folder / "vda.raw"))
    assert ("Defined in libvirt" in r.out) == bool(VIRSH)
    assert "records no NICs or disk buses: 1 vCPU, 32 MiB, no NIC, disks on virtio" in r.out  # what a bare-QEMU backup cannot say is said
    assert '<memory unit="MiB">32</memory>' in (folder / "guest copy.xml").read_text()  # QemuVm's -m 32
    r = cli("verify", "--boot", folder, "--boot-timeout", 120, "--console-log", tmp_path / "console.log")
    assert r.returncode == 0 and "PASS" in r.out, r.out


def test_libvirt_backup_keeps_its_definition_under_a_new_identity(kvm, tmp_path):
    r = cli("restore", kvm["libvirt"], "--kvm", tmp_path, "--name", "lv2")
    assert r.returncode == 0, r.out
    xml = (tmp_path / "lv2" / "lv2.xml").read_text()
    assert "<name>lv2</name>" in xml and "0f4c2a56" not in xml and "52:54:00:12:34:56" not in xml
    assert "bus=\"virtio\"" in xml and "<emulator>/usr/bin/qemu-system-x86_64</emulator>" in xml  # kept
    assert str(tmp_path / "lv2" / "vda.qcow2") in xml and "/var/lib/libvirt/images" not in xml
    assert "device=\"cdrom\"" in xml  # devices we do not model survive
    assert same_content(kvm["image"], str(tmp_path / "lv2" / "vda.qcow2"))
    if VIRSH:
        r = subprocess.run([VIRSH, "-c", "test:///default", "define", str(tmp_path / "lv2" / "lv2.xml")],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr


@needs_root
@pytest.mark.parametrize("which, formats", [("libvirt", ("thin", "2gbsparse")),
                                            ("qemu", ("zeroedthick", "eagerzeroedthick"))])
def test_kvm_backup_restores_to_esxi_in_every_format(kvm, tmp_path, which, formats):
    host = make_host(tmp_path / "host")
    try:
        name = os.path.basename(kvm[which])
        vm = name.rsplit("-", 6)[0] if which == "qemu" else "lv"
        disk = "sda.vmdk" if which == "qemu" else "vda.vmdk"  # named for its libvirt target
        inside = "%s/%s/%s" % (VOLUME, vm, name)
        os.makedirs(os.path.dirname(host.real(inside)))
        shutil.copytree(kvm[which], host.real(inside))
        r = hotvcb(host, "restore", inside, "--datastore", "datastore1", "-d", "1")
        assert r.returncode == 0 and "converted to VMDK with qemu-img first" in r.stdout, r.stdout + r.stderr
        assert os.listdir(host.real("/vmfs/volumes/datastore1")) == []  # a dry run stages nothing
        for fmt in formats:
            host.set_module("multiextent", fmt == "2gbsparse")
            r = hotvcb(host, "restore", inside, "--datastore", "datastore1", "--format", fmt, "--name", "k-" + fmt)
            assert r.returncode == 0, r.stdout + r.stderr
            folder = host.real("/vmfs/volumes/datastore1/k-" + fmt)
            vmx = open(os.path.join(folder, "k-%s.vmx" % fmt)).read()
            assert 'displayName = "k-%s"' % fmt in vmx and 'sata0:0.fileName = "%s"' % disk in vmx
            assert same_content(kvm["image"], os.path.join(folder, disk))
            assert host.vmid_by_name("k-" + fmt)
        assert not [e for e in os.listdir(host.real("/vmfs/volumes/datastore1")) if e.startswith(".hotvcb")]
        host.add_datastore("tiny", 4 << 20)  # 4 MiB thick + the staged VMDK's data do not fit
        r = hotvcb(host, "restore", inside, "--datastore", "tiny", "--format", "eagerzeroedthick")
        assert r.returncode != 0 and "(the staged VMDKs and the VM), only" in r.stdout + r.stderr, r.stdout + r.stderr
        assert "Converting" not in r.stdout + r.stderr  # refused before any conversion
        assert os.listdir(host.real("/vmfs/volumes/tiny")) == []
    finally:
        host.stop()


@pytest.mark.parametrize("name, text, says", [
    ("domain.xml", "<domain><name>x</name", "is not a domain definition"),
    ("domain.xml", "<domain><name>x</name><memory unit='MiB'>lots</memory></domain>", "is not a memory size"),
    ("domain.xml", "<domain><name>x</name><memory>65536</memory><vcpu>-2</vcpu></domain>", "is not a CPU count"),
    ("x.vmx", 'displayName = "x"\nmemSize = "lots"\n', "memSize 'lots' is not a positive whole number"),
    ("x.vmx", 'displayName = "x"\nmemSize = "64"\nfirmware = "coreboot"\n', "neither bios nor efi"),
    ("x.vmx", 'displayName = "x"\nmemSize = "64"\nsata0:0.present = "TRUE"\nsata0:0.fileName = "d.vmdk"\n'
              'ethernet0.present = "TRUE"\nethernet0.address = "zz:00"\n', "is not a MAC address"),
])
def test_garbage_definitions_are_one_clear_error(tmp_path, name, text, says):
    (tmp_path / name).write_text(text)
    make_boot_disk(str(tmp_path / "d.raw"), 1 << 20)
    (tmp_path / "d.vmdk").write_text('# Disk DescriptorFile\ncreateType="monolithicFlat"\nRW 2048 FLAT "d.raw" 0\n')
    r = cli("verify", "--boot", tmp_path, "--boot-timeout", 30)
    assert r.returncode == 1, r.out
    assert says in r.out and "Traceback" not in r.out and len(r.stderr.strip().splitlines()) == 1, r.out


def test_kvm_restore_refusals_and_failures_leave_nothing_half_done(kvm, tmp_path):
    r = cli("restore", kvm["libvirt"], "--kvm", tmp_path, "-d", "1")
    assert r.returncode == 0 and "DISK: " in r.out and "vda.qcow2" in r.out, r.out
    assert os.listdir(tmp_path) == []  # a dry run writes nothing
    r = cli("restore", kvm["libvirt"], "--kvm", tmp_path, "--libvirt", "bogus:///nowhere")
    assert r.returncode == 6 and "define it by hand: virsh -c bogus:///nowhere define" in r.out, r.out
    assert sorted(os.listdir(tmp_path / "lv")) == ["lv.sh", "lv.xml", "vda.qcow2"]  # complete, kept
    r = cli("restore", kvm["libvirt"], "--kvm", tmp_path)
    assert r.returncode == 6 and "already exists" in r.out, r.out
    # a damaged copy of the backup (same size, one bad header field): refused before anything is written ...
    bad = tmp_path / "bk" / "lv" / os.path.basename(kvm["libvirt"])
    shutil.copytree(kvm["libvirt"], str(bad))
    with open(str(bad / "vda.qcow2"), "r+b") as f:
        f.seek(40)  # the header's L1 table offset ...
        f.seek(int.from_bytes(f.read(8), "big"))
        f.write((0x201).to_bytes(8, "big"))  # ... whose first entry now points at an unaligned L2 table
    r = cli("restore", bad, "--kvm", tmp_path, "--name", "lv3")
    assert r.returncode == 6 and "fails verification" in r.out, r.out
    # ... and with --no-verify qemu-img fails, and the unfinished folder is removed
    r = cli("restore", bad, "--kvm", tmp_path, "--name", "lv3", "--no-verify")
    assert r.returncode == 6 and "converting" in r.out, r.out
    assert sorted(os.listdir(tmp_path)) == ["bk", "lv"]


@needs_root
def test_kvm_restore_to_a_full_filesystem_is_refused_before_writing(kvm, tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], check=True, timeout=30)
    try:
        r = cli("restore", kvm["libvirt"], "--kvm", small, "--format", "raw")
        assert r.returncode == 6 and "needs up to 4.0 MiB" in r.out and "free" in r.out, r.out
        assert os.listdir(small) == []
    finally:
        subprocess.run(["umount", str(small)], check=True, timeout=30)
