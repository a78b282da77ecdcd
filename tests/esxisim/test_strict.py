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


def test_nas_create_takes_the_nfs_version(host):
    """Usage text (sample vimcmd-usage-texts): "NFS Version must be nfs for nfs v3 or nfsv41 for 4.1"."""
    r = run_shell(host, "vim-cmd", "hostsvc/datastore/nas_create", "n3", "nfs", "/export/a", "0", "10.0.0.5")
    assert (r.returncode, r.stdout) == (0, "")
    r = run_shell(host, "vim-cmd", "hostsvc/datastore/nas_create", "n41", "nfsv41", "/export/b", "0", "10.0.0.5")
    assert (r.returncode, r.stdout) == (0, "")
    r = run_shell(host, "vim-cmd", "hostsvc/datastore/nas_create", "bad", "nfs41", "/export/c", "0", "10.0.0.5")
    assert r.returncode == 1 and "NFS Version must be nfs for nfs v3 or nfsv41" in r.stdout
    assert "bad" not in host.datastores()
    summary = run_shell(host, "vim-cmd", "hostsvc/datastore/listsummary").stdout
    assert 'name = "n3",' in summary and 'type = "NFS",' in summary and 'type = "NFS41",' in summary
    v3 = run_shell(host, "esxcli", "storage", "nfs", "list").stdout
    v41 = run_shell(host, "esxcli", "storage", "nfs41", "list").stdout
    assert "n3" in v3 and "n41" not in v3 and "n41" in v41


def test_multiextent_must_be_loaded_for_2gbsparse(host):
    vmid = host.create_vm("s", "datastore1", [{"size": "4M"}])
    src = host.vm_disks(vmid)[0][1]
    assert "multiextent" not in run_shell(host, "esxcli", "system", "module", "list").stdout
    r = run_shell(host, "vmkfstools", "-i", src, "-d", "2gbsparse", "/vmfs/volumes/ds5/s.vmdk")
    assert r.returncode == 1 and "The system cannot find the file specified (25)." in r.stderr
    r = run_shell(host, "esxcli", "system", "module", "load", "-m", "multiextent")
    assert (r.returncode, r.stdout) == (0, "")
    r = run_shell(host, "esxcli", "system", "module", "load", "-m", "multiextent")
    assert r.returncode == 1 and r.stdout.endswith("multiextent: Busy\n")
    assert "multiextent" in run_shell(host, "esxcli", "system", "module", "list").stdout
    r = run_shell(host, "vmkfstools", "-i", src, "-d", "2gbsparse", "/vmfs/volumes/ds5/s.vmdk")
    assert r.returncode == 0, r.stderr
    host.set_module("multiextent", False)  # a reboot unloads it
    r = run_shell(host, "vmkfstools", "-i", "/vmfs/volumes/ds5/s.vmdk", "-d", "thin", "/vmfs/volumes/ds5/t.vmdk")
    assert r.returncode == 1, "a 2gbsparse source needs the module too"


def test_snapshot_remove_prints_only_the_header_after_5_5(host):
    vmid = host.create_vm("t", "datastore1")
    a = snapshots.create(host, vmid, "a")
    snapshots.create(host, vmid, "b")
    r = run_shell(host, "vim-cmd", "vmsvc/snapshot.remove", vmid, str(a))
    assert (r.returncode, r.stdout) == (0, "Remove Snapshot:\n")
    assert [s["name"] for _d, s in snapshots.tree(host, vmid)] == ["b"]


def test_host_sh_has_double_brackets(host):
    """ESXi's /bin/sh is busybox ash, which has `[[` (third-party ESXi scripts such as ghettoVCB use it)."""
    r = run_shell(host, "/bin/sh", "-c", 'x="a b"; [[ $x == "a b" && $x == a* ]] && echo yes; [ 1 = 1 ] && echo posix')
    assert (r.returncode, r.stdout, r.stderr) == (0, "yes\nposix\n", "")
    r = run_shell(host, "sh", "-c", "[[ 2 -gt 1 ]] && echo ok")
    assert r.stdout == "ok\n"
