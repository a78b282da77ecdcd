"""Who made a thing: the run record every snapshot, -partial folder, lock and
power-off marker of ours carries.

Names alone cannot tell a leftover of a dead run from the live work of a
second run (another `-w`, `hotvcb cleanup` during the nightly job, a second
Linux box in SSH mode, another host on a shared NFS volume). A record says
which run made it, on which machine, as which process, and for which host, so
cleanup can prove the owner is gone before it touches anything.

Text form (one line, also inside snapshot descriptions):

    run=<12 hex> machine=<hostname> pid=<n> started=<epoch> host=<host id> pidns=<inode> pidstart=<ticks>
        [bootoffset=<ns>] [mid=<machine id>]

`machine` is where hotvcb runs (the ESXi host itself, or the Linux box in
SSH mode), by its host name, and `mid` by its /etc/machine-id where it has one: two
backup boxes with one host name (cloned from one image) are two machines, and one's
records must not be judged by the other's /proc (`same_machine`); `host` is the id of the hypervisor host it works on (`host_id`),
so a record names the host whose lock its run held. A run's records (its
locks, snapshots, `-partial` owner files and power-off markers, a restore's
folder records) say how their process is told from others, where /proc tells
it (with_process_start): `pidns`, the pid namespace the pid counts in
(pids.namespace: a container on this machine counts its own), and `pidstart`,
when the process started (pids.started): a pid may be reused, by another
hotvcb too, the pair is not. /proc shows that start time shifted by the
reader's time namespace, so a writer in one with a boot-time offset records
it as `bootoffset` (pids.boot_offset; absent: 0, the offset every reader has
outside time namespaces). `host`, `pidns` and `pidstart` may be absent (older
records, a host without /proc). Anyone may plant a record: a number is ASCII
digits up to the field's end or no number (`pidstart=0x10`, `1.5` or
Arabic-Indic digits are read as no `pidstart`, never as a part of one; a
`pid` or `started` so written is no record), and one of more than DIGITS_MAX
digits is read as TOO_LONG, which no process, clock or tick count has (its pid
is a dead run's, as pid 0 is), never turned into an int.

The host id lives here, beside the records that carry it, because both the
run lock (store/lock.py) and the repository's GC lock (repo/gclock.py) need
it and neither layer may import the other. Host names are not unique (many
ESXi hosts are called `localhost`); the id, random and kept in the host's
run_dir, is.
"""

import os
import re
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Optional

from . import pids
from .errors import HostError
from .units import DIGITS_MAX  # a pid, an epoch, a tick count: none longer
from . import lazyre

if TYPE_CHECKING:  # a record is read in places that never touch a host: only mypy needs the shell
    from .shell import Shell

MACHINE_ID = "/etc/machine-id"
HOST_ID_NAME = "hotvcb.hostid"
TOO_LONG = 10 ** DIGITS_MAX  # what a longer number is read as: more than any of them
# A record file (owner file, power-off marker, lock) anyone may have planted is read with Shell.read_regular (a FIFO
# would block a plain read for ever) and no further than this: ours is one short line, and a planted one with
# numbers of thousands of digits still reads whole, so it is judged as such (TOO_LONG), not as no record
RECORD_MAX = 65536
# A field ends at a space, a comma (a snapshot description goes on after its record: "started=<epoch>, job <name>")
# or the text's end; a number is read whole or not at all (_field), never its leading digits.
_VALUE = r"([^\s,]*)"
_RECORD = lazyre.compile(r"run=([0-9a-f]+) machine=(\S+) pid=([0-9]+) started=([0-9]+)(?![^\s,])(?: host=(\S+))?"
                     r"(?: pidns=%s)?(?: pidstart=%s)?(?: bootoffset=%s)?(?: mid=%s)?" % (_VALUE, _VALUE, _VALUE, _VALUE))
_DIGITS = lazyre.compile(r"[0-9]+")
_SIGNED = lazyre.compile(r"-?[0-9]+")


@dataclass(frozen=True)
class RunId:
    """A record's fields (the text form above): enough to tell its run alive or gone."""

    run: str
    machine: str
    pid: int
    started: int
    host: str = ""
    pid_start: Optional[int] = None
    boot_offset: int = 0
    pid_ns: Optional[int] = None
    machine_id: str = ""  # /etc/machine-id of `machine`; "" where it has none (ESXi) or an older hotvcb wrote it

    @classmethod
    def new(cls) -> "RunId":
        # uuid4's randomness, without importing uuid (and platform, ~8 ms) every run
        return cls(os.urandom(6).hex(), machine_name() or "unknown", os.getpid(), int(time.time()),
                   machine_id=machine_id())

    def same_machine(self, other: "RunId") -> bool:
        """Whether both records were written on one machine, so that a pid of one means the same process to the
        other: the same host name and, where both carry one, the same machine id (host names repeat: boxes
        cloned from one image; an ESXi host and an older hotvcb's record have the name alone)."""
        if self.machine != other.machine:
            return False
        return not (self.machine_id and other.machine_id) or self.machine_id == other.machine_id

    def same_machine_and_host(self, other: "RunId") -> bool:
        """same_machine, and where the machine ids cannot tell (either lacks one: ESXi has none, an older hotvcb
        wrote none) while both name the hypervisor host they worked on, that host too: on ESXi hotvcb runs on
        the host itself, so two ESXi hosts of one name (one kickstart image, or both `localhost`) sharing a -w
        on NFS differ by it alone. Not for every record: the host id lives in the host's run_dir (/var/run on
        ESXi) and a reboot makes a new one, so a snapshot or -partial folder of a run before the reboot would
        be another host's for ever; a work folder so judged is only left, never a live run's removed."""
        if not self.same_machine(other):
            return False
        return bool(self.machine_id and other.machine_id) or not (self.host and other.host) or self.host == other.host

    def machine_seen_from(self, me: "RunId") -> str:
        """The machine this record was written on, as the admin on `me` can find it: its host name, and where
        that is `me`'s own name but the machine ids differ (a box cloned from one image), its machine id too:
        sent to "a cleanup on backup01" while on (the other) backup01, they would run one that cannot help."""
        if self.machine == me.machine and not self.same_machine(me):
            return "the machine named %s whose /etc/machine-id is %s, not this one" % (self.machine, self.machine_id)
        return self.machine

    def on_host(self, host_id: str) -> "RunId":
        return replace(self, host=host_id)

    def with_process_start(self) -> "RunId":
        """The record a lock, or anything a run leaves, holds: with its process's pid namespace and start time
        where /proc tells them (a start time seen with an offset that cannot be read is none)."""
        offset = pids.boot_offset()
        return replace(self, pid_ns=pids.namespace(), boot_offset=offset or 0,
                       pid_start=pids.started(self.pid) if offset is not None else None)

    def text(self) -> str:
        base = "run=%s machine=%s pid=%d started=%d" % (self.run, self.machine, self.pid, self.started)
        return (base + (" host=%s" % self.host if self.host else "")
                + (" pidns=%d" % self.pid_ns if self.pid_ns is not None else "")
                + (" pidstart=%d" % self.pid_start if self.pid_start is not None else "")
                + (" bootoffset=%d" % self.boot_offset if self.boot_offset else "")
                + (" mid=%s" % self.machine_id if self.machine_id else ""))

    def __str__(self) -> str:
        try:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        except (OverflowError, OSError, ValueError):
            when = "at epoch %s" % _shown(self.started)  # a planted record's date: past any calendar
        return "run %s (pid %s on %s, started %s)" % (self.run, _shown(self.pid), self.machine, when)


def _number(digits: str) -> int:
    return int(digits) if len(digits) <= DIGITS_MAX else TOO_LONG


def _field(text: Optional[str]) -> Optional[int]:
    """An optional numeric field's value: None where it is absent or is not ASCII digits alone."""
    return _number(text) if text is not None and _DIGITS.fullmatch(text) else None


def _shown(number: int) -> str:
    return "%d" % number if number < TOO_LONG else "<over %d digits>" % DIGITS_MAX


def parse(text: str) -> Optional[RunId]:
    """The record in a text (a lock file, a snapshot description), or None."""
    m = _RECORD.search(text or "")
    if not m:
        return None
    start, offset = _field(m.group(7)), "0" if m.group(8) is None else m.group(8)
    if not (_SIGNED.fullmatch(offset) and len(offset) <= DIGITS_MAX):
        start, offset = None, "0"  # a start time seen with an offset that cannot be read: none
    return RunId(m.group(1), m.group(2), _number(m.group(3)), _number(m.group(4)), m.group(5) or "", start,
                 int(offset), _field(m.group(6)), m.group(9) or "")


def running(record: RunId, me: RunId) -> Optional[bool]:
    """Whether the process that wrote `record`, a record of this machine, still runs it (so its lock is held);
    None where its pid cannot tell: a pid of another pid namespace than ours (a container on this machine with
    its name and id), a live process /proc hides from us (mounted hidepid), or any live pid where the /proc mounted
    here is another pid namespace's (`unshare -pf` without --mount-proc: pids.hotvcb). Both locks then judge the lock by
    its age, as another machine's: its pid alone would take a live run's lock over.
    By its pid, it must be a live hotvcb (pids.hotvcb: not gone, not reused by another program), not `me`'s
    own pid in another run (that one is long gone), and have started when the record says: the pid may be
    another hotvcb's now (the nightly backup, a second prune). Where the start time cannot be compared (a
    record without `pidstart`, an older hotvcb's; a host without /proc; a boot-time offset other than ours,
    which shifts the start time /proc shows us) the live hotvcb is taken at its word, as before the field.
    Every record of this machine is judged so: the locks', and what a run leaves (jobs/ownership.owner_alive)."""
    if record.pid_ns is not None and record.pid_ns != pids.namespace():
        return None
    if record.pid == me.pid and record.run != me.run:
        return False
    ours = pids.hotvcb(record.pid)
    if not ours:
        return ours
    now = pids.started(record.pid) if record.pid_start is not None else None
    return now is None or record.boot_offset != pids.boot_offset() or now == record.pid_start


def machine_name() -> str:
    """This machine's host name, the one socket.gethostname() gives (both are uname's nodename), without
    importing socket (~3 ms of every start-up): a record's `machine`, a log's HOST line."""
    return os.uname().nodename


def machine_id() -> str:
    """This machine's own id (systemd's /etc/machine-id): a KVM restore's records and a GC lock carry it as their
    `host`; "" if none (an ESXi host has none)."""
    try:
        with open(MACHINE_ID, encoding="ascii", errors="replace") as f:
            text = f.read(64).strip()
    except OSError:
        return ""
    return text if re.match(r"^[0-9a-f]{8,64}$", text) else ""  # a record's field: one word


def known_host_id(shell: "Shell", run_dir: str) -> str:
    """This host's id where it has one yet, else "": for a reader (status) that must not make one."""
    try:
        return shell.read_text(run_dir.rstrip("/") + "/" + HOST_ID_NAME).strip()  # one call: missing is an error too
    except HostError:
        return ""


def host_id(shell: "Shell", run_dir: str) -> str:
    """This host's id, kept in `run_dir` (created on first use; the first writer wins)."""
    text = known_host_id(shell, run_dir)
    if text:
        return text
    path = run_dir.rstrip("/") + "/" + HOST_ID_NAME
    mine = os.urandom(6).hex()  # uuid4's randomness, without importing uuid (and platform) every run
    tmp = "%s.%s" % (path, mine)
    shell.makedirs(run_dir)
    shell.write_text(tmp, mine + "\n")
    try:
        shell.link_new(tmp, path)
    finally:
        shell.remove_tree(tmp)
    return shell.read_text(path).strip() or mine
