"""The Shell interface over SSH: run hotvcb from a Linux box against an ESXi host.

`SshShell` offers what `LocalShell` offers (run, read_text, write_text, ...),
carried out on the remote host with the system OpenSSH client, so the core
stays stdlib-only and the host needs nothing but its own sshd and busybox.

Connection: one multiplexed master (``ControlMaster``) whose socket lives in a
private temp dir (0700); every command is a new channel on it, so a call costs
one round trip, not a handshake. The master is started in its own session (a
Ctrl-C at the terminal must not take it down: snapshot cleanup after an
interrupt still needs the host) and stopped by ``close()`` (also at exit); an
idle ``ControlPersist`` bounds its life if we are killed outright, and the temp dir, named by our
process (tmpwork.py), is removed by the next connection once we are gone.

Host keys: always ``StrictHostKeyChecking=yes``: a key that is unknown or
changed is refused with a message telling the admin how to check and add it.
Nothing is ever accepted silently. Authentication is non-interactive
(``BatchMode``): a backup run under cron cannot answer a prompt.

Commands run under a wrapper that kills them on the host when we stop the ssh
client; each file operation is one busybox-compatible shell snippet. Both, and
the readers of their answers, are in sshscripts.py. Long operations (hashing,
compressing) go through the interruptible `run` path.
"""

import atexit
import json
import os
import pkgutil
import posixpath
import shutil
import signal
import subprocess
import tarfile
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from . import hostdigest, lazyre, sshscripts as sh, tmpwork
from .cmdstream import stream
from .errors import HostError, TimeoutExpired
from .filetext import decoded, temp_tag
from .shell import Completed, OutputCallback, Tree, tree_of

SSH = "ssh"
CONNECT_TIMEOUT = 20  # seconds for TCP connect + key exchange
WORK_PREFIX = "hotvcb-ssh-"  # in /tmp: the master's socket and its error output
PERSIST = 600  # an orphaned master goes away after this long without clients
FILE_OP_TIMEOUT = 600
# a scan's answer carries the host's clock; trusted for our clock only from a round trip this short
# (its middle is then within half of it of the moment the host read its clock, as `date`'s is)
CLOCK_TRIP_MAX = 1.0
_OCTAL_MODE = lazyre.compile(r"[0-7]{1,5}")  # `stat -c %a`: the permission bits in octal
_FILE_ID = lazyre.compile(r"[0-9]{1,30}:[0-9]{1,30}")  # `stat -c %d:%i`
# what ssh says of an --identity file it cannot use (it then logs in without it, and its last line blames the host)
_IDENTITY_MISSING = lazyre.compile(r"(?m)Identity file (.+) not accessible: (.+?)\.?\r?$")
_IDENTITY_TOO_OPEN = lazyre.compile(r"Permissions ([0-7]+) for '(.+)' are too open")
# what ssh itself says when a connection breaks; any other line of a session's output is the remote
# command's (vmkfstools' `Clone: 5% done.`), never the reason the connection went
_SSH_SAYS = lazyre.compile(r"^(ssh: |client_loop: |mux_client|Control socket|packet_write_wait: |Read from remote host"
                           r"|Timeout, server |Connection (to|closed|reset)|Shared connection to |Broken pipe)")


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


def _identity_problem(message: str) -> str:
    """Why ssh did not use the --identity file, from its own lines ("" if it said nothing): a missing file
    or one others may read. ssh goes on without the key, so its last line is the host's refusal, and the
    admin would look for the fault in the host's authorized_keys instead of their own file."""
    missing = _IDENTITY_MISSING.search(message)
    if missing:
        return "the identity file %s cannot be read (%s)" % (missing.group(1), missing.group(2))
    too_open = _IDENTITY_TOO_OPEN.search(message)
    if too_open:
        return ("ssh ignores the identity file %s: its permissions %s let others read it; `chmod 600 %s`"
                % (too_open.group(2), too_open.group(1), too_open.group(2)))
    return ""


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, timezone.utc).replace(tzinfo=None)


class SshShell:
    """The host is at the other end of an SSH connection."""

    remote = True

    def __init__(self, target: SshTarget):
        self.target = target
        self.description = target.describe()
        self._dir = None  # type: Optional[str]
        self._control = None  # type: Optional[str]
        self._clock = None  # type: Optional[timedelta]  # the host's wall clock less ours, asked once

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
            argv += ["-o", "ControlPath=" + _config_value(self._control)]
        if t.port is not None:
            argv += ["-p", str(t.port)]
        if t.identity:
            argv += ["-i", t.identity, "-o", "IdentitiesOnly=yes"]
        if t.known_hosts:
            argv += ["-o", "UserKnownHostsFile=" + _config_value(t.known_hosts)]
        return argv + list(extra)

    def open(self) -> "SshShell":
        """Start the master connection (idempotent); fails with the reason why not."""
        if self._control is not None:
            return self
        tmpwork.sweep(WORK_PREFIX)  # a SIGKILLed run's (its master, if still there, idles out in PERSIST)
        self._dir = tmpwork.make(WORK_PREFIX)  # 0700: only we reach the socket
        self._control = os.path.join(self._dir, "master")
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
            self._forget()
            raise TimeoutExpired("the SSH connection to %s" % self.target.destination, CONNECT_TIMEOUT * 3) from err
        except OSError as err:
            self._forget()
            raise HostError("cannot run %s: %s (install the OpenSSH client)" % (SSH, err.strerror or err)) from err
        if proc.returncode != 0:
            self._forget()
            raise HostError(self._connect_error(message))
        atexit.register(self.close)
        return self

    def _connect_error(self, message: str) -> str:
        t = self.target
        known = t.known_hosts or "~/.ssh/known_hosts"
        port = "" if t.port is None or t.port == 22 else "-p %d " % t.port
        if "REMOTE HOST IDENTIFICATION HAS CHANGED" in message or "Host key for" in message:
            return (
                "the SSH host key of %s has CHANGED since it was recorded in %s; refusing to connect "
                "(this can be an attack, or the host was reinstalled). If you know why it changed, remove "
                "the old key with `ssh-keygen -R '%s' -f %s`, check the new key's fingerprint on the host "
                "console (`for k in /etc/ssh/ssh_host_*_key.pub; do ssh-keygen -lf $k; done`) and add it as "
                "below: `ssh-keyscan %s%s >> %s`" % (t.hostname, known, t.known_hosts_name, known,
                                                     port, t.hostname, known)
            )
        if "Host key verification failed" in message or "host key is known" in message:
            return (
                "the SSH host key of %s is not known (not in %s), and hotvcb never accepts a host key by "
                "itself. Compare the fingerprints of `ssh-keyscan %s%s | ssh-keygen -lf -` with those shown "
                "on the host console (`for k in /etc/ssh/ssh_host_*_key.pub; do ssh-keygen -lf $k; done`), "
                "then add the key: `ssh-keyscan %s%s >> %s` (or run `ssh %s%s` once and answer yes)"
                % (t.known_hosts_name, known, port, t.hostname, port, t.hostname, known,
                   port, t.destination)
            )
        detail = sh.last_line(message) or "ssh exited with an error"
        identity = _identity_problem(message)
        if "Permission denied" in message:
            return ("SSH login to %s refused (%s): %s" % (t.destination, detail, identity or (
                "hotvcb logs in with a key, never a password; put the public key in "
                "/etc/ssh/keys-<user>/authorized_keys on ESXi and pass --identity FILE")))
        return "cannot connect to %s over SSH: %s%s" % (t.destination, detail, "; " + identity if identity else "")

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

    def __enter__(self) -> "SshShell":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def _lost(self, output: str) -> HostError:
        return HostError("lost the SSH connection to %s: %s"
                         % (self.target.destination, _ssh_said(output) or "ssh exited 255"))

    def _broken(self, returncode: Optional[int], output: str) -> Optional[HostError]:
        """The error for a session that ended because SSH failed, not the command: its ssh client here killed
        by a signal (the OOM killer, a kill -9; we stop ours only by raising), or ssh's 255 with the master
        connection gone. None when the session itself was sound (`returncode` None: not known)."""
        if returncode is not None and returncode < 0:
            try:
                name = signal.Signals(-returncode).name
            except ValueError:
                name = "signal %d" % -returncode
            return HostError("the SSH session to %s broke: its ssh client on this machine was killed by %s "
                             "(out of memory, or killed by hand?)" % (self.target.destination, name))
        if returncode == 255 and not self._master_alive():
            return self._lost(output)
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
        """Run argv on the host; same contract as LocalShell.run.

        Stopping the local ssh client (interrupt, timeout) closes the channel,
        and the wrapper then kills the remote command and its children.
        """
        self.open()
        argv = [str(a) for a in argv]
        remote = sh.wrapped(argv)
        try:
            proc = subprocess.Popen(
                self._ssh("-T", "--", self.target.destination, remote),
                stdin=subprocess.PIPE,  # held open: its EOF tells the remote side we are gone
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as err:
            raise HostError("cannot run %s: %s" % (SSH, err.strerror or err)) from err
        try:
            done = stream(proc, argv, timeout=timeout, idle_timeout=idle_timeout,
                          on_output=on_output, interruptible=interruptible)
        finally:
            if proc.stdin is not None:
                proc.stdin.close()
        if done.returncode == 127 and done.output.startswith(sh.NOT_FOUND):
            raise HostError("cannot run %s on %s: not found" % (argv[0], self.target.destination))
        broken = self._broken(done.returncode, done.output)
        if broken is not None:
            raise broken
        return done

    def python_argv(self, source: str, *args: str) -> List[str]:
        """argv that runs a stdlib script's source with the host's python (exit 127: it has none)."""
        return sh.python_argv(source, args)

    def channel(self, argv: Sequence[str]) -> "subprocess.Popen":
        """One session running argv on the host with its stdin, stdout and stderr piped to us, for a
        program that speaks its own protocol over them (`hostrun.py`); the caller waits for it."""
        self.open()
        try:
            return subprocess.Popen(self._ssh("-T", "--", self.target.destination, sh.join([str(a) for a in argv])),
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    start_new_session=True)  # a Ctrl-C here is passed on, not taken by ssh
        except OSError as err:
            raise HostError("cannot run %s: %s" % (SSH, err.strerror or err)) from err

    def lost(self, returncode: Optional[int], output: str) -> Optional[HostError]:
        """The error to raise when a channel's session ended because SSH failed (see `_broken`): its
        client killed, or the connection gone whatever the exit code."""
        return self._broken(returncode, output) or (None if self._master_alive() else self._lost(output))

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
        """Run a short sh snippet with positional args; (exit code, stdout, stderr)."""
        self.open()
        remote = sh.snippet(script, args)
        argv = self._ssh("-T", "--", self.target.destination, remote)
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE if data is not None else subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        except OSError as err:
            raise HostError("cannot run %s: %s" % (SSH, err.strerror or err)) from err
        try:
            out, errout = proc.communicate(data, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            proc.kill()
            proc.communicate()
            raise TimeoutExpired("%s on %s" % (script.split()[0], self.target.destination), timeout or 0) from exc
        message = errout.decode("utf-8", "replace")
        broken = self._broken(proc.returncode, message)
        if broken is not None:
            raise broken
        return proc.returncode, out, message

    def _must(self, what: str, script: str, *args: str, data: Optional[bytes] = None,
              timeout: Optional[float] = FILE_OP_TIMEOUT) -> bytes:
        rc, out, err = self._call(script, *args, data=data, timeout=timeout)
        if rc != 0:
            raise HostError("%s: %s" % (what, sh.reason(err) or "exit %d" % rc))
        return out

    def _test(self, script: str, path: str) -> bool:
        rc, _out, err = self._call(script, path)
        if rc > 1:
            raise HostError("cannot check %s: %s" % (path, sh.reason(err) or "exit %d" % rc))
        return rc == 0

    def _streamed(self, what: str, script: str, *args: str) -> str:
        """A long snippet through run(): interruptible, and killed remotely when stopped."""
        done = self.run(["sh", "-c", script, "hotvcb"] + list(args), timeout=None)
        if done.returncode != 0:
            raise HostError("%s: %s" % (what, sh.reason(done.output) or "exit %d" % done.returncode))
        return done.output

    # -- files ---------------------------------------------------------------
    def read_text(self, path: str) -> str:
        return decoded(self._must("cannot read %s" % path, sh.READ, path))

    def read_regular(self, path: str, limit: int) -> str:
        return decoded(self._must("cannot read %s" % path, sh.READ_REGULAR, path, str(limit)))

    def open_binary(self, path: str) -> "sh.RemoteReader":
        """A binary stream of a host file (`cat` over the shared connection).

        Lets verify, archive reads and restore read host files from the Linux
        box; the caller closes it, which waits for (or stops) the remote cat.
        """
        self.open()
        argv = self._ssh("-T", "--", self.target.destination, sh.join(["cat", "--", path]))
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, start_new_session=True)
        except OSError as err:
            raise HostError("cannot run %s: %s" % (SSH, err.strerror or err)) from err
        return sh.RemoteReader(proc, path)

    def write_text(self, path: str, text: str, *, sync_folder: bool = True) -> None:
        """Write atomically: temp file in the same folder, sync, rename. The host's `sync` has no
        folder of its own to leave out (`sync_folder`): each write is as durable as it gets."""
        folder, name = _split(path)
        tmp = "%s/.%s.%s.tmp" % (folder, name, temp_tag())  # the writer's own, as LocalShell's
        self._must("cannot write %s" % path, sh.WRITE, path, tmp, data=text.encode("utf-8"))

    def exists(self, path: str) -> bool:
        return self._test(sh.EXISTS, path)

    def isdir(self, path: str) -> bool:
        return self._test(sh.ISDIR, path)

    def listdir(self, path: str) -> List[str]:
        out = self._must("cannot list %s" % path, sh.LIST, path)
        names = out.decode("utf-8", "surrogateescape").split("\n")
        return sorted(n for n in names if n not in ("", ".", ".."))

    def makedirs(self, path: str) -> None:
        self._must("cannot create %s" % path, sh.MAKEDIRS, path)

    def make_new_dir(self, path: str) -> bool:
        """Create path; False if it already exists (the atomic claim of a name)."""
        rc, _out, err = self._call(sh.MAKE_NEW_DIR, path)
        if rc == 3:
            return False
        if rc != 0:
            raise HostError("cannot create %s: %s" % (path, sh.reason(err) or "exit %d" % rc))
        return True

    def list_files(self, folder: str) -> List[str]:
        """Every file under folder, as sorted paths relative to it."""
        out = self._must("cannot list %s" % folder, sh.LIST_FILES, folder)
        names = out.decode("utf-8", "surrogateescape").split("\n")
        return sorted(n[2:] for n in names if n.startswith("./"))

    def make_tar_gz(self, folder: str, dst: str, arcname: str, first: Sequence[str] = (),
                    skip: Sequence[str] = ()) -> None:
        """tar+gzip folder as <arcname>/... like LocalShell.make_tar_gz (same member order).

        busybox tar cannot rename members, so the folder is archived through a
        link named arcname, with -h (backup folders hold no links of their
        own), naming each file so `first` lead and `skip` stay out.
        """
        rels = [r for r in self.list_files(folder) if r not in skip]
        ordered = [r for r in first if r in rels] + [r for r in rels if r not in first]
        members = [sh.member(arcname + "/" + r) for r in ordered]
        self._streamed("cannot compress %s" % folder, sh.TAR_GZ, folder, dst, arcname, *members)

    def link_new(self, src: str, dst: str) -> bool:
        """Hard-link src as dst; False if dst exists (an atomic create-with-content)."""
        rc, _out, err = self._call(sh.LINK_NEW, src, dst)
        if rc == 3:
            return False
        if rc != 0:
            raise HostError("cannot link %s to %s: %s" % (src, dst, sh.reason(err) or "exit %d" % rc))
        return True

    def age(self, path: str) -> Optional[float]:
        """Seconds since path was last modified, by the host's clock; None if it is gone."""
        rc, out, err = self._call(sh.AGE, path)
        if rc == 3:
            return None
        if rc != 0:
            raise HostError("cannot stat %s: %s" % (path, sh.reason(err) or "exit %d" % rc))
        return max(0.0, float(out.split()[0]))

    def now(self) -> datetime:
        """Our clock (UTC, so that neither our zone nor its summer time moves it) plus the difference to the
        host's wall clock, asked once per connection (one round trip: the host's zone and drift stay)."""
        if self._clock is None:
            before = time.time()
            rc, out, err = self._call(sh.NOW)
            try:
                if rc != 0:
                    raise ValueError(sh.reason(err) or "exit %d" % rc)
                self._set_clock(out.decode("ascii").strip(), before, time.time())
            except ValueError as err:  # (UnicodeDecodeError is one)
                raise HostError("cannot read the clock of %s: %s" % (self.target.destination, err)) from err
        assert self._clock is not None
        return _utc(time.time()) + self._clock

    def _set_clock(self, theirs: str, before: float, after: float) -> None:
        """The host's wall clock `theirs` (`date`'s format), read between our `before` and `after`."""
        middle = _utc((before + after) / 2)
        self._clock = timedelta(seconds=round((datetime.strptime(theirs, "%Y-%m-%d %H:%M:%S") - middle).total_seconds()))

    def touch(self, path: str) -> None:
        self._must("cannot touch %s" % path, sh.TOUCH, path)

    def rename(self, src: str, dst: str) -> None:
        self._must("cannot rename %s to %s" % (src, dst), sh.RENAME, src, dst)

    def remove_tree(self, path: str) -> None:
        self._must("cannot remove %s" % path, sh.REMOVE, path, timeout=None)

    def copy_file(self, src: str, dst: str) -> None:
        self._must("cannot copy %s to %s" % (src, dst), sh.COPY, src, dst, timeout=None)

    def copy_regular(self, src: str, dst: str) -> None:
        """Bounded by FILE_OP_TIMEOUT: a FIFO swapped in after the host's look would block its cp."""
        self._must("cannot copy %s to %s" % (src, dst), sh.COPY_REGULAR, src, dst)

    def file_size(self, path: str) -> int:
        return int(self._must("cannot stat %s" % path, sh.SIZE, path).split()[0])

    def disk_usage(self, path: str) -> int:
        """Bytes allocated on disk (thin files are smaller than their size)."""
        blocks, unit = self._must("cannot stat %s" % path, sh.USAGE, path).split()[:2]
        return int(blocks) * int(unit)

    def symlink(self, target: str, link: str) -> None:
        """Point link at target, replacing an older link."""
        self._must("cannot link %s" % link, sh.SYMLINK, target, link)

    def chmod(self, path: str, mode: int) -> None:
        self._must("cannot chmod %s" % path, sh.CHMOD, path, "%04o" % mode)

    def file_mode(self, path: str) -> int:
        out = self._must("cannot stat %s" % path, sh.MODE, path).decode("ascii", "replace").strip()
        if not _OCTAL_MODE.fullmatch(out):
            raise HostError("cannot stat %s: the host's stat gave %r for its mode" % (path, out[:40]))
        return int(out, 8)

    def file_id(self, path: str) -> str:
        out = self._must("cannot stat %s" % path, sh.FILE_ID, path).decode("ascii", "replace").strip()
        if not _FILE_ID.fullmatch(out):
            raise HostError("cannot stat %s: the host's stat gave %r for its device and inode" % (path, out[:40]))
        return out

    def realpath(self, path: str) -> str:
        """Like os.path.realpath: a missing last part is kept as written, `..` folded."""
        path = posixpath.normpath(path)
        out = self._must("cannot resolve %s" % path, sh.REALPATH, path)
        return out.decode("utf-8", "surrogateescape").rstrip("\n") or path

    def block_digests(self, path: str, block_size: int, whole: bool,
                      on_block: Optional[Callable[[int], None]] = None, content: str = "") -> Optional[Dict[str, Any]]:
        """blockdigest.py run by the host's python (one JSON line back); None: it has none.
        A qcow2's virtual disk is read by hotvcb running on the host (onhost.py), not file by file."""
        if content:
            raise HostError("cannot read the disk in %s file by file over SSH: verify it with hotvcb on the host "
                            "(without --file-by-file)" % path)
        return hostdigest.by_command(self.run, path, block_size, whole, on_block)

    def scan(self, root: str, read: Sequence[str] = (), read_max: int = 65536) -> Optional[Tree]:
        """treescan.py run by the host's python: a whole folder tree in one round trip.
        None when the host has no python (an old ESXi): the caller asks file by file."""
        source = pkgutil.get_data(__package__, "treescan.py")
        if source is None:
            raise RuntimeError("treescan.py is not readable from the package")
        # a bounded read like every other file call here, so not stopped by a pending signal: cleanup
        # (a consolidation's wait, failing the -partial folder) reads folders through scans too
        before = time.time()
        done = self.run(self.python_argv(source.decode("utf-8"), root, str(read_max), *read), timeout=FILE_OP_TIMEOUT,
                        interruptible=False)
        after = time.time()
        if done.returncode == 127:
            return None
        lines = [l for l in done.output.splitlines() if l.startswith("{")]
        try:
            if done.returncode != 0:
                raise ValueError("exit %d" % done.returncode)
            answer = json.loads(lines[-1])
            tree = tree_of(answer["entries"])
        except (IndexError, KeyError, TypeError, ValueError) as err:
            raise HostError("cannot scan %s: %s" % (root, sh.last_line(done.output) or err))
        if self._clock is None and after - before <= CLOCK_TRIP_MAX and isinstance(answer.get("now"), str):
            try:
                self._set_clock(answer["now"], before, after)
            except ValueError:
                pass  # now() asks `date` itself, and says what is wrong with its answer
        return tree

    def read_texts(self, paths: Sequence[str]) -> Dict[str, str]:
        """Many small files in one round trip: the host's tar packs those it can read
        (busybox tar too; no python needed); missing or unreadable ones are left out."""
        paths = [p for p in paths if p.startswith("/")]
        if not paths:
            return {}
        rc, out, err = self._call(sh.READ_MANY, *paths)
        if rc != 0:
            raise HostError("cannot read %d files: %s" % (len(paths), sh.reason(err) or "exit %d" % rc))
        try:
            return sh.texts_of(out, paths)
        except tarfile.TarError as exc:
            if out:
                raise HostError("cannot read %d files: %s" % (len(paths), exc)) from exc
            return {}

    def sha256(self, path: str, on_block: Optional[Callable[[int], None]] = None) -> str:
        """Hash a file on the host (sha256sum there: the data never crosses the wire)."""
        out = self._streamed("cannot read %s" % path, sh.SHA256, path)
        digest = sh.sha256_of(out)
        if not digest:
            raise HostError("cannot read %s: unexpected sha256sum output %r" % (path, out[:200]))
        if on_block is not None:
            on_block(self.file_size(path))
        return digest


def _ssh_said(output: str) -> str:
    """ssh's own last line about its connection in a session's output, "" if it said none."""
    lines = [ln.strip() for ln in output.replace("\r", "\n").splitlines()]
    said = [ln for ln in lines if _SSH_SAYS.match(ln)]
    return said[-1] if said else ""


def _config_value(value: str) -> str:
    """Quote an ssh -o value that holds spaces."""
    return '"%s"' % value if any(c.isspace() for c in value) else value


def _split(path: str) -> Tuple[str, str]:
    folder, _, name = path.rpartition("/")
    return (folder if path.startswith("/") or folder else "."), name
