"""Helpers shared by the esxisim tests (a module of its own: two conftest.py files would clash)."""
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SAMPLES = os.environ.get("ESXI_SAMPLES", os.path.join(REPO, "tests", "data", "esxi-samples"))
sys.path.insert(0, REPO)

from esxisim import Host  # noqa: E402


def sample(prefix):
    for fn in sorted(os.listdir(SAMPLES)):
        if fn.startswith(prefix):
            with open(os.path.join(SAMPLES, fn), encoding="utf-8") as f:
                return f.read()
    raise AssertionError("no sample %s in %s" % (prefix, SAMPLES))


def run_shell(host, *cmd, input=None, timeout=60):
    env = dict(os.environ, PYTHONPATH=REPO)
    r = subprocess.run([sys.executable, "-m", "esxisim", "shell", host.root, "--"] + list(cmd),
                       capture_output=True, input=input.encode() if input else None, timeout=timeout, env=env)
    # keep \r: vmkfstools redraws its progress line with carriage returns
    r.stdout, r.stderr = r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")
    return r


def sh(host, script, **kw):
    return run_shell(host, "sh", "-c", script, **kw)


def wait_for(predicate, timeout=15.0, what="condition"):
    """Poll until predicate() is true: tests wait on what they need, not on a guessed sleep."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting for " + what
        time.sleep(0.05)


def writes_after(log, event):
    """Guest writes logged after the last record of `event` (all writes if there is none)."""
    idx = [i for i, rec in enumerate(log) if rec["event"] == event]
    return [rec for rec in log[(idx[-1] + 1 if idx else 0):] if rec["event"] == "write"]
