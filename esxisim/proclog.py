"""The host's process log: every vim-cmd, vmkfstools, esxcli and vmware call, as it starts and ends.

esxisim's own instrument, not an ESXi file (a real host logs tasks in hostd.log and
vmkernel.log, in no form a test could read). Each line is one JSON record
`{"event": "start"|"end", "pid", "seq", "tool", "args", "rc"}` appended with a
single write under the log's flock, so the file order is the order in which the
calls started and ended: a test can tell how many clones ran at once from the
order alone, without timing anything. A call killed by a signal has no "end".
"""
import fcntl
import os

from . import jsonio


def _path(host):
    return host.store.p("state", "processes.jsonl")


def record(host, event, tool, args, rc=None):
    line = {"event": event, "pid": os.getpid(), "tool": tool, "args": list(args)}
    if rc is not None:
        line["rc"] = rc
    path = _path(host)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, (jsonio.dumps(line) + "\n").encode("utf-8"))
    finally:
        os.close(fd)


def read(host):
    try:
        with open(_path(host), encoding="utf-8") as f:
            return [jsonio.loads(x) for x in f if x.strip()]
    except OSError:
        return []


def most_at_once(records, key=lambda r: True):
    """The largest number of calls running at the same time among the records `key` selects
    (a start without an end counts as running to the last record)."""
    running, most = set(), 0
    for r in records:
        if not key(r):
            continue
        if r["event"] == "start":
            running.add(r["pid"])
            most = max(most, len(running))
        else:
            running.discard(r["pid"])
    return most
