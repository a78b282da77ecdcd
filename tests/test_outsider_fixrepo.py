"""Outside tester's attacks on merge 5452abb (the repository readers' fixes): the GC lock judged by
gclock.stale (a dead GC's lock is no GC at work), an unreadable lock said once, list() refusing an entry
it cannot stat, verify re-reading a pack a fresh listing names again, and the config's timing keys
refused naming the key. Through the CLI (list, verify --repo [--new/--sample], restore --repo, prune),
with odd locks (garbage, empty, huge, a live pid that is no hotvcb, another machine's lock from the
future or the distant past, a lock that goes during the wait), odd entries (dangling symlinks,
directories, FIFOs, symlink loops) under packs/, condemned/, indexes/, snapshots/, tmp/, bad timing
values, and SIGKILL of verify and prune mid-way followed by verify, prune, backup and restore.

Nothing waits on timing: a command that starts a wait it should not is seen by its "waiting up to" line
and killed there (the repositories' settle time is an hour)."""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import pytest
from pidviews import holder, hotvcb_holder  # noqa: F401  (fixtures: a reused pid, a GC at work)
from repotool import (HOUR, PYTHON, ROOT, MiB, age, backup, cli, digests_of, finish, first_pack, hide,
                      make_disk, mark_waiting, new_repo, one_clear_line, same, scatter, start, until_waiting)
from simhost import needs_root
from test_outsider_repowait import SELF_SIGNAL, Hiding, run_unless_waiting, setup

from hotvcb.repo.backend import LocalBackend
from hotvcb.repo.format import CONFIG
from hotvcb.repo.repository import PACKS, Repository
from hotvcb.repo.verify import verify

LOCK = os.path.join("locks", "gc")
ANCIENT = 978307200  # 2001-01-01: older than any grace period
FUTURE = 4102444800  # 2100-01-01


# --- helpers ------------------------------------------------------------------------------------------

def put_lock(repo_path, data, mtime=None):
    path = os.path.join(str(repo_path), LOCK)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def record(machine, pid):
    return ("run=0123456789ab machine=%s pid=%d started=1000\n" % (machine, pid)).encode()


def lose_a_pack(tmp_path, snaps):
    """Delete by hand the pack holding web's first chunk; returns the chunks it held (hex)."""
    repo = Repository.open(LocalBackend(str(tmp_path / "repo")))
    pack = first_pack(repo, snaps["web"])
    held = digests_of(repo, pack)
    os.remove(str(tmp_path / "repo" / pack))
    return held


def verify_cli(tmp_path, *extra):
    return run_unless_waiting("verify", "--repo", tmp_path / "repo", *extra)


def prune_cli(tmp_path, env=None, keep=1):
    return subprocess.run([PYTHON, "-m", "hotvcb", "prune", "--repo", str(tmp_path / "repo"), "--keep-last",
                           str(keep)], capture_output=True, text=True, cwd=ROOT, timeout=80,
                          env=dict(env or os.environ, PYTHONPATH=ROOT))


def tool_backup(tmp_path, vm, disk):
    """A backup by a process of its own (repotool's command line); returns the new snapshot's id."""
    r = subprocess.run([PYTHON, os.path.join(ROOT, "tests", "repotool.py"), "backup", str(tmp_path / "repo"), vm,
                        str(disk)], capture_output=True, text=True, timeout=80)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout.strip()


def set_key(repo_path, key, value_json):
    path = os.path.join(str(repo_path), CONFIG)
    with open(path) as f:
        text = f.read()
    old = '"%s": %s' % (key, json.dumps(json.loads(text)[key]))
    assert old in text
    os.chmod(path, 0o644)
    with open(path, "w") as f:
        f.write(text.replace(old, '"%s": %s' % (key, value_json)))


# --- the config's timing keys ---------------------------------------------------------------------------

REFUSED_NAMING_KEY = [
    ("settle_seconds", '"ten"'),
    ("settle_seconds", "[600]"),
    ("settle_seconds", "1" + "0" * 400),
    ("settle_seconds", '"600"'),  # a string of digits, which float() alone would take
    ("settle_seconds", "true"),  # a JSON boolean, which float() alone would take as 1 s
    ("settle_seconds", "false"),
    ("settle_seconds", "-1"),
    ("settle_seconds", '"NaN"'),
    ("settle_seconds", "1e999"),  # JSON's 1e999 is inf
    ("backup_limit_seconds", "0"),
    ("backup_limit_seconds", "-5"),
    ("backup_limit_seconds", '"60"'),
]


def _params():
    return [pytest.param(key, value, command, id="%s=%s-%s" % (key, value[:12], command))
            for key, value in REFUSED_NAMING_KEY for command in ("list", "prune")]


@pytest.mark.parametrize("key,value,command", _params())
def test_a_bad_timing_value_in_the_config_is_refused_in_one_line_naming_the_key(tmp_path, key, value, command):
    """docs/repository.md "config": finite numbers of seconds; 'Any other value (a string, a list, NaN, an
    integer too large for a float) makes every command refuse the repository in one line naming `config`
    and the key'."""
    _repo, snaps = setup(tmp_path)
    set_key(tmp_path / "repo", key, value)
    args = {"list": ("list", "--repo", tmp_path / "repo"),
            "prune": ("prune", "--repo", tmp_path / "repo", "--keep-last", "1")}[command]
    r = cli(*args)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    one_clear_line(r)
    line = [l for l in r.stderr.splitlines() if l.startswith("hotvcb: error:")][0]
    assert "config" in line and key in line, out


@pytest.mark.parametrize("key", ["settle_seconds", "backup_limit_seconds"])
def test_a_finite_but_huge_timing_value_is_accepted_and_prune_backup_restore_work(tmp_path, key):
    """1e308 is a finite number (accepted by the docs' rule) but 2 x 1e308 is inf: the grace period. Nothing
    may crash on it, nothing may be deleted, and a backup and its restore still work."""
    repo, snaps = setup(tmp_path, settle=0)
    set_key(tmp_path / "repo", key, "1e308")
    scatter(str(tmp_path / "web.raw"), 6)
    second = tool_backup(tmp_path, "web", tmp_path / "web.raw")
    age(tmp_path / "repo", 10 * 365 * 86400)
    r = prune_cli(tmp_path)
    assert r.returncode == 0 and "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr
    assert "0 deleted" in r.stdout, r.stdout
    r = cli("restore", "--repo", tmp_path / "repo", second, "--to", tmp_path / "restored")
    assert r.returncode == 0 and same(tmp_path / "restored" / "web.raw", tmp_path / "web.raw"), r.stdout + r.stderr
    r = cli("verify", "--repo", tmp_path / "repo")
    assert r.returncode == 0 and "OK" in r.stdout, r.stdout + r.stderr


# --- which GC lock is a GC at work -------------------------------------------------------------------------

def no_gc_at_work(tmp_path, snaps, command):
    """verify reports a lost pack at once (no wait for a GC), or prune runs its own GC."""
    if command == "verify":
        held = lose_a_pack(tmp_path, snaps)
        code, out, waited = verify_cli(tmp_path)
        assert not waited and code == 4 and any(d in out for d in held), out
    else:
        r = prune_cli(tmp_path)
        assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("command", ["verify", "prune"])
def test_a_lock_naming_a_live_pid_that_is_no_hotvcb_is_no_gc_at_work(tmp_path, holder, command):
    """The GC that wrote the lock died years ago and its pid now belongs to `sleep`: pids.hotvcb's rule
    ('a lock naming pid 1, or any pid reused since by another program, must not block every run forever'),
    which the host lock follows. Verify must name the lost chunks at once; prune must take the lock over."""
    _repo, snaps = setup(tmp_path)
    put_lock(tmp_path / "repo", record(socket.gethostname(), holder), mtime=ANCIENT)
    no_gc_at_work(tmp_path, snaps, command)
    if command == "prune":
        assert not os.path.exists(str(tmp_path / "repo" / LOCK))


@pytest.mark.parametrize("command", ["verify", "prune"])
def test_a_lock_naming_pid_0_is_no_gc_at_work(tmp_path, command):
    _repo, snaps = setup(tmp_path)
    put_lock(tmp_path / "repo", record(socket.gethostname(), 0), mtime=ANCIENT)
    no_gc_at_work(tmp_path, snaps, command)


@pytest.mark.parametrize("command", ["verify", "prune"])
def test_another_machines_lock_dated_decades_ahead_is_no_gc_at_work(tmp_path, command):
    """A live GC's lock is dated by the repository's clock as it is taken; one dated 2100 is clock garbage,
    not a GC at work (no skew is 74 years), and nothing but a hand would ever remove it."""
    _repo, snaps = setup(tmp_path)
    put_lock(tmp_path / "repo", record("esxi-other.example", 4242), mtime=FUTURE)
    no_gc_at_work(tmp_path, snaps, command)


@pytest.mark.parametrize("command", ["verify", "prune"])
def test_a_fresh_lock_of_another_host_with_this_machines_name_is_a_gc_at_work(tmp_path, command):
    """Two ESXi hosts named 'localhost' share the repository: the other's GC holds the lock now (fresh, naming its
    own host id, a pid that means nothing here). The docs guard this very case for restore records (backup-
    format.md: 'two hosts sharing an NFS datastore and a host name ... leave each other's live restores
    alone'); a GC lock judged by the pid alone lets this host's prune run a second GC beside it, and its
    readers fail where they should wait."""
    _repo, snaps = setup(tmp_path)
    put_lock(tmp_path / "repo", ("run=0123456789ab machine=%s pid=999999999 started=%d host=00000000-other-host\n"
                                 % (socket.gethostname(), int(time.time()))).encode())
    if command == "verify":
        lose_a_pack(tmp_path, snaps)
        _code, out, waited = verify_cli(tmp_path)
        assert waited, out
    else:
        r = prune_cli(tmp_path)
        assert r.returncode == 1 and "another garbage collection" in r.stderr, r.stdout + r.stderr
        assert os.path.exists(str(tmp_path / "repo" / LOCK))


@pytest.mark.parametrize("content", ["other-machine", "empty", "garbage"])
def test_an_ancient_lock_of_any_content_is_taken_over_by_prune_and_costs_verify_no_wait(tmp_path, content):
    _repo, snaps = setup(tmp_path)
    data = {"other-machine": record("esxi-other.example", 4242), "empty": b"",
            "garbage": bytes(range(256)) * 4}[content]
    put_lock(tmp_path / "repo", data, mtime=ANCIENT)
    held = lose_a_pack(tmp_path, snaps)
    code, out, waited = verify_cli(tmp_path)
    assert not waited and code == 4 and any(d in out for d in held), out
    r = prune_cli(tmp_path)
    assert r.returncode == 0 and "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr
    assert not os.path.exists(str(tmp_path / "repo" / LOCK))


def test_a_fresh_garbage_lock_is_a_gc_at_work_and_prune_says_so_in_one_line(tmp_path):
    """Control: a fresh lock nobody can parse is judged by age (a GC of an unknown machine): prune refuses."""
    setup(tmp_path)
    put_lock(tmp_path / "repo", b"no record here\n")
    r = prune_cli(tmp_path)
    assert r.returncode == 1 and "another garbage collection" in r.stderr, r.stdout + r.stderr
    one_clear_line(r)


def test_prunes_refusal_for_a_binary_garbage_lock_is_one_printable_line(tmp_path):
    setup(tmp_path)
    put_lock(tmp_path / "repo", b"\x1b[2J\x00garbage\nsecond line\r\x07" + bytes(range(1, 32)) * 4)
    r = prune_cli(tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    errs = [l for l in r.stderr.splitlines() if "another garbage collection" in l]
    assert len(errs) == 1 and "second line" not in r.stderr.replace(errs[0], ""), r.stderr
    assert not any(ord(c) < 32 and c != "\n" for c in r.stderr), repr(r.stderr)


def test_prunes_refusal_for_a_huge_lock_is_a_short_line(tmp_path):
    setup(tmp_path)
    put_lock(tmp_path / "repo", b"x" * (4 * MiB) + b"\n")
    r = prune_cli(tmp_path)
    assert r.returncode == 1 and "another garbage collection" in r.stderr, r.stderr[:500]
    assert len(r.stderr) < 2000, len(r.stderr)


def test_a_lock_that_is_a_directory_is_said_once_by_verify_and_refused_by_prune_naming_it(tmp_path):
    _repo, snaps = setup(tmp_path, settle=1)
    os.makedirs(str(tmp_path / "repo" / LOCK))
    mark_waiting(tmp_path / "repo")  # a GC is at work by its marks: the wait is 1 s
    held = lose_a_pack(tmp_path, snaps)
    r = cli("verify", "--repo", tmp_path / "repo")
    out = r.stdout + r.stderr
    assert r.returncode == 4 and any(d in out for d in held) and "Traceback" not in out, out
    assert out.count("cannot tell whether a GC holds locks/gc") == 1, out
    r = prune_cli(tmp_path)
    assert r.returncode == 1 and "locks/gc" in r.stderr, r.stdout + r.stderr
    one_clear_line(r)


@pytest.mark.parametrize("kind", ["fifo", "loop", "dir"])
@pytest.mark.parametrize("command", ["restore", "verify-json"])
def test_an_unreadable_lock_is_said_once_on_stderr_and_the_report_stays_whole(tmp_path, kind, command):
    """A lock that does not read, a GC mark waiting (1 s settle): the 'cannot tell' line comes once (verify
    --json's stdout stays one JSON document), the lost chunks are named, nothing is left behind;
    prune refuses in one line naming locks/gc, and does not hang on a FIFO."""
    _repo, snaps = setup(tmp_path, settle=1)
    _plant(tmp_path / "repo" / "locks" / "gc", kind)
    mark_waiting(tmp_path / "repo")
    held = lose_a_pack(tmp_path, snaps)
    if command == "restore":
        r = cli("restore", "--repo", tmp_path / "repo", snaps["web"].id, "--to", tmp_path / "restored")
        assert r.returncode == 1 and not (tmp_path / "restored").exists(), r.stdout + r.stderr
    else:
        r = cli("verify", "--repo", tmp_path / "repo", "--json")
        assert r.returncode == 4, r.stdout + r.stderr
        doc = json.loads(r.stdout)
        assert any(d in json.dumps(doc) for d in held), r.stdout
    out = r.stdout + r.stderr
    assert "Traceback" not in out and any(d in out for d in held), out
    assert out.count("cannot tell whether a GC holds locks/gc") == 1, out
    r = prune_cli(tmp_path)
    assert r.returncode == 1 and "locks/gc" in r.stderr, r.stdout + r.stderr
    one_clear_line(r)


def test_an_unreadable_lock_is_said_once_however_many_chunks_verify_waits_for(tmp_path):
    _repo, snaps = setup(tmp_path, settle=1, vms=("web", "db", "mail"))
    _plant(tmp_path / "repo" / "locks" / "gc", "dir")
    mark_waiting(tmp_path / "repo")
    for folder, _dirs, files in os.walk(str(tmp_path / "repo" / "packs")):
        for name in files:
            os.remove(os.path.join(folder, name))
    r = cli("verify", "--repo", tmp_path / "repo")
    out = r.stdout + r.stderr
    assert r.returncode == 4 and all("needed by %s" % vm in out for vm in ("web", "db", "mail")), out
    assert out.count("cannot tell whether a GC holds locks/gc") == 1 and "Traceback" not in out, out


def test_a_lock_that_is_a_dangling_symlink_is_no_gc_and_prune_replaces_it(tmp_path):
    _repo, snaps = setup(tmp_path)
    os.makedirs(str(tmp_path / "repo" / "locks"))
    os.symlink("/nonexistent/gc-lock", str(tmp_path / "repo" / LOCK))
    held = lose_a_pack(tmp_path, snaps)
    code, out, waited = verify_cli(tmp_path)
    assert not waited and code == 4 and any(d in out for d in held), out
    r = prune_cli(tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not os.path.lexists(str(tmp_path / "repo" / LOCK))


def test_a_wait_on_a_live_gcs_lock_ends_soon_after_the_lock_goes(tmp_path, hotvcb_holder):
    """The lock is the only sign of a GC (no mark): once it is gone and the chunk still nowhere, verify gives
    up long before the settle hour, saying so."""
    _repo, snaps = setup(tmp_path)
    put_lock(tmp_path / "repo", record(socket.gethostname(), hotvcb_holder))
    held = lose_a_pack(tmp_path, snaps)
    proc = start("verify", "--repo", tmp_path / "repo")
    before = until_waiting(proc)
    os.remove(str(tmp_path / "repo" / LOCK))
    code, rest = finish(proc, timeout=80)
    out = before + rest
    assert code == 4 and "gave up waiting" in out and any(d in out for d in held), out
    assert "Traceback" not in out


def test_a_wait_on_a_live_gcs_lock_ends_once_its_holder_dies(tmp_path):
    """The holder of a lock of this machine dies while verify waits (SIGKILLed GC: its lock stays): the lock is
    stale now, and verify must give up soon rather than wait the hour."""
    _repo, snaps = setup(tmp_path)
    proc_holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", "hotvcb", "gc"])
    try:
        put_lock(tmp_path / "repo", record(socket.gethostname(), proc_holder.pid))
        held = lose_a_pack(tmp_path, snaps)
        proc = start("verify", "--repo", tmp_path / "repo")
        before = until_waiting(proc)
    finally:
        proc_holder.kill()
        proc_holder.wait()
    code, rest = finish(proc, timeout=80)
    out = before + rest
    assert code == 4 and "gave up waiting" in out and any(d in out for d in held), out
    assert os.path.exists(str(tmp_path / "repo" / LOCK))  # readers never remove it


# --- odd entries under the repository's folders ----------------------------------------------------------

def _plant(path, kind):
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "dangling":
        os.symlink("/nonexistent/" + path.name, str(path))
    elif kind == "dir":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(str(path))
    elif kind == "loop":
        os.symlink(path.name, str(path))


@pytest.mark.parametrize("kind", ["dangling", "dir", "fifo"])
@pytest.mark.parametrize("folder", ["packs", "condemned", "indexes", "snapshots"])
def test_an_odd_entry_never_hangs_or_crashes_and_the_backup_still_restores(tmp_path, folder, kind):
    """A dangling symlink, a directory or a FIFO where an object would be: no command hangs on it (a FIFO is
    opened non-blocking), none ends in an internal error, and the backup restores."""
    _repo, snaps = setup(tmp_path)
    snap = snaps["web"]
    name = {"packs": "packs/ab/" + "ab" * 32, "condemned": "condemned/1000-deadbeef",
            "indexes": "indexes/%s.7" % snap.id, "snapshots": "snapshots/20261203T000000Z-deadbeef"}[folder]
    _plant(tmp_path / "repo" / name, kind)
    for args in (("list", "--repo", tmp_path / "repo"), ("verify", "--repo", tmp_path / "repo"),
                 ("verify", "--repo", tmp_path / "repo", "--new"),
                 ("verify", "--repo", tmp_path / "repo", "--sample", "50")):
        code, out, waited = run_unless_waiting(*args)
        assert not waited and code in (0, 1, 4), (args, out)
        assert "Traceback" not in out and "internal error" not in out, (args, out)
        if code:
            assert name in out, (args, out)  # a refusal or problem names the entry
    r = cli("restore", "--repo", tmp_path / "repo", snap.id, "--to", tmp_path / "restored")
    assert r.returncode == 0 and same(tmp_path / "restored" / "web.raw", tmp_path / "web.raw"), r.stdout + r.stderr
    r = prune_cli(tmp_path)
    out = r.stdout + r.stderr
    # 3: a record that does not read (snapshots/) stops GC, not the prune, which says so (test_known_s30repo)
    assert r.returncode in (0, 1, 3) and "Traceback" not in out and "internal error" not in out, out
    if r.returncode == 3:
        assert [line for line in r.stderr.splitlines() if line.startswith("hotvcb: warning:") and name in line], out
    elif r.returncode:
        one_clear_line(r)
        assert name in out, out


@pytest.mark.parametrize("command", ["verify", "restore"])
def test_a_pack_folder_that_is_a_symlink_to_a_folder_is_listed_or_named_never_silently_hidden(tmp_path, command):
    """The packs of one packs/<2 hex> folder moved to another disk and linked back: every pack is still there
    and reads. The contract (docs "Storage-backend contract"): list never skips what would hide a pack. So the
    command either sees them (verify OK, restore whole) or refuses naming the folder; it must never report
    the chunks 'missing from the repository'."""
    repo, snaps = setup(tmp_path)
    folder = first_pack(repo, snaps["web"]).rsplit("/", 1)[0]
    os.rename(str(tmp_path / "repo" / folder), str(tmp_path / "elsewhere"))
    os.symlink(str(tmp_path / "elsewhere"), str(tmp_path / "repo" / folder))
    if command == "verify":
        r = cli("verify", "--repo", tmp_path / "repo")
    else:
        r = cli("restore", "--repo", tmp_path / "repo", snaps["web"].id, "--to", tmp_path / "restored")
    out = r.stdout + r.stderr
    assert "missing from the repository" not in out and "Traceback" not in out, out
    assert r.returncode == 0 or (r.returncode == 1 and folder in out), out
    if command == "restore" and r.returncode == 0:
        assert same(tmp_path / "restored" / "web.raw", tmp_path / "web.raw")


@pytest.mark.parametrize("folder", ["indexes", "snapshots", "verified", "damaged"])
def test_a_symlink_loop_in_another_folder_is_named_in_one_line_or_ignored(tmp_path, folder):
    _repo, snaps = setup(tmp_path)
    name = {"indexes": "indexes/%s.7" % snaps["web"].id, "snapshots": "snapshots/20261203T000000Z-deadbeef",
            "verified": "verified/" + "cd" * 32, "damaged": "damaged/" + "cd" * 32 + ".0123456789abcdef"}[folder]
    _plant(tmp_path / "repo" / name, "loop")
    for args in (("list", "--repo", tmp_path / "repo"), ("verify", "--repo", tmp_path / "repo"),
                 ("verify", "--repo", tmp_path / "repo", "--new"),
                 ("restore", "--repo", tmp_path / "repo", snaps["web"].id, "--to", tmp_path / "restored"),
                 ("prune", "--repo", tmp_path / "repo", "--keep-last", "1")):
        code, out, waited = run_unless_waiting(*args)
        assert not waited and "Traceback" not in out and "internal error" not in out, (args, out)
        if code == 1:
            assert name in out and "cannot write" not in out, (args, out)
        if os.path.exists(str(tmp_path / "restored")):
            assert same(tmp_path / "restored" / "web.raw", tmp_path / "web.raw")


@pytest.mark.parametrize("kind", [
    "loop", "dir",
    "fifo", "dangling"])
def test_an_odd_old_entry_in_tmp_neither_crashes_prune_nor_stops_its_gc(tmp_path, kind):
    """tmp/ holds uploads; GC discards those older than the grace period. Whatever else lies there (a loop, a
    folder someone made, a FIFO) must not end prune in an internal error."""
    setup(tmp_path, settle=0)
    where = tmp_path / "repo" / "tmp" / "odd"
    _plant(where, kind)
    os.utime(str(where), (ANCIENT, ANCIENT), follow_symlinks=False)
    r = prune_cli(tmp_path)
    out = r.stdout + r.stderr
    assert "Traceback" not in out and "internal error" not in out, out
    assert r.returncode == 0 or (r.returncode == 1 and "tmp/odd" in out), out
    assert not os.path.exists(str(tmp_path / "repo" / LOCK))


# --- a pack that goes and comes back, in verify's other modes ---------------------------------------------

@pytest.mark.parametrize("mode", ["new", "sample"])
@pytest.mark.parametrize("when", ["whole", "any"])
def test_verify_new_or_sample_a_pack_gone_for_one_read_and_listed_again_is_no_damage(tmp_path, mode, when):
    """The fix reads again a pack the fresh listing names again 'whole, if it was to be': --new and --sample 100
    choose their packs differently from 'all', and must also neither report it nor skip it."""
    repo, snaps = setup(tmp_path, settle=2)
    pack = first_pack(repo, snaps["web"])
    view = Repository.open(Hiding(str(tmp_path / "repo"), pack, when))
    report = verify(view, mode, share=1.0)
    assert view.backend.lists >= 2
    assert report.ok, report.problems
    assert os.path.exists(str(tmp_path / "repo" / "verified" / pack.rsplit("/", 1)[1]))  # read whole after all


def test_a_pack_gone_then_back_as_a_truncated_copy_is_reported_as_damaged(tmp_path):
    """Gone at its whole read, back in the fresh listing, but shorter: the second read must check it, not trust
    that it came back."""
    repo, snaps = setup(tmp_path, settle=2)
    pack = first_pack(repo, snaps["web"])
    path = str(tmp_path / "repo" / pack)

    class Truncating(Hiding):
        def list(self, prefix):
            if prefix == PACKS and self.hidden:
                with open(path, "r+b") as f:  # it comes back cut short in its blobs (table intact is impossible)
                    data = f.read()
                    f.seek(0)
                    f.truncate()
                    f.write(data[:100] + data[200:])
            return super().list(prefix)

    view = Repository.open(Truncating(str(tmp_path / "repo"), pack, "whole"))
    report = verify(view, "all")
    assert not report.ok and any(pack in p for p in report.problems), report.problems


# --- SIGKILL of verify and prune mid-way ----------------------------------------------------------------

@pytest.mark.parametrize("nth", [1, 2])
def test_verify_sigkilled_among_the_packs_then_verify_new_finishes_and_backup_restore_work(tmp_path, nth):
    repo, snaps = setup(tmp_path, vms=("web", "db", "mail"), size=6 * MiB)
    packs = repo.backend.list(PACKS)
    assert len(packs) >= 3
    r = subprocess.run([PYTHON, "-c", SELF_SIGNAL, ROOT, str(tmp_path / "repo"), str(nth), str(int(signal.SIGKILL))],
                       capture_output=True, text=True, timeout=80, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))
    assert r.returncode == -signal.SIGKILL, r.stdout + r.stderr
    assert "OK" not in r.stdout
    r = cli("verify", "--repo", tmp_path / "repo", "--new", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert 0 < json.loads(r.stdout)["packs_read"] <= len(packs), r.stdout
    assert sorted(os.listdir(str(tmp_path / "repo" / "verified"))) == sorted(p.name.rsplit("/", 1)[1] for p in packs)
    scatter(str(tmp_path / "db.raw"), 6)
    new = tool_backup(tmp_path, "db", tmp_path / "db.raw")
    r = cli("restore", "--repo", tmp_path / "repo", new, "--to", tmp_path / "restored")
    assert r.returncode == 0 and same(tmp_path / "restored" / "db.raw", tmp_path / "db.raw"), r.stdout + r.stderr
    r = cli("verify", "--repo", tmp_path / "repo")
    assert r.returncode == 0 and "OK" in r.stdout, r.stdout + r.stderr


def _two_generations(tmp_path, settle=0):
    """web backed up twice (the second changed), everything aged past the grace period."""
    repo = new_repo(tmp_path / "repo", settle=settle)
    make_disk(tmp_path / "web.raw", size=6 * MiB, regions=6)
    backup(repo, "web", tmp_path / "web.raw")
    scatter(str(tmp_path / "web.raw"), 40)
    second = backup(repo, "web", tmp_path / "web.raw")
    (tmp_path / "second.raw").write_bytes((tmp_path / "web.raw").read_bytes())
    age(tmp_path / "repo", 7 * 86400)
    return second


@pytest.mark.parametrize("crash", ["repo-prune-record-deleted", "repo-gc-before-mark", "repo-gc-sweep",
                                   "repo-gc-swept"])
def test_prune_sigkilled_mid_way_then_verify_prune_backup_and_restore_work(tmp_path, crash):
    """The killed prune leaves its GC lock (its pid dead now): verify must not wait on it, the next prune takes
    it over and finishes, and a backup and restore afterwards are whole."""
    second = _two_generations(tmp_path)
    if crash.startswith("repo-gc-sw"):  # the first prune marks; the second (after the grace period) sweeps
        r = prune_cli(tmp_path)
        assert r.returncode == 0 and "marked" in r.stdout, r.stdout + r.stderr
        age(tmp_path / "repo", 7 * 86400)
    r = prune_cli(tmp_path, env=dict(os.environ, HOTVCB_CRASH_AT=crash))
    assert r.returncode == -signal.SIGKILL, (crash, r.stdout + r.stderr)
    code, out, waited = verify_cli(tmp_path)
    assert not waited and code == 0 and "Traceback" not in out, out
    r = prune_cli(tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not os.path.exists(str(tmp_path / "repo" / LOCK))
    age(tmp_path / "repo", 7 * 86400)
    r = prune_cli(tmp_path)  # and the sweep of whatever the last one marked
    assert r.returncode == 0, r.stdout + r.stderr
    r = cli("restore", "--repo", tmp_path / "repo", second.id, "--to", tmp_path / "restored")
    assert r.returncode == 0 and same(tmp_path / "restored" / "web.raw", tmp_path / "second.raw"), r.stdout + r.stderr
    scatter(str(tmp_path / "web.raw"), 8, seed=9)
    third = tool_backup(tmp_path, "web", tmp_path / "web.raw")
    r = cli("restore", "--repo", tmp_path / "repo", third, "--to", tmp_path / "restored3")
    assert r.returncode == 0 and same(tmp_path / "restored3" / "web.raw", tmp_path / "web.raw"), r.stdout + r.stderr
    r = cli("verify", "--repo", tmp_path / "repo")
    assert r.returncode == 0 and "OK" in r.stdout, r.stdout + r.stderr


def test_a_lock_left_by_a_sigkilled_prune_costs_a_restore_of_a_lost_pack_no_wait(tmp_path):
    """The dead prune's lock (this machine, dead pid) with a pack deleted by hand: restore names the lost chunk
    at once (exit 1) and leaves nothing, as with no lock at all."""
    snap = _two_generations(tmp_path, settle=HOUR)  # the first backup's packs are there to be marked
    r = prune_cli(tmp_path, env=dict(os.environ, HOTVCB_CRASH_AT="repo-gc-before-mark"))
    assert r.returncode == -signal.SIGKILL and os.path.exists(str(tmp_path / "repo" / LOCK)), r.stdout + r.stderr
    held = lose_a_pack(tmp_path, {"web": snap})
    code, out, waited = run_unless_waiting("restore", "--repo", tmp_path / "repo", snap.id, "--to",
                                           tmp_path / "restored")
    assert not waited and code == 1 and any(d in out for d in held), out
    assert not (tmp_path / "restored").exists()
    assert os.path.exists(str(tmp_path / "repo" / LOCK))  # readers never remove it


def test_odd_names_with_a_stale_lock_and_a_flapping_pack(tmp_path):
    """Umlauts, quotes and spaces in the repository's path and the VM's name, a dead GC's lock, and a pack moved
    aside and back between two verifies: both verifies end without a wait, the second OK."""
    odd = tmp_path / "rëpo 'x' \"y\" $HOME"
    repo = new_repo(odd, settle=HOUR)
    make_disk(tmp_path / "d ü.raw", size=4 * MiB, regions=4)
    snap = backup(repo, "Wéb \"Server\" (prod); rm -rf", tmp_path / "d ü.raw")
    put_lock(odd, record(socket.gethostname(), 999999999))
    back = hide(odd, first_pack(repo, snap), tmp_path / "aside")
    code, out, waited = run_unless_waiting("verify", "--repo", odd)
    assert not waited and code == 4 and 'needed by Wéb "Server" (prod); rm -rf' in out, out
    back()
    code, out, waited = run_unless_waiting("verify", "--repo", odd)
    assert not waited and code == 0 and "OK" in out, out


# --- the CLI's backup --repo on a simulated ESXi host ------------------------------------------------------

SIM_REPO = "/vmfs/volumes/backup/repo"


def _sim_backup(host, tmp_path, vm):
    from simhost import hotvcb, write_conf
    return hotvcb(host, "backup", "-m", vm, "-g", write_conf(host), "--repo", SIM_REPO, "-w", tmp_path / "work")


@pytest.fixture
def sim(host, tmp_path):
    """A VM on the simulated host, backed up once into a repository by the CLI."""
    vm = "Wéb 'Server' (prod)"
    host.create_vm(vm, "datastore1", [{"size": "8M"}])
    r = _sim_backup(host, tmp_path, vm)
    assert r.returncode == 0, r.stdout + r.stderr
    return host, vm, host.real(SIM_REPO)


@needs_root
def test_cli_backup_into_a_repository_whose_settle_time_is_a_string_is_refused_naming_the_key(sim, tmp_path):
    host, vm, real = sim
    set_key(real, "settle_seconds", '"600"')
    before = sorted(os.listdir(os.path.join(real, "snapshots")))
    r = _sim_backup(host, tmp_path, vm)
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "settle_seconds" in out and "Traceback" not in out, out
    assert sorted(os.listdir(os.path.join(real, "snapshots"))) == before


@needs_root
def test_cli_backup_after_a_dead_gcs_lock_and_odd_entries_then_prune_takes_the_lock_over(sim, tmp_path):
    """Another machine's GC died long ago (its lock older than any grace), a FIFO and a dangling symlink lie
    under packs/: the next CLI backup works (backups never take the GC lock), and prune on the host takes
    the lock over; verify afterwards is OK apart from the FIFO it names."""
    from simhost import hotvcb
    host, vm, real = sim
    put_lock(real, record("esxi-gone.example", 4242), mtime=ANCIENT)
    _plant(pathlib.Path(real) / ("packs/ab/" + "ab" * 32), "fifo")
    _plant(pathlib.Path(real) / ("packs/cd/" + "cd" * 32), "dangling")
    r = _sim_backup(host, tmp_path, vm)
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(os.listdir(os.path.join(real, "snapshots"))) == 2
    r = hotvcb(host, "prune", "--repo", SIM_REPO, "--keep-last", "1")
    out = r.stdout + r.stderr
    assert r.returncode == 0 and "Traceback" not in out, out
    assert not os.path.exists(os.path.join(real, LOCK))
    r = hotvcb(host, "verify", "--repo", SIM_REPO)
    out = r.stdout + r.stderr
    assert r.returncode == 4 and "packs/ab/" + "ab" * 32 in out and "Traceback" not in out, out
    assert "needed by" not in out, out  # no backup lost a chunk




@needs_root
@pytest.mark.parametrize("where", ["packs/ab/" + "ab" * 32, "condemned/1000-deadbeef"])
def test_cli_restore_to_a_datastore_names_a_looping_entry_of_the_repository_and_leaves_nothing(sim, where):
    """The fix's promise for restore: an entry of packs/ or condemned/ it cannot stat is named (the repository's,
    never the restore target's fault), the VM is not registered, and no staging folder stays."""
    from simhost import hotvcb, vim
    host, vm, real = sim
    _plant(pathlib.Path(real) / where, "loop")
    snap_id = sorted(os.listdir(os.path.join(real, "snapshots")))[0]
    r = hotvcb(host, "restore", "--repo", SIM_REPO, snap_id, "--datastore", "datastore1", "--name", "copy")
    out = r.stdout + r.stderr
    assert r.returncode in (1, 6) and where in out and "Traceback" not in out and "internal error" not in out, out
    assert "copy" not in vim(host, "vmsvc/getallvms"), out
    root = host.real("/vmfs/volumes/datastore1")
    assert not os.path.exists(os.path.join(root, "copy"))
    assert [e for e in os.listdir(root) if "hotvcb" in e] == [], os.listdir(root)


def test_verify_counts_a_pack_read_again_once(tmp_path):
    repo, snaps = setup(tmp_path, settle=2)
    packs = repo.backend.list(PACKS)
    view = Repository.open(Hiding(str(tmp_path / "repo"), first_pack(repo, snaps["web"]), "whole"))
    report = verify(view, "all")
    assert report.ok, report.problems
    assert report.packs_read == len(packs), (report.packs_read, len(packs))


# --- two GCs and the lock's take-over ------------------------------------------------------------------------

TWO_GCS = r'''
import os, sys, time
sys.path.insert(0, sys.argv[1])
from hotvcb.repo import gclock
flags, role = sys.argv[2], sys.argv[3]

def flag(name):
    open(os.path.join(flags, name), "w").close()

def wait(name):
    deadline = time.monotonic() + 60  # a bound for a test that went wrong, never a timing the test relies on
    while not os.path.exists(os.path.join(flags, name)):
        if time.monotonic() > deadline:
            sys.exit(99)
        time.sleep(0.05)

real_stale, real_take = gclock.stale, gclock._take

def stale(repo, me, lock):
    verdict = real_stale(repo, me, lock)
    if role == "B" and verdict:
        flag("b-judged")  # B found the dead GC's lock stale; it deletes it once told to
        wait("b-go")
    return verdict

def take(repo, me, record):
    real_take(repo, me, record)
    flag(role.lower() + "-holds")
    if role == "A":
        wait("a-go")  # A holds the lock, as a long GC does

gclock.stale, gclock._take = stale, take
from hotvcb.cli import main
sys.exit(main(sys.argv[4:]))
'''


def test_two_prunes_taking_over_the_same_dead_lock_never_run_two_gcs_at_once(tmp_path):
    """B judges the dead GC's lock stale; before it deletes it, A judges it stale too, deletes it and takes the
    lock (and holds it, GC at work). Then B goes on: it must not delete A's lock and run a second GC beside A.
    The steps are ordered by flag files, not by time."""
    setup(tmp_path)
    put_lock(tmp_path / "repo", record(socket.gethostname(), 999999999))  # a dead GC of this machine
    flags = tmp_path / "flags"
    flags.mkdir()

    def run(role):
        return subprocess.Popen([PYTHON, "-c", TWO_GCS, ROOT, str(flags), role, "prune", "--repo",
                                 str(tmp_path / "repo"), "--keep-last", "1"], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))

    def until(name, proc):
        while not (flags / name).exists():
            assert proc.poll() is None, proc.communicate()[0]
            time.sleep(0.05)

    b = run("B")
    a = None
    try:
        until("b-judged", b)
        a = run("A")
        until("a-holds", a)
        (flags / "b-go").touch()
        b_code, b_out = finish(b, timeout=80)
        (flags / "a-go").touch()
        a_code, a_out = finish(a, timeout=80)
    finally:
        for p in (a, b):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    assert a_code == 0, a_out
    assert not (flags / "b-holds").exists(), "B took the lock while A held it:\n" + b_out
    assert b_code == 1 and "another garbage collection" in b_out, b_out


@needs_root
@pytest.mark.parametrize("where", ["packs/ab/" + "ab" * 32, "condemned/1000-deadbeef", "snapshots/20261203T000000Z-"
                                   "deadbeef"])
def test_cli_backup_into_a_repository_with_a_looping_entry_fails_naming_it_and_leaves_no_vm_snapshot(sim, tmp_path,
                                                                                                     where):
    """Backups list packs/ (the chunk map) and snapshots/ (the last backup to build on): an entry they cannot stat
    fails the VM's backup naming it, or is of no concern to a backup; either way no snapshot of ours stays on
    the VM, no record half-made, and the run says it in its log, not in a traceback."""
    from simhost import snapshot_names, vim
    host, vm, real = sim
    _plant(pathlib.Path(real) / where, "loop")
    before = sorted(os.listdir(os.path.join(real, "snapshots")))
    r = _sim_backup(host, tmp_path, vm)
    out = r.stdout + r.stderr
    assert "Traceback" not in out and "internal error" not in out, out
    if r.returncode:
        assert where in out, out
        assert sorted(os.listdir(os.path.join(real, "snapshots"))) == before
    vmid = [l.split()[0] for l in vim(host, "vmsvc/getallvms").splitlines() if vm in l][0]
    assert snapshot_names(host, vmid) == [], out
