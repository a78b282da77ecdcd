"""The backup job against a real, running QEMU VM, through the CLI (`hotvcb --qemu DIR`).

What must hold, as for ESXi: the backup is the disk at the snapshot instant;
every write the guest made during the backup survives the commit; no overlay
is left behind — also after SIGTERM (exit 2) — and an overlay left by a
SIGKILLed run is committed by the next run.
"""

import glob
import json
import os
import shutil
import signal
import subprocess

import pytest

from qemuvm import (
    PYTHON, GuestWriter, QemuVm, apply, env, first_data_offset, first_l2_entry, hotvcb_argv, kill_tree, make_initial,
    needs_qemu, qemu_img, same_content, short_dir, slow_qemu_img, wait_until,
)

from hotvcb.localshell import LocalShell
from hotvcb.store import manifest as manifests

pytestmark = needs_qemu
MiB = 1 << 20


@pytest.fixture
def lab(tmp_path):
    """Folders for one test; every QEMU started through it is killed at the end."""
    sockets = short_dir("hq")

    class Lab:
        root = tmp_path
        inventory = os.path.join(sockets, "inv")
        control = os.path.join(sockets, "ctl")
        images = str(tmp_path / "images")
        volume = str(tmp_path / "backups")
        workdir = str(tmp_path / "work")
        vms = []

        def start(self, name, image, fmt, shared=False):
            vm = QemuVm(name, image, fmt, self.inventory, self.control, str(tmp_path / (name + ".qemu.log")),
                        shared=shared)
            self.vms.append(vm)
            return vm

        def conf(self, **keys):
            values = {"VM_BACKUP_VOLUME": self.volume, "DISK_BACKUP_FORMAT": "thin", "VM_BACKUP_ROTATION_COUNT": "3"}
            values.update({k: str(v) for k, v in keys.items()})
            path = str(tmp_path / "hotvcb.conf")
            with open(path, "w") as f:
                f.write("".join("%s=%s\n" % kv for kv in values.items()))
            return path

        def argv(self, name, *extra, **keys):
            return hotvcb_argv(self.inventory, "backup", "-m", name, "-g", self.conf(**keys), "-w", self.workdir,
                               *extra)

        def overlays(self):
            return sorted(glob.glob(os.path.join(self.images, "*hotvcb-snapshot-*.qcow2")))

        def leftovers(self):
            """Anything of ours beside the images: overlays and their description files."""
            return sorted(glob.glob(os.path.join(self.images, "*hotvcb-snapshot-*")))

        def backups(self, name, status="ok"):
            return sorted(os.path.dirname(p) for p in glob.glob(os.path.join(self.volume, name, "*", "STATUS." + status)))

    lab = Lab()
    for d in (lab.inventory, lab.control, lab.images, lab.volume):
        os.makedirs(d)
    try:
        yield lab
    finally:
        for vm in lab.vms:
            vm.kill()
        shutil.rmtree(sockets, ignore_errors=True)


def _image(lab, name, fmt, size, random_bytes):
    initial = os.path.join(str(lab.root), name + ".initial.raw")
    make_initial(initial, size, random_bytes)
    image = os.path.join(lab.images, name + "." + ("qcow2" if fmt == "qcow2" else "img"))
    if fmt == "qcow2":
        assert qemu_img("convert", "-f", "raw", "-O", "qcow2", initial, image).returncode == 0
    else:
        shutil.copyfile(initial, image)
    return initial, image


def test_backup_is_the_disk_at_the_snapshot_and_the_commit_keeps_every_write(lab):
    name = "web 1"  # a space: names are literal
    size = 24 * MiB
    initial, image = _image(lab, name, "qcow2", size, 8 * MiB)
    vm = lab.start(name, image, "qcow2", shared=True)
    writer = GuestWriter(vm, size)
    writer.start()
    writer.wait_for(5)
    r = subprocess.run(lab.argv(name), capture_output=True, text=True, timeout=120,
                       env=env(slow_qemu_img(str(lab.root / "bin"))))
    writer.wait_for(len(writer.writes) + 3)  # a few after the commit, straight into the base
    writes = writer.stop()
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "All VMs backed up OK" in out

    when = [w.when for w in writes]
    assert when.count("before") >= 5 and when.count("after") >= 5, when
    assert when.count("unsure") <= 1, when
    (backup,) = lab.backups(name)
    files = sorted(os.listdir(backup))
    assert files == sorted(["STATUS.ok", "hotvcb.json", name + ".json", name + ".vmdk", name + "-flat.vmdk"])
    disk = os.path.join(backup, name + ".vmdk")
    assert qemu_img("check", disk).returncode == 0

    # (1) the backup is the disk at the snapshot instant: the initial content + the writes before it
    before = [w for w in writes if w.when == "before"]
    unsure = [w for w in writes if w.when == "unsure"]
    expected = os.path.join(str(lab.root), "expected-backup.raw")
    shutil.copyfile(initial, expected)
    apply(expected, before)
    if not same_content(expected, disk):
        assert unsure, "the backup is not the disk at the snapshot instant"
        apply(expected, unsure)
        assert same_content(expected, disk), "the backup is not the disk at the snapshot instant"
    assert len(before) < len(writes)  # some writes came later: the backup must not have them

    # (3) no overlay left, the VM writes to its own image again
    assert lab.overlays() == [] and lab.leftovers() == []
    assert vm.chain_depth() == 0

    # the description stands in for the .vmx
    desc = json.loads(open(os.path.join(backup, name + ".json")).read())
    assert desc["name"] == name and desc["hypervisor"] == "qemu"
    assert [d["image"] for d in desc["disks"]] == [image]
    assert "qemu" in desc["qemu_version"]
    manifest = json.loads(open(os.path.join(backup, "hotvcb.json")).read())
    assert manifest["result"] == "ok" and manifest["disks"][0]["files"] == [name + ".vmdk", name + "-flat.vmdk"]

    # (2) after the commit the live disk holds every write, in order
    vm.quit()
    final = os.path.join(str(lab.root), "expected-final.raw")
    shutil.copyfile(initial, final)
    apply(final, writes)
    assert qemu_img("check", image).returncode == 0
    assert same_content(final, image), "a write made during the backup was lost in the commit"


def _written(lab, initial, offset, pattern, length):
    """The initial disk with one guest write: what the disk must hold after it."""
    expected = str(lab.root / "expected.raw")
    shutil.copyfile(initial, expected)
    with open(expected, "r+b") as f:
        f.seek(offset)
        f.write(bytes([pattern]) * length)
    return expected


def _finished(proc, log):
    """The run's exit code and log, once it ended (killed, with its qemu-img, if it hangs)."""
    try:
        rc = proc.wait(120)
    finally:
        if proc.poll() is None:
            kill_tree(proc.pid)
    return rc, open(log).read()


def _only_a_failed_record(lab, name):
    """No good backup, no -partial folder: one STATUS.error folder without disk data."""
    assert lab.backups(name, "ok") == []
    (failed,) = lab.backups(name, "error")
    assert not [f for f in os.listdir(failed) if f.endswith((".vmdk", ".qcow2", ".raw"))]
    assert not glob.glob(os.path.join(lab.volume, name, "*-partial"))


def _start_backup(lab, name, log, **keys):
    out = open(log, "w")
    proc = subprocess.Popen(lab.argv(name, **keys), stdout=out, stderr=subprocess.STDOUT,
                            env=env(slow_qemu_img(str(lab.root / "bin"))))
    out.close()

    def copying():
        text = open(log).read()
        assert proc.poll() is None, text
        if not ("Backing up" in text and lab.overlays()):
            return False
        out = glob.glob(os.path.join(glob.escape(os.path.join(lab.volume, name)), "*-partial", "*.*"))
        return any(os.path.getsize(p) >= MiB for p in out)  # data is flowing, not just a header

    wait_until(copying, 30, "the copy to be under way")
    return proc


@pytest.mark.parametrize("fmt", ["thin", "qcow2"])  # qcow2: the source's content is being digested too
def test_sigterm_during_the_copy_commits_the_overlay_and_exits_2(lab, fmt):
    name = "db"
    size = 32 * MiB  # random data at 4 MiB/s: the copy takes seconds
    initial, image = _image(lab, name, "raw", size, 24 * MiB)
    vm = lab.start(name, image, "raw")
    log = str(lab.root / "run.log")
    proc = _start_backup(lab, name, log, DISK_BACKUP_FORMAT=fmt)
    with vm.qmp() as qmp:  # the guest goes on writing into the overlay
        assert vm.active_file(qmp) != image
        vm.write(qmp, 0xAB, 3 * MiB, 64 * 1024)
    proc.send_signal(signal.SIGTERM)
    rc, text = _finished(proc, log)
    assert rc == 2, text
    assert "interrupted by SIGTERM" in text
    assert lab.overlays() == [] and lab.leftovers() == []
    assert vm.chain_depth() == 0
    _only_a_failed_record(lab, name)
    vm.quit()
    expected = _written(lab, initial, 3 * MiB, 0xAB, 64 * 1024)
    assert same_content(expected, image)


def test_an_overlay_left_by_a_killed_run_is_committed_by_the_next_run(lab):
    name = "app"
    size = 16 * MiB
    initial, image = _image(lab, name, "qcow2", size, 12 * MiB)
    vm = lab.start(name, image, "qcow2")
    log = str(lab.root / "killed.log")
    proc = _start_backup(lab, name, log)
    kill_tree(proc.pid)  # SIGKILL, hotvcb and its qemu-img: nothing can clean up
    proc.wait(10)
    (left,) = lab.overlays()
    with vm.qmp() as qmp:
        assert vm.active_file(qmp) == left
        vm.write(qmp, 0x5C, 1 * MiB, 128 * 1024)

    r = subprocess.run(lab.argv(name), capture_output=True, text=True, timeout=120, env=env())
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "leftover snapshot" in out and "removing unfinished backup" in out
    assert lab.overlays() == [] and lab.leftovers() == []
    assert vm.chain_depth() == 0
    assert not glob.glob(os.path.join(lab.volume, name, "*-partial"))
    (backup,) = lab.backups(name)
    expected = _written(lab, initial, 1 * MiB, 0x5C, 128 * 1024)
    assert same_content(expected, os.path.join(backup, name + ".vmdk"))
    vm.quit()
    assert same_content(expected, image)


def test_cli_refuses_qemu_with_host(lab):
    r = subprocess.run(hotvcb_argv(lab.inventory, "--host", "root@esxi", "backup", "-a"),
                       capture_output=True, text=True, timeout=60, env=env())
    assert r.returncode == 1 and "--qemu and --host" in r.stderr


@pytest.mark.parametrize("fmt, ext", [("qcow2", ".qcow2"), ("raw", ".raw")])
def test_image_formats_for_qemu_hosts(lab, fmt, ext):
    name = "img-" + fmt
    _initial, image = _image(lab, name, "raw", 8 * MiB, 2 * MiB)
    lab.start(name, image, "raw")
    argv = hotvcb_argv(lab.inventory, "backup", "-m", name, "-g", lab.conf(DISK_BACKUP_FORMAT=fmt), "-w", lab.workdir)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env())
    assert r.returncode == 0, r.stdout + r.stderr
    (backup,) = lab.backups(name)
    disk = os.path.join(backup, name + ext)
    assert qemu_img("compare", "-f", fmt, "-F", "raw", disk, image).returncode == 0
    assert lab.overlays() == [] and lab.leftovers() == []


def test_a_missing_or_unmounted_backup_volume_is_refused_unless_told_to_create_it(lab):
    """An unmounted NAS path must not be silently filled on the root filesystem (issue 10 item 6)."""
    name = "nas"
    _, image = _image(lab, name, "raw", 4 * MiB, 1 * MiB)
    lab.start(name, image, "raw")

    def argv(**keys):
        return hotvcb_argv(lab.inventory, "backup", "-m", name, "-g", lab.conf(**keys), "-w", lab.workdir)

    missing = os.path.join(str(lab.root), "nas", "backups")
    r = subprocess.run(argv(VM_BACKUP_VOLUME=missing), capture_output=True, text=True,
                       timeout=120, env=env())
    out = r.stdout + r.stderr
    assert r.returncode == 6, out
    assert "VM_BACKUP_VOLUME %s does not exist" % missing in out and "CREATE_VM_BACKUP_VOLUME=1" in out
    assert not os.path.exists(os.path.join(str(lab.root), "nas")), "nothing was created"
    assert lab.overlays() == []

    # the empty mount point of a share in /etc/fstab that is not mounted (seen in a private mount namespace)
    point = os.path.join(str(lab.root), "mnt nas")
    os.makedirs(point)
    fstab = lab.root / "fstab"
    fstab.write_text("# test\nnas:/export %s nfs noauto 0 0\n" % point.replace(" ", "\\040"))
    wrapped = ["unshare", "-m", "sh", "-c", 'mount --bind "$0" /etc/fstab && exec "$@"', str(fstab)]
    r = subprocess.run(wrapped + argv(VM_BACKUP_VOLUME=point + "/hotvcb", CREATE_VM_BACKUP_VOLUME=1),
                       capture_output=True, text=True, timeout=120, env=env())
    out = r.stdout + r.stderr
    assert r.returncode == 6, out
    assert "%s is a mount point in /etc/fstab but nothing is mounted there" % point in out
    assert os.listdir(point) == []

    r = subprocess.run(argv(VM_BACKUP_VOLUME=missing, CREATE_VM_BACKUP_VOLUME=1),
                       capture_output=True, text=True, timeout=120, env=env())
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(glob.glob(os.path.join(missing, name, "*", "STATUS.ok"))) == 1


@pytest.mark.parametrize("keys", [{"POWER_VM_DOWN_BEFORE_BACKUP": 1}, {"COLD_SNAPSHOT": 1},
                                  {"VM_SHUTDOWN_ORDER": "keepup"}])
def test_modes_that_shut_a_qemu_vm_down_are_refused_before_any_change(lab, keys):
    """hotvcb cannot start a QEMU process again: a mode that shuts the guest down would leave it off."""
    name = "keepup"
    _initial, image = _image(lab, name, "raw", 4 * MiB, 1 * MiB)
    vm = lab.start(name, image, "raw")
    argv = hotvcb_argv(lab.inventory, "backup", "-m", name, "-g", lab.conf(**keys), "-w", lab.workdir)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env())
    assert r.returncode in (1, 6), r.stdout + r.stderr
    assert "cannot start" in r.stdout + r.stderr
    with vm.qmp() as qmp:
        assert qmp.execute("query-status")["status"] == "running"
    assert lab.overlays() == [] and lab.backups(name) == []


def test_a_qemu_that_dies_mid_copy_fails_the_vm_in_one_line_and_keeps_the_guests_writes(lab):
    """QEMU killed while its image is copied: the run ends with the VM failed and why, no traceback, no
    backup that looks complete; the overlay, which now holds the guest's last writes, is not deleted."""
    name = "gone"
    initial, image = _image(lab, name, "raw", 32 * MiB, 24 * MiB)
    vm = lab.start(name, image, "raw")
    log = str(lab.root / "run.log")
    proc = _start_backup(lab, name, log)
    with vm.qmp() as qmp:
        vm.write(qmp, 0x3D, 2 * MiB, 64 * 1024)  # lands in the overlay
        vm.flush(qmp)  # as a guest's fsync: a write only cached in QEMU dies with it
    vm.kill()
    rc, text = _finished(proc, log)
    assert rc == 6, text  # ghettoVCB's "all VMs failed"
    assert "Traceback" not in text and "internal error" not in text, text
    _only_a_failed_record(lab, name)
    (overlay,) = lab.overlays()
    assert overlay in text, text  # the log names what holds the guest's writes
    restored = str(lab.root / "restored.raw")
    assert qemu_img("convert", "-O", "raw", overlay, restored).returncode == 0
    expected = _written(lab, initial, 2 * MiB, 0x3D, 64 * 1024)
    assert same_content(expected, restored)


def _verify(lab, backup):
    return subprocess.run(hotvcb_argv(lab.inventory, "verify", backup), capture_output=True, text=True,
                          timeout=120, env=env())


def _flip(path, offset, mask=0xFF):
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ mask]))


@pytest.mark.parametrize("source", ["qcow2", "raw"])
def test_a_qcow2_backup_records_the_disks_content_taken_from_the_source_and_verify_checks_it(lab, source):
    """Issue 8: the seal does not read qemu-img's copy back. The manifest's content entry (no file
    proof: the seal's own digest of the copy would have written one) is the virtual disk, and a byte
    flipped in the copy's data or its L2 table fails verify naming the disk."""
    name = "content-" + source
    size = 24 * MiB
    _initial, image = _image(lab, name, source, size, 6 * MiB)
    vm = lab.start(name, image, source, shared=True)
    writer = GuestWriter(vm, size)
    writer.start()
    writer.wait_for(3)
    argv = hotvcb_argv(lab.inventory, "backup", "-m", name, "-g", lab.conf(DISK_BACKUP_FORMAT="qcow2"),
                       "-w", lab.workdir)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env(slow_qemu_img(str(lab.root / "bin"))))
    writer.stop()
    assert r.returncode == 0, r.stdout + r.stderr
    (backup,) = lab.backups(name)
    disk = os.path.join(backup, name + ".qcow2")
    data = json.loads(open(os.path.join(backup, "hotvcb.json")).read())
    entry = data["files"][name + ".qcow2"]
    assert data["version"] == 3 and set(entry) == {"size", "content"}, entry
    assert entry["size"] == os.path.getsize(disk) and entry["content"]["format"] == "qcow2"
    raw = str(lab.root / "backup.raw")
    assert qemu_img("convert", "-O", "raw", disk, raw).returncode == 0
    witness = manifests.digest_file(LocalShell(), raw).entry()
    assert {k: v for k, v in entry["content"].items() if k != "format"} == witness
    assert _verify(lab, backup).returncode == 0

    pristine = open(disk, "rb").read()
    _flip(disk, first_data_offset(disk) + 4097)
    if source == "raw":  # restore's own check reads the content too (before verify marks it damaged)
        target = str(lab.root / "restored")
        os.makedirs(target)
        r = subprocess.run([PYTHON, "-m", "hotvcb", "restore", backup, "--kvm", target], capture_output=True,
                           text=True, timeout=120, env=env())
        assert r.returncode == 6 and "fails verification" in r.stdout + r.stderr, r.stdout + r.stderr
        assert os.listdir(target) == []  # nothing half-written
    r = _verify(lab, backup)
    assert r.returncode != 0 and name + ".qcow2: content SHA-256 mismatch (virtual bytes" in r.stdout + r.stderr, (
        r.stdout + r.stderr)
    open(disk, "wb").write(pristine)
    offset, _value = first_l2_entry(disk)
    _flip(disk, offset + 5, 0x01)  # bit 16: the cluster's host offset moves by 64 KiB
    r = _verify(lab, backup)
    assert r.returncode != 0 and name + ".qcow2" in r.stdout + r.stderr, r.stdout + r.stderr


def test_a_source_the_reader_refuses_leaves_the_copy_to_the_seal(lab):
    """A qcow2 image on a backing file of the user's: its content is partly elsewhere, so the copy is
    digested after the copy as before (a version-2 file entry), and verifies."""
    name = "chained"
    _initial, base = _image(lab, name, "qcow2", 8 * MiB, 2 * MiB)
    top = os.path.join(lab.images, name + "-top.qcow2")
    assert qemu_img("create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", base, top).returncode == 0
    lab.start(name, top, "qcow2")
    argv = hotvcb_argv(lab.inventory, "backup", "-m", name, "-g", lab.conf(DISK_BACKUP_FORMAT="qcow2"),
                       "-w", lab.workdir)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env())
    assert r.returncode == 0, r.stdout + r.stderr
    (backup,) = lab.backups(name)
    data = json.loads(open(os.path.join(backup, "hotvcb.json")).read())
    entry = data["files"][name + "-top.qcow2"]
    assert data["version"] == 2 and "content" not in entry and "sha256_of_blocks" in entry, entry
    assert same_content(base, os.path.join(backup, name + "-top.qcow2"))
    assert _verify(lab, backup).returncode == 0


def test_a_compressed_qcow2_backup_carries_its_files_proof_and_verifies_as_an_archive(lab):
    name = "packed"
    _initial, image = _image(lab, name, "raw", 8 * MiB, 2 * MiB)
    lab.start(name, image, "raw")
    argv = hotvcb_argv(lab.inventory, "backup", "-m", name, "-g",
                       lab.conf(DISK_BACKUP_FORMAT="qcow2", ENABLE_COMPRESSION=1), "-w", lab.workdir)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env())
    assert r.returncode == 0, r.stdout + r.stderr
    (archive,) = glob.glob(os.path.join(lab.volume, name, "*.gz"))
    r = _verify(lab, archive)
    assert r.returncode == 0 and "intact" in r.stdout + r.stderr, r.stdout + r.stderr
