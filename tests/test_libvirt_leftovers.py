"""Defects left from the last stop, on a real libvirtd: two domains whose names sanitise alike
(`twin a`, `twin_a`) keep apart what hotvcb holds for each on the host; an incremental is never
built on a base written after its seal."""

import glob
import json
import os
import time
import subprocess

import pytest

import kvmguest
from kvmguest import libvirt_exclusive  # noqa: F401  (the fixture)
from kvmguest import needs_libvirt, scratch_left, slow_convert, virsh
from qemuvm import PYTHON, env, qemu_img
from simhost import next_second

pytestmark = needs_libvirt
TWINS = ("twin a", "twin_a")


@pytest.fixture(scope="module")
def lab(libvirt_exclusive):  # noqa: F811
    """Both twins running (the firmware idles: no guest needed), and a config backing them up."""
    root = kvmguest.scratch("hvn")
    try:
        for name in TWINS:
            image = os.path.join(root, name + ".qcow2")
            assert qemu_img("create", "-q", "-f", "qcow2", image, "8M").returncode == 0
            xml = os.path.join(root, name + ".xml")
            with open(xml, "w") as f:
                f.write(kvmguest.domain_xml(name, image, "qcow2", os.path.join(root, name + ".log"), agent=False))
            kvmguest.define(xml, name)
            virsh("start", name)
        os.makedirs(os.path.join(root, "backups"))
        yield root, kvmguest.write_conf(root, os.path.join(root, "backups"))
    finally:
        for name in TWINS:
            kvmguest.undefine(name)
        kvmguest.remove_scratch(root)


def hotvcb(root, *args, bin_dir=None):
    argv = [PYTHON, "-m", "hotvcb", "--libvirt", kvmguest.URI] + list(args) + ["-w", os.path.join(root, "work")]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env(bin_dir))


def test_twins_backed_up_at_once_keep_their_scratch_apart(lab, tmp_path):
    """Both backups at once (--parallel 2), each copy starting seconds after its job began (a slow
    qemu-img): when the twins shared one scratch folder, one job's start cleared the other's folder
    as a dead run's, or both jobs began in the same second and claimed the same scratch file."""
    root, conf = lab
    r = hotvcb(root, "backup", "--parallel", "2", "-m", TWINS[0], "-m", TWINS[1], "-g", conf,
               bin_dir=slow_convert(str(tmp_path / "bin"), 5))
    assert r.returncode == 0, r.stdout + r.stderr
    for name in TWINS:
        assert len(glob.glob(os.path.join(glob.escape(root), "backups", glob.escape(name), "*", "STATUS.ok"))) == 1
        assert not scratch_left(name)


def _newest(root, name):
    return sorted(glob.glob(os.path.join(glob.escape(root), "backups", glob.escape(name), "*", "STATUS.ok")))[-1]


def test_a_base_written_after_its_seal_is_not_built_on(lab):
    """A base changed in place, its size kept (here 4 KiB overwritten in the qcow2 an hour after its
    backup), would hand every incremental on it data that only `verify` reads: the backup is full
    instead, and says why."""
    root, conf = lab
    r = hotvcb(root, "backup", "-m", TWINS[0], "-g", conf)
    assert r.returncode == 0, r.stdout + r.stderr
    base = os.path.dirname(_newest(root, TWINS[0]))
    an_hour_ago = time.time() - 3600
    for entry in os.listdir(base):  # the backup as made an hour ago
        os.utime(os.path.join(base, entry), (an_hour_ago, an_hour_ago))
    disk = os.path.join(base, "vda.qcow2")
    size = os.path.getsize(disk)
    with open(disk, "r+b") as f:
        f.seek(size // 2)
        f.write(b"\xa5" * 4096)
    assert os.path.getsize(disk) == size
    next_second()  # runs (and their checkpoints) are named by the second they start: not the first one's

    r = hotvcb(root, "backup", "-m", TWINS[0], "-g", conf)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "%s was written after its backup was sealed; a full backup instead" % disk in r.stdout, r.stdout
    newest = os.path.join(os.path.dirname(_newest(root, TWINS[0])), "vda.qcow2")
    info = json.loads(qemu_img("info", "--output=json", newest).stdout)
    assert "backing-filename" not in info, info
