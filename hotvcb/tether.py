"""Commands that must not outlive hotvcb: a SIGKILLed hotvcb takes them with it.

A child in its own session (so a Ctrl-C reaches hotvcb, which then stops it
in order) survives hotvcb's SIGKILL: a qemu-img conversion would go on
writing into a folder no one removes, a smoke boot's QEMU would go on
running. On Linux the child asks for SIGKILL when its parent dies
(PR_SET_PDEATHSIG, set between fork and exec). Over SSH nothing is needed:
SshShell's wrapper already ends the command when hotvcb's end of the
connection closes. Used by the QEMU and libvirt drivers' copies
(qemuimg.copy_to), restore --kvm, the KVM->ESXi staging and the smoke boot.
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
        return shell.run(argv, timeout=timeout, idle_timeout=idle_timeout, on_output=on_output,
                         preexec_fn=die_with_parent)
    return shell.run(argv, timeout=timeout, idle_timeout=idle_timeout, on_output=on_output)
