"""A new snapshot's id read from the VM's .vmsd (hosts/esxi_tree.created): only the entry of our
name that is the VM's newest (`snapshot.lastUID`) and was not there before is ours; anything else
leaves it to hostd (None). The .vmsd texts have the shape Broadcom KB 337269 and public dumps of
ESXi hosts show (keys in hostd's order, `snapshot.needConsolidate` among them)."""

from hotvcb.hosts import esxi_tree
from hotvcb.localshell import LocalShell
from hotvcb.model import Vm, VmRef

OURS = "hotvcb-snapshot-2026-12-03_03-30-00"

# a user's snapshot (uid 12) with ours (uid 16) taken on top of it, as hostd writes the file
TWO = """.encoding = "UTF-8"
snapshot.lastUID = "16"
snapshot.numSnapshots = "2"
snapshot.current = "16"
snapshot0.uid = "12"
snapshot0.filename = "web-Snapshot12.vmsn"
snapshot0.displayName = "before upgrade"
snapshot0.description = ""
snapshot0.type = "1"
snapshot0.numDisks = "1"
snapshot0.disk0.fileName = "web.vmdk"
snapshot0.disk0.node = "scsi0:0"
snapshot1.uid = "16"
snapshot1.filename = "web-Snapshot16.vmsn"
snapshot1.parent = "12"
snapshot1.displayName = "%s"
snapshot1.description = "hotvcb backup run 1"
snapshot1.type = "0"
snapshot1.numDisks = "1"
snapshot1.disk0.fileName = "web-000001.vmdk"
snapshot1.disk0.node = "scsi0:0"
snapshot.needConsolidate = "FALSE"
""" % OURS


def _vm(tmp_path, vmsd=None):
    folder = tmp_path / "web"
    folder.mkdir()
    (folder / "web.vmx").write_text('displayName = "web"\n')
    if vmsd is not None:
        (folder / "web.vmsd").write_text(vmsd)
    return Vm(VmRef("7", "web", str(folder / "web.vmx")), "datastore1", str(folder), None)


def test_ours_is_the_newest_entry_of_its_name(tmp_path):
    snap = esxi_tree.created(LocalShell(), _vm(tmp_path, TWO), OURS, before={"12"})
    assert snap is not None
    assert (snap.id, snap.name, snap.description, snap.depth) == ("16", OURS, "hotvcb backup run 1", 1)


def test_a_snapshot_taken_after_ours_leaves_it_to_hostd(tmp_path):
    later = TWO.replace('snapshot.lastUID = "16"', 'snapshot.lastUID = "17"')
    assert esxi_tree.created(LocalShell(), _vm(tmp_path, later), OURS, before={"12"}) is None


def test_an_entry_listed_before_the_create_is_not_ours(tmp_path):
    assert esxi_tree.created(LocalShell(), _vm(tmp_path, TWO), OURS, before={"12", "16"}) is None


def test_a_vmsd_that_does_not_name_ours_leaves_it_to_hostd(tmp_path):
    empty = '.encoding = "UTF-8"\nsnapshot.lastUID = "16"\n'  # as after the last snapshot's removal
    assert esxi_tree.created(LocalShell(), _vm(tmp_path, empty), OURS, before=set()) is None


def test_no_vmsd_leaves_it_to_hostd(tmp_path):
    assert esxi_tree.created(LocalShell(), _vm(tmp_path), OURS, before=set()) is None
