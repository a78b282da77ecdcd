"""What a person sees: progress with rate and ETA on a terminal, plain lines in logs."""

import io
import os
import re
import subprocess
import sys

import pytest

from hotvcb import runlog
from hotvcb.errors import UsageError


def test_terminal_gets_a_redrawn_progress_line(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr(runlog.sys, "stderr", err)
    log = runlog.RunLog(stream=io.StringIO())
    log.tty = True
    progress = log.progress("Web Server (prod) disk.vmdk", 100 << 20)
    for pct in (10, 50, 100):
        progress(pct)
    shown = err.getvalue().split("\r\033[K")
    assert re.fullmatch(r"Web Server \(prod\) disk\.vmdk:  50%  [\d.]+ MB/s  ETA \d+:\d\d:\d\d", shown[2])
    assert "100%" in shown[3]
    log.info("done")  # a log line first clears the progress line
    assert err.getvalue().endswith("\r\033[K")


def test_log_files_and_cron_get_plain_ghettovcb_lines(tmp_path):
    out = io.StringIO()
    log = runlog.RunLog(level="debug", path=str(tmp_path / "logs" / "run.log"), stream=out)
    log.tty = False
    progress = log.progress("vm disk", 1 << 20)
    for pct in range(0, 101, 5):
        progress(pct)
    log.info("Final status: All VMs backed up OK!")
    log.close()
    lines = (tmp_path / "logs" / "run.log").read_text().splitlines()
    assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d -- (info|debug): ", l) for l in lines)
    assert len([l for l in lines if "vm disk:" in l]) == 5  # every 25 %, not every redraw
    assert "\r" not in out.getvalue() and out.getvalue().splitlines() == lines


def test_a_log_path_that_is_no_file_is_refused_at_once_and_dev_null_is_taken(tmp_path):
    """-l naming a folder, or a named pipe (read by no one: open() blocked for ever; or read: a log only while
    its reader lives), is refused with one line before the run; a character device such as /dev/null is a
    log one may ask for."""
    fifo = tmp_path / "hotvcb.pipe"
    os.mkfifo(str(fifo))
    for bad in (tmp_path, fifo):
        with pytest.raises(UsageError, match="cannot write the log file %s" % re.escape(str(bad))):
            runlog.RunLog(path=str(bad), stream=io.StringIO())
    reader = os.open(str(fifo), os.O_RDONLY | os.O_NONBLOCK)
    try:
        with pytest.raises(UsageError, match="not a regular file"):
            runlog.RunLog(path=str(fifo), stream=io.StringIO())
    finally:
        os.close(reader)
    log = runlog.RunLog(path=os.devnull, stream=io.StringIO())
    log.info("kept nowhere")
    log.close()


def test_info_level_hides_debug():
    out = io.StringIO()
    log = runlog.RunLog(level="info", stream=out)
    log.debug("hidden")
    log.warning("shown")
    assert out.getvalue().endswith("-- warning: shown\n") and "hidden" not in out.getvalue()


def test_the_progress_line_says_which_vm_and_disk_and_the_runs_eta(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr(runlog.sys, "stderr", err)
    log = runlog.RunLog(stream=io.StringIO())
    log.tty = True
    progress = log.progress("VM 2/5 web, disk 1/2 web.vmdk", 100 << 20, lambda eta: eta + 600)
    progress(50)
    shown = err.getvalue().split("\r\033[K")[-1]
    assert re.fullmatch(r"VM 2/5 web, disk 1/2 web\.vmdk:  50%  [\d.]+ MB/s  ETA 0:00:\d\d  run ETA 0:1\d:\d\d", shown)


def test_several_vms_at_once_tag_their_lines_and_share_one_progress_line(monkeypatch):
    """BACKUP_PARALLEL: each worker's lines name its VM; the terminal shows every copy on one line."""
    import threading

    err, out = io.StringIO(), io.StringIO()
    monkeypatch.setattr(runlog.sys, "stderr", err)
    log = runlog.RunLog(stream=out)
    log.tty = True
    log.info("Backing up 2 VMs")
    both = threading.Barrier(2, timeout=10)

    def worker(vm, pct):
        with log.tagged(vm):
            log.info("Initiate backup for %s" % vm)
            log.progress("VM x %s" % vm, 100 << 20)(pct)
            both.wait()  # both copies are on the line before either ends

    threads = [threading.Thread(target=worker, args=a) for a in (("web", 40), ("db 1", 70))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = out.getvalue().splitlines()
    assert lines[0].endswith("-- info: Backing up 2 VMs")
    assert sorted(l.split(" -- info: ")[1] for l in lines[1:]) == ["[db 1] Initiate backup for db 1",
                                                                  "[web] Initiate backup for web"]
    last = err.getvalue().split("\r\033[K")[-1]
    assert re.fullmatch(r"(web 40% [\d.]+ MB/s \| db 1 70% [\d.]+ MB/s|db 1 70% [\d.]+ MB/s \| web 40% [\d.]+ MB/s)",
                        last), last
    log.info("after")  # outside a worker: untagged again
    assert out.getvalue().splitlines()[-1].endswith("-- info: after")


def test_a_table_measures_what_a_terminal_shows():
    """Combining marks take no column, wide characters two, a tab or line feed in a cell is escaped and
    measured as escaped; a bidi control is escaped wherever text is printed (a log line too)."""
    import unicodedata
    lines = runlog.columns([("VM", "RESULT"), ("e\u0301t\u00e9", "OK"), ("\u65e5\u672c", "OK"),
                            ("a\tb\nc", "OK"), ("x\u202ey", "OK")])
    assert len(lines) == 5 and not [l for l in lines if "\t" in l or "\u202e" in l]
    cols = set()
    for line in lines:
        head = line[:line.rindex("  ") + 2]
        cols.add(sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1
                     for c in head))
    assert cols == {len("x\\u202ey  ")}, lines  # the widest cell as printed
    assert runlog.shown("a\u2066b\u200fc\td") == "a\\u2066b\\u200fc\td"


def test_a_log_file_that_fills_is_dropped_and_the_run_says_so():
    """A full -l file system (/dev/full: every write ENOSPC) costs the log file, never the run: the
    lines go on to stdout with one warning naming it, the mail's lines hold that warning too, and an
    OK run's final status and exit code say the log is cut; a failed run keeps its own code."""
    out = io.StringIO()
    log = runlog.RunLog(path="/dev/full", stream=out)
    log.info("Creating Snapshot")
    log.info("Removing snapshot")
    shown = out.getvalue().splitlines()
    assert [l.split(" -- ")[1] for l in shown] == [
        "info: Creating Snapshot",
        "warning: cannot write the log to the log file /dev/full (No space left on device): the run goes on "
        "without it",
        "info: Removing snapshot"] and log.lines == shown
    status, code = log.account("All VMs backed up OK!", 0)
    assert code == runlog.LOG_LOST and status == "WARNING: the log could not be written " \
        "to the log file /dev/full (No space left on device); All VMs backed up OK!"
    assert log.account(status, code) == (status, code)  # counted once, however often asked
    log.close()
    failed = runlog.RunLog(path="/dev/full", stream=io.StringIO())
    failed.error("web: copy failed")
    assert failed.account("ERROR: All VMs failed!", 6)[1] == 6


class _Gone(io.StringIO):
    """A reader that went away: a dropped SSH session's stdout."""

    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")


def test_lost_stdout_is_said_on_stderr_and_in_the_log_file(tmp_path, monkeypatch):
    """Stdout gone (a dropped session, or cron's `> /tmp/x.log` on a full /tmp): the -l file and
    stderr (which cron mails) hear of it, and the host's lines an SSH-mode client relays go on there;
    a command's report (`say`) to it ends quietly."""
    err = io.StringIO()
    monkeypatch.setattr(runlog.sys, "stderr", err)
    log = runlog.RunLog(path=str(tmp_path / "run.log"), stream=_Gone())
    log.info("Removing snapshot")
    log.relay(b"host line\n", "host line\n")
    log.close()
    lines = (tmp_path / "run.log").read_text().splitlines()
    assert lines[0].endswith("-- info: Removing snapshot") and lines[2:] == ["host line"], lines
    said = "cannot write the log to standard output (Broken pipe): the run goes on without it"
    assert lines[1].endswith("-- warning: " + said) and err.getvalue() == "hotvcb: warning: %s\n" % said
    runlog.say("VM  BACKUPS", stream=_Gone())


def test_a_closed_stdout_leaves_the_exit_code_to_the_run():
    """At exit the interpreter flushes stdout once more; on a pipe no one reads that fails again,
    says `Exception ignored ... BrokenPipeError` and exits 120, whatever the run returned. Buffered as
    under cron (this environment may set PYTHONUNBUFFERED)."""
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line
    code = ("import sys; from hotvcb import runlog; log = runlog.RunLog(); log.info('x'); "
            "sys.exit(log.account('OK', 0)[1])")
    try:
        r = subprocess.run([sys.executable, "-c", code], stdout=write, stderr=subprocess.PIPE, text=True,
                           cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), timeout=60,
                           env={k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"})
    finally:
        os.close(write)
    assert r.returncode == runlog.LOG_LOST and r.stderr.startswith("hotvcb: warning: ") \
        and "Exception" not in r.stderr, r.stderr


def test_a_cleanup_whose_log_is_lost_says_so_in_its_exit_code(tmp_path):
    """`hotvcb cleanup` under cron with its stdout gone: the leftovers are handled, but the admin's record
    of what was removed is not there; exit 9 as for a backup (it exited 0)."""
    read, write = os.pipe()
    os.close(read)
    try:
        r = subprocess.run([sys.executable, "-m", "hotvcb", "cleanup", "--kvm", str(tmp_path)], stdout=write,
                           stderr=subprocess.PIPE, text=True, timeout=60,
                           cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    finally:
        os.close(write)
    assert r.returncode == runlog.LOG_LOST and "Traceback" not in r.stderr, (r.returncode, r.stderr)
