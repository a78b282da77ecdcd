"""Reviewer's findings on jobs/power.py: a VM_SHUTDOWN_ORDER VM adopted from a gone run stays down until the
order starts it (no leftover check powers it on before its own backup); hostd not answering a shutdown is no
refusal (the request may have reached the guest); a refused shutdown is hard powered off without waiting out
ITER_TO_WAIT_SHUTDOWN, since no guest was asked to shut down."""

import logging
import os
import time
from types import SimpleNamespace

from hotvcb.errors import CommandFailed, HostdDown
from hotvcb.jobs import power
from hotvcb.jobs.powermark import mark_powered_off, power_marker, restore_power
from hotvcb.jobs.power import PowerControl
from hotvcb.model import VmRef
from hotvcb.runid import RunId
from hotvcb.settings import Settings
from simhost import hotvcb, needs_root, power as power_state_of, write_conf

from test_leftovers_unit import Log, OrderHost, dead_pid, me, ours
from test_power_down_unit import Host, Vm, control  # noqa: F401  (control: a fixture)


def test_an_adopted_order_vm_is_not_powered_on_by_its_own_backups_leftover_check(tmp_path):
    """db, off with a gone run's marker, is adopted by the order; its backup's leftover check
    (vm_leftovers.clear_dead_runs -> restore_power) must not power it on: it is backed up off, and started
    with the order afterwards."""
    vm = SimpleNamespace(name="db", folder=str(tmp_path), ref=SimpleNamespace(vmx_path=str(tmp_path / "db.vmx")))
    host, log = OrderHost(vm), Log()
    mark_powered_off(host, vm, ours(dead_pid()), Log())
    run = me()
    pc = PowerControl(host, log, run)
    s = Settings(vm_shutdown_order=["db"], vm_startup_order=["db"])
    pc.shutdown_in_order([VmRef("2", "db", vm.ref.vmx_path)], s)
    assert restore_power(host, vm, log, run) is False
    assert host.powered_on == [] and host.power_state(vm) == "off", log.lines
    pc.start_in_order(s)
    assert host.powered_on == ["db"] and not os.path.exists(power_marker(vm)), log.lines
    assert not any("may still go off" in line for line in log.lines), log.lines


def test_an_adopted_order_vm_keeps_the_gone_runs_marker_in_a_dry_run(tmp_path):
    """A dry run touches nothing, the marker neither."""
    vm = SimpleNamespace(name="db", folder=str(tmp_path), ref=SimpleNamespace(vmx_path=str(tmp_path / "db.vmx")))
    host, log = OrderHost(vm), Log()
    log.dryrun = log.info
    gone = ours(dead_pid())
    mark_powered_off(host, vm, gone, Log())
    before = open(power_marker(vm)).read()
    pc = PowerControl(host, log, me(), dry_run=True)
    pc.shutdown_in_order([VmRef("2", "db", vm.ref.vmx_path)], Settings(vm_shutdown_order=["db"]))
    assert open(power_marker(vm)).read() == before and host.powered_on == []


class HostdSilent(Host):
    """hostd does not answer the shutdown request, which reached the guest all the same: it goes off."""

    def shutdown(self, vm):
        self.state = "off"
        raise HostdDown(["/bin/vim-cmd", "vmsvc/power.shutdown", "2"], 0, "", "Failed to login")


def test_hostd_not_answering_a_shutdown_is_no_refusal(control, caplog, monkeypatch):  # noqa: F811
    monkeypatch.setattr(power, "POLL", 0.01)
    host = HostdSilent()
    control(host).power_down(Vm(), Settings(power_down_timeout=1))
    assert "db is powered off" in caplog.text and "refused" not in caplog.text
    assert "hostd" in caplog.text and host.shell.files  # its marker stays: powered on after the copy


class Clock:
    """time.monotonic and time.sleep without waiting: sleep moves the clock on."""

    def __init__(self):
        self.now = 1000.0

    def monotonic(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


class NoTools(Host):
    """No VMware Tools: the shutdown is refused; the hard power off works."""

    def __init__(self, clock):
        super().__init__(shutdown_refused=True)
        self.clock, self.off_at = clock, None

    def power_off(self, vm):
        self.off_at, self.state = self.clock.now, "off"


def test_a_refused_shutdown_is_hard_powered_off_at_once(control, caplog, monkeypatch):  # noqa: F811
    """No guest was asked to shut down, so ITER_TO_WAIT_SHUTDOWN has nothing to wait for."""
    clock = Clock()
    monkeypatch.setattr(power, "time", clock)
    host = NoTools(clock)
    control(host).power_down(Vm(), Settings(enable_hard_power_off=True, iter_to_wait_shutdown=3,
                                            power_down_timeout=10))
    assert host.off_at is not None and host.off_at - 1000.0 < 5, host.off_at
    assert "db is powered off" in caplog.text


@needs_root
def test_an_adopted_order_vm_backed_up_this_run_is_backed_up_off(host, tmp_path):
    """esxisim: `db`, of VM_SHUTDOWN_ORDER and backed up this run, is off with the power-off marker of a gone run
    (killed while its guest went down). It is copied off (no snapshot), then powered on with the order."""
    vmid = host.create_vm("db", "datastore1", [{"size": "1M"}], power="off")
    marker = host.real("/vmfs/volumes/datastore1/db/.hotvcb-powered-off.db.vmx")
    with open(marker, "w") as f:  # pid 0: no process has it; esxi01: the simulated host's machine name
        f.write(RunId("0000000000dd", "esxi01", 0, int(time.time()) - 7200, "h").text() + "\n")
    old = time.time() - 3600
    os.utime(marker, (old, old))
    conf = write_conf(host, VM_SHUTDOWN_ORDER="db", VM_STARTUP_ORDER="db", POWER_DOWN_TIMEOUT="3s")
    r = hotvcb(host, "-m", "db", "-g", conf)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "powered it off for a backup and is gone; it is off" in out and "Creating Snapshot" not in out, out
    assert "may still go off" not in out and "did not finish; powering it on" not in out, out
    assert power_state_of(host, vmid) == "Powered on" and not os.path.exists(marker), out


@needs_root
def test_a_dry_run_tells_the_real_runs_story_of_an_adopted_order_vm(host, tmp_path):
    """The same `db` in a dry run: it says once what the real run does (backed up off, powered on with the order
    after the backups), never also that its backup's leftover check would power it on first; nothing changes."""
    vmid = host.create_vm("db", "datastore1", [{"size": "1M"}], power="off")
    marker = host.real("/vmfs/volumes/datastore1/db/.hotvcb-powered-off.db.vmx")
    with open(marker, "w") as f:
        f.write(RunId("0000000000dd", "esxi01", 0, int(time.time()) - 7200, "h").text() + "\n")
    old = time.time() - 3600
    os.utime(marker, (old, old))
    before = open(marker).read()
    conf = write_conf(host, VM_SHUTDOWN_ORDER="db", VM_STARTUP_ORDER="db", POWER_DOWN_TIMEOUT="3s")
    r = hotvcb(host, "-m", "db", "-g", conf, "-d", "dryrun")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "would power it on after the backups" in out, out
    assert "did not finish; would power it on" not in out, out
    assert power_state_of(host, vmid) == "Powered off" and open(marker).read() == before, out
