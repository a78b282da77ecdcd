"""`hotvcb backup` against a simulated ESXi host: what issue 2 must show."""

import glob
import os
import re
import signal
import subprocess

import pytest

from simhost import (needs_root, next_second, backup_root, backups, copying, hotvcb, hotvcb_background, kill, lock_pid,
                     make_host, manifest, sealed, snapshot_names, VOLUME, wait_for, write_conf)
from esxisim import writer
from hotvcb.localshell import LocalShell
from hotvcb.store import health, layout

pytestmark = needs_root


def uuid_of(host, datastore):
    return os.path.basename(os.path.realpath(host.real("/vmfs/volumes/" + datastore)))


def content(host, vmid):
    return {node: bytearray(host.read_disk(path)) for node, path, _m in host.vm_disks(vmid)}


def qemu_img(*args):
    return subprocess.run(["qemu-img"] + list(args), capture_output=True, text=True)


def deltas(host, vm, ds="datastore1"):
    return [f for f in os.listdir(host.real("/vmfs/volumes/%s/%s" % (ds, vm))) if "-00000" in f]


def test_hot_backup_holds_the_snapshot_instant_and_loses_no_write(host, tmp_path):
    vm = "Web Server (prod)"
    vmid = host.create_vm(vm, "datastore1", [{"size": "16M"}, {"size": "8M", "datastore": "ds5", "bus": "sata"}],
                          vmxf=True)
    bases = {node: path for node, path, _m in host.vm_disks(vmid)}
    initial = content(host, vmid)
    host.power_on(vmid)
    writer.start(host, vmid)
    host.set_fault("clone.delay", "1.5")  # let the guest write while the copy runs
    r = hotvcb(host, "backup", "-m", vm, "-g", write_conf(host), "-w", tmp_path / "work")
    writer.stop(host, vmid)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Final status: All VMs backed up OK!" in r.stdout

    log = host.writer_log(vm)
    i = next(k for k, rec in enumerate(log) if rec["event"] == "snapshot.create")
    j = next(k for k, rec in enumerate(log) if rec["event"] == "snapshot.remove")
    assert any(rec["event"] == "write" for rec in log[:i]), "the guest wrote before the snapshot"
    assert any(rec["event"] == "write" for rec in log[i:j]), "the guest wrote during the copy"
    frozen = writer.apply_writes({n: bytearray(b) for n, b in initial.items()}, log, until=i)

    [entry] = sealed(host, vm)
    folder = os.path.join(backup_root(host, vm), entry)
    ds5 = uuid_of(host, "ds5")  # named as the .vmx names it, where ghettoVCB-restore looks
    assert sorted(os.listdir(folder)) == sorted([
        "STATUS.ok", "hotvcb.json", vm + ".vmx", vm + ".nvram", "." + vm + ".vmxf",
        vm + ".vmdk", vm + "-flat.vmdk", ds5])
    assert sorted(os.listdir(os.path.join(folder, ds5))) == [vm + "_1-flat.vmdk", vm + "_1.vmdk"]
    for node, rel in (("scsi0:0", vm + ".vmdk"), ("sata0:0", "%s/%s_1.vmdk" % (ds5, vm))):
        raw = tmp_path / ("expected-%s.raw" % node.replace(":", "_"))
        raw.write_bytes(bytes(frozen[node]))
        backup_disk = os.path.join(folder, rel)
        cmp = qemu_img("compare", "-f", "vmdk", "-F", "raw", backup_disk, str(raw))
        assert cmp.returncode == 0, "%s: %s" % (node, cmp.stdout + cmp.stderr)

    # after the snapshot is gone the live disks hold every write, also those made during the copy
    final = writer.apply_writes({n: bytearray(b) for n, b in initial.items()}, host.writer_log(vm))
    for node, path in bases.items():
        assert host.read_disk(path) == bytes(final[node]), node
    assert snapshot_names(host, vmid) == []
    assert deltas(host, vm) == [] and deltas(host, vm, "ds5") == []
    m = manifest(host, vm, entry)
    assert m["result"] == "ok" and m["vm"] == vm
    assert set(m["files"]) >= {vm + "-flat.vmdk", "%s/%s_1-flat.vmdk" % (ds5, vm), vm + ".vmx"}


@pytest.mark.parametrize("fmt, files", [
    ("thin", ["-flat.vmdk"]),
    ("zeroedthick", ["-flat.vmdk"]),
    ("eagerzeroedthick", ["-flat.vmdk"]),
    ("2gbsparse", ["-s001.vmdk"]),
])
def test_each_format_is_a_real_vmdk_equal_to_the_source(host, tmp_path, fmt, files):
    # a second, independent reader: dissect.hypervisor (pure Python); skip before any work is done
    vmdk = pytest.importorskip("dissect.hypervisor.disk.vmdk", reason="dissect.hypervisor is the second VMDK reader "
                               "(scripts/install-test-deps installs it)")
    vm = "fmt-" + fmt
    vmid = host.create_vm(vm, "datastore1", [{"size": "12M", "format": "thin"}], power="on")
    r = hotvcb(host, "-m", vm, "-g", write_conf(host, DISK_BACKUP_FORMAT=fmt), "-w", tmp_path / "w")
    assert r.returncode == 0, r.stdout + r.stderr
    [entry] = sealed(host, vm)
    folder = os.path.join(backup_root(host, vm), entry)
    disk = os.path.join(folder, vm + ".vmdk")
    for suffix in files:
        assert os.path.exists(os.path.join(folder, vm + suffix))
    if fmt == "2gbsparse":
        assert host.module_loaded("multiextent"), "hotvcb loads multiextent as ghettoVCB does (ESXi 5.1+)"
        check = qemu_img("check", "-f", "vmdk", disk)
        assert check.returncode == 0, check.stdout + check.stderr
    source = host.real("/vmfs/volumes/datastore1/%s/%s.vmdk" % (vm, vm))
    cmp = qemu_img("compare", "-f", "vmdk", "-F", "vmdk", disk, source)
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr
    info = qemu_img("info", "--output=json", disk).stdout
    assert '"virtual-size": 12582912' in info
    assert snapshot_names(host, vmid) == []
    with open(disk, "rb") as fh:
        reader = vmdk.VMDK(fh)
        assert reader.read(12 << 20) == host.read_disk(source)


def _good_backup(host, vm, tmp_path, **conf):
    r = hotvcb(host, "-m", vm, "-g", write_conf(host, **conf), "-w", tmp_path / "w")
    assert r.returncode == 0, r.stdout + r.stderr
    return sealed(host, vm)


def _assert_nothing_left(host, vm, vmid, good_before):
    assert [n for n in snapshot_names(host, vmid) if n.startswith("hotvcb-")] == []
    assert deltas(host, vm) == []
    names = backups(host, vm)
    assert not [b for b in names if b.endswith("-partial")], names
    assert sealed(host, vm) == good_before, "earlier good backups survive, no new one looks complete"


def test_snapshot_that_never_appears_times_out_cleanly(host, tmp_path):
    vm = "never"
    vmid = host.create_vm(vm, "datastore1", [{"size": "8M"}], power="on")
    good = _good_backup(host, vm, tmp_path)
    next_second()
    host.set_fault("snapshot.create", "never")
    # waited twice (the timeout, then as long again for a late one): 1 s each is the same path as 15 min each
    r = hotvcb(host, "-m", vm, "-g", write_conf(host, SNAPSHOT_TIMEOUT="1s"), "-w", tmp_path / "w")
    assert r.returncode == 6, r.stdout + r.stderr
    assert "timed out" in r.stdout and "Final status: ERROR: All VMs failed!" in r.stdout
    _assert_nothing_left(host, vm, vmid, good)
    errors = [b for b in backups(host, vm) if os.path.exists(os.path.join(backup_root(host, vm), b, "STATUS.error"))]
    assert len(errors) == 1
    assert not any(f.endswith(".vmdk") for f in os.listdir(os.path.join(backup_root(host, vm), errors[0])))


def test_snapshot_fault_with_exit_status_0_fails_the_vm(host, tmp_path):
    """vim-cmd prints a failed snapshot.create as a fault block and exits 0 (esxisim.faults.FAULT_EXIT):
    the fault block alone must fail the VM, with hostd's message in the log."""
    vm = "faulty"
    vmid = host.create_vm(vm, "datastore1", [{"size": "4M"}], power="on")
    good = _good_backup(host, vm, tmp_path)
    next_second()
    host.set_fault("snapshot.create", "fail")
    r = hotvcb(host, "-m", vm, "-g", write_conf(host, SNAPSHOT_TIMEOUT="30s"), "-w", tmp_path / "w")
    assert r.returncode == 6, r.stdout + r.stderr
    assert "An error occurred while saving the snapshot" in r.stdout
    assert "timed out" not in r.stdout, "the fault is seen at once, not by waiting for the snapshot"
    _assert_nothing_left(host, vm, vmid, good)


def test_snapshot_that_appears_after_the_timeout_is_removed_in_the_same_run(host, tmp_path):
    vm = "late"
    vmid = host.create_vm(vm, "datastore1", [{"size": "4M"}], power="on")
    host.set_fault("snapshot.create.delay", "4")
    r = hotvcb(host, "-m", vm, "-g", write_conf(host, SNAPSHOT_TIMEOUT="3s"), "-w", tmp_path / "w")
    assert r.returncode == 6, r.stdout + r.stderr
    assert "timed out" in r.stdout and "appeared after the timeout; removing it" in r.stdout
    assert snapshot_names(host, vmid) == [] and deltas(host, vm) == []


def test_clone_failing_midway_fails_only_that_disk(host, tmp_path):
    vm = "two disks"
    vmid = host.create_vm(vm, "datastore1", [{"size": "8M"}, {"size": "8M"}], power="on")
    host.create_vm("clean", "datastore1", [{"size": "4M"}], power="on")
    host.set_fault("clone.fail_at", "50")
    host.set_fault("clone.match", vm + "_1.vmdk")
    r = hotvcb(host, "-m", vm, "-g", write_conf(host), "-w", tmp_path / "w")
    assert r.returncode == 8, r.stdout + r.stderr
    assert "ERROR: All VMs experienced at least a partial failure!" in r.stdout
    assert "completed with failed disk(s)" in r.stdout
    next_second()
    r = hotvcb(host, "-m", vm, "-m", "clean", "-g", write_conf(host), "-w", tmp_path / "w")
    assert r.returncode == 3, r.stdout + r.stderr
    assert "WARNING: All VMs backed up, but some disk(s) failed!" in r.stdout
    assert "Failed to clone disk" in r.stdout
    entry = backups(host, vm)[-1]
    folder = os.path.join(backup_root(host, vm), entry)
    assert os.path.exists(os.path.join(folder, "STATUS.warn")) and not os.path.exists(os.path.join(folder, "STATUS.ok"))
    assert not any(f.startswith(vm + "_1") for f in os.listdir(folder)), "no half-copied disk is kept"
    m = manifest(host, vm, entry)
    assert [d["ok"] for d in m["disks"]] == [True, False]
    assert snapshot_names(host, vmid) == [] and deltas(host, vm) == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_copy_removes_our_snapshot(host, tmp_path, sig):
    vm = "signalled"
    vmid = host.create_vm(vm, "datastore1", [{"size": "8M"}], power="on", writer=True)
    good = _good_backup(host, vm, tmp_path)
    host.set_fault("clone.delay", "20")
    work = str(tmp_path / "w")
    proc = hotvcb_background(host, "-m", vm, "-g", write_conf(host), "-w", work)
    wait_for(lambda: any(r["event"] == "snapshot.create" for r in host.writer_log(vm)[-50:])
             and lock_pid(host) and copying(host, vm), what="the copy to start")
    kill(lock_pid(host), sig)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, out
    assert "Final status: ERROR: interrupted by %s" % sig.name in out
    _assert_nothing_left(host, vm, vmid, good)
    writer.stop(host, vmid)


def test_sigkill_leftovers_are_removed_by_the_next_run_and_user_snapshots_survive(host, tmp_path):
    vm = "killed"
    vmid = host.create_vm(vm, "datastore1", [{"size": "8M"}], power="on", snapshots=["user snapshot"])
    conf = write_conf(host, ALLOW_VMS_WITH_SNAPSHOTS_TO_BE_BACKEDUP=1)
    good = _good_backup(host, vm, tmp_path, ALLOW_VMS_WITH_SNAPSHOTS_TO_BE_BACKEDUP=1)
    host.set_fault("clone.delay", "30")
    work = str(tmp_path / "w")
    proc = hotvcb_background(host, "-m", vm, "-g", conf, "-w", work)
    wait_for(lambda: any(n.startswith("hotvcb-") for n in snapshot_names(host, vmid)) and copying(host, vm),
             what="our snapshot and the copy")
    kill(lock_pid(host), signal.SIGKILL)
    proc.communicate(timeout=60)
    assert any(n.startswith("hotvcb-") for n in snapshot_names(host, vmid)), "SIGKILL leaves the snapshot"
    assert any(b.endswith("-partial") for b in backups(host, vm))
    host.clear_faults()
    next_second()
    r = hotvcb(host, "-m", vm, "-g", conf, "-w", work)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "found leftover snapshot" in r.stdout and "removing unfinished backup" in r.stdout
    assert "taking over the run lock" in r.stdout
    assert snapshot_names(host, vmid) == ["user snapshot"]
    assert len(sealed(host, vm)) == len(good) + 1
    assert not any(b.endswith("-partial") for b in backups(host, vm))


def test_vm_with_user_snapshot_is_refused_unless_allowed(host, tmp_path):
    vm = "has snapshot"
    vmid = host.create_vm(vm, "datastore1", [{"size": "8M"}], power="on", snapshots=["keep me"])
    r = hotvcb(host, "-m", vm, "-g", write_conf(host), "-w", tmp_path / "w")
    assert r.returncode == 6 and "ALLOW_VMS_WITH_SNAPSHOTS_TO_BE_BACKEDUP" in r.stdout
    assert backups(host, vm) == [] and snapshot_names(host, vmid) == ["keep me"]


def test_target_full_fails_before_any_change(tmp_path):
    host = make_host(tmp_path / "host", backup_capacity=16 << 20)
    try:
        vm = "big"
        vmid = host.create_vm(vm, "datastore1", [{"size": "32M"}], power="on")
        r = hotvcb(host, "-m", vm, "-g", write_conf(host, DISK_BACKUP_FORMAT="eagerzeroedthick"), "-w", tmp_path / "w")
        assert r.returncode == 6, r.stdout + r.stderr
        assert "needs 32.0 MiB" in r.stdout and "free" in r.stdout
        assert not any(rec["event"].startswith("snapshot") for rec in host.writer_log(vm))
        assert snapshot_names(host, vmid) == [] and backups(host, vm) == []
    finally:
        host.stop()


def test_two_vms_with_one_display_name_are_refused_not_guessed(host, tmp_path):
    a = host.create_vm("dup", "datastore1", [{"size": "4M"}], power="on")
    b = host.create_vm("dup", "ds5", [{"size": "4M"}], power="on")
    host.create_vm("single", "datastore1", [{"size": "4M"}], power="on")
    r = hotvcb(host, "-a", "-g", write_conf(host), "-w", tmp_path / "w")
    assert r.returncode == 4, r.stdout + r.stderr
    ids = tuple(sorted([str(a), str(b)]))  # getallvms lists vmids sorted as strings
    assert "2 VMs are named 'dup' (vmids %s, %s); rename one" % ids in r.stdout
    assert backups(host, "dup") == [] and len(sealed(host, "single")) == 1


def test_an_image_format_esxi_cannot_write_is_refused_before_any_change(host, tmp_path):
    """The global config's: a config error, before any VM, naming its file:line (exit 1); a per-VM file's
    fails only its VM (exit 4 here: another VM backed up)."""
    vmid = host.create_vm("qc", "datastore1", [{"size": "4M"}], power="on")
    host.create_vm("ok", "datastore1", [{"size": "4M"}], power="on")
    conf = write_conf(host, DISK_BACKUP_FORMAT="qcow2")
    r = hotvcb(host, "-m", "qc", "-g", conf, "-w", tmp_path / "w")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "%s:2: DISK_BACKUP_FORMAT=qcow2 cannot be written on this esxi host " \
           "(allowed: zeroedthick|eagerzeroedthick|thin|2gbsparse)" % conf in r.stdout
    assert "Traceback" not in r.stdout + r.stderr and "LOG START" not in r.stdout
    assert backups(host, "qc") == [] and not any(e["event"].startswith("snapshot") for e in host.writer_log("qc"))
    assert snapshot_names(host, vmid) == []
    confdir = tmp_path / "per-vm"
    confdir.mkdir()
    (confdir / "qc").write_text("DISK_BACKUP_FORMAT=raw\n")
    r = hotvcb(host, "-m", "qc", "-m", "ok", "-c", confdir, "-g", write_conf(host), "-w", tmp_path / "w")
    assert r.returncode == 4, r.stdout + r.stderr
    assert "DISK_BACKUP_FORMAT=raw cannot be written on this esxi host" in r.stdout
    assert backups(host, "qc") == [] and snapshot_names(host, vmid) == [] and len(sealed(host, "ok")) == 1


def test_backup_volume_on_no_datastore_is_refused(host, tmp_path):
    vmid = host.create_vm("typo", "datastore1", [{"size": "4M"}], power="on")
    r = hotvcb(host, "-m", "typo", "-g", write_conf(host, VM_BACKUP_VOLUME="/vmfs/volumes/bakup/hotvcb"),
               "-w", tmp_path / "w")
    assert r.returncode == 6, r.stdout + r.stderr
    assert "/vmfs/volumes/bakup/hotvcb is not on a datastore of this host (datastores: backup, datastore1, ds5)" \
        in r.stdout
    assert not os.path.exists(host.real("/vmfs/volumes/bakup")) and snapshot_names(host, vmid) == []


def test_a_missing_backup_volume_off_the_datastores_is_refused_unless_told_to_create_it(host, tmp_path):
    """Outside /vmfs/volumes a missing folder would be made on the ESXi ramdisk (issue 10 item 6)."""
    vmid = host.create_vm("ram", "datastore1", [{"size": "4M"}], power="on")
    scratch = tmp_path / "scratch" / "hotvcb"  # off the datastores (the test host's / is the real one)
    r = hotvcb(host, "-m", "ram", "-g", write_conf(host, VM_BACKUP_VOLUME=scratch), "-w", tmp_path / "w")
    assert r.returncode == 6, r.stdout + r.stderr
    assert not (tmp_path / "scratch").exists()
    assert "VM_BACKUP_VOLUME %s does not exist" % scratch in r.stdout and "CREATE_VM_BACKUP_VOLUME=1" in r.stdout
    assert snapshot_names(host, vmid) == []
    r = hotvcb(host, "-m", "ram", "-g", write_conf(host, VM_BACKUP_VOLUME=tmp_path / "bk", CREATE_VM_BACKUP_VOLUME=1),
               "-w", tmp_path / "w")
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(glob.glob(str(tmp_path / "bk" / "ram" / "*" / "STATUS.ok"))) == 1


def test_a_misspelt_vm_name_gets_the_close_names(host, tmp_path):
    """Issue 10 item 3: `no VM named 'Web server (prod)'` says which names are close."""
    host.create_vm("Web Server (prod)", "datastore1", [{"size": "4M"}], power="off")
    host.create_vm("Web Server (test)", "datastore1", [{"size": "4M"}], power="off")
    host.create_vm("db", "datastore1", [{"size": "4M"}], power="off")
    r = hotvcb(host, "-m", "Web server (prod)", "-g", write_conf(host), "-w", tmp_path / "w")
    assert r.returncode != 0
    assert ("no VM named 'Web server (prod)' on this host (did you mean 'Web Server (prod)' or "
            "'Web Server (test)'?)") in r.stdout, r.stdout
    r = hotvcb(host, "-m", "zzz", "-g", write_conf(host), "-w", tmp_path / "w")
    assert "no VM named 'zzz' on this host\n" in r.stdout or "no VM named 'zzz' on this host" in r.stdout
    assert "did you mean" not in r.stdout


def test_vm_vanishing_after_listing_fails_only_that_vm(host, tmp_path):
    host.create_vm("stays", "datastore1", [{"size": "8M"}], power="on")
    host.create_vm("vanishes", "datastore1", [{"size": "8M"}], power="on")
    host.set_fault("getallvms.unregister_after", "vanishes")
    r = hotvcb(host, "-m", "stays", "-m", "vanishes", "-m", "no such vm", "-g", write_conf(host), "-w", tmp_path / "w")
    assert r.returncode == 4, r.stdout + r.stderr
    assert "Final status: ERROR: Only some of the VMs backed up!" in r.stdout
    assert "no VM named 'no such vm'" in r.stdout
    assert len(sealed(host, "stays")) == 1 and sealed(host, "vanishes") == []
    assert not any(b.endswith("-partial") for b in backups(host, "vanishes"))


ODD = ["Web (prod) [1]+", "O'Brien \"db\"", "Datenbank-Müller; ä"]


def test_odd_names_are_found_backed_up_and_rotated(host, tmp_path):
    for name in ODD:
        host.create_vm(name, "datastore1", [{"size": "4M"}], power="on")
    host.create_vm("Web (prod) [1]", "datastore1", [{"size": "4M"}], power="on")  # a prefix, not a match
    listing = tmp_path / "vms to backup"
    listing.write_text("# odd names\n\n" + "\n".join(ODD) + "\n", encoding="utf-8")
    conf = write_conf(host, VM_BACKUP_ROTATION_COUNT=2)
    for run in range(3):
        r = hotvcb(host, "-f", listing, "-g", conf, "-w", tmp_path / "w")
        assert r.returncode == 0, r.stdout + r.stderr
        next_second()
    for name in ODD:
        assert len(sealed(host, name)) == 2, (name, backups(host, name))
        assert all(b.startswith(name + "-") for b in backups(host, name))
    assert backups(host, "Web (prod) [1]") == []


def test_garbage_config_is_one_clear_line(host, tmp_path):
    host.create_vm("vm", "datastore1", [{"size": "4M"}], power="on")
    bad = tmp_path / "bad.conf"
    bad.write_text("VM_BACKUP_VOLUME=/vmfs/volumes/backup\nDISK_BACKUP_FORMAT=floppy\n")
    r = hotvcb(host, "-m", "vm", "-g", bad, "-w", tmp_path / "w")
    assert r.returncode == 1
    assert "bad.conf:2" in r.stderr and "DISK_BACKUP_FORMAT" in r.stderr and "thin" in r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    bad.write_bytes(os.urandom(4096))
    r = hotvcb(host, "-m", "vm", "-g", bad, "-w", tmp_path / "w")
    assert r.returncode == 1 and "Traceback" not in r.stdout + r.stderr and "bad.conf" in r.stderr


def test_dry_run_changes_nothing(host, tmp_path):
    vmid = host.create_vm("dry", "datastore1", [{"size": "8M"}], power="on")
    r = hotvcb(host, "-m", "dry", "-g", write_conf(host, ENABLE_COMPRESSION=1), "-d", "dryrun", "-w", tmp_path / "w")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK, only a dryrun." in r.stdout and "dry.vmdk" in r.stdout and "MiB" in r.stdout
    # the .gz is written while its folder is still there: the room it needs too, as the run reserves it
    assert re.search(r"TOTAL NEEDED: ([\d.]+ MiB) and up to \1 more while it is compressed;", r.stdout), r.stdout
    assert backups(host, "dry") == [] and snapshot_names(host, vmid) == []
    assert not any(rec["event"].startswith("snapshot") for rec in host.writer_log("dry"))


def test_second_run_is_refused_while_the_first_holds_the_lock(host, tmp_path):
    host.create_vm("slow", "datastore1", [{"size": "8M"}], power="on")
    host.set_fault("clone.delay", "6")
    work = str(tmp_path / "w")
    first = hotvcb_background(host, "-m", "slow", "-g", write_conf(host), "-w", work)
    wait_for(lambda: lock_pid(host), what="the first run's lock")
    r = hotvcb(host, "-m", "slow", "-g", write_conf(host), "-w", work)
    assert r.returncode == 1 and "another hotvcb run" in r.stderr + r.stdout
    out, _ = first.communicate(timeout=60)
    assert first.returncode == 0, out


def test_skipped_disks_buses_other_datastore_and_extra_files(host, tmp_path):
    vm = "many disks"
    host.create_vm(vm, "datastore1", [
        {"size": "4M"}, {"size": "4M", "bus": "sata"}, {"size": "4M", "bus": "nvme"}, {"size": "4M", "bus": "ide"},
        {"size": "4M", "datastore": "ds5"}, {"size": "4M", "mode": "independent-persistent"},
        {"size": "4M", "rdm": "physical"},
    ], power="on", vmxf=True)
    r = hotvcb(host, "-m", vm, "-g", write_conf(host, BACKUP_FILES_CHMOD="640", RSYNC_LINK=1), "-w", tmp_path / "w")
    assert r.returncode == 3, r.stdout + r.stderr  # as ghettoVCB: two disks are in no backup
    assert "independent disk" in r.stdout and "physical RDM" in r.stdout
    assert re.search(r"many disks +WARN +5/7 ", r.stdout), r.stdout  # the run table: 2 of 7 in no backup
    [entry] = sealed(host, vm)
    m = manifest(host, vm, entry)
    keys = [d["key"] for d in m["disks"]]
    assert len(keys) == 5 and all(d["ok"] for d in m["disks"])
    assert {k.split("0:")[0] for k in keys} == {"scsi", "sata", "ide", "nvme"}
    assert any(f.startswith(uuid_of(host, "ds5") + "/") for f in m["files"])
    folder = os.path.join(backup_root(host, vm), entry)
    # the two disks in no backup are named in it: list and status warn as for ghettoVCB's STATUS.warn
    assert sorted(d["reason"].split()[0] for d in m["skipped"]) == ["independent", "physical"], m["skipped"]
    verdict = health.judge(LocalShell(), layout.from_path(LocalShell(), folder))
    assert verdict.good and all(d["key"] in verdict.warning for d in m["skipped"]), verdict
    assert oct(os.stat(os.path.join(folder, vm + ".vmx")).st_mode & 0o777) == "0o640"
    link = os.path.join(backup_root(host, vm), vm + "-symlink")
    assert os.readlink(link) == entry
    # restored, the VM is short of the two disks no backup holds: not "restored OK" (exit 3, as the backup)
    r = hotvcb(host, "restore", VOLUME + "/" + vm + "/" + entry, "--datastore", "datastore1", "--name", "many back")
    assert r.returncode == 3, r.stdout + r.stderr
    assert r.stdout.count("it is restored disconnected") == 2, r.stdout
    assert "Final status: WARNING: All VMs restored, but some disk(s) were not in the backup" in r.stdout, r.stdout


def test_power_down_mode_with_hard_power_off(host, tmp_path):
    vm = "stubborn"
    vmid = host.create_vm(vm, "datastore1", [{"size": "4M"}], power="on")
    host.set_fault("power.shutdown", "ignore")
    conf = write_conf(host, POWER_VM_DOWN_BEFORE_BACKUP=1, ENABLE_HARD_POWER_OFF=1, ITER_TO_WAIT_SHUTDOWN="2s",
                      POWER_DOWN_TIMEOUT="20s")
    r = hotvcb(host, "-m", vm, "-g", conf, "-w", tmp_path / "w")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Hard power off" in r.stdout and "Powering on" in r.stdout
    assert not any(rec["event"].startswith("snapshot") for rec in host.writer_log(vm)), "an off VM needs no snapshot"
    assert host.power_state(vmid) == "on"


def test_guest_that_will_not_shut_down_is_given_up_and_left_running(host, tmp_path):
    vmid = host.create_vm("deaf", "datastore1", [{"size": "4M"}], power="on")
    host.set_fault("power.shutdown", "ignore")
    conf = write_conf(host, POWER_VM_DOWN_BEFORE_BACKUP=1, POWER_DOWN_TIMEOUT="3s")
    r = hotvcb(host, "-m", "deaf", "-g", conf, "-w", tmp_path / "w")
    assert r.returncode == 6, r.stdout + r.stderr
    assert "timed out" in r.stdout and "deaf is still powered on" in r.stdout
    assert "could NOT be powered on" not in r.stdout
    assert host.power_state(vmid) == "on" and sealed(host, "deaf") == []


def test_compressed_backup(host, tmp_path):
    host.create_vm("zipped", "datastore1", [{"size": "4M"}], power="on")
    r = hotvcb(host, "-m", "zipped", "-g", write_conf(host, ENABLE_COMPRESSION=1), "-w", tmp_path / "w")
    assert r.returncode == 0, r.stdout + r.stderr
    [entry] = backups(host, "zipped")
    assert entry.endswith(".gz")
    import tarfile
    with tarfile.open(os.path.join(backup_root(host, "zipped"), entry)) as tar:
        names = tar.getnames()
    assert entry[:-3] + "/STATUS.ok" in names and entry[:-3] + "/zipped-flat.vmdk" in names


def test_failed_compression_keeps_the_uncompressed_backup(host, tmp_path):
    host.create_vm("zipfail", "datastore1", [{"size": "4M"}], power="on")
    host.set_fault("clone.delay", "3")
    root = backup_root(host, "zipfail")
    proc = hotvcb_background(host, "-m", "zipfail", "-g", write_conf(host, ENABLE_COMPRESSION=1), "-w", tmp_path / "w")
    wait_for(lambda: [b for b in backups(host, "zipfail") if b.endswith("-partial")], what="the -partial folder")
    [partial] = [b for b in backups(host, "zipfail") if b.endswith("-partial")]
    os.mkdir(os.path.join(root, "." + partial[: -len("-partial")] + ".gz.tmp"))  # tar cannot write there
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 3, out  # a warning: a volume sized for .gz backups fills with folders otherwise
    assert "compression failed, keeping the uncompressed backup" in out
    assert sealed(host, "zipfail") == [partial[: -len("-partial")]]
    assert not [e for e in os.listdir(root) if e.endswith((".gz", ".tmp"))]


def test_a_backup_moved_on_to_a_free_second_names_its_snapshot_after_it(host, tmp_path):
    """A run begun in the second of the last backup (its folder takes the next free second) must not name its
    snapshot as the last run did: on libvirt that name is the checkpoint the incremental stands on."""
    from datetime import datetime, timedelta
    vm = "Quick"
    vmid = host.create_vm(vm, "datastore1", [{"size": "4M"}])
    host.power_on(vmid)
    root = backup_root(host, vm)
    now = datetime.now()
    taken = [(now + timedelta(seconds=k)).strftime("%Y-%m-%d_%H-%M-%S") for k in range(6)]
    for ts in taken:
        os.makedirs(os.path.join(root, "%s-%s" % (vm, ts)))
    r = hotvcb(host, "backup", "-m", vm, "-g", write_conf(host, VM_BACKUP_ROTATION_COUNT=20), "-w", tmp_path / "work")
    assert r.returncode == 0, r.stdout + r.stderr
    [entry] = sealed(host, vm)
    ts = entry[len(vm) + 1:]
    assert ts not in taken, entry
    assert 'Creating Snapshot "hotvcb-snapshot-%s"' % ts in r.stdout, r.stdout
