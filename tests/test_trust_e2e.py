"""A good backup is never lost, nothing incomplete ever looks good, no run destroys another's work.

Each test reproduces one of the failures found on the simulated host (the
trust issue's numbered list) through the CLI, at the rotation count, so a
rotation that counted the wrong backups would delete a good one here.
"""

import json
import os
import signal
import time

import pytest

from simhost import (VOLUME, backup_root, backups, hotvcb, hotvcb_background, kill, lock_pid, needs_root,
                     snapshot_names, vim, wait_for, write_conf)

pytestmark = needs_root


def listing(host, conf, vm=None):
    r = hotvcb(host, "list", "--json", "-g", conf, *([vm] if vm else []))
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)["backups"]


def good(host, conf, vm):
    return [b["name"] for b in listing(host, conf, vm) if b["good"]]


def power(host, vmid):
    return vim(host, "vmsvc/power.getstate", vmid).strip().splitlines()[-1]


def ours(host, vmid):
    return [n for n in snapshot_names(host, vmid) if n.startswith("hotvcb-")]


def backup(host, conf, vm, *extra, env=None):
    time.sleep(1.05)  # one backup name per second
    if env:
        os.environ.update(env)
    try:
        return hotvcb(host, "-m", vm, "-g", conf, *extra)
    finally:
        for k in env or ():
            os.environ.pop(k, None)


# -- 1. compressed partial backups ---------------------------------------------------------------

def test_a_partly_failed_backup_is_never_compressed_counted_or_restored_as_good(host, tmp_path):
    vm = "zip two"
    host.create_vm(vm, "datastore1", [{"size": "4M"}, {"size": "4M"}], power="on")
    conf = write_conf(host, ENABLE_COMPRESSION=1, VM_BACKUP_ROTATION_COUNT=2)
    for _ in range(2):
        assert backup(host, conf, vm).returncode == 0
    complete = good(host, conf, vm)
    assert len(complete) == 2 and all(n.endswith(".gz") for n in complete)
    host.set_fault("clone.fail_at", "50")
    host.set_fault("clone.match", vm + "_1.vmdk")
    for _ in range(2):
        r = backup(host, conf, vm)
        assert r.returncode == 8, r.stdout + r.stderr
        assert "not compressing a backup that is not OK" in r.stdout
    host.clear_faults()
    rows = listing(host, conf, vm)
    assert [r["status"] for r in rows] == ["good", "good", "warn", "warn"]
    assert [r["compressed"] for r in rows] == [True, True, False, False]
    assert good(host, conf, vm) == complete, "the complete backups survive two partial runs at the rotation count"
    r = hotvcb(host, "restore", "--latest", vm, "-g", conf, "--datastore", "datastore1", "--name", "zip back", "-d", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert complete[-1] in r.stdout and "disconnected" not in r.stdout


# -- 2. a backup without a disk ------------------------------------------------------------------

@pytest.mark.parametrize("case", ["VMDK_FILES_TO_BACKUP typo", "only independent disks"])
def test_a_backup_without_a_disk_fails_and_rotates_nothing(host, tmp_path, case):
    vm = "nodisk"
    if case == "only independent disks":
        host.create_vm(vm, "datastore1", [{"size": "4M"}], power="on")
        conf = write_conf(host, VM_BACKUP_ROTATION_COUNT=1)
        assert backup(host, conf, vm).returncode == 0
        vmx = host.real("/vmfs/volumes/datastore1/%s/%s.vmx" % (vm, vm))
        with open(vmx, "a") as f:
            f.write('scsi0:0.mode = "independent-persistent"\n')
    else:
        host.create_vm(vm, "datastore1", [{"size": "4M"}], power="on")
        conf = write_conf(host, VM_BACKUP_ROTATION_COUNT=1)
        assert backup(host, conf, vm).returncode == 0
        conf = write_conf(host, VM_BACKUP_ROTATION_COUNT=1, VMDK_FILES_TO_BACKUP="nodsik.vmdk")
    before = good(host, conf, vm)
    r = backup(host, conf, vm)
    assert r.returncode == 6, r.stdout + r.stderr
    assert "nothing to back up" in r.stdout
    assert "All VMs backed up OK" not in r.stdout
    assert good(host, conf, vm) == before and len(before) == 1


# -- 3. a damaged backup -------------------------------------------------------------------------

def test_a_backup_verify_found_damaged_is_not_good_and_not_counted_by_rotation(host, tmp_path):
    vm = "rotten"
    host.create_vm(vm, "datastore1", [{"size": "4M"}], power="on")
    conf = write_conf(host, VM_BACKUP_ROTATION_COUNT=2)
    for _ in range(2):
        assert backup(host, conf, vm).returncode == 0
    oldest, newer = good(host, conf, vm)
    flat = os.path.join(backup_root(host, vm), newer, vm + "-flat.vmdk")
    with open(flat, "r+b") as f:
        f.seek(1 << 20)
        f.write(b"\xff")
    r = hotvcb(host, "verify", vm, "-g", conf)
    assert r.returncode == 4, r.stdout + r.stderr
    rows = {b["name"]: b for b in listing(host, conf, vm)}
    assert rows[newer]["status"] == "damaged" and not rows[newer]["good"]
    assert backup(host, conf, vm).returncode == 0
    assert oldest in good(host, conf, vm), "rotation kept two *good* backups, not the damaged one"
    assert len(good(host, conf, vm)) == 2


# -- 4. a kill during rotation -------------------------------------------------------------------

def test_a_half_deleted_backup_never_looks_good_and_the_next_run_finishes_it(host, tmp_path):
    vm = "halfgone"
    host.create_vm(vm, "datastore1", [{"size": "4M"}], power="on")
    conf = write_conf(host, VM_BACKUP_ROTATION_COUNT=1)
    assert backup(host, conf, vm).returncode == 0
    r = backup(host, conf, vm, env={"HOTVCB_CRASH_AT": "rotation-renamed"})
    assert r.returncode != 0
    names = backups(host, vm)
    assert any(n.endswith("-deleting") for n in names)
    rows = listing(host, conf, vm)
    assert [b["status"] for b in rows] == ["deleting", "good"]
    # the way today's main left it: STATUS.ok but the disk data gone
    [kept] = good(host, conf, vm)
    os.unlink(os.path.join(backup_root(host, vm), kept, vm + "-flat.vmdk"))
    assert good(host, conf, vm) == []
    assert [b["status"] for b in listing(host, conf, vm)][-1] == "damaged"
    assert backup(host, conf, vm).returncode == 0
    assert not any(n.endswith("-deleting") for n in backups(host, vm))
    assert len(good(host, conf, vm)) == 1


# -- 5. no run removes another's snapshot or folder ----------------------------------------------

def test_cleanup_or_a_second_run_with_another_workdir_cannot_touch_a_live_run(host, tmp_path):
    vm = "busy"
    vmid = host.create_vm(vm, "datastore1", [{"size": "8M"}], power="on")
    conf = write_conf(host)
    host.set_fault("clone.delay", "6")
    proc = hotvcb_background(host, "-m", vm, "-g", conf, "-w", tmp_path / "nightly")
    wait_for(lambda: ours(host, vmid) and any(b.endswith("-partial") for b in backups(host, vm)), what="the copy")
    for argv in (["cleanup", "-g", conf, "-w", tmp_path / "other"],
                 ["-m", vm, "-g", conf, "-w", tmp_path / "other"]):
        r = hotvcb(host, *argv)
        assert r.returncode == 1, r.stdout + r.stderr
        said = r.stdout + r.stderr
        assert "another hotvcb run holds" in said and "pid %d" % lock_pid(host) in said
    assert ours(host, vmid), "the live run's snapshot is still there"
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert len(good(host, conf, vm)) == 1 and ours(host, vmid) == []


def test_a_live_partial_of_another_host_is_left_alone_until_its_heartbeat_stops(host, tmp_path):
    vm = "shared"
    host.create_vm(vm, "datastore1", [{"size": "4M"}], power="on")
    conf = write_conf(host)
    root = host.real(VOLUME + "/" + vm)
    partial = os.path.join(root, vm + "-2026-01-01_00-00-00-partial")
    os.makedirs(partial)
    owner = os.path.join(partial, ".hotvcb-owner")
    with open(owner, "w") as f:
        f.write("run=0123456789ab machine=esxi02 pid=4242 started=1 host=otherhost123\n")
    r = backup(host, conf, vm)
    assert r.returncode == 0, r.stdout + r.stderr
    assert os.path.isdir(partial) and "being written by" in r.stdout
    past = time.time() - 3600
    os.utime(owner, (past, past))
    r = backup(host, conf, vm)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not os.path.exists(partial) and "left by a run that died" in r.stdout


def test_the_owner_record_stays_while_the_backup_is_hashed(host, tmp_path):
    """Today the owner file went at the start of hashing: a host sharing the volume saw it dead."""
    vm = "hashing"
    host.create_vm(vm, "datastore1", [{"size": "4M"}], power="on")
    conf = write_conf(host)
    r = backup(host, conf, vm, env={"HOTVCB_CRASH_AT": "manifest-written"})
    assert r.returncode != 0
    [partial] = [b for b in backups(host, vm) if b.endswith("-partial")]
    with open(os.path.join(backup_root(host, vm), partial, ".hotvcb-owner")) as f:
        assert "run=" in f.read()


# -- 8. power-down mode killed mid-copy ----------------------------------------------------------

def test_a_vm_a_killed_power_down_run_left_off_is_powered_on_by_the_next_run(host, tmp_path):
    vm = "downed"
    vmid = host.create_vm(vm, "datastore1", [{"size": "4M"}], power="on")
    conf = write_conf(host, POWER_VM_DOWN_BEFORE_BACKUP=1, ENABLE_HARD_POWER_OFF=1, ITER_TO_WAIT_SHUTDOWN="5s")
    r = backup(host, conf, vm, env={"HOTVCB_CRASH_AT": "disk-copied-1"})
    assert r.returncode != 0
    assert "Powered off" in power(host, vmid)
    r = backup(host, write_conf(host, name="plain.conf"), vm)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "powered it off for a backup and did not finish; powering it on" in r.stdout
    assert "Powered on" in power(host, vmid)


def test_cleanup_powers_on_what_a_killed_run_left_off(host, tmp_path):
    vm = "downed2"
    vmid = host.create_vm(vm, "datastore1", [{"size": "4M"}], power="on")
    conf = write_conf(host, POWER_VM_DOWN_BEFORE_BACKUP=1, ENABLE_HARD_POWER_OFF=1, ITER_TO_WAIT_SHUTDOWN="5s")
    assert backup(host, conf, vm, env={"HOTVCB_CRASH_AT": "disk-copied-1"}).returncode != 0
    assert "Powered off" in power(host, vmid)
    r = hotvcb(host, "cleanup", "-g", conf)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Powered on" in power(host, vmid)
    assert not [b for b in backups(host, vm) if b.endswith("-partial")]


# -- 9. Ctrl-C is never swallowed --------------------------------------------------------------

def test_sigint_during_shutdown_order_exits_2_and_starts_the_vm_again(host, tmp_path):
    vm = "ordered"
    vmid = host.create_vm(vm, "datastore1", [{"size": "4M"}], power="on")
    host.set_fault("power.shutdown", "ignore")
    conf = write_conf(host, POWER_VM_DOWN_BEFORE_BACKUP=1, VM_SHUTDOWN_ORDER=vm, POWER_DOWN_TIMEOUT="60s")
    proc = hotvcb_background(host, "-m", vm, "-g", conf)
    wait_for(lambda: lock_pid(host), what="the run")
    time.sleep(2)
    kill(lock_pid(host), signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, out
    assert "interrupted by SIGINT" in out
    assert "Powered on" in power(host, vmid)


# -- 10. ghettoVCB-restore finds a disk on another datastore ---------------------------------------

def test_a_disk_on_another_datastore_is_stored_where_ghettovcb_restore_looks(host, tmp_path):
    vm = "two stores"
    host.create_vm(vm, "datastore1", [{"size": "4M"}, {"size": "4M", "datastore": "ds5"}], power="on")
    vmx = host.real("/vmfs/volumes/datastore1/%s/%s.vmx" % (vm, vm))
    with open(vmx, encoding="utf-8") as f:
        [other] = [line.split('"')[1] for line in f if line.startswith("scsi0:1.fileName")]
    named = other.split("/")[3]  # as the .vmx writes it: ESXi uses the datastore's UUID
    conf = write_conf(host)
    assert backup(host, conf, vm).returncode == 0
    [entry] = good(host, conf, vm)
    folder = os.path.join(backup_root(host, vm), entry)
    assert os.path.exists(os.path.join(folder, named, other.rsplit("/", 1)[1])), os.listdir(folder)
    r = hotvcb(host, "restore", os.path.join(VOLUME, vm, entry), "-g", conf, "--datastore", "datastore1",
               "--name", "two back")
    assert r.returncode == 0, r.stdout + r.stderr
