"""Liveness of another host's -partial folder on a shared volume, with clocks that disagree."""

import os
import time

from hotvcb.jobs.leftovers import remove_partials
from hotvcb.runid import RunId
from hotvcb.shell import LocalShell
from hotvcb.store.lock import STALE_AFTER


class SkewedShell(LocalShell):
    """This host's clock runs `skew` seconds ahead of the NFS server that stamps mtimes."""

    def __init__(self, skew: float):
        self.skew = skew

    def age(self, path):
        age = super().age(path)
        return None if age is None else age + self.skew


class Log:
    def __init__(self):
        self.lines = []

    def info(self, m):
        self.lines.append(m)

    warning = info


def _partial(volume, owner_age):
    folder = volume / "web" / "web-2026-01-01_00-00-00-partial"
    folder.mkdir(parents=True)
    owner = folder / ".hotvcb-owner"
    owner.write_text(RunId("0123456789ab", "esxi-b", 4242, 1, "otherhost").text() + "\n")
    past = time.time() - owner_age
    os.utime(str(owner), (past, past))
    return folder


def test_a_clock_ten_minutes_ahead_does_not_make_a_live_folder_of_another_host_look_dead(tmp_path):
    folder = _partial(tmp_path, owner_age=5)  # heartbeat 5 s ago, by the server's clock
    me = RunId.new().on_host("thishost")
    assert remove_partials(SkewedShell(600), str(tmp_path), "web", Log(), me) == 0
    assert folder.exists()
    assert not [f for f in os.listdir(str(tmp_path / "web")) if f.startswith(".hotvcb-clock")], "probe removed"


def test_a_folder_whose_heartbeat_stopped_is_dead_whatever_the_clocks(tmp_path):
    folder = _partial(tmp_path, owner_age=2 * STALE_AFTER)
    me = RunId.new().on_host("thishost")
    assert remove_partials(SkewedShell(-120), str(tmp_path), "web", Log(), me) == 1
    assert not folder.exists()
