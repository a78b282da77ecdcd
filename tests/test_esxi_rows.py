"""Which getallvms rows tell their VM (hosts/esxi_rows.settle): a row an annotation forges never picks
the vmid a backup snapshots, nor hides a second VM of a name. End to end: tests/test_outsider_print.py."""

import pytest

from hotvcb.hosts import vimcmd
from hotvcb.hosts.esxi_rows import settle
from hotvcb.model import VmRef

DS = "/vmfs/volumes/datastore1/"
A, B = VmRef("1", "a", DS + "a/a.vmx"), VmRef("2", "b", DS + "b/b.vmx")


def test_a_forged_row_repeating_a_vmid_before_or_after_its_genuine_row_loses():
    forged = VmRef("2", "a", DS + "a/a.vmx")  # in a's annotation: before b's genuine row of vmid 2
    for rows in ([A, forged, B], [A, B, forged]):
        refs, doubtful = settle(rows, ())
        assert refs == [A] and list(doubtful) == ["2"], (rows, doubtful)
        assert "'b' on '%sb/b.vmx'" % DS in doubtful["2"], doubtful


def test_a_forged_row_spelling_the_vmx_otherwise_still_names_that_vmx():
    refs, doubtful = settle([A, VmRef("2", "a", DS + "a//./a.vmx"), B], ())
    assert refs == [A] and list(doubtful) == ["2"], doubtful


def test_a_row_repeated_as_it_is_tells_the_same_vm():
    assert settle([A, B, B], ()) == ([A, B], {})


def test_one_vmx_on_a_vmid_not_otherwise_listed_tells_neither():
    refs, doubtful = settle([A, VmRef("99", "a", A.vmx_path), B], ())
    assert refs == [B] and sorted(doubtful) == ["1", "99"], doubtful
    assert "vmids 1, 99" in doubtful["1"], doubtful


def test_a_vmid_whose_other_row_does_not_read_or_that_hostd_skips_tells_no_vm():
    refs, doubtful = settle([A, B], ["2"])
    assert refs == [A] and "one that does not read" in doubtful["2"], doubtful


def test_two_vms_of_one_name_are_both_told_for_the_job_to_refuse():
    twin = VmRef("3", "a", DS + "a2/a2.vmx")
    assert settle([A, B, twin], ()) == ([A, B, twin], {})


def test_a_vm_whose_namesakes_row_is_disputed_is_withheld_with_it():
    """A second VM a (vmid 3) whose vmid a forged row repeats: its row tells no VM, yet the name a is
    two VMs', so the first a may not pass as the only one."""
    twin, forged = VmRef("3", "a", DS + "a2/a2.vmx"), VmRef("3", "a", A.vmx_path)
    refs, doubtful = settle([A, forged, B, twin], ())
    assert refs == [B] and sorted(doubtful) == ["1", "3"], doubtful
    assert "also on the row of vmid 3" in doubtful["1"], doubtful


def test_a_name_or_path_with_a_line_feed_is_one_line_of_the_reason():
    odd = VmRef("2", "x\nOK", DS + "x\n/x.vmx")
    _refs, doubtful = settle([A, B, odd], ())
    assert "\n" not in doubtful["2"], doubtful


HEADER = "Vmid   Name   File   Guest OS   Version   Annotation\n"


def _row(vmid, name, annotation=""):
    return "%-6s %s   [datastore1] %s/%s.vmx   otherGuest   vmx-19   %s\n" % (vmid, name, name, name, annotation)


def _settled(text):
    """What list_vms decides from a listing, each row taken as read first (the .vmx confirms it)."""
    listing = vimcmd.getallvms_candidates(text)
    return settle([cands[0] for cands in listing.rows], listing.unreadable)


@pytest.mark.parametrize("note", ["2 disks attached", "10 GB", "3\t[datastore1] x"])
@pytest.mark.parametrize("on", ["1", "3"])  # rows sort as strings (1, 10, 2, 3): the note before or after the row
def test_an_annotation_line_starting_with_a_listed_vmid_costs_that_vm_nothing(note, on):
    """A note's line that starts with another VM's vmid but holds no row's fields (half a row included)
    is the note's next line: every VM stays told, and none is named as unreadable."""
    rows = [("1", "a"), ("10", "j"), ("2", "b"), ("3", "c")]
    text = HEADER + "".join(_row(vmid, name, "note\n%s\nmore" % note if vmid == on else "") for vmid, name in rows)
    refs, doubtful = _settled(text)
    assert doubtful == {} and [r.vmid for r in refs] == ["1", "10", "2", "3"], (refs, doubtful)


def test_a_row_with_the_fields_but_no_reading_still_disputes_its_vmid():
    """VM 2's genuine row shows no name (its name is empty or blanks: read as such, the job names it), and
    a's note forges a whole row of vmid 2: vmid 2 stays disputed, never x.vmx snapshotted as VM 2."""
    forged = "note\n2   x   [datastore1] x/x.vmx   otherGuest   vmx-19"
    text = HEADER + _row("1", "a", forged) + "2      [datastore1] e/e.vmx   otherGuest   vmx-19\n"
    refs, doubtful = _settled(text)
    assert [r.vmid for r in refs] == ["1"] and "it starts 2 rows" in doubtful["2"], doubtful


def test_a_line_without_the_fields_on_a_vmid_no_row_has_is_still_named():
    """`2 disks` where no row of vmid 2 reads: it may be a VM whose row no reading takes, so it is named
    (a backup of all says so) rather than dropped, and it disputes no row that reads."""
    refs, doubtful = _settled(HEADER + _row("1", "a", "note\n2 disks"))
    assert [r.vmid for r in refs] == ["1"] and doubtful == {}, doubtful
    assert list(vimcmd.getallvms_candidates(HEADER + _row("1", "a", "note\n2 disks")).unreadable) == ["2"]
