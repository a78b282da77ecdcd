"""Injected faults (state/faults.json), read on every tool call, and vim-cmd fault texts.

Fault blocks use the ESXi 6.x+ layout from vimcmd-faults_01 / power-getstate_02: three-space
indent, "faultMessage = <unset>" without a trailing comma, msg last without a comma.
"""
import time


# Exit status of a vim-cmd call that prints a fault block: 0. vim-cmd prints the MethodFault
# hostd returned and ends normally. Evidence (the samples' sources): esximanage's fixture of
# `vim-cmd vmsvc/power.getstate 2` -> NotFound (ESXi 6.7) is the stdout of fabric's run(), which
# aborts on a non-zero status; Apache VCL's VIM_SSH.pm runs vmsvc/unregister and power.on/off with
# its retrying _run_vim_cmd (which returns nothing for a non-zero status) and then parses the
# NotFound / InvalidPowerState block out of the output. No source shows a fault block with a
# non-zero status, so every fault block exits 0. The one-line failures of ESXi 6.x+
# ("Power on failed", "Power off failed", "Suspend failed") are not fault blocks; their status is
# not shown anywhere and stays 1 (guess).
FAULT_EXIT = 0

# guess (no vim-cmd capture of a failed removal): the message hostd gives when consolidation
# cannot lock a disk, as vSphere shows it in the task error ("Failed to lock the file").
CANNOT_OPEN_DISK = "Cannot open the disk '%s' or one of the snapshot disks it depends on."
REMOVE_FAILED = "An error occurred while consolidating disks: Failed to lock the file"


def get(host, key, default=None):
    return host.store.faults().get(key, default)


def num(host, key, default=0.0):
    try:
        return float(get(host, key, default))
    except (TypeError, ValueError):
        return default


def consume(host, key):
    """Read a one-shot fault and clear it."""
    with host.store.edit_faults() as f:
        return f.pop(key, None)


def fault_block(kind, msg, extra=(), old=False):
    """old=True: the ESX 4.x / ESXi 5.x layout (vimcmd-faults_01: "dynamicType = <unset>," first,
    every field line ends with ",", no faultMessage)."""
    if old:
        lines = ["(%s) {" % kind, "   dynamicType = <unset>,", "   faultCause = (vmodl.MethodFault) null,"]
        lines += ["   %s = %s," % kv for kv in extra]
        lines.append('   msg = "%s",' % msg)
        lines.append("}")
        return "\n".join(lines) + "\n"
    lines = ["(%s) {" % kind, "   faultCause = (vmodl.MethodFault) null,"]
    if extra:
        lines.append("   faultMessage = <unset>,")
        lines += ["   %s = %s," % kv for kv in extra]
    else:
        lines.append("   faultMessage = <unset>")
    lines.append('   msg = "%s"' % msg)
    lines.append("}")
    return "\n".join(lines) + "\n"


def not_found_vm(ident, old=False):
    return fault_block("vim.fault.NotFound", 'Unable to find a VM corresponding to "%s"' % ident, old=old)


def sleep(seconds):
    if seconds > 0:
        time.sleep(seconds)
