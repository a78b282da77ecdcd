"""jobs/snapshot_removal.py: a removal whose SSH connection broke is judged by the VM's snapshots, listed again."""

import logging

import pytest

from hotvcb.errors import CommandFailed, ConnectionLost, HostError, Unconsolidated
from hotvcb.jobs import snapshot_removal
from hotvcb.model import Snapshot

SNAP = Snapshot("1", "hotvcb-snapshot", "", "", "", 0)
LOG = logging.getLogger("test")


class Host(object):
    """remove_snapshot's outcomes in turn (an exception raised, else the snapshot removed); what a look lists.
    `takes`: seconds hostd's task runs on once a removal's connection broke, refusing another meanwhile (as
    hostd does with a task under way); `merging`: seconds its deltas are merged after the snapshot left the list."""

    def __init__(self, removals, listed=True, look=None, why="", takes=0, merging=0):
        self.removals, self.listed, self.look, self.why = list(removals), listed, look, why
        self.takes, self.merging = takes, merging
        self.asked, self.asked_while_listed, self.waited = 0, 0, []

    def remove_snapshot(self, vm, snap, timeout):
        self.asked += 1
        if self.takes:
            self.asked_while_listed += 1
            raise CommandFailed(["vim-cmd", "vmsvc/snapshot.remove"], 1, "vim.fault.TaskInProgress",
                                fault="TaskInProgress")
        outcome = self.removals.pop(0)
        if outcome is not None:
            self.takes = self.takes or getattr(outcome, "takes", 0)
            raise outcome
        self.listed = False

    def snapshots(self, vm, interruptible=True):
        if self.look is not None:
            raise self.look
        return [SNAP] if self.listed else []

    def needs_consolidation(self, vm, deltas=None):
        return self.why or ("needs consolidation: its deltas are being merged" if self.merging else "")

    def await_snapshot_removal(self, vm, snap, timeout):
        """The driver's wait as a clock: hostd's task and the merge of its deltas run `timeout` seconds on."""
        self.waited.append(timeout)
        if self.look is not None:
            raise self.look
        if self.takes > timeout:
            self.takes -= timeout
            return False
        if self.takes:
            self.takes, self.listed = 0, False
        if self.listed:
            return False
        if self.merging > timeout and not self.why:
            self.merging -= timeout
            return False
        self.merging = 0
        if self.why:
            raise Unconsolidated("web " + self.why)
        return True


def lost_while_hostd_works(seconds):
    """A removal's connection broken while hostd's task runs on for `seconds`."""
    err = ConnectionLost("lost the SSH connection")
    err.takes = seconds
    return err


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


def test_the_host_unreachable_again_leaves_the_lost_connection_said(monkeypatch):
    """Looked at again within the one deadline, then the lost connection said (a 2 s timeout: the looks pause
    for real)."""
    monkeypatch.setattr(snapshot_removal, "REASK_AFTER", 0.5)
    monkeypatch.setattr(snapshot_removal, "LOOK_PAUSE", 0.2)
    host = Host([ConnectionLost("lost the SSH connection")], look=HostError("cannot connect"))
    with pytest.raises(ConnectionLost):
        snapshot_removal.remove_snapshot(host, Vm(), SNAP, 2, LOG)


def test_the_attempts_are_bounded_and_a_refusal_is_not_retried():
    host = Host([ConnectionLost("lost")] * snapshot_removal.ATTEMPTS)
    with pytest.raises(ConnectionLost):
        snapshot_removal.remove_snapshot(host, Vm(), SNAP, 60, LOG)
    assert host.asked == snapshot_removal.ATTEMPTS
    # the last removal, not asked again, waited for all that is left of the one timeout (the fakes take no time)
    assert 60 < host.waited[-1] <= 60 + snapshot_removal.REASK_AFTER
    refused = Host([CommandFailed(["vim-cmd", "vmsvc/snapshot.remove"], 1, "fault")])
    with pytest.raises(CommandFailed):
        snapshot_removal.remove_snapshot(refused, Vm(), SNAP, 60, LOG)
    assert refused.asked == 1


def test_a_refusal_that_ends_the_attempts_is_said_not_the_earlier_lost_connection(monkeypatch):
    """The later removals refused (InvalidState) and ours still listed after every wait: the admin reads the
    host's refusal, not "connection lost" from the first attempt's session."""
    monkeypatch.setattr(snapshot_removal, "REASK_AFTER", 10)
    refusal = CommandFailed(["vim-cmd", "vmsvc/snapshot.remove"], 1, "vim.fault.InvalidState", fault="InvalidState")
    host = Host([ConnectionLost("lost the SSH connection")] + [refusal] * (snapshot_removal.ATTEMPTS - 1))
    with pytest.raises(CommandFailed) as raised:
        snapshot_removal.remove_snapshot(host, Vm(), SNAP, 60, LOG)
    assert raised.value.fault == "InvalidState" and "InvalidState" in str(raised.value)
    assert host.asked == snapshot_removal.ATTEMPTS and host.listed


def test_a_removal_hostd_carries_on_with_is_waited_for_not_asked_again(monkeypatch):
    monkeypatch.setattr(snapshot_removal, "REASK_AFTER", 10)
    host = Host([lost_while_hostd_works(8)])
    snapshot_removal.remove_snapshot(host, Vm(), SNAP, 60, LOG)
    assert host.asked == 1 and not host.listed


def test_a_removal_refused_while_hostd_still_works_on_it_is_waited_for(monkeypatch):
    monkeypatch.setattr(snapshot_removal, "REASK_AFTER", 10)
    host = Host([lost_while_hostd_works(40)])
    snapshot_removal.remove_snapshot(host, Vm(), SNAP, 60, LOG)
    assert not host.listed and host.asked_while_listed == 1


def test_deltas_still_being_merged_after_a_lost_connection_are_waited_for(monkeypatch):
    monkeypatch.setattr(snapshot_removal, "REASK_AFTER", 10)
    host = Host([ConnectionLost("lost")], listed=False, merging=5)
    snapshot_removal.remove_snapshot(host, Vm(), SNAP, 60, LOG)
    assert host.asked == 1


def test_the_drivers_wait_sees_deltas_merged_over_a_few_polls(monkeypatch):
    """esxi_snapshots' wait (a removal's own, and one past a broken connection): deltas left for a few polls."""
    from hotvcb.hosts import esxi_snapshots
    monkeypatch.setattr(esxi_snapshots, "POLL", 0)
    snaps = esxi_snapshots.EsxiSnapshots.__new__(esxi_snapshots.EsxiSnapshots)
    polls = {"listed": 2, "deltas": 5}

    def snapshots(vm, interruptible=True):
        polls["listed"] -= 1
        return [SNAP] if polls["listed"] > 0 else []

    def orphaned(vm):
        polls["deltas"] -= 1
        return ["/vmfs/volumes/ds/web/web-000001.vmdk"] if polls["deltas"] > 0 else []

    snaps.snapshots, snaps._orphaned_deltas = snapshots, orphaned
    snaps.needs_consolidation = lambda vm, deltas=None: ""
    assert snaps.await_removal(Vm(), SNAP, 60) is True
    assert polls["deltas"] == 0
