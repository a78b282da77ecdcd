"""The guest: a detached process that keeps writing known data to a VM's current disks.

Each write and each snapshot event is one JSON line in state/writer/<name>.jsonl, written
under the per-VM lock, so the order of lines in the log is the order things happened to
the disks: a test can rebuild the exact disk content at any event from the log alone.
"""
import os
import sys
import time

from . import daemon, jsonio

RATE = 30.0  # writes per second
SIZES = (4096, 8192, 16384, 32768, 65536)


def payload(seed, seq, length):
    import hashlib  # here, not at the top: snapshot tools log events through this module, and hash nothing
    return hashlib.shake_256(("w:%s:%d" % (seed, seq)).encode()).digest(length)


def _log_path(host, vmid):
    return host.store.writer_log_path(host.display_name(vmid))


def append(path, record):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (jsonio.dumps(record, sort_keys=True) + "\n").encode())
    finally:
        os.close(fd)


def last_seq(path):
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 65536))
            lines = f.read().splitlines()
    except OSError:
        return 0
    for line in reversed(lines):
        try:
            rec = jsonio.loads(line.decode("utf-8"))  # the log is ASCII (json's ensure_ascii)
        except ValueError:  # a line cut by the seek, or half written
            continue
        if "seq" in rec:
            return rec["seq"]
    return 0


def log_event(host, vmid, event, **fields):
    """Called with the VM lock held, so after_seq is exactly the last write before the event."""
    path = _log_path(host, vmid)
    rec = {"event": event, "t": time.monotonic(), "wall": time.time(), "after_seq": last_seq(path)}
    rec.update(fields)
    append(path, rec)


def read_log(host, name):
    path = host.store.writer_log_path(name)
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [jsonio.loads(line) for line in f if line.strip()]


def _alive(pid):
    return daemon.alive(pid)


def start(host, vmid):
    vmid = str(vmid)
    v = host.vm(vmid)
    if _alive(v.get("writer_pid")):
        return v["writer_pid"]
    src = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=src)
    pid = daemon.spawn([sys.executable, "-m", "esxisim.guest", host.root, vmid], env)
    with host.store.edit() as s:
        s["vms"][vmid]["writer_pid"] = pid
        s["vms"][vmid]["writer"] = True
    return pid


def stop(host, vmid, keep_flag=False):
    vmid = str(vmid)
    try:
        pid = host.vm(vmid).get("writer_pid")
    except Exception:
        return
    if pid and _alive(pid):
        import signal  # here, not at the top: only a running guest is signalled
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        daemon.wait_gone(pid)
    with host.store.edit() as s:
        if vmid in s["vms"]:
            s["vms"][vmid]["writer_pid"] = None
            if not keep_flag:
                s["vms"][vmid]["writer"] = False


def apply_writes(content_by_node, records, until=None):
    """Replay logged writes onto {node: bytearray}; stop before record index `until`."""
    for i, rec in enumerate(records):
        if until is not None and i >= until:
            break
        if rec.get("event") == "write" and rec["node"] in content_by_node:
            buf = content_by_node[rec["node"]]
            buf[rec["offset"]:rec["offset"] + rec["length"]] = payload(rec["seed"], rec["seq"], rec["length"])
    return content_by_node

