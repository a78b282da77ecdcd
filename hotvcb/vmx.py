"""Read and rewrite .vmx files without disturbing what we do not touch.

A .vmx is `key = "value"` lines, read as VMware's dictionary format reads them (open-vm-tools
lib/dict/dictll.c, DictLL_UnmarshalLine): the value may also be unquoted (`scsi0:1.present = TRUE`,
up to a blank or `#`), and a `# comment` may follow either. A hand-edited line of either kind is a
line the VM runs with: read only the quoted form and its disk would be in no backup. Keys are
case-insensitive for VMware, so lookups fold case; rewriting keeps every other line byte for byte,
which matters for restore (the admin's comments and odd keys survive).
"""

from __future__ import annotations

import codecs
import re
from typing import Callable, Dict, Iterator, List, Match, Optional, Tuple

from .units import DIGITS
from . import lazyre

# DictLL_UnmarshalLine's grammar: blanks are spaces and tabs; the name runs to a blank, `=` or `#`; a
# value opened by `"` runs to the next `"` (and is no value without it), an unquoted one to a blank or
# `#`; after it only blanks, then the end or a comment. A NUL ends the line VMware reads (a C string).
_LINE = lazyre.compile(r'[ \t]*([^ \t#=]+)[ \t]*=[ \t]*(?:"([^"]*)"|([^ \t#"][^ \t#]*)?)[ \t]*(?:#.*)?\Z', re.S)
DISK_BUSES = ("scsi", "sata", "ide", "nvme")
# the largest .vmx (or .vmsd) a backup takes and a restore reads: far past any VM's (a VM deployed with
# cloud-init carries its user-data in guestinfo, a MiB or more), a bound on what a planted file costs
MAX_SIZE = 64 << 20
_DEVICE = lazyre.compile(r"^(scsi|sata|ide|nvme)({0}):({0})$".format(DIGITS))  # a longer number: no device of ESXi's


class VmxFile:
    def __init__(self, text: str):
        # lines end at a line feed only, as VMware reads them: str.splitlines() would also end one at a
        # U+2028 or U+0085 inside a value (a VM name may hold them), and lose that key
        lines = [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]
        if lines[-1] == "":
            lines.pop()
        self.lines = list(lines)  # type: List[Optional[str]]  # None = removed
        # every line setting a key, by its folded name: of two, VMware reads the last; a copy restored
        # with only that one removed would read the other (the original's uuid.bios, MAC, workingDir)
        self._index = {}  # type: Dict[str, List[int]]
        for i, line in enumerate(lines):
            m = _match(line)
            if m:
                self._index.setdefault(m.group(1).lower(), []).append(i)
        # the charset the text was read in (as_vmware_reads): a |XX escape is a byte of it
        self.charset = "utf-8"  # the .encoding line is ASCII, read as any
        self.charset = _charset(self.get(".encoding") or "utf-8", lambda _message: None)

    def get(self, key: str, default: Optional[str] = None) -> Optional[str]:
        at = self._index.get(key.lower())
        line = None if at is None else self.lines[at[-1]]
        m = _match(line) if line is not None else None
        if m is None:
            return default
        return _unescape(_raw_value(m), self.charset)

    def bios_uuid(self) -> str:
        """uuid.bios as 32 lower-case hex digits: VMware writes `56 4d ... 34-56 ...`, admins paste it
        in other spacings and cases; "" when there is none."""
        return "".join((self.get("uuid.bios") or "").replace("-", " ").split()).lower()

    def set(self, key: str, value: str) -> None:
        """Set key on the line VMware reads it from (the last); an earlier line setting it goes. A new
        `.encoding` keeps every value: a line whose escapes read otherwise in the new charset is
        escaped anew (`|83|7C`, ポ in Shift_JIS, is no character in UTF-8)."""
        if key.lower() == ".encoding":
            self._recode(_charset(value, lambda _message: None))
        line = '%s = "%s"' % (key, _escape(value, self.charset))
        at = self._index.get(key.lower())
        if at is None:
            self._index[key.lower()] = [len(self.lines)]
            self.lines.append(line)
        else:
            for i in at[:-1]:
                self.lines[i] = None
            self.lines[at[-1]] = line
            self._index[key.lower()] = at[-1:]

    def remove(self, key: str) -> None:
        """Drop every line setting key; every other line stays byte for byte."""
        for i in self._index.pop(key.lower(), []):
            self.lines[i] = None

    def declare_utf8(self) -> bool:
        """Declare the text UTF-8, as hotvcb writes it (every shell's write_text): a file that declared
        another charset (an old VM made on Windows: windows-1252) would be read in it, its names garbled.
        Whether the text changed."""
        if (self.get(".encoding") or "UTF-8") == "UTF-8":
            return False
        self.set(".encoding", "UTF-8")
        return True

    def _recode(self, charset: str) -> None:
        for at in self._index.values():
            for i in at:
                line = self.lines[i]
                m = _match(line) if line is not None else None
                if line is None or m is None:
                    continue
                value = _unescape(_raw_value(m), self.charset)
                if _unescape(_raw_value(m), charset) != value:
                    span = m.span(2) if m.group(2) is not None else m.span(3)
                    self.lines[i] = '%s"%s"%s' % (line[: span[0] - (m.group(2) is not None)],
                                                  _escape(value, charset),
                                                  line[span[1] + (m.group(2) is not None):])
        self.charset = charset

    def text(self) -> str:
        return "\n".join(line for line in self.lines if line is not None) + "\n"

    def keys(self) -> List[str]:
        return list(self._index)

    def devices(self) -> Iterator[Tuple[str, str]]:
        """(device key, bus) of every present disk-capable device slot."""
        seen = set()
        for key in self._index:
            dev = key.split(".", 1)[0]
            m = _DEVICE.match(dev)
            if m and dev not in seen:
                seen.add(dev)
                yield dev, m.group(1)

    def disk_slots(self) -> List[Tuple[str, str, str]]:
        """(device, bus, fileName) for present devices backed by a .vmdk."""
        out = []
        for dev, bus in self.devices():
            present = (self.get(dev + ".present") or "").upper() == "TRUE"
            name = self.get(dev + ".fileName") or ""
            dtype = (self.get(dev + ".deviceType") or "").lower()
            if present and name.lower().endswith(".vmdk") and "cdrom" not in dtype:
                out.append((dev, bus, name))
        return sorted(out, key=lambda t: _device_order(t[0]))


def _match(line: str) -> Optional[Match[str]]:
    return _LINE.match(line.split("\0", 1)[0])


def _device_order(dev: str) -> Tuple[int, int, int]:
    m = _DEVICE.match(dev)
    if m is None:  # disk_slots only yields names that matched
        return (len(DISK_BUSES), 0, 0)
    return (DISK_BUSES.index(m.group(1)), int(m.group(2)), int(m.group(3)))


def _raw_value(m: Match[str]) -> str:
    """A matched line's value as the file spells it, escapes and all."""
    return m.group(2) if m.group(2) is not None else m.group(3) or ""


_SPECIAL = frozenset(b'"|\x7f' + bytes(range(0x20)))  # bytes VMware writes as |XX


def _unescape(value: str, charset: str) -> str:
    """A value as VMware reads it (lib/misc/escape.c, Escape_Undo on the line's bytes, then the file's
    charset): each |XX is a byte, so `M|C3|BCller` in UTF-8 is `Müller`, and in Shift_JIS the `|` of
    `83 |7C` is the second byte of ポ, which the decoded text hides inside that character. In UTF-8 a
    character is whole, and no escaped byte joins it: each run of escapes is read alone, UTF-8, else
    Latin-1, as a line is (as_vmware_reads); nothing else of the value is encoded again (a name from a
    QEMU JSON may hold a lone surrogate)."""
    if charset == "utf-8":
        if "|" not in value:
            return value
        return re.sub(r"(?:\|[0-9A-Fa-f]{2})+", lambda m: _line_text(bytes.fromhex(m.group(0).replace("|", ""))),
                      value)
    raw = value.encode(charset, "replace")  # a text decoded in it: a character it lacks is U+FFFD's "?"
    if b"|" not in raw:
        return value
    return re.sub(rb"\|([0-9A-Fa-f]{2})", lambda m: bytes([int(m.group(1), 16)]), raw).decode(charset, "replace")


def _escape(value: str, charset: str) -> str:
    """value as VMware writes it in charset: a byte `"`, `|` or control character (a newline in a VM
    name from a domain XML would end the line early and start one of the name's choosing) as |XX. A
    character whose bytes in charset hold one (ポ is 83 7C in Shift_JIS) is written as |XX bytes
    alone, so the text is the same in any charset; one the charset lacks stays as it is (the file is
    declared UTF-8 before it is written)."""
    return "".join(_escaped(c, charset) for c in value)


def _escaped(c: str, charset: str) -> str:
    if c < "\x80":
        return "|%02X" % ord(c) if ord(c) in _SPECIAL else c
    if charset == "utf-8":
        return c  # every byte of a non-ASCII character is 80 or more
    try:
        raw = c.encode(charset)
    except UnicodeEncodeError:
        return c
    return "".join("|%02X" % b for b in raw) if _SPECIAL.intersection(raw) else c


_ASCII = bytes(range(0x20, 0x7F)) + b"\t\r\n"


def as_vmware_reads(text: str, size: Callable[[], int], say: Callable[[str], None] = lambda _message: None) -> str:
    """A .vmx's text as VMware reads it, from what filetext.decoded gave for its bytes (UTF-8, else the
    whole file as Latin-1); `size()` is the file's size in bytes, asked only where the text alone
    cannot say how it was decoded.

    A .vmx declaring (or, as most do, meaning) UTF-8 is read line by line: UTF-8, else Latin-1 for
    that line only. One byte that is not UTF-8 (an annotation appended over SSH from a Latin-1
    terminal) made the shell read the whole file as Latin-1, and the displayName `Müller DB`, which
    hostd lists, became `MÃ¼ller DB`: `-m` named no VM. A .vmx declaring another charset (an old VM
    made on Windows: "windows-1252", which differs from Latin-1 in 0x80-0x9F: the euro sign, quotes,
    dashes) is read in it.

    Only a charset that reads ASCII as ASCII can be a .vmx's: its `.encoding` line had to be read as
    ASCII to be found at all. Any other declaration (one Python does not know, a codec that is no text
    encoding such as "rot13" or "base64", UTF-16 over bytes that are plainly not) is read as UTF-8,
    and `say` is told why: decoding a hand-edited value would write the VM's configuration as
    garbage. Whoever writes the text back as UTF-8 declares so."""
    from .filetext import encoded  # the bytes filetext.decoded read the text from
    declared = VmxFile(text).get(".encoding")
    charset = _charset(declared, say) if declared else "utf-8"
    if charset != "utf-8":
        return encoded(text, size()).decode(charset, "replace")
    if not _maybe_latin1(text):
        return text
    return "\n".join(_line_text(raw) for raw in encoded(text, size()).split(b"\n"))


def _charset(declared: str, say: Callable[[str], None]) -> str:
    """The charset a .vmx's `.encoding` declares, "utf-8" where it is none a .vmx can be in."""
    try:
        charset = codecs.lookup(declared).name
        if _ASCII.decode(charset, "replace") == _ASCII.decode("ascii"):
            return charset
    except (LookupError, UnicodeError):  # LookupError: unknown, or no text encoding (rot13, base64)
        pass
    say('the .vmx declares .encoding = "%s", no charset a .vmx can be written in: its text is read as '
        "UTF-8 (Latin-1 on a line that is not UTF-8) and written back as UTF-8" % declared)
    return "utf-8"


def _maybe_latin1(text: str) -> bool:
    """Whether filetext.decoded may have read `text` as Latin-1: only characters up to U+00FF, some beyond
    ASCII, and as Latin-1 bytes no UTF-8 (else those bytes would have been read as UTF-8)."""
    if text.isascii() or max(text) > "\xff":
        return False
    try:
        text.encode("latin-1").decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def _line_text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")
