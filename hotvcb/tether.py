"""Commands that must not outlive hotvcb: a SIGKILLed hotvcb takes them with it.

A child in its own session (so a Ctrl-C reaches hotvcb, which then stops it
in order) survives hotvcb's SIGKILL: a qemu-img conversion would go on
writing into a folder no one removes, a smoke boot's QEMU would go on
running, a `vmkfstools -i` would go on writing into the folder the next
run's cleanup removes or a restore clones into again. A command run here
runs under SSH mode's wrapper (LocalShell.run's `tethered`), which ends it
and its children when the pipe on its stdin, held by hotvcb alone, closes:
plain sh, so on an ESXi host too, where PR_SET_PDEATHSIG is not known to
work. Over SSH the wrapper is there anyway, hotvcb's ssh client closing the
session's stdin. Used by the QEMU and libvirt drivers' copies
(qemuimg.copy_to), the ESXi driver's `vmkfstools -i` (backup and restore),
restore --kvm and the KVM->ESXi staging. The smoke boot's QEMU, started by
its own Popen (qemu_boot.py), asks on Linux for SIGKILL when its parent dies
(die_with_parent: PR_SET_PDEATHSIG, set between fork and exec).
"""

import ctypes
import signal
from typing import Callable, Optional, Sequence

from .localshell import LocalShell
from .shell import Completed, OutputCallback, Shell

PR_SET_PDEATHSIG = 1


def _prctl() -> Optional[Callable[..., int]]:
    """libc's prctl, looked up here in the parent: the child of a process with threads (a backup's
    source digest runs in one while qemu-img copies) must not take dlopen's lock between fork and exec."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None  # not Linux: the caller's finally still stops it


_PRCTL = _prctl()


def die_with_parent() -> None:
    """Runs in the child between fork and exec."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGKILL)


def run(shell: Shell, argv: Sequence[str], *, timeout: Optional[float] = 600, idle_timeout: Optional[float] = None,
        on_output: Optional[OutputCallback] = None) -> Completed:
    """shell.run, with the command dying with hotvcb on this machine too."""
    if isinstance(shell, LocalShell):
        return shell.run(argv, timeout=timeout, idle_timeout=idle_timeout, on_output=on_output, tethered=True)
    return shell.run(argv, timeout=timeout, idle_timeout=idle_timeout, on_output=on_output)
