"""The GC lock through its API (hotvcb.repo.gclock): what a lock records, which locks are a GC at work,
and the take-over guard. The outside tester's attacks through the CLI are tests/test_outsider_fixrepo.py."""

import os
import shutil
import socket
import subprocess

import pytest
from pidviews import hotvcb_holder, other_namespace, start_of  # noqa: F401  (the fixture: a live hotvcb process)
from repotool import HOUR, PYTHON, ROOT, MiB, age, backup, cli, make_disk, new_repo, one_clear_line

from hotvcb import pids, runid, thishost
from hotvcb.errors import RepoError
from hotvcb.repo import gclock
from hotvcb.repo.backend import LocalBackend
from hotvcb.repo.repository import Repository
from hotvcb.runid import RunId, parse

ANCIENT = 978307200  # 2001-01-01: older than any grace period


@pytest.fixture
def repo(tmp_path):
    return new_repo(tmp_path / "repo", settle=0)


def put(repo, text, name=gclock.LOCK, mtime=None):
    assert repo.backend.put_new(name, text.encode())
    if mtime is not None:
        path = os.path.join(repo.backend.root, name)
        os.utime(path, (mtime, mtime))


def test_a_gcs_lock_names_this_machine_its_id_and_when_its_process_started(repo):
    with gclock.gc_lock(repo):
        held = parse(repo.backend.get(gclock.LOCK).decode())
        assert held.machine == socket.gethostname() and held.pid == os.getpid()
        assert held.host and held.host == gclock.this_host()
        assert held.pid_start == start_of(os.getpid())
        assert held.pid_ns == os.stat("/proc/self/ns/pid").st_ino and held.boot_offset == 0
    assert repo.backend.stat(gclock.LOCK) is None


def test_without_a_machine_id_the_host_id_of_the_run_lock_is_used(tmp_path, monkeypatch):
    """An ESXi host has no /etc/machine-id: its GC locks carry the id its run lock's records carry."""
    monkeypatch.setattr(runid, "MACHINE_ID", str(tmp_path / "no-machine-id"))
    monkeypatch.setattr(thishost, "HOST_ID_DIR", str(tmp_path / "run"))
    gclock.this_host.cache_clear()
    try:
        first = gclock.this_host()
        with open(str(tmp_path / "run" / "hotvcb.hostid")) as f:
            assert first and f.read().strip() == first
    finally:
        gclock.this_host.cache_clear()


def test_a_reader_asking_about_the_gc_lock_makes_no_host_id(repo, tmp_path, monkeypatch):
    """A read-only repository command (verify, a restore's waits: settle.py) on an ESXi host (no
    /etc/machine-id) asks whether a lock of this machine's name is a GC at work: it reads the host id where one
    exists and never creates /var/run's id file (only a GC taking the lock makes it)."""
    from hotvcb.repo.settle import Settle, silent
    monkeypatch.setattr(runid, "MACHINE_ID", str(tmp_path / "no-machine-id"))
    monkeypatch.setattr(thishost, "HOST_ID_DIR", str(tmp_path / "run"))
    gclock.this_host.cache_clear()
    try:
        put(repo, RunId("0123456789ab", socket.gethostname(), 999999999, 1000, "abcdef012345").text())
        assert Settle(repo, silent).sweeping()  # another machine of this name: fresh, by its age a GC at work
        assert not os.path.exists(str(tmp_path / "run"))
    finally:
        gclock.this_host.cache_clear()


def test_the_repository_loads_without_the_backup_stores_code():
    """repo/ and store/ are sibling layers (docs/architecture.md): the GC lock takes the host id the run lock
    keeps from runid, which both use, not from store/lock.py."""
    code = ("import sys; sys.path.insert(0, %r); import hotvcb.repo.gc, hotvcb.repo.settle; "
            "print(sorted(m for m in sys.modules if m.startswith('hotvcb.store')))" % ROOT)
    r = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout == "[]\n", r.stdout + r.stderr


@pytest.mark.parametrize("host", ["", "this"])
def test_this_machines_lock_with_its_id_or_none_is_judged_by_its_pid(repo, host):
    """A lock written before locks carried an id is this machine's by its name alone; a dead pid is no GC
    however fresh its lock."""
    me = RunId.new()
    host = gclock.this_host() if host == "this" else ""
    put(repo, RunId("0123456789ab", me.machine, 999999999, 1000, host).text())
    assert gclock.stale(repo, me, gclock.read(repo))


def test_a_lock_of_another_host_with_this_machines_name_is_judged_by_its_age(repo):
    me = RunId.new()
    put(repo, RunId("0123456789ab", me.machine, 999999999, 1000, "another-host").text())
    assert not gclock.stale(repo, me, gclock.read(repo))  # fresh: a GC at work there, whatever its pid means here
    with pytest.raises(RepoError, match="another garbage collection"):
        with gclock.gc_lock(repo):
            pass
    os.utime(os.path.join(repo.backend.root, gclock.LOCK), (ANCIENT, ANCIENT))
    assert gclock.stale(repo, me, gclock.read(repo))


def test_a_fresh_takeover_guard_refuses_and_a_dead_takers_is_removed(repo):
    dead = RunId("0123456789ab", socket.gethostname(), 999999999, 1000).text()
    put(repo, dead)
    put(repo, "run=ba9876543210 machine=x pid=1 started=1\n", name=gclock.GUARD)
    with pytest.raises(RepoError, match="taking the lock over just now"):
        with gclock.gc_lock(repo):
            pass
    assert repo.backend.get(gclock.LOCK).decode() == dead  # left to the taker at work
    os.utime(os.path.join(repo.backend.root, gclock.GUARD), (ANCIENT, ANCIENT))
    with gclock.gc_lock(repo):
        assert parse(repo.backend.get(gclock.LOCK).decode()).pid == os.getpid()
        assert repo.backend.stat(gclock.GUARD) is None
    assert repo.backend.stat(gclock.LOCK) is None


class CountingGets(LocalBackend):
    """Counts the reads of the GC lock."""

    def __init__(self, root):
        super().__init__(root)
        self.gets = 0

    def get(self, name, offset=0, length=None):
        self.gets += name == gclock.LOCK
        return super().get(name, offset, length)


def test_a_takeover_reads_the_lock_once_before_its_guard_and_once_inside_it(repo):
    put(repo, RunId("0123456789ab", socket.gethostname(), 999999999, 1000, gclock.this_host()).text())
    counting = Repository(CountingGets(repo.backend.root), repo.config)
    with gclock.gc_lock(counting):
        assert counting.backend.gets == 2
        assert parse(repo.backend.get(gclock.LOCK).decode()).pid == os.getpid()
    assert repo.backend.stat(gclock.LOCK) is None


def test_stale_judges_the_lock_text_it_is_handed_not_the_one_stored_now(repo, hotvcb_holder):
    me = RunId.new()
    dead = RunId("0123456789ab", me.machine, 999999999, 1000, gclock.this_host()).text().encode()
    live = RunId("ba9876543210", me.machine, hotvcb_holder, 1000, gclock.this_host()).text().encode()
    put(repo, live.decode())
    assert gclock.stale(repo, me, dead) and not gclock.stale(repo, me, live)
    assert gclock.stale(repo, me, None)  # no lock


# --- a dead GC's pid reused by another hotvcb process ------------------------------------------------------------

@pytest.fixture
def aged_repo(tmp_path):
    """A repository holding a backup, aged past the grace period: a prune there runs GC."""
    repo = new_repo(tmp_path / "repo")
    disk = tmp_path / "disk.raw"
    make_disk(disk, size=4 * MiB, regions=4)
    backup(repo, "vm", disk)
    age(str(tmp_path / "repo"), HOUR)
    return repo


def lock_of(pid, pid_start):
    text = "run=0123456789ab machine=%s pid=%d started=1000 host=%s" % (socket.gethostname(), pid, gclock.this_host())
    return text + (" pidstart=%d\n" % pid_start if pid_start is not None else "\n")


def prune(repo):
    return cli("prune", "--repo", repo.backend.root, "--keep-last", 1)


def test_a_lock_whose_pid_now_is_another_hotvcb_started_later_is_taken_over(aged_repo, hotvcb_holder):
    """The dead GC's pid is a hotvcb process again, but not the one that wrote the lock: it started at
    another time than the lock records."""
    put(aged_repo, lock_of(hotvcb_holder, start_of(hotvcb_holder) - 1))
    r = prune(aged_repo)
    assert r.returncode == 0 and "garbage collection" in r.stdout, r.stdout + r.stderr
    assert aged_repo.backend.stat(gclock.LOCK) is None


@pytest.mark.parametrize("recorded", ["its own", "none"])
def test_a_lock_of_a_live_hotvcb_that_started_when_it_records_or_records_no_time_is_refused(aged_repo,
                                                                                           hotvcb_holder, recorded):
    """The lock's own process (its start time as recorded), or an older hotvcb's lock without the field (the
    rule before the field: any live hotvcb at that pid is a GC at work)."""
    text = lock_of(hotvcb_holder, start_of(hotvcb_holder) if recorded == "its own" else None)
    put(aged_repo, text)
    r = prune(aged_repo)
    assert r.returncode != 0 and "another garbage collection" in r.stderr, r.stdout + r.stderr
    one_clear_line(r)
    assert aged_repo.backend.get(gclock.LOCK).decode() == text


def test_where_the_start_time_cannot_be_read_a_live_hotvcbs_lock_is_a_gc_at_work(repo, hotvcb_holder,
                                                                                 monkeypatch):
    """ESXi has no /proc: a pid there is taken at its word, whatever start time a lock records; and the
    lock a GC writes there has no `pidstart` (an older hotvcb's lock text)."""
    monkeypatch.setattr(pids, "started", lambda pid: None)
    me = RunId.new()
    assert not gclock.stale(repo, me, lock_of(hotvcb_holder, 12345).encode())
    with gclock.gc_lock(repo):
        held = repo.backend.get(gclock.LOCK).decode()
        assert parse(held).pid_start is None and "pidstart" not in held


@pytest.mark.parametrize("field", ["pid", "pidstart", "started"])
def test_a_lock_with_a_number_no_process_has_is_judged_never_an_internal_error(aged_repo, hotvcb_holder, field):
    """Python 3.11+ (and 3.8.14+) turns no string of over 4,300 digits into an int. A planted lock of this machine
    is judged as one naming pid 0 or a 29-digit pid (test_outsider_gclock): a pid, or a start time, that no
    process has is a dead GC's lock, which prune takes over at once; its date only names it."""
    huge = "9" * 5000
    text = lock_of(hotvcb_holder, start_of(hotvcb_holder))
    if field == "pid":
        text = lock_of(0, None).replace("pid=0 ", "pid=%s " % huge)
    elif field == "pidstart":
        text = lock_of(hotvcb_holder, None).rstrip("\n") + " pidstart=%s\n" % huge
    else:
        text = text.replace("started=1000", "started=" + huge)
    put(aged_repo, text)
    r = prune(aged_repo)
    if field == "started":  # its own process, alive: a GC at work, whatever its date
        assert r.returncode == 1 and "another garbage collection" in r.stderr, r.stdout + r.stderr[:500]
        one_clear_line(r)
        assert aged_repo.backend.get(gclock.LOCK).decode() == text
    else:
        assert r.returncode == 0 and "garbage collection" in r.stdout, r.stdout + r.stderr[:500]
        assert aged_repo.backend.stat(gclock.LOCK) is None


def test_the_start_time_of_a_process_whose_name_holds_spaces_and_parentheses(tmp_path):
    """/proc/PID/stat's second field is the command name in parentheses, which may hold both: the start time
    is the 22nd field counted after it. The process started while the machine's uptime went from `before`
    to `after` (clock ticks since boot)."""
    odd = tmp_path / "a) b (c"
    os.symlink(shutil.which("sleep"), str(odd))
    tick = os.sysconf("SC_CLK_TCK")

    def uptime():
        with open("/proc/uptime") as f:
            return float(f.read().split()[0]) * tick

    before = uptime()
    proc = subprocess.Popen([str(odd), "300"])
    try:
        after = uptime()
        with open("/proc/%d/stat" % proc.pid) as f:
            assert "(a) b (c)" in f.read()
        assert before - 1 <= pids.started(proc.pid) <= after + 1
    finally:
        proc.kill()
        proc.wait()
    assert pids.started(proc.pid) is None  # gone


# --- one machine, other views of its pids ----------------------------------------------------------------------

def test_a_lock_of_another_pid_namespace_of_this_machine_is_judged_by_its_age(repo, hotvcb_holder):
    """A GC in a container on this machine (its hostname, its machine id) counts its own pids: a fresh lock is a GC
    at work though its pid is dead here, and an old one is no GC though its pid is a live hotvcb here that started
    when the lock says."""
    me = RunId.new()
    dead = RunId("0123456789ab", me.machine, 999999999, 1000, gclock.this_host(), 5, pid_ns=other_namespace())
    put(repo, dead.text())
    assert not gclock.stale(repo, me, gclock.read(repo))
    live = RunId("ba9876543210", me.machine, hotvcb_holder, 1000, gclock.this_host(), start_of(hotvcb_holder),
                 pid_ns=other_namespace()).text()
    os.utime(os.path.join(repo.backend.root, gclock.LOCK), (ANCIENT, ANCIENT))
    assert gclock.stale(repo, me, live.encode())
    ours = live.replace(" pidns=%d " % other_namespace(), " pidns=%d " % (other_namespace() - 1))
    assert ours != live and not gclock.stale(repo, me, ours.encode())  # our namespace: judged by its pid


RECORD_IN_A_TIME_NAMESPACE = """
import sys
from hotvcb.runid import RunId
print(RunId.new().with_process_start().text(), flush=True)
sys.stdin.read()
"""


def test_a_start_time_seen_with_another_boot_time_offset_is_not_compared_with_ours(repo):
    """/proc shows a process's start time shifted by the reader's time namespace: a GC in one with a boot-time
    offset records it beside its start time, and a reader with another offset takes the live hotvcb at its word
    (the same record without the offset is compared, and found to be of another process)."""
    if not shutil.which("unshare") or subprocess.run(["unshare", "-T", "--boottime", "1000", "true"]).returncode:
        pytest.skip("no time namespaces here")
    gc = subprocess.Popen(["unshare", "-T", "--boottime", "1000", PYTHON, "-c", RECORD_IN_A_TIME_NAMESPACE,
                           "hotvcb"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    try:
        text = gc.stdout.readline()
        held = parse(text)
        assert held.pid == gc.pid and held.boot_offset == 1000 * 10 ** 9, text
        assert held.pid_start == start_of(gc.pid) + 1000 * os.sysconf("SC_CLK_TCK"), text
        me = RunId.new()
        assert not gclock.stale(repo, me, text.encode())
        assert gclock.stale(repo, me, text.replace(" bootoffset=%d" % held.boot_offset, "").encode())
    finally:
        gc.communicate("", timeout=60)


@pytest.mark.parametrize("text, pid_start", [
    ("pidstart=12", 12), ("pidstart=12 bootoffset=-5", 12), ("pidstart=12, job x", 12),
    ("pidstart=12x", None), ("pidstart=1.5", None), ("pidstart=\u0661\u0662", None), ("pidstart=+12", None),
    ("pidstart=12 bootoffset=1.5", None), ("pidstart=12 bootoffset=", None),
    ("pidstart=12 bootoffset=" + "9" * 21, None),
])
def test_a_records_start_time_is_read_whole_or_not_at_all(text, pid_start):
    """Never a part of a number, nor Unicode digits, nor a start time whose view (the offset) cannot be read: the
    rule for a record without one (a live hotvcb at the pid is taken at its word)."""
    held = parse("run=0123456789ab machine=m pid=5 started=1000 host=h " + text)
    assert held.pid == 5 and held.pid_start == pid_start


@pytest.mark.parametrize("tail", ["", ", job nightly", "\n", " host=h pidns=12x pidstart=3"])
def test_a_record_ends_its_numbers_at_a_space_a_comma_or_its_end(tail):
    """A snapshot description goes on after its record with a comma; a malformed `pidns` is none (judged by pid)."""
    held = parse("hotvcb backup run=0123456789ab machine=m pid=5 started=1000" + tail)
    assert held.started == 1000 and held.pid_ns is None


@pytest.mark.parametrize("started", ["1000.5", "1000x", "\u0661\u0660"])
def test_a_record_whose_pid_or_date_is_no_whole_number_is_no_record(started):
    assert parse("run=0123456789ab machine=m pid=5 started=%s host=h" % started) is None
    assert parse("run=0123456789ab machine=m pid=5x started=1000 host=h") is None
