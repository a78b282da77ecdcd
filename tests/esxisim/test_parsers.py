"""The tools read host.json, faults.json and .vmx files without json and re (importing them was
about a fifth of a tool call's CPU): what they read and write must be what json and the patterns
gave, bad input included, or the simulator would quietly disagree with itself and with hotvcb."""
import json
import re

import pytest

from esxisim import disks, host, jsonio, vmx

DOCS = [
    json.dumps({"vms": {"1": {"vmx": "/vmfs/volumes/u/a \"b\"\\c\u00e9\u2028.vmx", "power": "on", "seed": 3,
                              "writer_pid": None, "tools": True, "cap": 1.5, "l": [1, -2, 3e10, "x", []]}}},
               indent=1, sort_keys=True),
    " [1, 2] \n", "123", "  null\t", "[Infinity, -Infinity]", '"\\ud800"', "1e400",
    "", " ", "{", "[] x", "\ufeff{}", '{"a":1,}', "[1,]", '"\x01"', "tru", '{"a" 1}',
]


def _outcome(fn, arg):
    try:
        return "ok", repr(fn(arg))
    except Exception as e:  # the error json gives is part of the contract (faults() maps ValueError to {})
        return "error", type(e), str(e)


@pytest.mark.parametrize("doc", DOCS)
def test_loads_is_json_loads(doc):
    assert _outcome(jsonio.loads, doc) == _outcome(json.loads, doc)


@pytest.mark.parametrize("obj", [
    {"event": "start", "pid": 7, "tool": "vim-cmd", "args": ["vmsvc/get.summary", "\u00e9\"\\\x00", ""]},
    {"event": "end", "rc": -1}, [], {}, "x", 2 ** 70, [True, False, None, {1: 2}], {"t": (1, "2")},
    {"wall": 1764780000.123456, "t": 0.1, "z": -0.0, "n": [float("nan"), float("inf"), -float("inf"), 1e300]},
    {"b": {"d": 1, "c": [{"f": 2, "e": 3}]}, "a": 2.5},
])
@pytest.mark.parametrize("sort_keys", [False, True])
def test_dumps_is_json_dumps(obj, sort_keys):
    assert jsonio.dumps(obj, sort_keys=sort_keys) == json.dumps(obj, sort_keys=sort_keys)


def test_dumps_names_a_circular_reference_like_json():
    loop = []
    loop.append(loop)
    with pytest.raises(ValueError, match="Circular reference"):
        jsonio.dumps(loop)


# what VMware reads a .vmx line as (open-vm-tools lib/dict/dictll.c, DictLL_UnmarshalLine), as a pattern:
# blanks are spaces and tabs; a quoted value or an unquoted one (to a blank or `#`); then a `#` comment
LINE = re.compile(r'[ \t]*([^ \t#=]+)[ \t]*=[ \t]*(?:"([^"]*)"|([^ \t#"][^ \t#]*)?)[ \t]*(?:#.*)?\Z', re.S)
VOLUME = re.compile(r"^/vmfs/volumes/([^/]+)(/.*)?$")  # and the datastore paths split with
LINES = [
    'displayName = "vm 1"', '  a.b="x" ', 'k = "a "" b"\r', 'k = "v" x', 'k="', 'k=""', '= "v"', 'a b = "v"',
    'k\u00a0= "v"\u2003', 'k = \x1c"v"', 'k == "v"', 'k = "|22|7c|7G||41|"', 'k = v', '# k = "v"', "",
    'scsi0:1.present = TRUE', 'k = "v"   # a note', 'k = v#c', 'k =', 'k = # c', 'k = a"b', 'k = "v"\x00junk',
    'k = "unclosed', '\tk\t=\t"v"\t', 'a#b = "v"', 'k = "v"\r', 'k = "v"\x0b', 'k = a|22b',
]


def _as_vmware_reads(line):
    line = line.split("\0", 1)[0]  # a C string: a NUL ends it
    m = LINE.match(line[:-1] if line.endswith("\r") else line)  # \r\n ends a line (StdIO_ReadNextLine)
    if not m:
        return {}
    value = m.group(2) if m.group(2) is not None else m.group(3) or ""
    return {m.group(1): re.sub(r"\|([0-9A-Fa-f]{2})", lambda h: chr(int(h.group(1), 16)), value)}


@pytest.mark.parametrize("line", LINES)
def test_vmx_line_reads_as_vmware_reads_it(line):
    assert vmx.parse(line) == _as_vmware_reads(line)


def test_vmx_reads_a_hand_edited_line():
    assert vmx.parse('scsi0:1.present = TRUE\nscsi0:1.fileName = "db_1.vmdk"   # data disk') == {
        "scsi0:1.present": "TRUE", "scsi0:1.fileName": "db_1.vmdk"}


def test_vmx_escapes_are_bytes_and_keys_fold_case(tmp_path):
    """Escape_Undo makes |XX a byte before the charset applies (ポ in Shift_JIS is 83 7C, written
    `83 |7C`); ESXi's dictionary folds key case, the last line giving the value."""
    path = str(tmp_path / "x.vmx")
    with open(path, "wb") as f:
        f.write(b'.encoding = "Shift_JIS"\nn = "\x83|7C1"\nSCSI0:1.FileName = "a"\nscsi0:1.filename = "b"\n')
    data = vmx.load(path)
    assert (data["n"], data.get("scsi0:1.fileName"), "Scsi0:1.FILENAME" in data) == ("\u30dd1", "b", True)
    vmx.save(path, data)
    assert vmx.load(path) == data and vmx.parse('u = "M|C3|BCller"') == {"u": "M\u00fcller"}


@pytest.mark.parametrize("path", [
    "/vmfs/volumes/ds1", "/vmfs/volumes/ds1/vm/vm.vmx", "/vmfs/volumes/", "/vmfs/volumes//x", "/vmfs/volume/ds",
    "/vmfs/volumes/ds\n", "/vmfs/volumes/ds/a\n", "/vmfs/volumes/ds/a\nb", "/tmp/x",
])
def test_volume_split_is_the_pattern_s(path):
    m = VOLUME.match(path)
    assert host._volume(path) == ((m.group(1), m.group(2) or "") if m else None)


EXTENT = re.compile(r'^(RW|RDONLY|NOACCESS)\s+(\d+)\s+(\w+)\s+"(.*)"(?:\s+(\d+))?\s*$')  # and the extent lines


@pytest.mark.parametrize("line", [
    'RW 65536 VMFS "a-flat.vmdk"', 'RDONLY 8 SPARSE "a b"c-s001.vmdk" 12', 'NOACCESS 1 VMFSRDM "x" \u0663',
    'RW 8 VMFS "a" 1 2', 'RW 8 VMFS "a"1', 'RW 8 VMFS"a"', 'RW 8 VM-FS "a"', 'RW 8 V_\u00e9 "a"', 'RWX 8 VMFS "a"',
    'rw 8 VMFS "a"', 'RW \u0663 VMFS "a"', 'RW 8x VMFS "a"', 'RW 8 VMFS "', 'RW 8 VMFS ""', 'RW 8 VMFS',
    'RW\u00a08\tVMFS \u2003"a"', "",
])
def test_extent_line_reads_as_the_pattern_did(line):
    m = EXTENT.match(line)
    assert disks._extent(line) == ((m.group(1), int(m.group(2)), m.group(3), m.group(4),
                                    int(m.group(5)) if m.group(5) else None) if m else None)


@pytest.mark.parametrize("key", [
    "scsi0:0.fileName", "SATA1:15.FILENAME", "ide0:1.filename", "nvme0:0.fileName\n", "nvme0:0.fileName\n\n",
    "scsi0:0.present", "scsi0.fileName", "scsi:0.fileName", "scsi0:0:0.fileName", "usb0:0.fileName",
    "scsi0:x.fileName", "\u017fcsi0:0.fileName", "scsi\u0663:0.fileName", "\u0130de0:0.fileName",
])
def test_disk_key_reads_as_the_pattern_did(key):
    m = re.match(vmx.DISK_KEY, key, re.I)
    assert vmx._disk_node(key) == (m.group(1) if m else None)
