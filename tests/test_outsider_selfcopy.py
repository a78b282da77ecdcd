"""Outsider attack on a thin folder restore that copies its disks itself (jobs/restore_copy.py), on esxisim.

Written by a tester who did not write the change: odd disk sizes, empty disks, descriptors and flats that
disagree (backups edited and sealed again, as another tool or a hand repair leaves them), flats that are
no file, disks on two datastores, quotes and umlauts, a new name (does the disk look like a copy, as
vmkfstools makes one?), two restores at once, the backup changed or taken away while it is read, SIGTERM
and SIGKILL at any moment then `hotvcb cleanup`, a restore file's format 3. Each DEFECT is an xfail(strict)
test that a fix flips.
"""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest
from test_restore_e2e import ROOT, hotvcb, registered

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="esxisim needs root for unshare -m"),
    pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img"),
]

VM = "Öl 'Größe' Mix"  # odd sizes, an empty disk, a disk on a second datastore
QVM = 'Zitat "Q" Ü'  # a double quote in the VM's (and so its disks') name
BK = "/vmfs/volumes/backup/obk"
DS1 = "/vmfs/volumes/datastore1"
MiB = 1 << 20
ODD = 1000448  # 1954 sectors: not a multiple of 1 MiB (nor of the 64 KiB esxisim seeds in)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    sys.path.insert(0, str(ROOT))
    from esxisim import Host

    root = tmp_path_factory.mktemp("outselfcopy")
    host = Host.create(str(root / "host"), version="7.0.3", crond=False)
    host.add_datastore("datastore1", 2 << 30)
    host.add_datastore("ds2", 1 << 30)
    host.add_datastore("backup", 2 << 30)
    host.add_datastore("small", 1 << 30)
    host.create_vm(VM, "datastore1", [{"size": str(ODD)}, {"size": "0"}, {"size": "3M", "datastore": "ds2"},
                                      {"size": "48M"}])
    real = host.real("%s/%s/%s" % (DS1, VM, VM + "-flat.vmdk"))
    with open(real, "r+b") as f:  # data up to the very last byte of the odd-sized disk
        f.seek(ODD - 4096)
        f.write(os.urandom(4096))
    big = host.real("%s/%s/%s" % (DS1, VM, VM + "_3-flat.vmdk"))
    with open(big, "r+b") as f:  # data in every other MiB, holes between: the copy takes a while to read
        f.truncate(0)
        f.truncate(48 * MiB)
        for i in range(0, 48, 2):
            f.seek(i * MiB + 12345)
            f.write(os.urandom(300000))
    host.create_vm(QVM, "datastore1", [{"size": "2M"}])
    conf = root / "g.conf"
    conf.write_text("VM_BACKUP_VOLUME=%s\nDISK_BACKUP_FORMAT=thin\n" % BK, encoding="utf-8")
    backups = {}
    for vm in (VM, QVM):
        r = hotvcb(host, "backup", "-m", vm, "-g", str(conf))
        assert r.returncode == 0, r.out
        (name,) = [e for e in os.listdir(host.real("%s/%s" % (BK, vm))) if e.startswith(vm + "-")]
        backups[vm] = "%s/%s/%s" % (BK, vm, name)
    yield host, conf, backups
    host.stop()


def copy_of(host, src, stamp):
    """A byte-identical copy of a backup under another timestamp, for a test to spoil."""
    vm_dir = src.rsplit("/", 1)[0]
    vm = vm_dir.rsplit("/", 1)[1]
    dst = "%s/%s-%s" % (vm_dir, vm, stamp)
    subprocess.run(["cp", "-a", "--sparse=always", host.real(src), host.real(dst)], check=True)
    return dst


def reseal(host, backup, *rels):
    """Record the files `rels` as they are now in the backup's manifest: a backup another tool (or a
    hand repair) left self-consistent, that no checksum can call damaged."""
    from hotvcb.localshell import LocalShell
    from hotvcb.store import manifest

    path = os.path.join(host.real(backup), "hotvcb.json")
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    for rel in rels:
        data["files"][rel] = manifest.digest_file(LocalShell(), os.path.join(host.real(backup), rel)).entry()
    with open(path, "w", encoding="utf-8") as f:
        f.write(manifest.dumps({k: v for k, v in data.items() if k not in ("format", "version")}))


def desc_of(path):
    out = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if "=" in line:
                k, v = line.split("=", 1)
                out[k.strip()] = v.strip().strip('"')
            elif line.startswith(("RW ", "RDONLY ")):
                out["extent"] = line.split()
    return out


def same_disk(a, b):
    r = subprocess.run(["qemu-img", "compare", a, b], capture_output=True, text=True)
    return r.returncode == 0, r.stdout + r.stderr


def left_in(host, ds, name):
    return sorted(e for e in os.listdir(host.real(ds)) if e.startswith(name) or ".hotvcb" in e)


def restore(host, *args, timeout=120):
    return hotvcb(host, "restore", *args, timeout=timeout)


def start_restore(host, *args):
    """`hotvcb restore ARGS` running in the background (its own process group)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "esxisim", "shell", host.root, "--", sys.executable, "-m",
                             "hotvcb", "restore"] + list(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=env, cwd=str(ROOT), start_new_session=True)


def wait_for(pred, limit=60.0):
    """Poll until pred() holds (a bound for a hang, not a timed assertion)."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.002)
    return False


def check_equal(host, backup, folder, disks):
    for disk in disks:
        ok, why = same_disk(in_backup(host, backup, disk), os.path.join(host.real(folder), disk))
        assert ok, (disk, why)



def disk_names(vm):
    return [vm + ".vmdk", vm + "_1.vmdk", "%s_2.vmdk" % vm, vm + "_3.vmdk"]


def in_backup(host, backup, disk):
    for d, _sub, files in os.walk(host.real(backup)):
        if disk in files:
            return os.path.join(d, disk)
    raise AssertionError("%s not in %s" % (disk, backup))


def flat_of(path):
    return path[:-len(".vmdk")] + "-flat.vmdk"


def nothing_left(host, name, before):
    assert left_in(host, DS1, name) == [], left_in(host, DS1, name)
    assert [e for e in os.listdir(host.real(DS1)) if e.endswith(".owner")] == []
    assert registered(host) == before


def flip(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1) or b"\0"
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x20]))


def temp_flat(host, name, disk):
    return os.path.join(host.real(DS1 + "/" + name + ".hotvcb-restoring"), flat_of(disk))


# ----------------------------------------------------------------------------------------------- what holds

def test_odd_sized_empty_and_other_datastore_disks_come_back_byte_for_byte(site):
    """A disk of 1954 sectors (data in its last 4 KiB), a 0-byte disk, one from a second datastore and a
    mostly-empty one: each flat copied by hotvcb itself, equal byte for byte, holes kept."""
    host, _conf, backups = site
    r = restore(host, backups[VM], "--datastore", "datastore1", "--name", "Kopie Ödd")
    assert r.returncode == 0, r.out
    assert r.out.count("checked as it was copied") == 4, r.out
    folder = host.real(DS1 + "/Kopie Ödd")
    for disk in disk_names(VM):
        src, dst = in_backup(host, backups[VM], disk), os.path.join(folder, disk)
        ok, why = same_disk(src, dst)
        assert ok, (disk, why)
        with open(flat_of(src), "rb") as a, open(flat_of(dst), "rb") as b:
            assert a.read() == b.read(), disk
    assert os.path.getsize(flat_of(os.path.join(folder, VM + "_1.vmdk"))) == 0
    assert os.stat(flat_of(os.path.join(folder, VM + "_3.vmdk"))).st_blocks * 512 <= 25 * MiB  # 24 MiB of data
    assert "Kopie Ödd" in registered(host)


def test_a_restore_file_line_with_format_3_copies_itself(site, tmp_path):
    host, _conf, backups = site
    f = tmp_path / "vms_to_restore"
    f.write_text('"%s;/vmfs/volumes/datastore1;3;Aus Datei Ä"\n' % backups[VM], encoding="utf-8")
    r = restore(host, "-c", str(f))
    assert r.returncode == 0, r.out
    assert r.out.count("checked as it was copied") == 4, r.out
    check_equal(host, backups[VM], DS1 + "/Aus Datei Ä", [VM + ".vmdk", VM + "_3.vmdk"])


@pytest.mark.parametrize("what", ["descriptor", "vmx", "other-datastore flat", "empty flat"])
def test_damage_anywhere_refuses_and_leaves_nothing(site, what):
    """Caught by the pre-check (a size differs from the manifest) or by the checksums (same size)."""
    host, _conf, backups = site
    bad = copy_of(host, backups[VM], "2001-02-03_04-05-%02d" % len(what))
    real = host.real(bad)
    if what == "descriptor":
        path = os.path.join(real, VM + "_3.vmdk")
        text = open(path, encoding="utf-8").read()
        open(path, "w", encoding="utf-8").write(text.replace('ddb.adapterType = "lsilogic"',
                                                             'ddb.adapterType = "buslogic"'))
    elif what == "vmx":
        (vmx,) = [f for f in os.listdir(real) if f.endswith(".vmx")]
        with open(os.path.join(real, vmx), "a", encoding="utf-8") as f:
            f.write('numvcpus = "64"\n')
    elif what == "other-datastore flat":
        flip(flat_of(in_backup(host, bad, VM + "_2.vmdk")), 5)
    else:
        with open(flat_of(in_backup(host, bad, VM + "_1.vmdk")), "wb") as f:
            f.write(b"\0" * 512)  # an empty disk that grew a sector of zeros: sizes differ
    before = registered(host)
    r = restore(host, bad, "--datastore", "datastore1", "--name", "Nie Ü")
    shutil.rmtree(real)
    assert r.returncode == 6, r.out
    assert "fails verification, not restoring it" in r.out or "is not a good backup" in r.out, r.out
    nothing_left(host, "Nie Ü", before)


@pytest.mark.parametrize("kind", ["fifo", "directory", "dangling symlink"])
def test_a_flat_that_is_no_file_is_refused_at_once(site, kind):
    host, _conf, backups = site
    bad = copy_of(host, backups[VM], "2001-02-03_04-05-07")
    flat = flat_of(os.path.join(host.real(bad), VM + "_3.vmdk"))
    os.unlink(flat)
    if kind == "fifo":
        os.mkfifo(flat)
    elif kind == "directory":
        os.mkdir(flat)
    else:
        os.symlink("/nowhere/at/all-flat.vmdk", flat)
    before = registered(host)
    r = restore(host, bad, "--datastore", "datastore1", "--name", "Kein File", timeout=60)
    shutil.rmtree(host.real(bad))
    assert r.returncode == 6 and "internal error" not in r.out, r.out
    nothing_left(host, "Kein File", before)


def test_a_flat_symlinked_to_its_own_bytes_is_refused_naming_it(site):
    """A backup deduplicated by hand (the flat a symlink to the same bytes elsewhere). It was once
    copied through the link; but a link may as well lead to another VM's disk of the same size, sealed
    over (test_outsider_restoresplit), and nothing tells the two apart: refused, naming the file, as a
    symlinked disk file is refused when vmkfstools clones."""
    host, _conf, backups = site
    linked = copy_of(host, backups[VM], "2001-02-03_04-05-08")
    flat = flat_of(os.path.join(host.real(linked), VM + ".vmdk"))
    elsewhere = host.real("/vmfs/volumes/backup/elsewhere-flat.vmdk")
    shutil.move(flat, elsewhere)
    os.symlink(elsewhere, flat)
    before = registered(host)
    r = restore(host, linked, "--datastore", "datastore1", "--name", "Verlinkt")
    shutil.rmtree(host.real(linked))
    os.unlink(elsewhere)
    assert r.returncode == 6 and "not a regular file" in r.out and os.path.basename(flat) in r.out, r.out
    assert "Traceback" not in r.out, r.out
    nothing_left(host, "Verlinkt", before)


def test_two_restores_of_one_name_at_once_give_one_vm(site):
    host, _conf, backups = site
    procs = [start_restore(host, backups[VM], "--datastore", "datastore1", "--name", "Zwilling") for _ in range(2)]
    outs = [p.communicate(timeout=120)[0].decode("utf-8", "replace") for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes[0] == 0 and codes[1] != 0, outs
    assert list(registered(host)).count("Zwilling") == 1
    check_equal(host, backups[VM], DS1 + "/Zwilling", disk_names(VM))
    assert left_in(host, DS1, "Zwilling") == ["Zwilling"]


def test_two_restores_under_two_names_at_once_both_succeed(site):
    host, _conf, backups = site
    procs = [start_restore(host, backups[VM], "--datastore", "datastore1", "--name", n) for n in ("Par A", "Par B")]
    outs = [p.communicate(timeout=120)[0].decode("utf-8", "replace") for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    for n in ("Par A", "Par B"):
        check_equal(host, backups[VM], DS1 + "/" + n, disk_names(VM))


@pytest.mark.parametrize("change", ["flip", "truncate", "delete", "rotate"])
def test_the_backup_changed_while_it_is_read(site, change):
    """Once the copy of the big disk has begun, the backup is spoilt in place, cut short, deleted, or moved
    away: the restore either refuses and leaves nothing, or restores exactly the backup as it was."""
    host, _conf, backups = site
    victim = copy_of(host, backups[VM], "2001-02-03_04-05-09")
    real = host.real(victim)
    before = registered(host)
    name = "Während " + change
    p = start_restore(host, victim, "--datastore", "datastore1", "--name", name)
    started = wait_for(lambda: os.path.exists(temp_flat(host, name, VM + "_3.vmdk")) or p.poll() is not None)
    big = flat_of(os.path.join(real, VM + "_3.vmdk"))
    if change == "flip":
        flip(big, 46 * MiB + 12345 + 7)
    elif change == "truncate":
        os.truncate(big, 20 * MiB)
    elif change == "delete":
        shutil.rmtree(real)
    else:
        os.rename(real, real + "-rotated")
        real += "-rotated"
    out = p.communicate(timeout=120)[0].decode("utf-8", "replace")
    assert started, out
    print(out)
    if p.returncode == 0:
        check_equal(host, backups[VM], DS1 + "/" + name, disk_names(VM))
    else:
        assert p.returncode in (4, 6), out
        nothing_left(host, name, before)
    shutil.rmtree(real, ignore_errors=True)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_or_ctrl_c_mid_copy_leaves_nothing(site, sig):
    host, _conf, backups = site
    before = registered(host)
    name = "Signal %d" % sig
    p = start_restore(host, backups[VM], "--datastore", "datastore1", "--name", name)
    assert wait_for(lambda: os.path.exists(temp_flat(host, name, VM + "_3.vmdk")) or p.poll() is not None)
    os.killpg(p.pid, sig)
    out = p.communicate(timeout=60)[0].decode("utf-8", "replace")
    print(out)
    if p.returncode == 0 or "Successfully restored %s " % name in out:
        # the signal came after the last write (or even after the registration, while the run was
        # ending: it then exits 2, interrupted, and keeps the VM it finished): the VM is whole
        check_equal(host, backups[VM], DS1 + "/" + name, disk_names(VM))
        return
    nothing_left(host, name, before)
    assert "Traceback" not in out, out


def test_sigkill_at_random_moments_then_cleanup(site):
    """Killed at eight moments spread over a restore's life, `hotvcb cleanup` leaves either nothing or a
    whole VM folder (killed after the rename) -- never a half-copied disk under the VM's name."""
    host, conf, backups = site
    rng = random.Random(8)
    for i in range(8):
        name = "Tot %d" % i
        p = start_restore(host, backups[VM], "--datastore", "datastore1", "--name", name)
        time.sleep(rng.uniform(0.05, 1.2))
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate(timeout=60)
        r = hotvcb(host, "cleanup", "-g", str(conf))
        assert r.returncode == 0, r.out
        left = left_in(host, DS1, name)
        assert left in ([], [name]), left
        assert [e for e in os.listdir(host.real(DS1)) if e.endswith(".owner")] == [], r.out
        if left:
            check_equal(host, backups[VM], DS1 + "/" + name, disk_names(VM))


def test_a_full_target_names_no_space_and_leaves_nothing(site):
    """The big disk's data does not fit a 2 MiB tmpfs mounted on the target for this restore only."""
    host, _conf, backups = site
    script = ('mount -t tmpfs -o size=2m tmpfs /vmfs/volumes/small/ || exit 99; "$@"; rc=$?; '
              'echo "LEFT: $(ls -A /vmfs/volumes/small/)"; exit $rc')
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "esxisim", "shell", host.root, "--", "sh", "-c", script, "sh",
                        sys.executable, "-m", "hotvcb", "restore", backups[VM], "--datastore", "small",
                        "--name", "Voll Ö"], capture_output=True, text=True, timeout=120, env=env, cwd=str(ROOT))
    out = r.stdout + r.stderr
    assert r.returncode == 6 and "No space left on device" in out and "nothing was registered" in out, out
    assert "LEFT: \n" in out, out
    assert "Voll Ö" not in registered(host)


def test_a_cleanup_during_a_running_restore_leaves_it_alone(site, tmp_path):
    """`hotvcb cleanup` run while a restore copies: the live restore's folder and record are not its to
    remove, and the restore finishes whole."""
    host, conf, backups = site
    p = start_restore(host, backups[VM], "--datastore", "datastore1", "--name", "Lebendig")
    assert wait_for(lambda: os.path.exists(temp_flat(host, "Lebendig", VM + "_3.vmdk")) or p.poll() is not None)
    r = hotvcb(host, "cleanup", "-g", str(conf))
    out = p.communicate(timeout=120)[0].decode("utf-8", "replace")
    assert r.returncode == 0, r.out
    assert p.returncode == 0, out + r.out
    check_equal(host, backups[VM], DS1 + "/Lebendig", disk_names(VM))
    assert left_in(host, DS1, "Lebendig") == ["Lebendig"]


def test_a_new_name_with_quotes_umlauts_and_a_semicolon(site):
    host, _conf, backups = site
    name = 'Neu "Ä" \'b\' ; $x'
    r = restore(host, backups[VM], "--datastore", "datastore1", "--name", name)
    assert r.returncode == 0, r.out
    assert r.out.count("checked as it was copied") == 4, r.out
    check_equal(host, backups[VM], DS1 + "/" + name, disk_names(VM))
    assert name in registered(host)


def test_two_disks_of_one_file_name_on_two_datastores(site):
    """The disk on the second datastore renamed in the backup to the first disk's file name (and sealed
    again): each is copied to a name of its own, each equal to its source."""
    host, _conf, backups = site
    b = copy_of(host, backups[VM], "2003-03-03_03-03-03")
    real = host.real(b)
    (sub,) = [d for d in os.listdir(real) if os.path.isdir(os.path.join(real, d))]
    old, new = VM + "_2", VM
    os.rename(os.path.join(real, sub, old + "-flat.vmdk"), os.path.join(real, sub, new + "-flat.vmdk"))
    with open(os.path.join(real, sub, old + ".vmdk"), encoding="utf-8") as f:
        text = f.read().replace('"%s-flat.vmdk"' % old, '"%s-flat.vmdk"' % new)
    os.unlink(os.path.join(real, sub, old + ".vmdk"))
    with open(os.path.join(real, sub, new + ".vmdk"), "w", encoding="utf-8") as f:
        f.write(text)
    (vmx,) = [f for f in os.listdir(real) if f.endswith(".vmx")]
    with open(os.path.join(real, vmx), encoding="utf-8") as f:
        vtext = f.read()
    assert "/%s.vmdk" % old in vtext
    with open(os.path.join(real, vmx), "w", encoding="utf-8") as f:
        f.write(vtext.replace("/%s.vmdk" % old, "/%s.vmdk" % new))
    with open(os.path.join(real, "hotvcb.json"), encoding="utf-8") as f:
        data = json.load(f)
    for ext in (".vmdk", "-flat.vmdk"):
        data["files"].pop("%s/%s%s" % (sub, old, ext))
    for disk in data["disks"]:
        disk["files"] = [f.replace(old + ".vmdk", new + ".vmdk").replace(old + "-flat", new + "-flat")
                         for f in disk["files"]]
    with open(os.path.join(real, "hotvcb.json"), "w", encoding="utf-8") as f:
        json.dump(data, f)
    reseal(host, b, vmx, "%s/%s.vmdk" % (sub, new), "%s/%s-flat.vmdk" % (sub, new))
    r = restore(host, b, "--datastore", "datastore1", "--name", "Gleichnamig")
    assert r.returncode == 0, r.out
    assert r.out.count("checked as it was copied") == 4, r.out
    folder = host.real(DS1 + "/Gleichnamig")
    pairs = [(os.path.join(real, VM + ".vmdk"), VM + ".vmdk"), (os.path.join(real, sub, new + ".vmdk"), VM + "_2.vmdk"),
             (os.path.join(real, VM + "_3.vmdk"), VM + "_3.vmdk")]
    for src, dst in pairs:
        ok, why = same_disk(src, os.path.join(folder, dst))
        assert ok, (dst, why)
    shutil.rmtree(real)


@pytest.mark.parametrize("size", ["2m", "2056k"])
def test_a_target_that_fills_after_the_flat_says_so_and_leaves_nothing(site, size):
    """The 2 MiB flat, written whole by the guest (no page of zeros the copy leaves a hole), fits the tmpfs
    exactly (2m: then its descriptor does not) or with 8 KiB to spare (then the .nvram does not): the write
    after the copy fails, with the system's reason, and nothing is left."""
    host, _conf, backups = site
    b = copy_of(host, backups[QVM], "2005-05-05_05-05-0%d" % ["2m", "2056k"].index(size))
    real = host.real(b)
    with open(flat_of(os.path.join(real, QVM + ".vmdk")), "r+b") as f:
        f.write(b"\x5a" * (2 * MiB))
    reseal(host, b, QVM + "-flat.vmdk")
    script = ('mount -t tmpfs -o size=%s tmpfs /vmfs/volumes/small/ || exit 99; "$@"; rc=$?; '
              'echo "LEFT: $(ls -A /vmfs/volumes/small/)"; exit $rc' % size)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "esxisim", "shell", host.root, "--", "sh", "-c", script, "sh",
                        sys.executable, "-m", "hotvcb", "restore", b, "--datastore", "small",
                        "--name", "Knapp"], capture_output=True, text=True, timeout=120, env=env, cwd=str(ROOT))
    out = r.stdout + r.stderr
    assert r.returncode == 6 and "No space left on device" in out and "Traceback" not in out, out
    assert "LEFT: \n" in out, out
    assert "Knapp" not in registered(host)
    shutil.rmtree(real)


def test_a_manifest_of_64_kib_blocks_is_copied_by_its_own_block_size(site):
    """A flat proved by 64 KiB blocks (a block size hotvcb accepts): digested and written by that size,
    equal to the backup, and a byte flipped in one of its blocks is found there."""
    from hotvcb.localshell import LocalShell
    from hotvcb.store import manifest

    host, _conf, backups = site
    b = copy_of(host, backups[VM], "2004-04-04_04-04-04")
    real = host.real(b)
    rel = VM + "_3-flat.vmdk"
    path = os.path.join(real, "hotvcb.json")
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    data["files"][rel] = manifest.digest_file(LocalShell(), os.path.join(real, rel), 65536).entry()
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f)
    r = restore(host, b, "--datastore", "datastore1", "--name", "Klein Block")
    assert r.returncode == 0 and r.out.count("checked as it was copied") == 4, r.out
    check_equal(host, b, DS1 + "/Klein Block", [VM + "_3.vmdk"])
    flip(os.path.join(real, rel), 30 * MiB + 12345 + 65536)
    r = restore(host, b, "--datastore", "datastore1", "--name", "Klein Kaputt")
    at = 30 * MiB + 65536
    assert r.returncode == 6 and "%s: SHA-256 mismatch (bytes %d-%d)" % (rel, at, at + 65535) in r.out, r.out
    assert left_in(host, DS1, "Klein Kaputt") == []
    shutil.rmtree(real)


@pytest.mark.parametrize("how", ["--no-verify", "ghettoVCB"])
def test_unchecked_thin_restores_are_still_cloned_and_whole(site, how):
    """Nothing to prove the bytes by (--no-verify, or a ghettoVCB backup: no manifest): vmkfstools clones
    them as before, odd sizes and empty disk included."""
    host, _conf, backups = site
    b = backups[VM]
    args = []
    if how == "ghettoVCB":
        b = copy_of(host, backups[VM], "2005-05-05_05-05-05")
        os.unlink(os.path.join(host.real(b), "hotvcb.json"))
    else:
        args = [how]
    name = "Ungeprüft " + how.strip("-")
    r = restore(host, b, "--datastore", "datastore1", "--name", name, *args)
    assert r.returncode == 0 and "checked as it was copied" not in r.out, r.out
    check_equal(host, b, DS1 + "/" + name, disk_names(VM))
    if how == "ghettoVCB":
        shutil.rmtree(host.real(b))


# ----------------------------------------------------------------------------------------------- defects

def identity(path):
    d = desc_of(path)
    return d["CID"], d["ddb.uuid"], d["ddb.longContentID"]


def test_a_copy_under_a_new_name_gets_new_disk_ids_as_a_clone_does(site):
    host, _conf, backups = site
    for name, fmt in (("Id Dick", "zeroedthick"), ("Id Dünn", "thin")):
        r = restore(host, backups[QVM], "--datastore", "datastore1", "--name", name, "--format", fmt)
        assert r.returncode == 0, r.out
    src = identity(os.path.join(host.real(backups[QVM]), QVM + ".vmdk"))
    cloned = identity(os.path.join(host.real(DS1 + "/Id Dick"), QVM + ".vmdk"))
    copied = identity(os.path.join(host.real(DS1 + "/Id Dünn"), QVM + ".vmdk"))
    assert all(a != b for a, b in zip(src, cloned)), (src, cloned)  # what vmkfstools' clone does
    assert all(a != b for a, b in zip(src, copied)), (src, copied)


def test_a_double_quote_in_the_disk_name_still_powers_on(site):
    host, _conf, backups = site
    r = restore(host, backups[QVM], "--datastore", "datastore1", "--name", "Q Dick", "--format", "zeroedthick",
                "--power-on")
    assert r.returncode == 0, r.out  # vmkfstools' clone keeps the name: the VM powers on
    r = restore(host, backups[QVM], "--datastore", "datastore1", "--name", "Q Dünn", "--power-on")
    assert r.returncode == 0, r.out



LIES = {"short": "the flat is 1 MiB, its descriptor says 2 MiB", "zero": "the flat is empty, its descriptor says 2 MiB",
        "long": "the flat is 1 MiB + 512 bytes longer than its descriptor says",
        "unaligned": "the flat is 100 bytes longer than its descriptor says (not a whole sector)",
        "parentcid": "a base disk's descriptor names a parent CID"}


@pytest.mark.parametrize("lie", sorted(LIES))
def test_a_descriptor_that_disagrees_with_its_flat_comes_back_as_a_clone_would_write_it(site, lie):
    """A backup another tool left (or one repaired by hand) whose manifest holds the files as they are: the
    checksums cannot object, so the restored disk must be made whole the way vmkfstools' clone makes it."""
    host, _conf, backups = site
    b = copy_of(host, backups[QVM], "2002-02-02_02-02-%02d" % sorted(LIES).index(lie))
    real = host.real(b)
    flat = flat_of(os.path.join(real, QVM + ".vmdk"))
    rel = os.path.basename(flat)
    if lie in ("short", "zero"):
        os.truncate(flat, MiB if lie == "short" else 0)
    elif lie in ("long", "unaligned"):
        with open(flat, "ab") as f:
            f.write(os.urandom(MiB + 512 if lie == "long" else 100))
    else:
        rel = QVM + ".vmdk"
        with open(os.path.join(real, rel), encoding="utf-8") as f:
            text = f.read()
        with open(os.path.join(real, rel), "w", encoding="utf-8") as f:
            f.write(text.replace("parentCID=ffffffff", "parentCID=1234abcd"))
    reseal(host, b, rel)
    done = {}
    for fmt in ("zeroedthick", "thin"):
        name = "Lüge %s %s" % (lie, fmt)
        r = restore(host, b, "--datastore", "datastore1", "--name", name, "--format", fmt)
        assert r.returncode == 0, r.out
        done[fmt] = os.path.join(host.real(DS1 + "/" + name), QVM + ".vmdk")
    shutil.rmtree(real)
    clone, copy = desc_of(done["zeroedthick"]), desc_of(done["thin"])
    assert os.path.getsize(flat_of(done["zeroedthick"])) == int(clone["extent"][1]) * 512  # vmkfstools
    assert clone["parentCID"] == "ffffffff"
    assert os.path.getsize(flat_of(done["thin"])) == int(copy["extent"][1]) * 512, LIES[lie]
    assert copy["parentCID"] == "ffffffff", LIES[lie]
