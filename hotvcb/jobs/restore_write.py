"""The restored VM's files written into its unfinished folder, then the VM registered.

Each disk is cloned by the driver (vmkfstools -i), but a thin disk this
process copies itself (restore_copy.py), checked by the read that copies it,
and a thin flat disk this run staged (restore --repo), moved rather than
written twice; then the .nvram/.vmxf, the user's snapshot tree
(restore_tree.py) and the rewritten .vmx, last. Claiming the folder, the
rename that completes it and removing it on failure are restore.py's.
"""

from typing import Callable

from .. import interrupt, vmdk
from ..errors import HotvcbError, Interrupted
from ..hosts.base import Hypervisor
from ..model import Disk, Vm, VmRef
from ..restorefile import RestoreRequest
from . import restore_copy, restore_tree
from .restore_check import Checking, damaged
from .restore_plan import Plan, RestoreError


def fill(host: Hypervisor, req: RestoreRequest, log, plan: Plan, checking: Checking) -> None:
    """Everything the plan names, written into `plan.temp`; the copy stops as soon as `checking` finds
    damage."""
    shell, fmt = host.shell, req.disk_format
    for d in plan.disks:
        if interrupt.pending():
            interrupt.raise_pending()
        checking.stop_if_damaged()
        own = checking.own.by_source.get(d.source)
        log.info("Restoring %s (%s) to %s/%s as %s%s" % (d.source, d.key, plan.folder, d.target, fmt,
                                                        "" if own is None else ", checked as it is copied"))
        disk = Disk(key=d.key, path=d.source, datastore="", adapter=d.adapter)
        progress = checking.watching(log.progress("%s %s" % (plan.name, d.target), d.needed))
        try:
            if own is None:
                _put_disk(host, req, disk, plan.temp + "/" + d.target, progress)
            else:
                _copy_itself(host, req, log, own, plan.temp + "/" + d.target, progress)
        except (Interrupted, RestoreError):
            raise
        except HotvcbError as err:
            raise RestoreError("disk %s of %s: %s; nothing was registered" % (d.key, plan.name, err)) from err
    for src, dst in plan.files:
        shell.copy_file(src, plan.temp + "/" + dst)
    if plan.tree is not None:
        log.info("Restoring the snapshot tree (%s): %d delta(s), relinked" % (
            ", ".join(plan.tree.snapshots), len(plan.tree.deltas)))
        restore_tree.copy(shell, plan.tree, plan.temp)
    for key, old, new in plan.rewrites:
        log.debug("%s: .vmx %s: %r -> %r" % (plan.name, key, old, new))
    shell.write_text(plan.temp + "/" + plan.vmx_name, plan.vmx_text)


def _put_disk(host: Hypervisor, req: RestoreRequest, disk: Disk, dst: str, progress: Callable[[int], None]) -> None:
    """Clone the disk into the new folder; a thin flat disk this run staged (restore --repo) is
    already what the clone would write, on the same datastore, so it is moved instead of
    written a second time."""
    shell, fmt = host.shell, req.disk_format
    text = shell.read_text(disk.path) if req.staged and fmt == "thin" else ""
    desc = vmdk.parse(text) if text else None
    if desc is None or not desc.thin or desc.is_delta or len(desc.extents) != 1:
        host.copy_disk(disk, dst, fmt, progress)
        return
    flat = vmdk.flat_beside(dst)
    shell.rename(disk.path.rsplit("/", 1)[0] + "/" + desc.extents[0].filename, flat)
    shell.write_text(dst, vmdk.rename_extent(text, flat.rsplit("/", 1)[1]))


def _copy_itself(host: Hypervisor, req: RestoreRequest, log, own: "restore_copy.OwnCopy", dst: str,
                 progress: Callable[[int], None]) -> None:
    """One read of the disk, digested as verify does and written from the same buffers; damage
    refuses the restore as the background check's would."""
    problem = restore_copy.copy(host.shell, own, dst, progress)
    if problem is not None:
        raise RestoreError(damaged(req, problem))
    log.info("Checksums hold: %s, checked as it was copied" % own.rel)


def register(host: Hypervisor, log, plan: Plan, power_on: bool) -> str:
    """The complete VM registered (and powered on if asked); its vmid. A registration that fails says
    how to register the folder by hand."""
    vmx = plan.folder + "/" + plan.vmx_name
    log.info("Registering %s ..." % plan.name)
    try:
        vmid = host.register_vm(vmx)
    except HotvcbError as err:
        raise RestoreError("restored %s completely, but registering it failed: %s -- register it with "
                           "`vim-cmd solo/registervm '%s'`" % (plan.folder, err, vmx)) from err
    log.info("Registered %s as vmid %s" % (plan.name, vmid))
    if power_on:
        ref = VmRef(vmid=vmid, name=plan.name, vmx_path=vmx)
        host.power_on(Vm(ref=ref, datastore="", folder=plan.folder, vmx=None))
        log.info("Powered on %s" % plan.name)
    return vmid
