"""The pre-flight's room for a qcow2 copy counts qcow2's own tables (hosts/qemu.py bytes_needed: `qemu-img
measure`): a raw disk holding 3 MiB of data said "needs 3.0 MiB", passed on a volume with 3.1 MiB free, took
the snapshot and failed the copy with ENOSPC, filling the volume."""
import os

import pytest

from qemulab import MiB, opened
from qemuvm import needs_qemu

pytestmark = needs_qemu


@pytest.fixture
def lab(tmp_path):
    with opened(tmp_path, "qrm") as made:
        yield made


def test_a_qcow2_copy_that_needs_more_than_its_data_is_refused_before_the_snapshot(lab, tmpfs):
    image = os.path.join(lab.images, "a.raw")
    with open(image, "wb") as f:
        f.write(os.urandom(3 * MiB))
        f.truncate(8 * MiB)
    lab.start("vm", ["file=%s,format=raw,if=virtio" % image])
    lab.volume = str(tmpfs("vol", "%dk" % (3 * 1024 + 100)))
    code, out = lab.backup("vm")
    assert code == 6 and "but only" in out and "is free" in out, out
    assert "Creating Snapshot" not in out, out
