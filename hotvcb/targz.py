"""Read and unpack compressed backups (`<VM>-<TS>.gz`, tar+gzip of one folder).

ghettoVCB and hotvcb both write the backup folder as the archive's single
top-level directory. Archives are read with the stdlib `tarfile` on the host
itself, as LocalShell.make_tar_gz writes them; an SSH shell would need its own
implementation of these three functions.

Unpacking is defensive: every member must sit under that one folder, no
absolute names, no `..`, no links or devices (a crafted archive must not
write outside the extraction folder). Blocks of zeros are skipped with a seek,
so a thin disk stays thin when extracted instead of inflating to full size.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple, cast

from . import interrupt
from .errors import HostError
from .store.layout import STATUS_FILES

if TYPE_CHECKING:  # gzip and tarfile are imported where an archive is read: a .gz backup's run only
    import gzip
    import tarfile

CHUNK = 1 << 20


@dataclass
class Member:
    """A regular file in a .gz backup, as its tar header lists it."""

    rel: str  # path inside the backup folder
    size: int


def _open(path: str, opener=None) -> Tuple[tarfile.TarFile, gzip.GzipFile, Any]:
    """Stream the archive, from a local path or a Shell's `open_binary` (SSH): the tar, the gzip
    stream under it for `_whole`, and the file under that, which GzipFile leaves open. gzip's own
    reader rather than tarfile's "r|gz", which checks neither gzip's CRC nor its length and takes an
    archive cut off between two members for one that ends there."""
    import gzip
    import tarfile

    raw = None
    try:
        raw = open(path, "rb") if opener is None else opener(path)
        gz = gzip.GzipFile(fileobj=raw, mode="rb")
        # big reads: a thin disk's zeros inflate many-fold, small ones would cost a Python call per 10 KiB
        return tarfile.open(fileobj=cast(IO[bytes], gz), mode="r|", bufsize=CHUNK), gz, raw
    except (OSError, EOFError, zlib.error, tarfile.TarError, HostError) as err:
        if raw is not None:
            raw.close()
        raise HostError("cannot open %s: %s" % (path, err)) from err


def _whole(gz: gzip.GzipFile) -> None:
    """Read what tar left after its end (its padding, gzip's trailer): gzip then checks the CRC and
    length of everything read, and an archive cut short is an EOFError, not a shorter backup."""
    while gz.read(CHUNK):
        pass


def _close(tar: tarfile.TarFile, gz: gzip.GzipFile, raw: Any) -> None:
    tar.close()
    gz.close()
    raw.close()


def _rel(name: str, path: str) -> str:
    """Member name -> path inside the backup folder; refuse anything outside it."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if name.startswith("/") or ".." in parts:
        raise HostError("%s: unsafe member name %r" % (path, name))
    return "/".join(parts[1:])


def member_data(tar: tarfile.TarFile, info: tarfile.TarInfo) -> IO[bytes]:
    """A regular member's data stream (scan and extract only pass regular files)."""
    data = tar.extractfile(info)
    if data is None:
        raise HostError("member %r has no data" % info.name)
    return data


def scan(path: str, wanted=(), on_file: Optional[Callable[[str, tarfile.TarFile, tarfile.TarInfo], None]] = None,
         opener=None, enough: Optional[Callable[[Dict[str, str]], bool]] = None):
    """One pass over the archive: (top folder, members, texts of `wanted` members).

    `wanted` holds predicates on the relative name; matching members up to
    1 MiB are returned decoded. `on_file(rel, tar, info)` may read each
    regular member's data (used by verify to hash without unpacking).
    `enough(texts)` ends the pass early once the texts it needs are in (hotvcb
    writes its manifest and STATUS first, so that costs a few KiB of reading).
    """
    import tarfile

    top = None
    members = []  # type: List[Member]
    texts = {}  # type: Dict[str, str]
    tar, gz, raw = _open(path, opener)
    try:
        for info in tar:
            if enough is not None and enough(texts):
                break
            first = [p for p in info.name.split("/") if p not in ("", ".")][:1]
            if first:
                if top is None:
                    top = first[0]
                elif first[0] != top:
                    raise HostError("%s holds more than one folder (%s, %s)" % (path, top, first[0]))
            rel = _rel(info.name, path)
            if info.isdir():
                continue
            if not info.isfile():
                raise HostError("%s: member %r is not a regular file" % (path, info.name))
            members.append(Member(rel, info.size))
            if any(w(rel) for w in wanted) and info.size <= CHUNK:
                data = member_data(tar, info).read()
                try:
                    texts[rel] = data.decode("utf-8")
                except UnicodeDecodeError:
                    texts[rel] = data.decode("latin-1")
                continue
            # a signal stops the pass before it reads a whole member or past one, never for the few KiB
            # of texts that judge a hotvcb archive: a backup just sealed is still judged good while the
            # run unwinds (its rotation, the report's good backups)
            if interrupt.pending():
                interrupt.raise_pending()
            if on_file is not None:
                on_file(rel, tar, info)
        else:
            _whole(gz)
    except (OSError, zlib.error, tarfile.TarError, EOFError) as err:
        raise HostError("cannot read %s: %s" % (path, err)) from err
    finally:
        _close(tar, gz, raw)
    if top is None:
        raise HostError("%s is empty" % path)
    return top, members, texts


def extract(path: str, dest: str, opener=None) -> str:
    """Unpack into dest (which must exist); return the backup folder inside it."""
    import gzip
    import tarfile

    top = None
    tar, gz, raw = _open(path, opener)
    try:
        for info in tar:
            if interrupt.pending():
                interrupt.raise_pending()
            rel = _rel(info.name, path)
            first = [p for p in info.name.split("/") if p not in ("", ".")][:1]
            if not first:
                continue
            top = top or first[0]
            if first[0] != top:
                raise HostError("%s holds more than one folder (%s, %s)" % (path, top, first[0]))
            target = os.path.join(dest, top, rel) if rel else os.path.join(dest, top)
            if info.isdir():
                os.makedirs(target, exist_ok=True)
                continue
            if not info.isfile():
                raise HostError("%s: member %r is not a regular file" % (path, info.name))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            _write_sparse(member_data(tar, info), target, info.size)
        _whole(gz)
    except (gzip.BadGzipFile, zlib.error, tarfile.TarError, EOFError) as err:  # BadGzipFile before OSError: it is one
        raise HostError("cannot read %s: %s" % (path, err)) from err
    except OSError as err:
        raise HostError("cannot extract %s into %s: %s" % (path, dest, err.strerror or err)) from err
    finally:
        _close(tar, gz, raw)
    if top is None:
        raise HostError("%s is empty" % path)
    return os.path.join(dest, top)


def _write_sparse(src, target: str, size: int) -> None:
    zero = bytes(CHUNK)
    with open(target, "wb") as out:
        while True:
            if interrupt.pending():
                interrupt.raise_pending()
            block = src.read(CHUNK)
            if not block:
                break
            if block == zero[: len(block)]:
                out.seek(len(block), os.SEEK_CUR)
            else:
                out.write(block)
        out.truncate(size)
        out.flush()
        os.fsync(out.fileno())


class ArchiveView:
    """Just enough of a Shell's read side to plan a restore from a .gz unopened.

    The archive path stands for the backup folder; small members (.vmx,
    descriptors, STATUS.*, the manifest) are readable, big ones only sized.
    Used by dry runs, which must not unpack anything.
    """

    def __init__(self, path: str, opener=None, texts: bool = True):
        """`texts`: False for the members' names and sizes alone (health's look for a disk another backup
        holds), no member read."""
        self.root = path
        # .vmsd: a kept snapshot tree's; .xml: a libvirt backup's domain (a dry run's restore to KVM reads it)
        small = (".vmx", ".vmsd", ".vmdk", ".json", ".xml") + STATUS_FILES
        self.top, members, self.texts = scan(path, wanted=(lambda r: r.endswith(small),) if texts else (),
                                             opener=opener)
        self.sizes = {m.rel: m.size for m in members}
        self.data = {}  # type: Dict[str, int]  # what a member takes unpacked, where less than its size (unpacked_size)

    @classmethod
    def scanned(cls, path: str, top: str, members: List[Member], texts: Dict[str, str]) -> "ArchiveView":
        """A view of what one scan already read (its members so far, its texts): no second pass."""
        view = cls.__new__(cls)
        view.root, view.top, view.texts, view.sizes = path, top, texts, {m.rel: m.size for m in members}
        view.data = {}
        return view

    def _rel(self, path: str) -> Optional[str]:
        if path == self.root:
            return ""
        if path.startswith(self.root + "/"):
            return path[len(self.root) + 1 :]
        return None

    def exists(self, path: str) -> bool:
        return self.isdir(path) or self._rel(path) in self.sizes

    def isdir(self, path: str) -> bool:
        rel = self._rel(path)
        if rel is None:
            return False
        return rel == "" or any(r.startswith(rel + "/") for r in self.sizes)

    def listdir(self, path: str) -> List[str]:
        rel = self._rel(path)
        prefix = rel + "/" if rel else ""
        return sorted({r[len(prefix) :].split("/", 1)[0] for r in self.sizes if r.startswith(prefix)})

    def list_files(self, path: str) -> List[str]:
        return sorted(self.sizes)

    def read_text(self, path: str) -> str:
        rel = self._rel(path)
        if rel not in self.texts:
            raise HostError("%s is not readable inside %s" % (rel, self.root))
        return self.texts[rel]

    def read_regular(self, path: str, limit: int) -> str:
        """The scan took regular members only (anything else refuses the archive), so this is
        read_text bounded as a Shell bounds it."""
        return self.read_text(path)[:limit]

    def file_size(self, path: str) -> int:
        return self.sizes[self._rel(path)]

    def unpacked_size(self, path: str) -> int:
        """The bytes extract writes of a member (no all-zero chunk): its size unless `data` (store/datasize.py,
        from the manifest's block digests) says less."""
        rel = self._rel(path)
        return self.data.get(rel or "", self.sizes[rel])
