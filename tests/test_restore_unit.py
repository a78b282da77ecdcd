"""Restore-file parsing and .vmx planning without a host."""

import pytest

from hotvcb.errors import UsageError
from hotvcb.jobs.restore import _drop, _unique
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


@pytest.mark.parametrize("line,word", [
    ("/b;/ds", "found 2"),
    ("/b;/ds;1;n;extra", "found 5"),
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


def test_drop_keeps_other_lines():
    text = 'a = "1"\n# note\nsched.swap.derivedName = "/x"\nUUID.Location = "56"\nb = "2"\n'
    assert _drop(text, ["sched.swap.derivedName", "uuid.location"]) == 'a = "1"\n# note\nb = "2"\n'


def test_unique_disk_names():
    used = set()
    assert [_unique(n, used) for n in ("a.vmdk", "A.vmdk", "a.vmdk", "b.vmdk")] == [
        "a.vmdk", "A_2.vmdk", "a_3.vmdk", "b.vmdk"]
