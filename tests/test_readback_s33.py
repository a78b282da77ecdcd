"""Review of the tethering and pyz copy changes: a stopped copy is gone when run() returns, a killed copy
is said killed, a half-written pyz is not held."""

import io
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from hotvcb.errors import HostError, TimeoutExpired
from hotvcb.localshell import LocalShell

ROOT = Path(__file__).resolve().parents[1]

# a command that takes 3 s to end after a TERM, its pid in a file
SLOW_TO_DIE = ("echo $$ > %s; trap 'sleep 3; exit 1' TERM; "
               "while :; do sleep 0.1; done")


@pytest.mark.parametrize("tethered", [False, True])
def test_a_stopped_command_is_gone_when_run_returns(tmp_path, tethered):
    """qemu-img still holding the image lock when copy_to removes its output and backup_end commits the
    overlay: a stop waits for the command itself, not for the wrapper around it."""
    pidfile = tmp_path / "pid"
    start = time.monotonic()
    with pytest.raises(TimeoutExpired):
        LocalShell().run(["sh", "-c", SLOW_TO_DIE % pidfile], timeout=1, tethered=tethered)
    pid = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert time.monotonic() - start >= 3.5


def test_a_tethered_command_killed_by_a_signal_says_so():
    """The wrapper exits 128+N for a command killed by signal N: read as the signal, not a status 137."""
    from hotvcb import sshscripts
    from hotvcb.hosts.esxi_disks import _clone_error

    done = LocalShell().run(["sh", "-c", "kill -KILL $$"], tethered=True)
    assert sshscripts.killed_by(done.returncode) == "SIGKILL"
    assert _clone_error("Clone: 12% done.", done.returncode) == "vmkfstools was killed by SIGKILL at 12% without saying why"
    assert _clone_error("Clone: 12% done.", 1) == "vmkfstools exited with status 1 at 12% without saying why"


def test_a_tool_there_but_not_executable_is_said_so(tmp_path):
    tool = tmp_path / "vmkfstools"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o644)
    with pytest.raises(HostError, match="^cannot run %s: not executable$" % tool):
        LocalShell().run([str(tool), "-i", "a", "b"], tethered=True)


def _corrupt_member(data: bytes, name: str) -> bytes:
    """The zip with one member's bytes overwritten, its table of contents intact (scp caught mid-write)."""
    info = zipfile.ZipFile(io.BytesIO(data)).getinfo(name)
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    mid = start + info.compress_size // 2
    return data[:mid] + bytes(b ^ 0xFF for b in data[mid:mid + 16]) + data[mid + 16:]


def test_a_pyz_whose_member_is_damaged_is_left_to_the_file(tmp_path):
    """hold() of a pyz caught mid-scp: its table reads, a module's bytes do not; it is not held."""
    pyz = tmp_path / "hotvcb.pyz"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "build-pyz"), "-o", str(pyz)], check=True,
                   stdout=subprocess.DEVNULL)
    pyz.write_bytes(_corrupt_member(pyz.read_bytes(), "hotvcb/notify.py"))
    script = ("import sys; sys.path.insert(0, sys.argv[1]); from hotvcb import pyzcopy; pyzcopy.hold()\n"
              "print('held', pyzcopy.held() is not None)\n")
    done = subprocess.run([sys.executable, "-I", "-S", "-c", script, str(pyz)], capture_output=True, text=True,
                          timeout=60)
    assert done.stdout.split() == ["held", "False"], done


def test_a_damaged_member_read_from_the_copy_is_an_import_error():
    from hotvcb import pyzcopy

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("hotvcb/late.py", "".join("x%d = %d\n" % (i, i * 7919 % 1000) for i in range(400)))
    data = _corrupt_member(buf.getvalue(), "hotvcb/late.py")
    loader = pyzcopy._Loader("/x/hotvcb.pyz", zipfile.ZipFile(io.BytesIO(data)))
    with pytest.raises(OSError):
        loader.get_data("/x/hotvcb.pyz/hotvcb/late.py")
    with pytest.raises(ImportError):
        loader.get_code("hotvcb.late")
