"""Outside tester's attacks on the waits restore and `verify --repo` make for a lagging pack listing
(hotvcb/repo/settle.py; docs/repository.md "Restore", "Verify"): packs that vanish and come back at odd
moments, garbage settle settings, garbage GC marks and locks, a lock left by a dead GC, signals during
verify and its wait, two verifies at once, verify beside a real GC sweep, and restores of a backup whose
pack is truly lost. Nothing here waits on timing: a command that starts a wait it should not is seen by
its "waiting up to" line and killed there (its settle time is an hour)."""

import json
import os
import signal
import subprocess

import pytest
from repotool import (HOUR, PYTHON, ROOT, WAITING, MiB, age, backup, cli, digests_of, finish, first_pack, hide,
                      keep_last, make_disk, mark_waiting, new_repo, one_clear_line, restore_or_verify, same, scatter,
                      start, until_waiting)

from hotvcb.repo import gc, prune
from hotvcb.repo.backend import LocalBackend, NotFound
from hotvcb.repo.format import CONFIG, dumps
from hotvcb.repo.reader import restore_disk
from hotvcb.repo.repository import PACKS, Repository
from hotvcb.repo.verify import verify

# --- helpers ------------------------------------------------------------------------------------------

def setup(tmp_path, settle=HOUR, vms=("web",), size=4 * MiB):
    """A repository with one backup per VM (disks of their own, no chunk shared). Returns (repo, {vm: snap})."""
    repo = new_repo(tmp_path / "repo", settle=settle)
    snaps = {}
    for seed, vm in enumerate(vms, 1):
        disk = tmp_path / ("%s.raw" % vm)
        make_disk(disk, size=size, regions=4, seed=seed * 17)
        with open(str(disk), "r+b") as f:  # make_disk's tail is the same on every disk: no chunk shared
            f.seek(size - 100)
            f.write(("%-100s" % vm).encode())
        snaps[vm] = backup(repo, vm, disk)
    return repo, snaps


def run_unless_waiting(*args):
    """(exit code, output, whether it began a wait). A wait is cut short with SIGKILL as soon as it is said."""
    proc = start(*args)
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if WAITING in line:
                proc.kill()
                proc.wait()
                return None, "".join(seen), True
        proc.wait(timeout=60)
        return proc.returncode, "".join(seen), False
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def dead_pid():
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def leftovers(folder):
    return sorted(e for e in os.listdir(str(folder)) if "hotvcb" in e)


class Hiding(LocalBackend):
    """This host's view of the repository: `hide(name)` makes reads of a pack fail as gone until the next
    listing of packs/ (which names it again: it came back, or the read failed for a moment)."""

    def __init__(self, root, pack, when="whole"):
        super().__init__(root)
        self.pack, self.when, self.hidden, self.done, self.lists = pack, when, False, False, 0

    def list(self, prefix):
        if prefix == PACKS:
            self.lists += 1
            self.hidden = False
        return super().list(prefix)

    def get(self, name, offset=0, length=None):
        if name == self.pack and not self.done:
            if self.when == "whole" and length is None or self.when == "any":
                self.done = self.hidden = True
        if name == self.pack and self.hidden:
            raise NotFound("%s is missing from the repository %s" % (name, self.root))
        return super().get(name, offset, length)


# --- packs that vanish and come back -------------------------------------------------------------------

@pytest.mark.parametrize("when", ["whole", "any"])  # its whole read, or already its table's
def test_verify_a_pack_gone_for_one_read_and_listed_again_is_no_damage(tmp_path, when):
    """A pack's whole read fails as gone (an NFS hiccup, or moved and back) and the fresh listing names it
    again: as restore trusts such a pack (docs "Restore": 'a pack found gone included, if the fresh listing
    names it again'), verify must not call it missing. Settle 2 s bounds the wait it makes instead."""
    repo, snaps = setup(tmp_path, settle=2)
    pack = first_pack(repo, snaps["web"])
    view = Repository.open(Hiding(str(tmp_path / "repo"), pack, when))
    said = []
    report = verify(view, "all", say=said.append)
    assert view.backend.lists >= 2  # it did list again
    assert report.ok, (report.problems, said)


def test_restore_a_pack_gone_for_one_read_and_listed_again_is_read_again(tmp_path):
    repo, snaps = setup(tmp_path, settle=HOUR)
    snap = snaps["web"]
    view = Repository.open(Hiding(str(tmp_path / "repo"), first_pack(repo, snap), "any"))
    said = []
    restore_disk(view, snap, snap.disks[0], str(tmp_path / "out.raw"), say=said.append)
    assert same(tmp_path / "out.raw", tmp_path / "web.raw") and not said, said


def test_restore_a_pack_that_comes_back_as_garbage_fails_and_leaves_nothing(tmp_path):
    """The pack 'comes back' under its name holding other bytes: every chunk is hash-checked, so the restore
    fails naming the chunk, and the partial disk is removed."""
    repo, snaps = setup(tmp_path, settle=HOUR)
    snap = snaps["web"]
    pack = first_pack(repo, snap)
    path = str(tmp_path / "repo" / pack)
    size = os.path.getsize(path)
    with open(path, "r+b") as f:  # same size, table intact, chunk bytes garbage
        f.seek(64)
        f.write(os.urandom(min(size // 2, 256 * 1024)))
    r = cli("restore", "--repo", tmp_path / "repo", snap.id, "--to", tmp_path / "restored")
    out = r.stdout + r.stderr
    assert r.returncode == 1 and WAITING not in out, out
    one_clear_line(r)
    assert "needed by web" in out and not (tmp_path / "restored").exists() and leftovers(tmp_path) == [], out


# --- settle settings ------------------------------------------------------------------------------------

def _set_settle(repo_path, value_json):
    path = os.path.join(str(repo_path), CONFIG)
    with open(path) as f:
        text = f.read()
    data = json.loads(text)
    text = text.replace('"settle_seconds": %s' % json.dumps(data["settle_seconds"]), '"settle_seconds": ' + value_json)
    assert value_json in text
    os.chmod(path, 0o644)
    with open(path, "w") as f:
        f.write(text)


@pytest.mark.parametrize("value", ["-1", "-1e308", '"ten minutes"', "null", "1e999", "-1e999", "NaN", "[600]", "{}"])
@pytest.mark.parametrize("command", ["restore", "verify"])
def test_a_garbage_settle_time_is_refused_in_one_line(tmp_path, value, command):
    repo, snaps = setup(tmp_path)
    mark_waiting(tmp_path / "repo")
    os.remove(str(tmp_path / "repo" / first_pack(repo, snaps["web"])))
    _set_settle(tmp_path / "repo", value)
    args = restore_or_verify(command, tmp_path, snaps["web"])
    code, out, waited = run_unless_waiting(*args)
    assert not waited and code == 1, out
    assert "Traceback" not in out and "internal error" not in out and "config" in out, out
    assert not (tmp_path / "restored").exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("command", ["restore", "verify"])
def test_a_huge_settle_time_is_waited_with_a_sane_line_and_sigterm_still_ends_it(tmp_path, command):
    repo, snaps = setup(tmp_path)
    mark_waiting(tmp_path / "repo")
    os.remove(str(tmp_path / "repo" / first_pack(repo, snaps["web"])))
    _set_settle(tmp_path / "repo", "1e300")
    proc = start(*restore_or_verify(command, tmp_path, snaps["web"]))
    before = until_waiting(proc)
    proc.send_signal(signal.SIGTERM)
    code, rest = finish(proc)
    out = before + rest
    assert code == 2 and "Traceback" not in out and "internal error" not in out, out
    assert not (tmp_path / "restored").exists() and leftovers(tmp_path) == []


def test_settle_zero_gives_up_at_once_even_while_a_gc_is_at_work(tmp_path):
    repo, snaps = setup(tmp_path, settle=0)
    mark_waiting(tmp_path / "repo")
    pack = first_pack(repo, snaps["web"])
    held = digests_of(repo, pack)
    os.remove(str(tmp_path / "repo" / pack))
    code, out, waited = run_unless_waiting("verify", "--repo", tmp_path / "repo")
    assert not waited and code == 4 and any(d in out for d in held), out


# --- what counts as a GC at work -----------------------------------------------------------------------

def _lock(repo, machine, pid, age_s=0):
    repo.backend.put_new("locks/gc", ("run=0123456789ab machine=%s pid=%d started=1000\n" % (machine, pid)).encode())
    if age_s:
        path = os.path.join(repo.backend.root, "locks", "gc")
        st = os.stat(path)
        os.utime(path, (st.st_atime - age_s, st.st_mtime - age_s))


def _lost_with_lock(tmp_path, command, machine, pid, age_s=0):
    repo, snaps = setup(tmp_path)
    pack = first_pack(repo, snaps["web"])
    held = digests_of(repo, pack)
    os.remove(str(tmp_path / "repo" / pack))
    _lock(repo, machine, pid, age_s)
    args = restore_or_verify(command, tmp_path, snaps["web"])
    code, out, waited = run_unless_waiting(*args)
    return code, out, waited, held


@pytest.mark.parametrize("command", ["restore", "verify"])
def test_a_gc_lock_held_by_a_live_process_counts_as_a_gc_at_work(tmp_path, command):
    """The control for the test below: a live holder is a GC at work, so the reader waits. The holder is a
    process whose command line names hotvcb (pids.hotvcb: a live pid of another program is a reused one)."""
    import socket
    holder = subprocess.Popen([PYTHON, "-c", "import time; time.sleep(300)", "hotvcb", "gc"])
    try:
        _code, out, waited, _held = _lost_with_lock(tmp_path, command, socket.gethostname(), holder.pid)
    finally:
        holder.kill()
        holder.wait()
    assert waited, out


@pytest.mark.parametrize("holder", ["dead-pid-on-this-machine", "other-machine-older-than-grace"])
@pytest.mark.parametrize("command", ["restore", "verify"])
def test_a_gc_lock_left_by_a_dead_gc_is_no_gc_at_work(tmp_path, command, holder):
    """gclock takes such a lock over at once (docs: 'a lock whose holder is a dead process on this machine, or
    older than the grace period from another machine, is removed and taken'): no GC is moving packs, so a pack
    deleted by hand must be named at once, as with no lock at all, not after the settle time."""
    import socket
    if holder == "dead-pid-on-this-machine":
        code, out, waited, held = _lost_with_lock(tmp_path, command, socket.gethostname(), dead_pid())
    else:  # grace = backup_limit 60 s + 2 x settle 3600 s
        code, out, waited, held = _lost_with_lock(tmp_path, command, "esxi-gone.example", 1, age_s=3 * HOUR)
    assert not waited, out
    assert code == (1 if command == "restore" else 4) and any(d in out for d in held), out


@pytest.mark.parametrize("kind", ["garbage", "directory", "fifo", "empty", "newer-version", "no-packs"])
def test_a_mark_that_does_not_read_neither_hangs_nor_crashes_verify_or_restore(tmp_path, kind):
    """A mark that does not read stops GC (docs): no GC can be at work, so a hand-deleted pack is named at once;
    a FIFO in condemned/ must not block the reader."""
    repo, snaps = setup(tmp_path)
    os.remove(str(tmp_path / "repo" / first_pack(repo, snaps["web"])))
    cond = tmp_path / "repo" / "condemned"
    cond.mkdir(exist_ok=True)
    name = cond / "1000-deadbeef"
    if kind == "garbage":
        name.write_bytes(os.urandom(200))
    elif kind == "directory":
        name.mkdir()
        (name / "inner").write_text("{not json")
    elif kind == "fifo":
        os.mkfifo(str(name))
    elif kind == "empty":
        name.write_bytes(b"")
    elif kind == "newer-version":
        name.write_bytes(dumps({"format": "hotvcb-condemned", "version": 99, "packs": []}))
    else:
        name.write_bytes(dumps({"format": "hotvcb-condemned", "version": 1}))
    for command in ("verify", "restore"):
        code, out, waited = run_unless_waiting(*restore_or_verify(command, tmp_path, snaps["web"]))
        assert not waited and code in (1, 4), out
        assert "Traceback" not in out and "internal error" not in out and "needed by web" in out, out
    assert not (tmp_path / "restored").exists() and leftovers(tmp_path) == []


def test_a_gc_lock_that_is_a_fifo_does_not_block_verify(tmp_path):
    repo, snaps = setup(tmp_path)
    os.remove(str(tmp_path / "repo" / first_pack(repo, snaps["web"])))
    (tmp_path / "repo" / "locks").mkdir(exist_ok=True)
    os.mkfifo(str(tmp_path / "repo" / "locks" / "gc"))
    proc = start("verify", "--repo", tmp_path / "repo")
    try:
        line = ""
        for line in proc.stdout:
            if WAITING in line:
                break
        proc.kill()
        code, rest = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert WAITING in line or code in (1, 4), line + rest


# --- signals during verify and its wait; the repository afterwards ------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_signal_during_verifys_wait_ends_it_with_exit_2(tmp_path, sig):
    repo, snaps = setup(tmp_path)
    mark_waiting(tmp_path / "repo")
    hide(tmp_path / "repo", first_pack(repo, snaps["web"]), tmp_path / "aside")
    proc = start("verify", "--repo", tmp_path / "repo", "--json")
    before = until_waiting(proc)
    proc.send_signal(sig)
    code, rest = finish(proc)
    out = before + rest
    assert code == 2 and "Traceback" not in out and "internal error" not in out, out


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_after_a_verify_killed_in_its_wait_verify_backup_and_restore_work(tmp_path, sig):
    repo, snaps = setup(tmp_path)
    mark_waiting(tmp_path / "repo")
    back = hide(tmp_path / "repo", first_pack(repo, snaps["web"]), tmp_path / "aside")
    proc = start("verify", "--repo", tmp_path / "repo")
    until_waiting(proc)
    proc.send_signal(sig)
    finish(proc)
    back()  # the listing caught up
    r = cli("verify", "--repo", tmp_path / "repo")
    assert r.returncode == 0 and "OK" in r.stdout, r.stdout + r.stderr
    scatter(str(tmp_path / "web.raw"), 8)
    r2 = subprocess.run([PYTHON, os.path.join(ROOT, "tests", "repotool.py"), "backup",
                         str(tmp_path / "repo"), "web", str(tmp_path / "web.raw")], capture_output=True, text=True)
    assert r2.returncode == 0, r2.stdout + r2.stderr
    r = cli("restore", "--repo", tmp_path / "repo", r2.stdout.strip(), "--to", tmp_path / "restored")
    assert r.returncode == 0, r.stdout + r.stderr
    assert same(tmp_path / "restored" / "web.raw", tmp_path / "web.raw")
    r = cli("verify", "--repo", tmp_path / "repo", "--new")
    assert r.returncode == 0, r.stdout + r.stderr


# --- verify's report ----------------------------------------------------------------------------------

@pytest.mark.parametrize("gc_at_work", [True, False])
def test_verify_names_only_the_backups_that_need_the_lost_pack(tmp_path, gc_at_work):
    repo, snaps = setup(tmp_path, settle=1, vms=("web", "db server"))
    if gc_at_work:
        mark_waiting(tmp_path / "repo")
    pack = first_pack(repo, snaps["web"])
    os.remove(str(tmp_path / "repo" / pack))
    r = cli("verify", "--repo", tmp_path / "repo")
    out = r.stdout + r.stderr
    assert r.returncode == 4 and "Traceback" not in out, out
    assert snaps["web"].id in out and snaps["db server"].id not in out and "db server" not in out, out
    gave_up = [l for l in out.splitlines() if "gave up" in l]
    assert len(gave_up) == (1 if gc_at_work else 0), out
    assert all("needed by web" in l and snaps["web"].id in l for l in gave_up), out
    problems = [l for l in r.stdout.splitlines() if l.startswith("DAMAGED:")]
    assert problems and all("needed by web" in l for l in problems), out


def test_verify_json_stays_a_clean_document_on_stdout_when_it_waited(tmp_path):
    repo, snaps = setup(tmp_path, settle=1)
    mark_waiting(tmp_path / "repo")
    os.remove(str(tmp_path / "repo" / first_pack(repo, snaps["web"])))
    r = cli("verify", "--repo", tmp_path / "repo", "--json")
    assert r.returncode == 4 and WAITING in r.stderr and "gave up" in r.stderr, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    assert doc["problems"] and all(snaps["web"].id in p for p in doc["problems"]), doc


# --- two verifies at once; verify beside a real GC --------------------------------------------------

def test_two_verifies_at_once_both_wait_and_both_pass_once_the_pack_is_back(tmp_path):
    repo, snaps = setup(tmp_path, vms=("web", "db"))
    mark_waiting(tmp_path / "repo")
    back = hide(tmp_path / "repo", first_pack(repo, snaps["web"]), tmp_path / "aside")
    procs = [start("verify", "--repo", tmp_path / "repo"), start("verify", "--repo", tmp_path / "repo")]
    try:
        outs = [until_waiting(p) for p in procs]
        back()
        results = [finish(p) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for before, (code, rest) in zip(outs, results):
        assert code == 0 and "OK" in rest and before.count(WAITING) == 1, before + rest
    r = cli("verify", "--repo", tmp_path / "repo", "--new")
    assert r.returncode == 0 and "OK" in r.stdout, r.stdout + r.stderr


class SweepAt(LocalBackend):
    """Runs `sweep` (a real GC on another Repository of the same folder) once, at a chosen moment of this
    host's reader: right after its first listing of packs/ ("listed": the packs it listed vanish before it
    reads their tables) or at its first whole read of a pack ("reading": tables read, packs then gone)."""

    def __init__(self, root, sweep, when):
        super().__init__(root)
        self.sweep, self.when, self.done = sweep, when, False

    def _fire(self):
        if not self.done:
            self.done = True
            self.sweep()

    def list(self, prefix):
        out = super().list(prefix)
        if prefix == PACKS and self.when == "listed":
            self._fire()
        return out

    def get(self, name, offset=0, length=None):
        if name.startswith(PACKS) and self.when == "reading" and (length is None or length > 4096):
            self._fire()
        return super().get(name, offset, length)


def _repacked(tmp_path):
    """Backup 1, then a heavily changed backup 2; prune keeps only 2 (backup 1's packs: garbage, or garbage and
    live chunks: a repack); a real GC marks them, and the grace period passes. Returns (snap 2, its disk)."""
    repo = new_repo(tmp_path / "repo", settle=0, backup_limit=30)
    disk = tmp_path / "web.raw"
    make_disk(disk, size=8 * MiB, regions=8)
    backup(repo, "web", disk)
    scatter(str(disk), 40)
    age(str(tmp_path / "repo"), 100)
    snap2 = backup(repo, "web", disk)
    age(str(tmp_path / "repo"), 100)
    prune.prune(repo, prune.plan(repo, {"last": 1}, select=keep_last))  # deletes backup 1, GC marks
    assert os.listdir(str(tmp_path / "repo" / "condemned")), "nothing marked: the attack needs a mark"
    age(str(tmp_path / "repo"), 100)
    return snap2, disk


@pytest.mark.parametrize("when", ["listed", "reading"])
def test_verify_beside_a_real_gc_sweep_that_repacks_and_deletes_reports_nothing(tmp_path, when):
    """Another host's GC sweeps while this host's verify works from the listing it made before: every chunk
    backup 2 needs lies in the sweep's new packs, so verify must say OK (and restore must work afterwards)."""
    snap2, disk = _repacked(tmp_path)
    other = Repository.open(LocalBackend(str(tmp_path / "repo")))
    before = {i.name for i in other.backend.list(PACKS)}
    view = Repository.open(SweepAt(str(tmp_path / "repo"), lambda: gc.collect(other), when))
    said = []
    report = verify(view, "all", say=said.append)
    after = {i.name for i in other.backend.list(PACKS)}
    assert view.backend.done and before - after, "the sweep deleted nothing"
    assert report.ok and not said, (report.problems, said)
    r = cli("restore", "--repo", tmp_path / "repo", snap2.id, "--to", tmp_path / "restored")
    assert r.returncode == 0, r.stdout + r.stderr
    assert same(tmp_path / "restored" / "web.raw", disk)


@pytest.mark.parametrize("when", ["listed", "reading"])
def test_restore_beside_a_real_gc_sweep_that_repacks_and_deletes_restores_whole(tmp_path, when):
    snap2, disk = _repacked(tmp_path)
    other = Repository.open(LocalBackend(str(tmp_path / "repo")))
    view = Repository.open(SweepAt(str(tmp_path / "repo"), lambda: gc.collect(other), when))
    said = []
    restore_disk(view, snap2, snap2.disks[0], str(tmp_path / "out.raw"), say=said.append, workers=2)
    assert view.backend.done
    assert same(tmp_path / "out.raw", disk), said


def test_verify_beside_a_cli_prune_in_another_process_both_succeed(tmp_path):
    """`hotvcb prune --repo` (real, in its own process) and `verify --repo` at once, in both orders of finishing."""
    repo = new_repo(tmp_path / "repo", settle=0, backup_limit=30)
    disk = tmp_path / "web.raw"
    make_disk(disk, size=8 * MiB, regions=8)
    for i in range(3):
        backup(repo, "web", disk)
        scatter(str(disk), 20, seed=i + 5)
        age(str(tmp_path / "repo"), 100)
    last = backup(repo, "web", disk)
    age(str(tmp_path / "repo"), 100)
    p = start("prune", "--repo", tmp_path / "repo", "--keep-last", "1")
    v = start("verify", "--repo", tmp_path / "repo")
    pc, pout = finish(p)
    vc, vout = finish(v)
    assert pc == 0, pout
    assert vc == 0 and "OK" in vout, vout
    r = cli("verify", "--repo", tmp_path / "repo")
    assert r.returncode == 0, r.stdout + r.stderr
    r = cli("restore", "--repo", tmp_path / "repo", last.id, "--to", tmp_path / "restored")
    assert r.returncode == 0 and same(tmp_path / "restored" / "web.raw", disk), r.stdout + r.stderr


# --- restore of a backup whose pack is truly lost ----------------------------------------------------

@pytest.mark.parametrize("gc_at_work", [True, False])
def test_restore_of_a_truly_lost_second_disk_leaves_no_folder_and_no_scratch(tmp_path, gc_at_work):
    """Two disks; the second's first pack is gone for good. The first disk restores whole, then the
    second fails: nothing under --to, no `.hotvcb-restoring` folder or owner record, one clear line."""
    repo = new_repo(tmp_path / "repo", settle=1)
    d1, d2 = tmp_path / "a disk ä.raw", tmp_path / "b 'disk'.raw"
    make_disk(d1, size=4 * MiB, regions=4, seed=3)
    make_disk(d2, size=4 * MiB, regions=4, seed=4)
    snap = backup(repo, "web (prod)", d1, d2)
    lost = repo.chunk_map()[repo.disk_index(snap.disks[1]).entries[0][1]].pack
    assert lost not in {repo.chunk_map()[d].pack for _n, d in repo.disk_index(snap.disks[0]).entries}
    if gc_at_work:
        mark_waiting(tmp_path / "repo")
    os.remove(str(tmp_path / "repo" / lost))
    target = tmp_path / "out" / "web restored"
    target.parent.mkdir()
    r = cli("restore", "--repo", tmp_path / "repo", snap.id, "--to", target)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    one_clear_line(r)
    assert "needed by web (prod)" in out and snap.id in out, out
    assert os.listdir(str(target.parent)) == [], os.listdir(str(target.parent))
    # and a later restore of the same backup into the same place still fails cleanly (nothing blocks it)
    r = cli("restore", "--repo", tmp_path / "repo", snap.id, "--to", target)
    assert r.returncode == 1 and "exists" not in r.stderr, r.stdout + r.stderr
    assert os.listdir(str(target.parent)) == []


def test_restore_sigkilled_in_its_wait_leaves_a_folder_the_next_restore_clears(tmp_path):
    repo, snaps = setup(tmp_path)
    mark_waiting(tmp_path / "repo")
    back = hide(tmp_path / "repo", first_pack(repo, snaps["web"]), tmp_path / "aside")
    target = tmp_path / "out" / "web"
    target.parent.mkdir()
    proc = start("restore", "--repo", tmp_path / "repo", snaps["web"].id, "--to", target)
    until_waiting(proc)
    proc.kill()
    proc.wait()
    proc.stdout.close()
    assert not target.exists()  # whatever is left does not look like a complete restore
    back()
    r = cli("restore", "--repo", tmp_path / "repo", snaps["web"].id, "--to", target)
    assert r.returncode == 0, r.stdout + r.stderr
    assert same(target / "web.raw", tmp_path / "web.raw")
    assert [e for e in os.listdir(str(target.parent)) if e != "web"] == [], os.listdir(str(target.parent))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGHUP])
def test_restore_ended_in_its_wait_by_another_signal_exits_2_and_leaves_nothing(tmp_path, sig):
    repo, snaps = setup(tmp_path)
    mark_waiting(tmp_path / "repo")
    hide(tmp_path / "repo", first_pack(repo, snaps["web"]), tmp_path / "aside")
    target = tmp_path / "out" / "web"
    target.parent.mkdir()
    proc = start("restore", "--repo", tmp_path / "repo", snaps["web"].id, "--to", target)
    before = until_waiting(proc)
    proc.send_signal(sig)
    code, rest = finish(proc)
    out = before + rest
    assert code == 2 and "Traceback" not in out and "internal error" not in out, out
    assert os.listdir(str(target.parent)) == [], os.listdir(str(target.parent))


@pytest.mark.skipif(os.geteuid() != 0, reason="esxisim needs root for unshare -m")
@pytest.mark.parametrize("gc_at_work", [False, True])
def test_restore_to_a_datastore_of_a_backup_whose_pack_is_lost_registers_nothing_and_leaves_no_staging(
        host, tmp_path, gc_at_work):
    from simhost import hotvcb, vim, write_conf
    repo_path = "/vmfs/volumes/backup/repo"
    host.create_vm("web", "datastore1", [{"size": "8M"}])
    conf = write_conf(host)
    r = hotvcb(host, "backup", "-m", "web", "-g", conf, "--repo", repo_path, "-w", tmp_path / "work")
    assert r.returncode == 0, r.stdout + r.stderr
    real = host.real(repo_path)
    repo = Repository.open(LocalBackend(real))
    (snap,) = repo.snapshots("web")
    if not snap.disks[0]:
        pytest.skip("no disk")
    entries = repo.disk_index(snap.disks[0]).entries
    if not entries:
        pytest.skip("the simulated disk holds only zeros: no pack to lose")
    with open(os.path.join(real, CONFIG)) as f:
        cfg = json.load(f)
    if gc_at_work:
        assert cfg["settle_seconds"] >= 60  # the default: a wait, cut short by SIGTERM below
        mark_waiting(real)
    os.remove(os.path.join(real, repo.chunk_map()[entries[0][1]].pack))
    from simhost import hotvcb_background
    if gc_at_work:
        proc = hotvcb_background(host, "restore", "--repo", repo_path, snap.id, "--datastore", "datastore1",
                                 "--name", "copy")
        seen = []
        for line in iter(proc.stdout.readline, ""):
            seen.append(line if isinstance(line, str) else line.decode())
            if WAITING in seen[-1]:
                break
        proc.send_signal(signal.SIGTERM)
        out_rest = proc.communicate(timeout=60)
        code = proc.returncode
        out = "".join(seen) + "".join(o if isinstance(o, str) else (o or b"").decode() for o in out_rest)
        assert code == 2, out
    else:
        r = hotvcb(host, "restore", "--repo", repo_path, snap.id, "--datastore", "datastore1", "--name", "copy")
        out = r.stdout + r.stderr
        assert r.returncode in (1, 6) and "needed by web" in out and "Traceback" not in out, out
    assert "copy" not in vim(host, "vmsvc/getallvms"), out
    root = host.real("/vmfs/volumes/datastore1")
    assert not os.path.exists(os.path.join(root, "copy")), out
    assert [e for e in os.listdir(root) if e.startswith(".hotvcb") or "hotvcb-restoring" in e] == [], os.listdir(root)


@pytest.mark.parametrize("command", ["restore", "verify"])
def test_a_wait_ends_soon_after_the_gc_finishes_when_the_chunk_is_still_nowhere(tmp_path, command):
    """Waiting only while a GC is at work: once its mark is gone (the sweep done) and the listing still lacks
    the chunk, nothing can bring it back; the command gives up, saying so, long before the hour."""
    repo, snaps = setup(tmp_path)
    mark_waiting(tmp_path / "repo")
    pack = first_pack(repo, snaps["web"])
    held = digests_of(repo, pack)
    os.remove(str(tmp_path / "repo" / pack))
    proc = start(*restore_or_verify(command, tmp_path, snaps["web"]))
    before = until_waiting(proc)
    for name in os.listdir(str(tmp_path / "repo" / "condemned")):
        os.remove(str(tmp_path / "repo" / "condemned" / name))
    code, rest = finish(proc, timeout=80)
    out = before + rest
    assert code == (1 if command == "restore" else 4), out
    assert "gave up waiting" in out and any(d in out for d in held) and "Traceback" not in out, out
    assert not (tmp_path / "restored").exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("command", ["restore", "verify"])
def test_odd_repository_and_vm_names_through_the_wait(tmp_path, command):
    odd = tmp_path / "repo 'ä' \"x\" $HOME"
    repo = new_repo(odd, settle=1)
    disk = tmp_path / "disk ü.raw"
    make_disk(disk, size=4 * MiB, regions=4)
    snap = backup(repo, "Wéb \"Server\" (prod); rm -rf", disk)
    mark_waiting(odd)
    os.remove(str(odd / first_pack(repo, snap)))
    r = cli(*(("restore", "--repo", odd, snap.id, "--to", tmp_path / "to ö")
              if command == "restore" else ("verify", "--repo", odd)))
    out = r.stdout + r.stderr
    assert r.returncode == (1 if command == "restore" else 4) and "Traceback" not in out, out
    assert out.count(WAITING) == 1 and "gave up" in out and 'needed by Wéb "Server" (prod); rm -rf' in out, out
    assert not (tmp_path / "to ö").exists() and leftovers(tmp_path) == []


FLAPPING = r'''
import sys
sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[1] + "/tests")
from hotvcb.repo.backend import LocalBackend, NotFound
from hotvcb.repo.reader import restore_disk
from hotvcb.repo.chunks import BadChunk
from hotvcb.repo.repository import Repository
from hotvcb.repo.verify import verify

class Flapping(LocalBackend):
    """Every listing names the pack; every read of it finds it gone (a pack that flaps, or a stale cache)."""
    def get(self, name, offset=0, length=None):
        if name == sys.argv[3]:
            raise NotFound("%s is missing from the repository %s" % (name, self.root))
        return super().get(name, offset, length)

repo = Repository.open(Flapping(sys.argv[2]))
said = []
if sys.argv[4] == "restore":
    snap = repo.snapshots()[0]
    try:
        restore_disk(repo, snap, snap.disks[0], sys.argv[5], say=said.append)
        print("RESTORED")
    except BadChunk as err:
        print("BADCHUNK", err)
else:
    report = verify(repo, "all", say=said.append)
    print("OK" if report.ok else "PROBLEMS %d" % len(report.problems))
print("SAID %d" % len(said))
for line in said:
    print(line)
'''


@pytest.mark.parametrize("command", ["restore", "verify"])
def test_a_pack_listed_every_time_but_gone_at_every_read_is_given_up_on_within_the_settle_time(tmp_path, command):
    """No endless loop between 'the listing names it again' and 'the read finds it gone': the wait is bounded
    by the settle time (3 s here) and ends naming the chunk, with no partial disk left."""
    repo, snaps = setup(tmp_path, settle=3)
    pack = first_pack(repo, snaps["web"])
    out_path = tmp_path / "out.raw"
    r = subprocess.run([PYTHON, "-c", FLAPPING, ROOT, str(tmp_path / "repo"), pack, command, str(out_path)],
                       capture_output=True, text=True, timeout=80)
    out = r.stdout + r.stderr
    assert r.returncode == 0 and "Traceback" not in out, out
    if command == "restore":
        assert "BADCHUNK" in out and "needed by web" in out and not out_path.exists(), out
    else:
        assert "PROBLEMS" in out, out
    assert "SAID 2" in out or "SAID 0" in out, out  # a wait said begins and ends once (or none at all)


SELF_SIGNAL = r'''
import os, signal, sys
sys.path.insert(0, sys.argv[1])
from hotvcb.repo import backend
real_get = backend.LocalBackend.get
reads = []

def get(self, name, offset=0, length=None):
    if name.startswith("packs/") and length is None:  # verify reads a pack whole
        reads.append(name)
        if len(reads) == int(sys.argv[3]):
            os.kill(os.getpid(), int(sys.argv[4]))  # the signal lands while verify is among the packs
    return real_get(self, name, offset, length)

backend.LocalBackend.get = get
from hotvcb.cli import main
sys.exit(main(["verify", "--repo", sys.argv[2]] + sys.argv[5:]))
'''


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("json_out", [False, True])
def test_a_signal_between_packs_ends_verify_with_exit_2_and_then_verify_and_backup_work(tmp_path, sig, json_out):
    """The signal arrives while verify reads its first pack whole (several packs: 2 MiB packs, 3 VMs): it
    stops there with exit 2 and one line, prints no verdict (no 'OK', no JSON claiming a result), and the
    repository is as good as before: verify --new finishes the job, a backup and its restore work."""
    repo, snaps = setup(tmp_path, vms=("web", "db", "mail"), size=6 * MiB)
    assert len(repo.backend.list(PACKS)) >= 3
    r = subprocess.run([PYTHON, "-c", SELF_SIGNAL, ROOT, str(tmp_path / "repo"), "1", str(int(sig))]
                       + (["--json"] if json_out else []), capture_output=True, text=True, timeout=80,
                       cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))
    out = r.stdout + r.stderr
    assert r.returncode == 2 and "Traceback" not in out and "internal error" not in out, out
    assert "OK" not in r.stdout and "problem" not in r.stdout and r.stdout.strip() == "", out
    r = cli("verify", "--repo", tmp_path / "repo", "--new")
    assert r.returncode == 0 and "OK" in r.stdout, r.stdout + r.stderr
    scatter(str(tmp_path / "web.raw"), 6)
    snap = backup(Repository.open(LocalBackend(str(tmp_path / "repo"))), "web", tmp_path / "web.raw")
    r = cli("restore", "--repo", tmp_path / "repo", snap.id, "--to", tmp_path / "restored")
    assert r.returncode == 0 and same(tmp_path / "restored" / "web.raw", tmp_path / "web.raw"), r.stdout + r.stderr


@pytest.mark.parametrize("where", ["condemned/1000-deadbeef", "packs/ab/" + "ab" * 32])
@pytest.mark.parametrize("command", ["restore", "verify"])
def test_an_unreadable_mark_or_pack_entry_is_said_in_one_line_not_an_internal_error(tmp_path, command, where):
    repo, snaps = setup(tmp_path)
    os.remove(str(tmp_path / "repo" / first_pack(repo, snaps["web"])))
    path = tmp_path / "repo" / where
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(path.name, str(path))  # points at itself: stat fails with ELOOP
    args = restore_or_verify(command, tmp_path, snaps["web"])
    code, out, waited = run_unless_waiting(*args)
    assert not waited and code in (1, 4), out
    assert "Traceback" not in out and "internal error" not in out, out
    # the line names what could not be read, in the repository: not the restore's own folder
    assert "cannot write" not in out and where in out, out
    assert not (tmp_path / "restored").exists() and leftovers(tmp_path) == []


def test_an_unreadable_gc_lock_does_not_swallow_verifys_report(tmp_path):
    """Verify's job is the report: whatever it thinks of a lock it cannot read (a GC at work or not), the chunk
    lost for good must still be named with its backup, exit 4."""
    repo, snaps = setup(tmp_path, settle=1)
    pack = first_pack(repo, snaps["web"])
    held = digests_of(repo, pack)
    os.remove(str(tmp_path / "repo" / pack))
    (tmp_path / "repo" / "locks").mkdir(exist_ok=True)
    os.symlink("gc", str(tmp_path / "repo" / "locks" / "gc"))
    code, out, waited = run_unless_waiting("verify", "--repo", tmp_path / "repo")
    if waited:
        pytest.fail("settle is 1 s: a wait would end in a second; killed to keep the test short:\n" + out)
    assert code == 4 and any(d in out for d in held) and "needed by web" in out, out


@pytest.mark.parametrize("command", ["restore", "verify"])
def test_giving_up_names_every_backup_that_shares_the_lost_chunk_and_no_other(tmp_path, command):
    """Two backups of web share the lost chunks (dedup), db's do not: the 'gave up' line and the report name
    both of web's and none of db's."""
    repo, snaps = setup(tmp_path, settle=1, vms=("web", "db"))
    web2 = backup(repo, "web", tmp_path / "web.raw")
    mark_waiting(tmp_path / "repo")
    os.remove(str(tmp_path / "repo" / first_pack(repo, snaps["web"])))
    r = cli(*restore_or_verify(command, tmp_path, web2))
    out = r.stdout + r.stderr
    assert r.returncode == (1 if command == "restore" else 4), out
    (gave_up,) = [l for l in out.splitlines() if "gave up waiting" in l]
    assert snaps["web"].id in gave_up and web2.id in gave_up and snaps["db"].id not in gave_up, out
    assert snaps["db"].id not in out and "needed by db" not in out, out
    assert not (tmp_path / "restored").exists() and leftovers(tmp_path) == []


def test_a_second_restore_to_the_same_folder_while_the_first_waits_is_refused_and_the_first_completes(tmp_path):
    repo, snaps = setup(tmp_path)
    mark_waiting(tmp_path / "repo")
    back = hide(tmp_path / "repo", first_pack(repo, snaps["web"]), tmp_path / "aside")
    target = tmp_path / "out" / "web"
    target.parent.mkdir()
    first = start("restore", "--repo", tmp_path / "repo", snaps["web"].id, "--to", target)
    try:
        until_waiting(first)
        code, out, waited = run_unless_waiting("restore", "--repo", tmp_path / "repo", snaps["web"].id, "--to",
                                               target)
        assert not waited and code == 1 and "Traceback" not in out, out
        assert "another restore" in out or "exists" in out, out
        back()
        code1, rest = finish(first)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert code1 == 0, rest
    assert same(target / "web.raw", tmp_path / "web.raw")
    assert sorted(os.listdir(str(target.parent))) == ["web"], os.listdir(str(target.parent))


@pytest.mark.parametrize("command", ["restore", "verify", "list"])
def test_a_huge_integer_settle_time_is_refused_as_a_damaged_config_in_one_line(tmp_path, command):
    repo, snaps = setup(tmp_path)
    _set_settle(tmp_path / "repo", "1" + "0" * 400)
    args = {"restore": ("restore", "--repo", tmp_path / "repo", snaps["web"].id, "--to", tmp_path / "restored"),
            "verify": ("verify", "--repo", tmp_path / "repo"), "list": ("list", "--repo", tmp_path / "repo")}[command]
    code, out, waited = run_unless_waiting(*args)
    assert not waited and code == 1, out
    assert "internal error" not in out and "Traceback" not in out and "config" in out, out
    assert not (tmp_path / "restored").exists() and leftovers(tmp_path) == []


VANISH_AT_READ = r'''
import os, sys
sys.path.insert(0, sys.argv[1])
from hotvcb.repo import backend
real_get = backend.LocalBackend.get
calls = []
pack, aside = sys.argv[3], sys.argv[4]

def get(self, name, offset=0, length=None):
    if name == pack:
        calls.append(offset)
        if len(calls) == 3:  # the chunk map read its trailer and table; this is the restore's first chunk read
            os.rename(os.path.join(self.root, name), aside)
    return real_get(self, name, offset, length)

backend.LocalBackend.get = get
from hotvcb.cli import main
sys.exit(main(sys.argv[5:]))
'''


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_while_a_restore_worker_waits_for_a_pack_gone_mid_restore_exits_2_and_leaves_nothing(
        tmp_path, sig):
    """The pack goes after the chunk map was built: a worker thread, not the main one, finds it gone and
    waits (GC at work, an hour). The signal must end the restore all the same: exit 2, nothing left."""
    repo, snaps = setup(tmp_path)
    mark_waiting(tmp_path / "repo")
    pack = first_pack(repo, snaps["web"])
    target = tmp_path / "out" / "web"
    target.parent.mkdir()
    proc = subprocess.Popen([PYTHON, "-c", VANISH_AT_READ, ROOT, str(tmp_path / "repo"), pack,
                             str(tmp_path / "aside"), "restore", "--repo", str(tmp_path / "repo"), snaps["web"].id,
                             "--to", str(target)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))
    before = until_waiting(proc)
    assert "pack " + pack in before, before  # it knows which pack went
    proc.send_signal(sig)
    code, rest = finish(proc)
    out = before + rest
    assert code == 2 and "Traceback" not in out and "internal error" not in out, out
    assert os.listdir(str(target.parent)) == [], os.listdir(str(target.parent))
    os.rename(str(tmp_path / "aside"), str(tmp_path / "repo" / pack))
    r = cli("restore", "--repo", tmp_path / "repo", snaps["web"].id, "--to", target)
    assert r.returncode == 0 and same(target / "web.raw", tmp_path / "web.raw"), r.stdout + r.stderr
