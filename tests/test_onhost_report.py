"""SSH mode's report from the run on the host when the host's /tmp (a small ramdisk) fills up during the
run: the report comes through a pipe, never a file there, and the host's log lines its output files could
not keep are said from the report. Host-free: a RunLog on an in-memory stream, the host's end run here."""

import argparse
import io
import json
import os
import signal

import pytest

from hotvcb import onhost_boot
from hotvcb.commands import onhost
from hotvcb.runlog import RunLog

HOST_LOG = ["2026-12-05 02:00:0%d -- info: line %d" % (i, i) for i in range(5)] + [
    "2026-12-05 02:00:09 -- info: ###### Final status: All VMs backed up OK! ######"]


class _Stream(io.TextIOWrapper):
    """Standard output as the relay writes it: bytes to its buffer, text to it."""

    def __init__(self):
        super().__init__(io.BytesIO(), encoding="utf-8", write_through=True)

    def getvalue(self) -> str:
        return self.buffer.getvalue().decode("utf-8")


def _tee():
    stream = _Stream()
    log = RunLog(stream=stream)
    return onhost._Tee(log), log, stream


def test_the_hosts_lines_its_output_lost_are_said_from_its_report_once():
    tee, log, stream = _tee()
    tee.stdout(("\n".join(HOST_LOG[:3]) + "\n" + HOST_LOG[3][:10]).encode())  # cut mid-line: its /tmp filled
    tee.say_rest("\n".join(HOST_LOG))
    out = stream.getvalue().splitlines()
    assert out[:3] == HOST_LOG[:3] and out[3] == HOST_LOG[3][:10], out
    assert "the host's output stopped after 3 of its 6 log lines" in out[4], out
    assert out[5:] == HOST_LOG[3:], out  # the final status is the last line, as the exit code reads
    assert len(log.lines) == 1, log.lines  # the warning: the mail's copy of the log is the report's own


def test_nothing_is_said_twice_when_all_the_hosts_lines_came():
    tee, _log, stream = _tee()
    for line in HOST_LOG:
        tee.stdout((line + "\n").encode())
    tee.say_rest("\n".join(HOST_LOG))
    assert stream.getvalue().splitlines() == HOST_LOG


def test_the_run_on_the_host_hands_its_report_through_a_pipe_that_needs_no_room(tmp_path, capfdbinary):
    """The relay passes the run OUTBOX as a pipe's descriptor and reads it as the run goes: a report larger
    than a pipe holds (a long night's log) does not hold the run's end, and nothing of it is a file in the
    run's folder, where a full /tmp would lose it."""
    report = json.dumps({"log_text": "x" * 300000}).encode()
    program = tmp_path / "run.py"
    program.write_text("import os, sys\nfd = int(sys.argv[2])\nos.write(fd, %r[:1])\n"
                       "with open(fd, 'wb') as f:\n    f.write(%r[1:])\nprint('done')\n" % (report, report))
    run = tmp_path / "run-1"
    run.mkdir()
    keep, control = os.pipe()  # the client's end stays open: no hang-up
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT, signal.SIGHUP)}
    try:
        code, outbox = onhost_boot.relay(str(program), ["--outbox", onhost_boot.OUTBOX], {}, str(run),
                                         io.FileIO(keep, "rb", closefd=False))
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        os.close(keep)
        os.close(control)
    assert (code, outbox) == (0, report)
    assert b"done" in capfdbinary.readouterr().out
    assert sorted(p.name for p in run.iterdir()) == ["pid", "stderr", "stdout"]


def test_the_outbox_option_is_no_file_name():
    """`--outbox` is hidden but argparse takes it: a hand-given path is refused as a usage error, not written."""
    for value in ("outbox.json", "1", "2", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            onhost.outbox_fd(value)
    assert onhost.outbox_fd("5") == 5


def test_a_report_lost_after_a_run_that_ended_all_ok_there_is_exit_9_not_1(monkeypatch):
    """Exit 1 says no VM was started (README); a run on the host that ended 0 and whose report did not come
    (however) backed its VMs up: a copy lost, exit 9, its status starting with the warning."""
    import types

    from hotvcb import hostrun

    monkeypatch.setattr(onhost, "_run", lambda *a, **k: hostrun.Finished(0, b"", False))
    target = types.SimpleNamespace(name=lambda: "esxi01", ssh=types.SimpleNamespace(destination="root@esxi01"))
    args = argparse.Namespace(host_target=target, job_name="nightly", level="info")
    report = onhost.backup(args, RunLog(stream=_Stream()))
    assert report.code == 9, report
    assert report.status.startswith("WARNING: the run on the host ended without its report (exit 0)"), report.status
