"""Across hypervisors (issue 12, items 3-5): ESXi backup -> KVM, QEMU backup -> ESXi, smoke boot.

The guest is tests/bootguest.py: a boot sector that prints a login prompt on
COM1, put into the first sector of an esxisim VM's disk, so "it boots" means
SeaBIOS found the restored disk on the bus the definition names and ran it.
"""

import glob
import os
import shutil
import signal
import subprocess
import tempfile

import pytest

from bootguest import write_boot_sector
from hotvcb.convert.firmware import ovmf
from hotvcb.convert.machine import normal_uuid
from hotvcb.vmx import VmxFile
import procs
from qemuvm import PYTHON, env, kill_tree, needs_qemu, same_content, wait_until
from simhost import VOLUME, hotvcb, make_host, needs_root, write_conf
from simhost import backups as simhost_backups

pytestmark = [needs_qemu, needs_root]
VM = "web (prod)"


def cli(*args, timeout=300, environ=None):
    if "--boot" in args:
        args += ("--boot-accel", "tcg")  # nested KVM here is slower than TCG
    r = subprocess.run([PYTHON, "-m", "hotvcb"] + [str(a) for a in args], capture_output=True, text=True,
                       timeout=timeout, env=environ or env())
    r.out = r.stdout + r.stderr
    return r


def qemus_using(path):
    """QEMU processes whose command line names path (its console log: unique per test)."""
    return [pid for pid, argv in procs.argvs()
            if argv[0].endswith(b"qemu-system-x86_64") and any(path.encode() in a for a in argv)]


def console_of(r):
    """The console log a smoke boot names; in its own temp folder when none was given."""
    log = r.out.split("console log: ")[1].split(")")[0]
    assert os.path.exists(log) and os.path.basename(os.path.dirname(log)).startswith("hotvcb-boot-"), log
    return log


@pytest.fixture(scope="module")
def esxi(tmp_path_factory):
    """An esxisim host with two VMs holding the test guest (one bootable, one not) and a backup of each."""
    root = tmp_path_factory.mktemp("crosshv")
    host = make_host(root / "host")
    backups = {}
    try:
        for name, bootable, disks in ((VM, True, [{"size": "4M", "controller": "pvscsi"}, {"size": "1M", "bus": "sata"}]),
                                      ("dead", False, [{"size": "4M"}]), ("uefi", False, [{"size": "1M"}])):
            vmid = host.create_vm(name, "datastore1", disks, power="off", nvram=True)
            if name == "uefi":
                with open(host.real(host.vm(vmid)["vmx"]), "a") as f:
                    f.write('firmware = "efi"\n')
            first = host.vm_disks(vmid)[0][1]
            write_boot_sector(host.real(first[: -len(".vmdk")] + "-flat.vmdk"), bootable)
            conf = write_conf(host, ENABLE_COMPRESSION=int(name == "dead"))  # a .gz: unpacked to boot or restore
            r = hotvcb(host, "-m", name, "-g", conf)
            assert r.returncode == 0, r.stdout + r.stderr
            (entry,) = simhost_backups(host, name)
            backups[name] = os.path.join(host.real(VOLUME + "/" + name), entry)
        yield host, backups
    finally:
        host.stop()


def test_esxi_backup_restores_to_kvm_and_boots(esxi, tmp_path):
    _host, backups = esxi
    backup = backups[VM]
    conf = tmp_path / "hotvcb.conf"
    conf.write_text("VM_BACKUP_VOLUME=%s\n" % _host.real(VOLUME))
    r = cli("restore", "--latest", VM, "-g", conf, "--kvm", tmp_path, "--name", "web-kvm")
    assert r.returncode == 0, r.out
    folder = tmp_path / "web-kvm"
    assert sorted(os.listdir(folder)) == ["sda.qcow2", "sdb.qcow2", "web-kvm.sh", "web-kvm.xml"]
    assert "Restoring %s to KVM" % backup in r.out
    # pvscsi is not carried to virtio silently: the guest boots from SATA and the log says why
    assert "pvscsi" in r.out and "virtio needs the guest's virtio drivers" in r.out
    vmdks = sorted(f for f in os.listdir(backup) if f.endswith(".vmdk") and not f.endswith("-flat.vmdk"))
    for vmdk, image in zip(vmdks, ("sda.qcow2", "sdb.qcow2")):
        assert same_content(os.path.join(backup, vmdk), str(folder / image))
    xml = (folder / "web-kvm.xml").read_text()
    assert "<name>web-kvm</name>" in xml and "bus=\"sata\"" in xml and str(folder / "sda.qcow2") in xml
    vmx = VmxFile(next(open(os.path.join(backup, f)).read() for f in os.listdir(backup) if f.endswith(".vmx")))
    mac = vmx.get("ethernet0.generatedAddress")
    assert vmx.get("uuid.bios") and mac  # the original's identity is not the copy's
    assert normal_uuid(vmx.get("uuid.bios"), "") not in xml and mac not in xml and "<mac address=" in xml
    r = cli("verify", "--boot", folder, "--boot-timeout", 120, "--console-log", tmp_path / "console.log")
    assert r.returncode == 0, r.out
    assert "PASS" in r.out and "login:" in r.out
    assert qemus_using(str(tmp_path / "console.log")) == []


def test_esxi_backup_smoke_boots_in_place(esxi):
    _host, backups = esxi
    backup = backups[VM]
    before = {f: os.path.getmtime(os.path.join(backup, f)) for f in os.listdir(backup)}
    r = cli("verify", "--boot", VM, "--volume", _host.real(VOLUME), "--boot-timeout", 120)  # its newest good backup
    assert r.returncode == 0 and "Booting %s ..." % backup in r.out, r.out
    log = console_of(r)
    assert "hotvcb-guest login:" in open(log).read()
    assert {f: os.path.getmtime(os.path.join(backup, f)) for f in os.listdir(backup)} == before  # only read
    assert os.listdir(os.path.dirname(log)) == ["console.log"]  # the overlays are gone
    shutil.rmtree(os.path.dirname(log))


def test_a_backup_that_does_not_boot_fails_with_its_console_and_no_qemu_left(esxi):
    _host, backups = esxi
    r = cli("verify", "--boot", backups["dead"], "--boot-timeout", 5)
    assert r.returncode == 6, r.out
    assert "FAIL: no sign of life" in r.out
    log = console_of(r)
    assert os.listdir(os.path.dirname(log)) == ["console.log"]  # the overlays are gone
    assert qemus_using(log) == []
    shutil.rmtree(os.path.dirname(log))


def test_a_compressed_backup_restores_to_kvm(esxi, tmp_path):
    _host, backups = esxi
    assert backups["dead"].endswith(".gz")
    r = cli("restore", backups["dead"], "--kvm", tmp_path)
    assert r.returncode == 0, r.out
    assert os.listdir(tmp_path) == ["dead"]  # the unpacked copy is gone
    assert sorted(os.listdir(tmp_path / "dead")) == ["dead.sh", "dead.xml", "sda.qcow2"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_smoke_boot_stopped_midway_leaves_no_qemu(esxi, tmp_path, sig):
    """Ctrl-C/SIGTERM: hotvcb kills QEMU and exits 2; SIGKILL: QEMU dies with it (PR_SET_PDEATHSIG)."""
    _host, backups = esxi
    console = str(tmp_path / "console.log")
    # a temp folder of the test's own: any smoke boot removes a dead run's work folder, so another test's,
    # beside this one, took the SIGKILLed run's before it was looked at (short: QEMU's sockets live there)
    private = tempfile.mkdtemp(prefix="hb", dir="/tmp")
    environ = dict(env(), TMPDIR=private)
    p = subprocess.Popen([PYTHON, "-m", "hotvcb", "verify", "--boot", backups["dead"], "--boot-timeout", "600",
                          "--boot-accel", "tcg", "--console-log", console], env=environ,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(lambda: qemus_using(console), 60, "the smoke boot's QEMU")
        (work,) = glob.glob("%s/hotvcb-boot-%d-*" % (private, p.pid))
        p.send_signal(sig)
        out = p.communicate(timeout=60)[0]
        wait_until(lambda: not qemus_using(console), 30, "QEMU to end")
    finally:
        kill_tree(p.pid)
        for pid in qemus_using(console):
            os.kill(pid, signal.SIGKILL)  # the test's own cleanup after a failure above
    assert p.returncode == (2 if sig == signal.SIGTERM else -signal.SIGKILL), out
    if sig == signal.SIGKILL:  # the overlay outlived its run; the next smoke boot removes it
        # vmdk0: its disk.vmdk without the blank line before its extent, for qemu (jobs/qemu_vmdk.py);
        # .owner: the run's start time and namespaces, how the next one tells it is gone (tmpwork.py)
        assert sorted(os.listdir(work)) == [".owner", "disk0.qcow2", "qemu.log", "unpacked", "vmdk0"]
        cli("verify", "--boot", backups["dead"], "--boot-timeout", 1, "--console-log", tmp_path / "again.log",
            environ=environ)
    assert not os.path.exists(work)
    shutil.rmtree(private)


@pytest.mark.skipif(ovmf() is None, reason="needs OVMF (apt-get install ovmf)")
def test_an_efi_vm_restores_with_ovmf_and_its_firmware_starts(esxi, tmp_path):
    """The disk holds no EFI loader: OVMF's boot manager (BdsDxe) on the console proves the
    firmware, its variables copy and the SATA disk it tried to boot from."""
    _host, backups = esxi
    r = cli("restore", backups["uefi"], "--kvm", tmp_path)
    assert r.returncode == 0, r.out
    xml = (tmp_path / "uefi" / "uefi.xml").read_text()
    assert "<loader readonly=\"yes\" type=\"pflash\">%s</loader>" % ovmf()[0] in xml
    assert (tmp_path / "uefi" / "efivars.fd").exists()  # for uefi.sh; libvirt makes its own from the template
    r = cli("verify", "--boot", tmp_path / "uefi", "--boot-pattern", "BdsDxe.*QEMU HARDDISK", "--boot-timeout", 120,
            "--console-log", tmp_path / "console.log")
    assert r.returncode == 0 and "PASS" in r.out, r.out
