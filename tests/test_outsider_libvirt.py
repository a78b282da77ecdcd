"""Outside attacks on the libvirt driver: odd disks and names, garbage URIs, two runs, kill -9, restore hand-off."""

import glob
import json
import os
import re
import shutil
import subprocess

import pytest

import kvmguest
from kvmguest import libvirt_exclusive  # noqa: F401  (the fixture)
from kvmguest import MiB, killing_virsh, needs_libvirt, slow_convert, virsh
from qemuvm import PYTHON, env, kill_tree, qemu_img, slow_qemu_img, wait_until

pytestmark = needs_libvirt


@pytest.fixture(scope="module")
def lab(libvirt_exclusive):
    root = kvmguest.scratch("hvo")

    class Lab:
        volume = os.path.join(root, "backups")
        workdir = os.path.join(root, "work")
        domains = []  # type: list

        def conf(self, **keys):
            return kvmguest.write_conf(root, self.volume, **keys)

        def run(self, *args, uri="qemu:///system", bin_dir=None, timeout=300):
            argv = [PYTHON, "-m", "hotvcb"] + (["--libvirt", uri] if uri is not None else []) + list(args)
            r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env(bin_dir))
            return r.returncode, r.stdout + r.stderr

        def argv(self, *args, **keys):
            return [PYTHON, "-m", "hotvcb", "--libvirt", "qemu:///system", "backup", "-g", self.conf(**keys),
                    "-w", self.workdir] + list(args)

        def backup(self, name, bin_dir=None, **keys):
            r = subprocess.run(self.argv("-m", name, **keys), capture_output=True, text=True, timeout=300,
                               env=env(bin_dir))
            return r.returncode, r.stdout + r.stderr

        def start(self, bin_dir, ready):
            """A backup run in the background, once `ready()` (an end before that is a failure: the module
            holds its turn at libvirt, so no other run can hold the lock)."""
            p = subprocess.Popen(self.argv("-m", ODD), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True, env=env(bin_dir))
            wait_until(lambda: ready() or p.poll() is not None, 120, "the backup to get going")
            if p.poll() is None or p.returncode == -9:
                return p
            raise AssertionError(p.communicate()[0])

        def backups(self, name):
            return sorted(os.path.dirname(p) for p in glob.glob(os.path.join(glob.escape(self.volume), glob.escape(name),
                                                                              "*", "STATUS.ok")))

        def folder(self, name):
            path = os.path.join(root, name)
            os.makedirs(path)
            os.chmod(path, 0o755)
            return path

    lab = Lab()
    os.makedirs(lab.volume)
    yield lab
    for name in lab.domains:
        kvmguest.undefine(name)
    kvmguest.remove_scratch(root)


def ours_left(name):
    job = virsh("backup-dumpxml", name, check=False)
    return ["job"] if job.returncode == 0 else []


def checkpoints(name):
    return virsh("checkpoint-list", name, "--name").stdout.split()


def one_line_error(code, out):
    assert code != 0, out
    assert "Traceback" not in out, out


# -- garbage URIs: one clear line, no traceback -----------------------------------------------
@pytest.mark.parametrize("uri", ["garbage:", "qemu+ssh://root@nohost/system", "qemu:///nosuchthing"])
def test_garbage_uri_is_one_clear_line(lab, uri):
    code, out = lab.run("backup", "-m", "x", "-g", lab.conf(), "-w", lab.workdir, uri=uri, timeout=60)
    one_line_error(code, out)
    assert uri in out, out


# -- a domain with a qcow2 disk, a raw disk, a CD-ROM, on a path with spaces, an odd name ------------
ODD = "hv \"ölig' dom"


def odd_domain_xml(name, folder, console):
    """The test guest (it writes records to vda all along), plus a raw vdb nobody writes and an empty CD-ROM."""
    q, r = os.path.join(folder, "sys disk.qcow2"), os.path.join(folder, "data disk.raw")
    kernel, initrd = kvmguest.boot_files(folder)
    return """<domain type='qemu'>
  <name>%s</name>
  <memory unit='MiB'>128</memory><vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><kernel>%s</kernel><initrd>%s</initrd>
    <cmdline>%s</cmdline></os>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='%s'/>
      <target dev='vda' bus='virtio'/></disk>
    <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='%s'/>
      <target dev='vdb' bus='virtio'/></disk>
    <disk type='file' device='cdrom'><driver name='qemu' type='raw'/><target dev='hdc' bus='ide'/><readonly/></disk>
    <controller type='usb' model='none'/>
    <serial type='file'><source path='%s'/><target port='0'/></serial>
    <memballoon model='none'/>
  </devices>
</domain>
""" % (name.replace("'", "&apos;").replace('"', "&quot;"), kernel, initrd, kvmguest.CMDLINE, q, r, console), q, r


@pytest.fixture(scope="module")
def odd(lab):
    folder = lab.folder("odd dir")
    xml, q, r = odd_domain_xml(ODD, folder, os.path.join(folder, "console.log"))
    data = {}
    for path, fmt in ((q, "qcow2"), (r, "raw")):
        raw = path + ".src"
        with open(raw, "wb") as f:
            f.write(os.urandom(2 * MiB))
            f.truncate(8 * MiB)
        assert qemu_img("convert", "-f", "raw", "-O", fmt, raw, path).returncode == 0
        data[os.path.basename(raw)] = raw
    with open(os.path.join(folder, "domain.xml"), "w") as f:
        f.write(xml)
    kvmguest.define(os.path.join(folder, "domain.xml"), ODD)
    lab.domains.append(ODD)
    virsh("start", ODD)
    data["console"] = os.path.join(folder, "console.log")
    wait_writes(data["console"], 5)
    return data


def writes(console):
    try:
        with open(console, errors="replace") as f:
            return len(re.findall(r"^W \d+\r?$", f.read(), re.M))
    except FileNotFoundError:
        return 0


def wait_writes(console, more, timeout=240):
    """Wait until the guest wrote `more` records beyond what it wrote so far: it runs and writes."""
    target = writes(console) + more
    wait_until(lambda: writes(console) >= target, timeout, "the guest to write", poll=0.2)


def backing(path):
    return json.loads(qemu_img("info", "--output=json", path).stdout).get("backing-filename")


def test_two_disks_a_raw_one_a_cdrom_spaces_and_quotes_back_up_twice(lab, odd):
    code, out = lab.backup(ODD)
    assert code == 0, out
    code, out = lab.backup(ODD)
    assert code == 0, out
    first, second = lab.backups(ODD)
    assert "vda is incremental on %s" % os.path.basename(first) in out, out
    assert backing(os.path.join(second, "vda.qcow2")) == "../%s/vda.qcow2" % os.path.basename(first)
    for b in (first, second):
        assert sorted(os.listdir(b)) == ["STATUS.ok", "domain.xml", "hotvcb-checkpoint", "hotvcb.json", "vda.qcow2",
                                         "vdb.qcow2"]
        assert backing(os.path.join(b, "vdb.qcow2")) is None  # raw: no bitmap, a full copy every time
        assert qemu_img("compare", "-F", "raw", os.path.join(b, "vdb.qcow2"), odd["data disk.raw.src"]).returncode == 0
    assert not ours_left(ODD) and len(checkpoints(ODD)) == 1
    assert virsh("domstate", ODD).stdout.strip() == "running"


def restored_equals(backup_disk, restored):
    return qemu_img("compare", backup_disk, restored).returncode == 0


def test_an_incremental_restores_to_kvm_and_to_esxi_as_its_content(lab, odd, tmp_path):
    """The hand-off: the overlay's backing file is ../<previous>/vda.qcow2; the restored disk is the backup's content."""
    first, second = lab.backups(ODD)[:2]
    disk = os.path.join(second, "vda.qcow2")
    assert backing(disk)
    os.makedirs(str(tmp_path / "kvm"))
    for b in (first, second):
        code, out = lab.run("restore", b, "--kvm", str(tmp_path / "kvm"), "--name", "r " + os.path.basename(b)[-8:],
                            uri=None)
        assert code == 0, out
        folder = tmp_path / "kvm" / ("r " + os.path.basename(b)[-8:])
        assert restored_equals(os.path.join(b, "vda.qcow2"), str(folder / "vda.qcow2")), out
        assert backing(str(folder / "vda.qcow2")) is None  # standalone
        assert restored_equals(os.path.join(b, "vdb.qcow2"), str(folder / "vdb.qcow2"))
    from simhost import VOLUME, hotvcb, make_host
    host = make_host(tmp_path / "host")
    try:
        vmdir = "%s/%s" % (VOLUME, ODD)
        shutil.copytree(os.path.join(lab.volume, ODD), host.real(vmdir))
        r = hotvcb(host, "restore", "%s/%s" % (vmdir, os.path.basename(second)), "--datastore", "datastore1",
                   "--name", "esx-inc")
        assert r.returncode == 0, r.stdout + r.stderr
        folder = host.real("/vmfs/volumes/datastore1/esx-inc")
        assert restored_equals(disk, os.path.join(folder, "vda.vmdk")), os.listdir(folder)
    finally:
        host.close() if hasattr(host, "close") else None


def jobs_left():
    return kvmguest.scratch_left(ODD)


@pytest.mark.parametrize("moment", ["backup-begin", "mid-copy", "domjobabort"])
def test_kill_9_at_any_moment_then_cleanup_leaves_nothing_and_the_next_backup_works(lab, odd, tmp_path, moment):
    good = checkpoints(ODD)
    assert len(good) == 1
    kept = lab.backups(ODD)
    if moment == "mid-copy":
        bin_dir = slow_qemu_img(str(tmp_path / "bin"), "1M")
    else:
        bin_dir = killing_virsh(str(tmp_path / "bin"), moment)
    p = lab.start(bin_dir, lambda: moment != "mid-copy" or glob.glob(
        os.path.join(glob.escape(lab.volume), glob.escape(ODD), "*-partial", "vd*")))
    try:
        if moment == "mid-copy":
            kill_tree(p.pid)
        out = p.communicate(timeout=240)[0]
    finally:
        kill_tree(p.pid)
    assert p.returncode == -9, out
    assert virsh("domstate", ODD).stdout.strip() == "running"
    wait_writes(odd["console"], 3)  # the guest writes on, job or no job

    code, out = lab.run("cleanup", "-g", lab.conf(), "-w", lab.workdir)
    assert code == 0, out
    assert not ours_left(ODD) and not jobs_left(), out
    assert not glob.glob(os.path.join(glob.escape(lab.volume), glob.escape(ODD), "*-partial")), out
    assert checkpoints(ODD) == good, out
    assert set(kept) <= set(lab.backups(ODD))

    code, out = lab.backup(ODD)
    assert code == 0, out
    assert "vda is incremental on %s" % os.path.basename(kept[-1]) in out, out  # the good checkpoint served
    assert not ours_left(ODD) and not jobs_left()
    [cp] = checkpoints(ODD)
    newest = lab.backups(ODD)[-1]
    assert open(os.path.join(newest, "hotvcb-checkpoint")).read().splitlines()[0] == cp
    assert virsh("domstate", ODD).stdout.strip() == "running"


def partial_disk(lab):
    """vda was copied (its checkpoint noted), vdb's copy is under way (slow_convert)."""
    return glob.glob(os.path.join(glob.escape(lab.volume), glob.escape(ODD), "*-partial", "hotvcb-checkpoint"))


def test_two_runs_at_once_on_one_domain(lab, odd, tmp_path):
    before = lab.backups(ODD)
    release = tmp_path / "release"
    p = lab.start(slow_convert(str(tmp_path / "bin"), 120, str(release)), lambda: partial_disk(lab))
    try:
        code, out = lab.backup(ODD)
        one_line_error(code, out)
        assert "lock" in out, out
        assert ours_left(ODD) and partial_disk(lab)  # the first run's job and folder are untouched
        release.touch()
        out = p.communicate(timeout=240)[0]
    finally:
        kill_tree(p.pid)
    assert p.returncode == 0, out
    assert len(lab.backups(ODD)) == len(before) + 1 and not ours_left(ODD) and len(checkpoints(ODD)) == 1


def test_a_truncated_base_means_a_full_backup(lab, odd):
    last = lab.backups(ODD)[-1]
    disk = os.path.join(last, "vda.qcow2")
    with open(disk, "r+b") as f:
        f.truncate(os.path.getsize(disk) // 2)
    code, out = lab.backup(ODD)
    assert code == 0, out
    assert "a full backup instead" in out, out
    newest = lab.backups(ODD)[-1]
    assert backing(os.path.join(newest, "vda.qcow2")) is None
    code, out = lab.run("verify", last, uri=None)
    assert code != 0 and "Traceback" not in out, out


def test_list_and_status_report_the_truncated_backup(lab, odd):
    """After the truncated base (test above): list --json calls it damaged, naming the disk; status reads the domain."""
    code, out = lab.run("list", "--json", "--volume", lab.volume, ODD, uri=None)
    assert code == 0 and "Traceback" not in out, out
    listed = json.loads(out)["backups"]
    bad = [b for b in listed if b["status"] == "damaged"]  # (beside it: the failed run's STATUS.error folder)
    assert len(bad) == 1 and "vda.qcow2" in bad[0]["reason"], out
    assert listed[-1]["good"]
    code, out = lab.run("status", "-g", lab.conf())
    assert "Traceback" not in out and "OK   backup        %s: newest good backup" % ODD in out, out


def destroying_virsh(folder):
    """A bin folder whose virsh pulls the domain's plug right before `domjobabort`: off just as its backup ends."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "virsh")
    real = shutil.which("virsh")
    with open(path, "w") as f:
        f.write('#!/bin/sh\nabort=0\nfor a in "$@"; do [ "$a" = domjobabort ] && abort=1; last="$a"; done\n'
                '[ $abort = 1 ] && %s -q -c qemu:///system destroy "$last" >/dev/null\nexec %s "$@"\n' % (real, real))
    os.chmod(path, 0o755)
    return folder


@pytest.mark.parametrize("moment", ["mid-copy", "at-the-end"])
def test_the_domain_shut_off_during_the_backup(lab, odd, tmp_path, moment):
    good = lab.backups(ODD)
    release = tmp_path / "release"
    if moment == "mid-copy":
        p = lab.start(slow_convert(str(tmp_path / "bin"), 120, str(release)), lambda: partial_disk(lab))
    else:
        p = lab.start(destroying_virsh(str(tmp_path / "bin")), lambda: True)
    try:
        if moment == "mid-copy":
            virsh("destroy", ODD)
            release.touch()
        out = p.communicate(timeout=240)[0]
    finally:
        kill_tree(p.pid)
    assert "could NOT be removed" not in out and "Traceback" not in out, out
    if moment == "mid-copy":
        one_line_error(p.returncode, out)
        assert lab.backups(ODD) == good, out  # nothing that looks complete
    else:  # every disk was copied before the plug was pulled: a good backup of that instant
        assert p.returncode == 0 and lab.backups(ODD)[-1] not in good, out
    assert not glob.glob(os.path.join(glob.escape(lab.volume), glob.escape(ODD), "*-partial")), out
    assert not jobs_left(), out
    assert virsh("domstate", ODD).stdout.strip() == "shut off"
    virsh("start", ODD)
    wait_writes(odd["console"], 3)
    code, out = lab.backup(ODD)
    assert code == 0, out
    assert not ours_left(ODD) and len(checkpoints(ODD)) == 1
