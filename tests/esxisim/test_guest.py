"""A running guest keeps writing; snapshots freeze exactly what the log says, removal loses nothing."""
import re
import os

import pytest

from simtools import run_shell, sh, wait_for, writes_after
from esxisim import Host, crond, writer


def _content(host, vmid):
    return {node: bytearray(host.read_disk(path)) for node, path, _m in host.vm_disks(vmid)}


@pytest.mark.parametrize("ds", ["datastore1", "ds5"])
def test_snapshot_with_writer_keeps_every_write(host, ds):
    vmid = host.create_vm("busy vm", ds, [{"size": "8M"}, {"size": "4M", "datastore": "ds5"},
                                          {"size": "4M", "mode": "independent-persistent"}])
    bases = {node: path for node, path, _m in host.vm_disks(vmid)}
    initial = _content(host, vmid)
    host.create_vm  # noqa
    host.power_on(vmid)
    writer.start(host, vmid)
    wait_for(lambda: len(writes_after(host.writer_log("busy vm"), "writer.start")) >= 3, what="guest writes")
    r = run_shell(host, "vim-cmd", "vmsvc/snapshot.create", vmid, "backup", "hotvcb", "0", "0")
    assert r.returncode == 0, r.stdout + r.stderr
    wait_for(lambda: len(writes_after(host.writer_log("busy vm"), "snapshot.create")) >= 3,
             what="guest writes into the snapshot")
    log = host.writer_log("busy vm")
    i = next(k for k, rec in enumerate(log) if rec["event"] == "snapshot.create")
    frozen = writer.apply_writes({n: bytearray(b) for n, b in initial.items()}, log, until=i)
    for node in ("scsi0:0", "scsi0:1"):
        assert host.read_disk(bases[node]) == bytes(frozen[node]), node
    # the independent disk is not snapshotted and keeps taking writes
    assert host.vm_disks(vmid)[2][1] == bases["scsi0:2"]
    assert any(rec["event"] == "write" for rec in log[i + 1:])
    sid = str(log[i]["id"])
    r = run_shell(host, "vim-cmd", "vmsvc/snapshot.remove", vmid, sid)
    assert r.returncode == 0, r.stdout
    wait_for(lambda: len(writes_after(host.writer_log("busy vm"), "snapshot.remove")) >= 2,
             what="guest writes after the removal")
    writer.stop(host, vmid)
    log = host.writer_log("busy vm")
    assert log[-1]["event"] == "writer.stop"
    final = writer.apply_writes({n: bytearray(b) for n, b in initial.items()}, log)
    assert [p for _n, p, _m in host.vm_disks(vmid)] == [bases[n] for n in ("scsi0:0", "scsi0:1", "scsi0:2")]
    for node, path in bases.items():
        assert host.read_disk(path) == bytes(final[node]), node
    ls = sh(host, "ls /vmfs/volumes/%s/'busy vm'" % ds).stdout
    assert "-00000" not in ls and "Snapshot" not in ls


def test_power_off_stops_writer(host):
    vmid = host.create_vm("w", "datastore1", [{"size": "4M"}], power="on", writer=True)
    wait_for(lambda: writes_after(host.writer_log("w"), "writer.start"), what="the guest to write")
    pid = host.vm(vmid)["writer_pid"]
    assert pid
    run_shell(host, "vim-cmd", "vmsvc/power.off", vmid)
    assert host.vm(vmid)["writer_pid"] is None
    # the writer has exited (it logs writer.stop last), so nothing can write any more
    assert host.writer_log("w")[-1] == dict(host.writer_log("w")[-1], event="writer.stop", pid=pid)
    assert not os.path.exists("/proc/%d" % pid) or _zombie(pid)
    n = len(host.writer_log("w"))
    run_shell(host, "vim-cmd", "vmsvc/power.on", vmid)  # writer flag survives power cycles
    wait_for(lambda: writes_after(host.writer_log("w")[n:], "writer.start"), what="the writer to restart")
    writer.stop(host, vmid)


def _zombie(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


NAMES = ["space vm", "O'Brien \"quoted\"", "semi;colon (1) [x]+", "Müller Ümlaut", "a|pipe"]


def test_odd_names(host):
    for name in NAMES:
        host.create_vm(name, "datastore1")
    r = run_shell(host, "vim-cmd", "vmsvc/getallvms")
    for name in NAMES:
        assert re.search(r"\d+ +%s +\[datastore1\] %s/%s\.vmx " % ((re.escape(name),) * 3), r.stdout), name
    vmx_text = open(host.vmx_real(host.vmid_by_name('O\'Brien "quoted"'))).read()
    assert 'displayName = "O\'Brien |22quoted|22"' in vmx_text
    assert 'displayName = "a|7Cpipe"' in open(host.vmx_real(host.vmid_by_name("a|pipe"))).read()
    vmid = host.vmid_by_name("semi;colon (1) [x]+")
    r = sh(host, 'cd "/vmfs/volumes/datastore1/semi;colon (1) [x]+" && vim-cmd vmsvc/snapshot.create %s s && ls' % vmid)
    assert "semi;colon (1) [x]+-000001.vmdk" in r.stdout


def test_register_unregister(host):
    vmid = host.create_vm("r", "datastore1")
    vmx = "/vmfs/volumes/datastore1/r/r.vmx"
    r = run_shell(host, "vim-cmd", "solo/registervm", vmx)
    assert r.returncode == 0 and r.stdout.startswith("(vim.fault.AlreadyExists) {")  # fault blocks exit 0
    assert "'%s' already exists" % vmid in r.stdout
    r = sh(host, "vim-cmd vmsvc/unregister %s && vim-cmd solo/registervm %s" % (vmid, vmx.replace(" ", "\\ ")))
    assert r.stdout.strip().isdigit() and r.stdout.strip() != vmid
    inv = sh(host, "cat /etc/vmware/hostd/vmInventory.xml").stdout
    assert "<vmxCfgPath>/vmfs/volumes/%s/r/r.vmx</vmxCfgPath>" % host.datastore_by_name("datastore1")["uuid"] in inv
    r = run_shell(host, "vim-cmd", "solo/registervm", "/vmfs/volumes/datastore1/nope/nope.vmx")
    assert r.returncode == 0 and "The object or item referred to could not be found." in r.stdout


def test_nfs_shared_between_hosts(tmp_path):
    nfs = str(tmp_path / "nfs")
    a = Host.create(str(tmp_path / "a"), nfs_root=nfs, crond=False)
    b = Host.create(str(tmp_path / "b"), version="6.7.0", nfs_root=nfs, crond=False)
    r = run_shell(a, "vim-cmd", "hostsvc/datastore/nas_create", "backup", "nfs", "/export/bk", "0", "10.0.0.5")
    assert r.returncode == 0, r.stdout
    r = run_shell(b, "esxcli", "storage", "nfs", "add", "-H", "10.0.0.5", "-s", "/export/bk", "-v", "bk")
    assert r.returncode == 0, r.stdout
    sh(a, "echo hello > /vmfs/volumes/backup/f.txt")
    assert sh(b, "cat /vmfs/volumes/bk/f.txt").stdout == "hello\n"
    lst = run_shell(b, "esxcli", "storage", "nfs", "list").stdout.splitlines()
    assert lst[0].split()[:3] == ["Volume", "Name", "Host"] and lst[2].split()[:3] == ["bk", "10.0.0.5", "/export/bk"]
    info = run_shell(a, "vim-cmd", "hostsvc/datastore/info", "backup").stdout
    assert "(vim.host.NasDatastoreInfo) {" in info and "blockSizeMb" not in info
    assert run_shell(a, "vim-cmd", "hostsvc/datastore/destroy", "backup").returncode == 0
    assert "backup" not in a.datastores()


def test_crond_restart_is_recorded(tmp_path):
    h = Host.create(str(tmp_path / "c"), version="6.7.0")
    try:
        # the host's start waits a while for crond's pid file, not for its log line: under load that comes later
        wait_for(lambda: crond.log(h), what="the first crond's start")
        first = crond.log(h)[-1]
        assert first["event"] == "start"
        r = sh(h, "echo '0 1 * * * /bin/true' >> /var/spool/cron/crontabs/root; "
                  "/bin/kill $(cat /var/run/crond.pid); crond; /usr/lib/vmware/busybox/bin/busybox crond; "
                  "/sbin/auto-backup.sh")
        assert r.returncode == 0, r.stderr
        assert "Saving current state in /bootbank" in r.stdout
        wait_for(lambda: [e["event"] for e in crond.log(h)].count("start") >= 3
                 and "stop" in [e["event"] for e in crond.log(h)], what="the first crond's stop and two starts")
        log = crond.log(h)
        events = [e["event"] for e in log]
        assert events.count("start") == 3
        assert {"event": "stop", "pid": first["pid"]}.items() <= next(
            e for e in log if e["event"] == "stop").items(), "the first crond was stopped"
        assert "/bin/true" in crond.log(h)[-1]["crontab"]
    finally:
        h.stop()


def test_a_template_is_listed_by_its_vmtx_and_never_runs(host):
    """hostd keeps templates among its VMs, their configuration file <name>.vmtx (vSphere VM administration,
    "Virtual Machine Files"): convert.toTemplate renames a powered-off VM's .vmx, getallvms lists the .vmtx,
    and a template is not powered on."""
    on = host.create_vm("on", "datastore1", power="on")
    r = run_shell(host, "vim-cmd", "vmsvc/convert.toTemplate", on)
    assert r.returncode == 0 and "(vim.fault.InvalidPowerState)" in r.stdout and not host.is_template(on)
    tpl = host.create_vm("tpl", "datastore1")
    r = run_shell(host, "vim-cmd", "vmsvc/convert.toTemplate", tpl)
    assert r.returncode == 0 and r.stdout == "" and host.is_template(tpl)
    assert os.path.exists(host.real("/vmfs/volumes/datastore1/tpl/tpl.vmtx"))
    assert not os.path.exists(host.real("/vmfs/volumes/datastore1/tpl/tpl.vmx"))
    assert "[datastore1] tpl/tpl.vmtx" in run_shell(host, "vim-cmd", "vmsvc/getallvms").stdout
    r = run_shell(host, "vim-cmd", "vmsvc/power.on", tpl)
    assert r.returncode == 1 and r.stdout == "Powering on VM:\nPower on failed\n" and host.power_state(tpl) == "off"
