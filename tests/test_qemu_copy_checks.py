"""What a QEMU copy must be before its source's digest is sealed as its own (store/source_digest.py,
hosts/qemuimg.py), beyond the outside tester's attacks (tests/test_outsider_rawdigest.py).

Through the CLI against real QEMU VMs: the one size difference let through (a raw source of no whole
sector, rounded up) is exactly that rounding and no other; copy names that would meet are kept apart
in either order and for the sparse VMDK's extents too; a `"` in an image's name is kept out of every
VMDK qemu-img writes; a qcow2 on a block device is proven by the disk it holds and counted whole by
the free-space check.
"""

import glob
import json
import os

import pytest

from qemuvm import QemuVm, needs_qemu, qemu_img
from qemuvm import loop_devices  # noqa: F401  (the fixture)
from test_outsider_rawdigest import backup, digest_of, files_of, no_leftovers, odd_image, restored_disk, wrapped_qemu_img
from test_qemu_backup import _verify, lab  # noqa: F401  (the fixture)

pytestmark = needs_qemu
MiB = 1 << 20


@pytest.mark.parametrize("fmt", ["raw", "thin"])
def test_a_ragged_source_whose_copy_is_more_than_rounded_up_fails(lab, fmt):
    """3 MiB + 100 bytes: qemu-img's copy is 3 MiB + 512; one 512 bytes longer still is no copy of it."""
    name = "ragged-long-" + fmt
    image, _keep = odd_image(lab, name, 3 * MiB + 100)
    vm = lab.start(name, image, "raw")
    rc, out = backup(lab, name, fmt, wrapped_qemu_img(str(lab.root / "bin"), "open(data, 'ab').write(bytes(512))"))
    no_leftovers(lab, vm)
    assert rc == 6 and "the copy holds a disk of %d bytes, the source %d" % (3 * MiB + 1024, 3 * MiB + 100) in out, out
    assert lab.backups(name) == [] and not glob.glob(os.path.join(glob.escape(os.path.join(lab.volume, name)),
                                                                  "*-partial")), out
    for done in glob.glob(os.path.join(glob.escape(os.path.join(lab.volume, name)), "*")):
        assert not [f for f in os.listdir(done) if f.endswith((".raw", ".vmdk"))], os.listdir(done)


def two_disk_vm(lab, name, first, second):
    """A VM with two raw disks at these paths (under lab.images), 2 and 3 MiB of 0x11 and 0x22."""
    paths = []
    for rel, fill, size in ((first, 0x11, 2 * MiB), (second, 0x22, 3 * MiB)):
        path = os.path.join(lab.images, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(bytes([fill]) * size)
        paths.append(path)
    vm = QemuVm(name, paths[0], "raw", lab.inventory, lab.control, str(lab.root / (name + ".qemu.log")),
                extra=["-drive", "file=%s,format=raw,if=virtio,id=drive1" % paths[1]])
    lab.vms.append(vm)
    return vm, paths


@pytest.mark.parametrize("first, second, fmt", [
    ("d1/x.img", "d2/x-flat.img", "thin"),  # the outside tester's order reversed
    ("d1/x.img", "d2/x-s001.img", "2gbsparse"),  # a sparse VMDK's first extent
    ("d1/x.img", "d2/X.raw", "raw"),  # a share may fold case
])
def test_copy_names_that_would_meet_are_kept_apart(lab, first, second, fmt):
    name = "meet-" + fmt
    vm, sources = two_disk_vm(lab, name, first, second)
    rc, out = backup(lab, name, fmt)
    assert rc == 0, out
    no_leftovers(lab, vm)
    (good,) = lab.backups(name)
    disks = json.load(open(os.path.join(good, "hotvcb.json")))["disks"]
    written = [f for d in disks for f in d["files"]]
    assert len({f.lower() for f in written}) == len(written), written
    for disk, source in zip(disks, sources):
        r = qemu_img("compare", "-F", "raw", os.path.join(good, disk["files"][0]), source)
        assert r.returncode == 0, (disk, r.stdout + r.stderr)
    assert _verify(lab, good).returncode == 0


@pytest.mark.parametrize("fmt", ["2gbsparse", "raw"])
def test_a_double_quote_in_an_image_name_for_every_format(lab, fmt):
    """VMDK copies are named without it (qemu's descriptor cannot hold it); a raw copy keeps the name."""
    name = "quoted-" + fmt
    image, keep = odd_image(lab, 'db "main"', 2 * MiB)
    vm = lab.start(name, image, "raw")
    rc, out = backup(lab, name, fmt)
    assert rc == 0, out
    no_leftovers(lab, vm)
    (good,) = lab.backups(name)
    names = [f for f in os.listdir(good) if f.startswith("db ")]
    assert names and all(('"' in f) == (fmt == "raw") for f in names), names
    assert _verify(lab, good).returncode == 0
    assert open(restored_disk(lab, good), "rb").read() == open(keep, "rb").read()


@pytest.fixture
def qcow2_on_a_loop_device(lab, loop_devices):
    """A qcow2 image (6 MiB virtual, 2 MiB of data) written onto a loop device, as on an LV."""
    raw, keep = odd_image(lab, "lv-src", 6 * MiB, os.urandom(2 * MiB))
    image = str(lab.root / "lv.qcow2")
    assert qemu_img("convert", "-f", "raw", "-O", "qcow2", raw, image).returncode == 0
    link = os.path.join(lab.images, "vg-qcow")  # as /dev/vg/qcow: a symlink to the device
    os.symlink(loop_devices(image), link)
    return link, keep


def test_a_qcow2_on_a_block_device_is_proven_by_the_disk_it_holds(lab, qcow2_on_a_loop_device):
    link, keep = qcow2_on_a_loop_device
    name = "lv-qcow2"
    vm = lab.start(name, link, "qcow2")
    rc, out = backup(lab, name, "raw", wrapped_qemu_img(
        str(lab.root / "bin"), "f = open(data, 'r+b'); f.seek(4097); b = f.read(1)[0]; f.seek(4097); "
        "f.write(bytes([b ^ 1]))"))
    assert rc == 0, out
    no_leftovers(lab, vm)
    (good,) = lab.backups(name)
    assert files_of(good)["vg-qcow.raw"] == digest_of(keep)  # the disk, not the copy qemu-img wrote wrong
    r = _verify(lab, good)
    assert r.returncode != 0 and "SHA-256 mismatch (bytes 0-1048575)" in r.stdout + r.stderr, r.stdout + r.stderr


def test_a_qcow2_on_a_block_device_counts_whole_in_the_free_space_check(lab, qcow2_on_a_loop_device, tmpfs):
    link, _keep = qcow2_on_a_loop_device
    name = "lv-qcow2-big"
    vm = lab.start(name, link, "qcow2")
    rc, out = backup(lab, name, "thin", VM_BACKUP_VOLUME=str(tmpfs("vol", "2M")))
    no_leftovers(lab, vm)
    assert rc == 6 and "needs 6.0 MiB" in out and "Creating Snapshot" not in out, out
