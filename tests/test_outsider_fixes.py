"""Outside test of the round's fixes (odd backup times, compressed space, dead runs kept for the whole run,
/tmp work folders): each test fails today and passes once its defect is fixed. API-level, on tmp dirs; no host."""

import io
import os
import tempfile
import threading
from datetime import datetime
from types import SimpleNamespace

import pytest
from test_leftovers_unit import HOST, Log, SweptHost, _stale_lock_of, owner
from test_parallel_unit import _preflight, _TargetHost

from hotvcb import tmpwork
from hotvcb.commands import verify_cmd
from hotvcb.errors import HotvcbError, UsageError
from hotvcb.jobs import backup_check, boot_check
from hotvcb.jobs.backup import BackupJob
from hotvcb.jobs.leftovers import SNAPSHOT_PREFIX
from hotvcb.jobs.powermark import mark_powered_off, power_marker
from hotvcb.jobs.space import SpaceLedger
from hotvcb.localshell import LocalShell
from hotvcb.model import Snapshot
from hotvcb.runid import RunId
from hotvcb.runlog import RunLog
from hotvcb.settings import Settings
from hotvcb.store import layout
from hotvcb.store.lock import HostLock


@pytest.fixture
def tmp(tmp_path, monkeypatch):
    """The temp folder hotvcb's work folders go in (tmpwork.py): the test's own."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


# --- 1. a backup's name with a time no calendar has ----------------------------------------------------------

def test_verify_boot_reads_a_kvm_restored_vm_named_with_an_odd_time_as_any_restored_folder(tmp, tmp_path):
    """A VM's name is the admin's choice; only a backup's name carries hotvcb's time. The folder of such a VM is
    read as that of a VM named `app` is (here both fail later alike: the domain has no name)."""
    said = {}
    for name in ("app", "app-2026-13-01_00-00-00"):
        folder = tmp_path / "kvm" / name
        folder.mkdir(parents=True)
        (folder / (name + ".xml")).write_text("<domain/>")
        with pytest.raises(HotvcbError) as refused:
            boot_check.smoke_boot(LocalShell(), str(folder), lambda line: None)
        said[name] = str(refused.value).replace(str(folder) + "/" + name, "<VM>")
    assert said["app-2026-13-01_00-00-00"] == said["app"]


def test_verify_boot_of_a_vm_with_only_odd_named_backups_names_them(tmp_path):
    odd = tmp_path / "web" / "web-2026-13-01_00-00-00"
    odd.mkdir(parents=True)
    (odd / "STATUS.ok").write_text("")
    args = SimpleNamespace(all=False, target="web", host_target=None, volume=str(tmp_path), confdir=None, repo=None)
    with pytest.raises(UsageError) as refused:
        verify_cmd._boot(args, Settings())
    assert str(odd) + ":" in str(refused.value), refused.value


def test_a_relative_path_named_with_an_odd_time_is_named_as_given(tmp_path, monkeypatch):
    """Found as `layout.from_path` named `/<entry>`; laid out as a backup is (in its VM's folder), since a
    folder elsewhere is no backup by its name (the test before it)."""
    (tmp_path / "web" / "web-2026-13-01_00-00-00").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "web")
    with pytest.raises(HotvcbError) as refused:
        backup_check.require_good(LocalShell(), "web-2026-13-01_00-00-00")
    named = str(refused.value).split(": named like a backup", 1)[0]
    assert named in ("web-2026-13-01_00-00-00", str(tmp_path / "web" / "web-2026-13-01_00-00-00")), refused.value


def test_verify_boot_of_a_relative_path_to_a_partial_backup_is_refused_as_the_absolute_one_is(tmp, tmp_path,
                                                                                              monkeypatch):
    partial = tmp_path / "web" / "web-2026-01-01_00-00-00-partial"
    partial.mkdir(parents=True)
    (partial / "web.vmx").write_text('displayName = "web"\n')
    monkeypatch.chdir(tmp_path)
    for path in (str(partial), "web/web-2026-01-01_00-00-00-partial"):
        with pytest.raises(HotvcbError, match="is not a good backup"):
            boot_check.smoke_boot(LocalShell(), path, lambda line: None)


# --- 2. a compressed backup's room -----------------------------------------------------------------------------

def test_the_preflight_line_of_a_compressed_backup_reads_as_a_sentence(tmp_path):
    log = RunLog("debug", stream=io.StringIO())
    _preflight(_TargetHost(150), Settings(vm_backup_volume=str(tmp_path), enable_compression=True), log,
               SpaceLedger(log), "a")
    [line] = [line for line in log.lines if "-- debug: a: " in line]
    assert "compressed needed" not in line, line


# --- 3. dead runs kept for the whole run ---------------------------------------------------------------------

class _Resumed(SweptHost):
    """The VM `web`, which a run in a container (its pid tells nothing here) starts to back up after this run
    took its stale lock over: that run was stopped (SIGSTOP) past STALE_AFTER, not dead, and on SIGCONT it goes
    on with its next VM, as nothing tells it its lock is gone. `work(host)` is what it does once this run's sweep
    is through (`vms`: the run's question for its VMs, asked after it)."""

    def __init__(self, folder, work):
        super().__init__(folder)
        self.work, self.state, self.powered_on = work, "on", []

    def vms(self):
        self.work(self)
        return self.list_vms()

    def power_state(self, vm):
        return self.state

    def power_on(self, vm):
        self.powered_on.append(vm.name)
        self.state = "on"


def _take_over_and_back_up(tmp_path, work):
    """This run takes the stopped run's lock over and backs up `web`; (the stopped run, the host, the log)."""
    stopped = RunId(**dict(vars(owner("namespace", 0)), host=HOST))
    _stale_lock_of(tmp_path, stopped)
    host, log = _Resumed(str(tmp_path), lambda h: work(h, stopped)), RunLog(stream=io.StringIO())
    lock = HostLock(host.shell, str(tmp_path), RunId.new().on_host(HOST)).acquire()
    try:
        assert lock.took_over and lock.dead_runs() == (stopped.run,)
        job = BackupJob(host, Settings(vm_backup_volume=str(tmp_path / "backups")), log,
                        lock.run.with_process_start(), lock=lock,
                        asked=SimpleNamespace(vms=host.vms, look=lambda path: None))
        job.run(["web"])
    finally:
        lock.release()
    return stopped, host, log


def test_a_resumed_runs_heartbeating_partial_made_after_the_takeover_is_not_removed(tmp_path):
    """Before this round the VM's own cleanup judged that folder by its heartbeat (fresh: kept); only the sweep
    at the takeover, when that run's heartbeat was stale, knew it dead."""
    def copying(host, stopped):
        folder = tmp_path / "backups" / "web" / "web-2026-01-01_00-00-00-partial"
        folder.mkdir(parents=True)
        (folder / ".hotvcb-owner").write_text(stopped.text() + "\n")  # touched by its heartbeat: now

    _stopped, _host, log = _take_over_and_back_up(tmp_path, copying)
    assert (tmp_path / "backups" / "web" / "web-2026-01-01_00-00-00-partial").is_dir(), log.lines


def test_a_vm_a_resumed_run_powers_off_after_the_takeover_is_not_powered_on_under_it(tmp_path):
    def powering_off(host, stopped):
        mark_powered_off(host, host.vm, stopped, Log())
        host.state = "off"

    _stopped, host, log = _take_over_and_back_up(tmp_path, powering_off)
    assert host.powered_on == [] and os.path.exists(power_marker(host.vm)), log.lines


def test_the_snapshot_a_resumed_run_takes_after_the_takeover_is_not_removed_under_its_copy(tmp_path):
    def snapshotting(host, stopped):
        name = SNAPSHOT_PREFIX + datetime.now().strftime(layout.TS_FORMAT)
        host.snaps.append(Snapshot("9", name, "hotvcb backup %s, job nightly" % stopped.text(), "", "", 0))

    _stopped, host, log = _take_over_and_back_up(tmp_path, snapshotting)
    assert host.removed == [], log.lines


# --- 4. /tmp work folders --------------------------------------------------------------------------------------

def test_a_fifo_named_owner_in_a_work_folder_does_not_hang_the_next_run(tmp):
    folder = tmp / ("hotvcb-kvm-%d-planted1" % os.getpid())  # a live pid: nothing removed, only looked at
    folder.mkdir()
    folder.chmod(0o777)  # made by another tool or by hand, not by mkdtemp
    os.mkfifo(str(folder / tmpwork.OWNER))
    sweep = threading.Thread(target=tmpwork.sweep, args=("hotvcb-kvm-",), daemon=True)
    sweep.start()
    sweep.join(0.5)  # a sweep of one folder takes microseconds
    hung = sweep.is_alive()
    if hung:  # let the thread go: a writer ends the open, EOF the read
        os.close(os.open(str(folder / tmpwork.OWNER), os.O_WRONLY | os.O_NONBLOCK))
        sweep.join(5)
    assert not hung
