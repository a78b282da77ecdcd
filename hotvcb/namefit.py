"""File names hotvcb makes out of a name it was given, kept within the 255 bytes a folder entry may hold.

A VM may be named up to 226 bytes in UTF-8 (docs/backup-format.md), its .vmx `<VM>.vmx`, and hotvcb names
files after it and after the files it writes: the VM's markers in its folder (`.hotvcb-snapshot-asked.<vmx>.run`,
jobs/leftovers.py) and each atomic write's temp file (`.<name>.<pid>-<tid>-<hex>.tmp`, filetext.temp_name). Put
together they passed 255 bytes for names the docs allow, and the VM's backup failed every night with "File name
too long". A name that does not fit keeps its head and gets a digest of the whole name in place of the rest:
still one file per name, still read as the name's at a glance.
"""


NAME_MAX = 255  # bytes in one folder entry's name: VMFS, ext4, XFS, NFS
_DIGEST = 16  # hex digits of the name's SHA-256 that stand for the part cut off


def fit(head: str, name: str, tail: str, limit: int = NAME_MAX) -> str:
    """`head + name + tail`, or, where that is over `limit` bytes in UTF-8, `name` cut on a character's
    boundary and followed by `~` and a digest of the whole of it, so that two long names never share one.
    `limit` is lower where a name must fit more than a folder entry (a QMP socket's path, convert/qemu_argv)."""
    whole = head + name + tail
    if _size(whole) <= limit:
        return whole
    import hashlib  # for the rare name too long: every run imports this module

    raw = name.encode("utf-8", "surrogateescape")
    digest = "~" + hashlib.sha256(raw).hexdigest()[:_DIGEST]
    room = max(0, limit - _size(head + digest + tail))
    return head + raw[:room].decode("utf-8", "ignore") + digest + tail


def _size(text: str) -> int:
    return len(text.encode("utf-8", "surrogateescape"))
