"""Where a repository's objects live: the storage-backend seam.

Everything above this module (packs, indexes, records, GC) speaks only these
eight calls on named, immutable objects, so an object store can follow the
local folder without touching the chunker. What each call must guarantee is
written in docs/repository.md ("Storage-backend contract") and checked for
every implementation by tests/test_repo_backend.py.
"""

import errno
import io
import os
import stat
import time
from dataclasses import dataclass
from typing import BinaryIO, List, Optional

from .. import folderwrite
from ..blockdigest import open_regular
from ..errors import RepoError

try:
    from typing import Protocol
except ImportError:  # pragma: no cover - Python 3.7 has no Protocol; 3.8 does
    Protocol = object  # type: ignore


def random_hex(n: int) -> str:
    """n random bytes in hex, for names no other writer may pick. Not uuid.uuid4(): importing uuid on Python
    3.8 (ESXi's) runs `uname -p` in a subprocess (platform.system()), 0.03-0.2 s of every repository command."""
    return os.urandom(n).hex()


class NotFound(RepoError):
    """The named object does not exist."""


class Unavailable(RepoError):
    """The named object is there but this run cannot read it now (no permission, as on an NFS share with
    root_squash; an I/O error, a stale NFS handle): nothing is known of its content, so it is never judged
    damaged (docs/repository.md "Records that do not read")."""


# what says the thing under an object's name is no object (a folder, a FIFO, a symlink loop): damage, not access
_NOT_AN_OBJECT = {errno.EINVAL, errno.EISDIR, errno.ENOTDIR, errno.ELOOP}


@dataclass(frozen=True)
class ObjectInfo:
    """An object a backend lists: its name, size and modification time."""

    name: str
    size: int
    mtime: float


class Upload(Protocol):
    """A large object being written; invisible under any name until committed."""

    def write(self, data: bytes) -> int: ...

    def discard(self) -> None: ...


class Backend(Protocol):
    def put_new(self, name: str, data: bytes) -> bool: ...

    def new_upload(self) -> Upload: ...

    def put_new_file(self, name: str, upload: Upload) -> bool: ...

    def get(self, name: str, offset: int = 0, length: Optional[int] = None) -> bytes: ...

    def list(self, prefix: str) -> List[ObjectInfo]: ...

    def delete(self, name: str) -> None: ...

    def stat(self, name: str) -> Optional[ObjectInfo]: ...

    def now(self) -> float: ...

    def forget_uploads(self, older_than: float) -> int: ...

    def unwritable(self) -> str: ...


TMP = "tmp"


class _FileUpload:
    """A temp file under <root>/tmp; link()ed to its name on commit."""

    def __init__(self, path: str):
        self.path = path
        self.f = open(path, "xb")  # type: Optional[BinaryIO]

    def write(self, data: bytes) -> int:
        assert self.f is not None
        try:
            return self.f.write(data)
        except OSError as err:  # a full or read-only repository: say so, not "cannot read" the source
            raise RepoError("cannot write %s: %s" % (self.path, err.strerror or err)) from err

    def close(self) -> None:
        if self.f is not None:
            self.f.flush()
            os.fsync(self.f.fileno())
            self.f.close()
            self.f = None

    def discard(self) -> None:
        f, self.f = self.f, None
        if f is not None:
            try:
                f.close()
            except OSError:  # the flush of what is thrown away (a full disk): close() already said so
                pass
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems (and NFS clients) refuse fsync on a folder; the link is already durable there
    finally:
        os.close(fd)


class LocalBackend:
    """Objects as files under a folder (local disk, VMFS or NFS).

    put-if-absent is link(2): atomic, and it fails when the name exists, on
    NFS as locally; the data was fsynced in a temp file first, so a name
    never holds half an object.
    """

    def __init__(self, root: str):
        self.root = root

    def _path(self, name: str) -> str:
        if name.startswith("/") or ".." in name.split("/"):
            raise RepoError("bad object name %r" % name)
        return os.path.join(self.root, name)

    def new_upload(self) -> _FileUpload:
        folder = os.path.join(self.root, TMP)
        try:
            os.makedirs(folder, exist_ok=True)
            return _FileUpload(os.path.join(folder, "%s.%d" % (random_hex(16), os.getpid())))
        except OSError as err:
            # named: `tmp` a plain file made every write fail "File exists", naming nothing in the repository
            raise RepoError(self._tmp_not_folder() or "cannot write to the repository %s: %s/: %s"
                            % (self.root, TMP, err.strerror or err)) from err

    def _tmp_not_folder(self) -> str:
        """Why uploads cannot be made where they are ("" if they can): `tmp` is something other than a folder
        (a file a NAS client or an admin put there), which every write failed on saying only "File exists"."""
        folder = os.path.join(self.root, TMP)
        if os.path.lexists(folder) and not os.path.isdir(folder):
            return ("cannot write to the repository %s: %s/ is not a folder (every write goes through it): move "
                    "it away" % (self.root, TMP))
        return ""

    def put_new_file(self, name: str, upload: Upload) -> bool:
        assert isinstance(upload, _FileUpload)
        path = self._path(name)
        try:
            upload.close()
            os.makedirs(os.path.dirname(path), exist_ok=True)
            try:
                os.link(upload.path, path)
            except FileExistsError:
                return False
            _fsync_dir(os.path.dirname(path))
            return True
        except OSError as err:
            raise RepoError("cannot write %s in the repository %s: %s"
                            % (name, self.root, err.strerror or err)) from err
        finally:
            upload.discard()

    def put_new(self, name: str, data: bytes) -> bool:
        upload = self.new_upload()
        try:
            upload.write(data)
        except BaseException:
            upload.discard()
            raise
        return self.put_new_file(name, upload)

    def get(self, name: str, offset: int = 0, length: Optional[int] = None) -> bytes:
        try:
            # never a plain open(): a FIFO named like an object would block it for ever (verify reads every pack)
            with io.BufferedReader(open_regular(self._path(name))) as f:
                if offset < 0:
                    f.seek(offset, os.SEEK_END)
                else:
                    f.seek(offset)
                return f.read() if length is None else f.read(length)
        except FileNotFoundError as err:
            raise NotFound("%s is missing from the repository %s" % (name, self.root)) from err
        except OSError as err:
            kind = RepoError if err.errno in _NOT_AN_OBJECT else Unavailable
            raise kind("cannot read %s in the repository %s: %s"
                       % (name, self.root, err.strerror or err)) from err

    def list(self, prefix: str) -> List[ObjectInfo]:
        out = []  # type: List[ObjectInfo]
        top = self._path(prefix)
        for folder, dirs, files in os.walk(top):
            if os.path.normpath(folder) == os.path.normpath(self.root) and TMP in dirs:
                dirs.remove(TMP)  # uploads in progress are never listed
            dirs.sort()
            for dname in dirs:  # os.walk does not enter them (a loop would never end): named, never skipped
                path = os.path.join(folder, dname)
                if os.path.islink(path):
                    raise RepoError("%s in the repository %s is a symlink to a folder (%s): its objects cannot "
                                    "be listed; move them back into the repository"
                                    % (os.path.relpath(path, self.root).replace(os.sep, "/"), self.root,
                                       os.readlink(path)))
            for fname in sorted(files):
                path = os.path.join(folder, fname)
                name = os.path.relpath(path, self.root).replace(os.sep, "/")
                try:
                    st = os.stat(path)
                except FileNotFoundError:
                    continue  # deleted while we looked
                except OSError as err:  # a symlink loop, say: skipped, it would hide a pack or mark
                    raise RepoError("cannot read %s in the repository %s: %s"
                                    % (name, self.root, err.strerror or err)) from err
                out.append(ObjectInfo(name, st.st_size, st.st_mtime))
        return out

    def delete(self, name: str) -> None:
        try:
            os.unlink(self._path(name))
        except FileNotFoundError:
            pass
        except OSError as err:
            raise RepoError("cannot delete %s in the repository %s: %s"
                            % (name, self.root, err.strerror or err)) from err

    def stat(self, name: str) -> Optional[ObjectInfo]:
        try:
            st = os.stat(self._path(name))
        except FileNotFoundError:
            return None
        except OSError as err:
            if err.errno == errno.ENOTDIR:
                return None
            raise RepoError("cannot read %s in the repository %s: %s"
                            % (name, self.root, err.strerror or err)) from err
        return ObjectInfo(name, st.st_size, st.st_mtime)

    def now(self) -> float:
        upload = self.new_upload()
        try:
            return os.fstat(upload.f.fileno()).st_mtime if upload.f is not None else time.time()
        finally:
            upload.discard()

    def unwritable(self) -> str:
        """Why nothing can be written to the repository ("" if it can), found without writing (a dry run's
        question): its file system mounted read-only, its folder (for one yet to be made: the folder it would
        be made in) not writable by us, its path something other than a folder, or its `tmp` no folder."""
        what = folderwrite.not_folder(self.root)
        if what:
            return "cannot write to the repository: %s %s" % (self.root, what)
        where = self.root if os.path.isdir(self.root) else os.path.dirname(os.path.normpath(self.root))
        why = folderwrite.unwritable(where)
        if why:
            return "cannot write to the repository %s: %s" % (self.root, why)
        tmp = os.path.join(self.root, TMP)
        why = folderwrite.unwritable(tmp) if os.path.isdir(tmp) else ""
        if why:
            return "cannot write to the repository %s: %s/: %s" % (self.root, TMP, why)
        return self._tmp_not_folder()

    def forget_uploads(self, older_than: float) -> int:
        """Discard uploads begun more than `older_than` seconds ago (their writer died)."""
        folder = os.path.join(self.root, TMP)
        now = self.now()
        gone = 0
        for fname in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
            path = os.path.join(folder, fname)
            try:
                st = os.lstat(path)
                if not stat.S_ISREG(st.st_mode):
                    continue  # no upload (a folder, a symlink someone made): not ours to delete
                if now - st.st_mtime > older_than:
                    os.unlink(path)
                    gone += 1
            except FileNotFoundError:
                continue
            except OSError as err:
                raise RepoError("cannot discard the old upload %s/%s in the repository %s: %s"
                                % (TMP, fname, self.root, err.strerror or err)) from err
        return gone
