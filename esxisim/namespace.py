"""`esxisim shell HOST -- CMD`: run a command on the host (see enter.py), from a terminal or a
script: this parent stays to forward signals and to give a shell's exit status (128+N for a
signal). A caller that needs neither runs enter.argv() itself and saves a Python start.
"""
import signal
import subprocess
import sys

from . import enter


def shell(root, cmd, cwd=None):
    child = subprocess.Popen(enter.argv(root, cmd), cwd=cwd)

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


def main(args):
    """`shell HOST [--] CMD...` without the simulator's model loaded (the commonest call)."""
    if not args:
        sys.stderr.write("usage: esxisim shell HOST [--] [COMMAND...]\n")
        return 2
    cmd = args[1:]
    return shell(args[0], cmd[1:] if cmd[:1] == ["--"] else cmd)
