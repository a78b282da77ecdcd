"""Cron on an ESXi host, and keeping it across reboots.

ESXi facts this relies on (ghettoVCB README "Configure on ESXi", VMware KB 2043564,
samples crontab-root_01 / local-sh_01 in esxi-samples):

* busybox crond reads ``/var/spool/cron/crontabs/root``; it only re-reads it when
  restarted: kill the pid in ``/var/run/crond.pid``, then start
  ``/usr/lib/vmware/busybox/bin/busybox crond`` (7.x+) or ``/bin/busybox crond`` (older).
* The crontab is rebuilt from the image at every boot, so a job is re-added at boot
  by ``/etc/rc.local.d/local.sh`` (5.1+; commands go above its final ``exit 0``) or
  ``/etc/rc.local`` (4.x / 5.0; above a final ``exit`` an admin put there). ``/sbin/auto-backup.sh`` saves the edited file to the
  bootbank (otherwise the edit itself is lost at reboot).
* With UEFI Secure Boot on (ESXi 7+/8: also ``execInstalledOnly``), local.sh is not run
  at boot: the job then lasts until the next reboot only. Checked with
  ``/usr/lib/vmware/secureboot/bin/secureBoot.py -s`` (prints Enabled/Disabled) and,
  where that script is missing, ``esxcli system settings encryption get``
  ("Require Secure Boot: true").

Everything we add is marked ``# hotvcb:<job>``; the boot block re-adds the line only
when it is not there yet (``grep -qxF``), so running local.sh twice gives one line.
crond is restarted at boot once, by one ``# hotvcb-crond`` block below every job's block: a
restart in each job's block (the format before) let the next block's ``kill`` read the pid file
before the crond just started had written it, leaving two crond that ran every job twice a night.
`install` moves blocks of that format to this one.
"""

import os
import re
import signal
import time
from typing import Callable, List, NamedTuple, Optional, Tuple

from ..errors import HostError
from ..hosts.vimcmd import parse_version
from ..localshell import LocalShell
from ..pids import alive
from ..units import whole
from . import Entry, Job, cron_line, has_marker, job_of, lines_of, shell_line
from .tablelock import lock_path, locked

CRONTAB = "/var/spool/cron/crontabs/root"
CROND_PID = "/var/run/crond.pid"
LOCAL_SH = "/etc/rc.local.d/local.sh"
RC_LOCAL = "/etc/rc.local"
AUTO_BACKUP = "/sbin/auto-backup.sh"
BUSYBOX_7 = "/usr/lib/vmware/busybox/bin/busybox"
BUSYBOX_OLD = "/bin/busybox"
VMWARE = "/bin/vmware"
SECUREBOOT = "/usr/lib/vmware/secureboot/bin/secureBoot.py"
ESXCLI = "/bin/esxcli"

Warn = Callable[[str], None]


def is_esxi(root: str = "/") -> bool:
    """`/bin/vmware -v` names ESX(i), or the host has an esx.conf (Workstation's /etc/vmware does not)."""
    if version_text(root).startswith("VMware ESX"):
        return True
    return os.path.exists(os.path.join(root, "etc/vmware/esx.conf"))


def version_text(root: str = "/") -> str:
    path = _at(root, VMWARE)
    if not os.access(path, os.X_OK):
        return ""
    try:
        out = LocalShell().run([path, "-v"], timeout=30).output
    except HostError:
        return ""
    lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
    return lines[0] if lines else ""


def _at(root: str, path: str) -> str:
    return os.path.join(root, path.lstrip("/"))


class Status(NamedTuple):
    entries: List[Entry]
    crond_running: bool
    boot_file: str
    secure_boot: Optional[bool]  # None: could not tell
    unreached: List[str]  # jobs whose boot block lies below an `exit` of the boot file: never run at boot


class EsxiScheduler:
    """Install/remove/show cron jobs on the ESXi host we run on.

    `root` prefixes every host path (tests point it at a folder; on a host it is "/").
    """

    def __init__(self, root: str = "/", warn: Optional[Warn] = None, version: Optional[Tuple[int, ...]] = None):
        self.root = root
        self.shell = LocalShell()
        self.warn = warn or (lambda msg: None)
        self.version = version if version is not None else parse_version(version_text(root))

    # -- what to change ----------------------------------------------------
    def boot_file(self) -> str:
        """local.sh on 5.1+, rc.local on 4.x/5.0; unknown version: whichever exists."""
        if self.version is not None:
            return LOCAL_SH if self.version >= (5, 1) else RC_LOCAL
        if os.path.exists(self.p(LOCAL_SH)) or not os.path.exists(self.p(RC_LOCAL)):
            return LOCAL_SH
        return RC_LOCAL

    def busybox(self) -> str:
        for candidate in (BUSYBOX_7, BUSYBOX_OLD):
            if os.access(self.p(candidate), os.X_OK):
                return candidate
        return BUSYBOX_7 if self.version is None or self.version >= (7,) else BUSYBOX_OLD

    def p(self, path: str) -> str:
        return _at(self.root, path)

    # -- the three commands ------------------------------------------------
    def install(self, job: Job) -> str:
        """The boot block first, then the crontab line, both under the schedule lock (tablelock). A boot file
        that cannot be written (the ramdisk full, its folder read-only) then leaves the crontab as it was,
        and when either write fails the boot file is put back as it was: a half install left a line crond
        never read (restarted only after both) that `show` listed as running."""
        line = cron_line(job, busybox=True)
        boot = self.boot_file()
        with locked(lock_path(self.root)):
            crontab = self._read(CRONTAB)
            before = self._read_optional(boot)
            try:
                self._write(boot, _with_block(before, job.name, self._boot_block(job.name, line), boot,
                                              self._restart_block()))
                self._replace(CRONTAB, _without_job(crontab, job.name) + [line])
            except HostError:  # the boot file too: written in place, a full ramdisk may have cut it short
                self._put_back(boot, before)
                raise
            self.restart_crond()
        self._persist()
        self.warn_if_secure_boot()
        return line

    def remove(self, job: Optional[str]) -> List[str]:
        """Take out job `job` (every hotvcb job when None); the jobs found are returned."""
        with locked(lock_path(self.root)):
            return self._remove(job)

    def _remove(self, job: Optional[str]) -> List[str]:
        found = set()
        crontab = self._read(CRONTAB)
        kept = []
        for ln in crontab:
            if has_marker(ln, job):
                found.add(job_of(ln))
            else:
                kept.append(ln)
        if kept != crontab:
            self._replace(CRONTAB, kept)
        for boot in (LOCAL_SH, RC_LOCAL):
            lines = self._read_optional(boot)
            if lines is None:
                continue
            names = {b for b in _blocks(lines) if job is None or b == job}
            stripped = lines
            for name in names:
                stripped = _without_block(stripped, name)
            if not _blocks(stripped):  # the last job gone: its crond restart too
                stripped = _without_restart(stripped)
            if stripped != lines:
                found.update(names)
                self._write(boot, stripped)
        if found:
            self.restart_crond()
            self._persist()
        return sorted(n for n in found if n)

    def status(self) -> Status:
        entries = []
        for ln in self._read_optional(CRONTAB) or []:
            name = job_of(ln)
            if name and has_marker(ln, name):
                entries.append(Entry(name, CRONTAB, ln))
        boot = self.boot_file()
        lines = self._read_optional(boot) or []
        for block, body in _blocks(lines).items():
            entries.append(Entry(block, boot, "\n".join(body)))
        return Status(entries, self.crond_running(), boot, self.secure_boot(), unreached(lines))

    # -- crond ---------------------------------------------------------------
    def crond_pid(self) -> Optional[int]:
        try:
            with open(self.p(CROND_PID)) as f:
                text = f.read().strip()
        except OSError:
            return None
        return whole(text)

    def crond_running(self) -> bool:
        pid = self.crond_pid()
        return pid is not None and alive(pid)

    def restart_crond(self, wait: float = 5.0) -> None:
        """The ESXi way (`kill $(cat /var/run/crond.pid)`; `busybox crond`), with argument lists. A new crond
        that does not start leaves the host with none: the error says that every cron job stopped."""
        pid = self.crond_pid()
        if pid is not None:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pid = None
            except OSError as err:
                raise HostError("cannot stop crond (pid %d): %s" % (pid, err.strerror)) from err
        deadline = time.monotonic() + wait
        while pid is not None and time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            if pid is not None:
                self.warn("crond (pid %d) did not stop within %ds; starting a new one anyway" % (pid, wait))
        try:
            self.shell.run([self.p(self.busybox()), "crond"], timeout=30).check()
        except HostError as err:  # the old crond is stopped: said so, not only that a command failed
            raise HostError("crond did not start again (%s): NO cron job of this host runs until it does; start "
                            "it with `%s crond`" % (err, self.busybox())) from err

    # -- persistence ---------------------------------------------------------
    def _boot_block(self, job: str, line: str) -> List[str]:
        """Puts the job's line back; crond reads it when `_restart_block`, below every job's block, restarts it."""
        crontab, quoted = CRONTAB, shell_line([line])
        return [
            "%s begin: added by `hotvcb schedule install`, removed by `hotvcb schedule remove --job %s`" % (_tag(job), job),
            "grep -qxF %s %s || printf '%%s\\n' %s >> %s" % (quoted, crontab, quoted, crontab),
            "%s end" % _tag(job),
        ]

    def _restart_block(self) -> List[str]:
        """One crond restart for all jobs, after their lines are back (the ESXi way: KB 2043564)."""
        return [
            "%s begin: restarts crond once, after every hotvcb job's line above is back" % RESTART_TAG,
            KILL_CROND,
            "%s crond" % self.busybox(),
            "%s end" % RESTART_TAG,
        ]

    def _persist(self) -> None:
        script = self.p(AUTO_BACKUP)
        if not os.access(script, os.X_OK):
            self.warn("%s not found: the change is not saved to the bootbank and is lost at reboot" % AUTO_BACKUP)
            return
        done = self.shell.run([script], timeout=300)
        if done.returncode != 0:
            self.warn("%s failed (exit %d): the change may be lost at reboot" % (AUTO_BACKUP, done.returncode))

    def secure_boot(self) -> Optional[bool]:
        script = self.p(SECUREBOOT)
        if os.access(script, os.X_OK):
            try:
                out = self.shell.run([script, "-s"], timeout=60).output
            except HostError:
                out = ""
            if "enabled" in out.lower():
                return True
            if "disabled" in out.lower():
                return False
        esxcli = self.p(ESXCLI)
        if os.access(esxcli, os.X_OK):
            try:
                done = self.shell.run([esxcli, "system", "settings", "encryption", "get"], timeout=60)
            except HostError:
                return None
            m = re.search(r"Require Secure Boot:\s*(\w+)", done.output)
            if done.returncode == 0 and m:
                return m.group(1).lower() == "true"
        return None

    def warn_if_secure_boot(self) -> None:
        if self.secure_boot():
            self.warn(
                "UEFI Secure Boot is enabled: ESXi does not run %s at boot, so this job lasts until the "
                "next reboot only; re-run `hotvcb schedule install` after each reboot" % self.boot_file()
            )

    # -- files ---------------------------------------------------------------
    def _read(self, path: str) -> List[str]:
        lines = self._read_optional(path)
        if lines is None:
            raise HostError("%s does not exist; is this an ESXi host?" % path)
        return lines

    def _read_optional(self, path: str) -> Optional[List[str]]:
        """The file's lines, or None when there is no such file (a boot file not yet made)."""
        try:
            with open(self.p(path), encoding="utf-8", errors="surrogateescape", newline="") as f:
                return lines_of(f.read())
        except FileNotFoundError:
            return None
        except OSError as err:
            raise HostError("cannot read %s: %s" % (path, err.strerror)) from err

    def _put_back(self, path: str, lines: Optional[List[str]]) -> None:
        """`path` as it was before this install (`lines`; None: there was no such file)."""
        try:
            if self._read_optional(path) == lines:  # the write failed before it changed anything
                return
            if lines is None:
                os.remove(self.p(path))
            else:
                self._write(path, lines)
        except (OSError, HostError) as err:
            self.warn("could not put %s back as it was (%s): its block for this job re-adds the job at boot"
                      % (path, getattr(err, "strerror", None) or err))

    def _replace(self, path: str, lines: List[str]) -> None:
        """The crontab written whole to a file beside it, then renamed over it (its mode kept): written in
        place, a full ramdisk cut root's table mid-line, a half command crond ran each night. The new file's
        name holds a `.`, which busybox crond's scan of the folder skips (no user is named so)."""
        real = self.p(path)
        new = os.path.join(os.path.dirname(real), ".%s.hotvcb-new" % os.path.basename(real))
        try:
            mode = os.stat(real).st_mode & 0o7777
            with open(new, "w", encoding="utf-8", errors="surrogateescape", newline="") as f:
                os.fchmod(f.fileno(), mode)
                f.write("".join(ln + "\n" for ln in lines))
                f.flush()
                os.fsync(f.fileno())
            os.replace(new, real)
        except OSError as err:
            if os.path.lexists(new):
                os.remove(new)
            raise HostError("cannot write %s: %s" % (path, err.strerror)) from err

    def _write(self, path: str, lines: List[str]) -> None:
        """In place, keeping inode, owner and mode (auto-backup.sh keys on local.sh's sticky bit)."""
        real = self.p(path)
        fresh = not os.path.exists(real)
        try:
            with open(real, "w", encoding="utf-8", errors="surrogateescape", newline="") as f:
                f.write("".join(ln + "\n" for ln in lines))
                f.flush()
                os.fsync(f.fileno())
            if fresh and path in (LOCAL_SH, RC_LOCAL):
                os.chmod(real, 0o1755)
        except OSError as err:
            raise HostError("cannot write %s: %s" % (path, err.strerror)) from err


DATASTORES = "/vmfs/volumes/"
# folders of the in-memory root ESXi's image makes at every boot: a job's log in one is lost, its folder is not
BOOT_FOLDERS = ("/tmp", "/var/log", "/var/tmp")


def on_ramdisk(path: str) -> bool:
    """Whether `path` lies outside every datastore, on ESXi's in-memory root (/tmp, /etc, /opt, ...), which
    a reboot builds anew from the image: a job's line comes back at boot (local.sh), the program or
    config it names does not. /bootbank, /store, /locker and a /scratch on a datastore are links into
    /vmfs/volumes, so a path through them counts as kept. Both the path's own entry (its folder resolved, not
    itself) and what it resolves to must lie on a datastore: a link made in a ramdisk folder to a pyz on ds1,
    run by the job's line, is gone after a reboot as a copy there is."""
    entry = os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))
    return not all(p.startswith(DATASTORES) for p in (entry, os.path.realpath(path)))


RESTART_TAG = "# hotvcb-crond"  # not `# hotvcb:<name>`: no job's block
KILL_CROND = "/bin/kill $(cat %s) 2>/dev/null" % CROND_PID


def _tag(job: str) -> str:
    return "# hotvcb:%s" % job


def _without_job(lines: List[str], job: str) -> List[str]:
    return [ln for ln in lines if not has_marker(ln, job)]


_MARK = re.compile(r"^# hotvcb:([A-Za-z0-9][A-Za-z0-9_.-]*) (begin|end)\b")
# `exit 0`, `exit`, `exit $?` (the last command's status), any `exit N`, also ended by `;` (a habit from C) or with a
# comment: where the script ends when it stands at the top level. At column 0 it is taken to; an indented one
# only when no line below closes an if/loop/case/group (_CLOSER): it then cannot sit inside one (a final
# `    exit 0` of an editor that indents), while above a `fi` it may be a guard's `if ...; then exit 0; fi`
# or a `die()` helper's, which ends no script. Parsing sh is not worth it, so the rule is that simple, and
# where it cannot be sure the block goes at the end (below). Here-document bodies are text, not commands
# (_code): an `exit 0` in a script local.sh writes with `cat > /etc/hook.sh <<'EOF'` ends nothing. A `<<`
# that opens none (quoted, `logger "backup<<done"`; arithmetic, `x=$((a<<b))`) must not be taken for one: the
# rest of the script, its `exit 0` too, would be text, and the block would go below that exit.
_EXIT = re.compile(r"^(\s*)exit(\s+([0-9]+|\$\?))?\s*(;\s*)?(#.*)?$")
# a line closing an if/loop/case/brace group: an `exit` above it (even at column 0) may be a conditional one
_CLOSER = re.compile(r"^\s*(fi|done|esac|\}|;;)(\s|;|$)")
# a here-document's `<<WORD`, `<<-WORD`, `<< 'WORD'`, `<<"WORD"`, `<<\WORD`, matched where _heredocs finds a
# `<<` that is an operator (not `<<<`, and not in quotes, arithmetic or a comment)
_HEREDOC = re.compile(r"<<(-?)[ \t]*\\?(['\"]?)([A-Za-z_][A-Za-z0-9_.-]*)\2")


def _block_end(lines: List[str], begin: int, job: str) -> int:
    """Index after job's block, whose begin marker is lines[begin].

    With its end marker (before any other block) that is the end marker. Without one (the admin deleted
    `# hotvcb:<job> end` as a stray comment) only the body lines `_boot_block` writes count as the block:
    everything after them is the admin's and stays."""
    for i in range(begin + 1, len(lines)):
        m = _MARK.match(lines[i])
        if m and m.group(2) == "begin":
            break
        if m and m.group(1) == job:
            return i + 1
    end = begin + 1
    while end < len(lines) and end - begin <= 3 and _is_body(lines[end]):
        end += 1
    return end


def _is_body(ln: str) -> bool:
    """A line only `_boot_block` writes (or wrote: the kill and start of a job block of the format before)."""
    return _restarts(ln) or (ln.startswith("grep -qxF ") and ln.endswith(" >> %s" % CRONTAB))


def _restarts(ln: str) -> bool:
    """A line of a crond restart we wrote."""
    return ln == KILL_CROND or ln in ("%s crond" % BUSYBOX_7, "%s crond" % BUSYBOX_OLD)


def _migrated(lines: List[str]) -> List[str]:
    """`lines` with the crond restart taken out of every job block of the format before (each block restarted
    crond itself), so that only the one restart block restarts it."""
    out = []  # type: List[str]
    inside = None  # type: Optional[int]
    for i, ln in enumerate(lines):
        m = _MARK.match(ln)
        if m and m.group(2) == "begin":
            inside = _block_end(lines, i, m.group(1))
        elif inside is not None and i >= inside:
            inside = None
        if inside is not None and _restarts(ln):
            continue
        out.append(ln)
    return out


def _without_restart(lines: List[str]) -> List[str]:
    """`lines` without the crond restart block and the blank line we put after it (without its end marker,
    deleted as a stray comment, only the restart lines we write count as the block)."""
    out = []  # type: List[str]
    i = 0
    while i < len(lines):
        if not lines[i].startswith(RESTART_TAG + " begin"):
            out.append(lines[i])
            i += 1
            continue
        i += 1
        while i < len(lines) and _restarts(lines[i]):
            i += 1
        if i < len(lines) and lines[i] == RESTART_TAG + " end":
            i += 1
        if i < len(lines) and lines[i] == "":
            i += 1
    return out


def _blocks(lines: List[str]) -> "dict":
    """{job: block lines} for every hotvcb block in a boot script."""
    out = {}
    i = 0
    while i < len(lines):
        m = _MARK.match(lines[i])
        if m and m.group(2) == "begin":
            end = _block_end(lines, i, m.group(1))
            out[m.group(1)] = lines[i:end]
            i = end
        else:
            i += 1
    return out


def unreached(lines: List[str]) -> List[str]:
    """Jobs whose boot block sits below a top-level `exit` line (_EXIT): the shell may leave the script before
    reaching them (said for one under a column-0 exit inside an unindented `if` too: where in doubt, `show`
    warns)."""
    final = _final_exit(lines)
    top = [i for i in _exits(lines) if lines[i] == lines[i].lstrip()] + ([] if final is None else [final])
    first = min(top, default=len(lines))
    return [m.group(1) for m in (_MARK.match(ln) for ln in lines[first + 1:]) if m and m.group(2) == "begin"]


def _code(lines: List[str]) -> List[int]:
    """Indexes of the lines the shell reads as commands: all but the bodies of here-documents (and their
    end lines). A line whose here-documents are not all ended is read as opening none (sh would read the
    rest of the script as text; but a `<<` _heredocs took for one where it was not would then hide the
    script's `exit` from _final_exit and `unreached`: where in doubt, the exit counts)."""
    out = []  # type: List[int]
    i = 0
    while i < len(lines):
        out.append(i)
        after = _bodies_end(lines, i + 1, _heredocs(lines[i]))
        i = i + 1 if after is None else after
    return out


def _bodies_end(lines: List[str], start: int, docs: List[Tuple[str, bool]]) -> Optional[int]:
    """Index after the bodies of the here-documents `docs` ((word, tabs stripped), in order) that the line
    before lines[start] opens, each ended by the first line that is its word; None if one is never ended."""
    i = start
    for word, tabs in docs:
        while i < len(lines) and (lines[i].lstrip("\t") if tabs else lines[i]) != word:
            i += 1
        if i == len(lines):
            return None
        i += 1
    return i


def _heredocs(ln: str) -> List[Tuple[str, bool]]:
    """(word, tabs stripped) of each here-document a command line opens: a `<<` inside '...' or "...", after
    a backslash, inside arithmetic (`$((a<<b))`, `((a<<=1))`), in a comment, or as `<<<`, opens none. A line
    scan, not a parser: a quote or `((` left open runs to the line's end."""
    out = []  # type: List[Tuple[str, bool]]
    quote, parens, i = "", 0, 0  # parens: those open inside the arithmetic we are in (0: none)
    while i < len(ln):
        c = ln[i]
        if quote == "'":
            quote = "" if c == "'" else quote
        elif c == "\\":
            i += 1  # the next character is quoted
        elif quote == '"':
            quote = "" if c == '"' else quote
        elif parens:
            parens += {"(": 1, ")": -1}.get(c, 0)
        elif c in "'\"":
            quote = c
        elif ln.startswith("((", i):
            parens, i = 2, i + 1
        elif c == "#" and (i == 0 or ln[i - 1] in " \t;&|"):
            break
        elif ln.startswith("<<<", i):
            i += 2
        elif ln.startswith("<<", i):
            m = _HEREDOC.match(ln, i)
            if m:
                out.append((m.group(3), m.group(1) == "-"))
            i = m.end() - 1 if m else i + 1
        i += 1
    return out


def _exits(lines: List[str]) -> List[int]:
    """Indexes of the `exit` lines (_EXIT) among the commands (_code)."""
    return [i for i in _code(lines) if _EXIT.match(lines[i])]


def _without_block(lines: List[str], job: str) -> List[str]:
    """`lines` without job's block and the blank line we put after it."""
    out = []  # type: List[str]
    i = 0
    while i < len(lines):
        m = _MARK.match(lines[i])
        if m and m.group(2) == "begin" and m.group(1) == job:
            i = _block_end(lines, i, job)
            if i < len(lines) and lines[i] == "":
                i += 1
            continue
        out.append(lines[i])
        i += 1
    return out


def _final_exit(lines: List[str]) -> Optional[int]:
    """Index of the top-level `exit` that ends the script: the last one (_EXIT: indented or not), unless a
    command after it closes an if/loop/case/group (it may then sit inside one: not sure, so None)."""
    exits = _exits(lines)
    if not exits or any(_CLOSER.match(lines[i]) for i in _code(lines) if i > exits[-1]):
        return None
    return exits[-1]


def _with_block(lines: Optional[List[str]], job: str, block: List[str], path: str, restart: List[str]) -> List[str]:
    """Our block (replacing an older one) above the script's final top-level `exit` line (local.sh's `exit 0`,
    an admin's in rc.local, `exit 0  # end` too: anything below it never runs at boot), else at the end;
    then the crond restart block (moved there): below every job block that runs at boot; each followed by a
    blank line. Blocks of the format before lose their own restart (`_migrated`)."""
    if lines is None:
        lines = ["#!/bin/sh"] if path == LOCAL_SH else ["#! /bin/ash"]
    lines = _migrated(_without_restart(_without_block(lines, job)))
    at = _final_exit(lines)
    if at is not None:
        return lines[:at] + block + [""] + restart + [""] + lines[at:]
    return lines + block + [""] + restart + [""]
