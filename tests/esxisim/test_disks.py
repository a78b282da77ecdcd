"""Clones and snapshot deltas are real VMDKs: qemu-img is the independent witness."""
import os
import subprocess

import pytest

from simtools import run_shell, sh
from esxisim import disks, snapshots


def qemu(*args):
    return subprocess.run(["qemu-img"] + list(args), capture_output=True, text=True)


@pytest.fixture
def vm(host):
    vmid = host.create_vm("src vm", "datastore1", [{"size": "24M"}, {"size": "8M", "datastore": "ds5"}])
    return vmid


@pytest.mark.parametrize("fmt", ["thin", "zeroedthick", "eagerzeroedthick", "2gbsparse"])
def test_clone_formats(host, vm, fmt):
    src = host.vm_disks(vm)[0][1]
    dst = "/vmfs/volumes/ds5/out-%s.vmdk" % fmt
    host.set_module("multiextent", True)  # 2gbsparse needs it (test_strict covers the unloaded host)
    r = run_shell(host, "vmkfstools", "-i", src, "-d", fmt, dst)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].startswith("Destination disk format: ")
    assert r.stdout.splitlines()[1] == "Cloning disk '%s'..." % src
    assert r.stdout.endswith("\rClone: 100% done.\n")
    if fmt != "2gbsparse":
        assert "VMFS" in r.stdout.splitlines()[0]
    rs, rd = host.real(src), host.real(dst)
    assert qemu("check", rd).returncode == 0 or fmt != "2gbsparse"
    c = qemu("compare", rs, rd)
    assert c.returncode == 0, c.stdout + c.stderr
    assert host.read_disk(dst) == host.read_disk(src)
    flat = rd[:-5] + "-flat.vmdk"
    size = 24 << 20
    if fmt == "thin":
        assert os.stat(flat).st_blocks * 512 < size
    elif fmt in ("zeroedthick", "eagerzeroedthick"):
        assert os.stat(flat).st_blocks * 512 >= size
        assert 'ddb.thinProvisioned' not in open(rd).read()
    else:
        text = open(rd).read()
        assert 'createType="twoGbMaxExtentSparse"' in text and 'SPARSE "out-2gbsparse-s001.vmdk"' in text
        assert qemu("check", rd).returncode == 0
        back = "/vmfs/volumes/datastore1/back.vmdk"
        r = run_shell(host, "vmkfstools", "-i", dst, "-d", "thin", back)
        assert r.returncode == 0, r.stderr
        assert qemu("compare", rs, host.real(back)).returncode == 0


def test_2gbsparse_splits_at_2gb(tmp_path):
    src = str(tmp_path / "big.vmdk")
    disks.create_base(src, (2 << 30) + (4 << 20), "thin")
    with disks.Disk(src, writable=True) as d:
        d.write((2 << 30) + 4096, b"tail" * 1024)
    dst = str(tmp_path / "big2.vmdk")
    disks.clone(src, dst, "2gbsparse")
    text = open(dst).read()
    assert 'RW 4192256 SPARSE "big2-s001.vmdk"' in text and '"big2-s002.vmdk"' in text
    assert qemu("check", dst).returncode == 0
    assert qemu("compare", src, dst).returncode == 0


@pytest.mark.parametrize("ds,kind", [("datastore1", "seSparse"), ("ds5", "vmfsSparse")])
def test_snapshot_chain_is_qemu_readable_and_clonable(host, ds, kind):
    vmid = host.create_vm("chain", ds, [{"size": "16M"}])
    base = host.vm_disks(vmid)[0][1]
    snapshots.create(host, vmid, "one")
    cur = host.vm_disks(vmid)[0][1]
    with disks.Disk(host.real(cur), writable=True) as d:
        d.write(12345 * 512, b"\xab" * 70000)
    snapshots.create(host, vmid, "two")
    cur2 = host.vm_disks(vmid)[0][1]
    assert cur2.endswith("chain-000002.vmdk")
    text = open(host.real(cur2)).read()
    assert 'createType="%s"' % kind in text
    assert 'parentFileNameHint="chain-000001.vmdk"' in text
    suffix = "-sesparse.vmdk" if kind == "seSparse" else "-delta.vmdk"
    assert os.path.exists(host.real(cur2)[:-5] + suffix)
    assert qemu("check", host.real(cur2)).returncode == 0
    raw = str(host.real(cur2)) + ".raw"
    assert qemu("convert", "-O", "raw", host.real(cur2), raw).returncode == 0
    assert open(raw, "rb").read() == host.read_disk(cur2)
    os.unlink(raw)
    r = run_shell(host, "vmkfstools", "-i", cur2, "-d", "thin", "/vmfs/volumes/ds5/flat.vmdk")
    assert r.returncode == 0, r.stderr
    assert qemu("compare", host.real(cur2), host.real("/vmfs/volumes/ds5/flat.vmdk")).returncode == 0
    assert host.read_disk(base) != host.read_disk(cur2)
    r = run_shell(host, "vmkfstools", "-e", cur2)
    assert r.stdout == "Disk chain is consistent.\n"


def test_create_delete_rename(host):
    r = sh(host, "cd /vmfs/volumes/datastore1 && vmkfstools -c 10M -d eagerzeroedthick 'n 1.vmdk' && "
                 "vmkfstools -E 'n 1.vmdk' n2.vmdk && ls && vmkfstools -q n2.vmdk && vmkfstools -U n2.vmdk && ls")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Creating disk 'n 1.vmdk' and zeroing it out...\nCreate: 100% done.\n")
    assert "n2-flat.vmdk\nn2.vmdk\n" in r.stdout
    assert "n2.vmdk is not an rdm\n" in r.stdout
    assert r.stdout.rstrip().endswith("n2.vmdk is not an rdm")


def test_help_and_adaptertype(host):
    r = sh(host, "vmkfstools 2>&1 -h | grep -F -e '--adaptertype'")
    assert "deprecated" in r.stdout  # 7.0: ghettoVCB then leaves -a out
    r = run_shell(host, "vmkfstools", "-H")
    assert "OPTIONS FOR VIRTUAL DISKS:" in r.stdout and "vmkfstools -H --help" in r.stdout
