"""An outsider's second round against hotvcb, through the CLI against esxisim.

Targets what came with issue 13 (COLD_SNAPSHOT, BACKUP_POWER_STATE,
VM_BACKUP_ROTATION_SIZE, the hooks, `hotvcb status`, the run report) and the
trust promise around them. Each test is one way found to break a documented
claim; each fails on the commit it was written against (ceb306e).
"""

import json
import os
import signal
import time

from simhost import (backup_once as backup, backup_root, backups, hotvcb, hotvcb_background, kill, lock_pid,
                     needs_root, next_second, ours, sealed, two_hosts_sharing_nfs, wait_for, write_conf)

pytestmark = needs_root


def said(r):
    return r.stdout + r.stderr


def no_traceback(r):
    assert "Traceback" not in said(r) and "internal error" not in said(r), said(r)[-2000:]


# -- garbage values for the new keys -------------------------------------------------------------

def test_a_huge_rotation_size_is_a_config_error_not_an_internal_error(host):
    """VM_BACKUP_ROTATION_SIZE=<400 digits>T: float() gives inf, int(inf) raises OverflowError,
    which escapes as `hotvcb: internal error: OverflowError` instead of a file:line config error."""
    host.create_vm("v", "datastore1", [{"size": "4M"}], power="on")
    conf = write_conf(host, VM_BACKUP_ROTATION_SIZE="9" * 400 + "T")
    for args in (("-m", "v", "-g", conf, "-d", "dryrun"), ("status", "-g", conf), ("list", "-g", conf)):
        r = hotvcb(host, *args)
        no_traceback(r)
        assert "VM_BACKUP_ROTATION_SIZE" in said(r), said(r)


# -- a killed cold snapshot, then a dry run, then a filtered run ---------------------------------

def test_a_vm_a_killed_cold_snapshot_left_off_is_not_skipped_as_powered_off(host):
    """kill -9 between the cold snapshot and the power-on leaves the VM off with our snapshot.
    A dry run takes the dead run's lock over (and, being dry, cleans nothing); the next real run
    no longer knows a run died, so `--power-state on` judges the VM by the state the killed run
    left it in: 'skipped, powered off'. The VM stays off, the snapshot stays, the -partial stays."""
    vm = "cold"
    vmid = host.create_vm(vm, "datastore1", [{"size": "4M"}], power="on")
    conf = write_conf(host, COLD_SNAPSHOT=1, ENABLE_HARD_POWER_OFF=1, ITER_TO_WAIT_SHUTDOWN="10s")
    r = backup(host, conf, vm, env={"HOTVCB_CRASH_AT": "snapshot-created"})
    assert r.returncode == -9 or r.returncode == 137, said(r)
    assert host.power_state(vmid) == "off" and ours(host, vmid)  # what the kill left
    r = hotvcb(host, "-m", vm, "-g", conf, "-d", "dryrun")
    no_traceback(r)
    r = backup(host, conf, vm, "--power-state", "on")
    no_traceback(r)
    assert host.power_state(vmid) == "on", "the VM a killed run powered off is still off:\n" + r.stdout
    assert ours(host, vmid) == [], "the killed run's snapshot is still there after the next run"


def test_after_a_dry_run_took_the_dead_runs_lock_the_next_run_still_cleans_every_vm(host):
    """The same gap without the filter: the run after the dry run backs up another VM; the killed
    run's snapshot and the VM it powered off are left alone (only `took_over` triggers the
    host-wide cleanup, and the dry run used it up)."""
    vmid = host.create_vm("cold2", "datastore1", [{"size": "4M"}], power="on")
    host.create_vm("other", "datastore1", [{"size": "4M"}], power="on")
    conf = write_conf(host, COLD_SNAPSHOT=1, ENABLE_HARD_POWER_OFF=1, ITER_TO_WAIT_SHUTDOWN="10s")
    backup(host, conf, "cold2", env={"HOTVCB_CRASH_AT": "snapshot-created"})
    assert host.power_state(vmid) == "off" and ours(host, vmid)
    hotvcb(host, "-m", "cold2", "-g", conf, "-d", "dryrun")
    r = backup(host, conf, "other")
    assert r.returncode == 0, said(r)
    assert ours(host, vmid) == [] and host.power_state(vmid) == "on", (
        "after the next real run: snapshots %s, power %s" % (ours(host, vmid), host.power_state(vmid)))


# -- SIGTERM while hotvcb holds a VM powered off ------------------------------------------------

def test_sigterm_during_a_power_down_copy_powers_the_vm_on_again(host):
    """POWER_VM_DOWN_BEFORE_BACKUP=1, SIGTERM while the disk of the powered-off VM is copied:
    the run exits 2 and leaves the VM OFF. The pending signal makes every later interruptible
    vim-cmd raise Interrupted again; restore_on's power.getstate is one, and Interrupted is no
    HotvcbError, so the power-on is skipped. README: 'the VM is powered on again on every path'."""
    vmid = host.create_vm("pd", "datastore1", [{"size": "4M"}], power="on")
    conf = write_conf(host, POWER_VM_DOWN_BEFORE_BACKUP=1, ENABLE_HARD_POWER_OFF=1, ITER_TO_WAIT_SHUTDOWN="10s")
    host.set_fault("clone.delay", "10")
    proc = hotvcb_background(host, "-m", "pd", "-g", conf)
    wait_for(lambda: lock_pid(host) and host.power_state(vmid) == "off"
             and any(b.endswith("-partial") for b in backups(host, "pd"))
             and any(f.endswith(".vmdk") for b in backups(host, "pd")
                     for f in os.listdir(os.path.join(backup_root(host, "pd"), b))), what="the copy")
    kill(lock_pid(host), signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, out
    assert host.power_state(vmid) == "on", "SIGTERM left the VM powered off:\n" + out[-1500:]


def test_sigterm_while_the_cold_snapshot_is_taken_powers_the_vm_on_again(host):
    """COLD_SNAPSHOT=1, SIGTERM while hostd takes the snapshot of the shut-down VM (here it
    takes 8 s): the late snapshot is found and removed, then the cleanup's second look for
    leftover snapshots (an interruptible snapshot.get) re-raises the pending SIGTERM and the VM
    is never powered on again. Exit 2, VM off, no 'VM DOWN' in the log."""
    vmid = host.create_vm("coldterm", "datastore1", [{"size": "4M"}], power="on")
    conf = write_conf(host, COLD_SNAPSHOT=1, ENABLE_HARD_POWER_OFF=1, ITER_TO_WAIT_SHUTDOWN="10s")
    host.set_fault("snapshot.create.delay", "8")
    proc = hotvcb_background(host, "-m", "coldterm", "-g", conf)
    wait_for(lambda: lock_pid(host) and host.power_state(vmid) == "off", what="the shutdown")
    time.sleep(1)
    kill(lock_pid(host), signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2, out
    assert ours(host, vmid) == [], out
    assert host.power_state(vmid) == "on", "SIGTERM during the cold snapshot left the VM off:\n" + out[-1500:]


def test_the_report_of_an_interrupted_run_names_the_vm_it_was_working_on(host, tmp_path):
    """backup --json-report after SIGTERM: "vms": [] and no table in the log. The VM that was
    being backed up (snapshot taken, copy started, then stopped) is not in the report at all,
    so a dashboard reading the report cannot tell which VM has no new backup."""
    vmid = host.create_vm("termrep", "datastore1", [{"size": "4M"}], power="on")
    host.set_fault("clone.delay", "10")
    report = str(tmp_path / "report.json")
    proc = hotvcb_background(host, "-m", "termrep", "-g", write_conf(host), "--json-report", report)
    wait_for(lambda: lock_pid(host) and ours(host, vmid) and any(
        f.endswith(".vmdk") for b in backups(host, "termrep")
        for f in os.listdir(os.path.join(backup_root(host, "termrep"), b))), what="the copy")
    kill(lock_pid(host), signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, out
    data = json.load(open(report))
    assert data["exit_code"] == 2
    assert [v["vm"] for v in data["vms"]] == ["termrep"], data
    assert data["vms"][0]["result"] != "ok", data


# -- hooks ---------------------------------------------------------------------------------------

def test_a_pre_hook_that_starts_a_background_helper_does_not_time_out(host):
    """PRE_BACKUP_HOOK='sleep 30 & echo helper started' exits 0 at once, but its background
    child keeps the output pipe open; hotvcb waits for EOF, not for the hook's exit, so the hook
    'times out' after HOOK_TIMEOUT (default 10 minutes) and the VM is skipped as if the hook had
    failed. (`/etc/init.d/x start` in a hook does exactly this.)"""
    vmid = host.create_vm("helper", "datastore1", [{"size": "4M"}], power="on")
    conf = write_conf(host, PRE_BACKUP_HOOK="sleep 30 & echo helper started", HOOK_TIMEOUT="8s")
    t0 = time.monotonic()
    r = hotvcb(host, "-m", "helper", "-g", conf)
    no_traceback(r)
    assert r.returncode == 0, said(r)[-1500:]
    assert time.monotonic() - t0 < 8, "the run waited for the hook's background child"
    assert len(sealed(host, "helper")) == 1 and ours(host, vmid) == []


def test_status_is_not_ok_right_after_a_run_whose_pre_hook_failed(host):
    """operations.md: backup check WARN when '...the last run was not good'. A run whose
    pre-hook failed (or that refused the VM for any reason before its -partial folder) leaves
    no trace on the volume, so `hotvcb status` right after it says OK, exit 0, naming only the
    older good backup: the monitor learns of the failed night only when --max-age runs out."""
    host.create_vm("hookfail", "datastore1", [{"size": "4M"}], power="on")
    conf = write_conf(host)
    assert hotvcb(host, "-m", "hookfail", "-g", conf).returncode == 0
    r = backup(host, write_conf(host, PRE_BACKUP_HOOK="echo database not quiesced; exit 1"), "hookfail")
    assert r.returncode == 6 and "database not quiesced" in r.stdout, said(r)
    s = hotvcb(host, "status", "-g", conf)
    no_traceback(s)
    assert s.returncode != 0, "status after a failed run:\n" + s.stdout


def test_a_chatty_hook_does_not_blow_up_the_log(host, tmp_path):
    """A hook printing 3 MB ('yes | head -c 3M', i.e. 1.5 M short lines) is logged line by line
    with a timestamp each: the run's output grows to ~24 MB, all of it going into the log file
    and the mail (whose body carries the whole log). Judgement call: hotvcb should keep the
    hook's last lines (it uses only the last one as the error) and cap the rest."""
    host.create_vm("chatty", "datastore1", [{"size": "4M"}], power="on")
    conf = write_conf(host, PRE_BACKUP_HOOK="yes hello | head -c 3000000", HOOK_TIMEOUT="60s")
    r = hotvcb(host, "-m", "chatty", "-g", conf)
    assert r.returncode == 0, said(r)[-1500:]
    assert len(r.stdout) < 3000000, "the run's log is %d bytes for a 3 MB hook output" % len(r.stdout)


# -- a killed power-down whose guest was still shutting down -------------------------------------

def test_cleanup_right_after_a_kill_during_the_guest_shutdown_does_not_lose_the_power_marker(host):
    """kill -9 while the guest shuts down for COLD_SNAPSHOT (a real guest takes a minute; here
    power.shutdown=ignore holds it, then the test lets it finish). `hotvcb cleanup` run at once
    sees the VM still on, concludes 'it is on again' and deletes the power-off marker; the guest
    then finishes its shutdown and no run will ever power it on again."""
    vm = "slowguest"
    vmid = host.create_vm(vm, "datastore1", [{"size": "4M"}], power="on")
    conf = write_conf(host, COLD_SNAPSHOT=1, ITER_TO_WAIT_SHUTDOWN="60s", POWER_DOWN_TIMEOUT="120s")
    host.set_fault("power.shutdown", "ignore")
    proc = hotvcb_background(host, "-m", vm, "-g", conf)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "Powering off initiated" in line:
            break
    time.sleep(1)
    kill(lock_pid(host))
    proc.communicate(timeout=60)
    host.clear_faults()
    r = hotvcb(host, "cleanup", "-g", conf)
    no_traceback(r)
    host.power_off(vmid)  # the guest OS finishes the shutdown hotvcb asked for
    next_second()
    r = hotvcb(host, "-m", vm, "-g", conf)
    no_traceback(r)
    assert host.power_state(vmid) == "on", "the VM hotvcb shut down is off for good:\n" + r.stdout[-1500:]


# -- two hosts, one NFS volume, a VM called the same on each -------------------------------------


def test_status_does_not_count_another_hosts_backups_of_a_same_named_vm(tmp_path):
    """Hosts A and B share an NFS backup volume and each has a VM 'web' (different VMs: rotation
    knows, it leaves the other host's backups alone). Only B's 'web' is ever backed up; on A,
    `hotvcb status` reports A's 'web' OK with 'newest good backup 2s old' -- B's backup. A's
    VM has never been backed up (CRIT) and the monitor is told all is well."""
    with two_hosts_sharing_nfs(tmp_path) as (a, b, conf_a, conf_b, _):
        r = hotvcb(b, "-m", "web", "-g", conf_b)
        assert r.returncode == 0, said(r)
        s = hotvcb(a, "status", "-g", conf_a, "--json")
        no_traceback(s)
        web = [c for c in json.loads(s.stdout)["checks"] if c["kind"] == "backup" and c["name"] == "web"]
        assert web and web[0]["severity"] == "CRIT", web


# -- the dry run's rotation forecast -------------------------------------------------------------

def test_the_dry_run_lists_what_rotation_count_1_with_a_size_budget_will_remove(host):
    """VM_BACKUP_ROTATION_COUNT=1 with VM_BACKUP_ROTATION_SIZE=100G (a budget that never bites):
    the dry run forecasts with max(count - 1, 1) = 1 old backup kept and says nothing would be
    removed; the real run right after removes the old backup 'per rotation count 1'.
    (Without the size key the dry run takes another branch and does list it.)"""
    host.create_vm("fc", "datastore1", [{"size": "4M"}], power="on")
    conf = write_conf(host, VM_BACKUP_ROTATION_COUNT=1, VM_BACKUP_ROTATION_SIZE="100G")
    assert backup(host, conf, "fc").returncode == 0
    [old] = sealed(host, "fc")
    dry = hotvcb(host, "-m", "fc", "-g", conf, "-d", "dryrun")
    assert dry.returncode == 0, said(dry)
    real = backup(host, conf, "fc")
    assert real.returncode == 0 and old not in sealed(host, "fc"), said(real)
    assert "Would remove old backup" in dry.stdout and old in dry.stdout, (
        "the real run removed %s, the dry run did not say so:\n%s" % (old, dry.stdout[-1500:]))


# -- status: monitoring exit codes ---------------------------------------------------------------

def test_status_with_a_mistyped_option_is_unknown_not_warn(host):
    """operations.md: exit codes 0 OK, 1 WARN, 2 CRIT, 3 UNKNOWN. A check command with a typo
    (`--max-age` without its value, an unknown option) exits 1 from argparse, which Nagios and
    Icinga show as WARNING about the backups; the plugin convention for bad arguments is UNKNOWN (3)."""
    host.create_vm("mon", "datastore1", [{"size": "4M"}], power="on")
    conf = write_conf(host)
    for args in (("status", "-g", conf, "--max-age"), ("status", "-g", conf, "--maxage", "26h")):
        r = hotvcb(host, *args)
        no_traceback(r)
        assert r.returncode == 3, (args, r.returncode, said(r)[-500:])


# -- a VM the run powered off that does not come back --------------------------------------------

def test_a_shutdown_order_vm_that_does_not_come_back_is_news_not_all_ok(host, tmp_path):
    """VM_SHUTDOWN_ORDER=db, backing up app: db is shut down before the backups and its
    power-on afterwards fails. The run ends 'All VMs backed up OK!', exit 0, JSON report status
    the same (so EMAIL_ALERT sends nothing): a VM this run powered off is DOWN and only an
    'error' line in the middle of the log says so. COLD_SNAPSHOT and POWER_VM_DOWN_BEFORE_BACKUP
    get 'VM DOWN: ...' as the final status; the shutdown order does not."""
    host.create_vm("app", "datastore1", [{"size": "4M"}], power="on")
    db = host.create_vm("db", "datastore1", [{"size": "4M"}], power="on")
    conf = write_conf(host, VM_SHUTDOWN_ORDER="db", ENABLE_HARD_POWER_OFF=1, ITER_TO_WAIT_SHUTDOWN="10s")
    host.set_fault("power.on", "refuse")
    report = str(tmp_path / "r.json")
    r = hotvcb(host, "-m", "app", "-g", conf, "--json-report", report)
    no_traceback(r)
    assert host.power_state(db) == "off"  # the host refused; hotvcb cannot help that
    status = json.load(open(report))["status"]
    assert r.returncode != 0 and "VM DOWN" in status and "db" in status, (r.returncode, status)


# -- status on a host that lost a datastore ------------------------------------------------------

def test_status_is_not_ok_when_a_registered_vm_became_invalid(host):
    """The datastore holding VM 'lost' disappears (the host prints "Skipping invalid VM '2'"
    above getallvms). `hotvcb status` says OK, exit 0, and does not mention 'lost' at all,
    although the volume holds its backups and the host still has it registered; `backup -a`
    says 'All VMs backed up OK!' the same night. The VM that needs attention most is the one
    the monitor never hears of."""
    import shutil

    host.add_datastore("gone", 1 << 30, vmfs=6)
    host.create_vm("fine", "datastore1", [{"size": "4M"}], power="on")
    host.create_vm("lost", "gone", [{"size": "4M"}], power="on")
    conf = write_conf(host)
    assert hotvcb(host, "-a", "-g", conf).returncode == 0
    shutil.rmtree(os.path.realpath(host.real("/vmfs/volumes/gone")))
    s = hotvcb(host, "status", "-g", conf)
    no_traceback(s)
    out = s.stdout + s.stderr
    assert s.returncode != 0 and ("lost" in out or "invalid" in out.lower()), s.stdout


def test_the_run_report_does_not_offer_another_hosts_backup_as_this_vms_newest_good(tmp_path):
    """Same two hosts. B backs up its 'web'; then A's backup of its own 'web' fails (every disk
    copy fails). A's --json-report says good_backups 1, newest_good = B's backup, and the log
    table 'GOOD KEPT 1': the mail tells A's admin the failed VM can be restored from a backup
    of a different VM."""
    with two_hosts_sharing_nfs(tmp_path) as (a, b, conf_a, conf_b, _):
        assert hotvcb(b, "-m", "web", "-g", conf_b).returncode == 0
        a.set_fault("clone.fail_at", "30")
        report = str(tmp_path / "a.json")
        r = hotvcb(a, "-m", "web", "-g", conf_a, "--json-report", report)
        assert r.returncode == 6, said(r)
        [row] = json.load(open(report))["vms"]
        assert row["good_backups"] == 0 and row["newest_good"] is None, row


# -- a power-state filter that leaves nothing to do ----------------------------------------------

def test_a_run_whose_vms_are_all_skipped_by_the_power_state_filter_is_not_an_error(host, tmp_path):
    """config-reference.md: with BACKUP_POWER_STATE the others 'are logged as skipped (not
    failed)'. When every selected VM is skipped (`-a --power-state on` on a night all are off,
    or the one VM of `-m` is off), the run ends 'ERROR: No VMs backed up!', exit 7, and
    EMAIL_ALERT mails an error. Judgement call: a filter doing what it was asked is not an error."""
    host.create_vm("template", "datastore1", [{"size": "4M"}], power="off")
    report = str(tmp_path / "r.json")
    r = hotvcb(host, "-a", "-g", write_conf(host), "--power-state", "on", "--json-report", report)
    assert "template: skipped, powered off" in r.stdout, said(r)
    status = json.load(open(report))["status"]
    assert not status.startswith("ERROR"), (r.returncode, status)


# -- status and a VM a dead run left powered off -------------------------------------------------

def test_status_reports_a_vm_that_a_dead_run_left_powered_off(host):
    """POWER_VM_DOWN_BEFORE_BACKUP=1, the run is SIGKILLed after the copy: the VM is off, its
    folder holds the dead run's .hotvcb-powered-off marker, the volume a -partial. `hotvcb status`
    says OK, exit 0 (its snapshot check would have said CRIT 'run hotvcb cleanup' for a dead
    run's snapshot; a production VM down because of hotvcb gets nothing). `hotvcb cleanup`
    knows at once ('powered it off for a backup and did not finish')."""
    vmid = host.create_vm("downed", "datastore1", [{"size": "4M"}], power="on")
    conf = write_conf(host)
    assert hotvcb(host, "-m", "downed", "-g", conf).returncode == 0
    pd = write_conf(host, name="pd.conf", POWER_VM_DOWN_BEFORE_BACKUP=1, ENABLE_HARD_POWER_OFF=1,
                    ITER_TO_WAIT_SHUTDOWN="10s")
    backup(host, pd, "downed", env={"HOTVCB_CRASH_AT": "disk-copied-1"})
    assert host.power_state(vmid) == "off"
    s = hotvcb(host, "status", "-g", conf)
    no_traceback(s)
    assert s.returncode == 2, "a VM left off by a dead run, and status says:\n" + s.stdout


def test_a_huge_rotation_size_in_a_per_vm_file_fails_that_vm_not_the_whole_run(host, tmp_path):
    """The same value in a per-VM file (-c DIR) is read when that VM's turn comes: the
    OverflowError kills the whole run half-way -- the VMs before it were backed up, the ones
    after it are not tried, and there is no table, no final status and no --json-report
    (a monitoring pipeline reading the report sees nothing at all)."""
    for name in ("v1", "v2", "v3"):
        host.create_vm(name, "datastore1", [{"size": "4M"}], power="on")
    confdir = tmp_path / "per-vm"
    confdir.mkdir()
    (confdir / "v2").write_text("VM_BACKUP_ROTATION_SIZE=" + "9" * 400 + "T\n")
    report = str(tmp_path / "r.json")
    r = hotvcb(host, "-a", "-g", write_conf(host), "-c", str(confdir), "--json-report", report)
    no_traceback(r)
    assert len(sealed(host, "v3")) == 1, "v3 was never tried"
    assert os.path.exists(report) and "Final status" in r.stdout, said(r)[-1500:]


def test_sigterm_during_a_backup_starts_the_shutdown_order_vms_again(host):
    """VM_SHUTDOWN_ORDER=db,cache; SIGTERM while app's disk is copied. start_in_order runs in
    a finally, but its first power.getstate re-raises the pending SIGTERM: db and cache, shut
    down by this run, stay off."""
    host.create_vm("app", "datastore1", [{"size": "4M"}], power="on")
    db = host.create_vm("db", "datastore1", [{"size": "4M"}], power="on")
    cache = host.create_vm("cache", "datastore1", [{"size": "4M"}], power="on")
    conf = write_conf(host, VM_SHUTDOWN_ORDER="db,cache", ENABLE_HARD_POWER_OFF=1, ITER_TO_WAIT_SHUTDOWN="10s")
    host.set_fault("clone.delay", "10")
    proc = hotvcb_background(host, "-m", "app", "-g", conf)
    wait_for(lambda: lock_pid(host) and any(b.endswith("-partial") for b in backups(host, "app"))
             and any(f.endswith(".vmdk") for b in backups(host, "app")
                     for f in os.listdir(os.path.join(backup_root(host, "app"), b))), what="app's copy")
    kill(lock_pid(host), signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, out
    assert (host.power_state(db), host.power_state(cache)) == ("on", "on"), out[-1500:]


# -- a snapshot description edited to look like the snapshot tree -------------------------------

def test_a_user_snapshot_whose_description_mimics_the_tree_is_never_removed(host):
    """A user snapshot 'before upgrade' whose (multi-line, edited) description holds lines that
    look like vim-cmd's snapshot tree -- a 'Snapshot Name : hotvcb-snapshot-…' line and a
    description with a run record. vim-cmd prints the description as it is; hotvcb's parser reads
    a second snapshot with the user's id, judges it a dead run's leftover (status: CRIT 'run
    hotvcb cleanup') and the next backup removes snapshot id 1 -- the user's snapshot."""
    from esxisim import snapshots

    vmid = host.create_vm("edited", "datastore1", [{"size": "4M"}], power="on")
    snapshots.create(host, vmid, "before upgrade",
                     "pre-upgrade state, keep!\n"
                     "--Snapshot Name        : hotvcb-snapshot-2020-01-01_00-00-00\n"
                     "--Snapshot Id        : 1\n"
                     "--Snapshot Desciption  : hotvcb backup run=aaaaaaaaaaaa machine=esxi01 pid=1 started=1 host=x")
    conf = write_conf(host, ALLOW_VMS_WITH_SNAPSHOTS_TO_BE_BACKEDUP=1)
    r = backup(host, conf, "edited")
    no_traceback(r)
    # the simulator's own tree (a listing parser is what the description fools)
    assert [s["name"] for _d, s in snapshots.tree(host, vmid)] == ["before upgrade"], (
        "the user's snapshot is gone:\n" + r.stdout[-1500:])


# -- what the dry run and restore --latest conclude after a kill or on a shared volume ------------

def test_a_dry_run_after_a_killed_run_does_not_skip_the_vm_for_our_own_snapshot(host):
    """The killed run's snapshot would be removed first by a real run; the dry run used to judge
    the VM with it still there and say the VM would be skipped for having snapshots."""
    vmid = host.create_vm("dk", "datastore1", [{"size": "4M"}], power="on")
    conf = write_conf(host)
    backup(host, conf, "dk", env={"HOTVCB_CRASH_AT": "snapshot-created"})
    assert ours(host, vmid)
    dry = hotvcb(host, "-m", "dk", "-g", conf, "-d", "dryrun")
    no_traceback(dry)
    assert dry.returncode == 0 and "snapshot" in dry.stdout, said(dry)
    assert "skip" not in dry.stdout.lower(), dry.stdout[-1500:]
    assert ours(host, vmid), "a dry run removed a snapshot"
    real = backup(host, conf, "dk")
    assert real.returncode == 0 and ours(host, vmid) == [], said(real)


def test_restore_latest_never_picks_another_hosts_backup_of_a_same_named_vm(tmp_path):
    with two_hosts_sharing_nfs(tmp_path) as (a, b, conf_a, conf_b, _):
        assert hotvcb(b, "-m", "web", "-g", conf_b).returncode == 0
        r = hotvcb(a, "restore", "--latest", "web", "-g", conf_a, "--datastore", "datastore1",
                   "--name", "web2", "-d", "dryrun")
        no_traceback(r)
        assert r.returncode != 0 and "no good backup" in said(r), said(r)
