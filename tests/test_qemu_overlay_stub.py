"""A QEMU killed while it made hotvcb's overlay (between the run's `transaction` and its answer) leaves a
stub: a qcow2 of virtual size 0 with no backing file (QEMU sizes it and names its backing only after writing
its header). It holds none of the guest's writes, so the next backup removes it and backs the VM up, rather
than keeping it as an orphan to `qemu-img commit` (which a stub with no backing refuses) every night
(hosts/qemu_overlays.py Overlays._holds_nothing)."""
import os
import subprocess

import pytest

from qemulab import MiB, opened
from qemuvm import PYTHON, env, needs_qemu, qemu_img, wait_until

from test_outsider_s27d import _slow_qemu_img

pytestmark = needs_qemu


@pytest.fixture
def lab(tmp_path):
    with opened(tmp_path, "qos") as made:
        yield made


def test_the_stub_overlay_of_a_qemu_killed_while_making_it_is_removed(lab):
    image = lab.image("s.raw", fmt="raw", size=4 * MiB)
    drive = ["file=%s,format=raw,if=virtio" % image]
    qemu = lab.start("s", drive)
    release = os.path.join(lab.root, "release")
    run = subprocess.Popen([PYTHON, "-m", "hotvcb", "--qemu", lab.inventory, "backup", "-m", "s", "-g", lab.conf(),
                            "-w", lab.workdir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           env=env(_slow_qemu_img(os.path.join(lab.root, "bin"), release)))
    try:
        wait_until(lambda: [o for o in lab.overlays() if o.endswith(".qcow2")], 30, "the overlay")
        qemu.kill()
        qemu.wait(10)
    finally:
        open(release, "w").close()
        run.wait(120)
    (overlay,) = [o for o in lab.overlays() if o.endswith(".qcow2")]
    os.remove(overlay)  # what QEMU leaves killed mid-way (its run's description is written before QEMU is asked)
    assert qemu_img("create", "-q", "-f", "qcow2", overlay, "0").returncode == 0
    os.remove(os.path.join(lab.inventory, "s.qmp"))
    lab.start("s", drive)
    code, out = lab.backup("s")
    assert "Traceback" not in out, out
    assert lab.overlays() == [], out
    assert code == 0, out
    assert len(lab.backups("s")) == 1, out
