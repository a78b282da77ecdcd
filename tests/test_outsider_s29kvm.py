"""Outside tests (round 29) of the KVM side: bare-QEMU VMs an admin set up by hand (their own overlay
chains, odd image names, a disk unplugged mid-backup, a target that fills up) and restores of QEMU
backups across hypervisors. Each QEMU runs with `-S` (no guest code; QEMU holds its disks), one at a time,
TCG, disks of a few MiB. A test marked xfail(strict) is a defect the current code has.
"""
import json
import os
import subprocess

import pytest

from qemulab import MiB, disk_of, finish, hmp_write, opened, run_bg, same
from qemuvm import needs_qemu, qemu_img, wait_until

pytestmark = needs_qemu


@pytest.fixture
def lab(tmp_path):
    with opened(tmp_path, "h29") as made:
        yield made


# -- the admin's own snapshots ------------------------------------------------------------------------
def _users_overlay(lab):
    """The admin took an external snapshot before an upgrade (`qemu-img create -b base.qcow2 top.qcow2`, or
    QMP blockdev-snapshot-sync): the VM runs on top.qcow2, base.qcow2 below it."""
    lab.image("web-base.qcow2")
    top = os.path.join(lab.images, "web-upgrade.qcow2")
    assert qemu_img("create", "-q", "-f", "qcow2", "-b", "web-base.qcow2", "-F", "qcow2", top).returncode == 0
    subprocess.run(["qemu-io", "-c", "write -P 0x77 2M 64k", top], check=True, capture_output=True, timeout=60)
    return top


def _users_internal_snapshot(lab):
    """The admin took internal snapshots (`savevm before-upgrade`, `qemu-img snapshot -c`, what `virsh
    snapshot-create-as` makes of a qcow2 by default)."""
    img = lab.image("web.qcow2")
    assert qemu_img("snapshot", "-c", "before-upgrade", img).returncode == 0
    subprocess.run(["qemu-io", "-c", "write -P 0x99 0 1M", img], check=True, capture_output=True, timeout=60)
    return img


@pytest.mark.parametrize("snapshot", [_users_overlay, _users_internal_snapshot], ids=["overlay", "internal"])
def test_backup_snapshot_tree_on_a_qemu_vm_with_the_users_snapshots_fails_as_documented(lab, snapshot):
    """The admin sets BACKUP_SNAPSHOT_TREE=1 (globally: the ESXi hosts' backups should keep the snapshots
    that users take before upgrades) and also backs up the QEMU host with it. kvm.md ("Not yet": a VM
    with overlays of another tool's ... with the key set it fails with that reason) and config-reference
    ("ESXi only (on QEMU a VM with snapshots fails with that reason)") promise a failure naming the
    reason, so the admin knows the snapshot is NOT in the backup. What happens: `OK`, STATUS.ok, exit 0,
    and the backup holds only the current state; the snapshot the admin asked to keep is silently gone
    from it (jobs/preflight.py only calls snapshot_tree for snapshots the driver reports, and the QEMU
    driver reports only hotvcb's own overlays)."""
    image = snapshot(lab)
    lab.start("web", ["file=%s,format=qcow2,if=virtio" % image])
    code, out = lab.backup("web", BACKUP_SNAPSHOT_TREE=1)
    assert "Traceback" not in out, out
    assert lab.overlays() == []
    assert code != 0 and lab.backups("web") == [], out
    assert "BACKUP_SNAPSHOT_TREE" in out, out


# -- a disk hot-unplugged during the backup -----------------------------------------------------------
def test_a_disk_unplugged_during_the_backup_is_reported_as_what_happened(lab):
    """A QEMU VM with a system disk and a data disk on virtio-scsi. During the nightly backup the admin
    hot-unplugs the data disk (`device_del`; a SCSI disk goes at once) after the guest wrote to it.
    hotvcb's copies of both disks are complete, each the disk at the snapshot's instant. The run then
    says `... data.raw.hotvcb-snapshot-...qcow2 not in use by its QEMU, but still holding the guest's writes
    from before a QEMU died; kept, and the VM is backed up without it ...` (no QEMU died) followed by
    `-- remove it by hand` (deleting it loses the guest's writes), and the result contradicts the message:
    ERROR, STATUS.error, both copies deleted, exit 6. As kvm.md promises for an overlay that still holds
    data (the running VM does not use it), the VM should be backed up all the same and the run end WARNING
    (exit 3) with the overlay kept and named (jobs/backup_end.py _consolidate treats the driver's
    SnapshotKept like any SnapshotError; only jobs/leftovers.py knows it)."""
    from qemuvm import slow_qemu_img
    system = lab.image("sys.qcow2")
    data = lab.image("data.raw", fmt="raw", size=8 * MiB, pattern=0x33)
    with open(data, "r+b") as f:
        f.write(os.urandom(4 * MiB))
    lab.start("db", ["file=%s,format=qcow2,if=virtio" % system, "file=%s,format=raw,if=none,id=d1" % data],
              devices=["virtio-scsi-pci,id=scsi0", "scsi-hd,drive=d1,id=sd1"])
    p, log = run_bg(lab, "db", slow_qemu_img(os.path.join(lab.root, "bin"), "1M"))
    try:
        wait_until(lambda: "data.raw (d1" in open(log).read(), 60, "the copy of the data disk")
        hmp_write(lab, "d1", 0x44, "1M", "64k")  # the guest writes, into our overlay
        lab.qmp("device_del", {"id": "sd1"})
    finally:
        code = finish(p)
    out = open(log).read()
    assert "Traceback" not in out, out
    kept = [o for o in lab.overlays() if o.endswith(".qcow2")]
    assert len(kept) == 1 and "data.raw" in kept[0], lab.overlays()  # it holds the guest's writes: kept
    assert kept[0] in out, out  # and named
    assert code == 3, out
    (backup,) = lab.backups("db")
    assert sorted(f for f in os.listdir(backup) if f.endswith(".qcow2")) == ["data.qcow2", "sys.qcow2"]


# -- a commit that fails --------------------------------------------------------------------------------
def test_an_overlay_whose_commit_failed_is_not_said_to_be_removed_by_hand(lab):
    """The VM is live-migrated (QMP `migrate`, here to a file) while hotvcb copies its disk: the source
    QEMU ends `postmigrate` with its images inactive, and hotvcb's block-commit is refused (`Block node
    is read-only`). The guest wrote during the copy, so its writes are in hotvcb's overlay
    (`m.raw.hotvcb-snapshot-<time>.qcow2`). The error line ends `-- remove it by hand`: an admin who
    removes that file (the advice for an ESXi snapshot, where removing consolidates) throws away every
    write since the snapshot. For an overlay, the advice must be the one the driver gives when its QEMU
    died: the guest's writes are in it, `qemu-img commit` it into its image (jobs/backup_end.py
    _consolidate appends the ESXi advice to every driver's error)."""
    from qemuvm import slow_qemu_img
    image = lab.image("m.raw", fmt="raw", size=8 * MiB)
    with open(image, "r+b") as f:
        f.write(os.urandom(6 * MiB))
    lab.start("mig", ["file=%s,format=raw,if=virtio" % image])
    p, log = run_bg(lab, "mig", slow_qemu_img(os.path.join(lab.root, "bin"), "1M"))
    try:
        wait_until(lambda: "Backing up" in open(log).read(), 60, "the copy")
        hmp_write(lab, "virtio0", 0x44, "1M", "64k")
        lab.qmp("migrate", {"uri": "exec:cat > %s" % os.path.join(lab.root, "mig.state")})
        wait_until(lambda: lab.qmp("query-migrate").get("status") in ("completed", "failed"), 60, "the migration")
    finally:
        code = finish(p)
    out = open(log).read()
    assert "Traceback" not in out, out
    assert code == 6, out  # the VM's snapshot is not gone: no OK
    (overlay,) = [o for o in lab.overlays() if o.endswith(".qcow2")]  # it holds the guest's writes
    errors = [l for l in out.splitlines() if " -- error: " in l and os.path.basename(overlay) in l]
    assert errors, out
    assert not [l for l in errors if "remove it by hand" in l], errors
    assert [l for l in errors if "qemu-img commit" in l], errors


# -- room on the target ----------------------------------------------------------------------------
def test_a_compressed_qcow2_that_does_not_fit_is_refused_before_the_snapshot(tmpfs, lab):
    """The VM runs on a compressed qcow2 (a cloud image as distributions ship them, `qemu-img convert -c`):
    8 MiB of disk in under 0.3 MiB of file. The backup volume has 3 MiB free. The pre-flight's room check
    ("needs X on VOLUME but only Y is free", before anything changes, architecture.md step 2) counts the
    image's allocated bytes, passes, takes the snapshot and starts a copy that writes the disk
    uncompressed: `qemu-img: error while writing at byte ...: No space left on device` halfway, after the
    target was filled (on a shared volume, under the feet of every other VM's backup). A copy to qcow2
    or raw holds the disk's data uncompressed, so a compressed image needs its data's size, not its
    file's (hosts/qemu.py bytes_needed, qemuimg.sizes: actual-size)."""
    raw = os.path.join(lab.root, "c.raw")
    with open(raw, "wb") as f:
        f.write((b"hotvcb compressible data " * 64)[:1024] * (8 * 1024))
    image = os.path.join(lab.images, "cloud.qcow2")
    assert qemu_img("convert", "-c", "-f", "raw", "-O", "qcow2", raw, image).returncode == 0
    assert os.path.getsize(image) < MiB
    lab.start("cloud", ["file=%s,format=qcow2,if=virtio" % image])
    lab.volume = str(tmpfs("vol", "3m"))
    code, out = lab.backup("cloud")
    assert "Traceback" not in out, out
    assert code == 6, out
    assert "Creating Snapshot" not in out, out  # refused before any change
    assert "but only" in out and "is free" in out, out




# -- restore of a bare-QEMU backup ------------------------------------------------------------------
def test_a_disk_the_qemu_backup_skipped_is_named_by_the_restore(lab):
    """A QEMU VM has its system disk and a read-only reference disk (`-drive file=/srv/ref.raw,readonly=on`:
    a shared data set, install media on a virtio disk). The backup says `skipping virtio1 (ref.raw):
    read-only drive` and ends WARNING, as documented. Months later the host is gone and the admin restores
    the backup with `hotvcb restore BACKUP --kvm DIR`: `All VMs restored OK!`, exit 0, and the restored VM
    has one disk; nothing says that the VM had another that is not in the backup. For ESXi backups (an
    independent disk, an RDM) and libvirt ones (a LUN, a read-only disk) the restore names each such disk in
    a warning and ends `WARNING: All VMs restored, but some disk(s) were not in the backup` (exit 3,
    restore.md sections 4 and 5); the QEMU backup records the skipped drive in `<VM>.json` and
    hotvcb.json, but jobs/machine_of.py _from_qemu drops every disk that is not `ok` silently."""
    system = lab.image("sys.qcow2")
    ref = lab.image("ref.raw", fmt="raw", pattern=0x12)
    lab.start("app", ["file=%s,format=qcow2,if=virtio" % system, "file=%s,format=raw,if=virtio,readonly=on" % ref])
    code, out = lab.backup("app")
    assert code == 3 and "read-only drive" in out, out
    (backup,) = lab.backups("app")
    target = os.path.join(lab.root, "kvm")
    os.makedirs(target)
    code, out = lab.hotvcb("restore", backup, "--kvm", target, "--name", "app2")
    assert "Traceback" not in out, out
    assert os.listdir(os.path.join(target, "app2"))  # restored, with the disk it has
    assert "virtio1" in out or "ref.raw" in out, out  # the disk it lacks is named
    assert code == 3, out



# -- status ------------------------------------------------------------------------------------------
def test_status_of_a_killed_runs_overlay_says_its_age(lab):
    """hotvcb is killed (-9, the OOM killer) while it copies a QEMU VM's disk: its overlay stays on the
    VM. The admin's monitoring runs `hotvcb --qemu DIR status`, which rightly goes CRIT, with the line
    `kv: hotvcb snapshot 'hotvcb-snapshot-2026-12-04_19-58-24' (id ..., age unknown old, deltas 324.0 KiB)`:
    "age unknown old" is no sentence, and the age is not unknown: the snapshot is named after the second
    it was taken (as the backup folder is), and its overlay file has a time (jobs/status.py builds the
    label from Snapshot.created, which the QEMU driver leaves empty)."""
    from qemuvm import slow_qemu_img
    image = lab.image("k.raw", fmt="raw", size=8 * MiB)
    with open(image, "r+b") as f:
        f.write(os.urandom(6 * MiB))
    lab.start("kv", ["file=%s,format=raw,if=virtio" % image])
    p, log = run_bg(lab, "kv", slow_qemu_img(os.path.join(lab.root, "bin"), "1M"))
    try:
        wait_until(lambda: "Backing up" in open(log).read(), 60, "the copy")
    finally:
        p.kill()
        p.wait(10)
    assert [o for o in lab.overlays() if o.endswith(".qcow2")]
    code, out = lab.hotvcb("--qemu", lab.inventory, "status", "-g", lab.conf())
    try:
        assert "Traceback" not in out, out
        assert code == 2 and "hotvcb-snapshot-" in out, out  # CRIT, naming our snapshot
        line = next(l for l in out.splitlines() if "hotvcb-snapshot-" in l)
        assert "unknown old" not in line and "age unknown" not in line, line
    finally:
        lab.hotvcb("--qemu", lab.inventory, "cleanup")
    assert lab.overlays() == []


# -- -blockdev with a filter ---------------------------------------------------------------------------
def test_a_disk_under_a_throttle_filter_is_backed_up(lab):
    """The admin throttles a noisy VM's disk the way QEMU's documentation recommends for -blockdev
    (`-object throttle-group,id=tg0,x-bps-total=...` and a `throttle` filter node over the qcow2 node;
    the legacy -drive throttling.* options do not apply to -blockdev). The image is a plain local
    qcow2. hotvcb: `warning: bd: skipping /machine/peripheral/disk0/virtio-backend (): not a local image
    file: json:{"throttle-group": "tg0", "driver": "throttle", "file": {... "filename": ".../bd.qcow2"}}`,
    then `error: bd: bd: nothing to back up: every disk was skipped`, exit 6, every night: the VM is never
    backed up, and the message says the image is not local while it names the local file. A filter node
    holds no data: the disk is the image below it, where the overlay goes (hosts/qemu.py _disk takes the
    top node's file name; hosts/qemu_blockgraph.py chain_of follows backing images only, not a filter's
    child)."""
    image = lab.image("bd.qcow2")
    lab.start("bd", [], devices=["virtio-blk-pci,drive=t0,id=disk0"], extra=[
        "-object", "throttle-group,id=tg0,x-bps-total=104857600",
        "-blockdev", json.dumps({"driver": "file", "filename": image, "node-name": "f0"}),
        "-blockdev", json.dumps({"driver": "qcow2", "file": "f0", "node-name": "q0"}),
        "-blockdev", json.dumps({"driver": "throttle", "throttle-group": "tg0", "file": "q0", "node-name": "t0"})])
    code, out = lab.backup("bd")
    assert "Traceback" not in out, out
    assert code == 0, out
    (backup,) = lab.backups("bd")
    assert same(image, disk_of(backup))
    assert lab.overlays() == []


# -- the image's own file system is full -------------------------------------------------------------
def test_no_room_beside_the_image_is_one_clear_error_not_a_pending_hostd_snapshot(tmpfs, lab):
    """The VM's image lives on a file system that is full to the last block (a thick raw image that was
    sized to fill its LV). hotvcb cannot put its overlay (nor the overlay's `.description`) beside it.
    The run says `cannot write <image>.hotvcb-snapshot-<time>.qcow2.description: No space left on device`,
    which is the cause, but first it waits (SNAPSHOT_TIMEOUT again, up to a minute) and warns `snapshot
    ... has not appeared; hostd may still be creating it. If it does, the next backup run (or `hotvcb
    cleanup`) removes it, and `hotvcb status` reports it until then`. There is no hostd on a QEMU host and
    nothing was asked of QEMU: the QMP transaction was never sent. The next run then waits again ("is
    gone, and the snapshot it asked for has not appeared yet (the host may still make it); waiting up to
    60 s") and keeps the marker "for a later look". A snapshot QEMU never got is no pending one
    (hosts/qemu_overlays.py create writes the description first; jobs/backup_end.py _consolidate looks
    for a late snapshot whenever create_snapshot raised)."""
    # room for the image and, once `fill` is gone, for an overlay (QEMU writes a qcow2's first clusters whole:
    # ~200 KiB); 4200k left 104 KiB, where the second run's snapshot could never be taken
    folder = str(tmpfs("fullfs", "4400k"))
    image = os.path.join(folder, "full.raw")
    with open(image, "wb") as f:
        f.write(os.urandom(4 * MiB))
    subprocess.run(["dd", "if=/dev/zero", "of=" + os.path.join(folder, "fill"), "bs=4k"], capture_output=True)
    lab.start("fu", ["file=%s,format=raw,if=virtio" % image])
    code, out = lab.backup("fu", SNAPSHOT_TIMEOUT="3s")  # the wait: 3 s here, a minute by default
    assert "Traceback" not in out, out
    assert code == 6 and "No space left on device" in out, out
    assert "hostd" not in out and "has not appeared" not in out, out
    assert sorted(os.listdir(folder)) == ["fill", "full.raw"]
    os.remove(os.path.join(folder, "fill"))
    code, out = lab.backup("fu", SNAPSHOT_TIMEOUT="3s")
    assert code == 0, out
    assert "has not appeared" not in out, out


def test_a_snapshot_that_failed_leaves_no_description_beside_the_other_disks(tmpfs, lab):
    """A VM with its system disk in /srv/vms and a data disk on a file system that is full. The snapshot
    fails (`cannot write <data image>.hotvcb-snapshot-<time>.qcow2.description: No space left on device`)
    and nothing was asked of QEMU, but beside the system disk's image stays
    `sys.qcow2.hotvcb-snapshot-<time>.qcow2.description`, one more every night the data disk's file
    system stays full: no overlay belongs to it, so neither the next run nor `hotvcb cleanup` (which look
    for overlays) ever removes it (hosts/qemu_overlays.py create writes every description before the
    transaction and removes them only when QEMU refused the transaction)."""
    system = lab.image("sys.qcow2")
    folder = str(tmpfs("fullfs", "4200k"))
    data = os.path.join(folder, "data.raw")
    with open(data, "wb") as f:
        f.write(os.urandom(4 * MiB))
    subprocess.run(["dd", "if=/dev/zero", "of=" + os.path.join(folder, "fill"), "bs=4k"], capture_output=True)
    lab.start("tw", ["file=%s,format=qcow2,if=virtio" % system, "file=%s,format=raw,if=virtio" % data])
    code, out = lab.backup("tw", SNAPSHOT_TIMEOUT="3s")
    assert "Traceback" not in out, out
    assert code == 6 and "No space left on device" in out, out
    lab.hotvcb("--qemu", lab.inventory, "cleanup")
    assert os.listdir(lab.images) == ["sys.qcow2"]
    assert sorted(os.listdir(folder)) == ["data.raw", "fill"]


def test_a_vm_with_nothing_to_back_up_is_named_once(lab):
    """A QEMU VM whose only disk is read-only: `warning: ro: skipping virtio0 (ro.raw): read-only drive`,
    then `error: ro: ro: nothing to back up: every disk was skipped`: the VM's name twice (the message
    carries it, jobs/preflight.py disks_to_copy, and the log line adds it again), which reads as if a VM
    called "ro: ro" were meant."""
    ro = lab.image("ro.raw", fmt="raw")
    lab.start("ro", ["file=%s,format=raw,if=virtio,readonly=on" % ro])
    code, out = lab.backup("ro")
    assert code == 6 and "nothing to back up" in out, out
    assert "ro: ro:" not in out, out




# -- the VM restarted during the backup ---------------------------------------------------------------
def test_a_qemu_restarted_during_the_copy_does_not_give_an_ok_backup(lab):
    """The VM is restarted while hotvcb copies its disk (the admin's `systemctl restart vm@rs`, or a start
    script that brings QEMU up again after the guest's reboot): the old QEMU quits, a new one starts with
    the same command line, on the same QMP socket and the same image, and writes to the image at once,
    while hotvcb's qemu-img is still reading it. hotvcb finds no overlay of its own on the new QEMU, drops
    the old one (it holds nothing) and seals the backup `OK`, exit 0. The backup holds data the new QEMU
    wrote after the snapshot (not the disk at the snapshot's instant), and `hotvcb verify` later calls it
    DAMAGED (`content SHA-256 mismatch`): the one backup the admin believed good. kvm.md: "A QEMU process
    that dies during the backup fails the VM (no backup that looks complete)"; a QEMU that died and came
    back is no different, and that this run's overlay is no longer in the disk's chain at the end
    (hosts/qemu_overlays.py remove) says so."""
    from kvmguest import slow_convert
    image = lab.image("r.raw", fmt="raw", size=8 * MiB)
    with open(image, "r+b") as f:
        f.write(os.urandom(8 * MiB))
    release = os.path.join(lab.root, "release")
    old = lab.start("rs", ["file=%s,format=raw,if=virtio" % image])
    p, log = run_bg(lab, "rs", slow_convert(os.path.join(lab.root, "bin"), 60, release))
    try:
        wait_until(lambda: "Backing up" in open(log).read(), 60, "the copy")
        lab.qmp("quit")
        old.wait(20)
        for leftover in (os.path.join(lab.inventory, "rs.qmp"), lab.ctl):
            if os.path.exists(leftover):
                os.remove(leftover)
        lab.start("rs", ["file=%s,format=raw,if=virtio" % image])  # the same VM, a new QEMU
        hmp_write(lab, "virtio0", 0x44, "1M", "64k")
        lab.qmp("human-monitor-command", {"command-line": 'qemu-io virtio0 "flush"'})
    finally:
        open(release, "w").close()  # the copy reads on
        code = finish(p)
    out = open(log).read()
    assert "Traceback" not in out, out
    assert code == 6, out
    assert lab.backups("rs") == [], out
