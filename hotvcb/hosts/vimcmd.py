"""Turn vim-cmd's human-oriented text into data.

vim-cmd has no machine-readable mode, so every parser here is written against
the real outputs in tests/data/esxi-samples and tolerates their quirks: columns
wider than the header, names with runs of spaces and brackets, multi-line
annotations and descriptions, "Skipping invalid VM" lines, the "Desciption"
typo, ESX 4.x snapshot listings without an Id line.
"""

import re
from typing import Dict, List, NamedTuple, Optional, Tuple

from ..model import DatastoreInfo, NfsShare, Snapshot, VmRef
from ..units import DIGITS
from .. import lazyre

_ROW = lazyre.compile(r"^\s*(\d+)\s+(.*)$", re.S)  # S: a row joined from lines
# a VM's .vmx, or a template's .vmtx (hostd lists templates among its VMs)
_FILE = lazyre.compile(r"^\[([^\]]+)\] (.+?\.vmt?x)\s+\S+\s+vmx-\d+\b")
_PATH = lazyre.compile(r"^(.+?\.vmt?x)\s+\S+\s+vmx-\d+\b")  # after a known datastore's `[name] `
_FIELDS = lazyre.compile(_FILE.pattern, re.S)  # the same fields, a path holding a line feed included
_SNAP_FIELD = lazyre.compile(r"^(-*)(?:\|-(?:ROOT|CHILD))?Snapshot (\w+(?: \w+)?)\s*:\s?(.*)$")
_AFTER_DESCRIPTION = ("Created On", "State")  # the fields vim-cmd prints after a description


def consolidate_how(vmid: str, snapshots: List[str]) -> str:
    """How an admin consolidates a VM's disks. The clients' Consolidate is VMware's documented way (vSphere
    Host Client, "Consolidate Snapshots"); vim-cmd's vmsvc verbs hold none of their own: a snapshot taken
    and `snapshot.removeall` commits every chain, the usual advice without vCenter, but removes every
    snapshot, so it is offered only to a VM with none (`snapshots`: the names of those it has): pasted on
    a VM with the user's snapshots, it deleted their way back."""
    client = "Consolidate in the host client or vSphere Client (the VM's Snapshots menu)"
    if snapshots:
        return ("%s; not with `vim-cmd vmsvc/snapshot.removeall`, which would delete its snapshot(s) %s too"
                % (client, ", ".join(repr(n) for n in snapshots)))
    return ("%s, or take a snapshot and remove all: `vim-cmd vmsvc/snapshot.create %s consolidate` then "
            "`vim-cmd vmsvc/snapshot.removeall %s`" % (client, vmid, vmid))


def invalid_vmids(text: str) -> List[str]:
    """vmids hostd lists as "Skipping invalid VM '<vmid>'" (its datastore or .vmx is gone)."""
    return re.findall(r"^Skipping invalid VM '(\d+)'", text, re.M)


TEMPLATE_SUFFIX = ".vmtx"  # a template's configuration file: <name>.vmtx, the .vmx's format
SKIPPED = "the host skips it (its datastore or .vmx is gone)"  # why hostd lists a VM as "Skipping invalid VM"


class Listing(NamedTuple):
    rows: List[List[VmRef]]  # every way each row can be read, most likely first
    unreadable: Dict[str, str]  # vmid -> why: rows no reading fits that may be a VM's, which a backup of all names


def parse_getallvms(text: str, datastores: Optional[Dict[str, str]] = None) -> List[VmRef]:
    """Rows of `vim-cmd vmsvc/getallvms` as VmRefs with absolute .vmx (or template's .vmtx) paths (best
    guess per row)."""
    return [cands[0] for cands in getallvms_candidates(text, datastores).rows]


def getallvms_candidates(text: str, datastores: Optional[Dict[str, str]] = None) -> Listing:
    """Every way each row of `vim-cmd vmsvc/getallvms` can be read, most likely first.

    A row is anchored on its leading vmid and on a `[datastore] path.vmx`
    field (a template's `path.vmtx`) followed by guest OS and `vmx-NN`. The name may itself contain
    `[x] ` pieces (`Copy of [datastore1] web`), so every bracket is a
    candidate split; candidates naming a known datastore come first, the
    rightmost first among equals. The listing cannot settle it (nor show a
    name's trailing blank): the driver confirms a candidate with the .vmx's
    displayName. `datastores` maps datastore name -> mount path
    (/vmfs/volumes/<name> when not given).

    vim-cmd prints a name raw, so a line feed in it splits its row: a row
    starts at a line with a leading vmid, and the lines up to the next one
    (a multi-line annotation's, or the rest of such a name) are joined to it
    one by one until the row reads. A row that never does is `unreadable`,
    never dropped: its VM would be missing from a backup of all.

    An annotation's line that starts with a number and a blank ("2 disks
    attached", "10 GB") starts such a record too. Where it has no row's
    fields (`[datastore] path.vmx`, guest OS, `vmx-NN`; hostd prints them on
    every row, an empty name's too) and its vmid starts a row that reads,
    it is that annotation's next line: no VM goes missing, so it is no
    row, lest a benign note cost the VM of that vmid its backup
    (hosts/esxi_rows.py). Without such a row it is still named: a VM whose
    row the fields' reading misses would otherwise vanish.
    """
    rows, unread, record = [], [], []  # type: List[List[VmRef]], List[Tuple[str, str, bool]], List[str]

    def read(record: List[str]) -> None:
        for n in range(1, len(record) + 1):
            cands = _row_candidates("\n".join(record[:n]), datastores)
            if cands:
                rows.append(cands)
                return
        vmid, rest = _ROW.match("\n".join(record)).groups()  # type: ignore[union-attr]  # a record starts so
        unread.append((vmid, "its row in `vim-cmd vmsvc/getallvms` cannot be read: %r" % "\n".join(record[:3]),
                       _has_fields(rest)))

    for line in text.split("\n"):  # rows end at a line feed: a name's U+2028 or NEL is the name's (a job refuses it)
        if _ROW.match(line):
            if record:
                read(record)
            record = [line]
        elif record:
            record.append(line)  # an annotation's next line, or the rest of a name holding a line feed
    if record:
        read(record)
    listed = {cands[0].vmid for cands in rows}
    unreadable = {}  # type: Dict[str, str]
    for vmid, why, fields in unread:
        if fields or vmid not in listed:
            unreadable.setdefault(vmid, why)
    return Listing(rows, unreadable)


def _has_fields(rest: str) -> bool:
    """Whether the text after a vmid holds a row's fields, from a field's start: as hostd prints them after
    a name no reading takes (one holding line feeds), or around a path holding a line feed."""
    return any(_FIELDS.match(rest[i:]) for i in _bracket_positions(rest))


def _row_candidates(row: str, datastores: Optional[Dict[str, str]]) -> List[VmRef]:
    m = _ROW.match(row)
    if not m:
        return []
    vmid, rest = m.group(1), m.group(2)
    cands = []
    for i in reversed(_bracket_positions(rest)):
        # an empty name is a name of blanks (hostd prints it so): the .vmx's displayName shows it, and the
        # job names it as one it cannot back up (layout.backup_unnameable), not as a row it cannot read
        name = rest[:i].rstrip()
        for datastore, path in _file_fields(rest[i:], datastores):
            known = datastores is not None and datastore in datastores
            root = (datastores or {}).get(datastore, "/vmfs/volumes/" + datastore)
            cands.append((not known, VmRef(vmid=vmid, name=unescape_name(name), vmx_path=root + "/" + path,
                                           template=path.endswith(TEMPLATE_SUFFIX))))
    return [ref for _unknown, ref in sorted(cands, key=lambda c: c[0])]


def _file_fields(field: str, datastores: Optional[Dict[str, str]]) -> List[Tuple[str, str]]:
    """The (datastore, path) a `[datastore] path.vmx  guest  vmx-NN` field can be read as: for each of the
    host's datastores it starts with (a name may hold brackets, `my ds [ssd] (1)`, which no pattern can
    tell from the path's), then as the first `]` ends the name (a datastore the host did not list)."""
    found = []
    for name in datastores or {}:
        head = "[" + name + "] "
        if field.startswith(head):
            f = _PATH.match(field[len(head):])
            if f:
                found.append((name, f.group(1)))
    f = _FILE.match(field)
    if f and (f.group(1), f.group(2)) not in found:
        found.append((f.group(1), f.group(2)))
    return found


def _bracket_positions(rest: str) -> List[int]:
    """Positions of '[' that start a field (line start or after a space), left to right."""
    return [i for i, c in enumerate(rest) if c == "[" and (i == 0 or rest[i - 1] == " ")]


def unescape_name(name: str) -> str:
    """hostd shows %, / and \\ in display names as %25, %2f, %5c."""
    return re.sub(r"%(25|2[fF]|5[cC])", lambda m: chr(int(m.group(1), 16)), name)


def parse_snapshot_get(text: str) -> List[Snapshot]:
    """Flatten the `snapshot.get` tree, depth from the run of leading dashes.

    A snapshot starts at a `|-ROOT` / `|-CHILD` line followed by its Name;
    once a description has begun, every other line belongs to it — an admin's
    description may well hold lines that look like fields of the tree.
    """
    snaps = []  # type: List[Snapshot]
    current = None  # type: Optional[dict]
    last_field = None
    node = False  # a ROOT/CHILD line was just seen: the next Name starts a snapshot
    for line in text.splitlines():
        if line.startswith(("Get Snapshot", "|-ROOT")) or re.match(r"^-*\|-CHILD\s*$", line):
            node = True
            continue
        m = _SNAP_FIELD.match(line)
        in_description = current is not None and last_field in ("Desciption", "Description")
        if m and m.group(2) == "Name" and not node:
            m = None  # every real Name follows its ROOT/CHILD line (all samples): this one is text
        if m and (not in_description or m.group(2) == "Name" or m.group(2) in _AFTER_DESCRIPTION):
            label, value = m.group(2), m.group(3)
            depth = len(m.group(1)) // 2 - 1
            if label == "Name":
                if current is not None:
                    snaps.append(_snapshot(current))
                current = {"depth": max(depth, 0), "Name": value}
            elif current is not None:
                current[label] = value
            last_field = label
            node = False
            continue
        if in_description and current is not None and last_field is not None:
            current[last_field] += "\n" + line  # multi-line description
    if current is not None:
        snaps.append(_snapshot(current))
    return snaps


def _snapshot(d: dict) -> Snapshot:
    return Snapshot(
        id=d.get("Id", "").strip(),
        name=d["Name"],
        description=d.get("Desciption", d.get("Description", "")),
        created=d.get("Created On", ""),
        state=d.get("State", ""),
        depth=d["depth"],
    )


def parse_power_state(text: str) -> str:
    """'on', 'off' or 'suspended' from `power.getstate` (last line counts)."""
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    last = lines[-1].lower() if lines else ""
    for word, state in (("powered on", "on"), ("powered off", "off"), ("suspended", "suspended")):
        if last == word:
            return state
    raise ValueError("unexpected power state output: %r" % (lines[-1] if lines else ""))


_TOOLS_RUNNING = lazyre.compile(r'^\s*toolsRunningStatus = "(\w+)"', re.M)


def parse_tools_running(text: str) -> Optional[bool]:
    """Whether VMware Tools run in the guest, from `vmsvc/get.guest`'s toolsRunningStatus (the field
    ghettoVCB greps for; "guestToolsExecutingScripts" is running too); None without the field."""
    m = _TOOLS_RUNNING.search(text)
    return None if m is None else m.group(1) != "guestToolsNotRunning"


_DS_FIELD = lazyre.compile(r'^\s*(\w+) = (?:"(.*)"|\'(.*)\'|([^,]*)),?\s*$')


def parse_datastore_listsummary(text: str) -> List[DatastoreInfo]:
    """The vim.Datastore.Summary blocks of `hostsvc/datastore/listsummary`."""
    out = []
    block = {}  # type: Dict[str, str]
    for line in text.splitlines():
        if "(vim.Datastore.Summary) {" in line:
            block = {}
            continue
        m = _DS_FIELD.match(line)
        if m:
            block[m.group(1)] = next(g for g in m.groups()[1:] if g is not None)
            continue
        if line.strip().startswith("}") and "name" in block:
            out.append(
                DatastoreInfo(
                    name=block["name"],
                    url=block.get("url", ""),
                    capacity=_int(block.get("capacity")),
                    free=_int(block.get("freeSpace")),
                    type=block.get("type", ""),
                )
            )
            block = {}
    return out


_NAS_FIELD = lazyre.compile(r'^\s*(remoteHost|remotePath) = "([^"]*)",?\s*$', re.M)
_NAS_HOSTS = lazyre.compile(r'^\s*remoteHostNames = \(string\) \[\s*$(.*?)^\s*\]', re.M | re.S)
_QUOTED = lazyre.compile(r'"([^"]*)"')


def parse_nas_share(text: str) -> Optional[NfsShare]:
    """The share of `hostsvc/datastore/info NAME` when it is an NFS datastore (its `nas =
    (vim.host.NasVolume)` block: remoteHost, remotePath, NFS 4.1's remoteHostNames); None when the
    output names no share (a VMFS datastore; field names from the vSphere API: no verbatim sample exists)."""
    fields = dict(_NAS_FIELD.findall(text))
    if not fields.get("remotePath"):
        return None
    servers = [fields["remoteHost"]] if fields.get("remoteHost") else []
    names = _NAS_HOSTS.search(text)
    servers += [h for h in _QUOTED.findall(names.group(1)) if h not in servers] if names else []
    return NfsShare(tuple(servers), fields["remotePath"]) if servers else None


_FREE = lazyre.compile(r"^\s*freeSpace = (%s),?\s*$" % DIGITS, re.M)


def parse_datastore_free(text: str) -> Optional[int]:
    """freeSpace of `hostsvc/datastore/info NAME` (a VmfsDatastoreInfo / NasDatastoreInfo block);
    None when the output has none (field names from the vSphere API: no verbatim sample exists)."""
    m = _FREE.search(text)
    return int(m.group(1)) if m else None


def _int(value: Optional[str]) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


_CLONE = lazyre.compile(r"Clone: (%s)%% done" % DIGITS)
# a release line is also read from the host's ramdisk (hosts/esxi_release.py), where anyone with root may write
# (its numbers bounded, and the first not the tail of a longer dotted one, which is then no version at all)
_VERSION = lazyre.compile(r"(?<!\.)\b({0})\.({0})(?:\.({0}))?\s+build-".format(DIGITS))


def parse_version(text: str) -> Optional[Tuple[int, ...]]:
    """"VMware ESXi 7.0.3 build-20328353" -> (7, 0, 3)."""
    m = _VERSION.search(text)
    if not m:
        return None
    return tuple(int(g) for g in m.groups() if g is not None)


# `vim-cmd hostsvc/hostsummary`'s runtime (vim.host.RuntimeInfo): `bootTime = "2026-12-06T04:00:00.250123Z",`
_BOOT_TIME = lazyre.compile(r'^\s*bootTime = "([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z)"', re.M)


def parse_boot_time(text: str) -> str:
    """The host's boot time in `vim-cmd hostsvc/hostsummary`'s output (HostRuntimeInfo.bootTime, UTC), "" where it
    is unset or not there."""
    m = _BOOT_TIME.search(text)
    return m.group(1) if m else ""


def version_line(output: str) -> str:
    """The line of `vmware -v`'s output that names ESX(i) and its version, "" if none does: every
    release prints one such line (vmware-v_01, ESX Server 3i to 8.0), which a login shell's or a
    wrapper's chatter may stand around."""
    for line in output.splitlines():
        if line.strip().startswith("VMware ESX") and parse_version(line):
            return line.strip()
    return ""


def clone_percent(fragment: str) -> Optional[int]:
    m = None
    for m in _CLONE.finditer(fragment):
        pass
    return int(m.group(1)) if m else None
