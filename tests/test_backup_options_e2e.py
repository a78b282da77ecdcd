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


def test_a_m_and_f_together_choose_as_ghettovcb_did_and_say_what_is_overridden(host, tmp_path):
    """ghettoVCB.sh: -a over -m over -f, whatever their order. The overridden list is never read (a missing one
    is no error), and a warning names it."""
    for name in ("web", "db", "app"):
        host.create_vm(name, "datastore1", [{"size": "1M"}], power="on")
    conf = write_conf(host)
    r = hotvcb(host, "-m", "web", "-f", tmp_path / "missing", "-g", conf, "-w", tmp_path / "w")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "warning: -m web overrides -f %s, as in ghettoVCB: only the VM(s) -m names are backed up" \
        % (tmp_path / "missing") in r.stdout
    assert sealed(host, "web") and not backups(host, "db") and not backups(host, "app")
    r = hotvcb(host, "-m", "web", "-a", "-m", "db", "-f", tmp_path / "missing", "-g", conf, "-w", tmp_path / "w")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "warning: -a overrides -f %s and -m web -m db, as in ghettoVCB: every VM is backed up" \
        % (tmp_path / "missing") in r.stdout
    assert sealed(host, "app") and len(sealed(host, "web")) == 2


def test_shutdown_and_startup_order(host, tmp_path):
    """ghettoVCB's meaning: the order keys act on their own, on any VM of the host."""
    ids = {n: host.create_vm(n, "datastore1", [{"size": "4M"}], power="on") for n in ("app", "db", "web", "mail")}
    ids["spare"] = host.create_vm("spare", "datastore1", [{"size": "4M"}], power="off")
    conf = write_conf(host, VM_SHUTDOWN_ORDER="web,app,db,mail", VM_STARTUP_ORDER="db,app,web,spare",
                      POWER_DOWN_TIMEOUT="30s")
    r = hotvcb(host, "-m", "app", "-m", "db", "-m", "web", "-g", conf, "-w", tmp_path / "w")
    assert r.returncode == 0, r.stdout + r.stderr
    off = re.findall(r"Powering off initiated for (\w+)", r.stdout)
    on = re.findall(r"Powering on (\w+)", r.stdout)
    assert off == ["web", "app", "db", "mail"] and on == ["db", "app", "web", "mail"]
    assert r.stdout.index("Powering off initiated for db") < r.stdout.index("Initiate backup for app")
    assert r.stdout.rindex("Successfully completed backup") < r.stdout.index("Powering on db")
    assert "VM_STARTUP_ORDER names 'spare', which this run did not power off" in r.stdout
    assert all(host.power_state(ids[n]) == "on" for n in ("app", "db", "web", "mail"))
    assert host.power_state(ids["spare"]) == "off"
    assert not any(e["event"].startswith("snapshot") for n in ("app", "db", "web") for e in host.writer_log(n))


def test_a_vm_that_will_not_shut_down_for_the_order_is_not_backed_up(host, tmp_path):
    host.create_vm("stubborn", "datastore1", [{"size": "4M"}], power="on")
    host.create_vm("fine", "datastore1", [{"size": "4M"}], power="on")
    host.set_fault("power.shutdown", "ignore")
    conf = write_conf(host, VM_SHUTDOWN_ORDER="stubborn", POWER_DOWN_TIMEOUT="3s")
    r = hotvcb(host, "-m", "stubborn", "-m", "fine", "-g", conf, "-w", tmp_path / "w")
    assert r.returncode == 4, r.stdout + r.stderr
    assert "did not shut down for VM_SHUTDOWN_ORDER" in r.stdout
    assert backups(host, "stubborn") == [] and len(sealed(host, "fine")) == 1


def test_a_vm_of_the_shutdown_order_whose_per_vm_file_is_refused_is_not_shut_down(host, tmp_path):
    """Its turn fails on the file before any backup: shut down first, it had downtime for nothing."""
    vmid = host.create_vm("typo", "datastore1", [{"size": "4M"}], power="on")
    confdir = tmp_path / "vmconf"
    confdir.mkdir()
    (confdir / "typo").write_text("VM_BACKUP_ROTATION_COUNT=three\n")
    conf = write_conf(host, VM_SHUTDOWN_ORDER="typo")
    r = hotvcb(host, "-m", "typo", "-g", conf, "-c", str(confdir), "-w", tmp_path / "w")
    assert r.returncode == 6, r.stdout + r.stderr
    assert "typo: not shut down for VM_SHUTDOWN_ORDER: its backup is refused" in r.stdout, r.stdout
    assert host.power_state(vmid) == "on"
    from esxisim import proclog
    asked = [e["args"][0] for e in proclog.read(host) if e["event"] == "start" and e["args"]]
    assert not [a for a in asked if a.startswith(("vmsvc/power.shutdown", "vmsvc/power.off"))], asked


def test_cleanup_command_removes_only_our_leftovers(host, tmp_path):
    vmid = host.create_vm("crashy", "datastore1", [{"size": "8M"}], power="on", snapshots=["mine"])
    conf = write_conf(host, ALLOW_VMS_WITH_SNAPSHOTS_TO_BE_BACKEDUP=1)
    host.set_fault("clone.delay", "30")
    work = str(tmp_path / "w")
    proc = hotvcb_background(host, "-m", "crashy", "-g", conf, "-w", work)
    wait_for(lambda: any(n.startswith("hotvcb-") for n in snapshot_names(host, vmid)) and copying(host, "crashy"),
             what="our snapshot and the copy")
    kill(lock_pid(host), signal.SIGKILL)
    proc.communicate(timeout=60)
    host.clear_faults()
    dry = hotvcb(host, "cleanup", "-g", conf, "-w", work, "-d", "dryrun")
    assert dry.returncode == 0 and "would remove leftover snapshot" in dry.stdout
    assert any(n.startswith("hotvcb-") for n in snapshot_names(host, vmid))
    r = hotvcb(host, "cleanup", "-g", conf, "-w", work)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "cleanup: 2 leftover(s) removed" in r.stdout
    assert snapshot_names(host, vmid) == ["mine"]
    assert backups(host, "crashy") == []
    assert not [f for f in os.listdir(host.real("/vmfs/volumes/datastore1/crashy")) if "-000002" in f]
