"""Reviewer's read-back of today's power take-over and SSH reopen changes (s35e), unit-level with fake hosts:
a refused shutdown whose state query then fails, a gone run's VM judged for BACKUP_POWER_STATE without being
booted, the SSH master reopened by two threads at once, a COLD_SNAPSHOT VM taken over off."""

import logging

import pytest

from hotvcb.errors import CommandFailed, HostError
from hotvcb.jobs import power
from hotvcb.runid import RunId
from hotvcb.settings import Settings
from test_power_down_unit import Shell  # a fake shell: the marker files it writes, in memory


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

    def boot_stamp(self, vm):
        return "one boot"


def test_a_refused_shutdown_stays_refused_when_the_state_query_then_fails(caplog):
    """The refusal is the VM's reason and its marker goes (cleanup must not boot it after the admin switches
    it off), not a HostError of the state query that leaves the marker and keeps the VM `down`."""
    caplog.set_level(logging.INFO)
    host = NoToolsSlowHostd()
    pc = power.PowerControl(host, logging.getLogger("down"), RunId("0123456789ab", "esxi-a", 4242, 1, "esxi-a"))
    with pytest.raises(power.ShutdownRefused, match="VMware Tools is not running"):
        pc.power_down(Vm(), Settings(power_down_timeout=1))
    assert host.shell.files == {}


class MarkedShell(Shell):
    """A VM folder's files, as leftovers reads its power-off marker."""

    def exists(self, path):
        return path in self.files

    def read_regular(self, path, limit):
        return self.files[path]

    def age(self, path):
        return 3600.0


class GoneRunsVm:
    """A VM a gone run (another machine's, so surely gone) asked to shut down; it has gone off since."""

    snapshot_starts_vm = False  # an ESXi VM's: its cold snapshot starts nothing

    def __init__(self):
        self.shell, self.state, self.booted = MarkedShell(), "off", 0
        gone = RunId("fedcba987654", "other-box", 77, 1, "esxi-a")
        self.shell.write_text(power.power_marker(Vm()), gone.text() + "\n")

    def load_vm(self, ref):
        return Vm()

    def power_state(self, vm):
        return self.state

    def power_on(self, vm):
        self.state, self.booted = "on", self.booted + 1

    def boot_stamp(self, vm):
        return "boot %d" % self.booted


def _turn(host, settings, monkeypatch):
    """BackupJob._attempt for one VM of `host`, its _VmBackup a stub: the VM's state when its backup began
    and how many times it was booted before, or None when the turn skipped it."""
    import types

    from hotvcb.jobs import backup
    from hotvcb.model import VmResult
    began = []

    class Backup:
        def __init__(self, *args):
            self.vm = None
            began.append((host.state, host.booted))

        def run(self):
            pass

    monkeypatch.setattr(backup, "_VmBackup", Backup)
    host.shell.now = lambda: __import__("datetime").datetime(2026, 12, 5)
    job = types.SimpleNamespace(_vm_settings=lambda ref: (settings, []), log=logging.getLogger("turn"),
                                power=types.SimpleNamespace(problems={}), host=host, dry_run=False, dead={},
                                run_id=RunId("0123456789ab", "esxi-a", 4242, 1, "esxi-a"), _vm_seconds=[])
    result = VmResult(name="db")
    backup.BackupJob._attempt(job, types.SimpleNamespace(name="db"), False, result, backup._Seen(settings))
    return began[0] if began else None


def test_a_gone_runs_vm_its_backup_powers_down_is_judged_on_without_being_booted(monkeypatch, caplog):
    """BACKUP_POWER_STATE=on with POWER_VM_DOWN_BEFORE_BACKUP: the VM had been on, so it is backed up; its
    backup takes it over off, and it is not booted first only to be shut down again."""
    caplog.set_level(logging.INFO)
    host = GoneRunsVm()
    assert _turn(host, Settings(backup_power_state="on", power_vm_down_before_backup=True), monkeypatch) \
        == ("off", 0)


def test_a_gone_runs_vm_skipped_by_backup_power_state_is_powered_on_again(monkeypatch, caplog):
    """BACKUP_POWER_STATE=off: the VM had been on, so it is skipped, and not left off by the gone run."""
    caplog.set_level(logging.INFO)
    host = GoneRunsVm()
    assert _turn(host, Settings(backup_power_state="off", power_vm_down_before_backup=True), monkeypatch) is None
    assert host.state == "on" and host.booted == 1 and host.shell.files == {}


def test_a_dead_ssh_master_found_by_two_threads_at_once_is_opened_anew_once(tmp_path):
    """The host lock's heartbeat and a --parallel worker both find the master dead: one new master, said and
    counted once; the other thread uses it (not unlinking its fresh socket to start one more)."""
    import threading
    import time

    from hotvcb.sshconnection import SshConnection, SshTarget
    said, started = [], []
    conn = SshConnection(SshTarget("root@esxi-a"), said.append)
    conn._control = str(tmp_path / "master")
    alive = threading.Event()
    conn._socket_answers = alive.is_set

    def start():
        started.append(threading.current_thread().name)
        time.sleep(0.3)  # ssh -f returns once the master listens
        alive.set()

    conn._start_master = start
    threads = [threading.Thread(target=conn._revive, name=n) for n in ("heartbeat", "worker")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(started) == 1 and conn._reopened == 1 and len(said) == 1


def test_a_cold_snapshot_vm_taken_over_off_is_snapshotted_and_powered_on_before_its_copy(caplog):
    """COLD_SNAPSHOT promises minutes of downtime: a VM a gone run left going down, taken over off, is
    snapshotted while off and powered on at once, its disks then copied from the snapshot while it runs; not
    copied whole with the VM down and powered on only at the end."""
    import types

    from hotvcb.jobs.vm_backup import _VmBackup
    caplog.set_level(logging.INFO)
    host = GoneRunsVm()
    log = logging.getLogger("cold")
    one = _VmBackup.__new__(_VmBackup)
    one.host, one.log, one.s, one.skip_power, one.powered_down = host, log, Settings(cold_snapshot=True), False, False
    one.power_failure = ""
    one.job = types.SimpleNamespace(dry_run=False, dead={}, power=power.PowerControl(
        host, log, RunId("0123456789ab", "esxi-a", 4242, 1, "esxi-a")))
    snapped = []
    one._snapshot = lambda vm: snapped.append(host.state)
    one._ready(Vm(), "off")
    assert snapped == ["off"] and host.state == "on" and not one.powered_down and not one.power_failure
    assert host.shell.files == {}  # on again: nothing left for cleanup to power on
