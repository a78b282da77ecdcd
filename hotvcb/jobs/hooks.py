"""PRE_BACKUP_HOOK / POST_BACKUP_HOOK: the admin's commands around each VM's backup.

The pre-hook runs before anything is changed (before the shutdown or the
snapshot): a failing one skips the VM with its output as the error. The
post-hook runs after the snapshot is gone and the VM is back, on *every* path
that ran the pre-hook — success, failure, timeout, SIGTERM/Ctrl-C — like the
snapshot, never left half-done. Both run on the host (`sh -c`, the admin's
own command line), bounded by HOOK_TIMEOUT, with the VM named only in the
environment (HOTVCB_VM, HOTVCB_VMID, HOTVCB_PHASE, HOTVCB_RESULT,
HOTVCB_BACKUP), never spliced into the command.
"""

from typing import Optional

from ..errors import HotvcbError
from ..hosts.base import Hypervisor
from ..model import VmRef


class HookFailed(HotvcbError):
    pass


def run_hook(host: Hypervisor, command: str, phase: str, ref: VmRef, timeout: float, log,
             result: str = "", backup: Optional[str] = None) -> None:
    """Run one hook; HookFailed with its last output line when it fails or times out."""
    env = ["HOTVCB_VM=" + ref.name, "HOTVCB_VMID=" + ref.vmid, "HOTVCB_PHASE=" + phase,
           "HOTVCB_RESULT=" + result, "HOTVCB_BACKUP=" + (backup or "")]
    log.info("%s: running the %s-backup hook" % (ref.name, phase))
    try:
        done = host.shell.run(["env"] + env + ["sh", "-c", command], timeout=timeout,
                              interruptible=phase == "pre")  # a post-hook finishes even after Ctrl-C
    except HotvcbError as err:
        raise HookFailed("%s-backup hook of %s: %s" % (phase, ref.name, err)) from err
    for line in done.output.splitlines():
        log.info("%s: %s-hook: %s" % (ref.name, phase, line))
    if done.returncode != 0:
        last = done.output.strip().splitlines()[-1:] or ["no output"]
        raise HookFailed("%s-backup hook of %s failed (exit %d): %s" % (phase, ref.name, done.returncode, last[0]))
