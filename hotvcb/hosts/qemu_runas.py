"""Overlays for a QEMU that runs as another user than root (`-runas nobody`, `-run-with user=`), as QEMU's docs
advise hardening a VM.

Such a QEMU may write its images but not create files in their folder (root's, 0755 as /srv/vms usually is),
so `blockdev-snapshot-sync` making the overlay failed ("Could not create …: Permission denied") and the VM was
never backed up. hotvcb, root, makes each overlay itself (`qemu-img create -u` on the image, which QEMU's write
lock keeps from being opened), hands it to the QEMU's user (0600: the guest's writes during the backup are no
one else's to read), and QEMU takes it as it is (`mode: existing`), as the libvirt side hands its NBD folder to
the domain's QEMU user. The QEMU's user is the one /proc shows for the process at the QMP socket's other end:
SO_PEERCRED's own uid is the one QEMU listened with, root's, before it dropped to that user.
"""

from typing import Optional

from ..errors import HostError, SnapshotError
from ..shell import Shell
from . import qemuimg
from .qmp import QmpClient


def qemu_user(qmp: QmpClient) -> str:
    """`uid:gid` the QEMU behind `qmp` runs as (effective ids), "" for root or where it cannot be told."""
    pid = qmp.peer_pid()
    if pid is None:
        return ""
    ids = {}
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("Uid", "Gid") and len(rest.split()) > 1:
                    ids[key] = rest.split()[1]
    except OSError:
        return ""
    if set(ids) != {"Uid", "Gid"} or not all(v.isdigit() for v in ids.values()) or ids["Uid"] == "0":
        return ""
    return "%s:%s" % (ids["Uid"], ids["Gid"])


def make_overlay(shell: Shell, qemu_img: str, owner: str, image: str, image_format: str, size: Optional[int],
                 overlay: str) -> None:
    """The overlay on `image`, made and handed to `owner` for QEMU to open as it is; SnapshotError (QEMU not
    asked yet) if that fails, nothing left of it."""
    try:
        qemuimg.create_overlay(shell, image, image_format, overlay, qemu_img, size)
        shell.chmod(overlay, 0o600)
        out = shell.run(["chown", owner, overlay], timeout=30)
        if out.returncode != 0:
            raise HostError("chown %s %s: %s" % (owner, overlay, out.output.strip()[:200]))
    except HostError as err:
        shell.remove_tree(overlay)
        raise SnapshotError("cannot make the overlay %s for a QEMU running as %s: %s" % (overlay, owner, err)) from err
