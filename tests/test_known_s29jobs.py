"""Known behaviours, stop 29 (jobs): outside testers' notes pinned through the CLI, one test per defect.

Tiny disks; one simulated host per test.
"""

import os

from simhost import hotvcb, needs_root, write_conf


# -- 2. ghettoVCB's empty lines in per-VM files warn every night ---------------------------------------------------

@needs_root
def test_a_per_vm_file_copied_from_ghettovcb_conf_with_empty_run_wide_keys_does_not_warn(host, tmp_path):
    """The admin's per-VM files are copies of ghettoVCB.conf, which ships `VM_SHUTDOWN_ORDER=` and
    `VM_STARTUP_ORDER=` (empty: nothing asked). hotvcb warned "applies to the whole run, not one VM" for
    each, every night, in every mail: a warning about nothing teaches the admin to skip warnings. An empty
    run-wide key asks nothing of the VM and is not warned about; a set one still is."""
    host.create_vm("db", "datastore1", [{"size": "1M"}], power="on")
    confdir = tmp_path / "vmconf"
    confdir.mkdir()
    (confdir / "db").write_text("VM_BACKUP_ROTATION_COUNT=2\nVM_SHUTDOWN_ORDER=\nVM_STARTUP_ORDER=\"\"\n"
                                "EMAIL_LOG=\n")
    conf = write_conf(host)
    r = hotvcb(host, "-m", "db", "-g", conf, "-c", confdir)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "whole run" not in r.stdout + r.stderr, r.stdout + r.stderr
    (confdir / "db").write_text("VM_SHUTDOWN_ORDER=db\n")
    r = hotvcb(host, "-m", "db", "-g", conf, "-c", confdir)
    assert "VM_SHUTDOWN_ORDER applies to the whole run" in r.stdout + r.stderr, r.stdout + r.stderr
