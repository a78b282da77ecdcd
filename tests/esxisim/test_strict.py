"""esxisim is as strict as a real host (issue 9 §3): what a real host refuses, esxisim refuses."""
import os
import re
from types import SimpleNamespace

from simtools import Host, run_shell
from esxisim import snapshots
from hotvcb.hosts.base import FAILED_START
from hotvcb.hosts.esxi import EsxiHost
from hotvcb.localshell import LocalShell
from hotvcb.vmx import VmxFile


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
    assert _driver_stamp(host, "m").startswith(FAILED_START)  # hosts/esxi.py reads it as a start that failed
    os.rename(flat + ".away", flat)
    r = run_shell(host, "vim-cmd", "vmsvc/power.on", vmid)
    assert (r.stdout, r.returncode) == ("Powering on VM:\n", 0) and host.power_state(vmid) == "on"


def _driver_stamp(host, vm):
    """hotvcb's ESXi driver's boot stamp of `vm`, read from the simulated host's folder, without the header line it
    ends with (base.LOG_BEGUN)."""
    from hotvcb.hosts.base import LOG_BEGUN
    folder = host.real("/vmfs/volumes/datastore1/%s" % vm)
    driver = SimpleNamespace(shell=LocalShell(), _files=SimpleNamespace(list_files=lambda f: [vm + ".vmx"]),
                             host_booted=lambda: "")  # hostd not asked: the stamp is the pid alone
    return EsxiHost.boot_stamp(driver, SimpleNamespace(name=vm, folder=folder, vmx=VmxFile(""))).partition(LOG_BEGUN)[0]


def test_vmware_log_of_esxi_8_has_its_rfc_5424_style_header(tmp_path):
    """ESXi 8 writes vmware.log as `<time> In(05) vmx - <message>` (vSphere 8 "Log File Formats"), 7.x as
    `<time>| vmx| I005: <message>`; the driver reads the vmx pid and a failed power on from either."""
    h = Host.create(str(tmp_path / "h8"), version="8.0.2", crond=False)
    try:
        h.add_datastore("datastore1", 1 << 30, vmfs=6)
        vmid = h.create_vm("e", "datastore1", [{"size": "1M"}], power="on")
        head = _vmware_log(h, "e").split("\n")[0]
        assert re.match(r"^\S+Z In\(05\) vmx - Log for VMware ESX pid=[0-9]+ version=8\.0\.2 build=build-22380479 "
                        r"option=Release$", head), head
        assert _driver_stamp(h, "e") == "vmx pid=" + head.split("pid=")[1].split()[0]
        h.power_off(vmid)
        os.rename(h.real("/vmfs/volumes/datastore1/e/e-flat.vmdk"), h.real("/vmfs/volumes/datastore1/e/away"))
        assert run_shell(h, "vim-cmd", "vmsvc/power.on", vmid).returncode == 1
        assert " In(05) vmx - VMX_PowerOn: ModuleTable_PowerOn = 0\n" in _vmware_log(h, "e")
        assert _driver_stamp(h, "e").startswith(FAILED_START)
    finally:
        h.stop()


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


def test_clone_of_a_chain_flattens_it_and_a_broken_chain_is_refused_cleanly(host):
    """vmkfstools-i_01: -i of a delta writes the whole disk (the chain read through); with a
    member gone it fails with one line and writes nothing (the wording is a guess)."""
    vmid = host.create_vm("b", "datastore1", [{"size": "4M"}])
    snapshots.create(host, vmid, "one")
    snapshots.create(host, vmid, "two")
    top = host.vm_disks(vmid)[0][1]
    r = run_shell(host, "vmkfstools", "-i", top, "-d", "thin", "/vmfs/volumes/ds5/whole.vmdk")
    assert r.returncode == 0, r.stderr
    assert host.read_disk("/vmfs/volumes/ds5/whole.vmdk") == host.read_disk(top)
    os.unlink(host.real("/vmfs/volumes/datastore1/b/b-000001.vmdk"))  # the middle delta's descriptor
    r = run_shell(host, "vmkfstools", "-i", top, "-d", "thin", "/vmfs/volumes/ds5/x.vmdk")
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr == "Failed to open '%s': The parent of this virtual disk could not be opened (23).\n" % top
    assert not os.path.exists(host.real("/vmfs/volumes/ds5/x-flat.vmdk"))


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


def test_host_sh_is_busybox_ash_when_there_is_a_busybox(tmp_path):
    """With a real busybox (the machine's, or $ESXISIM_BUSYBOX) /bin/sh is its ash, as on ESXi;
    `busybox crond` still starts the simulated crond."""
    import pytest
    from esxisim import Host, toolgen
    if not toolgen.real_busybox():
        pytest.skip("no busybox binary (apt-get install busybox, or set ESXISIM_BUSYBOX) -- /bin/sh is bash")
    h = Host.create(str(tmp_path / "bb"), crond=False)
    try:
        r = run_shell(h, "sh", "-c", "readlink /bin/sh; [[ a == a* ]] && echo yes; busybox crond; echo rc=$?")
        assert r.stdout == "/usr/lib/esxisim/busybox\nyes\nrc=0\n", r.stdout + r.stderr
        r = run_shell(h, "/bin/sh", "-c", "echo $0; cat /proc/$$/cmdline | tr '\\0' ' '")
        assert "busybox" not in r.stdout.split("\n")[0]
    finally:
        h.stop()


def test_host_sh_has_double_brackets(host):
    """ESXi's /bin/sh is busybox ash, which has `[[` (third-party ESXi scripts such as ghettoVCB use it)."""
    # quoted: busybox's `[[` splits words like `[` does (bash's does not); both accept this form
    r = run_shell(host, "/bin/sh", "-c", 'x="a b"; [[ "$x" == "a b" && "$x" != c ]] && echo yes; [ 1 = 1 ] && echo posix')
    assert (r.returncode, r.stdout, r.stderr) == (0, "yes\nposix\n", "")
    r = run_shell(host, "sh", "-c", "[[ 2 -gt 1 ]] && echo ok")
    assert r.stdout == "ok\n"


def _old_host(tmp_path, version):
    from esxisim import Host
    h = Host.create(str(tmp_path / ("esx" + version)), version=version, crond=False)
    h.add_datastore("datastore1", 1 << 30, vmfs=5)
    return h


def test_hosts_older_than_6_7_have_no_python(tmp_path):
    for version in ("5.5.0", "6.5.0"):
        h = _old_host(tmp_path, version)
        r = run_shell(h, "sh", "-c", "PATH=/bin:/sbin; command -v python || command -v python3 || echo none; vmware -v")
        assert r.stdout.splitlines()[0] == "none"
        assert r.stdout.splitlines()[1].startswith("VMware ESXi %s build-" % version)


def test_esxi_5_5_texts(tmp_path):
    h = _old_host(tmp_path, "5.5.0")
    vmid = h.create_vm("v", "datastore1", power="on")
    r = run_shell(h, "vim-cmd", "vmsvc/power.getstate", "42")
    # vimcmd-faults_01, ESXi 5.5: dynamicType first, every field line ends with a comma
    assert (r.returncode, r.stdout) == (0, '(vim.fault.NotFound) {\n   dynamicType = <unset>,\n'
                                           '   faultCause = (vmodl.MethodFault) null,\n'
                                           '   msg = "Unable to find a VM corresponding to "42"",\n}\n')
    r = run_shell(h, "vim-cmd", "vmsvc/power.on", vmid)
    assert r.returncode == 0 and r.stdout.startswith("Powering on VM:\n(vim.fault.InvalidPowerState) {\n")
    assert '   existingState = "poweredOn",\n' in r.stdout
    assert 'msg = "The attempted operation cannot be performed in the current state (Powered On).",' in r.stdout
    a = snapshots.create(h, vmid, "a")
    snapshots.create(h, vmid, "b")
    r = run_shell(h, "vim-cmd", "vmsvc/snapshot.remove", vmid, str(a))
    assert r.stdout.startswith("Remove Snapshot:\n|-ROOT\n--Snapshot Name        : b\n--Snapshot Id        : ")
    src = h.vm_disks(vmid)[0][1]
    h.power_off(vmid)
    r = run_shell(h, "vmkfstools", "-i", src, "-a", "lsilogic", "-d", "thin", "/vmfs/volumes/datastore1/c.vmdk")
    assert r.returncode == 0 and "deprecated" not in r.stdout  # -a is still needed before 6.5


def test_esx_4_1_texts(tmp_path):
    h = _old_host(tmp_path, "4.1.0")
    first = h.create_vm("one", "datastore1")
    second = h.create_vm("two", "datastore1")
    assert (first, second) == ("16", "32")  # 4.x vmids are multiples of 16
    run_shell(h, "vim-cmd", "vmsvc/unregister", second)
    r = run_shell(h, "vim-cmd", "solo/registervm", "/vmfs/volumes/datastore1/two/two.vmx")
    assert (r.returncode, r.stdout) == (0, "")  # 4.x prints nothing on success
    a = snapshots.create(h, first, "a")
    snapshots.create(h, first, "b")
    r = run_shell(h, "vim-cmd", "vmsvc/snapshot.get", first)
    assert "Snapshot Id" not in r.stdout and "--Snapshot Name        : a\n" in r.stdout  # snapshot-get_06
    r = run_shell(h, "vim-cmd", "vmsvc/snapshot.remove")
    assert "Usage: snapshot.remove vmid [removeChildren] [snapshotLevel] [snapshotIndex]" in r.stdout
    assert "snapshotId" not in r.stdout  # ghettoVCB's test for the old syntax
    r = run_shell(h, "vim-cmd", "vmsvc/snapshot.remove", first, "0", "0", "0")
    assert r.returncode == 0 and [s["name"] for _d, s in snapshots.tree(h, first)] == ["b"]
    assert a not in [s["uid"] for _d, s in snapshots.tree(h, first)]
    r = run_shell(h, "vmkfstools", "-i", "/vmfs/volumes/datastore1/nope/x.vmdk", "/vmfs/volumes/datastore1/y.vmdk")
    assert r.returncode == 1
    h.set_fault("clone.fail_at", "10")
    r = run_shell(h, "vmkfstools", "-i", h.vm_disks(first)[0][1], "/vmfs/volumes/datastore1/z.vmdk")
    assert "Failed to clone disk : No such device or address (393225)." in r.stderr
    r = run_shell(h, "sh", "-c", "test -f /etc/rc.local && echo rc.local; esxcli system version get; echo rc=$?")
    assert r.stdout.startswith("rc.local\n") and r.stdout.endswith("rc=1\n")
