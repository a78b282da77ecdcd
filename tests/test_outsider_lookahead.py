"""Outsider tests of the serial loop's look-ahead (jobs/lookahead.py), the .vmsd check after a
snapshot's removal and the reused free-space figure (jobs/space.py): the world changes between
the question asked while the VM before is copied and the answer's use."""

import os
import signal

import pytest

from esxisim import proclog, snapshots
from simhost import (backups, change_during_run, hotvcb_background, kill, lock_pid, make_host, needs_root, ours,
                     sealed, sigterm_when, snapshot_names, wait_for, wrap_tool, write_conf)

FIRST, SECOND, THIRD = "älpha 1", "bëta \"2\" 'x'", "gämma 3"


def _asked_ahead(host, vmid):
    """The next VM's power state was asked (the look-ahead's second and last question) and answered."""
    return any(e["event"] == "end" and e["args"][:2] == ["vmsvc/power.getstate", vmid] for e in proclog.read(host))


def _two_vms(host, second_power="on", delay=4, second_size="4M"):
    host.create_vm(FIRST, "datastore1", [{"size": "4M"}], power="on")
    second = host.create_vm(SECOND, "datastore1", [{"size": second_size}], power=second_power)
    host.set_fault("clone.delay", delay)
    host.set_fault("clone.match", "lpha")
    return second


def _run_changing_second(host, tmp_path, second, change, **conf):
    """backup -a of both VMs; `change` runs once the second VM was asked about during the first's copy."""
    return change_during_run(host, ["backup", "-a", "-g", write_conf(host, **conf), "-w", tmp_path / "work"],
                             lambda: _asked_ahead(host, second), "the second VM asked about ahead", change)


@needs_root
def test_a_user_snapshot_removed_during_the_copy_before_does_not_refuse_the_vm(host, tmp_path):
    second = _two_vms(host)
    user = snapshots.create(host, second, "user's", "", memory=False, quiesce=False)
    code, out = _run_changing_second(host, tmp_path, second, lambda: snapshots.remove(host, second, user))
    # the VM has no snapshot when its turn comes: a stale list must not refuse it
    assert code == 0 and "snapshot(s)" not in out, out
    assert len(sealed(host, FIRST)) == 1 and len(sealed(host, SECOND)) == 1, out
    assert snapshot_names(host, second) == []


@needs_root
def test_a_vm_powered_off_during_the_copy_before_is_backed_up_and_left_off(host, tmp_path):
    second = _two_vms(host)
    code, out = _run_changing_second(host, tmp_path, second, lambda: host.power_off(second))
    assert code == 0, out
    assert len(sealed(host, SECOND)) == 1 and snapshot_names(host, second) == [], out
    assert host.power_state(second) == "off"


@needs_root
def test_power_down_mode_leaves_a_vm_the_user_powered_off_meanwhile_off(host, tmp_path):
    second = _two_vms(host)
    code, out = _run_changing_second(host, tmp_path, second, lambda: host.power_off(second),
                                     POWER_VM_DOWN_BEFORE_BACKUP=1, POWER_DOWN_TIMEOUT=1)
    assert code == 0, out
    assert len(sealed(host, SECOND)) == 1, out
    assert host.power_state(second) == "off", out  # it was off when its turn came: not ours to start


@needs_root
def test_a_vm_powered_on_during_the_copy_before_is_snapshotted_not_copied_as_if_off(host, tmp_path):
    second = _two_vms(host, second_power="off")
    code, out = _run_changing_second(host, tmp_path, second, lambda: host.power_on(second))
    assert code == 0, out  # a running VM's disk copied without a snapshot fails (locked) or is torn
    assert len(sealed(host, SECOND)) == 1 and snapshot_names(host, second) == [], out
    assert host.power_state(second) == "on"


def _renamed(host, vmid):
    """Renamed the way ESXi 6.x+ users do it by hand: unregistered, registered again under a new name."""
    vmx = host.vm(vmid)["vmx"]
    host.unregister(vmid)
    host.register(vmx, name="renamed")


@needs_root
@pytest.mark.parametrize("change", ["unregistered", "renamed"])
def test_a_vm_unregistered_during_the_copy_before_fails_alone_in_one_line_and_leaves_no_folder(host, tmp_path,
                                                                                             change):
    """Before the look-ahead such a VM failed its pre-flight (its snapshot list) and left nothing on the
    target; asked about ahead, it was claimed a folder and failed at its snapshot, leaving a
    STATUS.error backup folder. It must leave none again, and say why in one line."""
    second = _two_vms(host)
    how = (lambda: host.unregister(second)) if change == "unregistered" else (lambda: _renamed(host, second))
    code, out = _run_changing_second(host, tmp_path, second, how)
    assert code == 4 and "Traceback" not in out, out  # some VMs failed
    assert len(sealed(host, FIRST)) == 1 and backups(host, SECOND) == [], out
    assert [l for l in out.splitlines() if "-- error:" in l and SECOND in l and "no longer registered" in l], out
    assert not ours(host, host.vmid_by_name(FIRST))


@needs_root
def test_sigterm_while_the_next_vm_is_asked_about_leaves_nothing_behind(host, tmp_path):
    first = host.create_vm(FIRST, "datastore1", [{"size": "4M"}], power="on")
    second = host.create_vm(SECOND, "datastore1", [{"size": "4M"}], power="on")
    host.set_fault("clone.delay", 30)
    run = hotvcb_background(host, "backup", "-a", "-g", write_conf(host), "-w", tmp_path / "work")
    try:
        wait_for(lambda: _asked_ahead(host, second), timeout=60, what="the second VM asked about ahead")
        run.send_signal(signal.SIGTERM)
        out, _ = run.communicate(timeout=60)
    finally:
        kill(run.pid)
    assert run.returncode == 2 and "Traceback" not in out, (run.returncode, out)
    assert ours(host, first) == [] and ours(host, second) == [], out
    assert not sealed(host, FIRST) and not backups(host, SECOND), out
    assert host.power_state(first) == "on" and host.power_state(second) == "on"
    assert lock_pid(host) is None, out


@needs_root
def test_the_target_filled_by_another_writer_within_the_reuse_window_fails_the_next_vms_cleanly(tmp_path):
    host = make_host(tmp_path / "h", backup_capacity=96 << 20)
    try:
        second = _two_vms(host, delay=3, second_size="32M")
        third = host.create_vm(THIRD, "datastore1", [{"size": "32M"}], power="on")
        filler = host.real("/vmfs/volumes/backup/someone else's.bin")

        def fill():  # another writer takes all but 5 MiB of the target while the first VM (4 MiB) copies
            with open(filler, "wb") as f:
                f.write(b"\1" * (host.ds_free("backup") - (5 << 20)))

        code, out = _run_changing_second(host, tmp_path, second, fill)
        assert code == 4 and "Traceback" not in out, out
        assert len(sealed(host, FIRST)) == 1, out
        # the free figure looked at before the fill let the second VM's copy start: it fails
        # cleanly, no backup that looks complete, nothing half-written left, no snapshot
        assert not sealed(host, SECOND) and not [b for b in backups(host, SECOND) if "partial" in b], out
        assert snapshot_names(host, second) == [] and host.power_state(second) == "on"
        assert "not enough space" in out, out
        # once a VM failed, the next looks again: its pre-flight fails it before any change
        assert "%s needs" % THIRD in out and "is free" in out, out
        assert not backups(host, THIRD), out
        assert not [e for e in proclog.read(host) if e["args"][:2] == ["vmsvc/snapshot.create", third]], out
    finally:
        host.stop()


def _misbehave(host, tmp_path, verb, vmid, what):
    """hostd misbehaves once on `verb` about `vmid`: `what` is the shell run instead of vim-cmd
    (a wrapper in the host's own /bin, as a broken hostd would answer); returns the flag that arms it."""
    flag = str(tmp_path / "armed")
    wrap_tool(host, "vim-cmd", 'if [ "$1" = "%s" ] && [ "$2" = "%s" ] && [ -e "%s" ]; then\n  rm -f "%s"\n  %s\nfi'
              % (verb, vmid, flag, flag, what))
    open(flag, "w").close()
    return flag


@needs_root
def test_a_failing_question_asked_ahead_fails_neither_vm(host, tmp_path):
    second = _two_vms(host)
    fault = 'echo "(vim.fault.GenericVmConfigFault) {"; echo "   msg = \\"hostd is busy\\""; echo "}"; exit 0'
    flag = _misbehave(host, tmp_path, "vmsvc/snapshot.get", second, fault)
    run = hotvcb_background(host, "backup", "-a", "-g", write_conf(host), "-w", tmp_path / "work")
    out, _ = run.communicate(timeout=120)
    assert not os.path.exists(flag), out  # the fault was served, to the look-ahead (the second VM's first question)
    assert run.returncode == 0 and "Traceback" not in out, out
    assert len(sealed(host, FIRST)) == 1 and len(sealed(host, SECOND)) == 1, out


def _two_vms_the_second_ones_question_hangs(host, tmp_path, verb):
    """Both VMs on, the first one's copy slow; `verb` about the second VM hangs and leaves its pid in
    the returned file: (first vmid, second vmid, that file)."""
    first = host.create_vm(FIRST, "datastore1", [{"size": "4M"}], power="on")
    second = host.create_vm(SECOND, "datastore1", [{"size": "4M"}], power="on")
    host.set_fault("clone.delay", 30)
    hung = str(tmp_path / "hung")
    _misbehave(host, tmp_path, verb, second, 'echo $$ > "%s"; exec sleep 300' % hung)
    return first, second, hung


@needs_root
def test_sigterm_while_a_question_asked_ahead_hangs_ends_the_run_promptly_and_cleanly(host, tmp_path):
    # the power state is asked uninterruptibly (cleanup asks it after a signal): the harder one to hang
    first, second, hung = _two_vms_the_second_ones_question_hangs(host, tmp_path, "vmsvc/power.getstate")
    run = hotvcb_background(host, "backup", "-a", "-g", write_conf(host), "-w", tmp_path / "work")
    out, took = sigterm_when(run, lambda: os.path.exists(hung) and os.path.getsize(hung), "a question to hang", hung)
    assert run.returncode == 2 and "Traceback" not in out, (run.returncode, out)
    assert took < 15, "a hung read-only question held the run's end %d s" % took
    assert ours(host, first) == [] and ours(host, second) == [], out
    assert not sealed(host, FIRST) and not backups(host, SECOND), out
    assert lock_pid(host) is None, out


@needs_root
def test_kill_9_while_a_question_asked_ahead_hangs_then_the_next_run_cleans_up_and_backs_up(host, tmp_path):
    first, second, hung = _two_vms_the_second_ones_question_hangs(host, tmp_path, "vmsvc/snapshot.get")
    conf = write_conf(host)
    run = hotvcb_background(host, "backup", "-a", "-g", conf, "-w", tmp_path / "work")
    try:
        wait_for(lambda: os.path.exists(hung) and lock_pid(host), timeout=60, what="the look-ahead's question to hang")
        kill(lock_pid(host))
        run.communicate(timeout=30)
    finally:
        kill(run.pid)
        with open(hung) as f:
            kill(int(f.read()))  # the hung question, orphaned by the kill
    assert ours(host, first), "the killed run's snapshot is the next run's to remove"
    host.clear_faults()
    again = hotvcb_background(host, "backup", "-a", "-g", conf, "-w", tmp_path / "work")
    out, _ = again.communicate(timeout=120)
    assert again.returncode == 0 and "Traceback" not in out, out
    assert ours(host, first) == [] and ours(host, second) == [], out
    assert len(sealed(host, FIRST)) == 1 and len(sealed(host, SECOND)) == 1, out
    assert host.power_state(first) == "on" and host.power_state(second) == "on"
    assert lock_pid(host) is None, out
