"""Known behaviours of s34 pinned: what an admin reads after a qemu-img killed by a signal, a boot check's
notes, `list` of a missing per-VM volume, cleanup of a restore folder, the copy silence's cap."""

import os
import subprocess

import pytest

from qemuvm import PYTHON, QEMU_IMG, env, needs_qemu
from test_outsider_crosshv import esxi_backup


def _cli(*args, bin_dir=None, timeout=120):
    r = subprocess.run([PYTHON, "-m", "hotvcb"] + [str(a) for a in args], capture_output=True, text=True,
                       timeout=timeout, env=env(bin_dir))
    r.out = r.stdout + r.stderr
    return r


def _qemu_img_killed_on(tmp_path, verb):
    """A bin folder whose qemu-img SIGKILLs itself when run as `qemu-img <verb>`, else is the real one."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "qemu-img").write_text('#!/bin/sh\n[ "$1" = %s ] && kill -9 $$\nexec %s "$@"\n' % (verb, QEMU_IMG))
    (bin_dir / "qemu-img").chmod(0o755)
    return str(bin_dir)


@needs_qemu
@pytest.mark.parametrize("verb, says", [("convert", "qemu-img was killed by SIGKILL"),
                                        ("info", "qemu-img info was killed by SIGKILL")])
def test_a_qemu_img_killed_by_a_signal_is_named_as_such(tmp_path, verb, says):
    """As a killed vmkfstools is: the admin read "Killed" (the shell's word) or "exit -9" / "exit 137",
    a status qemu-img never gives, and had to know that meant the OOM killer or someone's kill."""
    backup = esxi_backup(tmp_path / "vol", "web")
    (tmp_path / "out").mkdir()
    r = _cli("restore", backup, "--kvm", tmp_path / "out", bin_dir=_qemu_img_killed_on(tmp_path, verb))
    assert r.returncode != 0 and "Traceback" not in r.out, r.out
    assert says in r.out and "exit -9" not in r.out and "exit 137" not in r.out, r.out
    assert os.listdir(str(tmp_path / "out")) == [], r.out


NIC = {"ethernet0.present": "TRUE", "ethernet0.virtualDev": "vmxnet3", "ethernet0.networkName": "VM Network",
       "ethernet0.address": "00:50:56:01:02:03"}
RESTORE_ADVICE = ("restored on sata", "--disk-bus", "--nic-model", "network 'default'")


@needs_qemu
def test_a_boot_check_says_only_what_fits_a_boot_check(tmp_path):
    """`verify --boot` boots on its own buses without network and has no --disk-bus or --nic-model: it told
    the admin the NIC "is attached to libvirt's network 'default'" and which restore options to take."""
    backup = esxi_backup(tmp_path / "vol", "web", keys=NIC)
    r = _cli("verify", "--boot", backup, "--boot-accel", "tcg")
    assert r.returncode == 0 and "PASS" in r.out, r.out
    assert not [a for a in RESTORE_ADVICE if a in r.out], r.out
    (tmp_path / "out").mkdir()
    r = _cli("restore", backup, "--kvm", tmp_path / "out")
    assert r.returncode == 0 and all(a in r.out for a in RESTORE_ADVICE), r.out  # the restore still says them


@pytest.mark.parametrize("global_there", [True, False])
def test_list_names_a_per_vm_volume_that_is_not_there_and_no_backups_under_a_volume_that_is_not(tmp_path,
                                                                                                   global_there):
    """db's per-VM file sends its backups to a share that is gone: `list -c DIR` said nothing of it and
    "no backups under <the global volume>", where db's backups never were (or which is not there either)."""
    volume, gone = tmp_path / "vol", tmp_path / "nas" / "db"
    if global_there:
        volume.mkdir()
    conf = tmp_path / "hotvcb.conf"
    conf.write_text("VM_BACKUP_VOLUME=%s\n" % volume)
    confdir = tmp_path / "vmconf"
    confdir.mkdir()
    (confdir / "db").write_text("VM_BACKUP_VOLUME=%s\n" % gone)
    r = _cli("list", "-g", conf, "-c", confdir)
    assert "Traceback" not in r.out and "%s does not exist" % gone in r.stderr and "db's" in r.stderr, r.out
    if global_there:
        assert r.returncode == 0 and r.stdout.strip() == "no backups under %s" % volume, r.out
    else:  # no volume at all is there: as with no per-VM file, an error, never "no backups under" it
        assert r.returncode == 1 and "no backups under" not in r.out, r.out


@needs_qemu
def test_cleanup_never_takes_a_restored_vm_named_like_an_unfinished_folder(tmp_path):
    """A VM restored as `x.hotvcb-restoring` (its own name), beside the record a restore of `x` left when it
    died between its rename and removing its record (another machine's, or one whose pid could not be told
    when the next restore looked): `cleanup --kvm` said "removing ... left by a restore that died" and deleted
    the good VM. Its definition is named after the folder itself, which no unfinished folder's is."""
    import hashlib
    import socket
    from restorerecords import dead_pid, write_record

    name = "x.hotvcb-restoring"
    backup = esxi_backup(tmp_path / "vol", name)
    out = tmp_path / "out"
    out.mkdir()
    r = _cli("restore", backup, "--kvm", out)
    assert r.returncode == 0 and (out / name / (name + ".xml")).exists(), r.out
    folder = str(out / name)
    host_id = open("/etc/machine-id").read().strip() if os.path.exists("/etc/machine-id") else None
    record = write_record(str(out / (".hotvcb-restoring-%s.owner" % hashlib.sha1(folder.encode()).hexdigest()[:16])),
                          socket.gethostname(), dead_pid(), folder, host=host_id)
    before = sorted(os.listdir(folder))
    for level in ("dryrun", None):
        r = _cli("cleanup", "--kvm", out, *(("-d", level) if level else ()))
        assert r.returncode == 0 and "Traceback" not in r.out, r.out
        assert sorted(os.listdir(folder)) == before, r.out
        assert "restore that died (" not in r.out and "the VM %r restored there" % name in r.out, r.out
    assert not os.path.exists(record), r.out  # the dead restore's record goes: its folder is no more


@needs_qemu
def test_a_hung_copy_of_the_largest_disk_is_called_hung_within_hours(tmp_path):
    """The silence allowed grew with the disk without end: a hung copy of a 62 TB disk (VMFS's largest) stayed
    unsaid for some 16 hours, its VM's snapshot growing and the next night's run kept out meanwhile."""
    from test_known_s33k3 import _convert_caught, _Silenced
    from hotvcb import copysilence
    from hotvcb.hosts import qemuimg
    from hotvcb.model import Disk

    image = str(tmp_path / "disk.qcow2")
    subprocess.run([QEMU_IMG, "create", "-q", "-f", "qcow2", image, "1M"], check=True)
    (tmp_path / "out").mkdir()
    given = []
    with pytest.raises(_Silenced):
        qemuimg.copy_to(_convert_caught(given), Disk("vda", image, "", "virtio"), image, "qcow2",
                        str(tmp_path / "out" / "vda.qcow2"), "qcow2", None, 62 * 10 ** 12)
    (silence,) = given
    assert silence <= 6 * 3600, "%.1f h of silence" % (silence / 3600)
    assert silence == copysilence.allowed(62 * 10 ** 12) == copysilence.CAP
    assert copysilence.allowed(9 * 10 ** 12) > 2 * 3600, "a 9 TB disk's slow stretch is still no hang"
