"""Testers' notes (session 31) pinned through the public command line: how an exit-9 run's final status
reads, whichever cause made it 9; `cleanup` beside a QMP socket its killed QEMU left."""

import json
import os
import signal

import pytest

from qemulab import finish, opened, run_bg
from qemuvm import needs_qemu, slow_qemu_img, wait_until
from simhost import hotvcb, needs_root, write_conf


@pytest.fixture
def lab(tmp_path):
    with opened(tmp_path, "k32a") as made:
        yield made


# -- exit 9: the warning comes first in an otherwise OK run's status, whatever its cause ----------------------

@needs_root
def test_a_lost_log_puts_its_warning_before_an_ok_status_as_a_share_left_mounted_does(host, tmp_path):
    """README's exit 9 has two causes: the log could not be written everywhere, or the NFS share UNMOUNT_NFS=1
    was to unmount is still mounted. The second makes the final status `WARNING: NFS datastore … is still
    mounted; All VMs backed up OK!` (jobs/outcome said why: the status must not read "All VMs backed up OK!"
    first). A lost log made it `All VMs backed up OK!; WARNING: the log could not be written to …`: the mail's
    subject and the JSON report's status an admin or a monitor skims start "All VMs backed up OK!" on a run
    that exited 9. Both causes read the same: the warning first."""
    host.create_vm("app", "datastore1", [{"size": "1M"}], power="on")
    report = tmp_path / "report.json"
    r = hotvcb(host, "-m", "app", "-g", write_conf(host), "-w", tmp_path / "w", "-l", "/dev/full",
               "--json-report", report)
    assert r.returncode == 9, r.stdout + r.stderr
    status = json.loads(report.read_text())["status"]
    assert status.startswith("WARNING: the log could not be written to the log file /dev/full"), status
    assert status.endswith("; All VMs backed up OK!"), status


# -- a stale QMP socket: named in a warning, not a failed cleanup every night ---------------------------------

@needs_qemu
def test_cleanup_beside_a_killed_qemus_socket_warns_and_still_removes_its_dead_backup(lab):
    """A power cut (here: SIGKILL of hotvcb mid-copy, then of the VM's QEMU) leaves `old.qmp`, a socket no
    QEMU listens on, and the dead run's `old-…-partial` folder. The admin's nightly `hotvcb --qemu DIR
    cleanup` failed on the socket ("cleanup failed: … QEMU is not listening", exit 1) every night for as long
    as the VM stays down, and never removed that dead run's unfinished backup. Expected: a warning naming the
    socket and what to do about it (start the VM, or remove a socket whose VM is gone; commit an overlay its
    QEMU left), the dead run's `-partial` removed, the running VM cleaned up as usual, exit 0."""
    lab.start("web", ["file=%s,format=qcow2,if=virtio" % lab.image("web.qcow2")])
    old = lab.start("old", ["file=%s,format=qcow2,if=virtio" % lab.image("old.qcow2", size=8 * (1 << 20))])
    p, log = run_bg(lab, "old", slow_qemu_img(os.path.join(lab.root, "bin"), "1M"))
    try:
        wait_until(lambda: "old.qcow2 (virtio0" in open(log).read() or p.poll() is not None, 60, "the copy")
        os.kill(p.pid, signal.SIGKILL)
    finally:
        finish(p)
    old.kill()
    old.wait(10)
    sock = os.path.join(lab.inventory, "old.qmp")
    assert os.path.exists(sock)
    folder = os.path.join(lab.volume, "old")
    assert [e for e in os.listdir(folder) if e.endswith("-partial")], open(log).read()
    rc, out = lab.hotvcb("--qemu", lab.inventory, "cleanup", "-g", lab.conf())
    assert rc == 0, out
    [warned] = [l for l in out.splitlines() if "old.qmp" in l]
    assert "-- warning: " in warned and "not listening" in warned and "qemu-img commit" in warned, warned
    assert "remove" in warned and "socket" in warned, warned
    assert not [e for e in os.listdir(folder) if e.endswith("-partial")], out
    assert "1 leftover(s) removed" in out, out
