"""One look at a folder tree: every entry's type, size and allocated bytes, and the text of
the small files asked for (manifests, STATUS files, descriptors).

Shell.scan is built on this: LocalShell calls `scan` here, SshShell runs this
very file with the host's python (`python -c "<this file>" ROOT READ_MAX
PATTERN...`, one JSON document back), so `hotvcb list`, health judging and
rotation cost one round trip per folder tree instead of one per file.

Self-contained (stdlib only, Python 3.5+, no package imports) because its
source runs on the host. Result: {"entries": {rel: [kind, size, allocated,
text-or-null, is_dir]}} with rel "" for the root itself (absent when the root
does not exist; its list ends with the root's realpath too); kind is "dir", "file", "link" or "other" as lstat sees it,
size and allocated follow links (-1 for a dangling one), is_dir follows
links (what os.path.isdir says). Symlinked folders are not entered. `text`
is the file decoded as UTF-8 (Latin-1 if it is not), for regular files whose
base name matches one of the fnmatch patterns and whose size is at most
READ_MAX; null otherwise or when it cannot be read. Run as a script it also
gives "now", the host's wall clock (local time, `date`'s format).
"""

import fnmatch
import json
import os
import stat
import sys
import time
from typing import Optional  # noqa: F401 - a type comment's (typing is stdlib on 3.5)


def _entry(path, patterns, read_max):
    st = os.lstat(path)
    if stat.S_ISDIR(st.st_mode):
        kind = "dir"
    elif stat.S_ISREG(st.st_mode):
        kind = "file"
    elif stat.S_ISLNK(st.st_mode):
        kind = "link"
    else:
        kind = "other"
    target = st  # type: Optional[os.stat_result]
    if kind == "link":
        try:
            target = os.stat(path)
        except OSError:
            target = None
    size = target.st_size if target is not None else -1
    allocated = getattr(target, "st_blocks", 0) * 512 if target is not None else -1
    is_dir = target is not None and stat.S_ISDIR(target.st_mode)
    text = None
    if (target is not None and stat.S_ISREG(target.st_mode) and size <= read_max
            and any(fnmatch.fnmatchcase(os.path.basename(path), p) for p in patterns)):
        try:
            with open(path, "rb") as f:
                data = f.read(read_max + 1)
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                text = data.decode("latin-1")
        except OSError:
            text = None
    return [kind, size, allocated, text, is_dir]


def scan(root, patterns=(), read_max=65536):
    """{rel: [kind, size, allocated, text, is_dir]} for root ("") and everything under it."""
    out = {}
    try:
        out[""] = _entry(root, patterns, read_max) + [os.path.realpath(root)]
    except OSError:
        return out
    if not out[""][4]:
        return out  # a file (or a link to one); a root that is a link to a folder is entered
    for folder, dirs, files in os.walk(root):
        rel_folder = os.path.relpath(folder, root)
        for name in dirs + files:
            rel = name if rel_folder == "." else rel_folder + "/" + name
            try:
                out[rel] = _entry(os.path.join(folder, name), patterns, read_max)
            except OSError:
                continue  # gone while we looked
    return out


def main(argv):
    root, read_max, patterns = argv[0], int(argv[1]), argv[2:]
    entries = scan(root, patterns, read_max)
    # the host's wall clock as `date` would print it, taken as the answer leaves: the caller needs
    # no round trip of its own for the clock that named the backups it lists
    sys.stdout.write(json.dumps({"entries": entries, "now": time.strftime("%Y-%m-%d %H:%M:%S")}) + "\n")
    return 0


if __name__ == "__main__":
    if sys.version_info < (3, 5):
        sys.exit(127)  # e.g. python 2 as `python` on an old host: the caller does without
    sys.exit(main(sys.argv[1:]))
