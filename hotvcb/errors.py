"""Every error hotvcb raises on purpose, under one root.

    HotvcbError                 message for the user + exit code
    ├── UsageError              bad command line or list file               (exit 1)
    ├── ConfigError             bad ghettoVCB.conf / per-VM file value      (exit 1)
    ├── LockError               another run holds the host's run lock       (exit 1)
    ├── RepoError               a repository is unusable, damaged or busy   (exit 1)
    ├── NotABackup              a backup's name with an impossible time     (exit 1)
    └── HostError               a host command failed or said no
        ├── ConnectionLost      the SSH session broke under a command (did it run?)
        ├── CommandFailed       non-zero exit of vim-cmd, vmkfstools, ...
        │   └── Unanswered      the tool's link to its daemon broke: was it done? (no refusal)
        │       ├── HostdDown       vim-cmd could not reach hostd (exit 0 or not)
        │       ├── ToolKilled      vim-cmd killed by a signal before it answered
        │       └── VirshLost       virsh lost libvirtd under a command (hosts/virsh.py)
        ├── VmNotFound          no VM with that display name / vmid
        ├── AmbiguousVm         several VMs share that display name
        ├── InvalidVm           registered, but skipped by the host or unreadable in its listing
        ├── SnapshotError       snapshot did not appear / could not be removed
        │   ├── SnapshotKept    a dead overlay holding data, kept (the backup stands)
        │   │   └── Unconsolidated  removed, but the VM still runs on its delta (the backup stands)
        │   ├── SnapshotHeld    a snapshot not removed that must not be deleted (says what to do)
        │   ├── SnapshotBypassed  the disk was written past our snapshot during the copy
        │   └── VmGone          the VM left the host before its snapshot was taken
        ├── TimeoutExpired      a bounded wait ran out
        └── CopyError           a disk or file copy failed (per disk)

    Interrupted                 SIGINT / SIGTERM / SIGHUP / SIGQUIT, or lost run lock (exit 2)

Interrupted is *not* a HotvcbError (like KeyboardInterrupt is not an
Exception): an `except HotvcbError` that handles a failed step must never
swallow Ctrl-C. It unwinds through `finally` blocks to the CLI, which maps it
to exit 2.

Low-level exceptions (OSError, subprocess errors) are wrapped at the boundary
with ``raise ... from err`` so the one top-level handler in ``cli`` can print a
single line naming the problem; a traceback only appears with ``-d debug``.
"""

from typing import Optional, Sequence


class HotvcbError(Exception):
    """Root of every error meant for the user."""

    exit_code = 1

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(HotvcbError):
    pass


class ConfigError(HotvcbError):
    """A config value that cannot be used; names where it came from."""

    def __init__(self, path: str, line: int, key: str, value: str, allowed: str):
        where = "%s:%d" % (path, line) if line else path
        super().__init__("%s: %s=%r is not valid (allowed: %s)" % (where, key, value, allowed))
        self.path, self.line, self.key, self.value, self.allowed = path, line, key, value, allowed


class LockError(HotvcbError):
    pass


class NotABackup(HotvcbError):
    """Its own class for health.py, where a base named so makes an incremental incomplete."""


class Interrupted(BaseException):
    exit_code = 2
    unasked = False  # raised before a request the host may finish after we are gone was sent (a snapshot's create)

    def __init__(self, signum: Optional[int], reason: str = ""):
        """By signal `signum`, or (None) for `reason` (interrupt.stop)."""
        import signal

        if signum is None:
            message = reason
        else:
            try:
                message = "interrupted by %s" % signal.Signals(signum).name
            except ValueError:
                message = "interrupted by signal %d" % signum
            if signum == signal.SIGHUP:  # what an on-host run's end of its SSH session sends when the session breaks
                message += ": the session it ran in ended (over SSH: the connection broke, or its client was killed)"
        super().__init__(message)
        self.signum = signum
        self.message = message

    def __str__(self) -> str:
        return self.message


class HostError(HotvcbError):
    pass


class ConnectionLost(HostError):
    """The session to the host broke under a command (SSH mode): whether the command ran there, or how far, is
    not known -- not the host's refusal. A step that must not be left undone (our snapshot's removal) looks
    at the host again over a new connection before it judges (jobs/snapshot_removal.py)."""


class CommandFailed(HostError):
    def __init__(self, argv: Sequence[str], returncode: int, output: str, fault: str = "", lines: int = 1):
        """`fault`: the fault's type where the tool names one (vim-cmd's `vim.fault.NotFound`: NotFound).
        `lines`: how many of the output's last lines say why (joined by " / "): one for tools whose last
        line is the reason (vim-cmd's fault), more where the reason comes first and advice after it
        (crontab(1): "You (x) are not allowed to use this program", then "See crontab(1) ...")."""
        first = " ".join(argv[:2])
        said = [ln.strip() for ln in output.splitlines() if ln.strip()]
        detail = " / ".join(said[-lines:]) if said else "no output"
        # vim-cmd exits 0 on some failures (a refused power.shutdown): its output says why, "exit 0" would not
        how = "failed" if returncode == 0 else "failed (exit %d)" % returncode
        super().__init__("%s %s: %s" % (first, how, detail))
        self.argv, self.returncode, self.output, self.fault = list(argv), returncode, output, fault


class Unanswered(CommandFailed):
    """A management tool that failed because its link to the daemon doing the work broke or never came up
    (hostd, libvirtd restarting): no refusal, so what was asked may have been done or may still be done (a VM
    started, a guest asked to shut down), and the jobs judge it as a timeout's, not as the host's no."""


class HostdDown(Unanswered):
    """vim-cmd could not log in to hostd (stopped, restarting, hung): it says so and often exits 0, its
    output no answer to what was asked (read as one, a listing of no VMs)."""

    def __init__(self, argv: Sequence[str], returncode: int, output: str, said: str):
        super().__init__(argv, returncode, output)
        self.message = ("the host's management agent (hostd) did not answer `%s`: %s; check that hostd runs "
                        "(`/etc/init.d/hostd status`, start or restart it), then run again"
                        % (" ".join(argv[:2]), said))
        self.args = (self.message,)


class ToolKilled(Unanswered):
    """A management tool killed by a signal before it answered (the OOM killer, a segfault, an admin's kill of
    one that seemed hung): its request may have reached the daemon and be done (hostd started the VM), so no
    refusal. `said`: "<tool> was killed by <signal>" (shell.Completed.killed)."""

    def __init__(self, argv: Sequence[str], returncode: int, output: str, said: str):
        super().__init__(argv, returncode, output)
        self.message = "`%s` got no answer: %s (what it asked may have been done)" % (" ".join(argv[:2]), said)
        self.args = (self.message,)


class VmNotFound(HostError):
    def __init__(self, name: str, present: Sequence[str] = ()):
        """`present`: the names the host has, to suggest the close ones (a typo, other case)."""
        import difflib

        close = [p for p in present if p.lower() == name.lower() and p != name]
        close += [c for c in difflib.get_close_matches(name, list(present), n=3, cutoff=0.6)
                  if c not in close and c != name]  # the very name is no suggestion
        super().__init__("no VM named %r on this host%s" % (name, did_you_mean(name, close[:3])))
        self.name, self.suggestions = name, close[:3]


def did_you_mean(name: str, close: Sequence[str]) -> str:
    """` (did you mean 'x'?)` for the names close to `name`, or "". A close name that differs from it only
    in Unicode normalization (`Müller` typed in vSphere, NFC, and read from a list file written on a Mac,
    NFD) prints exactly as it does: the hint says so, or the admin sees the very name they wrote suggested.
    Names are still matched exactly, code point for code point (docs/backup-format.md)."""
    if not close:
        return ""
    import unicodedata

    def form(text: str) -> str:
        return "NFC" if unicodedata.is_normalized("NFC", text) else \
            "NFD" if unicodedata.is_normalized("NFD", text) else "neither NFC nor NFD"

    same = [c for c in close if c != name and unicodedata.normalize("NFC", c) == unicodedata.normalize("NFC", name)]
    note = " The name given differs from %s only in Unicode normalization, %s against the VM's %s: names are " \
        "matched exactly, code point for code point" % (repr(same[0]), form(name), form(same[0])) if same else ""
    return " (did you mean %s?%s)" % (" or ".join(repr(c) for c in close), note)


class VmStopped(HostError):
    """A VM the host lists that no process runs (bare QEMU: the QMP socket of a QEMU killed or crashed, which
    had no chance to remove it): nothing of it can be asked. A backup fails it; `hotvcb cleanup`, which has
    no running VM there to clean up, names it in a warning rather than failing every night the VM stays down
    (jobs/host_cleanup.cleanup_host), and the message says what the admin may do about it."""


class InvalidVm(HostError):
    """A VM the host has registered but cannot use (hostd skips it: its datastore or .vmx is gone; or
    its row in the listing cannot be read)."""

    def __init__(self, vmid: str, why: str):
        super().__init__("vmid %s is registered but invalid: %s" % (vmid, why))
        self.name = "vmid " + vmid


class TemplateVm(HostError):
    """A name given (-m, -f) that is a template's: hostd lists templates among its VMs (their configuration
    file is <name>.vmtx), but a template never runs and hotvcb backs up VMs only, as ghettoVCB did (its
    `fgrep .vmx` never saw one). Named, the admin asked for a backup that is not made: so it is said, as
    ghettoVCB said no VM of that name; a backup of all skips templates with a note instead."""

    def __init__(self, name: str, path: str = ""):
        super().__init__("%r is a template%s, not a VM: templates are not backed up (convert it to a VM to back "
                         "it up, or take it off the list)" % (name, " (%s)" % path if path else ""))
        self.name = name


class UnnameableVm(HostError):
    """A VM whose display name holds a line break or other control character, or is only dots and spaces:
    its backup folder would be named so ("." or ".." not even a folder of its own), and a restore reads no
    backup from such a path nor gives a VM such a name (store/layout.backup_unnameable)."""

    def __init__(self, name: str, why: str, vmid: str = "", restorable: bool = False):
        """`vmid`: the VM's, named too (an empty name or one of blanks shows as nothing in vSphere's list).
        `restorable`: a name a restore would read (refused for its length, layout.too_long)."""
        notes = (["vmid " + vmid] if vmid else []) + ([] if restorable else ["no restore reads a backup folder named so"])
        super().__init__("VM %r is not backed up: %s; rename the VM%s" % (
            name, why, " (%s)" % "; ".join(notes) if notes else ""))
        self.name = name


class AmbiguousVm(HostError):
    def __init__(self, name: str, vmids: Sequence[str]):
        super().__init__("%d VMs are named %r (vmids %s); rename one" % (len(vmids), name, ", ".join(vmids)))
        self.name, self.vmids = name, list(vmids)


class UnclearLine(AmbiguousVm):
    """A list line that names no VM as written and could mean more than one as its blanks are dropped
    (namelist.unclear): a -f line so is failed, not guessed; a -e line is warned of."""

    def __init__(self, option: str, line: str, meant: Sequence[str]):
        HostError.__init__(self, "the %s list line %r names no VM as written and could mean any of the VMs %s, "
                                 "whose names differ only in blanks (spaces, no-break spaces): write the VM's name "
                                 "exactly as it is on the host" % (option, line, ", ".join(repr(m) for m in meant)))
        self.name = line
        self.vmids = []  # no VM is named so: no vmid to give


class SnapshotError(HostError):
    pass


class SnapshotKept(SnapshotError):
    """A dead run's snapshot that cannot go without losing data and stands in no backup's way (bare QEMU: an
    orphaned overlay, no disk uses it, still holding the writes of a QEMU that died): kept, named in a warning,
    and the VM is backed up (its running disks are whole) rather than failed every night until someone acts."""


class Unconsolidated(SnapshotKept):
    """Our snapshot is gone from the VM's tree, but its delta was not committed into the base disk: the VM
    runs on it, growing, and the host says "Needs Consolidation" (VMware documents this for a snapshot's
    removal). The copy was made from the snapshot, so the backup stands; the warning names the VM and how to
    consolidate it, which neither a removal by hand nor ALLOW_VMS_WITH_SNAPSHOTS_TO_BE_BACKEDUP does."""


class SnapshotHeld(SnapshotError):
    """A snapshot that could not be removed and holds the guest's writes since it was taken (bare QEMU: an
    overlay whose commit failed): deleting it, ESXi's advice for a snapshot left behind, would lose them,
    so the message itself says what to do with it."""


class SnapshotBypassed(SnapshotError):
    """Our snapshot is gone, but not by us: the disk it held still was written past it during the copy
    (bare QEMU: its process was restarted on the image, without our overlay), so the copy is not the disk
    at the snapshot's instant and no backup may be sealed from it. Nothing of it is left to remove."""


class VmGone(SnapshotError):
    """The VM was there when the run asked about it, and is not when its snapshots are listed or
    one is taken (unregistered, or registered again under another vmid, while the VM before it was
    copied)."""

    def __init__(self, name: str, vmid: str):
        super().__init__("%s (vmid %s) is no longer registered on this host; not backed up" % (name, vmid))
        self.name = name


class TimeoutExpired(HostError):
    def __init__(self, what: str, seconds: float):
        super().__init__("timed out after %ds waiting for %s" % (seconds, what))
        self.what, self.seconds = what, seconds


class CopyError(HostError):
    def __init__(self, source: str, message: str, path: Optional[str] = None):
        super().__init__("copy of %s failed: %s" % (source, message))
        self.source, self.path, self.reason = source, path, message


class RepoError(HotvcbError):
    """A backup repository (hotvcb/repo/) is unusable, damaged, or refused the operation."""
