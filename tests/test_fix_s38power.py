"""Stop 38 (s38power): the power-off marker's boot stamp, on what was known and not fixed after s37.

1. pid reuse: a host reboot may give a VM's next vmx the pid its last one had, so an admin's on and off across a
   reboot went unseen: the ESXi stamp now holds the host's boot time where the vmx started in the host's current
   boot (hostd's runtime.bootTime); old markers (no host part) read as before.
2. libvirt: a `virsh start` libvirt answered no (the domain's disk missing) was taken as no answer, its marker
   left saying "power on asked"; it is now restamped as ESXi's answered refusal is.
3. libvirt: a log rotated between a start's `starting up` and its `shutting down, reason=failed` hid the failure.
4. ESXi: boot_stamp read up to 512 KiB of vmware.log at every call (over SSH too): now its head for the pid and
   its tail for a failed start's verdict.
"""

import calendar
import os
import time
from types import SimpleNamespace

import pytest
from restorerecords import dead_pid

from hotvcb.errors import TimeoutExpired
from hotvcb.hosts.base import FAILED_START, NO_BOOT_STAMP, powered_on_by
from hotvcb.hosts.libvirt import LibvirtHost
from hotvcb.hosts.virsh import Virsh
from hotvcb.shell import Completed
from hotvcb.jobs.powermark import (POWER_ON_ASKED, booted_since, mark_powered_off, power_marker, power_on_marked,
                                   restore_power)
from hotvcb.localshell import LocalShell
from simhost import hotvcb, needs_root, next_second, power, vim
from test_outsider_s37power import _conf, _killed_at_power_on, _marker
from test_readback_s36boot import HEAD7, HEAD8, FAILED7, FAILED8, Log, StampHost, _vm, me, ours


# -- 1. a host reboot may give the next vmx the last one's pid --------------------------------------------------

BOOT1 = "2026-12-06T04:00:00.250000Z"
BOOT2 = "2026-12-06T06:00:00.500000Z"


def esxi_driver(booted):
    """hosts/esxi.py's EsxiHost whose host says it booted at `booted` (hostd's runtime.bootTime; "": it cannot
    say), its shell this machine's, each VM alone in its folder."""
    from hotvcb.hosts.esxi import EsxiHost

    driver = EsxiHost.__new__(EsxiHost)
    driver.shell = LocalShell()
    driver._files = SimpleNamespace(list_files=lambda folder: ["web.vmx"])
    driver.host_booted = lambda: booted
    return driver


def header(when, pid=2100941):
    return "%s| vmx| I005: Log for VMware ESX pid=%d version=7.0.3 build=build-24784741 option=Release\n" % (when, pid)


def test_esxi_stamp_tells_the_same_pid_in_another_host_boot(tmp_path):
    """The vmx of web's last power on had pid 2100941 in the host's boot of 04:00; the host reboots at 06:00 and the
    admin's power on gets the same pid: its stamp is another. A vmx of an earlier boot than the host's current
    one (the host rebooted, web not powered on since) is no power on: its stamp is the pid alone, as an old
    marker's."""
    vm = _vm(tmp_path)
    (tmp_path / "vmware.log").write_text(header("2026-12-06T05:00:00.123Z"))
    before = esxi_driver(BOOT1).boot_stamp(vm)
    # rebooted since: that vmx is of an earlier boot
    assert _unlogged(esxi_driver(BOOT2).boot_stamp(vm)) == "vmx pid=2100941"
    (tmp_path / "vmware.log").write_text(header("2026-12-06T06:05:00.123Z"))
    after = esxi_driver(BOOT2).boot_stamp(vm)
    assert before != after and powered_on_by(after)
    assert _unlogged(esxi_driver("").boot_stamp(vm)) == "vmx pid=2100941"  # hostd cannot say its boot time


def _unlogged(stamp):
    """An ESXi stamp without its log's first line (base.LOG_BEGUN: the driver always adds the header it read)."""
    from hotvcb.hosts.base import LOG_BEGUN
    return stamp.partition(LOG_BEGUN)[0]


class RebootingHost(StampHost):
    """An ESXi host whose VM's vmware.log is in `tmp_path` and whose boot time the test sets."""

    def __init__(self, tmp_path):
        super().__init__()
        self.driver = esxi_driver(BOOT1)
        self.vm = _vm(tmp_path)
        self.log_path = tmp_path / "vmware.log"
        self.log_path.write_text(header("2026-12-06T05:00:00.123Z"))

    def reboot(self, at):
        self.driver.host_booted = lambda: at

    def boot_stamp(self, vm):
        return self.driver.boot_stamp(vm)


def test_admins_on_off_across_a_host_reboot_with_the_same_pid_stands(tmp_path):
    """A run killed with web off; the host reboots; the admin powers web on (the same vmx pid as before the
    reboot) and off again: the admin's off stands. A reboot alone (no power on) is none: web is powered on."""
    host = RebootingHost(tmp_path)
    mark_powered_off(host, host.vm, ours(dead_pid()), Log())
    host.reboot(BOOT2)
    marker = open(power_marker(host.vm)).read()
    assert booted_since(host, host.vm, marker) is False
    host.log_path.write_text(header("2026-12-06T06:05:00.123Z"))
    assert booted_since(host, host.vm, marker) is True
    assert restore_power(host, host.vm, Log(), me()) is False and host.powered_on == []


def test_an_old_marker_without_the_host_boot_reads_as_before(tmp_path):
    """A marker of s37's hotvcb: `stamp <digest of "vmx pid=...">`: the same pid now (in the host's current boot) is
    no power on; another pid is one."""
    from hotvcb.jobs.powermark import _digest

    host = RebootingHost(tmp_path)
    old = ours(dead_pid()).text() + "\nstamp %s\n" % _digest("vmx pid=2100941")
    assert booted_since(host, host.vm, old) is False
    host.log_path.write_text(header("2026-12-06T05:30:00.123Z", pid=2100999))
    assert booted_since(host, host.vm, old) is True


@pytest.fixture
def fresh_host(tmp_path_factory):
    from esxisim import Host
    h = Host.create(str(tmp_path_factory.mktemp("s38power") / "host"), version="7.0.3", crond=False)
    h.add_datastore("datastore1", 1 << 30, vmfs=6)
    h.add_datastore("backup", 1 << 30, vmfs=6)
    yield h
    h.stop()


def _pid(host, vm):
    with open(host.real("/vmfs/volumes/datastore1/%s/vmware.log" % vm)) as f:
        return f.readline().split("pid=")[1].split()[0]


def test_esxisim_hostsummary_says_the_hosts_boot_time_which_a_reboot_moves(fresh_host):
    """`vim-cmd hostsvc/hostsummary`'s runtime.bootTime (HostRuntimeInfo.bootTime, UTC to the microsecond) as the
    driver reads it: the host's creation, then its reboot; the pid count starts over at the reboot."""
    from hotvcb.hosts.vimcmd import parse_boot_time

    host = fresh_host
    first = parse_boot_time(vim(host, "hostsvc/hostsummary"))
    assert first and first.endswith("Z") and abs(calendar.timegm(time.strptime(first[:19], "%Y-%m-%dT%H:%M:%S"))
                                                 - host.boot_time()) < 2, first
    one = host.create_vm("one", "datastore1", [{"size": "1M"}], power="on")
    pid = _pid(host, "one")
    time.sleep(0.01)
    host.reboot()
    assert parse_boot_time(vim(host, "hostsvc/hostsummary")) > first
    vim(host, "vmsvc/power.on", one)
    assert _pid(host, "one") == pid


@needs_root
def test_esxisim_killed_run_host_reboot_admins_on_off_with_the_same_pid_stands(fresh_host, tmp_path):
    """esxisim: rb's backup (POWER_VM_DOWN_BEFORE_BACKUP) is killed before its final power on; the host reboots;
    the admin powers rb on (its first vmx of this boot: the pid its vmx had before) and off for maintenance:
    `hotvcb cleanup` leaves it off. Killed so again, the host rebooted and rb not touched since: cleanup powers
    it on."""
    host = fresh_host
    rb = host.create_vm("rb", "datastore1", [{"size": "1M"}], power="on")
    conf = _conf(host, "rb")
    pid = _pid(host, "rb")
    for admin in (True, False):
        (tmp_path / str(admin)).mkdir()
        out = _killed_at_power_on(host, tmp_path / str(admin), "rb", "before", conf)
        assert "Powered off" in power(host, rb) and os.path.exists(_marker(host, "rb")), out
        host.reboot()
        if admin:
            vim(host, "vmsvc/power.on", rb)
            vim(host, "vmsvc/power.off", rb)
            assert _pid(host, "rb") == pid
        next_second()
        c = hotvcb(host, "cleanup", "-g", conf)
        assert "Traceback" not in c.stdout + c.stderr, c.stdout + c.stderr
        assert ("Powered off" if admin else "Powered on") in power(host, rb), c.stdout
        assert not os.path.exists(_marker(host, "rb")), c.stdout
        if admin:
            vim(host, "vmsvc/power.on", rb)


# -- 2. libvirt: a start libvirt answered no is restamped ---------------------------------------------------------

class VirshShell(LocalShell):
    """`virsh start` answered with `answer` (a Completed), or raising it (no answer: a timeout)."""

    def __init__(self, answer):
        super().__init__()
        self.answer = answer

    def run(self, argv, **kw):
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


class LibvirtStampHost(StampHost):
    """libvirt's power on (virsh start through `shell`), whose vmx-like QEMU start leaves a new stamp first."""

    kind = "libvirt"

    def __init__(self, answer):
        super().__init__()
        self.virsh = Virsh(VirshShell(answer))

    def power_on(self, vm):
        self.stamp = FAILED_START + "2026-12-06 05:00:01.000+0000: starting up libvirt version: 9.0.0"
        self.virsh.power("start", vm.name)


@pytest.mark.parametrize("answer,asked", [
    (Completed(["virsh", "start", "web"], 1, "error: Failed to start domain 'web'\nerror: Cannot access storage "
               "file '/var/lib/libvirt/images/web.qcow2': No such file or directory\n"), False),
    (TimeoutExpired("virsh start web", 120), True),
    (Completed(["virsh", "start", "web"], 1, "error: failed to connect to the hypervisor\nerror: Failed to connect "
               "socket to '/var/run/libvirt/libvirt-sock': Connection refused\n"), False),
    (Completed(["virsh", "start", "web"], 1, "error: Failed to start domain 'web'\nerror: internal error: "
               "connection closed due to keepalive timeout\n"), True)],
    ids=["refused", "timeout", "libvirtd-unreached", "libvirtd-lost"])
def test_libvirt_start_answered_no_is_restamped_unanswered_keeps_power_on_asked(tmp_path, answer, asked):
    """The marker of a `virsh start` libvirt refused records the stamp its failed start left (the next run powers
    the VM on if the admin does not); one that timed out keeps `power on asked`."""
    host = LibvirtStampHost(answer)
    vm = _vm(tmp_path)
    mark_powered_off(host, vm, me(), Log())
    with pytest.raises(Exception):
        power_on_marked(host, vm, Log())
    second = open(power_marker(vm)).read().split("\n")[1]
    assert (second == POWER_ON_ASKED) is asked and second.startswith("stamp ") is not asked, second


# -- 3. libvirt: a log rotated between a start and its failure -------------------------------------------------

@pytest.mark.parametrize("rotated", [".0", ".1"])
def test_libvirt_failed_start_split_by_a_log_rotation_is_told(tmp_path, monkeypatch, rotated):
    """virtlogd (`.log.0`) or logrotate (`.log.1`) rotated web's log between libvirt's `starting up` and its
    `shutting down, reason=failed`: the start failed all the same. A later clean stop in the new log is not a
    failure."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    logs = tmp_path / "libvirt" / "qemu" / "log"
    logs.mkdir(parents=True)
    start = "2026-12-06 05:00:01.000+0000: starting up libvirt version: 9.0.0, qemu version: 7.2.0\n"
    (logs / ("web.log" + rotated)).write_text(start + "LC_ALL=C /usr/bin/qemu-system-x86_64 -name guest=web\n")
    (logs / "web.log").write_text("qemu-system-x86_64: -blockdev ...: Failed to get \"write\" lock\n"
                                  "2026-12-06 05:00:01.500+0000: shutting down, reason=failed\n")
    host, vm = LibvirtHost(LocalShell(), uri="qemu:///session"), _vm(tmp_path)
    assert host.boot_stamp(vm) == FAILED_START + start.strip()
    (logs / "web.log").write_text("2026-12-06 06:00:00.000+0000: shutting down, reason=shutdown\n")
    assert host.boot_stamp(vm) == start.strip()


# -- 4. ESXi: vmware.log's head and tail, not half a MiB -----------------------------------------------------------

class CountingShell(LocalShell):
    """LocalShell counting the bytes its reads of the host's files bring back."""

    def __init__(self):
        super().__init__()
        self.read = 0

    def read_regular(self, path, limit):
        text = super().read_regular(path, limit)
        self.read += len(text.encode("utf-8", "surrogateescape"))
        return text

    def run(self, argv, **kw):
        done = super().run(argv, **kw)
        self.read += len(done.output.encode("utf-8", "surrogateescape"))
        return done

    def open_binary(self, path):
        data = super().open_binary(path).read()
        self.read += len(data)
        import io
        return io.BytesIO(data)


def _filler(size, head):
    line = "2026-12-06T05:00:01.000Z| vcpu-0| I005: Guest: some driver text that fills the log up\n"
    return head + line * ((size - len(head)) // len(line))


@pytest.mark.parametrize("head,failed", [(HEAD7, FAILED7), (HEAD8, FAILED8)], ids=["7.x", "8.x"])
def test_esxi_boot_stamp_reads_the_logs_head_and_tail_only(tmp_path, head, failed):
    """A running VM's 512 KiB vmware.log: boot_stamp brings back at most 80 KiB of it (it read all 512). A start that
    failed late in a 600 KiB log (more than the old 512 KiB cap) is told all the same."""
    driver = esxi_driver("")
    driver.shell = CountingShell()
    vm = _vm(tmp_path)
    (tmp_path / "vmware.log").write_text(_filler(512 << 10, head))
    started = time.monotonic()
    assert _unlogged(driver.boot_stamp(vm)) == "vmx pid=2100941"
    print("512 KiB log: %d bytes read, %.1f ms" % (driver.shell.read, (time.monotonic() - started) * 1000))
    assert driver.shell.read <= 80 << 10, driver.shell.read
    (tmp_path / "vmware.log").write_text(_filler(600 << 10, head) + failed
                                         + "2026-12-06T05:00:02.000Z| vmx| I005: VMX exit (0).\n")
    assert _unlogged(driver.boot_stamp(vm)) == FAILED_START + "vmx pid=2100941"
    (tmp_path / "vmware.log").write_text("")
    assert driver.boot_stamp(vm) == NO_BOOT_STAMP  # emptied: no vmx wrote it since (outsider_s38power2 DEFECT 1)


# -- s38power2: the host's boot told whatever its clock did; hostsummary's failure said; libvirtd lost --------------

def test_a_stamp_taken_with_the_vm_off_is_judged_by_its_logs_header(tmp_path):
    """The marker's stamp restamped once web is off records its vmware.log's header: the host reboots with its
    clock behind (bootTime before that header's time), or bootTime shifts within one boot: the same header is no
    power on. The admin's power on after a reboot (the same pid, a new header) is one, even where hostd cannot say
    its boot time then."""
    from hotvcb.jobs.powermark import restamp_power_mark
    host = RebootingHost(tmp_path)
    mark_powered_off(host, host.vm, ours(dead_pid()), Log())
    restamp_power_mark(host, host.vm, Log())
    marker = open(power_marker(host.vm)).read()
    assert " log " in marker
    for booted in ("2026-12-06T04:58:00.000000Z", "2026-12-06T03:59:30.250000Z", ""):
        host.reboot(booted)
        assert booted_since(host, host.vm, marker) is False, booted
    host.log_path.write_text(header("2026-12-06T06:05:00.123Z"))
    host.reboot("")
    assert booted_since(host, host.vm, marker) is True


def test_a_stamp_taken_while_the_vm_ran_tells_boots_within_the_slack_as_one(tmp_path):
    """A marker whose stamp was taken as the shutdown was asked (the run killed before it saw web off: a rotation
    may change the header meanwhile, so no header is recorded): a bootTime shifted by 30 s (a clock step) is the
    same boot; the same pid in a boot hours later is another power on. A marker of adaf125's hotvcb (the boot's
    digest) compares the digest exactly."""
    from hotvcb.jobs.powermark import _digest
    host = RebootingHost(tmp_path)
    mark_powered_off(host, host.vm, ours(dead_pid()), Log())
    marker = open(power_marker(host.vm)).read()
    assert " log " not in marker and " host " + BOOT1 in marker
    host.reboot("2026-12-06T03:59:30.250000Z")
    assert booted_since(host, host.vm, marker) is False
    host.reboot(BOOT2)
    host.log_path.write_text(header("2026-12-06T06:05:00.123Z"))
    assert booted_since(host, host.vm, marker) is True
    older = ours(dead_pid()).text() + "\nstamp %s host %s\n" % (_digest("vmx pid=2100941"), _digest(BOOT1))
    assert booted_since(host, host.vm, older) is True
    host.reboot(BOOT1)
    assert booted_since(host, host.vm, older) is False


def test_esxi_host_booted_says_once_that_it_cannot_tell(tmp_path):
    """hostsummary failing (hostd busy): host_booted gives "" and says so in the run's log, once per run."""
    import io
    from hotvcb.errors import CommandFailed
    from hotvcb.hosts.esxi import EsxiHost
    from hotvcb.runlog import RunLog
    out = io.StringIO()
    driver = EsxiHost(LocalShell(), RunLog("info", stream=out))

    def busy(args, **kw):
        raise CommandFailed(["vim-cmd"] + args, 1, "vim.fault.HostBusy")
    driver._vim = busy
    assert driver.host_booted() == "" and driver.host_booted() == ""
    assert out.getvalue().count("cannot tell when the host last booted") == 1, out.getvalue()
