"""An outsider's attacks on restore across hypervisors and `verify --boot`.

Each test is one thing a careful, hostile admin does: a .vmx or domain.xml
with garbage or hostile values, names that break quoting, a backup still
being written, two restores racing for one target, a target that cannot be
written or fills up, Ctrl-C and kill -9 mid-conversion. The promise checked:
one clear error line (never a traceback or "internal error"), nothing
half-written that looks complete, no orphaned process, and the backup itself
unchanged (checksums before and after).

Backups are made by hand in hotvcb's layout (sealed with its own manifest):
they are the hostile input, so they are built to be hostile.
"""

import glob
import hashlib
import os
import re
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time

import pytest

from bootguest import make_boot_disk
from hotvcb.jobs.restore_kvm import WORK_PREFIX
from hotvcb.localshell import LocalShell
from hotvcb.store import manifest
from hotvcb.vmx import VmxFile
import procs
from qemuvm import PYTHON, QEMU_IMG, env, kill_tree, needs_qemu, same_content, slow_qemu_img, wait_until

pytestmark = needs_qemu
TS = "2026-12-01_21-00-00"
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs")


def cli(*args, timeout=120, bin_dir=None):
    args = tuple(str(a) for a in args)
    if "--boot" in args:
        args += ("--boot-accel", "tcg")
    r = subprocess.run([PYTHON, "-m", "hotvcb"] + list(args), capture_output=True, text=True, timeout=timeout,
                       env=env(bin_dir))
    r.out = r.stdout + r.stderr
    return r


def one_clear_error(r):
    """Failed with one error line naming the problem (`hotvcb: error: ...`, or restore's log line
    `-- error: ...`), no traceback, no internal error."""
    assert "Traceback" not in r.out and "internal error" not in r.out, r.out
    errors = [l for l in r.out.splitlines() if l.startswith("hotvcb: error: ") or " -- error: " in l]
    assert len(errors) == 1, r.out
    return errors[0]


def digests(folder):
    """Every file of a folder (or a single file): its SHA-256 and mtime."""
    if os.path.isfile(folder):
        return {"": (hashlib.sha256(open(folder, "rb").read()).hexdigest(), os.path.getmtime(folder))}
    out = {}
    for root, _dirs, files in os.walk(folder):
        for f in files:
            p = os.path.join(root, f)
            out[os.path.relpath(p, folder)] = (hashlib.sha256(open(p, "rb").read()).hexdigest(), os.path.getmtime(p))
    return out


def seal(folder, vm, disks, result="ok"):
    """hotvcb.json with hotvcb's own digests; disks: [(key, [files])]."""
    shell = LocalShell()
    files = {}
    for root, _dirs, names in os.walk(folder):
        for n in names:
            if n == manifest.MANIFEST:
                continue
            rel = os.path.relpath(os.path.join(root, n), folder)
            files[rel] = manifest.digest_file(shell, os.path.join(root, n)).entry()
    data = {"format": manifest.FORMAT, "version": manifest.VERSION, "vm": vm, "result": result, "message": "",
            "disk_format": "thin", "disks": [{"key": k, "source": "", "files": f, "ok": True, "error": ""}
                                             for k, f in disks],
            "files": files, "verified": None}
    with open(os.path.join(folder, manifest.MANIFEST), "w") as f:
        f.write(manifest.dumps(data))


def flat_vmdk(folder, name, size=1 << 20, bootable=True):
    """A monolithicFlat VMDK (descriptor + -flat extent) holding the test guest."""
    flat = name[: -len(".vmdk")] + "-flat.vmdk"
    make_boot_disk(os.path.join(folder, flat), size, bootable)
    with open(os.path.join(folder, name), "w", encoding="utf-8") as f:
        f.write('# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType="monolithicFlat"\n'
                '\nRW %d FLAT "%s" 0\n\nddb.adapterType = "lsilogic"\n' % (size // 512, flat))
    return [name, flat]


def esxi_backup(volume, vm, keys=None, disks=(("scsi0:0", "disk.vmdk"),), status="STATUS.ok", suffix="",
                size=1 << 20, folder_vm=None, random_bytes=0, raw_vmx=""):
    """`<volume>/<vm>/<vm>-<TS>[suffix]`: a .vmx (keys override), flat VMDKs, hotvcb.json, STATUS."""
    fvm = folder_vm or vm
    folder = os.path.join(str(volume), fvm, "%s-%s%s" % (fvm, TS, suffix))
    os.makedirs(folder)
    vmx = VmxFile("")
    values = {".encoding": "UTF-8", "displayName": vm, "memSize": "64", "numvcpus": "1", "guestOS": "otherlinux-64",
              "scsi0.present": "TRUE", "scsi0.virtualDev": "lsilogic", "uuid.bios":
              "56 4d 12 34 56 78 9a bc-de f0 12 34 56 78 9a bc"}
    sealed = []
    for i, (dev, filename) in enumerate(disks):
        values[dev + ".present"] = "TRUE"
        values[dev + ".fileName"] = filename
        files = flat_vmdk(folder, filename.rsplit("/", 1)[-1], size, bootable=i == 0)
        sealed.append((dev, files))
        with open(os.path.join(folder, files[1]), "r+b") as f:  # data a copy must really move
            f.seek(4096)
            f.write(os.urandom(random_bytes))
    values.update(keys or {})
    for k, v in values.items():
        if v is not None:
            vmx.set(k, v)
    with open(os.path.join(folder, fvm + ".vmx"), "w", encoding="utf-8") as f:
        f.write(vmx.text() + raw_vmx)
    if suffix != "-partial":
        seal(folder, vm, sealed)
    if status:
        with open(os.path.join(folder, status), "w") as f:
            f.write(status.split(".")[1] + "\n")
    return folder


def libvirt_backup(volume, xml_disks, outside=None, name="lv", uuid="0f4c2a56-5d0b-4d6c-9a3e-6c1f0e9d1a11",
                   domain_type="kvm"):
    """A libvirt-layout backup `name` with disk vda.qcow2 (the test guest) and the given <disk> elements."""
    folder = os.path.join(str(volume), name, name + "-" + TS)
    os.makedirs(folder)
    raw = os.path.join(str(volume), "guest.raw")
    make_boot_disk(raw, 1 << 20)
    subprocess.run([QEMU_IMG, "convert", "-f", "raw", "-O", "qcow2", raw, os.path.join(folder, "vda.qcow2")],
                   check=True, timeout=60)
    with open(os.path.join(folder, "domain.xml"), "w") as f:
        f.write("<domain type='%s'><name>%s</name><uuid>%s</uuid>"
                "<memory unit='MiB'>64</memory><vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os>"
                "<devices>%s</devices></domain>" % (domain_type, name, uuid, xml_disks))
    seal(folder, name, [("vda", ["vda.qcow2"])])
    with open(os.path.join(folder, "STATUS.ok"), "w") as f:
        f.write("ok\n")
    return folder


def procs_naming(text):
    """pids of processes whose command line names text."""
    return [pid for pid, argv in procs.argvs()
            if any(text.encode() in a for a in argv[1:]) and b"pytest" not in argv[0] + (argv[1] if len(argv) > 1 else b"")]


# --- hostile names ----------------------------------------------------------------------------

def test_a_hostile_vm_name_does_not_run_in_the_start_script(tmp_path):
    """The start script puts the name into a double-quoted QMP path: `$(...)` and backticks there
    would run when the admin starts the restored VM."""
    vm = "web $(touch pwned1) `touch pwned2` \"q\" \\x, it's; touch pwned3 'x"
    raw = 'displayName = "%s"\n' % vm.replace('"', "|22")  # VMware's escape
    backup = esxi_backup(tmp_path / "vol", vm, folder_vm="web", raw_vmx=raw)
    before = digests(backup)
    out = tmp_path / "out"
    out.mkdir()
    # a line break (VMware's |0A) cannot be a restored VM's name: refused before anything is written
    broken = esxi_backup(tmp_path / "vol2", vm, folder_vm="web",
                         raw_vmx='displayName = "%s|0Atouch pwned4"\n' % vm.replace('"', "|22"))
    r = cli("restore", broken, "--kvm", out, "--no-verify")
    assert r.returncode == 6 and "line break" in r.out and os.listdir(str(out)) == [], r.out
    r = cli("restore", backup, "--kvm", out, "--no-verify")
    assert r.returncode == 0, r.out
    (folder,) = os.listdir(out)
    script = os.path.join(str(out), folder, folder + ".sh")
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "qemu-system-x86_64").write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\0" "$a"; done > args\n')
    os.chmod(str(fake / "qemu-system-x86_64"), 0o755)
    run = tmp_path / "run"
    run.mkdir()
    qmp = tempfile.mkdtemp(prefix="q", dir="/tmp")  # short: under tmp_path the socket path would pass 107 bytes,
    try:  # and the script would name the socket short (qemu_argv.qmp_name), not by the whole name tested here
        subprocess.run(["sh", script], cwd=str(run), timeout=30, check=True,
                       env=dict(os.environ, PATH="%s:%s" % (fake, os.environ["PATH"]), HOTVCB_QMP_DIR=qmp))
    finally:
        shutil.rmtree(qmp)
    assert sorted(os.listdir(str(run))) == ["args"]  # nothing touched
    args = (run / "args").read_text().split("\0")
    assert args[args.index("-name") + 1] == vm.replace(",", ",,")  # QEMU's escape
    assert args[args.index("-qmp") + 1] == "unix:%s/%s.qmp,server=on,wait=off" % (qmp, vm.replace(",", ",,"))
    assert digests(backup) == before


def test_a_vm_name_with_a_comma_smoke_boots(tmp_path):
    """QEMU reads `-name a,b` as the name `a` and an option `b`: a VM called `web, prod` must
    still boot (the comma doubled, as for file names)."""
    backup = esxi_backup(tmp_path / "vol", "web, prod")
    before = digests(backup)
    r = cli("verify", "--boot", backup, "--boot-timeout", 60, "--console-log", tmp_path / "console.log")
    assert r.returncode == 0 and "PASS" in r.out, r.out
    assert digests(backup) == before


def test_disk_names_with_spaces_quotes_umlauts_and_dotdot_restore_and_boot(tmp_path):
    """fileName values that need quoting, or climb out with ../, are the backup's own files by
    their base name; the backup is only read."""
    backup = esxi_backup(tmp_path / "vol", "Ümlaut 'VM'", disks=(
        ("scsi0:0", "../../other ds/Dïsk 'one' (1).vmdk"), ("sata0:0", "/vmfs/volumes/ds2/x/two\ttab.vmdk")))
    before = digests(backup)
    out = tmp_path / "out"
    out.mkdir()
    r = cli("restore", backup, "--kvm", out, "--format", "raw")
    assert r.returncode == 0, r.out
    folder = out / "Ümlaut 'VM'"
    assert sorted(os.listdir(str(folder))) == ["sda.raw", "sdb.raw", "Ümlaut 'VM'.sh", "Ümlaut 'VM'.xml"]
    assert same_content(os.path.join(backup, "Dïsk 'one' (1).vmdk"), str(folder / "sda.raw"))
    r = cli("verify", "--boot", folder, "--boot-timeout", 60, "--console-log", tmp_path / "console.log")
    assert r.returncode == 0 and "PASS" in r.out, r.out
    assert digests(backup) == before
    assert sorted(os.listdir(str(tmp_path))) == ["console.log", "out", "vol"]


# --- hostile definitions ----------------------------------------------------------------------

@pytest.mark.parametrize("keys, says", [
    ({"memSize": "99999999999999999999"}, "memSize"),
    ({"numvcpus": "100000"}, "numvcpus"),
    ({"scsi0:0.fileName": "/vmfs/volumes/datastore1/elsewhere/not-here.vmdk"}, "no disk of the .vmx is in the backup"),
])
def test_hostile_vmx_values_are_one_clear_error_and_nothing_is_written(tmp_path, keys, says):
    backup = esxi_backup(tmp_path / "vol", "web", keys)
    out = tmp_path / "out"
    out.mkdir()
    r = cli("restore", backup, "--kvm", out, "--no-verify")
    assert r.returncode == 6, r.out
    assert says in one_clear_error(r)
    assert os.listdir(str(out)) == []


def test_a_domain_xml_target_dev_cannot_write_outside_the_restore_folder(tmp_path):
    """<target dev> names the restored image: `../../x` would put it anywhere."""
    backup = libvirt_backup(tmp_path / "vol", "<disk type='file' device='disk'><driver type='qcow2'/>"
                            "<source file='/var/lib/libvirt/images/vda.qcow2'/>"
                            "<target dev='../../../escaped' bus='virtio'/></disk>")
    out = tmp_path / "a" / "b" / "out"
    out.mkdir(parents=True)
    r = cli("restore", backup, "--kvm", out, "--name", "lv2")
    assert r.returncode == 6, r.out
    assert "'../../../escaped'" in one_clear_error(r)
    assert os.listdir(str(out)) == [] and sorted(os.listdir(str(tmp_path))) == ["a", "vol"]


def test_a_domain_xml_disk_outside_the_backup_is_not_restored_from_there(tmp_path):
    """A libvirt backup whose domain.xml names a disk the backup does not hold (not backed up) must
    not take that disk from wherever the path points on this machine (the live VM's image)."""
    live = tmp_path / "live.qcow2"
    subprocess.run([QEMU_IMG, "create", "-q", "-f", "qcow2", str(live), "2M"], check=True, timeout=60)
    backup = libvirt_backup(tmp_path / "vol", (
        "<disk type='file' device='disk'><driver type='qcow2'/><source file='/x/vda.qcow2'/>"
        "<target dev='vda' bus='virtio'/></disk>"
        "<disk type='file' device='disk'><driver type='qcow2'/><source file='%s'/>"
        "<target dev='vdb' bus='virtio'/></disk>") % live)
    before = digests(backup)
    out = tmp_path / "out"
    out.mkdir()
    r = cli("restore", backup, "--kvm", out)
    assert r.returncode == 3, r.out  # restored short of a disk: WARNING (test_outsider_s26)
    assert "disk vdb (%s) is not in the backup; it is left out" % live in r.out
    assert sorted(os.listdir(str(out / "lv"))) == ["lv.sh", "lv.xml", "vda.qcow2"]
    assert str(live) not in (out / "lv" / "lv.xml").read_text()
    assert digests(backup) == before


# --- backups that are not good ----------------------------------------------------------------

def test_verify_boot_refuses_a_backup_that_is_being_written(tmp_path):
    """A -partial folder has no STATUS yet: it is a backup being written, not a restored folder."""
    volume = tmp_path / "vol"
    backup = esxi_backup(volume, "web", status=None, suffix="-partial")
    r = cli("verify", "--boot", backup, "--boot-timeout", 30, "--console-log", tmp_path / "console.log")
    assert r.returncode != 0 and "PASS" not in r.out, r.out
    assert "is not a good backup (being written" in one_clear_error(r)
    assert not (tmp_path / "console.log").exists()  # QEMU never started


def test_a_partly_failed_backup_is_neither_restored_nor_booted(tmp_path):
    says = "not a good backup"
    backup = esxi_backup(tmp_path / "vol", "web", status="STATUS.warn")
    out = tmp_path / "out"
    out.mkdir()
    r = cli("restore", backup, "--kvm", out)
    assert r.returncode == 6 and says in one_clear_error(r), r.out
    r = cli("verify", "--boot", backup, "--boot-timeout", 30, "--console-log", tmp_path / "console.log")
    assert r.returncode != 0 and says in one_clear_error(r), r.out
    assert os.listdir(str(out)) == [] and not (tmp_path / "console.log").exists()


def test_a_damaged_vmdk_is_refused_and_with_no_verify_fails_in_one_line(tmp_path):
    backup = esxi_backup(tmp_path / "vol", "web")
    path = os.path.join(backup, "disk.vmdk")
    text = open(path).read()
    with open(path, "w") as f:  # the same size: only the checksums can tell
        f.write(text.replace("disk-flat.vmdk", "gone-flat.vmdk"))
    out = tmp_path / "out"
    out.mkdir()
    r = cli("restore", backup, "--kvm", out)
    assert r.returncode == 6 and "fails verification" in one_clear_error(r), r.out
    r = cli("restore", backup, "--kvm", out, "--no-verify")
    assert r.returncode == 6 and "gone-flat.vmdk" in one_clear_error(r), r.out
    assert os.listdir(str(out)) == []


# --- the target -------------------------------------------------------------------------------

@pytest.fixture
def tmpfs(tmp_path):
    mounted = []

    def mount(size, ro=False):
        where = tmp_path / ("mnt%d" % len(mounted))
        where.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s%s" % (size, ",ro" if ro else ""), "tmpfs", str(where)],
                       check=True, timeout=30)
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], timeout=30)


def gz_backup(volume, vm, size):
    """An ENABLE_COMPRESSION-style `<vm>-<TS>.gz` of an esxi_backup whose disk holds random data."""
    folder = esxi_backup(volume, vm, size=size, random_bytes=size - 8192)
    with tarfile.open(folder + ".gz", "w:gz", compresslevel=1) as tar:
        tar.add(folder, arcname=os.path.basename(folder))
    shutil.rmtree(folder)
    return folder + ".gz"


@needs_root
def test_a_read_only_target_is_one_clear_error(tmp_path, tmpfs):
    ro = tmpfs("4m", ro=True)
    for backup in (esxi_backup(tmp_path / "vol", "web"), gz_backup(tmp_path / "vol", "gz", 1 << 20)):
        r = cli("restore", backup, "--kvm", ro)
        assert r.returncode == 6, r.out
        assert "Read-only file system" in one_clear_error(r)


@needs_root
def test_a_gz_backup_too_big_for_the_target_leaves_nothing(tmp_path, tmpfs):
    """The .gz is unpacked into the target first: a target it does not fit fails in one line and
    keeps no half-unpacked copy."""
    small = tmpfs("2m")
    backup = gz_backup(tmp_path / "vol", "gz", 4 << 20)
    before = digests(backup)
    r = cli("restore", backup, "--kvm", small)
    assert r.returncode == 6 and "No space left on device" in one_clear_error(r), r.out
    assert os.listdir(str(small)) == []
    assert digests(backup) == before


def test_two_restores_to_one_target_at_once(tmp_path):
    """Both pass the checks (neither folder exists yet) while the room is measured (a slow
    `qemu-img info` holds them there): one restores, the other is refused in one line, and the
    winner's folder is complete."""
    backup = esxi_backup(tmp_path / "vol", "web", size=4 << 20)
    out = tmp_path / "out"
    out.mkdir()
    slow = tmp_path / "bin"
    slow.mkdir()
    (slow / "qemu-img").write_text('#!/bin/sh\n[ "$1" = info ] && sleep 2\nexec %s "$@"\n' % QEMU_IMG)
    os.chmod(str(slow / "qemu-img"), 0o755)
    argv = [PYTHON, "-m", "hotvcb", "restore", backup, "--kvm", str(out)]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(str(slow)))
             for _ in range(2)]
    results = [(p.wait(120), *p.communicate()) for p in procs]
    codes = sorted(code for code, _o, _e in results)
    assert codes == [0, 6], results
    (loser,) = [subprocess.CompletedProcess(argv, code, o, e) for code, o, e in results if code == 6]
    loser.out = loser.stdout + loser.stderr
    says = one_clear_error(loser)
    assert any(w in says for w in ("already exists", "another restore is running", "another restore into it is running")), loser.out
    assert os.listdir(str(out)) == ["web"]
    assert sorted(os.listdir(str(out / "web"))) == ["sda.qcow2", "web.sh", "web.xml"]
    assert same_content(os.path.join(backup, "disk.vmdk"), str(out / "web" / "sda.qcow2"))


# --- stopped midway ---------------------------------------------------------------------------

@pytest.mark.parametrize("sig, then", [(signal.SIGINT, None), (signal.SIGKILL, "cleanup"), (signal.SIGKILL, "restore")])
def test_a_restore_stopped_during_the_conversion(tmp_path, sig, then):
    """Ctrl-C (SIGINT): exit 2, the unfinished folder and qemu-img gone. SIGKILL: nothing can clean up, but
    qemu-img dies too and the folder never gets its final name; its owner record lets `hotvcb cleanup --kvm
    DIR` or the next restore into DIR remove it (it once refused the name until removed by hand), while
    the same cleanup during the conversion left the running restore's folder alone. Its descriptor's copy
    in /tmp (named by the process: tmpwork.py) stayed for ever; the next restore removes it."""
    backup = esxi_backup(tmp_path / "vol", "web", size=32 << 20, random_bytes=16 << 20)
    before = digests(backup)
    out = tmp_path / "out"
    out.mkdir()
    slow = slow_qemu_img(str(tmp_path / "slowbin"), "2M")
    log = tmp_path / "restore.log"
    p = subprocess.Popen([PYTHON, "-m", "hotvcb", "restore", backup, "--kvm", str(out), "--format", "raw", "-l", log],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env(slow))
    temp = out / "web.hotvcb-restoring"
    try:
        wait_until(lambda: (temp / "sda.raw").exists(), 60, "the conversion to start")
        (work,) = glob.glob("%s/%s%d-*" % (tempfile.gettempdir(), WORK_PREFIX, p.pid))  # its descriptor's copy
        if then == "cleanup":
            r = cli("cleanup", "--kvm", out)
            assert r.returncode == 0 and "unfinished VM folder of a running restore" in r.out, r.out
            assert (temp / "sda.raw").exists() and p.poll() is None, r.out
        time.sleep(0.5)
        p.send_signal(sig)
        text = p.communicate(timeout=60)[0]
        wait_until(lambda: not procs_naming(str(temp)), 10, "qemu-img to end")
    finally:
        kill_tree(p.pid)
        for pid in procs_naming(str(temp)):
            os.kill(pid, signal.SIGKILL)
    assert not (out / "web").exists()
    if sig == signal.SIGINT:
        assert p.returncode == 2, text
        assert os.listdir(str(out)) == []
        # its -l file ends as every restore's: a final status, then LOG END (a log without it reads as a death)
        lines = log.read_text().splitlines()
        assert "Final status: ERROR: interrupted by SIGINT" in lines[-2] and "LOG END" in lines[-1], lines[-6:]
    else:
        assert temp.exists() and [e for e in os.listdir(str(out)) if e.endswith(".owner")], os.listdir(str(out))
        if then == "cleanup":
            r = cli("cleanup", "--kvm", out, "-d", "dryrun")
            assert r.returncode == 0 and "cleanup: 1 leftover(s) found" in r.out and temp.exists(), r.out
            r = cli("cleanup", "--kvm", out)
            assert r.returncode == 0 and "cleanup: 1 leftover(s) removed" in r.out, r.out
            assert os.listdir(str(out)) == [], r.out
        r = cli("restore", backup, "--kvm", out)
        assert r.returncode == 0, r.out
        assert ("left by a restore that died" in r.out) == (then == "restore"), r.out
        assert os.listdir(str(out)) == ["web"], r.out
        assert same_content(os.path.join(backup, "disk.vmdk"), str(out / "web" / "sda.qcow2"))
    assert not os.path.exists(work)  # a SIGKILLed one's: removed by the next restore (by any: /tmp is shared)
    assert digests(backup) == before


# --- libvirt ----------------------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("virsh") is None, reason="needs virsh")
def test_libvirt_define_never_replaces_an_existing_domain(tmp_path):
    """Under its own name a restore keeps the UUID, and `virsh define` of a name and UUID libvirt
    already has replaces that VM's definition (the original then boots the restored disks).
    test:///default always holds the domain `test` with this UUID."""
    folder = libvirt_backup(tmp_path / "vol", "<disk type='file' device='disk'><source file='/x/vda.qcow2'/>"
                            "<target dev='vda' bus='virtio'/></disk>", name="test",
                            uuid="6695eb01-f6a4-8304-79aa-97f2502e193f", domain_type="test")
    out = tmp_path / "out"
    out.mkdir()
    r = cli("restore", folder, "--kvm", out, "--libvirt", "test:///default")
    assert r.returncode == 6 and "Defined in libvirt" not in r.out, r.out
    assert "libvirt already has a domain named 'test'" in one_clear_error(r)
    assert sorted(os.listdir(str(out / "test"))) == ["test.sh", "test.xml", "vda.qcow2"]  # complete, kept


# --- the backup is only read ------------------------------------------------------------------

def test_a_console_log_or_restore_target_inside_the_backup_is_refused(tmp_path):
    """A mistyped --console-log that names a file of the backup was truncated by the smoke boot (the
    disk itself: the backup destroyed), and --kvm naming the backup wrote the restore into it."""
    backup = esxi_backup(tmp_path / "vol", "web")
    before = digests(backup)
    for log in ("disk-flat.vmdk", "console.log"):
        r = cli("verify", "--boot", backup, "--boot-timeout", 30, "--console-log", os.path.join(backup, log))
        assert r.returncode != 0 and "PASS" not in r.out, r.out
        assert "inside the backup" in one_clear_error(r)
    r = cli("restore", backup, "--kvm", backup)
    assert r.returncode == 6 and "inside the backup" in one_clear_error(r), r.out
    assert digests(backup) == before


# --- verify --boot's own input ----------------------------------------------------------------

@pytest.mark.parametrize("option, value, says", [
    ("--boot-pattern", "", "--boot-pattern: an empty value"),
    ("--boot-timeout", "nan", "--boot-timeout"),
])
def test_a_boot_check_that_proves_nothing_or_never_ends_is_refused(tmp_path, option, value, says):
    """An empty pattern (`--boot-pattern "$UNSET"`) matched before QEMU printed anything: every backup
    PASSed, even one that cannot boot. A NaN timeout never ran out."""
    backup = esxi_backup(tmp_path / "vol", "web")
    with open(os.path.join(backup, "disk-flat.vmdk"), "r+b") as f:
        f.write(bytes(512))  # no boot sector: this backup cannot boot
    seal(backup, "web", [("scsi0:0", ["disk.vmdk", "disk-flat.vmdk"])])
    extra = () if option == "--boot-timeout" else ("--boot-timeout", 20)
    r = cli("verify", "--boot", backup, option + "=" + value, *extra, "--console-log", tmp_path / "console.log",
            timeout=60)
    assert r.returncode == 1 and "PASS" not in r.out, r.out
    assert says in r.stderr.strip().splitlines()[-1] and "Traceback" not in r.out, r.out
    assert not (tmp_path / "console.log").exists()  # QEMU never started


def test_the_unpacked_copy_of_a_sigkilled_gz_restore_is_removed_by_the_next(tmp_path):
    """kill -9 while a .gz is unpacked into the target: the hidden copy (a whole backup, with its
    STATUS.ok) stays; the next restore into that folder removes it and restores."""
    backup = gz_backup(tmp_path / "vol", "gz", 16 << 20)
    before = digests(backup)
    out = tmp_path / "out"
    out.mkdir()
    p = subprocess.Popen([PYTHON, "-m", "hotvcb", "restore", backup, "--kvm", str(out), "--no-verify"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env())
    try:
        wait_until(lambda: any(e.startswith(".hotvcb-extract-") for e in os.listdir(str(out))), 30, "the unpacking",
                   poll=0.01)
        p.kill()
        p.wait(30)
    finally:
        kill_tree(p.pid)
    assert [e for e in os.listdir(str(out)) if e.startswith(".hotvcb-extract-")], "unpacked too fast to kill"
    r = cli("restore", backup, "--kvm", out)
    assert r.returncode == 0, r.out
    assert sorted(os.listdir(str(out))) == ["gz"], "unpacked by a restore that died" in r.out
    assert digests(backup) == before


# --- KVM -> ESXi ------------------------------------------------------------------------------

@needs_root
def test_a_domain_name_cannot_inject_vmx_keys_into_the_esxi_restore(tmp_path):
    """A libvirt backup restored to ESXi gets a generated .vmx whose displayName is the domain's
    <name>: a newline in it wrote a line of the attacker's choosing (here: another VM's disk).
    And a qcow2 backed by another VM's disk is refused, as restore --kvm refuses it."""
    from simhost import VOLUME, hotvcb, make_host

    name = "lv\nsata0:1.present = TRUE\nsata0:1.fileName = /vmfs/volumes/datastore1/victim/victim.vmdk"
    host = make_host(tmp_path / "host")
    try:
        inside = "%s/lv/lv-%s" % (VOLUME, TS)
        made = libvirt_backup(tmp_path / "vol", "<disk type='file' device='disk'><driver type='qcow2'/>"
                              "<source file='/x/vda.qcow2'/><target dev='vda' bus='virtio'/></disk>")
        xml = open(os.path.join(made, "domain.xml")).read().replace("<name>lv</name>",
                                                                     "<name>%s</name>" % name.replace('"', "&quot;"))
        with open(os.path.join(made, "domain.xml"), "w") as f:
            f.write(xml)
        seal(made, "lv", [("vda", ["vda.qcow2"])])
        shutil.copytree(made, host.real(inside))
        r = hotvcb(host, "restore", inside, "--datastore", "datastore1")  # under the domain's own name
        out = r.stdout + r.stderr
        assert r.returncode == 6 and "line break" in out and "restore it under a new name" in out, out
        assert not [f for _p, _d, files in os.walk(host.real("/vmfs/volumes/datastore1"))
                    for f in files if f.endswith(".vmx")]  # refused before a line of it was written
        # and its qcow2 may not name a backing file (here another VM's disk on the datastore)
        make_boot_disk(host.real("/vmfs/volumes/datastore1/victim.raw"), 1 << 20)
        subprocess.run([QEMU_IMG, "create", "-q", "-u", "-f", "qcow2", "-F", "raw", "-b",
                        "/vmfs/volumes/datastore1/victim.raw", "-o", "size=1M",
                        host.real(inside + "/vda.qcow2")], check=True, timeout=60)
        seal(host.real(inside), "lv", [("vda", ["vda.qcow2"])])
        r = hotvcb(host, "restore", inside, "--datastore", "datastore1", "--name", "lv-victim")
        # refused by whichever check sees it first: health (an incremental must stand on a backup
        # beside it) or the KVM staging (no backing files)
        out = r.stdout + r.stderr
        assert r.returncode == 6 and ("stands on /vmfs/volumes/datastore1/victim.raw" in out
                                      or "has a backing file (/vmfs/volumes/datastore1/victim.raw)" in out), out
        assert not os.path.exists(host.real("/vmfs/volumes/datastore1/lv-victim"))
    finally:
        host.stop()


def test_a_vmdk_whose_extent_lies_outside_the_backup_is_refused(tmp_path):
    """The .vmx names a disk in the backup, but its descriptor's extent is a file elsewhere on this
    machine (a host disk, another VM's image): qemu follows it, so restore and smoke boot would
    read it as the backup's disk. A ghettoVCB backup has no checksums to catch that."""
    secret = tmp_path / "host-disk.img"
    make_boot_disk(str(secret), 1 << 20)
    for extent in (str(secret),):
        backup = esxi_backup(tmp_path / "vol", "web")
        path = os.path.join(backup, "disk.vmdk")
        text = open(path).read().replace('"disk-flat.vmdk"', '"%s"' % extent)
        with open(path, "w") as f:
            f.write(text)
        seal(backup, "web", [("scsi0:0", ["disk.vmdk", "disk-flat.vmdk"])])
        out = tmp_path / "out"
        out.mkdir(exist_ok=True)
        r = cli("restore", backup, "--kvm", out)
        assert r.returncode == 6 and "outside the backup" in one_clear_error(r), r.out
        assert os.listdir(str(out)) == []
        r = cli("verify", "--boot", backup, "--boot-timeout", 20, "--console-log", tmp_path / "console.log")
        assert r.returncode == 1 and "outside the backup" in one_clear_error(r), r.out
        assert not (tmp_path / "console.log").exists()


def test_a_qcow2_with_a_backing_file_outside_the_backup_is_refused(tmp_path):
    """The same for a libvirt backup's qcow2: its header can name a backing file anywhere, which
    qemu-img convert and the smoke boot's overlay would read as the backup's data."""
    secret = tmp_path / "host-disk.raw"
    make_boot_disk(str(secret), 1 << 20)
    backup = libvirt_backup(tmp_path / "vol", "<disk type='file' device='disk'><driver type='qcow2'/>"
                            "<source file='/x/vda.qcow2'/><target dev='vda' bus='virtio'/></disk>")
    subprocess.run([QEMU_IMG, "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(secret),
                    os.path.join(backup, "vda.qcow2")], check=True, timeout=60)
    seal(backup, "lv", [("vda", ["vda.qcow2"])])
    out = tmp_path / "out"
    out.mkdir()
    r = cli("restore", backup, "--kvm", out)
    # refused by whichever check sees it first: health (an incremental stands only on a backup
    # beside it) or the KVM restore's own (no backing files)
    assert r.returncode == 6 and re.search("backing file|stands on", one_clear_error(r)), r.out
    assert os.listdir(str(out)) == []
    r = cli("verify", "--boot", backup, "--boot-timeout", 20, "--console-log", tmp_path / "console.log")
    assert r.returncode == 1 and re.search("backing file|stands on", one_clear_error(r)), r.out
    assert not (tmp_path / "console.log").exists()


def test_a_copy_outside_its_vm_folder_is_judged_by_what_it_holds_with_no_verify_too(tmp_path):
    """A copy of a backup the admin keeps elsewhere (its name no backup's) with STATUS.ok but its disk gone:
    `--no-verify` skips the checksums, not the verdict. STATUS.ok alone once passed, and the restore went
    on to fail in qemu-img, after the folder was begun."""
    backup = esxi_backup(tmp_path / "vol", "web")
    copy = tmp_path / "kept" / "web-copy"
    shutil.copytree(backup, str(copy))
    os.remove(str(copy / "disk-flat.vmdk"))
    out = tmp_path / "out"
    out.mkdir()
    r = cli("restore", copy, "--kvm", out, "--no-verify")
    assert r.returncode == 6 and "is not a good backup" in one_clear_error(r) and "disk-flat.vmdk" in r.out, r.out
    assert os.listdir(str(out)) == []
    shutil.copy2(os.path.join(backup, "disk-flat.vmdk"), str(copy))
    r = cli("restore", copy, "--kvm", out, "--no-verify", "--format", "raw")
    assert r.returncode == 0 and os.listdir(str(out)) == ["web"], r.out
