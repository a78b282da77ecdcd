"""A rename that never replaces: renameat2(RENAME_NOREPLACE), Linux's (glibc 2.28 on), through ctypes.

A hard link is how hotvcb claims a name with its content in one step (Shell.link_new); a file system
without hard links (vfat, exFAT, some CIFS/FUSE mounts) still renames without replacing, which claims
the name as atomically. Looked up on first use only: most runs never need it.
"""

import errno
import os
from typing import Any, Optional

AT_FDCWD = -100
RENAME_NOREPLACE = 1

_call = None  # type: Optional[Any]
_looked = False


def available() -> bool:
    """Whether this machine's libc has renameat2."""
    return _renameat2() is not None


def rename_new(src: str, dst: str) -> bool:
    """Rename src to dst unless dst exists (False then, src left); OSError for any other failure."""
    call = _renameat2()
    if call is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available")
    if call(AT_FDCWD, os.fsencode(src), AT_FDCWD, os.fsencode(dst), RENAME_NOREPLACE) == 0:
        return True
    err = _errno()
    if err == errno.EEXIST:
        return False
    raise OSError(err, os.strerror(err))


def _renameat2() -> Optional[Any]:
    global _call, _looked
    if not _looked:
        _looked = True
        try:
            import ctypes  # only here: a run that never claims a name without a link loads no libffi
            _call = ctypes.CDLL(None, use_errno=True).renameat2
        except (ImportError, OSError, AttributeError):
            _call = None
    return _call


def _errno() -> int:
    import ctypes
    return ctypes.get_errno()
