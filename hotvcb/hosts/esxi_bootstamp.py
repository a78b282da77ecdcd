"""An ESXi VM's boot stamp (hosts/esxi.py boot_stamp): which vmx process ran the VM last, in which boot of the host,
and whether its start failed, from the vmware.log that vmx began in the VM's folder.

The vmx starts a new vmware.log at every power on (the old rotated to vmware-1.log, log.keepOld of them kept),
headed by "<time> ... Log for VMware ESX pid=<its pid> ...", and one log.rotateSize rotates while it runs is headed
by the same pid at a later time (no power on): the pid, not the time, tells the vmx. A pid is the host's only
until it reboots: the first vmx after a reboot may get the very pid of the one before it, so a vmx started since
the host's last boot (hostd's runtime.bootTime) is told by its pid in that boot; one of an earlier boot (the VM
not powered on since the reboot) by its pid alone: which boot it ran in, the host no longer says.
A start that fails (a disk locked or missing: the vmx starts, logs why, and exits) ends its log with its verdict
and the vmx's last lines: only the log's head (the header) and its tail are read, never a running VM's whole log
(over SSH too, a few times for each VM a run powers down).
"""

import re
from typing import Callable

from .. import lazyre
from ..errors import HostError
from ..shell import Shell
from ..vmx import VmxFile
from .base import FAILED_START, IN_HOST_BOOT, LOG_BEGUN, NO_BOOT_STAMP, utc

VMWARE_LOG = "vmware.log"
HEAD_MAX = 4 << 10  # the header is the log's first line (~120 bytes)
TAIL_MAX = 64 << 10  # a failed start's verdict, then the vmx's exit lines (a few KiB), with room to spare
# its header, wherever on the first line: 7.x "<time>| vmx| I005: Log for VMware ESX pid=<vmx pid> version=..."
# (5.x: no "I005: " level tag); 8.x's RFC 5424 style "<time> In(05) vmx - Log for VMware ESX pid=<vmx pid> ..."
# (VMware, vSphere 8 "Log File Formats", ESXi 8 log message format: TIMESTAMP SEVERITY THREAD-NAME OPID MSG)
_VMX_HEADER = lazyre.compile(r"Log for VMware ESX pid=([0-9]{1,20}) ")
# a power on that failed, as the vmx thread logs it (7.x or 8.x header): "Module 'Disk' power on failed." (msg.module
# .powerOnFailed), "VMX_PowerOn: ModuleTable_PowerOn = 0", "[msg.vmx.poweron.failed] Failed to start the virtual
# machine." -- anchored to the vmx thread's own lines, not a guest's text the vmx logs for it
_POWER_ON_FAILED = lazyre.compile(
    r"^[^ |]+(?:\| vmx\| (?:[A-Z][0-9]+: )?| [A-Z][a-z]\([0-9]+\) vmx \S+ )"
    r"(?:(?:\[msg\.module\.powerOnFailed\] )?Module '[^']*' power on failed|VMX_PowerOn: ModuleTable_PowerOn = 0\s*$"
    r"|\[msg\.vmx\.poweron\.failed\])", re.M)


def boot_stamp(shell: Shell, folder: str, host_booted: Callable[[], str], begun: bool = False) -> str:
    """The stamp of the VM in `folder`: "vmx pid=<pid>", + IN_HOST_BOOT + the host's boot time (`host_booted`: ""
    where it cannot be told) where that vmx started since, + with `begun` LOG_BEGUN + the header line itself (its
    time tells this vmx's log from another's, whatever the clock did: base.LOG_BEGUN); a first line without the
    header as it stands; a FAILED_START where the log's vmx says its power on failed; NO_BOOT_STAMP where the
    folder has no log, or an empty one (a VM never powered on, its log deleted or emptied; a .vmx that logs
    elsewhere or not at all the driver tells first: logged_elsewhere)."""
    path = folder + "/" + VMWARE_LOG
    try:
        head = shell.read_regular(path, HEAD_MAX)
    except HostError:
        if not shell.exists(path):
            return NO_BOOT_STAMP
        raise
    if not head:  # emptied (`: > vmware.log`): no vmx wrote it since, or its header would head it
        return NO_BOOT_STAMP
    first = head.split("\n", 1)[0]
    vmx = _VMX_HEADER.search(first)
    stamp = "vmx pid=" + vmx.group(1) + _in_boot(first, host_booted) + (LOG_BEGUN + first if begun else "") \
        if vmx else first
    return FAILED_START + stamp if _POWER_ON_FAILED.search(_tail(shell, path, head)) else stamp


def logged_elsewhere(vmx: VmxFile) -> str:
    """The .vmx's setting that keeps its vmx from writing vmware.log in the VM's folder, as it stands
    (`logging = "FALSE"`: no log; `log.fileName = "..."`: another file), else "". Such a VM's power ons leave
    nothing boot_stamp reads there, so the driver says they cannot be told rather than read no log as no power
    on. A log.fileName's file is not read in its stead: where it lies (another datastore, a folder several VMs'
    logs share) and how the vmx rotates it are the admin's, not known here."""
    logging = vmx.get("logging")
    if logging is not None and logging.strip().lower() in ("false", "0"):
        return 'logging = "%s"' % logging
    name = vmx.get("log.fileName")
    return 'log.fileName = "%s"' % name if name and name.strip() else ""


def _in_boot(header: str, host_booted: Callable[[], str]) -> str:
    """IN_HOST_BOOT + the host's boot time where the header's vmx started since the host's last boot; "" where it
    started before it (the VM not powered on since the reboot), or either time cannot be told (the stamp is then
    the pid alone, as before hotvcb knew the host's boots). A clock stepped back after the boot may date a vmx
    started right after it before it: taken as of an earlier boot, which only the pid tells then; a clock behind
    at the boot (NTP correcting it later) may date a vmx of the boot before within this one: a marker's stamp
    taken with the VM off is judged by the log's header first (LOG_BEGUN), which no clock moves."""
    booted = host_booted()
    started, since = utc(header), utc(booted)
    return IN_HOST_BOOT + booted if started is not None and since is not None and started >= since else ""


def _tail(shell: Shell, path: str, head: str) -> str:
    """The log's last TAIL_MAX bytes, its first line dropped where it is cut: `head` where that is the whole log
    (shorter than HEAD_MAX)."""
    if len(head.encode("utf-8")) < HEAD_MAX:
        return head
    out = shell.run(["tail", "-c", str(TAIL_MAX), path], timeout=60, interruptible=False).check().output
    return out if len(out.encode("utf-8", "surrogateescape")) < TAIL_MAX else out.split("\n", 1)[-1]
