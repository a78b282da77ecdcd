"""Cleanup deciding about a dead restore's record while a later restore of the same VM folder
starts (restore_sweep.sweep): no lock is shared by the two, so each step of the later restore is
played at the moment that would make a careless cleanup delete its folder. And whose a record is: a
live restore's by its pid and start time, a dead one's pid reused by another hotvcb, or a restore whose
pid cannot tell (hidden by /proc, another pid namespace), judged by its heartbeat."""

import os
import subprocess
import time

import pytest
from pidviews import hide_from_proc, hotvcb_holder, other_namespace, start_of  # noqa: F401  (a live hotvcb)
from restorerecords import dead_pid

from hotvcb import pids
from hotvcb.jobs import restore_scratch, restore_sweep
from hotvcb.localshell import LocalShell
from hotvcb.runid import RunId, parse


class Log:
    def __init__(self):
        self.lines = []

    def info(self, m):
        self.lines.append(m)

    warning = error = info


class RacingShell(LocalShell):
    """Runs `later` once, just after the call named `when` (its `nth` call) returned."""

    def __init__(self, when: str, nth: int, later):
        self.when, self.nth, self.later, self.calls = when, nth, later, 0

    def _tick(self, name: str) -> None:
        if name == self.when:
            self.calls += 1
            if self.calls == self.nth:
                self.later()

    def exists(self, path):
        found = super().exists(path)
        self._tick("exists")
        return found

    def write_text(self, path, text):
        super().write_text(path, text)
        self._tick("write_text")

    def rename(self, src, dst):
        super().rename(src, dst)
        self._tick("rename")

    def read_regular(self, path, limit):
        text = super().read_regular(path, limit)
        self._tick("read_regular")
        return text


HOST = "thishost0001"  # the host id both the dead restore and cleanup run on


def dead_record(folder: str, owner=None, age: float = 0) -> None:
    """The record of `folder` as a restore of this machine and host wrote it: by default a dead one's;
    touched `age` seconds ago."""
    owner = owner or RunId("abcdef012345", RunId.new().machine, dead_pid(), 1700000000, HOST)
    record = restore_scratch.record_of(folder)
    with open(record, "w") as f:
        f.write(restore_scratch.record_text(owner, folder))
    if age:
        os.utime(record, (time.time() - age, time.time() - age))


def records():
    return restore_scratch.Records(LocalShell(), lambda: HOST)


def sweep(shell, root):
    log = Log()
    n = restore_sweep.sweep(shell, [root], log, RunId.new().on_host(HOST))
    return n, log.lines


def test_a_later_restore_claiming_the_folder_while_cleanup_looks_keeps_it(tmp_path):
    """The dead restore's folder is gone (killed after removing it, before its record); cleanup
    has read the dead record and looks for the folder, and right then a later restore writes its
    record and makes the folder. Cleanup must leave that folder and its record."""
    root = str(tmp_path)
    folder = root + "/copy.hotvcb-restoring"
    dead_record(folder)
    shell = RacingShell("exists", 1, lambda: records().claim(folder))
    n, lines = sweep(shell, root)
    assert os.path.isdir(folder) and os.path.exists(restore_scratch.record_of(folder)), lines
    assert n == 0 and any("took it over meanwhile" in line for line in lines), lines


def test_a_folder_made_after_cleanup_found_none_is_not_deleted(tmp_path):
    """Cleanup saw no folder for a dead record and read the record again (its last look, after
    saying "removing"); a folder made at that path from then on is not the dead restore's: only
    the record goes."""
    root = str(tmp_path)
    folder = root + "/copy.hotvcb-restoring"
    dead_record(folder)
    shell = RacingShell("read_regular", 3, lambda: os.mkdir(folder))
    n, lines = sweep(shell, root)
    assert os.path.isdir(folder), "cleanup deleted a folder made after it looked\n%s" % lines
    assert n == 1 and not os.path.exists(restore_scratch.record_of(folder)), lines


def test_a_dead_restores_folder_and_record_go(tmp_path):
    """The plain case through the same path: the folder is there, the record unchanged."""
    root = str(tmp_path)
    folder = root + "/copy.hotvcb-restoring"
    os.mkdir(folder)
    dead_record(folder)
    n, lines = sweep(LocalShell(), root)
    assert n == 1 and not os.path.exists(folder) and not os.path.exists(restore_scratch.record_of(folder)), lines


def test_a_live_restore_keeps_its_records_fresh_and_stops_once_they_are_gone(tmp_path, monkeypatch):
    """Cleanup takes a record without this host's id only once its heartbeat is old: the restore
    must touch every record it holds, and touch none (make none) after releasing it."""
    monkeypatch.setattr(restore_scratch, "HEARTBEAT", 0.05)
    root = str(tmp_path)
    mine = records()
    folder, scratch = root + "/copy.hotvcb-restoring", mine.make(root)
    mine.claim(folder)
    for path in (folder, scratch):
        os.utime(restore_scratch.record_of(path), (1, 1))
    deadline = time.time() + 10
    while time.time() < deadline and min(os.path.getmtime(restore_scratch.record_of(p)) for p in (folder, scratch)) < 2:
        time.sleep(0.05)
    assert all(time.time() - os.path.getmtime(restore_scratch.record_of(p)) < 10 for p in (folder, scratch))
    beat = mine._beat
    mine.remove(scratch)
    mine.release(folder)
    beat.join(5)
    assert not beat.is_alive(), "the heartbeat outlived every record"
    assert not os.path.exists(restore_scratch.record_of(folder)) and not os.path.exists(scratch)


def test_a_live_folder_renamed_in_the_last_instant_is_given_back(tmp_path):
    """Between cleanup's last look and its rename of the dead folder, the dead folder goes (another
    cleanup) and a later restore writes its record and makes its folder: cleanup renames that live
    folder, then finds the record replaced, and must put the folder back, whole, and leave the record."""
    root = str(tmp_path)
    folder = root + "/copy.hotvcb-restoring"
    os.mkdir(folder)
    dead_record(folder)

    def later_restore():
        os.rmdir(folder)
        records().claim(folder)
        open(folder + "/disk", "w").close()
    shell = RacingShell("write_text", 1, later_restore)  # the cleanup's own record of the name it renames to
    n, lines = sweep(shell, root)
    assert n == 0 and os.path.exists(folder + "/disk") and any("took it over" in line for line in lines), lines
    with open(restore_scratch.record_of(folder)) as f:
        assert "abcdef012345" not in f.read(), "the later restore's record was replaced or removed"
    assert sorted(os.listdir(root)) == sorted([os.path.basename(folder), os.path.basename(
        restore_scratch.record_of(folder))]), "the cleanup left its own name behind"


def test_two_sweeps_at_once_both_count_the_folder_and_neither_fails(tmp_path, monkeypatch):
    """A second cleanup sweeps right after the first renamed the dead folder away to remove it: it
    finds no folder, removes the record and counts it (and leaves the first's renamed folder: that
    cleanup lives); the first removes what it renamed, finds the record gone, and counts it too: no
    error from either, nothing left."""
    monkeypatch.setattr(restore_sweep, "owner_alive", lambda owner, me: owner.pid == os.getpid())  # the first
    root = str(tmp_path)
    folder = root + "/copy.hotvcb-restoring"
    os.makedirs(folder + "/sub")
    dead_record(folder)
    second = []
    shell = RacingShell("rename", 1, lambda: second.append(sweep(LocalShell(), root)))
    n, lines = sweep(shell, root)
    assert (n, second[0][0]) == (1, 1) and os.listdir(root) == [], (lines, second)
    assert not [line for line in lines + second[0][1] if "cannot" in line or "by hand" in line], (lines, second)


def test_a_folder_named_with_a_line_break_is_recorded_and_swept(tmp_path):
    """A line break in the path (the target folder may hold one) would end the record's `path=` line: it is
    written percent-encoded, and the dead restore's folder found by it."""
    root = str(tmp_path)
    folder = root + "/web\nhost=x pid=1.hotvcb-restoring"
    mine = records()
    mine.claim(folder)
    with open(restore_scratch.record_of(folder)) as f:
        text = f.read()
    assert len(text.splitlines()) == 2 and restore_scratch.recorded_path(text) == folder, text
    mine.release(folder)  # the folder stays, its record now a dead restore's:
    with open(restore_scratch.record_of(folder), "w") as f:
        f.write(text.replace(text.split("\n")[0], RunId("abcdef012345", RunId.new().machine, 1, 1, HOST).text()))
    n, lines = sweep(LocalShell(), root)
    assert n == 1 and os.listdir(root) == [], lines


def test_a_record_a_dead_restore_was_writing_goes_and_a_live_ones_stays(tmp_path):
    """Killed between writing its record's temp file and renaming it into place, a restore leaves
    `.<record>.<pid>-<tid>-<hex>.tmp` beside the records (seen: a SIGKILL at a random moment): cleanup
    removes it once the owner it names is dead; another machine's (a shared datastore) is left to it."""
    root = str(tmp_path)
    folder = root + "/copy.hotvcb-restoring"
    dead_record(folder)
    record = restore_scratch.record_of(folder)
    dead_temp = "%s/.%s.%d-1-abcdef.tmp" % (root, os.path.basename(record), 99999)
    os.rename(record, dead_temp)
    live = RunId("abcdef012346", "othermachine", 1, 1700000000, "otherhost")
    live_temp = "%s/.%s.%d-2-abcdef.tmp" % (root, os.path.basename(restore_scratch.record_of(root + "/b.hotvcb-restoring")),
                                            os.getpid())
    with open(live_temp, "w") as f:
        f.write(restore_scratch.record_text(live, root + "/b.hotvcb-restoring"))
    n, lines = sweep(LocalShell(), root)
    assert not os.path.exists(dead_temp) and n == 1, lines
    assert os.path.exists(live_temp), lines


def test_an_empty_record_temp_goes_at_once_when_its_writer_is_dead(tmp_path):
    """SIGKILLed between creating the temp file and writing into it (seen in CI: it then outlived every
    later cleanup for STALE_AFTER, and stood beside the next restores): the file names its writer's pid,
    so cleanup removes it at once when that pid is no hotvcb, and leaves it while it is one."""
    root = str(tmp_path)
    dead = subprocess.Popen(["true"])
    dead.wait()
    # a live process whose command line names hotvcb (`sleep 60 hotvcb` is no sleep: GNU sleep refuses
    # the word and ends at once, and the test then raced that exit; the `:` keeps sh from exec'ing sleep),
    # waited for until it has exec'd (until then its command line is this test's)
    live = subprocess.Popen(["sh", "-c", "sleep 60; :", "hotvcb"])
    try:
        for _ in range(600):
            if pids.hotvcb(live.pid):
                break
            time.sleep(0.05)
        name = os.path.basename(restore_scratch.record_of(root + "/copy.hotvcb-restoring"))
        dead_temp = "%s/.%s.%d-1-abcdef.tmp" % (root, name, dead.pid)
        live_temp = "%s/.%s.%d-1-abcdef.tmp" % (root, name, live.pid)
        for path in (dead_temp, live_temp):
            open(path, "w").close()
        n, lines = sweep(LocalShell(), root)
        assert not os.path.exists(dead_temp) and n == 1, lines
        assert os.path.exists(live_temp), lines
    finally:
        live.kill()
        live.wait()


# --- whose record: judged by its pid as the locks judge theirs (runid.running) -----------------------------------

def owner(pid, pid_start=None, pid_ns=None):
    return RunId("abcdef012345", RunId.new().machine, pid, 1700000000, HOST, pid_start, pid_ns=pid_ns)


@pytest.mark.parametrize("recorded, kept", [("its own", True), ("another", False), ("none", True)])
def test_a_folder_is_kept_only_by_the_live_restore_that_recorded_it(tmp_path, hotvcb_holder, recorded, kept):
    """A live hotvcb at the record's pid that started when the record says keeps its folder; one started at
    another time is a later hotvcb at a dead restore's pid; a record without the time (an older hotvcb's)
    takes any live hotvcb at its word, as before."""
    root = str(tmp_path)
    folder = root + "/copy.hotvcb-restoring"
    os.mkdir(folder)
    start = {"its own": start_of(hotvcb_holder), "another": start_of(hotvcb_holder) + 1, "none": None}[recorded]
    dead_record(folder, owner(hotvcb_holder, start))
    n, lines = sweep(LocalShell(), root)
    assert (n, os.path.isdir(folder)) == (0 if kept else 1, kept), lines


@pytest.mark.parametrize("view", ["hidden", "namespace"])
@pytest.mark.parametrize("age, kept", [(5, True), (2 * restore_sweep.STALE_AFTER, False)])
def test_a_folder_whose_restore_cannot_be_told_by_its_pid_is_judged_by_its_heartbeat(tmp_path, hotvcb_holder,
                                                                                    monkeypatch, view, age, kept):
    """A live restore /proc hides from us (hidepid, another user's) or of another pid namespace of this machine
    records this host's id, yet its pid proves nothing here: its folder goes once its record missed its
    heartbeats, never at once."""
    root = str(tmp_path)
    folder = root + "/copy.hotvcb-restoring"
    os.mkdir(folder)
    if view == "hidden":
        dead_record(folder, owner(hotvcb_holder, start_of(hotvcb_holder)), age)
        hide_from_proc(monkeypatch, hotvcb_holder)
    else:
        dead_record(folder, owner(dead_pid(), 5, other_namespace()), age)
    n, lines = sweep(LocalShell(), root)
    assert (n, os.path.isdir(folder)) == (0 if kept else 1, kept), lines
    if kept:
        assert any("cannot be told from here" in line for line in lines), lines


def test_a_restores_records_say_when_its_process_started(tmp_path):
    """So that a later hotvcb at its pid, once it died, is no owner of its folders."""
    folder = records().make(str(tmp_path))
    with open(restore_scratch.record_of(folder)) as f:
        held = parse(f.read())
    assert held.pid == os.getpid() and held.pid_start == start_of(os.getpid()) and held.host == HOST
    assert held.pid_ns == os.stat("/proc/self/ns/pid").st_ino


@pytest.mark.parametrize("age, kept", [(0, True), (2 * restore_sweep.STALE_AFTER, False)])
def test_an_empty_record_temp_of_a_writer_proc_hides_goes_once_old(tmp_path, hotvcb_holder, monkeypatch, age, kept):
    """The pid in its name is a live process /proc hides from us: maybe a restore writing it this instant, so
    not removed at once as a dead writer's, but once older than a record can be in writing."""
    root = str(tmp_path)
    name = os.path.basename(restore_scratch.record_of(root + "/copy.hotvcb-restoring"))
    temp = "%s/.%s.%d-1-abcdef.tmp" % (root, name, hotvcb_holder)
    open(temp, "w").close()
    if age:
        os.utime(temp, (time.time() - age, time.time() - age))
    hide_from_proc(monkeypatch, hotvcb_holder)
    n, lines = sweep(LocalShell(), root)
    assert (n, os.path.exists(temp)) == (0 if kept else 1, kept), lines
