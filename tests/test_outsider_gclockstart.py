"""Outside tester: the GC lock's `pidstart` (repo/gclock.py, pids.started, runid.parse).

Attacks through `python3 -m hotvcb prune/verify --repo`: garbage pidstart values, a live hotvcb or a live
other program at the lock's pid with a matching or another start time, a process name holding ") ", a lock
in the older format, a real prune paused or SIGKILLed while it holds the lock, a host without /proc
(unshare -m and an empty tmpfs on /proc), and a locks/gc that is a FIFO, a symlink or a huge file.
"""

import datetime
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest
from repotool import HOUR, PYTHON, ROOT, MiB, age, backup, make_disk, new_repo, one_clear_line

from asuser import SYS_PYTHON, readable_code
from pidviews import holder, hotvcb_holder  # noqa: F401  (fixtures: a reused pid, a GC at work)
from test_outsider_gclock import (ANCIENT, KILL_AFTER, gc_ran, lock_path, make_repo, no_trace, prune,
                                  put_lock, verify)

from hotvcb.repo import gclock

HOSTNAME = socket.gethostname()
NO_PID = 4194000  # below Linux's cap, above this machine's pid_max: no process has it


def ticks(pid, comm=None):
    """Field 22 of /proc/PID/stat, read independently of pids.started: where the process name is known, the
    prefix `PID (COMM) ` is cut by its length, not by searching for ')'."""
    with open("/proc/%d/stat" % pid, "rb") as f:
        stat = f.read()
    if comm is not None:
        prefix = b"%d (%s) " % (pid, comm)
        assert stat.startswith(prefix), stat
        return int(stat[len(prefix):].split()[19])
    return int(stat.rsplit(b")", 1)[1].split()[19])


def lock_text(pid, pidstart=None, host="ours", machine=None, raw_pidstart=None):
    text = "run=0123456789ab machine=%s pid=%d started=1000" % (machine or HOSTNAME, pid)
    if host == "ours":
        host = gclock.this_host()
    if host:
        text += " host=%s" % host
    if pidstart is not None:
        text += " pidstart=%d" % pidstart
    if raw_pidstart is not None:
        text += " pidstart=" + raw_pidstart
    return text + "\n"


def refused_and_kept(repo, r, text):
    assert r.returncode != 0, r.stdout + r.stderr
    one_clear_line(r)
    assert "another garbage collection" in r.stderr, r.stderr
    assert open(lock_path(repo)).read() == text


def no_proc(*args, timeout=60):
    """hotvcb's CLI run where /proc shows nothing (an empty tmpfs over it in a mount namespace of its own)."""
    if not shutil.which("unshare"):
        pytest.skip("no unshare")
    cmd = " ".join("'%s'" % str(a).replace("'", "'\\''") for a in args)
    script = "mount -t tmpfs none /proc || exit 97; test ! -e /proc/self || exit 98; exec %s" % cmd
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script], capture_output=True,
                       text=True, cwd=ROOT, timeout=timeout, env=dict(os.environ, PYTHONPATH=ROOT))
    if r.returncode in (97, 98) or "Operation not permitted" in r.stderr and "unshare" in r.stderr:
        pytest.skip("cannot hide /proc here: %s" % r.stderr)
    return r


def lost_pack_repo(tmp_path):
    """Two backups in a repository with a settle time (so a reader asks the GC lock), one pack deleted."""
    repo = new_repo(tmp_path / "repo", settle=3600)
    disk = tmp_path / "disk.raw"
    for i in range(2):
        make_disk(str(disk), size=4 * MiB, seed=10 + i, regions=4)
        backup(repo, "vm", str(disk), when=datetime.datetime(2020, 1, 1 + i, 12))
    repo = tmp_path / "repo"
    packs = sorted(os.path.join(d, f) for d, _s, fs in os.walk(str(repo / "packs")) for f in fs)
    os.unlink(packs[0])
    return repo


@pytest.fixture
def named_holder():
    """A live hotvcb-named process whose name (comm) holds ') ' and stat-like fields."""
    comm = b"x) R 1 2 3 ) ("
    code = ("import sys, time; open('/proc/self/comm', 'wb').write(%r); print('up', flush=True); time.sleep(300)"
            % comm)
    proc = subprocess.Popen([sys.executable, "-c", code, "hotvcb", "gc"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "up\n"
    yield proc.pid, comm
    proc.kill()
    proc.wait()
    proc.stdout.close()


# --- a live GC at the lock's pid: respected only with its own start time --------------------------------------

def test_a_live_hotvcb_with_the_locks_pidstart_is_a_gc_at_work_however_old_the_lock(tmp_path, hotvcb_holder):
    repo = make_repo(tmp_path)
    text = lock_text(hotvcb_holder, ticks(hotvcb_holder))
    put_lock(repo, text, mtime=ANCIENT)
    refused_and_kept(repo, prune(repo), text)


@pytest.mark.parametrize("delta", [-1, 1, 100000])
def test_a_live_hotvcb_started_at_another_time_than_the_lock_says_is_no_gc(tmp_path, hotvcb_holder, delta):
    repo = make_repo(tmp_path)
    put_lock(repo, lock_text(hotvcb_holder, max(0, ticks(hotvcb_holder) + delta)))
    r = prune(repo)
    assert gc_ran(r), r.stdout + r.stderr
    assert not os.path.lexists(lock_path(repo))
    assert verify(repo).returncode == 0


def test_a_live_other_program_with_the_locks_pidstart_is_no_gc(tmp_path, holder):
    repo = make_repo(tmp_path)
    put_lock(repo, lock_text(holder, ticks(holder)))
    r = prune(repo)
    assert gc_ran(r), r.stdout + r.stderr


@pytest.mark.parametrize("host", ["ours", ""])
def test_an_older_hotvcbs_lock_without_pidstart_held_by_a_live_hotvcb_is_respected(tmp_path, hotvcb_holder, host):
    repo = make_repo(tmp_path)
    text = lock_text(hotvcb_holder, host=host)
    put_lock(repo, text, mtime=ANCIENT)
    refused_and_kept(repo, prune(repo), text)


def test_a_process_name_holding_parens_and_fields_is_parsed_right_respected(tmp_path, named_holder):
    pid, comm = named_holder
    repo = make_repo(tmp_path)
    text = lock_text(pid, ticks(pid, comm))
    put_lock(repo, text)
    refused_and_kept(repo, prune(repo), text)


def test_a_process_name_holding_parens_and_fields_with_another_start_is_taken_over(tmp_path, named_holder):
    pid, comm = named_holder
    repo = make_repo(tmp_path)
    put_lock(repo, lock_text(pid, ticks(pid, comm) + 7))
    r = prune(repo)
    assert gc_ran(r), r.stdout + r.stderr


# --- garbage pidstart ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("garbage", ["-5", "abc", "", " 12", "+3", "1e3x", "1.5", "0x10",
                                     "\u0663\u0664"])
def test_garbage_pidstart_of_a_live_hotvcb_is_no_traceback_and_never_drops_a_gc_at_work(
        tmp_path, hotvcb_holder, garbage):
    """A value no GC writes proves nothing against a live hotvcb at the pid: the old rule (a GC at work)."""
    repo = make_repo(tmp_path)
    text = lock_text(hotvcb_holder, raw_pidstart=garbage)
    put_lock(repo, text)
    r = prune(repo)
    no_trace(r)
    refused_and_kept(repo, r, text)


@pytest.mark.parametrize("value", ["9" * 30, "0", "0" * 40 + "1"])
def test_out_of_range_pidstart_is_no_traceback(tmp_path, hotvcb_holder, value):
    repo = make_repo(tmp_path)
    put_lock(repo, lock_text(hotvcb_holder, raw_pidstart=value))
    r = prune(repo)
    no_trace(r)
    assert gc_ran(r), r.stdout + r.stderr  # a start time the live process does not have: no GC of it


@pytest.mark.parametrize("python", ["python3", "host"])
@pytest.mark.parametrize("field", ["pidstart", "pid", "started"])
def test_a_number_of_thousands_of_digits_is_no_internal_error(tmp_path, hotvcb_holder, python, field):
    repo = make_repo(tmp_path)
    text = lock_text(hotvcb_holder, raw_pidstart="9" * 5000)
    if field != "pidstart":
        was = " pid=%d " % hotvcb_holder if field == "pid" else " started=1000 "
        text = lock_text(hotvcb_holder, 5).replace(was, " %s=%s " % (field, "9" * 5000), 1)
        assert text.count("9" * 5000) == 1
    put_lock(repo, text)
    exe = sys.executable if python == "python3" else PYTHON
    r = subprocess.run([exe, "-m", "hotvcb", "prune", "--repo", str(repo), "--keep-last", "1"], capture_output=True,
                       text=True, cwd=ROOT, timeout=60, env=dict(os.environ, PYTHONPATH=ROOT))
    no_trace(r)
    if r.returncode != 0:
        one_clear_line(r)


def test_verify_reports_a_lost_pack_even_with_a_pidstart_of_thousands_of_digits(tmp_path):
    repo = lost_pack_repo(tmp_path)
    put_lock(repo, lock_text(NO_PID, raw_pidstart="9" * 5000))
    r = verify(repo)
    no_trace(r)
    assert r.returncode != 0 and "DAMAGED" in r.stdout + r.stderr


@pytest.mark.parametrize("order", ["right-first", "wrong-first"])
def test_a_repeated_pidstart_key_is_no_traceback(tmp_path, hotvcb_holder, order):
    repo = make_repo(tmp_path)
    right, wrong = str(ticks(hotvcb_holder)), str(ticks(hotvcb_holder) + 3)
    first, second = (right, wrong) if order == "right-first" else (wrong, right)
    put_lock(repo, lock_text(hotvcb_holder, raw_pidstart=first + " pidstart=" + second))
    r = prune(repo)
    no_trace(r)
    if r.returncode != 0:
        one_clear_line(r)


# --- a real prune holding the lock -----------------------------------------------------------------------------

PAUSE_AFTER = r"""
import os, sys, time
sys.path.insert(0, sys.argv[1])
from hotvcb.repo import backend
name_wanted, flags = sys.argv[2], sys.argv[3]
real = backend.LocalBackend.put_new
def put_new(self, name, data):
    ok = real(self, name, data)
    if ok and (name == name_wanted or name_wanted.endswith("/") and name.startswith(name_wanted)):
        open(os.path.join(flags, "held"), "w").close()
        deadline = time.monotonic() + 80  # a bound for a test gone wrong, not a timing relied on
        while not os.path.exists(os.path.join(flags, "go")) and time.monotonic() < deadline:
            time.sleep(0.05)
    return ok
backend.LocalBackend.put_new = put_new
sys.argv = ["hotvcb"] + sys.argv[4:]
from hotvcb.__main__ import main
sys.exit(main())
"""


def paused_prune(repo, flags, name=gclock.LOCK, runner=()):
    flags.mkdir(exist_ok=True)
    cmd = list(runner) + [PYTHON, "-c", PAUSE_AFTER, ROOT, name, str(flags), "prune", "--repo", str(repo),
                          "--keep-last", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=ROOT))
    deadline = time.monotonic() + 60
    while not (flags / "held").exists():
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return proc


def finish(proc, flags):
    (flags / "go").touch()
    out = proc.communicate(timeout=80)[0]
    return proc.returncode, out


def test_a_real_prune_records_its_own_start_and_a_second_prune_refuses_until_it_is_done(tmp_path):
    repo = make_repo(tmp_path, backups=3)
    flags = tmp_path / "flags"
    a = paused_prune(repo, flags)
    try:
        text = open(lock_path(repo)).read()
        assert " pid=%d " % a.pid in text and "pidstart=%d" % ticks(a.pid) in text.split(), text
        os.utime(lock_path(repo), (ANCIENT, ANCIENT))  # a GC longer than the grace period: still at work
        r = prune(repo)
        refused_and_kept(repo, r, text)
        r = verify(repo)
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        code, out = finish(a, flags)
    assert code == 0 and "garbage collection" in out, out
    assert not os.path.lexists(lock_path(repo))
    assert verify(repo).returncode == 0


def test_a_prune_sigkilled_mid_gc_then_another_prune_takes_its_lock_and_nothing_is_lost(tmp_path):
    repo = make_repo(tmp_path, backups=4)
    flags = tmp_path / "flags"
    a = paused_prune(repo, flags, name="condemned/")  # its mark written: GC under way
    text = open(lock_path(repo)).read()
    a.send_signal(signal.SIGKILL)
    a.communicate(timeout=30)
    assert a.returncode == -9
    assert open(lock_path(repo)).read() == text
    r = prune(repo)
    assert gc_ran(r), r.stdout + r.stderr
    age(str(repo), HOUR)
    r = prune(repo)
    assert gc_ran(r), r.stdout + r.stderr
    assert not os.path.lexists(lock_path(repo))
    r = verify(repo)
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_lock_of_a_prune_sigkilled_holding_it_is_not_taken_for_a_live_hotvcb_reusing_its_pid(tmp_path,
                                                                                          hotvcb_holder):
    """The dead prune's record, its pid replaced by a live hotvcb's (what a reuse of the pid looks like)."""
    repo = make_repo(tmp_path, backups=3)
    flags = tmp_path / "flags"
    a = paused_prune(repo, flags)
    text = open(lock_path(repo)).read()
    a.send_signal(signal.SIGKILL)
    a.communicate(timeout=30)
    reused = text.replace(" pid=%d " % a.pid, " pid=%d " % hotvcb_holder)
    assert reused != text
    put_lock(repo, reused)
    r = prune(repo)
    assert gc_ran(r), r.stdout + r.stderr


# --- no /proc (an ESXi host, or /proc hidden) ------------------------------------------------------------------

def test_without_proc_a_live_hotvcb_with_another_pidstart_keeps_the_old_rule(tmp_path, hotvcb_holder):
    repo = make_repo(tmp_path)
    text = lock_text(hotvcb_holder, ticks(hotvcb_holder) + 5)
    put_lock(repo, text)
    r = no_proc(PYTHON, "-m", "hotvcb", "prune", "--repo", repo, "--keep-last", "1")
    refused_and_kept(repo, r, text)


def test_without_proc_a_dead_pid_lock_with_pidstart_is_taken_over(tmp_path):
    repo = make_repo(tmp_path)
    put_lock(repo, lock_text(NO_PID, 12345))
    r = no_proc(PYTHON, "-m", "hotvcb", "prune", "--repo", repo, "--keep-last", "1")
    assert gc_ran(r), r.stdout + r.stderr


def test_without_proc_a_prunes_lock_carries_no_pidstart(tmp_path):
    repo = make_repo(tmp_path, backups=3)
    if not shutil.which("unshare"):
        pytest.skip("no unshare")
    script = "mount -t tmpfs none /proc || exit 97; exec \"$@\""
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", PYTHON, "-c",
                        KILL_AFTER, ROOT, gclock.LOCK, "1", "prune", "--repo", str(repo), "--keep-last", "1"],
                       capture_output=True, text=True, cwd=ROOT, timeout=60, env=dict(os.environ, PYTHONPATH=ROOT))
    if r.returncode == 97:
        pytest.skip("cannot hide /proc")
    assert r.returncode in (-9, 137), (r.returncode, r.stdout, r.stderr)
    text = open(lock_path(repo)).read()
    assert "pidstart" not in text and "machine=%s " % HOSTNAME in text, text
    r = prune(repo)  # with /proc again: its pid is gone, so it is taken over at once
    assert gc_ran(r), r.stdout + r.stderr


# --- a locks/gc that is no plain small file --------------------------------------------------------------------

def test_a_lock_that_is_a_fifo_does_not_hang_prune(tmp_path):
    repo = make_repo(tmp_path)
    p = lock_path(repo)
    os.mkfifo(p)
    os.utime(p, (ANCIENT, ANCIENT))
    try:
        r = prune(repo, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("prune hangs on a FIFO at locks/gc")
    no_trace(r)
    if r.returncode != 0:
        one_clear_line(r)


def test_a_lock_that_is_a_fifo_does_not_hang_verify(tmp_path):
    repo = lost_pack_repo(tmp_path)
    p = lock_path(repo)
    os.mkfifo(p)
    try:
        r = verify(repo)
    except subprocess.TimeoutExpired:
        pytest.fail("verify hangs on a FIFO at locks/gc")
    no_trace(r)
    assert r.returncode != 0


def test_a_lock_symlinked_to_a_live_gcs_record_elsewhere_is_respected_and_the_target_kept(tmp_path,
                                                                                         hotvcb_holder):
    repo = make_repo(tmp_path)
    target = tmp_path / "elsewhere.txt"
    text = lock_text(hotvcb_holder, ticks(hotvcb_holder))
    target.write_text(text)
    os.makedirs(os.path.dirname(lock_path(repo)), exist_ok=True)
    os.symlink(str(target), lock_path(repo))
    r = prune(repo)
    no_trace(r)
    assert r.returncode != 0
    assert target.read_text() == text


def test_a_lock_symlinked_to_a_dead_record_elsewhere_removes_the_link_not_the_file(tmp_path):
    repo = make_repo(tmp_path)
    target = tmp_path / "elsewhere.txt"
    text = lock_text(NO_PID, 5)
    target.write_text(text)
    os.makedirs(os.path.dirname(lock_path(repo)), exist_ok=True)
    os.symlink(str(target), lock_path(repo))
    r = prune(repo)
    no_trace(r)
    assert target.read_text() == text
    if r.returncode != 0:
        one_clear_line(r)


def test_a_huge_lock_file_with_a_live_gcs_record_at_its_end_is_no_traceback(tmp_path, hotvcb_holder):
    repo = make_repo(tmp_path)
    p = lock_path(repo)
    with open(p, "wb") as f:
        f.write(b"x" * (64 << 20))
        f.write(b" " + lock_text(hotvcb_holder, ticks(hotvcb_holder)).encode())
    r = prune(repo, timeout=80)
    no_trace(r)
    assert r.returncode != 0  # a live GC's record, fresh: at work
    one_clear_line(r)
    assert len(r.stderr) < 2000
    assert os.path.getsize(p) > 64 << 20


# --- two prunes and a backup at once ---------------------------------------------------------------------------

def test_two_prunes_and_a_backup_racing_leave_every_kept_backup_whole(tmp_path):
    repo = make_repo(tmp_path, backups=4)
    disk = tmp_path / "disk2.raw"
    make_disk(str(disk), size=4 * 1048576, seed=11, regions=4)  # the content of a backup prune may remove
    env = dict(os.environ, PYTHONPATH=ROOT)
    procs = [subprocess.Popen([PYTHON, "-m", "hotvcb", "prune", "--repo", str(repo), "--keep-last", "1"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=env)
             for _ in range(2)]
    procs.append(subprocess.Popen([PYTHON, os.path.join(ROOT, "tests", "repotool.py"), "backup", str(repo), "vm2",
                                   str(disk)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  cwd=ROOT, env=env))
    outs = [(p.communicate(timeout=80)[0], p.returncode) for p in procs]
    for out, _code in outs:
        assert "Traceback" not in out and "internal error" not in out, out
    assert outs[2][1] == 0, outs[2][0]
    assert any(code == 0 for out, code in outs[:2]), outs
    assert not os.path.lexists(lock_path(repo)) and not os.path.lexists(lock_path(repo, gclock.GUARD))
    r = verify(repo)
    assert r.returncode == 0, r.stdout + r.stderr


# --- one machine, two views of its pids ------------------------------------------------------------------------

def test_a_live_gc_in_another_pid_namespace_of_this_machine_is_not_taken_over(tmp_path):
    if not shutil.which("unshare"):
        pytest.skip("no unshare")
    probe = subprocess.run(["unshare", "-p", "-f", "--mount-proc", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("no pid namespaces here")
    repo = make_repo(tmp_path, backups=3)
    flags = tmp_path / "flags"
    a = paused_prune(repo, flags, runner=["unshare", "-p", "-f", "--mount-proc"])
    try:
        text = open(lock_path(repo)).read()
        r = prune(repo)
        held = open(lock_path(repo)).read() if os.path.lexists(lock_path(repo)) else None
    finally:
        code, out = finish(a, flags)
    assert r.returncode != 0 and held == text, (text, r.stdout + r.stderr)




@pytest.fixture
def shared_repo():
    """A repository every user may write (and reach: pytest's tmp_path is under a folder of mode 700)."""
    top = tempfile.mkdtemp(prefix="gclockstart-", dir="/tmp")
    os.chmod(top, 0o755)
    repo = make_repo(pathlib.Path(top))
    os.makedirs(lock_path(repo).rsplit("/", 1)[0], exist_ok=True)
    for folder, dirs, files in os.walk(top):
        for name in dirs + files:
            os.chmod(os.path.join(folder, name), 0o777)
    yield repo
    shutil.rmtree(top)


def prune_as_nobody(repo, hidepid):
    if not (shutil.which("unshare") and shutil.which("setpriv") and os.path.exists(SYS_PYTHON)) or os.getuid():
        pytest.skip("needs root, unshare, setpriv and %s" % SYS_PYTHON)
    mount = "mount -t proc -o hidepid=2 proc /proc || exit 97; " if hidepid else ""
    script = mount + ("exec setpriv --reuid=65534 --regid=65534 --clear-groups %s -m hotvcb prune --repo '%s' "
                      "--keep-last 1" % (SYS_PYTHON, repo))
    with readable_code() as code:  # nobody may not reach the checkout (a clone under a 0700 folder)
        r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script], capture_output=True,
                           text=True, cwd=code, timeout=60, env=dict(os.environ, PYTHONPATH=code))
    if r.returncode == 97:
        pytest.skip("cannot mount /proc with hidepid here")
    return r


def test_control_another_user_respects_a_live_root_gcs_lock(shared_repo, hotvcb_holder):
    text = lock_text(hotvcb_holder, ticks(hotvcb_holder))
    put_lock(shared_repo, text)
    os.chmod(lock_path(shared_repo), 0o666)
    refused_and_kept(shared_repo, prune_as_nobody(shared_repo, hidepid=False), text)


def test_with_proc_hidepid_another_user_respects_a_live_root_gcs_lock(shared_repo, hotvcb_holder):
    text = lock_text(hotvcb_holder, ticks(hotvcb_holder))
    put_lock(shared_repo, text)
    os.chmod(lock_path(shared_repo), 0o666)
    refused_and_kept(shared_repo, prune_as_nobody(shared_repo, hidepid=True), text)


# --- a GC stopped or dead but not reaped -----------------------------------------------------------------------

def test_a_stopped_gc_with_its_pidstart_is_still_a_gc_at_work(tmp_path, hotvcb_holder):
    repo = make_repo(tmp_path)
    text = lock_text(hotvcb_holder, ticks(hotvcb_holder))
    put_lock(repo, text, mtime=ANCIENT)
    os.kill(hotvcb_holder, signal.SIGSTOP)
    try:
        r = prune(repo)
    finally:
        os.kill(hotvcb_holder, signal.SIGCONT)
    refused_and_kept(repo, r, text)


def test_a_killed_gc_not_yet_reaped_a_zombie_is_no_gc(tmp_path):
    repo = make_repo(tmp_path)
    proc = subprocess.Popen([sys.executable, "-c", "import time; print('up', flush=True); time.sleep(300)", "hotvcb",
                             "gc"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "up\n"
        start = ticks(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while open("/proc/%d/stat" % proc.pid).read().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        put_lock(repo, lock_text(proc.pid, start))
        r = prune(repo)
        assert gc_ran(r), r.stdout + r.stderr
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def test_a_prune_in_a_time_namespace_respects_a_live_gc_with_its_pidstart(tmp_path, hotvcb_holder):
    if not shutil.which("unshare"):
        pytest.skip("no unshare")
    probe = subprocess.run(["unshare", "-T", "--boottime", "1000", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("no time namespaces here")
    repo = make_repo(tmp_path)
    text = lock_text(hotvcb_holder, ticks(hotvcb_holder))
    put_lock(repo, text)
    r = subprocess.run(["unshare", "-T", "--boottime", "1000", PYTHON, "-m", "hotvcb", "prune", "--repo", str(repo),
                        "--keep-last", "1"], capture_output=True, text=True, cwd=ROOT, timeout=60,
                       env=dict(os.environ, PYTHONPATH=ROOT))
    refused_and_kept(repo, r, text)


def test_control_a_prune_in_a_time_namespace_takes_over_a_dead_gcs_lock(tmp_path):
    if not shutil.which("unshare"):
        pytest.skip("no unshare")
    repo = make_repo(tmp_path)
    put_lock(repo, lock_text(NO_PID, 5))
    r = subprocess.run(["unshare", "-T", "--boottime", "1000", PYTHON, "-m", "hotvcb", "prune", "--repo", str(repo),
                        "--keep-last", "1"], capture_output=True, text=True, cwd=ROOT, timeout=60,
                       env=dict(os.environ, PYTHONPATH=ROOT))
    if r.returncode != 0 and "unshare" in r.stderr:
        pytest.skip("no time namespaces here")
    assert gc_ran(r), r.stdout + r.stderr


# --- readers (verify) ask the same question ----------------------------------------------------------------------

def test_verify_waits_for_a_live_gc_with_its_pidstart_and_a_signal_ends_the_wait(tmp_path, hotvcb_holder):
    repo = lost_pack_repo(tmp_path)
    put_lock(repo, lock_text(hotvcb_holder, ticks(hotvcb_holder)))
    proc = subprocess.Popen(["timeout", "80", PYTHON, "-m", "hotvcb", "verify", "--repo", str(repo)],  # a bound only
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=ROOT))
    seen = []
    try:
        for line in proc.stdout:  # ends at EOF if verify never waits (the test then fails below)
            seen.append(line)
            if "waiting up to" in line:
                proc.send_signal(signal.SIGTERM)
                break
        rest = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = "".join(seen) + rest
    assert any("waiting up to" in l for l in seen), out
    assert proc.returncode != 0 and "Traceback" not in out and "internal error" not in out, out


def test_verify_does_not_wait_for_a_live_hotvcb_started_at_another_time(tmp_path, hotvcb_holder):
    repo = lost_pack_repo(tmp_path)
    put_lock(repo, lock_text(hotvcb_holder, ticks(hotvcb_holder) + 1))
    r = verify(repo)
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "DAMAGED" in out and "waiting up to" not in out, out
