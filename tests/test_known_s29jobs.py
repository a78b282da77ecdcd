"""Known behaviours, stop 29 (jobs): outside testers' notes pinned through the CLI, one test per defect.

Tiny disks; one simulated host per test.
"""

import os

import pytest

from simhost import hotvcb, needs_root, next_second, write_conf


# -- 2. ghettoVCB's empty lines in per-VM files warn every night ---------------------------------------------------

@needs_root
def test_a_per_vm_file_copied_from_ghettovcb_conf_with_empty_run_wide_keys_does_not_warn(host, tmp_path):
    """The admin's per-VM files are copies of ghettoVCB.conf, which ships `VM_SHUTDOWN_ORDER=` and
    `VM_STARTUP_ORDER=` (empty: nothing asked). hotvcb warned "applies to the whole run, not one VM" for
    each, every night, in every mail: a warning about nothing teaches the admin to skip warnings. An empty
    run-wide key asks nothing of the VM and is not warned about; a set one still is."""
    host.create_vm("db", "datastore1", [{"size": "1M"}], power="on")
    confdir = tmp_path / "vmconf"
    confdir.mkdir()
    (confdir / "db").write_text("VM_BACKUP_ROTATION_COUNT=2\nVM_SHUTDOWN_ORDER=\nVM_STARTUP_ORDER=\"\"\n"
                                "EMAIL_LOG=\n")
    conf = write_conf(host)
    r = hotvcb(host, "-m", "db", "-g", conf, "-c", confdir)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "whole run" not in r.stdout + r.stderr, r.stdout + r.stderr
    (confdir / "db").write_text("VM_SHUTDOWN_ORDER=db\n")
    r = hotvcb(host, "-m", "db", "-g", conf, "-c", confdir)
    assert "VM_SHUTDOWN_ORDER applies to the whole run" in r.stdout + r.stderr, r.stdout + r.stderr


# -- 3. SIGTERM while the run starts: exit 143 --------------------------------------------------------------------

_SLOW_IMPORT = '''
import os, sys, time
class Slow:
    """hotvcb.cli's import held until the test says go: the host's python reading the pyz is that slow."""
    def find_spec(self, name, path=None, target=None):
        if name == "hotvcb.cli":
            open(os.environ["T_READY"], "w").close()
            while not os.path.exists(os.environ["T_GO"]):
                time.sleep(0.02)
        return None
sys.meta_path.insert(0, Slow())
'''


@needs_root
def test_sigterm_while_the_run_starts_ends_it_as_an_interrupted_run(host, tmp_path):
    """cron's or systemd's stop (SIGTERM) reaches a nightly run while its Python still imports hotvcb (the
    host's /bin/python reading the pyz). The run died of the signal, exit 143, no final status line: the
    admin's wrapper, which reads README's exit codes (2: interrupted by a signal), logged an unknown code.
    The run must end as an interrupted run does: exit 2 and its final status, nothing touched."""
    import signal
    import subprocess

    from simhost import REPO, kill, on_host, wait_for

    host.create_vm("db", "datastore1", [{"size": "1M"}], power="on")
    conf = write_conf(host)
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(_SLOW_IMPORT)
    ready, go = str(tmp_path / "ready"), str(tmp_path / "go")
    argv = on_host(host, "env", "PYTHONPATH=%s:%s" % (hook, REPO), "T_READY=" + ready, "T_GO=" + go,
                   "/bin/python", "-m", "hotvcb", "-m", "db", "-g", conf)
    run = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: os.path.exists(ready), what="hotvcb importing its CLI")
        run.send_signal(signal.SIGTERM)
        open(go, "w").close()
        out, _ = run.communicate(timeout=60)
    finally:
        kill(run.pid)
    assert run.returncode == 2, (run.returncode, out)
    assert "Final status: ERROR: interrupted by SIGTERM" in out, out


# -- 7. the manifest's `snapshot` of a backup no snapshot made ----------------------------------------------------

@needs_root
@pytest.mark.parametrize("power, down", [("off", "0"), ("on", "1")])
def test_the_manifest_of_a_backup_read_from_no_snapshot_says_no_snapshot(host, power, down):
    """The admin's audit reads each backup's hotvcb.json to prove the database backups were quiesced
    (VM_SNAPSHOT_QUIESCE=1). A VM that was off, or shut down for its backup (POWER_VM_DOWN_BEFORE_BACKUP=1),
    is copied without any snapshot, yet its manifest said `"snapshot": {"memory": false, "quiesce": true}`:
    a quiesced snapshot that never was. It holds `{}` then (backup-format.md), and a snapshot's settings
    only where one was taken."""
    from simhost import manifest, sealed

    host.create_vm("db", "datastore1", [{"size": "1M"}], power=power)
    conf = write_conf(host, VM_SNAPSHOT_QUIESCE=1, POWER_VM_DOWN_BEFORE_BACKUP=down)
    r = hotvcb(host, "-m", "db", "-g", conf)
    assert r.returncode == 0, r.stdout + r.stderr
    assert manifest(host, "db", sealed(host, "db")[0])["snapshot"] == {}
    conf = write_conf(host, VM_SNAPSHOT_QUIESCE=1)
    host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    r = hotvcb(host, "-m", "web", "-g", conf)
    assert r.returncode == 0, r.stdout + r.stderr
    assert manifest(host, "web", sealed(host, "web")[0])["snapshot"] == {"memory": False, "quiesce": True}


# -- 6. a VM left off after its power-down backup: RESULT OK, exit 4 -----------------------------------------------

@needs_root
def test_a_vm_left_powered_off_is_not_ok_in_the_report_table(host, tmp_path):
    """POWER_VM_DOWN_BEFORE_BACKUP=1: db is shut down, backed up, and hostd refuses to power it on again.
    The run exits 4 with "VM DOWN: db", but the table every admin scans (and the JSON report monitoring
    reads) said `db  OK`: two answers to "is db all right?". As COLD_SNAPSHOT's VM that does not come back,
    the VM's result fails (its backup stays good and is named), and its line says it was left powered off."""
    import json

    vmid = host.create_vm("db", "datastore1", [{"size": "1M"}], power="on")
    conf = write_conf(host, POWER_VM_DOWN_BEFORE_BACKUP=1, ENABLE_HARD_POWER_OFF=1)
    host.set_fault("power.on", "refuse")
    report = tmp_path / "r.json"
    r = hotvcb(host, "-m", "db", "-g", conf, "--json-report", report)
    assert r.returncode == 6, r.stdout + r.stderr
    assert host.power_state(vmid) == "off"
    row = [l for l in r.stdout.splitlines() if l.split("-- info: ")[-1].startswith("db  ")]
    assert row and "ERROR" in row[0], r.stdout
    vm = json.loads(report.read_text())["vms"][0]
    assert vm["result"] == "error" and "left powered off" in vm["message"], vm
    assert "the backup is /vmfs/volumes/backup/hotvcb/db/db-" in vm["message"], vm
    from simhost import sealed
    assert len(sealed(host, "db")) == 1  # the backup itself is good


# -- 5. restore --latest passes over a damaged newer backup without a word ----------------------------------------

@needs_root
def test_restore_latest_names_the_newer_backup_it_skipped_and_why(host):
    """Last night's backup of db lost its disk (a NAS hiccup); the admin runs `restore --latest db` and
    gets a VM from the night before, with no word that a newer backup exists and was passed over: the
    admin believes the restored VM is last night's state, and a day of data is missing unnoticed. The
    restore must name the newer backup it skipped and why."""

    from simhost import backup_root, sealed

    host.create_vm("db", "datastore1", [{"size": "1M"}], power="on")
    conf = write_conf(host)
    for _ in range(2):
        r = hotvcb(host, "-m", "db", "-g", conf)
        assert r.returncode == 0, r.stdout + r.stderr
        next_second()
    older, newer = sealed(host, "db")
    os.remove(os.path.join(backup_root(host, "db"), newer, "db-flat.vmdk"))
    r = hotvcb(host, "restore", "--latest", "db", "-g", conf, "--datastore", "ds5", "--name", "db2")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert older in out and newer in out, out
    line = [l for l in out.splitlines() if newer in l and "skip" in l]
    assert line and "db-flat.vmdk" in line[0], out


# -- 8. a windows-1252 .vmx: backed up, and restored beside its running original ------------------------------------

@needs_root
def test_a_windows_1252_vm_is_backed_up_and_its_restored_twin_kept_off(host):
    """An old VM imported from Workstation on Windows: its .vmx declares `.encoding = "windows-1252"` and
    its name "Müller €" is in that charset (0xFC, 0x80), as hostd reads and writes it. esxisim's
    getallvms died on the file (it read every .vmx as UTF-8), so no test covered such a VM: it is backed up
    by its name, and its restore under its own name with --power-on, beside the running original, keeps the
    twin (same BIOS UUID and MACs) off, which needs the name and identity read in that charset."""
    from esxisim import vmx as simvmx
    from simhost import power, sealed, vim

    vm = "Müller €"
    orig = host.create_vm("Mueller", "datastore1", [{"size": "1M"}], power="on")
    path = host.vmx_real(orig)
    data = simvmx.load(path)
    data[".encoding"], data["displayName"] = "windows-1252", vm
    simvmx.save(path, data)
    assert b"M\xfcller \x80" in open(path, "rb").read()
    assert vm in vim(host, "vmsvc/getallvms")
    conf = write_conf(host)
    r = hotvcb(host, "-m", vm, "-g", conf)
    assert r.returncode == 0, r.stdout + r.stderr
    (entry,) = sealed(host, vm)
    from simhost import backup_root
    kept = open(os.path.join(backup_root(host, vm), entry, "Mueller.vmx"), "rb").read().decode("utf-8")
    assert 'displayName = "Müller €"' in kept and '.encoding = "UTF-8"' in kept, kept
    r = hotvcb(host, "restore", "--latest", vm, "-g", conf, "--datastore", "ds5", "--power-on")
    assert r.returncode == 3, r.stdout + r.stderr
    twins = [line.split()[0] for line in vim(host, "vmsvc/getallvms").splitlines()[1:]
             if vm in line and line.split()[0] != orig]
    assert len(twins) == 1, vim(host, "vmsvc/getallvms")
    assert power(host, orig) == "Powered on" and power(host, twins[0]) != "Powered on", r.stdout


# -- 1. cleanup over SSH waits 5 minutes for a kill -9'd file-by-file run's lock -----------------------------------

@needs_root
def test_cleanup_over_ssh_takes_the_lock_of_a_killed_file_by_file_run_of_this_machine_at_once(host, tmp_path):
    """The nightly file-by-file SSH backup (`--file-by-file`, or a host whose python is too old for the
    on-host run... then cleanup is file by file too) is kill -9'd on the admin's Linux box mid-copy. The
    admin runs `hotvcb --host esx cleanup` from the same box: it runs on the host, which cannot ask the box
    whether the run's pid still lives, so it judged the lock by its heartbeat and refused for 5 minutes
    ("another hotvcb run holds ..."), the VM left with our snapshot. The box can tell: the run was its own,
    and its pid is gone. Cleanup takes the lock at once and removes the dead run's snapshot."""
    import signal
    import subprocess
    import sys

    from sshd import needs_sshd
    from sshsite import host_sshd
    from simhost import REPO, host_lock_path, kill, ours, wait_for

    if needs_sshd.args[0]:
        pytest.skip(needs_sshd.kwargs.get("reason", "no sshd"))
    vmid = host.create_vm("db", "datastore1", [{"size": "4M"}], power="on")
    conf = tmp_path / "g.conf"
    conf.write_text("VM_BACKUP_VOLUME=/vmfs/volumes/backup/hotvcb\nDISK_BACKUP_FORMAT=thin\n", encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=REPO)
    host.set_fault("clone.delay", "60")
    with host_sshd(host, tmp_path / "sshd") as sshd:
        base = [sys.executable, "-m", "hotvcb"] + sshd.cli_args()
        run = subprocess.Popen(base + ["backup", "--file-by-file", "-m", "db", "-g", str(conf)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=REPO)
        try:
            wait_for(lambda: ours(host, vmid) and os.path.exists(host_lock_path(host)), timeout=60,
                     what="the run's snapshot")
        finally:
            kill(run.pid, signal.SIGKILL)
            run.wait()
        host.clear_faults()
        r = subprocess.run(base + ["cleanup", "-g", str(conf)], capture_output=True, text=True, env=env,
                           cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "another hotvcb run holds" not in r.stdout + r.stderr
    assert ours(host, vmid) == [], r.stdout


# -- 4. a killed restore --repo leaves its staging for cleanup alone to find -----------------------------------------

@needs_root
def test_the_next_restore_reclaims_a_killed_repository_restores_staging(host, tmp_path):
    """`restore --repo R --latest db --datastore datastore1 --format zeroedthick` is kill -9'd while it
    clones (the admin's SSH session dropped): the whole backup staged on datastore1 stays in a hidden
    `.hotvcb-extract-…` folder. Only `hotvcb cleanup` looked for it; the admin's next restore said nothing,
    and its room check counted the datastore without the room the dead one holds. The next restore into
    that datastore removes what a restore that provably died left there (as cleanup would) and says so."""
    import glob
    import signal

    from simhost import hotvcb_background, kill, wait_for

    repo = "/vmfs/volumes/backup/repo"
    host.create_vm("db", "datastore1", [{"size": "4M"}])
    conf = write_conf(host)
    r = hotvcb(host, "backup", "-m", "db", "-g", conf, "--repo", repo, "-w", tmp_path / "work")
    assert r.returncode == 0, r.stdout + r.stderr
    root = host.real("/vmfs/volumes/datastore1")
    staging = lambda: glob.glob(os.path.join(root, ".hotvcb-extract-*"))  # noqa: E731
    host.set_fault("clone.delay", "60")
    run = hotvcb_background(host, "restore", "--repo", repo, "--latest", "db", "--datastore", "datastore1",
                            "--name", "db2", "--format", "zeroedthick")
    try:
        wait_for(lambda: staging() and os.path.isdir(os.path.join(root, "db2.hotvcb-restoring")), timeout=60,
                 what="the restore cloning from its staging")
    finally:
        kill(run.pid, signal.SIGKILL)
        run.wait()
    host.clear_faults()
    assert staging()
    r = hotvcb(host, "restore", "--repo", repo, "--latest", "db", "--datastore", "datastore1", "--name", "db3")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "left by a restore that died" in r.stdout, r.stdout
    assert staging() == [] and not os.path.exists(os.path.join(root, "db2.hotvcb-restoring")), os.listdir(root)
