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

The blocks we add to the boot script, and where in it they go, are localsh.py's.
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
from . import Entry, Job, cron_line, has_marker, job_of, lines_of
from .localsh import (BUSYBOX_7, BUSYBOX_OLD, CROND_PID, CRONTAB, LOCAL_SH, blocks, job_block, restart_block,
                      crlf_fix, unreached, windows_line_end, with_block, without_block, without_restart)
from .tablelock import lock_path, locked

RC_LOCAL = "/etc/rc.local"
AUTO_BACKUP = "/sbin/auto-backup.sh"
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
    windows_ends: int = 0  # the boot file's first command line with a CR LF end (localsh): its blocks may not run


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
            crlf = windows_line_end(before)
            if crlf:
                raise HostError("%s is saved with Windows (CRLF) line ends (line %d, a command, ends in a CR): ESXi's "
                                "sh reads the CR as part of the command, so a boot block there may never put the job "
                                "back at boot; convert it with `%s` and re-run install" % (boot, crlf, crlf_fix(boot)))
            written = with_block(before, job.name, job_block(job.name, line), boot, restart_block(self.busybox()))
            try:
                self._write(boot, written)
                self._replace(CRONTAB, _without_job(crontab, job.name) + [line])
            except HostError:  # the boot file too: written in place, a full ramdisk may have cut it short
                self._put_back(boot, before)
                raise
            self.restart_crond()
        self._persist()
        self.warn_if_secure_boot()
        self._warn_if_unreached(job.name, boot, written)
        return line

    def _warn_if_unreached(self, job: str, boot: str, lines: List[str]) -> None:
        """Said at install, not only by `show`: a block `with_block` could only put below an `exit` line (the
        scan could not tell where the script ends) may never run at boot, and the job is then gone after the
        next reboot while install said it was persisted."""
        if job in unreached(lines):
            self.warn("the boot block in %s is below an `exit` line hotvcb could not place (inside an if, loop or "
                      "function, or not): if the shell leaves there, the job is lost at the next reboot; move "
                      "the lines from `# hotvcb:%s begin` to `# hotvcb-crond end` above that exit" % (boot, job))

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
            names = {b for b in blocks(lines) if job is None or b == job}
            stripped = lines
            for name in names:
                stripped = without_block(stripped, name)
            if not blocks(stripped):  # the last job gone: its crond restart too
                stripped = without_restart(stripped)
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
        for block, body in blocks(lines).items():
            entries.append(Entry(block, boot, "\n".join(ln.rstrip("\r") for ln in body)))
        return Status(entries, self.crond_running(), boot, self.secure_boot(), unreached(lines),
                      windows_line_end(lines))

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


def _without_job(lines: List[str], job: str) -> List[str]:
    return [ln for ln in lines if not has_marker(ln, job)]
