"""A libvirt domain's boot stamp, read from the QEMU log libvirt keeps for it (hosts/libvirt.py boot_stamp).

libvirt appends to the domain's `<name>.log` at each start "<time>: starting up libvirt version: ...", its time
to the millisecond (the domain id, new at each start, is gone once the domain is off; the time, unlike a pid, is
not given again after a host reboot), and after a start it stopped as failed (a disk image locked or missing:
qemuProcessStart stops the process it began with VIR_DOMAIN_SHUTOFF_FAILED, and qemuProcessStop logs
"<time>: shutting down, reason=failed"). The log is rotated (virtlogd's `<name>.log.0` past its max_size,
logrotate's `<name>.log.1`, the current one emptied by copytruncate): the newest of them with a start line
tells the last start, and a failure after it may be in a newer one, the rotation having fallen between them.
"""

import os
from typing import Tuple

from ..shell import Readable, Shell
from .base import FAILED_START, NO_BOOT_STAMP

# where the system daemon (qemu:///system) keeps its domains' QEMU logs
SYSTEM_QEMU_LOGS = "/var/log/libvirt/qemu"
# "2026-12-05 21:59:38.267+0000: starting up libvirt version: 9.0.0, ..."
STARTING_UP = b": starting up libvirt version: "
START_FAILED = b": shutting down, reason=failed"
# a domain's QEMU log and its rotations, newest first: virtlogd's `<name>.log.0`, logrotate's `<name>.log.1`
ROTATED_LOGS = ("", ".0", ".1")


def boot_stamp(shell: Shell, uri: str, domain: str) -> str:
    """The domain's last "starting up" line, a FAILED_START where libvirt stopped that start as failed, in that log
    or a newer one; NO_BOOT_STAMP where no log has one (never started, or deleted). A resume of a paused domain
    starts nothing: it keeps its stamp."""
    path = "%s/%s.log" % (qemu_logs(uri), domain)
    failed_since = False  # a failed start's stop in a newer log than the one read: the rotation fell between
    for rotated in ROTATED_LOGS:
        if shell.exists(path + rotated):
            with shell.open_binary(path + rotated) as log:  # 2 MiB at most where virtlogd writes it
                last, failed = _last_start(log)
            if last:
                return (FAILED_START if failed or failed_since else "") + last.decode("utf-8", "replace")
            failed_since = failed_since or failed
    return NO_BOOT_STAMP


def qemu_logs(uri: str) -> str:
    """Where libvirt keeps its domains' QEMU logs: the system daemon's under /var/log, a session daemon's in its
    user's cache folder."""
    if uri.split("://", 1)[-1].startswith("/system"):
        return SYSTEM_QEMU_LOGS
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return cache.rstrip("/") + "/libvirt/qemu/log"


def _last_start(log: Readable) -> Tuple[bytes, bool]:
    """The log's last line saying libvirt started the domain (b"" if none), read a MiB at a time, and whether a
    failed start's stop (START_FAILED) follows it: in a log without one, whether it has such a stop at all (one
    of a start in the log rotated before it)."""
    last, failed, tail = b"", False, b""
    while True:
        chunk = log.read(1 << 20)
        lines = (tail + chunk).split(b"\n")
        tail = lines.pop() if chunk else b""
        for line in lines:
            if STARTING_UP in line:
                last, failed = line, False
            elif line.rstrip().endswith(START_FAILED):
                failed = True
        if not chunk:
            return last, failed
