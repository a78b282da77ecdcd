"""Outside tester: raw and flat-VMDK QEMU backups proven by their source's digest (store/source_digest.py).

Attacks the promise of docs/backup-format.md ("It is taken from the source while qemu-img copies it"):
the manifest is the disk at the snapshot instant, so a copy that differs in any byte fails verify and
restore; a failed or killed backup leaves nothing that looks complete and no overlay on the VM.
Everything runs through the CLI against real QEMU VMs (tests/qemuvm.py, the `lab` fixture of
tests/test_qemu_backup.py).
"""

import glob
import json
import os
import shutil
import subprocess

import pytest

from qemuvm import PYTHON, QEMU_IMG, env, hotvcb_argv, needs_qemu, qemu_img, same_content
from qemuvm import loop_devices  # noqa: F401  (the fixture)
from test_qemu_backup import _image, _verify, lab  # noqa: F401  (the fixture)

pytestmark = needs_qemu
MiB = 1 << 20


def wrapped_qemu_img(folder, action):
    """A bin folder whose qemu-img is the real one, but after a successful `convert` it runs `action`
    (Python, with `data` the path of the file holding the disk: the .raw, or a flat VMDK's extent) and
    still exits 0: a qemu-img or a target that lies about what it wrote."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "qemu-img")
    script = os.path.join(folder, "after_convert.py")
    with open(script, "w") as f:
        f.write("import os, sys\nout = sys.argv[1]\n"
                "data = out[:-5] + '-flat.vmdk' if out.endswith('.vmdk') else out\n" + action + "\n")
    with open(path, "w") as f:
        f.write('#!/bin/sh\n%s "$@" || exit $?\nif [ "$1" = convert ]; then\n'
                '  for last; do :; done\n  %s %s "$last"\nfi\n' % (QEMU_IMG, PYTHON, script))
    os.chmod(path, 0o755)
    return folder


def backup(lab, name, fmt, bin_dir=None, **keys):
    r = subprocess.run(lab.argv(name, "-d", "debug", DISK_BACKUP_FORMAT=fmt, **keys), capture_output=True, text=True,
                       timeout=120, env=env(bin_dir))
    return r.returncode, r.stdout + r.stderr


def restore(lab, backup_dir, fmt="raw", into="restored"):
    target = str(lab.root / into)
    os.makedirs(target, exist_ok=True)
    r = subprocess.run([PYTHON, "-m", "hotvcb", "restore", backup_dir, "--kvm", target, "--format", fmt],
                       capture_output=True, text=True, timeout=120, env=env())
    return r.returncode, r.stdout + r.stderr, target


DATA = {"raw": ".raw", "thin": "-flat.vmdk", "zeroedthick": "-flat.vmdk", "eagerzeroedthick": "-flat.vmdk"}



def files_of(backup_dir):
    return json.load(open(os.path.join(backup_dir, "hotvcb.json")))["files"]


def digest_of(path):
    from hotvcb.localshell import LocalShell
    from hotvcb.store import manifest

    return manifest.digest_file(LocalShell(), path).entry()


def flip(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([b ^ 0xFF]))


def no_leftovers(lab, vm, depth=0):
    """No overlay of ours beside the images, the VM running on its own chain (`depth`: the user's)."""
    assert lab.overlays() == [] and lab.leftovers() == []
    assert vm.chain_depth() == depth
    with vm.qmp() as qmp:
        assert qmp.execute("query-status")["status"] == "running"


# --- a copy that lies about what it wrote ------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["raw", "thin"])
@pytest.mark.parametrize("action", ["os.truncate(data, os.path.getsize(data) - (1 << 20))",
                                    "open(data, 'ab').write(b'\\0' * 512)"], ids=["short", "padded"])
def test_a_copy_of_another_size_than_the_disk_is_not_sealed_as_the_disk(lab, fmt, action):
    name = "short-" + fmt
    _initial, image = _image(lab, name, "raw", 8 * MiB, 8 * MiB)
    vm = lab.start(name, image, "raw")
    rc, out = backup(lab, name, fmt, wrapped_qemu_img(str(lab.root / "bin"), action))
    no_leftovers(lab, vm)
    good = lab.backups(name)
    if rc == 0 and good:  # sealed: then verify (and restore) must find it is not the disk
        data = os.path.join(good[0], name + DATA[fmt])
        assert os.path.getsize(data) != os.path.getsize(image)  # the wrapper did change the copy
        r = _verify(lab, good[0])
        assert r.returncode != 0, r.stdout + r.stderr
    else:
        assert good == [] and not glob.glob(os.path.join(lab.volume, name, "*-partial")), out


@pytest.mark.parametrize("fmt", ["raw", "thin"])
@pytest.mark.parametrize("damage", ["truncate", "extend", "zero-block"])
def test_a_copy_damaged_after_the_backup_fails_verify_and_restore(lab, fmt, damage):
    name = "later-%s-%s" % (fmt, damage)
    _initial, image = _image(lab, name, "raw", 4 * MiB, 4 * MiB)
    vm = lab.start(name, image, "raw")
    rc, out = backup(lab, name, fmt)
    assert rc == 0, out
    no_leftovers(lab, vm)
    (good,) = lab.backups(name)
    copy = os.path.join(good, name + DATA[fmt])
    if damage == "truncate":
        os.truncate(copy, 3 * MiB)
    elif damage == "extend":
        os.truncate(copy, 4 * MiB + 512)
    else:
        with open(copy, "r+b") as f:
            f.seek(2 * MiB)
            f.write(bytes(MiB))
    rc, out, target = restore(lab, good)
    assert rc == 6 and name + DATA[fmt] in out, out
    assert os.listdir(target) == []
    r = _verify(lab, good)
    assert r.returncode != 0 and name + DATA[fmt] in r.stdout + r.stderr, r.stdout + r.stderr


@pytest.mark.parametrize("fmt", ["raw", "thin"])
def test_a_copy_qemu_img_never_wrote_fails_that_vm_in_one_line(lab, fmt):
    vms = {}
    for name in ("a-nocopy", "b-next"):
        _initial, image = _image(lab, name, "raw", 4 * MiB, 3 * MiB)
        vms[name] = lab.start(name, image, "raw")
    r = subprocess.run(hotvcb_argv(lab.inventory, "backup", "-a", "-g", lab.conf(DISK_BACKUP_FORMAT=fmt),
                                   "-w", lab.workdir), capture_output=True, text=True, timeout=120,
                       env=env(wrapped_qemu_img(str(lab.root / "bin"), "os.remove(data) if 'a-nocopy' in data else 0")))
    out = r.stdout + r.stderr
    for vm in vms.values():
        no_leftovers(lab, vm)
    assert lab.backups("a-nocopy") == [] and not glob.glob(os.path.join(lab.volume, "a-nocopy", "*-partial")), out
    assert "internal error" not in out and "Traceback" not in out, out
    assert r.returncode != 0 and len(lab.backups("b-next")) == 1, out


@pytest.mark.parametrize("fmt", ["raw", "thin", "eagerzeroedthick"])
def test_a_byte_the_target_wrote_wrong_fails_verify_for_every_flat_format(lab, fmt):
    name = "flip-" + fmt
    _initial, image = _image(lab, name, "raw", 4 * MiB, 3 * MiB)
    vm = lab.start(name, image, "raw")
    rc, out = backup(lab, name, fmt, wrapped_qemu_img(
        str(lab.root / "bin"), "f = open(data, 'r+b'); f.seek(12345); b = f.read(1)[0]; f.seek(12345); "
        "f.write(bytes([b ^ 1]))"))
    assert rc == 0, out
    no_leftovers(lab, vm)
    (good,) = lab.backups(name)
    rc, out, target = restore(lab, good)  # restore's own check first: verify marks the backup damaged
    assert rc == 6 and "fails verification" in out, out
    assert os.listdir(target) == []
    r = _verify(lab, good)
    assert r.returncode != 0 and name + DATA[fmt] + ": SHA-256 mismatch" in r.stdout + r.stderr, r.stdout + r.stderr


# --- odd sizes, empty, sparse, symlinked and block-device sources ----------------------------------------

def odd_image(lab, name, size, data=None):
    image = os.path.join(lab.images, name + ".img")
    with open(image, "wb") as f:
        f.write(os.urandom(min(size, 3 * MiB + 77)) if data is None else data)
        f.truncate(size)
    keep = str(lab.root / (name + ".snapshot-instant.raw"))
    shutil.copyfile(image, keep)
    return image, keep


def restored_disk(lab, good, into="restored"):
    rc, out, target = restore(lab, good, into=into)
    assert rc == 0, out
    (disk,) = glob.glob(os.path.join(target, "*", "*.raw"))
    return disk


SECTOR_SIZES = [5 * MiB + 512, 5 * MiB + 64 * 1024 + 512, 5 * MiB + 4096, 5 * MiB + 1024 * 1024 - 512]


@pytest.mark.parametrize("fmt", ["raw", "thin", "eagerzeroedthick"])
def test_a_whole_sector_size_that_is_no_whole_block_is_proven_by_the_source(lab, fmt):
    """Sizes that are whole sectors but no whole 64 KiB cluster or 1 MiB digest block (+512, +64 KiB+512, +4 KiB,
    +1 MiB-512): the source's digest is the copy's entry (a flipped copy byte would be caught), and the copy
    reproduces the disk. One VM per size, all backed up by one run (each disk is copied and digested on its
    own: one run serves the four, where a run per size cost the file 9 runs more)."""
    vms = {}
    for size in SECTOR_SIZES:
        name = "odd-%s-%d" % (fmt, size)
        image, keep = odd_image(lab, name, size)
        vms[name] = (size, keep, lab.start(name, image, "raw"))
    r = subprocess.run(hotvcb_argv(lab.inventory, "backup", "-a", "-d", "debug", "-g", lab.conf(DISK_BACKUP_FORMAT=fmt),
                                   "-w", lab.workdir), capture_output=True, text=True, timeout=240, env=env())
    assert r.returncode == 0, r.stdout + r.stderr
    for name, (size, keep, vm) in vms.items():
        no_leftovers(lab, vm)
        (good,) = lab.backups(name)
        copy = os.path.join(good, name + DATA[fmt])
        assert os.path.getsize(copy) == size, name
        assert files_of(good)[name + DATA[fmt]] == digest_of(keep), name
        assert _verify(lab, good).returncode == 0, name
        disk = restored_disk(lab, good, into="restored-%d" % size)
        assert os.path.getsize(disk) == size and open(disk, "rb").read() == open(keep, "rb").read(), name


@pytest.mark.parametrize("fmt", ["raw", "thin"])
def test_a_raw_image_that_is_no_whole_sector_is_backed_up_and_restored_with_its_bytes(lab, fmt):
    """qemu-img rounds it up to 512: documented as digested from the copy; the data must survive."""
    name = "ragged-" + fmt
    size = 3 * MiB + 100
    image, keep = odd_image(lab, name, size)
    vm = lab.start(name, image, "raw")
    rc, out = backup(lab, name, fmt)
    assert rc == 0, out
    no_leftovers(lab, vm)
    (good,) = lab.backups(name)
    copy = os.path.join(good, name + DATA[fmt])
    assert os.path.getsize(copy) == size + 512 - 100
    assert files_of(good)[name + DATA[fmt]] == digest_of(copy)
    assert _verify(lab, good).returncode == 0
    flip(copy, size - 1)  # the last byte of the disk: verify of the copy's own digest still sees it
    assert _verify(lab, good).returncode != 0
    flip(copy, size - 1)
    assert _verify(lab, good).returncode == 0
    disk = restored_disk(lab, good)
    assert open(disk, "rb").read()[:size] == open(keep, "rb").read()


@pytest.mark.parametrize("fmt", ["raw", "thin"])
def test_an_empty_raw_image(lab, fmt):
    name = "empty-" + fmt
    image, _keep = odd_image(lab, name, 0, b"")
    vm = lab.start(name, image, "raw")
    rc, out = backup(lab, name, fmt)
    assert "Traceback" not in out and "internal error" not in out, out
    no_leftovers(lab, vm)
    if fmt == "thin":  # qemu-img itself cannot write an empty flat VMDK (an assertion in vmdk.c): a clean failure
        assert rc == 6 and "copy of %s failed" % image in out, out
        assert lab.backups(name) == [] and not glob.glob(os.path.join(lab.volume, name, "*-partial"))
        return
    assert rc == 0, out
    (good,) = lab.backups(name)
    assert files_of(good)[name + DATA[fmt]]["size"] == 0
    assert _verify(lab, good).returncode == 0


def test_an_empty_qcow2_image_copied_raw(lab):
    name = "empty-qcow2"
    image = os.path.join(lab.images, name + ".qcow2")
    assert qemu_img("create", "-q", "-f", "qcow2", image, "0").returncode == 0
    vm = lab.start(name, image, "qcow2")
    rc, out = backup(lab, name, "raw")
    assert rc == 0 and "Traceback" not in out, out
    no_leftovers(lab, vm)
    (good,) = lab.backups(name)
    assert os.path.getsize(os.path.join(good, name + ".raw")) == 0
    assert files_of(good)[name + ".raw"]["size"] == 0
    assert _verify(lab, good).returncode == 0


@pytest.mark.parametrize("fmt", ["raw", "thin"])
def test_a_huge_sparse_raw_image_is_digested_by_its_data_not_its_size(lab, fmt):
    """256 GiB virtual, 3 MiB of data: the source digest skips the holes (a full read would take minutes)."""
    name = "sparse-" + fmt
    size = 256 << 30
    image, _keep = odd_image(lab, name, 3 * MiB)
    with open(image, "r+b") as f:
        f.seek(size - 4096)
        f.write(b"\xA5" * 4096)
        f.truncate(size)
    keep = open(image, "rb").read(3 * MiB)
    vm = lab.start(name, image, "raw")
    rc, out = backup(lab, name, fmt)
    assert rc == 0, out
    no_leftovers(lab, vm)
    (good,) = lab.backups(name)
    copy = os.path.join(good, name + DATA[fmt])
    assert os.path.getsize(copy) == size and os.stat(copy).st_blocks * 512 < 64 * MiB
    entry = files_of(good)[name + DATA[fmt]]
    assert entry["size"] == size
    assert _verify(lab, good).returncode == 0
    with open(copy, "rb") as f:
        assert f.read(3 * MiB) == keep
        f.seek(size - 4096)
        assert f.read() == b"\xA5" * 4096
    flip(copy, size - 1)
    assert _verify(lab, good).returncode != 0


def test_a_raw_image_reached_through_a_symlink_with_an_odd_name(lab):
    name = "wé'b \"1\" Ü; x"
    image, keep = odd_image(lab, "real", 4 * MiB)
    link = os.path.join(lab.images, "dïsk 'l' k.img")
    os.symlink(image, link)
    vm = lab.start(name, link, "raw")
    rc, out = backup(lab, name, "thin")
    assert rc == 0, out
    no_leftovers(lab, vm)
    (good,) = lab.backups(name)
    assert files_of(good)["dïsk 'l' k-flat.vmdk"] == digest_of(keep)
    assert os.path.islink(link) and os.path.realpath(link) == image
    r = _verify(lab, good)
    assert r.returncode == 0 and "intact" in r.stdout + r.stderr, r.stdout + r.stderr
    disk = restored_disk(lab, good)
    assert open(disk, "rb").read() == open(keep, "rb").read()


def test_an_image_name_with_a_double_quote_copied_as_a_flat_vmdk(lab):
    name = "quoted"
    image, keep = odd_image(lab, 'web "prod"', 2 * MiB)
    vm = lab.start(name, image, "raw")
    rc, out = backup(lab, name, "thin")
    no_leftovers(lab, vm)
    assert rc == 0, out
    (good,) = lab.backups(name)
    assert _verify(lab, good).returncode == 0
    assert open(restored_disk(lab, good), "rb").read() == open(keep, "rb").read()


@pytest.fixture
def loop_device(tmp_path, loop_devices):
    backing = str(tmp_path / "lv.bin")
    with open(backing, "wb") as f:
        f.write(os.urandom(2 * MiB))
        f.truncate(6 * MiB + 512)
    return loop_devices(backing), backing


def test_a_block_device_source_is_backed_up_and_restored(lab, loop_device):
    dev, backing = loop_device
    name = "lvm-disk"
    link = os.path.join(lab.images, "vg-root")  # as /dev/vg/root: a symlink to the device
    os.symlink(dev, link)
    vm = lab.start(name, link, "raw")
    rc, out = backup(lab, name, "thin")
    assert rc == 0, out
    no_leftovers(lab, vm)
    (good,) = lab.backups(name)
    assert _verify(lab, good).returncode == 0
    assert open(restored_disk(lab, good), "rb").read() == open(backing, "rb").read()


def test_a_block_device_source_too_big_for_the_target_is_refused_before_the_snapshot(lab, loop_device, tmpfs):
    dev, _backing = loop_device
    name = "lv-too-big"
    link = os.path.join(lab.images, "vg-root")
    os.symlink(dev, link)
    vm = lab.start(name, link, "raw")
    rc, out = backup(lab, name, "raw", VM_BACKUP_VOLUME=str(tmpfs("vol", "2M")))
    no_leftovers(lab, vm)
    assert rc == 6, out
    assert "needs 6.0 MiB" in out and "Creating Snapshot" not in out, out


def test_a_block_device_source_is_proven_by_its_own_digest(lab, loop_device):
    dev, backing = loop_device
    name = "lvm-disk"
    link = os.path.join(lab.images, "vg-root")
    os.symlink(dev, link)
    vm = lab.start(name, link, "raw")
    rc, out = backup(lab, name, "raw", wrapped_qemu_img(
        str(lab.root / "bin"), "f = open(data, 'r+b'); f.seek(777); b = f.read(1)[0]; f.seek(777); "
        "f.write(bytes([b ^ 1]))"))
    assert rc == 0, out
    no_leftovers(lab, vm)
    (good,) = lab.backups(name)
    assert _verify(lab, good).returncode != 0, "a byte qemu-img wrote wrong was sealed as the disk"


# --- killed, full, two at once --------------------------------------------------------------------------

def only_one_good_backup_of_the_disk_now(lab, name, vm, image_fmt, fmt="raw"):
    """The next run after a failure or a kill: one good backup, which is what the guest's disk holds now."""
    rc, out = backup(lab, name, fmt)
    assert rc == 0, out
    no_leftovers(lab, vm)
    assert not glob.glob(os.path.join(glob.escape(os.path.join(lab.volume, name)), "*-partial"))
    (good,) = lab.backups(name)
    r = _verify(lab, good)
    assert r.returncode == 0 and "intact" in r.stdout + r.stderr, r.stdout + r.stderr
    vm.quit()
    assert same_content(os.path.join(good, name + DATA[fmt]), vm.image)
    return good


@pytest.mark.parametrize("fmt", ["raw", "eagerzeroedthick"])
def test_sigkill_mid_copy_leaves_the_vm_running_and_the_next_backup_good(lab, fmt):
    from test_qemu_backup import _start_backup
    from qemuvm import kill_tree

    name = "killed " + fmt
    _initial, image = _image(lab, name, "qcow2", 24 * MiB, 16 * MiB)
    vm = lab.start(name, image, "qcow2")
    proc = _start_backup(lab, name, str(lab.root / "killed.log"), DISK_BACKUP_FORMAT=fmt)
    kill_tree(proc.pid)  # hotvcb, its qemu-img: the digest thread dies with hotvcb
    proc.wait(10)
    assert lab.backups(name) == []  # nothing that looks complete
    with vm.qmp() as qmp:
        assert qmp.execute("query-status")["status"] == "running"
        vm.write(qmp, 0x6E, 5 * MiB, 64 * 1024)  # into the killed run's overlay
    only_one_good_backup_of_the_disk_now(lab, name, vm, "qcow2", fmt)


@pytest.mark.parametrize("point", ["disk-copied-1", "hashed", "manifest-written"])
def test_sigkill_between_the_copy_and_the_seal(lab, point):
    name = "crash-" + point
    _initial, image = _image(lab, name, "raw", 6 * MiB, 4 * MiB)
    vm = lab.start(name, image, "raw")
    e = env()
    e["HOTVCB_CRASH_AT"] = point
    r = subprocess.run(lab.argv(name, DISK_BACKUP_FORMAT="raw"), capture_output=True, text=True, timeout=120, env=e)
    assert r.returncode == -9, r.stdout + r.stderr
    assert lab.backups(name) == []
    only_one_good_backup_of_the_disk_now(lab, name, vm, "raw")


def test_a_target_that_fills_up_mid_copy_leaves_nothing_that_looks_complete(lab, tmpfs):
    name = "full"
    _initial, image = _image(lab, name, "raw", 12 * MiB, 12 * MiB)
    vm = lab.start(name, image, "raw")
    volume = str(tmpfs("vol", "16M"))
    filler = os.path.join(volume, "filler")
    bin_dir = str(lab.root / "bin")
    os.makedirs(bin_dir)
    with open(os.path.join(bin_dir, "qemu-img"), "w") as f:  # the disk fills up after the pre-flight
        f.write('#!/bin/sh\nif [ "$1" = convert ]; then head -c 9M /dev/zero > "%s"; fi\nexec %s "$@"\n'
                % (filler, QEMU_IMG))
    os.chmod(os.path.join(bin_dir, "qemu-img"), 0o755)
    rc, out = backup(lab, name, "raw", bin_dir, VM_BACKUP_VOLUME=volume)
    assert rc == 6 and "Traceback" not in out, out
    assert "No space left on device" in out, out
    no_leftovers(lab, vm)
    assert glob.glob(os.path.join(volume, name, "*", "STATUS.ok")) == []
    assert not glob.glob(os.path.join(volume, name, "*-partial"))
    for done in glob.glob(os.path.join(volume, name, "*")):  # a failed record holds no disk data
        assert not [f for f in os.listdir(done) if f.endswith((".raw", ".vmdk"))], os.listdir(done)
    os.remove(filler)
    rc, out = backup(lab, name, "raw", VM_BACKUP_VOLUME=volume)
    assert rc == 0, out
    (good,) = glob.glob(os.path.join(volume, name, "*", "STATUS.ok"))
    r = _verify(lab, os.path.dirname(good))
    assert r.returncode == 0, r.stdout + r.stderr


def test_two_backups_of_one_vm_at_once(lab):
    from test_qemu_backup import _finished, _start_backup

    name = "twice"
    _initial, image = _image(lab, name, "raw", 24 * MiB, 16 * MiB)
    vm = lab.start(name, image, "raw")
    log = str(lab.root / "first.log")
    first = _start_backup(lab, name, log, DISK_BACKUP_FORMAT="raw")
    rc, out = backup(lab, name, "thin")
    assert rc != 0, out  # the second run is turned away; it touches nothing of the first
    assert "another hotvcb run holds" in out, out
    frc, text = _finished(first, log)
    assert frc == 0, text + "\n---- second:\n" + out
    no_leftovers(lab, vm)
    (good,) = lab.backups(name)
    r = _verify(lab, good)
    assert r.returncode == 0 and "intact" in r.stdout + r.stderr, r.stdout + r.stderr
    vm.quit()
    assert same_content(os.path.join(good, name + ".raw"), image)


# --- sources the reader refuses, a guest writing hard, backups made before the change ---------------------

def test_a_qcow2_on_a_backing_file_copied_flat_is_the_flattened_disk(lab):
    """qcow2.py refuses a backing file: the copy is digested by the seal (documented), and it holds the
    whole chain read through."""
    name = "chain"
    initial, base = _image(lab, name, "qcow2", 8 * MiB, 4 * MiB)
    top = os.path.join(lab.images, name + "-top.qcow2")
    assert qemu_img("create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", base, top).returncode == 0
    vm = lab.start(name, top, "qcow2")
    with vm.qmp() as qmp:
        vm.write(qmp, 0x42, 6 * MiB, 128 * 1024)  # lands in the top layer
    rc, out = backup(lab, name, "eagerzeroedthick")
    assert rc == 0, out
    no_leftovers(lab, vm, 1)
    (good,) = lab.backups(name)
    copy = os.path.join(good, name + "-top-flat.vmdk")
    assert files_of(good)[name + "-top-flat.vmdk"] == digest_of(copy)
    expected = str(lab.root / "expected.raw")
    shutil.copyfile(initial, expected)
    with open(expected, "r+b") as f:
        f.seek(6 * MiB)
        f.write(b"\x42" * 128 * 1024)
    assert open(copy, "rb").read() == open(expected, "rb").read()
    assert _verify(lab, good).returncode == 0


@pytest.mark.parametrize("source, fmt", [("raw", "eagerzeroedthick"), ("qcow2", "raw")])
def test_a_guest_writing_hard_during_the_backup(lab, source, fmt):
    from qemuvm import GuestWriter, apply, slow_qemu_img

    name = "busy-" + source
    size = 16 * MiB
    initial, image = _image(lab, name, source, size, 8 * MiB)
    vm = lab.start(name, image, source, shared=True)
    writer = GuestWriter(vm, size, length=64 * 1024, pause=0)  # 64 KiB writes, back to back
    writer.start()
    writer.wait_for(5)
    rc, out = backup(lab, name, fmt, slow_qemu_img(str(lab.root / "bin"), "8M"))
    try:
        writer.wait_for(len(writer.writes) + 3)
    except AssertionError as err:
        raise AssertionError("%s\nbackup rc %s:\n%s" % (err, rc, out)) from err
    writes = writer.stop()
    assert rc == 0, out
    no_leftovers(lab, vm)
    (good,) = lab.backups(name)
    before = [w for w in writes if w.when == "before"]
    assert len(before) >= 5 and len(before) < len(writes), [w.when for w in writes]  # writes raced the copy
    expected = str(lab.root / "expected.raw")
    shutil.copyfile(initial, expected)
    apply(expected, before)
    entry = files_of(good)[name + DATA[fmt]]
    if entry != digest_of(expected):
        unsure = [w for w in writes if w.when == "unsure"]
        assert unsure, "the manifest is not the disk at the snapshot instant"
        apply(expected, unsure)
        assert entry == digest_of(expected)
    assert open(restored_disk(lab, good), "rb").read() == open(expected, "rb").read()
    vm.quit()
    final = str(lab.root / "final.raw")
    shutil.copyfile(initial, final)
    apply(final, writes)
    assert same_content(final, image), "a write made during the backup was lost"


OLD = "4cb28e6"  # main before the raw source digest was merged: the seal read every copy back


@pytest.fixture
def old_hotvcb(tmp_path):
    from qemuvm import REPO

    where = tmp_path / "old-hotvcb"
    where.mkdir()
    archive = subprocess.run(["git", "-C", REPO, "archive", OLD, "hotvcb"], capture_output=True, timeout=60)
    if archive.returncode != 0:
        pytest.skip("no git history here: " + archive.stderr.decode(errors="replace"))
    subprocess.run(["tar", "-x", "-C", str(where)], input=archive.stdout, check=True)
    return str(where)


@pytest.mark.parametrize("fmt", ["raw", "thin"])
def test_a_backup_made_before_the_change_verifies_and_restores(lab, old_hotvcb, fmt):
    name = "old " + fmt
    _initial, image = _image(lab, name, "raw", 6 * MiB, 5 * MiB)
    vm = lab.start(name, image, "raw")
    e = dict(env(), PYTHONPATH=old_hotvcb)
    r = subprocess.run(lab.argv(name, DISK_BACKUP_FORMAT=fmt), capture_output=True, text=True, timeout=120, env=e)
    assert r.returncode == 0, r.stdout + r.stderr
    no_leftovers(lab, vm)
    (good,) = lab.backups(name)
    r = _verify(lab, good)
    assert r.returncode == 0 and "intact" in r.stdout + r.stderr, r.stdout + r.stderr
    assert open(restored_disk(lab, good), "rb").read() == open(image, "rb").read()
    copy = os.path.join(good, name + DATA[fmt])
    flip(copy, 4 * MiB + 3)
    r = _verify(lab, good)
    assert r.returncode != 0 and "SHA-256 mismatch" in r.stdout + r.stderr, r.stdout + r.stderr



def test_two_disks_whose_flat_vmdk_names_meet(lab):
    from qemuvm import QemuVm

    name = "two disks"
    first, second = os.path.join(lab.images, "d1", "x-flat.img"), os.path.join(lab.images, "d2", "x.img")
    for path, fill, size in ((first, 0x11, 2 * MiB), (second, 0x22, 3 * MiB)):
        os.makedirs(os.path.dirname(path))
        with open(path, "wb") as f:
            f.write(bytes([fill]) * size)
    vm = QemuVm(name, first, "raw", lab.inventory, lab.control, str(lab.root / "two.qemu.log"),
                extra=["-drive", "file=%s,format=raw,if=virtio,id=drive1" % second])
    lab.vms.append(vm)
    rc, out = backup(lab, name, "thin")
    no_leftovers(lab, vm)
    if rc != 0:  # refusing is fine; sealing a backup that lost a disk is not
        assert lab.backups(name) == [], out
        return
    (good,) = lab.backups(name)
    disks = json.load(open(os.path.join(good, "hotvcb.json")))["disks"]
    assert len(disks) == 2
    for disk, source in zip(disks, (first, second)):
        descriptor = os.path.join(good, disk["files"][0])
        r = qemu_img("compare", "-F", "raw", descriptor, source)
        assert r.returncode == 0, (disk, r.stdout + r.stderr)


@pytest.mark.parametrize("cluster", ["512", "64k", "2M"])
@pytest.mark.parametrize("fmt", ["raw", "zeroedthick"])
def test_a_qcow2_source_of_any_cluster_size_and_an_odd_size_is_proven_by_its_content(lab, fmt, cluster):
    name = "q%s-%s" % (cluster, fmt)
    size = 5 * MiB + 512  # no whole 64 KiB / 2 MiB cluster: the last one is partial
    raw, _keep = odd_image(lab, name + "-src", size)
    with open(raw, "r+b") as f:  # data in the last sector too
        f.seek(size - 512)
        f.write(os.urandom(512))
    image = os.path.join(lab.images, name + ".qcow2")
    r = qemu_img("convert", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=" + cluster, raw, image)
    assert r.returncode == 0, r.stderr
    vm = lab.start(name, image, "qcow2")
    rc, out = backup(lab, name, fmt, wrapped_qemu_img(
        str(lab.root / "bin"), "f = open(data, 'r+b'); f.seek(%d); b = f.read(1)[0]; f.seek(%d); "
        "f.write(bytes([b ^ 1]))" % (size - 3, size - 3)))
    assert rc == 0, out
    no_leftovers(lab, vm)
    (good,) = lab.backups(name)
    assert files_of(good)[name + DATA[fmt]] == digest_of(raw)  # the disk, not the copy qemu-img wrote wrong
    r = _verify(lab, good)
    assert r.returncode != 0 and "SHA-256 mismatch (bytes 5242880-5243391)" in r.stdout + r.stderr, (
        r.stdout + r.stderr)


def test_sigterm_during_a_raw_copy_commits_the_overlay_and_leaves_no_backup(lab):
    import signal

    from test_qemu_backup import _finished, _only_a_failed_record, _start_backup, _written

    name = "term"
    initial, image = _image(lab, name, "raw", 32 * MiB, 24 * MiB)
    vm = lab.start(name, image, "raw")
    log = str(lab.root / "run.log")
    proc = _start_backup(lab, name, log, DISK_BACKUP_FORMAT="raw")
    with vm.qmp() as qmp:
        vm.write(qmp, 0xAB, 3 * MiB, 64 * 1024)
    proc.send_signal(signal.SIGTERM)
    rc, text = _finished(proc, log)
    assert rc == 2 and "interrupted by SIGTERM" in text, text
    no_leftovers(lab, vm)
    _only_a_failed_record(lab, name)
    vm.quit()
    assert same_content(_written(lab, initial, 3 * MiB, 0xAB, 64 * 1024), image)


def kill_hotvcb_alone_mid_copy(lab, name):
    """`kill -9 <hotvcb's pid>` as an admin types it: qemu-img runs in a session of its own and goes on.
    The orphaned qemu-img's pid."""
    import signal

    from qemuvm import children
    from test_qemu_backup import _start_backup

    proc = _start_backup(lab, name, str(lab.root / "killed.log"), DISK_BACKUP_FORMAT="raw")
    (orphan,) = children(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    assert lab.backups(name) == []
    return orphan


def test_after_kill_9_of_hotvcb_alone_the_next_run_works_once_its_qemu_img_ended(lab):
    from qemuvm import wait_until

    name = "orphaned"
    _initial, image = _image(lab, name, "raw", 24 * MiB, 20 * MiB)
    vm = lab.start(name, image, "raw")
    orphan = kill_hotvcb_alone_mid_copy(lab, name)
    with vm.qmp() as qmp:
        vm.write(qmp, 0x71, 7 * MiB, 64 * 1024)
    wait_until(lambda: not os.path.exists("/proc/%d" % orphan) or open("/proc/%d/stat" % orphan).read().split()[2]
               == "Z", 60, "the orphaned qemu-img to end")
    only_one_good_backup_of_the_disk_now(lab, name, vm, "raw")


def test_after_kill_9_of_hotvcb_alone_the_next_run_works_at_once(lab):
    name = "orphaned-now"
    _initial, image = _image(lab, name, "raw", 32 * MiB, 28 * MiB)
    vm = lab.start(name, image, "raw")
    orphan = kill_hotvcb_alone_mid_copy(lab, name)
    try:
        only_one_good_backup_of_the_disk_now(lab, name, vm, "raw")
    finally:
        try:
            os.kill(orphan, 9)
        except OSError:
            pass


@pytest.mark.parametrize("options", ["compat=0.10", "lazy_refcounts=on", "refcount_bits=1", "refcount_bits=64",
                                     "internal-snapshot", "zeroed-and-discarded"])
def test_qcow2_sources_of_every_kind_the_reader_takes_are_proven_by_their_content(lab, options):
    """A guest's write-zeroes and discards, an internal snapshot, a dirty (lazy refcounts) or version-2
    header: the raw copy's entry is the disk the VM sees, so a byte qemu-img wrote wrong fails verify."""
    name = "kind-" + options.replace("=", "-")
    size = 8 * MiB
    raw, _keep = odd_image(lab, name + "-src", size)
    image = os.path.join(lab.images, name + ".qcow2")
    opts = ["-o", options] if "=" in options else []
    assert qemu_img("convert", "-f", "raw", "-O", "qcow2", *opts, raw, image).returncode == 0
    if options == "internal-snapshot":
        assert qemu_img("snapshot", "-c", "old", image).returncode == 0
    vm = lab.start(name, image, "qcow2")
    with vm.qmp() as qmp:
        vm.write(qmp, 0x33, 1 * MiB, 64 * 1024)
        if options == "zeroed-and-discarded":
            for cmd in ("write -z 0 65536", "write -z -u %d 131072" % (2 * MiB), "discard %d 65536" % (3 * MiB)):
                out = qmp.execute("human-monitor-command", {"command-line": 'qemu-io drive0 "%s"' % cmd})
                assert "rror" not in out, out
    rc, out = backup(lab, name, "raw", wrapped_qemu_img(
        str(lab.root / "bin"), "f = open(data, 'r+b'); f.seek(4097); b = f.read(1)[0]; f.seek(4097); "
        "f.write(bytes([b ^ 1]))"), ALLOW_VMS_WITH_SNAPSHOTS_TO_BE_BACKEDUP=1)  # the internal snapshot's
    assert rc == 0, out
    no_leftovers(lab, vm)
    (good,) = lab.backups(name)
    vm.quit()
    seen = str(lab.root / "seen.raw")  # what the guest's disk holds (nothing wrote since the backup)
    assert qemu_img("convert", "-f", "qcow2", "-O", "raw", image, seen).returncode == 0
    assert files_of(good)[name + ".raw"] == digest_of(seen), out
    r = _verify(lab, good)
    assert r.returncode != 0 and "SHA-256 mismatch (bytes 0-1048575)" in r.stdout + r.stderr, r.stdout + r.stderr


@pytest.mark.parametrize("fmt", ["raw", "thin"])
def test_a_compressed_backup_keeps_the_source_digest(lab, fmt):
    """ENABLE_COMPRESSION=1 reads the copy whole to pack it: that read must not replace the source's
    digest with one of what the target wrote."""
    name = "packed-" + fmt
    _initial, image = _image(lab, name, "raw", 4 * MiB, 3 * MiB)
    vm = lab.start(name, image, "raw")
    rc, out = backup(lab, name, fmt, wrapped_qemu_img(
        str(lab.root / "bin"), "f = open(data, 'r+b'); f.seek(99); b = f.read(1)[0]; f.seek(99); "
        "f.write(bytes([b ^ 1]))"), ENABLE_COMPRESSION=1)
    assert rc == 0, out
    no_leftovers(lab, vm)
    (archive,) = glob.glob(os.path.join(glob.escape(os.path.join(lab.volume, name)), "*.gz"))
    r = _verify(lab, archive)
    assert r.returncode != 0 and name + DATA[fmt] in r.stdout + r.stderr, r.stdout + r.stderr


def test_a_backup_under_way_on_a_slow_target_does_not_look_complete(lab):
    from test_qemu_backup import _finished, _start_backup

    name = "slow"
    _initial, image = _image(lab, name, "raw", 24 * MiB, 20 * MiB)
    vm = lab.start(name, image, "raw")
    log = str(lab.root / "slow.log")
    proc = _start_backup(lab, name, log, DISK_BACKUP_FORMAT="thin")
    (partial,) = glob.glob(os.path.join(glob.escape(os.path.join(lab.volume, name)), "*-partial"))
    assert lab.backups(name) == [] and not os.path.exists(os.path.join(partial, "hotvcb.json"))
    r = _verify(lab, partial)
    assert r.returncode != 0, r.stdout + r.stderr
    rc, text = _finished(proc, log)
    assert rc == 0, text
    no_leftovers(lab, vm)
    (good,) = lab.backups(name)
    assert _verify(lab, good).returncode == 0
