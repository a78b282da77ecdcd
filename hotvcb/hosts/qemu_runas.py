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

import errno
import os
import pwd
import stat
from typing import Dict, List, Optional, Set, Tuple

from ..errors import HostError, SnapshotError
from ..shell import Shell
from . import qemuimg
from .qmp import QmpClient


def qemu_user(qmp: QmpClient) -> str:
    """`uid:gid` the QEMU behind `qmp` runs as (effective ids), "" for root or where it cannot be told."""
    pid = qmp.peer_pid()
    ids = _ids(pid) if pid is not None else None
    if ids is None or ids[0] == 0:
        return ""
    return "%d:%d" % (ids[0], ids[1])


def unopenable(qmp: QmpClient, owner: str, overlays: List[str]) -> str:
    """Why the QEMU behind `qmp` (running as `owner`, "" for root) cannot open the overlays by their paths, as
    `blockdev-snapshot-sync` has it do; "" where it can, or where that cannot be told (QEMU then says).
    A QEMU chrooted (`-chroot DIR`, as QEMU's docs list among hardening) looks the path up below DIR: the
    overlay made beside the image is not there, and QEMU's bare "No such file or directory" about a file the
    admin sees named nothing. A QEMU dropped to another user after opening its images (root's, 0600, in a
    root-only folder: the common hardened layout) cannot enter that folder to open its overlay, and its bare
    "Permission denied" is about a file owned by that very user. Both are named before QEMU is asked. (QEMU
    could take the overlay as a descriptor passed on QMP, `add-fd`, but it would then be named /dev/fdset/N
    in the disk's chain, where the overlay is found again by its name.)"""
    pid = qmp.peer_pid()
    if pid is None:
        return ""
    try:
        root = os.readlink("/proc/%d/root" % pid)
    except OSError:
        root = "/"
    for folder in sorted({os.path.dirname(o) for o in overlays}):
        seen = root.rstrip("/") + folder
        if root != "/" and not _same_dir(seen, folder):
            return ("its QEMU (pid %d) runs chrooted in %s (`-chroot`), so it looks %s up as %s, which is not "
                    "the folder hotvcb makes the overlay in; not supported: run that QEMU without -chroot (or with "
                    "its images' folders at the same paths inside its root) to back it up" % (pid, root, folder, seen))
        ids = _ids(pid) if owner else None
        shut = _first_shut(root, folder, ids) if ids is not None else ""
        if shut:
            return ("its QEMU (pid %d) runs as %s, which cannot enter %s (%s), where the overlay of its disk has "
                    "to be opened (QEMU opened its images as root before it dropped to that user); not supported: "
                    "let that user search (x) the folder, or run that QEMU as root, to back it up"
                    % (pid, _user_name(owner), shut, _mode_of(root.rstrip("/") + shut)))
    return ""


def _ids(pid: int) -> Optional[Tuple[int, int, Set[int]]]:
    """The effective uid, gid and the supplementary groups of process `pid`; None where they cannot be told."""
    ids = {}  # type: Dict[str, List[str]]
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("Uid", "Gid", "Groups"):
                    ids[key] = rest.split()
    except OSError:
        return None
    if len(ids.get("Uid", [])) < 2 or len(ids.get("Gid", [])) < 2 or \
            not all(v.isdigit() for v in ids["Uid"][1:2] + ids["Gid"][1:2] + ids.get("Groups", [])):
        return None
    gid = int(ids["Gid"][1])
    return int(ids["Uid"][1]), gid, {gid} | {int(g) for g in ids.get("Groups", [])}


def _same_dir(a: str, b: str) -> bool:
    try:
        x, y = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (x.st_dev, x.st_ino) == (y.st_dev, y.st_ino)


def _first_shut(root: str, folder: str, ids: Tuple[int, int, Set[int]]) -> str:
    """The first folder on the way to `folder` (as seen below `root`) the user `ids` may not search; "" if none
    is, or where that cannot be told (an ACL, which the mode bits do not show, or no stat)."""
    uid, _gid, groups = ids
    path = ""
    for part in [p for p in folder.split("/") if p]:
        path += "/" + part
        seen = root.rstrip("/") + path
        try:
            st = os.stat(seen)
        except OSError:
            return ""
        if _may_have_acl(seen):  # an ACL decides, which the mode bits do not show
            return ""
        bits = st.st_mode >> 6 if st.st_uid == uid else st.st_mode >> 3 if st.st_gid in groups else st.st_mode
        if not bits & 0o1:
            return path
    return ""


def _may_have_acl(path: str) -> bool:
    try:
        os.getxattr(path, "system.posix_acl_access")
    except OSError as err:
        return err.errno not in (errno.ENODATA, errno.ENOTSUP)  # any other error: cannot be told
    return True


def _user_name(owner: str) -> str:
    """`name (uid:gid)`, or the ids alone for a uid with no name."""
    try:
        return "%s (%s)" % (pwd.getpwuid(int(owner.split(":")[0])).pw_name, owner)
    except (KeyError, ValueError):
        return owner


def _mode_of(path: str) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return "cannot be looked at"
    return "mode %04o, owner %d:%d" % (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)


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
