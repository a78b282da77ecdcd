"""A small synchronous QMP client: one unix socket, one command at a time.

QMP (the QEMU Machine Protocol) is JSON objects, one a line. The server
speaks first (a greeting naming its version); the client must send
`qmp_capabilities` before anything else; every command may carry an `id`
that the server copies into its answer. Events (`{"event": ...}`) arrive
whenever QEMU has one, also between a command and its answer: they are
collected in `events` for whoever waits for one, never mistaken for a reply.

Every wait is bounded. Errors, under hotvcb's HostError:

    HostError
    └── QmpError                  talking to QEMU failed; .path = the socket
        ├── QmpUnavailable        no socket, or nobody listens (QEMU is gone)
        │   └── QmpNotListening   a socket nobody listens on: its QEMU ended without removing it
        ├── QmpTimeout            no greeting / answer in time (another client
        │                         may hold the monitor: QEMU serves one at a time)
        └── QmpCommandError       QEMU refused a command: .command, .error_class, .desc
"""

import json
import os
import select
import socket
import stat
import struct
import time
from threading import Lock
from typing import Any, Callable, Dict, List, Optional

from .. import interrupt
from ..errors import HostError
from .openfiles import files_held

DEFAULT_TIMEOUT = 30.0
BUSY_PAUSE = 0.05  # seconds between connects while the monitor's listen queue is full
MAX_LINE = 16 << 20  # a query-block of hundreds of disks stays far below this
MAX_EVENTS = 1000  # keep the newest; nobody waits for an event that old


class QmpError(HostError):
    def __init__(self, path: str, message: str):
        super().__init__("QMP %s: %s" % (path, message))
        self.path = path


class QmpUnavailable(QmpError):
    pass


class QmpNotListening(QmpUnavailable):
    """A socket is there and nobody listens on it: the QEMU that made it ended without removing it (killed,
    crashed, its host's power lost), so no process runs the VM (QemuHost.load_vm: VmStopped)."""


class QmpTimeout(QmpError):
    def __init__(self, path: str, what: str, seconds: float):
        super().__init__(path, "no %s within %g s" % (what, seconds))
        self.what, self.seconds = what, seconds


class QmpCommandError(QmpError):
    def __init__(self, path: str, command: str, error_class: str, desc: str):
        super().__init__(path, "%s failed: %s (%s)" % (command, desc, error_class))
        self.command, self.error_class, self.desc = command, error_class, desc


def unavailable(path: str, err: OSError) -> QmpUnavailable:
    """Why nobody answers at `path`. connect() refuses a regular file, a folder or a named pipe with the
    same ECONNREFUSED as a socket nobody listens on; told apart, the admin looks at a placeholder file or a
    typo'd `-qmp unix:` path instead of restarting a QEMU that runs. The path is followed as connect()
    follows it: a symlink to a socket nobody listens on is a QEMU that is not listening."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        mode = 0
    if mode and not stat.S_ISSOCK(mode):
        return QmpUnavailable(path, "is not a socket but %s (is QEMU's `-qmp unix:` path another one?)" % _kind(mode))
    why = "QEMU is not listening (%s)" % (err.strerror or err)
    return QmpNotListening(path, why) if mode and isinstance(err, ConnectionRefusedError) else QmpUnavailable(path, why)


def _kind(mode: int) -> str:
    """What a file that is no socket is, in the admin's words."""
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISREG, "a regular file"),
                       (stat.S_ISFIFO, "a named pipe (fifo)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "a file of mode %o" % stat.S_IFMT(mode)


class QmpClient:
    """`with QmpClient(path) as qmp: qmp.execute("query-status")`."""

    max_message = MAX_LINE
    interruptible = False  # a pending SIGTERM/SIGINT ends a wait for the server (Interrupted)

    def __init__(self, path: str, timeout: float = DEFAULT_TIMEOUT, turn: Optional[Lock] = None):
        """`turn`: held from connect to close. QEMU's monitor serves one client at a time (another
        one's connect fails, EAGAIN, or waits unanswered), so threads asking about one VM at once
        (the look-ahead's questions, the VM's own turn) take turns on its lock instead."""
        self.path, self.timeout, self._turn = path, timeout, turn
        self._holding = False
        self.greeting = {}  # type: Dict[str, Any]
        self.events = []  # type: List[Dict[str, Any]]
        self._sock = None  # type: Optional[socket.socket]
        self._buf = b""
        self._next_id = 0

    # -- lifecycle -----------------------------------------------------------
    def connect(self) -> "QmpClient":
        if self._turn is not None:
            self._turn.acquire()
            self._holding = True
        try:
            self._open()
            self._hello()
        except BaseException:
            self.close()
            raise
        return self

    def _hello(self) -> None:
        """QMP speaks first: its greeting, then capabilities negotiation."""
        msg = self._read(time.monotonic() + self.timeout, "greeting (is another client connected?)")
        if "QMP" not in msg:
            raise QmpError(self.path, "expected a QMP greeting, got %.200s" % json.dumps(msg))
        self.greeting = msg["QMP"]
        self.execute("qmp_capabilities")

    def _open(self) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            sock = self._connected(deadline)
            if sock is not None:
                self._sock = sock
                return
            if self.interruptible:
                interrupt.raise_pending()
            time.sleep(BUSY_PAUSE)

    def _connected(self, deadline: float) -> Optional[socket.socket]:
        """A socket connected to the monitor; None while its listen queue is full (EAGAIN: QEMU serves one
        client at a time and queues one more, so another client holds the monitor, or one that just left
        is not yet replaced: a tool of the admin's, the previous run's last question) until the deadline."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.path)
        except BlockingIOError as err:
            sock.close()
            if time.monotonic() >= deadline:
                raise QmpTimeout(self.path, "connection (is another client connected?)", self.timeout) from err
            return None
        except (FileNotFoundError, ConnectionRefusedError) as err:
            sock.close()
            raise unavailable(self.path, err) from err
        except socket.timeout as err:
            sock.close()
            raise QmpTimeout(self.path, "connection", self.timeout) from err
        except OSError as err:
            sock.close()
            raise QmpError(self.path, "cannot connect: %s" % (err.strerror or err)) from err
        return sock

    def peer_file(self, name: str) -> Optional[str]:
        """The absolute name of an image the QEMU serving this socket was given relative to its working
        directory, proven by that process holding it open; None where it cannot be told. The socket's peer
        (SO_PEERCRED) and its /proc/<pid>/cwd alone are no proof: the peer may be a proxy (socat, a container's
        forwarder) whose directory holds a same-named file, and `-daemonize` chdirs QEMU to / after opening
        its images. So `<cwd>/<name>` is taken only when the peer has that very file open, else the one file
        it holds open whose path ends in `/<name>` (a daemonized QEMU), else none."""
        pid = self.peer_pid()
        if pid is None:
            return None
        held = files_held(pid)
        try:
            cwd = os.readlink("/proc/%d/cwd" % pid)
        except OSError:
            return None
        candidate = os.path.normpath(os.path.join(cwd, name))
        if os.path.realpath(candidate) in held:
            return candidate
        tail = "/" + os.path.normpath(name)
        found = sorted(f for f in held if f.endswith(tail))
        return found[0] if len(found) == 1 else None

    def peer_pid(self) -> Optional[int]:
        """The pid of the process at the socket's other end (SO_PEERCRED): QEMU, or a proxy in front of it;
        None where it cannot be told."""
        if self._sock is None or not hasattr(socket, "SO_PEERCRED"):
            return None
        try:
            pid = struct.unpack("3i", self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                            struct.calcsize("3i")))[0]
        except OSError:
            return None
        return pid if pid > 0 else None

    def close(self) -> None:
        try:
            if self._sock is not None:
                try:
                    self._sock.close()
                finally:
                    self._sock = None
                    self._buf = b""
        finally:
            if self._holding and self._turn is not None:
                self._holding = False
                self._turn.release()

    def __enter__(self) -> "QmpClient":
        return self.connect()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- commands and events -------------------------------------------------
    def execute(self, command: str, arguments: Optional[Dict[str, Any]] = None,
                timeout: Optional[float] = None) -> Any:
        """Run one command; its `return` value, or QmpCommandError with QEMU's class and desc."""
        self._next_id += 1
        ident = "hotvcb-%d" % self._next_id
        request = {"execute": command, "id": ident}  # type: Dict[str, Any]
        if arguments:
            request["arguments"] = arguments
        self._send(request)
        seconds = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + seconds
        while True:
            msg = self._read(deadline, "answer to %s" % command, seconds)
            if "event" in msg:
                self._keep_event(msg)
                continue
            if msg.get("id") != ident:
                continue  # an answer to a request an earlier, abandoned call sent
            if "error" in msg:
                err = msg["error"] if isinstance(msg["error"], dict) else {}
                raise QmpCommandError(self.path, command, str(err.get("class", "?")), str(err.get("desc", msg["error"])))
            if "return" not in msg:
                raise QmpError(self.path, "answer to %s without return: %.200s" % (command, json.dumps(msg)))
            return msg["return"]

    def wait_event(self, match: Callable[[Dict[str, Any]], bool], timeout: float) -> Optional[Dict[str, Any]]:
        """The first collected or arriving event `match` accepts (removed from `events`); None after timeout."""
        deadline = time.monotonic() + timeout
        while True:
            for i, ev in enumerate(self.events):
                if match(ev):
                    return self.events.pop(i)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                msg = self._read(deadline, "event", timeout)
            except QmpTimeout:
                return None
            if "event" in msg:
                self._keep_event(msg)

    def take_events(self, name: Optional[str] = None) -> List[Dict[str, Any]]:
        """Remove and return the collected events (only those called `name`, if given)."""
        taken, kept = [], []  # type: List[Dict[str, Any]], List[Dict[str, Any]]
        for ev in self.events:
            (taken if name is None or ev.get("event") == name else kept).append(ev)
        self.events = kept
        return taken

    # -- wire ----------------------------------------------------------------
    def _keep_event(self, msg: Dict[str, Any]) -> None:
        self.events.append(msg)
        del self.events[:-MAX_EVENTS]

    def _send(self, obj: Dict[str, Any]) -> None:
        if self._sock is None:
            raise QmpError(self.path, "not connected")
        data = json.dumps(obj).encode("utf-8") + b"\n"
        try:
            self._sock.sendall(data)
        except socket.timeout as err:
            raise QmpTimeout(self.path, "room to send %s" % obj.get("execute"), self.timeout) from err
        except OSError as err:
            raise QmpError(self.path, "connection lost: %s" % (err.strerror or err)) from err

    def _fill(self, until: bytes, deadline: float, what: str, seconds: Optional[float] = None) -> None:
        """Read until the buffer holds `until` (a line's end, a sync marker), by deadline at most."""
        if self._sock is None:
            raise QmpError(self.path, "not connected")
        found = until in self._buf
        while not found:
            if self.interruptible and interrupt.pending():
                interrupt.raise_pending()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise QmpTimeout(self.path, what, self.timeout if seconds is None else seconds)
            ready, _, _ = select.select([self._sock], [], [], min(remaining, 0.5) if self.interruptible else remaining)
            if not ready:
                continue
            try:
                data = self._sock.recv(1 << 20)
            except OSError as err:
                raise QmpError(self.path, "connection lost: %s" % (err.strerror or err)) from err
            if not data:
                raise QmpError(self.path, "QEMU closed the connection (waiting for %s)" % what)
            seen = max(0, len(self._buf) - len(until) + 1)  # only the new bytes are searched
            self._buf += data
            found = until in self._buf[seen:]
            if len(self._buf) > self.max_message:
                raise QmpError(self.path, "a message longer than %d bytes" % self.max_message)

    def _read(self, deadline: float, what: str, seconds: Optional[float] = None) -> Dict[str, Any]:
        """The next JSON object from the server, waiting until deadline at most."""
        while True:
            self._fill(b"\n", deadline, what, seconds)
            line, self._buf = self._buf.split(b"\n", 1)
            if line.strip():
                break
        try:
            msg = json.loads(line.decode("utf-8"))
        except ValueError as err:
            raise QmpError(self.path, "not JSON: %.200r" % line) from err
        if not isinstance(msg, dict):
            raise QmpError(self.path, "not a JSON object: %.200r" % line)
        return msg
