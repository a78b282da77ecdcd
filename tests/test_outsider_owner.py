"""Outside tester's attacks on "who owns a leftover" (docs/backup-format.md, "Who owns what"; docs/restore.md):
a live backup's `-partial` folder and snapshot, and a live restore's folder, while `hotvcb cleanup` runs from
another pid namespace, a time namespace, as another user under /proc mounted hidepid=2, or inside the
writer's own pid namespace; a dead run whose pid another hotvcb now has; older records without the new
fields; forged and garbage records, and an owner file that is a FIFO. The promise: a live run's work is
never removed on a guess (what cannot be told goes by its heartbeat or stays), a dead run's is."""

import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from datetime import datetime
from types import SimpleNamespace

import pytest
from asuser import SYS_PYTHON, readable_code
from pidviews import hotvcb_holder, start_of  # noqa: F401  (fixture: a live hotvcb process)
from qemuvm import PYTHON, env, needs_qemu, slow_qemu_img, wait_until
from simhost import (REPO, VOLUME, _argv, copying, host_lock_path, hotvcb, needs_root, ours, wait_for,
                     write_conf)
from test_outsider_crosshv import esxi_backup

from esxisim import snapshots
from hotvcb.jobs.leftovers import SNAPSHOT_PREFIX
from hotvcb.jobs.powermark import mark_powered_off, restore_power
from hotvcb.jobs.partials import remove_partials
from hotvcb.localshell import LocalShell
from hotvcb.runid import RunId
from hotvcb.store import layout
from hotvcb.store.lock import STALE_AFTER
from fakelog import Log

MACHINE = socket.gethostname()
HOST = "thishost"  # the host id the unit-level attacks' runs hold the lock of


def needs(*tools):
    missing = [t for t in tools if not shutil.which(t)]
    if missing or os.geteuid():
        pytest.skip("needs root and %s" % ", ".join(missing or tools))


def descendants(pid):
    out = []
    for task in glob.glob("/proc/%d/task/*/children" % pid):
        try:
            with open(task) as f:
                kids = [int(p) for p in f.read().split()]
        except OSError:
            continue
        for kid in kids:
            out += [kid] + descendants(kid)
    return out


def kill_all(proc):
    """SIGKILL a process and everything below it (a pid namespace dies with its first process)."""
    for pid in [proc.pid] + descendants(proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    proc.communicate(timeout=30)


def ns_init(proc):
    """The first process of the pid namespace `unshare -pf` made (its only child), by its pid out here."""
    wait_until(lambda: descendants(proc.pid), 30, "unshare's child")
    return descendants(proc.pid)[0]


# --- ESXi (simulated host): a live backup's snapshot and -partial folder ------------------------------------------

def live_backup(host, conf, prefix=()):
    """`hotvcb -m web` in a slow clone (its snapshot made, its -partial folder being written), started under
    `prefix` (unshare ...); (process, partial folder)."""
    host.set_fault("clone.delay", "120")
    p = subprocess.Popen(list(prefix) + _argv(host, ["-m", "web", "-g", conf]), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, env=dict(os.environ, PYTHONPATH=REPO), cwd=REPO)
    wait_for(lambda: copying(host, "web") or p.poll() is not None, 60, "the backup to copy")
    assert p.poll() is None, p.communicate()[0]
    [partial] = glob.glob(host.real(VOLUME) + "/web/*-partial")
    return p, partial


@needs_root
@pytest.mark.parametrize("prefix", [(), ("unshare", "-pf", "--mount-proc")], ids=["same-ns", "own-pidns"])
def test_a_live_backup_whose_lock_an_admin_deleted_keeps_its_snapshot_and_partial_through_cleanup(host, prefix):
    """The admin deletes the run lock (a reboot script, an rm) while a backup copies; `hotvcb cleanup` then
    gets the lock, and must still tell the backup's snapshot and folder from a dead run's: by its pid here,
    and where the backup runs in a pid namespace of its own (a container), not by its pid at all."""
    if prefix:
        needs("unshare")
    vmid = str(host.create_vm("web", "datastore1", [{"size": "4M"}], power="on"))
    conf = write_conf(host)
    p, partial = live_backup(host, conf, prefix)
    try:
        snaps = ours(host, vmid)
        assert len(snaps) == 1, snaps
        for _ in range(3):  # the backup's heartbeat may put its lock back first: delete it again
            os.unlink(host_lock_path(host))
            r = hotvcb(host, "cleanup", "-g", conf)
            if "another hotvcb run holds" not in r.stdout + r.stderr:
                break
        assert r.returncode == 0, r.stdout + r.stderr
        assert "0 leftover(s) removed" in r.stdout, r.stdout
        assert os.path.isdir(partial) and ours(host, vmid) == snaps, r.stdout
        assert "is being written by" in r.stdout, r.stdout
        assert ("cannot be told from here" if prefix else "is still running") in r.stdout, r.stdout
    finally:
        kill_all(p)


@needs_root
def test_a_cleanup_sharing_a_live_backups_pid_namespace_without_its_own_proc_touches_nothing(host):
    """`unshare -pf` without --mount-proc: the backup is pid 2 in its namespace, and /proc is the machine's, where
    pid 2 is kthreadd. A cleanup in the same namespace (nsenter) sees pid 2 alive (kill) and reads /proc/2: not a
    hotvcb. Its /proc tells nothing about its own namespace's pids: that is "cannot be told", not "dead"."""
    needs("unshare", "nsenter")
    vmid = str(host.create_vm("web", "datastore1", [{"size": "4M"}], power="on"))
    conf = write_conf(host)
    p, partial = live_backup(host, conf, ("unshare", "-pf"))
    try:
        snaps = ours(host, vmid)
        r = subprocess.run(["nsenter", "-t", str(ns_init(p)), "-p"] + _argv(host, ["cleanup", "-g", conf]),
                           capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONPATH=REPO),
                           cwd=REPO)
        assert "taking over the run lock" not in r.stdout + r.stderr, r.stdout + r.stderr
        assert os.path.isdir(partial) and ours(host, vmid) == snaps, r.stdout + r.stderr
    finally:
        kill_all(p)


@needs_root
def test_a_killed_backup_whose_pid_another_hotvcb_now_has_is_cleaned_up(host, hotvcb_holder):
    """SIGKILLed mid-copy; its pid is then another hotvcb's (a prune started later). Simulated by moving the dead
    run's pid in its lock and owner file to a live hotvcb's, its start time kept: the lock is taken over and the
    folder removed (told by the start time), the snapshot too."""
    vmid = str(host.create_vm("web", "datastore1", [{"size": "4M"}], power="on"))
    conf = write_conf(host)
    p, partial = live_backup(host, conf)
    kill_all(p)
    owner = partial + "/.hotvcb-owner"
    for path in (host_lock_path(host), owner):
        with open(path) as f:
            text = f.read()
        assert "pidstart=" in text, text
        with open(path, "w") as f:
            f.write(re.sub(r"pid=\d+", "pid=%d" % hotvcb_holder, text, count=1))
    host.set_fault("clone.delay", "0")
    r = hotvcb(host, "cleanup", "-g", conf)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "taking over the run lock" in r.stdout + r.stderr, r.stdout + r.stderr
    assert not os.path.exists(partial) and ours(host, vmid) == [], r.stdout


@needs_root
def test_a_killed_container_backups_snapshot_goes_once_its_lock_is_taken_over_as_dead(host):
    """The backup runs in a pid namespace of its own (SSH mode from a container is the usual case) and is
    SIGKILLed with it. Its lock and owner file then miss their heartbeats (aged here past STALE_AFTER, as five
    quiet minutes would): cleanup takes the lock over from a run proven gone, so that run's snapshot, which it
    made under that very lock, is a dead run's, not a guess."""
    needs("unshare")
    vmid = str(host.create_vm("web", "datastore1", [{"size": "4M"}], power="on"))
    conf = write_conf(host)
    p, partial = live_backup(host, conf, ("unshare", "-pf", "--mount-proc"))
    kill_all(p)
    assert len(ours(host, vmid)) == 1
    then = time.time() - 2 * STALE_AFTER
    for path in (host_lock_path(host), partial + "/.hotvcb-owner"):
        os.utime(path, (then, then))
    # and its snapshot's name and the epoch its description says it was asked at: what a run makes after its lock
    # was taken over is a live run's (it was only stopped), and that snapshot was made before those minutes
    meta, snaps = snapshots.load(host, vmid)
    for snap in snaps:
        snap["name"] = SNAPSHOT_PREFIX + datetime.fromtimestamp(then).strftime(layout.TS_FORMAT)
        snap["description"] = re.sub(r"asked=\d+", "asked=%d" % then, snap["description"])
    snapshots.save(host, vmid, meta, snaps)
    host.set_fault("clone.delay", "0")
    r = hotvcb(host, "cleanup", "-g", conf)
    assert "taking over the run lock" in r.stdout + r.stderr, r.stdout + r.stderr
    assert not os.path.exists(partial), r.stdout
    assert ours(host, vmid) == [], r.stdout


@needs_root
@pytest.mark.parametrize("planted", [
    "-partial owner file", "power-off marker"])
def test_a_planted_fifo_does_not_hang_cleanup(host, planted):
    """Anyone who can write the backup volume (another host on the NFS share) or an NFS datastore can plant a
    `-partial` folder whose owner file, or a VM folder whose power-off marker, is a FIFO. The restore records
    are read with read_regular for exactly this; cleanup must end, not hold the host's lock (so every backup)
    for ever. (A cleanup of one VM takes ~2 s here.)"""
    host.create_vm("web", "datastore1", [{"size": "4M"}], power="on")
    conf = write_conf(host)
    if planted == "power-off marker":
        fifo = host.real("/vmfs/volumes/datastore1/web") + "/.hotvcb-powered-off.web.vmx"
    else:
        folder = host.real(VOLUME) + "/web/web-2026-01-01_00-00-00-partial"
        os.makedirs(folder)
        fifo = folder + "/.hotvcb-owner"
    os.mkfifo(fifo)
    c = subprocess.Popen(_argv(host, ["cleanup", "-g", conf]), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, env=dict(os.environ, PYTHONPATH=REPO), cwd=REPO)
    try:
        try:
            out, _ = c.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            pytest.fail("cleanup still reading the FIFO after 20 s")
        assert c.returncode in (0, 1) and "Traceback" not in out, out
    finally:
        try:  # a reader stuck on the FIFO gets its EOF, whoever it is
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass
        if c.poll() is None:
            kill_all(c)


def test_a_vm_left_off_by_a_run_that_cannot_be_told_is_at_least_named(tmp_path):
    """A power-down backup in a container (another pid namespace) SIGKILLed: its marker cannot be judged by its
    pid and has no heartbeat, so it is left, as the docs say. Its snapshot is left with a warning; a VM kept off
    (an outage) must be named as well, or cleanup says "0 leftover(s)" and exits 0 over a production VM that
    stays down."""
    class Host:
        shell = LocalShell()

        def power_state(self, vm):
            return "off"

        def power_on(self, vm):
            raise AssertionError("powered on for a run that may live")

        def boot_stamp(self, vm):
            return "one boot"

    vm = SimpleNamespace(name="web", folder=str(tmp_path), ref=SimpleNamespace(vmx_path=str(tmp_path / "web.vmx")))
    other_ns = os.stat("/proc/self/ns/pid").st_ino + 1
    mark_powered_off(Host(), vm, RunId("0123456789ab", MACHINE, 7, 1, HOST, 5, pid_ns=other_ns), Log())
    log = Log()
    restore_power(Host(), vm, log, RunId.new().on_host(HOST))
    assert any("web" in line for line in log.lines), log.lines


@needs_qemu
def test_a_second_restore_into_the_dir_keeps_a_live_restores_folder_of_another_pid_namespace(tmp_path):
    """A KVM restore sweeps its DIR for dead restores' folders first: a live one running in a container (another
    pid namespace) is not dead."""
    needs("unshare")
    out = tmp_path / "out"
    out.mkdir()
    p, folder = live_restore(tmp_path, out, ("unshare", "-pf", "--mount-proc"))
    try:
        [rec] = records(out)
        small = esxi_backup(tmp_path / "vol-small", "small")
        r = subprocess.run([PYTHON, "-m", "hotvcb", "restore", small, "--kvm", str(out)], capture_output=True,
                           text=True, timeout=60, env=env(), cwd=REPO)
        assert r.returncode == 0, r.stdout + r.stderr
        assert os.path.isdir(folder) and os.listdir(folder) and rec in records(out), r.stdout + r.stderr
        assert os.path.isdir(os.path.join(str(out), "small")), r.stdout
    finally:
        kill_all(p)


# --- a KVM restore's folder (restore --kvm DIR; cleanup --kvm DIR) ---------------------------------------------

def live_restore(tmp_path, out, prefix=(), name="web"):
    """`hotvcb restore BACKUP --kvm out` converting slowly (8 MiB at 256 KiB/s), under `prefix`; the process once
    its unfinished folder has data."""
    backup = esxi_backup(tmp_path / ("vol-" + name), name, size=8 << 20, random_bytes=(8 << 20) - 8192)
    bindir = slow_qemu_img(str(tmp_path / "bin"), "256K")
    p = subprocess.Popen(list(prefix) + [PYTHON, "-m", "hotvcb", "restore", backup, "--kvm", str(out)],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env(bindir))
    folder = os.path.join(str(out), name + ".hotvcb-restoring")
    wait_until(lambda: (os.path.isdir(folder) and os.listdir(folder)) or p.poll() is not None, 60, "the convert")
    assert p.poll() is None, p.communicate()[0]
    return p, folder


def records(out):
    return sorted(f for f in os.listdir(str(out)) if f.endswith(".owner"))


def cleanup_kvm(out, prefix=(), python=PYTHON):
    r = subprocess.run(list(prefix) + [python, "-m", "hotvcb", "cleanup", "--kvm", str(out)], capture_output=True,
                       text=True, timeout=60, env=env(), cwd=REPO)
    r.out = r.stdout + r.stderr
    assert "Traceback" not in r.out, r.out
    return r


def kept(r, folder, out, recs):
    assert r.returncode == 0, r.out
    assert os.path.isdir(folder) and os.listdir(folder) and records(out) == recs, r.out
    assert "0 leftover(s) removed" in r.out, r.out


@needs_qemu
@pytest.mark.parametrize("who", ["restore", "cleanup"])
def test_a_live_restore_and_a_cleanup_in_different_pid_namespaces(tmp_path, who):
    """The restore in a pid namespace of its own (a container) and the cleanup outside, or the other way round:
    neither pid means anything to the other side; the folder is judged by its heartbeat, fresh, and kept."""
    needs("unshare")
    ns = ("unshare", "-pf", "--mount-proc")
    out = tmp_path / "out"
    out.mkdir()
    p, folder = live_restore(tmp_path, out, ns if who == "restore" else ())
    try:
        recs = records(out)
        r = cleanup_kvm(out, ns if who == "cleanup" else ())
        kept(r, folder, out, recs)
        assert "cannot be told from here" in r.out, r.out
    finally:
        kill_all(p)


@needs_qemu
def test_a_killed_restore_of_another_pid_namespace_goes_once_its_heartbeat_is_old(tmp_path):
    """The other side of "judged by its heartbeat": a restore killed with its container is not kept for ever;
    once its record missed its heartbeats (aged here past STALE_AFTER) cleanup removes folder and record."""
    needs("unshare")
    out = tmp_path / "out"
    out.mkdir()
    p, folder = live_restore(tmp_path, out, ("unshare", "-pf", "--mount-proc"))
    kill_all(p)
    [rec] = records(out)
    then = time.time() - 2 * STALE_AFTER
    os.utime(os.path.join(str(out), rec), (then, then))
    r = cleanup_kvm(out)
    assert r.returncode == 0 and "1 leftover(s) removed" in r.out, r.out
    assert not os.path.exists(folder) and records(out) == [], r.out


@needs_qemu
def test_a_cleanup_sharing_a_live_restores_pid_namespace_without_its_own_proc_keeps_its_folder(tmp_path):
    needs("unshare", "nsenter")
    out = tmp_path / "out"
    out.mkdir()
    p, folder = live_restore(tmp_path, out, ("unshare", "-pf"))  # the restore is pid 1 there; /proc/1 is init's
    try:
        recs = records(out)
        r = cleanup_kvm(out, ("nsenter", "-t", str(ns_init(p)), "-p"))
        kept(r, folder, out, recs)
    finally:
        kill_all(p)


@needs_qemu
def test_a_live_restore_seen_from_a_time_namespace_with_another_boot_offset_is_kept(tmp_path):
    """A cleanup whose boot-time offset differs sees every start time shifted: it cannot compare the record's
    pidstart, and takes the live hotvcb at its pid at its word."""
    needs("unshare")
    if subprocess.run(["unshare", "-T", "--boottime", "1000", "true"], capture_output=True).returncode:
        pytest.skip("no time namespaces here")
    out = tmp_path / "out"
    out.mkdir()
    p, folder = live_restore(tmp_path, out)
    try:
        recs = records(out)
        kept(cleanup_kvm(out, ("unshare", "-T", "--boottime", "1000")), folder, out, recs)
    finally:
        kill_all(p)


@needs_qemu
@pytest.mark.parametrize("hidepid", [False, True], ids=["plain-proc", "hidepid"])
def test_another_user_under_hidepid_keeps_a_live_root_restores_folder(tmp_path, hidepid):
    """`nobody` runs cleanup --kvm over a DIR everyone may write (it could rename the folder away) while root's
    restore converts into it. With /proc hidepid=2 the restore is alive (kill: EPERM) but hidden: judged by its
    heartbeat, kept; without, it is seen as the hotvcb its record names."""
    needs("unshare", "setpriv")
    if not os.path.exists(SYS_PYTHON):
        pytest.skip("no %s" % SYS_PYTHON)
    top = tempfile.mkdtemp(prefix="outsider-owner-")
    try:
        os.chmod(top, 0o755)
        out = os.path.join(top, "out")
        os.mkdir(out)
        with readable_code() as code:  # nobody may not reach the checkout (a clone under a 0700 folder)
            os.chmod(out, 0o777)
            p, folder = live_restore(tmp_path, out)
            try:
                recs = records(out)
                mount = "mount -t proc -o hidepid=2 proc /proc || exit 97; " if hidepid else ""
                script = mount + ("exec setpriv --reuid=65534 --regid=65534 --clear-groups %s -m hotvcb cleanup "
                                  "--kvm '%s'" % (SYS_PYTHON, out))
                r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                                   capture_output=True, text=True, cwd=code, timeout=60,
                                   env=dict(os.environ, PYTHONPATH=code))
                if r.returncode == 97:
                    pytest.skip("cannot mount /proc with hidepid here")
                r.out = r.stdout + r.stderr
                assert "Traceback" not in r.out, r.out
                kept(r, folder, out, recs)
                assert ("cannot be told from here" if hidepid else "of a running restore") in r.out, r.out
            finally:
                kill_all(p)
    finally:
        shutil.rmtree(top)


@needs_qemu
@pytest.mark.parametrize("change, removed", [("pid reused", True), ("older record, live", False),
                                             ("older record, dead", True)])
def test_records_of_a_real_restore_reused_pid_and_older_format(tmp_path, hotvcb_holder, change, removed):
    """A real restore's record, then: SIGKILLed and its pid now another hotvcb's (its start time kept: told
    dead); written by an older hotvcb (no pidns, pidstart) and still running (kept: the live hotvcb at its pid
    is taken at its word) or killed (gone: the record names this machine and its id)."""
    out = tmp_path / "out"
    out.mkdir()
    p, folder = live_restore(tmp_path, out)
    try:
        if change != "older record, live":
            kill_all(p)
        [rec] = records(out)
        path = os.path.join(str(out), rec)
        with open(path) as f:
            text = f.read()
        assert " pidns=" in text and " pidstart=" in text, text
        if change == "pid reused":
            text = re.sub(r" pid=\d+", " pid=%d" % hotvcb_holder, text, count=1)
        else:
            text = re.sub(r" (pidns|pidstart|bootoffset)=\S+", "", text)
        with open(path, "w") as f:
            f.write(text)
        r = cleanup_kvm(out)
        assert r.returncode == 0, r.out
        assert os.path.exists(folder) != removed and (records(out) == []) == removed, r.out
    finally:
        kill_all(p)


# --- forged and garbage records on a -partial folder of this host (through the job's own API) ------------------

def partial_with(tmp_path, text):
    folder = tmp_path / "web" / "web-2026-01-01_00-00-00-partial"
    folder.mkdir(parents=True)
    (folder / ".hotvcb-owner").write_text(text)
    return folder


GARBAGE = {  # the pidstart/pidns/bootoffset tail of a live hotvcb's record, and whether its folder must stay
    "its own": ("pidns={ns} pidstart={start}", True),
    "pidstart half-numeric": ("pidns={ns} pidstart={start}x", True),
    "pidstart negative": ("pidns={ns} pidstart=-{start}", True),
    "pidstart 0x": ("pidns={ns} pidstart=0x{start}", True),
    "pidstart one off": ("pidns={ns} pidstart={start_1}", False),
    "pidstart of 25 digits": ("pidns={ns} pidstart=" + "9" * 25, False),
    "pidns garbage": ("pidns=abc pidstart={start}", True),
    "pidns of 25 digits": ("pidns=" + "9" * 25 + " pidstart={start}", True),
    "pidns empty": ("pidns= pidstart={start}", True),
    "bootoffset garbage": ("pidns={ns} pidstart={start_1} bootoffset=1e9", True),
    "bootoffset of 30 digits": ("pidns={ns} pidstart={start_1} bootoffset=" + "1" * 30, True),
    "bootoffset negative": ("pidns={ns} pidstart={start_1} bootoffset=-5", True),
    "fields twice": ("pidns={ns} pidstart={start} pidstart={start_1}", True),
    "CRLF": ("pidns={ns} pidstart={start}\r", True),
}


@pytest.mark.parametrize("case", sorted(GARBAGE))
def test_forged_and_garbage_fields_on_a_live_hotvcbs_record(tmp_path, hotvcb_holder, case):
    """The record names this machine and host, and a live hotvcb's pid: a field that does not read is no field
    (never part of one), so the folder stays unless the record reads whole and tells another process."""
    tail, stays = GARBAGE[case]
    start = start_of(hotvcb_holder)
    text = "run=0123456789ab machine=%s pid=%d started=1 host=%s %s\n" % (
        MACHINE, hotvcb_holder, HOST, tail.format(ns=os.stat("/proc/self/ns/pid").st_ino, start=start,
                                                   start_1=start - 1))
    folder = partial_with(tmp_path, text)
    log = Log()
    removed = remove_partials(LocalShell(), str(tmp_path), "web", log, RunId.new().on_host(HOST))
    assert (removed, folder.exists()) == ((0, True) if stays else (1, False)), (text, log.lines)


def test_a_record_naming_the_cleanups_own_pid_in_another_run_is_a_dead_runs(tmp_path):
    """A record of our own pid but not our run was written by a process long gone (ours is this one): dead,
    and the folder of this host goes (a pid reused by us)."""
    me = RunId.new().with_process_start().on_host(HOST)
    text = "run=0123456789ab machine=%s pid=%d started=1 host=%s pidns=%d pidstart=%d\n" % (
        MACHINE, os.getpid(), HOST, me.pid_ns, me.pid_start)
    folder = partial_with(tmp_path, text)
    assert remove_partials(LocalShell(), str(tmp_path), "web", Log(), me) == 1
    assert not folder.exists()
    # ... but our own run's folder is never ours to remove
    folder = partial_with(tmp_path, me.text() + "\n")
    assert remove_partials(LocalShell(), str(tmp_path), "web", Log(), me) == 0 and folder.exists()

