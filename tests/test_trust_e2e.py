"""A good backup is never lost, nothing incomplete ever looks good, no run destroys another's work.

Each test reproduces one of the failures found on the simulated host (the
trust issue's numbered list) through the CLI, at the rotation count, so a
rotation that counted the wrong backups would delete a good one here.
"""

import json
import os
import shlex
import signal
import subprocess
import time

import pytest

from hotvcb.store import sidecar
from simhost import (backup_once as backup, backup_root, backups, good, hotvcb, hotvcb_background, kill, listing,
                     lock_pid, needs_root, next_second, ours, power, snapshot_names, VOLUME, wait_for, wrap_tool,
                     write_conf)

pytestmark = needs_root


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


def test_a_kill_while_rotation_removes_in_the_background_leaves_nothing_good_and_cleanup_finishes_it(host, tmp_path):
    vm = "bgdel"
    host.create_vm(vm, "datastore1", [{"size": "16M"}], power="on")
    conf = write_conf(host, VM_BACKUP_ROTATION_COUNT=1)
    assert backup(host, conf, vm).returncode == 0
    [old] = good(host, conf, vm)
    r = backup(host, conf, vm, env={"HOTVCB_CRASH_AT": "rotation-deleting"})  # in the removal's thread
    assert r.returncode != 0 and "Final status" not in r.stdout, r.stdout + r.stderr
    doomed = os.path.join(backup_root(host, vm), old + "-deleting")
    assert os.path.isdir(doomed) and old not in backups(host, vm)
    os.unlink(os.path.join(doomed, vm + "-flat.vmdk"))  # half removed, as a kill inside the removal leaves it
    rows = listing(host, conf, vm)
    assert [(b["status"], b["good"]) for b in rows] == [("deleting", False), ("good", True)]
    v = hotvcb(host, "verify", vm, "-g", conf)
    assert v.returncode == 0 and "deleting, not checked" in v.stdout + v.stderr, v.stdout + v.stderr
    c = hotvcb(host, "cleanup", "-g", conf)
    assert c.returncode == 0, c.stdout + c.stderr
    assert not os.path.exists(doomed) and len(good(host, conf, vm)) == 1


def test_a_compressed_backup_is_renamed_out_of_the_good_namespace_before_its_removal_too(host, tmp_path):
    vm = "zipgone"
    host.create_vm(vm, "datastore1", [{"size": "8M"}], power="on")
    conf = write_conf(host, ENABLE_COMPRESSION=1, VM_BACKUP_ROTATION_COUNT=1)
    assert backup(host, conf, vm).returncode == 0
    [old] = good(host, conf, vm)
    assert hotvcb(host, "verify", vm, "-g", conf).returncode == 0  # records what it found of the .gz
    records = os.path.join(backup_root(host, vm), sidecar.GZ_RECORDS)
    assert os.listdir(records) == [old + sidecar.GZ_VERIFY_SUFFIX]
    r = backup(host, conf, vm, env={"HOTVCB_CRASH_AT": "rotation-renamed"})
    assert r.returncode != 0
    doomed = old[: -len(".gz")] + "-deleting"
    assert doomed in backups(host, vm) and old not in backups(host, vm)
    assert [(b["status"], b["good"]) for b in listing(host, conf, vm)] == [("deleting", False), ("good", True)]
    assert backup(host, conf, vm).returncode == 0  # finishes the removal, rotates the second one away
    [kept] = good(host, conf, vm)
    left = [n for n in os.listdir(backup_root(host, vm)) if not n.startswith(".")]
    assert kept.endswith(".gz") and left == [kept], left
    assert set(os.listdir(records)) <= {kept + sidecar.GZ_VERIFY_SUFFIX}  # no record of the removed


def test_rotation_is_done_when_the_run_ends_and_a_refused_removal_is_a_warning_the_next_run_finishes(host, tmp_path):
    vms = ["rot a", "rot b"]
    for vm in vms:
        host.create_vm(vm, "datastore1", [{"size": "64M"}], power="on")
    conf = write_conf(host, VM_BACKUP_ROTATION_COUNT=1)
    names = tmp_path / "vms.txt"
    names.write_text("".join(vm + "\n" for vm in vms))

    def both():
        next_second()  # backup names have one-second resolution
        return hotvcb(host, "-f", str(names), "-g", conf)

    assert both().returncode == 0
    first = {vm: good(host, conf, vm) for vm in vms}
    r = both()
    assert r.returncode == 0, r.stdout + r.stderr
    for vm in vms:  # removed by the time the run returned: no -deleting left behind, the space is free
        assert [n for n in backups(host, vm) if n not in good(host, conf, vm)] == []
        assert first[vm][0] not in backups(host, vm) and len(good(host, conf, vm)) == 1
    # a removal the host refuses: the new backup stays good, the run says so before its final status
    vm = vms[0]
    [kept] = good(host, conf, vm)
    pinned = os.path.join(backup_root(host, vm), kept, vm + ".vmx")
    subprocess.run(["chattr", "+i", pinned], check=True)
    try:
        r = backup(host, conf, vm)
        assert r.returncode == 0, r.stdout + r.stderr
        lines = r.stdout.splitlines()
        warned = [i for i, line in enumerate(lines) if "could not remove" in line and kept + "-deleting" in line]
        final = [i for i, line in enumerate(lines) if "Final status" in line]
        assert warned and final and warned[0] < final[0], r.stdout
        assert kept + "-deleting" in backups(host, vm) and len(good(host, conf, vm)) == 1
    finally:
        subprocess.run(["chattr", "-i", pinned.replace(kept, kept + "-deleting")], check=True)
    assert backup(host, conf, vm).returncode == 0
    assert not any(n.endswith("-deleting") for n in backups(host, vm)) and len(good(host, conf, vm)) == 1


# -- 5. no run removes another's snapshot or folder ----------------------------------------------

def test_cleanup_or_a_second_run_with_another_workdir_cannot_touch_a_live_run(host, tmp_path):
    vm = "busy"
    vmid = host.create_vm(vm, "datastore1", [{"size": "8M"}], power="on")
    conf = write_conf(host)
    # the copy waits for the test, not for a delay that a loaded machine's two runs below could outlast
    release = tmp_path / "release-the-copy"
    wrap_tool(host, "vmkfstools", 'if [ "$1" = -i ]; then while [ ! -e %s ]; do sleep 0.1; done; fi'
              % shlex.quote(str(release)), layer="usr_sbin")
    proc = hotvcb_background(host, "-m", vm, "-g", conf, "-w", tmp_path / "nightly")
    wait_for(lambda: ours(host, vmid) and any(b.endswith("-partial") for b in backups(host, vm)), what="the copy")
    try:
        for argv in (["cleanup", "-g", conf, "-w", tmp_path / "other"],
                     ["-m", vm, "-g", conf, "-w", tmp_path / "other"]):
            r = hotvcb(host, *argv)
            assert r.returncode == 1, r.stdout + r.stderr
            said = r.stdout + r.stderr
            assert "another hotvcb run holds" in said and "pid %d" % lock_pid(host) in said
        assert ours(host, vmid), "the live run's snapshot is still there"
    finally:
        release.touch()
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
    seen = []
    for line in proc.stdout:  # SIGINT once the run waits for the VM to go down (its guest ignores the request)
        seen.append(line)
        if "Powering off initiated" in line:
            break
    kill(lock_pid(host), signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    out = "".join(seen) + rest
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


# -- names the listing cannot tell apart -----------------------------------------------------------

def test_the_vmx_display_name_is_the_truth_for_names_the_listing_garbles(host, tmp_path):
    names = ["Copy of [datastore1] web", "web", "trailing ", "-leading-dash"]
    ids = {n: host.create_vm(n, "datastore1", [{"size": "4M"}], power="on") for n in names}
    conf = write_conf(host)
    argv = []
    for n in names:
        argv += ["-m", n]
    r = hotvcb(host, *argv, "-g", conf)
    assert r.returncode == 0, r.stdout + r.stderr
    for n in names:
        [entry] = backups(host, n)
        with open(os.path.join(backup_root(host, n), entry, "hotvcb.json"), encoding="utf-8") as f:
            m = json.load(f)
        assert m["vm"] == n and m["vmid"] == ids[n], (n, m["vm"], m["vmid"])


def test_workdir_debug_keeps_the_run_folder_and_says_where(host, tmp_path):
    host.create_vm("wd", "datastore1", [{"size": "4M"}], power="on")
    work = tmp_path / "work"
    r = hotvcb(host, "-m", "wd", "-g", write_conf(host), "-w", work)
    folders = lambda: [p for p in work.iterdir() if not p.name.endswith(".log")]  # noqa: E731 (the run logs: no -l)
    assert r.returncode == 0 and folders() == [], r.stdout + r.stderr
    r = backup(host, write_conf(host, WORKDIR_DEBUG=1), "wd", "-w", str(work))
    assert r.returncode == 0, r.stdout + r.stderr
    [kept] = folders()
    assert "work directory kept at %s" % kept in r.stdout
    debug = (kept / "debug.log").read_text()
    assert "-- debug: " in debug and "Final status: All VMs backed up OK!" in debug
    assert "run=" in (kept / "run.txt").read_text()


def test_backup_files_chmod_reaches_files_folders_and_archives(host, tmp_path):
    host.create_vm("modes", "datastore1", [{"size": "4M"}, {"size": "4M", "datastore": "ds5"}], power="on")
    conf = write_conf(host, BACKUP_FILES_CHMOD="640")
    assert backup(host, conf, "modes").returncode == 0
    [entry] = backups(host, "modes")
    folder = os.path.join(backup_root(host, "modes"), entry)
    for root, dirs, files in os.walk(folder):
        assert oct(os.stat(root).st_mode & 0o777) == oct(0o750), root
        for f in files:
            assert oct(os.stat(os.path.join(root, f)).st_mode & 0o777) == oct(0o640), f
    conf = write_conf(host, BACKUP_FILES_CHMOD="600", ENABLE_COMPRESSION=1)
    assert backup(host, conf, "modes").returncode == 0
    [gz] = [b for b in backups(host, "modes") if b.endswith(".gz")]
    assert oct(os.stat(os.path.join(backup_root(host, "modes"), gz)).st_mode & 0o777) == oct(0o600)


def test_rsync_link_points_at_the_archive_when_compressing(host, tmp_path):
    host.create_vm("linked", "datastore1", [{"size": "4M"}], power="on")
    assert backup(host, write_conf(host, RSYNC_LINK=1, ENABLE_COMPRESSION=1), "linked").returncode == 0
    link = os.path.join(backup_root(host, "linked"), "linked-symlink")
    assert os.readlink(link).endswith(".gz") and os.path.isfile(link)


def test_a_snapshot_the_host_refuses_to_remove_is_reported_and_removed_by_the_next_run(host, tmp_path):
    vm = "stuck"
    vmid = host.create_vm(vm, "datastore1", [{"size": "4M"}], power="on", snapshots=["user snap"])
    conf = write_conf(host, ALLOW_VMS_WITH_SNAPSHOTS_TO_BE_BACKEDUP=1)
    host.set_fault("snapshot.remove", "fail-once")
    r = backup(host, conf, vm)
    assert r.returncode == 6, r.stdout + r.stderr
    assert "could NOT be removed" in r.stdout and "remove it by hand" in r.stdout
    assert ours(host, vmid), "the host kept it: the run says so rather than pretending"
    assert good(host, conf, vm) == []
    r = backup(host, conf, vm)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "found leftover snapshot" in r.stdout
    assert snapshot_names(host, vmid) == ["user snap"] and len(good(host, conf, vm)) == 1


@pytest.mark.parametrize("mode", ["POWER_VM_DOWN_BEFORE_BACKUP", "COLD_SNAPSHOT"])
def test_sigterm_mid_copy_in_a_power_down_mode_powers_the_vm_on_again(host, tmp_path, mode):
    vm = "downed by term"
    vmid = host.create_vm(vm, "datastore1", [{"size": "8M"}], power="on")
    host.set_fault("clone.delay", "20")
    conf = write_conf(host, **{mode: 1, "ENABLE_HARD_POWER_OFF": 1, "ITER_TO_WAIT_SHUTDOWN": "10s"})
    proc = hotvcb_background(host, "-m", vm, "-g", conf)
    wait_for(lambda: any(b.endswith("-partial") for b in backups(host, vm)) and "Powered off" in power(host, vmid)
             or (mode == "COLD_SNAPSHOT" and ours(host, vmid)), timeout=60, what="the copy")
    time.sleep(1)
    kill(lock_pid(host), signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2, out
    assert "Powered on" in power(host, vmid), out
    assert ours(host, vmid) == []
