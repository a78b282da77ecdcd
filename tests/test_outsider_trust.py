"""An outsider's attempts to break hotvcb's promise, through the CLI against esxisim.

The promise (issue 7): a good backup is never lost, nothing incomplete ever
looks good, and no run can destroy another run's work. Each test here is a
way found to break it; each fails on the commit it was written against.
"""

import json
import os
import time

import pytest

from simhost import (backup_once as backup, backup_root, backups, good, host_lock_path, hotvcb,
                     hotvcb_background, kill, listing, lock_pid, needs_root, next_second, ours, power, snapshot_names,
                     two_hosts_sharing_nfs, vim, wait_for, write_conf)

pytestmark = needs_root


def no_traceback(r):
    said = r.stdout + r.stderr
    assert "Traceback" not in said and "internal error" not in said, said[-2000:]


# -- a truncated .gz ---------------------------------------------------------------------------

def test_a_truncated_archive_that_verify_calls_damaged_is_not_good_kept_or_restored(host, tmp_path):
    """verify says DAMAGED for a truncated .gz but records nothing: list keeps showing it good,
    rotation counts it as one of the good ones (deleting a really good backup), and
    restore --latest picks it."""
    vm = "gzcut"
    host.create_vm(vm, "datastore1", [{"size": "8M"}], power="on")
    conf = write_conf(host, ENABLE_COMPRESSION=1, VM_BACKUP_ROTATION_COUNT=2)
    for _ in range(2):
        r = backup(host, conf, vm)
        assert r.returncode == 0, r.stdout + r.stderr
    oldest, newer = good(host, conf, vm)
    path = os.path.join(backup_root(host, vm), newer)
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 2)  # a copy to the volume cut short, a bad sector, a full disk elsewhere
    v = hotvcb(host, "verify", "--all", "-g", conf)
    assert v.returncode != 0 and "DAMAGED" in v.stdout, v.stdout + v.stderr
    rows = {b["name"]: b for b in listing(host, conf, vm)}
    assert not rows[newer]["good"], "verify just called it DAMAGED, list still says good: %s" % rows[newer]
    r = backup(host, conf, vm)
    assert r.returncode == 0, r.stdout + r.stderr
    assert oldest in good(host, conf, vm), "rotation deleted a good backup and kept the damaged archive"


def test_restore_latest_never_picks_an_archive_verify_found_truncated(host, tmp_path):
    vm = "gzcut2"
    host.create_vm(vm, "datastore1", [{"size": "8M"}], power="on")
    conf = write_conf(host, ENABLE_COMPRESSION=1, VM_BACKUP_ROTATION_COUNT=2)
    for _ in range(2):
        assert backup(host, conf, vm).returncode == 0
    oldest, newer = good(host, conf, vm)
    path = os.path.join(backup_root(host, vm), newer)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    assert hotvcb(host, "verify", "--all", "-g", conf).returncode != 0
    r = hotvcb(host, "restore", "--latest", vm, "-g", conf, "--datastore", "datastore1", "--name", "gz back")
    no_traceback(r)
    assert r.returncode == 0 and oldest in r.stdout, r.stdout + r.stderr


# -- a hand-edited hotvcb.json in one old backup -----------------------------------------------

@pytest.mark.parametrize("text", ['[]', '"ok"', '{"format": "hotvcb-backup", "result": "ok", "disks": [1]}',
                                  '{"format": "hotvcb-backup", "result": "ok", "disks": "scsi0:0", "files": {}}'])
def test_one_odd_manifest_is_one_damaged_backup_not_a_crash_of_every_command(host, tmp_path, text):
    """Valid JSON of the wrong shape in one old backup's hotvcb.json crashed list, verify,
    restore --latest and every later backup run (in rotation, after the new backup was
    published: the run exits 1 'internal error' and rotates nothing)."""
    vm = "oddjson"
    host.create_vm(vm, "datastore1", [{"size": "4M"}], power="on")
    conf = write_conf(host, VM_BACKUP_ROTATION_COUNT=1)
    assert backup(host, conf, vm).returncode == 0
    [old] = good(host, conf, vm)
    with open(os.path.join(backup_root(host, vm), old, "hotvcb.json"), "w") as f:
        f.write(text + "\n")
    r = hotvcb(host, "list", "--json", "-g", conf)
    no_traceback(r)
    assert r.returncode == 0
    assert [b["good"] for b in json.loads(r.stdout)["backups"]] == [False]
    r = hotvcb(host, "verify", "--all", "-g", conf)
    no_traceback(r)
    r = backup(host, conf, vm)
    no_traceback(r)
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(good(host, conf, vm)) == 1
    r = hotvcb(host, "restore", "--latest", vm, "-g", conf, "--datastore", "datastore1", "--name", "odd back")
    no_traceback(r)
    assert r.returncode == 0, r.stdout + r.stderr


# -- a disk file cut short in a folder backup --------------------------------------------------

def test_a_folder_backup_whose_disk_file_is_shorter_than_sealed_is_not_good(host, tmp_path):
    """The manifest holds every file's size, but list/rotation/restore --latest only check
    that the files exist: a -flat.vmdk cut to half its size (an interrupted copy of the backup
    volume, a full volume during a resync) is listed good, counted by rotation, restored."""
    vm = "shortflat"
    host.create_vm(vm, "datastore1", [{"size": "8M"}], power="on")
    conf = write_conf(host, VM_BACKUP_ROTATION_COUNT=2)
    for _ in range(2):
        assert backup(host, conf, vm).returncode == 0
    oldest, newer = good(host, conf, vm)
    flat = os.path.join(backup_root(host, vm), newer, vm + "-flat.vmdk")
    with open(flat, "r+b") as f:
        f.truncate(os.path.getsize(flat) // 2)
    rows = {b["name"]: b for b in listing(host, conf, vm)}
    assert not rows[newer]["good"], "a disk file half the sealed size is listed good: %s" % rows[newer]
    assert backup(host, conf, vm).returncode == 0
    assert oldest in good(host, conf, vm), "rotation deleted a good backup and kept the cut one"


# -- two hosts, one NFS backup volume, a VM called the same on each ----------------------------


def test_two_hosts_on_one_nfs_volume_never_rotate_away_each_others_only_backup(tmp_path):
    """Host A and host B each have a VM called 'web' and back up to one NFS volume (keep 1).
    Both runs say 'All VMs backed up OK!', yet only one backup is left: the second run's
    rotation deleted the backup the other host's run had just made of its own VM."""
    with two_hosts_sharing_nfs(tmp_path, VM_BACKUP_ROTATION_COUNT=1) as (a, b, conf_a, conf_b, nfs):
        for h in (a, b):
            h.set_fault("clone.delay", "2")
        procs = [hotvcb_background(h, "-m", "web", "-g", c) for h, c in ((a, conf_a), (b, conf_b))]
        outs = [p.communicate(timeout=120)[0] for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outs
        assert all("All VMs backed up OK" in o for o in outs)
        folder = nfs / "10.0.0.5" / "export" / "hotvcb" / "web"
        left = sorted(os.listdir(str(folder)))
        assert len(left) == 2, "two hosts each backed up their own 'web' and each said OK; left: %s\n%s" % (
            left, "\n".join(l for o in outs for l in o.splitlines() if "Removing old backup" in l))


# -- a snapshot that hostd finishes after its run was killed -------------------------------------

def _kill_when(proc, host, pattern, delay):
    """Read the run's output until pattern, then SIGKILL the hotvcb process after delay seconds."""
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if pattern in line:
            time.sleep(delay)
            pid = lock_pid(host)
            assert pid, "no hotvcb run holds the lock"
            kill(pid)
            break
    else:
        raise AssertionError("never saw %r:\n%s" % (pattern, "".join(seen)))
    proc.communicate(timeout=60)


def test_a_snapshot_of_a_killed_run_that_appears_late_is_not_left_after_the_next_run(host, tmp_path):
    """kill -9 while hostd is still creating the snapshot (snapshot.create.delay); the next run
    starts before the snapshot shows up, finishes OK, and leaves the dead run's snapshot on the
    VM (the delta keeps growing until some later run)."""
    vm = "late snap"
    vmid = host.create_vm(vm, "datastore1", [{"size": "8M"}], power="on", writer=True)
    conf = write_conf(host, VM_BACKUP_ROTATION_COUNT=2)
    assert backup(host, conf, vm).returncode == 0
    host.set_fault("snapshot.create.delay", "8")
    next_second()
    _kill_when(hotvcb_background(host, "-m", vm, "-g", conf), host, "Creating Snapshot", 1.0)
    host.clear_faults()
    host.set_fault("clone.delay", "12")  # the next run is still copying when hostd finishes
    r = hotvcb(host, "-m", vm, "-g", conf)
    assert r.returncode == 0, r.stdout + r.stderr
    assert ours(host, vmid) == [], "after the next run: %s" % vim(host, "vmsvc/snapshot.get", vmid)


# -- the next run takes over a dead run's lock but leaves what it did to other VMs ---------------

@pytest.mark.parametrize("mode", ["power-down", "hot"])
def test_the_next_run_repairs_what_a_killed_run_left_even_on_a_vm_it_does_not_back_up(host, tmp_path, mode):
    """A run of vmA is killed mid-copy. The next run (of vmB: another job, another list) takes
    over the dead run's lock and says so, yet leaves vmA powered off / on a hotvcb snapshot;
    only `hotvcb cleanup` repairs it. README: leftovers of a SIGKILLed run are found and removed
    by the next run."""
    a = host.create_vm("vmA", "datastore1", [{"size": "8M"}], power="on")
    host.create_vm("vmB", "datastore1", [{"size": "4M"}], power="on")
    keys = dict(POWER_VM_DOWN_BEFORE_BACKUP=1, ENABLE_HARD_POWER_OFF=1, ITER_TO_WAIT_SHUTDOWN="5s") \
        if mode == "power-down" else {}
    conf = write_conf(host, **keys)
    host.set_fault("clone.delay", "6")
    _kill_when(hotvcb_background(host, "-m", "vmA", "-g", conf), host, "Backing up", 1.0)
    host.clear_faults()
    assert ("Powered off" in power(host, a)) if mode == "power-down" else ours(host, a)
    r = backup(host, write_conf(host, name="plain.conf"), "vmB")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "taking over the run lock" in r.stdout, "the next run knew a run had died"
    assert "Powered on" in power(host, a), "vmA stays down after the next run"
    assert ours(host, a) == [], "vmA keeps the dead run's snapshot after the next run"


# -- /var/run/hotvcb.lock tampering --------------------------------------------------------------

def test_a_live_run_keeps_its_snapshot_and_folder_when_its_lock_file_is_deleted(host, tmp_path):
    """Someone removes /var/run/hotvcb.lock (a tidy-up script, an admin who thinks it stale)
    while the nightly run copies. A second run then starts, and because 'we hold the lock now'
    removes the live run's snapshot and deletes its -partial folder as 'left by a run that died';
    the live run (pid alive, a hotvcb process on this very machine) fails. Nothing checks that
    the owner of a snapshot or -partial is really gone, and the heartbeat does not notice that
    its lock vanished."""
    vm = "tamper"
    vmid = host.create_vm(vm, "datastore1", [{"size": "8M"}], power="on")
    conf = write_conf(host)
    host.set_fault("clone.delay", "8")
    proc = hotvcb_background(host, "-m", vm, "-g", conf, "-w", tmp_path / "nightly")
    wait_for(lambda: ours(host, vmid) and any(b.endswith("-partial") for b in backups(host, vm)), what="the copy")
    live = lock_pid(host)
    os.unlink(host_lock_path(host))
    host.clear_faults()
    next_second()
    r = hotvcb(host, "-m", vm, "-g", conf, "-w", tmp_path / "other")
    out, _ = proc.communicate(timeout=120)
    assert "left by a run that died" not in r.stdout, "pid %d was alive:\n%s" % (live, r.stdout)
    assert proc.returncode == 0, "the live run lost its work:\n" + out


def test_a_stale_lock_with_a_garbage_pid_does_not_block_every_run(host, tmp_path):
    """A stale /var/run/hotvcb.lock whose pid field is garbage digits (a torn write, a hand
    edit): every backup and cleanup exits 1 with 'internal error: OverflowError' for as long as
    the file exists, instead of taking the stale lock over."""
    vm = "garbagelock"
    host.create_vm(vm, "datastore1", [{"size": "4M"}], power="on")
    conf = write_conf(host)
    path = host_lock_path(host)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("run=0123456789ab machine=esxi01 pid=99999999999999999999 started=1\n")
    old = time.time() - 3600
    os.utime(path, (old, old))
    for argv in (["cleanup", "-g", conf], ["-m", vm, "-g", conf]):
        r = hotvcb(host, *argv)
        no_traceback(r)
        assert r.returncode == 0, r.stdout + r.stderr


# -- a STATUS.ok dropped into a folder that says it failed -------------------------------------

def test_a_stray_status_ok_does_not_outvote_status_error_and_cost_a_good_backup(host, tmp_path):
    """A ghettoVCB backup that failed (STATUS.error, no manifest) gets a STATUS.ok dropped in
    (a script, a copy of another folder). health reads STATUS.ok first and calls it good
    ('unverifiable'); rotation keeps it and deletes a real good hotvcb backup instead. When
    STATUS files disagree, the worst should win."""
    from datetime import datetime
    vm = "stray"
    host.create_vm(vm, "datastore1", [{"size": "4M"}], power="on")
    conf = write_conf(host, VM_BACKUP_ROTATION_COUNT=2)
    assert backup(host, conf, vm).returncode == 0
    [first] = good(host, conf, vm)
    next_second()
    failed = os.path.join(backup_root(host, vm), "%s-%s" % (vm, datetime.now().strftime("%Y-%m-%d_%H-%M-%S")))
    os.makedirs(failed)  # what ghettoVCB leaves when a disk copy fails
    for name, text in ((vm + ".vmx", 'displayName = "%s"\n' % vm), (vm + ".vmdk", "# Disk DescriptorFile\n"),
                       ("STATUS.error", "ERROR\n"), ("STATUS.ok", "\n")):
        with open(os.path.join(failed, name), "w") as f:
            f.write(text)
    rows = {b["name"]: b for b in listing(host, conf, vm)}
    assert not rows[os.path.basename(failed)]["good"], rows[os.path.basename(failed)]
    assert backup(host, conf, vm).returncode == 0
    assert first in good(host, conf, vm), "rotation deleted a good backup and kept one marked STATUS.error"


# -- a snapshot is ours by its record, not by its name -------------------------------------------

def test_cleanup_never_removes_a_snapshot_that_only_shares_our_name_prefix(host, tmp_path):
    """A user snapshot called 'hotvcb-snapshot-before-upgrade' (no run record in its
    description) is removed by `hotvcb cleanup` (and by every backup run) as 'a leftover of an
    earlier hotvcb run': the user's rollback point is committed away on a name alone."""
    vm = "usersnap"
    vmid = host.create_vm(vm, "datastore1", [{"size": "4M"}], power="on",
                          snapshots=["hotvcb-snapshot-before-upgrade"])
    conf = write_conf(host, ALLOW_VMS_WITH_SNAPSHOTS_TO_BE_BACKEDUP=1)
    r = hotvcb(host, "cleanup", "-g", conf)
    assert r.returncode == 0, r.stdout + r.stderr
    assert snapshot_names(host, vmid) == ["hotvcb-snapshot-before-upgrade"], r.stdout


# -- a clock that was fast, then corrected -----------------------------------------------------

def test_rotation_never_deletes_the_backup_the_run_just_made(host, tmp_path):
    """The host's clock ran an hour fast (no NTP, common on free ESXi) during one backup, then
    was corrected. The next run makes a good backup, then rotation (keep 1) sorts by the name's
    timestamp, keeps the 'future' one and deletes the backup it has just made, while reporting
    'All VMs backed up OK!' -- ghettoVCB's ROTATION_COUNT=0 failure that hotvcb refuses, by
    another road."""
    from datetime import datetime, timedelta
    vm = "clock"
    host.create_vm(vm, "datastore1", [{"size": "4M"}], power="on")
    conf = write_conf(host, VM_BACKUP_ROTATION_COUNT=1)
    assert backup(host, conf, vm).returncode == 0
    [made] = good(host, conf, vm)
    fast = "%s-%s" % (vm, (datetime.now() + timedelta(hours=1)).strftime("%Y-%m-%d_%H-%M-%S"))
    root = backup_root(host, vm)
    os.rename(os.path.join(root, made), os.path.join(root, fast))  # as the fast clock named it
    r = backup(host, conf, vm)
    assert r.returncode == 0 and "All VMs backed up OK" in r.stdout, r.stdout + r.stderr
    now = [b for b in good(host, conf, vm) if b != fast]
    assert now, "the run said OK, and its own backup is gone: %s" % [
        l for l in r.stdout.splitlines() if "Removing old backup" in l]


# -- two disks with one file name ------------------------------------------------------------------

def test_a_failed_disk_never_deletes_the_files_of_a_disk_recorded_as_copied(host, tmp_path):
    """A VM whose second disk is an existing disk attached from another folder with the same
    file name ([datastore1] dup/dup.vmdk and [datastore1] other/dup.vmdk; ESXi allows it). Both
    are copied to <backup>/dup.vmdk: the second clone fails ('file already exists'), and
    discarding it deletes the FIRST disk's files, while hotvcb.json still records scsi0:0 as
    copied. Every run of this VM ends so, with no disk data kept at all."""
    vm = "dup"
    vmid = host.create_vm(vm, "datastore1", [{"size": "4M"}], power="off")
    host.create_vm("other", "datastore1", [{"size": "8M"}], power="off")
    folder = host.real("/vmfs/volumes/datastore1/other")
    os.rename(os.path.join(folder, "other-flat.vmdk"), os.path.join(folder, "dup-flat.vmdk"))
    with open(os.path.join(folder, "other.vmdk")) as f:
        text = f.read().replace("other-flat.vmdk", "dup-flat.vmdk")
    os.unlink(os.path.join(folder, "other.vmdk"))
    with open(os.path.join(folder, "dup.vmdk"), "w") as f:
        f.write(text)
    host.unregister(host.vmid_by_name("other"))
    with open(host.real("/vmfs/volumes/datastore1/dup/dup.vmx"), "a") as f:
        f.write('scsi0:1.present = "TRUE"\nscsi0:1.deviceType = "scsi-hardDisk"\n'
                'scsi0:1.fileName = "/vmfs/volumes/datastore1/other/dup.vmdk"\n')
    host.power_on(vmid)
    conf = write_conf(host)
    backup(host, conf, vm)
    [entry] = backups(host, vm)
    folder = os.path.join(backup_root(host, vm), entry)
    with open(os.path.join(folder, "hotvcb.json")) as f:
        data = json.load(f)
    for disk in data["disks"]:
        if disk["ok"]:
            missing = [n for n in disk["files"] if not os.path.exists(os.path.join(folder, n))]
            assert not missing, "%s recorded as copied, its files are gone: %s (folder: %s)" % (
                disk["key"], missing, sorted(os.listdir(folder)))
