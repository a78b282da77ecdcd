"""BACKUP_PARALLEL's parts on their own: the keys and flag, the per-datastore queue, the space ledger."""

import io
import threading

import pytest

from hotvcb import cli
from hotvcb.config import for_vm, load_settings
from hotvcb.errors import ConfigError
from hotvcb.jobs import preflight, space
from hotvcb.jobs.parallel import Queue
from hotvcb.jobs.space import SpaceLedger
from hotvcb.localshell import LocalShell
from hotvcb.model import Disk, Vm, VmRef
from hotvcb.runlog import RunLog
from hotvcb.store.deleter import Deleter
from hotvcb.settings import Settings


def test_keys_take_1_to_16_and_act_once_per_run(tmp_path):
    conf = tmp_path / "g.conf"
    conf.write_text("BACKUP_PARALLEL=3\nBACKUP_PARALLEL_PER_DATASTORE=1\n")
    s, warnings = load_settings(str(conf))
    assert (s.backup_parallel, s.backup_parallel_per_datastore, warnings) == (3, 1, [])
    assert (Settings().backup_parallel, Settings().backup_parallel_per_datastore) == (1, 2)
    for bad in ("0", "17", "-1", "2x", "03x"):
        conf.write_text("BACKUP_PARALLEL=%s\n" % bad)
        with pytest.raises(ConfigError, match="BACKUP_PARALLEL='%s'.*1 to 16" % bad):
            load_settings(str(conf))
    (tmp_path / "web").write_text("BACKUP_PARALLEL=4\n")
    s, warnings = for_vm(Settings(), str(tmp_path), "web")
    assert s.backup_parallel == 1 and "applies to the whole run" in warnings[0]


def test_the_flag_is_checked_before_anything_runs(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["-a", "--parallel", "0"])
    assert info.value.code == 1 and "--parallel: '0': a whole number from 1 to 16" in capsys.readouterr().err


def test_a_busy_datastore_does_not_hold_up_vms_elsewhere():
    items = [(1, "a1", {"ds1"}), (2, "a2", {"ds1"}), (3, "a3", {"ds1"}), (4, "b1", {"ds5"}),
             (5, "both", {"ds1", "ds5"}), (6, "nowhere", set())]
    q = Queue(items, per_datastore=2, workers=3)
    taken = [q.take() for _ in range(3)]
    assert [t[1] for t in taken] == ["a1", "a2", "b1"]  # a3 waits for ds1; b1 goes ahead
    assert q.take()[1] == "nowhere"  # (a worker past N is the caller's to limit; the queue counts datastores)
    q.done(taken[0])
    assert q.take()[1] == "a3"
    q.done(taken[1])
    assert q.take()[1] == "both"  # ds1: a3 + both, ds5: b1 + both
    assert q.busy == {"ds1": 2, "ds5": 2} and q.later() == 0


def test_a_stopped_queue_starts_nothing_more():
    q = Queue([(1, "a", {"ds"}), (2, "b", {"ds"})], per_datastore=1, workers=2)
    first = q.take()
    got = []
    waiter = threading.Thread(target=lambda: got.append(q.take()))
    waiter.start()  # waits for the datastore's one slot
    q.stop()
    waiter.join(10)
    assert not waiter.is_alive() and got == [None] and first[1] == "a"


def test_reservations_count_against_each_other_and_a_vm_waits_for_room():
    log = RunLog(stream=io.StringIO())
    ledger = SpaceLedger(log)
    volume = "/vmfs/volumes/backup/hotvcb"
    assert ledger.reserve("a", volume, 60, lambda: 100) == 100
    assert ledger.reserve("x", "/vmfs/volumes/other/hotvcb", 90, lambda: 100) == 100  # another datastore
    got = []
    waiter = threading.Thread(target=lambda: got.append(ledger.reserve("b", volume + "/sub", 60, lambda: 100)))
    waiter.start()
    waiter.join(0.5)
    assert waiter.is_alive() and "b: waiting for room on /vmfs/volumes/backup/hotvcb/sub" in log.lines[-1]
    ledger.release("a")
    waiter.join(10)
    assert got == [100]
    ledger.release("b")
    assert ledger.reserve("c", volume, 150, lambda: 100) == 100  # alone and too big: the caller fails it
    assert ledger.reserve("d", "/backup", 10, lambda: None) is None  # no free-space figure: nothing to reserve


def test_a_look_at_the_free_space_serves_the_next_vms_while_it_settles_their_need(monkeypatch):
    ledger = SpaceLedger(RunLog(stream=io.StringIO()))
    volume = "/vmfs/volumes/backup/hotvcb"
    looks, checks = [], []

    def measure():
        looks.append(1)
        return 1000

    def reserve(vm, needed):
        got = ledger.reserve(vm, volume, needed, measure, lambda: checks.append(vm))
        ledger.release(vm)
        return got

    assert reserve("a", 100) == 1000 and len(looks) == 1
    assert reserve("b", 200) == 900 and len(looks) == 1 and checks == ["b"]  # 1000 less a's 100 holds it twice
    assert reserve("c", 400) == 1000 and len(looks) == 2  # 700 left would not: looked at again
    assert reserve("d", 1200) == 1000 and len(looks) == 3  # too big: never judged by an old look
    monkeypatch.setattr(space, "REUSE_FOR", 0.0)
    assert reserve("e", 1) == 1000 and len(looks) == 4 and checks == ["b"]  # too old


def test_a_look_a_failed_vm_dropped_while_another_checked_the_target_is_looked_at_again():
    """b takes an earlier look and runs the target's checks; meanwhile a fails there (its copy ran
    out of room: something else fills the target), which drops the look. b must not reserve on the
    dropped figure, nor crash on it: it looks again and gets what the target has now."""
    ledger = SpaceLedger(RunLog(stream=io.StringIO()))
    volume = "/vmfs/volumes/backup/hotvcb"
    free, checking, go, got = [1000], threading.Event(), threading.Event(), []
    assert ledger.reserve("first", volume, 10, lambda: free[0]) == 1000
    ledger.release("first")

    def check():
        checking.set()
        assert go.wait(30)

    worker = threading.Thread(target=lambda: got.append(ledger.reserve("b", volume, 100, lambda: free[0], check)))
    worker.start()
    assert checking.wait(30)
    assert ledger.reserve("a", volume, 100, lambda: free[0]) == 990
    free[0] = 150
    ledger.release("a", failed=True)
    go.set()
    worker.join(30)
    assert not worker.is_alive() and got == [150]


def test_a_look_taken_while_other_vms_copied_is_looked_at_again_once_they_are_done():
    """c looks while a and b copy (24 free of 26: they have barely begun) and waits; they go on to write
    20. Once they are done that look must not serve c: it counted their bytes as free (seen in a CI run,
    where c's copy then ran out of room half-way)."""
    log = RunLog(stream=io.StringIO())
    ledger = SpaceLedger(log)
    volume = "/vmfs/volumes/backup/hotvcb"
    free, got = [26], []
    assert ledger.reserve("a", volume, 10, lambda: free[0]) == 26
    assert ledger.reserve("b", volume, 10, lambda: free[0]) == 16  # 26 less a's 10
    free[0] = 24
    waiter = threading.Thread(target=lambda: got.append(ledger.reserve("c", volume, 10, lambda: free[0])))
    waiter.start()
    waiter.join(0.5)
    assert waiter.is_alive() and "c: waiting for room" in log.lines[-1]
    free[0] = 6
    ledger.release("a")
    ledger.release("b")
    waiter.join(10)
    assert not waiter.is_alive() and got == [6]  # alone and too big: the caller fails it before any change


class _TargetHost:
    """A host whose every disk needs 100 bytes on a target with `free` bytes: what the pre-flight asks."""

    kind, powers_on, formats, shell = "esxi", True, ("thin",), LocalShell()

    def __init__(self, free):
        self.free = free

    def delta_files(self, vm):
        return []

    def needs_consolidation(self, vm, deltas=None):
        return ""

    def bytes_needed(self, disk, fmt):
        return 100

    def free_space(self, path):
        return self.free


def _preflight(host, settings, log, ledger, name):
    ds = "/vmfs/volumes/ds/" + name
    vm = Vm(VmRef(name, name, ds + "/%s.vmx" % name), "ds", ds, None,
            [Disk("scsi0:0", ds + "/%s.vmdk" % name, "ds", "lsilogic")])
    return preflight.check(host, settings, log, ledger, vm, vm.disks, [])


@pytest.mark.parametrize("compress", [True, False])
def test_a_compressed_backup_holds_room_for_its_archive_beside_its_folder(tmp_path, compress):
    """ENABLE_COMPRESSION writes the .gz beside the folder it packs (store/seal.py), so for a while a
    backup takes up to twice its size. Two VMs of 100 bytes on 250 free fit one after the other, and
    two folders fit at once, but not two folders and an archive: the second VM waits. Alone, a VM
    whose folder fits goes ahead as a serial run does (a .gz that does not fit leaves the folder)."""
    settings = Settings(vm_backup_volume=str(tmp_path), enable_compression=compress)
    host, log = _TargetHost(250), RunLog(stream=io.StringIO())
    ledger = SpaceLedger(log)
    _preflight(host, settings, log, ledger, "a")
    got = []
    waiter = threading.Thread(target=lambda: got.append(_preflight(host, settings, log, ledger, "b")))
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive() == compress
    if compress:
        assert "b: waiting for room on %s: needs 100 B and up to 100 B more while it is compressed, 250 B free, " \
               "of which 200 B is promised" % tmp_path in log.lines[-1]
        ledger.release("a")
        waiter.join(10)
    assert not waiter.is_alive() and got[0].needed == 100
    ledger.release("a")
    ledger.release("b")
    host.free = 150
    assert _preflight(host, settings, log, ledger, "c").needed == 100  # alone: its folder fits
    assert any("c: 150 B free may not hold its .gz beside its folder" in line for line in log.lines) == compress


class _Gated:
    """The run's Deleter, with the moment its removal may end set by the test."""

    def __init__(self, deleter, gate, opens_on_wait):
        self.deleter, self.gate, self.opens_on_wait = deleter, gate, opens_on_wait

    @property
    def removed(self):
        return self.deleter.removed

    def wait(self):
        if self.opens_on_wait:
            self.gate.set()
        return self.deleter.wait()


@pytest.mark.parametrize("ends", ["while the VM waits", "between the VM's look and its wait"])
def test_a_vm_that_does_not_fit_waits_for_the_runs_rotation_removals_and_looks_again(ends):
    """Rotation removes old backups in a thread (store/deleter.py): the space they free may come
    after the next VM's look, so that VM is refused only once none is pending and none ended since it
    looked. The second case is the race CI found: the removal ended after the look but before the
    VM asked whether any was pending, and the VM was refused for room freed a moment before."""
    gate, free = threading.Event(), [100]

    def remove(path):
        assert gate.wait(10)
        free[0] = 300

    deleter = Deleter(remove)
    removals = _Gated(deleter, gate, opens_on_wait=ends == "while the VM waits")

    def measure():
        seen = free[0]
        if not removals.opens_on_wait and seen == 100:
            gate.set()  # the removal ends right after the figure was read
            deleter.wait()  # (whether it had ended by itself first is the thread's race, not the test's)
            assert deleter.removed == 1
        return seen

    ledger = SpaceLedger(RunLog(stream=io.StringIO()), removals=removals)
    volume = "/vmfs/volumes/backup/hotvcb"
    assert ledger.reserve("a", volume, 50, lambda: free[0]) == 100  # a look the next VM may reuse
    ledger.release("a")
    deleter.remove(volume + "/a/a-2026-12-01_00-00-00-deleting")
    assert ledger.reserve("b", volume, 250, measure) == 300  # looked again after the removal
    ledger.release("b")
    assert ledger.reserve("c", volume, 400, lambda: free[0]) == 300  # nothing pending or ended: refused at once
    assert not deleter.wait() and deleter.removed == 1


def test_the_deleter_removes_each_path_once_and_hands_a_defect_to_its_owner():
    done, gate = [], threading.Event()

    def remove(path):
        gate.wait(10)
        if path == "bad":
            raise ValueError("a defect")
        done.append(path)

    deleter = Deleter(remove)
    for path in ("x", "y", "x"):
        deleter.remove(path)
    # the removals hold on the gate until well after wait() is called: a removal that ended first would
    # rightly make wait() say there was nothing to wait for (CI saw "z" finish before the wait)
    threading.Timer(0.5, gate.set).start()
    assert deleter.wait() and done == ["x", "y"]
    deleter.remove("bad")
    with pytest.raises(ValueError):
        deleter.wait()
    gate.clear()
    deleter.remove("z")
    threading.Timer(0.5, gate.set).start()
    assert deleter.wait() and done == ["x", "y", "z"] and not deleter.wait()
