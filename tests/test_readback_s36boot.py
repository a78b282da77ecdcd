"""The power-off marker's boot stamp (jobs/leftovers.py), on what a review found: a stamp gone with its log (deleted,
rotated away) is no power on; a vmware.log rotated while the guest shuts down is no power on either (the stamp is
read again once off); a marker that cannot be removed is a warning, not a failed backup; a cold snapshot drops the
stamp only where the snapshot starts the VM; a log that cannot be read is a stamp not told."""

import os
import socket
from types import SimpleNamespace

import pytest
from restorerecords import dead_pid

from hotvcb.errors import CommandFailed, ConnectionLost, HostdDown, HostError, TimeoutExpired
from hotvcb.hosts.base import FAILED_START, NO_BOOT_STAMP
from hotvcb.hosts.libvirt import LibvirtHost
from hotvcb.jobs.powermark import (POWER_ON_ASKED, booted_since, mark_powered_off, power_marker, power_on_marked,
                                   restore_power)
from hotvcb.jobs.power import PowerControl
from hotvcb.jobs.vm_backup import _VmBackup
from hotvcb.localshell import LocalShell
from hotvcb.runid import RunId
from hotvcb.settings import Settings
from hotvcb.vmx import VmxFile


class Log:
    def __init__(self):
        self.lines = []

    def info(self, m):
        self.lines.append(m)

    warning = error = info


HOST = "thishost"


def ours(pid):
    """A run of this machine and host that is gone (`pid` dead)."""
    return RunId("0123456789ab", socket.gethostname(), pid, 1, HOST)


def me():
    return RunId.new().on_host(HOST)


class StampHost:
    """A VM that is off, whose boot stamp is `stamp` (changed by the test), powered on by `power_on`."""

    powers_on, kind = True, "esxi"

    def __init__(self, stamp="vmx pid=1", shell=None):
        self.shell, self.stamp, self.powered_on = shell or LocalShell(), stamp, []

    def power_state(self, vm):
        return "off"

    def power_on(self, vm):
        self.powered_on.append(vm.name)

    def boot_stamp(self, vm):
        if isinstance(self.stamp, Exception):
            raise self.stamp
        return self.stamp


def _vm(tmp_path, name="web"):
    return SimpleNamespace(name=name, folder=str(tmp_path), vmx=VmxFile(""),  # as load_vm read it
                           ref=SimpleNamespace(vmx_path=str(tmp_path / (name + ".vmx"))))


def _dead_runs_marker(tmp_path, host):
    vm = _vm(tmp_path)
    mark_powered_off(host, vm, ours(dead_pid()), Log())
    return vm


def test_a_stamp_gone_with_its_log_is_no_power_on_the_vm_is_powered_on(tmp_path):
    """DEFECT 1: libvirt's log emptied by logrotate's copytruncate, vmware*.log deleted by the admin: the VM's stamp
    is none now. A power on always leaves one, so none is "cannot tell": the dead run's VM is powered on."""
    host = StampHost()
    vm = _dead_runs_marker(tmp_path, host)
    host.stamp = NO_BOOT_STAMP
    assert booted_since(host, vm, open(power_marker(vm)).read()) is False
    assert restore_power(host, vm, Log(), me()) is True and host.powered_on == ["web"]


@pytest.mark.parametrize("rotated", [".0", ".1"])
def test_libvirt_tells_a_domains_last_start_from_its_rotated_log(tmp_path, monkeypatch, rotated):
    """DEFECT 1: virtlogd rotates `<name>.log` to `.log.0`, logrotate to `.log.1` (copytruncate leaves the log
    empty): the start line there is still the domain's last, its stamp unchanged."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    logs = tmp_path / "libvirt" / "qemu" / "log"
    logs.mkdir(parents=True)
    log = logs / "web.log"
    log.write_text("2026-12-05 21:59:38.267+0000: starting up libvirt version: 9.0.0, qemu version: 7.2.0\n"
                   "LC_ALL=C /usr/bin/qemu-system-x86_64 -name guest=web\n")
    host = LibvirtHost(LocalShell(), uri="qemu:///session")
    vm = _vm(tmp_path)
    stamp = host.boot_stamp(vm)
    assert stamp != NO_BOOT_STAMP
    os.rename(str(log), str(log) + rotated)
    log.write_text("2026-12-05 22:10:00.000+0000: shutting down, reason=shutdown\n")
    assert host.boot_stamp(vm) == stamp
    os.remove(str(log) + rotated)
    assert host.boot_stamp(vm) == NO_BOOT_STAMP


class RotatingHost(StampHost):
    """A running VM whose vmware.log starts anew (log.rotateSize) while its guest shuts down: no power on."""

    def __init__(self):
        super().__init__("vmx pid=1 log 1")
        self.state, self.looks = "on", 0

    def shutdown(self, vm):
        pass

    def power_state(self, vm):
        self.looks += 1
        if self.looks == 2:
            self.stamp, self.state = "vmx pid=1 log 2", "off"
        return self.state


def test_a_vmware_log_rotated_while_the_guest_shuts_down_is_no_power_on(tmp_path):
    """DEFECT 2: the stamp read at the shutdown request is gone by the time the VM is off (a new vmware.log without
    a power on); the marker is stamped again once off, so a run killed then leaves a VM the next run powers on."""
    host, vm = RotatingHost(), _vm(tmp_path)
    PowerControl(host, Log(), me()).power_down(vm, Settings(power_down_timeout=1))
    with open(power_marker(vm)) as f:
        lines = f.read().split("\n", 1)
    with open(power_marker(vm), "w") as f:  # the run killed: its marker is a dead run's
        f.write(ours(dead_pid()).text() + "\n" + lines[1])
    host.state = "off"
    assert restore_power(host, vm, Log(), me()) is True and host.powered_on == ["web"]


class ReadOnlyShell(LocalShell):
    def remove_tree(self, path):
        raise HostError("cannot remove %s: Read-only file system" % path)


def test_a_marker_that_cannot_be_removed_is_a_warning_not_a_failure(tmp_path):
    """DEFECT 3: the VM was powered on since the dead run's marker, which a read-only datastore keeps: one
    warning says so, and the cleanup or backup that found it goes on."""
    host, log = StampHost(shell=ReadOnlyShell()), Log()
    vm = _dead_runs_marker(tmp_path, host)
    host.stamp = "vmx pid=2"
    assert restore_power(host, vm, log, me()) is False and host.powered_on == []
    assert [l for l in log.lines if "could not remove its power-off marker" in l], log.lines
    assert [l for l in log.lines if "powered on since the run that left it off" in l], log.lines


class ColdHost(StampHost):
    def __init__(self, starts):
        super().__init__()
        self.snapshot_starts_vm = starts


@pytest.mark.parametrize("starts", [False, True])
def test_a_cold_snapshot_drops_the_stamp_only_where_it_starts_the_vm(tmp_path, starts):
    """DEFECT 4: ESXi's cold snapshot starts nothing: its marker keeps the stamp through it (a run killed then, the
    VM later started and stopped by the admin, stays off); libvirt's starts the domain paused: none then."""
    host, vm = ColdHost(starts), _vm(tmp_path)
    mark_powered_off(host, vm, me(), Log())
    seen = []
    backup = _VmBackup.__new__(_VmBackup)
    backup.host, backup.log = host, Log()
    backup.job = SimpleNamespace(power=SimpleNamespace(restore_on=lambda vm: True))
    backup._snapshot = lambda vm: seen.append(open(power_marker(vm)).read().count("\n"))
    backup._snapshot_and_boot(vm, None)
    assert seen == [1 if starts else 2]


def test_a_log_that_cannot_be_read_is_a_stamp_not_told(tmp_path):
    """DEFECT 5: libvirt's log unreadable (an OSError from the local shell): the marker is written without a stamp,
    and a stamped one is judged not powered on since, as before stamps, and says why."""
    host, log = StampHost(stamp=PermissionError(13, "Permission denied")), Log()
    vm = _vm(tmp_path)
    mark_powered_off(host, vm, me(), Log())
    assert os.path.exists(power_marker(vm))
    marker = "r-x\nstamp " + "0" * 32 + "\n"
    assert booted_since(host, vm, marker, log) is False
    assert [l for l in log.lines if "cannot tell whether it was powered on since" in l], log.lines


def test_the_wording_of_a_vm_powered_on_since_is_neutral(tmp_path):
    """DEFECT 5: our own run may have powered it on and died before removing the marker: no "someone else"."""
    host, log = StampHost(), Log()
    vm = _dead_runs_marker(tmp_path, host)
    host.stamp = "vmx pid=2"
    assert restore_power(host, vm, log, me()) is False
    assert log.lines and not [l for l in log.lines if "someone else" in l], log.lines
    assert not os.path.exists(power_marker(vm))


def test_the_drivers_say_whether_their_snapshot_starts_the_vm():
    from hotvcb.hosts.esxi import EsxiHost
    from hotvcb.hosts.qemu import QemuHost

    assert (LibvirtHost.snapshot_starts_vm, EsxiHost.snapshot_starts_vm, QemuHost.snapshot_starts_vm) == (
        True, False, False)



# -- s37 read-back: a start that failed is no power on; ESXi 8's vmware.log header ---------------------------------

def esxi_stamp(tmp_path, log_text):
    """hosts/esxi.py boot_stamp of a VM alone in `tmp_path` whose vmware.log is `log_text`, without the header line
    it ends with since s38power2 (base.LOG_BEGUN: what a stamp taken with the VM off is judged by first)."""
    from hotvcb.hosts.base import LOG_BEGUN
    from hotvcb.hosts.esxi import EsxiHost

    (tmp_path / "vmware.log").write_text(log_text)
    driver = SimpleNamespace(shell=LocalShell(), _files=SimpleNamespace(list_files=lambda folder: ["web.vmx"]),
                             host_booted=lambda: "")  # hostd not asked: the stamp is the pid alone
    return EsxiHost.boot_stamp(driver, _vm(tmp_path)).partition(LOG_BEGUN)[0]  # type: ignore[arg-type]


HEAD7 = "2026-12-06T05:00:00.123Z| vmx| I005: Log for VMware ESX pid=2100941 version=7.0.3 build=build-24784741 option=Release\n"
HEAD8 = "2026-12-06T05:00:00.123Z In(05) vmx - Log for VMware ESX pid=2100941 version=8.0.2 build=build-22380479 option=Release\n"
FAILED7 = ("2026-12-06T05:00:00.200Z| vmx| I005: [msg.module.powerOnFailed] Module 'Disk' power on failed.\n"
           "2026-12-06T05:00:00.200Z| vmx| I005: VMX_PowerOn: ModuleTable_PowerOn = 0\n")
FAILED8 = ("2026-12-06T05:00:00.200Z In(05) vmx - Module 'Disk' power on failed.\n"
           "2026-12-06T05:00:00.200Z In(05) vmx - VMX_PowerOn: ModuleTable_PowerOn = 0\n")


@pytest.mark.parametrize("head,failed", [(HEAD7, FAILED7), (HEAD8, FAILED8)], ids=["7.x", "8.x"])
def test_esxi_tells_a_start_that_failed_and_reads_the_pid_of_either_header(tmp_path, head, failed):
    """HIGH 2: ESXi 8 writes the RFC 5424 style header (`<time> In(05) vmx - Log for VMware ESX pid=...`): the stamp
    is the pid, not the whole line with its time (a log rotated by size would pass for a power on). HIGH 1: a
    vmware.log whose vmx says its power on failed (a disk locked during the copy) is a FAILED_START; a guest's text
    the vmx logs for it is not."""
    from hotvcb.hosts.base import FAILED_START, powered_on_by

    assert esxi_stamp(tmp_path, head) == "vmx pid=2100941"
    assert esxi_stamp(tmp_path, head + failed) == FAILED_START + "vmx pid=2100941"
    assert not powered_on_by(esxi_stamp(tmp_path, head + failed))
    guest = head.replace("Log for VMware ESX pid=2100941 version", "Guest: Module 'Disk' power on failed. x")
    assert esxi_stamp(tmp_path, head + guest.split("\n")[0] + "\n") == "vmx pid=2100941"


def test_a_start_that_failed_is_no_power_on_live_run_and_gone_runs_alike(tmp_path):
    """HIGH 1: the admin powered web on during its backup and the power on failed (the vmx started, a new
    vmware.log, and gave up on a locked disk): the admin's last word was "on". The live run's end powers web on
    (it used to leave it OFF, marker dropped, "powered on by someone"), and so does a gone run's marker."""
    from hotvcb.hosts.base import FAILED_START

    host, log = StampHost(), Log()
    vm = _vm(tmp_path)
    mark_powered_off(host, vm, me(), Log())
    host.stamp = FAILED_START + "vmx pid=2"
    assert PowerControl(host, log, me()).restore_on(vm) is True and host.powered_on == ["web"], log.lines
    assert not [l for l in log.lines if "powered on by someone" in l], log.lines
    host = StampHost()
    vm = _dead_runs_marker(tmp_path, host)
    host.stamp = FAILED_START + "vmx pid=2"
    assert restore_power(host, vm, Log(), me()) is True and host.powered_on == ["web"]


def test_libvirt_tells_a_start_that_failed(tmp_path, monkeypatch):
    """HIGH 1 on libvirt: a start libvirt stopped as failed (`shutting down, reason=failed`, qemuProcessStop's line
    after qemuProcessStart gave up) is a FAILED_START; the next start that is not stopped so is a power on."""
    from hotvcb.hosts.base import FAILED_START

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    logs = tmp_path / "libvirt" / "qemu" / "log"
    logs.mkdir(parents=True)
    start = "2026-12-06 05:00:0%d.000+0000: starting up libvirt version: 9.0.0, qemu version: 7.2.0\n"
    failed = start % 1 + "qemu-system-x86_64: -blockdev ...: Failed to get \"write\" lock\n" \
        "2026-12-06 05:00:01.500+0000: shutting down, reason=failed\n"
    (logs / "web.log").write_text(failed)
    host, vm = LibvirtHost(LocalShell(), uri="qemu:///session"), _vm(tmp_path)
    assert host.boot_stamp(vm) == FAILED_START + start.strip() % 1
    (logs / "web.log").write_text(failed + start % 2)
    assert host.boot_stamp(vm) == start.strip() % 2


class FailingOnHost(StampHost):
    """A power on that fails with `err`, its vmx started (a new stamp) where the host answered."""

    def __init__(self, err):
        super().__init__()
        self.err = err

    def power_on(self, vm):
        self.stamp = "vmx pid=2"
        raise self.err


@pytest.mark.parametrize("err,asked", [
    (CommandFailed(["vim-cmd", "vmsvc/power.on"], 1, "Powering on VM:\nPower on failed\n"), False),
    (HostdDown(["vim-cmd", "vmsvc/power.on"], 0, "", "Failed to login"), True),
    (ConnectionLost("the SSH link dropped"), True),
    (TimeoutExpired("vim-cmd vmsvc/power.on", 60), True)], ids=["refused", "hostd", "link", "timeout"])
def test_a_power_on_that_got_no_answer_keeps_power_on_asked(tmp_path, err, asked):
    """MEDIUM 4: only a power on the host answered no is restamped (its failed start's stamp is ours); one that got
    no answer may still start the VM after the run is gone: its marker keeps saying `power on asked`."""
    host = FailingOnHost(err)
    vm = _vm(tmp_path)
    mark_powered_off(host, vm, me(), Log())
    with pytest.raises(type(err)):
        power_on_marked(host, vm, Log())
    second = open(power_marker(vm)).read().split("\n")[1]
    assert (second == POWER_ON_ASKED) is asked and (second.startswith("stamp ") is not asked), second


def test_a_marker_removed_by_hand_is_said_once_as_the_run_powers_the_vm_on(tmp_path):
    """LOW 9: the live run's marker removed by hand during the backup: restore_on powers the VM on and says the
    marker is gone once (it also warned that it "could not update its boot stamp", which it never needed)."""
    host, log = StampHost(), Log()
    vm = _vm(tmp_path)
    mark_powered_off(host, vm, me(), Log())
    os.remove(power_marker(vm))
    assert PowerControl(host, log, me()).restore_on(vm) is True and host.powered_on == ["web"]
    said = [l for l in log.lines if "marker" in l or "could not" in l or "cannot" in l]
    assert len(said) == 1 and "gone" in said[0], log.lines


class KilledAtPowerOnHost(StampHost):
    """The power on reaches the host (a new vmx, its stamp `started`) and the run is killed before its answer."""

    def __init__(self, started):
        super().__init__()
        self.started = started

    def power_on(self, vm):
        self.stamp = self.started
        raise KeyboardInterrupt  # the run's end: its marker stays as it is


@pytest.mark.parametrize("started,powered", [("vmx pid=2", False), (FAILED_START + "vmx pid=2", True)],
                         ids=["started", "failed"])
def test_a_run_killed_after_its_power_on_request_the_admins_off_since_stands(tmp_path, started, powered):
    """MEDIUM 3: a run killed after its power on request, the VM up; the admin powers it off before the next run,
    which saw `power on asked` and off and powered it on over the admin's off. The marker records the stamp before
    the request: a start that succeeded since means the admin's off stands; one that failed is powered on."""
    host = KilledAtPowerOnHost(started)
    vm = _vm(tmp_path)
    mark_powered_off(host, vm, ours(dead_pid()), Log())
    with pytest.raises(KeyboardInterrupt):
        power_on_marked(host, vm, Log())
    assert open(power_marker(vm)).read().split("\n")[1] == POWER_ON_ASKED
    host.powered_on, host.power_on = [], StampHost.power_on.__get__(host)  # the next run's power on works
    assert restore_power(host, vm, Log(), me()) is powered and host.powered_on == (["web"] if powered else [])
    assert not os.path.exists(power_marker(vm))
