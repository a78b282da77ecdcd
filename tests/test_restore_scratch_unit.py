"""Cleanup deciding about a dead restore's record while a later restore of the same VM folder
starts (restore_scratch.sweep): no lock is shared by the two, so each step of the later restore is
played at the moment that would make a careless cleanup delete its folder."""

import os
import subprocess
import time

from hotvcb import pids
from hotvcb.jobs import restore_scratch
from hotvcb.runid import RunId
from hotvcb.shell import LocalShell


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


def dead_record(folder: str) -> None:
    p = subprocess.Popen(["true"])
    p.wait()
    dead = RunId("abcdef012345", RunId.new().machine, p.pid, 1700000000, HOST)
    with open(restore_scratch.record_of(folder), "w") as f:
        f.write("%s\npath=%s\n" % (dead.text(), folder))


def records():
    return restore_scratch.Records(LocalShell(), lambda: HOST)


def sweep(shell, root):
    log = Log()
    n = restore_scratch.sweep(shell, [root], log, RunId.new().on_host(HOST))
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
    monkeypatch.setattr(restore_scratch, "owner_alive", lambda owner, me: owner.pid == os.getpid())  # the first
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
