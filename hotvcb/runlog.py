"""The run's log: ghettoVCB-style lines for files and cron, progress for people.

Lines look like `2026-11-25 13:05:01 -- info: message` so existing log
watchers keep working. Progress (percent, MB/s, ETA) is redrawn in place only
when stderr is a terminal; otherwise a disk logs a plain line every 25 %.

Several VMs at once (BACKUP_PARALLEL): each worker thread names its VM with
`tagged(name)`, and then every line it logs reads `-- info: [name] message`,
so interleaved lines stay attributable; the terminal shows one line with every
running copy (`web 45% 80.1 MB/s | db 12% ...`) instead of copies overdrawing
each other. Lines are written whole, under one lock.
"""

import io
import json
import os
import shutil
import sys
import threading
import time
import unicodedata
from contextlib import contextmanager
from datetime import datetime
from typing import Callable, Dict, Iterator, List, Optional, Sequence, TextIO

from . import lazyre

LEVELS = {"debug": 10, "info": 20, "dryrun": 20, "warning": 30, "error": 40}
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


def say(text: str, stream: Optional[TextIO] = None, flush: bool = False) -> None:
    """print() for a command's report: its lines as the log writes them (`shown`); stdout unless told."""
    print(shown(text), file=stream if stream is not None else sys.stdout, flush=flush)


def say_json(data: object, indent: Optional[int] = None) -> None:
    """A command's --json report on stdout: the same value, with what `shown` escapes written as JSON's
    own \\u escapes (json leaves C1 controls and U+2028 raw), so a terminal reading it is never commanded."""
    text = json.dumps(data, indent=indent, ensure_ascii=False)
    print(_HIDDEN.sub(lambda m: "\\u%04x" % ord(m.group()), text))


class RunLog:
    def __init__(self, level: str = "info", path: Optional[str] = None, stream: Optional[TextIO] = None):
        self.threshold = LEVELS["debug"] if level == "debug" else LEVELS["info"]
        self.stream = stream if stream is not None else sys.stdout
        self.file = None  # type: Optional[io.TextIOBase]
        self.debug_file = None  # type: Optional[io.TextIOBase]  # every line, whatever the level
        self.lines = []  # type: List[str]  # kept for the e-mail report
        # HOTVCB_PROGRESS=tty: an on-host run whose SSH client shows its progress on a terminal
        self.tty = (hasattr(sys.stderr, "isatty") and sys.stderr.isatty()) or os.environ.get("HOTVCB_PROGRESS") == "tty"
        if path:
            folder = os.path.dirname(path)
            if folder:
                os.makedirs(folder, exist_ok=True)
            self.file = open(path, "a", encoding="utf-8")
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

    def _emit(self, level: str, message: str) -> None:
        if LEVELS[level] < self.threshold and self.debug_file is None:
            return
        with self._lock:
            self._write(level, message)

    def _write(self, level: str, message: str) -> None:
        stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        tag = "[%s] " % self.tag if self.tag is not None else ""
        parts = _LINE_BREAK.split(str(message))
        if len(parts) > 1 and parts[-1] == "":
            parts.pop()  # a message ending in a line break (a command's output): no empty line after it
        for part in parts:
            line = "%s -- %s: %s%s" % (stamp, level, tag, shown(part))
            if self.debug_file is not None:
                self.debug_file.write(line + "\n")
                self.debug_file.flush()
            if LEVELS[level] < self.threshold:
                continue
            self.lines.append(line)
            self._clear_progress()
            self.stream.write(line + "\n")
            self.stream.flush()
            if self.file is not None:
                self.file.write(line + "\n")
                self.file.flush()

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
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()

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
            sys.stderr.write("\r\033[K" + shown)
            sys.stderr.flush()

    def close(self) -> None:
        for f in (self.file, self.debug_file):
            if f is not None:
                f.close()
        self.file = self.debug_file = None


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
