"""The host's end of an on-host run (`hostrun.py`): started by SSH mode with the host's own
python (`python -c <this file> NONCE SHA256 FOLDER`) on one SSH channel, it takes the hotvcb pyz (only
when the host does not hold that build yet) and the run's files from stdin, runs hotvcb there (from the
build unpacked beside its pyz, once: bytecode is cached there),
relays its output live and passes the client's Ctrl-C / SIGTERM on to it.

This file parses on Python 2.7 and 3.5 (ESXi 5.x/6.x), so an old host's python answers "old"
instead of a SyntaxError and the client goes file by file; everything after the version check
needs 3.8.

The protocol (lines end with a newline; a frame is a decimal length, a newline, the bytes):
  host:   HOTVCB-ONHOST NONCE need|have|old VERSION
  client: the pyz frame (after `need` only), then the request frame: JSON {"argv": [...],
          "files": {relative path: base64}, "dirs": [relative path], "env": {...}}; in argv, RUN_DIR
          stands for the run's private folder on the host, where the files are (and the folders,
          made even when no file is sent into them), and OUTBOX for the pipe the run writes its
          report to (`--outbox FD`)
  host:   HOTVCB-ONHOST NONCE run, then the run's stdout and stderr, as they come
  client: `INT`, `TERM`, `HUP` or `QUIT` lines: that signal goes to the run; EOF (the client is gone): HUP
  host:   HOTVCB-ONHOST NONCE end LENGTH, then the outbox (what the run wrote to OUTBOX, may be empty):
          LENGTH bytes; the exit code is the run's.
  host:   as it ends, whether the run started or not: HOTVCB-ONHOST NONCE end and a newline on stderr.

The host's login shell may print a greeting before this file runs and a farewell after it (an EXIT trap in
root's profile), on stdout or stderr: what precedes the first mark line is the shell's, and so is what follows
the outbox's LENGTH bytes on stdout and the end line on stderr. The report, the run's output and the reason the
host gives for not running are read from between them alone.

The run writes its output to files in its folder, never to the channel: a lost connection must
not break the run's cleanup (a write to a closed pipe would), nor a stalled one hold it up; and the
run holds the host's run lock and removes its snapshot whatever happens to us. Its report comes to
us through a pipe instead, which needs no room: the host's /tmp (a small ramdisk) may have filled up
during the run, and a good backup's report lost in it was told as a run that failed to start.
"""

import sys

MARK = "HOTVCB-ONHOST"
RUN_DIR = "\x00run\x00"  # no argument can hold a NUL: the token cannot clash with a VM name
OUTBOX = "\x00outbox\x00"  # the pipe's file descriptor, in the run's argv
KEEP_OLD_BUILDS = 7 * 86400  # seconds another hotvcb version's pyz is kept unused
FRAME_MAX = 64 << 20
MIN_FREE = 4 << 20  # bytes the folder needs to start a run: the pyz, the run's files and its output


def say(nonce, what):
    sys.stdout.write("%s %s %s\n" % (MARK, nonce, what))
    sys.stdout.flush()


def main(argv):
    nonce, sha, cache = argv[1], argv[2], argv[3]
    version = "%d.%d" % tuple(sys.version_info[:2])
    if sys.version_info < (3, 8):
        say(nonce, "old " + version)
        return 0
    try:
        return serve(nonce, sha, cache, version)
    except (OSError, ValueError) as err:
        sys.stderr.write("hotvcb: error: on the host: %s\n" % (err,))
        return 1
    finally:
        try:  # the client's cue that what follows on stderr is the host's login shell's (a farewell), not ours
            sys.stderr.write("%s %s end\n" % (MARK, nonce))
            sys.stderr.flush()
        except (OSError, ValueError):
            pass  # the channel is gone: no one reads it


def serve(nonce, sha, cache, version):
    import os
    import shutil
    import tempfile

    private_dir(cache)
    forget_dead_runs(cache)
    room = os.statvfs(cache)
    if room.f_bavail * room.f_frsize < MIN_FREE:  # a full /tmp: the client goes file by file
        raise ValueError("only %d KiB free in %s (hotvcb needs %d MiB there)"
                         % (room.f_bavail * room.f_frsize >> 10, cache, MIN_FREE >> 20))
    pyz = os.path.join(cache, "hotvcb-%s.pyz" % sha)
    held = holds(pyz, sha)
    say(nonce, ("have " if held else "need ") + version)
    stdin = __import__("io").open(0, "rb", buffering=0, closefd=False)  # unbuffered: the signal lines
    # after the frames must reach select(), not a buffer
    if not held:
        receive_pyz(pyz, sha, frame(stdin))
    os.utime(pyz, None)  # in use: kept by forget_old_builds
    program = unpacked(pyz)
    request = __import__("json").loads(frame(stdin).decode("utf-8"))
    run = tempfile.mkdtemp(prefix="run-", dir=cache)
    try:
        for rel in request.get("dirs") or []:
            put_dir(run, rel)
        for rel, b64 in sorted(request["files"].items()):
            put_file(run, rel, b64)
        argv = [a.replace(RUN_DIR, run) for a in request["argv"]]
        say(nonce, "run")  # everything before may fail (a full /tmp...): the client then goes file by file
        code, outbox = relay(program, argv, request.get("env") or {}, run, stdin)
        say(nonce, "end %d" % len(outbox))
        write_out(sys.stdout.buffer, outbox)
        return code
    finally:
        shutil.rmtree(run, ignore_errors=True)
        forget_old_builds(cache, (pyz, program))


def private_dir(path):
    """Ours alone: a pyz in a folder others can write to could be swapped under us (we run as root). A
    folder that cannot be made raises mkdir's own error (a read-only /tmp: `Read-only file system`), which
    the client gives as its reason to go file by file; the lstat's `No such file` named the wrong cause."""
    import os
    import stat

    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise ValueError("%s is not a private folder of this user (a link, another owner, or open to "
                         "others); remove it" % path)


def holds(pyz, sha):
    import hashlib
    import os

    try:
        with open(pyz, "rb") as f:
            if hashlib.sha256(f.read()).hexdigest() == sha:
                return True
    except OSError:
        return False
    os.unlink(pyz)  # damaged: replaced by the build the client sends
    return False


def frame(stream):
    line = stream.readline(32)
    if not line.endswith(b"\n") or not line.strip().isdigit() or int(line) > FRAME_MAX:
        raise ValueError("the client sent no valid frame header: %r" % line[:32])
    size, data = int(line), b""
    while len(data) < size:
        part = stream.read(size - len(data))
        if not part:
            raise ValueError("the client sent %d of %d bytes" % (len(data), size))
        data += part
    return data


def receive_pyz(pyz, sha, data):
    import hashlib
    import os

    if hashlib.sha256(data).hexdigest() != sha:
        raise ValueError("the hotvcb build arrived damaged (SHA-256 differs)")
    tmp = "%s.%d.tmp" % (pyz, os.getpid())
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, pyz)
    except OSError:
        try:
            os.unlink(tmp)  # a part of a build must not fill the host's /tmp (a ramdisk) for good
        except OSError:
            pass
        raise


def unpacked(pyz):
    """The build unpacked beside its pyz, to run instead of the pyz: python never caches what it imports
    from a zip, so each run from the pyz compiled every module it imports again (~0.4 CPU-s, at every
    `status` a monitoring box asks over SSH); from a folder, the first run that imports a module writes its
    bytecode there (atomically: runs at once are fine) and later runs read it. Made once per build under a
    name of its own, then renamed into place with its `.built` mark, so a folder under the final name is
    whole (its removal renames it away first: forget_old_builds); one that is no longer (a hand removed a
    module) or was never put there so is set aside and made anew, never run. Any failure (a full /tmp)
    runs the pyz as before."""
    import os
    import shutil
    import zipfile

    folder = pyz[: -len(".pyz")]
    tmp = "%s.%d.tmp" % (folder, os.getpid())
    try:
        with zipfile.ZipFile(pyz) as zf:
            files = [i for i in zf.infolist() if not i.is_dir()]
            if whole(folder, files):
                os.utime(folder, None)  # in use: kept by forget_old_builds
                return folder
            room = os.statvfs(os.path.dirname(pyz))
            # the sources and the bytecode runs will write (about as large), and still the room a run needs (serve)
            if room.f_bavail * room.f_frsize < 2 * sum(i.file_size for i in files) + MIN_FREE:
                return pyz
            zf.extractall(tmp)
        open(os.path.join(tmp, ".built"), "w").close()
        if os.path.lexists(folder) and not whole(folder, files):
            discard(folder)
        try:
            os.rename(tmp, folder)
        except OSError:  # another run put it in place first
            if not whole(folder, files):
                raise
    except (OSError, ValueError, zipfile.BadZipFile):
        return pyz
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def whole(folder, files):
    """The unpacked build holds its mark and every file of its pyz at its size."""
    import os
    import stat

    for rel, size in [(".built", 0)] + [(i.filename, i.file_size) for i in files]:
        try:
            st = os.lstat(os.path.join(folder, *rel.split("/")))
        except OSError:
            return False
        if not stat.S_ISREG(st.st_mode) or st.st_size != size:
            return False
    return True


def discard(path):
    """Remove an entry of the builds' folder; a folder is renamed out of its name first, so no run starts
    it half removed, and a kill leaves it under a name forget_old_builds knows."""
    import os
    import shutil

    if os.path.isdir(path) and not os.path.islink(path):
        gone = "%s.%d.old" % (path, os.getpid())
        os.rename(path, gone)
        shutil.rmtree(gone, ignore_errors=True)
    else:
        os.unlink(path)


def inside(run, rel):
    """`rel` under the run's folder, refused if it could lead out of it."""
    import os

    parts = rel.split("/")
    if rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError("refusing the file name %r" % rel)
    return os.path.join(run, *parts)


def put_dir(run, rel):
    """A folder the run is given (the `-c` folder's copy): made even when none of its files is sent, as
    when the VMs named have no per-VM file; else the run refused `-c` as no such folder, naming this
    run's path on the host, and backed up nothing."""
    import os

    path = inside(run, rel)
    if not os.path.isdir(path):
        os.makedirs(path, 0o700)


def put_file(run, rel, b64):
    import base64
    import os

    path = inside(run, rel)
    if not os.path.isdir(os.path.dirname(path)):
        os.makedirs(os.path.dirname(path), 0o700)
    with open(path, "wb") as f:
        f.write(base64.b64decode(b64))


def relay(pyz, argv, env, run, stdin):
    """Run hotvcb, relay its output files to the channel and the client's signals to it; (its exit code, what
    it wrote to OUTBOX)."""
    import os
    import select
    import signal
    import subprocess
    import time

    environ = dict(os.environ)
    environ.update(env)
    out_path, err_path = os.path.join(run, "stdout"), os.path.join(run, "stderr")
    received = []

    def forward(signum, _frame):
        received.append(signum)

    # handlers, set before the run starts: a run inherits a signal ignored (SIG_IGN) and keeps it ignored
    # (interrupt.install, as sh does under nohup), so the relay's own SIGHUP ignored so would leave the run
    # deaf to the hang-up this relay sends it when the session breaks; a handler is reset at exec
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT):  # QUIT: Ctrl-\, handled by the run as INT
        signal.signal(sig, forward)
    signal.signal(signal.SIGHUP, ignore)  # the session's end is told by EOF on stdin, below
    box, box_w = os.pipe()
    try:
        with open(out_path, "wb") as out, open(err_path, "wb") as err, open(os.devnull, "rb") as null:
            child = subprocess.Popen([sys.executable, pyz] + [a.replace(OUTBOX, str(box_w)) for a in argv], stdin=null,
                                     stdout=out, stderr=err, cwd="/", env=environ, start_new_session=True,
                                     pass_fds=(box_w,))
    finally:
        os.close(box_w)  # the run's alone: its end is the pipe's EOF
    report = Outbox(box)
    with open(os.path.join(run, "pid"), "w") as f:
        f.write("%d %d\n" % (os.getpid(), child.pid))  # the folder is in use while either lives
    pipes = [[open(out_path, "rb"), sys.stdout.buffer], [open(err_path, "rb"), sys.stderr.buffer]]
    control, pending = stdin.fileno(), b""
    while True:
        finished = child.poll() is not None
        for pipe in pipes:
            data = pipe[0].read()
            if data and pipe[1] is not None and not write_out(pipe[1], data):
                pipe[1] = None  # the channel is gone: the run goes on (its output stays in files)
        if finished:
            break
        while received:
            signal_child(child, received.pop(0))
        ready = select.select([fd for fd in (control, report.fd) if fd is not None], [], [], 0.1)[0]
        if report.fd in ready:
            report.read()
        if control is None or control not in ready:
            continue
        data = os.read(control, 4096)
        if not data:  # the client went away: stop the run as its own Ctrl-C would, as a hang-up, which its
            control = None  # record and status name as the session's end (no one sent a SIGTERM)
            signal_child(child, signal.SIGHUP)
            continue
        pending += data
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            name = line.strip().decode("ascii", "replace")
            if name in ("INT", "TERM", "HUP", "QUIT"):
                signal_child(child, getattr(signal, "SIG" + name))
    for pipe in pipes:
        pipe[0].close()
    code = child.returncode
    return (code if code >= 0 else 128 - code), report.rest()


class Outbox(object):
    """The run's report, read from its pipe as it comes: a report larger than the pipe holds would hold the
    run's end until it is read."""

    def __init__(self, fd):
        self.fd = fd
        self.parts = []

    def read(self):
        import os

        part = os.read(self.fd, 65536)
        if part:
            self.parts.append(part)
        else:
            self.close()

    def close(self):
        import os

        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def rest(self):
        """All of it, once the run has ended: read to the pipe's end, bounded (a process the run left behind
        holding the pipe must not hold us)."""
        import select
        import time

        deadline = time.time() + 5
        while self.fd is not None:
            if select.select([self.fd], [], [], max(0, deadline - time.time()))[0]:
                self.read()
            else:
                self.close()
        return b"".join(self.parts)


def ignore(_signum, _frame):
    """The relay's SIGHUP: a handler that does nothing, not SIG_IGN, which its run would inherit."""


def signal_child(child, signum):
    try:
        child.send_signal(signum)
    except OSError:
        pass  # already gone


def write_out(stream, data):
    try:
        stream.write(data)
        stream.flush()
        return True
    except (OSError, ValueError):
        return False


def forget_dead_runs(cache):
    """Folders of runs whose relay and hotvcb are both gone (killed): they hold config copies."""
    import os
    import shutil
    import time

    for name in os.listdir(cache):
        path = os.path.join(cache, name)
        if not name.startswith("run-"):
            continue
        try:
            with open(os.path.join(path, "pid")) as f:
                pids = [int(p) for p in f.read().split()]
            if not pids:
                raise ValueError("no pid written yet")
        except (OSError, ValueError):
            try:
                if time.time() - os.path.getmtime(path) > 3600:  # never started
                    shutil.rmtree(path, ignore_errors=True)
            except OSError:
                pass
            continue
        if not any(alive(pid) for pid in pids):
            shutil.rmtree(path, ignore_errors=True)


def alive(pid):
    import os

    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # OverflowError: a number past any pid, so none's
        return False
    except OSError:
        return True
    return True


def forget_old_builds(cache, current):
    """Builds of other hotvcb versions unused for a week (/tmp on ESXi is a small ramdisk), and what a killed
    run left of unpacking one. An unpacked build is renamed out of its name before it is removed, so no
    run ever starts a half-removed one (discard). A leftover's pid may have been given to another process
    since: it is spared only while fresh, as no unpack or removal takes an hour. A `.tmp`/`.old` name
    without a pid is none of ours and stays. Runs as the `finally` of every on-host run: nothing a name
    holds may raise out of it, or that name ends each run in a traceback instead of its result."""
    import os
    import time

    for name in os.listdir(cache):
        path = os.path.join(cache, name)
        if not name.startswith("hotvcb-") or path in current:
            continue
        try:
            if name.endswith((".tmp", ".old")):
                # str.isdigit alone takes a superscript two, which int() does not (named in words: this file
                # stays ASCII, an old python reads it from argv in the C locale)
                pid = name.rsplit(".", 2)[-2]
                fresh = unused_for(path) < 3600
                if not (pid.isascii() and pid.isdigit()) or alive(int(pid)) and fresh:
                    continue
            elif unused_for(path) <= KEEP_OLD_BUILDS:
                continue
            discard(path)
        except OSError:
            pass


def unused_for(path):
    """Seconds since `path` was last used (its mtime). One dated ahead of the clock (a clock stepped back since:
    NTP after a boot with a wrong RTC) is dated now, so its wait starts at this first look: its age was negative,
    never over the limit, and such a build stayed on the host's small /tmp for good."""
    import os
    import time

    age = time.time() - os.path.getmtime(path)
    if age < 0:
        os.utime(path, None)
        return 0.0
    return age


if __name__ == "__main__":
    sys.exit(main(sys.argv))
