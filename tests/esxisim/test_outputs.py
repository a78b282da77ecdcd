"""Tool output against the structure of the real samples."""
import re

from simtools import Host, run_shell, sample, sh


def _label_positions(header, labels):
    return [header.index(l) for l in labels]


def test_getallvms_layout_matches_hostd(host):
    host.create_vm("GitLabRunner", "datastore1")
    host.create_vm("space vm", "ds5", annotation="test vm")
    host.create_vm("Test Test [Test] [Test]", "datastore1", guest_os="otherGuest64")
    r = run_shell(host, "vim-cmd", "vmsvc/getallvms")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    header, rows = lines[0], lines[1:]
    labels = ["Vmid", "Name", "File", "Guest OS", "Version", "Annotation"]
    assert [l for l in labels if l in header] == labels
    # rows: vmid, name, [ds] path, guest, vmx-NN, annotation -- three-space separated columns
    assert rows[0].startswith("1      GitLabRunner")
    assert "[datastore1] GitLabRunner/GitLabRunner.vmx" in rows[0]
    assert "[ds5] space vm/space vm.vmx" in rows[1] and rows[1].rstrip().endswith("vmx-19    test vm")
    assert "Test Test [Test] [Test]   [datastore1] Test Test [Test] [Test]/" in rows[2]
    assert "otherGuest64" in rows[2]
    # header labels are centred over their columns like sample getallvms_10 / _11
    name_w = max(len("GitLabRunner"), len("space vm"), len("Test Test [Test] [Test]"))
    assert header.index("Name") == 7 + (name_w - 4) // 2


def test_getallvms_reproduces_sample_10(tmp_path):
    """A host holding the VMs of sample getallvms_10 (ESXi 7.0.3) prints the sample's listing:
    the same header (labels centred over columns sized by the longest value) and the same rows."""
    import os
    text = sample("getallvms_10")
    listing = text.split("\n\n", 1)[0]
    expected = [l.rstrip() for l in listing.splitlines() if not l.startswith("#")]
    rows = [re.match(r"^(\d+)\s+(\S+)\s+\[(\S+)\] (\S+)\s+(\S+)\s+vmx-(\d+)$", l).groups()
            for l in expected[1:]]
    assert len(rows) == 9
    h = Host.create(str(tmp_path / "host"), version="7.0.3", crond=False)
    try:
        h.add_datastore("samsung_4t", 2 << 30, vmfs=6)
        for vmid, name, ds, path, guest, hw in rows:
            tmp = h.create_vm(name, ds, [{"size": "1M"}], guest_os=guest, hw=int(hw), nvram=False)
            h.unregister(tmp)
            src = os.path.join(h.ds_dir(ds), name)
            dst = os.path.join(h.ds_dir(ds), os.path.dirname(path))
            if src != dst:
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                os.rename(src, dst)
            with h.store.edit() as s:  # the sample's vmids (hostd never reuses one)
                s["next_vmid"] = int(vmid)
            assert h.register("/vmfs/volumes/%s/%s" % (ds, path)) == vmid
        r = run_shell(h, "vim-cmd", "vmsvc/getallvms")
    finally:
        h.stop()
    assert r.returncode == 0, r.stderr
    # the sample's author trimmed trailing blanks (the empty Annotation column)
    assert [l.rstrip() for l in r.stdout.splitlines()] == expected


def test_power_getstate_and_notfound(host):
    vmid = host.create_vm("a", "datastore1", power="on")
    r = sh(host, "vim-cmd vmsvc/power.getstate %s; vim-cmd vmsvc/power.getstate 42; echo rc=$?" % vmid)
    assert r.stdout.startswith("Retrieved runtime info\nPowered on\n")
    expected = sample("power-getstate_02").split("\n", 2)[2].strip().replace('"2"', '"42"')
    assert expected in r.stdout
    assert "rc=0" in r.stdout  # a fault block, status 0 (see faults.FAULT_EXIT)


def test_power_cycle_texts(host):
    vmid = host.create_vm("a", "datastore1")
    r = sh(host, "vim-cmd vmsvc/power.on {0}; vim-cmd vmsvc/power.on {0}; echo rc=$?; "
                 "vim-cmd vmsvc/power.off {0}; vim-cmd vmsvc/power.off {0}".format(vmid))
    assert r.stdout == ("Powering on VM:\nPowering on VM:\nPower on failed\nrc=1\n"
                        "Powering off VM:\nPowering off VM:\nPower off failed\n")


def test_snapshot_get_format(host):
    vmid = host.create_vm("a", "datastore1", power="on")
    r = sh(host, "vim-cmd vmsvc/snapshot.get {0}; vim-cmd vmsvc/snapshot.create {0} snap01 'snap01 description';"
                 "vim-cmd vmsvc/snapshot.create {0} snap02; vim-cmd vmsvc/snapshot.get {0}".format(vmid))
    out = r.stdout.splitlines()
    assert out[0] == "Get Snapshot:"          # no snapshot: exactly one line (ghettoVCB counts lines)
    assert out[1] == "Create Snapshot:"
    tree = out[3:]
    assert tree[0] == "Get Snapshot:" and tree[1] == "|-ROOT"
    assert tree[2] == "--Snapshot Name        : snap01"
    assert tree[3] == "--Snapshot Id        : 1"
    assert tree[4] == "--Snapshot Desciption  : snap01 description"
    assert re.match(r"^--Snapshot Created On  : \d{1,2}/\d{1,2}/\d{4} \d{1,2}:\d{1,2}:\d{1,2}$", tree[5])
    assert tree[6] == "--Snapshot State       : powered off"
    assert tree[7] == "--|-CHILD"
    assert tree[8] == "----Snapshot Name        : snap02"
    assert tree[9] == "----Snapshot Id        : 2"
    assert tree[10] == "----Snapshot Desciption  :"   # empty description: nothing after the colon
    # sample snapshot-get_03's remove output has the same shape
    assert "--Snapshot Id        : 1" in sample("snapshot-get_03")


def test_snapshot_ids_never_repeat(host):
    from esxisim import snapshots
    vmid = host.create_vm("a", "datastore1")
    a = snapshots.create(host, vmid, "x")
    snapshots.remove(host, vmid, a)
    b = snapshots.create(host, vmid, "y")
    assert b == a + 1


def test_vmware_v_and_esxcli(host):
    r = sh(host, "vmware -v; vmware -l; esxcli system version get; esxcli system hostname get; "
                 "esxcli storage filesystem list")
    lines = r.stdout.splitlines()
    assert lines[0] == "VMware ESXi 7.0.3 build-24784741"
    assert lines[0] in sample("vmware-v_01")
    assert lines[1] == "VMware ESXi 7.0 Update 3"
    assert "   Product: VMware ESXi\n   Version: 7.0.3\n   Build: Releasebuild-24784741\n   Update: 3\n" in r.stdout
    assert "   Host Name: esxi01" in r.stdout
    i = lines.index(next(l for l in lines if l.startswith("Mount Point")))
    assert lines[i].split() == ["Mount", "Point", "Volume", "Name", "UUID", "Mounted", "Type", "Size", "Free"]
    assert set(lines[i + 1].replace(" ", "")) == {"-"}
    ds = host.datastore_by_name("datastore1")
    row = next(l for l in lines if " datastore1 " in l)
    assert row.split()[:5] == ["/vmfs/volumes/" + ds["uuid"], "datastore1", ds["uuid"], "true", "VMFS-6"]
    assert int(row.split()[5]) == 2 << 30


def test_a_reboot_empties_the_ramdisk_powers_vms_off_and_boots_the_release_installed(host):
    vmid = host.create_vm("a", "datastore1", power="on")
    sh(host, "echo kept > /var/run/mine")
    host.reboot()
    ramdisk, version = sh(host, "ls /var/run; echo ====; vmware -v").stdout.split("====\n")
    assert "mine" not in ramdisk.split(), ramdisk
    assert version == "VMware ESXi 7.0.3 build-24784741\n" and host.power_state(vmid) == "off"
    host.reboot(version="6.5.0")  # no python hotvcb can use (esxisim.versions.has_python)
    r = sh(host, "vmware -v; ls /bin/python || echo none")
    assert r.stdout.startswith("VMware ESXi 6.5.0 build-") and r.stdout.rstrip().endswith("none"), r.stdout
    host.reboot(version="8.0.2")
    r = sh(host, "vmware -v; /bin/python -c 'print(\"python\")'")
    assert r.stdout.startswith("VMware ESXi 8.0.2 build-") and r.stdout.rstrip().endswith("python"), r.stdout


def test_host_files(host):
    r = sh(host, "cat /etc/rc.local.d/local.sh; echo ====; cat /var/spool/cron/crontabs/root; echo ====;"
                 "readlink -f /bin/python; ls /bin/vim-cmd /sbin/vmkfstools /bin/esxcli /sbin/esxcli "
                 "/sbin/auto-backup.sh /etc/vmware/hostd/vmInventory.xml")
    local, cron, rest = r.stdout.split("====\n")
    assert local.startswith("#!/bin/sh ++group=host/vim/vmvisor/boot\n") and local.rstrip().endswith("exit 0")
    assert "# Note: modify at your own risk!  If you do/use anything in this" in local
    assert cron.startswith("#min hour day mon dow command\n")
    for line in cron.splitlines():
        assert line in sample("crontab-root_01")
    assert "python3" in rest
    assert r.returncode == 0, r.stderr


def test_datastore_info_and_listsummary(host):
    r = sh(host, "vim-cmd hostsvc/datastore/info datastore1 | grep -E '^\\s*capacity' | awk '{print $3}' | sed 's/,//g';"
                 "vim-cmd hostsvc/datastore/info nope; vim-cmd hostsvc/datastore/listsummary")
    lines = r.stdout.splitlines()
    assert lines[0] == str(2 << 30)
    assert lines[1] == "Datastore not found."
    assert "(vim.Datastore.Summary) [" in r.stdout and 'name = "ds5",' in r.stdout


def test_usage_texts(host):
    r = sh(host, "vim-cmd vmsvc/snapshot.remove; vim-cmd hostsvc/datastore/nas_create a b c 0; echo rc=$?")
    assert "Usage: snapshot.remove vmid snapshotId" in r.stdout
    nas = sample("vimcmd-usage-texts").split("### hostsvc/datastore/nas_create", 1)[1]
    block = "\n".join(nas.splitlines()[2:8])
    assert block in r.stdout
    assert "rc=1" in r.stdout


def test_cli_round_trip(tmp_path):
    import json
    import os
    import subprocess
    import sys
    from simtools import REPO
    env = dict(os.environ, PYTHONPATH=REPO)
    root = str(tmp_path / "cli")

    def cli(*a):
        r = subprocess.run([sys.executable, "-m", "esxisim"] + list(a), capture_output=True, text=True, env=env)
        assert r.returncode == 0, r.stderr
        return r.stdout
    cli("create", root, "--version", "6.5.0", "--hostname", "esx65", "--no-crond")
    cli("datastore", root, "ds", "--capacity", "1G", "--vmfs", "5")
    vmid = cli("vm", root, "c l i", "--datastore", "ds", "--disk", "size=4M,bus=sata",
               "--disk", "size=4M,format=2gbsparse", "--snapshot", "s1", "--no-nvram").strip()
    assert vmid == "1"
    cli("fault", root, "set", "clone.fail_at=10")
    state = json.loads(cli("state", root, "--json"))
    vm = state["vms"]["1"]
    assert vm["name"] == "c l i" and vm["snapshots"][0]["name"] == "s1"
    assert "c l i_1-s001.vmdk" in vm["files"] and "c l i.nvram" not in vm["files"]
    assert state["faults"] == {"clone.fail_at": "10"}
    r = subprocess.run([sys.executable, "-m", "esxisim", "shell", root, "--", "vmware", "-v"],
                       capture_output=True, text=True, env=env)
    assert r.stdout == "VMware ESXi 6.5.0 build-14320405\n"
    cli("destroy", root)
    assert not os.path.exists(root)


def test_snapshot_revert(host):
    from esxisim import disks, snapshots
    vmid = host.create_vm("rv", "datastore1", [{"size": "4M"}])
    before = host.read_disk(host.vm_disks(vmid)[0][1])
    sid = snapshots.create(host, vmid, "s")
    with disks.Disk(host.real(host.vm_disks(vmid)[0][1]), writable=True) as d:
        d.write(0, b"changed" * 100)
    assert host.read_disk(host.vm_disks(vmid)[0][1]) != before
    r = run_shell(host, "vim-cmd", "vmsvc/snapshot.revert", vmid, str(sid), "0")
    assert r.stdout.startswith("Revert Snapshot:\n|-ROOT\n--Snapshot Name        : s\n")
    assert host.read_disk(host.vm_disks(vmid)[0][1]) == before
    assert host.vm_disks(vmid)[0][1].endswith("rv-000001.vmdk")
