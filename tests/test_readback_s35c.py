"""Code review, session 35 (jobs/power.py): a hard power off that got no answer is no refusal, and a dry run
foresees the refused shutdown of a VM_SHUTDOWN_ORDER VM without VMware Tools.

#1: the shutdown request already told "no answer" (HostdDown, ConnectionLost: it may have reached the host)
from the host's no (CommandFailed); the hard power off did not: a link dropped under `vim-cmd vmsvc/power.off`
was taken for the host's refusal, and with the shutdown refused too (no VMware Tools) the run said "it is left
running" and removed the power-off marker, while hostd went on to power the VM off: nothing powered it on.
#3: the dry run asked for VMware Tools only where the VM's own settings power it down; a VM of
VM_SHUTDOWN_ORDER without them was "would shut X down", OK, exit 0, and the real run failed it (exit 1).
"""

import logging

import pytest

from hotvcb.errors import CommandFailed, ConnectionLost, HostdDown, TimeoutExpired
from hotvcb.jobs import power
from hotvcb.model import VmRef
from hotvcb.runid import RunId
from hotvcb.settings import Settings
from simhost import hotvcb, needs_root, write_conf
from test_power_down_unit import Shell  # a fake shell: the marker files it writes, in memory

TOOLS = ("Cannot complete operation because VMware Tools is not running in this virtual machine.")


class Host:
    """A running VM without VMware Tools (its shutdown request refused); `power_off` raises `lost` after the
    host did (`reached`) or did not power the VM off."""

    kind, powers_on = "esxi", True

    def __init__(self, lost, reached):
        self.shell, self.state, self.lost, self.reached, self.tools = Shell(), "on", lost, reached, False

    def shutdown(self, vm):
        raise CommandFailed(["/bin/vim-cmd", "vmsvc/power.shutdown"], 0, TOOLS, "ToolsUnavailable")

    def power_off(self, vm):
        if self.reached:  # hostd got the request and goes on with it; the answer is lost on the way back
            self.state = "off"
        raise self.lost

    def power_state(self, vm):
        return self.state

    def boot_stamp(self, vm):
        return "one boot"

    def guest_tools(self, vm):
        return self.tools

    def load_vm(self, ref):
        return Vm()

    def list_vms(self):
        return [VmRef(name="db", vmid="1", vmx_path=Ref.vmx_path)]


class Ref:
    vmx_path = "/vmfs/volumes/datastore1/db/db.vmx"


class Vm:
    name, folder, ref = "db", "/vmfs/volumes/datastore1/db", Ref()


class Log(logging.LoggerAdapter):
    """The run's log (runlog.RunLog) into caplog: its dry-run lines at INFO."""

    def dryrun(self, message):
        self.info(message)


def _control(host, dry_run=False):
    return power.PowerControl(host, Log(logging.getLogger("down"), {}), RunId("0123456789ab", "esxi-a", 4242, 1, "esxi-a"),
                              dry_run=dry_run)


LOST = ConnectionLost("lost the SSH connection to root@esxi-a: Connection reset by peer")
HOSTD = HostdDown(["/bin/vim-cmd", "vmsvc/power.off"], 0, "Connect to localhost failed: Connection failure",
                  "Connect to localhost failed: Connection failure")
HARD = Settings(enable_hard_power_off=True, iter_to_wait_shutdown=0, power_down_timeout=0)


@pytest.fixture(autouse=True)
def _fast(monkeypatch, caplog):
    monkeypatch.setattr(power, "POLL", 0.01)
    caplog.set_level(logging.INFO)


@pytest.mark.parametrize("lost", [LOST, HOSTD], ids=["ssh link dropped", "hostd down"])
def test_a_hard_power_off_that_got_no_answer_and_went_through_leaves_the_vm_to_be_powered_on(lost, caplog):
    """#1, the admin's night: no VMware Tools, ENABLE_HARD_POWER_OFF=1, the link drops under power.off and
    hostd powers the VM off. The run must see it off and keep its marker (it is powered on after its backup),
    not say "left running"."""
    host = Host(lost, reached=True)
    _control(host).power_down(Vm(), HARD)
    assert host.shell.files, "the power-off marker went: nothing would power the VM on"
    assert "left running" not in caplog.text and "db is powered off" in caplog.text


@pytest.mark.parametrize("lost", [LOST, HOSTD], ids=["ssh link dropped", "hostd down"])
def test_a_hard_power_off_that_got_no_answer_is_waited_for_and_keeps_the_marker(lost, caplog):
    """#1: the VM still on when the unanswered power off is known: hostd may yet do it, so the run waits until
    POWER_DOWN_TIMEOUT (a timeout, not ShutdownRefused) and the marker stays for the run that finds it off."""
    host = Host(lost, reached=False)
    with pytest.raises(TimeoutExpired):
        _control(host).power_down(Vm(), HARD)
    assert host.shell.files, "the power-off marker went: nothing would power the VM on if hostd powers it off"
    assert "left running" not in caplog.text


def test_a_hard_power_off_the_host_refuses_is_still_a_refusal(caplog):
    """The control: the host's own no to both requests leaves the VM running and no marker."""
    host = Host(CommandFailed(["/bin/vim-cmd", "vmsvc/power.off"], 1, "Powering off VM:\nPower off failed"),
                reached=False)
    with pytest.raises(power.ShutdownRefused, match="VMware Tools is not running.*Power off failed"):
        _control(host).power_down(Vm(), HARD)
    assert host.shell.files == {}


def test_a_shutdown_refused_because_the_vm_went_off_meanwhile_is_no_refusal(caplog):
    """#1's other face: power.shutdown fails (InvalidPowerState) because the VM went off between the look
    and the request; without ENABLE_HARD_POWER_OFF it is off as wanted, not "left running"."""
    host = Host(LOST, reached=False)

    def went_off(vm):
        host.state = "off"
        raise CommandFailed(["/bin/vim-cmd", "vmsvc/power.shutdown"], 0, "The attempted operation cannot be "
                            "performed in the current state (Powered off).", "InvalidPowerState")
    host.shutdown = went_off
    _control(host).power_down(Vm(), Settings(power_down_timeout=0))
    assert host.shell.files and "left running" not in caplog.text


def _order(name="db", **keys):
    return Settings(vm_shutdown_order=(name,), **keys)


def test_a_dry_run_fails_a_backed_up_vm_of_the_shutdown_order_without_tools(caplog):
    """#3: the real run's shutdown request is refused (no Tools, no hard power off): the VM is failed, so the
    dry run fails it too, in the real run's words, and does not plan to start it again."""
    pc = _control(Host(LOST, reached=False), dry_run=True)
    pc.shutdown_in_order([VmRef(name="db", vmid="1", vmx_path=Ref.vmx_path)], _order())
    assert "db" in pc.problems and "ENABLE_HARD_POWER_OFF" in pc.problems["db"], pc.problems
    assert "VMware Tools is not running" in pc.problems["db"] and pc.ordered_down == []
    assert "would shut db down" not in caplog.text


@pytest.mark.parametrize("tools, hard", [(True, False), (False, True), (None, False)])
def test_a_dry_run_passes_a_vm_of_the_shutdown_order_the_real_run_can_shut_down(tools, hard, caplog):
    """#3's controls: Tools running, a hard power off to follow, or a host that cannot tell (None)."""
    host = Host(LOST, reached=False)
    host.tools = tools
    pc = _control(host, dry_run=True)
    pc.shutdown_in_order([VmRef(name="db", vmid="1", vmx_path=Ref.vmx_path)], _order(enable_hard_power_off=hard))
    assert pc.problems == {} and pc.ordered_down == ["db"] and "would shut db down" in caplog.text


def test_a_dry_run_warns_of_an_order_vm_it_does_not_back_up_without_tools(caplog):
    """#3: a VM of the order that this run does not back up: the real run only warns, so does the dry run."""
    pc = _control(Host(LOST, reached=False), dry_run=True)
    pc.shutdown_in_order([], _order())
    assert pc.problems == {} and pc.ordered_down == [] and "this run does not back it up" in caplog.text


@needs_root
def test_a_dry_run_of_a_shutdown_order_vm_without_tools_exits_as_the_real_run(host):
    """#3 on esxisim: VM_SHUTDOWN_ORDER names `legacy` (no VMware Tools), no hard power off, no
    POWER_VM_DOWN_BEFORE_BACKUP: the real run fails it; the dry run must exit with the real run's code."""
    host.create_vm("legacy", "datastore1", [{"size": "1M"}], power="on", tools=False)
    conf = write_conf(host, VM_SHUTDOWN_ORDER="legacy", POWER_DOWN_TIMEOUT="3s")
    dry = hotvcb(host, "-m", "legacy", "-g", conf, "-d", "dryrun")
    real = hotvcb(host, "-m", "legacy", "-g", conf)
    assert real.returncode != 0, real.stdout[-2000:]
    assert dry.returncode == real.returncode, dry.stdout[-2000:]
    assert "VMware Tools is not running" in dry.stdout, dry.stdout[-2000:]
