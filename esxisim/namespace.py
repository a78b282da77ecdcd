"""Run a command "on the host": a private mount namespace where /vmfs is HOST/vmfs and
overlays put the ESXi tools and files into /bin, /sbin, /etc, /var/spool, /usr/lib, /run.

Overlay workdirs are per invocation (two shells may run at once); stale ones are
removed at the next start once their owner is gone.
"""
import os
import shutil
import signal
import subprocess
import sys

from .toolgen import LAYERS

PRIVATE_LAYERS = ("run",)


def _cleanup_workdirs(host):
    for layer in LAYERS:
        d = host.store.p("root", layer)
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


def shell(host, cmd, cwd=None):
    if not cmd:
        cmd = ["/bin/sh"]
    if not os.path.isdir("/vmfs"):
        os.makedirs("/vmfs", exist_ok=True)
    _cleanup_workdirs(host)
    src = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = ("import sys; sys.path.insert(0, %r); from esxisim.namespace import _inside; _inside()" % src)
    # --uts: the host's own hostname inside, as every real ESXi host has one
    argv = ["unshare", "--mount", "--uts", "--propagation", "private", sys.executable, "-S", "-c", code, host.root, "--"] + list(cmd)
    child = subprocess.Popen(argv, cwd=cwd)

    def forward(sig, _frame):
        try:
            child.send_signal(sig)
        except ProcessLookupError:
            pass
    forwarded = [signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2]
    if not (sys.stdin and sys.stdin.isatty()):
        forwarded.append(signal.SIGINT)  # on a terminal the child gets ^C itself
    else:
        signal.signal(signal.SIGINT, lambda *a: None)
    for s in forwarded:
        signal.signal(s, forward)
    while True:
        try:
            rc = child.wait()
            break
        except InterruptedError:
            continue
    return 128 - rc if rc < 0 else rc


_MS_BIND = 4096


def _mount(source, target, fstype=None, flags=0, data=None):
    """mount(2) through libc: spawning mount(8) seven times per shell was the slow part."""
    import ctypes
    import ctypes.util
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    enc = lambda x: x.encode() if x is not None else None  # noqa: E731
    if libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, "mount %s on %s: %s" % (source, target, os.strerror(err)))


def _set_hostname(root):
    import json
    import socket
    try:
        with open(os.path.join(root, "state", "host.json"), encoding="utf-8") as f:
            name = json.load(f).get("hostname")
        if name:
            socket.sethostname(name)
    except (OSError, ValueError):
        pass


def _inside():
    root = sys.argv[1]
    cmd = sys.argv[3:]
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
            # the host's own ramdisk: nothing of this machine's /run shows through (a lock or id
            # file written there outside any simulated host must not appear on every host)
            lower = os.path.join(base, "empty")
            os.makedirs(os.path.join(lower, "sshd"), exist_ok=True)  # the host's sshd (SSH-mode tests)
        _mount("overlay", target, "overlay", 0,
               "lowerdir=%s,upperdir=%s,workdir=%s" % (lower, os.path.join(base, "upper"), work))
    try:
        os.chdir(os.getcwd())
    except OSError:
        os.chdir("/")
    try:
        os.execvp(cmd[0], cmd)
    except OSError as e:
        sys.stderr.write("sh: %s: %s\n" % (cmd[0], "not found" if isinstance(e, FileNotFoundError) else e.strerror))
        os._exit(127)
