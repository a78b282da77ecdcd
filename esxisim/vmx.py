"""Read and write VMware "key = value" config files (.vmx, .vmsd, .vmxf-free).

ESXi stores a double quote inside a value as ``|22`` and a pipe as ``|7C`` (and any
control character as ``|XX``); readers that skip the unescape step see mangled names,
so esxisim writes exactly that encoding to keep hotvcb honest.
"""
import re
from collections import OrderedDict

_LINE = re.compile(r'^\s*([^=\s]+)\s*=\s*"(.*)"\s*$')


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
    return re.sub(r"\|([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), value)


def parse(text):
    """Keys keep their file order; ESXi rewrites keys in place, not sorted."""
    data = OrderedDict()
    for line in text.split("\n"):  # a line feed ends a line, as ESXi reads .vmx and descriptor files
        m = _LINE.match(line)
        if m:
            data[m.group(1)] = unescape(m.group(2))
    return data


def render(data):
    return "".join('%s = "%s"\n' % (k, escape(str(v))) for k, v in data.items())


def load(path):
    with open(path, encoding="utf-8") as f:
        return parse(f.read())


def save(path, data):
    # In-place rewrite (no rename) keeps the inode, like hostd does with the .vmx.
    with open(path, "w", encoding="utf-8") as f:
        f.write(render(data))


DISK_KEY = re.compile(r"^((?:scsi|sata|ide|nvme)\d+:\d+)\.fileName$", re.I)


def disk_nodes(data):
    """Nodes (e.g. "scsi0:0") that hold a present virtual disk, in .vmx order."""
    nodes = []
    for key, value in data.items():
        m = DISK_KEY.match(key)
        if not m or not value.lower().endswith(".vmdk"):
            continue
        node = m.group(1)
        if data.get(node + ".present", "FALSE").upper() != "TRUE":
            continue
        if "cdrom" in data.get(node + ".deviceType", "").lower():
            continue
        nodes.append(node)
    return nodes
