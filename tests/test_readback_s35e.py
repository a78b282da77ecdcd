"""Reviewer's read-back of today's power take-over and SSH reopen changes (s35e), unit-level with fake hosts:
a refused shutdown whose state query then fails, a gone run's VM judged for BACKUP_POWER_STATE without being
booted, the SSH master reopened by two threads at once, a COLD_SNAPSHOT VM taken over off."""

import logging

import pytest

from hotvcb.errors import CommandFailed, HostError
from hotvcb.jobs import power
from hotvcb.runid import RunId
from hotvcb.settings import Settings


class Shell:
    def __init__(self):
        self.files = {}

    def write_text(self, path, text):
        self.files[path] = text

    def remove_tree(self, path):
        self.files.pop(path, None)


class Ref:
    vmx_path = "/vmfs/volumes/datastore1/db/db.vmx"


class Vm:
    name, folder, ref = "db", "/vmfs/volumes/datastore1/db", Ref()


class NoToolsSlowHostd:
    """No VMware Tools (the shutdown request refused), and hostd slow a moment just as the state is asked."""

    def __init__(self):
        self.shell = Shell()

    def shutdown(self, vm):
        raise CommandFailed(["/bin/vim-cmd", "vmsvc/power.shutdown"], 0, "Cannot complete operation because "
                            "VMware Tools is not running in this virtual machine.", "ToolsUnavailable")

    def power_state(self, vm):
        raise HostError("vim-cmd vmsvc/power.getstate: hostd is busy")


def test_a_refused_shutdown_stays_refused_when_the_state_query_then_fails(caplog):
    """The refusal is the VM's reason and its marker goes (cleanup must not boot it after the admin switches
    it off), not a HostError of the state query that leaves the marker and keeps the VM `down`."""
    caplog.set_level(logging.INFO)
    host = NoToolsSlowHostd()
    pc = power.PowerControl(host, logging.getLogger("down"), RunId("0123456789ab", "esxi-a", 4242, 1, "esxi-a"))
    with pytest.raises(power.ShutdownRefused, match="VMware Tools is not running"):
        pc.power_down(Vm(), Settings(power_down_timeout=1))
    assert host.shell.files == {}
