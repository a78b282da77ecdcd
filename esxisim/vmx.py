"""Read and write VMware "key = value" config files (.vmx, .vmsd, .vmxf-free).

ESXi stores a double quote inside a value as ``|22`` and a pipe as ``|7C`` (and any
control character as ``|XX``); readers that skip the unescape step see mangled names,
so esxisim writes exactly that encoding to keep hotvcb honest.
"""
# String methods, not regular expressions, split the lines: importing re (and enum with it) and
# compiling the patterns was a tenth of a vim-cmd call, and every call reads a .vmx or .vmsd.
_HEX = frozenset("0123456789abcdefABCDEF")


def escape(value):
    out = []
    for ch in value:
        if ch == "|":
            out.append("|7C")
        elif ch == '"':
            out.append("|22")
        elif ord(ch) < 0x20:
            out.append("|%02X" % ord(ch))
        else:
            out.append(ch)
    return "".join(out)


def unescape(value):
    """Each `|XX` (two hex digits) is the byte XX, read left to right (lib/misc/escape.c, Escape_Undo):
    `value` holds one character a byte (a line read as Latin-1), and so does the result; the file's
    charset applies afterwards (`M|C3|BCller` is `Müller` in UTF-8)."""
    if "|" not in value:
        return value
    parts = value.split("|")
    out = [parts[0]]
    for part in parts[1:]:
        if len(part) >= 2 and part[0] in _HEX and part[1] in _HEX:
            out.append(chr(int(part[:2], 16)) + part[2:])
        else:
            out.append("|" + part)
    return "".join(out)


class Dictionary(dict):
    """ESXi's dictionary: a key is read whatever its case (`SCSI0:1.FileName` is `scsi0:1.fileName`),
    and kept as it was first spelled; the last line setting it gives its value."""

    def __init__(self):
        super().__init__()
        self._spelled = {}

    def _key(self, key):
        return self._spelled.get(key.lower(), key)

    def __setitem__(self, key, value):
        super().__setitem__(self._spelled.setdefault(key.lower(), key), value)

    def __getitem__(self, key):
        return super().__getitem__(self._key(key))

    def __contains__(self, key):
        return super().__contains__(self._key(key))

    def __delitem__(self, key):
        super().__delitem__(self._key(key))
        del self._spelled[key.lower()]

    def get(self, key, default=None):
        return super().get(self._key(key), default)


def _key_value(line):
    """(key, raw value) of a line as VMware's dictionary format reads it, else None (a line hostd keeps
    but gives no key). The grammar is open-vm-tools lib/dict/dictll.c, DictLL_UnmarshalLine:
    `<ws> name <ws> = <ws> value <ws> #comment`, where <ws> is spaces and tabs only; the name runs to
    a blank, `=` or `#`; a value starting with `"` runs to the next `"` (no closing quote: no value),
    any other to a blank or `#` (`scsi0:1.present = TRUE`, `x = a"b`), and may be empty (`x =`);
    after it only blanks, then the line's end or a `# comment`. The line is a C string there: a NUL
    ends it. A CR before the line feed is part of the line end (StdIO_ReadNextLine's \r\n)."""
    line = line.split("\0", 1)[0]
    if line.endswith("\r"):
        line = line[:-1]
    rest = line.lstrip(" \t")
    key = _up_to(rest, " \t#=")
    rest = rest[len(key):].lstrip(" \t")
    if not key or not rest.startswith("="):
        return None
    rest = rest[1:].lstrip(" \t")
    if rest.startswith('"'):
        value, quote, rest = rest[1:].partition('"')
        if not quote:
            return None
    else:
        value = _up_to(rest, " \t#")
        rest = rest[len(value):]
    rest = rest.lstrip(" \t")
    if rest and not rest.startswith("#"):
        return None
    return key, value


def _up_to(text, stops):
    """text before its first character that is one of stops."""
    end = len(text)
    for ch in stops:
        i = text.find(ch, 0, end)
        if i >= 0:
            end = i
    return text[:end]


def parse(text):
    """The dictionary a UTF-8 file of this text holds."""
    return read(text.encode("utf-8", "surrogateescape"), "utf-8")


def read(raw, charset):
    """The dictionary of a file's bytes as ESXi reads them: each line parsed and each value unescaped
    as bytes, then read in `charset`. Keys keep their file order (a dict's); ESXi rewrites keys in
    place, not sorted."""
    data = Dictionary()
    for line in raw.decode("latin-1").split("\n"):  # a line feed ends a line, as ESXi reads .vmx and descriptors
        kv = _key_value(line)
        if kv:
            data[kv[0].encode("latin-1").decode(charset, "replace")] = (
                unescape(kv[1]).encode("latin-1").decode(charset, "replace"))
    return data


def render(data):
    """The file's bytes, in the charset its `.encoding` declares; values escaped as bytes of it, as
    hostd writes them (ポ in Shift_JIS is 83 7C: written `83 |7C`)."""
    name = charset(data)
    return "".join('%s = "%s"\n' % (_bytes(k, name), escape(_bytes(str(v), name)))
                   for k, v in data.items()).encode("latin-1")


def _bytes(text, name):
    """text's bytes in charset `name`, one character a byte."""
    return text.encode(name, "replace").decode("latin-1")


def charset(data):
    """The charset a .vmx's `.encoding` line declares ("windows-1252" for an old VM made on Windows),
    which hostd reads and writes its text in; UTF-8 where it declares none or one no .vmx can be in
    (unknown, or not reading ASCII as ASCII: UTF-16, rot13). The line itself is ASCII, so the text
    is first read as Latin-1, which takes any byte, to find it."""
    import codecs
    declared = data.get(".encoding", "")
    try:
        name = codecs.lookup(declared).name if declared else "utf-8"
        return name if "encoding = x".encode(name) == b"encoding = x" else "utf-8"
    except (LookupError, UnicodeError, TypeError):  # TypeError: a codec of bytes to bytes (base64)
        return "utf-8"


def load(path):
    with open(path, "rb") as f:
        raw = f.read()
    return read(raw, charset(read(raw, "latin-1")))


def save(path, data):
    # In-place rewrite (no rename) keeps the inode, like hostd does with the .vmx; in its declared charset.
    with open(path, "wb") as f:
        f.write(render(data))


DISK_KEY = r"^((?:scsi|sata|ide|nvme)\d+:\d+)\.fileName$"  # case-insensitive


def _disk_node(key):
    """The node of a DISK_KEY key, else None. An ASCII key is matched with str methods (re's
    case-insensitive, Unicode-digit rules mean no more for ASCII); any other goes to re."""
    if not key.isascii():
        import re
        m = re.match(DISK_KEY, key, re.I)
        return m.group(1) if m else None
    if key.endswith("\n"):
        key = key[:-1]  # `$` matches before a final line feed
    if not key.lower().endswith(".filename"):
        return None
    node = key[:-len(".fileName")]
    lower = node.lower()
    for bus in ("scsi", "sata", "ide", "nvme"):
        if lower.startswith(bus):
            ctl, colon, unit = node[len(bus):].partition(":")
            if colon and ctl.isdecimal() and unit.isdecimal():
                return node
    return None


def disk_nodes(data):
    """Nodes (e.g. "scsi0:0") that hold a present virtual disk, in .vmx order."""
    nodes = []
    for key, value in data.items():
        node = _disk_node(key)
        if not node or not value.lower().endswith(".vmdk"):
            continue
        if data.get(node + ".present", "FALSE").upper() != "TRUE":
            continue
        if "cdrom" in data.get(node + ".deviceType", "").lower():
            continue
        nodes.append(node)
    return nodes
