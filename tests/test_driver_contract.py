"""Every hypervisor driver passes the same contract check (tests/driver_contract.py):
the ESXi driver on a simulated host, run there with the host's own python, the
QEMU driver against a real QEMU process, and the libvirt driver against a
domain of a real libvirtd."""

import os
import shutil

import kvmguest
from qemuvm import QemuVm, make_initial, needs_qemu, qemu_img, short_dir
from simhost import host_python, needs_root


@needs_root
def test_the_esxi_driver_keeps_the_contract(host):
    host.create_vm("contract vm", "datastore1", [{"size": "8M"}, {"size": "4M", "datastore": "ds5"}], power="on",
                   writer=True, snapshots=["user snap"])
    os.makedirs(host.real("/vmfs/volumes/backup/contract"))
    code = ("import sys; from hotvcb.hosts.esxi import EsxiHost; from hotvcb.localshell import LocalShell; "
            "import driver_contract; driver_contract.check(EsxiHost(LocalShell()), 'contract vm', "
            "'/vmfs/volumes/backup/contract', 'user snap', cycle_power=True); print('contract kept')")
    r = host_python(host, "-c", code)
    assert r.returncode == 0 and "contract kept" in r.stdout, r.stdout + r.stderr


@needs_root
def test_the_esxi_driver_names_a_flat_base_disks_extent_as_its_copys(host):
    """The contract lets copied_as answer None; ESXi answers for a base disk of one flat extent (read
    when the VM was loaded), so the seal digests that file during the clone instead of reading the
    copy back. A 2gbsparse copy, or a disk on a snapshot's delta, has no file equal to the source's."""
    host.create_vm("flat vm", "datastore1", [{"size": "4M"}], power="on", writer=True)
    os.makedirs(host.real("/vmfs/volumes/backup/flat"))
    code = ("import sys; from hotvcb.hosts.esxi import EsxiHost; from hotvcb.localshell import LocalShell; "
            "import driver_contract; h = EsxiHost(LocalShell()); [ref] = h.list_vms(); vm = h.load_vm(ref); "
            "d = vm.disks[0]; dst = '/vmfs/volumes/backup/flat/copy.vmdk'; "
            "snap = h.create_snapshot(vm, 'hotvcb-snapshot-x', '', False, False, 60.0); "
            "same = h.copied_as(d, dst, 'thin'); sparse = h.copied_as(d, dst, '2gbsparse'); "
            "h.copy_disk(d, dst, 'thin'); driver_contract._holds_what_copied_as_says(h, same); "
            "on_delta = EsxiHost(LocalShell()).copied_as(h.load_vm(ref).disks[0], dst, 'thin'); "
            "h.remove_snapshot(vm, snap, 120.0); print(same.source, same.copy, sparse, on_delta, sep='|')")
    r = host_python(host, "-c", code)
    assert r.returncode == 0, r.stdout + r.stderr
    source, copy, sparse, on_delta = r.stdout.strip().split("|")
    assert source.endswith("-flat.vmdk") and source.startswith("/vmfs/volumes/datastore1/")
    assert copy == "/vmfs/volumes/backup/flat/copy-flat.vmdk" and sparse == on_delta == "None"


@needs_qemu
def test_the_qemu_driver_keeps_the_contract(tmp_path):
    from driver_contract import check
    from hotvcb.hosts import qemuimg
    from hotvcb.hosts.qemu import QemuHost
    from hotvcb.localshell import LocalShell

    sockets = short_dir("dc")
    for sub in ("inv", "ctl"):
        os.makedirs(os.path.join(sockets, sub))
    image = str(tmp_path / "vm.raw")
    make_initial(image, 16 << 20, 1 << 20)
    vm = QemuVm("contract", image, "raw", os.path.join(sockets, "inv"), os.path.join(sockets, "ctl"),
                str(tmp_path / "qemu.log"))
    try:
        target = tmp_path / "target"
        target.mkdir()
        check(QemuHost(LocalShell(), os.path.join(sockets, "inv")), "contract", str(target))
        # the pre-flight's sizes come from query-block at load_vm: the same as qemu-img info says
        host = QemuHost(LocalShell(), os.path.join(sockets, "inv"))
        [disk] = host.load_vm(host.list_vms()[0]).disks
        virtual, allocated = qemuimg.sizes(qemuimg.info(LocalShell(), image))
        assert (host.bytes_needed(disk, "thin"), host.bytes_needed(disk, "eagerzeroedthick")) == (
            min(allocated, virtual), virtual)
    finally:
        vm.quit()
        shutil.rmtree(sockets, ignore_errors=True)


@kvmguest.needs_libvirt
def test_the_libvirt_driver_keeps_the_contract(tmp_path):
    from driver_contract import check
    from hotvcb.hosts.libvirt import LibvirtHost
    from hotvcb.localshell import LocalShell

    with kvmguest.libvirt_turn():
        folder = kvmguest.scratch("dcl")  # libvirt's QEMU user reads the image
        image = os.path.join(folder, "vda.qcow2")
        assert qemu_img("create", "-q", "-f", "qcow2", image, "16M").returncode == 0
        xml = os.path.join(folder, "domain.xml")
        with open(xml, "w") as f:
            f.write(kvmguest.domain_xml("hvcontract", image, "qcow2", os.path.join(folder, "console.log"), agent=False))
        kvmguest.define(xml, "hvcontract", transient=True)  # gone with its QEMU
        try:
            target = tmp_path / "target"
            target.mkdir()
            check(LibvirtHost(LocalShell()), "hvcontract", str(target))
        finally:
            kvmguest.undefine("hvcontract")
            kvmguest.remove_scratch(folder)
