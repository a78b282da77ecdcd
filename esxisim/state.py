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
import fcntl
import os

from . import jsonio

STATE_FILE = "state/host.json"
# the bytes urllib.parse.quote never escapes
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")
WRITER_NAME_MAX = 200  # bytes of a writer log's quoted name: with ".jsonl", well under a file name's 255


def _flock(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


class locked:
    """An exclusive flock on `path` for the length of a with block.

    Classes, not contextlib.contextmanager: contextlib (with functools and collections) was a
    tenth of what a vim-cmd call loads.
    """

    def __init__(self, path):
        self.path = path

    def __enter__(self):
        self.fd = _flock(self.path)

    def __exit__(self, *exc):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


class _Edit:
    """A with block that edits a document under a lock: read on entry, written back at the end
    unless the block raises."""

    def __init__(self, lock_path, read, write):
        self.lock, self.read, self.write = locked(lock_path), read, write

    def __enter__(self):
        self.lock.__enter__()
        try:
            self.data = self.read()
        except BaseException:
            self.lock.__exit__(None, None, None)
            raise
        return self.data

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                self.write(self.data)
        finally:
            self.lock.__exit__(None, None, None)


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

    def edit(self):
        """`with store.edit() as data:` host.json under host.lock, written back after the block."""
        return _Edit(self.p("state", "host.lock"), self.read, self.write)

    def vm_lock(self, vmx_path):
        try:
            from _sha1 import sha1  # hashlib's own SHA-1: hashlib would load OpenSSL (~5 ms a call)
        except ImportError:
            from hashlib import sha1
        key = sha1(os.path.normpath(vmx_path).encode()).hexdigest()
        return locked(self.p("state", "locks", key + ".lock"))

    def writer_log_path(self, name):
        """The name as urllib.parse.quote(name, safe="") gives it (urllib.parse loads re,
        collections and ipaddress: more than the snapshot call that logs here). A quoted name past
        WRITER_NAME_MAX bytes is cut there and made unique by its digest: vSphere names a VM in at most 80
        characters, but a .vmx's displayName takes any length, and 43 `ü` quote to more than the 255
        bytes of a file name (a snapshot's event then failed with a traceback where ESXi snapshots)."""
        quoted = "".join(chr(b) if b in _UNRESERVED else "%%%02X" % b for b in name.encode("utf-8"))
        if len(quoted) > WRITER_NAME_MAX:
            from hashlib import sha256

            quoted = quoted[:WRITER_NAME_MAX - 65] + "~" + sha256(name.encode("utf-8", "surrogatepass")).hexdigest()
        return self.p("state", "writer", quoted + ".jsonl")

    def faults(self):
        try:
            with open(self.p("state", "faults.json"), encoding="utf-8") as f:
                return jsonio.loads(f.read())
        except (OSError, ValueError):
            return {}

    def _write_faults(self, faults):
        import json  # see write
        with open(self.p("state", "faults.json"), "w", encoding="utf-8") as f:
            json.dump(faults, f, indent=1, sort_keys=True)

    def set_faults(self, faults):
        with locked(self.p("state", "faults.lock")):
            self._write_faults(faults)

    def edit_faults(self):
        """`with store.edit_faults() as faults:` faults.json under faults.lock, as edit()."""
        return _Edit(self.p("state", "faults.lock"), self.faults, self._write_faults)
