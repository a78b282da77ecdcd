"""Restore, list and verify through the CLI against esxisim (issue 3).

One simulated host per module: a running VM (writer active) with SCSI,
SATA and NVMe disks plus a disk on a second datastore is backed up once;
the tests restore copies of that backup in every way an admin would.
"""

import json
import os
import shutil
import subprocess
import sys
import tarfile

from pathlib import Path

import pytest
from simhost import on_host

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="esxisim needs root for unshare -m"),
    pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img"),
]

VM = "Web Prüf 1"
BK = "/vmfs/volumes/backup/bk"
FORMATS = {"1": "zeroedthick", "2": "2gbsparse", "3": "thin", "4": "eagerzeroedthick"}


def hotvcb(host, *args, timeout=120):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run(on_host(host, sys.executable, "-m", "hotvcb", *args), capture_output=True, timeout=timeout,
                       env=env, cwd=str(ROOT))
    r.out = r.stdout.decode("utf-8", "replace") + r.stderr.decode("utf-8", "replace")
    return r


def vim(host, *args):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run(on_host(host, "vim-cmd", *args), capture_output=True, timeout=60, env=env)
    return r.stdout.decode("utf-8", "replace")


def registered(host):
    return {host.display_name(k): k for k in host.state()["vms"]}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    sys.path.insert(0, str(ROOT))
    from esxisim import Host

    root = tmp_path_factory.mktemp("restore")
    host = Host.create(str(root / "host"), version="7.0.3", crond=False)
    host.add_datastore("datastore1", 2 << 30)
    host.add_datastore("ds2", 1 << 30)
    host.add_datastore("backup", 2 << 30)
    disks = [{"size": "8M", "bus": "scsi"}, {"size": "8M", "bus": "sata"}, {"size": "8M", "bus": "nvme"},
             {"size": "8M", "datastore": "ds2"}]
    host.create_vm(VM, "datastore1", disks, power="on", writer=True, vmxf=True)
    conf = root / "g.conf"
    conf.write_text("VM_BACKUP_VOLUME=%s\nDISK_BACKUP_FORMAT=thin\n" % BK, encoding="utf-8")
    r = hotvcb(host, "backup", "-m", VM, "-g", str(conf))
    assert r.returncode == 0, r.out
    vm_dir = host.real("%s/%s" % (BK, VM))
    (backup,) = [e for e in os.listdir(vm_dir) if e.startswith(VM + "-")]
    yield host, conf, "%s/%s/%s" % (BK, VM, backup)
    host.stop()


def clone_backup(host, src, name, stamp, vm=VM):
    """A copy of the backup under another timestamp (cp keeps it byte-identical)."""
    dst = "%s/%s/%s-%s" % (BK, vm, vm, stamp)
    os.makedirs(os.path.dirname(host.real(dst)), exist_ok=True)
    subprocess.run(["cp", "-a", "--sparse=always", host.real(src), host.real(dst)], check=True)
    return dst


def restore_with_faults(host, backup, name, **faults):
    """A restore as zeroedthick, the format vmkfstools clones (and the clone faults act on): a thin disk
    is copied by hotvcb itself (tests/test_restore_selfcopy.py)."""
    host.set_faults(**faults)
    try:
        return hotvcb(host, "restore", backup, "--datastore", "datastore1", "--name", name, "--format", "zeroedthick")
    finally:
        host.clear_faults()


def restore_file(host, tmp_path, lines):
    f = tmp_path / "restore.conf"
    f.write_text("# ghettoVCB-restore file\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return str(f)


def vmx_of(host, folder):
    (name,) = [f for f in os.listdir(host.real(folder)) if f.endswith(".vmx")]
    text = open(os.path.join(host.real(folder), name), encoding="utf-8").read()
    return dict(l.split(" = ", 1) for l in text.splitlines() if " = " in l), text


def check_disks_equal(host, backup, folder):
    vmx, _ = vmx_of(host, folder)
    keys = {k.split(".")[0]: v.strip('"') for k, v in vmx.items() if k.endswith(".fileName") and v.endswith('.vmdk"')}
    assert {k[:4] for k in keys} >= {"scsi", "sata", "nvme"}
    assert len(keys) == 4
    for key, name in keys.items():
        assert "/" not in name, "%s still points elsewhere: %s" % (key, name)
        restored = os.path.join(host.real(folder), name)
        src = [os.path.join(d, name) for d, _, fs in os.walk(host.real(backup)) if name in fs]
        assert src, name
        r = subprocess.run(["qemu-img", "compare", src[0], restored], capture_output=True, text=True)
        assert r.returncode == 0, (key, r.stdout, r.stderr)
    return keys


@pytest.mark.parametrize("num", sorted(FORMATS))
def test_round_trip_each_format(site, tmp_path, num):
    host, _conf, backup = site
    name = "Kopie %s Ü" % FORMATS[num]
    f = restore_file(host, tmp_path, ['"%s/;/vmfs/volumes/datastore1/;%s;%s"' % (backup, num, name)])
    r = hotvcb(host, "restore", "-c", f)
    assert r.returncode == 0, r.out
    assert "All VMs restored OK" in r.out
    folder = "/vmfs/volumes/datastore1/" + name
    check_disks_equal(host, backup, folder)
    vmx, text = vmx_of(host, folder)
    assert vmx["displayName"] == '"%s"' % name and vmx["nvram"] == '"%s.nvram"' % name
    assert vmx["uuid.action"] == '"create"' and "uuid.bios" not in vmx and "sched.swap.derivedName" not in vmx
    assert os.path.exists(os.path.join(host.real(folder), name + ".nvram"))
    assert os.path.exists(os.path.join(host.real(folder), name + ".vmxf"))
    vmid = registered(host)[name]
    assert "vmid %s" % vmid in r.out
    vim(host, "vmsvc/power.on", vmid)
    assert host.power_state(vmid) == "on"
    assert not [e for e in os.listdir(host.real("/vmfs/volumes/datastore1")) if ".hotvcb-" in e]


def test_direct_form_latest_and_power_on(site):
    host, conf, backup = site
    r = hotvcb(host, "restore", "--latest", VM, "-g", str(conf), "--datastore", "ds2", "--format", "thin",
               "--name", "Latest Copy", "--power-on")
    assert r.returncode == 0, r.out
    assert host.power_state(registered(host)["Latest Copy"]) == "on"
    check_disks_equal(host, backup, "/vmfs/volumes/ds2/Latest Copy")


def test_dry_run_changes_nothing(site, tmp_path):
    host, _conf, backup = site
    before = (sorted(os.listdir(host.real("/vmfs/volumes/datastore1"))), registered(host))
    for level in ("1", "2"):
        f = restore_file(host, tmp_path, ["%s;/vmfs/volumes/datastore1;3;Dry Run" % backup])
        r = hotvcb(host, "restore", "-c", f, "-d", level)
        assert r.returncode == 0, r.out
        assert "VMDK: %s/%s.vmdk (scsi0:0)" % (backup, VM) in r.out
        assert "VMX SET: displayName = 'Dry Run'" in r.out and "REGISTER: vim-cmd solo/registervm" in r.out
        assert ("VMX | " in r.out) == (level == "2")
    assert (sorted(os.listdir(host.real("/vmfs/volumes/datastore1"))), registered(host)) == before


def test_flipped_byte_fails_verify_and_restore(site, tmp_path):
    host, _conf, backup = site
    bad = clone_backup(host, backup, "bad", "2001-01-01_01-00-00")
    flat = os.path.join(host.real(bad), VM + "_1-flat.vmdk")
    with open(flat, "r+b") as fh:  # the block digests are the ones the sealer wrote
        fh.seek((1 << 20) * 3 + 5)
        b = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([b[0] ^ 0x55]))
    before = registered(host)
    r = hotvcb(host, "restore", bad, "--datastore", "datastore1", "--name", "Never")
    assert r.returncode != 0 and "fails verification" in r.out and VM + "_1-flat.vmdk" in r.out, r.out
    assert not [e for e in os.listdir(host.real("/vmfs/volumes/datastore1")) if e.startswith("Never")]
    r = hotvcb(host, "verify", bad)
    assert r.returncode != 0, r.out
    assert "%s_1-flat.vmdk: SHA-256 mismatch (bytes 3145728-4194303)" % VM in r.out
    data = json.load(open(os.path.join(host.real(bad), "hotvcb.json"), encoding="utf-8"))
    assert data["verify_error"]["file"] == VM + "_1-flat.vmdk"
    r = hotvcb(host, "restore", bad, "--datastore", "datastore1", "--name", "Never")
    assert r.returncode != 0 and "not a good backup (verify found it damaged" in r.out, r.out
    assert VM + "_1-flat.vmdk" in r.out, r.out
    assert not os.path.exists(host.real("/vmfs/volumes/datastore1/Never"))
    assert registered(host) == before
    shutil.rmtree(host.real(bad))


def test_damage_found_while_cloning_stops_the_clone(site):
    """The checksums are verified while the disks are cloned (issue 8): a damaged backup is found
    during a clone that would take a minute, the clone is stopped and nothing is left or registered."""
    host, _conf, backup = site
    bad = clone_backup(host, backup, "bad", "2001-01-02_01-00-00")
    with open(os.path.join(host.real(bad), VM + "_1-flat.vmdk"), "r+b") as fh:
        fh.seek((1 << 20) * 5)
        fh.write(b"\xff")
    before = registered(host)
    r = restore_with_faults(host, bad, "Stopped", **{"clone.delay": "60", "clone.match": "2001-01-02"})
    assert r.returncode == 6 and "fails verification" in r.out and VM + "_1-flat.vmdk" in r.out, r.out
    assert "failed verification during the copy: copy stopped" in r.out, r.out
    assert not [e for e in os.listdir(host.real("/vmfs/volumes/datastore1")) if e.startswith("Stopped")]
    assert registered(host) == before
    shutil.rmtree(host.real(bad))


def test_a_pre_check_refusing_after_the_check_started_gives_its_own_reason(site):
    """The checksums are checked from the moment the backup is found (issue 8), before the
    target and name checks: a name check refusing the restore of a damaged backup still says
    why in its own words, the check is stopped with it, and nothing is written."""
    host, _conf, backup = site
    bad = clone_backup(host, backup, "bad", "2001-01-03_01-00-00")
    with open(os.path.join(host.real(bad), VM + "_1-flat.vmdk"), "r+b") as fh:
        fh.seek((1 << 20) * 2)
        fh.write(b"\xff")
    os.makedirs(host.real("/vmfs/volumes/datastore1/Occupied"))
    before = (registered(host), sorted(os.listdir(host.real("/vmfs/volumes/datastore1"))))
    r = hotvcb(host, "restore", bad, "--datastore", "datastore1", "--name", "Occupied")
    assert r.returncode == 6 and "target folder /vmfs/volumes/datastore1/Occupied already exists" in r.out, r.out
    assert "fails verification" not in r.out and "Traceback" not in r.out and "internal error" not in r.out, r.out
    assert (registered(host), sorted(os.listdir(host.real("/vmfs/volumes/datastore1")))) == before
    assert os.listdir(host.real("/vmfs/volumes/datastore1/Occupied")) == []
    os.rmdir(host.real("/vmfs/volumes/datastore1/Occupied"))
    shutil.rmtree(host.real(bad))


def test_verify_records_and_list_shows_it(site):
    host, conf, backup = site
    r = hotvcb(host, "verify", VM, "-g", str(conf))
    assert r.returncode == 0 and "OK: " in r.out, r.out
    r = hotvcb(host, "list", VM, "-g", str(conf), "--json")
    assert r.returncode == 0, r.out
    rows = json.loads(r.stdout.decode())["backups"]
    row = [x for x in rows if x["path"] == backup][0]
    assert row["status"] == "good" and row["good"] and row["sealed"] and row["format"] == "thin" and row["verified"]
    assert 0 < row["size_bytes"] < 4 * 8 << 20  # thin: less than the disks' full size
    r = hotvcb(host, "list", "-g", str(conf))
    assert VM in r.out and "VERIFIED" in r.out


def test_backup_after_2000_and_latest(site, tmp_path):
    host, conf, backup = site
    vm = "Nacht VM"
    morning = clone_backup(host, backup, "", "2020-03-04_09-10-11", vm=vm)
    evening = clone_backup(host, backup, "", "2020-03-04_21-45-10", vm=vm)
    os.makedirs(host.real("%s/%s/%s-2020-03-04_22-00-00-partial" % (BK, vm, vm)))
    r = hotvcb(host, "list", vm, "-g", str(conf), "--json")
    rows = json.loads(r.stdout.decode())["backups"]
    assert [(x["time"], x["status"]) for x in rows] == [
        ("2020-03-04T09:10:11", "good"), ("2020-03-04T21:45:10", "good"), ("2020-03-04T22:00:00", "partial")]
    r = hotvcb(host, "restore", "--latest", vm, "-g", str(conf), "--datastore", "datastore1", "--name", "Abend", "-d", "1")
    assert r.returncode == 0 and "RESTORE: %s" % evening in r.out, r.out
    f = restore_file(host, tmp_path, ["%s;/vmfs/volumes/datastore1;3;Morgen" % morning])
    assert hotvcb(host, "restore", "-c", f).returncode == 0


def test_existing_target_folder_and_registered_name(site, tmp_path):
    host, _conf, backup = site
    os.makedirs(host.real("/vmfs/volumes/datastore1/Taken"))
    open(host.real("/vmfs/volumes/datastore1/Taken/keep.txt"), "w").write("mine")
    f = restore_file(host, tmp_path, ["%s;/vmfs/volumes/datastore1;3;Taken" % backup,
                                      "%s;/vmfs/volumes/datastore1;3" % backup])
    r = hotvcb(host, "restore", "-c", f)
    assert r.returncode == 6, r.out
    assert "%s:2: target folder /vmfs/volumes/datastore1/Taken already exists" % f in r.out
    # the original VM's own folder: a real clash (a VM of that name elsewhere is only a warning, see below)
    assert "%s:3: target folder /vmfs/volumes/datastore1/%s already exists" % (f, VM) in r.out
    assert os.listdir(host.real("/vmfs/volumes/datastore1/Taken")) == ["keep.txt"]


def test_bad_lines_each_reported_others_restored(site, tmp_path):
    host, _conf, backup = site
    f = restore_file(host, tmp_path, [
        '"%s;/vmfs/volumes/datastore1;3;Good One"' % backup,
        '"%s;/vmfs/volumes/datastore1"' % backup,
        '"%s;/vmfs/volumes/datastore1;7;Seven"' % backup,
        '"%s/nope-2020-01-01_00-00-00;/vmfs/volumes/datastore1;3;Missing"' % BK,
        '"%s;/vmfs/volumes/nods;3;No DS"' % backup,
        '"%s;/vmfs/volumes/datastore1;1;Good Two"' % backup,
    ])
    r = hotvcb(host, "restore", "-c", f)
    assert r.returncode == 4, r.out
    errors = [l for l in r.out.splitlines() if " -- error: " in l]
    assert len(errors) == 4, errors
    assert "%s:3: expected 3 or 4 fields" % f in errors[0]
    assert "%s:4: disk format '7' is not valid" % f in errors[1]
    assert "%s:5: backup %s/nope-2020-01-01_00-00-00 does not exist" % (f, BK) in errors[2]
    assert "%s:6: target datastore path /vmfs/volumes/nods does not exist" % f in errors[3]
    assert {"Good One", "Good Two"} <= set(registered(host))
    assert "1 of 6" not in r.out and "4 of 6 VM(s) failed" in r.out


def test_compressed_backup_leaves_no_extracted_copy(site):
    host, _conf, backup = site
    name = os.path.basename(backup)
    gz_name = name.replace(name[len(VM) + 1:], "2019-12-31_23-59-59") + ".gz"
    gz = "%s/%s/%s" % (BK, VM, gz_name)
    with tarfile.open(host.real(gz), "w:gz") as tar:
        tar.add(host.real(backup), arcname=gz_name[:-3])
    before = sorted(os.listdir(host.real("%s/%s" % (BK, VM))))
    r = hotvcb(host, "restore", "-d", "1", gz, "--datastore", "datastore1", "--name", "Aus GZ")
    assert r.returncode == 0 and "Checksums: " in r.out, r.out
    r = hotvcb(host, "restore", gz, "--datastore", "/vmfs/volumes/datastore1/", "--format", "3", "--name", "Aus GZ")
    assert r.returncode == 0, r.out
    check_disks_equal(host, backup, "/vmfs/volumes/datastore1/Aus GZ")
    assert sorted(os.listdir(host.real("%s/%s" % (BK, VM)))) == before
    assert not [e for e in os.listdir(host.real("/vmfs/volumes/datastore1")) if e.startswith(".hotvcb")]
    r = hotvcb(host, "verify", gz)
    assert r.returncode == 0 and "OK" in r.out, r.out
    os.unlink(host.real(gz))


def test_ghettovcb_backup_without_manifest(site):
    host, _conf, backup = site
    old = clone_backup(host, backup, "", "2018-06-01_20-30-00")
    os.unlink(os.path.join(host.real(old), "hotvcb.json"))
    # ghettoVCB names the folder of an other-datastore disk as the .vmx path does: by UUID
    vmx, _ = vmx_of(host, old)
    uuid = vmx["scsi0:1.fileName"].strip('"').split("/")[3]
    (sub,) = [d for d in os.listdir(host.real(old)) if os.path.isdir(os.path.join(host.real(old), d))]
    os.rename(os.path.join(host.real(old), sub), os.path.join(host.real(old), uuid))
    r = hotvcb(host, "restore", old, "--datastore", "datastore1", "--name", "Von Ghetto")
    assert r.returncode == 0 and "a ghettoVCB backup" in r.out, r.out
    check_disks_equal(host, backup, "/vmfs/volumes/datastore1/Von Ghetto")
    r = hotvcb(host, "verify", old)
    assert r.returncode == 0 and "UNVERIFIABLE" in r.out, r.out
    # and as ghettoVCB compresses it: tarred before its STATUS is written, so the archive holds none
    with tarfile.open(host.real(old) + ".gz", "w:gz") as tar:
        tar.add(host.real(old), arcname=os.path.basename(old), filter=lambda m: None if "STATUS" in m.name else m)
    shutil.rmtree(host.real(old))
    r = hotvcb(host, "restore", old + ".gz", "--datastore", "datastore1", "--name", "Von Ghetto gz")
    assert r.returncode == 0 and "a ghettoVCB backup" in r.out, r.out
    check_disks_equal(host, backup, "/vmfs/volumes/datastore1/Von Ghetto gz")
    os.unlink(host.real(old) + ".gz")


def test_failed_disk_copy_registers_nothing_and_cleans_up(site):
    host, _conf, backup = site
    before = registered(host)
    r = restore_with_faults(host, backup, "Half", **{"clone.fail_at": "40", "clone.match": "_2.vmdk"})
    assert r.returncode == 6 and "disk nvme0:0 of Half" in r.out and "nothing was registered" in r.out, r.out
    assert not [e for e in os.listdir(host.real("/vmfs/volumes/datastore1")) if e.startswith("Half")]
    assert registered(host) == before


def test_unsealed_backup_refused(site):
    host, _conf, backup = site
    old = clone_backup(host, backup, "", "2017-01-01_00-00-00")
    os.rename(os.path.join(host.real(old), "STATUS.ok"), os.path.join(host.real(old), "STATUS.error"))
    r = hotvcb(host, "restore", old, "--datastore", "datastore1", "--name", "Nope")
    assert r.returncode == 6 and "is not a good backup (STATUS.error" in r.out, r.out
    os.unlink(os.path.join(host.real(old), "STATUS.error"))
    r = hotvcb(host, "restore", old, "--datastore", "datastore1", "--name", "Nope")
    assert r.returncode == 6 and "not sealed" in r.out, r.out
    shutil.rmtree(host.real(old))


def test_datastore_name_in_a_restore_line_and_a_name_registered_elsewhere(site, tmp_path):
    """Issue 10 item 3: `;backup;` works as --datastore backup does (ds2 holds the VM's own second folder), and a VM name registered elsewhere is
    restored (as ghettoVCB did) with a clear warning; only a real clash (the folder) is refused."""
    host, conf, backup = site
    before = registered(host)
    f = restore_file(host, tmp_path, ["%s;backup;3" % backup])
    r = hotvcb(host, "restore", "-c", f)
    try:
        assert r.returncode == 0, r.out
        assert "%s:2: a VM named %r is already registered (vmid %s" % (f, VM, before[VM]) in r.out
        assert "restoring anyway" in r.out and "--name" in r.out
        check_disks_equal(host, backup, "/vmfs/volumes/backup/" + VM)
        twins = [k for k in host.state()["vms"] if host.display_name(k) == VM]
        assert len(twins) == 2
        again = hotvcb(host, "restore", "-c", f)  # now the folder is there: refused
        assert again.returncode == 6 and "target folder /vmfs/volumes/backup/%s already exists" % VM in again.out
    finally:
        for vmid in [k for k in host.state()["vms"] if host.display_name(k) == VM and k != before[VM]]:
            vim(host, "vmsvc/unregister", vmid)
    shutil.rmtree(host.real("/vmfs/volumes/backup/" + VM), ignore_errors=True)
    assert registered(host) == before


def test_a_misspelt_vm_name_gets_the_close_names(site):
    host, conf, _backup = site
    r = hotvcb(host, "restore", "--latest", "web prüf 1", "-g", str(conf), "--datastore", "ds2")
    assert r.returncode == 1
    assert "no good backup of 'web prüf 1' under %s (did you mean %r?)" % (BK, VM) in r.out


def test_latest_of_a_vm_whose_folder_holds_no_backup_says_so(site):
    """The VM's folder is there, holding only a copy named like a backup with no calendar's time: the
    refusal names the folder and that entry, never suggests the very name given as a close one."""
    host, conf, _backup = site
    odd = host.real(BK + "/Leer") + "/Leer-2026-13-01_00-00-00"
    os.makedirs(odd)
    try:
        r = hotvcb(host, "restore", "--latest", "Leer", "-g", str(conf), "--datastore", "ds2")
    finally:
        shutil.rmtree(host.real(BK + "/Leer"))
    assert r.returncode == 1, r.out
    assert "no good backup of 'Leer' under %s; %s/Leer holds no backup; " % (BK, BK) in r.out, r.out
    assert "Leer-2026-13-01_00-00-00" in r.out and "did you mean" not in r.out, r.out
