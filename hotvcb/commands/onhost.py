"""`hotvcb --host H backup …` (and cleanup, status, verify, restore) run by hotvcb on the host itself
(`hostrun.py`): one SSH round trip instead of one per host command and file.

The command line is the client's: config, list files and the per-VM folder are read here and
sent along (so `-g`, `-f`, `-e` and `-c` name files on this machine, as in file-by-file SSH
mode), the log file (`-l`) gets the lines as they come, and the client writes `--json-report`
and sends the e-mail. The client mails, not the host: ESXi's firewall blocks outgoing SMTP by
default, and an SSH-mode setup already reaches its mail server from the Linux box. The run on
the host hands its report back in an outbox (`--outbox`) instead of mailing it.
"""

import argparse
import dataclasses
import json
import os
import sys
import codecs
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

from .. import hostrun
from ..errors import HostError, UsageError
from ..runlog import RunLog
from ..sshshell import SshShell

# backup options that mean something on this machine only, or are ours to add
CLIENT_SIDE = ("log_file", "workdir", "json_report", "file_by_file", "outbox", "help", "parser", "hosts")
SHIPPED_FILES = ("global_conf", "vm_list", "exclude", "restore_file")
SHIPPED_DIRS = ("confdir",)
OUTBOX = hostrun.RUN_DIR + "/outbox.json"


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

    def save(self, path: str) -> None:
        tmp = "%s.%d.tmp" % (path, os.getpid())
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(dataclasses.asdict(self), f)
        os.replace(tmp, path)


def add_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--file-by-file", action="store_true",
                   help="SSH mode: drive the host command by command from here, as for hosts without "
                   "Python 3.8, instead of running hotvcb on the host itself")
    p.set_defaults(parser=p)  # its options are passed on to the host (_request)


def backup(args, log: RunLog) -> Optional[Report]:
    """The run's Report, or None when it is not run on the host (no SSH, --file-by-file, or the
    host cannot: said in the log), and the caller goes file by file."""
    done = _run(args, log, ["--outbox", OUTBOX])
    if done is None:
        return None
    try:
        return Report(**json.loads(done.outbox.decode("utf-8")))
    except (TypeError, ValueError) as err:
        why = done.lost or "the run on the host ended without its report (exit %d%s)" % (
            done.returncode, ": %s" % err if done.outbox else "")
        log.error(why)
        return Report(done.returncode if done.returncode not in (0, 255) else 1, "ERROR: %s" % why,
                      args.host_target.ssh.hostname, "\n".join(log.lines), "", "", {})


def command(args, failed: int, log: Optional[RunLog] = None) -> Optional[int]:
    """A command other than backup, run on the host when SSH mode can: its exit code (`failed` if
    the connection broke), or None as for backup."""
    done = _run(args, log)
    if done is None:
        return None
    if done.lost:
        print("hotvcb: error: %s" % done.lost, file=sys.stderr)
        return failed
    return done.returncode


def _run(args, log: Optional[RunLog], extra: Sequence[str] = ()) -> Optional[hostrun.Finished]:
    if args.host_target.ssh is None or args.file_by_file:
        return None
    request = _request(args, args.parser, extra)
    shell = SshShell(args.host_target.ssh)
    try:
        shell.open()
    except HostError:
        return None  # no connection: the file-by-file path reports why, as it always has
    tee = _Tee(log)
    try:
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
            log.info(note)
        else:
            print("hotvcb: %s" % note, file=sys.stderr)
        return None
    return done


def _request(args, parser: argparse.ArgumentParser, extra: Sequence[str]) -> hostrun.Request:
    """The same command line for the host, files named in it sent along; every option of the
    command is passed on (new ones too) unless it is CLIENT_SIDE."""
    argv, files, positional = [args.command], {}, []  # type: List[str], Dict[str, bytes], List[str]
    for action in parser._actions:  # noqa: SLF001 - argparse offers no public list of options
        value = getattr(args, action.dest, None)
        if action.dest in CLIENT_SIDE or value is None or value is False or value == action.default:
            continue
        if not action.option_strings:
            positional += [str(v) for v in (value if isinstance(value, list) else [value])]
            continue
        opt = action.option_strings[0]
        if action.dest in SHIPPED_FILES:
            files[action.dest] = _read(str(value), opt)
            value = hostrun.RUN_DIR + "/" + action.dest
        elif action.dest in SHIPPED_DIRS:
            folder = str(value)
            if not os.path.isdir(folder):
                raise UsageError("%s %s: no such folder of per-VM configs" % (opt, folder))
            for name in sorted(os.listdir(folder)):
                if os.path.isfile(os.path.join(folder, name)):
                    files[action.dest + "/" + name] = _read(os.path.join(folder, name), opt)
            value = hostrun.RUN_DIR + "/" + action.dest
        for v in (value if isinstance(value, list) else [value]):
            if v is True:
                argv.append(opt)
            elif str(v).startswith("-"):  # `-m -web-`: glued, or it would be read as an option
                argv.append(opt + ("=" if opt.startswith("--") else "") + str(v))
            else:
                argv += [opt, str(v)]
    env = {"HOTVCB_PROGRESS": "tty"} if sys.stderr.isatty() else {}
    return hostrun.Request(argv + list(extra) + (["--"] + positional if positional else []), files, env)


def _read(path: str, option: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as err:
        raise UsageError("%s %s: %s" % (option, path, err.strerror or err)) from err


class _Tee:
    """The host's output to our stdout/stderr as it comes; its log lines (stdout) also to -l."""

    def __init__(self, log: Optional[RunLog]):
        self.log = log
        self.decode = codecs.getincrementaldecoder("utf-8")("replace")

    def stdout(self, data: bytes) -> None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        if self.log is not None and self.log.file is not None:
            self.log.file.write(self.decode.decode(data))
            self.log.file.flush()

    def stderr(self, data: bytes) -> None:
        sys.stderr.buffer.write(data)
        sys.stderr.buffer.flush()

    def flush(self) -> None:
        if self.log is not None and self.log.file is not None:
            self.log.file.write(self.decode.decode(b"", final=True))
