"""Which getallvms rows tell their VM (hosts/esxi_rows.settle): a row an annotation forges never picks
the vmid a backup snapshots, nor hides a second VM of a name. End to end: tests/test_outsider_print.py."""

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
