"""`hotvcb --host H backup …` (and cleanup, status, verify, restore) run by hotvcb on the host itself
(`hostrun.py`): one SSH round trip instead of one per host command and file.

The command line is the client's: config, list files and the per-VM folder are read here and
sent along (so `-g`, `-f`, `-e` and `-c` name files on this machine, as in file-by-file SSH
mode), the log file (`-l`) gets the lines as they come, and the client writes `--json-report`
and sends the e-mail. The client mails, not the host: ESXi's firewall blocks outgoing SMTP by
default, and an SSH-mode setup already reaches its mail server from the Linux box. The run on
the host hands its report back in an outbox (`--outbox`) instead of mailing it.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import re
import stat
import sys
import codecs
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence

from .. import adminfile, config, namelist, pipetext
from ..jobs import outcome
from ..errors import HostError, Interrupted, UsageError
from ..onhost_boot import OUTBOX, RUN_DIR
from ..runlog import LOG_LOST, RunLog, put, say
from ..sshscripts import killed_by

if TYPE_CHECKING:  # hostrun (with pyzpack, uuid, ...) is imported by an SSH run only: a local run starts sooner
    from .. import hostrun
    from ..model import VmResult
    from ..sshshell import SshShell

# backup options that mean something on this machine only, or are ours to add
CLIENT_SIDE = ("log_file", "workdir", "json_report", "file_by_file", "outbox", "help", "parser", "hosts",
               "shown_as", "unsent")
SHIPPED_FILES = ("global_conf", "vm_list", "exclude", "restore_file")
LISTS = ("vm_list", "exclude")  # may be pipes (`-f <(...)`), read once (pipetext.py)
SHIPPED_DIRS = ("confdir",)


@dataclass
class Report:
    """What a backup run hands on when it ends: exit code, final status, the mail's parts, and the
    records of `--json-report`."""

    code: int
    status: str
    host: str
    log_text: str
    report_text: str
    report_html: str
    json_report: Dict[str, Any]

    def save(self, outbox: int) -> None:
        """Written to the pipe the host's end of SSH mode reads (`--outbox FD`, onhost_boot.relay), not to a
        file in the host's /tmp: that ramdisk may have filled up during the run, and a good backup's report
        lost there was told as a run that never started. Raises OSError (the pipe's reader is gone)."""
        with open(outbox, "wb", closefd=True) as f:
            f.write(json.dumps(dataclasses.asdict(self)).encode("utf-8"))


def outbox_fd(text: str) -> int:
    """`--outbox`'s value: the file descriptor of the pipe SSH mode's host end passes its run."""
    if not re.fullmatch(r"[0-9]{1,9}", text) or int(text) < 3:
        raise argparse.ArgumentTypeError("%r: not an option to give by hand (SSH mode passes the run on the host "
                                         "the file descriptor of the pipe it reads the report from)" % text)
    return int(text)


def add_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--file-by-file", action="store_true",
                   help="SSH mode: drive the host command by command from here, as for hosts without "
                   "Python 3.8, instead of running hotvcb on the host itself")
    p.add_argument("--shown-as", action="append", help=argparse.SUPPRESS)  # DEST=the client's name of a sent file
    p.add_argument("--unsent", help=argparse.SUPPRESS)  # JSON {per-VM file name: why it was not sent}
    p.set_defaults(parser=p)  # its options are passed on to the host (_request)


def adopt_client_names(args) -> None:
    """On the host: messages name the files the client sent as the admin wrote them (`--shown-as`)."""
    pairs = [item.split("=", 1) for item in getattr(args, "shown_as", None) or [] if "=" in item]
    adminfile.show_files_as({getattr(args, dest): name for dest, name in pairs if getattr(args, dest, None)})
    unsent, confdir = getattr(args, "unsent", None), getattr(args, "confdir", None)
    if unsent is not None:
        reasons = _unsent(unsent)
        if confdir:
            config.unsent_files({os.path.join(confdir, name): why for name, why in reasons.items()})


def _unsent(text: str) -> Dict[str, str]:
    """`--unsent`'s {per-VM file name: why it was not sent}, checked: the option is hidden but argparse
    takes it (and `--un`) on every backup, and a hand-given or stale value ended in a traceback
    (JSONDecodeError, 'list' object has no attribute 'items') instead of a usage error."""
    try:
        reasons = json.loads(text)
    except ValueError:
        reasons = None
    if not isinstance(reasons, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                for k, v in reasons.items()):
        raise UsageError("--unsent %s: not an option to give by hand (SSH mode passes it to the run on the host: "
                         "a JSON object of per-VM file names and why each was not sent)" % text)
    return reasons


def say_warnings(args, warnings: Sequence[str], say: Callable[[str], None]) -> None:
    """The config's warnings, said where the command runs: a run on the host reads the same config
    and says them itself (in its log, so in -l and the mail too), so here they wait until `_run`
    knows the command stays on this machine. Said on both sides, each appeared twice."""
    held = functools.partial(_say_each, list(warnings), say)
    if _may_go_to_host(args):
        args.unsaid_warnings = held  # `_run` says them if the command stays here after all
    else:
        held()


def _say_each(warnings: List[str], say: Callable[[str], None]) -> None:
    for w in warnings:
        say(w)


def _may_go_to_host(args) -> bool:
    return args.host_target.ssh is not None and not args.file_by_file


def backup(args, log: RunLog) -> Optional[Report]:
    """The run's Report, or None when it is not run on the host (no SSH, --file-by-file, or the
    host cannot: said in the log), and the caller goes file by file."""
    started = datetime.now().isoformat(timespec="seconds")
    tee = _Tee(log)
    try:
        done = _run(args, log, ["--outbox", OUTBOX], tee=tee)
    except Interrupted as err:  # before the run started on the host: nothing to undo there
        return ended(args, log, started, "ERROR: %s" % err, err.exit_code, args.host_target.name())
    if done is None:
        return None
    try:
        report = Report(**json.loads(done.outbox.decode("utf-8")))
        host_log = report.log_text
        # the lines this machine said before the run went to the host (-m overriding -f) are the mail's too:
        # its log is the host's run's, which never heard them
        report.log_text = "\n".join(log.lines + [report.log_text]) if log.lines else report.log_text
        tee.say_rest(host_log)
        return report
    except (TypeError, ValueError) as err:
        why = done.lost or "the run on the host ended without its report (exit %d%s)" % (
            done.returncode, ": %s" % err if done.outbox else "")
    killed = killed_by(done.returncode) if not done.lost else None
    if killed:  # nothing of it ran its `finally`: whatever it had made on the host is still there
        why = "%s: it was killed by %s and may have left hotvcb's snapshot on a VM, a VM it powered off or a " \
              "-partial backup folder; `hotvcb --host %s cleanup` removes them (so does the next backup)" % (
                  why, killed, args.host_target.ssh.destination)
    if done.returncode == 0 and not (killed or done.lost):  # it ended all OK there, as its lines say: only its
        log.warning(why)  # report is lost, a copy (README: 9), not a run that never started (1)
        return ended(args, log, started, "WARNING: %s; it ended all OK there" % why, LOG_LOST,
                     args.host_target.name())
    log.error(why)
    if killed or done.lost:  # the host's end stops a run whose session broke as a signal does (onhost_boot)
        code = Interrupted.exit_code  # README: 2, interrupted by a signal; 1 would say no VM was started
    else:
        code = done.returncode if 1 <= done.returncode <= LOG_LOST else 1  # hotvcb's codes, not ssh's
    return ended(args, log, started, "ERROR: %s" % why, code, args.host_target.name())


def ended(args, log: RunLog, started: str, status: str, code: int, host: str,
          results: "Optional[List[VmResult]]" = None, work: Any = None) -> Report:
    """The final status line and the run's report (mail, --json-report), whether it got to its VMs or not:
    a run with no report from the host ends as a local run does, never with an empty one. `work`: the
    run's work folder, finished between the two last lines."""
    results = results or []
    status, code = log.account(status, code)
    log.info("###### Final status: %s ######" % status)
    if work is not None:
        work.finish()
    log.info("============================== hotvcb LOG END ================================")
    return Report(code, status, host, "\n".join(log.lines), outcome.report(results, status),
                  outcome.report_html(results, status, host, args.job_name), {
                      "host": host, "job": args.job_name, "started": started,
                      "finished": datetime.now().isoformat(timespec="seconds"), "status": status,
                      "exit_code": code, "dry_run": args.level == "dryrun", "vms": outcome.rows(results)})


def command(args, failed: int, log: Optional[RunLog] = None,
            ask: "Optional[Callable[[SshShell], List[str]]]" = None) -> Optional[int]:
    """A command other than backup, run on the host when SSH mode can: its exit code (`failed` if
    the connection broke), or None as for backup. `ask`: what this machine tells the run on the host
    (options added to its command line), found over the session's connection before it starts."""
    done = _run(args, log, ask=ask)
    if done is None:
        return None
    if done.lost:  # what the host's end had done, the admin reads in the lines it sent before it stopped
        say("hotvcb: error: %s; the run on the host stopped with it, after the last step its lines above show "
            "(run the command again: it says what was left)" % done.lost, stream=sys.stderr)
        return failed
    return done.returncode


def _run(args, log: Optional[RunLog], extra: Sequence[str] = (),
         ask: "Optional[Callable[[SshShell], List[str]]]" = None,
         tee: "Optional[_Tee]" = None) -> "Optional[hostrun.Finished]":
    done = _on_host(args, log, extra, ask, tee or _Tee(log))
    if done is None:  # the command stays here: say what the host's run would have said
        vars(args).pop("unsaid_warnings", lambda: None)()
    return done


def _on_host(args, log: Optional[RunLog], extra: Sequence[str],
             ask: "Optional[Callable[[SshShell], List[str]]]", tee: "_Tee") -> "Optional[hostrun.Finished]":
    if not _may_go_to_host(args):
        return None
    from .. import hostrun
    from ..sshshell import SshShell
    shell = SshShell(args.host_target.ssh)
    try:
        shell.open()
    except HostError:
        return None  # no connection: the file-by-file path reports why, as it always has
    try:
        request = _request(args, args.parser, list(extra) + (ask(shell) if ask else []))
        done = hostrun.run(shell, request, tee.stdout, tee.stderr)
    except HostError as err:  # before the run started on the host
        done = "cannot start it there: %s" % err
    finally:
        shell.close()
    tee.flush()
    if isinstance(done, str):
        note = "SSH mode: hotvcb cannot run on %s (%s): going file by file over SSH" % (
            args.host_target.ssh.destination, done)
        if log is not None:
            args.why_here = note  # said by say_why_here, inside the run's log frame
        else:
            say("hotvcb: %s" % note, stream=sys.stderr)
        return None
    return done


def say_why_here(args, log: RunLog) -> None:
    """Why SSH mode drives the host file by file from here (the host cannot run hotvcb), held by _on_host until the
    caller's run has started its log frame: said before `hotvcb LOG START`, a log watcher reading a run's lines
    between its banners (ghettoVCB's parsers) never saw it. Said once; nothing when the run went to the host."""
    note = vars(args).pop("why_here", None)
    if note:
        log.info(note)


def _request(args, parser: argparse.ArgumentParser, extra: Sequence[str]) -> "hostrun.Request":
    """The same command line for the host, files named in it sent along; every option of the
    command is passed on (new ones too) unless it is CLIENT_SIDE."""
    argv, files, positional = [args.command], {}, []  # type: List[str], Dict[str, bytes], List[str]
    dirs = []  # type: List[str]
    for action in parser._actions:  # noqa: SLF001 - argparse offers no public list of options
        value = getattr(args, action.dest, None)
        if action.dest in CLIENT_SIDE or value is None or value is False or value == action.default:
            continue
        if not action.option_strings:
            positional += [str(v) for v in (value if isinstance(value, list) else [value])]
            continue
        opt = action.option_strings[0]
        if action.dest in SHIPPED_FILES + SHIPPED_DIRS:
            argv.append("--shown-as=%s=%s" % (action.dest, value))
        if action.dest in SHIPPED_FILES:
            files[action.dest] = _read(str(value), opt, pipes=action.dest in LISTS)
            value = RUN_DIR + "/" + action.dest
        elif action.dest in SHIPPED_DIRS:
            folder = str(value)
            if not os.path.isdir(folder):
                raise UsageError("%s %s: no such folder of per-VM configs" % (opt, folder))
            unsent = {}  # type: Dict[str, str]
            dirs.append(action.dest)  # the host's copy exists also when no VM named has a file here
            for name in _per_vm_names(args, folder):
                try:
                    files[action.dest + "/" + name] = _read(os.path.join(folder, name), opt)
                except UsageError as err:
                    unsent[name] = _why_unread(os.path.join(folder, name), err)
            if unsent:
                argv.append("--unsent=" + json.dumps(unsent))
            value = RUN_DIR + "/" + action.dest
        for v in (value if isinstance(value, list) else [value]):
            if v is True:
                argv.append(opt)
            elif str(v) == "--":  # as given: glued, argparse would drop it; the host's cli glues it its way
                argv += [opt, "--"]
            elif str(v).startswith("-"):  # `-m -web-`: glued, or it would be read as an option
                argv.append(opt + ("=" if opt.startswith("--") else "") + str(v))
            else:
                argv += [opt, str(v)]
    env = {"HOTVCB_PROGRESS": "tty"} if sys.stderr.isatty() else {}
    from .. import hostrun
    return hostrun.Request(argv + list(extra) + (["--"] + positional if positional else []), files, env, dirs)


def _per_vm_names(args, folder: str) -> List[str]:
    """The names in the -c folder the run may read: the VMs named (-m, -f, restore --latest) where it has
    a file, else (-a) every entry. Only these are sent, and one that cannot be (`_read`) costs its VM
    alone, as a run here would: the folder a ghettoVCB admin keeps per-VM files in holds its logs and
    script too, and one log over 4 MiB refused the whole SSH backup of VMs that have nothing to do with it."""
    names = getattr(args, "vm_names", None) or ([args.latest] if getattr(args, "latest", None) else None)
    if not names and getattr(args, "vm_list", None):
        try:
            names = [form for n in namelist.read_names(args.vm_list) for form in (n, n.exact)]  # either is the VM
        except UsageError:
            names = None  # the run reports the list; the folder is sent whole
    if not names:
        names = os.listdir(folder)
    return sorted({n for n in names if n not in ("", ".", "..") and "/" not in n and "\0" not in n
                   and os.path.lexists(os.path.join(folder, n))})


def _why_unread(path: str, err: UsageError) -> str:
    """What a run here says of a per-VM file it cannot read (adminfile.read_text's words), else `err`."""
    try:
        adminfile.read_text(path, "per-VM config file")
    except UsageError as local:
        return str(local)
    return str(err)


def _read(path: str, option: str, pipes: bool = False) -> bytes:
    """A file to send, refused as adminfile.read_text refuses it: a FIFO would hang us, /dev/zero fill memory
    (a list's pipe is read once, bounded, as the run reads it: pipetext.py)."""
    try:
        mode = os.stat(path).st_mode
        if pipes and stat.S_ISFIFO(mode):
            return pipetext.read(path, path, option, adminfile.MAX_FILE_BYTES)
        if not stat.S_ISREG(mode):
            raise UsageError("%s %s is not a regular file" % (option, path))
        with open(path, "rb") as f:
            data = f.read(adminfile.MAX_FILE_BYTES + 1)
    except OSError as err:
        raise UsageError("%s %s: %s" % (option, path, err.strerror or err)) from err
    if len(data) > adminfile.MAX_FILE_BYTES:
        raise UsageError("%s %s is larger than %d bytes" % (option, path, adminfile.MAX_FILE_BYTES))
    return data


class _Tee:
    """The host's output to our stdout/stderr as it comes; its log lines (stdout) also to -l. A sink
    of ours that fails costs the run on the host nothing (`runlog.put`, `RunLog.relay`)."""

    def __init__(self, log: Optional[RunLog]):
        self.log = log
        self.decode = codecs.getincrementaldecoder("utf-8")("replace")
        self.lines = 0  # complete lines of the host's log relayed
        self.last = ""  # the last of them
        self.partial = ""  # and what came of the next

    def stdout(self, data: bytes) -> None:
        if self.log is not None:
            text = self.decode.decode(data)
            self.log.relay(data, text)
            *done, self.partial = (self.partial + text).split("\n")
            if done:
                self.lines, self.last = self.lines + len(done), done[-1]
        else:
            put(sys.stdout.buffer, data)

    def say_rest(self, host_log: str) -> None:
        """The host's log lines its output did not bring, said from its report: the run on the host keeps its
        output in files in its /tmp, a small ramdisk that may fill up during the run; its lines then stopped
        there, and this machine's terminal and -l ended without the run's end and final status, which the
        report (passed by a pipe, no file) still holds."""
        lines = host_log.split("\n") if host_log else []
        if self.log is None or self.lines >= len(lines) or self.lines and lines[self.lines - 1] != self.last:
            return  # all came; or not this log's lines: nothing to add rather than lines twice
        if self.partial:
            self.log.relay(b"\n", "\n")
        self.log.warning("the host's output stopped after %d of its %d log lines (it could not keep them: its /tmp "
                         "is full?); the rest, from its report:" % (self.lines, len(lines)))
        rest = "".join(line + "\n" for line in lines[self.lines:])
        self.log.relay(rest.encode("utf-8"), rest)

    def stderr(self, data: bytes) -> None:
        put(sys.stderr.buffer, data)

    def flush(self) -> None:
        if self.log is not None:
            self.log.relay(b"", self.decode.decode(b"", final=True))
