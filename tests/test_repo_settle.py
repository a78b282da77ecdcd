"""Restore and verify facing a pack their listing lacks (docs/repository.md "Restore", "Verify"): while a GC
is at work they wait, as long as another host's listing may lag (the repository's settle_seconds), saying so
once and again when they give up; a signal ends the wait at once; with no GC at work the chunk is named at
once. Through the CLI, as a user runs it. The lagging listing is a pack moved out of the repository and
back: what a listing that does not show it yet looks like. Nothing here depends on how fast the machine is:
the tests wait for a line, and a wait that never ends is caught by the hour-long settle time being far
above the tests' timeouts."""

import os
import signal

import pytest
from repotool import (HOUR, WAITING, MiB, backup, cli, digests_of, finish, first_pack, hide, make_disk,
                      mark_waiting, new_repo, one_clear_line, restore_or_verify, same, start, until_waiting)
from test_repo_gcrace import CountingLists

from hotvcb.repo.reader import restore_disk
from hotvcb.repo.repository import Repository
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
        if command == "restore":  # it knows the chunk, not yet where it lies now
            assert any("chunk " + digest in before.splitlines()[-1] for digest in held), before
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
