"""Stand-in for busybox crond: a real process whose pid is in /var/run/crond.pid.

It does not run jobs; it records every start and stop (with the crontab it saw) in
state/crond.log, which is what tests need to prove a schedule was (re)loaded.
"""
import json
import os
import signal
import sys
import time

from . import daemon
from .state import Store


def pid_file(host):
    return os.path.join(host.store.p("root", "run", "upper"), "crond.pid")


def _log(host, event, **kw):
    rec = {"event": event, "pid": os.getpid(), "wall": time.time()}
    rec.update(kw)
    with open(host.store.p("state", "crond.log"), "a", encoding="utf-8") as f:
        f.write(json.dumps(rec) + "\n")


def crontab_text(host):
    try:
        with open(os.path.join(host.store.p("root", "var_spool", "upper"), "cron", "crontabs", "root"),
                  encoding="utf-8") as f:
            return f.read()
    except OSError:
        return ""


def start(host):
    src = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    pid = daemon.spawn([sys.executable, "-m", "esxisim.crond", host.root], dict(os.environ, PYTHONPATH=src))
    for _ in range(200):
        if _read_pid(host) == pid:
            break
        time.sleep(0.01)
    return pid


def _read_pid(host):
    try:
        with open(pid_file(host)) as f:
            return int(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0


def log(host):
    try:
        with open(host.store.p("state", "crond.log"), encoding="utf-8") as f:
            return [json.loads(x) for x in f if x.strip()]
    except OSError:
        return []


def _is_crond(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return b"esxisim.crond" in f.read()
    except OSError:
        return False


def running(host):
    """Whether the pid in /var/run/crond.pid is this simulator's crond."""
    pid = _read_pid(host)
    return bool(pid) and _is_crond(pid)


def stop_all(host):
    pids = {r["pid"] for r in log(host) if r["event"] == "start"} | {_read_pid(host)}
    for pid in pids:
        if not pid or not _is_crond(pid):
            continue
        try:
            os.kill(pid, signal.SIGTERM)
            daemon.wait_gone(pid, 2)
        except (OSError, ProcessLookupError):
            pass


class _Files(object):
    """What crond reads of its host: the state folder (no import of host.py, which starts crond)."""

    def __init__(self, root):
        self.root, self.store = root, Store(root)


def run(root):
    host = _Files(root)
    os.makedirs(os.path.dirname(pid_file(host)), exist_ok=True)
    with open(pid_file(host), "w") as f:
        f.write("%d\n" % os.getpid())
    _log(host, "start", crontab=crontab_text(host))

    def die(*_args):
        # busybox crond dies at once on SIGTERM/SIGHUP; a stop logged late would
        # land after the start of the crond that replaces it.
        if os.path.exists(host.store.p("state")):
            _log(host, "stop")
        os._exit(0)

    signal.signal(signal.SIGTERM, die)
    signal.signal(signal.SIGHUP, die)
    while os.path.exists(host.store.p("state", "host.json")):
        time.sleep(0.2)
    die()


if __name__ == "__main__":
    run(sys.argv[1])
