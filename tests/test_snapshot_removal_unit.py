"""jobs/snapshot_removal.py: a removal whose SSH connection broke is judged by the VM's snapshots, listed again."""

import logging

import pytest

from hotvcb.errors import CommandFailed, ConnectionLost, HostError, Unconsolidated
from hotvcb.jobs import snapshot_removal
from hotvcb.model import Snapshot

SNAP = Snapshot("1", "hotvcb-snapshot", "", "", "", 0)
LOG = logging.getLogger("test")


class Host(object):
    """remove_snapshot's outcomes in turn (an exception raised, else the snapshot removed); what a look lists."""

    def __init__(self, removals, listed=True, look=None, why=""):
        self.removals, self.listed, self.look, self.why = list(removals), listed, look, why
        self.asked = 0

    def remove_snapshot(self, vm, snap, timeout):
        self.asked += 1
        outcome = self.removals.pop(0)
        if outcome is not None:
            raise outcome
        self.listed = False

    def snapshots(self, vm, interruptible=True):
        if self.look is not None:
            raise self.look
        return [SNAP] if self.listed else []

    def needs_consolidation(self, vm, deltas=None):
        return self.why


class Vm(object):
    name = "web"


def test_a_removal_cut_off_before_it_started_is_asked_again():
    host = Host([ConnectionLost("lost the SSH connection"), None])
    snapshot_removal.remove_snapshot(host, Vm(), SNAP, 60, LOG)
    assert host.asked == 2


def test_a_removal_the_host_carried_through_stands():
    host = Host([ConnectionLost("lost the SSH connection")], listed=False)
    snapshot_removal.remove_snapshot(host, Vm(), SNAP, 60, LOG)
    assert host.asked == 1


def test_one_carried_through_onto_a_delta_says_so():
    host = Host([ConnectionLost("lost")], listed=False, why="needs consolidation: ...")
    with pytest.raises(Unconsolidated):
        snapshot_removal.remove_snapshot(host, Vm(), SNAP, 60, LOG)


def test_the_host_unreachable_again_leaves_the_lost_connection_said():
    host = Host([ConnectionLost("lost the SSH connection")], look=HostError("cannot connect"))
    with pytest.raises(ConnectionLost):
        snapshot_removal.remove_snapshot(host, Vm(), SNAP, 60, LOG)


def test_the_attempts_are_bounded_and_a_refusal_is_not_retried():
    host = Host([ConnectionLost("lost")] * snapshot_removal.ATTEMPTS)
    with pytest.raises(ConnectionLost):
        snapshot_removal.remove_snapshot(host, Vm(), SNAP, 60, LOG)
    assert host.asked == snapshot_removal.ATTEMPTS
    refused = Host([CommandFailed(["vim-cmd", "vmsvc/snapshot.remove"], 1, "fault")])
    with pytest.raises(CommandFailed):
        snapshot_removal.remove_snapshot(refused, Vm(), SNAP, 60, LOG)
    assert refused.asked == 1
