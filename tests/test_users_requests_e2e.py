"""What ghettoVCB's users asked for (issue 13), through the CLI against a simulated host."""

from simhost import backups, hotvcb, needs_root, next_second, write_conf

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
    assert r.returncode == 1 and "BACKUP_POWER_STATE='sometimes' is not valid (allowed: on|off|suspended|any)" in r.stderr


def _usage(folder):
    import os

    return sum(os.stat(os.path.join(root, f)).st_blocks * 512 for root, _d, files in os.walk(folder) for f in files)


def test_retention_by_size_keeps_the_newest_good_backup_and_the_stricter_rule_wins(host, tmp_path):
    import os

    from simhost import backup_root, sealed

    host.create_vm("sized", "datastore1", [{"size": "16M"}], power="on")
    assert hotvcb(host, "-m", "sized", "-g", write_conf(host)).returncode == 0
    one = _usage(os.path.join(backup_root(host, "sized"), sealed(host, "sized")[0]))
    budget = "%dK" % (int(2.5 * one) // 1024)  # room for two backups, not three
    conf = write_conf(host, VM_BACKUP_ROTATION_COUNT=5, VM_BACKUP_ROTATION_SIZE=budget)
    for _ in range(2):
        next_second()
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
    next_second()
    r = hotvcb(host, "-m", "sized", "-g", write_conf(host, VM_BACKUP_ROTATION_COUNT=5, VM_BACKUP_ROTATION_SIZE="1K"))
    assert r.returncode == 0 and len(sealed(host, "sized")) == 1
    assert "the newest good one always stays" in r.stdout


def test_cold_snapshot_backs_up_the_powered_off_disk_with_minutes_of_downtime(host, tmp_path):
    import os
    import re
    import subprocess

    from esxisim import writer
    from simhost import backup_root, sealed

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


HOOK = 'echo "$HOTVCB_PHASE|$HOTVCB_VM|$HOTVCB_RESULT|$HOTVCB_BACKUP" >> /vmfs/volumes/datastore1/hooks.log'


def _hook_lines(host):
    import os

    path = host.real("/vmfs/volumes/datastore1/hooks.log")
    return open(path).read().splitlines() if os.path.exists(path) else []


def test_hooks_run_in_order_on_success_failure_and_sigterm(host, tmp_path):
    import signal

    from simhost import hotvcb_background, kill, lock_pid, snapshot_names, wait_for

    vmid = host.create_vm("hooked; $(x)", "datastore1", [{"size": "4M"}, {"size": "4M"}], power="on")
    conf = write_conf(host, PRE_BACKUP_HOOK=HOOK, POST_BACKUP_HOOK=HOOK, HOOK_TIMEOUT="20s")
    r = hotvcb(host, "-m", "hooked; $(x)", "-g", conf)
    assert r.returncode == 0, r.stdout + r.stderr
    pre, post = _hook_lines(host)
    assert pre == "pre|hooked; $(x)||" and post.startswith("post|hooked; $(x)|ok|/vmfs/volumes/backup/hotvcb/")
    assert r.stdout.index("running the pre-backup hook") < r.stdout.index("Creating Snapshot")
    assert r.stdout.index("Removing snapshot") < r.stdout.index("running the post-backup hook")

    host.set_fault("clone.fail_at", "50")  # every disk fails: the VM's backup fails
    r = hotvcb(host, "-m", "hooked; $(x)", "-g", conf)
    assert r.returncode == 6 and _hook_lines(host)[-1].startswith("post|hooked; $(x)|error|")
    host.clear_faults()

    host.set_fault("clone.delay", "20")
    proc = hotvcb_background(host, "-m", "hooked; $(x)", "-g", conf)
    wait_for(lambda: any(n.startswith("hotvcb-") for n in snapshot_names(host, vmid)) and lock_pid(host),
             what="the copy")
    kill(lock_pid(host), signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2, out
    lines = _hook_lines(host)
    assert lines[-2].startswith("pre|") and lines[-1].startswith("post|hooked; $(x)|error|"), lines
    assert snapshot_names(host, vmid) == []


def test_a_failing_or_hanging_pre_hook_skips_the_vm_and_changes_nothing(host, tmp_path):
    from simhost import snapshot_names

    vmid = host.create_vm("guarded", "datastore1", [{"size": "4M"}], power="on")
    host.create_vm("other", "datastore1", [{"size": "4M"}], power="on")
    r = hotvcb(host, "-m", "guarded", "-m", "other", "-g",
               write_conf(host, PRE_BACKUP_HOOK='[ "$HOTVCB_VM" != guarded ] || { echo "app not quiesced"; exit 3; }',
                          POST_BACKUP_HOOK=HOOK))
    assert r.returncode == 4, r.stdout + r.stderr
    assert "pre-backup hook of guarded failed (exit 3): app not quiesced" in r.stdout
    assert backups(host, "guarded") == [] and len(backups(host, "other")) == 1
    assert [l.split("|")[:3] for l in _hook_lines(host)] == [["post", "other", "ok"]], "no post-hook without a pre-hook"
    assert snapshot_names(host, vmid) == []
    r = hotvcb(host, "-m", "guarded", "-g", write_conf(host, PRE_BACKUP_HOOK="sleep 60", HOOK_TIMEOUT="2s"))
    assert r.returncode == 6 and "pre-backup hook of guarded: timed out after 2s" in r.stdout, r.stdout
