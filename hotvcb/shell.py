"""The Shell contract: what every way of reaching a host offers (LocalShell, SshShell).

Everything hotvcb does to a host goes through a Shell, so the same job runs on
the ESXi host itself (Python 3.8 there) or from a Linux box over SSH. Commands
are argument lists, never shell strings: VM names hold spaces, quotes and
semicolons. This module holds the Protocols jobs and drivers are typed against
and the values that cross them; the implementations are localshell.py and
sshshell.py, the command runner they share cmdstream.py, and the file-text
conventions every caller shares filetext.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Dict, List, Optional, Protocol, Sequence

from .errors import CommandFailed


@dataclass
class Completed:
    """A finished command as a job judges it: its exit status and everything it said."""

    argv: List[str]
    returncode: int
    output: str  # stdout and stderr interleaved, as an admin would see them

    def killed(self) -> Optional[str]:
        """"<tool> was killed by <signal>" where the exit status says a signal ended it (sshscripts.killed_by:
        -N run directly, 128+N through a shell or SSH), else None. Such a tool gave no answer: a management
        tool's request may have reached its daemon and be done, so the drivers raise it as no answer
        (errors.Unanswered: vim-cmd's ToolKilled, virsh's VirshLost), never as the daemon's no."""
        from .sshscripts import killed_by  # its subprocess and signal imports: not for every Completed's module

        signame = killed_by(self.returncode)
        return "%s was killed by %s" % (self.argv[0].rsplit("/", 1)[-1], signame) if signame else None

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
    implementation (tests/test_shell_contract.py): LocalShell, SshShell.

    Contracts: paths are the host's; commands are argument lists; every
    failure is a HostError (TimeoutExpired for a bounded wait); `write_text`
    is atomic (a reader sees the old file or the new one) and durable once it
    returns (its data and its name; with `sync_folder=False` its data only, for
    a folder whose last write makes every name in it durable at once), and with `keep_folder_time`
    sets its folder's modification time back to what it was (a record rewritten in a finished backup:
    ghettoVCB's rotation keeps the folders `ls -t` lists first);
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
    (no python): the caller then asks file by file; `list_files` is the regular files under a folder
    (the folder itself may be a link: a datastore's name is one), never a symlink (to a file, to a folder,
    dangling: none followed down), FIFO or device: a backup's data is the regular files its folder holds, and
    what its callers do with each would go wrong through a link planted there (seal's chmod changing a file
    outside the backup, as root; its manifest recording data the folder does not hold; rotation counting
    room that removing the backup does not free, or a dangling link's failed stat zeroing the whole backup's
    size; health taking a manifest's file for present where only a link stands for it); a folder it cannot list
    (gone, no folder, unreadable) is a HostError, never [] (a backup removed while it is judged would read as
    one holding nothing: verify calling every file missing, health judging an empty backup); `absent` is
    whether nothing is at a path, proven: its lstat failed with ENOENT or ENOTDIR (False where anything is
    there, a dangling link too), a HostError where the host cannot tell (EIO, ESTALE, EACCES, ELOOP, a
    timeout), which `exists` and `isdir` answer False; always a look now (a ScannedShell asks its shell, its
    scan saying what was there when it was taken). A read that failed is taken for a backup gone only on it
    (store/layout.gone): an NFS share that stopped answering for a moment made a backup read as damaged
    "gone", passed over unsaid.
    """

    description: str  # besides FileReader's reads:
    remote: bool  # every call a round trip to another machine (SSH file by file): a file read costs what a command does

    def run(self, argv: Sequence[str], *, timeout: Optional[float] = 600, idle_timeout: Optional[float] = None,
            on_output: Optional[OutputCallback] = None, interruptible: bool = True) -> "Completed": ...

    def write_text(self, path: str, text: str, *, sync_folder: bool = True,
                   keep_folder_time: bool = False) -> None: ...

    def write_bytes(self, path: str, data: bytes, *, sync_folder: bool = True,
                    keep_folder_time: bool = False) -> None: ...

    def now(self) -> datetime: ...

    def open_binary(self, path: str) -> Readable: ...

    def makedirs(self, path: str) -> None: ...

    def make_new_dir(self, path: str) -> bool: ...

    def link_new(self, src: str, dst: str) -> bool: ...

    def age(self, path: str) -> Optional[float]: ...

    def touch(self, path: str) -> None: ...

    def rename(self, src: str, dst: str) -> None: ...

    def absent(self, path: str) -> bool: ...

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


def tree_of(raw: Dict[str, Any]) -> Tree:
    """treescan.py's JSON entries as TreeEntry values."""
    return {rel: TreeEntry(str(e[0]), int(e[1]), int(e[2]), e[3], bool(e[4]), str(e[5]) if len(e) > 5 else None)
            for rel, e in raw.items()}

