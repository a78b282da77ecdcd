"""Restore-file parsing, .vmx planning and what the restore refuses before a clone, without a host."""

import os
import shutil
import subprocess

import pytest

from hotvcb.errors import UsageError
from hotvcb.jobs import restore_write
from hotvcb.jobs.machine_of import machine_of
from hotvcb.jobs.restore_check import Checking
from hotvcb import vmdknames
from hotvcb.jobs.restore_plan import DiskCopy, Plan, Planner, RestoreError
from hotvcb.jobs.vmx_identity import answer_moved_or_copied
from hotvcb.localshell import LocalShell
from hotvcb.vmx import VmxFile, as_vmware_reads
from hotvcb.restorefile import BadLine, RestoreRequest, disk_format, parse_line, read_restore_file


def test_line_with_quotes_and_trailing_slashes():
    r = parse_line('"/vmfs/volumes/bk/VM/VM-2024-01-02_21-30-00/;/vmfs/volumes/ds1/;3"', "f:1")
    assert r == RestoreRequest("/vmfs/volumes/bk/VM/VM-2024-01-02_21-30-00", "/vmfs/volumes/ds1", "thin", None, "f:1")


def test_new_name_with_spaces_and_umlauts():
    r = parse_line("'/b/x;/vmfs/volumes/ds;4;Prüf Server (neu)'", "f:2")
    assert r.new_name == "Prüf Server (neu)" and r.disk_format == "eagerzeroedthick"


@pytest.mark.parametrize("line", ["", "   ", "# comment", "  #x;y;1"])
def test_skipped_lines(line):
    assert parse_line(line, "f:1") is None


@pytest.mark.parametrize("line,name", [("/b;/ds;3;n;", "n"), ("/b;/ds;3;;;", None), ('"/b;/ds;3;n; ;"', "n")])
def test_empty_fields_after_the_fourth_are_ignored(line, name):
    """ghettoVCB-restore read fields 1-4 (`awk -F ';'`): a line ending in ';' restored."""
    assert parse_line(line, "f:1") == RestoreRequest("/b", "/ds", "thin", name, "f:1")


@pytest.mark.parametrize("line,word", [
    ("/b;/ds", "found 2"),
    ("/b;/ds;1;n;extra", "found 5"),
    ("/b;/ds;1;n;extra;", "found 5"),
    ("/b;/ds;1;;x", "found 5"),
    ("/b;/ds;7", "'7' is not valid"),
    (";/ds;1", "field 1"),
    ("/b;;1", "field 2"),
])
def test_bad_lines(line, word):
    r = parse_line(line, "f:9")
    assert isinstance(r, BadLine) and word in r.message and str(r).startswith("f:9: ")


def test_formats():
    assert [disk_format(x) for x in "1234"] == ["zeroedthick", "2gbsparse", "thin", "eagerzeroedthick"]
    assert disk_format("thick") == "zeroedthick" and disk_format("THIN") == "thin"
    with pytest.raises(ValueError):
        disk_format("qcow2")


def test_file_keeps_going_after_bad_lines(tmp_path):
    f = tmp_path / "restore.conf"
    f.write_text('# header\n"/a;/ds;3"\n\n"/b;/ds;7"\n/c;/ds\n"/d;/ds;1;D"\n', encoding="utf-8")
    items = read_restore_file(str(f))
    assert [type(i).__name__ for i in items] == ["RestoreRequest", "BadLine", "BadLine", "RestoreRequest"]
    assert items[1].where == "%s:4" % f and items[2].where == "%s:5" % f


def test_latin1_file_and_empty_file(tmp_path):
    f = tmp_path / "r"
    f.write_bytes("/a;/ds;3;Müller\n".encode("latin-1"))
    assert read_restore_file(str(f))[0].new_name == "Müller"
    (tmp_path / "e").write_text("# nothing\n")
    with pytest.raises(UsageError):
        read_restore_file(str(tmp_path / "e"))


def test_vmx_remove_keeps_other_lines():
    vmx = VmxFile('a = "1"\n# note\nsched.swap.derivedName = "/x"\nUUID.Location = "56"\nb = "2"\n')
    vmx.remove("sched.swap.derivedName")
    vmx.remove("uuid.location")
    assert vmx.text() == 'a = "1"\n# note\nb = "2"\n'
    vmx.set("uuid.location", "new")
    assert vmx.get("UUID.location") == "new" and vmx.text().endswith('uuid.location = "new"\n')


def test_a_key_set_on_two_lines_is_removed_and_set_on_both():
    """VMware reads the last of two lines setting one key (case folded): removing only that one left
    the other in force (a restored copy kept the original's uuid.bios)."""
    vmx = VmxFile('uuid.bios = "56 4d"\na = "1"\nUUID.BIOS = "56 4d"\nk = "x"\nK = "y"\n')
    vmx.remove("uuid.bios")
    vmx.set("k", "z")
    assert vmx.text() == 'a = "1"\nk = "z"\n' and vmx.get("uuid.bios") is None


@pytest.mark.parametrize("charset,line,value", [
    ("UTF-8", b'n = "M|C3|BCller|7C"', "M\u00fcller|"),
    ("Shift_JIS", b'n = "\x83|7C12"', "\u30dd12"),  # the |7C is the second byte of the katakana PO
    ("windows-1252", b'n = "|80 |22"', '\u20ac "'),
])
def test_an_escape_is_a_byte_of_the_files_charset(charset, line, value):
    """Escape_Undo makes |XX a byte before the charset applies; a value written is escaped in bytes of
    the charset, and declaring UTF-8 re-escapes what would read otherwise."""
    from hotvcb.filetext import decoded
    data = b'.encoding = "' + charset.encode("ascii") + b'"\n' + line + b"\n"
    vmx = VmxFile(as_vmware_reads(decoded(data), lambda: len(data)))
    assert vmx.get("n") == value
    vmx.set("w", value)
    assert vmx.get("w") == value
    vmx.declare_utf8()
    again = VmxFile(as_vmware_reads(decoded(vmx.text().encode("utf-8")), lambda: len(vmx.text().encode("utf-8"))))
    assert (again.get(".encoding"), again.get("n"), again.get("w")) == ("UTF-8", value, value)


def test_a_vmx_is_read_in_the_charset_it_declares():
    """windows-1252 is not Latin-1 in 0x80-0x9F (the euro sign); UTF-8, undeclared or unknown stay as read."""
    from hotvcb.filetext import decoded
    data = '.encoding = "windows-1252"\nannotation = "5 \u20ac f\u00fcr B\u00fcro"\n'.encode("cp1252")
    assert VmxFile(as_vmware_reads(decoded(data), lambda: len(data))).get("annotation") == "5 \u20ac f\u00fcr B\u00fcro"
    for text in ('.encoding = "UTF-8"\na = "\u00e4"\n', 'a = "\u00e4"\n', '.encoding = "no-such"\na = "x"\n'):
        assert as_vmware_reads(text, lambda: len(text.encode("utf-8"))) == text


@pytest.mark.parametrize("declared", ["", '.encoding = "UTF-8"\n'])
def test_a_utf8_vmx_with_one_latin1_line_is_read_line_by_line(declared):
    """One Latin-1 byte (an annotation appended from a Latin-1 terminal) made the shell read the whole
    file as Latin-1: the other lines keep their UTF-8, that line alone is Latin-1."""
    from hotvcb.filetext import decoded
    data = (declared + 'displayName = "M\u00fcller DB"\n').encode("utf-8") + 'annotation = "Caf\u00e9"\n'.encode("latin-1")
    vmx = VmxFile(as_vmware_reads(decoded(data), lambda: len(data)))
    assert (vmx.get("displayName"), vmx.get("annotation")) == ("M\u00fcller DB", "Caf\u00e9")


def test_the_size_is_asked_only_where_the_text_cannot_tell_how_it_was_read():
    """Most .vmx files are ASCII or UTF-8 beyond Latin-1's range: no file_size round trip for them."""
    def unasked():
        raise AssertionError("size asked")
    for text in ('displayName = "web"\n', 'displayName = "\u4f8b"\n', 'displayName = "\u00c3\u00bc"\n'):
        assert as_vmware_reads(text, unasked) == text
    text = 'displayName = "M\u00fcller"\n'  # UTF-8 read as UTF-8, or its Latin-1 reading: only the size tells
    assert as_vmware_reads(text, lambda: len(text.encode("utf-8"))) == text


def test_a_vmx_declaring_a_charset_no_vmx_can_be_in_is_read_as_it_is_and_said_so():
    """rot13 and base64 are Python codecs but no text encodings; UTF-16 and EBCDIC do not read the
    ASCII the `.encoding` line itself was found in: each is ignored, with a word why."""
    for declared in ("rot13", "base64", "UTF-16", "UTF-32", "cp037", "no-such"):
        text = '.encoding = "%s"\ndisplayName = "Alt"\n' % declared
        said = []
        assert as_vmware_reads(text, lambda: len(text), said.append) == text
        assert len(said) == 1 and declared in said[0], said


class _Host:
    """The host's answers about folders: realpath as typed, these folders there."""

    def __init__(self, folders=()):
        self.folders = set(folders)

    def realpath(self, path):
        return path.rstrip("/")

    def isdir(self, path):
        return path.rstrip("/") in self.folders


def _identity(text, copy, original_folders=(), original=None, host=None):
    vmx = VmxFile(text)

    def put(key, value):
        vmx.remove(key) if value is None else vmx.set(key, value)

    return vmx, answer_moved_or_copied(vmx, copy, put, original_folders, original, host)


def test_restore_under_the_same_name_keeps_the_identity():
    vmx, warnings = _identity('uuid.bios = "56 4d"\nethernet0.addressType = "generated"\n'
                              'ethernet0.generatedAddress = "00:0c:29:aa:bb:cc"\n', copy=False)
    assert vmx.get("uuid.action") == "keep" and vmx.get("uuid.bios") == "56 4d"
    assert vmx.get("ethernet0.generatedAddress") == "00:0c:29:aa:bb:cc" and warnings == []


def test_a_copy_gets_a_new_identity_but_static_macs_stay_with_a_warning():
    vmx, warnings = _identity(
        'uuid.bios = "56 4d"\nvc.uuid = "52 1f"\nethernet0.addressType = "generated"\n'
        'ethernet0.generatedAddress = "00:0c:29:aa:bb:cc"\nethernet1.addressType = "static"\n'
        'ethernet1.address = "00:50:56:00:00:01"\n', copy=True)
    assert vmx.get("uuid.action") == "create"
    assert vmx.get("uuid.bios") is None and vmx.get("vc.uuid") is None
    assert vmx.get("ethernet0.generatedAddress") is None
    assert vmx.get("ethernet1.address") == "00:50:56:00:00:01"
    assert warnings == ["ethernet1 keeps its static MAC address 00:50:56:00:00:01; "
                        "change it if the original VM still runs"]


def test_a_copy_does_not_keep_the_originals_folder_for_swap_and_snapshots():
    """workingDir and sched.swap.dir set to the original's folder (as the vSphere client writes them): the
    copy would write its swap and its snapshot deltas, named as the original's, there. A shared swap
    datastore's folder stays. The VM itself (same name) drops them too: restored onto another datastore it
    would write them back into the old folder (test_outsider_s33restore); unset, they are its own folder."""
    text = ('workingDir = "/vmfs/volumes/datastore1/Win \u00d6"\nsched.swap.dir = "/vmfs/volumes/swap/"\n')
    vmx, warnings = _identity(text, copy=True, original_folders=("Win \u00d6",),
                              original="/vmfs/volumes/datastore1/Win \u00d6", host=_Host())
    assert vmx.get("workingDir") is None and vmx.get("sched.swap.dir") == "/vmfs/volumes/swap/" and warnings == []
    vmx, warnings = _identity(text, copy=True, original_folders=("Win \u00d6",))  # the backup does not say where
    assert vmx.get("workingDir") is None and [w for w in warnings if "/vmfs/volumes/datastore1/Win \u00d6" in w]
    vmx, _ = _identity(text, copy=False, original_folders=("Win \u00d6",))
    assert vmx.get("workingDir") is None and vmx.get("sched.swap.dir") == "/vmfs/volumes/swap/"
    vmx, _ = _identity(text, copy=True, original_folders=("Win Renamed", "Win \u00d6"))  # its .vmx's stem
    assert vmx.get("workingDir") is None


def test_a_working_dir_set_apart_on_another_datastore_is_kept_and_said():
    """The VM's deltas on the SSD datastore ds5, in a folder named after it: not its own folder (by full path),
    kept, and the restore says so; a folder so named that is not there now is dropped, and said."""
    text = 'workingDir = "/vmfs/volumes/ds5/Fast"\n'
    host = _Host(["/vmfs/volumes/ds5/Fast"])
    vmx, warnings = _identity(text, copy=False, original_folders=("Fast",), original="/vmfs/volumes/ds1/Fast",
                              host=host)
    assert vmx.get("workingDir") == "/vmfs/volumes/ds5/Fast"
    assert [w for w in warnings if "kept" in w and "/vmfs/volumes/ds5/Fast" in w], warnings
    vmx, warnings = _identity(text, copy=False, original_folders=("Fast",), original="/vmfs/volumes/ds1/Fast",
                              host=_Host())
    assert vmx.get("workingDir") is None and [w for w in warnings if "dropped" in w], warnings


def test_the_identity_a_restore_keeps_is_its_bios_uuid_and_mac_addresses():
    """Spelled as ESXi or the client may spell them: the same VM whatever its name."""
    from hotvcb.jobs.vmx_identity import identity
    a = VmxFile('uuid.bios = "56 4d 12-34"\nethernet0.addressType = "generated"\n'
                'ethernet0.generatedAddress = "00:0C:29:AA:BB:CC"\nethernet1.addressType = "static"\n'
                'ethernet1.address = "00:50:56:00:00:01"\n')
    assert identity(a) == {"uuid.bios 564d1234", "MAC 00:0c:29:aa:bb:cc", "MAC 00:50:56:00:00:01"}
    assert identity(VmxFile('displayName = "x"\n')) == set()


def test_unique_disk_names():
    assert vmdknames.unique(("a.vmdk", "A.vmdk", "a.vmdk", "b.vmdk"), "thin") == [
        "a.vmdk", "A_2.vmdk", "a_3.vmdk", "b.vmdk"]


def test_a_unique_disk_name_takes_no_data_file_of_another_copy():
    """d-flat.vmdk is d.vmdk's thin data file, e-s001.vmdk e.vmdk's first 2gbsparse extent."""
    assert vmdknames.unique(("d.vmdk", "d-flat.vmdk"), "thin") == ["d.vmdk", "d-flat_2.vmdk"]
    assert vmdknames.unique(("e.vmdk", "e-s001.vmdk"), "thin") == ["e.vmdk", "e-s001.vmdk"]
    assert vmdknames.unique(("e.vmdk", "E-S001.vmdk"), "2gbsparse") == ["e.vmdk", "E-S001_2.vmdk"]
    assert vmdknames.unique(("e-s001.vmdk", "e.vmdk"), "2gbsparse") == ["e-s001.vmdk", "e_2.vmdk"]


def test_a_unique_disk_name_is_none_a_kept_line_holds():
    """web_2.vmdk is the name the disconnected independent disk's line keeps: the second web.vmdk is web_3."""
    first = vmdknames.pick("web.vmdk", "thin", [], {"web_2.vmdk"})
    assert vmdknames.pick("web.vmdk", "thin", [first], {"web_2.vmdk"}).name == "web_3.vmdk"


class _NoClone:
    """A host whose clone must not be reached: the restore refused the disk before."""

    def __init__(self):
        self.shell, self.cloned = LocalShell(), []

    def copy_disk(self, disk, dst, fmt, progress):
        self.cloned.append(disk.path)


class _Log:
    def info(self, msg):
        pass

    def progress(self, label, total):
        return lambda pct: None


@pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")
def test_a_sparse_delta_naming_another_parent_when_copied_is_not_cloned(tmp_path):
    """restore_write's copy of a monolithicSparse delta (its descriptor embedded, so copied whole beside
    the checked text of its parent) is read again: the delta planned over `disk.vmdk` names `other.vmdk`
    by the time it is copied (swapped after the check). Refused as a backup changed under the restore,
    before any clone, its copy the one thing written."""
    backup, target = tmp_path / "backup", tmp_path / "vm.hotvcb-restoring"
    backup.mkdir()
    target.mkdir()
    for name in ("disk.vmdk", "other.vmdk"):
        subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=monolithicFlat", name, "1M"],
                       check=True, timeout=60, cwd=str(backup))
    subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", "-F", "vmdk", "-b", "other.vmdk", "disk-000001.vmdk"],
                   check=True, timeout=60, cwd=str(backup))
    parent = str(backup / "disk.vmdk")
    disk = DiskCopy("scsi0:0", str(backup / "disk-000001.vmdk"), "disk.vmdk", "lsilogic", 1 << 20,
                    (backup / "disk-000001.vmdk").read_bytes()[:65536].decode("latin-1"), True,
                    [(parent, open(parent).read())])
    req = RestoreRequest(str(backup), str(tmp_path), "thin", "vm")
    plan = Plan(req, str(backup), "vm", str(tmp_path / "vm"), str(target), "vm.vmx", "", disks=[disk])
    host = _NoClone()
    with pytest.raises(RestoreError, match="disk-000001.vmdk changed during the restore"):
        restore_write.fill(host, req, _Log(), plan, Checking(req, _Log(), None))
    assert host.cloned == []
    assert os.listdir(str(target / restore_write.CHECKED)) == ["disk-000001.vmdk"]


class _Stranger:
    """The host of a restore that knows none of the backup's datastores (another host's)."""

    shell = LocalShell()

    def datastores(self):
        return []

    def bytes_needed(self, disk, fmt):
        return 1 << 20


@pytest.mark.parametrize("named,kept,vmxf", [
    ("/vmfs/volumes/ds9/abs/abs_1.vmdk", "ds9/abs_1.vmdk", ".abs.vmxf"),  # hotvcb's layout, ghettoVCB's
    ("/vmfs/volumes/ds9/abs/abs_1.vmdk", "abs_1.vmdk", "abs.vmxf"),  # older hotvcb's: both beside the .vmx
    ("/vmfs/volumes/ds9/disks/app/abs_1.vmdk", "ds9/disks/abs_1.vmdk", "abs.vmxf"),  # ghettoVCB.sh's ${DS_UUID%/*/*}
])
def test_restore_reads_a_full_path_disk_and_the_vmxf_where_each_layout_keeps_them(tmp_path, named, kept, vmxf):
    """Backups laid out as ghettoVCB-restore reads them are restored by hotvcb too (and converted by
    restore --kvm), and so are those older hotvcb wrote; a disk the plan did not find would be
    restored disconnected."""
    backup = tmp_path / "abs-2026-12-01_21-00-01"
    (backup / kept).parent.mkdir(parents=True, exist_ok=True)
    (backup / "abs.vmx").write_text('displayName = "abs"\nextendedConfigFile = "abs.vmxf"\n'
                                    'scsi0:1.fileName = "%s"\nscsi0:1.present = "TRUE"\n' % named)
    (backup / kept).write_text('# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n'
                               'createType="vmfs"\n\nRW 2048 VMFS "abs_1-flat.vmdk"\n\nddb.adapterType = "lsilogic"\n')
    with open(str((backup / kept).parent / "abs_1-flat.vmdk"), "wb") as f:
        f.truncate(1 << 20)
    (backup / vmxf).write_text("<Foundry/>")
    req = RestoreRequest(str(backup), str(tmp_path), "thin")
    plan = Planner(_Stranger(), req, list).plan(LocalShell(), str(backup), None)
    assert [d.source for d in plan.disks] == [str(backup / kept)]
    assert plan.files == [(str(backup / vmxf), "abs.vmxf")]
    assert [d.source for d in machine_of(LocalShell(), str(backup)).machine.disks] == [str(backup / kept)]  # --kvm
