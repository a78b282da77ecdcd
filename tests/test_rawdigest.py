"""A QEMU backup whose copy holds the disk as it is (raw, a flat VMDK's extent) is proven by its source.

Issue 8: the seal digests the source image (held still by our overlay) while qemu-img copies it,
instead of reading the copy back (store/source_digest.py, QemuHost.copied_as). Through the CLI
against a running VM with a guest writer: the manifest's plain entry of the copy is the disk at the
snapshot instant and the restored disk equals it; the copy file is not read by anyone during the
backup (inotify: no read of it, while verify's reads are seen); a byte the target wrote wrong is
caught by verify and restore (a digest of the copy would have sealed it as the truth).
"""

import ctypes
import glob
import json
import os
import select
import shutil
import struct
import subprocess
import threading

import pytest

from qemuvm import (
    PYTHON, QEMU_IMG, GuestWriter, apply, env, hotvcb_argv, needs_qemu, same_content, slow_qemu_img,
)
from test_qemu_backup import _flip, _image, _verify, lab  # noqa: F401  (the fixture)

from hotvcb.localshell import LocalShell
from hotvcb.store import manifest as manifests

pytestmark = needs_qemu
MiB = 1 << 20
IN_ACCESS, IN_CREATE, IN_ISDIR = 0x1, 0x100, 0x40000000


class Reads(threading.Thread):
    """Files read (inotify IN_ACCESS) in a folder and the folders made in it, by any process."""

    def __init__(self, folder):
        super().__init__(daemon=True)
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK)
        assert self.fd >= 0, os.strerror(ctypes.get_errno())
        self.folders = {}
        self.read = []  # names of the files read, in order
        self.stopped = threading.Event()
        self._watch(folder)

    def _watch(self, folder):
        wd = self.libc.inotify_add_watch(self.fd, folder.encode(), IN_ACCESS | IN_CREATE)
        assert wd >= 0, os.strerror(ctypes.get_errno())
        self.folders[wd] = folder

    def run(self):
        while not self.stopped.is_set():
            if select.select([self.fd], [], [], 0.05)[0]:
                self._take(os.read(self.fd, 1 << 16))

    def _take(self, events):
        at = 0
        while at < len(events):
            wd, mask, _cookie, length = struct.unpack_from("iIII", events, at)
            name = events[at + 16: at + 16 + length].rstrip(b"\0").decode()
            at += 16 + length
            if mask & IN_CREATE and mask & IN_ISDIR:  # the backup's -partial folder
                self._watch(os.path.join(self.folders[wd], name))
            elif mask & IN_ACCESS:
                self.read.append(name)

    def seen(self):
        """What was read until now (the events still queued taken first)."""
        self.stopped.set()
        self.join(10)
        while select.select([self.fd], [], [], 0)[0]:
            self._take(os.read(self.fd, 1 << 16))
        return list(self.read)

    def close(self):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@pytest.mark.parametrize("source, fmt, copy", [
    ("raw", "raw", ".raw"), ("qcow2", "raw", ".raw"), ("raw", "thin", "-flat.vmdk"),
])
def test_a_raw_backup_is_the_disk_at_the_snapshot_and_the_copy_is_not_read_back(lab, source, fmt, copy):
    name = "rawcopy-" + source + "-" + fmt
    size = 16 * MiB
    initial, image = _image(lab, name, source, size, 6 * MiB)
    vm = lab.start(name, image, source, shared=True)
    writer = GuestWriter(vm, size)
    writer.start()
    writer.wait_for(5)
    os.makedirs(os.path.join(lab.volume, name))  # watched from before the run's folder is made
    reads = Reads(os.path.join(lab.volume, name))
    reads.start()
    try:
        r = subprocess.run(lab.argv(name, DISK_BACKUP_FORMAT=fmt), capture_output=True, text=True, timeout=120,
                           env=env(slow_qemu_img(str(lab.root / "bin"))))
        writer.wait_for(len(writer.writes) + 3)
        writes = writer.stop()
        during_backup = reads.seen()
        assert r.returncode == 0, r.stdout + r.stderr
        (backup,) = lab.backups(name)
        disk = name + copy
        assert disk not in during_backup, during_backup  # neither the seal nor anyone read the copy

        reads.close()
        reads = Reads(backup)
        reads.start()
        r = _verify(lab, backup)
        assert r.returncode == 0 and "intact" in r.stdout + r.stderr, r.stdout + r.stderr
        assert disk in reads.seen()  # the watch sees a read of the copy: verify's
    finally:
        reads.close()

    # the manifest's plain entry is the disk at the snapshot instant (the guest's writes before it)
    before = [w for w in writes if w.when == "before"]
    unsure = [w for w in writes if w.when == "unsure"]
    assert len(before) >= 5 and len(before) < len(writes), [w.when for w in writes]
    expected = str(lab.root / "expected.raw")
    shutil.copyfile(initial, expected)
    apply(expected, before)
    data = json.loads(open(os.path.join(backup, "hotvcb.json")).read())
    entry = data["files"][disk]
    assert data["version"] == 2 and "content" not in entry, entry
    if entry != manifests.digest_file(LocalShell(), expected).entry():
        assert unsure, "the manifest is not the disk at the snapshot instant"
        apply(expected, unsure)
        assert entry == manifests.digest_file(LocalShell(), expected).entry()

    target = str(lab.root / "restored")
    os.makedirs(target)
    r = subprocess.run([PYTHON, "-m", "hotvcb", "restore", backup, "--kvm", target, "--format", "raw"],
                       capture_output=True, text=True, timeout=120, env=env())
    assert r.returncode == 0, r.stdout + r.stderr
    (restored,) = glob.glob(os.path.join(target, "*", "*.raw"))
    assert same_content(expected, restored), "the restored disk is not the disk at the snapshot instant"


def flipping_qemu_img(folder):
    """A bin folder whose qemu-img convert writes one byte of its output wrong (a target that lies)."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "qemu-img")
    flip = "f = open(sys.argv[1], 'r+b'); f.seek(%d); b = f.read(1)[0]; f.seek(%d); f.write(bytes([b ^ 0xFF]))" % (
        3 * MiB + 5, 3 * MiB + 5)
    with open(path, "w") as f:
        f.write('#!/bin/sh\n%s "$@" || exit $?\nif [ "$1" = convert ]; then\n'
                '  for last; do :; done\n  %s -c "import sys; %s" "$last"\nfi\n' % (QEMU_IMG, PYTHON, flip))
    os.chmod(path, 0o755)
    return folder


def test_a_copy_the_target_wrote_wrong_fails_verify_and_restore(lab):
    name = "lying-target"
    _initial, image = _image(lab, name, "raw", 8 * MiB, 4 * MiB)
    lab.start(name, image, "raw")
    r = subprocess.run(lab.argv(name, DISK_BACKUP_FORMAT="raw"), capture_output=True, text=True, timeout=120,
                       env=env(flipping_qemu_img(str(lab.root / "bin"))))
    assert r.returncode == 0, r.stdout + r.stderr
    (backup,) = lab.backups(name)
    disk = os.path.join(backup, name + ".raw")
    assert not same_content(image, disk)  # the wrapper did write a wrong byte

    target = str(lab.root / "restored")  # restore's own check first: verify marks the backup damaged
    os.makedirs(target)
    r = subprocess.run([PYTHON, "-m", "hotvcb", "restore", backup, "--kvm", target], capture_output=True,
                       text=True, timeout=120, env=env())
    assert r.returncode == 6 and "fails verification" in r.stdout + r.stderr, r.stdout + r.stderr
    assert os.listdir(target) == []
    r = _verify(lab, backup)
    out = r.stdout + r.stderr
    assert r.returncode != 0 and name + ".raw: SHA-256 mismatch (bytes 3145728-4194303)" in out, out

    _flip(disk, 3 * MiB + 5)  # the byte put right: the backup is the source again
    assert _verify(lab, backup).returncode == 0
