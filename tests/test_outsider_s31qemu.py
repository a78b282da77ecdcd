"""Outside tests (round 31) of the QEMU/KVM side: bare QEMU driven over QMP (odd names, a qcow2 on a
backing chain, raw disks, two disks, kill -9 mid-copy then `cleanup`, two runs on one VM, a QMP path that
is no socket) and restores across hypervisors (an ESXi backup restored for KVM, a QEMU backup restored to
esxisim). Each QEMU runs with `-S` or paused/resumed, TCG, disks of a few MiB. A test marked
xfail(strict) is a defect the current code has.
"""
import glob
import os
import shutil
import signal
import subprocess
import time
from datetime import datetime, timedelta

import pytest

from qemulab import MiB, PYTHON, env, finish, hmp_write, opened, run_bg, same
from qemuvm import needs_qemu, qemu_img, slow_qemu_img, wait_until
from simhost import VOLUME, hotvcb, make_host, needs_root, write_conf

pytestmark = needs_qemu


@pytest.fixture
def lab(tmp_path):
    with opened(tmp_path, "q31") as made:
        yield made


def cli(*args, timeout=300):
    r = subprocess.run([PYTHON, "-m", "hotvcb"] + [str(a) for a in args], capture_output=True, text=True,
                       timeout=timeout, env=env())
    return r.returncode, r.stdout + r.stderr


def graph(lab):
    """What QEMU's block layer holds: jobs, named nodes' files, each device's active file, dirty bitmaps."""
    blocks = lab.qmp("query-block")
    return (lab.qmp("query-block-jobs"), sorted(n["file"] for n in lab.qmp("query-named-block-nodes")),
            [(d["device"], d["inserted"]["file"], d["inserted"].get("dirty-bitmaps", [])) for d in blocks])


# -- what works (kept as guards) ------------------------------------------------------------------------

def test_odd_names_two_disks_and_a_backing_chain_restore_equal_to_kvm_and_esxi(lab, tmp_path):
    """A VM named `Wéb 'x' "y" z` with a qcow2 on a backing chain (names with umlauts and quotes) and a raw
    data disk: backed up OK, restored for KVM (qcow2 and raw) and to esxisim as VMDKs, each disk equal to
    the disk at backup time (qemu-img compare)."""
    name = "Wéb 'x' \"y\" z"
    base = lab.image("bäse 'q'.qcow2")
    top = os.path.join(lab.images, "töp \"d\".qcow2")
    r = qemu_img("create", "-f", "qcow2", "-F", "qcow2", "-b", base, top)
    assert r.returncode == 0, r.stderr
    data = lab.image("dätä.raw", fmt="raw", pattern=0x11)
    lab.start(name, ["file=%s,format=qcow2,if=virtio" % top, "file=%s,format=raw,if=virtio" % data])
    hmp_write(lab, "virtio0", 0x77, 0, 65536)
    rc, out = lab.backup(name)
    assert rc == 0, out
    (backup,) = lab.backups(name)
    for fmt in ("qcow2", "raw"):
        target = tmp_path / ("kvm-" + fmt)
        target.mkdir()
        rc, out = cli("restore", backup, "--kvm", target, "--format", fmt)
        assert rc == 0, out
        folder = target / name
        assert same(top, str(folder / ("sda." + fmt))) and same(data, str(folder / ("sdb." + fmt)))
    host = make_host(tmp_path / "host")
    try:
        inside = "%s/%s/%s" % (VOLUME, name, os.path.basename(backup))
        os.makedirs(os.path.dirname(host.real(inside)))
        shutil.copytree(backup, host.real(inside))
        r = hotvcb(host, "restore", inside, "--datastore", "datastore1")
        assert r.returncode == 0, r.stdout + r.stderr
        folder = host.real("/vmfs/volumes/datastore1/" + name)
        assert same(top, os.path.join(folder, "sda.vmdk")) and same(data, os.path.join(folder, "sdb.vmdk"))
    finally:
        host.stop()


def test_kill9_mid_copy_then_cleanup_leaves_qemu_as_it_was_and_the_next_backup_is_right(lab):
    """hotvcb is SIGKILLed while it copies the second of two disks; the guest writes on. `cleanup` commits
    the overlays: no job, no extra node, no bitmap left, the VM running; the next backup equals the disk."""
    system = lab.image("s.qcow2", size=8 * MiB)
    data = lab.image("d.raw", fmt="raw", size=8 * MiB)
    with open(data, "r+b") as f:
        f.write(os.urandom(3 * MiB))
    lab.start("k", ["file=%s,format=qcow2,if=virtio" % system, "file=%s,format=raw,if=virtio" % data])
    lab.qmp("cont")
    before = graph(lab)
    p, log = run_bg(lab, "k", slow_qemu_img(os.path.join(lab.root, "bin"), "1M"))
    try:
        wait_until(lambda: "d.raw (virtio1" in open(log).read() or p.poll() is not None, 60, "the second copy")
        hmp_write(lab, "virtio0", 0x33, 0, 65536)
        hmp_write(lab, "virtio1", 0x34, 0, 65536)
        os.kill(p.pid, signal.SIGKILL)
    finally:
        finish(p)
    assert lab.overlays(), open(log).read()
    rc, out = lab.hotvcb("--qemu", lab.inventory, "cleanup", "-g", lab.conf())
    assert rc == 0, out
    assert graph(lab) == before and not lab.overlays()
    assert lab.qmp("query-status")["status"] == "running"
    assert not [e for e in os.listdir(os.path.join(lab.volume, "k")) if e.endswith("-partial")]
    hmp_write(lab, "virtio1", 0x35, 65536, 65536)
    rc, out = lab.backup("k")
    assert rc == 0, out
    lab.qmp("stop")
    (backup,) = lab.backups("k")
    assert same(system, os.path.join(backup, "s.qcow2")) and same(data, os.path.join(backup, "d.qcow2"))


# -- defects --------------------------------------------------------------------------------------------

@needs_root
def test_an_esxi_vm_with_a_double_quote_in_its_name_restores_to_kvm(tmp_path):
    """The ESXi host dies; the admin moves its VMs to a KVM host as restore.md section 5 promises ("any
    good backup folder — made on ESXi ... — restores as a KVM VM"): `hotvcb restore BACKUP --kvm DIR
    --format raw`. One VM is called `Web "prod"` (ESXi allows the quote; its files are `Web "prod".vmdk`,
    the descriptor's extent line `RW 2048 VMFS "Web "prod"-flat.vmdk"`, which ESXi and the ESXi restore
    read fine). The KVM restore fails: `qemu-img info failed (exit 1): ... Could not open '.../Web ':
    No such file or directory`: qemu's VMDK parser ends the extent name at the first inner quote. hotvcb
    already hands qemu-img a temporary copy of descriptors it must fix (blank lines); a quote in the
    extent's name needs the same (a link without the quote). Expected: restored OK, the disk equal."""
    host = make_host(tmp_path / "host")
    try:
        name = 'Web "prod"'
        host.create_vm(name, "datastore1", [{"size": "1M"}], power="on")
        r = hotvcb(host, "backup", "-m", name, "-g", write_conf(host))
        assert r.returncode == 0, r.stdout + r.stderr
        (backup,) = glob.glob(os.path.join(glob.escape(host.real(VOLUME)), "*", "*"))
        flat = os.path.join(backup, name + "-flat.vmdk")
        assert os.path.exists(flat), os.listdir(backup)
        target = tmp_path / "kvm"
        target.mkdir()
        rc, out = cli("restore", backup, "--kvm", target, "--format", "raw")
        assert rc == 0, out
        r = qemu_img("compare", "-f", "raw", "-F", "raw", flat, str(target / name / "sda.raw"))
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        host.stop()


def test_a_second_run_on_the_same_vm_does_not_remove_the_first_runs_snapshot(lab):
    """The VM has two QMP monitors (`-qmp unix:/run/qmp/vm.qmp` for the nightly job, `-qmp
    unix:/run/qmp-offsite/vm.qmp` for the offsite job: kvm.md allows one run per folder), and the admin
    set ALLOW_VMS_WITH_SNAPSHOTS_TO_BE_BACKEDUP=1 (as on the ESXi hosts). Both jobs start together and
    their backup folders (on two volumes) are named after the same second, so their snapshots get the same
    name. The second run logs `snapshot 'hotvcb-snapshot-T' ... belongs to run <first>, which is still
    running; leaving it`, then `Creating Snapshot "hotvcb-snapshot-T"`, then `snapshot hotvcb-snapshot-T
    appeared after the timeout; removing it` and commits the FIRST run's overlay under it while that run
    copies. The first run then fails (`its QEMU writes ... without the snapshot's overlay above it: the
    QEMU was restarted`), the nightly backup is lost. The overlay path (`<image>.hotvcb-snapshot-<time>`) and
    its `.description` are the same file for both runs. Expected: the second run never takes another live
    run's snapshot for its own; the first run's backup is sealed OK. (The seconds are lined up here by
    folders already taken on both volumes, which makes each run claim the next free second.)"""
    image, inv2, vol2, conf2 = lab.two_qmp_folders("ALLOW_VMS_WITH_SNAPSHOTS_TO_BE_BACKEDUP=1\n")
    now = datetime.now().replace(microsecond=0)
    for volume in (lab.volume, vol2):  # both runs claim the second `now + 8`
        for s in range(-2, 8):
            os.makedirs(os.path.join(volume, "vm", "vm-" + (now + timedelta(seconds=s)).strftime("%Y-%m-%d_%H-%M-%S")))
    slow = slow_qemu_img(os.path.join(lab.root, "bin"), "256K")  # a copy of ~12 s
    p1, log1 = run_bg(lab, "vm", slow, ALLOW_VMS_WITH_SNAPSHOTS_TO_BE_BACKEDUP=1)
    log2 = os.path.join(lab.root, "offsite.log")
    p2 = None
    try:
        wait_until(lambda: "Backing up" in open(log1).read() or p1.poll() is not None, 60, "the first copy")
        assert datetime.now() < now + timedelta(seconds=8), "too slow to line the seconds up"
        with open(log2, "w") as out:
            p2 = subprocess.Popen([PYTHON, "-m", "hotvcb", "--qemu", inv2, "backup", "-m", "vm", "-g", conf2, "-w",
                                   lab.workdir + "2"], stdout=out, stderr=subprocess.STDOUT, env=env(slow))
        hmp_write(lab, "virtio0", 0x21, 0, 65536)
        finish(p2)
    finally:
        if p2 is not None:
            finish(p2)
        code1 = finish(p1)
    text1, text2 = open(log1).read(), open(log2).read()
    stamp = (now + timedelta(seconds=8)).strftime("%Y-%m-%d_%H-%M-%S")
    assert "hotvcb-snapshot-" + stamp in text1 and "hotvcb-snapshot-" + stamp in text2, text1 + text2  # lined up
    assert not lab.overlays() and lab.qmp("query-block")[0]["inserted"]["file"] == image
    assert "appeared after the timeout; removing it" not in text2, text2
    assert code1 == 0 and lab.backups("vm"), text1 + "\n---\n" + text2


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_a_qmp_path_that_is_not_a_socket_is_named_as_such(lab, kind):
    """The admin's start script had a typo (`-qmp unix:/run/qmp/web.sock`), and a deploy tool once left a
    placeholder `web.qmp` as an empty regular file (or `mkdir -p /run/qmp/web.qmp`). `hotvcb --qemu
    /run/qmp backup -m web` says `QMP /run/qmp/web.qmp: QEMU is not listening (Connection refused)`, which
    sends the admin to check whether QEMU runs (it does) and restart it. hosts/qmp.py maps ECONNREFUSED of
    connect() to that text without looking at what the path is. The error should say the path is no
    socket (a regular file / a folder), as the ESXi side names a .vmx that is no file."""
    path = os.path.join(lab.inventory, "web.qmp")
    if kind == "file":
        open(path, "w").close()
    else:
        os.makedirs(path)
    rc, out = lab.backup("web")
    assert rc == 6, out
    (line,) = [l for l in out.splitlines() if "error: web:" in l]
    assert "not listening" not in line and "socket" in line, line


def test_a_qmp_socket_removed_mid_backup_is_not_reported_as_qemu_gone(lab):
    """During the nightly copy the VM's QMP socket disappears while QEMU goes on running (systemd removed
    the unit's RuntimeDirectory /run/qmp when a sibling unit sharing it stopped; a tmp cleaner). hotvcb
    cannot commit its overlay and says: `its QEMU is gone (QMP ...: QEMU is not listening (No such file or
    directory)); the guest's writes since the snapshot are in <overlay>: `qemu-img commit` each into its
    image before the VM is started again`. QEMU is NOT gone: the guest runs and writes into the overlay
    (query-block shows it as the active layer), and the advice is for a VM that is off. The admin, told
    QEMU died, restarts the service (a second QEMU on the base image, under the running one) or runs
    `qemu-img commit` against an image QEMU still writes. hotvcb knew the QEMU process (it read its
    /proc/<pid>/cwd and fds through the socket): expected, an error that says the socket went away while
    QEMU (pid N) still runs on the overlay, not that QEMU is gone."""
    image = lab.image("a.raw", fmt="raw", size=8 * MiB)
    with open(image, "r+b") as f:
        f.write(os.urandom(3 * MiB))
    qemu = lab.start("vm", ["file=%s,format=raw,if=virtio" % image])
    lab.qmp("cont")
    p, log = run_bg(lab, "vm", slow_qemu_img(os.path.join(lab.root, "bin"), "1M"))
    try:
        wait_until(lambda: "Backing up" in open(log).read() or p.poll() is not None, 60, "the copy")
        hmp_write(lab, "virtio0", 0x21, 0, 65536)
        os.unlink(os.path.join(lab.inventory, "vm.qmp"))
    finally:
        code = finish(p)
    out = open(log).read()
    assert code == 6 and lab.overlays(), out
    assert qemu.poll() is None and lab.qmp("query-block")[0]["inserted"]["file"] != image  # still running, on it
    assert "QEMU is gone" not in out and "its QEMU is gone" not in out, out
    assert str(qemu.pid) in out, out


def test_a_vm_named_with_a_leading_dot_is_listed_and_verified_with_the_others(lab):
    """A QEMU VM `.web` (the admin's naming for infrastructure VMs; ESXi and libvirt allow it too) is backed
    up every night: `OK 1/1`, its folder `<volume>/.web/.web-<time>`, and `status` shows `OK backup .web:
    newest good backup ..., never verified`. The weekly `hotvcb verify --all -g hotvcb.conf` checks `db` and
    says `1 backup(s) checked`, never `.web`, so status keeps saying "never verified"; `hotvcb list` shows
    only db (commands/list_cmd.py vm_names skips every entry starting with '.', and verify --all walks the
    same way). The backup itself does not refuse the name (layout.backup_unnameable refuses only names of
    dots and spaces). Expected: `list` and `verify --all` include `.web`'s backup."""
    for name in (".web", "db"):
        image = lab.image(name + ".raw", fmt="raw", size=MiB)
        lab.start(name, ["file=%s,format=raw,if=virtio" % image])
    rc, out = lab.hotvcb("--qemu", lab.inventory, "backup", "-a", "-g", lab.conf(), "-w", lab.workdir)
    web = os.path.join(lab.volume, ".web")
    assert rc == 0 and [e for e in os.listdir(web) if os.path.exists(os.path.join(web, e, "STATUS.ok"))], out
    rc, out = lab.hotvcb("--qemu", lab.inventory, "status", "-g", lab.conf())
    assert ".web: newest good backup" in out, out
    rc, listed = lab.hotvcb("list", "--json", "-g", lab.conf())
    rc2, verified = lab.hotvcb("verify", "--all", "-g", lab.conf())
    assert rc == 0 and rc2 == 0, listed + verified
    assert '"vm": ".web"' in listed, listed
    assert "2 backup(s) checked" in verified and ".web-" in verified, verified


def test_a_full_work_directory_is_left_as_it_was(lab, tmpfs):
    """`-w /var/tmp/hotvcb` sits on a small /var that filled up (logs). Each nightly run says `warning: cannot
    use work directory /var/tmp/hotvcb/hotvcb-<run>: No space left on device`, backs the VM up OK (right),
    and leaves `hotvcb-<run>/run.txt` (empty) behind: WORKDIR_DEBUG is 0, so the work directory should be
    gone at the end (backup-format.md: "removed at the end unless WORKDIR_DEBUG=1"), and neither the next run nor `cleanup` removes these. They pile
    up, one per run, in the file system that is already full. Expected: a work directory the run could not
    use is removed (or never left), as after a normal run."""
    work = str(tmpfs("work", "64k"))
    with open(os.path.join(work, "fill"), "wb") as f:
        try:
            f.write(b"x" * 200000)
        except OSError:
            pass
    image = lab.image("a.raw", fmt="raw", size=MiB)
    lab.start("vm", ["file=%s,format=raw,if=virtio" % image])
    lab.workdir = work
    for _ in range(2):
        rc, out = lab.backup("vm")
        assert rc == 0 and "cannot use work directory" in out, out
    rc, out = lab.hotvcb("--qemu", lab.inventory, "cleanup", "-g", lab.conf(), "-w", work)
    assert rc == 0, out
    assert sorted(os.listdir(work)) == ["fill"], [(r, fs) for r, _d, fs in os.walk(work)]


def test_a_disk_run_with_qemu_snapshot_mode_is_named_clearly(lab):
    """A test VM is started with `-drive file=/srv/vms/t.qcow2,...,snapshot=on` (or QEMU's global
    `-snapshot`: every write goes to a temporary qcow2 that QEMU creates in /var/tmp and unlinks at once, and
    is thrown away when QEMU exits). The nightly `-a` run fails that VM with `error: vm: qemu-img measure
    failed (exit 1): qemu-img: Could not open '/var/tmp/vl.WYNZZ3': ... No such file or directory`: the
    admin sees a file name they never made and a tool failing, not the reason. hotvcb takes the deleted
    temporary overlay (QEMU reports the disk as `json:{... "filename": "/var/tmp/vl.XXXX"}` over the image)
    for the image to copy. Expected: one clear line naming the disk and saying it runs in QEMU's snapshot
    mode (a temporary overlay whose writes QEMU discards), not a qemu-img error about a vanished file."""
    image = lab.image("t.qcow2")
    lab.start("vm", ["file=%s,format=qcow2,if=virtio,snapshot=on" % image])
    hmp_write(lab, "virtio0", 0x5C, 0, 65536)
    rc, out = lab.backup("vm")
    assert "qemu-img measure failed" not in out and "/var/tmp/vl." not in out, out
    assert "snapshot=on" in out or "snapshot mode" in out or "temporary" in out, out
    assert not lab.overlays()
