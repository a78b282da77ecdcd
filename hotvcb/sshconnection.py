"""The SSH connection to a host: one master connection, sessions on it, and telling when it broke.

Carried out with the system OpenSSH client, so the core stays stdlib-only and the host needs nothing
but its own sshd and busybox. `SshShell` (sshshell.py) offers the Shell's file operations on it;
`hostrun.py` speaks its own protocol over a session (`channel`).

Connection: one multiplexed master (``ControlMaster``) whose socket lives in a
private temp dir (0700; in /tmp when TMPDIR is too long for a socket's path); every command is a new channel on it, so a call costs
one round trip, not a handshake. The master is started in its own session (a
Ctrl-C at the terminal must not take it down: snapshot cleanup after an
interrupt still needs the host) and stopped by ``close()`` (also at exit); an
idle ``ControlPersist`` bounds its life if we are killed outright, and the temp dir, named by our
process (tmpwork.py), is removed by the next connection once we are gone. A master that died is opened
anew before the next command (`_revive`, bounded), not left to ssh's fallback of a login per command.

Host keys: always ``StrictHostKeyChecking=yes``: a key that is unknown or
changed is refused with a message telling the admin how to check and add it.
Nothing is ever accepted silently. Authentication is non-interactive
(``BatchMode``): a backup run under cron cannot answer a prompt.

Commands run under a wrapper (sshscripts.py) that ends them on the host when the session's stdin closes;
a stop (interrupt, timeout) closes it and returns once the host has confirmed the command's end (`_stop`).
What the admin is told when a connection cannot be made or breaks is in ssherrors.py.
"""

import atexit
import contextlib
import os
import select
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple, TypeVar

from . import ssherrors, sshfiles, sshscripts as sh, tmpwork, wrapperrun
from .errors import HostError, HotvcbError, Interrupted, TimeoutExpired
from .shell import Completed, OutputCallback

SSH = "ssh"
CONNECT_TIMEOUT = 20  # seconds for TCP connect + key exchange
WORK_PREFIX = "hotvcb-ssh-"  # in /tmp: the master's socket and its error output
# the longest temp folder the master's socket fits in: a socket path has 104 bytes on BSD and macOS (108 on
# Linux) with its NUL, ssh makes the socket as <ControlPath>.<16 random> first, and ours is
# <root>/<WORK_PREFIX><pid, 7 digits at most>-<8 random>/master
SOCKET_ROOT_MAX = 104 - 1 - 17 - len("/%s1234567-12345678/master" % WORK_PREFIX)
REOPEN_MAX = 3  # masters opened anew after the first died (`_revive`): a host that keeps cutting it is not helped
PERSIST = 600  # an orphaned master goes away after this long without clients
FILE_OP_TIMEOUT = 600  # a file operation's snippet (sshshell.py), unless it says otherwise
# how long a stopped command's host has to confirm its end: the wrapper's 10 s from TERM to KILL, and room
STOP_CONFIRM = 30
# why a run() command's end is unknown when its connection went: the wrapper ends it once sshd closes its stdin,
# which a hung connection (a firewall that forgot the flow) never makes sshd do
LOST_UNCONFIRMED = "the connection was lost before the host reported its end"

_Self = TypeVar("_Self", bound="SshConnection")


@dataclass(frozen=True)
class SshTarget:
    """Where and how to connect; the CLI's --host/--port/--identity/... options."""

    destination: str  # [user@]host, as ssh takes it
    port: Optional[int] = None
    identity: Optional[str] = None
    known_hosts: Optional[str] = None
    options: Tuple[str, ...] = ()  # extra `-o` options; given first, so they win

    @property
    def hostname(self) -> str:
        return self.destination.rsplit("@", 1)[-1]

    @property
    def known_hosts_name(self) -> str:
        """How the host is written in known_hosts."""
        if self.port is None or self.port == 22:
            return self.hostname
        return "[%s]:%d" % (self.hostname, self.port)

    def describe(self) -> str:
        return "ssh://%s%s" % (self.destination, "" if self.port is None or self.port == 22 else ":%d" % self.port)


class SshConnection:
    """The master connection to `target`, opened on first use, and the sessions run on it."""

    def __init__(self, target: SshTarget, say: Optional[Callable[[str], None]] = None):
        """`say`: where a stop's wait for the host is announced (the run's log), so a quiet wait of up to
        STOP_CONFIRM after a Ctrl-C does not look hung to an admin with kill -9 at hand."""
        self.target = target
        self._say = say or (lambda message: None)
        self.description = target.describe()
        self._dir = None  # type: Optional[str]
        self._control = None  # type: Optional[str]
        self._reopened = 0  # times the master was found dead (`_revive`)
        # one thread at a time opens the master anew: the host lock's heartbeat, lookahead and --parallel
        # workers share this connection, and two that both found it dead would start two masters
        self._reviving = threading.Lock()

    # -- connection ----------------------------------------------------------
    def _ssh(self, *extra: str) -> List[str]:
        """ssh's argv: our options, then `extra` (its own, then `--` before the destination: a destination
        can never be read as an option)."""
        t = self.target
        argv = [SSH]
        for opt in t.options:
            argv += ["-o", opt]
        argv += [
            "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "ConnectTimeout=%d" % CONNECT_TIMEOUT,
            "-o", "ServerAliveInterval=15",
            "-o", "ServerAliveCountMax=4",
            "-o", "LogLevel=ERROR",
            "-o", "ForwardAgent=no",
            "-o", "ForwardX11=no",
            "-o", "EscapeChar=none",
        ]
        if self._control:
            argv += ["-o", "ControlPath=" + sshfiles.config_value(self._control, "the temp folder")]
        if t.port is not None:
            argv += ["-p", str(t.port)]
        if t.identity:
            argv += ["-o", "IdentityFile=" + sshfiles.config_value(t.identity, "--identity"),
                     "-o", "IdentitiesOnly=yes"]
        if t.known_hosts:
            argv += ["-o", "UserKnownHostsFile=" + sshfiles.config_value(t.known_hosts, "--known-hosts")]
        return argv + list(extra)

    def open(self: _Self) -> _Self:
        """Start the master connection (idempotent: a master that died since is opened anew, `_revive`); fails
        with the reason why not."""
        if self._control is not None:
            self._revive()
            return self
        if self.target.identity:
            sshfiles.check_identity(self.target.identity)
        if self.target.known_hosts:
            sshfiles.check_known_hosts(self.target.known_hosts)
        root = _socket_root()
        for where in sorted({tempfile.gettempdir(), root}):  # a SIGKILLed run's (its master, if still there,
            tmpwork.sweep(WORK_PREFIX, root=where)          # idles out in PERSIST), made with a TMPDIR short or long
        self._dir = tmpwork.make(WORK_PREFIX, root)  # 0700: only we reach the socket
        self._control = os.path.join(self._dir, "master")
        try:
            refused = self._start_master()
        except HotvcbError:
            self._forget()
            raise
        if refused is not None:
            self._forget()
            raise HostError(ssherrors.connect_error(self.target, refused))
        atexit.register(self.close)
        return self

    def _start_master(self) -> Optional[str]:
        """Start the master on our control socket: None, else what ssh said on failing to connect (raises when ssh
        cannot be run or does not return)."""
        assert self._dir is not None
        argv = self._ssh("-o", "ControlMaster=yes", "-o", "ControlPersist=%d" % PERSIST,
                         "-N", "-f", "--", self.target.destination)
        errfile = os.path.join(self._dir, "master.err")
        try:
            with open(errfile, "wb") as err:
                proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                      start_new_session=True, timeout=CONNECT_TIMEOUT * 3)
            with open(errfile, "rb") as f:
                message = f.read().decode("utf-8", "replace")
        except subprocess.TimeoutExpired as err:
            raise TimeoutExpired("the SSH connection to %s" % self.target.destination, CONNECT_TIMEOUT * 3) from err
        except OSError as err:
            raise HostError("cannot run %s: %s (install the OpenSSH client)" % (SSH, err.strerror or err)) from err
        return message if proc.returncode != 0 else None

    def _revive(self) -> None:
        """Open the master anew when it died (its connection cut, its client killed): ssh would otherwise make a
        full connection of its own for every later command, a login each, which a host with MaxStartups or
        fail2ban refuses. Each new master said once; at most REOPEN_MAX, then (said once) each command connects
        on its own. A master that cannot be opened again fails this command as a lost connection, with ssh's
        reason (the host is down: the next command tries again, as its own connection would have)."""
        if self._reopened > REOPEN_MAX or self._socket_answers():
            return
        with self._reviving:
            # looked at again once held: the thread before may have opened it (unlinking its fresh socket would
            # orphan that master, and a second would be counted and said again)
            if self._reopened > REOPEN_MAX or self._socket_answers():
                return
            self._reopen()

    def _reopen(self) -> None:
        """_revive's new master (its lock held), or its last word when REOPEN_MAX are spent."""
        if self._reopened == REOPEN_MAX:
            self._reopened += 1
            self._say("the SSH master connection to %s died again; each command now connects on its own"
                      % self.target.destination)
            return
        assert self._control is not None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._control)  # a killed master's socket stays: ssh would not bind a new one there
        refused = self._start_master()
        if refused is not None:
            raise ssherrors.lost(self.target.destination, refused)
        self._reopened += 1
        self._say("the SSH master connection to %s died; opened a new one" % self.target.destination)

    def _socket_answers(self) -> bool:
        """Whether a master listens on our control socket: a local connect, no process and no round trip, so
        cheap enough to ask before every session (a master's own end unlinks it; a killed one's refuses)."""
        assert self._control is not None
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(5)
            try:
                probe.connect(self._control)
            except OSError:
                return False
        return True

    def close(self) -> None:
        """Stop the master and remove its private dir (idempotent)."""
        if self._control is None:
            return
        try:
            subprocess.run(self._ssh("-O", "exit", "--", self.target.destination), stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
        except (OSError, subprocess.SubprocessError):
            pass
        atexit.unregister(self.close)
        self._forget()

    def _forget(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
        self._dir = self._control = None

    def __enter__(self: _Self) -> _Self:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def _broken(self, returncode: Optional[int], output: str) -> Optional[HostError]:
        """The error for a session that ended because SSH failed, not the command: its ssh client here killed
        by a signal (the OOM killer, a kill -9; we stop ours only by raising), or ssh's 255 with the master
        connection gone. None when the session itself was sound (`returncode` None: not known)."""
        if returncode is not None and returncode < 0:
            return ssherrors.killed(self.target.destination, returncode)
        if returncode == 255 and not self._master_alive():
            return ssherrors.lost(self.target.destination, output)
        return None

    # -- commands ------------------------------------------------------------
    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: Optional[float] = 600,
        idle_timeout: Optional[float] = None,
        on_output: Optional[OutputCallback] = None,
        interruptible: bool = True,
    ) -> Completed:
        """Run argv on the host; same contract as Shell.run (LocalShell.run).

        A stop (interrupt, timeout) returns once the command and its children have gone on the host, as a
        tethered LocalShell.run's does (`_stop`): the snapshot a copy reads and the folder it writes are
        cleaned up after it, not under it. A host that does not confirm in time is named in the error.
        """
        self.open()
        argv = [str(a) for a in argv]
        mark = sh.new_mark()  # a greeting the host's shell prints comes before it, a farewell after the end mark
        unconfirmed = []  # type: List[str]  # why a stop's end was not confirmed by the host

        def broken(returncode: Optional[int], output: str) -> Optional[HostError]:
            failed = self._broken(returncode, output)
            if failed is not None and returncode == 255:  # lost, not our client killed (its channel closes cleanly)
                failed.message += self._may_still_run(argv, LOST_UNCONFIRMED)
            return failed

        def stop(p: "subprocess.Popen") -> None:
            self._say("stopping %s on %s; waiting up to %d s for it to end"
                      % (" ".join(argv[:2]), self.target.destination, STOP_CONFIRM))
            why = _stop(p, mark, self._master_alive)
            if why is not None:
                unconfirmed.append(why)

        try:
            # the session's stderr apart (a file: never a full pipe), framed too: sshd sends it in its own order
            with tempfile.TemporaryFile(dir=self._dir) as errout:
                proc = self._session(sh.begun(mark, sh.wrapped(argv), stderr=True),
                                     stdin=subprocess.PIPE,  # held open: its EOF tells the remote side we are gone
                                     stderr=errout.fileno())
                return wrapperrun.follow(proc, argv, " on %s" % self.target.destination, timeout=timeout,
                                         idle_timeout=idle_timeout, on_output=on_output, interruptible=interruptible,
                                         mark=mark, broken=broken, stop=stop, errout=errout)
        except (HotvcbError, Interrupted) as err:
            if unconfirmed:
                err.message += self._may_still_run(argv, unconfirmed[0])
            raise

    def _may_still_run(self, argv: Sequence[str], why: str) -> str:
        """What an error adds when the host never reported the end of run()'s command `argv`: the copy may still
        read a snapshot that is being removed and write a folder being cleaned up."""
        return "; %s: %s: it may still run on %s (see `ps` there)" % (" ".join(argv[:2]), why, self.target.destination)

    def _session(self, remote: str, *, stdin: int, stderr: int) -> "subprocess.Popen":
        """ssh running the command line `remote` on the host in a new session on the master, its stdout piped
        to us; started in a session of its own here, so a Ctrl-C is passed on by us, not taken by ssh.
        The caller opens the connection first and waits for the child."""
        try:
            return subprocess.Popen(self._ssh("-T", "--", self.target.destination, remote), stdin=stdin,
                                    stdout=subprocess.PIPE, stderr=stderr, start_new_session=True)
        except OSError as err:
            raise HostError("cannot run %s: %s" % (SSH, err.strerror or err)) from err

    def python_argv(self, source: str, *args: str) -> List[str]:
        """argv that runs a stdlib script's source with the host's python (exit 127: it has none)."""
        return sh.python_argv(source, args)

    def channel(self, argv: Sequence[str]) -> "subprocess.Popen":
        """One session running argv on the host with its stdin, stdout and stderr piped to us, for a
        program that speaks its own protocol over them (`hostrun.py`); the caller waits for it. stderr is a
        pipe, not run()'s temp file: the caller relays it as it comes, so it reads both pipes at once (a
        selector), never one alone: a host's login greeting or python warning of megabytes on stderr would
        otherwise fill that pipe and hang the session before its first word on stdout."""
        self.open()
        return self._session(sh.join([str(a) for a in argv]), stdin=subprocess.PIPE, stderr=subprocess.PIPE)

    def lost(self, returncode: Optional[int], output: str) -> Optional[HostError]:
        """The error to raise when a channel's session ended because SSH failed (see `_broken`): its
        client killed, or the connection gone whatever the exit code."""
        return self._broken(returncode, output) or (
            None if self._master_alive() else ssherrors.lost(self.target.destination, output))

    def _master_alive(self) -> bool:
        if self._control is None:
            return False
        try:
            check = subprocess.run(self._ssh("-O", "check", "--", self.target.destination), stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return False
        return check.returncode == 0

    def _call(self, script: str, *args: str, data: Optional[bytes] = None,
              timeout: Optional[float] = FILE_OP_TIMEOUT) -> Tuple[int, bytes, str]:
        """Run a short sh snippet with positional args; (exit code, stdout, stderr), both as the snippet wrote them."""
        self.open()
        stdin = subprocess.PIPE if data is not None else subprocess.DEVNULL
        mark = sh.new_mark()  # a greeting the host's shell prints comes before it, a farewell after it
        proc = self._session(sh.begun(mark, sh.snippet(script, args), stderr=True), stdin=stdin,
                             stderr=subprocess.PIPE)
        try:
            out, errout = proc.communicate(data, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            proc.kill()
            proc.communicate()
            raise TimeoutExpired("%s on %s" % (script.split()[0], self.target.destination), timeout or 0) from exc
        answer, code = sh.after_mark(out, mark), sh.end_code(out, mark)  # the end line's code: the snippet's own
        broken = None if code is not None else self._broken(proc.returncode, errout.decode("utf-8", "replace"))
        if broken is not None:
            raise broken
        if answer is None:
            raise HostError("%s on %s: %s" % (script.split()[0], self.target.destination, sh.no_answer(out, mark)))
        return proc.returncode if code is None else code, answer, sh.own_stderr(errout, mark)


def _stop(proc: "subprocess.Popen", mark: str, connected: Callable[[], bool]) -> Optional[str]:
    """Stop a run() session's command: our end of its stdin closed is the wrapper's cue to end it
    (sshscripts.WRAPPER), and the session ends once it has gone. What it still prints is read and dropped
    (a full pipe would hold the session open), but for its last bytes: the end mark (`mark`'s) in them is the
    host's word that the command ended. None once the host confirmed that within STOP_CONFIRM: the end mark
    came, or the session's exit status (the wrapper's) did, or its end by a signal (the stop's TERM reaches the
    session's shell too: ssh's 255, the master still `connected`). Else why not: the connection died within the
    wait (ssh's 255, the master gone: ssh gave a hung one up, which says nothing of the command), or it hangs
    (the ssh client is then killed); the command perhaps still runs on the host."""
    try:
        if proc.stdin is not None:
            proc.stdin.close()
    except OSError:
        pass  # the client is gone already
    deadline = time.monotonic() + STOP_CONFIRM
    fd = proc.stdout.fileno() if proc.stdout is not None else -1
    last = b""
    while fd >= 0 and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], min(0.2, max(0.0, deadline - time.monotonic())))
        if not ready:
            continue
        data = os.read(fd, 65536)
        if not data:
            break
        last = (last + data)[-sh.TAIL_HOLDING_END:]
    try:
        proc.wait(max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return "the host did not confirm its end within %d s of its stop" % STOP_CONFIRM
    if sh.ended(last, mark) or (proc.returncode >= 0 and (proc.returncode != 255 or connected())):
        return None
    return LOST_UNCONFIRMED


def _socket_root() -> str:
    """Where the master's work folder goes: the temp folder, or /tmp when TMPDIR is too long to hold a
    socket (every connection would fail with ssh's 'path too long for Unix domain socket')."""
    root = tempfile.gettempdir()
    return root if len(root) <= SOCKET_ROOT_MAX else "/tmp"
