"""Outside tester (spacerace): parallel backups sharing a nearly full target that only rotation frees.

Attacks on jobs/space.py (SpaceLedger), store/deleter.py (Deleter) and rotation as an admin meets
them: ROTATION_COUNT=1 on a target with room for one new backup, a VM that truly does not fit, a kill
inside a removal, a removal the host refuses, and the ledger/deleter APIs driven by threads and events.
"""

import io
import os
import re
import signal
import subprocess
import threading

import pytest

from simhost import (backup_root, backups, copying, hotvcb, hotvcb_background, kill, lock_pid, needs_root, next_second,
                     ours, sealed, wait_for, write_conf)
from hotvcb.jobs.space import SpaceLedger
from hotvcb.runlog import RunLog
from hotvcb.store.deleter import Deleter

VOLUME = "/vmfs/volumes/backup/hotvcb"


def _vms(host, specs):
    """Powered-on VMs (no writer): name -> vmid."""
    return {name: host.create_vm(name, ds, [{"size": size}], power="on") for name, ds, size in specs}


def _need(host, vmid):
    """Bytes a thin backup of the VM's disks takes (their allocated blocks)."""
    return sum(os.lstat(host.real(p)).st_blocks * 512 for _n, p, _m in host.vm_disks(vmid)
               for p in (p, p[:-5] + "-flat.vmdk") if os.path.exists(host.real(p)))


def _fill_to(host, free):
    """Leave `free` bytes on the backup datastore (someone else's file takes the rest)."""
    path = host.real("/vmfs/volumes/backup/someone-elses-file")
    have = os.path.getsize(path) if os.path.exists(path) else 0
    with open(path, "ab") as f:
        os.posix_fallocate(f.fileno(), 0, have + host.ds_free("backup") - free)
    assert abs(host.ds_free("backup") - free) < (1 << 20)


def _run(host, tmp_path, conf, *args, after=True):
    if after:
        next_second()  # after another backup: backup names have one-second resolution
    return hotvcb(host, *args, "-g", conf, "-w", tmp_path / "w")


def _deleting(host, vm):
    return [b for b in backups(host, vm) if b.endswith("-deleting")]


def _table(out):
    rows = re.findall(r"-- info: (.+?) {2,}(OK|WARN|ERROR|SKIPPED) {2,}\d", out)
    return dict(rows)


# -- end to end: a nearly full target where only rotation makes room -----------------------------

@needs_root
def test_room_for_one_new_backup_three_at_once_rotation_frees_it_and_a_vm_too_big_is_refused_by_name(host, tmp_path):
    """ROTATION_COUNT=1, each VM has one backup, the target holds one more: one VM at a time this
    backs up all three (each rotation frees the next one's room), and so must three at once; a VM
    that does not fit even then fails alone, named, with exit code 4 (some VMs failed)."""
    made = _vms(host, [("sr one", "datastore1", "8M"), ("sr-two", "ds5", "8M"), ("sr_drei ü", "ds5", "8M")])
    conf = write_conf(host, VM_BACKUP_ROTATION_COUNT=1, BACKUP_PARALLEL=3, BACKUP_PARALLEL_PER_DATASTORE=2)
    r = _run(host, tmp_path, conf, "-a", after=False)
    assert r.returncode == 0, r.stdout + r.stderr
    first = {n: sealed(host, n) for n in made}
    need = max(_need(host, v) for v in made.values())
    big = host.create_vm("sr big", "datastore1", [{"size": "32M"}], power="on")
    assert _need(host, big) > 3 * need
    _fill_to(host, need + need // 2)
    r = _run(host, tmp_path, conf, "-a")
    out = r.stdout + r.stderr
    assert r.returncode == 4, out
    assert _table(r.stdout) == {"sr one": "OK", "sr-two": "OK", "sr_drei ü": "OK", "sr big": "ERROR"}, out
    for name in made:
        assert len(sealed(host, name)) == 1 and sealed(host, name) != first[name], (name, out)
        assert _deleting(host, name) == [], name
    assert re.search(r"sr big needs .* but only .* is free", out), out
    assert backups(host, "sr big") == []


@needs_root
def test_a_kill_inside_a_parallel_runs_removal_leaves_a_deleting_folder_never_restored_and_the_next_run_ends_it(
        host, tmp_path, monkeypatch):
    """SIGKILL as the first rotation removal starts (in the deleter's thread), two VMs at once; the
    target is then filled until the next backups fit only once the killed run's leftovers are gone.
    The `-deleting` folder cannot be restored by its path (health.judge, which list shares, calls it
    not good), and the next run removes it before it judges room."""
    made = _vms(host, [("kd a", "datastore1", "8M"), ("kd b", "ds5", "8M")])
    conf = write_conf(host, VM_BACKUP_ROTATION_COUNT=1, BACKUP_PARALLEL=2)
    assert _run(host, tmp_path, conf, "-a", after=False).returncode == 0
    need = max(_need(host, v) for v in made.values())
    monkeypatch.setenv("HOTVCB_CRASH_AT", "rotation-deleting")
    r = _run(host, tmp_path, conf, "-a")
    monkeypatch.delenv("HOTVCB_CRASH_AT")
    assert r.returncode != 0 and "Final status" not in r.stdout, r.stdout + r.stderr
    doomed = [(vm, d) for vm in made for d in _deleting(host, vm)]
    assert doomed, "killed as the first removal began"  # the other VM may have rotated too by then
    vm, d = doomed[0]
    assert d[: -len("-deleting")] not in backups(host, vm), "renamed out of the good namespace"
    restore = os.path.join(host.root, "vms_to_restore")
    with open(restore, "w", encoding="utf-8") as f:
        f.write("%s/%s;datastore1;1;kd back\n" % (VOLUME + "/" + vm, d))
    rr = hotvcb(host, "restore", "-c", restore)
    assert rr.returncode != 0 and "is not a good backup" in rr.stdout + rr.stderr, rr.stdout + rr.stderr
    assert not os.path.exists(host.real("/vmfs/volumes/datastore1/kd back")), rr.stdout + rr.stderr
    _fill_to(host, need // 2)  # the next backups fit only once the killed run's leftovers are gone
    r = _run(host, tmp_path, conf, "-a")
    assert r.returncode == 0, r.stdout + r.stderr
    for name in made:
        assert _deleting(host, name) == [] and len(sealed(host, name)) == 1, (name, backups(host, name))


@needs_root
def test_a_refused_removal_the_admin_then_fixed_is_finished_before_the_vm_is_refused_for_room(host, tmp_path):
    """A removal the host refused (an immutable disk file in the old backup) leaves `-deleting`; the
    admin lifts the flag. The target holds the next backup only once that condemned folder is gone:
    the next run must finish the removal it owes before it judges the VM's room, not refuse the VM
    night after night for space taken by a backup that is already condemned."""
    vm = "pinned vm"
    vmid = host.create_vm(vm, "datastore1", [{"size": "8M"}], power="on")
    need = _need(host, vmid)
    conf = write_conf(host, VM_BACKUP_ROTATION_COUNT=1)
    assert _run(host, tmp_path, conf, "-m", vm, after=False).returncode == 0
    [old] = sealed(host, vm)
    flat = os.path.join(backup_root(host, vm), old, vm + "-flat.vmdk")
    subprocess.run(["chattr", "+i", flat], check=True)
    try:
        _fill_to(host, need + need // 2)
        r = _run(host, tmp_path, conf, "-m", vm)
        assert r.returncode == 0 and "could not remove" in r.stdout, r.stdout + r.stderr
        assert _deleting(host, vm) == [old + "-deleting"]
    finally:
        subprocess.run(["chattr", "-i", flat.replace(old, old + "-deleting")], check=False)
        subprocess.run(["chattr", "-i", flat], check=False)
    assert host.ds_free("backup") < need  # the condemned backup's disk still takes the room
    r = _run(host, tmp_path, conf, "-m", vm)
    assert r.returncode == 0, r.stdout + r.stderr
    assert _deleting(host, vm) == [] and len(sealed(host, vm)) == 1

    assert "Finishing the removal" in r.stdout


@needs_root
def test_a_removal_the_host_refuses_in_a_parallel_run_refuses_the_vm_it_would_have_made_room_for(host, tmp_path):
    """Room for one more, two VMs at once; `ro x`'s old backup holds an immutable disk file, `ro y`
    has no old one: whichever goes first, the other finds no room (x's removal frees nothing, y
    rotates nothing). The run ends (no endless wait), the refused VM is named, exit code 4, the
    refused removal is a warning, and `cleanup` finishes it once the flag is gone."""
    vmx = host.create_vm("ro x", "datastore1", [{"size": "8M"}], power="on")
    conf = write_conf(host, VM_BACKUP_ROTATION_COUNT=1, BACKUP_PARALLEL=2)
    assert _run(host, tmp_path, conf, "-a", after=False).returncode == 0
    [old] = sealed(host, "ro x")
    flat = os.path.join(backup_root(host, "ro x"), old, "ro x-flat.vmdk")
    host.create_vm("ro y", "ds5", [{"size": "8M"}], power="on")
    need = _need(host, vmx)
    subprocess.run(["chattr", "+i", flat], check=True)
    try:
        _fill_to(host, need + need // 2)
        r = _run(host, tmp_path, conf, "-a")
    finally:
        subprocess.run(["chattr", "-i", flat.replace(old, old + "-deleting")], check=False)
        subprocess.run(["chattr", "-i", flat], check=False)
    out = r.stdout + r.stderr
    assert r.returncode == 4, out
    table = _table(r.stdout)
    assert sorted(table.values()) == ["ERROR", "OK"], out
    [refused] = [n for n, v in table.items() if v == "ERROR"]
    assert re.search(r"\] %s: %s needs .* but only .* is free" % (refused, refused), out), out
    assert backups(host, refused) == ([old] if refused == "ro x" else [])
    if refused == "ro y":
        assert "could not remove" in out and _deleting(host, "ro x") == [old + "-deleting"], out
        c = hotvcb(host, "cleanup", "-g", conf)
        assert c.returncode == 0, c.stdout + c.stderr
    assert _deleting(host, "ro x") == [] and len(sealed(host, "ro x")) == 1


@needs_root
def test_cleanup_that_cannot_finish_a_deleting_folder_says_so_with_exit_1(host, tmp_path):
    """README: cleanup "exits 1 when something it should undo could not be (each named in the log)".
    A condemned backup whose removal the host refuses (an immutable file) is such a thing."""
    vm = "stuck"
    host.create_vm(vm, "datastore1", [{"size": "8M"}], power="on")
    conf = write_conf(host, VM_BACKUP_ROTATION_COUNT=1)
    assert _run(host, tmp_path, conf, "-m", vm, after=False).returncode == 0
    [old] = sealed(host, vm)
    flat = os.path.join(backup_root(host, vm), old, vm + "-flat.vmdk")
    doomed = flat.replace(old, old + "-deleting")
    subprocess.run(["chattr", "+i", flat], check=True)
    try:
        r = _run(host, tmp_path, conf, "-m", vm)
        assert r.returncode == 0 and _deleting(host, vm) == [old + "-deleting"], r.stdout + r.stderr
        c = hotvcb(host, "cleanup", "-g", conf)
        assert os.path.exists(doomed)
    finally:
        subprocess.run(["chattr", "-i", doomed], check=False)
        subprocess.run(["chattr", "-i", flat], check=False)
    assert old + "-deleting" in c.stdout + c.stderr, c.stdout + c.stderr
    assert c.returncode == 1, c.stdout + c.stderr


@needs_root
def test_a_second_run_and_a_cleanup_while_a_vm_waits_for_room_change_nothing_and_sigterm_ends_the_wait(host, tmp_path):
    """Room for one, two VMs at once: one copies (slowly), the other waits for room. A second backup
    run and a `cleanup` meanwhile are refused by the host's lock and touch nothing; SIGTERM then ends
    the run (exit 2) with no snapshot left, no folder for the VM that only waited, and the lock free."""
    made = _vms(host, [("w one", "datastore1", "8M"), ("w two", "ds5", "8M")])
    need = max(_need(host, v) for v in made.values())
    conf = write_conf(host, VM_BACKUP_ROTATION_COUNT=1, BACKUP_PARALLEL=2)
    _fill_to(host, need + need // 2)
    host.set_fault("clone.delay", "60")
    log = tmp_path / "run.log"
    run = hotvcb_background(host, "-a", "-g", conf, "-w", tmp_path / "w", "-l", log)
    waiting = []

    def one_copies_one_waits():
        text = log.read_text(encoding="utf-8") if log.exists() else ""
        waiting[:] = [n for n in made if "] %s: waiting for room" % n in text]
        return len(waiting) == 1 and any(copying(host, n) for n in made if n not in waiting)

    try:
        wait_for(one_copies_one_waits, timeout=60, what="one VM copying and the other waiting for room")
        before = {n: backups(host, n) for n in made}
        second = hotvcb(host, "-a", "-g", conf, "-w", tmp_path / "w2")
        assert second.returncode == 1 and "another hotvcb run holds" in second.stdout + second.stderr, second.stdout
        clean = hotvcb(host, "cleanup", "-g", conf)
        assert clean.returncode == 1 and "another hotvcb run holds" in clean.stdout + clean.stderr, clean.stdout
        assert {n: backups(host, n) for n in made} == before and run.poll() is None
        run.send_signal(signal.SIGTERM)
        out, _ = run.communicate(timeout=60)
    finally:
        kill(run.pid)
    assert run.returncode == 2, out
    assert all(ours(host, vmid) == [] for vmid in made.values()), out
    assert backups(host, waiting[0]) == [], "it only waited: it claimed nothing"
    assert lock_pid(host) is None, "the host's run lock is free for the next run"


# -- the ledger and the deleter through their API, threads ordered by events ---------------------

def _ledger(removals=None):
    return SpaceLedger(RunLog(stream=io.StringIO()), removals=removals)


def test_a_vm_failing_while_another_checks_the_target_does_not_crash_the_others_reservation():
    """b reuses an earlier look and runs the target's checks (a host command); meanwhile a reserves
    and fails at once (a refused snapshot), and its failed release drops the look. b must still get
    its answer, not an exception that ends the whole run."""
    ledger, volume = _ledger(), VOLUME
    assert ledger.reserve("first", volume, 10, lambda: 1000) == 1000
    ledger.release("first")
    checking, go, got = threading.Event(), threading.Event(), []

    def check():
        checking.set()
        assert go.wait(30)

    def b():
        try:
            got.append(ledger.reserve("b", volume, 100, lambda: 1000, check))
        except BaseException as err:  # what the worker thread would raise
            got.append(err)

    worker = threading.Thread(target=b)
    worker.start()
    assert checking.wait(30)
    assert ledger.reserve("a", volume, 100, lambda: 1000) == 990
    ledger.release("a", failed=True)
    go.set()
    worker.join(30)
    assert not worker.is_alive() and len(got) == 1
    assert isinstance(got[0], int) and got[0] >= 100, got


def test_a_removal_the_host_refuses_frees_nothing_and_the_waiting_vm_is_refused_once_it_ended():
    """The VM that does not fit waits for the pending removal; it ends (refused: nothing freed). The VM
    looks again after it and is then refused with that figure, without waiting on for ever."""
    gate, looks = threading.Event(), []
    deleter = Deleter(lambda path: gate.wait(30))  # remove_now logs the host's refusal and returns
    ledger = _ledger(deleter)

    def measure():
        looks.append(deleter.removed)
        gate.set()  # the removal ends (freeing nothing) once the VM has looked
        return 100

    deleter.remove(VOLUME + "/x/x-2026-12-01_00-00-00-deleting")
    got = []
    worker = threading.Thread(target=lambda: got.append(ledger.reserve("b", VOLUME, 250, measure)))
    worker.start()
    worker.join(30)
    assert not worker.is_alive() and got == [100]
    assert looks == [0, 1], "looked once before the removal ended and once after"
    assert deleter.removed == 1 and not deleter.wait()


def test_three_vms_freed_by_one_removal_each_all_get_room_none_twice():
    """Room for one at a time; each VM's release queues a removal that frees its room. Three threads:
    every VM gets room, and never two hold it at once."""
    free, holding, most = [100], [], [0]
    lock = threading.Lock()

    def remove(path):
        with lock:
            free[0] += 80

    deleter = Deleter(remove)
    ledger = _ledger(deleter)
    results = {}

    def vm(name):
        got = ledger.reserve(name, VOLUME, 80, lambda: free[0])
        results[name] = got
        if got is not None and got >= 80:
            with lock:
                holding.append(name)
                most[0] = max(most[0], len(holding))
                free[0] -= 80  # its copy
            deleter.remove(VOLUME + "/%s/%s-old-deleting" % (name, name))  # its rotation
            with lock:
                holding.remove(name)
        ledger.release(name)

    threads = [threading.Thread(target=vm, args=(n,)) for n in ("v1", "v2", "v3")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    deleter.wait()
    assert not any(t.is_alive() for t in threads)
    assert all(results[n] >= 80 for n in results) and len(results) == 3, results
    assert most[0] == 1


def test_a_defect_in_one_removal_does_not_drop_the_removals_queued_behind_it():
    gate, done = threading.Event(), []

    def remove(path):
        assert gate.wait(30)
        if path == "bad":
            raise ValueError("a defect")
        done.append(path)

    deleter = Deleter(remove)
    deleter.remove("bad")
    deleter.remove("after")
    gate.set()
    with pytest.raises(ValueError):
        deleter.wait()
    deleter.wait()
    if "after" not in done:
        deleter.remove("after")  # handed again: it must not be ignored as already queued
        deleter.wait()
    assert done == ["after"] and deleter.removed >= 1
