"""Start background processes (guest writers, crond) detached from whoever asked.

Double fork: the daemon is re-parented to init at once, so no caller (a test, vim-cmd in
a namespace) is left holding a zombie that looks alive to the next `kill -0`.
"""
import os
import time


def spawn(argv, env=None):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.setsid()
            gpid = os.fork()
            if gpid:
                os.write(w, str(gpid).encode())
                os._exit(0)
            os.close(w)
            fd = os.open(os.devnull, os.O_RDWR)
            for n in (0, 1, 2):
                os.dup2(fd, n)
            os.chdir("/")
            os.closerange(3, 4096)
            os.execve(argv[0], argv, env if env is not None else os.environ)
        finally:
            os._exit(127)
    os.close(w)
    data = b""
    while True:
        chunk = os.read(r, 32)
        if not chunk:
            break
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    return int(data)


def alive(pid):
    """True for a running process; a zombie counts as gone."""
    if not pid:
        return False
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[-1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def wait_gone(pid, timeout=3.0):
    end = time.time() + timeout
    while time.time() < end:
        try:
            if os.waitpid(pid, os.WNOHANG)[0]:
                return True
        except ChildProcessError:
            pass
        if not alive(pid):
            return True
        time.sleep(0.02)
    import signal  # here, not at the top: only a daemon that outlives its SIGTERM needs it
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return False

