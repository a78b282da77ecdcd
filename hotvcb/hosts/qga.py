"""The QEMU guest agent (qemu-ga), for commands run inside a guest: in-guest hooks.

The agent runs in the guest on a virtio-serial port named
`org.qemu.guest_agent.0`; QEMU gives its host side a unix socket
(`-chardev socket,path=<dir>/<VM>.qga,server=on,wait=off,id=qga0 -device
virtio-serial -device virtserialport,chardev=qga0,name=org.qemu.guest_agent.0`),
which hotvcb expects beside the VM's QMP socket. The wire is QMP's (JSON
lines, `id` echoed), but the agent does not speak first: a client syncs with
`guest-sync-delimited`, whose answer follows a 0xFF byte, so whatever an
earlier client left unread on the port is skipped. A command runs with
`guest-exec` (capture-output) and is polled with `guest-exec-status` until
it exits, bounded by the caller's timeout; the agent has no way to stop it,
so a command that outlives the timeout keeps running in the guest.
"""

import base64
import random
import time
from typing import Any, Callable, Dict, List, Tuple

from .. import interrupt
from ..errors import TimeoutExpired
from .qmp import QmpClient, QmpError, QmpUnavailable

SOCKET_SUFFIX = ".qga"
SYNC_MARK = b"\xff"
POLL = (0.1, 1.0)  # first and longest pause between guest-exec-status polls


class GuestAgent(QmpClient):
    """`with GuestAgent(path) as qga: code, output = qga.run(["/bin/sh", "-c", cmd], env, 60.0)`."""

    # guest-exec-status returns up to 16 MiB of each of stdout and stderr (qemu-ga's cap), base64'd
    max_message = 48 << 20

    def probe(self) -> None:
        """QmpUnavailable unless QEMU listens on the agent's socket; nothing is sent to the guest."""
        try:
            self._open()
        finally:
            self.close()

    def _open(self) -> None:
        try:
            super()._open()
        except QmpUnavailable as err:
            raise QmpUnavailable(self.path, "no guest agent here (%s); QEMU gives it this socket with -chardev "
                                 "socket,path=%s,server=on,wait=off,id=qga0 -device virtio-serial -device "
                                 "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0, and qemu-ga must run "
                                 "in the guest" % (err, self.path)) from err

    def _hello(self) -> None:
        token = random.randint(1, 2 ** 31 - 1)
        self._send({"execute": "guest-sync-delimited", "arguments": {"id": token}})
        deadline = time.monotonic() + self.timeout
        self._fill(SYNC_MARK, deadline, "guest agent (is it running in the guest?)")
        self._buf = self._buf.rsplit(SYNC_MARK, 1)[1]
        answer = self._read(deadline, "guest agent sync")
        if answer.get("return") != token:
            raise QmpError(self.path, "guest agent out of sync (%.100s)" % answer)

    def run(self, argv: List[str], env: List[str], timeout: float, interruptible: bool = True) -> Tuple[int, str]:
        return run_in_guest(self.execute, argv, env, timeout, interruptible)


def run_in_guest(execute: Callable[[str, Dict[str, Any]], Any], argv: List[str], env: List[str], timeout: float,
                 interruptible: bool = True) -> Tuple[int, str]:
    """(exit code, stdout then stderr) of argv run in the guest; TimeoutExpired past `timeout`.

    `execute(command, arguments)` is one agent command's answer, over any
    channel to the agent (our socket, or libvirt's). `env` is the command's
    whole environment (the agent passes no other). A signal's death is
    reported as 128 + the signal, as a shell does.
    """
    pid = execute("guest-exec", {"path": argv[0], "arg": argv[1:], "env": env, "capture-output": True})["pid"]
    deadline = time.monotonic() + timeout
    pause = POLL[0]
    while True:
        status = execute("guest-exec-status", {"pid": pid})  # type: Dict[str, Any]
        if status.get("exited"):
            code = status.get("exitcode")
            if code is None:
                code = 128 + int(status.get("signal") or 0)
            return int(code), _text(status, "out-data") + _text(status, "err-data")
        if interruptible and interrupt.pending():
            interrupt.raise_pending()
        if time.monotonic() >= deadline:
            raise TimeoutExpired("%s in the guest (pid %s; the agent cannot stop it, it may still run)"
                                 % (argv[-1], pid), timeout)
        time.sleep(pause)
        pause = min(POLL[1], pause * 2)


def _text(status: Dict[str, Any], key: str) -> str:
    data = status.get(key)
    return base64.b64decode(data).decode("utf-8", "replace") if isinstance(data, str) else ""
