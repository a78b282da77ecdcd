"""Run hotvcb backups on a schedule: cron on ESXi (made to survive reboots), crontab or systemd on Linux.

    schedule/
      __init__.py   what every scheduler shares: job names, markers, the command line to run
      cron.py       cron expressions: check, and convert to systemd OnCalendar
      esxi.py       /var/spool/cron/crontabs/root + crond restart + bootbank, on the host
      localsh.py    the local.sh / rc.local blocks: where they go, read and taken out
      linux.py      user crontab (`crontab -l` / `crontab -`) and systemd .service + .timer
      tablelock.py  one change of a crontab at a time (two installs at once each keep their job)

Every line or block hotvcb adds carries the marker ``# hotvcb:<job>``, so
installing twice replaces instead of adding, and ``remove`` finds exactly ours.
"""

import argparse
import os
import re
import shlex
import sys
from typing import List, NamedTuple, Optional, Sequence, Tuple

from ..errors import UsageError
from .. import lazyre

DEFAULT_JOB = "hotvcb"
ESXI_PYTHON = "/bin/python"
# matched whole (fullmatch): `$` also matches before a final line break, so `nightly\n` passed as a name
_JOB_RE = lazyre.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# the backup options (by dest) whose value is a path: cron runs in another folder, so they are made absolute
# in whatever spelling argparse reads them (`backup_argv`)
PATH_DESTS = ("vm_list", "exclude", "global_conf", "confdir", "log_file", "workdir", "json_report",
              "identity", "known_hosts", "qemu")

# hotvcb's environment variables a run reads (notify.CAFILE_ENV, hostrun's folder on the host) that cron and
# systemd, starting the job in a bare environment, would not pass on: (name, whether it is a path here)
CARRIED_ENV = (("HOTVCB_SMTP_CAFILE", True), ("HOTVCB_HOST_FOLDER", False))


class Job(NamedTuple):
    name: str
    cron: str  # five-field cron expression, checked
    argv: List[str]  # the command to run, e.g. ["/bin/python", "/vmfs/volumes/ds/hotvcb.pyz", "backup", ...]
    log: Optional[str]  # where cron output goes (None: systemd journal)
    env: Tuple[Tuple[str, str], ...] = ()  # variables the command runs with (`carried_env`)


def carried_env() -> Tuple[Tuple[str, str], ...]:
    """The CARRIED_ENV variables set where `schedule install` runs, paths made absolute: the job runs
    with the relay's CA bundle and the host folder the command tried at install had. Dropped, the
    scheduled run's mail was refused every night ('certificate verify failed'), said only in its log."""
    return tuple((name, absolute(os.environ[name]) if path else os.environ[name])
                 for name, path in CARRIED_ENV if os.environ.get(name))


class Entry(NamedTuple):
    """One installed piece, as `show` reports it."""

    job: str
    where: str  # file or unit
    text: str


def check_job_name(name: str) -> str:
    """The one rule for a job name, `schedule --job`'s and `backup -j`'s: it is a crontab marker, a file
    name (the default log, a systemd unit), a word of the log's HOST line and of the mail's Subject."""
    if not _JOB_RE.fullmatch(name):
        raise UsageError(
            "job name %r: use ASCII letters (A-Z, a-z), digits, '.', '_' and '-' (up to 64, starting with a letter "
            "or digit)%s" % (name, _refused_chars(name))
        )
    return name


def _refused_chars(name: str) -> str:
    """The characters of `name` no job name may hold, named: `Nächtlich` is all letters to its admin, and
    only ASCII ones make a crontab tag and a systemd unit name."""
    bad = sorted(set(c for c in name if not re.match(r"[A-Za-z0-9_.-]", c)))
    return "; not allowed: %s" % ", ".join(repr(c) for c in bad) if bad else ""


def default_job(host: Optional[str] = None, port: Optional[int] = None) -> str:
    """The job name when `--job` is not given: `hotvcb`, or for an SSH-mode job (`--host`) the host's
    name, with its port when that is not 22.

    One Linux box scheduling several ESXi hosts as the README shows (no `--job`) gave every host the one
    name `hotvcb`, so each install replaced the previous host's line without a word, and that host was
    never backed up again. Named after the host, a second host gets a job of its own, while installing
    the same host again still replaces its own line. So that one host is one job and two hosts are two:
    * host names are case-blind (`root@ESXi01` and `root@esxi01` are one host): the name is lower case,
      else the second install made a second job that collided with the first on the host's run lock;
    * a name longer than a job name may be (64) is cut with a short hash of the whole host kept, and the
      port after it: cut as a whole, two hosts behind one long gateway name told apart by the port
      (2201, 2202) got one job, and the second install silently replaced the first host's line.
    Characters a job name cannot hold (an IPv6 address's `:`) become `_`."""
    if not host:
        return DEFAULT_JOB
    suffix = "-%d" % port if port and port != 22 else ""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", host.lower()).lstrip("_.-")
    if len(name) + len(suffix) > 64:
        import hashlib  # a backup imports this package for its checks, which hash nothing

        digest = hashlib.sha256(host.lower().encode("utf-8", "surrogateescape")).hexdigest()[:8]
        name = "%s-%s" % (name[:64 - len(suffix) - 9].rstrip("_.-"), digest)
    name += suffix
    return name if _JOB_RE.fullmatch(name) else DEFAULT_JOB


def lines_of(text: str) -> List[str]:
    """A crontab's (or boot script's) lines as cron and sh read them: split at "\n" alone, so a CR of a CRLF
    end, a form feed or a U+2028 in a comment stays in its line (str.splitlines breaks there, and the table
    written back would hold a new line, a broken job line for cron); joining each with "\n" gives the text back
    (with a final "\n" where it had none)."""
    lines = text.split("\n")
    return lines[:-1] if lines[-1] == "" else lines


def marker(job: str) -> str:
    return "# hotvcb:" + job


def has_marker(line: str, job: Optional[str] = None) -> bool:
    """True if the line ends with our marker (for `job`, or any job when None)."""
    stripped = line.rstrip()
    if job is not None:
        return stripped.endswith(" " + marker(job)) or stripped == marker(job)
    return re.search(r"(^|\s)# hotvcb:[A-Za-z0-9][A-Za-z0-9_.-]*$", stripped) is not None


def job_of(line: str) -> Optional[str]:
    m = re.search(r"# hotvcb:([A-Za-z0-9][A-Za-z0-9_.-]*)$", line.rstrip())
    return m.group(1) if m else None


def self_command(on_esxi: bool) -> List[str]:
    """How to start this same hotvcb from cron: the .pyz it runs from, or the installed package."""
    archive = running_pyz()
    if archive:
        return [ESXI_PYTHON if on_esxi else (sys.executable or "python3"), archive]
    module = [sys.executable or "python3", "-m", "hotvcb"]
    source = source_root()
    return ["/usr/bin/env", "PYTHONPATH=" + source] + module if source else module


def source_root() -> Optional[str]:
    """The folder holding hotvcb/ when it is not installed (a checkout), else None; named as the admin's
    shell names it (`as_seen`): `cd /vmfs/volumes/datastore1/src && python -m hotvcb schedule install …`
    wrote PYTHONPATH=/vmfs/volumes/<uuid>/src beside the line's datastore1 paths, so a datastore made anew
    under its name kept the config and lost hotvcb itself."""
    import site

    import hotvcb

    parent = os.path.dirname(os.path.dirname(os.path.abspath(hotvcb.__file__)))
    installed = list(site.getsitepackages()) + [site.getusersitepackages()]
    if any(os.path.abspath(d) == parent for d in installed):
        return None
    return as_seen(parent)


def running_pyz() -> Optional[str]:
    """Absolute path of the hotvcb.pyz this code was imported from, or None."""
    import hotvcb

    archive = getattr(getattr(hotvcb, "__loader__", None), "archive", None)
    if archive and os.path.isfile(archive):
        return as_seen(archive)
    return None


def backup_argv(args: Sequence[str], parser: Optional[argparse.ArgumentParser] = None) -> List[str]:
    """The `backup …` part of the scheduled command, paths made absolute (cron runs elsewhere).

    Checking the arguments is the backup command's own business (commands/backup_cmd.check);
    this only rewrites the words: every word argparse reads as the value of a PATH_DESTS option of
    `parser` (the backup command's own) is made absolute, however it is spelled: `-g FILE`, `-gFILE`,
    `-g=FILE`, `-ag FILE`, `--json-report FILE`, `--json-report=FILE` and any prefix argparse takes
    for a long option (`--json-r`; `--json` is the backup's refusal, no prefix). Matched by string prefixes
    instead, `-g=FILE` was installed as `-g<cwd>/=FILE` (a file the run never found) and `--json-r FILE`
    stayed relative to cron's $HOME.
    """
    args = list(args)
    if args and args[0] == "--":
        args = args[1:]
    if args and args[0] == "backup":
        args = args[1:]
    if not args:
        raise UsageError("say what to back up after --, e.g. -- -a -g /vmfs/volumes/ds/hotvcb.conf")
    from ..commands.cmdline import DOUBLE_DASH, option_of, options_of  # not at the top: commands import this package

    if parser is None:
        from ..commands import backup_cmd

        parser = backup_cmd.parser()
    options = options_of(parser)
    out = []  # type: List[str]
    i = 0
    while i < len(args):
        a = args[i]
        i += 1
        if a == "--":
            out += args[i - 1:]
            break
        found = option_of(a, options)
        if found is None:
            out.append(a)
            continue
        action, head, value = found
        path = action.dest in PATH_DESTS
        # its value is the next word (for an optional one, as argparse reads it: a word that is no option)
        if value is None and i < len(args) and (action.nargs is None
                                                or action.nargs == "?" and not args[i].startswith("-")):
            out += [a, absolute(args[i]) if path and args[i] else args[i]]
            i += 1
        elif value == DOUBLE_DASH:  # `-m --` (glue_dash_values): written as given, the run glues it again
            out += [head.rstrip("="), "--"]
        else:
            out.append(head + (absolute(value) if path and value else value or ""))
    return ["backup"] + out


def absolute(path: str) -> str:
    """`path` as an absolute path the way the admin sees it: relative to the shell's $PWD (so
    /vmfs/volumes/datastore1/x stays that, not /vmfs/volumes/<uuid>/x as getcwd() says), and an
    absolute path exactly as written."""
    if os.path.isabs(path):
        return path
    return os.path.normpath(os.path.join(_shell_cwd(), path))


def as_seen(path: str) -> str:
    """`path` as `absolute` makes it, also when python already made it absolute with getcwd(): the pyz
    of `cd /vmfs/volumes/datastore1 && python hotvcb.pyz schedule install …` was installed as
    /vmfs/volumes/<uuid>/hotvcb.pyz beside the job's own datastore1 paths, and once the datastore was
    made anew under its name (a new UUID) only the command itself failed, every night, in no log."""
    if not os.path.isabs(path):
        return absolute(path)
    base, shown = os.getcwd().rstrip("/"), _shell_cwd().rstrip("/")
    if base and shown != base and (path == base or path.startswith(base + "/")):  # the folder itself too
        return shown + path[len(base):]
    return path


def _shell_cwd() -> str:
    """The working folder as the admin's shell names it ($PWD) when that is where we are, else getcwd()."""
    base = os.getcwd()
    pwd = os.environ.get("PWD", "")
    try:
        if os.path.isabs(pwd) and os.path.samefile(pwd, base):
            return pwd
    except OSError:
        pass
    return base


def shell_line(argv: Sequence[str]) -> str:
    """argv as one POSIX shell command (busybox ash and dash run cron lines): every word quoted."""
    return " ".join(shlex.quote(a) for a in argv)


def default_log(job: str, on_esxi: bool) -> str:
    if on_esxi or os.geteuid() == 0:
        return "/var/log/hotvcb-%s.log" % job
    return os.path.join(os.path.expanduser("~"), ".hotvcb-%s.log" % job)


def cron_line(job: Job, busybox: bool) -> str:
    """The crontab line: schedule, command, output appended to the log, our marker.

    Two readers, two sets of rules:
    * vixie cron / cronie (Linux) turn an unescaped ``%`` into a newline: escaped as ``\\%``.
    * busybox crond (ESXi) cuts the line at the first ``#``, even inside quotes
      (config_read with PARSE_EOL_COMMENTS), and joins a line ending in ``\\`` with the
      next: a word holding ``#`` cannot be written there, so it is refused with advice.
      The marker comment at the end is cut off harmlessly.
    """
    words = list(job.argv) + ([job.log] if job.log else []) + ["%s=%s" % pair for pair in job.env]
    for w in words:
        if "\n" in w or "\r" in w:
            raise UsageError("%r contains a line break, which cannot go into a crontab line" % w)
    if busybox:
        bad = [w for w in words if "#" in w]
        if bad:
            raise UsageError(
                "%r contains '#', which ESXi's crond reads as the start of a comment; put VM names in a "
                "list file (-f FILE) and use paths without '#'" % bad[0]
            )
    command = "".join("%s=%s " % (name, shlex.quote(value)) for name, value in job.env) + shell_line(job.argv)
    if job.log:
        command += " >> %s 2>&1" % shlex.quote(job.log)
    if not busybox:
        command = command.replace("%", "\\%")
    return "%s %s %s" % (job.cron, command, marker(job.name))
