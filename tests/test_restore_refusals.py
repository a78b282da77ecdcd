"""What the ordinary restore refuses, as restore --kvm already did (issue: an outside tester's leftovers).

- A VMDK descriptor in the backup whose extent is another file (a device, an absolute path,
  `../`): `vmkfstools -i` would clone that file as the backup's disk. Refused before anything
  is written, dry run too, with the descriptor and the extent named.
- A name that cannot be a VM's folder or display name (`/`, `..`, NUL), for ESXi and --kvm.
- A SIGKILLed KVM->ESXi restore takes its qemu-img (the staging step) with it.

Backups are built by hand in hotvcb's layout (test_outsider_crosshv's helpers): they are the
hostile input.
"""

import io
import os
import shutil
import signal
import subprocess
import sys

import pytest

from hotvcb.jobs.restore_kvm import KvmRequest, KvmRestore, KvmRestoreError
from hotvcb.localshell import LocalShell
from hotvcb.runlog import RunLog
from qemuvm import QEMU_IMG, kill_tree, needs_qemu, slow_qemu_img, wait_until
from simhost import REPO, VOLUME, hotvcb, make_host, needs_root, write_conf
from test_outsider_crosshv import TS, cli, esxi_backup, libvirt_backup, one_clear_error, procs_naming, seal

pytestmark = needs_qemu
DS1 = "/vmfs/volumes/datastore1"


def restore_line(r):
    """The one error line of an ESXi restore (exit 6: the only request failed)."""
    r.out = r.stdout + r.stderr
    assert r.returncode == 6, r.out
    return one_clear_error(r)


def parent_of(pid):
    with open("/proc/%d/status" % pid) as f:
        return int([l for l in f if l.startswith("PPid:")][0].split()[1])


def _a_shell(pid):
    with open("/proc/%d/comm" % pid) as f:
        return f.read().strip() in ("sh", "dash", "ash", "bash")


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("esxisim needs root for unshare -m")
    h = make_host(tmp_path_factory.mktemp("refusals") / "host")
    yield h
    h.stop()


@needs_root
def test_a_descriptor_naming_a_file_outside_the_backup_is_refused(host):
    """Another VM's flat disk by absolute path, by `../`, and a device: each refused by name; a
    ghettoVCB backup (no checksums) too. The same backup with its own extent restores (control)."""
    victim = host.real(DS1 + "/victim")
    os.makedirs(victim)
    with open(os.path.join(victim, "victim-flat.vmdk"), "wb") as f:
        f.write(os.urandom(1 << 20))
    volume = host.real(VOLUME)
    backup = esxi_backup(volume, "web")
    inside = "%s/web/web-%s" % (VOLUME, TS)
    descriptor = os.path.join(backup, "disk.vmdk")
    own = open(descriptor).read()
    before = sorted(os.listdir(host.real(DS1)))
    for extent in (DS1 + "/victim/victim-flat.vmdk", "../../../../datastore1/victim/victim-flat.vmdk", "/dev/sda"):
        with open(descriptor, "w") as f:
            f.write(own.replace('"disk-flat.vmdk"', '"%s"' % extent))
        seal(backup, "web", [("scsi0:0", ["disk.vmdk", "disk-flat.vmdk"])])  # hand-edited, then sealed
        for dry in ((), ("-d", "1")) if extent == "/dev/sda" else ((),):
            line = restore_line(hotvcb(host, "restore", *dry, inside, "--datastore", "datastore1", "--name", "w2"))
            assert "%s/disk.vmdk names %r, a file outside the backup" % (inside, extent) in line, line
            assert sorted(os.listdir(host.real(DS1))) == before
    os.unlink(os.path.join(backup, "hotvcb.json"))  # a ghettoVCB backup: nothing else would notice
    line = restore_line(hotvcb(host, "restore", inside, "--datastore", "datastore1", "--name", "w2"))
    assert "names '/dev/sda', a file outside the backup" in line, line
    assert sorted(os.listdir(host.real(DS1))) == before
    with open(descriptor, "w") as f:
        f.write(own)
    r = hotvcb(host, "restore", inside, "--datastore", "datastore1", "--name", "w2")
    assert r.returncode == 0, r.stdout + r.stderr
    shutil.rmtree(os.path.dirname(backup))


@needs_root
def test_a_name_that_cannot_be_a_vm_name_is_refused(host, tmp_path):
    """`--name /` gave a VM literally named `/`; `..`, dots and spaces, '/' inside, a line break, and NUL
    (only the API can pass one: argv and -c files cannot) are refused with one line, on ESXi and with
    --kvm, nothing written; so is the backup's own displayName holding a line break, asking for a name."""
    backup = esxi_backup(host.real(VOLUME), "named")
    inside = "%s/named/named-%s" % (VOLUME, TS)
    before = sorted(os.listdir(host.real(DS1)))
    for name in ("/", "..", " . ", "a/b", "a\nb"):
        line = restore_line(hotvcb(host, "restore", inside, "--datastore", "datastore1", "--name", name))
        assert "%r cannot be the restored VM's name" % name in line, line
        out = tmp_path / "kvm"
        out.mkdir(exist_ok=True)
        r = cli("restore", backup, "--kvm", out, "--name", name)
        assert r.returncode == 6 and "%r cannot be the restored VM's name" % name in one_clear_error(r), r.out
        assert os.listdir(str(out)) == []
    with pytest.raises(KvmRestoreError, match=r"'a\\x00b' cannot be the restored VM's name: it holds a NUL"):
        KvmRestore(LocalShell(), RunLog(stream=io.StringIO())).run(KvmRequest(backup, str(out), name="a\0b"))
    assert os.listdir(str(out)) == []
    own = esxi_backup(host.real(VOLUME), "ownname", keys={"displayName": "own\nname"})
    kvm = cli("restore", own, "--kvm", out)
    assert kvm.returncode == 6, kvm.out
    for line in (restore_line(hotvcb(host, "restore", "%s/ownname/ownname-%s" % (VOLUME, TS), "--datastore",
                                     "datastore1")), one_clear_error(kvm)):
        assert "'own\\nname' cannot be the restored VM's name" in line and "restore it under a new name" in line, line
    assert os.listdir(str(out)) == []
    assert sorted(os.listdir(host.real(DS1))) == before
    shutil.rmtree(os.path.dirname(backup))
    shutil.rmtree(os.path.dirname(own))


@needs_root
def test_a_sigkilled_kvm_to_esxi_restore_takes_its_qemu_img_along(host, tmp_path):
    """The staging step converts the qcow2 with qemu-img on the host: it must end with hotvcb, as
    restore --kvm's conversion and the smoke boot do, not go on writing into the staging folder."""
    made = libvirt_backup(tmp_path / "vol", "<disk type='file' device='disk'><driver type='qcow2'/>"
                          "<source file='/x/vda.qcow2'/><target dev='vda' bus='virtio'/></disk>")
    raw = str(tmp_path / "big.raw")
    with open(raw, "wb") as f:
        f.write(os.urandom(48 << 20))  # at 1 MiB/s: nearly a minute of writing
    subprocess.run([QEMU_IMG, "convert", "-q", "-f", "raw", "-O", "qcow2", raw, os.path.join(made, "vda.qcow2")],
                   check=True, timeout=60)
    seal(made, "lv", [("vda", ["vda.qcow2"])])
    inside = "%s/lv/lv-%s" % (VOLUME, TS)
    shutil.copytree(made, host.real(inside))
    slow = slow_qemu_img(str(tmp_path / "slowbin"), "1M")
    p = subprocess.Popen([sys.executable, "-m", "esxisim", "shell", host.root, "--", "env", "PYTHONPATH=" + REPO,
                          "PATH=%s:" % slow + os.environ.get("PATH", "/usr/bin:/bin"), "/bin/python", "-m", "hotvcb",
                          "restore", inside, "--datastore", "datastore1", "--no-verify"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ, PYTHONPATH=REPO),
                         cwd=REPO)
    try:
        wait_until(lambda: procs_naming(".hotvcb-extract-") and any(
            n.endswith(".vmdk") for d, _s, ns in os.walk(host.real(DS1)) for n in ns if ".hotvcb-extract-" in d),
            120, "the staging conversion to start")
        (qemu_img,) = [pid for pid in procs_naming(".hotvcb-extract-") if not _a_shell(pid)]  # its tether: a sh
        restore = parent_of(qemu_img)
        while _a_shell(restore):  # the tether's wrapper (tether.py) between hotvcb and its copy
            restore = parent_of(restore)
        assert b"-m\0hotvcb" in open("/proc/%d/cmdline" % restore, "rb").read()
        os.kill(restore, signal.SIGKILL)
        wait_until(lambda: not procs_naming(".hotvcb-extract-"), 15, "qemu-img to end with hotvcb")
    finally:
        for pid in procs_naming(".hotvcb-extract-"):
            os.kill(pid, signal.SIGKILL)
        kill_tree(p.pid)
        p.wait(30)
    assert not os.path.exists(host.real(DS1 + "/lv"))
    r = hotvcb(host, "cleanup", "-g", write_conf(host))  # the staging folder, half written, is a dead restore's
    assert r.returncode == 0 and "left by a restore that died" in r.stdout, r.stdout + r.stderr
    assert [e for e in os.listdir(host.real(DS1)) if e.startswith(".hotvcb-extract-")] == []
