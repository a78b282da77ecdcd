"""Filling packs: stored chunks go into one upload until it holds ~pack_size.

A pack becomes visible only whole (put_new_file), named by the SHA-256 of
its bytes, so a crash leaves at most an upload that no name points to.
"""

import hashlib
import os
from typing import List, Optional, Set

from .. import crashpoint
from .backend import Backend, Upload
from .format import PACK_MAGIC, Blob, pack_table
from .repository import pack_name


class PackWriter:
    def __init__(self, backend: Backend, pack_size: int):
        self.backend, self.pack_size = backend, pack_size
        self._upload = None  # type: Optional[Upload]
        self._hash = hashlib.sha256()
        self._blobs = []  # type: List[Blob]
        self._offset = 0
        self.pending = set()  # type: Set[bytes]  # in the open pack, not yet committed
        self.committed = []  # type: List[str]
        self.bytes_written = 0

    def _write(self, data: bytes) -> None:
        assert self._upload is not None
        self._upload.write(data)
        self._hash.update(data)
        self._offset += len(data)

    def add(self, digest: bytes, method: int, raw_len: int, stored: bytes) -> None:
        if self._upload is None:
            self._upload = self.backend.new_upload()
            self._write(PACK_MAGIC + os.urandom(16))
        self._blobs.append(Blob(digest, method, raw_len, self._offset, len(stored)))
        self._write(stored)
        crashpoint.reached("repo-pack-writing")
        self.pending.add(digest)
        self.bytes_written += len(stored)
        if self._offset >= self.pack_size:
            self.flush()

    def flush(self) -> Optional[str]:
        """Commit the open pack (if any); returns its name."""
        if self._upload is None:
            return None
        self._write(pack_table(self._blobs))
        name = pack_name(self._hash.hexdigest())
        upload, self._upload = self._upload, None
        self.backend.put_new_file(name, upload)  # False: the very same bytes are there already
        crashpoint.reached("repo-pack-committed")
        self.committed.append(name)
        self._hash, self._blobs, self._offset, self.pending = hashlib.sha256(), [], 0, set()
        return name

    def discard(self) -> Set[bytes]:
        """Drop the open pack; returns the chunks that were in it (no longer stored anywhere)."""
        lost, self.pending = self.pending, set()
        if self._upload is not None:
            self._upload.discard()
            self._upload = None
        self._hash, self._blobs, self._offset = hashlib.sha256(), [], 0
        return lost
