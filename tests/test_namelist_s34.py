"""A VM list saved by Notepad as "Unicode" (UTF-16 with a BOM): refused naming the encoding, not as a name
holding control characters (its NUL bytes), which left the admin looking for a typo in the names."""

import codecs

import pytest

from hotvcb import namelist
from hotvcb.errors import UsageError


@pytest.mark.parametrize("encoding, bom", [("utf-16-le", codecs.BOM_UTF16_LE), ("utf-16-be", codecs.BOM_UTF16_BE)])
def test_a_utf16_list_is_refused_naming_its_encoding(tmp_path, encoding, bom):
    listed = tmp_path / "vms.txt"
    listed.write_bytes(bom + "db\r\nweb\r\n".encode(encoding))
    with pytest.raises(UsageError) as err:
        namelist.read_names(str(listed))
    assert "UTF-16" in str(err.value) and "UTF-8" in str(err.value), err.value
    assert "control character" not in str(err.value)


def test_a_utf8_list_with_its_bom_still_reads(tmp_path):
    listed = tmp_path / "vms.txt"
    listed.write_bytes(codecs.BOM_UTF8 + "db\r\nwéb\r\n".encode("utf-8"))
    assert namelist.read_names(str(listed)) == ["db", "wéb"]
