"""Review of s35: a snapshot removal whose connection broke is carried on within the one removal's timeout
(jobs/snapshot_removal.py), not a timeout per attempt: the systemd stop window (schedule/linux.py STOP_TIMEOUT)
and docs/operations.md give the removal SNAPSHOT_REMOVE_TIMEOUT once."""

import pytest

from hotvcb.errors import CommandFailed, ConnectionLost
from hotvcb.jobs import snapshot_removal
from test_snapshot_removal_unit import LOG, SNAP, Host, Vm

T = 30 * 60.0  # SNAPSHOT_REMOVE_TIMEOUT's default, on a clock of the test's


class Clock(object):
    """time as snapshot_removal sees it (its `time.monotonic`), moved on by the host's waits."""

    def __init__(self):
        self.now = 0.0

    def monotonic(self):
        return self.now


class SlowHost(Host):
    """Host whose waits take their time on `clock`: a removal whose connection breaks runs `cut_after` seconds
    first (by default its whole wait: hostd's task ran on, the link dropped at the end, the worst case), and a
    look that finds ours still listed took all its `timeout`. `given`: each removal's timeout."""

    def __init__(self, clock, removals, cut_after=None, **kw):
        super().__init__(removals, **kw)
        self.clock, self.cut_after, self.given = clock, cut_after, []

    def remove_snapshot(self, vm, snap, timeout):
        self.given.append(timeout)
        if isinstance(self.removals[0], ConnectionLost):
            self.clock.now += timeout if self.cut_after is None else self.cut_after
        super().remove_snapshot(vm, snap, timeout)

    def await_snapshot_removal(self, vm, snap, timeout):
        gone = super().await_snapshot_removal(vm, snap, timeout)
        if not gone:
            self.clock.now += max(timeout, 0.0)
        return gone


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(snapshot_removal, "time", clock)
    return clock


def _refusal():
    return CommandFailed(["vim-cmd", "vmsvc/snapshot.remove"], 1, "vim.fault.InvalidState", fault="InvalidState")


def test_removals_refused_after_a_lost_connection_share_one_timeout(clock):
    """The removal's own wait, its connection lost, a look of REASK_AFTER, then two removals refused
    (InvalidState) and each waited out for the full timeout: 4x SNAPSHOT_REMOVE_TIMEOUT, about two hours
    uninterruptible by default, which systemd KILLs after 35 min; the error said "after waiting 1800 s". Within
    the one timeout no time is left to ask again: the lost connection is said, with the time waited."""
    host = SlowHost(clock, [ConnectionLost("lost the SSH connection"), _refusal(), _refusal()])
    with pytest.raises(ConnectionLost) as raised:
        snapshot_removal.remove_snapshot(host, Vm(), SNAP, T, LOG)
    assert clock.now <= T + snapshot_removal.REASK_AFTER, clock.now
    assert "after waiting %d s" % clock.now in str(raised.value), (clock.now, str(raised.value))


def test_a_refusal_waited_out_says_the_whole_time_waited(clock):
    """The first removal cut off at once, the second refused and waited out: the refusal is said, with the
    time waited in all (not the timeout alone), and no third removal is asked past the timeout."""
    host = SlowHost(clock, [ConnectionLost("lost the SSH connection"), _refusal(), _refusal()], cut_after=0)
    with pytest.raises(CommandFailed) as raised:
        snapshot_removal.remove_snapshot(host, Vm(), SNAP, T, LOG)
    assert clock.now == T + snapshot_removal.REASK_AFTER and host.asked == 2, (clock.now, host.asked)
    assert "InvalidState" in str(raised.value)
    assert "after waiting %d s" % clock.now in str(raised.value), (clock.now, str(raised.value))


def test_removals_whose_connections_all_broke_share_one_timeout(clock):
    host = SlowHost(clock, [ConnectionLost("lost the SSH connection")] * snapshot_removal.ATTEMPTS)
    with pytest.raises(ConnectionLost):
        snapshot_removal.remove_snapshot(host, Vm(), SNAP, T, LOG)
    assert clock.now <= T + snapshot_removal.REASK_AFTER, clock.now


def test_a_removal_asked_again_is_given_what_is_left_of_the_timeout(clock, monkeypatch):
    """The first removal cut off after 20 s, ours still listed 10 s on: the second is given what is left."""
    monkeypatch.setattr(snapshot_removal, "REASK_AFTER", 10)
    host = SlowHost(clock, [ConnectionLost("lost the SSH connection"), None], cut_after=20)
    snapshot_removal.remove_snapshot(host, Vm(), SNAP, 60, LOG)
    assert host.given == [60, 40] and not host.listed
