"""The first moments of a command run "on the host": inside a private mount namespace, /vmfs
becomes HOST/vmfs and overlays put the ESXi tools and files into /bin, /sbin, /etc, /var/spool,
/usr/lib and /run; then the command is exec'd in place (same pid, so a signal sent to the
process a caller started reaches the command itself).

Every hotvcb run and every host-side check of the test suite starts here, thousands of times
per run. A Python start, ctypes and the mounts cost about 30 ms of CPU per command, so argv()
runs enter.c instead, compiled with `cc` the first time a process asks (once per source and
machine: `_build/enter-<crc32>-<machine>`); main() below does the same for a machine without a C
compiler, and imports os and sys only (ctypes to mount). The layer table and the paths live here
and go to the C helper on its command line.
Overlay workdirs are per invocation (two shells may run at once); stale ones are removed at
the next start once their owner is gone.
"""
import os
import sys
import time

LAYERS = {  # name -> mount point
    "usr_bin": "/usr/bin", "usr_sbin": "/usr/sbin", "usr_lib": "/usr/lib",
    "etc": "/etc", "var_spool": "/var/spool", "run": "/run",
}
PRIVATE_LAYERS = ("run",)  # the host's own ramdisk: nothing of this machine's /run shows through
STATE_FILE = os.path.join("state", "host.json")
HOSTNAME_FILE = os.path.join("state", "hostname")  # host.json's hostname, for enter.c to read without JSON
_MS_BIND = 4096
_HERE = os.path.dirname(os.path.abspath(__file__))
_helper = []  # [path of the compiled enter.c, or None], once a process has asked


def argv(root, cmd):
    """The command line that runs `cmd` on the host at `root` (an unknown host: exit 2)."""
    if not _helper:
        _helper.append(_build())
    root = os.path.abspath(root)
    _ensure_hostname_file(root)
    if _helper[0]:
        layers = ["%s:%s%s" % (name, target, ":private" if name in PRIVATE_LAYERS else "")
                  for name, target in LAYERS.items()]
        enter = [_helper[0], root, STATE_FILE, HOSTNAME_FILE] + layers
    else:
        code = "import sys; sys.path.insert(0, %r); from esxisim.enter import main; main()" % os.path.dirname(_HERE)
        enter = [sys.executable, "-S", "-c", code, root]
    # --uts: the host's own hostname inside, as every real ESXi host has one
    return ["unshare", "--mount", "--uts", "--propagation", "private"] + enter + ["--"] + (list(cmd) or ["/bin/sh"])


def _build():
    """The compiled enter.c, built now if this source has not been on this machine, and seen to run; None
    (main() runs instead) where it cannot be: no compiler, a read-only checkout, a binary of a checkout
    shared with another libc or on a noexec mount (trusted unrun, every host command would exit 127).
    A failed build leaves `<exe>.failed`, so that the next processes do not each run cc again; it names the
    compiler it failed with (_compiler), and a build is tried again once that is another (cc installed since,
    or upgraded), or FAILED_RETRY after the failure (one for another cause: libc headers installed since), or
    at once where it is removed (the marker says so): the marker outlived its cause, and every host command
    started a Python until it was removed by hand. crc32, not hashlib, for the key: importing _hashlib costs
    more than the key is worth in every `esxisim shell`."""
    import zlib
    src = os.path.join(_HERE, "enter.c")
    try:
        with open(src, "rb") as f:
            key = "%08x" % zlib.crc32(f.read())
    except OSError:
        return None
    exe = os.path.join(_HERE, "_build", "enter-%s-%s" % (key, os.uname().machine))
    if not os.access(exe, os.X_OK) and (_failed_with(exe) == _compiler() or not _compile(src, exe)):
        return None
    return exe if _runs(exe) else None


FAILED_RETRY = 3600  # seconds a failed build's marker spares cc with the same compiler: one failed cc an hour
RETRY_HINT = ("building enter.c failed with the cc above (esxisim runs enter.main in Python instead); remove this "
              "file to retry now: it is retried by itself with another cc, or an hour after the failure\n")


def _compiler():
    """Which `cc` a build would run: its path on PATH and its modification time ("" where there is none)."""
    for folder in os.environ.get("PATH", os.defpath).split(os.pathsep):
        path = os.path.join(folder or ".", "cc")
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return "%s %d" % (path, os.stat(path).st_mtime_ns)
    return ""


def _failed_with(exe):
    """The compiler the failure marker of `exe` names (_compiler, its first line), None where there is no marker
    or it is FAILED_RETRY old."""
    try:
        if time.time() - os.stat(exe + ".failed").st_mtime >= FAILED_RETRY:
            return None
        with open(exe + ".failed") as f:
            return f.readline().rstrip("\n")
    except OSError:
        return None


def _runs(exe):
    """Whether the helper starts here: with no arguments it prints its usage and exits 2."""
    import subprocess
    try:
        return subprocess.run([exe], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=30).returncode == 2
    except (OSError, subprocess.SubprocessError):
        return False


def _compile(src, exe):
    """cc src to a temporary name, then renamed: pytest-xdist workers building at once each leave a whole
    binary, and none runs a half-written one. A failure leaves the `<exe>.failed` marker (where it can), naming
    the compiler it failed with; a success removes it."""
    import subprocess
    import tempfile
    try:
        os.makedirs(os.path.dirname(exe), exist_ok=True)
        _clean_build_dir(exe)
        fd, tmp = tempfile.mkstemp(prefix=".enter-", dir=os.path.dirname(exe))
        os.close(fd)
        try:
            subprocess.run(["cc", "-O2", "-o", tmp, src], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, check=True, timeout=120)
            os.chmod(tmp, 0o755)
            os.replace(tmp, exe)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except (OSError, subprocess.SubprocessError):
        try:
            with open(exe + ".failed", "w") as f:
                f.write(_compiler() + "\n" + RETRY_HINT)
        except OSError:
            pass
        return False
    try:
        os.unlink(exe + ".failed")  # an older compiler's
    except OSError:
        pass
    return True


def _clean_build_dir(exe):
    """Before a build: the helpers (and failure markers) of older enter.c sources for this machine go, and
    the temporary files of compiles killed more than a minute ago."""
    import time
    d, name = os.path.split(exe)
    ours = ("-%s" % os.uname().machine, "-%s.failed" % os.uname().machine)
    for other in os.listdir(d):
        path = os.path.join(d, other)
        try:
            if other == name:
                continue  # another process's build, just renamed into place
            if other.startswith("enter-") and other.endswith(ours):
                os.unlink(path)
            elif other.startswith(".enter-") and os.stat(path).st_mtime < time.time() - 60:
                os.unlink(path)
        except OSError:
            pass


def _libc():
    import ctypes
    return ctypes, ctypes.CDLL(None, use_errno=True)  # this process's own libc (find_library ran ldconfig)


def _mount(source, target, fstype=None, flags=0, data=None):
    ctypes, libc = _libc()
    enc = lambda x: x.encode() if x is not None else None  # noqa: E731
    if libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, "mount %s on %s: %s" % (source, target, os.strerror(err)))


def _ensure_hostname_file(root):
    """HOST/state/hostname from host.json where it is missing: a host created before the file existed
    (both enters read only the file, and without it `--uts` showed this machine's hostname). Written
    under a temporary name and renamed: an enter reading it meanwhile sees no file or all of it."""
    path = os.path.join(root, HOSTNAME_FILE)
    if os.path.exists(path):
        return
    import json
    try:
        with open(os.path.join(root, STATE_FILE), encoding="utf-8") as f:
            name = json.load(f)["hostname"]
        tmp = "%s.%d" % (path, os.getpid())
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(name + "\n")
        os.replace(tmp, path)
    except (OSError, ValueError, KeyError, TypeError):
        return  # no host there (enter says so), or one it cannot write: the machine's hostname


def _set_hostname(root):
    try:
        with open(os.path.join(root, HOSTNAME_FILE), encoding="utf-8") as f:
            name = f.read().rstrip("\r\n")
    except (OSError, ValueError):
        return
    if name:
        ctypes, libc = _libc()
        raw = name.encode()
        if libc.sethostname(raw, ctypes.c_size_t(len(raw))) != 0:
            err = ctypes.get_errno()
            raise OSError(err, "sethostname %s: %s" % (name, os.strerror(err)))


def _cleanup_workdirs(root):
    import shutil
    for layer in LAYERS:
        d = os.path.join(root, "root", layer)
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            if name.startswith("work."):
                try:
                    os.kill(int(name[5:]), 0)
                    continue
                except (ValueError, ProcessLookupError):
                    pass
                except PermissionError:
                    continue
                shutil.rmtree(os.path.join(d, name), ignore_errors=True)


def _default_signals():
    """SIGPIPE and SIGXFSZ back to their defaults and nothing blocked, as enter.c leaves them: Python ignores
    both, and what is ignored or blocked stays so through exec (a writer into a closed pipe would go on with
    EPIPE where on the host the signal ends it). _signal: the signal module loads enum."""
    import _signal
    for sig in (_signal.SIGPIPE, _signal.SIGXFSZ):
        _signal.signal(sig, _signal.SIG_DFL)
    _signal.pthread_sigmask(_signal.SIG_SETMASK, [])


def main():
    root, cmd = sys.argv[1], sys.argv[3:]
    if not os.path.exists(os.path.join(root, STATE_FILE)):
        sys.stderr.write("esxisim: not found: no simulated host at %s\n" % root)
        os._exit(2)
    _cleanup_workdirs(root)
    os.makedirs("/vmfs", exist_ok=True)
    pid = os.getpid()
    _mount(os.path.join(root, "vmfs"), "/vmfs", None, _MS_BIND)
    _set_hostname(root)
    for layer, target in LAYERS.items():
        if not os.path.isdir(target):
            continue
        base = os.path.join(root, "root", layer)
        work = os.path.join(base, "work.%d" % pid)
        os.makedirs(work, exist_ok=True)
        lower = target
        if layer in PRIVATE_LAYERS:
            lower = os.path.join(base, "empty")
            os.makedirs(os.path.join(lower, "sshd"), exist_ok=True)  # the host's sshd (SSH-mode tests)
        _mount("overlay", target, "overlay", 0,
               "lowerdir=%s,upperdir=%s,workdir=%s" % (lower, os.path.join(base, "upper"), work))
    _default_signals()
    try:
        os.chdir(os.getcwd())
    except OSError:
        os.chdir("/")
    try:
        os.execvp(cmd[0], cmd)
    except OSError as e:
        sys.stderr.write("sh: %s: %s\n" % (cmd[0], "not found" if isinstance(e, FileNotFoundError) else e.strerror))
        os._exit(127)
