"""POWER_VM_DOWN_BEFORE_BACKUP's shutdown (jobs/power.py power_down), without a host: a shutdown request the
host refuses is not waited out and leaves no power-off marker; a hard power off the host refuses because the
guest has just gone off by itself is no failure (tests/test_outsider_s34shapes.py runs them on esxisim)."""

import logging
import time

import pytest

from hotvcb.errors import CommandFailed, TimeoutExpired
from hotvcb.jobs import power
from hotvcb.runid import RunId
from hotvcb.settings import Settings


class Shell:
    def __init__(self):
        self.files = {}

    def write_text(self, path, text):
        self.files[path] = text

    def read_regular(self, path, limit):  # the power-off marker, stamped again once the VM is off
        return self.files[path][:limit]

    def remove_tree(self, path):
        self.files.pop(path, None)


class Host:
    """A running VM whose hard power off the host refuses (vim-cmd's `Power off failed`); with
    `off_after_power_off` because the guest went off just then."""

    def __init__(self, shutdown_refused=False, off_after_power_off=False):
        self.shell, self.state = Shell(), "on"
        self.shutdown_refused, self.off_after_power_off = shutdown_refused, off_after_power_off

    def shutdown(self, vm):
        if self.shutdown_refused:
            raise CommandFailed(["/bin/vim-cmd", "vmsvc/power.shutdown"], 0, "Cannot complete operation because "
                                "VMware Tools is not running in this virtual machine.", "ToolsUnavailable")

    def power_off(self, vm):
        if self.off_after_power_off:  # the guest's own shutdown ended as the power off was sent
            self.state = "off"
        raise CommandFailed(["/bin/vim-cmd", "vmsvc/power.off"], 1, "Powering off VM:\nPower off failed")

    def power_state(self, vm):
        return self.state

    def boot_stamp(self, vm):
        return "one boot"


class Ref:
    vmx_path = "/vmfs/volumes/datastore1/db/db.vmx"


class Vm:
    name, folder, ref = "db", "/vmfs/volumes/datastore1/db", Ref()


@pytest.fixture
def control(caplog):
    caplog.set_level(logging.INFO)
    return lambda host: power.PowerControl(host, logging.getLogger("down"),
                                           RunId("0123456789ab", "esxi-a", 4242, 1, "esxi-a"))


def test_a_refused_shutdown_is_not_waited_out_and_leaves_no_marker(control):
    host = Host(shutdown_refused=True)
    start = time.monotonic()
    with pytest.raises(power.ShutdownRefused, match="VMware Tools is not running"):
        control(host).power_down(Vm(), Settings(power_down_timeout=1))
    assert time.monotonic() - start < 5 and host.shell.files == {}


def test_a_guest_gone_off_as_the_hard_power_off_is_sent_is_no_failure(control, caplog, monkeypatch):
    monkeypatch.setattr(power, "POLL", 0.01)
    host = Host(off_after_power_off=True)
    control(host).power_down(Vm(), Settings(enable_hard_power_off=True, iter_to_wait_shutdown=0,
                                            power_down_timeout=1))
    assert "hard power off failed" not in caplog.text and "went off by its own shutdown" in caplog.text
    assert "db is powered off" in caplog.text and host.shell.files  # its marker stays: powered on after the copy


def test_a_refused_shutdown_whose_hard_power_off_is_refused_too_is_not_waited_out_and_leaves_no_marker(
        control, caplog, monkeypatch):
    """No VMware Tools and a host that will not power the VM off either: no request of the run can take it
    down, so cleanup must not later power it on after the admin switches it off (no marker)."""
    monkeypatch.setattr(power, "POLL", 0.01)
    host = Host(shutdown_refused=True)
    start = time.monotonic()
    with pytest.raises(power.ShutdownRefused, match="VMware Tools is not running.*Power off failed"):
        control(host).power_down(Vm(), Settings(enable_hard_power_off=True, iter_to_wait_shutdown=0,
                                                power_down_timeout=1))
    assert time.monotonic() - start < 5 and host.shell.files == {}


def test_a_vm_seen_off_and_found_on_again_keeps_no_marker(control, caplog, monkeypatch):
    """Someone powered the VM on during its backup: no request of the run is pending on it, so cleanup must
    not boot it later after the admin shuts it down (its marker goes), and the run says so."""
    monkeypatch.setattr(power, "POLL", 0.01)
    host = Host()
    pc = control(host)
    host.shutdown = lambda vm: setattr(host, "state", "off")
    pc.power_down(Vm(), Settings(power_down_timeout=1))
    assert host.shell.files  # held off by this run
    host.state = "on"  # HA, or a colleague
    assert pc.restore_on(Vm()) is True
    assert host.shell.files == {} and "powered on again by someone else" in caplog.text
    assert "may still go off" not in caplog.text


def test_a_guest_never_seen_off_keeps_its_marker(control, caplog, monkeypatch):
    """A timed-out shutdown: the guest may still finish it after the run, so the marker stays."""
    monkeypatch.setattr(power, "POLL", 0.01)
    host = Host()
    pc = control(host)
    with pytest.raises(TimeoutExpired):
        pc.power_down(Vm(), Settings(power_down_timeout=0))
    assert pc.restore_on(Vm()) is True
    assert host.shell.files and "may still go off" in caplog.text
