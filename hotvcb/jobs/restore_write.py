"""The restored VM's files written into its unfinished folder, then the VM registered.

Each disk is cloned by the driver (vmkfstools -i), but a thin disk this
process copies itself (restore_copy.py), checked by the read that copies it,
and a thin flat disk this run staged (restore --repo), moved rather than
written twice; then the .nvram/.vmxf, the user's snapshot tree
(restore_tree.py) and the rewritten .vmx, last; then the VM registered
and, if asked, powered on. Claiming the folder, the rename that completes it
and removing it on failure are restore.py's.
"""

from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Set, Tuple

from .. import interrupt, vmdk
from ..errors import HostError, HotvcbError, Interrupted
from ..filetext import read_small
from ..hosts.base import Hypervisor
from ..model import Disk, Vm, VmRef
from ..restorefile import RestoreRequest
from ..shell import Shell
from ..vmx import MAX_SIZE, VmxFile
from . import backup_check, restore_copy, restore_tree
from .restore_check import Checking, damaged
from .restore_plan import DiskCopy, Plan, RestoreError
from .restore_tally import Tally
from .vmx_identity import identity

CHECKED = ".hotvcb-checked"  # holds the checked descriptors a clone reads, in the unfinished VM folder (_checked)


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
        progress = checking.watching(log.progress("%s %s" % (plan.name, d.target), d.needed))
        try:
            if own is None:
                _put_disk(host, req, d, plan.temp, progress)
            else:
                _copy_itself(host, req, log, own, plan.temp + "/" + d.target, progress)
        except (Interrupted, RestoreError):
            raise
        except HotvcbError as err:
            raise RestoreError("disk %s of %s: %s; nothing was registered" % (d.key, plan.name, err)) from err
    for src, dst in plan.files:
        backup_check.copy_regular(shell, src, plan.temp + "/" + dst)
    if plan.tree is not None:
        log.info("Restoring the snapshot tree (%s): %d delta(s), relinked" % (
            ", ".join(plan.tree.snapshots), len(plan.tree.deltas)))
        restore_tree.copy(shell, plan.tree, plan.temp)
    for key, old, new in plan.rewrites:
        log.debug("%s: .vmx %s: %r -> %r" % (plan.name, key, old, new))
    shell.write_text(plan.temp + "/" + plan.vmx_name, plan.vmx_text)


def _put_disk(host: Hypervisor, req: RestoreRequest, d: DiskCopy, folder: str,
              progress: Callable[[int], None]) -> None:
    """Clone the disk into the new folder from the descriptor texts the plan checked (`_checked`); a
    thin flat disk this run staged (restore --repo) is already what the clone would write, on the
    same datastore, so it is moved instead of written a second time."""
    shell, fmt, dst = host.shell, req.disk_format, folder + "/" + d.target
    desc = vmdk.parse(d.text)
    if req.staged and fmt == "thin" and desc.thin and not desc.is_delta and len(desc.extents) == 1:
        flat = vmdk.flat_beside(dst)
        shell.rename(d.source.rsplit("/", 1)[0] + "/" + desc.extents[0].filename, flat)
        shell.write_text(dst, vmdk.rename_extent(d.text, flat.rsplit("/", 1)[1]))
        return
    if _descriptors(d):
        source = _checked(shell, d, folder)
    else:  # a sparse disk alone or over sparse parents: no text to copy, the files themselves (_unchanged)
        for path, _text in d.chain():
            backup_check.require_regular(shell, path)
        source = d.source
    try:
        host.copy_disk(Disk(key=d.key, path=source, datastore="", adapter=d.adapter), dst, fmt, progress)
    finally:
        if source != d.source:
            shell.remove_tree(folder + "/" + CHECKED)
    _unchanged(shell, d)


def _descriptors(d: DiskCopy) -> List[Tuple[str, str]]:
    """(path in the backup, text) of every descriptor file the clone reads as checked: the disk's, then
    its parents' (a sparse disk, its descriptor embedded, has none: `_checked`)."""
    return [(path, text) for path, text in d.chain() if text is not None]


def _unchanged(shell: Shell, d: DiskCopy) -> None:
    """Every file of the backup's chain is still what the plan checked: a descriptor file its text, a
    sparse one a sparse extent naming the same parent. The clone read checked copies of the
    descriptors, but a sparse file below the last of them (or in a chain with none) it read from the
    backup, by its name: swapped meanwhile for a descriptor naming another VM's disk, that disk was
    cloned as this one. Either way a file that changed means the backup is no longer the one its
    checksums (or the plan's checks) spoke for, and someone is changing it under the restore: refused
    rather than registered."""
    chain = d.chain()
    for k, (path, text) in enumerate(chain):
        hint = chain[k + 1][0].rsplit("/", 1)[1] if k + 1 < len(chain) else None
        try:
            if text is None:
                now = backup_check.link(shell, path)  # type: object
                why = "no longer the sparse disk that was checked"
            else:
                now, why = read_small(shell, path, backup_check.TEXT_MAX), "another text"
        except HotvcbError as err:
            now, why = None, str(err)
        if now != ((None, hint) if text is None else text):
            raise RestoreError("%s changed during the restore (%s): the backup is no longer the one that was "
                               "checked; nothing was registered" % (path, why))


def _checked(shell: Shell, d: DiskCopy, folder: str) -> str:
    """The descriptor vmkfstools clones: the text the plan read and checked (every extent beside it,
    backup_check.require_extents_inside; for a sealed backup, the text its checksum proves), written
    into the unfinished VM folder's CHECKED folder, under the descriptor's own name (what the clone's
    messages name), with its extents named by absolute path in the backup. A delta's parents are
    written beside it the same way, each under its own name: vmkfstools follows a parentFileNameHint
    from the child's folder, so each hint (a name, checked to be one) leads to the checked copy. The
    last descriptor file of the chain names its parent, if any, by its path in the backup: a sparse
    disk, the disk's data itself, as are the sparse ones below it (looked at again after the clone,
    `_unchanged`, rather than copied whole: a base's bytes are the disk's). A sparse disk above a descriptor
    file (the disk itself, or a parent: its descriptor embedded, its hint not to be rewritten) is
    copied there whole (`_sparse_copy`).

    vmkfstools opens the descriptors it is led to by name, so handed the backup's own it would read
    them again: one swapped after the check (a ghettoVCB backup has no checksums; a sealed one's
    was read by the background check before) would have whatever it names cloned as this disk. The
    copies live in a folder only this restore writes, `hotvcb cleanup` removes with it, and are gone
    before the folder gets its name. Each extent (and a sparse parent) must be a regular file
    (backup_check.require_regular), looked at here, just before the clone."""
    backup, checked = d.source.rsplit("/", 1)[0], folder + "/" + CHECKED
    chain, copies = d.chain(), d.sparse_copies()
    last = max(k for k, (_path, text) in enumerate(chain) if text is not None)
    shell.makedirs(checked)
    for k, (path, text) in enumerate(chain):
        if path in copies:
            _sparse_copy(shell, path, chain[k + 1][0], checked)
        elif text is None:
            backup_check.require_regular(shell, path)
        else:
            _write_checked(shell, path, text, backup, checked, k == last)
    return "%s/%s" % (checked, d.source.rsplit("/", 1)[1])


def _write_checked(shell: Shell, path: str, text: str, backup: str, checked: str, last: bool) -> None:
    """One descriptor's checked text in `checked`, its extents (and, `last` in the chain, its parent)
    named by absolute path in the backup."""
    for extent in vmdk.parse(text).extents:
        backup_check.require_regular(shell, extent.filename if extent.filename.startswith("/")
                                     else backup + "/" + extent.filename)
    try:
        text = vmdk.anchored(text, backup, parent=last)
    except vmdk.Unwritable as err:
        raise HostError("%s; not restoring from it (move the backup to a folder of plain name)" % err) from None
    shell.write_text("%s/%s" % (checked, path.rsplit("/", 1)[1]), text)


def _sparse_copy(shell: Shell, path: str, parent: str, checked: str) -> None:
    """A sparse disk of the chain whose descriptor is embedded (monolithicSparse), above a descriptor file:
    its hint, followed from the folder of the file vmkfstools opens, would lead back into the backup to
    a descriptor swapped since its check. So the file itself is copied into `checked`, beside the
    checked texts, and the copy's hint (which no one else can change) must still name `parent`, the
    file checked. The price: its bytes are written once more (a delta over a base holds what was
    written since, not the whole disk)."""
    copy = checked + "/" + path.rsplit("/", 1)[1]
    backup_check.require_regular(shell, path)
    shell.copy_file(path, copy)
    try:
        named = backup_check.named_parent(shell, copy)  # type: Optional[str]
    except HotvcbError:
        named = None
    if named != parent.rsplit("/", 1)[1]:
        raise RestoreError("%s changed during the restore (it names another parent now): the backup is no longer "
                           "the one that was checked; nothing was registered" % path)


def _copy_itself(host: Hypervisor, req: RestoreRequest, log, own: "restore_copy.OwnCopy", dst: str,
                 progress: Callable[[int], None]) -> None:
    """One read of the disk, digested as verify does and written from the same buffers; damage
    refuses the restore as the background check's would."""
    problem = restore_copy.copy(host.shell, own, dst, progress)
    if problem is not None:
        raise RestoreError(damaged(req, problem))
    log.info("Checksums hold: %s, checked as it was copied" % own.rel)


def register(host: Hypervisor, log, plan: Plan) -> str:
    """The complete VM registered; its vmid. A registration that fails says how to register the folder
    by hand."""
    vmx = plan.folder + "/" + plan.vmx_name
    kept = host.invalid_vms()  # as the restore's look at the inventory found them
    log.info("Registering %s ..." % plan.name)
    try:
        vmid = host.register_vm(vmx)
    except HotvcbError as err:
        raise RestoreError(_not_registered(host, plan, vmx, err)) from err
    if vmid in kept:
        log.info("Registered %s as vmid %s: the host had kept it in its inventory, invalid, while its files were "
                 "lost; it has them again" % (plan.name, vmid))
    else:
        log.info("Registered %s as vmid %s" % (plan.name, vmid))
    return vmid


def _not_registered(host: Hypervisor, plan: Plan, vmx: str, err: HotvcbError) -> str:
    """What a registration that failed left. One cut off on its way (its SSH session broke, vim-cmd was killed)
    may have been done by hostd all the same: told it was not, the admin met AlreadyExists registering it by
    hand, and a rerun the folder, for a VM they had not been told of. So the inventory is asked."""
    try:
        vmid = host.registered_at(vmx)
    except HotvcbError:
        return ("restored %s completely, but registering it broke off (%s), and whether the host registered it "
                "cannot be told now: look for %s in `vim-cmd vmsvc/getallvms`, and only if it is not listed "
                "register it with `vim-cmd solo/registervm '%s'`" % (plan.folder, err, vmx, vmx))
    if vmid is not None:
        return ("restored %s completely, and the host registered it as vmid %s, but the registration ended in an "
                "error: %s -- the VM is there, not powered on" % (plan.folder, vmid, err))
    return ("restored %s completely, but registering it failed: %s -- register it with "
            "`vim-cmd solo/registervm '%s'`" % (plan.folder, err, vmx))


def power_on(host: Hypervisor, log, plan: Plan, vmid: str) -> str:
    """The registered VM powered on: "" if it is, else why it was left off (logged as a warning).

    Restored under the backup's own name, the VM keeps the original's identity (MAC addresses,
    BIOS UUID, disk ids: vmx_identity.py). While a VM of that name or of that identity runs, that is
    the original (renamed, perhaps, to keep it for a post-mortem): powering its twin on would put two
    machines of one MAC address on the network, both writing the same application data. It stays
    off; a copy (--name) can run beside the original. A power-on the host refuses (no memory, a
    license limit) leaves the VM there too, complete and registered: the warning names it, so the
    admin does not take the restore for failed and run it again into its own folder."""
    ref = VmRef(vmid=vmid, name=plan.name, vmx_path=plan.folder + "/" + plan.vmx_name)
    clash = _clash(host, plan, vmid)
    if clash:
        why = ("%s is registered as vmid %s but not powered on: %s. Power it on once the original is off "
               "(`vim-cmd vmsvc/power.on %s`), or %s" % (plan.name, vmid, clash, vmid, _beside(plan)))
        log.warning(why)
        return why
    try:
        host.power_on(Vm(ref=ref, datastore="", folder=plan.folder, vmx=None))
    except HotvcbError as err:
        why = ("%s is restored and registered as vmid %s, but powering it on failed: %s -- power it on with "
               "`vim-cmd vmsvc/power.on %s` once the host can" % (plan.name, vmid, err, vmid))
        log.warning(why)
        return why
    log.info("Powered on %s" % plan.name)
    return ""


def say_power_on(host: Hypervisor, log, plan: Plan, tally: Tally) -> str:
    """A dry run's word on --power-on: what power_on would do now, so the admin checking at night is not
    told only at 3 a.m. that the VM stays off; beside the VMs the lines before would power on (`tally`:
    the real run finds them running, and a second copy keeping one static MAC stays off). Returns why it
    would be left off, or ""."""
    clash = _clash(host, plan, "", tally.running)
    if not clash:
        log.dryrun("POWER ON: %s, once registered" % plan.name)
        tally.powered_on(plan.name, identity(VmxFile(plan.vmx_text)))
        return ""
    why = "%s would be registered but left powered off: %s (%s)" % (plan.name, clash, _beside(plan))
    log.warning(why)
    return why


def _beside(plan: Plan) -> str:
    """How to get a VM that can run beside the original: a copy, or for a copy a MAC address of its own."""
    if plan.copy:
        return "give the copy MAC addresses of its own (ethernetN.addressType = \"generated\" in its .vmx) to run " \
               "it beside the original"
    return "restore with --name NEW for a copy that can run beside the original"


def _clash(host: Hypervisor, plan: Plan, vmid: str, planned: Sequence[Tuple[str, Set[str]]] = ()) -> str:
    """Why the restored VM must not run now, or "": a restore keeping the backup's identity beside a
    VM of its name or identity that is not powered off; a copy keeping a static MAC address (the
    admin's, vmx_identity.py) beside a VM running with it (the copy's name is no clash: its own).
    `planned`: (name, identity) of the VMs a dry run's lines before would power on."""
    own = identity(VmxFile(plan.vmx_text))  # a copy's: the static MAC addresses it keeps
    if plan.copy and not own:
        return ""
    name = None if plan.copy else plan.name
    running = _running_twin(host, name, own, vmid) or _planned_twin(name, own, planned)
    if running is None:
        return ""
    which, state, shared = running
    kept = "this copy keeps its static MAC address" if plan.copy else \
        "this restore keeps the backup's identity (MAC addresses, BIOS UUID)"
    return "%s %s%s, and %s: both running would clash" % (which, state, " with the same " + shared if shared else "",
                                                         kept)


def _running_twin(host: Hypervisor, name: Optional[str], own: Set[str],
                  vmid: str) -> Optional[Tuple[str, str, str]]:
    """(which VM, its state, the identity it shares or "" for a same name) of another VM of this name or
    sharing this identity (vmx_identity.identity) and not powered off (one suspended resumes), or whose
    state cannot be read (the safe side). A VM whose .vmx cannot be read is matched by name alone."""
    try:
        refs = [r for r in host.list_vms() if r.vmid != vmid]
    except HotvcbError as err:
        return "a VM of the same name or identity", "may run (the inventory cannot be read: %s)" % err, ""
    for other in refs:
        shared = "" if other.name == name else ", ".join(sorted(own & _identity_of(host, other)))
        if other.name != name and not shared:
            continue
        which = "a VM of the same name (vmid %s)" % other.vmid if not shared else "VM %s (vmid %s)" % (
            other.name, other.vmid)
        try:
            state = host.power_state(Vm(ref=other, datastore="", folder="", vmx=None))
        except HotvcbError as err:
            return which, "may run (its power state cannot be read: %s)" % err, shared
        if state != "off":
            return which, "is powered on" if state == "on" else "is " + state, shared
    return None


def _planned_twin(name: Optional[str], own: Set[str],
                  planned: Sequence[Tuple[str, Set[str]]]) -> Optional[Tuple[str, str, str]]:
    """_running_twin's answer for a VM a dry run's line before would power on."""
    for other, theirs in planned:
        shared = "" if other == name else ", ".join(sorted(own & theirs))
        if other == name or shared:
            return "VM %s (restored by a line before)" % other, "would be powered on", shared
    return None


def _identity_of(host: Hypervisor, ref: VmRef) -> Set[str]:
    try:
        return identity(VmxFile(read_small(host.shell, ref.vmx_path, MAX_SIZE)))
    except HotvcbError:
        return set()
