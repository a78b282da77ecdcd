"""Injected faults (state/faults.json), read on every tool call, and vim-cmd fault texts.

Fault blocks use the ESXi 6.x+ layout from vimcmd-faults_01 / power-getstate_02: three-space
indent, "faultMessage = <unset>" without a trailing comma, msg last without a comma.
"""
import time


# guess (no vim-cmd capture of a failed removal): the message hostd gives when consolidation
# cannot lock a disk, as vSphere shows it in the task error ("Failed to lock the file").
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


def fault_block(kind, msg, extra=()):
    lines = ["(%s) {" % kind, "   faultCause = (vmodl.MethodFault) null,"]
    if extra:
        lines.append("   faultMessage = <unset>,")
        lines += ["   %s = %s," % kv for kv in extra]
    else:
        lines.append("   faultMessage = <unset>")
    lines.append('   msg = "%s"' % msg)
    lines.append("}")
    return "\n".join(lines) + "\n"


def not_found_vm(ident):
    return fault_block("vim.fault.NotFound", 'Unable to find a VM corresponding to "%s"' % ident)


def sleep(seconds):
    if seconds > 0:
        time.sleep(seconds)
