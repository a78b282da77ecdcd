"""What the QEMU and the libvirt driver share: the VMs run on this machine (LocalKvmHost), its free space, and an
image's sizes where a layer may be a block device."""

import os
import socket
import stat
from dataclasses import replace
from typing import Callable, List, Optional, Tuple

from ..errors import HostError
from ..model import DatastoreInfo, Disk, NfsShare, Snapshot, Vm
from ..runid import machine_id
from . import qemuimg
from .base import Copied


class LocalKvmHost:
    """What the QEMU and the libvirt driver share: the VMs run on this machine, which has no datastores."""

    kind = "kvm"
    run_dir: str  # each driver's own (QemuHost, LibvirtHost)
    snapshots: Callable[..., List[Snapshot]]  # each driver's own

    def host_name(self) -> str:
        return socket.gethostname()

    def system_id(self) -> str:
        """This machine's /etc/machine-id and the driver's run folder (the QMP folder, the libvirt URI's):
        both outlive a reboot, unlike the host id kept in that folder (often a tmpfs), and two QMP folders
        of one machine stay two hosts, as their host ids made them. "" on a machine without a machine id."""
        machine = machine_id()
        return "%s:%s" % (machine, os.path.realpath(self.run_dir)) if machine else ""

    def datastores(self) -> List[DatastoreInfo]:
        return []

    def mount_nfs(self, name: str, server: str, share: str, version: str) -> None:
        raise HostError("ENABLE_NON_PERSISTENT_NFS is for ESXi; on a %s host mount %s:%s yourself"
                        % ("QEMU" if self.kind == "qemu" else self.kind, server, share))

    def unmount_nfs(self, name: str) -> None:
        raise HostError("ENABLE_NON_PERSISTENT_NFS is for ESXi")

    def nfs_share(self, name: str) -> Optional[NfsShare]:
        return None  # no datastores here (`datastores()`), so none of that name

    def free_space(self, path: str) -> Optional[int]:
        return local_free_space(path)

    def await_snapshot_removal(self, vm: Vm, snap: Snapshot, timeout: float) -> bool:  # noqa: ARG002
        """No removal here runs on past the call that made it (its commands end with it, unlike hostd's task
        on ESXi): looked at once, gone or not, with no wait."""
        return not any(s.id == snap.id for s in self.snapshots(vm))

    def copied_as(self, disk: Disk, dst: str, fmt: str) -> Optional[Copied]:
        """None: the guest writes the image while libvirt's backup job exports it (LibvirtHost), so no
        file holds what the copy will; QemuHost's image is held still by the overlay."""
        return None


def local_sizes(layers: List[qemuimg.ImageLayer]) -> Tuple[int, int]:
    """qemuimg.sizes, where a layer on a block device (an LV, a loop device) counts whole (its virtual size,
    a raw one's is the device's): qemu's actual-size is what a file system allocated, 0 for a device node."""
    return qemuimg.sizes([replace(l, actual_size=l.virtual_size) if _on_block_device(l.filename) else l
                          for l in layers])


def _on_block_device(path: str) -> bool:
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False


def local_free_space(path: str) -> Optional[int]:
    """Free bytes where path is (or would be created); the driver runs on its host, so is this."""
    probe = path
    while probe and not os.path.exists(probe):
        parent = os.path.dirname(probe.rstrip("/"))
        if parent == probe:
            break
        probe = parent
    try:
        st = os.statvfs(probe or "/")
    except OSError:
        return None
    return st.f_bavail * st.f_frsize
