"""Run a started command to its end within its bounds, its output read as it comes: the shared core of
LocalShell.run and SshShell.run.

Interruption: the job installs signal handlers that only set a flag (`interrupt.pending()`); a running
command is polled and terminated when the flag rises, unless the caller runs it with
``interruptible=False`` — the snapshot removal in cleanup must finish even after Ctrl-C.
"""

import os
import select
import signal
import subprocess
import time
from typing import Callable, List, Optional

from . import background, interrupt
from .errors import TimeoutExpired
from .shell import Completed, OutputCallback


def stream(
    proc: "subprocess.Popen",
    argv: List[str],
    *,
    timeout: Optional[float],
    idle_timeout: Optional[float],
    on_output: Optional[OutputCallback],
    interruptible: bool,
    stop: "Optional[Callable[[subprocess.Popen], None]]" = None,
) -> Completed:
    """Read a started child's merged output until it exits; the shared core of run().

    `proc` must have been started in its own session with stdout a pipe
    (stderr merged into it); `argv` is the command as the user should see it.
    The child (and its group) is stopped on timeout, idle timeout, a pending
    interrupt, its Background given up, and whatever else goes wrong while reading:
    by `stop` where the caller knows better how (an ssh client's command on the host:
    SshConnection.run), else by SIGTERM, then SIGKILL.
    """
    halt = stop or _stop
    chunks = []  # type: List[bytes]
    pending = b""
    deadline = None if timeout is None else time.monotonic() + timeout
    quiet_since = time.monotonic()
    out = proc.stdout
    if out is None:
        raise ValueError("stream() needs a child whose stdout is a pipe")
    fd = out.fileno()

    def bounds() -> None:
        """Stop the child once its answer is given up, on a pending interrupt or past the deadline."""
        if background.given_up():
            halt(proc)
            raise background.Cancelled()
        if interruptible and interrupt.pending():
            halt(proc)
            interrupt.raise_pending()
        if deadline is not None and time.monotonic() > deadline:
            halt(proc)
            raise TimeoutExpired(" ".join(argv[:2]), timeout or 0.0)

    try:
        while True:
            bounds()
            if idle_timeout is not None and time.monotonic() - quiet_since > idle_timeout:
                halt(proc)
                raise TimeoutExpired("output from " + " ".join(argv[:2]), idle_timeout)
            ready, _, _ = select.select([fd], [], [], 0.2)
            if not ready:
                continue
            data = os.read(fd, 65536)
            if not data:
                break
            chunks.append(data)
            quiet_since = time.monotonic()
            if on_output is not None:
                pending += data
                pending = _feed(pending, on_output)
        # the output is closed, but the child may live on (a shell that exec'd a command whose
        # output goes elsewhere): the same bounds apply to waiting for it
        while True:
            try:
                proc.wait(0.2)
                break
            except subprocess.TimeoutExpired:
                bounds()
    finally:
        if proc.poll() is None:
            halt(proc)
        out.close()
    if on_output is not None and pending:
        on_output(pending.decode("utf-8", "replace"))
    return Completed(argv, proc.returncode, b"".join(chunks).decode("utf-8", "replace"))


def _feed(pending: bytes, callback: OutputCallback) -> bytes:
    """Hand complete CR/LF-terminated fragments to callback, keep the rest."""
    while True:
        cut = -1
        for sep in (b"\r", b"\n"):
            i = pending.find(sep)
            if i != -1 and (cut == -1 or i < cut):
                cut = i
        if cut == -1:
            return pending
        piece, pending = pending[:cut], pending[cut + 1 :]
        if piece:
            callback(piece.decode("utf-8", "replace"))


def _stop(proc: "subprocess.Popen") -> None:
    """Terminate a child and its group; kill the group if it does not go in 10 s. Gone is the child's exit
    and the end of its output: a process of the group that ignores TERM (a copy's helper, its parent the
    command tether.py's wrapper waited for) holds the output still, and writes on where the stopped run's
    cleanup is about to remove."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except OSError:
            pass
        if _gone(proc, time.monotonic() + wait):
            return


def _gone(proc: "subprocess.Popen", deadline: float) -> bool:
    """Whether the child exited and its output closed by `deadline`; what it still printed is dropped."""
    try:
        proc.wait(max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        return False
    if proc.stdout is None or proc.stdout.closed:
        return True
    fd = proc.stdout.fileno()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        ready, _, _ = select.select([fd], [], [], left)
        if ready and not os.read(fd, 65536):
            return True
