"""Run hotvcb itself on the ESXi host over one SSH channel (SSH mode, where the host has Python 3.8).

Driving a host file by file costs a round trip per host command and file operation (~40 per
VM). Where the host's python can run hotvcb (ESXi 7/8: /bin/python 3.8) the client instead
starts `onhost_boot.py` there with it, in one session: the host says whether it holds this
hotvcb build already (by SHA-256, in a private folder under /tmp), gets the pyz only if not,
gets the run's files (config, lists) and arguments, and runs hotvcb; its output comes back live
and the client's Ctrl-C / SIGTERM goes to it as a line on the same channel. One round trip per
run, whatever the number of VMs. The protocol is in onhost_boot.py.

A host whose python is missing or older than 3.8 answers at once, and `run` returns the reason
so the caller can fall back to the file-by-file path.
"""

import base64
import hashlib
import json
import os
import pkgutil
import selectors
import signal
import subprocess
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Union

from . import interrupt, pyzpack
from .errors import HostError, TimeoutExpired
from .onhost_boot import MARK, RUN_DIR
from .sshconnection import SshConnection
from .sshscripts import last_line as _last_line
# the host's folder for our builds and the runs' files, private (0700; /tmp is a ramdisk on ESXi);
# $HOTVCB_HOST_FOLDER here names another
FOLDER = "/tmp/hotvcb-onhost"
HANDSHAKE_TIMEOUT = 120  # seconds for the host's python to start and answer
AFTER_SIGNAL = 3 * 3600  # seconds the run on the host gets to clean up once told to stop
Output = Callable[[bytes], None]


@dataclass
class Request:
    """What the host runs: hotvcb's arguments and the files and folders they name (relative to RUN_DIR)."""

    argv: List[str]
    files: Dict[str, bytes] = field(default_factory=dict)
    env: Dict[str, str] = field(default_factory=dict)
    dirs: List[str] = field(default_factory=list)  # made on the host even when no file goes into them


@dataclass
class Finished:
    returncode: int
    outbox: bytes  # what the run wrote to its outbox (onhost_boot.OUTBOX; b"" if nothing)
    shipped: bool  # the pyz was sent (the host did not hold this build)
    lost: Optional[str] = None  # the connection broke during the run (the host's end stopped it)


def run(shell: SshConnection, request: Request, stdout: Output, stderr: Output) -> Union[Finished, str]:
    """Run `python <pyz> ARGV` on the host; its stdout and stderr go to the callbacks as they come.

    Returns Finished, or a string saying why the host cannot (no python, or too old). Raises
    HostError when the session fails and Interrupted when a signal arrives, both only before the
    run started on the host.
    """
    pyz = pyzpack.this_package()
    sha = hashlib.sha256(pyz).hexdigest()
    nonce = os.urandom(16).hex()  # not uuid4: importing uuid on 3.8 runs `uname -p` in a subprocess
    proc = shell.channel(shell.python_argv(_boot_source(), nonce, sha, os.environ.get("HOTVCB_HOST_FOLDER", FOLDER)))
    session = _Session(proc, nonce)
    try:
        answer = session.handshake()
        if answer is None:
            code = session.wait()
            if code == 127:
                return "it has no python"
            raise session.lost(shell, code) or HostError(
                "cannot start hotvcb on the host: %s" % (session.reason() or _silent_end(code)))
        kind, version = answer
        if kind == "old":
            session.close()
            return "its python is %s (hotvcb needs 3.8)" % version
        if kind == "need":
            session.send(pyz)
        session.send(json.dumps({
            "argv": request.argv, "env": request.env, "dirs": request.dirs,
            "files": {k: base64.b64encode(v).decode("ascii") for k, v in request.files.items()},
        }).encode("utf-8"))
        if not session.started():  # nothing ran there: the caller may go file by file
            code = session.wait()
            raise session.lost(shell, code) or HostError(
                session.reason() or "its end of the session ended (exit %d)" % code)
        code, outbox = session.relay(stdout, stderr)
        lost = None
        if (code == 255 or (code < 0 and not session.stopped)) and not session.ended:
            lost = str(session.lost(shell, code) or "the SSH session to the host ended (exit 255)")
        return Finished(code, outbox, kind == "need", lost)
    finally:
        session.close()


def _boot_source() -> str:
    data = pkgutil.get_data(__package__, "onhost_boot.py")
    if data is None:
        raise RuntimeError("onhost_boot.py is not readable from the package")
    return data.decode("utf-8")


class _Session:
    """The client's end of the channel: the handshake, the frames, then output and signals. What the host's login
    shell prints around its end's (a greeting, an EXIT trap's farewell) lies outside the marks (onhost_boot.py)."""

    def __init__(self, proc, nonce: str):
        self.proc = proc
        self.mark = ("%s %s " % (MARK, nonce)).encode("ascii")
        self.out_end = _UpTo(self.mark + b"end ")  # then the outbox's length, a newline and the outbox
        self.err_end = _UpTo(self.mark + b"end\n")
        self.selector = selectors.DefaultSelector()
        self.selector.register(proc.stdout, selectors.EVENT_READ, "out")
        self.selector.register(proc.stderr, selectors.EVENT_READ, "err")
        self.open = 2
        self.out = b""  # stdout read during the handshake and not yet taken
        self.err = b""  # the last of all stderr, for `lost`: ssh's words on a broken connection follow the end mark
        self.said = b""  # the last of what the host's end said on stderr, for messages
        self.stopped = False  # we killed the session's ssh (its exit code is then ours, not a failure)

    @property
    def ended(self) -> bool:
        """The host said `end`."""
        return self.out_end.after is not None

    def _read(self, timeout: float):
        """(stream, data) pairs readable within timeout; b"" at stdout's end. Of stderr, only what the host's end
        said (up to its end mark): the host's login shell may say goodbye there."""
        got = []
        for key, _ in self.selector.select(timeout):
            data = os.read(key.fd, 65536)
            if not data:
                self.selector.unregister(key.fileobj)
                self.open -= 1
            if key.data == "err":
                self.err = (self.err + data)[-4096:]
                data = self.err_end.feed(data)
                self.said = (self.said + data)[-4096:]
            got.append((key.data, data))
        return got

    def handshake(self):
        """("need"|"have"|"old", python version), or None if the session ended without one."""
        words = self._expect(("need", "have", "old"), 2)
        return None if words is None else (words[0], words[1])

    def started(self) -> bool:
        """The host said it starts the run (False: its end failed before, e.g. a full /tmp)."""
        return self._expect(("run",), 1) is not None

    def _expect(self, kinds, count: int):
        """The words of the host's next mark line (one of kinds, count words), or None if the
        session ended without one."""
        deadline = time.monotonic() + HANDSHAKE_TIMEOUT
        while self.open:
            if interrupt.pending():
                interrupt.raise_pending()  # nothing runs on the host yet; close() ends the session
            if time.monotonic() > deadline:
                raise TimeoutExpired("the start of hotvcb on the host", HANDSHAKE_TIMEOUT)
            for stream, data in self._read(0.2):
                if stream == "out":
                    self.out += data
            at = self.out.find(self.mark)
            if at >= 0 and b"\n" in self.out[at:]:
                line, self.out = self.out[at:].split(b"\n", 1)
                words = line[len(self.mark):].decode("ascii", "replace").split()
                if len(words) == count and words[0] in kinds:
                    return words
                raise HostError("unexpected answer from the host: %r" % line[:200])
        return None

    def send(self, data: bytes) -> None:
        try:
            self.proc.stdin.write(b"%d\n" % len(data) + data)
            self.proc.stdin.flush()
        except OSError as err:
            raise HostError("the host stopped reading: %s" % (self.reason() or err)) from err

    def relay(self, stdout: Output, stderr: Output):
        """Pass output on until the run ends; signals received here go to the run. (code, outbox)."""
        told, stop_by = 0, None  # type: int, Optional[float]
        early = self.out_end.feed(self.out)  # what came with the `run` line
        if early:
            stdout(early)
        while self.open:
            signals = interrupt.signals()
            for signum in signals[told:]:
                self._tell(signal.Signals(signum).name[3:])
                stop_by = stop_by or time.monotonic() + AFTER_SIGNAL
            told = len(signals)
            if stop_by is not None and time.monotonic() > stop_by:
                break  # bounded: close() drops the channel, the host's end TERMs the run once more
            for stream, data in self._read(0.2):
                passed = data if stream == "err" else self.out_end.feed(data)
                if passed:
                    (stderr if stream == "err" else stdout)(passed)
        return self.wait(), self._outbox()

    def _outbox(self) -> bytes:
        """The outbox: the bytes its length after the `end` mark counts (what follows is the host's shell's)."""
        size, newline, rest = (self.out_end.after or b"").partition(b"\n")
        return rest[:int(size)] if newline and size.isdigit() else b""

    def _tell(self, name: str) -> None:
        try:
            self.proc.stdin.write(name.encode("ascii") + b"\n")
            self.proc.stdin.flush()
        except OSError:
            pass  # the channel is gone; the host's end stops the run on its EOF

    def wait(self) -> int:
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.stopped = True
            return self.proc.wait()

    def lost(self, shell: SshConnection, code: int) -> Optional[HostError]:
        """`shell.lost` for this session's end; a client killed by us (`wait`) is not one the system killed."""
        return shell.lost(None if self.stopped else code, self.err_text())

    def err_text(self) -> str:
        return self.err.decode("utf-8", "replace")

    def reason(self) -> str:
        """The host's end's last words on stderr, never the farewell its login shell prints after them."""
        return _last_line(self.said.decode("utf-8", "replace"))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                f.close()
            except OSError:
                pass
        self.selector.close()


class _UpTo:
    """One stream of the host's end (stdout, stderr) cut at its end mark: the bytes before it are passed on as they
    come (but for a possible start of the mark, held until the next bytes show), those after it kept (`after`)."""

    def __init__(self, mark: bytes):
        self.mark = mark
        self.held = b""
        self.after = None  # type: Optional[bytes]

    def feed(self, data: bytes) -> bytes:
        """What of data (b"": the stream's end) is surely before the mark."""
        if self.after is not None:
            self.after += data
            return b""
        self.held += data
        at = self.held.find(self.mark)
        if at >= 0:
            passed, self.after, self.held = self.held[:at], self.held[at + len(self.mark):], b""
            return passed
        cut = len(self.held) - (_cut_mark(self.held, self.mark) if data else 0)
        passed, self.held = self.held[:cut], self.held[cut:]
        return passed


def _cut_mark(buf: bytes, mark: bytes) -> int:
    """How many bytes at the end of buf may be the start of mark (held back until more comes)."""
    for n in range(min(len(buf), len(mark) - 1), 0, -1):
        if mark.startswith(buf[-n:]):
            return n
    return 0


def _silent_end(code: int) -> str:
    """Why the host's python ended before its first word without saying why, from its exit code. With the
    connection alive (checked first), ssh's 255 is a remote process killed by a signal (sshd then reports
    no exit code); a shell in between gives 128 + the signal's number."""
    if code == 255:
        return "its python was killed by a signal (ssh reports exit 255; the SSH connection is fine)"
    if 128 < code <= 128 + 64:
        try:
            name = signal.Signals(code - 128).name
        except ValueError:
            name = "signal %d" % (code - 128)
        return "its python was killed by %s (exit %d)" % (name, code)
    return "its python ended with exit %d and said nothing" % code
