"""Where a simulated host keeps things, and the locks that keep concurrent tools honest.

HOST/
  vmfs/volumes/<uuid>/...        datastores (bind-mounted on /vmfs inside `shell`)
  vmfs/volumes/<name> -> <uuid>  relative symlink, like ESXi
  root/<layer>/upper             overlay upper dirs for /usr/bin, /usr/sbin, /etc, ...
  state/host.json                inventory, power states, datastores (guarded by host.lock)
  state/faults.json              injected faults, read by every tool call
  state/locks/<sha1>.lock        per-VM lock: snapshot ops vs. guest writes
  state/writer/<name>.jsonl      guest writer log (writes and snapshot events)
  nfs/<server>/<share>           default NFS root (shared by hosts given the same --nfs-root)
"""
import contextlib
import fcntl
import os

from . import jsonio

STATE_FILE = "state/host.json"


def _flock(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


@contextlib.contextmanager
def locked(path):
    fd = _flock(path)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


class Store:
    def __init__(self, root):
        self.root = os.path.abspath(root)

    def p(self, *parts):
        return os.path.join(self.root, *parts)

    def exists(self):
        return os.path.exists(self.p(STATE_FILE))

    def read(self):
        with open(self.p(STATE_FILE), encoding="utf-8") as f:
            return jsonio.loads(f.read())

    def write(self, data):
        import json  # here, not at the top: most tool calls only read (jsonio.py)
        tmp = self.p(STATE_FILE + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, self.p(STATE_FILE))

    @contextlib.contextmanager
    def edit(self):
        with locked(self.p("state", "host.lock")):
            data = self.read()
            yield data
            self.write(data)

    def vm_lock(self, vmx_path):
        import hashlib  # here, not at the top: most tool calls lock no VM, and it loads OpenSSL
        key = hashlib.sha1(os.path.normpath(vmx_path).encode()).hexdigest()
        return locked(self.p("state", "locks", key + ".lock"))

    def writer_log_path(self, name):
        import urllib.parse  # here, not at the top: only the guest's log paths need quoting
        return self.p("state", "writer", urllib.parse.quote(name, safe="") + ".jsonl")

    def faults(self):
        try:
            with open(self.p("state", "faults.json"), encoding="utf-8") as f:
                return jsonio.loads(f.read())
        except (OSError, ValueError):
            return {}

    def set_faults(self, faults):
        import json  # see write
        with locked(self.p("state", "faults.lock")):
            with open(self.p("state", "faults.json"), "w", encoding="utf-8") as f:
                json.dump(faults, f, indent=1, sort_keys=True)

    @contextlib.contextmanager
    def edit_faults(self):
        import json  # see write
        with locked(self.p("state", "faults.lock")):
            faults = self.faults()
            yield faults
            with open(self.p("state", "faults.json"), "w", encoding="utf-8") as f:
                json.dump(faults, f, indent=1, sort_keys=True)
