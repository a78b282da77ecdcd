"""Restore and verify facing a pack their listing lacks (docs/repository.md "Restore", "Verify"): while a GC
is at work they wait, as long as another host's listing may lag (the repository's settle_seconds), saying so
once and again when they give up; a signal ends the wait at once; with no GC at work the chunk is named at
once. Through the CLI, as a user runs it. The lagging listing is a pack moved out of the repository and
back: what a listing that does not show it yet looks like. Nothing here depends on how fast the machine is:
the tests wait for a line, and a wait that never ends is caught by the hour-long settle time being far
above the tests' timeouts."""

import os
import signal
import subprocess

import pytest
from repotool import (HOUR, PYTHON, ROOT, WAITING, MiB, backup, cli, digests_of, finish, first_pack, hide,
                      make_disk, mark_waiting, new_repo, one_clear_line, restore_or_verify, same, start,
                      until_waiting)
from test_repo_gcrace import CountingLists

from hotvcb.repo.backend import LocalBackend
from hotvcb.repo.reader import restore_disk
from hotvcb.repo.repository import PACKS, Repository
from hotvcb.repo.verify import verify


def lagging(tmp_path, settle, gc_at_work=True):
    """A backup whose first chunk's pack this host's listing does not show (moved aside; `back()` returns
    it), a GC mark waiting if `gc_at_work`. Returns (snap, back, the moved pack, its chunks' digests in hex)."""
    disk = tmp_path / "disk.raw"
    make_disk(disk, size=4 * MiB, regions=4)
    repo = new_repo(tmp_path / "repo", settle=settle)
    snap = backup(repo, "web", disk)
    pack = first_pack(repo, snap)
    held = digests_of(repo, pack)
    if gc_at_work:
        mark_waiting(tmp_path / "repo")
    return snap, hide(tmp_path / "repo", pack, tmp_path / "aside"), pack, held


def back_at_listing(tmp_path, nth, back):
    """The repository as this host sees it: its listing of packs/ shows the pack again from the `nth` on."""
    listings = []

    def on_list():
        listings.append(None)
        if len(listings) == nth:
            back()
    return Repository.open(CountingLists(str(tmp_path / "repo"), on_list))


@pytest.mark.parametrize("command", ["restore", "verify"])
def test_a_pack_the_listing_lacks_while_a_gc_is_at_work_is_waited_for_once_said_and_found(tmp_path, command):
    snap, back, pack, held = lagging(tmp_path, settle=HOUR)
    proc = start(*restore_or_verify(command, tmp_path, snap))
    try:
        before = until_waiting(proc)
        assert "settle_seconds" in before and "a GC on another host may be moving packs" in before, before
        waiting = before.splitlines()[-1]  # it knows the chunk and who needs it, not yet where it lies now
        assert any("chunk " + digest in waiting for digest in held) and "in no listed pack" in waiting, waiting
        assert "(needed by web @ " in waiting and snap.id in waiting, waiting
        back()  # the listing catches up
        code, rest = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = before + rest
    assert code == 0, out
    assert out.count(WAITING) == 1 and "gave up" not in out, out  # once, not per listing
    if command == "restore":
        assert same(tmp_path / "restored" / "disk.raw", tmp_path / "disk.raw")
    else:
        assert "OK" in out and pack not in out, out


@pytest.mark.parametrize("command", ["restore", "verify"])
def test_a_pack_gone_for_good_while_a_gc_is_at_work_is_given_up_on_at_the_settle_time_naming_its_backups(
        tmp_path, command):
    snap, _back, _pack, held = lagging(tmp_path, settle=1)
    r = cli(*restore_or_verify(command, tmp_path, snap))
    if command == "restore":
        assert r.returncode != 0 and not (tmp_path / "restored").exists(), r.stdout + r.stderr
        one_clear_line(r)
    else:
        assert r.returncode == 4, r.stdout + r.stderr
    out = r.stdout + r.stderr
    assert out.count(WAITING) == 1, out
    (gave_up,) = [line for line in out.splitlines() if "gave up waiting" in line]
    assert any(digest in gave_up for digest in held) and "needed by web" in gave_up and snap.id in gave_up, out


@pytest.mark.parametrize("command", ["restore", "verify"])
def test_sigterm_during_the_wait_ends_the_command_at_once_with_exit_2(tmp_path, command):
    snap, _back, _pack, _held = lagging(tmp_path, settle=HOUR)
    proc = start(*restore_or_verify(command, tmp_path, snap))
    before = until_waiting(proc)
    proc.send_signal(signal.SIGTERM)
    code, rest = finish(proc, timeout=60)  # an hour-long wait not cut short would time out here
    out = before + rest
    assert code == 2 and "interrupted by SIGTERM" in out and "Traceback" not in out, out
    assert not (tmp_path / "restored").exists()
    assert not [p for p in os.listdir(str(tmp_path)) if "hotvcb-restoring" in p]


@pytest.mark.parametrize("command", ["restore", "verify"])
def test_a_pack_the_listing_lacks_with_no_gc_at_work_is_named_at_once(tmp_path, command):
    """Nothing can have moved it (no GC lock, no mark): waiting an hour in silence would only delay the news."""
    snap, _back, _pack, held = lagging(tmp_path, settle=HOUR, gc_at_work=False)
    r = cli(*restore_or_verify(command, tmp_path, snap))
    out = r.stdout + r.stderr
    assert r.returncode == (4 if command == "verify" else 1) and any(digest in out for digest in held), out
    assert "missing from the repository" in out and WAITING not in out and "gave up" not in out, out


@pytest.mark.parametrize("command", ["restore", "verify"])
def test_a_wait_across_several_listings_is_said_once(tmp_path, command):
    """The pack shows again only at the 4th listing of packs/ (the first, the one at once on the miss, then
    two after pauses): one line all the same. Through the API, which counts the listings."""
    snap, back, _pack, _held = lagging(tmp_path, settle=HOUR)
    repo = back_at_listing(tmp_path, 4, back)
    said = []
    if command == "restore":
        restore_disk(repo, snap, snap.disks[0], str(tmp_path / "restored.raw"), say=said.append)
        assert same(tmp_path / "restored.raw", tmp_path / "disk.raw")
    else:
        report = verify(repo, "all", say=said.append)
        assert report.ok, report.problems
    assert len(repo.backend.listed) == 4 and len(said) == 1 and WAITING in said[0], (repo.backend.listed, said)


CAUGHT_UP_IN_TURN = r'''
import sys
sys.path.insert(0, sys.argv[1])
from hotvcb.repo import backend
from hotvcb.repo.repository import PACKS, Repository

GONE = sys.argv[2]  # what another host's sweep deleted
FIRST, SECOND = (set(packs.split(",")) for packs in sys.argv[3:5])  # the packs it copied it into
real_list, real_get, real_map = backend.LocalBackend.list, backend.LocalBackend.get, Repository.chunk_map
state = {"listings": 0, "mapped": False, "gone_at": None, "first_at": None}


def shown(name):
    """This host's listing: the deletion of GONE shows once a read found it gone, FIRST from the second listing
    after that, SECOND from the second listing after FIRST showed."""
    if name == GONE:
        return state["gone_at"] is None
    if name in FIRST:
        return state["gone_at"] is not None and state["listings"] >= state["gone_at"] + 2
    if name in SECOND:
        return state["first_at"] is not None and state["listings"] >= state["first_at"] + 2
    return True


def list_(self, prefix):
    out = real_list(self, prefix)
    if prefix != PACKS:
        return out
    state["listings"] += 1
    out = [info for info in out if shown(info.name)]
    if state["first_at"] is None and any(info.name in FIRST for info in out):
        state["first_at"] = state["listings"]
    return out


def chunk_map(self, usable_only=False):
    try:
        return real_map(self, usable_only)
    finally:
        state["mapped"] = True  # the sweep deletes GONE once the restore knows where each chunk lies


def get(self, name, offset=0, length=None):
    if name == GONE and state["mapped"]:
        if state["gone_at"] is None:
            state["gone_at"] = state["listings"]
        raise backend.NotFound("%s is missing from the repository %s" % (name, self.root))
    return real_get(self, name, offset, length)


backend.LocalBackend.list, backend.LocalBackend.get, Repository.chunk_map = list_, get, chunk_map
from hotvcb.cli import main
sys.exit(main(sys.argv[5:]))
'''


def packs_in(repo):
    return {info.name for info in repo.backend.list("packs/")}


def test_two_disks_meeting_one_pack_a_sweep_deleted_wait_for_it_with_one_line_naming_it(tmp_path):
    """Each of web's two disks shares a half with an older backup, whose pack another host's sweep deleted,
    copying those halves into new packs that this host's listing shows one after the other: the first disk
    waits for the one, the second for the other. The restore says it waits once, naming the pack, a chunk and
    the backups (each disk said it anew before), and ends with both disks whole. The listing is the CLI's own,
    made to lag by the script."""
    halves = [os.urandom(MiB), os.urandom(MiB)]
    old, disks = tmp_path / "old.raw", [tmp_path / "a.raw", tmp_path / "b.raw"]
    old.write_bytes(halves[0] + halves[1])
    disks[0].write_bytes(halves[0] + os.urandom(MiB))
    disks[1].write_bytes(os.urandom(MiB) + halves[1])
    repo = new_repo(tmp_path / "repo", settle=HOUR)
    gone = first_pack(repo, backup(repo, "old", old))
    snap = backup(repo, "web", *disks)
    put_back = hide(tmp_path / "repo", gone, tmp_path / "aside")
    copies = []  # the packs the sweep copied each half into
    for n, half in enumerate(halves):
        (tmp_path / "half").write_bytes(half)
        before = packs_in(repo)
        backup(repo, "copy%d" % n, tmp_path / "half")
        copies.append(packs_in(repo) - before)
        for pack in copies[-1]:
            os.rename(str(tmp_path / "repo" / pack), str(tmp_path / pack.replace("/", "_")))
    put_back()
    for pack in set().union(*copies):
        os.rename(str(tmp_path / pack.replace("/", "_")), str(tmp_path / "repo" / pack))
    r = subprocess.run([PYTHON, "-c", CAUGHT_UP_IN_TURN, ROOT, gone, ",".join(copies[0]), ",".join(copies[1]),
                        "restore", "--repo", str(tmp_path / "repo"), snap.id, "--to", str(tmp_path / "restored")],
                       capture_output=True, text=True, timeout=120)
    out = r.stdout + r.stderr
    assert r.returncode == 0 and "Traceback" not in out, out
    waits = [line for line in out.splitlines() if WAITING in line]
    assert len(waits) == 1, out
    assert "in pack %s (needed by " % gone in waits[0] and "web @ " in waits[0] and snap.id in waits[0], out
    assert all(same(tmp_path / "restored" / d.name, d) for d in disks), out


class BackFromTheThird(LocalBackend):
    """This host's listing of packs/: `pack` in the first, gone from it and from reads after that (a read
    finds it gone, and the fresh listing verify then makes lacks it), back under its name from the third
    listing after the first on (one said wait later)."""

    def __init__(self, root, pack, aside):
        super().__init__(root)
        self.listings, self.pack, self.aside = 0, pack, aside

    def list(self, prefix):
        if prefix == PACKS:
            self.listings += 1
            if self.listings == 4:
                os.rename(str(self.aside), os.path.join(self.root, self.pack))
        out = super().list(prefix)
        if prefix == PACKS and self.listings == 1:
            os.rename(os.path.join(self.root, self.pack), str(self.aside))
        return out


def test_verify_reads_a_pack_gone_at_its_read_that_a_listing_during_the_wait_names_again(tmp_path):
    """Verify listed the pack, found it gone when it came to read it, and the fresh listing lacked it too; a
    listing during the wait for its chunks names it again, so verify reads it (whole: it was to be read) as a
    restore would, rather than report it and its chunks missing. No GC at work: the pack gone at its read is
    what makes verify wait. Settle 20 s: the code before this waited that out and reported them."""
    disk = tmp_path / "disk.raw"
    make_disk(disk, size=4 * MiB, regions=4)
    repo = new_repo(tmp_path / "repo", settle=20)
    pack = first_pack(repo, backup(repo, "web", disk))
    packs = len(repo.backend.list(PACKS))
    view = Repository.open(BackFromTheThird(str(tmp_path / "repo"), pack, tmp_path / "aside"))
    said = []
    report = verify(view, "all", say=said.append)
    assert report.ok, report.problems
    assert view.backend.listings == 4 and len(said) == 1 and WAITING in said[0], (view.backend.listings, said)
    assert report.packs_read == packs and (tmp_path / "repo" / "verified" / pack.rsplit("/", 1)[-1]).exists()
