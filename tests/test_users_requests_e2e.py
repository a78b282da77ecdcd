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
