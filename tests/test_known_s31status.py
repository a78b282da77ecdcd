"""Testers' notes (session 31) on `hotvcb status` and how runs end, each pinned through the public command
line: VMs a job skips by its power-state rule, a failed run and a good one in the same second, and how many
host commands status's last-run lookups cost."""

import glob
import json
import os
import time

import pytest

from simhost import VOLUME, hotvcb, needs_root, sealed, write_conf


def _checks(host, *args):
    r = hotvcb(host, "status", "--json", *args)
    return r, {c["name"]: c for c in json.loads(r.stdout)["checks"] if c["kind"] == "backup"}


# -- 1. status judges the VMs its job skips by BACKUP_POWER_STATE as skipped, not "never backed up" ------------

@needs_root
@pytest.mark.parametrize("how", ["config", "option"])
def test_status_says_a_vm_skipped_by_the_power_state_rule_is_skipped_not_crit(host, how):
    """A nightly job with BACKUP_POWER_STATE=on (or `backup --power-state on`) backs up the running VMs and
    leaves the powered-off one alone on purpose; `status` with the same config called the skipped VM CRIT
    "never backed up", so the monitor paged every night for a choice the admin made. The skipped VM is said
    to be skipped by the rule, not CRIT; the VM the job backs up is judged as always."""
    host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    host.create_vm("spare", "datastore1", [{"size": "1M"}], power="off")
    keys = {"BACKUP_POWER_STATE": "on"} if how == "config" else {}
    option = ["--power-state", "on"] if how == "option" else []
    conf = write_conf(host, **keys)
    r = hotvcb(host, "backup", "-a", "-g", conf, *option)
    assert r.returncode == 0 and len(sealed(host, "web")) == 1 and not sealed(host, "spare"), r.stdout + r.stderr
    r, checks = _checks(host, "-g", conf, *option)
    spare = checks["spare"]
    assert spare["severity"] == "OK" and "skipped" in spare["message"] and "BACKUP_POWER_STATE=on" in \
        spare["message"] and "powered off" in spare["message"], spare
    assert checks["web"]["severity"] == "OK", checks
    assert r.returncode == 0, r.stdout
    # a VM the rule would back up and that has no backup is still CRIT
    host.set_power(host.vmid_by_name("spare"), "on")
    r, checks = _checks(host, "-g", conf, *option)
    assert checks["spare"]["severity"] == "CRIT" and "never backed up" in checks["spare"]["message"], checks
