"""Outsider round s32: different commands at once on one VM, folder or repository, and kill -9 between them."""

import os
import signal
import time

import pytest

from simhost import (VOLUME, backup_once, backups, hotvcb, hotvcb_background, kill, needs_root, ours, sealed, wait_for,
                     wrap_tool, write_conf)

pytestmark = needs_root


def _killed_restore(host, conf, name="r1"):
    """A `restore --latest web` into ds5 as `name`, SIGKILLed while vmkfstools clones its first disk."""
    rs = hotvcb_background(host, "restore", "--latest", "web", "-g", conf, "--datastore", "ds5", "--name", name,
                           "--format", "zeroedthick")
    try:
        wait_for(lambda: os.path.exists(host.real("/vmfs/volumes/ds5/%s.hotvcb-restoring" % name)), what="restoring")
        time.sleep(0.5)
    finally:
        kill(rs.pid)
        rs.communicate()


def test_dry_run_after_killed_restore_predicts_what_the_real_restore_does(host, tmp_path):
    """The admin's restore of web into ds5 as r1 was killed (kill -9, an OOM, a lost SSH session).
    Before trying again they do what the docs recommend: a dry run (`-d 1`). It says
    "would remove /vmfs/volumes/ds5/r1.hotvcb-restoring, left by a restore that died" and then, in
    the same run, "error: ... r1.hotvcb-restoring exists: another restore is running, or one was
    killed" and "ERROR: All VMs failed to restore!", exit 6. The real restore removes that folder and
    succeeds. A dry run must say what the real run would do: the folder would be removed, and the
    restore would go ahead (exit 0)."""
    host.create_vm("web", "datastore1", [{"size": "2M"}], power="on")
    conf = write_conf(host)
    assert backup_once(host, conf, "web").returncode == 0
    wrap_tool(host, "vmkfstools", 'case "$*" in *ds5*) sleep 5;; esac', layer="usr_sbin")
    _killed_restore(host, conf)
    dry = hotvcb(host, "restore", "--latest", "web", "-g", conf, "--datastore", "ds5", "--name", "r1", "-d", "1")
    assert "would remove /vmfs/volumes/ds5/r1.hotvcb-restoring" in dry.stdout, dry.stdout + dry.stderr
    real = hotvcb(host, "restore", "--latest", "web", "-g", conf, "--datastore", "ds5", "--name", "r1")
    assert real.returncode == 0, real.stdout + real.stderr
    assert dry.returncode == 0 and "error" not in dry.stdout.lower(), dry.stdout + dry.stderr


def test_restore_whose_backup_rotation_removes_meanwhile_says_so(host, tmp_path):
    """Cron's nightly backup of web (VM_BACKUP_ROTATION_COUNT=1) is running when the admin starts
    `restore --latest web`: it rightly skips the backup being written and restores the older one,
    the very backup the running backup's rotation removes as it ends. The restore then fails (its
    source is gone) and must say so, naming the backup that went, not a file of its own scratch
    folder (`.hotvcb-checked/web.vmdk`) as if the restore had lost its own files; and it leaves
    nothing behind on the datastore."""
    vmid = host.create_vm("web", "datastore1", [{"size": "2M"}], power="on")
    conf = write_conf(host, VM_BACKUP_ROTATION_COUNT="1")
    assert backup_once(host, conf, "web").returncode == 0
    old = sealed(host, "web")[0]
    gone = VOLUME + "/web/" + old
    # the backup's copy takes 3 s; the restore's clone starts once rotation removed its source
    wrap_tool(host, "vmkfstools", 'case "$*" in *ds5*) i=0; while [ -e "%s" ] && [ $i -lt 200 ]; do sleep 0.1; '
                                  'i=$((i+1)); done;; *) sleep 3;; esac' % gone, layer="usr_sbin")
    run = hotvcb_background(host, "-m", "web", "-g", conf)
    try:
        wait_for(lambda: ours(host, vmid), what="the backup's snapshot")
        r = hotvcb(host, "restore", "--latest", "web", "-g", conf, "--datastore", "ds5", "--name", "r1",
            "--format", "zeroedthick", timeout=60)
        out, _ = run.communicate(timeout=60)
    finally:
        kill(run.pid)
    assert run.returncode == 0 and old not in backups(host, "web"), out
    assert r.returncode == 6, r.stdout + r.stderr
    assert os.listdir(host.real("/vmfs/volumes/ds5")) == [], r.stdout
    errors = [l for l in r.stdout.splitlines() if "-- error:" in l]
    assert errors and all(old in l for l in errors), r.stdout


def test_latest_with_only_a_partial_backup_names_it_not_a_unicode_twin(host, tmp_path):
    """A new VM, web, gets its first backup tonight; cron's run is still copying (or was killed -9 in
    the copy) when the admin, asked to roll back, types `restore --latest web`. hotvcb answers
    "no good backup of 'web' under ... (did you mean 'web'? The name given differs from 'web' only in
    Unicode normalization, NFC against the VM's NFC ...)": the admin typed the name exactly, and is
    sent hunting for an invisible Unicode difference that does not exist. It should say the backup of
    web there is partial (being written, or left by a run that died), as it does when it skips one."""
    vmid = host.create_vm("web", "datastore1", [{"size": "2M"}], power="on")
    conf = write_conf(host)
    wrap_tool(host, "vmkfstools", "sleep 5", layer="usr_sbin")
    run = hotvcb_background(host, "-m", "web", "-g", conf, "-w", tmp_path / "w")
    try:
        wait_for(lambda: ours(host, vmid), what="the backup's snapshot")
        running = hotvcb(host, "restore", "--latest", "web", "-g", conf, "--datastore", "ds5", "--name", "r1")
        kill(run.pid)
        run.communicate()
    finally:
        kill(run.pid)
    killed = hotvcb(host, "restore", "--latest", "web", "-g", conf, "--datastore", "ds5", "--name", "r1")
    for r in (running, killed):
        out = r.stdout + r.stderr
        assert r.returncode != 0 and "Traceback" not in out, out
        assert "Unicode" not in out and "did you mean" not in out, out
        assert "partial" in out, out


def test_verify_all_does_not_call_a_backup_rotated_away_meanwhile_damaged(host, tmp_path):
    """The monitoring system runs `hotvcb verify --all` every night; it overlaps with cron's backup
    of bbb (VM_BACKUP_ROTATION_COUNT=1). verify lists every backup first, then reads them one by
    one; while it reads aaa's, bbb's backup rotates its old backup away. verify then prints
    "DAMAGED: backup .../bbb-... does not exist", counts it among "1 damaged or incomplete" and exits
    4: the on-call admin is paged for backup damage that does not exist. A backup removed by
    rotation after the listing is no damaged backup: it should be named as gone (skipped, as a
    -deleting one is) and the run should exit 0, every backup that still exists being intact.
    (With ENABLE_COMPRESSION=1 the same: "DAMAGED: cannot open ....gz", and verify writes a record
    into .hotvcb-gz-records for the archive that is gone.)"""
    host.create_vm("aaa", "datastore1", [{"size": "16M"}] * 4, power="on")
    host.create_vm("bbb", "datastore1", [{"size": "1M"}], power="on")
    conf = write_conf(host, VM_BACKUP_ROTATION_COUNT="1")
    assert backup_once(host, conf, "aaa").returncode == 0
    assert backup_once(host, conf, "bbb").returncode == 0
    old = sealed(host, "bbb")[0]
    os.environ["PYTHONUNBUFFERED"] = "1"
    try:
        v = hotvcb_background(host, "verify", "--all", "-g", conf)
    finally:
        del os.environ["PYTHONUNBUFFERED"]
    try:
        first = v.stdout.readline()  # "Verifying .../aaa/...": the list is made, aaa's 64 MiB being read
        v.send_signal(signal.SIGSTOP)
        assert "/aaa/" in first, first
        r = backup_once(host, conf, "bbb")  # the nightly backup of bbb, its rotation removing `old`
        assert r.returncode == 0 and old not in backups(host, "bbb"), r.stdout
        v.send_signal(signal.SIGCONT)
        rest, _ = v.communicate(timeout=60)
    finally:
        kill(v.pid, signal.SIGCONT)
        kill(v.pid)
    out = first + rest
    assert "Traceback" not in out, out
    assert "DAMAGED" not in out and "1 damaged" not in out, out
    assert v.returncode == 0, out


def test_a_taker_killed_inside_its_takeover_does_not_fail_the_next_runs(host, tmp_path):
    """Cron's backup was killed -9 (an OOM) and left the run lock; minutes later the admin's
    `hotvcb cleanup` finds it dead and starts taking it over, and is itself killed -9 inside that
    takeover (the shell's session closed, another OOM): its record stays as
    /var/run/hotvcb.lock.takeover. For the next minute every run, the re-scheduled backup and the
    `hotvcb cleanup` that `status` tells the admin to run, ends after 5 s with "ERROR: could not take
    the run lock /var/run/hotvcb.lock (it keeps changing hands)": nothing is changing hands, both
    the lock's holder and the guard's are dead runs, which the guard's record says as the lock's
    does. The run should take the lock over (the guard's taker is gone) and back the VM up, or at the
    least name the guard a dead run left instead of a lock that 'keeps changing hands'."""
    from simhost import host_lock_path

    host.create_vm("web", "datastore1", [{"size": "2M"}], power="on")
    conf = write_conf(host)
    lock = host_lock_path(host)
    backup_once(host, conf, "web", "-w", tmp_path / "w", env={"HOTVCB_CRASH_AT": "snapshot-created"})
    with open(lock) as f:
        dead_taker = f.read()  # a real run record of a hotvcb run that is gone
    assert hotvcb(host, "cleanup", "-g", conf).returncode == 0
    # the lock of a killed backup
    backup_once(host, conf, "web", "-w", tmp_path / "w", env={"HOTVCB_CRASH_AT": "snapshot-created"})
    assert os.path.exists(lock)
    with open(lock + ".takeover", "w") as f:  # what a taker killed between its guard and the lock leaves
        f.write(dead_taker)
    r = backup_once(host, conf, "web")
    out = r.stdout + r.stderr
    assert "Traceback" not in out, out
    assert "keeps changing hands" not in out, out
    assert r.returncode == 0 or "takeover" in out, out


def test_dry_run_after_a_killed_run_plans_the_disk_the_real_run_copies(host, tmp_path):
    """Last night's backup of web was killed -9 right after it took its snapshot. In the morning the
    admin checks what the next run would do: `hotvcb -m web -g conf -d dryrun` says it "would remove
    leftover snapshot" and then plans `VMDK: /vmfs/volumes/datastore1/web/web-000001.vmdk (scsi0:0)`:
    the delta of the very snapshot it just said it would remove, as if the backup would copy a
    snapshot delta instead of the VM's disk. The real run removes the snapshot and copies
    web.vmdk; the dry run should plan that disk."""
    vmid = host.create_vm("web", "datastore1", [{"size": "2M"}], power="on")
    conf = write_conf(host)
    backup_once(host, conf, "web", "-w", tmp_path / "w", env={"HOTVCB_CRASH_AT": "snapshot-created"})
    assert ours(host, vmid)
    dry = hotvcb(host, "-m", "web", "-g", conf, "-d", "dryrun")
    assert dry.returncode == 0 and "would remove leftover snapshot" in dry.stdout, dry.stdout + dry.stderr
    real = backup_once(host, conf, "web")
    assert real.returncode == 0 and "Backing up /vmfs/volumes/datastore1/web/web.vmdk " in real.stdout, real.stdout
    assert "VMDK: /vmfs/volumes/datastore1/web/web.vmdk " in dry.stdout, dry.stdout
