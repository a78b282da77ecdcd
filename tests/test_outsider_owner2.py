"""Outside tester's attacks on the takeover of a dead run's lock (docs/backup-format.md, "Who owns what"):
the `hotvcb.sweep` record a takeover writes and what it makes "dead"; a live but slow holder; two takeovers in a
row; planted FIFO/oversized/garbage records; a VM the admin powered on again; cleanup's exit codes.
The promise: a live run's work is never removed on a guess; a dead run's is, and not forgotten."""

import os
import socket
import subprocess
import sys
import threading
import time

import pytest
from pidviews import hotvcb_holder, other_namespace, start_of  # noqa: F401  (fixture: a live hotvcb process)
from qemuvm import kill_tree
from simhost import (REPO, VOLUME, _argv, copying, host_lock_path, hotvcb, make_host, needs_root, ours, vim, wait_for,
                     write_conf)

from hotvcb.errors import LockError
from hotvcb.localshell import LocalShell
from hotvcb.runid import RunId
from hotvcb.store.lock import STALE_AFTER, HostLock

MACHINE = socket.gethostname()
ESXI = "esxi01"  # the simulated host's own hostname: the machine its hotvcb runs record
OLD = time.time() - 3600  # an hour ago: past STALE_AFTER and SHUTDOWN_GRACE


def record(run, pid=0, ns=None, start=None, host="h", machine=MACHINE):
    """A run record as a run writes it (pid 0: a pid no process has)."""
    return RunId(run, machine, pid, int(time.time()) - 7200, host, start, 0, ns).text() + "\n"


def write(path, text, mtime=None):
    with open(path, "w") as f:
        f.write(text)
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def me():
    return RunId.new().on_host("h")


# --- the lock itself (unit level, LocalShell) ---------------------------------------------------------------------

def test_a_live_slow_holder_of_this_machine_with_a_stale_heartbeat_is_not_taken_over(tmp_path, hotvcb_holder):
    """A holder stopped for an hour (SIGSTOP, a suspended laptop) misses its heartbeats, but its pid still
    tells: a live hotvcb that started when the lock says. No takeover, no sweep record."""
    lock = tmp_path / "hotvcb.lock"
    write(lock, record("aaaaaaaaaaaa", hotvcb_holder, start=start_of(hotvcb_holder)), OLD)
    with pytest.raises(LockError, match="another hotvcb run holds"):
        HostLock(LocalShell(), str(tmp_path), me()).acquire()
    assert "aaaaaaaaaaaa" in lock.read_text() and not (tmp_path / "hotvcb.sweep").exists()


TAKE = """import sys, time
from hotvcb.localshell import LocalShell
from hotvcb.runid import RunId
from hotvcb.store.lock import HostLock
lock = HostLock(LocalShell(), sys.argv[1], RunId.new().on_host("h")).acquire()
print("took it", lock.took_over, lock.dead_runs(), flush=True)
if sys.argv[2] == "hold":
    time.sleep(300)
"""


def take(run_dir, mode):
    """A run taking the lock in a process of its own (its command line names hotvcb, as a run's does)."""
    return subprocess.Popen([sys.executable, "-c", TAKE, str(run_dir), mode, "hotvcb"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=REPO))


def test_a_second_cleanup_while_the_first_holds_a_taken_over_lock_refuses_and_keeps_the_sweep(tmp_path):
    """Two cleanups after a run in another pid namespace died: the first takes the stale lock over and records the
    dead run; the second finds the first alive and must neither take over nor rewrite the dead run's record."""
    write(tmp_path / "hotvcb.lock", record("deadbeef0001", 4242, ns=other_namespace()), OLD)
    first = take(tmp_path, "hold")
    try:
        assert first.stdout.readline() == "took it True ('deadbeef0001',)\n", first.stderr.read()
        out, err = take(tmp_path, "try").communicate(timeout=60)
        assert "another hotvcb run holds" in err and "took it" not in out, out + err
        assert "deadbeef0001" in (tmp_path / "hotvcb.sweep").read_text()
    finally:
        first.kill()
        first.communicate()


def test_a_takeover_of_a_run_that_died_before_its_sweep_keeps_the_first_dead_run(tmp_path):
    """Run X (another pid namespace) dies; B takes its stale lock over (sweep: X) and is SIGKILLed before its sweep.
    C takes B's lock over: X's leftovers are still to be looked for, and only the sweep record says X is dead
    (its pid can never tell). C must still know X."""
    write(tmp_path / "hotvcb.sweep", record("0000000000aa", 4242, ns=other_namespace()))
    write(tmp_path / "hotvcb.lock", record("0000000000bb", 0))  # B: a pid that is gone
    c = HostLock(LocalShell(), str(tmp_path), me()).acquire()
    try:
        assert c.took_over
        assert "0000000000aa" in c.dead_runs(), c.dead_runs()
    finally:
        c.release()


def test_a_planted_fifo_or_oversized_sweep_record_is_refused_without_waiting(tmp_path):
    """Anyone who can write the run folder (a QMP folder) may plant the sweep record as a FIFO or a huge file: the
    run must not hang on it nor read it whole, and a real run's sweep removes it."""
    sweep = tmp_path / "hotvcb.sweep"
    os.mkfifo(sweep)
    lock = HostLock(LocalShell(), str(tmp_path), me()).acquire()
    try:
        got = []
        t = threading.Thread(target=lambda: got.append(lock.dead_runs()), daemon=True)
        t.start()
        t.join(20)
        assert got == [()], "dead_runs() hung on a FIFO"
        assert lock.sweep_needed
        lock.sweep_done()
        assert not os.path.lexists(sweep)
        write(sweep, "x" * (1 << 20) + record("0000000000cc", 0))  # the record past the 64 KiB cap
        assert lock.dead_runs() == ()
    finally:
        lock.release()


# --- through the CLI on one simulated ESXi host --------------------------------------------------------------------

@pytest.fixture(scope="module")
def esx(tmp_path_factory):
    if os.geteuid():
        pytest.skip("esxisim needs root")
    h = make_host(tmp_path_factory.mktemp("owner2") / "host")
    h.conf = write_conf(h)
    yield h
    h.stop()


def run_path(host, name):
    return host.store.p("root", "run", "upper", name)


def plant_snapshot(host, vmid, run, ns):
    """A hotvcb snapshot as run `run` (pid untold: another pid namespace when `ns`) made it."""
    desc = record(run, 4242, ns=ns, machine=ESXI).strip() + ", job nightly"
    vim(host, "vmsvc/snapshot.create", vmid, "hotvcb-snapshot-" + run, desc, "0", "0")


@needs_root
def test_a_planted_sweep_record_naming_a_live_backup_does_not_get_its_work_removed(esx):
    """A live backup on this machine (its pid says alive) whose lock file an admin deleted; a stranger who can
    write the run folder plants `hotvcb.sweep` naming the backup's run. A cleanup must still leave the backup's
    snapshot and folder: the record is no proof against a pid that tells."""
    host = esx
    vmid = str(host.create_vm("live1", "datastore1", [{"size": "4M"}], power="on"))
    host.set_fault("clone.delay", "120")
    p = subprocess.Popen(_argv(host, ["-m", "live1", "-g", host.conf]), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: copying(host, "live1") or p.poll() is not None, 60, "the backup to copy")
        assert p.poll() is None, p.communicate()[0]
        host.set_fault("clone.delay", "0")
        snaps = ours(host, vmid)
        partial = [e for e in os.listdir(host.real(VOLUME + "/live1")) if e.endswith("-partial")]
        with open(host_lock_path(host)) as f:
            text = f.read()  # the live backup's own record
        assert "run=" in text, text
        for _ in range(3):  # the backup's heartbeat may put its lock back first
            write(run_path(host, "hotvcb.sweep"), text)
            if os.path.exists(host_lock_path(host)):
                os.unlink(host_lock_path(host))
            r = hotvcb(host, "cleanup", "-g", host.conf)
            if "another hotvcb run holds" not in r.stdout + r.stderr:
                break
        assert r.returncode == 0, r.stdout + r.stderr
        assert ours(host, vmid) == snaps, r.stdout
        assert [e for e in os.listdir(host.real(VOLUME + "/live1")) if e.endswith("-partial")] == partial, r.stdout
    finally:
        kill_tree(p.pid)
        p.communicate()
        host.set_fault("clone.delay", "0")
        if os.path.exists(run_path(host, "hotvcb.sweep")):
            os.unlink(run_path(host, "hotvcb.sweep"))


@needs_root
def test_a_cleanup_whose_removal_failed_still_knows_the_taken_over_run_next_time(esx):
    """Run X (another pid namespace) died holding the lock and left a snapshot. The first cleanup takes the stale lock
    over but hostd refuses the removal (exit 1). The second cleanup must still remove X's snapshot: only the sweep
    record could say X is dead."""
    host = esx
    # what earlier tests on this host left (a killed backup's snapshot) goes first: the refusal must hit X's
    assert hotvcb(host, "cleanup", "-g", host.conf).returncode == 0
    vmid = str(host.create_vm("untold1", "datastore1", [{"size": "4M"}], power="on"))
    plant_snapshot(host, vmid, "00000000beef", other_namespace())
    write(host_lock_path(host), record("00000000beef", 4242, ns=other_namespace(), machine=ESXI), OLD)
    host.set_fault("snapshot.remove", "fail-once")
    try:
        r = hotvcb(host, "cleanup", "-g", host.conf)
    finally:
        host.set_fault("snapshot.remove", "")
    assert "taking over the run lock" in r.stdout + r.stderr, r.stdout + r.stderr
    assert r.returncode == 1, r.stdout + r.stderr  # the refusal is a failure of the cleanup
    assert ours(host, vmid), r.stdout
    r = hotvcb(host, "cleanup", "-g", host.conf)
    assert ours(host, vmid) == [], r.stdout + r.stderr


@needs_root
def test_a_backup_whose_sweep_of_the_host_failed_keeps_the_taken_over_run_for_the_next_cleanup(esx):
    """As above, but the lock is taken over by a backup of another VM, which looks at every VM of the host first:
    its backup goes on, and the refused removal leaves the sweep record naming X for the next cleanup."""
    host = esx
    assert hotvcb(host, "cleanup", "-g", host.conf).returncode == 0
    vmid = str(host.create_vm("untold2", "datastore1", [{"size": "4M"}], power="on"))
    host.create_vm("plain2", "datastore1", [{"size": "4M"}], power="off")
    plant_snapshot(host, vmid, "00000000cafe", other_namespace())
    write(host_lock_path(host), record("00000000cafe", 4242, ns=other_namespace(), machine=ESXI), OLD)
    host.set_fault("snapshot.remove", "fail-once")
    try:
        r = hotvcb(host, "-m", "plain2", "-g", host.conf)
    finally:
        host.set_fault("snapshot.remove", "")
    assert "looking for its leftovers on every VM" in r.stdout + r.stderr, r.stdout + r.stderr
    assert "untold2: cleanup failed" in r.stdout + r.stderr and ours(host, vmid), r.stdout + r.stderr
    with open(run_path(host, "hotvcb.sweep")) as f:
        assert "00000000cafe" in f.read()
    r = hotvcb(host, "cleanup", "-g", host.conf)
    assert ours(host, vmid) == [], r.stdout + r.stderr
    assert not os.path.exists(run_path(host, "hotvcb.sweep")), r.stdout


@needs_root
def test_a_vm_the_admin_powered_on_again_after_a_dead_run_is_left_running(esx):
    """A dead run powered `adminvm` off for its backup; an hour later the admin powered it on by hand. Cleanup must
    not touch the VM (no power cycle, no error), only drop the stale marker, and exit 0."""
    host = esx
    vmid = host.create_vm("adminvm", "datastore1", [{"size": "4M"}], power="on")
    folder = host.real("/vmfs/volumes/datastore1/adminvm")
    marker = os.path.join(folder, ".hotvcb-powered-off.adminvm.vmx")
    write(marker, record("0000000000dd", 0, machine=ESXI), OLD)
    vmx = os.path.join(folder, "adminvm.vmx")
    assert os.path.exists(vmx)
    r = hotvcb(host, "cleanup", "-g", host.conf)
    assert r.returncode == 0, r.stdout + r.stderr
    assert host.power_state(vmid) == "on", r.stdout
    assert "powering it on" not in r.stdout and "it is on again" in r.stdout, r.stdout
    assert not os.path.exists(marker), r.stdout


@needs_root
def test_a_vm_an_untold_dead_run_asked_to_shut_down_is_still_known_once_its_grace_is_over(esx):
    """A run in another pid namespace asked `graceful` to shut down and died; its lock is taken over while the guest
    may still be going down (the marker is young): the VM is left for the next look, and that look must still know
    the run is dead, so the sweep record stays until the VM is dealt with."""
    host = esx
    vmid = host.create_vm("graceful", "datastore1", [{"size": "4M"}], power="on")
    marker = host.real("/vmfs/volumes/datastore1/graceful/.hotvcb-powered-off.graceful.vmx")
    # written before its lock went stale (what a run writes after its lock was taken over is a live run's)
    write(marker, record("0000000000ab", 4242, ns=other_namespace(), machine=ESXI), time.time() - 2 * STALE_AFTER)
    write(host_lock_path(host), record("0000000000ab", 4242, ns=other_namespace(), machine=ESXI), OLD)
    r = hotvcb(host, "cleanup", "-g", host.conf)
    assert r.returncode == 0 and "looking again next time" in r.stdout, r.stdout + r.stderr
    assert os.path.exists(run_path(host, "hotvcb.sweep")), r.stdout
    os.utime(marker, (OLD, OLD))  # the grace is over: the guest stayed on
    r = hotvcb(host, "cleanup", "-g", host.conf)
    assert r.returncode == 0 and "graceful: " in r.stdout and "it is on again" in r.stdout, r.stdout + r.stderr
    assert host.power_state(vmid) == "on" and not os.path.exists(marker), r.stdout
    assert not os.path.exists(run_path(host, "hotvcb.sweep")), r.stdout


@needs_root
def test_a_garbage_power_off_marker_leaves_the_vm_and_cleanup_goes_on(esx):
    """A marker that is a FIFO is reported and its VM left off, without waiting on it; cleanup carries on with the
    host's other VMs (a 1 MiB marker whose record lies past the 64 KiB cap reads as a record-less, older hotvcb's
    marker: its VM is powered on, as documented)."""
    host = esx
    a = host.create_vm("fifovm", "datastore1", [{"size": "4M"}], power="off")
    host.create_vm("bigvm", "datastore1", [{"size": "4M"}], power="off")
    os.mkfifo(host.real("/vmfs/volumes/datastore1/fifovm/.hotvcb-powered-off.fifovm.vmx"))
    write(host.real("/vmfs/volumes/datastore1/bigvm/.hotvcb-powered-off.bigvm.vmx"),
          "x" * (1 << 20) + record("0000000000ee", 0))
    r = hotvcb(host, "cleanup", "-g", host.conf, timeout=120)
    assert "fifovm: cannot read the power-off marker" in r.stdout, r.stdout
    assert host.power_state(a) == "off" and "bigvm:" in r.stdout, r.stdout


@needs_root
def test_cleanup_exits_1_while_a_deleting_folder_cannot_be_removed_and_0_once_it_can(esx, tmp_path):
    """A condemned backup (`-deleting`) with a mount point inside it cannot be removed (EBUSY): cleanup says so and
    exits 1; the folder stays. Once unmounted, the next cleanup removes it and exits 0."""
    host = esx
    host.create_vm("delvm", "datastore1", [{"size": "4M"}], power="off")
    condemned = host.real(VOLUME + "/delvm/delvm-2020-01-01_00-00-00-deleting")
    os.makedirs(condemned + "/busy")
    write(condemned + "/disk.vmdk", "x")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", condemned + "/busy"], check=True)
    try:
        r = hotvcb(host, "cleanup", "-g", host.conf)
        assert r.returncode == 1, r.stdout + r.stderr
        assert "could not finish the removal" in r.stdout and os.path.isdir(condemned), r.stdout
    finally:
        subprocess.run(["umount", condemned + "/busy"], check=True)
    r = hotvcb(host, "cleanup", "-g", host.conf)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not os.path.exists(condemned), r.stdout


@needs_root
def test_a_vm_kept_off_by_an_untold_run_is_named_then_powered_on_once_its_lock_is_taken_over(esx):
    """A run in another pid namespace powered `offvm` off. While its pid cannot tell and no lock says it is gone,
    cleanup names the VM and leaves it off; once its stale lock is taken over, cleanup powers the VM on."""
    host = esx
    vmid = host.create_vm("offvm", "datastore1", [{"size": "4M"}], power="off")
    marker = host.real("/vmfs/volumes/datastore1/offvm/.hotvcb-powered-off.offvm.vmx")
    write(marker, record("0000000000ff", 4242, ns=other_namespace(), machine=ESXI), OLD)  # before its lock went stale
    r = hotvcb(host, "cleanup", "-g", host.conf)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "offvm: run 0000000000ff" in r.stdout and "may still be running" in r.stdout, r.stdout
    assert host.power_state(vmid) == "off" and os.path.exists(marker), r.stdout
    write(host_lock_path(host), record("0000000000ff", 4242, ns=other_namespace(), machine=ESXI), OLD)
    r = hotvcb(host, "cleanup", "-g", host.conf)
    assert r.returncode == 0, r.stdout + r.stderr
    assert host.power_state(vmid) == "on" and not os.path.exists(marker), r.stdout
