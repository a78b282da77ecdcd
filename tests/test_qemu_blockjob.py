"""A disk under a block job the admin started (a drive-mirror to a new array) takes no snapshot: the
VM's error names the job by its id, not only QEMU's `Node '#block123' is busy` (hosts/qemu_overlays.py)."""
import os

import pytest

from qemulab import MiB, opened
from qemuvm import needs_qemu

pytestmark = needs_qemu


@pytest.fixture
def lab(tmp_path):
    with opened(tmp_path, "qbj") as made:
        yield made


def test_a_disk_under_an_admins_mirror_job_is_refused_naming_the_job(lab):
    image = lab.image("a.qcow2", size=8 * MiB)
    lab.start("vm", ["file=%s,format=qcow2,if=virtio,id=d0" % image])
    lab.qmp("drive-mirror", {"device": "d0", "job-id": "move-to-array2", "sync": "full", "format": "qcow2",
                             "target": os.path.join(lab.root, "mirror.qcow2"), "speed": 1024})
    rc, out = lab.backup("vm")
    assert rc == 6, out
    (line,) = [l for l in out.splitlines() if "error: vm:" in l]
    assert "move-to-array2 (mirror" in line and "block-job-cancel" in line, line
    assert not lab.overlays()
