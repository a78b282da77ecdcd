"""Filling packs: stored chunks go into one upload until it holds ~pack_size.

A pack becomes visible only whole (put_new_file), named by the SHA-256 of
its header and table (format.pack_id), so a crash leaves at most an upload
that no name points to.

A full pack is committed (fsync, link) by a thread of its own while the next
one fills: the fsync of 32 MiB would otherwise stall reading and compressing.
One commit runs at a time, and flush() returns only when every pack is
committed, so an index is still written after the packs it names.
"""

import threading
from typing import List, Optional, Set

from .. import crashpoint
from .backend import Backend, Upload
from .codec import Data
from .format import Blob, pack_header, pack_id, pack_table
from .repository import pack_name


class PackWriter:
    def __init__(self, backend: Backend, pack_size: int):
        self.backend, self.pack_size = backend, pack_size
        self._upload = None  # type: Optional[Upload]
        self._header = b""
        self._blobs = []  # type: List[Blob]
        self._offset = 0
        self.pending = set()  # type: Set[bytes]  # in the open pack, not yet committed
        self.committed = []  # type: List[str]
        self.bytes_written = 0
        self._committing = None  # type: Optional[_Commit]

    def _write(self, data: Data) -> None:
        assert self._upload is not None
        self._upload.write(data)
        self._offset += len(data)

    def add(self, digest: bytes, method: int, raw_len: int, stored: Data) -> None:
        """One chunk as stored; `stored` is written before this returns (a view of a buffer may be reused then)."""
        if self._upload is None:
            self._upload = self.backend.new_upload()
            self._header = pack_header()
            self._write(self._header)
        self._blobs.append(Blob(digest, method, raw_len, self._offset, len(stored)))
        self._write(stored)
        crashpoint.reached("repo-pack-writing")
        self.pending.add(digest)
        self.bytes_written += len(stored)
        if self._offset >= self.pack_size:
            self._close_pack()

    def _close_pack(self) -> None:
        """Finish the open pack and start committing it (after the previous commit has ended)."""
        self._wait()
        assert self._upload is not None
        tail = pack_table(self._blobs)
        self._write(tail)
        self._committing = _Commit(self.backend, pack_name(pack_id(self._header, tail)), self._upload, self.pending)
        self._upload = None
        self._blobs, self._offset, self.pending = [], 0, set()

    def _wait(self) -> None:
        """The running commit's end; its error (a full repository) is raised here, in the writer's thread."""
        if self._committing is not None:  # kept when it failed: discard() then counts its chunks as lost
            self.committed.append(self._committing.result())
            self._committing = None

    def flush(self) -> None:
        """Commit the open pack (if any) and wait until every pack is committed."""
        if self._upload is not None:
            self._close_pack()
        self._wait()

    def discard(self) -> Set[bytes]:
        """Drop the open pack; returns the chunks stored nowhere now (the open pack's, and those of a
        pack whose commit failed)."""
        lost, self.pending = self.pending, set()
        commit, self._committing = self._committing, None
        if commit is not None:
            try:
                self.committed.append(commit.result())
            except Exception:
                lost |= commit.chunks
        if self._upload is not None:
            self._upload.discard()
            self._upload = None
        self._blobs, self._offset = [], 0
        return lost


class _Commit:
    """put_new_file of one finished pack in a thread; result() waits and returns its name."""

    def __init__(self, backend: Backend, name: str, upload: Upload, chunks: Set[bytes]):
        self.name, self.chunks = name, chunks
        self._error = None  # type: Optional[BaseException]
        self._thread = threading.Thread(target=self._run, args=(backend, upload), name="pack-commit", daemon=True)
        self._thread.start()

    def _run(self, backend: Backend, upload: Upload) -> None:
        try:
            backend.put_new_file(self.name, upload)  # False: the very same bytes are there already
            crashpoint.reached("repo-pack-committed")
        except BaseException as err:  # handed to the writer's thread by result()
            self._error = err

    def result(self) -> str:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self.name
