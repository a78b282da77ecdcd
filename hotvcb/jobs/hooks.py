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

import os
from typing import List, Optional

from ..errors import HotvcbError
from ..hosts.base import Hypervisor
from ..model import VmRef


SHOWN_LINES = 20  # of a hook's output, in the log (the last one is the error)
MAX_LINE = 500


class HookFailed(HotvcbError):
    pass


def run_hook(host: Hypervisor, command: str, phase: str, ref: VmRef, timeout: float, log,
             result: str = "", backup: Optional[str] = None) -> None:
    """Run one hook; HookFailed with its last output line when it fails or times out.

    The hook's output goes to a file on the host, not through our pipe: a hook
    that starts a daemon (`/etc/init.d/x start`) returns when its shell does,
    not when the daemon closes its output; and only the last lines are logged
    (a hook printing megabytes must not become the log and the mail).
    """
    env = hook_env(ref, phase, result, backup)
    # one file per VM and phase: with BACKUP_PARALLEL several VMs' hooks run at once
    out = "%s/hotvcb-hook.%d.%s.%s.out" % (host.run_dir.rstrip("/"), os.getpid(), ref.vmid, phase)
    script = 'cmd=$1; out=$2; shift 2; env "$@" sh -c "$cmd" </dev/null >"$out" 2>&1'
    log.info("%s: running the %s-backup hook" % (ref.name, phase))
    try:
        try:
            done = host.shell.run(["sh", "-c", script, "hotvcb", command, out] + env, timeout=timeout,
                                  interruptible=phase == "pre")  # a post-hook finishes even after Ctrl-C
        except HotvcbError as err:
            raise HookFailed("%s-backup hook of %s: %s" % (phase, ref.name, err)) from err
        shown = host.shell.run(["tail", "-n", str(SHOWN_LINES), out], timeout=60, interruptible=False).output
    finally:
        try:
            host.shell.remove_tree(out)
        except HotvcbError:
            pass
    report(log, ref, "%s-backup hook" % phase, shown, done.returncode)


def hook_env(ref: VmRef, phase: str, result: str = "", backup: Optional[str] = None) -> List[str]:
    """What a hook learns of its VM and run, as environment entries (never in its command line)."""
    return ["HOTVCB_VM=" + ref.name, "HOTVCB_VMID=" + ref.vmid, "HOTVCB_PHASE=" + phase,
            "HOTVCB_RESULT=" + result, "HOTVCB_BACKUP=" + (backup or "")]


def report(log, ref: VmRef, what: str, output: str, returncode: int) -> None:
    """Log a hook's last lines; HookFailed with the last one when it failed."""
    lines = [l[:MAX_LINE] for l in output.splitlines()[-SHOWN_LINES:]]
    label = what.replace("-backup hook", "-hook")
    for line in lines:
        log.info("%s: %s: %s" % (ref.name, label, line))
    if returncode != 0:
        last = lines[-1:] or ["no output"]
        raise HookFailed("%s of %s failed (exit %d): %s" % (what, ref.name, returncode, last[0]))
