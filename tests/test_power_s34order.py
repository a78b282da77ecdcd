"""VM_SHUTDOWN_ORDER with a VM this run does not back up, and how a vim-cmd refusal that exits 0 is worded
(esxisim: a VM without VMware Tools, whose `power.shutdown` the host refuses at once, exit 0)."""

import json

from simhost import hotvcb, needs_root, write_conf

from hotvcb.errors import CommandFailed


@needs_root
def test_a_vm_of_the_order_not_backed_up_this_run_is_not_said_to_be_left_out_of_the_backups(host, tmp_path):
    """`other` (no VMware Tools) is in VM_SHUTDOWN_ORDER but not selected with -m: its refused shutdown is a
    warning naming the order, not an error saying it 'will not be backed up' (it never was to be), and the
    run's one selected VM is backed up: exit 0."""
    host.create_vm("app", "datastore1", [{"size": "1M"}], power="on")
    host.create_vm("other", "datastore1", [{"size": "1M"}], power="on", tools=False)
    conf = write_conf(host, POWER_VM_DOWN_BEFORE_BACKUP=1, ITER_TO_WAIT_SHUTDOWN="1s", POWER_DOWN_TIMEOUT="3s",
                      VM_SHUTDOWN_ORDER="app,other")
    report = tmp_path / "report.json"
    r = hotvcb(host, "-m", "app", "-g", conf, "--json-report", report)
    assert r.returncode == 0, r.stdout + r.stderr
    [line] = [ln for ln in r.stdout.splitlines() if "other:" in ln]
    assert "-- warning:" in line and "VM_SHUTDOWN_ORDER" in line and "will not be backed up" not in line, line
    assert [v["vm"] for v in json.loads(report.read_text())["vms"]] == ["app"]


@needs_root
def test_the_hosts_refusal_is_worded_from_its_output_not_its_exit_code(host, tmp_path):
    """vim-cmd exits 0 when it refuses power.shutdown: '(exit 0)' beside 'failed' reads as a contradiction."""
    host.create_vm("legacy", "datastore1", [{"size": "1M"}], power="on", tools=False)
    conf = write_conf(host, POWER_VM_DOWN_BEFORE_BACKUP=1, ITER_TO_WAIT_SHUTDOWN="1s", POWER_DOWN_TIMEOUT="3s")
    r = hotvcb(host, "-m", "legacy", "-g", conf)
    assert r.returncode == 6, r.stdout + r.stderr
    assert "power.shutdown failed: Cannot complete operation because VMware Tools is not running" in r.stdout
    assert "(exit 0)" not in r.stdout


def test_a_command_failed_with_an_exit_code_still_names_it():
    assert "failed (exit 1): Power off failed" in str(CommandFailed(["/bin/vim-cmd", "vmsvc/power.off"], 1,
                                                                       "Power off failed"))
