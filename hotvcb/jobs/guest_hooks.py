"""GUEST_PRE_BACKUP_HOOK / GUEST_POST_BACKUP_HOOK: the admin's commands run inside the guest.

The guest's own view is what makes a backup application-consistent (flush a
database, freeze a queue); a host hook can only reach the guest over the
network. They run where the driver can reach into a guest (QEMU: the guest
agent, hosts/qga.py), as `/bin/sh -c COMMAND` with the same environment as
host hooks (jobs/hooks.py) plus a PATH, bounded by HOOK_TIMEOUT, their output
logged like a host hook's. The pre-hook runs after the host's pre-hook and
before any change; the post-hook after the snapshot is gone, before the
host's post-hook, on every path that ran the guest's pre-hook. ESXi cannot:
vim-cmd has no guest exec, so the keys are refused there before any change.
"""

from typing import Optional

from ..errors import HotvcbError
from ..hosts.base import Hypervisor
from ..model import Vm
from .hooks import HookFailed, hook_env, report

GUEST_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # the agent passes none


def refuse_unless_possible(host: Hypervisor, vm: Vm) -> None:
    """Before any change: a host that cannot reach into the guest must not skip the hook silently, and a guest
    the host has no way into (a bare-QEMU VM started without the agent's socket) fails here, where a dry run
    says so too: its real run failed every night at the hook while the dry run said OK."""
    if not host.runs_in_guest:
        raise HotvcbError("%s: GUEST_PRE_BACKUP_HOOK/GUEST_POST_BACKUP_HOOK need a way into the guest, and this %s "
                          "host has none (vim-cmd cannot run guest commands; VMware Tools' guest operations are "
                          "the vSphere API's); use PRE_BACKUP_HOOK/POST_BACKUP_HOOK on the host instead"
                          % (vm.name, host.kind))
    unreachable = host.guest_unreachable(vm)
    if unreachable:
        raise HotvcbError("%s: GUEST_PRE_BACKUP_HOOK/GUEST_POST_BACKUP_HOOK cannot reach the guest: %s"
                          % (vm.name, unreachable))


def run_guest_hook(host: Hypervisor, vm: Vm, command: str, phase: str, timeout: float, log,
                   result: str = "", backup: Optional[str] = None) -> None:
    """Run one in-guest hook; HookFailed with its last output line when it fails or times out."""
    log.info("%s: running the in-guest %s-backup hook" % (vm.name, phase))
    try:
        code, output = host.guest_exec(vm, ["/bin/sh", "-c", command], hook_env(vm.ref, phase, result, backup)
                                       + [GUEST_PATH], timeout, interruptible=phase == "pre")
    except HotvcbError as err:
        raise HookFailed("in-guest %s-backup hook of %s: %s" % (phase, vm.name, err)) from err
    report(log, vm.ref, "in-guest %s-backup hook" % phase, output, code)
