"""Injected faults behave like the failures real hosts show."""
import os
import signal
import subprocess
import sys
import time

from simtools import REPO, run_shell, sh, wait_for
from esxisim import proclog, snapshots


def test_snapshot_create_fail_never_delay(host):
    vmid = host.create_vm("a", "datastore1", power="on")
    host.set_fault("snapshot.create", "fail")
    r = run_shell(host, "vim-cmd", "vmsvc/snapshot.create", vmid, "x")
    assert r.returncode == 0  # a fault block, not an exit status, reports the failure
    assert r.stdout.startswith("Create Snapshot:\n(vim.fault.")
    assert "   faultCause = (vmodl.MethodFault) null," in r.stdout and r.stdout.rstrip().endswith("}")
    host.set_fault("snapshot.create", "never")
    r = sh(host, "vim-cmd vmsvc/snapshot.create %s x; echo rc=$?; vim-cmd vmsvc/snapshot.get %s | wc -l" % (vmid, vmid))
    assert r.stdout.split() == ["Create", "Snapshot:", "rc=0", "1"]
    host.clear_faults()
    host.set_fault("snapshot.create.delay", "1")
    r = sh(host, "vim-cmd vmsvc/snapshot.create %s late; vim-cmd vmsvc/snapshot.get %s | wc -l" % (vmid, vmid))
    assert r.stdout.split()[-1] == "1"
    deadline = time.time() + 10
    while time.time() < deadline and not snapshots.tree(host, vmid):
        time.sleep(0.1)
    assert snapshots.tree(host, vmid)[0][1]["name"] == "late"


def test_quiesce_needs_tools(host):
    vmid = host.create_vm("a", "datastore1", power="on", tools=False)
    r = run_shell(host, "vim-cmd", "vmsvc/snapshot.create", vmid, "q", "d", "0", "1")
    assert r.returncode == 0 and "VMware Tools is not running" in r.stdout
    r = run_shell(host, "vim-cmd", "vmsvc/power.shutdown", vmid)
    assert r.returncode == 0 and "(vim.fault.ToolsUnavailable)" in r.stdout


def test_clone_fail_at_and_match(host):
    a = host.create_vm("alpha", "datastore1")
    b = host.create_vm("beta", "datastore1")
    host.set_fault("clone.fail_at", "40")
    host.set_fault("clone.match", "alpha")
    r = run_shell(host, "vmkfstools", "-i", host.vm_disks(a)[0][1], "/vmfs/volumes/ds5/a.vmdk")
    assert r.returncode != 0
    assert "\rClone: 39% done." in r.stdout and "Clone: 40%" not in r.stdout
    assert r.stderr == "Failed to clone disk: No such device or address (393225).\n"
    assert not os.path.exists(host.real("/vmfs/volumes/ds5/a.vmdk"))
    assert not os.path.exists(host.real("/vmfs/volumes/ds5/a-flat.vmdk"))
    r = run_shell(host, "vmkfstools", "-i", host.vm_disks(b)[0][1], "/vmfs/volumes/ds5/b.vmdk")
    assert r.returncode == 0, r.stderr


def test_datastore_full(host):
    host.add_datastore("tiny", 8 << 20)
    vmid = host.create_vm("a", "datastore1", [{"size": "16M"}])
    src = host.vm_disks(vmid)[0][1]
    r = run_shell(host, "vmkfstools", "-i", src, "/vmfs/volumes/tiny/x.vmdk")
    assert r.returncode != 0
    assert "There is not enough space on the file system for the selected operation (13)." in r.stderr
    r = run_shell(host, "vmkfstools", "-i", src, "-d", "thin", "/vmfs/volumes/tiny/x.vmdk")
    assert r.returncode != 0 and "(13)" in r.stderr
    assert not os.path.exists(host.real("/vmfs/volumes/tiny/x-flat.vmdk"))


def test_a_datastore_filled_by_another_writer_fails_the_running_clone(host):
    """Free space is the datastore's, not one clone's: a file (or a second clone) that fills it
    fails a clone already under way, as a full file system fails its next write."""
    host.add_datastore("small", 64 << 20)
    vmid = host.create_vm("a", "datastore1", [{"size": "16M"}])
    host.set_fault("clone.delay", "30")
    env = dict(os.environ, PYTHONPATH=REPO)
    p = subprocess.Popen([sys.executable, "-m", "esxisim", "shell", host.root, "--", "vmkfstools", "-i",
                          host.vm_disks(vmid)[0][1], "-d", "thin", "/vmfs/volumes/small/x.vmdk"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out = b""
    while b"Clone: 10% done." not in out:
        chunk = p.stdout.read1(4096)
        assert chunk, out
        out += chunk
    with open(host.real("/vmfs/volumes/small/filler"), "wb") as f:
        os.posix_fallocate(f.fileno(), 0, host.ds_free("small") + (1 << 20))
    rest, err = p.communicate(timeout=60)
    assert p.returncode == 1 and b"Clone: 100%" not in out + rest
    assert err.decode().endswith("There is not enough space on the file system for the selected operation (13).\n")
    assert not os.path.exists(host.real("/vmfs/volumes/small/x-flat.vmdk"))
    calls = [r for r in proclog.read(host) if r["tool"] == "vmkfstools"]
    assert [(r["event"], r.get("rc")) for r in calls] == [("start", None), ("end", 1)]
    assert calls[0]["pid"] == calls[1]["pid"] and calls[0]["args"][0] == "-i"


def test_clone_delay_lets_a_test_kill_midway(host):
    vmid = host.create_vm("a", "datastore1")
    host.set_fault("clone.delay", "4")
    env = dict(os.environ, PYTHONPATH=REPO)
    p = subprocess.Popen([sys.executable, "-m", "esxisim", "shell", host.root, "--", "vmkfstools", "-i",
                          host.vm_disks(vmid)[0][1], "/vmfs/volumes/ds5/k.vmdk"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out = b""
    while b"Clone: 10% done." not in out:
        chunk = p.stdout.read1(4096) if hasattr(p.stdout, "read1") else p.stdout.read(1)
        assert chunk, out
        out += chunk
    p.send_signal(signal.SIGTERM)
    rest, _ = p.communicate(timeout=10)
    out += rest
    assert p.returncode == 128 + signal.SIGTERM
    assert b"Clone: 100%" not in out


def test_power_faults(host):
    vmid = host.create_vm("a", "datastore1", power="on")
    host.set_fault("power.off", "refuse")
    r = run_shell(host, "vim-cmd", "vmsvc/power.off", vmid)
    assert r.stdout == "Powering off VM:\nPower off failed\n" and r.returncode != 0
    host.clear_faults()
    run_shell(host, "vim-cmd", "vmsvc/power.shutdown", vmid)
    assert host.power_state(vmid) == "on"  # shutdown takes about a second
    t = time.monotonic()
    wait_for(lambda: host.power_state(vmid) == "off", what="the guest to shut down")
    took = time.monotonic() - t
    host.power_on(vmid)
    host.set_fault("power.shutdown", "ignore")
    r = run_shell(host, "vim-cmd", "vmsvc/power.shutdown", vmid)
    assert r.returncode == 0 and r.stdout == ""
    time.sleep(2 * took + 0.5)  # nothing to wait on for "never": twice as long as a real shutdown took
    assert host.power_state(vmid) == "on"


def test_vm_vanishes_after_listing(host):
    host.create_vm("stays", "datastore1")
    host.create_vm("goes", "datastore1")
    host.set_fault("getallvms.unregister_after", "goes")
    r = sh(host, "vim-cmd vmsvc/getallvms; vim-cmd vmsvc/getallvms")
    first, second = r.stdout.split("Vmid")[1:]
    assert "goes" in first and "goes" not in second
    assert "getallvms.unregister_after" not in host.faults()


def test_snapshot_remove_delay(host):
    vmid = host.create_vm("a", "datastore1")
    sid = snapshots.create(host, vmid, "s")
    host.set_fault("snapshot.remove.delay", "1")
    t = time.time()
    r = run_shell(host, "vim-cmd", "vmsvc/snapshot.remove", vmid, str(sid))
    assert r.returncode == 0 and time.time() - t >= 1
    assert r.stdout == "Remove Snapshot:\n"


def test_a_delayed_removal_of_a_snapshot_removed_meanwhile_is_not_found_and_merges_nothing(host):
    """A run killed during its removal leaves hostd's task running; the next run removes the
    snapshot itself and takes its own: the late task must not merge that one away."""
    vmid = host.create_vm("a", "datastore1")
    sid = snapshots.create(host, vmid, "s")
    host.set_fault("snapshot.remove.delay", "3")
    env = dict(os.environ, PYTHONPATH=REPO)
    late = subprocess.Popen([sys.executable, "-m", "esxisim", "shell", host.root, "--", "vim-cmd",
                             "vmsvc/snapshot.remove", vmid, str(sid)], stdout=subprocess.PIPE, text=True, env=env)
    wait_for(lambda: any(e["event"] == "start" and e["args"][:1] == ["vmsvc/snapshot.remove"]
                         for e in proclog.read(host)), what="the removal to start")
    time.sleep(1.0)  # it has read its snapshot and waits out the delay
    snapshots.remove(host, vmid, sid)
    snapshots.create(host, vmid, "taken since")
    current = [d[1] for d in host.vm_disks(vmid)]
    out, _ = late.communicate(timeout=60)
    assert "vim.fault.NotFound" in out, out
    assert [s["name"] for s in snapshots.load(host, vmid)[1]] == ["taken since"]
    assert [d[1] for d in host.vm_disks(vmid)] == current and all(os.path.exists(host.real(p)) for p in current)


def test_nfs_mount_fail_mounts_nothing(host):
    host.set_fault("nfs.mount", "fail")
    r = sh(host, "vim-cmd hostsvc/datastore/nas_create bk nfs /export/bk 0 10.0.0.5; echo rc=$?; "
                 "esxcli storage nfs add -H 10.0.0.5 -s /export/bk -v bk; echo rc=$?; "
                 "ls /vmfs/volumes/bk; esxcli storage nfs list")
    assert r.stdout.startswith("(vim.fault.PlatformConfigFault) {\n")
    assert 'text = "Unable to connect to NFS server",' in r.stdout
    # a fault block exits 0 like every vim-cmd fault; esxcli says it in one line and exits 1
    assert "rc=0\nError performing operation: NFS Error: Unable to Mount filesystem: " in r.stdout
    assert r.stdout.count("rc=1") == 1
    assert "No such file or directory" in r.stderr
    assert "bk" not in host.datastores() and " bk " not in r.stdout.split("rc=1")[-1]
    host.clear_faults()
    r = run_shell(host, "vim-cmd", "hostsvc/datastore/nas_create", "bk", "nfs", "/export/bk", "0", "10.0.0.5")
    assert r.returncode == 0 and "bk" in host.datastores()


def test_snapshot_remove_fail(host):
    vmid = host.create_vm("a", "datastore1", power="on", writer=True)
    sid = snapshots.create(host, vmid, "s")
    before = host.vm_disks(vmid)
    host.set_fault("snapshot.remove", "fail")
    for cmd in (["vmsvc/snapshot.remove", vmid, str(sid)], ["vmsvc/snapshot.removeall", vmid]):
        r = run_shell(host, "vim-cmd", *cmd)
        # vim-cmd prints the task's fault and still exits 0 (see the exit-status notes in docs/esxisim.md)
        assert r.returncode == 0
        assert r.stdout.startswith(("Remove Snapshot:\n(vim.fault.GenericVmConfigFault) {\n",
                                    "Remove All Snapshots:\n(vim.fault.GenericVmConfigFault) {\n"))
        assert 'msg = "An error occurred while consolidating disks: Failed to lock the file"' in r.stdout
        assert [s["uid"] for _d, s in snapshots.tree(host, vmid)] == [sid]
        assert host.vm_disks(vmid) == before and os.path.exists(host.real(before[0][1]))
    r = run_shell(host, "vim-cmd", "vmsvc/snapshot.remove", vmid, "99")
    assert "could not be found" in r.stdout  # an unknown id is NotFound, not the injected fault
    host.set_fault("snapshot.remove", "fail-once")
    r = run_shell(host, "vim-cmd", "vmsvc/snapshot.remove", vmid, str(sid))
    assert "(vim.fault.GenericVmConfigFault)" in r.stdout and "snapshot.remove" not in host.faults()
    r = run_shell(host, "vim-cmd", "vmsvc/snapshot.remove", vmid, str(sid))
    assert r.returncode == 0 and "fault" not in r.stdout and snapshots.tree(host, vmid) == []


def test_snapshot_remove_unconsolidated_leaves_the_vm_on_its_delta(host):
    """VMware documents a deletion whose disk "does not commit back to the base disk" (vSphere Host Client,
    Consolidate Snapshots): the snapshot leaves the tree, the VM stays on its delta, "Needs Consolidation".
    A snapshot taken and removeall (no fault) then commit the whole chain and clear the flag."""
    vmid = host.create_vm("a", "datastore1", power="on")
    base = host.vm_disks(vmid)[0][1]
    sid = snapshots.create(host, vmid, "s")
    delta = host.vm_disks(vmid)[0][1]
    host.set_fault("snapshot.remove", "unconsolidated-once")
    r = run_shell(host, "vim-cmd", "vmsvc/snapshot.remove", vmid, str(sid))
    assert r.returncode == 0 and r.stdout == "Remove Snapshot:\n" and "snapshot.remove" not in host.faults()
    assert snapshots.tree(host, vmid) == [] and host.vm_disks(vmid)[0][1] == delta
    assert os.path.exists(host.real(delta)) and snapshots.load(host, vmid)[0]["needConsolidate"]
    snapshots.create(host, vmid, "consolidate")
    r = run_shell(host, "vim-cmd", "vmsvc/snapshot.removeall", vmid)
    assert r.returncode == 0 and host.vm_disks(vmid)[0][1] == base and not os.path.exists(host.real(delta))
    assert not snapshots.load(host, vmid)[0]["needConsolidate"]


def test_fault_blocks_exit_0_one_line_failures_exit_1(host):
    """Samples power-getstate_02 / vimcmd-faults_01: NotFound for an unknown vmid on stdout, status 0;
    power-on-off_01: the 6.x one-line "Power on failed" (status not shown; esxisim: 1)."""
    vmid = host.create_vm("a", "datastore1", power="on")
    r = run_shell(host, "vim-cmd", "vmsvc/power.getstate", "2")
    assert r.returncode == 0 and r.stderr == ""
    assert r.stdout == ('(vim.fault.NotFound) {\n   faultCause = (vmodl.MethodFault) null,\n   faultMessage = <unset>\n'
                        '   msg = "Unable to find a VM corresponding to "2""\n}\n')
    r = run_shell(host, "vim-cmd", "vmsvc/unregister", "16")
    assert r.returncode == 0 and r.stdout.startswith("(vim.fault.NotFound) {")
    r = run_shell(host, "vim-cmd", "vmsvc/snapshot.revert", vmid, "7", "0")
    assert r.returncode == 0 and r.stdout.startswith("(vim.fault.NotFound) {")
    r = run_shell(host, "vim-cmd", "vmsvc/power.on", vmid)
    assert r.stdout == "Powering on VM:\nPower on failed\n" and r.returncode == 1
