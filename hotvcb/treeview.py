"""A Shell that answers the read calls under one folder from a single Shell.scan.

`hotvcb list`, health judging and rotation ask many small questions of every
backup folder (exists, isdir, listdir, list_files, read_text of the manifest
and STATUS, file_size, disk_usage). Over SSH each would be a round trip; a
ScannedShell asks the host once for the whole tree (types, sizes, allocated
bytes and the text of the small files) and answers from that, for as long as
one judgement lasts (or, without a root, each folder it is asked about, as
the ESXi driver reads a VM's folder between two host commands). Anything it does not hold (open_binary, age, files too
big to have been read, paths outside the root) goes to the real shell, and any
change made through it drops the scan, so the next read looks again. On a host
where scan is not possible (no python) every call simply goes through.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Dict, List, Optional, Sequence

from .errors import HostError
from .shell import BlockCallback, Completed, OutputCallback, Readable, Shell, Tree

# what judging and listing a backup read: manifest, STATUS, verify sidecars, owner files, descriptors
BACKUP_TEXTS = ("hotvcb.json", "STATUS.*", "*.verify.json", ".hotvcb-owner", "*.vmdk", "*.vmx")


AUTO_MIN_DEPTH = 4  # without a root, folders nearer "/" than /vmfs/volumes/<ds>/<vm> are not scanned


class ScannedShell:
    """`root`: the one folder tree to scan; None: scan each folder as it is first asked
    about (a file's folder, or the folder itself for listdir/list_files/isdir)."""

    def __init__(self, shell: Shell, root: Optional[str] = None, read: Sequence[str] = BACKUP_TEXTS,
                 read_max: int = 65536):
        self.shell = shell
        self.root = None if root is None else (root.rstrip("/") or "/")
        self.read, self.read_max = tuple(read), read_max
        self.description, self.remote = shell.description, shell.remote
        self._trees = {}  # type: Dict[str, Tree]
        self._unable = False  # the host cannot scan (no python): every call goes through

    # -- the scan ------------------------------------------------------------
    def _lookup(self, path: str, folder: bool = False):
        """(tree, rel) when the answer is in a scan, else (None, "")."""
        if self._unable or not path.startswith("/") or "//" in path or "/./" in path + "/" \
                or "/../" in path + "/":
            return None, ""
        path = path.rstrip("/") or "/"
        for root, tree in list(self._trees.items()):  # a copy: another thread's scan may add one
            if path == root:
                return tree, ""
            if path.startswith(root.rstrip("/") + "/"):
                return tree, path[len(root.rstrip("/")) + 1:]
        if self.root is not None:
            if path != self.root and not path.startswith(self.root.rstrip("/") + "/"):
                return None, ""
            root = self.root
        else:
            root = path if folder else (path.rsplit("/", 1)[0] or "/")
            if root.count("/") < AUTO_MIN_DEPTH:
                return None, ""  # e.g. a datastore itself: it may hold every VM
        scanned = self.shell.scan(root, self.read, self.read_max)
        if scanned is None:
            self._unable = True
            return None, ""
        self._trees[root] = scanned
        return self._lookup(path, folder)

    def _entry(self, path: str) -> "tuple":
        tree, rel = self._lookup(path)
        if tree is None:
            return False, None
        return True, tree.get(rel)

    def _changed(self) -> None:
        self._trees = {}

    # -- reads answered from the scan -----------------------------------------
    def exists(self, path: str) -> bool:
        known, e = self._entry(path)
        return (e is not None) if known else self.shell.exists(path)

    def isdir(self, path: str) -> bool:
        tree, rel = self._lookup(path, folder=True)
        known, e = (tree is not None), (tree or {}).get(rel)
        return (e is not None and e.is_dir) if known else self.shell.isdir(path)

    def absent(self, path: str) -> bool:
        """A look now, never the scan's (the Shell contract's): whether a backup went since it was taken."""
        return self.shell.absent(path)

    def listdir(self, path: str) -> List[str]:
        tree, rel = self._lookup(path, folder=True)
        if tree is None or (rel in tree and tree[rel].kind != "dir" and not (rel == "" and tree[rel].is_dir)):
            return self.shell.listdir(path)
        if rel not in tree:
            raise HostError("cannot list %s: No such file or directory" % path)
        prefix = rel + "/" if rel else ""
        return sorted(r[len(prefix):] for r in tree if r and r.startswith(prefix) and "/" not in r[len(prefix):])

    def list_files(self, folder: str) -> List[str]:
        tree, rel = self._lookup(folder, folder=True)
        if tree is None or rel not in tree or (tree[rel].kind != "dir" and not (rel == "" and tree[rel].is_dir)):
            return self.shell.list_files(folder)
        prefix = rel + "/" if rel else ""
        return sorted(r[len(prefix):] for r, e in tree.items() if r and r.startswith(prefix) and e.kind == "file")

    def read_text(self, path: str) -> str:
        known, e = self._entry(path)
        if known and e is not None and e.text is not None:
            return e.text
        return self.shell.read_text(path)

    def file_size(self, path: str) -> int:
        known, e = self._entry(path)
        return e.size if known and e is not None and e.size >= 0 else self.shell.file_size(path)

    def disk_usage(self, path: str) -> int:
        known, e = self._entry(path)
        return e.allocated if known and e is not None and e.allocated >= 0 else self.shell.disk_usage(path)

    def scan(self, root: str, read: Sequence[str] = (), read_max: int = 65536) -> Optional[Tree]:
        return self.shell.scan(root, read, read_max)

    def read_texts(self, paths: Sequence[str]) -> Dict[str, str]:
        return self.shell.read_texts(paths)

    def read_regular(self, path: str, limit: int) -> str:
        """From the scan when it read the file: its lstat saw a regular file (no link, FIFO or device),
        read whole, within `limit` (a list over SSH reads every backup's manifest this way: no round trip)."""
        known, e = self._entry(path)
        if known and e is not None and e.kind == "file" and e.text is not None and e.size <= limit:
            return e.text
        return self.shell.read_regular(path, limit)

    # -- everything else goes to the shell; a change drops the scan ----------------
    def run(self, argv: Sequence[str], *, timeout: Optional[float] = 600, idle_timeout: Optional[float] = None,
            on_output: Optional[OutputCallback] = None, interruptible: bool = True) -> Completed:
        self._changed()
        return self.shell.run(argv, timeout=timeout, idle_timeout=idle_timeout, on_output=on_output,
                              interruptible=interruptible)

    def run_tethered(self, argv: Sequence[str], *, timeout: Optional[float] = 600,
                     idle_timeout: Optional[float] = None, on_output: Optional[OutputCallback] = None) -> Completed:
        """run, the command dying with hotvcb (tether.py): a copy that must not write on after a SIGKILL."""
        from . import tether  # ctypes: for the copies only
        self._changed()
        return tether.run(self.shell, argv, timeout=timeout, idle_timeout=idle_timeout, on_output=on_output)

    def open_binary(self, path: str) -> Readable:
        return self.shell.open_binary(path)

    def age(self, path: str) -> Optional[float]:
        return self.shell.age(path)

    def now(self) -> datetime:
        return self.shell.now()

    def realpath(self, path: str) -> str:
        """From the scan where it saw every part of the path below its root and none is a symlink: the
        root's realpath (the scan's) and the rest as it is. health.judge asks it of every backup, to tell
        a symlink named like one (layout.linked_elsewhere): not a round trip each over SSH."""
        tree, rel = self._lookup(path)
        parts = rel.split("/") if rel else []
        below = ["/".join(parts[: i + 1]) for i in range(len(parts))]  # each part of the path below the root
        real = tree[""].real if tree and "" in tree else None
        if real is None or not all(p in tree and tree[p].kind != "link" for p in below):
            return self.shell.realpath(path)
        return real.rstrip("/") + "/" + rel if rel else real

    def file_id(self, path: str) -> str:
        return self.shell.file_id(path)

    def sha256(self, path: str, on_block: Optional[BlockCallback] = None) -> str:
        return self.shell.sha256(path, on_block)

    def block_digests(self, path: str, block_size: int, whole: bool,
                      on_block: Optional[BlockCallback] = None, content: str = "") -> Optional[Dict[str, Any]]:
        return self.shell.block_digests(path, block_size, whole, on_block, content)

    def touch(self, path: str) -> None:
        self.shell.touch(path)  # a heartbeat: changes no answer the scan gives

    def write_text(self, path: str, text: str, *, sync_folder: bool = True,
                   keep_folder_time: bool = False) -> None:
        self._changed()
        self.shell.write_text(path, text, sync_folder=sync_folder, keep_folder_time=keep_folder_time)

    def write_bytes(self, path: str, data: bytes, *, sync_folder: bool = True,
                    keep_folder_time: bool = False) -> None:
        self._changed()
        self.shell.write_bytes(path, data, sync_folder=sync_folder, keep_folder_time=keep_folder_time)

    def makedirs(self, path: str) -> None:
        self._changed()
        self.shell.makedirs(path)

    def make_new_dir(self, path: str) -> bool:
        self._changed()
        return self.shell.make_new_dir(path)

    def link_new(self, src: str, dst: str) -> bool:
        self._changed()
        return self.shell.link_new(src, dst)

    def rename(self, src: str, dst: str) -> None:
        self._changed()
        self.shell.rename(src, dst)

    def remove_tree(self, path: str) -> None:
        self._changed()
        self.shell.remove_tree(path)

    def copy_file(self, src: str, dst: str) -> None:
        self._changed()
        self.shell.copy_file(src, dst)

    def copy_regular(self, src: str, dst: str) -> None:
        self._changed()
        self.shell.copy_regular(src, dst)

    def symlink(self, target: str, link: str) -> None:
        self._changed()
        self.shell.symlink(target, link)

    def chmod(self, path: str, mode: int) -> None:
        self._changed()
        self.shell.chmod(path, mode)

    def file_mode(self, path: str) -> int:
        return self.shell.file_mode(path)

    def make_tar_gz(self, folder: str, dst: str, arcname: str, first: Sequence[str] = (),
                    skip: Sequence[str] = ()) -> None:
        self._changed()
        self.shell.make_tar_gz(folder, dst, arcname, first, skip)


def _check(shell: ScannedShell) -> Shell:  # mypy: a ScannedShell is a Shell
    return shell



