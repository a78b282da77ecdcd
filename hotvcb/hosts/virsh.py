"""The one wrapper over the `virsh` CLI: argument lists in, dataclasses out.

The libvirt python binding is not on ESXi and not needed: every call here is
`virsh -q -c URI COMMAND ARGS...`, bounded by a timeout, and a failure is a
HostError carrying virsh's own `error: ...` line. XML that virsh prints is
parsed with the standard library; XML we hand it goes through a temp file
(virsh takes files, not strings), written and removed by the caller's shell.
"""

import json
import re
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Dict, List, Optional, Tuple, TypeVar

from ..errors import CommandFailed, HostError, Unanswered
from ..shell import Shell
from .. import lazyre

DEFAULT_URI = "qemu:///system"
TIMEOUT = 120.0
A = TypeVar("A")
B = TypeVar("B")

# a `virsh -q checkpoint-list` row: the name (it may hold spaces), then `%Y-%m-%d %H:%M:%S %z`
_CHECKPOINT_ROW = lazyre.compile(r"^\s*(\S.*?)\s+(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4})\s*$")
# virsh's errors once its connection to libvirtd broke under a command (libvirt's remote driver and virsh's own
# disconnect notice): "Disconnected from qemu:///system due to end of file", "End of file while reading data:
# Input/output error", "Cannot recv data: Connection reset by peer", "Cannot write data: Broken pipe", "internal
# error: client socket is closed", "connection closed due to keepalive timeout"
_LOST = lazyre.compile(r"^error: .*(?:Disconnected from \S+ due to|End of file while reading data|Cannot recv data"
                       r"|Cannot write data|client socket is closed|keepalive timeout)", re.M)
# ... unless the connection never came up ("failed to connect to the hypervisor", then why): nothing was asked
_UNREACHED = lazyre.compile(r"^error: failed to connect to the hypervisor", re.M | re.I)
# `virsh domstate` words -> the job's power states
_STATES = {"running": "on", "shut off": "off", "paused": "suspended", "pmsuspended": "suspended",
           "in shutdown": "on", "blocked": "on", "idle": "on", "crashed": "off", "dying": "off"}


@dataclass(frozen=True)
class BackupDisk:
    """One disk of a running pull-mode backup job (`virsh backup-dumpxml`)."""

    target: str  # vda
    export: str  # the NBD export name
    bitmap: str  # the dirty bitmap exported beside it ("" for a full backup)
    incremental: str  # the checkpoint it is incremental from ("" for full)
    scratch: str


@dataclass(frozen=True)
class BackupJob:
    socket: str  # the NBD server's unix socket
    incremental: str
    disks: List[BackupDisk]


class VirshError(CommandFailed):
    """virsh said no, `text` its error line: libvirt answered (a domain's disk missing, a state change lock held),
    or virsh could not reach libvirtd (nothing was asked: the domain is as it was, as after a no). A CommandFailed,
    as vim-cmd's no is, so the jobs tell it from no answer (a timeout: TimeoutExpired; a link lost under the
    command: VirshLost) alike for both hosts: the stamp a start libvirt refused left is ours
    (jobs/powermark.power_on_marked), a shutdown it refused asked no guest (jobs/power.py)."""

    def __init__(self, argv: List[str], returncode: int, output: str, text: str):
        super().__init__(["virsh"] + argv, returncode, output)
        self.message = "virsh %s: %s" % (argv[0] if argv else "", text)
        self.args = (self.message,)
        self.text = text


class VirshLost(VirshError, Unanswered):
    """virsh lost its connection to libvirtd once it was made (libvirtd restarted by a package update, killed),
    or virsh itself was killed by a signal before it answered (shell.Completed.killed): the command may have
    reached libvirtd and be done (libvirtd reconnects to a QEMU it started), so no refusal, as vim-cmd's
    HostdDown and ToolKilled are none."""


class Virsh:
    def __init__(self, shell: Shell, uri: str = DEFAULT_URI, timeout: float = TIMEOUT):
        self.shell, self.uri, self.timeout = shell, uri, timeout

    def run(self, *args: str, timeout: Optional[float] = None) -> str:
        """Every virsh call is short and bounded, and most are part of undoing something (ending a
        job, dropping a checkpoint, thawing), so none is cut short by a pending signal."""
        argv = ["virsh", "-q", "-c", self.uri] + list(args)
        result = self.shell.run(argv, timeout=timeout or self.timeout, interruptible=False)
        if result.returncode != 0:
            killed = result.killed()  # killed by a signal before it answered: as lost as a broken link
            lost = killed or (_LOST.search(result.output) and not _UNREACHED.search(result.output))
            raise (VirshLost if lost else VirshError)(list(args), result.returncode, result.output,
                                                      killed or _error_line(result.output))
        return result.output

    # -- domains -------------------------------------------------------------
    def domains(self) -> List[str]:
        return [n for n in self.run("list", "--all", "--name").splitlines() if n.strip()]

    def dumpxml(self, domain: str, inactive: bool = False) -> str:
        return self.run("dumpxml", domain, *(["--inactive"] if inactive else []))

    def vol_path(self, pool: str, volume: str) -> str:
        """The file (or device) a storage pool's volume is, as a <disk type='volume'> names it."""
        lines = self.run("vol-path", "--pool", pool, volume).strip().splitlines()
        return lines[0].strip() if lines else ""

    def state(self, domain: str) -> str:
        lines = self.run("domstate", domain).strip().splitlines()
        return _STATES.get(lines[0].strip() if lines else "", "on")

    def power(self, verb: str, domain: str, *flags: str) -> None:
        """`start [--paused]`, `resume`, `shutdown` (ask the guest) or `destroy` (pull the plug)."""
        self.run(verb, domain, *flags)

    # -- guest agent ---------------------------------------------------------
    def fsfreeze(self, domain: str, timeout: float) -> None:
        self.run("domfsfreeze", domain, timeout=timeout)

    def fsthaw(self, domain: str, timeout: float) -> None:
        self.run("domfsthaw", domain, timeout=timeout)

    def agent_command(self, domain: str, command: str, arguments: Dict[str, Any], timeout: float = 30.0) -> Any:
        """The answer (`return`) of one guest agent command through libvirt's own connection to the agent.

        libvirt marks the domain tainted (custom-ga-command) in its log the first time: it does not
        know what a raw agent command did. hotvcb sends only guest-exec and guest-exec-status.
        """
        request = json.dumps({"execute": command, "arguments": arguments})
        output = self.run("qemu-agent-command", domain, "--timeout", str(int(timeout)), request, timeout=timeout + 10)
        try:
            return json.loads(output)["return"]
        except (ValueError, KeyError, TypeError) as err:
            raise HostError("virsh qemu-agent-command %s: not an answer: %.200s" % (command, output)) from err

    # -- checkpoints ---------------------------------------------------------
    def checkpoints(self, domain: str) -> List[Tuple[str, str]]:
        """The domain's checkpoints, oldest first, each (name, creation time): one call, whatever their
        number (other tools' included); a description is read only for the checkpoint that needs it.
        The creation time (libvirt's, to the second) tells ours from one made again under its name;
        virsh prints it in local time, so it is kept in UTC: a DST change or another TZ is no new time."""
        rows = []
        for line in self.run("checkpoint-list", domain, "--topological").splitlines():
            row = _CHECKPOINT_ROW.match(line)
            if row:
                when = datetime.strptime(row.group(2), "%Y-%m-%d %H:%M:%S %z").astimezone(timezone.utc)
                rows.append((row.group(1), when.strftime("%Y-%m-%d %H:%M:%S %z")))
        return rows

    def checkpoint_description(self, domain: str, name: str) -> str:
        root = _xml(self.run("checkpoint-dumpxml", domain, name, "--no-domain"), "checkpoint " + name)
        return root.findtext("description") or ""

    def delete_checkpoint(self, domain: str, name: str, metadata_only: bool = False) -> None:
        self.run("checkpoint-delete", domain, name, *(["--metadata"] if metadata_only else []))

    # -- backup jobs ---------------------------------------------------------
    def backup_begin(self, domain: str, backup_xml: str, checkpoint_xml: str, timeout: float) -> None:
        """Files holding the <domainbackup> and <domaincheckpoint> XML."""
        self.run("backup-begin", domain, backup_xml, checkpoint_xml, timeout=timeout)

    def backup_job(self, domain: str) -> Optional[BackupJob]:
        """The domain's running pull-mode backup, None when it runs none."""
        try:
            text = self.run("backup-dumpxml", domain)
        except VirshError as err:
            if "no domain backup job" in err.text or "domain is not running" in err.text:
                return None  # a domain shut off (or killed) runs no job: its job ended with its QEMU
            raise
        root = _xml(text, "backup of " + domain)
        server = root.find("server")
        disks = []
        for d in root.findall("disks/disk"):
            if d.get("backup") != "yes":
                continue
            scratch = d.find("scratch")
            disks.append(BackupDisk(d.get("name", ""), d.get("exportname", ""), d.get("exportbitmap", ""),
                                    d.get("incremental", ""), scratch.get("file", "") if scratch is not None else ""))
        return BackupJob(server.get("socket", "") if server is not None else "",
                         root.findtext("incremental") or "", disks)

    def abort_job(self, domain: str) -> None:
        try:
            self.run("domjobabort", domain)
        except VirshError as err:
            if "domain is not running" not in err.text:
                raise  # shut off meanwhile: its job ended with its QEMU


def together(first: Callable[[], A], second: Callable[[], B]) -> Tuple[A, B]:
    """Two independent virsh questions at once: most of a virsh call is its own start (~25 ms idle,
    more under load), and two starts overlap. Both are waited for, whatever signal is pending, as
    every virsh call is (cleanup asks them after Ctrl-C); each is bounded by its own timeout."""
    answers = {}  # type: Dict[str, Any]

    def ask() -> None:
        try:
            answers["second"] = second()
        except BaseException as err:  # handed to the caller below
            answers["error"] = err

    thread = threading.Thread(target=ask, name="hotvcb-virsh", daemon=True)
    thread.start()
    try:
        one = first()
    finally:
        thread.join()
    if "error" in answers:
        raise answers["error"]
    return one, answers["second"]


def _error_line(output: str) -> str:
    lines = [l.strip() for l in output.splitlines() if l.strip()]
    errors = [re.sub(r"^error:\s*", "", l) for l in lines if l.startswith("error:")]
    return "; ".join(errors[-2:]) or (lines[-1] if lines else "failed")[:300]


def _xml(text: str, what: str) -> ET.Element:
    try:
        return ET.fromstring(text)
    except ET.ParseError as err:
        raise HostError("virsh printed no readable XML for %s: %s" % (what, err)) from err
