"""What a dry run (`-d dryrun`, ghettoVCB-restore's `-d 1|2`) says a restore would do, once every
check passed and before anything is written: the plan (restore_plan.py) line by line, the .vmx's
rewrites, and with `verbose` the whole rewritten .vmx."""

from ..restorefile import RestoreRequest
from ..units import human_size
from . import restore_stage
from .restore_plan import Plan


def print_plan(log, req: RestoreRequest, plan: Plan, compressed: bool, verbose: bool) -> None:
    out = log.dryrun
    out("###############################################")
    out("RESTORE: %s%s" % (req.backup, " (compressed)" if compressed else ""))
    out("VM NAME: %s" % plan.name)
    out("TARGET FOLDER: %s (written as %s, renamed when complete)" % (plan.folder, plan.temp))
    out("DISK FORMAT: %s" % req.disk_format)
    for d in plan.disks:
        out("VMDK: %s (%s) -> %s/%s as %s, needs %s" % (
            d.source, d.key, plan.folder, d.target, req.disk_format, human_size(d.needed)))
    for src, dst in plan.files:
        out("FILE: %s -> %s/%s" % (src, plan.folder, dst))
    if plan.tree is not None:
        out("SNAPSHOT TREE: %s (%d delta(s) relinked) -> %s/%s" % (
            ", ".join(plan.tree.snapshots), len(plan.tree.deltas), plan.folder, plan.tree.vmsd_name))
    out("VMX: %s/%s" % (plan.folder, plan.vmx_name))
    for key, old, new in plan.rewrites:
        if new is None:
            out("VMX REMOVE: %s (was %r)" % (key, old))
        else:
            out("VMX SET: %s = %r (was %r)" % (key, new, old))
    out("REGISTER: vim-cmd solo/registervm %s/%s" % (plan.folder, plan.vmx_name))
    free = "unknown" if plan.free is None else human_size(plan.free)
    out("ROOM: needs %s, %s free" % (human_size(plan.needed), free))
    if verbose:
        for line in plan.vmx_text.splitlines():
            out("VMX | %s" % line)
    out("###############################################")


def print_staged(log, req: RestoreRequest, backup: str, kvm: "restore_stage.Found", folder: str) -> None:
    """A KVM backup's restore: its disks are converted before there is a plan to print."""
    log.dryrun("RESTORE: %s (%s backup) as %s in %s, disks %s converted to VMDK with qemu-img first" % (
        backup, kvm.kind, req.disk_format, folder, ", ".join(d.source for d in kvm.machine.disks)))
