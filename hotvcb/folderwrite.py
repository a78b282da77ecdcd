"""Whether anything can be made in a folder, found without writing there.

A dry run must leave nothing behind, so it cannot probe with a file; it asks the file system instead. Its
runs said "every check passed" of a restore into a NAS export remounted read-only, and of a backup into a
repository there, whose real runs failed on their first write. It also tells what a path that should be a
folder (or be made one) is instead, so that both runs name that rather than what the first write there meets
("tmp/: Not a directory").
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


def not_folder(path: str) -> str:
    """What `path` is if it is there but is no folder ("" if it is a folder or nothing is there): a file
    left by a copy, or a symlink to a folder that is gone (an NFS path no longer mounted)."""
    if not os.path.lexists(path) or os.path.isdir(path):
        return ""
    if os.path.islink(path) and not os.path.exists(path):
        return "is a dangling link to %s" % os.readlink(path)
    return "is not a folder"
