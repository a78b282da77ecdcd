"""Run host commands and touch host files locally: the Shell (shell.py) of hotvcb running on the host itself.

A command's output is read as it comes, and the command stopped on a timeout or an interrupt, by
cmdstream.py (shared with SshShell); a tethered one's under SSH mode's wrapper by wrapperrun.py, as over SSH.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import time
from datetime import datetime
from typing import Any, Callable, Dict, List, Optional, Sequence

from . import blockdigest, hostdigest, interrupt, norename, sshscripts, treescan, wrapperrun
from .cmdstream import stream
from .errors import HostError
from .filetext import decoded, temp_name, temp_tag
from .namefit import fit
from .runid import machine_name
from .shell import NOT_REGULAR, Completed, OutputCallback, Tree, tree_of

COPY_BLOCK = 1 << 20
SH = "/bin/sh"  # ESXi's busybox ash, as SSH mode's wrapper runs in


def _write_replacing(tmp: str, path: str, data: bytes) -> None:
    """`data` into the temp file `tmp`, made durable, then renamed over `path`; the temp removed when that fails."""
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


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
        tethered: bool = False,
    ) -> Completed:
        """Run argv; feed each output fragment (split on CR/LF) to on_output.

        vmkfstools redraws its progress line with carriage returns, so output
        is read as it comes rather than at exit. `idle_timeout` bounds a copy
        that may rightly take hours by how long it may stay silent instead.
        `tethered` (tether.py): argv runs under SSH mode's wrapper (sshscripts.WRAPPER), which ends it and its
        children when its stdin, a pipe only we hold, closes: when we end, also by a SIGKILL. A stop
        (timeout, interrupt) returns once the command has gone, the wrapper waiting for it; a command
        killed by signal N then exits 128+N (sshscripts.killed_by), as over SSH.
        """
        argv = [str(a) for a in argv]
        try:
            proc = subprocess.Popen(
                [SH, "-c", sshscripts.WRAPPER, "hotvcb"] + argv if tethered else argv,
                stdin=subprocess.PIPE if tethered else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # our signal handling decides its fate
            )
        except OSError as err:
            raise HostError("cannot run %s: %s" % (argv[0], err.strerror or err)) from err
        if tethered:
            return wrapperrun.follow(proc, argv, "", timeout=timeout, idle_timeout=idle_timeout,
                                     on_output=on_output, interruptible=interruptible)
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

    def write_text(self, path: str, text: str, *, sync_folder: bool = True,
                   keep_folder_time: bool = False) -> None:
        """Write atomically: temp file, fsync, rename, fsync the folder (`sync_folder`).

        The temp name is the writer's own: two runs recording one file at once (two verifies of
        one backup) would otherwise rename each other's half-written temp into place. A writer
        filling a folder of its own leaves the folder's fsync to its last write there: one fsync
        then makes every name in it durable, where each write's own cost one each (seal.py).
        `keep_folder_time`: the folder's times are set back after the rename, or after a write that failed
        (verify's record in a finished backup must not make it the newest to ghettoVCB's `ls -t` rotation).
        """
        self.write_bytes(path, text.encode("utf-8"), sync_folder=sync_folder, keep_folder_time=keep_folder_time)

    def write_bytes(self, path: str, data: bytes, *, sync_folder: bool = True,
                    keep_folder_time: bool = False) -> None:
        """write_text's, for a file that is no text (a restored snapshot's state file, restore_vmsn.py)."""
        folder = os.path.dirname(path) or "."
        tmp = os.path.join(folder, temp_name(os.path.basename(path)))
        try:
            before = os.stat(folder) if keep_folder_time else None
            try:
                _write_replacing(tmp, path, data)
            finally:  # a write that failed made and removed its temp file there too (a full volume)
                if before is not None:
                    os.utime(folder, ns=(before.st_atime_ns, before.st_mtime_ns))
            if sync_folder:
                fsync_dir(folder)
        except OSError as err:
            raise HostError("cannot write %s: %s" % (path, err.strerror)) from err

    def exists(self, path: str) -> bool:
        return os.path.lexists(path)

    def isdir(self, path: str) -> bool:
        return os.path.isdir(path)

    def absent(self, path: str) -> bool:
        """Whether nothing is at path, proven (the Shell contract's): os.path's looks say False of any error."""
        try:
            os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            return True
        except OSError as err:
            raise HostError("cannot stat %s: %s" % (path, err.strerror)) from err
        return False

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
        """The regular files under folder, as sorted paths relative to it (the Shell contract's: no symlink,
        FIFO or device; os.walk follows no link down, but names links to files and dangling ones as files). A folder
        it cannot list (gone, no folder, unreadable) is a HostError, as `find` fails over SSH: os.walk passed over
        it, and a backup folder removed while it was judged read as one holding nothing."""
        out = []  # type: List[str]
        for root, _dirs, files in os.walk(folder, onerror=_unlistable):
            out.extend(os.path.relpath(os.path.join(root, name), folder) for name in files
                       if _regular(os.path.join(root, name)))
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
        """Hard-link src as dst; False if dst exists (an atomic create-with-content, NFS-safe). Where the
        file system has no hard links (vfat, exFAT, some CIFS/FUSE mounts: EPERM, EOPNOTSUPP), a copy of src
        is renamed to dst unless dst exists (norename.rename_new), which claims it as atomically: QEMU
        images kept on such a disk took no snapshot at all ("cannot link")."""
        try:
            os.link(src, dst)
        except FileExistsError:
            return False
        except OSError as err:
            if err.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS) or not norename.available():
                raise HostError("cannot link %s to %s: %s" % (src, dst, err.strerror)) from err
            if not self._copy_new(src, dst):
                return False
        fsync_dir(os.path.dirname(dst) or ".")
        return True

    def _copy_new(self, src: str, dst: str) -> bool:
        """link_new without a hard link: src copied beside dst, renamed to dst unless dst exists."""
        tmp = os.path.join(os.path.dirname(dst), fit("", os.path.basename(dst), "." + temp_tag()))
        try:
            shutil.copyfile(src, tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            return norename.rename_new(tmp, dst)
        except OSError as err:
            raise HostError("cannot claim %s with a copy of %s: %s" % (dst, src, err.strerror or err)) from err
        finally:
            if os.path.lexists(tmp):
                os.unlink(tmp)

    def now(self) -> datetime:
        return datetime.now()

    def age(self, path: str) -> Optional[float]:
        """Seconds since path was last modified, by this host's clock (negative: dated ahead of it,
        clockage.py); None if it is gone."""
        try:
            return time.time() - os.stat(path).st_mtime
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
        import hashlib  # version-1 entries only: blockdigest hashes the others

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



def _stat(path: str) -> os.stat_result:
    """The file's stat (a symlink followed), or the HostError the shell contract raises for any file it
    cannot look at, as SshShell's does (a dangling symlink, a folder taken away)."""
    try:
        return os.stat(path)
    except OSError as err:
        raise HostError("cannot stat %s: %s" % (path, err.strerror)) from err


def _unlistable(err: OSError) -> None:
    """os.walk's onerror for list_files: the folder it could not list, as the contract's HostError."""
    raise HostError("cannot list %s: %s" % (err.filename, err.strerror)) from err


def _regular(path: str) -> bool:
    """Whether path is a regular file as lstat sees it (False once gone: a listing's race, as os.walk's)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


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
