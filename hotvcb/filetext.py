"""A host file's text as every shell reads and writes it, and as the callers of the contract read it.

Shared by LocalShell and SshShell (one decoding, one temp-file name for an atomic write) and by the
jobs reading files anyone may have planted (`read_small`).
"""

import os
import threading

from .errors import HostError
from .namefit import fit
from .shell import FileReader


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



def temp_name(name: str) -> str:
    """The name of the writer's own temp file for the file `name` beside it (`.<name>.<temp_tag>.tmp`), within
    the 255 bytes a name may have however long `name` is (namefit.fit): a VM of a long name is backed up."""
    return fit(".", name, ".%s.tmp" % temp_tag())


def temp_tag() -> str:
    """A temp-file tag no other writer uses at the same time: this process, this thread, a random part."""
    return "%d-%d-%s" % (os.getpid(), threading.get_ident() % 100000, os.urandom(3).hex())

