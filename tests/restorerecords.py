"""What a killed restore leaves, planted by hand: its `.owner` record and a folder beside it.

The attacks on cleaning up killed restores (ESXi's scratch folders: test_outsider_cleanup.py; KVM
restores: test_outsider_restorerecover.py) forge records of the one format both kinds write, and
check that a folder no dead restore owns keeps its file.
"""

import os
import subprocess
import time

KEPT = "precious.vmdk"  # the file a folder cleanup must not touch holds


def dead_pid() -> int:
    """A pid that was a process's and is free again (until the kernel hands it out anew)."""
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def write_record(f: str, machine: str, pid, path: str, host=None, raw=None, age: float = 0) -> str:
    """Write the record `f` as a restore would (with `host=` where given), or `raw` text, last
    touched `age` seconds ago: whether a record is a dead restore's turns on its heartbeat too."""
    text = raw if raw is not None else "run=abcdef012345 machine=%s pid=%s started=1700000000%s\npath=%s\n" % (
        machine, pid, "" if host is None else " host=%s" % host, path)
    with open(f, "w", encoding="utf-8") as fh:
        fh.write(text)
    if age:
        then = time.time() - age
        os.utime(f, (then, then))
    return f


def victim(folder: str) -> str:
    """`folder` made, with a file in it that must survive."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, KEPT), "w") as f:
        f.write("data")
    return folder


def survives(folder: str) -> bool:
    return os.path.exists(os.path.join(folder, KEPT))
