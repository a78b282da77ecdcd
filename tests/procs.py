"""The processes on this machine, for tests that must find (and kill, or prove gone) one they did not start."""

import os


def argvs():
    """(pid, argv as bytes) of every process still there while the scan reaches it."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue  # gone meanwhile, or not ours to read
        yield int(pid), argv
