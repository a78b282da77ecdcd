"""Sealed hotvcb backups of a bare-QEMU VM built by hand in a test's volume, and hotvcb run on them as the admin
runs it: the verify testers' files (test_outsider_s36verify.py, test_known_s36verify.py,
test_outsider_s37verify.py) judge such folders through verify, list and restore --kvm, and built them alike."""

import json
import os
import struct
import subprocess
import sys
from datetime import datetime, timedelta

import pytest

from hotvcb.localshell import LocalShell
from hotvcb.store import manifest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VM = "web"
TIMEOUT = 60  # seconds: a FIFO opened for reading blocks for ever, a check of these backups takes one


def stamp(hours_ago: float = 2) -> str:
    """A backup folder's time stamp `hours_ago` hours back."""
    return (datetime.now() - timedelta(hours=hours_ago)).strftime("%Y-%m-%d_%H-%M-%S")


def qcow2_header(backing: str = "") -> bytes:
    """The head of a qcow2 image (chain.backing_file reads its magic and its backing file's offset and length)."""
    name = backing.encode()
    head = b"QFI\xfb" + struct.pack(">I", 3) + struct.pack(">QI", 104 if name else 0, len(name))
    return head.ljust(104, b"\0") + name + b"\0" * 4096


def sealed(volume, when: str = "", vm: str = VM, backing: str = "", restorable: bool = False) -> str:
    """A sealed hotvcb backup of `vm` in its VM's folder (time stamp `when`, else two hours ago): its disk
    vda.qcow2, the VM's description `<vm>.json`, the manifest with every checksum, STATUS.ok. The disk is a
    qcow2 header (backing file `backing`) and the description `{}`; `restorable`: a real 1 MiB qcow2 image
    (qemu-img) and a description restore --kvm and verify --boot can use."""
    folder = os.path.join(str(volume), vm, "%s-%s" % (vm, when or stamp()))
    os.makedirs(folder)
    disk, description = os.path.join(folder, "vda.qcow2"), os.path.join(folder, vm + ".json")
    if restorable:
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", disk, "1M"], check=True)
    else:
        with open(disk, "wb") as f:
            f.write(qcow2_header(backing))
    with open(description, "w") as f:
        f.write(json.dumps({"hypervisor": "qemu", "name": vm}) if restorable else "{}\n")
    files = {rel: manifest.digest_file(LocalShell(), os.path.join(folder, rel)).entry()
             for rel in ("vda.qcow2", vm + ".json")}
    disks = [{"key": "drive0", "source": "/var/lib/images/%s.qcow2" % vm, "files": ["vda.qcow2"], "ok": True}]
    with open(os.path.join(folder, manifest.MANIFEST), "w") as f:
        f.write(manifest.dumps({"vm": vm, "result": "ok", "disk_format": "qcow2", "disks": disks, "files": files}))
    with open(os.path.join(folder, "STATUS.ok"), "w") as f:
        f.write("ok\n")
    return folder


def hotvcb(tmp_path, *args, cwd=None):
    """hotvcb `args` run as the admin runs it (in `cwd`, else tmp_path), with a config naming tmp_path/vol as the
    backup volume; bounded (a blocked open never returns): a run still going after TIMEOUT fails the test.
    The CompletedProcess, with `out` its stdout and stderr."""
    conf = tmp_path / "hotvcb.conf"
    conf.write_text("VM_BACKUP_VOLUME=%s\n" % (tmp_path / "vol"))
    try:
        r = subprocess.run([sys.executable, "-m", "hotvcb"] + [str(a) for a in args] + ["-g", str(conf)],
                           capture_output=True, text=True, timeout=TIMEOUT, env=dict(os.environ, PYTHONPATH=REPO),
                           cwd=str(cwd or tmp_path))
    except subprocess.TimeoutExpired:
        pytest.fail("hotvcb %s still running after %d s" % (" ".join(map(str, args)), TIMEOUT))
    r.out = r.stdout + r.stderr
    return r


def listed(tmp_path, folder) -> dict:
    """`list --json`'s entry for the backup `folder` of VM."""
    r = hotvcb(tmp_path, "list", "--json", VM)
    assert r.returncode == 0, r.out
    (b,) = [b for b in json.loads(r.stdout)["backups"] if b["name"] == os.path.basename(folder)]
    return b
