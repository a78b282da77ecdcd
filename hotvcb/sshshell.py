"""The Shell interface over SSH: run hotvcb from a Linux box against an ESXi host.

`SshShell` offers what `LocalShell` offers (run, read_text, write_text, ...), carried out on the
remote host over its SSH connection (sshconnection.py: the master, its sessions, `run`, and telling
a broken session from a failed command). Each file operation is one busybox-compatible shell snippet
(sshscripts.py, with the readers of their answers) run in one session: a call costs one round trip.
Long operations (hashing, compressing) go through the interruptible `run` path.
"""

import json
import pkgutil
import posixpath
import subprocess
import tarfile
import tempfile
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from . import hostdigest, lazyre, sshscripts as sh
from .errors import HostError
from .filetext import decoded, temp_name
from .shell import Tree, tree_of
from .sshconnection import FILE_OP_TIMEOUT, SshConnection, SshTarget

# a scan's answer carries the host's clock; trusted for our clock only from a round trip this short
# (its middle is then within half of it of the moment the host read its clock, as `date`'s is)
CLOCK_TRIP_MAX = 1.0
_OCTAL_MODE = lazyre.compile(r"[0-7]{1,5}")  # `stat -c %a`: the permission bits in octal
_FILE_ID = lazyre.compile(r"[0-9]{1,30}:[0-9]{1,30}")  # `stat -c %d:%i`


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, timezone.utc).replace(tzinfo=None)


class SshShell(SshConnection):
    """The host is at the other end of an SSH connection."""

    remote = True

    def __init__(self, target: SshTarget, say: Optional[Callable[[str], None]] = None):
        super().__init__(target, say)
        self._clock = None  # type: Optional[timedelta]  # the host's wall clock less ours, asked once

    # -- snippets --------------------------------------------------------------
    def _must(self, what: str, script: str, *args: str, data: Optional[bytes] = None,
              timeout: Optional[float] = FILE_OP_TIMEOUT) -> bytes:
        rc, out, err = self._call(script, *args, data=data, timeout=timeout)
        if rc != 0:
            raise HostError("%s: %s" % (what, sh.reason(err) or "exit %d" % rc))
        return out

    def _test(self, script: str, path: str) -> bool:
        rc, _out, err = self._call(script, path)
        if rc > 1:
            raise HostError("cannot check %s: %s" % (path, sh.reason(err) or "exit %d" % rc))
        return rc == 0

    def _streamed(self, what: str, script: str, *args: str) -> str:
        """A long snippet through run(): interruptible, and killed remotely when stopped."""
        done = self.run(["sh", "-c", script, "hotvcb"] + list(args), timeout=None)
        if done.returncode != 0:
            raise HostError("%s: %s" % (what, sh.reason(done.output) or "exit %d" % done.returncode))
        return done.output

    # -- files ---------------------------------------------------------------
    def read_text(self, path: str) -> str:
        return decoded(self._must("cannot read %s" % path, sh.READ, path))

    def read_regular(self, path: str, limit: int) -> str:
        return decoded(self._must("cannot read %s" % path, sh.READ_REGULAR, path, str(limit)))

    def open_binary(self, path: str) -> "sh.RemoteReader":
        """A binary stream of a host file (`cat` over the shared connection).

        Lets verify, archive reads and restore read host files from the Linux
        box; the caller closes it, which waits for (or stops) the remote cat.
        """
        self.open()
        mark = sh.new_mark()
        errout = tempfile.TemporaryFile(dir=self._dir)
        try:
            proc = self._session(sh.begun(mark, sh.join(["cat", "--", path]), stderr=True), stdin=subprocess.DEVNULL,
                                 stderr=errout.fileno())
        except HostError:
            errout.close()
            raise
        return sh.RemoteReader(proc, path, mark, self._broken, errout)

    def write_text(self, path: str, text: str, *, sync_folder: bool = True,
                   keep_folder_time: bool = False) -> None:
        """Write atomically: temp file in the same folder, sync, rename. The host's `sync` has no
        folder of its own to leave out (`sync_folder`): each write is as durable as it gets."""
        self.write_bytes(path, text.encode("utf-8"), sync_folder=sync_folder, keep_folder_time=keep_folder_time)

    def write_bytes(self, path: str, data: bytes, *, sync_folder: bool = True,
                    keep_folder_time: bool = False) -> None:
        """write_text's, for a file that is no text (a restored snapshot's state file, restore_vmsn.py).
        `keep_folder_time`: the folder's time is kept on a file of the host's /tmp meanwhile (`touch -r`)."""
        folder, name = _split(path)
        tmp = "%s/%s" % (folder, temp_name(name))  # the writer's own, as LocalShell's
        if keep_folder_time:
            self._must("cannot write %s" % path, sh.WRITE_KEEPING_FOLDER_TIME, path, tmp, folder, data=data)
        else:
            self._must("cannot write %s" % path, sh.WRITE, path, tmp, data=data)

    def exists(self, path: str) -> bool:
        return self._test(sh.EXISTS, path)

    def isdir(self, path: str) -> bool:
        return self._test(sh.ISDIR, path)

    def absent(self, path: str) -> bool:
        """Whether nothing is at path, proven (the Shell contract's): `[ -e ]` fails alike on an NFS share that
        does not answer; ls's error says which. One round trip, asked only after a read failed."""
        rc, _out, err = self._call(sh.LSTAT, path)
        if rc == 0:
            return False
        why = sh.reason(err)
        if why in sh.ABSENT_WHY:
            return True
        raise HostError("cannot stat %s: %s" % (path, why or "exit %d" % rc))

    def listdir(self, path: str) -> List[str]:
        out = self._must("cannot list %s" % path, sh.LIST, path)
        names = out.decode("utf-8", "surrogateescape").split("\n")
        return sorted(n for n in names if n not in ("", ".", ".."))

    def makedirs(self, path: str) -> None:
        self._must("cannot create %s" % path, sh.MAKEDIRS, path)

    def make_new_dir(self, path: str) -> bool:
        """Create path; False if it already exists (the atomic claim of a name)."""
        rc, _out, err = self._call(sh.MAKE_NEW_DIR, path)
        if rc == 3:
            return False
        if rc != 0:
            raise HostError("cannot create %s: %s" % (path, sh.reason(err) or "exit %d" % rc))
        return True

    def list_files(self, folder: str) -> List[str]:
        """The regular files under folder, as sorted paths relative to it (`find -type f`: the Shell contract's)."""
        out = self._must("cannot list %s" % folder, sh.LIST_FILES, folder)
        names = out.decode("utf-8", "surrogateescape").split("\n")
        return sorted(n[2:] for n in names if n.startswith("./"))

    def make_tar_gz(self, folder: str, dst: str, arcname: str, first: Sequence[str] = (),
                    skip: Sequence[str] = ()) -> None:
        """tar+gzip folder as <arcname>/... like LocalShell.make_tar_gz (same member order).

        busybox tar cannot rename members, so the folder is archived through a
        link named arcname, with -h (backup folders hold no links of their
        own), naming each file so `first` lead and `skip` stay out.
        """
        rels = [r for r in self.list_files(folder) if r not in skip]
        ordered = [r for r in first if r in rels] + [r for r in rels if r not in first]
        members = [sh.member(arcname + "/" + r) for r in ordered]
        self._streamed("cannot compress %s" % folder, sh.TAR_GZ, folder, dst, arcname, *members)

    def link_new(self, src: str, dst: str) -> bool:
        """Hard-link src as dst; False if dst exists (an atomic create-with-content)."""
        rc, _out, err = self._call(sh.LINK_NEW, src, dst)
        if rc == 3:
            return False
        if rc != 0:
            raise HostError("cannot link %s to %s: %s" % (src, dst, sh.reason(err) or "exit %d" % rc))
        return True

    def age(self, path: str) -> Optional[float]:
        """Seconds since path was last modified, by the host's clock (negative: dated ahead of it,
        clockage.py); None if it is gone."""
        rc, out, err = self._call(sh.AGE, path)
        if rc == 3:
            return None
        if rc != 0:
            raise HostError("cannot stat %s: %s" % (path, sh.reason(err) or "exit %d" % rc))
        return float(out.split()[0])

    def now(self) -> datetime:
        """Our clock (UTC, so that neither our zone nor its summer time moves it) plus the difference to the
        host's wall clock, asked once per connection (one round trip: the host's zone and drift stay)."""
        if self._clock is None:
            before = time.time()
            rc, out, err = self._call(sh.NOW)
            try:
                if rc != 0:
                    raise ValueError(sh.reason(err) or "exit %d" % rc)
                self._set_clock(out.decode("ascii").strip(), before, time.time())
            except ValueError as err:  # (UnicodeDecodeError is one)
                raise HostError("cannot read the clock of %s: %s" % (self.target.destination, err)) from err
        assert self._clock is not None
        return _utc(time.time()) + self._clock

    def _set_clock(self, theirs: str, before: float, after: float) -> None:
        """The host's wall clock `theirs` (`date`'s format), read between our `before` and `after`."""
        middle = _utc((before + after) / 2)
        self._clock = timedelta(seconds=round((datetime.strptime(theirs, "%Y-%m-%d %H:%M:%S") - middle).total_seconds()))

    def touch(self, path: str) -> None:
        self._must("cannot touch %s" % path, sh.TOUCH, path)

    def rename(self, src: str, dst: str) -> None:
        self._must("cannot rename %s to %s" % (src, dst), sh.RENAME, src, dst)

    def remove_tree(self, path: str) -> None:
        self._must("cannot remove %s" % path, sh.REMOVE, path, timeout=None)

    def copy_file(self, src: str, dst: str) -> None:
        self._must("cannot copy %s to %s" % (src, dst), sh.COPY, src, dst, timeout=None)

    def copy_regular(self, src: str, dst: str) -> None:
        """Bounded by FILE_OP_TIMEOUT: a FIFO swapped in after the host's look would block its cp."""
        self._must("cannot copy %s to %s" % (src, dst), sh.COPY_REGULAR, src, dst)

    def file_size(self, path: str) -> int:
        return int(self._must("cannot stat %s" % path, sh.SIZE, path).split()[0])

    def disk_usage(self, path: str) -> int:
        """Bytes allocated on disk (thin files are smaller than their size)."""
        blocks, unit = self._must("cannot stat %s" % path, sh.USAGE, path).split()[:2]
        return int(blocks) * int(unit)

    def symlink(self, target: str, link: str) -> None:
        """Point link at target, replacing an older link."""
        self._must("cannot link %s" % link, sh.SYMLINK, target, link)

    def chmod(self, path: str, mode: int) -> None:
        self._must("cannot chmod %s" % path, sh.CHMOD, path, "%04o" % mode)

    def file_mode(self, path: str) -> int:
        out = self._must("cannot stat %s" % path, sh.MODE, path).decode("ascii", "replace").strip()
        if not _OCTAL_MODE.fullmatch(out):
            raise HostError("cannot stat %s: the host's stat gave %r for its mode" % (path, out[:40]))
        return int(out, 8)

    def file_id(self, path: str) -> str:
        out = self._must("cannot stat %s" % path, sh.FILE_ID, path).decode("ascii", "replace").strip()
        if not _FILE_ID.fullmatch(out):
            raise HostError("cannot stat %s: the host's stat gave %r for its device and inode" % (path, out[:40]))
        return out

    def realpath(self, path: str) -> str:
        """Like os.path.realpath: a missing last part is kept as written, `..` folded."""
        path = posixpath.normpath(path)
        out = self._must("cannot resolve %s" % path, sh.REALPATH, path)
        return out.decode("utf-8", "surrogateescape").rstrip("\n") or path

    def block_digests(self, path: str, block_size: int, whole: bool,
                      on_block: Optional[Callable[[int], None]] = None, content: str = "") -> Optional[Dict[str, Any]]:
        """blockdigest.py run by the host's python (one JSON line back); None: it has none.
        A qcow2's virtual disk is read by hotvcb running on the host (onhost.py), not file by file."""
        if content:
            raise HostError("cannot read the disk in %s file by file over SSH: verify it with hotvcb on the host "
                            "(without --file-by-file)" % path)
        return hostdigest.by_command(self.run, path, block_size, whole, on_block)

    def scan(self, root: str, read: Sequence[str] = (), read_max: int = 65536) -> Optional[Tree]:
        """treescan.py run by the host's python: a whole folder tree in one round trip.
        None when the host has no python (an old ESXi): the caller asks file by file."""
        source = pkgutil.get_data(__package__, "treescan.py")
        if source is None:
            raise RuntimeError("treescan.py is not readable from the package")
        # a bounded read like every other file call here, so not stopped by a pending signal: cleanup
        # (a consolidation's wait, failing the -partial folder) reads folders through scans too
        before = time.time()
        done = self.run(self.python_argv(source.decode("utf-8"), root, str(read_max), *read), timeout=FILE_OP_TIMEOUT,
                        interruptible=False)
        after = time.time()
        if done.returncode == 127:
            return None
        lines = [l for l in done.output.splitlines() if l.startswith("{")]
        try:
            if done.returncode != 0:
                raise ValueError("exit %d" % done.returncode)
            answer = json.loads(lines[-1])
            tree = tree_of(answer["entries"])
        except (IndexError, KeyError, TypeError, ValueError) as err:
            raise HostError("cannot scan %s: %s" % (root, sh.last_line(done.output) or err))
        if self._clock is None and after - before <= CLOCK_TRIP_MAX and isinstance(answer.get("now"), str):
            try:
                self._set_clock(answer["now"], before, after)
            except ValueError:
                pass  # now() asks `date` itself, and says what is wrong with its answer
        return tree

    def read_texts(self, paths: Sequence[str]) -> Dict[str, str]:
        """Many small files in one round trip: the host's tar packs those it can read
        (busybox tar too; no python needed); missing or unreadable ones are left out."""
        paths = [p for p in paths if p.startswith("/")]
        if not paths:
            return {}
        rc, out, err = self._call(sh.READ_MANY, *paths)
        if rc != 0:
            raise HostError("cannot read %d files: %s" % (len(paths), sh.reason(err) or "exit %d" % rc))
        try:
            return sh.texts_of(out, paths)
        except tarfile.TarError as exc:
            if out:
                raise HostError("cannot read %d files: %s" % (len(paths), exc)) from exc
            return {}

    def sha256(self, path: str, on_block: Optional[Callable[[int], None]] = None) -> str:
        """Hash a file on the host (sha256sum there: the data never crosses the wire)."""
        mark = sh.new_mark()
        out = self._streamed("cannot read %s" % path, sh.SHA256, path, mark)
        digest = sh.sha256_of(out, mark)
        if not digest:
            raise HostError("cannot read %s: unexpected sha256sum output %r" % (path, out[:200]))
        if on_block is not None:
            on_block(self.file_size(path))
        return digest


def _split(path: str) -> Tuple[str, str]:
    folder, _, name = path.rpartition("/")
    return (folder if path.startswith("/") or folder else "."), name
