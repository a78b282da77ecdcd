"""The paths a descriptor line can hold (vmdk.writable): what the checked copy a restore clones from
(vmdk.anchored) and a renamed disk's descriptor (vmdk.rename_extent) may be written with."""

import pytest

from hotvcb import vmdk

FLAT = '# Disk DescriptorFile\ncreateType="vmfs"\n\nRW 2048 VMFS "disk-flat.vmdk" 0\n'
DELTA = ('# Disk DescriptorFile\ncreateType="vmfsSparse"\nparentFileNameHint="disk.vmdk"\n\n'
         'RW 2048 VMFSSPARSE "disk-000001-delta.vmdk"\n')


@pytest.mark.parametrize("brk", ["\n", "\r", "\x0b", "\x85", "\u2028", "\t", "\x00"])
def test_a_folder_with_a_line_break_or_control_character_is_never_written_into_a_descriptor(brk):
    folder = '/vmfs/volumes/b/x%sRW 2048 VMFS "/vmfs/volumes/ds/victim/victim-flat.vmdk" 0%s#' % (brk, brk)
    with pytest.raises(vmdk.Unwritable) as err:
        vmdk.anchored(FLAT, folder)
    assert repr(folder + "/disk-flat.vmdk") in str(err.value)
    assert brk not in str(err.value), "the refusal itself carries the raw character"


@pytest.mark.parametrize("char", ['"', "#", "ü", " "])
def test_an_extent_anchored_in_a_folder_of_odd_characters_names_that_file(char):
    folder = "/vmfs/volumes/b/a %s b/vm" % char
    (extent,) = vmdk.parse(vmdk.anchored(FLAT, folder)).extents
    assert extent.filename == folder + "/disk-flat.vmdk"


def test_a_parent_hint_cannot_hold_a_quote_but_its_extent_can():
    """parentFileNameHint's value ends at its first quote: anchored in a folder holding one, the hint would
    name another file, so it is refused; the same folder is fine for a disk without a parent."""
    folder = '/vmfs/volumes/b/a " b'
    with pytest.raises(vmdk.Unwritable):
        vmdk.anchored(DELTA, folder)
    anchored = vmdk.parse(vmdk.anchored(DELTA, "/vmfs/volumes/b/plain"))
    assert anchored.parent_hint == "/vmfs/volumes/b/plain/disk.vmdk"
    assert anchored.extents[0].filename == "/vmfs/volumes/b/plain/disk-000001-delta.vmdk"


def test_a_renamed_extent_with_a_line_break_is_refused_and_a_quote_kept():
    with pytest.raises(vmdk.Unwritable):
        vmdk.rename_extent(FLAT, "a\nRW 1 VMFS \"/x\"-flat.vmdk")
    assert vmdk.parse(vmdk.rename_extent(FLAT, 'a "b"-flat.vmdk')).extents[0].filename == 'a "b"-flat.vmdk'


def test_a_descriptor_whose_extent_line_cannot_be_read_is_refused(tmp_path):
    """An extent line we cannot parse (its name unquoted) left the outside-extent check nothing to check:
    a descriptor that names no extent we can read is refused, naming the file, never trusted."""
    from hotvcb.errors import HotvcbError
    from hotvcb.jobs import backup_check
    from hotvcb.localshell import LocalShell
    path = tmp_path / "disk.vmdk"
    path.write_text('# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType="vmfs"\n'
                    "RW 2048 VMFS /vmfs/volumes/datastore1/other/other-flat.vmdk\n")
    with pytest.raises(HotvcbError, match="disk.vmdk names no extent"):
        backup_check.require_extents_inside(LocalShell(), str(path))
