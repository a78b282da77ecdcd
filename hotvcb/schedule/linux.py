"""Schedules on a Linux box: the user's crontab, or a systemd .service + .timer pair.

crontab: read with ``crontab -l`` (exit 1 and "no crontab for USER" mean empty),
written back whole with ``crontab -`` on stdin. Only lines ending in our marker are
touched. cron (vixie/cronie) turns ``%`` into a newline, so it is escaped.

systemd: ``hotvcb-<job>.service`` (Type=oneshot, ExecStart quoted for systemd, not a
shell) and ``hotvcb-<job>.timer`` (OnCalendar converted from the cron expression) in
``/etc/systemd/system``; then ``systemctl daemon-reload`` and ``enable --now`` the timer.
Units are recognised as ours by the marker comment on their first line.
"""

import os
import re
import shutil
import subprocess
from typing import List, Optional, Sequence

from ..errors import CommandFailed, HostError
from . import Entry, Job, cron_line, cron, has_marker, job_of, lines_of, marker
from .tablelock import lock_path, locked

UNIT_DIR = "/etc/systemd/system"
# how long `systemctl stop` (and a shutdown) waits after its TERM before it KILLs the job; systemd's default, 90 s,
# cuts hotvcb's own stop short: it waits up to 30 s for the host to confirm its copy ended (over a hung SSH
# connection, ssh gives it up after its keepalive, 60 s by default), then removes the snapshot, which may take
# SNAPSHOT_REMOVE_TIMEOUT (30 min by default; 10 s more where the removal's SSH connection broke, every attempt
# within that: jobs/snapshot_removal.py). A KILL midway leaves the VM running on a snapshot that grows.
STOP_TIMEOUT = "35min"


def _run(argv: Sequence[str], stdin: Optional[str] = None) -> subprocess.CompletedProcess:
    """Text both ways, but the admin's bytes survive: a crontab from Latin-1 days reads and writes back
    unchanged (surrogateescape), as the ESXi scheduler does with its files, and so do its line ends (decoded
    here, not by subprocess's text mode, which turns a CRLF into "\n")."""
    try:
        done = subprocess.run(
            list(argv), input=None if stdin is None else stdin.encode("utf-8", "surrogateescape"),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60,
        )
    except FileNotFoundError as err:
        raise HostError("%s is not installed" % argv[0]) from err
    except (OSError, subprocess.SubprocessError) as err:
        raise HostError("cannot run %s: %s" % (argv[0], err)) from err
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode("utf-8", "surrogateescape"))


# -- crontab -----------------------------------------------------------------
class CrontabScheduler:
    def __init__(self, crontab: str = "crontab"):
        self.crontab = crontab

    def read(self) -> List[str]:
        done = _run([self.crontab, "-l"])
        if done.returncode != 0:
            if "no crontab" in done.stdout.lower():
                return []
            raise _crontab_failed([self.crontab, "-l"], done)
        return lines_of(done.stdout)

    def write(self, lines: List[str]) -> None:
        done = _run([self.crontab, "-"], stdin="".join(ln + "\n" for ln in lines))
        if done.returncode != 0:
            out = done.stdout.lower()
            if os.geteuid() != 0 and ("permission denied" in out or "mkstemp" in out):
                raise HostError(
                    "crontab could not save the crontab of %s (%s): this user may not have one here "
                    "(crontab(1) writes root's spool folder, by its setgid bit or cron.allow); install the "
                    "schedule as root" % (_user(), done.stdout.strip().splitlines()[-1]))
            raise _crontab_failed([self.crontab, "-"], done)

    def install(self, job: Job) -> str:
        line = cron_line(job, busybox=False)
        with locked(lock_path()):  # read-modify-write: another install's line must not be written over
            self.write([ln for ln in self.read() if not has_marker(ln, job.name)] + [line])
        return line

    def remove(self, job: Optional[str]) -> List[str]:
        with locked(lock_path()):
            lines = self.read()
            found = sorted({job_of(ln) or "" for ln in lines if has_marker(ln, job)})
            if found:
                self.write([ln for ln in lines if not has_marker(ln, job)])
        return found

    def status(self) -> List[Entry]:
        return [Entry(job_of(ln) or "", "crontab of %s" % _user(), ln) for ln in self.read() if has_marker(ln)]


def _crontab_failed(argv: List[str], done: subprocess.CompletedProcess) -> HostError:
    """crontab(1)'s refusal with its reason: that comes first and the advice last ("You (backup) are not
    allowed to use this program (crontab)" / "See crontab(1) for more information"; Debian's `"-":3: command
    too long` / "errors in crontab file, can't install."), so its last line alone named no problem. A command
    too long for cron (Debian's reads 998 characters of it) gets the way around it."""
    err = CommandFailed(argv, done.returncode, done.stdout, lines=4)
    if "too long" in done.stdout.lower():
        return HostError("%s; the job's command is too long for this cron: name the VMs in a list file (-f FILE) "
                         "instead of one -m each" % err)
    return err


def _user() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return "uid %d" % os.geteuid()


# -- systemd -----------------------------------------------------------------
def systemd_quote(arg: str) -> str:
    """One ExecStart word: systemd splits like a shell but expands %specifiers and $VARS itself."""
    text = arg.replace("%", "%%").replace("$", "$$")
    if text and re.match(r"^[A-Za-z0-9_@%+=:,./-]+$", text):
        return text
    return '"%s"' % text.replace("\\", "\\\\").replace('"', '\\"')


def environment_line(name: str, value: str) -> str:
    """One Environment= assignment: systemd expands %specifiers there, but not $VARS (unlike ExecStart)."""
    text = ("%s=%s" % (name, value)).replace("%", "%%")
    return 'Environment="%s"' % text.replace("\\", "\\\\").replace('"', '\\"')


def unit_name(job: str) -> str:
    return "hotvcb-%s" % job


def service_text(job: Job) -> str:
    lines = [
        marker(job.name),
        "[Unit]",
        "Description=hotvcb backup job %s" % job.name,
        "Wants=network-online.target",
        "After=network-online.target",
        "",
        "[Service]",
        "Type=oneshot",
        "TimeoutStopSec=%s" % STOP_TIMEOUT,
    ]
    lines += [environment_line(name, value) for name, value in job.env]
    lines.append("ExecStart=%s" % " ".join(systemd_quote(a) for a in job.argv))
    if job.log:
        lines += ["StandardOutput=append:%s" % job.log.replace("%", "%%"), "StandardError=inherit"]
    return "\n".join(lines) + "\n"


def timer_text(job: Job) -> str:
    return "\n".join([
        marker(job.name),
        "# cron: %s" % job.cron,
        "[Unit]",
        "Description=Schedule of hotvcb backup job %s" % job.name,
        "",
        "[Timer]",
        "OnCalendar=%s" % cron.to_oncalendar(job.cron),
        "Unit=%s.service" % unit_name(job.name),
        "",
        "[Install]",
        "WantedBy=timers.target",
    ]) + "\n"


class SystemdScheduler:
    def __init__(self, unit_dir: str = UNIT_DIR, systemctl: Optional[str] = "systemctl", warn=None):
        self.unit_dir = unit_dir
        self.systemctl = systemctl
        self.warn = warn or (lambda msg: None)

    def _path(self, job: str, kind: str) -> str:
        return os.path.join(self.unit_dir, "%s.%s" % (unit_name(job), kind))

    def install(self, job: Job) -> str:
        texts = {"service": service_text(job), "timer": timer_text(job)}  # convert before writing anything
        os.makedirs(self.unit_dir, exist_ok=True)
        for kind, text in texts.items():
            _write_atomic(self._path(job.name, kind), text)
        self._systemctl(["daemon-reload"])
        self._systemctl(["enable", "--now", "%s.timer" % unit_name(job.name)])
        return texts["timer"].split("OnCalendar=", 1)[1].splitlines()[0]

    def remove(self, job: Optional[str]) -> List[str]:
        names = [job] if job is not None else sorted({e.job for e in self.status()})
        found = []
        for name in names:
            paths = [self._path(name, k) for k in ("timer", "service")]
            ours = [p for p in paths if _is_ours(p, name)]
            if not ours:
                continue
            self._systemctl(["disable", "--now", "%s.timer" % unit_name(name)], check=False)
            for p in ours:
                try:
                    os.remove(p)
                except OSError as err:
                    raise HostError("cannot remove %s: %s" % (p, err.strerror or err)) from err
            found.append(name)
        if found:
            self._systemctl(["daemon-reload"])
        return found

    def status(self) -> List[Entry]:
        out = []  # type: List[Entry]
        if not os.path.isdir(self.unit_dir):
            return out
        for fname in sorted(os.listdir(self.unit_dir)):
            m = re.match(r"^hotvcb-(.+)\.(timer|service)$", fname)
            path = os.path.join(self.unit_dir, fname)
            if m and _is_ours(path, m.group(1)):
                with open(path, encoding="utf-8") as f:
                    text = f.read()
                keep = [ln for ln in text.splitlines() if ln.startswith(("OnCalendar=", "ExecStart=", "# cron:"))]
                out.append(Entry(m.group(1), path, "\n".join(keep)))
        return out

    def enabled(self, job: str) -> Optional[bool]:
        """Whether job's timer is enabled (starts at boot and runs now), None where this cannot be told. Its
        unit files alone say nothing: a timer disabled to pause the job, or never enabled (an install where
        systemctl could not), never runs, and `show` called it scheduled. Enabled is the link `enable` makes
        in timers.target.wants, or `systemctl is-enabled` saying so; not enabled is its saying otherwise
        (`enabled-runtime` lasts until the next boot only)."""
        timer = "%s.timer" % unit_name(job)
        if os.path.lexists(os.path.join(self.unit_dir, "timers.target.wants", timer)):
            return True
        if not self.systemctl or not shutil.which(self.systemctl):
            return None
        try:
            done = _run([self.systemctl, "is-enabled", timer])
        except HostError:
            return None
        state = (done.stdout.split() or [""])[0]
        if done.returncode == 0:
            return state in ("", "enabled")
        return False if state in _NOT_ENABLED else None

    def _systemctl(self, args: List[str], check: bool = True) -> None:
        if not self.systemctl:
            return
        if not shutil.which(self.systemctl):
            self.warn("%s not found: run `systemctl %s` yourself" % (self.systemctl, " ".join(args)))
            return
        done = _run([self.systemctl] + args)
        if done.returncode != 0:
            if not os.path.isdir("/run/systemd/system"):  # sd_booted(): systemd is not PID 1 here
                self.warn("systemd is not running here: run `systemctl %s` "
                          "where it runs" % " ".join(args))
                self.systemctl = None
                return
            if check:
                raise CommandFailed([self.systemctl] + args, done.returncode, done.stdout)
            self.warn("systemctl %s: %s" % (" ".join(args), done.stdout.strip()))


# `systemctl is-enabled` states of a unit it knows that does not start at boot (it exits non-zero for them)
_NOT_ENABLED = ("disabled", "masked", "masked-runtime", "linked", "linked-runtime", "bad")


def _is_ours(path: str, job: str) -> bool:
    try:
        with open(path, encoding="utf-8") as f:
            return f.readline().rstrip("\n") == marker(job)
    except OSError:
        return False


def _write_atomic(path: str, text: str) -> None:
    tmp = "%s.tmp%d" % (path, os.getpid())
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as err:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise HostError("cannot write %s: %s" % (path, err.strerror)) from err
