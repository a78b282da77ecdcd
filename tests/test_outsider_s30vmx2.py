"""Outside test, stop 30 (second round on .vmx files): how hotvcb reads and rewrites VMware's
dictionary files (.vmx, .vmsd) after the 2026-12-04 fix-vmx change. A .vmx line is what VMware's
dictionary parser makes of it (open-vm-tools lib/dict/dictll.c, DictLL_UnmarshalLine: quoted or
unquoted value, trailing `# comment`, NUL ends the line); the value is then unescaped byte by byte
(lib/misc/escape.c, Escape_Undo: `|` and two hex digits is that byte) and read in the file's
`.encoding`; keys fold case; of two lines setting one key the last wins. Each defect is a strict
xfail until fixed; tiny disks, one simulated host per test."""

import os
import re

import pytest

from simhost import backup_dirs, hotvcb, needs_root, vim, write_conf

pytestmark = [needs_root]


_LINE = re.compile(rb'[ \t]*([^ \t#=]+)[ \t]*=[ \t]*(?:"([^"]*)"|([^ \t#"][^ \t#]*)?)[ \t]*(?:#.*)?\Z', re.S)


def as_vmware_reads(raw, charset="utf-8"):
    """{folded key: value} of a dictionary file's bytes as VMware reads them: each line parsed as
    bytes (DictLL_UnmarshalLine), its value unescaped as bytes (Escape_Undo), then decoded; the
    last line setting a key wins."""
    out = {}
    for line in raw.split(b"\n"):
        line = line.split(b"\0", 1)[0]
        if line.endswith(b"\r"):
            line = line[:-1]
        m = _LINE.match(line)
        if m:
            value = m.group(2) if m.group(2) is not None else (m.group(3) or b"")
            value = re.sub(rb"\|([0-9A-Fa-f]{2})", lambda x: bytes([int(x.group(1), 16)]), value)
            out[m.group(1).decode("ascii", "replace").lower()] = value.decode(charset, "replace")
    return out


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def write_bytes(path, raw):
    with open(path, "wb") as f:
        f.write(raw)


def as_written_by(path, kind, latin1_line):
    """Rewrite the UTF-8 dictionary file at path as `kind` left it: "windows-1252", an old Windows-made VM's
    (declared and written in windows-1252), or else UTF-8 with latin1_line appended from a Latin-1 terminal."""
    raw = read_bytes(path)
    if kind == "windows-1252":
        raw = raw.decode("utf-8").replace('.encoding = "UTF-8"', '.encoding = "windows-1252"').encode("cp1252")
    else:
        raw += latin1_line.encode("latin-1")
    write_bytes(path, raw)


def _backup_web(host, conf):
    """Back `web` up with conf, which must succeed: its one backup folder."""
    r = hotvcb(host, "-m", "web", "-g", conf)
    assert r.returncode == 0, r.stdout + r.stderr
    (folder,) = backup_dirs(host, "web")
    return folder


def _restore_web_copy(host, folder):
    """Restore the backup in folder as `web copy` on ds5, which must succeed: its output."""
    r = hotvcb(host, "restore", host.host_path(folder), "--datastore", "ds5", "--name", "web copy")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    return out


def restored(host, datastore, name, ext=".vmx"):
    return os.path.join(host.ds_dir(datastore), name, name + ext)


# ----------------------------------------------------------------------------------------------------
# A copy's identity, where a key is set twice


def test_a_copy_never_keeps_the_originals_identity_from_a_key_set_twice(host):
    """`web`'s .vmx was hand-edited years ago: a block pasted at its top (from the VM's own
    documentation page) sets `uuid.bios`, `ethernet0.generatedAddress` and `workingDir` (the VM's
    own folder, as the vSphere client writes it) once more, to the values ESXi's own lines hold. VMware reads such a file fine: of two lines setting one key
    the last wins. The admin restores last night's backup as `web copy` to test it, beside the running
    original: docs/restore.md promises the copy "can run beside the original: new UUID and new MAC
    addresses". hotvcb removed ESXi's lines, the last of each pair, and left the pasted ones: the
    restored .vmx, as VMware reads it, now gives the copy the original's BIOS UUID and MAC, and
    the original's folder as its working folder: the copy's first snapshot writes its deltas, named
    as the original's (web-000001.vmdk), into the original VM's folder. Every line setting a
    key the copy must not keep should go, not just the last."""
    conf = write_conf(host)
    vmid = host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    path = host.vmx_real(vmid)
    raw = read_bytes(path)
    before = as_vmware_reads(raw)
    bios, mac = before["uuid.bios"], before["ethernet0.generatedaddress"]
    original = "/vmfs/volumes/datastore1/web"
    pasted = ('# identity and placement, from the wiki page of web\nuuid.bios = "%s"\n'
              'ethernet0.generatedAddress = "%s"\nworkingDir = "%s"\n' % (bios, mac, original))
    write_bytes(path, pasted.encode("ascii") + raw + ('workingDir = "%s"\n' % original).encode("ascii"))
    folder = _backup_web(host, conf)
    out = _restore_web_copy(host, folder)
    after = as_vmware_reads(read_bytes(restored(host, "ds5", "web copy")))
    assert after.get("uuid.bios") != bios, (after.get("uuid.bios"), out)
    assert after.get("ethernet0.generatedaddress") != mac, (after.get("ethernet0.generatedaddress"), out)
    assert (after.get("workingdir") or "").rstrip("/") != original, (after.get("workingdir"), out)


# ----------------------------------------------------------------------------------------------------
# The .vmsd of a snapshot tree: read and written back without the .vmx's charset rules


@pytest.mark.parametrize("kind", ["windows-1252", "utf8-with-one-latin1-line"])
def test_a_restored_snapshot_tree_keeps_its_snapshot_names(host, kind):
    """`web` has two snapshots, the first named `Vor Änderung – Test` by the admin's German
    colleague, and is backed up with BACKUP_SNAPSHOT_TREE=1 so that a restore brings the tree back
    ("the user's snapshots keep their names, ids, descriptions and files", docs/backup-format.md).
    Its .vmsd is (a) an old Windows-made VM's, `.encoding = "windows-1252"`, or (b) UTF-8 with one
    description appended over SSH from a Latin-1 terminal (`Café` with the one byte E9). hostd lists
    the snapshot by its name either way. The .vmx is read in its declared charset, a UTF-8 one line
    by line (the fix of this morning); the .vmsd, a file of the same dictionary format, is not: the
    restored VM's snapshot manager shows `Vor Ã„nderung Â– Test` (a) or `Vor Ãnderung â Test` (b),
    and the admin cannot tell which snapshot to revert to. The restored .vmsd should read, in the
    charset it declares, the names the original's had."""
    conf = write_conf(host, BACKUP_SNAPSHOT_TREE=1)
    vmid = host.create_vm("web", "datastore1", [{"size": "1M"}], power="on",
                          snapshots=["Vor Änderung – Test", "two"])
    vmsd = host.vmx_real(vmid)[: -len(".vmx")] + ".vmsd"
    as_written_by(vmsd, kind, 'snapshot0.description = "Café"\n')
    assert "Vor Änderung – Test" in vim(host, "vmsvc/snapshot.get", vmid)  # as hostd lists it
    folder = _backup_web(host, conf)
    out = _restore_web_copy(host, folder)
    raw = read_bytes(restored(host, "ds5", "web copy", ".vmsd"))
    declared = as_vmware_reads(raw).get(".encoding") or "UTF-8"
    names = as_vmware_reads(raw, "cp1252" if declared.lower() == "windows-1252" else "utf-8")
    assert names.get("snapshot0.displayname") == "Vor Änderung – Test", (names.get("snapshot0.displayname"), out)


# ----------------------------------------------------------------------------------------------------
# Escapes: VMware undoes `|XX` on the bytes, before the charset


@pytest.mark.parametrize("charset,escaped,name", [
    ("UTF-8", b"M|C3|BCller DB", "Müller DB"),
    ("Shift_JIS", "ポ".encode("shift_jis").replace(b"|", b"|7C") + b"12 DB", "ポ12 DB"),
], ids=["utf8-escaped-bytes", "shift_jis-escaped-trail-byte"])
def test_an_escaped_byte_in_the_display_name_is_read_as_vmware_reads_it(host, charset, escaped, name):
    """A ghettoVCB backup (no hotvcb.json) of a VM whose .vmx a tool wrote with every byte it did not
    trust escaped as VMware's dictionary format allows: (a) `displayName = "M|C3|BCller DB"`, the
    UTF-8 bytes of `ü` escaped; (b) an old Japanese Workstation VM, `.encoding = "Shift_JIS"`, whose
    name `ポ12 DB` holds the byte 7C (`|`) as the second byte of `ポ`, which VMware's writer escapes
    as `|7C` like any `|`. VMware unescapes the value's bytes, then reads them in the file's charset:
    the VM is `Müller DB` / `ポ12 DB`. hotvcb's restore unescaped after decoding and restored the VM
    as `MÃ¼ller DB` (b: `ポ7C12 DB`), a folder and display name the admin's inventory and scripts
    do not know. The restore should use the name VMware reads."""
    conf = write_conf(host)
    vmid = host.create_vm("vm1", "datastore1", [{"size": "1M"}], power="off")
    r = hotvcb(host, "-m", "vm1", "-g", conf)
    assert r.returncode == 0, r.stdout + r.stderr
    (folder,) = backup_dirs(host, "vm1")
    os.unlink(os.path.join(folder, "hotvcb.json"))  # as ghettoVCB wrote it
    vmx = os.path.join(folder, "vm1.vmx")
    raw = read_bytes(vmx).replace(b'displayName = "vm1"', b'displayName = "' + escaped + b'"')
    raw = raw.replace(b'.encoding = "UTF-8"', b'.encoding = "' + charset.encode("ascii") + b'"')
    write_bytes(vmx, raw)
    assert as_vmware_reads(raw, charset)["displayname"] == name
    r = hotvcb(host, "restore", host.host_path(folder), "--datastore", "ds5")
    out = r.stdout + r.stderr
    assert os.listdir(host.ds_dir("ds5")) == [name], out


# ----------------------------------------------------------------------------------------------------
# Simulator (esxisim) defects: where it reads a .vmx otherwise than ESXi does


def test_esxisim_folds_the_case_of_vmx_keys_as_esxi_does(host):
    """ESXi's dictionary keys fold case: `SCSI0:1.FileName = "db_1.vmdk"` with `scsi0:1.present =
    "TRUE"` is the VM's second disk (hotvcb reads it so, and backs it up). The simulator lists only
    the first disk: a test of a running VM's backup with such a line would see a VM without the disk
    ESXi runs with, and could never show hotvcb missing it."""
    vmid = host.create_vm("db", "datastore1", [{"size": "1M"}, {"size": "1M"}], power="off")
    path = host.vmx_real(vmid)
    write_bytes(path, read_bytes(path).replace(b"scsi0:1.fileName", b"SCSI0:1.FileName"))
    assert [node.lower() for node, _path, _mode in host.vm_disks(vmid)] == ["scsi0:0", "scsi0:1"]


@pytest.mark.parametrize("kind", ["windows-1252", "utf8-with-one-latin1-line"])
def test_a_restored_snapshot_tree_keeps_the_vmx_text(host, kind):
    """`web` keeps its notes in the annotation, `Preis 5 € / Grüße`, and has a snapshot; it is backed
    up with BACKUP_SNAPSHOT_TREE=1. Its .vmx is (a) an old Windows-made VM's, `.encoding =
    "windows-1252"`, or (b) UTF-8 with one line appended over SSH from a Latin-1 terminal. hostd
    reads the annotation right either way, and a restore of a backup without the tree does too (the
    .vmx is read as VMware reads it since this morning). The tree's copy of the .vmx is not: it is
    read as UTF-8-else-Latin-1 and written as UTF-8 under the charset it declared, and the restored
    VM's annotation reads `Preis 5 Â€ / GrÃ¼ÃŸe` (a) or `Preis 5 â‚¬ / GrÃ¼ÃŸe` (b). Restoring the
    tree should not change a value the restore does not rewrite."""
    conf = write_conf(host, BACKUP_SNAPSHOT_TREE=1)
    note = "Preis 5 € / Grüße"
    vmid = host.create_vm("web", "datastore1", [{"size": "1M"}], power="on", snapshots=["one"], annotation=note)
    path = host.vmx_real(vmid)
    as_written_by(path, kind, 'guestinfo.owner = "Café team"\n')
    folder = _backup_web(host, conf)
    assert os.path.isdir(os.path.join(folder, "snapshot-tree")), os.listdir(folder)
    out = _restore_web_copy(host, folder)
    raw = read_bytes(restored(host, "ds5", "web copy"))
    declared = as_vmware_reads(raw).get(".encoding") or "UTF-8"
    values = as_vmware_reads(raw, "cp1252" if declared.lower() == "windows-1252" else "utf-8")
    assert values.get("annotation") == note, (values.get("annotation"), declared, out)


# ----------------------------------------------------------------------------------------------------
# A backup that says OK and does not restore


def test_a_vm_whose_vmx_holds_large_guestinfo_is_restorable_from_its_ok_backup(host):
    """`web` is deployed from an OVA with cloud-init: its user-data (certificates, scripts) sits base64
    encoded in `guestinfo.userdata`, 1.1 MB of the running VM's .vmx. Every nightly backup ends
    'All VMs backed up OK!'. The day the datastore dies, `hotvcb restore` of that backup ends 'cannot
    read .../web.vmx: ... bytes, more than a file of its kind holds', 'All VMs failed to restore':
    no backup of the VM can be restored by hotvcb. A .vmx the backup took as the VM's
    configuration should restore, or the backup should fail (or warn) that night, not the restore."""
    import base64
    import random
    conf = write_conf(host)
    vmid = host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    userdata = base64.b64encode(random.Random(7).getrandbits(8 * 820 * 1024).to_bytes(820 * 1024, "little")).decode()
    with open(host.vmx_real(vmid), "a", encoding="utf-8") as f:
        f.write('guestinfo.userdata = "%s"\nguestinfo.userdata.encoding = "base64"\n' % userdata)
    assert os.path.getsize(host.vmx_real(vmid)) > 1 << 20
    r = hotvcb(host, "-m", "web", "-g", conf)
    if r.returncode != 0:
        return  # the backup says it is not good: that would do
    (folder,) = backup_dirs(host, "web")
    r = hotvcb(host, "restore", host.host_path(folder), "--datastore", "ds5", "--name", "web copy")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert as_vmware_reads(read_bytes(restored(host, "ds5", "web copy"))).get("guestinfo.userdata") == userdata


def test_the_backups_snapshot_tree_holds_the_vmsd_as_the_user_had_it(host):
    """docs/backup-format.md: `snapshot-tree/<VM>.vmsd` is "the user's snapshot tree, as it was
    before our snapshot", and the manifest lists the snapshots' names. `web`, an old Windows-made VM
    (`.encoding = "windows-1252"` in its .vmx and .vmsd), has a snapshot `Vor Änderung – Test`. The
    backup's .vmsd still declares windows-1252 but holds the name's UTF-8 bytes (`Vor Ã„nderung Â–
    Test` as VMware reads it), and hotvcb.json lists `Vor Änderung \\x96 Test`. An admin who copies
    the tree back by hand (or any tool reading the backup as a ghettoVCB-style folder) gets the
    names garbled, and `list`/the manifest do not name the snapshot hostd shows."""
    import json
    conf = write_conf(host, BACKUP_SNAPSHOT_TREE=1)
    vmid = host.create_vm("web", "datastore1", [{"size": "1M"}], power="on", snapshots=["Vor Änderung – Test", "two"])
    base = host.vmx_real(vmid)[: -len(".vmx")]
    for ext in (".vmx", ".vmsd"):
        raw = read_bytes(base + ext).decode("utf-8")
        write_bytes(base + ext, raw.replace('.encoding = "UTF-8"', '.encoding = "windows-1252"').encode("cp1252"))
    assert "Vor Änderung – Test" in vim(host, "vmsvc/snapshot.get", vmid)
    folder = _backup_web(host, conf)
    with open(os.path.join(folder, "hotvcb.json"), encoding="utf-8") as f:
        listed = json.load(f)["snapshot_tree"]["snapshots"]
    raw = read_bytes(os.path.join(folder, "snapshot-tree", "web.vmsd"))
    declared = as_vmware_reads(raw).get(".encoding") or "UTF-8"
    kept = as_vmware_reads(raw, "cp1252" if declared.lower() == "windows-1252" else "utf-8")
    assert (kept.get("snapshot0.displayname"), listed[0]) == ("Vor Änderung – Test",) * 2, (declared, listed)
