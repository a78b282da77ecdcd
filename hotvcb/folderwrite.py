"""Whether anything can be made in a folder, found without writing there.

A dry run must leave nothing behind, so it cannot probe with a file; it asks the file system instead. Its
runs said "every check passed" of a restore into a NAS export remounted read-only, and of a backup into a
repository there, whose real runs failed on their first write.
"""

import os


def unwritable(folder: str) -> str:
    """Why nothing can be made in `folder` ("" if it can): its file system mounted read-only, the folder not
    writable (or not enterable) by us, or the folder not there to ask."""
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return "Read-only file system"
    except OSError as err:
        return err.strerror or str(err)
    if not os.access(folder, os.W_OK | os.X_OK):
        return "Permission denied"
    return ""
