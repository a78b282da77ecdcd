"""The run's log: ghettoVCB-style lines for files and cron, progress for people.

Lines look like `2026-11-25 13:05:01 -- info: message` so existing log
watchers keep working. Progress (percent, MB/s, ETA) is redrawn in place only
when stderr is a terminal; otherwise a disk logs a plain line every 25 %.

Several VMs at once (BACKUP_PARALLEL): each worker thread names its VM with
`tagged(name)`, and then every line it logs reads `-- info: [name] message`,
so interleaved lines stay attributable; the terminal shows one line with every
running copy (`web 45% 80.1 MB/s | db 12% ...`) instead of copies overdrawing
each other. Lines are written whole, under one lock.

A log is a copy for the admin, never a reason to stop: a sink that cannot take a line (a full
/tmp, a closed pipe, a dropped SSH session's terminal) is dropped with one warning on the sinks
still working and in the mail's lines, and the run's final status and exit code say so
(`account`); what the run does to its VMs goes on as if nothing happened.
"""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import stat
import sys
import threading
import time
import unicodedata
from contextlib import contextmanager
from datetime import datetime
from typing import IO, Any, Callable, Dict, Iterator, List, Optional, Sequence, TextIO, Tuple

from . import lazyre
from .datastorepath import refuse_missing  # a folder in /vmfs/volumes is never made for a log
from .errors import UsageError

LEVELS = {"debug": 10, "info": 20, "dryrun": 20, "warning": 30, "error": 40}
LOG_LOST = 9  # the exit code of a run that went well but could not write all of its log
_LINE_BREAK = lazyre.compile("\r\n|\r|\n")  # a message of several lines: each its own, stamped
# what else a name from a .vmx, a folder or a restore file may hold that a terminal or a log reader takes
# for a line break or a command (an escape sequence), or that no UTF-8 log can hold (bytes that were no
# UTF-8), or a bidi control that shows the rest of the line reordered (`invoice<RLO>gpj.exe` reads as a
# .jpg): written as its Python escape, so each log line is one line of ours and shows what is there
_HIDDEN_CHARS = "\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2028\u2029\u2066-\u2069\ud800-\udfff"
_HIDDEN = lazyre.compile("[%s]" % _HIDDEN_CHARS)
# in one field of a line (a table's cell, a status line's name) a line feed forges a line and a tab
# moves every later column to the terminal's tab stop: escaped too; a log message keeps its own
_HIDDEN_IN_FIELD = lazyre.compile("[\t\n%s]" % _HIDDEN_CHARS)


def with_warning(status: str, code: int, warning: str) -> Tuple[str, int]:
    """A run's final status and code with something that went wrong around its work, the same way for every
    cause of exit 9 (a log sink lost, the JSON report not written, an NFS share UNMOUNT_NFS=1 could not
    unmount): an otherwise OK run exits LOG_LOST and its status starts with the warning, so the mail's
    subject, the JSON report and EMAIL_ALERT never read "All VMs backed up OK!" first on a run that exited 9;
    a failed run keeps its code, which says more, and says the warning after its own status."""
    if code == 0:
        return "WARNING: %s; %s" % (warning, status), LOG_LOST
    return "%s; WARNING: %s" % (status, warning), code


def shown(text: str, field: bool = False) -> str:
    """Text from a host, a folder or a user as one may print it: every command's output goes through
    this too (`say`), so what a terminal or a monitor reads from hotvcb is only ever what hotvcb meant.
    `field`: the text is one field of a line, which it may not break or shift (tab, line feed)."""
    hidden = _HIDDEN_IN_FIELD if field else _HIDDEN
    return hidden.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def width(text: str) -> int:
    """Columns a terminal gives text: East Asian wide/fullwidth characters take two, combining marks
    none, so a table of names from anywhere stays aligned where len() would shift it."""
    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1
               for c in text)


def columns(rows: Sequence[Sequence[str]]) -> List[str]:
    """A table's lines as printed: each cell escaped as one field, then padded to its column's widest
    display width (the last column is not padded), so what is measured is what the terminal shows."""
    cells = [[shown(c, field=True) for c in row] for row in rows]
    widths = [max(width(row[i]) for row in cells) for i in range(len(cells[0]) - 1)]
    return ["  ".join([c + " " * (w - width(c)) for c, w in zip(row, widths)] + row[-1:]) for row in cells]


def put(out: IO[Any], data: Any) -> Optional[OSError]:
    """Write and flush; the error when `out` cannot take it (a full disk, a closed pipe, a hung-up
    terminal), for the caller to decide what that costs. A standard stream that failed keeps what it
    could not write in its buffer, and the interpreter's own flush at exit would fail on it again,
    say `Exception ignored` and exit 120 instead of with the run's code: it is pointed at /dev/null."""
    try:
        out.write(data)
        out.flush()
    except UnicodeEncodeError:  # a stream in an ASCII or Latin-1 locale, a VM named in Japanese: escaped, as
        # `shown` escapes what no log can hold (TextIOWrapper encodes a whole text before it writes any of it)
        encoding = getattr(out, "encoding", None) or "ascii"
        return put(out, data.encode(encoding, "backslashreplace").decode(encoding))
    except OSError as err:
        try:
            if out.fileno() in (1, 2):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, out.fileno())
                os.close(devnull)
        except (OSError, ValueError):  # no file descriptor (a test's StringIO), or closed already
            pass
        return err
    return None


def say(text: str, stream: Optional[TextIO] = None) -> None:
    """print() for a command's report: its lines as the log writes them (`shown`); stdout unless told.
    A reader that is gone (`hotvcb list | head`, a dropped SSH session) ends the report, not the command."""
    put(stream if stream is not None else sys.stdout, shown(text) + "\n")


def say_json(data: object, indent: Optional[int] = None) -> None:
    """A command's --json report on stdout: the same value, with what `shown` escapes written as JSON's
    own \\u escapes (json leaves C1 controls and U+2028 raw), so a terminal reading it is never commanded."""
    text = json.dumps(data, indent=indent, ensure_ascii=False)
    say(_HIDDEN.sub(lambda m: "\\u%04x" % ord(m.group()), text))


def open_log(path: str) -> io.TextIOWrapper:
    """`-l FILE` (and `schedule install --log FILE`) opened for appending, its folder made: a path that
    cannot take a log is refused now (UsageError), before the run starts or the job is installed.

    Only a regular file, or a character device such as /dev/null or a terminal, is taken. A folder cannot
    be appended to; a named pipe no one reads blocked open() for ever (no line, no backup, no exit, the
    next night's run queued behind it), and one someone reads takes the run's lines only while its reader
    lives, so both are refused, as --json-report refuses a pipe; a block device or socket is no log. The
    open does not wait (O_NONBLOCK: a pipe without reader fails at once), nor makes a terminal the run's
    own (O_NOCTTY), and what was opened is judged by the descriptor itself, so a path swapped meanwhile
    is no way around the check."""
    refuse_missing(path, "cannot write the log file %s" % path)
    try:
        folder = os.path.dirname(path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | os.O_NOCTTY, 0o666)
    except OSError as err:
        if err.errno == errno.ENXIO:  # a named pipe no one reads, a socket
            raise UsageError(_NO_LOG % path) from err
        raise UsageError("cannot write the log file %s: %s" % (path, err.strerror or err)) from err
    mode = os.fstat(fd).st_mode
    if not (stat.S_ISREG(mode) or stat.S_ISCHR(mode)):
        os.close(fd)
        raise UsageError(_NO_LOG % path)
    os.set_blocking(fd, True)  # a full disk or a slow terminal is waited for, as before
    try:
        return open(fd, "a", encoding="utf-8")
    except OSError as err:  # a file that cannot be positioned at its end (procfs, sysfs): no log can go there
        os.close(fd)
        raise UsageError("cannot write the log file %s: it cannot be appended to (%s)" % (path, err.strerror or err)) \
            from err


_NO_LOG = "cannot write the log file %s: not a regular file (a named pipe, a socket or a block device); name a file"


class RunLog:
    def __init__(self, level: str = "info", path: Optional[str] = None, stream: Optional[TextIO] = None):
        self.threshold = LEVELS["debug"] if level == "debug" else LEVELS["info"]
        self.stream = stream if stream is not None else sys.stdout  # type: Optional[TextIO]
        self.file = None  # type: Optional[io.TextIOBase]
        self.debug_file = None  # type: Optional[io.TextIOBase]  # every line, whatever the level
        self.lines = []  # type: List[str]  # kept for the e-mail report
        self.lost = []  # type: List[str]  # the sinks dropped, each with why: the final status names them
        self._accounted = 0  # of them, those a final status has named already (`account`)
        self._sinks = {"stream": "standard output"}  # attribute -> what a warning calls it
        self._unsaid = []  # type: List[str]  # dropped sinks' warnings not said yet (_say_lost)
        # HOTVCB_PROGRESS=tty: an on-host run whose SSH client shows its progress on a terminal
        self.tty = (hasattr(sys.stderr, "isatty") and sys.stderr.isatty()) or os.environ.get("HOTVCB_PROGRESS") == "tty"
        if path:
            self.file = open_log(path)
            self._sinks["file"] = "the log file %s" % path
        self._lock = threading.RLock()  # worker threads log too: one line at a time
        self._local = threading.local()  # .tag: the VM a worker thread is backing up
        self._copies = {}  # type: Dict[int, str]  # worker thread -> its copy's progress text (terminal)

    @contextmanager
    def tagged(self, name: str) -> Iterator[None]:
        """Lines this thread logs inside carry `[name]` (several VMs at once)."""
        self._local.tag = name
        try:
            yield
        finally:
            self._local.tag = None
            with self._lock:
                self._copies.pop(threading.get_ident(), None)

    @property
    def tag(self) -> Optional[str]:
        return getattr(self._local, "tag", None)

    def keep_debug(self, path: str) -> None:
        """Also write every line, debug included, to path (the run's work directory)."""
        self.debug_file = open(path, "a", encoding="utf-8")
        self._sinks["debug_file"] = "the debug log %s" % path

    def _emit(self, level: str, message: str) -> None:
        if LEVELS[level] < self.threshold and self.debug_file is None:
            return
        with self._lock:
            self._write(level, message)
            self._say_lost()

    def _write(self, level: str, message: str) -> None:
        stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        tag = "[%s] " % self.tag if self.tag is not None else ""
        parts = _LINE_BREAK.split(str(message))
        if len(parts) > 1 and parts[-1] == "":
            parts.pop()  # a message ending in a line break (a command's output): no empty line after it
        for part in parts:
            line = "%s -- %s: %s%s\n" % (stamp, level, tag, shown(part))
            self._put("debug_file", line)
            if LEVELS[level] < self.threshold:
                continue
            self.lines.append(line[:-1])
            self._clear_progress()
            self._put("stream", line)
            self._put("file", line)

    def _put(self, sink: str, data: Any, out: Optional[IO[Any]] = None) -> None:
        """`data` to the sink named (`out`: through another object of it, such as its bytes buffer), or,
        when that fails, the sink dropped: closed if ours, and its warning due."""
        target = getattr(self, sink)
        if target is None:
            return
        err = put(out if out is not None else target, data)
        if err is None:
            return
        setattr(self, sink, None)
        if sink != "stream":
            try:
                target.close()  # flushes what did not fit again, fails again: closed all the same
            except OSError:
                pass
        self._drop("%s (%s)" % (self._sinks[sink], err.strerror or err))
        if sink == "stream":  # cron mails what a job says on stderr: heard even where stdout was the only sink
            put(sys.stderr, "hotvcb: warning: %s\n" % self._unsaid[-1])

    def _drop(self, why: str) -> None:
        self.lost.append(why)
        self._unsaid.append("cannot write the log to %s: the run goes on without it" % why)

    def lose(self, what: str, err: OSError) -> None:
        """A sink that could not even be opened (WORKDIR_DEBUG's debug log in a work directory that
        cannot be made): warned about now, and named by the final status as one that failed mid-run is."""
        with self._lock:
            self._drop("%s (%s)" % (what, err.strerror or err))
            self._say_lost()

    def _say_lost(self) -> None:
        """Each dropped sink's warning, on the sinks left, once the line that dropped it is out
        everywhere else (saying it may drop another)."""
        while self._unsaid:
            self._write("warning", self._unsaid.pop(0))

    def relay(self, raw: bytes, text: str) -> None:
        """Another hotvcb's output as it comes (SSH mode: the run on the host): its bytes to our
        standard output as they are, its text to the log file."""
        with self._lock:
            self._put("stream", raw, getattr(self.stream, "buffer", None))
            self._put("file", text)
            self._say_lost()

    def account(self, status: str, code: int) -> Tuple[str, int]:
        """A run's final status and exit code with the sinks lost since the last call: a run that went
        well but could not write all of its log exits LOG_LOST, not 0 (the log the admin reads is
        cut, and a full disk is theirs to fix); a failed run keeps its own code, which says more.
        Either way the status names the sinks (with_warning). Called again as the run ends, it adds only the new."""
        lost, self._accounted = self.lost[self._accounted:], len(self.lost)
        if not lost:
            return status, code
        return with_warning(status, code, "the log could not be written to %s" % ", ".join(lost))

    def debug(self, message: str) -> None:
        self._emit("debug", message)

    def info(self, message: str) -> None:
        self._emit("info", message)

    def warning(self, message: str) -> None:
        self._emit("warning", message)

    def error(self, message: str) -> None:
        self._emit("error", message)

    def dryrun(self, message: str) -> None:
        self._emit("dryrun", message)

    def progress(self, label: str, total_bytes: int,
                 run_eta: Optional[Callable[[float], Optional[float]]] = None) -> "Progress":
        """`run_eta(seconds left on this disk)` gives the whole run's, when the caller can tell."""
        return Progress(self, label, total_bytes, run_eta)

    def _clear_progress(self) -> None:
        if self.tty:
            self._draw("\r\033[K")

    def _draw(self, text: str) -> None:
        """The terminal's progress line; a terminal that is gone shows none (it is no log)."""
        if put(sys.stderr, text) is not None:
            self.tty = False

    def _show_progress(self, text: str, short: str, run_eta: str) -> None:
        """Redraw the terminal's progress line: this copy's, or with tagged workers every copy's
        (`short`) and the run's ETA as the latest copy to report saw it."""
        with self._lock:
            if self.tag is None:
                shown = text
            else:
                self._copies[threading.get_ident()] = short
                width = shutil.get_terminal_size((120, 24)).columns - 1
                shown = (" | ".join(self._copies[k] for k in sorted(self._copies)) + run_eta)[:width]
            self._draw("\r\033[K" + shown)

    def file_only(self) -> None:
        """Lines from here on go to the log files only: what stops the run as a usage error is said on stderr
        by the caller, and once on the terminal is enough; the -l file, which the admin's job reads with its
        output sent to /dev/null, is told too."""
        self.stream = None

    def close(self) -> None:
        for f in (self.file, self.debug_file):
            if f is not None:
                f.close()
        self.file = self.debug_file = None


def stopped(path: str, message: str) -> None:
    """A run stopped before its log was opened (its config: a bad value, an unreadable -g) said in the -l
    file, with the final status line a log watcher looks for; nothing if that file cannot be written (the
    error still goes to stderr)."""
    try:
        log = RunLog(path=path, stream=io.StringIO())
    except UsageError:
        return
    log.error(message)
    log.info("###### Final status: ERROR: %s ######" % message)
    log.close()


class Progress:
    """Percent callbacks from a copy, shown with rate and ETA."""

    def __init__(self, log: RunLog, label: str, total_bytes: int,
                 run_eta: Optional[Callable[[float], Optional[float]]] = None):
        self.log, self.label, self.total, self.run_eta = log, label, max(total_bytes, 1), run_eta
        self.start = time.monotonic()
        self.last_logged = -25

    def __call__(self, percent: int) -> None:
        elapsed = max(time.monotonic() - self.start, 1e-6)
        done = self.total * percent / 100.0
        rate = done / elapsed
        eta = (self.total - done) / rate if rate > 0 else 0
        text = "%s: %3d%%  %.1f MB/s  ETA %s" % (self.label, percent, rate / 1e6, _clock(eta))
        overall = self.run_eta(eta) if self.run_eta is not None else None
        run_eta = "" if overall is None else "  run ETA %s" % _clock(overall)
        if self.log.tty:
            self.log._show_progress(text + run_eta, "%s %d%% %.1f MB/s" % (self.log.tag, percent, rate / 1e6), run_eta)
        elif percent >= self.last_logged + 25:
            self.last_logged = percent - percent % 25
            self.log.debug(text + run_eta)


def _clock(seconds: float) -> str:
    s = int(seconds)
    return "%d:%02d:%02d" % (s // 3600, s % 3600 // 60, s % 60)
