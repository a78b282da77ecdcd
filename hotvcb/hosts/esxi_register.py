"""Registering a restored VM with hostd (`vim-cmd solo/registervm`), and the vmid the inventory lists for a
.vmx (by real path: getallvms names a datastore by its UUID where a restore named it by its label)."""

import re
from typing import Callable, Dict, List, Optional

from ..errors import CommandFailed, HostError
from ..model import VmRef
from ..shell import Shell
from . import vimcmd
from .esxi_vim import Vim


class EsxiRegistry:
    """`list_vms`: the driver's inventory, read now; `invalid`: the vmids its last reading found invalid, each
    with why (EsxiHost.invalid_vms)."""

    def __init__(self, shell: Shell, vim: Vim, list_vms: Callable[[], List[VmRef]],
                 invalid: Callable[[], Dict[str, str]]):
        self.shell, self._vim, self._list_vms, self._invalid = shell, vim, list_vms, invalid

    def register_vm(self, vmx_path: str) -> str:
        """`vim-cmd solo/registervm <vmx>` -> the new vmid, or the vmid the inventory already has at that path.

        ESXi 5.1+ prints the vmid on a line of its own; ESX/ESXi 4.x printed
        nothing on success, so the id is then looked up in the inventory.
        Faults (NotFound, AlreadyExists) raise CommandFailed via vim-cmd's runner, but an
        AlreadyExists for a VM hostd kept registered, invalid, while its files
        were lost (a VM restored into its own folder) is that VM, found again.
        """
        try:
            out = self._vim(["solo/registervm", vmx_path], interruptible=False)
        except CommandFailed as err:
            kept = self._reloaded_at(vmx_path) if err.fault == "AlreadyExists" else None
            if kept is None:
                raise
            return kept
        m = re.search(r"^\s*(\d+)\s*$", out, re.M)
        if m:
            return m.group(1)
        found = self._reloaded_at(vmx_path)
        if found is None:
            raise HostError("registered %s but it does not show up in the inventory" % vmx_path)
        return found

    def registered_at(self, vmx_path: str) -> Optional[str]:
        """The vmid the inventory lists for this .vmx, or None; compared by real path, as getallvms names a
        datastore by its UUID where the restore named it by its label."""
        real = self.shell.realpath(vmx_path)
        for ref in self._list_vms():
            if ref.vmx_path == vmx_path or self.shell.realpath(ref.vmx_path) == real:
                return ref.vmid
        return None

    def _reloaded_at(self, vmx_path: str) -> Optional[str]:
        """registered_at, a VM hostd skips as invalid (its .vmx was gone) reloaded first (`vmsvc/reload`):
        with its .vmx back at its path, hostd reads it again."""
        found = self.registered_at(vmx_path)
        skipped = [vmid for vmid, why in self._invalid().items() if why == vimcmd.SKIPPED]
        if found is not None or not skipped:
            return found
        for vmid in skipped:
            try:
                self._vim(["vmsvc/reload", vmid], interruptible=False)
            except CommandFailed:
                continue  # still invalid: another lost VM's
        return self.registered_at(vmx_path)
