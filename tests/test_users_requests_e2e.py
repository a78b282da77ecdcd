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
