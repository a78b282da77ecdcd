"""Testers' notes (session 31) pinned through the public command line: how an exit-9 run's final status
reads, whichever cause made it 9; `cleanup` beside a QMP socket its killed QEMU left, and beside the
`.description` files a run killed around its QEMU snapshot left; `verify` of a backup whose manifest was
edited to drop a disk."""

import glob
import json
import os
import re
import signal
import subprocess
import time

import pytest

from hotvcb import crashpoint
from pidviews import hotvcb_holder, other_namespace  # noqa: F401  (a fixture)
from qemulab import PYTHON, opened
from qemuvm import env, needs_qemu
from simhost import VOLUME, backup_root, hotvcb, manifest, needs_root, next_second, sealed, write_conf


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
    """A power cut (here: SIGKILL of hotvcb once its disk is copied, then of the VM's QEMU) leaves `old.qmp`, a socket no
    QEMU listens on, and the dead run's `old-…-partial` folder. The admin's nightly `hotvcb --qemu DIR
    cleanup` failed on the socket ("cleanup failed: … QEMU is not listening", exit 1) every night for as long
    as the VM stays down, and never removed that dead run's unfinished backup. Expected: a warning naming the
    socket and what to do about it (start the VM, or remove a socket whose VM is gone; commit an overlay its
    QEMU left), the dead run's `-partial` removed, the running VM cleaned up as usual, exit 0."""
    lab.start("web", ["file=%s,format=qcow2,if=virtio" % lab.image("web.qcow2")])
    old = lab.start("old", ["file=%s,format=qcow2,if=virtio" % lab.image("old.qcow2", size=8 * (1 << 20))])
    _killed_at(lab, "old", "disk-copied-1")  # its disk copied, its overlay on the VM: a kill that no copy speed races
    old.kill()
    old.wait(10)
    sock = os.path.join(lab.inventory, "old.qmp")
    assert os.path.exists(sock)
    folder = os.path.join(lab.volume, "old")
    assert [e for e in os.listdir(folder) if e.endswith("-partial")], os.listdir(folder)
    rc, out = lab.hotvcb("--qemu", lab.inventory, "cleanup", "-g", lab.conf())
    assert rc == 0, out
    [warned] = [l for l in out.splitlines() if "old.qmp" in l]
    assert "-- warning: " in warned and "not listening" in warned and "qemu-img commit" in warned, warned
    assert "remove" in warned and "socket" in warned, warned
    assert not [e for e in os.listdir(folder) if e.endswith("-partial")], out
    assert "1 leftover(s) removed" in out, out


# -- QEMU: the `.description` files a run killed around its snapshot left -----------------------------------

def _killed_at(lab, name, point):
    """`hotvcb --qemu DIR backup -m name` SIGKILLed at crashpoint `point`."""
    r = subprocess.run([PYTHON, "-m", "hotvcb", "--qemu", lab.inventory, "backup", "-m", name, "-g", lab.conf(),
                        "-w", lab.workdir], capture_output=True, text=True, timeout=120,
                       env=dict(env(), **{crashpoint.ENV: point}))
    assert r.returncode == -signal.SIGKILL, r.stdout + r.stderr
    hour_ago = time.time() - 3600  # killed long ago: the next run waits for no snapshot it may have asked for
    for marker in glob.glob(os.path.join(glob.escape(lab.inventory), ".hotvcb-snapshot-asked.*")):
        os.utime(marker, (hour_ago, hour_ago))


def _descriptions(lab):
    return sorted(glob.glob(os.path.join(glob.escape(lab.images), "*.description*")))


@needs_qemu
@pytest.mark.parametrize("point, left_as, owner", [
    ("qemu-description-written", "-new", "dead"), ("qemu-snapshot-described", ".description", "dead"),
    ("qemu-description-written", "-new", "alive"), ("qemu-snapshot-described", ".description", "untold")])
def test_description_files_a_killed_run_left_are_removed_once_it_is_provably_dead(lab, point, left_as, owner,
                                                                                  hotvcb_holder):
    """A run SIGKILLed while it claims its overlay's `.description` (it writes `<overlay>.description.<pid>-new`
    and links it to `<overlay>.description`: the kill lands between) leaves that copy; one killed after the
    claim, before QEMU was asked for the overlay, leaves a `.description` with no overlay beside it. Neither is
    a snapshot any listing showed: `hotvcb --qemu DIR cleanup` and the next backups left them beside the VM's
    image for good. Expected: removed by cleanup once the run that wrote them is provably dead (its pid gone),
    the next backup OK and leaving nothing; kept, with a warning naming its run, while that run lives or its
    pid cannot tell (another pid namespace)."""
    image = lab.image("web.qcow2")
    lab.start("web", ["file=%s,format=qcow2,if=virtio" % image])
    _killed_at(lab, "web", point)
    left = _descriptions(lab)
    assert len(left) == 1 and left[0].endswith(left_as), left
    assert lab.overlays() == left, lab.overlays()  # no overlay was made
    if owner != "dead":  # the same file, written by a run that lives or whose pid cannot be told from here
        with open(left[0]) as f:
            text = f.read()
        if owner == "alive":
            text = re.sub(r" pidstart=\d+", "", re.sub(r"pid=\d+", "pid=%d" % hotvcb_holder, text, count=1))
        else:
            text = re.sub(r"pidns=\d+", "pidns=%d" % other_namespace(), text)
        with open(left[0], "w") as f:
            f.write(text)
    rc, out = lab.hotvcb("--qemu", lab.inventory, "cleanup", "-g", lab.conf())
    assert rc == 0, out
    if owner == "dead":
        assert _descriptions(lab) == [], out
        rc, out = lab.backup("web")
        assert rc == 0, out
        assert _descriptions(lab) == [] and lab.overlays() == [], out
    else:
        assert _descriptions(lab) == left, out
        assert "leaving it" in out, out
        # no overlay, no snapshot on the disks: the VM is backed up all the same, the file still kept. The
        # backup waits for the next second: a snapshot is named by its second, and one named like the kept
        # file's is refused as that run's (the claim), a collision a real night's next run never meets
        next_second()
        rc, out = lab.backup("web")
        assert rc == 0 and "is backing it up" not in out and "snapshot(s)" not in out, out
        assert _descriptions(lab) == left and lab.overlays() == left, out


# -- verify: a disk the backup's .vmx names that neither its manifest nor its folder holds --------------------

def _drop_disk(host, vm, entry, key):
    """The backup's manifest edited to drop disk `key` (its entry and its files' proofs), and its files deleted."""
    folder = os.path.join(backup_root(host, vm), entry)
    data = manifest(host, vm, entry)
    [gone] = [d for d in data["disks"] if d["key"] == key]
    data["disks"] = [d for d in data["disks"] if d["key"] != key]
    for f in gone["files"]:
        del data["files"][f]
        os.remove(os.path.join(folder, f))
    with open(os.path.join(folder, "hotvcb.json"), "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
    return gone


@needs_root
def test_verify_fails_a_backup_whose_vmx_names_a_disk_its_manifest_dropped(host, tmp_path):
    """Someone freeing room on the backup volume deletes a backup's second disk and edits hotvcb.json to drop
    its entry and proofs. `hotvcb verify` said the backup was good (every file the manifest names is there
    and proven), `list` called it good, and only a restore warned the disk "is not in the backup (skipped
    when it was taken)" and restored the VM without it. The backup's .vmx names that disk, and the manifest
    says the backup took every disk it did not list as skipped: it is no good backup of the VM."""
    host.create_vm("two", "datastore1", [{"size": "1M"}, {"size": "1M"}], power="on")
    conf = write_conf(host)
    r = hotvcb(host, "-m", "two", "-g", conf, "-w", tmp_path / "w")
    assert r.returncode == 0, r.stdout + r.stderr
    [entry] = sealed(host, "two")
    gone = _drop_disk(host, "two", entry, "scsi0:1")
    r = hotvcb(host, "verify", "two", "-g", conf)
    assert r.returncode != 0, r.stdout + r.stderr
    assert "scsi0:1" in r.stdout + r.stderr and gone["source"].rsplit("/", 1)[-1] in r.stdout + r.stderr, \
        r.stdout + r.stderr
    r = hotvcb(host, "list", "two", "-g", conf)
    assert "incomplete" in r.stdout, r.stdout + r.stderr
    r = hotvcb(host, "restore", "%s/two/%s" % (VOLUME, entry), "--datastore", "datastore1", "--name", "two-back")
    assert r.returncode != 0 and "scsi0:1" in r.stdout + r.stderr, r.stdout + r.stderr  # not without that disk


@needs_root
def test_verify_passes_a_backup_that_left_a_disk_out_by_vmdk_files_to_backup(host, tmp_path):
    """Guard: a backup of the disks VMDK_FILES_TO_BACKUP names lacks the others by the admin's choice; its .vmx
    still names them, and it verifies good."""
    host.create_vm("pick", "datastore1", [{"size": "1M"}, {"size": "1M"}], power="on")
    conf = write_conf(host, VMDK_FILES_TO_BACKUP="pick.vmdk")
    r = hotvcb(host, "-m", "pick", "-g", conf, "-w", tmp_path / "w")
    assert r.returncode == 0, r.stdout + r.stderr
    r = hotvcb(host, "verify", "pick", "-g", conf)
    assert r.returncode == 0, r.stdout + r.stderr


@needs_root
def test_restore_latest_of_a_vm_with_no_good_backup_says_why_not_did_you_mean_itself(host, tmp_path):
    """`hotvcb restore --latest two` where two's only backup is not good said: "no good backup of 'two' under
    … (did you mean 'two'? The name given differs from 'two' only in Unicode normalization, NFC against the
    VM's NFC …)": the VM's own name offered as a typo and a normalization difference that is none. It should
    not suggest the very name given, and should say what the backup there is."""
    host.create_vm("two", "datastore1", [{"size": "1M"}, {"size": "1M"}], power="on")
    conf = write_conf(host)
    r = hotvcb(host, "-m", "two", "-g", conf, "-w", tmp_path / "w")
    assert r.returncode == 0, r.stdout + r.stderr
    [entry] = sealed(host, "two")
    _drop_disk(host, "two", entry, "scsi0:1")
    r = hotvcb(host, "restore", "--latest", "two", "--datastore", "datastore1", "-g", conf)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "did you mean" not in r.stderr and "normalization" not in r.stderr, r.stderr
    assert entry in r.stderr and "incomplete" in r.stderr and "scsi0:1" in r.stderr, r.stderr
