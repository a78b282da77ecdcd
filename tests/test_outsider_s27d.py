"""Outside tests (round 27, d) of today's KVM fixes, broken as admins do: a QEMU started with -daemonize and
relative image names, a QMP socket reached through a proxy, a block device deep in a folder tree, two LVs
whose names differ by a dotted suffix, who may read a device's overlay, an orphaned overlay that holds the
guest's writes; a storage pool volume of a running domain whose pool was stopped, an iSCSI LUN in a copy.
Every QEMU runs with `-S` (no guest code); libvirt domains have no kernel (backed up while off unless a
backup job is needed).
"""
import glob
import os
import shutil
import signal
import subprocess
import sys

import pytest

from qemulab import MiB, disk_of, opened
from qemuvm import PYTHON, env, loop_devices, needs_qemu, qemu_img, wait_until  # noqa: F401

from hotvcb.hosts.qemu_overlay_names import OVERLAY_SUFFIX, overlay_path

from test_outsider_s27kvm import lun_domain_backed_up, volume_domain


@pytest.fixture
def lab(tmp_path):
    with opened(tmp_path, "h27d") as made:
        yield made


def _clean_device_overlays(*devices):
    """Remove hotvcb's overlays (and their descriptions) of exactly these devices: the overlay folder is shared
    by every test worker and every developer's run, and one device's name may begin another's (/dev/loop1 and
    /dev/loop10, every /tmp path): a prefix would delete the overlay another test's backup is writing to."""
    for device in devices:
        stem = overlay_path(device, "x")[:-len("x" + OVERLAY_SUFFIX)]  # `<device's stem>.`
        for f in glob.glob(glob.escape(stem) + "*"):
            os.remove(f)


def _overlay_in_use(lab, pattern):
    """The overlay matching `pattern` once the VM's QEMU writes to it (its snapshot transaction done), else None.
    QEMU creates an overlay as a qcow2 of size 0 with no backing file and only then sizes it and names its
    backing: a file `qemu-img info` reads may be that stub, and a QEMU killed then leaves one where any write
    fails (`write failed: Input/output error`, past its end)."""
    found = glob.glob(pattern)
    tops = {(d.get("inserted") or {}).get("file") for d in lab.qmp("query-block")}
    return found[0] if len(found) == 1 and found[0] in tops else None


# -- relative image names ----------------------------------------------------------------------------
@needs_qemu
def test_a_daemonized_qemu_with_a_relative_image_name_is_backed_up(lab):
    """`cd /srv/vms/web && qemu-system-x86_64 -daemonize -drive file=web.qcow2 ...` (how init scripts and
    admins' start scripts run QEMU in the background) is exactly the case today's fix promises to back up
    ("an image named relative to QEMU's working directory is found there"), yet the backup does not get
    web.qcow2: QEMU's -daemonize does chdir("/") after opening its images, so /proc/<pid>/cwd is `/` and
    hotvcb looks for `/web.qcow2`. The user gets a skipped/failed disk (or, were a /web.qcow2 there, a
    copy of the wrong file). hotvcb/hosts/qemu_blockgraph.py absolute_names / qmp.py QmpClient.peer_cwd take
    the process's cwd *now* for the one at startup."""
    image = lab.image("web.qcow2")
    lab.start_daemon("web", ["file=web.qcow2,format=qcow2,if=virtio"], cwd=lab.images)
    code, out = lab.backup("web")
    assert "Traceback" not in out, out
    assert code == 0, out
    (backup,) = lab.backups("web")
    assert qemu_img("compare", "-U", image, disk_of(backup)).returncode == 0
    assert not glob.glob("/web.qcow2*")


PROXY = r"""
import os, socket, sys, threading
listen, target = sys.argv[1], sys.argv[2]
srv = socket.socket(socket.AF_UNIX); srv.bind(listen); srv.listen(8)
print("ready", flush=True)
def pump(a, b):
    try:
        while True:
            d = a.recv(65536)
            if not d:
                break
            b.sendall(d)
    except OSError:
        pass
    for s in (a, b):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
while True:
    c, _ = srv.accept()
    u = socket.socket(socket.AF_UNIX); u.connect(target)
    threading.Thread(target=pump, args=(c, u), daemon=True).start()
    threading.Thread(target=pump, args=(u, c), daemon=True).start()
"""


@needs_qemu
def test_a_qmp_socket_behind_a_proxy_does_not_back_up_the_proxys_file(lab):
    """The admin's inventory socket is a forwarder (socat UNIX-LISTEN:/run/qmp/web.qmp,fork
    UNIX-CONNECT:/srv/vms/web/monitor.sock, a container's socket bind-mounted through a proxy) started
    from the admin's home, which holds an old `web.qcow2`. QEMU was started in /srv/vms/web with
    `file=web.qcow2`. The backup says OK and its vda.qcow2 is the old file in the proxy's directory, not
    the VM's disk: a backup that restores the wrong data, found out at the disaster. SO_PEERCRED names
    the proxy, not QEMU; hotvcb/hosts/qmp.py QmpClient.peer_cwd uses whatever process it names without
    checking that it is the QEMU (e.g. that it holds the image open)."""
    vm_dir = os.path.join(lab.root, "vm")
    decoy_dir = os.path.join(lab.root, "admin-home")
    os.makedirs(vm_dir)
    os.makedirs(decoy_dir)
    image = lab.image("web.qcow2", pattern=0x5A, folder=vm_dir)
    decoy = lab.image("web.qcow2", pattern=0x33, folder=decoy_dir)
    real_sock = os.path.join(lab.sockets, "real.qmp")
    lab.start("web", ["file=web.qcow2,format=qcow2,if=virtio"], cwd=vm_dir, sock=real_sock)
    proxy = subprocess.Popen([sys.executable, "-c", PROXY, os.path.join(lab.inventory, "web.qmp"), real_sock],
                             cwd=decoy_dir, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    lab.procs.append(proxy)
    assert proxy.stdout.readline().strip() == b"ready"
    code, out = lab.backup("web")
    assert "Traceback" not in out, out
    for b in lab.backups("web"):  # whatever it says: a backup that holds a disk holds the VM's disk
        assert qemu_img("compare", "-U", decoy, disk_of(b)).returncode != 0, "the proxy's file was backed up"
        assert qemu_img("compare", "-U", image, disk_of(b)).returncode == 0
    assert code != 0 or lab.backups("web"), out
    for left in glob.glob(os.path.join(glob.escape(decoy_dir), "web.qcow2.*")):
        os.remove(left)


# -- block devices ---------------------------------------------------------------------------------
@needs_qemu
def test_a_block_device_deep_in_a_folder_tree_is_backed_up(lab, loop_devices):  # noqa: F811
    """A VM whose disk is a device reached by a long path (an LV linked into the VM's folder
    /srv/kvm/customers/<customer>/<vm>/disks/<disk>, a /dev/disk/by-path/ip-...-iscsi-iqn....-lun-N
    name): a file image there backs up fine, its overlay is named by its basename. For the device, the
    overlay in /var/lib/hotvcb/qemu-overlays is named after the whole path with each `/` as three bytes
    `%2F`, plus `.hotvcb-snapshot-<time>.qcow2.description`: past 255 bytes the snapshot fails with
    `File name too long`, every night (hotvcb/hosts/qemu_overlay_names.py _device_stem/overlay_path: no
    bound on the name's length, e.g. a digest for long paths)."""
    backing = os.path.join(lab.root, "lv.bin")
    with open(backing, "wb") as f:
        f.write(os.urandom(MiB))
        f.truncate(4 * MiB)
    dev = loop_devices(backing)
    deep = os.path.join(lab.root, "customers", "acme-industrial-holdings-europe-gmbh", "erp-production-01", "disks")
    while len(deep) < 190:
        deep = os.path.join(deep, "tier-1-replicated")
    os.makedirs(deep)
    link = os.path.join(deep, "data-disk-1")
    os.symlink(dev, link)
    lab.start("deep", ["file=%s,format=raw,if=virtio" % link])
    try:
        code, out = lab.backup("deep")
    finally:
        _clean_device_overlays(link)
    assert "Traceback" not in out, out
    assert code == 0, out
    (backup,) = lab.backups("deep")
    assert qemu_img("compare", "-U", "-f", "raw", dev, disk_of(backup)).returncode == 0


def _slow_qemu_img(bin_dir, release):
    """qemu-img whose convert waits (at most 30 s) for `release` to exist: a copy that runs while the test acts."""
    os.makedirs(bin_dir, exist_ok=True)
    with open(os.path.join(bin_dir, "qemu-img"), "w") as f:
        f.write('#!/bin/sh\nif [ "$1" = convert ]; then n=0; while [ ! -e "%s" ] && [ $n -lt 300 ]; do sleep 0.1; '
                'n=$((n+1)); done; fi\nexec %s "$@"\n' % (release, shutil.which("qemu-img")))
    os.chmod(os.path.join(bin_dir, "qemu-img"), 0o755)
    return bin_dir


@needs_qemu
def test_the_backup_of_one_lv_does_not_stop_the_backup_of_the_vm_on_a_dotted_neighbour(lab, loop_devices):  # noqa: F811
    """Two VMs on LVs of one volume group, `web` (VM web) and `web.data` (VM db: LVM allows dots in names),
    backed up by two nightly jobs (two QMP folders, `-j web-nightly` and `-j db-nightly`) that overlap. While
    db's copy runs, web's backup, a different VM with no snapshot at all, is refused every time: `web has delta
    files %2Fdev%2Fvg0%2Fweb.data.hotvcb-snapshot-<time>.qcow2; not backing it up`, ERROR, exit 6. Now that
    every device's overlay is in one shared folder (/var/lib/hotvcb/qemu-overlays) whatever folder the
    device is in, one device's escaped path being a prefix of another's makes its overlays look like the
    other VM's (hotvcb/hosts/qemu_overlay_names.py overlay_name: `<stem>.<anything>.qcow2` is taken for a
    snapshot called `data.hotvcb-snapshot-…`; delta_files)."""
    vg = os.path.join(lab.root, "vg0")
    os.makedirs(vg)
    links = {}
    for lv in ("web", "web.data"):
        backing = os.path.join(lab.root, lv + ".bin")
        with open(backing, "wb") as f:
            f.write(os.urandom(MiB))
            f.truncate(4 * MiB)
        links[lv] = os.path.join(vg, lv)
        os.symlink(loop_devices(backing), links[lv])
    second = os.path.join(lab.sockets, "inv2")  # web's QMP folder: another job's inventory on the same host
    os.makedirs(second)
    lab.start("web", ["file=%s,format=raw,if=virtio" % links["web"]], sock=os.path.join(second, "web.qmp"))
    lab.start("db", ["file=%s,format=raw,if=virtio" % links["web.data"]])
    stem = links["web"].replace("/", "%2F")
    release = os.path.join(lab.root, "release")
    bin_dir = _slow_qemu_img(os.path.join(lab.root, "bin"), release)
    try:
        run = subprocess.Popen([PYTHON, "-m", "hotvcb", "--qemu", lab.inventory, "backup", "-m", "db", "-j", "db-nightly",
                                "-g", lab.conf(), "-w", lab.workdir], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env=env(bin_dir), start_new_session=True)
        try:
            wait_until(lambda: glob.glob("/var/lib/hotvcb/qemu-overlays/" + glob.escape(stem) + ".data.*.qcow2"), 30,
                       "db's overlay")
            code, out = lab.hotvcb("--qemu", second, "backup", "-m", "web", "-j", "web-nightly", "-g",
                                   lab.conf(), "-w", lab.workdir + "2")
        finally:
            open(release, "w").close()
            if run.wait(60) is None:
                os.killpg(run.pid, signal.SIGKILL)
    finally:
        open(release, "w").close()
        _clean_device_overlays(*links.values())
    assert "Traceback" not in out, out
    assert code == 0, out
    assert len(lab.backups("web")) == 1, out


@needs_qemu
def test_the_overlay_of_a_device_disk_is_not_readable_by_every_local_user(lab, loop_devices):  # noqa: F811
    """A VM on an LV (/dev/vg0/db: 0660 root:disk, like every block device node: no ordinary user reads the
    guest's disk). During each backup every write of the guest (database pages, password hashes, keys)
    goes to /var/lib/hotvcb/qemu-overlays/%2Fdev%2Fvg0%2Fdb.hotvcb-snapshot-<time>.qcow2, which QEMU
    creates 0644 in a folder hotvcb made 0755: any local user (a web server's account, a shell user) can read
    it for the whole copy. Beside a file image the image's own folder guards its overlay; the new shared
    folder guards nothing (hotvcb/hosts/qemu_overlays.py Overlays.create: makedirs(DEVICE_OVERLAYS) with no
    mode; the folder should be 0700 like the run's own work folders, or the overlay made private)."""
    backing = os.path.join(lab.root, "db.bin")
    with open(backing, "wb") as f:
        f.write(os.urandom(MiB))
        f.truncate(4 * MiB)
    dev = loop_devices(backing)
    lab.start("db", ["file=%s,format=raw,if=virtio" % dev])
    stem = dev.replace("/", "%2F")
    release = os.path.join(lab.root, "release")
    bin_dir = _slow_qemu_img(os.path.join(lab.root, "bin"), release)
    run = subprocess.Popen([PYTHON, "-m", "hotvcb", "--qemu", lab.inventory, "backup", "-m", "db", "-g", lab.conf(),
                            "-w", lab.workdir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env(bin_dir),
                           start_new_session=True)
    try:
        wait_until(lambda: glob.glob("/var/lib/hotvcb/qemu-overlays/" + glob.escape(stem) + ".hotvcb-snapshot-*.qcow2"),
                   30, "the overlay")
        (overlay,) = glob.glob("/var/lib/hotvcb/qemu-overlays/" + glob.escape(stem) + ".hotvcb-snapshot-*.qcow2")
        # an ordinary local user (nobody) tries to read it
        r = subprocess.run(["head", "-c", "4096", overlay], capture_output=True, timeout=30, user=65534, group=65534,
                           cwd="/")
    finally:
        open(release, "w").close()
        if run.wait(60) is None:
            os.killpg(run.pid, signal.SIGKILL)
        _clean_device_overlays(dev)
    assert r.returncode != 0, "nobody read %d bytes of %s" % (len(r.stdout), overlay)


@needs_qemu
def test_an_orphaned_overlay_holding_writes_does_not_stop_every_backup_of_the_vm(lab, loop_devices):  # noqa: F811
    """QEMU of a VM on an LV dies during a backup (OOM killer) after the guest wrote to hotvcb's overlay. The
    admin, in a hurry, restarts the VM (now writing to the LV). From then on every nightly backup ends
    `o: ... not in use by its QEMU, but still holding the guest's writes ...: move the overlay away`,
    `ERROR 0/0`, exit 6, and `cleanup` fails the same way: the running VM, which the orphan does not
    touch, has no backup at all until someone acts. The orphan is history (keeping it and naming it is
    right); the new backup of the running VM is sound and should be taken, with a warning
    (hotvcb/hosts/qemu_overlays.py Overlays.remove raises SnapshotError for it from the leftover removal,
    which fails the VM's run)."""
    backing = os.path.join(lab.root, "o.bin")
    with open(backing, "wb") as f:
        f.write(os.urandom(MiB))
        f.truncate(4 * MiB)
    dev = loop_devices(backing)
    drive = ["file=%s,format=raw,if=virtio" % dev]
    qemu = lab.start("o", drive)
    stem = dev.replace("/", "%2F")
    release = os.path.join(lab.root, "release")
    bin_dir = _slow_qemu_img(os.path.join(lab.root, "bin"), release)
    pattern = "/var/lib/hotvcb/qemu-overlays/" + glob.escape(stem) + ".hotvcb-snapshot-*.qcow2"
    run = subprocess.Popen([PYTHON, "-m", "hotvcb", "--qemu", lab.inventory, "backup", "-m", "o", "-g", lab.conf(),
                            "-w", lab.workdir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env(bin_dir))
    try:
        try:
            # made and written by QEMU: before that it may be a stub of size 0, where no write lands
            wait_until(lambda: _overlay_in_use(lab, pattern), 30, "QEMU to write to the overlay")
            overlay = _overlay_in_use(lab, pattern)
            qemu.kill()
            qemu.wait(10)
        finally:
            open(release, "w").close()
            run.wait(120)
        # what the guest wrote before its QEMU died is in the overlay (written here once QEMU let go of it)
        wrote = subprocess.run(["qemu-io", "-f", "qcow2", overlay, "-c", "write -P 0x77 0 64k"],
                               capture_output=True, text=True)
        assert wrote.returncode == 0, (wrote.stdout + wrote.stderr, run.returncode)
        os.remove(os.path.join(lab.inventory, "o.qmp"))
        lab.start("o", drive)  # restarted, on the LV
        code, out = lab.backup("o")
        kept = os.path.exists(overlay)
    finally:
        _clean_device_overlays(dev)
    assert "Traceback" not in out, out
    assert kept, out  # never deleted: it holds the guest's writes
    assert overlay in out, out  # named
    assert code in (0, 3), out  # and the running VM is backed up
    assert len(lab.backups("o")) == 1, out


# -- libvirt -----------------------------------------------------------------------------------------
import kvmguest  # noqa: E402
from kvmguest import libvirt_exclusive  # noqa: E402,F401  (the fixture: one module at a time at libvirt)
from kvmguest import needs_libvirt, virsh  # noqa: E402

POOL = "hv27dpool"
VOLDOM = "hv27d voldom"


@needs_libvirt
@pytest.mark.xfail(strict=True, reason="the volume's path comes only from `virsh vol-path`, which fails for an "
                                       "inactive pool although the running domain's disk is a plain file")
def test_a_running_domains_volume_disk_is_backed_up_when_its_pool_is_stopped(libvirt_exclusive):  # noqa: F811
    """A running domain with a data disk from a dir pool (`<disk type='volume'>`, cockpit's default). The admin
    stops the pool (`virsh pool-destroy data`: only deactivates a dir pool; or a pool that is not autostarted
    after a libvirtd restart) and the domain runs on, its disk open as before. Every backup now says
    `skipping vdb (): storage pool volume hv27dpool/data.qcow2: ... storage pool ... is not active`, WARN 1/2,
    exit 3: the data disk is in no backup until someone restarts the pool. libvirt's own backup job exports
    that disk all the same (the running domain's XML has it resolved); hotvcb/hosts/libvirt.py
    LibvirtHost._disk asks only `virsh vol-path` (hosts/virsh.py vol_path)."""
    root, pool_dir, volume, work, xml = volume_domain("hv27d", VOLDOM, POOL)
    try:
        kvmguest.add_pool(POOL, pool_dir, persistent=True)  # a defined pool, as cockpit makes one
        kvmguest.define(xml, VOLDOM)
        virsh("start", VOLDOM)
        virsh("pool-destroy", POOL)  # stopped; the domain runs on with its disk open
        conf = kvmguest.write_conf(root, volume, DISK_BACKUP_FORMAT="qcow2")
        r = subprocess.run([PYTHON, "-m", "hotvcb", "--libvirt", "qemu:///system", "backup", "-m", VOLDOM, "-g", conf,
                            "-w", work], capture_output=True, text=True, timeout=300, env=env())
        out = r.stdout + r.stderr
        assert "Traceback" not in out, out
        assert r.returncode == 0, out
        (backup,) = [os.path.dirname(p) for p in glob.glob(os.path.join(glob.escape(volume), glob.escape(VOLDOM),
                                                                         "*", "STATUS.ok"))]
        copies = [os.path.join(backup, f) for f in os.listdir(backup) if f.endswith(".qcow2")]
        assert any(qemu_img("compare", "-U", os.path.join(pool_dir, "data.qcow2"), c).returncode == 0 for c in copies), (os.listdir(backup), out)
    finally:
        kvmguest.undefine(VOLDOM)
        kvmguest.remove_pool(POOL)
        kvmguest.remove_scratch(root)
        for d in glob.glob("/run/hotvcb/libvirt-system/*/hv27d_voldom-*"):  # hotvcb's own, empty once done
            try:
                os.rmdir(d)
            except OSError:
                pass


def _good(volume, name):
    return sorted(os.path.dirname(p) for p in glob.glob(os.path.join(glob.escape(volume), glob.escape(name), "*",
                                                                      "STATUS.ok")))


ISCSI = "hv27d iscsi dom"
IQN = "iqn.2026-12.com.example.san:cluster-quorum"


@needs_libvirt
def test_a_copy_restored_under_a_new_name_does_not_keep_the_originals_iscsi_lun(libvirt_exclusive):  # noqa: F811
    """libvirt passes a SAN LUN through directly over iSCSI (`<disk type='network' device='lun'><source
    protocol='iscsi' name='iqn.../0'>`, QEMU's own initiator: the documented way to give a cluster node its
    quorum/shared LUN without the host logging in). The backup names sda as not copied, as it should; but
    `hotvcb restore BACKUP --kvm DIR --name web-copy`, which today's fix makes leave out the original's
    passed-through LUNs, keeps this one: started beside the original, the copy writes the production
    LUN. hotvcb/convert/domain_xml.py _host_disk records a LUN only when its <source> has dev, file or volume."""
    lun = ("<disk type='network' device='lun'><driver name='qemu' type='raw'/>\n"
           "      <source protocol='iscsi' name='%s/0'><host name='192.0.2.10' port='3260'/></source>\n"
           "      <target dev='sda' bus='scsi'/></disk>" % IQN)
    with lun_domain_backed_up("hv27di", ISCSI, lambda root: lun) as (root, volume, code, out):
        assert code in (0, 3), out
        (backup,) = _good(volume, ISCSI)
        target = os.path.join(root, "restored")
        os.makedirs(target)
        r = subprocess.run([PYTHON, "-m", "hotvcb", "restore", backup, "--kvm", target, "--name", "hv27d-copy"],
                           capture_output=True, text=True, timeout=300, env=env())
        out = r.stdout + r.stderr
        assert "Traceback" not in out, out
        with open(os.path.join(target, "hv27d-copy", "hv27d-copy.xml")) as f:
            restored = f.read()
        assert IQN not in restored, restored
