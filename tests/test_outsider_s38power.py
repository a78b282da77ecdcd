"""Outside test, stop 38 (s38power): an outsider (not the author) on POWER_VM_DOWN_BEFORE_BACKUP's boot stamp with
the host's boot time (hosts/esxi_bootstamp.py, hosts/esxi.py host_booted, jobs/powermark.py `stamp <d> host <d>`),
on an esxisim ESXi 7.0.3 host shared by the module (each test its own VMs; tiny disks).

Covered: a run killed before its final power on, then `hotvcb cleanup`, with hostd's runtime.bootTime moved in
ways a host's clock moves it (a host whose clock was behind at its reboot, NTP correcting it later; a bootTime
that shifts within one boot): DEFECT 1. `vim-cmd hostsvc/hostsummary` failing or answering garbage during the
backup and the cleanup (the VM still powered on, no traceback), and failing at a cleanup after the admin's on/off
across a reboot (the admin's off overridden without a word: DEFECT 2); markers of older hotvcb versions (`stamp` without
` host`, the even older `boot ` line) on a rebooted host; vmware.log shapes read by the driver (shorter than the
4 KiB head, exactly 4 KiB, a failed start's lines followed by its vmx's exit lines, bytes not UTF-8 in the head).
"""

import datetime
import os

import pytest

from simhost import hotvcb, needs_root, next_second, power, small_host, vim
from test_outsider_s37power import _conf, _killed_at_power_on, _marker

pytestmark = needs_root

LOG = "/vmfs/volumes/datastore1/%s/vmware.log"


@pytest.fixture(scope="module")
def h(tmp_path_factory):
    host = small_host(tmp_path_factory.mktemp("s38out") / "host")
    yield host
    host.stop()


def _header_time(host, vm):
    """The time the first line of the VM's vmware.log starts with (its last vmx's start), seconds since the epoch."""
    with open(host.real(LOG % vm)) as f:
        stamp = f.readline().split("|", 1)[0]
    return datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def _set_boot_time(host, when):
    """What hostd says as runtime.bootTime from now on (esxisim keeps it in its state)."""
    with host.store.edit() as s:
        s["boot_time"] = when


def _hostsummary_answers(host, script):
    """`vim-cmd hostsvc/hostsummary` made to run `script` (sh) instead; every other call goes to the real tool."""
    path = host.store.p("root", "usr_bin", "upper", "vim-cmd")
    os.rename(path, path + ".hs")
    with open(path, "w") as f:  # the host's path: a gate (test_outsider_s34crash) may wrap this wrapper
        f.write('#!/bin/sh\ncase "$*" in\n  hostsvc/hostsummary*) %s;;\nesac\nexec /bin/vim-cmd.hs "$@"\n' % script)
    os.chmod(path, 0o755)


def _hostsummary_back(host):
    path = host.store.p("root", "usr_bin", "upper", "vim-cmd")
    if os.path.exists(path + ".hs"):
        os.rename(path + ".hs", path)


def _all(r):
    return r.stdout + r.stderr


# -- DEFECT 1: the host's boot is told by a wall-clock time compared to the digit ---------------------------------

@pytest.mark.parametrize("case", ["clock-behind-at-reboot", "boottime-shifted-same-boot"])
def test_killed_runs_vm_is_powered_on_whatever_the_hosts_clock_did(h, tmp_path, case):
    """The admin's nightly backup (POWER_VM_DOWN_BEFORE_BACKUP=1) of `ck` is killed before its final power on: `ck`
    is off, its marker says so. Nobody touches `ck`.
    clock-behind-at-reboot: the host reboots; its clock was behind when it came up (a BIOS clock in local time west
    of UTC, or a drifted RTC, that NTP corrects only after the boot), so hostd's runtime.bootTime is two minutes
    earlier than the start of ck's last vmx (of the boot before).
    boottime-shifted-same-boot: no reboot; NTP steps the host's clock back 30 s, and bootTime, where hostd derives
    it from the clock and the uptime (as Linux's and Darwin's boot times do: rpodgorny/uptimed PR #22 "the reported
    boot time can vary on a single boot, likely caused by things like NTP adjustments"), moves with it.
    `hotvcb cleanup` then leaves `ck` powered off and removes its marker, saying someone powered it on since: the
    same vmx pid (no power on at all) is taken as a power on in "another boot" because its header's time is not
    before the bootTime hostd gives now, and that bootTime's text differs from the marker's.
    Should: power `ck` on (docs/architecture.md: "a reboot alone is no power on"; "the VM is powered on ... only
    while the stamp is unchanged (another process, or the same pid in another boot of the host ...)"), or at
    least not claim a power on nobody made. Cause: hosts/esxi_bootstamp.py _in_boot (the header's wall-clock time
    against the bootTime, `started >= since`) and jobs/powermark.py _another (the boot's text digested and compared
    exactly): a boot should be told by something a clock step does not move (e.g. the bootTime only where the pid
    is the same and the marker's boot is not the current one AND the header postdates the marker's own write)."""
    vm = "ck-" + case[:5]
    vmid = h.create_vm(vm, "datastore1", [{"size": "1M"}], power="on")
    conf = _conf(h, vm)
    out = _killed_at_power_on(h, tmp_path, vm, "before", conf)
    assert "Powered off" in power(h, vmid) and os.path.exists(_marker(h, vm)), out
    assert " host " in open(_marker(h, vm)).read()  # the marker holds the host's boot
    if case == "clock-behind-at-reboot":
        h.reboot()
        _set_boot_time(h, _header_time(h, vm) - 120)
    else:
        _set_boot_time(h, h.boot_time() - 30)
    next_second()
    c = hotvcb(h, "cleanup", "-g", conf)
    assert "Traceback" not in _all(c), _all(c)
    assert "Powered on" in power(h, vmid), _all(c)


# -- hostsummary failing or answering garbage -----------------------------------------------------------------------

@pytest.mark.parametrize("answer", ["garbage", "fails"])
def test_hostsummary_garbage_or_failing_the_vm_still_comes_back(h, tmp_path, answer):
    """hostd answers `hostsvc/hostsummary` with garbage (a bootTime not a time) or fails it (exit 1) during a whole
    backup with POWER_VM_DOWN_BEFORE_BACKUP=1: the backup succeeds, the VM is on again, no marker, no traceback.
    The same during a killed run and its `cleanup`: the VM is powered on (the stamp is then the vmx pid alone)."""
    vm = "hs-" + answer
    vmid = h.create_vm(vm, "datastore1", [{"size": "1M"}], power="on")
    conf = _conf(h, vm)
    script = ("echo '(vim.host.Summary) {'; echo '      bootTime = \"yesterday\",'; echo '}'; exit 0"
              if answer == "garbage" else "echo 'Failed to login: busy' >&2; exit 1")
    _hostsummary_answers(h, script)
    try:
        r = hotvcb(h, "backup", "-m", vm, "-g", conf)
        assert r.returncode == 0, _all(r)
        assert "Traceback" not in _all(r)
        assert "Powered on" in power(h, vmid) and not os.path.exists(_marker(h, vm)), _all(r)
        out = _killed_at_power_on(h, tmp_path, vm, "before", conf)
        assert "Powered off" in power(h, vmid) and os.path.exists(_marker(h, vm)), out
        next_second()
        c = hotvcb(h, "cleanup", "-g", conf)
        assert "Traceback" not in _all(c), _all(c)
        assert "Powered on" in power(h, vmid) and not os.path.exists(_marker(h, vm)), _all(c)
    finally:
        _hostsummary_back(h)


# -- markers of older versions on a rebooted host -------------------------------------------------------------------

def test_older_markers_on_a_rebooted_host(h, tmp_path):
    """A run killed with `om` off; its marker rewritten as s37's hotvcb wrote it (`stamp <digest>`, no ` host`), the
    host rebooted, nobody touched `om`: cleanup powers it on. Killed so again, the marker made an even older
    version's (`boot <text>` second line, no stamp): cleanup powers it on too, whatever it cannot judge."""
    vmid = h.create_vm("om", "datastore1", [{"size": "1M"}], power="on")
    conf = _conf(h, "om")
    for older in ("stamp", "boot"):
        (tmp_path / older).mkdir()
        out = _killed_at_power_on(h, tmp_path / older, "om", "before", conf)
        assert "Powered off" in power(h, vmid) and os.path.exists(_marker(h, "om")), out
        with open(_marker(h, "om")) as f:
            first, second = f.read().split("\n")[:2]
        line = second.split(" host ")[0] if older == "stamp" else "boot vmx pid=2099502"
        with open(_marker(h, "om"), "w") as f:
            f.write(first + "\n" + line + "\n")
        h.reboot()
        next_second()
        c = hotvcb(h, "cleanup", "-g", conf)
        assert "Traceback" not in _all(c), _all(c)
        assert "Powered on" in power(h, vmid) and not os.path.exists(_marker(h, "om")), (older, _all(c))


# -- vmware.log shapes, read by the driver --------------------------------------------------------------------------

HEAD = ("2026-12-06T05:00:00.123Z| vmx| I005: Log for VMware ESX pid=2100941 version=7.0.3 build=build-1 "
        "option=Release\n")
BOOTED = "2026-12-06T04:00:00.250000Z"
FAILED = ("2026-12-06T05:00:01.000Z| vmx| I005: [msg.module.powerOnFailed] Module 'Disk' power on failed.\n"
          "2026-12-06T05:00:01.000Z| vmx| I005: VMX_PowerOn: ModuleTable_PowerOn = 0\n")
EXIT = "2026-12-06T05:00:01.100Z| vmx| I005: Vix: [mainDispatch.c:1171]: VMAutomationPowerOff: Powering off.\n"
FILL = "2026-12-06T05:00:00.500Z| vmx| I005: DICT    scsi0:0.fileName = \"ck-flat.vmdk\" padding padding\n"


def _stamp(folder, data, booted=BOOTED):
    from hotvcb.hosts import esxi_bootstamp
    from hotvcb.localshell import LocalShell
    with open(os.path.join(folder, "vmware.log"), "wb") as f:
        f.write(data)
    return esxi_bootstamp.boot_stamp(LocalShell(), str(folder), lambda: booted)


def test_vmware_log_shapes(tmp_path):
    """The stamp of logs an admin's host may hold: shorter than the 4 KiB head with a failed start in it; exactly
    4096 bytes with the failure at its end; a failed start followed by 30 KiB of the vmx's exit lines; bytes not
    UTF-8 (Latin-1 text in a DICT line) in the first 4 KiB of a 100 KiB log; the header's time not UTC-like
    (no bootTime part then); hostd giving no bootTime (the pid alone)."""
    ok = "vmx pid=2100941; in the host's boot of " + BOOTED
    assert _stamp(tmp_path, (HEAD + FAILED).encode()) == "failed start: " + ok
    exact = HEAD + "x" * (4096 - len(HEAD) - len(FAILED) - 1) + "\n" + FAILED
    assert len(exact.encode()) == 4096
    assert _stamp(tmp_path, exact.encode()) == "failed start: " + ok
    assert _stamp(tmp_path, (HEAD + FILL * 2000 + FAILED + EXIT * 350).encode()) == "failed start: " + ok
    assert _stamp(tmp_path, (HEAD + FILL * 2000 + EXIT * 10).encode()) == ok
    latin = HEAD.encode() + b"2026-12-06T05:00:00.200Z| vmx| I005: DICT displayName = \"M\xfcller\"\n" + \
        (FILL * 1200).encode()
    assert _stamp(tmp_path, latin) == ok
    assert _stamp(tmp_path, (HEAD + FILL).encode(), booted="") == "vmx pid=2100941"
    assert _stamp(tmp_path, ("garbage| vmx| I005: Log for VMware ESX pid=7 version=1 \n").encode()) == "vmx pid=7"


# -- DEFECT 2: a host that cannot say its boot time overrides the admin's off in silence ---------------------------

def test_hostsummary_failing_after_a_reboot_is_said_not_silent(h, tmp_path):
    """`hs2`'s backup (POWER_VM_DOWN_BEFORE_BACKUP=1) is killed before its final power on. The host reboots; the
    admin powers `hs2` on (the host's first vmx of this boot: the very pid its vmx had before) and off again for
    maintenance. When `hotvcb cleanup` runs, hostd answers `hostsvc/hostsummary` with an error (hostd busy; the
    other vim-cmd calls work). cleanup powers `hs2` on, overriding the admin's off, and says nothing about why it
    could not tell: host_booted swallows the error (hosts/esxi.py host_booted: `except HotvcbError: return ""`),
    the stamp falls back to the pid alone, which matches the marker's.
    Should: where the stamp's boot cannot be told, say so as the marker's own "cannot tell" warning does
    (jobs/powermark.py mark_powered_off: "hotvcb cannot tell whether someone powers it on ..."), or leave the VM
    as the admin left it; docs/architecture.md: "A host that cannot say the stamp ... is said in the run's log"."""
    vmid = h.create_vm("hs2", "datastore1", [{"size": "1M"}], power="on")
    conf = _conf(h, "hs2")
    h.reboot()  # this VM the first vmx of the boot: its next power on after a reboot gets the same pid
    vim(h, "vmsvc/power.on", vmid)
    with open(h.real(LOG % "hs2")) as f:
        pid = f.readline().split("pid=")[1].split()[0]
    out = _killed_at_power_on(h, tmp_path, "hs2", "before", conf)
    assert "Powered off" in power(h, vmid) and " host " in open(_marker(h, "hs2")).read(), out
    h.reboot()
    vim(h, "vmsvc/power.on", vmid)
    vim(h, "vmsvc/power.off", vmid)
    with open(h.real(LOG % "hs2")) as f:
        assert f.readline().split("pid=")[1].split()[0] == pid
    next_second()
    _hostsummary_answers(h, "echo 'vim.fault.HostBusy' >&2; exit 1")
    try:
        c = hotvcb(h, "cleanup", "-g", conf)
    finally:
        _hostsummary_back(h)
    assert "Traceback" not in _all(c), _all(c)
    said = any(w in _all(c).lower() for w in ("boot time", "hostsummary", "cannot tell"))
    assert "Powered off" in power(h, vmid) or said, _all(c)


# -- DEFECT 3: libvirt: a `virsh start` cut off by libvirtd's end is taken as libvirt's "no" -------------------------

def test_libvirt_start_cut_off_by_libvirtd_restart_keeps_power_on_asked(tmp_path):
    """A run's final `virsh start web` meets libvirtd's restart (a package update restarting libvirtd): virsh exits
    1 with "error: Disconnected from qemu:///system due to end of file" / "error: End of file while reading data:
    Input/output error". QEMU may well have been started (libvirtd reconnects to it after its restart): no answer,
    not libvirt's no. Since fb62e69 every VirshError is a CommandFailed, so the marker is restamped with the stamp
    that start left (a successful "starting up" line). The admin finds `web` on, switches it off; the next run (or
    cleanup) sees the same stamp and powers it on again over the admin's off.
    Should: keep `power on asked` for a virsh error that is no answer from libvirt (docs/architecture.md: "one that
    got no answer (hostd down, the link lost, a timeout) may still start the VM, so its marker keeps saying `power
    on asked`"), as HostdDown does for vim-cmd (jobs/powermark.py power_on_marked; hosts/virsh.py Virsh._run)."""
    from hotvcb.jobs.powermark import POWER_ON_ASKED
    from hotvcb.shell import Completed

    second, powers_on = virsh_start_answered(tmp_path, Completed(
        ["virsh", "start", "web"], 1, "error: Disconnected from qemu:///system due to end of file\n"
                                      "error: End of file while reading data: Input/output error\n"))
    # the admin switched web off again (no stamp change): the next run must leave it off
    assert second == POWER_ON_ASKED and powers_on is False, second


def virsh_start_answered(tmp_path, answer):
    """A killed run's libvirt VM `web`, its final `virsh start` begun by libvirtd (QEMU started, a new stamp) and
    answered by virsh as `answer` (a Completed): (the marker's second line after it, whether the next run powers
    web on, the admin having switched it off since)."""
    from hotvcb.jobs.powermark import mark_powered_off, power_marker, power_on_marked, restore_power
    from restorerecords import dead_pid
    from test_fix_s38power import LibvirtStampHost
    from test_readback_s36boot import Log, _vm, me, ours

    class Started(LibvirtStampHost):
        def power_on(self, vm):
            self.stamp = "2026-12-06 05:00:01.000+0000: starting up libvirt version: 9.0.0"  # QEMU started
            self.virsh.power("start", vm.name)

    host = Started(answer)
    host.stamp = "2026-12-06 04:00:00.000+0000: starting up libvirt version: 9.0.0"
    vm = _vm(tmp_path)
    mark_powered_off(host, vm, ours(dead_pid()), Log())
    with pytest.raises(Exception):
        power_on_marked(host, vm, Log())
    return open(power_marker(vm)).read().split("\n")[1], restore_power(host, vm, Log(), me())
