"""esxisim is as strict as a real host (issue 9 §3): what a real host refuses, esxisim refuses."""
import os

from simtools import run_shell
from esxisim import snapshots


def _vmware_log(host, vm):
    with open(host.real("/vmfs/volumes/datastore1/%s/vmware.log" % vm), encoding="utf-8") as f:
        return f.read()


def test_power_on_with_a_missing_disk_fails(host):
    vmid = host.create_vm("m", "datastore1", [{"size": "4M"}, {"size": "4M"}])
    flat = host.real("/vmfs/volumes/datastore1/m/m_1-flat.vmdk")
    os.rename(flat, flat + ".away")
    r = run_shell(host, "vim-cmd", "vmsvc/power.on", vmid)
    assert (r.stdout, r.returncode) == ("Powering on VM:\nPower on failed\n", 1)
    assert host.power_state(vmid) == "off"
    log = _vmware_log(host, "m")
    disk = host.vm_disks(vmid)[1][1]  # /vmfs/volumes/<uuid>/m/m_1.vmdk, as the vmx names it
    assert "Cannot open the disk '%s' or one of the snapshot disks it depends on." % disk in log
    assert "Module 'Disk' power on failed." in log
    os.rename(flat + ".away", flat)
    r = run_shell(host, "vim-cmd", "vmsvc/power.on", vmid)
    assert (r.stdout, r.returncode) == ("Powering on VM:\n", 0) and host.power_state(vmid) == "on"


def test_power_on_with_a_broken_snapshot_chain_fails(host):
    vmid = host.create_vm("c", "datastore1", [{"size": "4M"}])
    snapshots.create(host, vmid, "s")
    os.unlink(host.real("/vmfs/volumes/datastore1/c/c-flat.vmdk"))  # the base under the delta
    r = run_shell(host, "vim-cmd", "vmsvc/power.on", vmid)
    assert r.stdout.endswith("Power on failed\n") and r.returncode == 1
    assert "c-000001.vmdk' or one of the snapshot disks" in _vmware_log(host, "c")
    os.unlink(host.real("/vmfs/volumes/datastore1/c/c-000001.vmdk"))  # the descriptor the .vmx names
    assert run_shell(host, "vim-cmd", "vmsvc/power.on", vmid).returncode == 1


def test_clone_of_a_disk_the_running_vm_writes_is_refused(host):
    """Sample vmkfstools-i_02: "Failed to open '<src>': Failed to lock the file (16392)." (ESXi 7.0U1c)."""
    vmid = host.create_vm("l", "datastore1", [{"size": "4M"}], power="on", writer=True)
    base = host.vm_disks(vmid)[0][1]
    r = run_shell(host, "vmkfstools", "-i", base, "-d", "thin", "/vmfs/volumes/ds5/x.vmdk")
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr == "Failed to open '%s': Failed to lock the file (16392).\n" % base
    assert not os.path.exists(host.real("/vmfs/volumes/ds5/x.vmdk"))
    snapshots.create(host, vmid, "backup")
    delta = host.vm_disks(vmid)[0][1]
    r = run_shell(host, "vmkfstools", "-i", base, "-d", "thin", "/vmfs/volumes/ds5/x.vmdk")
    assert r.returncode == 0, r.stderr  # the base is only read while the snapshot exists
    r = run_shell(host, "vmkfstools", "-i", delta, "-d", "thin", "/vmfs/volumes/ds5/y.vmdk")
    assert "Failed to lock the file (16392)" in r.stderr and r.returncode == 1
    host.power_off(vmid)
    r = run_shell(host, "vmkfstools", "-i", delta, "-d", "thin", "/vmfs/volumes/ds5/y.vmdk")
    assert r.returncode == 0, r.stderr
