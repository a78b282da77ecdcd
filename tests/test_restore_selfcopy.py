"""A folder backup restored thin is copied by hotvcb itself (issue 8: no second read of what we
just wrote; jobs/restore_copy.py), through the CLI on esxisim.

Each flat disk is read once, digested as verify digests it and written from the same buffers,
holes left holes; the proof is compared with the manifest's before the VM gets its folder. What
the copy does not prove (.vmx, .nvram, descriptors) is still checked in the background; other
target formats are still cloned by vmkfstools. Host commands and the opens of each .vmdk are
counted by tests/countshell.py.
"""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
from test_restore_e2e import ROOT, clone_backup, hotvcb, registered

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="esxisim needs root for unshare -m"),
    pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img"),
]

VM = "Selbst Kopie"
BK = "/vmfs/volumes/backup/bk"  # test_restore_e2e's clone_backup puts its copies there
DS1 = "/vmfs/volumes/datastore1"
MiB = 1 << 20
SPARSE = VM + "_1-flat.vmdk"  # the mostly-empty disk: 64 MiB, 1 MiB of data


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A VM with a seeded disk and a mostly-empty one, backed up thin and zeroedthick."""
    sys.path.insert(0, str(ROOT))
    from esxisim import Host

    root = tmp_path_factory.mktemp("selfcopy")
    host = Host.create(str(root / "host"), version="7.0.3", crond=False)
    host.add_datastore("datastore1", 2 << 30)
    host.add_datastore("backup", 2 << 30)
    host.add_datastore("small", 1 << 30)  # says 1 GiB free; a 4 MiB tmpfs when a test fills it
    host.create_vm(VM, "datastore1", [{"size": "8M"}, {"size": "64M"}])
    flat = host.real("%s/%s/%s" % (DS1, VM, SPARSE))
    with open(flat, "r+b") as f:  # 63 MiB of holes, 1 MiB of data at 10 MiB
        f.truncate(0)
        f.truncate(64 * MiB)
        f.seek(10 * MiB)
        f.write(os.urandom(MiB))
    backups = {}
    for fmt in ("thin", "zeroedthick"):
        conf = root / (fmt + ".conf")
        conf.write_text("VM_BACKUP_VOLUME=%s/%s\nDISK_BACKUP_FORMAT=%s\n" % (BK, fmt, fmt), encoding="utf-8")
        r = hotvcb(host, "backup", "-m", VM, "-g", str(conf))
        assert r.returncode == 0, r.out
        vm_dir = "%s/%s/%s" % (BK, fmt, VM)
        (name,) = [e for e in os.listdir(host.real(vm_dir)) if e.startswith(VM + "-")]
        backups[fmt] = "%s/%s" % (vm_dir, name)
    yield host, root / "thin.conf", backups
    host.stop()


def counted_restore(host, tmp_path, *args, env=None):
    """`hotvcb restore ARGS` run on the host under tests/countshell.py: (result, what it counted)."""
    out = str(tmp_path / "count.json")
    r = subprocess.run([sys.executable, "-m", "esxisim", "shell", host.root, "--", "env",
                        "PYTHONPATH=%s:%s" % (ROOT, ROOT / "tests"), *("%s=%s" % kv for kv in (env or {}).items()),
                        "/bin/python", "-m", "countshell", out, "restore"] + list(args),
                       capture_output=True, text=True, timeout=300, cwd=str(ROOT))
    r.out = r.stdout + r.stderr
    counted = None
    if os.path.exists(out):
        with open(out) as f:
            counted = json.load(f)
    return r, counted


def clones(counted):
    return [argv for argv in counted["commands"] if "vmkfstools" in argv[0] and "-i" in argv]


def allocated(path):
    return os.stat(path).st_blocks * 512


def same_disk(a, b):
    r = subprocess.run(["qemu-img", "compare", a, b], capture_output=True, text=True)
    return r.returncode == 0, r.stdout + r.stderr


def left_in(host, ds, name):
    return [e for e in os.listdir(host.real(ds)) if e.startswith(name) or ".hotvcb" in e]


def check_restored(host, backup, folder):
    for disk in (VM + ".vmdk", VM + "_1.vmdk"):
        restored = os.path.join(host.real(folder), disk)
        ok, why = same_disk(os.path.join(host.real(backup), disk), restored)
        assert ok, (disk, why)
        text = open(restored, encoding="utf-8").read()
        assert 'createType="vmfs"' in text and 'ddb.thinProvisioned = "1"' in text, text
        assert '"%s-flat.vmdk"' % disk[:-5] in text, text


@pytest.mark.parametrize("fmt", ["thin", "zeroedthick"])
def test_a_thin_restore_reads_each_flat_once_and_keeps_holes(site, tmp_path, fmt):
    """No vmkfstools, each backup flat opened for reading once (the check is the copy's read), each
    descriptor's text read once (the plan's read is the one the copy writes), the disks qemu-equal to
    the backup's, thin, and the mostly-empty disk still mostly holes; from a zeroedthick backup (every
    block allocated) too."""
    host, _conf, backups = site
    name = "Kopie aus " + fmt
    r, counted = counted_restore(host, tmp_path, backups[fmt], "--datastore", "datastore1", "--name", name)
    assert r.returncode == 0, r.out
    assert clones(counted) == [], counted["commands"]
    flats = {p: n for p, n in counted["read_opens"].items() if p.startswith(backups[fmt]) and p.endswith("-flat.vmdk")}
    assert flats == {backups[fmt] + "/" + VM + "-flat.vmdk": 1, backups[fmt] + "/" + SPARSE: 1}, counted["read_opens"]
    descriptors = [backups[fmt] + "/" + d for d in (VM + ".vmdk", VM + "_1.vmdk")]
    texts, opens = counted["text_reads"], counted["read_opens"]
    assert {p: texts.get(p) for p in descriptors} == dict.fromkeys(descriptors, 1), texts
    # every open of a descriptor: that read, the driver's one scan of the backup folder (bytes_needed)
    # and the background check's digest of it
    assert {p: opens.get(p) for p in descriptors} == dict.fromkeys(descriptors, 3), opens
    assert r.out.count("checked as it was copied") == 2, r.out
    assert "Checksums hold: " in r.out.replace("Checksums hold: %s" % SPARSE, ""), r.out  # the other files
    folder = "%s/%s" % (DS1, name)
    check_restored(host, backups[fmt], folder)
    assert allocated(os.path.join(host.real(folder), SPARSE)) <= 2 * MiB
    if fmt == "zeroedthick":
        assert allocated(os.path.join(host.real(backups[fmt]), SPARSE)) >= 64 * MiB
    assert name in registered(host)


def test_a_zeroedthick_target_is_still_cloned_by_vmkfstools(site, tmp_path):
    host, _conf, backups = site
    r, counted = counted_restore(host, tmp_path, backups["thin"], "--datastore", "datastore1", "--name", "Dick",
                                 "--format", "zeroedthick")
    assert r.returncode == 0, r.out
    assert len(clones(counted)) == 2 and "checked as it was copied" not in r.out, (counted["commands"], r.out)
    assert allocated(os.path.join(host.real(DS1 + "/Dick"), SPARSE)) >= 64 * MiB


def test_no_verify_and_a_ghettovcb_backup_are_cloned_as_before(site, tmp_path):
    host, _conf, backups = site
    r, counted = counted_restore(host, tmp_path, backups["thin"], "--datastore", "datastore1", "--name", "Ungeprüft",
                                 "--no-verify")
    assert r.returncode == 0 and len(clones(counted)) == 2, (r.out, counted["commands"])
    old = clone_backup(host, backups["thin"], "", "2019-01-01_00-00-00", vm=VM)
    os.unlink(os.path.join(host.real(old), "hotvcb.json"))
    r, counted = counted_restore(host, tmp_path, old, "--datastore", "datastore1", "--name", "Ghetto")
    assert r.returncode == 0 and len(clones(counted)) == 2, (r.out, counted["commands"])
    shutil.rmtree(host.real(old))


def flip(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1) or b"\0"
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x40]))


@pytest.mark.parametrize("where", ["data", "hole", "nvram"])
def test_damage_is_refused_and_leaves_nothing(site, where):
    """A byte flipped in the flat's data or in one of its holes is found by the copy itself, one in
    the .nvram by the background check it leaves the rest to: refused, nothing registered or left."""
    host, _conf, backups = site
    bad = clone_backup(host, backups["thin"], "", "2001-01-01_01-00-00", vm=VM)
    if where == "nvram":
        flip(os.path.join(host.real(bad), VM + ".nvram"), 3)
    else:
        flip(os.path.join(host.real(bad), SPARSE), (10 if where == "data" else 40) * MiB + 77)
    before = registered(host)
    r = hotvcb(host, "restore", bad, "--datastore", "datastore1", "--name", "Nie")
    assert r.returncode == 6 and "%s fails verification, not restoring it" % bad in r.out, r.out
    if where == "nvram":
        assert VM + ".nvram: SHA-256 mismatch" in r.out, r.out
    else:
        at = (10 if where == "data" else 40) * MiB
        assert "%s: SHA-256 mismatch (bytes %d-%d)" % (SPARSE, at, at + MiB - 1) in r.out, r.out
    assert registered(host) == before
    assert left_in(host, DS1, "Nie") == []
    shutil.rmtree(host.real(bad))


def test_killed_mid_copy_then_cleanup_leaves_nothing(site, tmp_path):
    host, conf, backups = site
    r, _counted = counted_restore(host, tmp_path, backups["thin"], "--datastore", "datastore1", "--name", "Getötet",
                                  env={"HOTVCB_CRASH_AT": "restore-copy-wrote"})
    assert r.returncode == -9 or r.returncode == 137, r.out
    left = left_in(host, DS1, "Getötet")
    assert "Getötet.hotvcb-restoring" in left and [e for e in left if e.endswith(".owner")], left
    r = hotvcb(host, "cleanup", "-g", str(conf))
    assert r.returncode == 0 and "left by a restore that died" in r.out, r.out
    assert left_in(host, DS1, "Getötet") == []  # its folder and its record
    assert "Getötet" not in registered(host)


def test_a_full_target_says_so_and_leaves_nothing(site):
    """The target's filesystem fills up under the copy (ENOSPC) though the datastore said it had room:
    a 4 MiB tmpfs mounted on the datastore inside the host's namespace, for this restore only."""
    host, _conf, backups = site
    script = ('mount -t tmpfs -o size=4m tmpfs /vmfs/volumes/small/ || exit 99; "$@"; rc=$?; '
              'echo "LEFT: $(ls -A /vmfs/volumes/small/)"; exit $rc')
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "esxisim", "shell", host.root, "--", "sh", "-c", script, "sh",
                        sys.executable, "-m", "hotvcb", "restore", backups["thin"], "--datastore", "small",
                        "--name", "Voll"], capture_output=True, text=True, timeout=120, env=env, cwd=str(ROOT))
    out = r.stdout + r.stderr
    assert r.returncode == 6 and "No space left on device" in out and "nothing was registered" in out, out
    assert "LEFT: \n" in out, out
    assert "Voll" not in registered(host)


def disk_ids(path):
    ids = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            key, sep, value = line.partition("=")
            if sep and key.strip() in ("CID", "ddb.longContentID", "ddb.uuid"):
                ids[key.strip()] = value.strip().strip('"')
    return ids


def test_the_backups_own_name_keeps_the_disk_ids_a_new_name_gets_new_ones(site):
    """Under the backup's own name the VM is itself again (uuid.action keep), and so are its disks: CID,
    longContentID and ddb.uuid as backed up (a guest's /dev/disk/by-id stays). Under a new name each disk
    gets new ones in ESXi's shapes, as vmkfstools gives a clone: two copies never share a disk uuid."""
    host, _conf, backups = site
    r = hotvcb(host, "restore", backups["thin"], "--datastore", "small")
    assert r.returncode == 0 and r.out.count("checked as it was copied") == 2, r.out
    r = hotvcb(host, "restore", backups["thin"], "--datastore", "small", "--name", "Neue Ids")
    assert r.returncode == 0 and r.out.count("checked as it was copied") == 2, r.out
    for disk in (VM + ".vmdk", VM + "_1.vmdk"):
        backed_up = disk_ids(os.path.join(host.real(backups["thin"]), disk))
        assert len(backed_up) == 3, backed_up
        assert disk_ids(os.path.join(host.real("/vmfs/volumes/small/" + VM), disk)) == backed_up
        fresh = disk_ids(os.path.join(host.real("/vmfs/volumes/small/Neue Ids"), disk))
        assert all(fresh[k] != backed_up[k] for k in backed_up), (fresh, backed_up)
        assert re.fullmatch(r"[0-9a-f]{8}", fresh["CID"]), fresh
        assert re.fullmatch(r"[0-9a-f]{24}" + fresh["CID"], fresh["ddb.longContentID"]), fresh
        uuid = r"60 00 C2 9[0-9a-f]( [0-9a-f]{2}){6}-[0-9a-f]{2}( [0-9a-f]{2}){7}"
        assert re.fullmatch(uuid, fresh["ddb.uuid"]), fresh
    check_restored(host, backups["thin"], "/vmfs/volumes/small/Neue Ids")
    r = hotvcb(host, "restore", backups["thin"], "--datastore", "small", "--name", "Neue Ids 2")
    assert r.returncode == 0, r.out
    first, second = (disk_ids(os.path.join(host.real("/vmfs/volumes/small/" + n), VM + ".vmdk"))
                     for n in ("Neue Ids", "Neue Ids 2"))
    assert first["ddb.uuid"] != second["ddb.uuid"] and first["CID"] != second["CID"]


def test_the_copy_leaves_a_blocks_zero_pages_holes(tmp_path):
    """A 1 MiB block holding two 4 KiB pages of data among zeros (a guest that wrote here and there) takes
    those two pages restored, not the whole block: the room check counts the backup's allocation in
    pages, and the dry run must not promise a restore that cannot fit (test_outsider_s28restore)."""
    from hotvcb.jobs import restore_copy
    from hotvcb.sparsewrite import PAGE, data_runs

    block = bytearray(MiB)
    block[5 * PAGE + 7] = 1
    block[200 * PAGE:201 * PAGE] = os.urandom(PAGE)
    block[-1] = 9  # the block's last page
    assert data_runs(block) == [(5 * PAGE, 6 * PAGE), (200 * PAGE, 201 * PAGE), (MiB - PAGE, MiB)]
    assert data_runs(bytes(MiB)) == [] and data_runs(b"\0" * 100 + b"x") == [(0, 101)]  # a short tail is data
    src, dst = str(tmp_path / "src-flat.vmdk"), str(tmp_path / "dst-flat.vmdk")
    with open(src, "wb") as f:
        f.write(bytes(MiB) + block + bytes(MiB))  # all three blocks allocated, zeros and all
    restore_copy._copy_flat(src, dst, MiB, lambda _pct: None)
    with open(dst, "rb") as f:
        assert f.read() == bytes(MiB) + block + bytes(MiB)
    assert allocated(dst) <= 4 * PAGE, allocated(dst)  # the three pages (not the block: 1 MiB)
