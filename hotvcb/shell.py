"""Run host commands and touch host files locally (SSH: sshshell.py).

Everything hotvcb does to a host goes through a Shell, so the same job runs on
the ESXi host itself (Python 3.8 there) or from a Linux box over SSH. Commands
are argument lists, never shell strings: VM names hold spaces, quotes and
semicolons.

Interruption: the job installs signal handlers that only set a flag
(`interrupt.pending()`); a running command is polled and terminated when the
flag rises, unless the caller runs it with ``interruptible=False`` — the
snapshot removal in cleanup must finish even after Ctrl-C.
"""

import errno
import hashlib
import os
import select
import shutil
import signal
import stat
import subprocess
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Dict, List, Optional, Protocol, Sequence

from . import background, blockdigest, hostdigest, interrupt, treescan
from .errors import CommandFailed, HostError, TimeoutExpired
from .runid import machine_name


@dataclass
class Completed:
    """A finished command as a job judges it: its exit status and everything it said."""

    argv: List[str]
    returncode: int
    output: str  # stdout and stderr interleaved, as an admin would see them

    def check(self) -> "Completed":
        if self.returncode != 0:
            raise CommandFailed(self.argv, self.returncode, self.output)
        return self


@dataclass(frozen=True)
class TreeEntry:
    """One entry of Shell.scan (see treescan.py): `kind` as lstat sees it (dir, file, link,
    other); `size`, `allocated` and `is_dir` follow links (-1 sizes: a dangling link);
    `text` the content of a small file the scan was asked to read, else None; `real` the
    root's realpath, for the root entry only (ScannedShell.realpath: no round trip of its own)."""

    kind: str
    size: int
    allocated: int
    text: Optional[str]
    is_dir: bool
    real: Optional[str] = None


Tree = Dict[str, TreeEntry]  # path relative to the scanned root ("" the root itself) -> entry
OutputCallback = Callable[[str], None]
BlockCallback = Callable[[int], None]


class Readable(Protocol):
    """What open_binary returns: a byte stream the caller closes (a `with` block)."""

    def read(self, n: int = -1) -> bytes: ...

    def close(self) -> None: ...

    def __enter__(self) -> "Readable": ...

    def __exit__(self, *exc: Any) -> Any: ...


class FileReader(Protocol):
    """The read side of a Shell: what planning a restore needs, also from an unopened
    .gz (targz.ArchiveView)."""

    def exists(self, path: str) -> bool: ...

    def isdir(self, path: str) -> bool: ...

    def listdir(self, path: str) -> List[str]: ...

    def list_files(self, folder: str) -> List[str]: ...

    def read_text(self, path: str) -> str: ...

    def read_regular(self, path: str, limit: int) -> str: ...

    def file_size(self, path: str) -> int: ...


class Shell(FileReader, Protocol):
    """Everything hotvcb does to a host's commands and files; one suite tests every
    implementation (tests/test_shell_contract.py): LocalShell here, SshShell.

    Contracts: paths are the host's; commands are argument lists; every
    failure is a HostError (TimeoutExpired for a bounded wait); `write_text`
    is atomic (a reader sees the old file or the new one) and durable once it
    returns (its data and its name; with `sync_folder=False` its data only, for
    a folder whose last write makes every name in it durable at once);
    `make_new_dir` and
    `link_new` are atomic claims that return False when the name exists;
    `age` and `touch` use the host's clock, and `now` is its wall clock (the local
    time the host's `date` shows, naive: backups and our snapshots are named by it,
    as ghettoVCB named them on the host, and their names' ages are told against
    it; an ESXi host keeps UTC, the Linux box driving it may be in any zone
    and off by minutes); `block_digests` computes where the
    file is and returns None only when the host cannot (no python), and with
    `content` "qcow2" digests the image's virtual disk (HostError where it
    cannot: the image is refused, or over SSH file by file); a file
    `open_binary` cannot read raises HostError from the open or the first read;
    `rename` never replaces an existing folder; `file_mode` is the permission bits (07777) `chmod`
    changes, of the file a symlink names; `read_texts` reads many small
    files in one go, leaving out those it cannot read; `read_regular` reads at most
    `limit` bytes of a regular file and refuses (HostError) a symlink, FIFO, device or
    folder without following it or waiting on it; `copy_regular` copies as `copy_file`
    does, byte for byte, a regular file only, refused as `read_regular` refuses one and
    no copy left (over SSH file by file the host's busybox has no no-follow open: its
    type is looked at just before its `cp -P`, which copies a symlink swapped in
    meanwhile as a link, refused then); `scan` is one look at a whole
    folder tree (a missing root gives {}), and None only when the host cannot
    (no python): the caller then asks file by file.
    """

    description: str  # besides FileReader's reads:
    remote: bool  # every call a round trip to another machine (SSH file by file): a file read costs what a command does

    def run(self, argv: Sequence[str], *, timeout: Optional[float] = 600, idle_timeout: Optional[float] = None,
            on_output: Optional[OutputCallback] = None, interruptible: bool = True) -> "Completed": ...

    def write_text(self, path: str, text: str, *, sync_folder: bool = True) -> None: ...

    def now(self) -> datetime: ...

    def open_binary(self, path: str) -> Readable: ...

    def makedirs(self, path: str) -> None: ...

    def make_new_dir(self, path: str) -> bool: ...

    def link_new(self, src: str, dst: str) -> bool: ...

    def age(self, path: str) -> Optional[float]: ...

    def touch(self, path: str) -> None: ...

    def rename(self, src: str, dst: str) -> None: ...

    def remove_tree(self, path: str) -> None: ...

    def copy_file(self, src: str, dst: str) -> None: ...

    def copy_regular(self, src: str, dst: str) -> None: ...

    def disk_usage(self, path: str) -> int: ...

    def symlink(self, target: str, link: str) -> None: ...

    def chmod(self, path: str, mode: int) -> None: ...

    def file_mode(self, path: str) -> int: ...

    # "<device>:<inode>" of the file a path leads to (links followed): one file under any of its names (a
    # symlinked folder, a bind mount, a hard link)
    def file_id(self, path: str) -> str: ...

    def realpath(self, path: str) -> str: ...

    def sha256(self, path: str, on_block: Optional[BlockCallback] = None) -> str: ...

    def block_digests(self, path: str, block_size: int, whole: bool,
                      on_block: Optional[BlockCallback] = None, content: str = "") -> Optional[Dict[str, Any]]: ...

    def make_tar_gz(self, folder: str, dst: str, arcname: str, first: Sequence[str] = (),
                    skip: Sequence[str] = ()) -> None: ...

    def scan(self, root: str, read: Sequence[str] = (), read_max: int = 65536) -> Optional[Tree]: ...

    def read_texts(self, paths: Sequence[str]) -> Dict[str, str]: ...


NOT_REGULAR = "not a regular file"  # read_regular's (and copy_regular's) refusal, the same from every shell
COPY_BLOCK = 1 << 20


def read_small(fs: FileReader, path: str, limit: int) -> str:
    """A small file anyone may have planted (a backup's .vmx, .vmsd, STATUS), read whole with
    read_regular (no FIFO, device or symlink), or refused (HostError) past `limit` rather than
    read in part."""
    size = fs.file_size(path)
    if size > limit:
        raise HostError("cannot read %s: %d bytes, more than a file of its kind holds" % (path, size))
    return fs.read_regular(path, max(size, 1))  # not `limit`: a reader may size its buffer by it (a GiB for a manifest)


def decoded(data: bytes) -> str:
    """A file's text as read_text gives it: UTF-8, else Latin-1 (a .vmx of any age decodes)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def encoded(text: str, size: int) -> bytes:
    """The `size` bytes `decoded` read `text` from: Latin-1 gives one character a byte, UTF-8 fewer
    wherever the two differ (`é` is C3 A9 in UTF-8, E9 in Latin-1: the text alone cannot tell)."""
    return text.encode("latin-1" if len(text) == size else "utf-8")


def tree_of(raw: Dict[str, Any]) -> Tree:
    """treescan.py's JSON entries as TreeEntry values."""
    return {rel: TreeEntry(str(e[0]), int(e[1]), int(e[2]), e[3], bool(e[4]), str(e[5]) if len(e) > 5 else None)
            for rel, e in raw.items()}


class LocalShell:
    """The host is this machine (hotvcb runs on the ESXi host itself)."""

    description = "local (%s)" % machine_name()
    remote = False

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: Optional[float] = 600,
        idle_timeout: Optional[float] = None,
        on_output: Optional[OutputCallback] = None,
        interruptible: bool = True,
        preexec_fn: Optional[Callable[[], None]] = None,
    ) -> Completed:
        """Run argv; feed each output fragment (split on CR/LF) to on_output.

        vmkfstools redraws its progress line with carriage returns, so output
        is read as it comes rather than at exit. `idle_timeout` bounds a copy
        that may rightly take hours by how long it may stay silent instead.
        """
        argv = [str(a) for a in argv]
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # our signal handling decides its fate
                preexec_fn=preexec_fn,  # tether.py: one that must die with hotvcb
            )
        except OSError as err:
            raise HostError("cannot run %s: %s" % (argv[0], err.strerror or err)) from err
        return stream(proc, argv, timeout=timeout, idle_timeout=idle_timeout,
                      on_output=on_output, interruptible=interruptible)

    # -- files -------------------------------------------------------------
    def read_text(self, path: str) -> str:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as err:
            raise HostError("cannot read %s: %s" % (path, err.strerror)) from err
        return decoded(data)

    def read_regular(self, path: str, limit: int) -> str:
        """For files anyone may have planted (restore records): a FIFO would block the open
        or read, a symlink lead elsewhere, a huge file fill memory."""
        try:
            with blockdigest.open_regular(path, follow=False) as f:
                return decoded(f.read(limit))
        except OSError as err:
            why = NOT_REGULAR if err.errno == errno.ELOOP else err.strerror  # else open_regular's own
            raise HostError("cannot read %s: %s" % (path, why)) from err

    def open_binary(self, path: str):
        """A binary file object reading path from its start (hashing, archives)."""
        try:
            return open(path, "rb")
        except OSError as err:
            raise HostError("cannot read %s: %s" % (path, err.strerror)) from err

    def write_text(self, path: str, text: str, *, sync_folder: bool = True) -> None:
        """Write atomically: temp file, fsync, rename, fsync the folder (`sync_folder`).

        The temp name is the writer's own: two runs recording one file at once (two verifies of
        one backup) would otherwise rename each other's half-written temp into place. A writer
        filling a folder of its own leaves the folder's fsync to its last write there: one fsync
        then makes every name in it durable, where each write's own cost one each (seal.py).
        """
        folder = os.path.dirname(path) or "."
        tmp = os.path.join(folder, ".%s.%s.tmp" % (os.path.basename(path), temp_tag()))
        try:
            with open(tmp, "wb") as f:
                f.write(text.encode("utf-8"))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            if sync_folder:
                fsync_dir(folder)
        except OSError as err:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise HostError("cannot write %s: %s" % (path, err.strerror)) from err

    def exists(self, path: str) -> bool:
        return os.path.lexists(path)

    def isdir(self, path: str) -> bool:
        return os.path.isdir(path)

    def listdir(self, path: str) -> List[str]:
        try:
            return sorted(os.listdir(path))
        except OSError as err:
            raise HostError("cannot list %s: %s" % (path, err.strerror)) from err

    def makedirs(self, path: str) -> None:
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as err:
            raise HostError("cannot create %s: %s" % (path, err.strerror)) from err

    def list_files(self, folder: str) -> List[str]:
        """Every file under folder, as sorted paths relative to it."""
        out = []
        for root, _dirs, files in os.walk(folder):
            for name in files:
                out.append(os.path.relpath(os.path.join(root, name), folder))
        return sorted(out)

    def make_tar_gz(self, folder: str, dst: str, arcname: str, first: Sequence[str] = (),
                    skip: Sequence[str] = ()) -> None:
        """tar+gzip a folder the way ghettoVCB's compressed backups are laid out.

        Members named in `first` come first (the manifest and STATUS, so a
        reader finds them without reading the disks); `skip` are left out.
        """
        import tarfile

        rels = [r for r in self.list_files(folder) if r not in skip]
        ordered = [r for r in first if r in rels] + [r for r in rels if r not in first]
        try:
            with tarfile.open(dst, "w:gz") as tar:
                tar.add(folder, arcname=arcname, recursive=False)
                for rel in ordered:
                    tar.add(os.path.join(folder, rel), arcname=arcname + "/" + rel, recursive=False)
            with open(dst, "rb+") as f:
                os.fsync(f.fileno())
        except (OSError, tarfile.TarError) as err:
            raise HostError("cannot compress %s: %s" % (folder, err)) from err

    def make_new_dir(self, path: str) -> bool:
        """Create path; False if it already exists (the atomic claim of a name)."""
        try:
            os.mkdir(path)
            return True
        except FileExistsError:
            return False
        except OSError as err:
            raise HostError("cannot create %s: %s" % (path, err.strerror)) from err

    def link_new(self, src: str, dst: str) -> bool:
        """Hard-link src as dst; False if dst exists (an atomic create-with-content, NFS-safe)."""
        try:
            os.link(src, dst)
        except FileExistsError:
            return False
        except OSError as err:
            raise HostError("cannot link %s to %s: %s" % (src, dst, err.strerror)) from err
        fsync_dir(os.path.dirname(dst) or ".")
        return True

    def now(self) -> datetime:
        return datetime.now()

    def age(self, path: str) -> Optional[float]:
        """Seconds since path was last modified, by this host's clock; None if it is gone."""
        try:
            return max(0.0, time.time() - os.stat(path).st_mtime)
        except FileNotFoundError:
            return None
        except OSError as err:
            raise HostError("cannot stat %s: %s" % (path, err.strerror)) from err

    def touch(self, path: str) -> None:
        """Mark path as modified now (a heartbeat); a missing path stays missing."""
        try:
            os.utime(path, None)
        except FileNotFoundError:
            pass
        except OSError as err:
            raise HostError("cannot touch %s: %s" % (path, err.strerror)) from err

    def rename(self, src: str, dst: str) -> None:
        """Rename src to dst; an existing folder dst is an error (os.rename would replace an empty one)."""
        if os.path.isdir(dst) and not os.path.islink(dst):
            raise HostError("cannot rename %s to %s: File exists" % (src, dst))
        try:
            os.rename(src, dst)
            fsync_dir(os.path.dirname(dst) or ".")
        except OSError as err:
            raise HostError("cannot rename %s to %s: %s" % (src, dst, err.strerror)) from err

    def remove_tree(self, path: str) -> None:
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            elif os.path.lexists(path):
                os.unlink(path)
        except OSError as err:
            raise HostError("cannot remove %s: %s" % (path, err.strerror)) from err

    def copy_file(self, src: str, dst: str) -> None:
        try:
            shutil.copyfile(src, dst)
            with open(dst, "rb+") as f:
                os.fsync(f.fileno())
        except OSError as err:
            raise HostError("cannot copy %s to %s: %s" % (src, dst, err.strerror)) from err

    def copy_regular(self, src: str, dst: str) -> None:
        """copy_file of a file anyone may have planted (a backup's .nvram): opened without following a
        symlink or waiting on a FIFO, so what is copied is the regular file that was opened."""
        try:
            with blockdigest.open_regular(src, follow=False) as f, open(dst, "wb") as out:
                shutil.copyfileobj(f, out, COPY_BLOCK)
                out.flush()
                os.fsync(out.fileno())
        except OSError as err:
            why = NOT_REGULAR if err.errno == errno.ELOOP else err.strerror  # else open_regular's own
            raise HostError("cannot copy %s to %s: %s" % (src, dst, why)) from err

    def file_size(self, path: str) -> int:
        return _stat(path).st_size

    def disk_usage(self, path: str) -> int:
        """Bytes allocated on disk (thin files are smaller than their size)."""
        return _stat(path).st_blocks * 512

    def symlink(self, target: str, link: str) -> None:
        """Point link at target, replacing an older link atomically."""
        tmp = link + ".tmp"
        try:
            if os.path.lexists(tmp):
                os.unlink(tmp)
            os.symlink(target, tmp)
            os.replace(tmp, link)
        except OSError as err:
            raise HostError("cannot link %s: %s" % (link, err.strerror)) from err

    def chmod(self, path: str, mode: int) -> None:
        os.chmod(path, mode)

    def file_mode(self, path: str) -> int:
        return stat.S_IMODE(_stat(path).st_mode)

    def file_id(self, path: str) -> str:
        found = _stat(path)
        return "%d:%d" % (found.st_dev, found.st_ino)

    def realpath(self, path: str) -> str:
        return os.path.realpath(path)

    def block_digests(self, path: str, block_size: int, whole: bool,
                      on_block: Optional[Callable[[int], None]] = None, content: str = "") -> Optional[Dict[str, Any]]:
        """blockdigest.py's digests of a file, read here with its holes skipped (of the virtual disk
        it holds with `content` "qcow2")."""
        return hostdigest.local(path, block_size, whole, on_block, content)

    def scan(self, root: str, read: Sequence[str] = (), read_max: int = 65536) -> Optional[Tree]:
        """Every entry under root with its type, size and allocated bytes, and the text of
        the small files whose base name matches a pattern in `read` (treescan.py)."""
        return tree_of(treescan.scan(root, tuple(read), read_max))

    def read_texts(self, paths: Sequence[str]) -> Dict[str, str]:
        """The text of each path that can be read (as read_text decodes it); others left out."""
        out = {}
        for path in paths:
            try:
                out[path] = self.read_text(path)
            except HostError:
                continue
        return out

    def sha256(self, path: str, on_block: Optional[Callable[[int], None]] = None) -> str:
        """Hash a file; sparse holes read as zeros like any reader sees them."""
        h = hashlib.sha256()
        try:
            with open(path, "rb") as f:
                while True:
                    if interrupt.pending():
                        interrupt.raise_pending()
                    block = f.read(1 << 20)
                    if not block:
                        break
                    h.update(block)
                    if on_block is not None:
                        on_block(len(block))
        except OSError as err:
            raise HostError("cannot read %s: %s" % (path, err.strerror)) from err
        return h.hexdigest()


def temp_tag() -> str:
    """A temp-file tag no other writer uses at the same time: this process, this thread, a random part."""
    return "%d-%d-%s" % (os.getpid(), threading.get_ident() % 100000, os.urandom(3).hex())


def _stat(path: str) -> os.stat_result:
    """The file's stat (a symlink followed), or the HostError the shell contract raises for any file it
    cannot look at, as SshShell's does (a dangling symlink, a folder taken away)."""
    try:
        return os.stat(path)
    except OSError as err:
        raise HostError("cannot stat %s: %s" % (path, err.strerror)) from err


def fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def stream(
    proc: "subprocess.Popen",
    argv: List[str],
    *,
    timeout: Optional[float],
    idle_timeout: Optional[float],
    on_output: Optional[OutputCallback],
    interruptible: bool,
) -> Completed:
    """Read a started child's merged output until it exits; the shared core of run().

    `proc` must have been started in its own session with stdout a pipe
    (stderr merged into it); `argv` is the command as the user should see it.
    The child (and its group) is stopped on timeout, idle timeout, a pending
    interrupt, its Background given up, and whatever else goes wrong while reading.
    """
    chunks = []  # type: List[bytes]
    pending = b""
    deadline = None if timeout is None else time.monotonic() + timeout
    quiet_since = time.monotonic()
    out = proc.stdout
    if out is None:
        raise ValueError("stream() needs a child whose stdout is a pipe")
    fd = out.fileno()

    def bounds() -> None:
        """Stop the child once its answer is given up, on a pending interrupt or past the deadline."""
        if background.given_up():
            _stop(proc)
            raise background.Cancelled()
        if interruptible and interrupt.pending():
            _stop(proc)
            interrupt.raise_pending()
        if deadline is not None and time.monotonic() > deadline:
            _stop(proc)
            raise TimeoutExpired(" ".join(argv[:2]), timeout or 0.0)

    try:
        while True:
            bounds()
            if idle_timeout is not None and time.monotonic() - quiet_since > idle_timeout:
                _stop(proc)
                raise TimeoutExpired("output from " + " ".join(argv[:2]), idle_timeout)
            ready, _, _ = select.select([fd], [], [], 0.2)
            if not ready:
                continue
            data = os.read(fd, 65536)
            if not data:
                break
            chunks.append(data)
            quiet_since = time.monotonic()
            if on_output is not None:
                pending += data
                pending = _feed(pending, on_output)
        # the output is closed, but the child may live on (a shell that exec'd a command whose
        # output goes elsewhere): the same bounds apply to waiting for it
        while True:
            try:
                proc.wait(0.2)
                break
            except subprocess.TimeoutExpired:
                bounds()
    finally:
        if proc.poll() is None:
            _stop(proc)
        out.close()
    if on_output is not None and pending:
        on_output(pending.decode("utf-8", "replace"))
    return Completed(argv, proc.returncode, b"".join(chunks).decode("utf-8", "replace"))


def _feed(pending: bytes, callback: OutputCallback) -> bytes:
    """Hand complete CR/LF-terminated fragments to callback, keep the rest."""
    while True:
        cut = -1
        for sep in (b"\r", b"\n"):
            i = pending.find(sep)
            if i != -1 and (cut == -1 or i < cut):
                cut = i
        if cut == -1:
            return pending
        piece, pending = pending[:cut], pending[cut + 1 :]
        if piece:
            callback(piece.decode("utf-8", "replace"))


def _stop(proc: "subprocess.Popen") -> None:
    """Terminate a child and its group; kill it if it does not go in 10 s."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except OSError:
            pass
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue
