"""Outside tester's attacks on the repository GC lock (hotvcb/repo/gclock.py, docs/repository.md
"Garbage collection and concurrency") and on the threaded block digest (hotvcb/blockdigest.py,
docs/backup-format.md "File digests (version 2)"), through the CLI where there is one."""

import datetime
import hashlib
import json
import os
import socket
import stat
import subprocess
import sys

import pytest
from repotool import HOUR, MiB, PYTHON, ROOT, age, backup, cli, make_disk, new_repo, one_clear_line

from pidviews import holder, hotvcb_holder  # noqa: F401  (fixtures: a reused pid, a GC at work)
from qemuvm import env as qenv, needs_qemu
from test_qemu_backup import _image, lab  # noqa: F401  (the fixture)

from hotvcb import blockdigest
from hotvcb.repo import gclock

BS = 1 << 20
ANCIENT = 978307200
DEAD_PID = 999999999
BLOCKDIGEST = os.path.join(ROOT, "hotvcb", "blockdigest.py")


# --- helpers ------------------------------------------------------------------------------------------------------

def make_repo(tmp_path, backups=2):
    """A repository with `backups` backups of one VM (different content), aged past the grace period."""
    repo = new_repo(tmp_path / "repo")
    disk = tmp_path / "disk.raw"
    for i in range(backups):
        make_disk(str(disk), size=4 * MiB, seed=10 + i, regions=4)
        backup(repo, "vm", str(disk), when=datetime.datetime(2020, 1, 1 + i, 12))
    age(str(tmp_path / "repo"), HOUR)
    return tmp_path / "repo"


def lock_path(repo_path, name=gclock.LOCK):
    p = os.path.join(str(repo_path), name)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    return p


def put_lock(repo_path, text, name=gclock.LOCK, mtime=None):
    p = lock_path(repo_path, name)
    with open(p, "w") as f:
        f.write(text)
    if mtime is not None:
        os.utime(p, (mtime, mtime))
    return p


def record(machine=None, pid=DEAD_PID, host="ours", run="0123456789ab"):
    machine = socket.gethostname() if machine is None else machine
    text = "run=%s machine=%s pid=%d started=1000" % (run, machine, pid)
    if host == "ours":
        host = gclock.this_host()
    if host:
        text += " host=%s" % host
    return text + "\n"


def prune(repo_path, keep=1, timeout=60):
    return cli("prune", "--repo", repo_path, "--keep-last", keep, timeout=timeout)


def verify(repo_path):
    return cli("verify", "--repo", repo_path, timeout=80)


def no_trace(r):
    out = r.stdout + r.stderr
    assert "Traceback" not in out and "internal error" not in out, out


def gc_ran(r):
    return r.returncode == 0 and "garbage collection" in (r.stdout + r.stderr)


# --- (a) the takeover guard ---------------------------------------------------------------------------------------

def test_a_fresh_guard_left_by_a_killed_prune_refuses_in_one_line_and_leaves_the_lock(tmp_path):
    repo = make_repo(tmp_path)
    dead = record()
    put_lock(repo, dead)
    put_lock(repo, record(run="ba9876543210"), name=gclock.GUARD)
    r = prune(repo)
    assert r.returncode != 0
    one_clear_line(r)
    assert "taking the lock over" in r.stderr
    assert open(lock_path(repo)).read() == dead
    assert os.path.exists(lock_path(repo, gclock.GUARD))


def test_an_old_guard_left_by_a_killed_prune_is_removed_and_the_dead_lock_taken_over(tmp_path):
    repo = make_repo(tmp_path)
    put_lock(repo, record(), mtime=ANCIENT)
    put_lock(repo, record(run="ba9876543210"), name=gclock.GUARD, mtime=ANCIENT)
    r = prune(repo)
    assert r.returncode == 0, r.stdout + r.stderr
    no_trace(r)
    assert not os.path.lexists(lock_path(repo))
    assert not os.path.lexists(lock_path(repo, gclock.GUARD))
    assert verify(repo).returncode == 0


@pytest.mark.parametrize("when", ["fresh", "old"])
def test_a_guard_that_is_a_directory_is_refused_in_one_clear_line(tmp_path, when):
    repo = make_repo(tmp_path)
    put_lock(repo, record())
    g = lock_path(repo, gclock.GUARD)
    os.mkdir(g)
    if when == "old":
        os.utime(g, (ANCIENT, ANCIENT))
    r = prune(repo)
    no_trace(r)
    if r.returncode != 0:
        one_clear_line(r)
    assert os.path.isdir(g) or r.returncode == 0


def test_an_old_guard_that_is_a_symlink_to_a_file_outside_removes_the_link_not_the_file(tmp_path):
    repo = make_repo(tmp_path)
    put_lock(repo, record(), mtime=ANCIENT)
    outside = tmp_path / "precious"
    outside.write_text(record(run="ba9876543210"))
    os.utime(str(outside), (ANCIENT, ANCIENT))
    os.symlink(str(outside), lock_path(repo, gclock.GUARD))
    r = prune(repo)
    no_trace(r)
    assert outside.exists() and outside.read_text() == record(run="ba9876543210")


def test_a_dangling_symlink_guard_does_not_block_every_prune_forever(tmp_path):
    """A name holding no object can never be a taker at work; the lock itself treats a dangling symlink as no
    object. The guard must not stop every GC of the repository for ever with "just now"."""
    repo = make_repo(tmp_path)
    put_lock(repo, record(), mtime=ANCIENT)
    g = lock_path(repo, gclock.GUARD)
    os.symlink(str(tmp_path / "nowhere"), g)
    os.utime(g, (ANCIENT, ANCIENT), follow_symlinks=False)
    r = prune(repo)
    no_trace(r)
    assert "just now" not in r.stderr, r.stderr


def test_a_lock_of_a_prune_killed_right_after_taking_over_is_taken_over_by_pid(tmp_path):
    """kill -9 right after taking over: a fresh lock of this machine and id whose pid is gone."""
    repo = make_repo(tmp_path)
    put_lock(repo, record())  # fresh
    r = prune(repo)
    assert gc_ran(r), r.stdout + r.stderr
    assert not os.path.lexists(lock_path(repo))


def test_a_prune_sigkilled_while_it_holds_the_guard_leaves_a_state_the_next_prune_gets_past(tmp_path):
    """The state a SIGKILL inside the guard leaves: guard and dead lock both there. Fresh: refused; once the
    guard is over 60 s old the next prune takes over."""
    repo = make_repo(tmp_path)
    put_lock(repo, record())
    put_lock(repo, record(run="ba9876543210"), name=gclock.GUARD)
    assert prune(repo).returncode != 0
    os.utime(lock_path(repo, gclock.GUARD), (ANCIENT, ANCIENT))
    r = prune(repo)
    assert gc_ran(r), r.stdout + r.stderr
    assert verify(repo).returncode == 0


def test_three_prunes_at_once_on_one_dead_lock_one_gcs_and_nothing_needed_is_lost(tmp_path):
    repo = make_repo(tmp_path, backups=4)
    put_lock(repo, record(), mtime=ANCIENT)
    procs = [subprocess.Popen([PYTHON, "-m", "hotvcb", "prune", "--repo", str(repo), "--keep-last", "2"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                              env=dict(os.environ, PYTHONPATH=ROOT)) for _ in range(3)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=80)
        results.append((p.returncode, out, err))
    ok = [r for r in results if r[0] == 0]
    assert ok, results
    for rc, out, err in results:
        assert "Traceback" not in out + err, err
        if rc != 0:
            assert "another garbage collection" in err, err
    assert not os.path.lexists(lock_path(repo))
    assert not os.path.lexists(lock_path(repo, gclock.GUARD))
    r = verify(repo)
    assert r.returncode == 0, r.stdout + r.stderr
    r = cli("list", "--repo", repo)
    assert r.returncode == 0 and r.stdout.count("vm") >= 2, r.stdout + r.stderr


# --- (a) who a lock belongs to ------------------------------------------------------------------------------------

def test_a_fresh_lock_with_our_id_but_another_machine_name_is_a_gc_at_work(tmp_path):
    repo = make_repo(tmp_path)
    text = record(machine="not-" + socket.gethostname())
    put_lock(repo, text)
    r = prune(repo)
    assert r.returncode != 0
    one_clear_line(r)
    assert "another garbage collection" in r.stderr
    assert open(lock_path(repo)).read() == text


def test_an_old_lock_with_our_id_but_another_machine_name_is_taken_over(tmp_path):
    repo = make_repo(tmp_path)
    put_lock(repo, record(machine="not-" + socket.gethostname()), mtime=ANCIENT)
    r = prune(repo)
    assert gc_ran(r), r.stdout + r.stderr


def test_a_fresh_old_format_lock_of_this_machine_with_a_dead_pid_is_taken_over(tmp_path):
    repo = make_repo(tmp_path)
    put_lock(repo, record(host=""))
    r = prune(repo)
    assert gc_ran(r), r.stdout + r.stderr
    assert not os.path.lexists(lock_path(repo))


def test_a_fresh_old_format_lock_of_another_machine_refuses(tmp_path):
    repo = make_repo(tmp_path)
    put_lock(repo, record(machine="elsewhere", host=""))
    r = prune(repo)
    assert r.returncode != 0
    one_clear_line(r)


def test_a_fresh_lock_of_this_name_and_another_id_with_our_own_live_pid_is_still_a_gc_at_work(tmp_path):
    """Another host of the same name: its pid is meaningless here, even if it is a live hotvcb here."""
    repo = make_repo(tmp_path)
    text = record(pid=1, host="ffffffffffffffffffffffffffffffff")
    put_lock(repo, text)
    r = prune(repo)
    assert r.returncode != 0
    assert open(lock_path(repo)).read() == text


def test_a_lock_dated_hours_in_the_future_is_clock_garbage_and_taken_over(tmp_path):
    repo = make_repo(tmp_path)
    import time
    put_lock(repo, record(machine="elsewhere"), mtime=time.time() + 3 * HOUR)
    r = prune(repo)
    assert gc_ran(r), r.stdout + r.stderr


def test_a_huge_garbage_lock_is_quoted_short_and_sanitised(tmp_path):
    repo = make_repo(tmp_path)
    put_lock(repo, "run=\x1b[31mred\x07\r\n" + "\u00fc\t" * 5000)
    r = prune(repo)
    assert r.returncode != 0
    one_clear_line(r)
    (line,) = [l for l in r.stderr.splitlines() if "another garbage collection" in l]
    assert "\x1b" not in line and "\x07" not in line and "\t" not in line and "\r" not in line
    assert len(line) < 200 + 150, len(line)


def test_a_lock_that_is_a_directory_is_refused_in_one_clear_line(tmp_path):
    repo = make_repo(tmp_path)
    os.mkdir(lock_path(repo))
    r = prune(repo)
    assert r.returncode != 0
    one_clear_line(r)
    assert os.path.isdir(lock_path(repo))


# --- (a) tmp/ and packs/ ----------------------------------------------------------------------------------------

def test_tmp_cleanup_leaves_symlinks_fifos_and_folders_and_what_they_point_to(tmp_path):
    repo = make_repo(tmp_path)
    tmpdir = os.path.join(str(repo), "tmp")
    os.makedirs(tmpdir, exist_ok=True)
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    os.utime(str(outside), (ANCIENT, ANCIENT))
    os.symlink(str(outside), os.path.join(tmpdir, "link"))
    os.mkfifo(os.path.join(tmpdir, "fifo"))
    os.mkdir(os.path.join(tmpdir, "folder"))
    with open(os.path.join(tmpdir, "folder", "inner"), "w") as f:
        f.write("x")
    dead = os.path.join(tmpdir, "dead-upload")
    with open(dead, "w") as f:
        f.write("partial")
    for name in ("fifo", "folder", "folder/inner", "dead-upload"):
        os.utime(os.path.join(tmpdir, name), (ANCIENT, ANCIENT))
    os.utime(os.path.join(tmpdir, "link"), (ANCIENT, ANCIENT), follow_symlinks=False)
    r = prune(repo)
    assert r.returncode == 0, r.stdout + r.stderr
    assert outside.read_text() == "keep me"
    assert os.path.islink(os.path.join(tmpdir, "link"))
    assert stat.S_ISFIFO(os.lstat(os.path.join(tmpdir, "fifo")).st_mode)
    assert os.path.exists(os.path.join(tmpdir, "folder", "inner"))
    assert not os.path.exists(dead)


@pytest.mark.parametrize("command", ["prune", "verify"])
def test_a_symlinked_packs_folder_is_an_error_in_one_line(tmp_path, command):
    repo = make_repo(tmp_path)
    packs = os.path.join(str(repo), "packs")
    xx = sorted(os.listdir(packs))[0]
    moved = tmp_path / "moved"
    os.rename(os.path.join(packs, xx), str(moved))
    os.symlink(str(moved), os.path.join(packs, xx))
    r = prune(repo) if command == "prune" else verify(repo)
    assert r.returncode != 0
    one_clear_line(r)
    assert xx in r.stderr
    assert os.listdir(str(moved))  # nothing deleted through the link


def test_a_backup_racing_a_prune_stays_restorable(tmp_path):
    repo = make_repo(tmp_path, backups=3)
    disk = tmp_path / "new.raw"
    make_disk(str(disk), size=8 * MiB, seed=99, regions=6)
    b = subprocess.Popen([PYTHON, os.path.join(ROOT, "tests", "repotool.py"), "backup", str(repo), "racer",
                          str(disk)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    p = prune(repo, keep=1)
    out, err = b.communicate(timeout=80)
    assert b.returncode == 0, err
    assert p.returncode == 0, p.stdout + p.stderr
    r = verify(repo)
    assert r.returncode == 0, r.stdout + r.stderr
    r = cli("restore", "--repo", repo, out.strip(), "--to", tmp_path / "restored")
    assert r.returncode == 0, r.stdout + r.stderr
    restored = [os.path.join(dp, f) for dp, _d, fs in os.walk(str(tmp_path / "restored")) for f in fs
                if f == "new.raw"]
    assert restored and open(restored[0], "rb").read() == disk.read_bytes()


# --- (b) block digests ----------------------------------------------------------------------------------------

def expected(data_or_path, bs=BS):
    """docs/backup-format.md's definition, with hashlib: SHA-256 of the concatenated block SHA-256s."""
    h = hashlib.sha256()
    parts = []
    size = 0
    with open(data_or_path, "rb") as f:
        for b in iter(lambda: f.read(bs), b""):
            d = hashlib.sha256(b).digest()
            h.update(d)
            parts.append(d.hex()[:16])
            size += len(b)
    return size, h.hexdigest(), "".join(parts)


def run_cli(path, bs=BS, timeout=60):
    r = subprocess.run([PYTHON, BLOCKDIGEST, str(path), str(bs), "0"], capture_output=True, text=True,
                       timeout=timeout)
    return r.returncode, r.stdout, r.stderr


@pytest.mark.parametrize("size", [0, 1, BS - 1, BS, BS + 1, 7 * BS + 12345])
def test_the_digest_is_the_documented_sha256_of_block_sha256s(tmp_path, size):
    p = tmp_path / "f"
    data = os.urandom(size)
    if size > 3 * BS:
        data = data[:2 * BS] + bytes(3 * BS) + data[5 * BS:]  # a block of written zeros
    p.write_bytes(data)
    rc, out, err = run_cli(p)
    assert rc == 0, err
    got = json.loads(out)
    n, proof, parts = expected(str(p))
    assert got["size"] == n and got["sha256_of_blocks"] == proof and got["blocks"] == parts
    with open(str(p), "rb") as f:
        api = blockdigest.digest_fd(f, BS, threads=4)
    assert api["sha256_of_blocks"] == proof


def test_a_sparse_64_gib_file_with_data_only_at_the_end(tmp_path):
    p = tmp_path / "sparse"
    size = 64 << 30
    tail = os.urandom(BS + 777)
    with open(str(p), "wb") as f:
        f.truncate(size - len(tail))
        f.seek(size - len(tail))
        f.write(tail)
    if os.stat(str(p)).st_blocks * 512 > 64 * MiB:
        pytest.skip("filesystem without holes")
    rc, out, err = run_cli(p, timeout=85)
    assert rc == 0, err
    got = json.loads(out)
    # expected by the definition: zero blocks then the tail's blocks (size is not block aligned)
    h = hashlib.sha256()
    zero = hashlib.sha256(bytes(BS)).digest()
    nblocks = (size + BS - 1) // BS
    first_data = (size - len(tail)) // BS
    for _ in range(first_data):
        h.update(zero)
    with open(str(p), "rb") as f:
        f.seek(first_data * BS)
        for b in iter(lambda: f.read(BS), b""):
            h.update(hashlib.sha256(b).digest())
    assert got["size"] == size
    assert got["sha256_of_blocks"] == h.hexdigest()
    assert len(got["blocks"]) == 16 * nblocks


def test_a_fifo_named_as_a_disk_is_an_error_not_a_hang(tmp_path):
    p = tmp_path / "fifo"
    os.mkfifo(str(p))
    rc, out, err = run_cli(p, timeout=20)
    assert rc != 0
    assert "error" in json.loads(out)


def _prefix_digest(data, size, bs=BS):
    h = hashlib.sha256()
    for i in range(0, size, bs):
        h.update(hashlib.sha256(data[i:min(i + bs, size)]).digest())
    return h.hexdigest()


@pytest.mark.parametrize("threads", [1, 4])
def test_a_file_that_shrinks_during_the_digest_gives_the_digest_of_a_prefix(tmp_path, threads):
    p = tmp_path / "shrinks"
    data = os.urandom(24 * BS)
    p.write_bytes(data)
    seen = []

    def on_block(n):
        seen.append(n)
        if len(seen) == 2:
            os.truncate(str(p), 5 * BS)

    with open(str(p), "rb") as f:
        got = blockdigest.digest_fd(f, BS, on_block=on_block, threads=threads)
    assert got["size"] == sum(seen)
    assert 2 * BS <= got["size"] <= 24 * BS
    assert len(got["blocks"]) == 16 * ((got["size"] + BS - 1) // BS)
    assert got["sha256_of_blocks"] == _prefix_digest(data, got["size"])


@pytest.mark.parametrize("threads", [1, 4])
def test_a_file_that_grows_during_the_digest_gives_the_digest_of_a_prefix(tmp_path, threads):
    p = tmp_path / "grows"
    data = os.urandom(6 * BS + 100)
    more = os.urandom(10 * BS)
    p.write_bytes(data)
    seen = []

    def on_block(n):
        seen.append(n)
        if len(seen) == 1:
            with open(str(p), "ab") as f:
                f.write(more)

    with open(str(p), "rb") as f:
        got = blockdigest.digest_fd(f, BS, on_block=on_block, threads=threads)
    assert got["size"] == sum(seen)
    assert got["size"] >= 6 * BS + 100 or got["size"] % BS == 0
    assert got["sha256_of_blocks"] == _prefix_digest(data + more, got["size"])


def test_a_read_error_mid_digest_is_raised_and_the_threads_are_gone(tmp_path, monkeypatch):
    """A read error in one thread (EIO from a failing disk) reaches the caller; no digest thread lingers."""
    import errno
    import threading
    p = tmp_path / "f"
    p.write_bytes(os.urandom(16 * BS))
    real = os.pread
    calls = []

    def failing(fd, n, off):
        calls.append(off)
        if off >= 9 * BS:
            raise OSError(errno.EIO, "Input/output error")
        return real(fd, n, off)

    monkeypatch.setattr(blockdigest.os, "pread", failing)
    with open(str(p), "rb") as f:
        with pytest.raises(OSError) as err:
            blockdigest.digest_fd(f, BS, threads=4)
    assert err.value.errno == errno.EIO
    assert not [t for t in threading.enumerate() if t.name.startswith("hotvcb-digest")]


def test_a_check_that_raises_like_sigint_stops_the_digest_and_its_threads(tmp_path):
    """verify's Ctrl-C arrives as `check()` raising in the calling thread: it must end the workers."""
    import threading
    p = tmp_path / "f"
    p.write_bytes(os.urandom(32 * BS))
    n = []

    def check():
        n.append(1)
        if len(n) == 3:
            raise KeyboardInterrupt

    with open(str(p), "rb") as f:
        with pytest.raises(KeyboardInterrupt):
            blockdigest.digest_fd(f, BS, check=check, threads=4)
    assert not [t for t in threading.enumerate() if t.name.startswith("hotvcb-digest")]


def test_sigterm_of_the_digest_command_mid_digest_ends_it_without_a_traceback(tmp_path):
    """The host-side digest (SSH mode) read from a FIFO-fed... here: a file of 256 MiB digested while we
    send SIGTERM once it has started; it must end promptly (no worker thread keeps it alive)."""
    import signal
    import time
    p = tmp_path / "big"
    with open(str(p), "wb") as f:
        for _ in range(256):
            f.write(os.urandom(BS))
    proc = subprocess.Popen([PYTHON, BLOCKDIGEST, str(p), str(BS), "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode in (0, -signal.SIGTERM), (proc.returncode, err)
    assert "Traceback" not in err


# --- (a) more lock and guard states ----------------------------------------------------------------------------

def test_a_guard_dated_hours_ahead_does_not_block_gc_for_hours(tmp_path):
    """docs/repository.md: a lock "dated that far ahead (clock garbage: a live GC's lock is dated by the
    backend's clock as it is taken)" is stale. The guard is written the same way, by the same clock; one
    dated 3 hours ahead is no taker at work now, yet `now - mtime <= 60` holds for it for 3 hours."""
    import time
    repo = make_repo(tmp_path)
    put_lock(repo, record(), mtime=ANCIENT)
    put_lock(repo, record(run="ba9876543210"), name=gclock.GUARD, mtime=time.time() + 3 * HOUR)
    r = prune(repo)
    no_trace(r)
    assert gc_ran(r), r.stdout + r.stderr




def test_a_fresh_lock_of_ours_whose_pid_was_reused_by_another_program_is_taken_over(tmp_path, holder):
    repo = make_repo(tmp_path)
    put_lock(repo, record(pid=holder))
    r = prune(repo)
    assert gc_ran(r), r.stdout + r.stderr


def test_a_lock_of_ours_held_by_a_live_hotvcb_is_refused_however_old(tmp_path, hotvcb_holder):
    """A live GC on this machine whose lock is older than the grace period (a GC longer than it) is at work."""
    repo = make_repo(tmp_path)
    text = record(pid=hotvcb_holder)
    put_lock(repo, text, mtime=ANCIENT)
    r = prune(repo)
    assert r.returncode != 0
    one_clear_line(r)
    assert open(lock_path(repo)).read() == text


@pytest.mark.parametrize("pid", ["0", "99999999999999999999999999999", "4194304"])
def test_a_lock_of_ours_with_an_impossible_pid_is_taken_over_without_a_traceback(tmp_path, pid):
    repo = make_repo(tmp_path)
    put_lock(repo, "run=0123456789ab machine=%s pid=%s started=1000 host=%s\n"
             % (socket.gethostname(), pid, gclock.this_host()))
    r = prune(repo)
    no_trace(r)
    assert gc_ran(r), r.stdout + r.stderr


def test_a_guard_that_is_a_fifo_does_not_hang_prune(tmp_path):
    repo = make_repo(tmp_path)
    put_lock(repo, record(), mtime=ANCIENT)
    g = lock_path(repo, gclock.GUARD)
    os.mkfifo(g)
    os.utime(g, (ANCIENT, ANCIENT))
    r = prune(repo, timeout=60)
    no_trace(r)
    if r.returncode != 0:
        one_clear_line(r)


# --- (b) verify of a folder backup stopped mid-digest -----------------------------------------------------------

SLOW_VERIFY = r"""
import sys, time, threading
sys.path.insert(0, sys.argv[1])
from hotvcb import blockdigest
real = blockdigest.Digester.block_digest
said = []
def slow(self, block):
    if not said:
        said.append(1)
        sys.stderr.write("DIGESTING\n"); sys.stderr.flush()
    time.sleep(0.3)
    return real(self, block)
blockdigest.Digester.block_digest = slow
import atexit
def threads_left():
    left = [t.name for t in threading.enumerate() if t.name.startswith("hotvcb-digest") and t.is_alive()]
    sys.stderr.write("THREADS-LEFT %d\n" % len(left)); sys.stderr.flush()
atexit.register(threads_left)
sys.argv = ["hotvcb"] + sys.argv[2:]
from hotvcb.__main__ import main
sys.exit(main())
"""


@needs_qemu
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_verify_of_a_folder_backup_stopped_mid_digest_exits_2_without_a_traceback(lab, sig):
    """docs/architecture.md "Signals": the run exits 2, cleanup in finally; the digest threads end with it.
    The digest is slowed (0.3 s a block) so the signal surely lands while the threads hash."""
    import signal
    name = "digest-" + sig.lower()
    _initial, image = _image(lab, name, "raw", 48 * MiB, 40 * MiB)
    lab.start(name, image, "raw")
    r = subprocess.run(lab.argv(name, DISK_BACKUP_FORMAT="raw"), capture_output=True, text=True, timeout=85,
                       env=qenv())
    assert r.returncode == 0, r.stdout + r.stderr
    (good,) = lab.backups(name)
    proc = subprocess.Popen([PYTHON, "-c", SLOW_VERIFY, ROOT, "--qemu", lab.inventory, "verify", good],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=qenv())
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "DIGESTING" in line:
            break
    proc.send_signal(getattr(signal, sig))
    out, err = proc.communicate(timeout=60)
    err = "".join(seen) + err
    assert "DIGESTING" in err, err
    assert "Traceback" not in out + err, err
    assert proc.returncode == 2, (proc.returncode, out, err)
    assert "THREADS-LEFT 0" in err, err


# --- (a) real SIGKILLs at the lock's steps ---------------------------------------------------------------------

KILL_AFTER = r"""
import os, signal, sys
sys.path.insert(0, sys.argv[1])
from hotvcb.repo import backend
name_wanted, nth = sys.argv[2], int(sys.argv[3])
real = backend.LocalBackend.put_new
count = [0]
def put_new(self, name, data):
    ok = real(self, name, data)
    if ok and (name == name_wanted or name_wanted.endswith("/") and name.startswith(name_wanted)):
        count[0] += 1
        if count[0] == nth:
            os.kill(os.getpid(), signal.SIGKILL)
    return ok
backend.LocalBackend.put_new = put_new
sys.argv = ["hotvcb"] + sys.argv[4:]
from hotvcb.__main__ import main
sys.exit(main())
"""


def prune_killed_after(repo_path, name, nth=1):
    r = subprocess.run([PYTHON, "-c", KILL_AFTER, ROOT, name, str(nth), "prune", "--repo", str(repo_path),
                        "--keep-last", "1"], capture_output=True, text=True, timeout=80, cwd=ROOT,
                       env=dict(os.environ, PYTHONPATH=ROOT))
    assert r.returncode == -9, (r.returncode, r.stdout, r.stderr)


def test_prune_sigkilled_holding_the_guard_then_refused_while_fresh_and_taken_over_once_old(tmp_path):
    repo = make_repo(tmp_path, backups=3)
    put_lock(repo, record(), mtime=ANCIENT)
    prune_killed_after(repo, gclock.GUARD)
    assert os.path.exists(lock_path(repo, gclock.GUARD))
    r = prune(repo)
    assert r.returncode != 0
    one_clear_line(r)
    os.utime(lock_path(repo, gclock.GUARD), (ANCIENT, ANCIENT))
    r = prune(repo)
    assert gc_ran(r), r.stdout + r.stderr
    assert not os.path.lexists(lock_path(repo)) and not os.path.lexists(lock_path(repo, gclock.GUARD))
    r = verify(repo)
    assert r.returncode == 0, r.stdout + r.stderr


def test_prune_sigkilled_right_after_taking_over_leaves_a_lock_the_next_prune_takes_at_once(tmp_path):
    repo = make_repo(tmp_path, backups=3)
    put_lock(repo, record(machine="elsewhere"), mtime=ANCIENT)  # another host's dead GC
    prune_killed_after(repo, gclock.LOCK, nth=1)  # killed as its put_new of locks/gc (not .takeover) returns
    held = open(lock_path(repo)).read()
    assert "machine=%s " % socket.gethostname() in held and "host=%s" % gclock.this_host() in held
    r = prune(repo)
    assert gc_ran(r), r.stdout + r.stderr
    assert verify(repo).returncode == 0


def test_prune_sigkilled_after_writing_its_mark_then_the_next_prune_gcs_and_nothing_is_lost(tmp_path):
    repo = make_repo(tmp_path, backups=4)
    prune_killed_after(repo, "condemned/")
    r = prune(repo)
    assert gc_ran(r), r.stdout + r.stderr
    age(str(repo), HOUR)
    r = prune(repo)
    assert gc_ran(r), r.stdout + r.stderr
    r = verify(repo)
    assert r.returncode == 0, r.stdout + r.stderr


# --- (b) odd block sizes, holes mid-block, odd paths -------------------------------------------------------------

@pytest.mark.parametrize("bs", [4096, 65536 + 3, 3 * BS])
def test_a_sparse_file_with_data_straddling_blocks_matches_hashlib_at_any_block_size(tmp_path, bs):
    p = tmp_path / "holes"
    size = 40 * BS + 4321
    with open(str(p), "wb") as f:
        f.truncate(size)
        for off, n in ((5, 100), (BS - 7, 20000), (7 * BS + 4095, 3 * BS + 1), (39 * BS + 12345, 999),
                       (size - 1, 1)):
            f.seek(off)
            f.write(os.urandom(n))
        f.seek(20 * BS)
        f.write(bytes(2 * BS))  # written zeros
    n, proof, parts = expected(str(p), bs)
    rc, out, err = run_cli(p, bs)
    assert rc == 0, err
    got = json.loads(out)
    assert (got["size"], got["sha256_of_blocks"], got["blocks"]) == (n, proof, parts)
    with open(str(p), "rb") as f:
        api = blockdigest.digest_fd(f, bs, threads=4)
    assert api["sha256_of_blocks"] == proof


@pytest.mark.parametrize("kind", ["directory", "dangling symlink", "no such file", "unreadable"])
def test_the_digest_command_on_no_readable_file_says_so_in_json(tmp_path, kind):
    p = tmp_path / "odd name \u00e4 'q\""
    if kind == "directory":
        p.mkdir()
    elif kind == "dangling symlink":
        os.symlink(str(tmp_path / "nowhere"), str(p))
    elif kind == "unreadable":
        p.write_bytes(b"x" * 100)
        os.chmod(str(p), 0)
        if os.geteuid() == 0:
            pytest.skip("root reads anything")
    rc, out, err = run_cli(p, timeout=20)
    assert rc != 0
    assert "Traceback" not in err, err
    assert "error" in json.loads(out)


def test_a_name_with_spaces_quotes_and_umlauts_digests_like_any_other(tmp_path):
    p = tmp_path / "disk \u00fc 'a' \"b\" $x.raw"
    p.write_bytes(os.urandom(3 * BS + 5))
    rc, out, err = run_cli(p)
    assert rc == 0, err
    assert json.loads(out)["sha256_of_blocks"] == expected(str(p))[1]


# --- (a) readers judge the lock by the same rule --------------------------------------------------------------

@pytest.mark.parametrize("lock", ["ours-dead-pid", "old-format-ours-dead-pid", "other-host-old", "future"])
def test_verify_does_not_wait_for_a_lock_gc_would_take_over(tmp_path, lock):
    """docs/repository.md "Restore": a lock GC would take over is no GC at work, so a chunk in no listed pack
    is named at once (settle_seconds is 600 here: a wait would outlast the test's timeout)."""
    import time
    from repotool import first_pack, hide
    from hotvcb.repo.repository import Repository
    from hotvcb.repo.backend import LocalBackend
    repo = new_repo(tmp_path / "repo", settle=600)
    disk = tmp_path / "disk.raw"
    make_disk(str(disk), size=4 * MiB, seed=3, regions=4)
    snap = backup(repo, "vm", str(disk))
    repo_path = tmp_path / "repo"
    text, mtime = {"ours-dead-pid": (record(), None),
                   "old-format-ours-dead-pid": (record(host=""), None),
                   "other-host-old": (record(machine="elsewhere"), ANCIENT),
                   "future": (record(machine="elsewhere"), time.time() + 3 * HOUR)}[lock]
    put_lock(repo_path, text, mtime=mtime)
    hide(str(repo_path), first_pack(Repository.open(LocalBackend(str(repo_path))), snap), str(tmp_path / "aside"))
    r = cli("verify", "--repo", repo_path, timeout=60)
    assert r.returncode != 0
    assert "waiting up to" not in r.stdout + r.stderr, r.stdout + r.stderr
    no_trace(r)


HOLD_LOCK = r"""
import os, sys, time
sys.path.insert(0, sys.argv[1])
from hotvcb.repo import backend
release = sys.argv[2]
real = backend.LocalBackend.put_new
def put_new(self, name, data):
    ok = real(self, name, data)
    if ok and name == "locks/gc":
        while not os.path.exists(release):  # hold the lock (a long GC) until the test lets go
            time.sleep(0.05)
    return ok
backend.LocalBackend.put_new = put_new
sys.argv = ["hotvcb"] + sys.argv[3:]
from hotvcb.__main__ import main
sys.exit(main())
"""


def test_three_prunes_on_one_dead_lock_exactly_one_gcs_while_it_holds_the_lock(tmp_path):
    repo = make_repo(tmp_path, backups=4)
    put_lock(repo, record(), mtime=ANCIENT)
    release = tmp_path / "release"
    procs = [subprocess.Popen([PYTHON, "-c", HOLD_LOCK, ROOT, str(release), "prune", "--repo", str(repo),
                               "--keep-last", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT)) for _ in range(3)]
    try:
        results = {}
        import time
        deadline = time.monotonic() + 70
        while len(results) < 2 and time.monotonic() < deadline:  # the two that do not hold it end by themselves
            for i, p in enumerate(procs):
                if i not in results and p.poll() is not None:
                    results[i] = (p.returncode,) + tuple(p.communicate())
            time.sleep(0.05)
        assert len(results) == 2, "the losers did not end while a live GC held the lock"
        for rc, out, err in results.values():
            assert rc != 0 and "another garbage collection" in err and "Traceback" not in err, (rc, err)
        (holder,) = [p for i, p in enumerate(procs) if i not in results]
        assert "pid=%d " % holder.pid in open(lock_path(repo)).read()
    finally:
        release.write_text("go")
        for p in procs:
            p.communicate(timeout=60)
    assert holder.returncode == 0
    assert not os.path.lexists(lock_path(repo)) and not os.path.lexists(lock_path(repo, gclock.GUARD))
    r = verify(repo)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("target", ["dead record outside", "dangling"])
def test_a_lock_that_is_a_symlink_is_taken_over_without_touching_its_target(tmp_path, target):
    repo = make_repo(tmp_path)
    outside = tmp_path / "outside-lock"
    if target != "dangling":
        outside.write_text(record(machine="elsewhere"))
        os.utime(str(outside), (ANCIENT, ANCIENT))
    link = lock_path(repo)
    os.symlink(str(outside), link)
    os.utime(link, (ANCIENT, ANCIENT), follow_symlinks=False)
    r = prune(repo)
    no_trace(r)
    if r.returncode != 0:
        one_clear_line(r)
    if target != "dangling":
        assert outside.read_text() == record(machine="elsewhere")
    else:
        assert not outside.exists()


CHANGE_VERIFY = r"""
import os, sys
sys.path.insert(0, sys.argv[1])
from hotvcb import blockdigest
real = blockdigest.Digester.block_digest
path, how = sys.argv[2], sys.argv[3]
done = []
def changing(self, block):
    if not done:
        done.append(1)
        if how == "shrink":
            os.truncate(path, 5 << 20)
        else:
            with open(path, "ab") as f:
                f.write(os.urandom(3 << 20))
    return real(self, block)
blockdigest.Digester.block_digest = changing
sys.argv = ["hotvcb"] + sys.argv[4:]
from hotvcb.__main__ import main
sys.exit(main())
"""


@needs_qemu
@pytest.mark.parametrize("how", ["shrink", "grow"])
def test_verify_of_a_folder_backup_whose_disk_changes_size_mid_digest_fails(lab, how):
    name = "change-" + how
    _initial, image = _image(lab, name, "raw", 24 * MiB, 20 * MiB)
    lab.start(name, image, "raw")
    r = subprocess.run(lab.argv(name, DISK_BACKUP_FORMAT="raw"), capture_output=True, text=True, timeout=85,
                       env=qenv())
    assert r.returncode == 0, r.stdout + r.stderr
    (good,) = lab.backups(name)
    data = [os.path.join(good, f) for f in os.listdir(good) if f.endswith(".raw")]
    assert len(data) == 1, os.listdir(good)
    r = subprocess.run([PYTHON, "-c", CHANGE_VERIFY, ROOT, data[0], how, "--qemu", lab.inventory, "verify", good],
                       capture_output=True, text=True, timeout=85, env=qenv())
    assert "Traceback" not in r.stdout + r.stderr, r.stderr
    assert r.returncode != 0, r.stdout + r.stderr
    assert os.path.getsize(data[0]) == (5 * MiB if how == "shrink" else 27 * MiB)  # the change was made
