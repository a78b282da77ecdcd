"""What ghettoVCB's users asked for (issue 13), through the CLI against a simulated host."""

from simhost import backups, hotvcb, needs_root, write_conf

pytestmark = needs_root


def test_only_powered_on_vms_and_the_converse(host, tmp_path):
    for name, power in (("web", "on"), ("db", "on"), ("template", "off")):
        host.create_vm(name, "datastore1", [{"size": "4M"}], power=power)
    r = hotvcb(host, "-a", "-g", write_conf(host), "--power-state", "on")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "template: skipped, powered off (BACKUP_POWER_STATE=on)" in r.stdout
    assert backups(host, "template") == [] and len(backups(host, "web")) == 1 and len(backups(host, "db")) == 1
    r = hotvcb(host, "-a", "-g", write_conf(host, BACKUP_POWER_STATE="off"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "web: skipped, powered on (BACKUP_POWER_STATE=off)" in r.stdout
    assert len(backups(host, "template")) == 1 and len(backups(host, "web")) == 1
    r = hotvcb(host, "-a", "-g", write_conf(host, BACKUP_POWER_STATE="sometimes"))
    assert r.returncode == 1 and "BACKUP_POWER_STATE='sometimes' is not valid (allowed: on|off|any)" in r.stderr


def _usage(folder):
    import os

    return sum(os.stat(os.path.join(root, f)).st_blocks * 512 for root, _d, files in os.walk(folder) for f in files)


def test_retention_by_size_keeps_the_newest_good_backup_and_the_stricter_rule_wins(host, tmp_path):
    import os
    import time

    from simhost import backup_root, sealed

    host.create_vm("sized", "datastore1", [{"size": "16M"}], power="on")
    assert hotvcb(host, "-m", "sized", "-g", write_conf(host)).returncode == 0
    one = _usage(os.path.join(backup_root(host, "sized"), sealed(host, "sized")[0]))
    budget = "%dK" % (int(2.5 * one) // 1024)  # room for two backups, not three
    conf = write_conf(host, VM_BACKUP_ROTATION_COUNT=5, VM_BACKUP_ROTATION_SIZE=budget)
    for _ in range(2):
        time.sleep(1.05)
        r = hotvcb(host, "-m", "sized", "-g", conf)
        assert r.returncode == 0, r.stdout + r.stderr
    kept = sealed(host, "sized")
    assert len(kept) == 2, kept  # the count allows 5: the budget is the stricter rule
    assert "per size budget" in r.stdout
    assert sum(_usage(os.path.join(backup_root(host, "sized"), b)) for b in kept) <= int(2.5 * one)

    # the dry run says what the next run would remove, and removes nothing
    r = hotvcb(host, "-m", "sized", "-g", conf, "-d", "dryrun")
    assert r.returncode == 0 and "Would remove old backup" in r.stdout and sealed(host, "sized") == kept

    # a budget smaller than one backup still keeps the newest good one
    time.sleep(1.05)
    r = hotvcb(host, "-m", "sized", "-g", write_conf(host, VM_BACKUP_ROTATION_COUNT=5, VM_BACKUP_ROTATION_SIZE="1K"))
    assert r.returncode == 0 and len(sealed(host, "sized")) == 1
    assert "the newest good one always stays" in r.stdout


def test_cold_snapshot_backs_up_the_powered_off_disk_with_minutes_of_downtime(host, tmp_path):
    import os
    import re
    import subprocess

    from esxisim import writer
    from simhost import backup_root, sealed, wait_for

    vm = "cold"
    vmid = host.create_vm(vm, "datastore1", [{"size": "8M"}], power="on")
    initial = {n: bytearray(host.read_disk(p)) for n, p, _m in host.vm_disks(vmid)}
    writer.start(host, vmid)
    host.set_fault("clone.delay", "2")
    conf = write_conf(host, COLD_SNAPSHOT=1, ENABLE_HARD_POWER_OFF=1, ITER_TO_WAIT_SHUTDOWN="10s")
    r = hotvcb(host, "-m", vm, "-g", conf)
    writer.stop(host, vmid)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"cold was down for \d+ s \(COLD_SNAPSHOT\)", r.stdout)
    out = r.stdout
    assert out.index("Creating Snapshot") < out.index("Powering cold on again") < out.index("Backing up ")
    assert host.power_state(vmid) == "on"
    log = host.writer_log(vm)
    i = next(k for k, rec in enumerate(log) if rec["event"] == "snapshot.create")
    frozen = writer.apply_writes({n: bytearray(b) for n, b in initial.items()}, log, until=i)
    [entry] = sealed(host, vm)
    raw = tmp_path / "expected.raw"
    [node] = frozen
    raw.write_bytes(bytes(frozen[node]))
    disk = os.path.join(backup_root(host, vm), entry, vm + ".vmdk")
    cmp = subprocess.run(["qemu-img", "compare", "-f", "vmdk", "-F", "raw", disk, str(raw)], capture_output=True,
                         text=True)
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr
    assert any(rec["event"] == "write" for rec in log[i:]), "the guest ran (and wrote) while the copy went on"


def test_a_vm_that_does_not_come_back_after_its_cold_snapshot_is_the_first_news(host, tmp_path):
    vm = "stays down"
    vmid = host.create_vm(vm, "datastore1", [{"size": "4M"}], power="on")
    host.set_fault("power.on", "refuse")
    r = hotvcb(host, "-m", vm, "-g", write_conf(host, COLD_SNAPSHOT=1, ENABLE_HARD_POWER_OFF=1,
                                                  ITER_TO_WAIT_SHUTDOWN="10s"))
    assert r.returncode == 6, r.stdout + r.stderr
    assert "!!! stays down did NOT power on again after its cold snapshot; it is DOWN !!!" in r.stdout
    assert "Final status: VM DOWN: stays down; ERROR: All VMs failed!" in r.stdout
    assert host.power_state(vmid) == "off"
