"""Who owns a leftover (jobs/leftovers.py): another host's -partial folder on a shared volume, with clocks that
disagree; a record of this machine judged by its pid as the locks judge theirs (runid.running), where that
pid may be a dead run's reused by another hotvcb, or cannot tell (another pid namespace, hidden by /proc)."""

import io
import os
import socket
import time
from contextlib import contextmanager
from datetime import datetime
from types import SimpleNamespace

import pytest
from pidviews import hide_from_proc, hotvcb_holder, other_namespace, start_of  # noqa: F401  (a live hotvcb)
from restorerecords import dead_pid

from hotvcb import interrupt
from hotvcb.commands.common import lock_host
from hotvcb.commands.runtarget import Target
from hotvcb.errors import CommandFailed, Interrupted
from hotvcb.hosts.base import FAILED_START
from hotvcb.jobs import backup_end
from hotvcb.jobs.backup import BackupJob
from hotvcb.jobs.leftovers import remove_our_snapshots
from hotvcb.jobs.powermark import mark_powered_off, power_marker, restore_power
from hotvcb.jobs.ownership import NONE_DEAD
from hotvcb.jobs.partials import remove_partials
from hotvcb.jobs.power import PowerControl
from hotvcb.jobs.snapshot_asked import await_snapshot, mark_snapshot_asked, mark_snapshot_made, snapshot_marker
from hotvcb.jobs.vm_backup import _VmBackup
from hotvcb.localshell import LocalShell
from hotvcb.model import Snapshot, Vm, VmRef, VmResult
from hotvcb.runid import RunId, parse
from hotvcb.runlog import RunLog
from hotvcb.settings import Settings
from hotvcb.store.lock import LOCK_NAME, STALE_AFTER, HostLock
from fakelog import Log

HOST = "thishost"  # the host id this test's runs work on (and hold the lock of)


class SkewedShell(LocalShell):
    """This host's clock runs `skew` seconds ahead of the NFS server that stamps mtimes."""

    def __init__(self, skew: float):
        self.skew = skew

    def age(self, path):
        age = super().age(path)
        return None if age is None else age + self.skew


def _partial(volume, owner_age, record=None):
    folder = volume / "web" / "web-2026-01-01_00-00-00-partial"
    folder.mkdir(parents=True)
    owner = folder / ".hotvcb-owner"
    owner.write_text((record or RunId("0123456789ab", "esxi-b", 4242, 1, "otherhost")).text() + "\n")
    past = time.time() - owner_age
    os.utime(str(owner), (past, past))
    return folder


def test_a_clock_ten_minutes_ahead_does_not_make_a_live_folder_of_another_host_look_dead(tmp_path):
    folder = _partial(tmp_path, owner_age=5)  # heartbeat 5 s ago, by the server's clock
    me = RunId.new().on_host("thishost")
    assert remove_partials(SkewedShell(600), str(tmp_path), "web", Log(), me) == 0
    assert folder.exists()
    assert not [f for f in os.listdir(str(tmp_path / "web")) if f.startswith(".hotvcb-clock")], "probe removed"


def test_a_folder_whose_heartbeat_stopped_is_dead_whatever_the_clocks(tmp_path):
    folder = _partial(tmp_path, owner_age=2 * STALE_AFTER)
    me = RunId.new().on_host("thishost")
    assert remove_partials(SkewedShell(-120), str(tmp_path), "web", Log(), me) == 1
    assert not folder.exists()


# --- a record of this machine, on this host: judged by its pid -------------------------------------------------

def ours(pid, pid_start=None, pid_ns=None):
    """Another run's record, of this machine and this host (so of a run whose lock we now hold)."""
    return RunId("0123456789ab", socket.gethostname(), pid, 1, HOST, pid_start, pid_ns=pid_ns)


def me():
    return RunId.new().on_host(HOST)


def owner(view, holder):
    """The record of a run whose pid is `holder` (a live hotvcb) or a dead one, as `view` says."""
    if view == "its own":
        return ours(holder, start_of(holder))
    if view == "reused":  # the writer died and its pid is another hotvcb's now, started later
        return ours(holder, start_of(holder) - 1)
    if view == "older":  # an older hotvcb's record: no start time, the live hotvcb taken at its word
        return ours(holder)
    if view == "older, dead":
        return ours(dead_pid())
    if view == "hidden":  # the writer lives, another user's process that /proc hides from us
        return ours(holder, start_of(holder))
    return ours(dead_pid(), 5, other_namespace())  # "namespace": a container's run, its pid dead here


@pytest.mark.parametrize("view, kept", [("its own", True), ("reused", False), ("older", True),
                                        ("older, dead", False)])
def test_a_partial_of_this_host_is_kept_only_by_the_live_run_that_wrote_it(tmp_path, hotvcb_holder, view, kept):
    """We hold the host's lock, so another run's folder is a dead run's, unless its process lives (its lock
    deleted under it): a live hotvcb at its pid that started when the record says, or any live hotvcb for a
    record without the start time (as before records had it)."""
    folder = _partial(tmp_path, 0, owner(view, hotvcb_holder))
    assert remove_partials(LocalShell(), str(tmp_path), "web", Log(), me()) == (0 if kept else 1)
    assert folder.exists() == kept


@pytest.mark.parametrize("view", ["hidden", "namespace"])
@pytest.mark.parametrize("age, kept", [(5, True), (2 * STALE_AFTER, False)])
def test_a_partial_whose_writer_cannot_be_told_by_its_pid_is_judged_by_its_heartbeat(tmp_path, hotvcb_holder,
                                                                                     monkeypatch, view, age, kept):
    """A live run /proc hides from us (hidepid), or one of another pid namespace of this machine, is neither
    alive nor dead by its pid: its folder goes only once its owner file missed its heartbeats, as another
    host's."""
    folder = _partial(tmp_path, age, owner(view, hotvcb_holder))
    hide_from_proc(monkeypatch, hotvcb_holder)
    assert remove_partials(LocalShell(), str(tmp_path), "web", Log(), me()) == (0 if kept else 1)
    assert folder.exists() == kept


class SnapshotHost:
    def __init__(self):
        self.removed = []

    def remove_snapshot(self, vm, snap, timeout):
        self.removed.append(snap.id)


@pytest.mark.parametrize("view, removed", [("its own", False), ("reused", True), ("older", False),
                                           ("hidden", False), ("namespace", False)])
def test_a_snapshot_is_removed_only_when_its_run_is_told_dead(hotvcb_holder, monkeypatch, view, removed):
    """A snapshot has no heartbeat: one whose run cannot be told by its pid is left, never removed on a guess."""
    record = owner(view, hotvcb_holder)
    snap = Snapshot("7", "hotvcb-snapshot-2026-01-01_00-00-00", "hotvcb backup %s, job nightly" % record.text(),
                    "", "", 0)
    if view == "hidden":
        hide_from_proc(monkeypatch, hotvcb_holder)
    host, log = SnapshotHost(), Log()
    assert remove_our_snapshots(host, SimpleNamespace(name="web"), log, me(), snaps=[snap]) == int(removed)
    assert host.removed == (["7"] if removed else []), log.lines


class PowerHost:
    def __init__(self):
        self.shell, self.powered_on = LocalShell(), []

    def power_state(self, vm):
        return "off"

    def power_on(self, vm):
        self.powered_on.append(vm.name)

    def boot_stamp(self, vm):
        return "started %d times" % len(self.powered_on)


@pytest.mark.parametrize("view, powered_on", [("its own", False), ("reused", True), ("hidden", False),
                                              ("namespace", False)])
def test_a_vm_is_powered_on_for_a_run_only_when_that_run_is_told_dead(tmp_path, hotvcb_holder, monkeypatch, view,
                                                                      powered_on):
    """A live run powers its VM on itself, and one whose process cannot be told from here may be one."""
    vm = SimpleNamespace(name="web", folder=str(tmp_path), ref=SimpleNamespace(vmx_path=str(tmp_path / "web.vmx")))
    host = PowerHost()
    mark_powered_off(host, vm, owner(view, hotvcb_holder), Log())
    if view == "hidden":
        hide_from_proc(monkeypatch, hotvcb_holder)
    assert restore_power(host, vm, Log(), me()) == powered_on
    assert (host.powered_on, os.path.exists(power_marker(vm))) == ((["web"], False) if powered_on else ([], True))


class AdminHost(PowerHost):
    """A VM whose boot stamp the admin changes (`admin_boots`), and whose power on fails once (`failing`), as a
    vmx that starts its log and gives up on a missing disk: the host answers no, and the stamp is a failed
    start's (hosts/esxi.py boot_stamp)."""

    def __init__(self, failing=False):
        super().__init__()
        self.boots, self.failing, self.failed = 0, failing, False

    def boot_stamp(self, vm):
        return (FAILED_START if self.failed else "") + "boot %d" % self.boots

    def admin_boots(self):
        self.boots, self.failed = self.boots + 1, False

    def power_on(self, vm):
        self.boots += 1
        self.failed = self.failing
        if self.failing:
            self.failing = False
            raise CommandFailed(["vim-cmd", "vmsvc/power.on"], 1, "Powering on VM:\nPower on failed\n")
        super().power_on(vm)


def _dead_runs_marker(tmp_path, host):
    vm = SimpleNamespace(name="web", folder=str(tmp_path), ref=SimpleNamespace(vmx_path=str(tmp_path / "web.vmx")))
    mark_powered_off(host, vm, ours(dead_pid()), Log())
    return vm


@pytest.mark.parametrize("dry_run", [False, True])
def test_a_vm_powered_on_by_someone_since_a_dead_runs_marker_is_left_as_it_is(tmp_path, dry_run):
    """The admin started the VM by hand after the run died, and switched it off again: the marker's boot stamp is
    not the VM's now, so the admin's word stands (one line says so), and the marker goes (a dry run keeps it)."""
    host, log = AdminHost(), Log()
    vm = _dead_runs_marker(tmp_path, host)
    host.admin_boots()
    assert restore_power(host, vm, log, me(), dry_run) is False
    assert host.powered_on == [] and os.path.exists(power_marker(vm)) == dry_run
    assert [l for l in log.lines if "powered on since the run that left it off" in l] and len(log.lines) == 1, log.lines


def test_a_vm_nobody_started_since_a_dead_runs_marker_is_powered_on_and_so_is_one_of_an_older_marker(tmp_path):
    """The stamp unchanged: the run's own power off, powered on again; a marker with no stamp (an older hotvcb's)
    powers it on whatever happened since, as before."""
    host = AdminHost()
    vm = _dead_runs_marker(tmp_path, host)
    assert restore_power(host, vm, Log(), me()) is True and host.powered_on == ["web"]
    older = AdminHost()
    vm = _dead_runs_marker(tmp_path, older)
    with open(power_marker(vm)) as f:
        record = f.read().splitlines()[0]
    with open(power_marker(vm), "w") as f:
        f.write(record + "\n")
    older.admin_boots()
    assert restore_power(older, vm, Log(), me()) is True and older.powered_on == ["web"]


def test_a_failed_power_on_of_ours_is_no_one_elses_the_next_run_tries_again(tmp_path):
    """Our power on failed (the vmx started its log, then gave up): the marker records the new stamp, so the next
    run still powers the VM on."""
    host = AdminHost(failing=True)
    vm = _dead_runs_marker(tmp_path, host)
    with pytest.raises(CommandFailed):
        restore_power(host, vm, Log(), me())
    assert restore_power(host, vm, Log(), me()) is True and host.powered_on == ["web"]
    assert not os.path.exists(power_marker(vm))


class OrderHost(PowerHost):
    """db, of VM_SHUTDOWN_ORDER, found off: what a run powers on again after the backups."""

    powers_on, kind = True, "esxi"

    def __init__(self, vm):
        super().__init__()
        self.vm = vm

    def load_vm(self, ref):
        return self.vm

    def power_on(self, vm):
        super().power_on(vm)
        self.power_state = lambda vm: "on"


@pytest.mark.parametrize("marker, powered_on", [("gone", True), ("none", False), ("live", False)])
def test_a_shutdown_order_vm_a_gone_run_asked_to_shut_down_is_powered_on_after_the_backups(
        tmp_path, hotvcb_holder, marker, powered_on):
    """A run stopped by a signal right after asking db's guest to shut down says the next run powers it on if it
    goes off: the next run, finding db off with that gone run's marker, starts it with the order (and clears the
    marker); one off with no marker (the admin's choice) or a live run's is left as it is."""
    vm = SimpleNamespace(name="db", folder=str(tmp_path), ref=SimpleNamespace(vmx_path=str(tmp_path / "db.vmx")))
    host, log = OrderHost(vm), Log()
    if marker != "none":
        mark_powered_off(host, vm, ours(dead_pid()) if marker == "gone" else owner("its own", hotvcb_holder), Log())
    control = PowerControl(host, log, me())
    s = Settings(vm_shutdown_order=["db"], vm_startup_order=["db"])
    control.shutdown_in_order([VmRef("2", "db", vm.ref.vmx_path)], s)
    control.start_in_order(s)
    assert host.powered_on == (["db"] if powered_on else []), log.lines
    assert os.path.exists(power_marker(vm)) == (marker == "live")


def test_a_container_runs_snapshot_and_vm_left_off_are_dead_once_its_stale_lock_is_taken_over(tmp_path):
    """Another pid namespace's run tells nothing by its pid; once its lock missed its heartbeats and was taken
    over as gone, what carries its run id is a dead run's: its snapshot goes, its VM is powered on. Until then
    (another run's lock taken over), the VM it keeps off is named, not powered on."""
    dead = owner("namespace", 0)
    lock_path = tmp_path / LOCK_NAME
    lock_path.write_text(dead.text() + "\n")
    past = time.time() - 2 * STALE_AFTER
    os.utime(str(lock_path), (past, past))
    vm = SimpleNamespace(name="web", folder=str(tmp_path), ref=SimpleNamespace(vmx_path=str(tmp_path / "web.vmx")))
    host, log = PowerHost(), Log()
    mark_powered_off(host, vm, dead, Log())
    os.utime(power_marker(vm), (past, past))  # as its lock, last touched before it died
    assert restore_power(host, vm, log, me()) is False and host.powered_on == []
    assert any(line.startswith("web: ") and "cannot be told" in line for line in log.lines), log.lines
    lock = HostLock(LocalShell(), str(tmp_path), me()).acquire()
    try:
        assert lock.took_over and lock.dead_runs() == (dead.run,)
        assert restore_power(host, vm, log, me(), dead=lock.takeovers()) and host.powered_on == ["web"]
        snap = Snapshot("7", "hotvcb-snapshot-2026-01-01_00-00-00", "hotvcb backup %s, job nightly" % dead.text(),
                        "", "", 0)
        shost = SnapshotHost()
        assert remove_our_snapshots(shost, vm, log, me(), snaps=[snap], dead=lock.takeovers()) == 1
        assert shost.removed == ["7"]
        lock.sweep_done()
        assert lock.dead_runs() == ()
    finally:
        lock.release()


def _stale_lock_of(run_dir, dead):
    """`dead` held the host's lock and missed its heartbeats: the next run takes the lock over."""
    lock_path = run_dir / LOCK_NAME
    lock_path.write_text(dead.text() + "\n")
    past = time.time() - 2 * STALE_AFTER
    os.utime(str(lock_path), (past, past))


def _our_snapshot(snap_id, run):
    return Snapshot(snap_id, "hotvcb-snapshot-2026-01-01_00-00-0" + snap_id, "hotvcb backup %s, job nightly"
                    % run.text(), "", "", 0)


class SweptHost(SnapshotHost):
    """One VM, without disks, whose snapshots the test sets; no power-off marker, no backup folder."""

    def __init__(self, folder):
        super().__init__()
        self.shell, self.snaps = LocalShell(), []
        self.vm = Vm(VmRef("1", "web", folder + "/web.vmx"), "ds", folder, None)

    def list_vms(self):
        return [self.vm.ref]

    def invalid_vms(self):
        return {}

    def kept_for_gone(self, known):
        return []

    def load_vm(self, ref):
        return self.vm

    def snapshots(self, vm, interruptible=True):
        return [x for x in self.snaps if x.id not in self.removed]

    def power_state(self, vm):
        return "on"

    def boot_stamp(self, vm):
        return "one boot"

    def host_name(self):
        return HOST

    def system_id(self):
        return ""


@pytest.mark.parametrize("seen", ["before its backup", "at its end"])
def test_a_dead_containers_snapshot_hostd_finished_after_the_sweep_is_removed(tmp_path, seen):
    """A run in a container (its pid tells nothing here) died while hostd made its snapshot; the next run took
    its stale lock over, swept the host before hostd was done, and the sweep, complete, forgot that run
    (HostLock.sweep_done). The VM's own cleanup (jobs/vm_leftovers.py) and the second look at its end
    (jobs/backup_end.py) must still know that run is dead: they alone see that snapshot before it grows, and
    every later run knows nothing of that run."""
    dead, run, log = owner("namespace", 0), me(), RunLog(stream=io.StringIO())
    _stale_lock_of(tmp_path, dead)
    host, late = SweptHost(str(tmp_path)), _our_snapshot("7", dead)

    def vms():  # asked after the sweep: hostd has just finished the dead run's snapshot
        host.snaps.append(late)
        return host.list_vms()

    lock = HostLock(host.shell, str(tmp_path), run).acquire()
    try:
        job = BackupJob(host, Settings(vm_backup_volume=str(tmp_path / "backups")), log, run, lock=lock,
                        asked=SimpleNamespace(vms=vms, look=lambda path: None))
        if seen == "before its backup":
            [result] = job.run(["web"])
            assert host.removed == ["7"] and "nothing to back up" in result.message, log.lines
        else:
            assert job.run([]) == [] and lock.dead_runs() == ()
            mine = _our_snapshot("8", run)
            host.snaps.append(mine)
            one = SimpleNamespace(job=job, host=host, log=log, s=Settings(), snapshot=mine, powered_down=False,
                                  result=VmResult("web"), sealer=None)
            backup_end.end(one, host.vm, None, failed=True)
            assert host.removed == ["8", "7"], log.lines
        assert lock.dead_runs() == ()  # the sweep had forgotten it
    finally:
        lock.release()


def test_a_runs_records_say_when_its_process_started(tmp_path):
    """The run every snapshot, owner file and power-off marker of a backup carries is the one its host lock
    returns: with its process's start time and pid namespace, so a later hotvcb at its pid is no owner."""
    lock, run = lock_host(SimpleNamespace(shell=LocalShell(), run_dir=str(tmp_path)), Log(), Target())
    try:
        held = parse(run.text())
        assert held.pid == os.getpid() and held.pid_start == start_of(os.getpid())
        assert held.pid_ns == os.stat("/proc/self/ns/pid").st_ino
    finally:
        lock.release()



# --- a run only stopped past STALE_AFTER, whose lock was taken over, goes on: it notices and stops --------------

@contextmanager
def _taken_over(run_dir):
    """A run holding run_dir's lock (its heartbeat as often as lock.HEARTBEAT says then) that another run has
    taken over while it was stopped: (the stopped run's lock, its log, the taker)."""
    log = Log()
    held, taker = HostLock(LocalShell(), str(run_dir), me(), log.info).acquire(), me()
    try:
        # the taker's record replaces the lock at once, as its takeover's link does: no missing lock for the
        # heartbeat to put back
        (run_dir / "taken").write_text(taker.text() + "\n")
        os.replace(str(run_dir / "taken"), str(run_dir / LOCK_NAME))
        yield held, log, taker
    finally:
        held.release()
        interrupt.reset()  # its stop is this process's


def test_a_run_whose_lock_was_taken_over_while_it_was_stopped_stops_at_its_next_heartbeat(tmp_path, monkeypatch):
    """Stopped (SIGSTOP, a VM host's hiccup) past STALE_AFTER, a run lost its lock to the next run. Continued, it
    must not work beside that run, nor keep that run's lock and its own -partial folders looking fresh: it stops
    as on SIGTERM (undoing its own snapshot, partial backup, powered-off VM) and says why."""
    monkeypatch.setattr("hotvcb.store.lock.HEARTBEAT", 0.01)
    owner_file = tmp_path / ".hotvcb-owner"
    owner_file.write_text("")
    with _taken_over(tmp_path) as (held, log, taker):
        held.watch(str(owner_file))
        deadline = time.monotonic() + 5
        while not interrupt.pending() and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(Interrupted) as stopped:
            interrupt.raise_pending()
        why = str(stopped.value)
        assert "taken over by %s" % taker in why and why.endswith("; stopping") and why in log.lines, log.lines
        past = time.time() - 2 * STALE_AFTER
        for path in (tmp_path / LOCK_NAME, owner_file):
            os.utime(str(path), (past, past))
        time.sleep(0.1)  # ten heartbeats
        assert [round(p.stat().st_mtime - past) for p in (tmp_path / LOCK_NAME, owner_file)] == [0, 0]
    assert parse((tmp_path / LOCK_NAME).read_text()).run == taker.run  # and its release left the taker's lock


class ChangingHost(SweptHost):
    """Its VM goes off when asked to shut down; what the run asked of it is in `asked`."""

    def __init__(self, folder):
        super().__init__(folder)
        self.asked, self.state = [], "on"

    def power_state(self, vm):
        return self.state

    def shutdown(self, vm):
        self.asked.append("shutdown")
        self.state = "off"

    def create_snapshot(self, vm, name, *args):
        self.asked.append(name)


@pytest.mark.parametrize("change", ["power off", "snapshot"])
def test_a_run_whose_lock_was_taken_over_changes_no_vm_before_its_heartbeat_tells_it(tmp_path, change):
    """The heartbeat may be HEARTBEAT late: right before a run changes a VM it looks at its lock itself, so one
    continued after its lock was taken over neither powers off nor snapshots a VM the taker may be working on."""
    host = ChangingHost(str(tmp_path))
    with _taken_over(tmp_path) as (held, _log, _taker):
        job = BackupJob(host, Settings(vm_backup_volume=str(tmp_path / "backups")), RunLog(stream=io.StringIO()),
                        held.run, lock=held, asked=SimpleNamespace(vms=host.list_vms, look=lambda path: None))
        with pytest.raises(Interrupted, match="taken over by"):
            if change == "power off":
                job.power.power_down(host.vm, Settings())
            else:
                _VmBackup(job, host.vm.ref, Settings(), VmResult("web"), datetime.now(), False)._snapshot(host.vm)
    assert host.asked == [] and not os.path.exists(power_marker(host.vm))


class LateSnapshotHost(SnapshotHost):
    """hostd finishing a dead run's snapshot task after `after` looks at the VM's snapshots."""

    def __init__(self, snap, after):
        super().__init__()
        self.shell, self.snap, self.after, self.looks = LocalShell(), snap, after, 0

    def snapshots(self, vm, interruptible=True):
        self.looks += 1
        return [self.snap] if self.looks > self.after and self.snap.id not in self.removed else []


@pytest.mark.parametrize("patient, age, removed, kept", [(True, 0, True, False), (True, 3600, False, False),
                                                         (False, 0, False, True), (False, 3600, False, False),
                                                         (True, -3600, True, False), (False, -3600, False, True)])
def test_a_dead_runs_snapshot_request_is_waited_for_while_the_host_may_still_finish_it(tmp_path, patient, age,
                                                                                        removed, kept):
    """kill -9 while hostd created the snapshot: the next backup of the VM waits for it (as long as the dead run
    would have) and removes it; a request older than that, or a sweep of every VM (not patient), waits for
    nothing, and the sweep keeps a young request's marker for that next look."""
    dead = ours(dead_pid())
    vm = SimpleNamespace(name="web", folder=str(tmp_path), ref=SimpleNamespace(vmx_path=str(tmp_path / "web.qmp")))
    snap = Snapshot("7", "hotvcb-snapshot-2026-01-01_00-00-00", "hotvcb backup %s, job nightly" % dead.text(),
                    "", "", 0)
    host, log = LateSnapshotHost(snap, after=2), Log()
    mark_snapshot_asked(host, vm, dead)
    assert not snapshot_marker(vm).endswith(".qmp"), "bare QEMU would list the marker as a VM"
    past = time.time() - age
    os.utime(snapshot_marker(vm), (past, past))
    assert await_snapshot(host, vm, log, me(), [], 600.0, dead=NONE_DEAD, patient=patient) == removed
    assert host.removed == (["7"] if removed else []), log.lines
    assert os.path.exists(snapshot_marker(vm)) == kept


def test_a_dead_runs_snapshot_request_dated_ahead_is_looked_for_once_then_let_go(tmp_path, monkeypatch):
    """A request dated ahead of the host's clock (a clock stepped back since) cannot be told young or old: the
    next backup looks for its snapshot as for a young one (above), but once only: waiting for the clock to pass
    it would make every run wait for as long. A snapshot the host makes later is the next sweep's to remove."""
    from hotvcb.jobs import snapshot_asked
    monkeypatch.setattr(snapshot_asked, "PENDING_LOOK", 2.0)
    dead = ours(dead_pid())
    vm = SimpleNamespace(name="web", folder=str(tmp_path), ref=SimpleNamespace(vmx_path=str(tmp_path / "web.qmp")))
    snap = Snapshot("7", "hotvcb-snapshot-2026-01-01_00-00-00", "hotvcb backup %s, job nightly" % dead.text(),
                    "", "", 0)
    host, log = LateSnapshotHost(snap, after=10 ** 6), Log()
    mark_snapshot_asked(host, vm, dead)
    ahead = time.time() + 86400
    os.utime(snapshot_marker(vm), (ahead, ahead))
    assert await_snapshot(host, vm, log, me(), [], 600.0, dead=NONE_DEAD) is False
    assert host.looks >= 1 and not os.path.exists(snapshot_marker(vm)), log.lines
    assert any("cannot be told" in line for line in log.lines), log.lines


def test_a_dead_runs_answered_snapshot_request_is_not_waited_for(tmp_path):
    """Killed after hostd removed its snapshot, before the marker went: the marker says the snapshot was made,
    so the next run does not wait a minute for one that "has not appeared yet"."""
    dead = ours(dead_pid())
    vm = SimpleNamespace(name="web", folder=str(tmp_path), ref=SimpleNamespace(vmx_path=str(tmp_path / "web.vmx")))
    snap = Snapshot("7", "hotvcb-snapshot-2026-01-01_00-00-00", "hotvcb backup %s, job nightly" % dead.text(),
                    "", "", 0)
    host, log = LateSnapshotHost(snap, after=10 ** 6), Log()
    mark_snapshot_asked(host, vm, dead)
    mark_snapshot_made(host, vm, dead, "7", log)
    assert parse(open(snapshot_marker(vm)).read()) == dead
    start = time.monotonic()
    assert await_snapshot(host, vm, log, me(), [], 600.0) is False
    assert time.monotonic() - start < 5 and host.looks == 0 and not os.path.exists(snapshot_marker(vm)), log.lines
    assert not any("has not appeared" in line for line in log.lines), log.lines


def test_a_dead_runs_snapshot_request_whose_snapshot_is_listed_is_not_waited_for(tmp_path):
    """The snapshot was there already (the leftover check removed it): its request is done."""
    dead = ours(dead_pid())
    vm = SimpleNamespace(name="web", folder=str(tmp_path), ref=SimpleNamespace(vmx_path=str(tmp_path / "web.vmx")))
    snap = Snapshot("7", "hotvcb-snapshot-2026-01-01_00-00-00", "hotvcb backup %s, job nightly" % dead.text(),
                    "", "", 0)
    host = LateSnapshotHost(snap, after=0)
    mark_snapshot_asked(host, vm, dead)
    assert await_snapshot(host, vm, Log(), me(), [snap], 600.0) is False
    assert host.looks == 0 and not os.path.exists(snapshot_marker(vm))
