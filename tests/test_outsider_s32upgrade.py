"""Outside test, stop 32: backups made yesterday must restore tomorrow.

An admin upgrades (or rolls back) hotvcb and keeps every backup an older release, or ghettoVCB, wrote;
and may go back to ghettoVCB-restore.sh with the backups hotvcb made. Each test builds such a backup on
a simulated ESXi host (by editing a fresh one as docs/backup-format.md says an older release wrote it,
or as ghettoVCB.sh / ghettoVCB-restore.sh of lamw/ghettoVCB do) and checks list, verify, restore
(a dry run first, then the real one, each restored disk compared with `qemu-img compare`) and rotation.
Defects are strict xfails until fixed. Tiny disks (1-3 MiB); one host per test.
"""

import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile

import pytest

from gzrepack import repack
from simhost import (SHARED_VOLUME, VOLUME, backup_once, backup_root, hotvcb, make_host, needs_root,
                     sealed, two_hosts_sharing_nfs, write_conf)

pytestmark = [needs_root, pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")]


@pytest.fixture
def site(tmp_path):
    host = make_host(tmp_path / "host")
    host.tmp = tmp_path
    yield host
    host.stop()


def out(r):
    return r.stdout + r.stderr


def real(host, path):
    return host.real(path)


def folder_of(host, vm, entry):
    return VOLUME + "/" + vm + "/" + entry


def compare(a, b):
    r = subprocess.run(["qemu-img", "compare", a, b], capture_output=True, text=True)
    assert r.returncode == 0, (a, b, r.stdout, r.stderr)


def vmx_disks(path):
    """{key: fileName} of a .vmx's disks."""
    disks = {}
    for line in open(path, encoding="utf-8"):
        m = re.match(r'\s*([a-z]+\d+:\d+)\.fileName\s*=\s*"(.*)"', line)
        if m and m.group(2).endswith(".vmdk"):
            disks[m.group(1)] = m.group(2)
    return disks


def check_restored(host, source_vm_dir_disks, restored_dir):
    """Every disk of the restored VM's .vmx equals the source disk of the same key."""
    vmxs = [e for e in os.listdir(restored_dir) if e.endswith(".vmx")]
    assert len(vmxs) == 1, os.listdir(restored_dir)
    disks = vmx_disks(os.path.join(restored_dir, vmxs[0]))
    assert set(disks) == set(source_vm_dir_disks), (disks, source_vm_dir_disks)
    for key, name in disks.items():
        assert "/" not in name, name
        compare(source_vm_dir_disks[key], os.path.join(restored_dir, name))


def source_disks(host, vm, datastore="datastore1"):
    """{key: real path} of the source VM's disks."""
    vmx = real(host, "/vmfs/volumes/%s/%s/%s.vmx" % (datastore, vm, vm))
    result = {}
    for key, name in vmx_disks(vmx).items():
        if name.startswith("/vmfs/volumes/"):
            result[key] = real(host, name)
        else:
            result[key] = os.path.join(os.path.dirname(vmx), name)
    return result


def stop_vm(host, vm):
    """Power the VM off so its disks stay what the backup holds (to compare a restore with them)."""
    for vmid in host.state()["vms"]:
        if host.display_name(vmid) == vm:
            subprocess.run(
                ["python3", "-m", "esxisim", "shell", host.root, "--", "vim-cmd", "vmsvc/power.off", vmid],
                capture_output=True, env=dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(__file__))),
                cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def rewrite_manifest(path, edit):
    data = json.load(open(path, encoding="utf-8"))
    edit(data)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f)


def as_version_1(folder):
    """The manifest as hotvcb's version 1 wrote it: each file {"size", "sha256"} (whole-file SHA-256)."""
    def edit(data):
        data["version"] = 1
        for name in list(data["files"]):
            blob = open(os.path.join(folder, name), "rb").read()
            data["files"][name] = {"size": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}
    rewrite_manifest(os.path.join(folder, "hotvcb.json"), edit)


# -- (1) format history ------------------------------------------------------------------------------


def test_a_newer_manifest_is_refused_alike_by_the_dry_run_and_the_restore_and_never_rewritten(site):
    """The admin rolls hotvcb back after an upgrade; last night's backup carries a manifest version this
    release does not know. The dry run and the restore must refuse it with the same reason ("made by a
    newer hotvcb"), never half-read it, and verify must not write its result into a manifest it cannot
    read (a newer hotvcb would then find it altered)."""
    site.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    conf = write_conf(site)
    r = hotvcb(site, "-m", "web", "-g", conf)
    assert r.returncode == 0, out(r)
    entry = sealed(site, "web")[-1]
    path = os.path.join(backup_root(site, "web"), entry, "hotvcb.json")
    rewrite_manifest(path, lambda d: d.update(version=99, future={"x": 1}))
    before = open(path, "rb").read()
    bk = folder_of(site, "web", entry)
    dry = hotvcb(site, "restore", bk, "--datastore", "ds5", "--name", "n", "-d", "1")
    wet = hotvcb(site, "restore", bk, "--datastore", "ds5", "--name", "n")
    ver = hotvcb(site, "verify", bk)
    for r in (dry, wet, ver):
        assert r.returncode != 0 and "newer hotvcb" in out(r) and "Traceback" not in out(r), out(r)
    assert open(path, "rb").read() == before
    assert not os.path.exists(real(site, "/vmfs/volumes/ds5/n"))


def test_rotation_on_a_shared_volume_keeps_another_hosts_backups_it_cannot_read(tmp_path):
    """Two hosts each have a VM `web` and back up to one NFS volume (docs/backup-format.md: rotation
    leaves backups another host made of another VM to that host). Host B was upgraded first: its
    manifests are of a version host A's hotvcb does not know. A's nightly rotation cannot read who made
    them, calls them damaged, and deletes B's backups as its own old broken ones: B's VM loses its
    backups to another host's rotation. A backup whose manifest this hotvcb cannot read must not be
    rotated away as broken (it cannot tell whose it is); at most it is left and named."""
    with two_hosts_sharing_nfs(tmp_path, VM_BACKUP_ROTATION_COUNT="2") as (a, b, conf_a, conf_b, nfs):
        for _ in range(2):
            r = backup_once(b, conf_b, "web")
            assert r.returncode == 0, out(r)
        root_b = b.real(SHARED_VOLUME + "/web")
        b_entries = sorted(e for e in os.listdir(root_b) if e.startswith("web-"))
        assert len(b_entries) == 2
        for e in b_entries:
            rewrite_manifest(os.path.join(root_b, e, "hotvcb.json"), lambda d: d.update(version=4))
        for _ in range(3):
            r = backup_once(a, conf_a, "web")
            assert r.returncode == 0, out(r)
        left = sorted(e for e in os.listdir(root_b) if e.startswith("web-"))
        assert set(b_entries) <= set(left), (b_entries, left)


def test_an_older_hotvcb_backup_with_a_plain_vmxf_and_a_version_1_manifest_restores(site):
    """backup-format.md: older hotvcb versions kept the .vmxf as `<VM>.vmxf` (not hidden) and wrote
    manifest version 1 (whole-file SHA-256); "hotvcb's restore reads it there", version 1 is "still
    verified". The admin restores such a backup: dry run, then the real one, under a new name on
    another datastore; list and verify call it good."""
    site.create_vm("web", "datastore1", [{"size": "2M"}, {"size": "1M", "datastore": "ds5"}], power="on",
                   vmxf=True)
    conf = write_conf(site)
    r = hotvcb(site, "-m", "web", "-g", conf)
    assert r.returncode == 0, out(r)
    stop_vm(site, "web")
    entry = sealed(site, "web")[-1]
    folder = os.path.join(backup_root(site, "web"), entry)
    os.rename(os.path.join(folder, ".web.vmxf"), os.path.join(folder, "web.vmxf"))

    def edit(d):
        d["files"]["web.vmxf"] = d["files"].pop(".web.vmxf")
    rewrite_manifest(os.path.join(folder, "hotvcb.json"), edit)
    as_version_1(folder)
    bk = folder_of(site, "web", entry)
    r = hotvcb(site, "verify", bk)
    assert r.returncode == 0 and "OK" in out(r), out(r)
    a = ("restore", bk, "--datastore", "ds5", "--name", "Alt Web", "--format", "zeroedthick")
    r = hotvcb(site, *a, "-d", "1")
    assert r.returncode == 0, out(r)
    assert not os.path.exists(real(site, "/vmfs/volumes/ds5/Alt Web"))
    r = hotvcb(site, *a)
    assert r.returncode == 0, out(r)
    dst = real(site, "/vmfs/volumes/ds5/Alt Web")
    check_restored(site, source_disks(site, "web"), dst)
    assert os.path.exists(os.path.join(dst, "Alt Web.vmxf")), os.listdir(dst)
    assert json.load(open(os.path.join(folder, "hotvcb.json")))["version"] == 1


def _compressed_backup(site, vm="web"):
    site.create_vm(vm, "datastore1", [{"size": "2M"}], power="on")
    conf = write_conf(site, ENABLE_COMPRESSION="1")
    r = hotvcb(site, "-m", vm, "-g", conf)
    assert r.returncode == 0, out(r)
    stop_vm(site, vm)
    gz = [e for e in os.listdir(backup_root(site, vm)) if e.endswith(".gz")][-1]
    return conf, gz


def _v1(data, files):
    data["version"] = 1
    for name in list(data["files"]):
        blob = files[name]
        data["files"][name] = {"size": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}


def test_a_version_1_compressed_backup_verifies_restores_and_finds_damage(site):
    """backup-format.md: a .gz's stream digest "also computes the version-1 whole-file SHA-256, to
    check either kind of entry". An older hotvcb's compressed backup (manifest version 1) must verify
    OK and restore; the same archive with a flipped byte in its disk must fail verify naming it.
    (The archive is rewritten, so its recorded size is updated as a hotvcb of that age left none.)"""
    conf, gz = _compressed_backup(site)
    archive = os.path.join(backup_root(site, "web"), gz)
    repack(archive, _v1)
    shutil.rmtree(os.path.join(backup_root(site, "web"), ".hotvcb-gz-records"), ignore_errors=True)
    bk = folder_of(site, "web", gz)
    r = hotvcb(site, "verify", bk)
    assert r.returncode == 0 and "OK" in out(r), out(r)
    r = hotvcb(site, "restore", bk, "--datastore", "ds5", "--name", "Gz Web", "-d", "1")
    assert r.returncode == 0, out(r)
    r = hotvcb(site, "restore", bk, "--datastore", "ds5", "--name", "Gz Web")
    assert r.returncode == 0, out(r)
    check_restored(site, source_disks(site, "web"), real(site, "/vmfs/volumes/ds5/Gz Web"))
    repack(archive, None, flip="web-flat.vmdk")
    shutil.rmtree(os.path.join(backup_root(site, "web"), ".hotvcb-gz-records"), ignore_errors=True)
    r = hotvcb(site, "verify", bk)
    assert r.returncode != 0 and "web-flat.vmdk" in out(r), out(r)


def test_a_gz_record_an_older_hotvcb_kept_beside_the_archive_still_counts(site):
    """backup-format.md: hotvcb first kept a .gz's verify record beside the archive and "still reads one
    there until the VM's next backup moves it". The older release's verify found the archive damaged;
    after the upgrade, list must still say damaged, and after the next backup the record is moved into
    .hotvcb-gz-records/ and still says so (the damaged archive is not promoted to good)."""
    conf, gz = _compressed_backup(site)
    root = backup_root(site, "web")
    records = os.path.join(root, ".hotvcb-gz-records")
    (rec,) = os.listdir(records)
    data = json.load(open(os.path.join(records, rec)))
    data["verify_error"] = "web-flat.vmdk: SHA-256 mismatch (bytes 0-1048575)"
    data["verified"] = "2026-12-01T03:00:00"
    shutil.rmtree(records)
    with open(os.path.join(root, rec), "w") as f:
        json.dump(data, f)
    r = hotvcb(site, "list", "--json", "-g", conf, "web")
    assert r.returncode == 0, out(r)
    (row,) = [b for b in json.loads(r.stdout)["backups"] if b["name"].startswith(gz[:-3])]
    assert not row["good"], row
    r = backup_once(site, conf, "web")
    assert r.returncode == 0, out(r)
    r = hotvcb(site, "list", "--json", "-g", conf, "web")
    rows = [b for b in json.loads(r.stdout)["backups"] if b["name"].startswith(gz[:-3])]
    assert rows and not rows[0]["good"], rows


# -- (2) ghettoVCB's own outputs --------------------------------------------------------------------


def _ghettovcb_backup(site, fmt, vm="web"):
    """A backup folder as ghettoVCB.sh left it with DISK_BACKUP_FORMAT=fmt: made by hotvcb, its
    manifest removed (ghettoVCB writes none), STATUS.ok as ghettoVCB echoes it."""
    site.create_vm(vm, "datastore1", [{"size": "3M"}, {"size": "1M", "datastore": "ds5"}], power="on")
    conf = write_conf(site, DISK_BACKUP_FORMAT=fmt)
    r = hotvcb(site, "-m", vm, "-g", conf)
    assert r.returncode == 0, out(r)
    stop_vm(site, vm)
    entry = sealed(site, vm)[-1]
    folder = os.path.join(backup_root(site, vm), entry)
    os.unlink(os.path.join(folder, "hotvcb.json"))
    with open(os.path.join(folder, "STATUS.ok"), "w") as f:
        f.write("Successfully completed backup\n")
    return conf, entry, folder


@pytest.mark.parametrize("fmt", ["thin", "zeroedthick", "eagerzeroedthick", "2gbsparse"])
def test_a_ghettovcb_2gbsparse_backup_restores_to_each_format_as_its_dry_run_said(site, fmt):
    conf, entry, folder = _ghettovcb_backup(site, "2gbsparse")
    bk = folder_of(site, "web", entry)
    name = "Aus Ghetto " + fmt
    a = ("restore", bk, "--datastore", "/vmfs/volumes/ds5", "--name", name, "--format", fmt)
    dry = hotvcb(site, *a, "-d", "1")
    assert dry.returncode == 0 and "ghettoVCB" in out(dry), out(dry)
    assert not os.path.exists(real(site, "/vmfs/volumes/ds5/" + name))
    wet = hotvcb(site, *a)
    assert wet.returncode == 0, out(wet)
    check_restored(site, source_disks(site, "web"), real(site, "/vmfs/volumes/ds5/" + name))


def test_a_ghettovcb_compressed_2gbsparse_backup_restores_as_its_dry_run_said(site):
    """ghettoVCB.sh with ENABLE_COMPRESSION=1 tars the folder before writing STATUS (the archive holds
    none) and removes the folder. hotvcb's restore of that .gz: the dry run passes, the real run does
    the same, the disks equal the source, and no extracted copy is left behind."""
    conf, entry, folder = _ghettovcb_backup(site, "2gbsparse")
    os.unlink(os.path.join(folder, "STATUS.ok"))
    archive = folder + ".gz"
    with tarfile.open(archive, "w:gz") as t:
        t.add(folder, arcname=entry)
    shutil.rmtree(folder)
    bk = folder_of(site, "web", entry + ".gz")
    r = hotvcb(site, "list", "--json", "-g", conf, "web")
    assert r.returncode == 0 and all(b["good"] for b in json.loads(r.stdout)["backups"]), out(r)
    a = ("restore", bk, "--datastore", "ds5", "--name", "Gz Ghetto", "--format", "eagerzeroedthick")
    dry = hotvcb(site, *a, "-d", "1")
    assert dry.returncode == 0, out(dry)
    assert not os.path.exists(real(site, "/vmfs/volumes/ds5/Gz Ghetto"))
    wet = hotvcb(site, *a)
    assert wet.returncode == 0, out(wet)
    check_restored(site, source_disks(site, "web"), real(site, "/vmfs/volumes/ds5/Gz Ghetto"))
    assert sorted(os.listdir(backup_root(site, "web"))) == sorted([entry + ".gz"] + [
        e for e in os.listdir(backup_root(site, "web")) if e.startswith(".hotvcb")])
    assert not [e for e in os.listdir(real(site, "/vmfs/volumes/ds5")) if ".hotvcb" in e]


# -- (3) going the other way: ghettoVCB-restore.sh on hotvcb's backups --------------------------------


def vmkfstools(host, *args):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return subprocess.run(["python3", "-m", "esxisim", "shell", host.root, "--", "vmkfstools"] + list(args),
                          capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=root), cwd=root)


def ghettovcb_restore(host, backup, datastore, name, fmt="thin"):
    """What ghettoVCB-restore.sh (lamw/ghettoVCB) does with `<backup>;<datastore>;3;<name>`, step by step:
    a `.gz` is untarred beside itself and the folder of its name minus `.gz` used; `ls | grep ".vmx"` and
    `ls | grep ".nvram"` must each give one name; each `(scsi|ide|sata)…fileName` line of a present disk is
    taken from `<backup>/<name>` or, for a /vmfs/volumes path, `<backup>/<its datastore>/<its base name>`,
    and cloned with `vmkfstools -i SRC -a <its ddb.adapterType> -d FMT <dst>/<name>-<n>.vmdk`.
    Returns {vmx key: restored disk (real path)}."""
    folder = host.real(backup)
    if backup.endswith(".gz"):
        with tarfile.open(folder) as t:
            t.extractall(os.path.dirname(folder))
        folder = folder[:-3]
    names = sorted(n for n in os.listdir(folder) if not n.startswith("."))  # `ls` shows no dot-file
    vmx = [n for n in names if re.search(".vmx", n)]
    nvram = [n for n in names if re.search(".nvram", n)]
    assert len(vmx) == 1 and len(nvram) == 1, names
    text = open(os.path.join(folder, vmx[0]), encoding="utf-8").read()
    dst = host.real("/vmfs/volumes/%s/%s" % (datastore, name))
    os.makedirs(dst)
    restored = {}
    found = [l.split()[0] for l in text.splitlines() if re.search("(scsi|ide|sata)", l, re.I) and "filename" in l.lower()]
    for n, line_key in enumerate(found):
        key = line_key.split(".")[0]
        if not re.search(r"^%s\.present = \"TRUE\"" % re.escape(key), text, re.M | re.I):
            continue
        src_name = re.search(r'^%s\.fileName = "(.*)"' % re.escape(key), text, re.M).group(1)
        if ".vmdk" not in src_name:
            continue
        if "/vmfs/volumes" in src_name:
            rest = src_name.replace("/vmfs/volumes/", "")
            src = os.path.join(folder, rest.split("/")[0], rest.split("/")[-1])
        else:
            src = os.path.join(folder, src_name)
        assert os.path.isfile(src), (key, src_name, src)
        adapter = re.search(r'ddb.adapterType\s*=\s*"?([^"\n]*)', open(src, errors="replace").read()).group(1)
        target = "%s-%d.vmdk" % (name, n)
        vsrc = src.replace(host.root.rstrip("/"), "", 1)
        r = vmkfstools(host, "-i", vsrc, "-a", adapter, "-d", fmt,
                       "/vmfs/volumes/%s/%s/%s" % (datastore, name, target))
        assert r.returncode == 0, (key, r.stdout, r.stderr)
        restored[key] = os.path.join(dst, target)
    return restored


@pytest.mark.parametrize("fmt,compress", [("thin", "0"), ("2gbsparse", "0"), ("zeroedthick", "1")])
def test_ghettovcb_restore_restores_a_hotvcb_backup(site, fmt, compress):
    """The admin goes back to ghettoVCB-restore.sh with the backups hotvcb made (migrating-from-ghettovcb.md
    promises they stay ghettoVCB's layout): a VM with SCSI, SATA and IDE disks, one on another
    datastore, a .vmxf; folder or .gz. Every disk ghettoVCB-restore reads must be where it looks and
    clone to the source's content."""
    site.create_vm("web", "datastore1", [{"size": "2M"}, {"size": "1M", "bus": "sata"}, {"size": "1M", "bus": "ide"},
                                         {"size": "1M", "datastore": "ds5"}], power="on", vmxf=True)
    conf = write_conf(site, DISK_BACKUP_FORMAT=fmt, ENABLE_COMPRESSION=compress)
    r = hotvcb(site, "-m", "web", "-g", conf)
    assert r.returncode == 0, out(r)
    stop_vm(site, "web")
    entry = [e for e in os.listdir(backup_root(site, "web")) if e.startswith("web-")][-1]
    restored = ghettovcb_restore(site, folder_of(site, "web", entry), "ds5", "Zurueck")
    src = source_disks(site, "web")
    assert set(restored) == set(src), (restored, src)
    for key in src:
        compare(src[key], restored[key])


def test_the_dry_run_of_a_compressed_thick_restore_counts_the_unpacked_copy(site):
    """The admin restores a ghettoVCB .gz (2gbsparse disks of 3 and 1 MiB, 2.7 MiB unpacked) as
    eagerzeroedthick onto the only datastore with room, 6 MiB free. The up-front check passes ("needs up
    to 5.3 MiB to unpack and restore"), `restore -d 1` says "ROOM: needs 4.0 MiB, 6.0 MiB free" and "every
    check passed"; the real run then unpacks the archive onto that datastore (docs/restore.md) and only
    then refuses: "needs 4.0 MiB ... but only 3.3 MiB is free". The unpacked copy plus the thick disks
    (2.7 + 4.0 MiB) never fitted: the check before unpacking (and so the dry run) must count them and
    refuse as the real run ends up refusing, before writing anything."""
    conf, entry, folder = _ghettovcb_backup(site, "2gbsparse")
    os.unlink(os.path.join(folder, "STATUS.ok"))
    with tarfile.open(folder + ".gz", "w:gz") as t:
        t.add(folder, arcname=entry)
    shutil.rmtree(folder)
    site.add_datastore("small", 6 << 20)
    a = ("restore", folder_of(site, "web", entry + ".gz"), "--datastore", "small", "--name", "Dicht",
         "--format", "eagerzeroedthick")
    dry = hotvcb(site, *a, "-d", "1")
    wet = hotvcb(site, *a)
    assert "Traceback" not in out(dry) + out(wet)
    assert wet.returncode == 0 or "to unpack and restore" in out(wet), out(wet)[-800:]
    assert not [e for e in os.listdir(real(site, "/vmfs/volumes/small")) if e != ".sdd.sf" and not e.startswith(".vSphere")], \
        os.listdir(real(site, "/vmfs/volumes/small"))
    assert (dry.returncode == 0) == (wet.returncode == 0), (out(dry)[-600:], out(wet)[-600:])


# -- ghettoVCB's folder names: `date +%F_%k-%M-%S` ------------------------------------------------------
# ghettoVCB.sh names a backup folder "${VM_NAME}-$(date +%F_%k-%M-%S)" (VM_BACKUP_DIR_NAMING_CONVENTION's
# default): %k is the hour padded with a SPACE, so every backup ghettoVCB made between 00:00 and 09:59 (the
# usual nightly window) is named like `web-2026-11-29_ 3-00-01`.

GHETTO_NIGHTS = ("2026-11-28_ 3-00-01", "2026-11-29_ 3-00-01", "2026-11-30_ 3-00-02")


def _ghettovcb_nights(site, extra=()):
    from pathlib import Path
    from test_outsider_interop import ghettovcb_folder

    site.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    for stamp in tuple(extra) + GHETTO_NIGHTS:
        ghettovcb_folder(Path(site.real(VOLUME)), "web", stamp, "STATUS.ok", "Successfully completed backup")
    return write_conf(site, VM_BACKUP_ROTATION_COUNT="2")


def test_ghettovcb_backups_made_before_ten_oclock_are_listed_and_restorable_as_latest(site):
    """The admin ran ghettoVCB nightly at 03:00 for years; ghettoVCB.sh named each folder with
    `date +%F_%k-%M-%S`, so they are `web-2026-11-30_ 3-00-02` (the hour padded with a space). After the
    switch, `hotvcb list` shows none of them (with none else it says "no backups" and `status` CRIT "never
    backed up"), and `restore --latest web` takes the one ghettoVCB backup it does see, a manual one of 20 November at 22:00, ten days older, with no
    word about the newer ones — while `restore <that folder>` restores them fine. migrating-from-ghettovcb.md
    promises ghettoVCB's backups show as unverifiable and count like hotvcb's: all four must be listed as
    good and `--latest` must take the newest."""
    conf = _ghettovcb_nights(site, extra=("2026-11-20_22-00-01",))
    r = hotvcb(site, "list", "--json", "-g", conf, "web")
    assert r.returncode == 0, out(r)
    good = [b for b in json.loads(r.stdout)["backups"] if b["good"]]
    assert len(good) == 4, out(r)
    r = hotvcb(site, "restore", "--latest", "web", "-g", conf, "--datastore", "ds5", "--name", "Neu", "-d", "1")
    assert r.returncode == 0 and "web-2026-11-30_ 3-00-02" in out(r), out(r)
    r = hotvcb(site, "status", "-g", conf)
    assert "never backed up" not in out(r), out(r)


def test_rotation_counts_ghettovcb_backups_made_before_ten_oclock(site):
    """Same admin, VM_BACKUP_ROTATION_COUNT=2. hotvcb's first backup of `web` keeps ghettoVCB's three
    backups forever: they count toward nothing and are never rotated (the backup volume fills over the
    weeks, since the admin relies on rotation), and no line of the run says they were passed over. With
    ghettoVCB's backups counted like hotvcb's, the run keeps its own and the newest ghettoVCB one."""
    conf = _ghettovcb_nights(site)
    r = hotvcb(site, "-m", "web", "-g", conf)
    assert r.returncode == 0, out(r)
    left = sorted(e for e in os.listdir(backup_root(site, "web")) if e.startswith("web-"))
    assert left[:1] == ["web-2026-11-30_ 3-00-02"] and len(left) == 2, left


def test_latest_does_not_claim_a_unicode_difference_between_identical_names(site):
    """`restore --latest web` where web's folder holds only backups hotvcb does not take as backups
    (here ghettoVCB's space-padded hours) answers: "no good backup of 'web' ... (did you mean 'web'? The
    name given differs from 'web' only in Unicode normalization, NFC against the VM's NFC ...)". The
    names are identical, so the admin hunts for an invisible character that is not there. The error must
    not claim a difference between identical names."""
    conf = _ghettovcb_nights(site)
    r = hotvcb(site, "restore", "--latest", "web", "-g", conf, "--datastore", "ds5", "-d", "1")
    assert "Traceback" not in out(r)
    assert "did you mean 'web'" not in out(r) and "only in Unicode normalization" not in out(r), out(r)


def test_an_older_hotvcb_backup_keeping_an_own_datastore_disk_beside_the_vmx_restores(site):
    """backup-format.md: older hotvcb versions "kept a disk named by full path on the VM's own datastore
    beside the .vmx, where the restore still finds it". Such a backup (manifest version 1) verifies,
    dry-runs and restores to zeroedthick under a new name on another datastore, both disks equal."""
    site.create_vm("web", "datastore1", [{"size": "2M"}, {"size": "1M"}], power="off")
    uuid = site.datastore_by_name("datastore1")["uuid"]
    vmx = real(site, "/vmfs/volumes/datastore1/web/web.vmx")
    text = open(vmx).read()
    assert 'scsi0:1.fileName = "web_1.vmdk"' in text
    open(vmx, "w").write(text.replace('scsi0:1.fileName = "web_1.vmdk"',
                                      'scsi0:1.fileName = "/vmfs/volumes/%s/web/web_1.vmdk"' % uuid))
    conf = write_conf(site)
    r = hotvcb(site, "-m", "web", "-g", conf)
    assert r.returncode == 0, out(r)
    entry = sealed(site, "web")[-1]
    folder = os.path.join(backup_root(site, "web"), entry)
    sub = os.path.join(folder, uuid)
    for f in os.listdir(sub):
        os.rename(os.path.join(sub, f), os.path.join(folder, f))
    os.rmdir(sub)

    def edit(d):
        for disk in d["disks"]:
            disk["files"] = [f.split("/")[-1] for f in disk["files"]]
        d["files"] = {k.split("/")[-1]: v for k, v in d["files"].items()}
    rewrite_manifest(os.path.join(folder, "hotvcb.json"), edit)
    as_version_1(folder)
    bk = folder_of(site, "web", entry)
    r = hotvcb(site, "verify", bk)
    assert r.returncode == 0 and "OK" in out(r), out(r)
    a = ("restore", bk, "--datastore", "ds5", "--name", "Alt", "--format", "zeroedthick")
    r = hotvcb(site, *a, "-d", "1")
    assert r.returncode == 0, out(r)
    r = hotvcb(site, *a)
    assert r.returncode == 0, out(r)
    check_restored(site, source_disks(site, "web"), real(site, "/vmfs/volumes/ds5/Alt"))


def test_a_ghettovcb_backup_without_nvram_restores_as_its_dry_run_said(site):
    """ghettoVCB.sh copies only the .vmx (`cp "${VMX_PATH}" "${VM_BACKUP_DIR}"`) and the disks: its
    backups hold no .nvram. list calls it unverifiable (good); dry run and restore agree, with a warning
    about the missing nvram, and the disks equal the source."""
    conf, entry, folder = _ghettovcb_backup(site, "zeroedthick")
    os.unlink(os.path.join(folder, "web.nvram"))
    bk = folder_of(site, "web", entry)
    r = hotvcb(site, "list", "--json", "-g", conf, "web")
    assert [b["good"] for b in json.loads(r.stdout)["backups"]] == [True], out(r)
    a = ("restore", bk, "--datastore", "ds5", "--name", "Ohne NVRAM")
    dry = hotvcb(site, *a, "-d", "1")
    wet = hotvcb(site, *a)
    assert dry.returncode == 0 and wet.returncode == 0, (out(dry), out(wet))
    assert "nvram" in out(dry) and "nvram" in out(wet)
    check_restored(site, source_disks(site, "web"), real(site, "/vmfs/volumes/ds5/Ohne NVRAM"))
