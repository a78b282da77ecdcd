"""ghettoVCB options end to end: per-VM files, exclude lists, disk selection,
shutdown/startup order, and `hotvcb cleanup` after a killed run."""

import os
import re
import signal

from simhost import (backups, copying, hotvcb, hotvcb_background, kill, lock_pid, manifest, needs_root, sealed,
                     snapshot_names, wait_for, write_conf)

pytestmark = needs_root


def test_per_vm_files_apply_to_their_vm_only_and_exclude_list(host, tmp_path):
    for name in ("alpha", "beta", "gamma"):
        host.create_vm(name, "datastore1", [{"size": "4M"}], power="on")
    confdir = tmp_path / "per vm"
    confdir.mkdir()
    (confdir / "alpha").write_text("DISK_BACKUP_FORMAT=2gbsparse\nVM_BACKUP_ROTATION_COUNT=1\n")
    exclude = tmp_path / "exclude"
    exclude.write_text("gamma\n")
    r = hotvcb(host, "-a", "-e", exclude, "-c", confdir, "-g", write_conf(host), "-w", tmp_path / "w")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "gamma is on the exclude list" in r.stdout
    assert manifest(host, "alpha", sealed(host, "alpha")[0])["disk_format"] == "2gbsparse"
    assert manifest(host, "beta", sealed(host, "beta")[0])["disk_format"] == "thin", "no leak into beta"
    assert backups(host, "gamma") == []


def test_vmdk_files_to_backup_selects_disks(host, tmp_path):
    host.create_vm("pick", "datastore1", [{"size": "4M"}, {"size": "4M"}, {"size": "4M"}], power="on")
    r = hotvcb(host, "-m", "pick", "-g", write_conf(host, VMDK_FILES_TO_BACKUP='"pick.vmdk,pick_2.vmdk"'),
               "-w", tmp_path / "w")
    assert r.returncode == 0, r.stdout + r.stderr
    m = manifest(host, "pick", sealed(host, "pick")[0])
    assert [d["source"].rsplit("/", 1)[-1] for d in m["disks"]] == ["pick.vmdk", "pick_2.vmdk"]
    assert "pick_1.vmdk not in VMDK_FILES_TO_BACKUP" in r.stdout


def test_shutdown_and_startup_order(host, tmp_path):
    ids = {n: host.create_vm(n, "datastore1", [{"size": "4M"}], power="on") for n in ("app", "db", "web")}
    conf = write_conf(host, POWER_VM_DOWN_BEFORE_BACKUP=1, VM_SHUTDOWN_ORDER="web,app,db",
                      VM_STARTUP_ORDER="db,app,web", POWER_DOWN_TIMEOUT="30s")
    r = hotvcb(host, "-m", "app", "-m", "db", "-m", "web", "-g", conf, "-w", tmp_path / "w")
    assert r.returncode == 0, r.stdout + r.stderr
    off = re.findall(r"Powering off initiated for (\w+)", r.stdout)
    on = re.findall(r"Powering on (\w+)", r.stdout)
    assert off == ["web", "app", "db"] and on == ["db", "app", "web"]
    assert r.stdout.index("Powering off initiated for db") < r.stdout.index("Initiate backup for app")
    assert r.stdout.rindex("Successfully completed backup") < r.stdout.index("Powering on db")
    assert all(host.power_state(i) == "on" for i in ids.values())
    assert not any(e["event"].startswith("snapshot") for n in ids for e in host.writer_log(n))


def test_cleanup_command_removes_only_our_leftovers(host, tmp_path):
    vmid = host.create_vm("crashy", "datastore1", [{"size": "8M"}], power="on", snapshots=["mine"])
    conf = write_conf(host, ALLOW_VMS_WITH_SNAPSHOTS_TO_BE_BACKEDUP=1)
    host.set_fault("clone.delay", "30")
    work = str(tmp_path / "w")
    proc = hotvcb_background(host, "-m", "crashy", "-g", conf, "-w", work)
    wait_for(lambda: any(n.startswith("hotvcb-") for n in snapshot_names(host, vmid)) and copying(host, "crashy"),
             what="our snapshot and the copy")
    kill(lock_pid(work), signal.SIGKILL)
    proc.communicate(timeout=60)
    host.clear_faults()
    dry = hotvcb(host, "cleanup", "-g", conf, "-w", work, "-d", "dryrun")
    assert dry.returncode == 0 and "would remove leftover hotvcb snapshot" in dry.stdout
    assert any(n.startswith("hotvcb-") for n in snapshot_names(host, vmid))
    r = hotvcb(host, "cleanup", "-g", conf, "-w", work)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "cleanup: 2 leftover(s) removed" in r.stdout
    assert snapshot_names(host, vmid) == ["mine"]
    assert backups(host, "crashy") == []
    assert not [f for f in os.listdir(host.real("/vmfs/volumes/datastore1/crashy")) if "-000002" in f]
