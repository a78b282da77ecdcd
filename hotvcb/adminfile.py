"""A small text file an admin wrote (a config, a VM list, a restore file), read and decoded, and how
messages name it.

Only regular files (and, for a VM list, a pipe) are read, bounded in size; a line that is not UTF-8 is
read as Latin-1. A file an SSH client sent to a run on the host is named as the admin gave it there.
"""

import codecs
import os
import stat
from typing import Dict, List, Tuple

from hotvcb.errors import UsageError
from . import pipetext

# Config and list files are a few hundred bytes; the cap makes `-g some.vmdk`
# fail at once instead of reading gigabytes into memory.
MAX_FILE_BYTES = 4 * 1024 * 1024


# host path -> the name to show for it: files an SSH client sent to a run on the host are named
# as the admin wrote them on the client (commands/onhost.py), never by the run's temp folder
_SHOWN_AS = {}  # type: Dict[str, str]


def show_files_as(names: Dict[str, str]) -> None:
    _SHOWN_AS.update(names)


def shown_as(path: str) -> str:
    """How messages name a file (or a file in a folder) given on the command line."""
    for here, there in _SHOWN_AS.items():
        if path == here or path.startswith(here.rstrip("/") + "/"):
            return there + path[len(here):]
    return path


def read_text(path: str, what: str, pipes: bool = False) -> Tuple[str, List[str]]:
    """Read a small text file an admin wrote, refusing anything that is not one.

    Only regular files are opened, so a FIFO or /dev/zero cannot hang the run;
    with `pipes` (a VM list, `-f <(...)` as ghettoVCB's `cat` read it) a pipe
    too, once and bounded (pipetext.py).
    A line that is not UTF-8 was most likely written as Latin-1 by an old
    editor or locale; decoding that line so (decode_lines) keeps umlauts in
    VM names right, in it and in every other line.
    """
    path, name = shown_as(path), path  # messages name `path`; `name` is opened
    try:
        mode = os.stat(name).st_mode
        if pipes and stat.S_ISFIFO(mode):
            data = pipetext.read(name, path, what, MAX_FILE_BYTES)
        elif not stat.S_ISREG(mode):
            raise UsageError("%s %s is not a regular file" % (what, path))
        else:
            with open(name, "rb") as handle:
                data = handle.read(MAX_FILE_BYTES + 1)
    except (OSError, ValueError) as err:
        reason = getattr(err, "strerror", None) or str(err)
        raise UsageError("cannot read %s %s: %s" % (what, path, reason)) from err
    if len(data) > MAX_FILE_BYTES:
        raise UsageError("%s %s is larger than %d bytes: not a %s" % (what, path, MAX_FILE_BYTES, what))
    text, latin = decode_lines(data)
    if not latin:
        return text, []
    return text, ["%s: not valid UTF-8 on line%s %s, read as Latin-1 (those lines only)" % (
        path, "s" if len(latin) > 1 else "", ", ".join(str(n) for n in latin[:10]) + (", ..." if len(latin) > 10 else ""))]


def saved_as_utf16(text: str) -> bool:
    """Whether `read_text` got a file Notepad saved as "Unicode" (UTF-16 with its byte-order mark, which
    decode_lines reads as the Latin-1 `ÿþ`/`þÿ`): its names hold NUL bytes, refused as control characters,
    which said nothing of the encoding."""
    return text.startswith(("\xff\xfe", "\xfe\xff"))


def decode_lines(data: bytes) -> Tuple[str, List[int]]:
    """The text of a file an admin wrote, each line decoded on its own: UTF-8, else Latin-1 for that
    line only; and the numbers of the Latin-1 lines. A file edited over the years mixes the two
    (`echo '# Müller' >>` under a Latin-1 locale appends one Latin-1 line to a UTF-8 file): decoding
    the whole file as Latin-1 would turn every UTF-8 umlaut of the other lines into two characters,
    and a VM name into one no VM has."""
    lines, latin = [], []
    for number, raw in enumerate(data.split(b"\n"), 1):
        if raw.startswith(codecs.BOM_UTF8):  # not only the first: `cat a b` of two files saved with one each
            raw = raw[len(codecs.BOM_UTF8):]
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            lines.append(raw.decode("latin-1"))
            latin.append(number)
    return "\n".join(lines), latin
