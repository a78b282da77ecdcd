"""restore_vmsn: a restored snapshot's state file names no file of the original VM, its layout's lengths kept."""

from hotvcb.jobs.restore_vmsn import disk_names, rewritten
from hotvcb.vmx import VmxFile

VMSD = '''snapshot0.uid = "1"
snapshot0.filename = "web2-Snapshot1.vmsn"
snapshot0.numDisks = "2"
snapshot0.disk0.fileName = "web2.vmdk"
snapshot0.disk0.node = "scsi0:0"
snapshot0.disk1.fileName = "web2_1.vmdk"
snapshot0.disk1.node = "scsi0:2"
'''

CONFIG = (b'displayName = "web"\n'
          b'scsi0:0.fileName = "web.vmdk"\n'
          b'scsi0:1.fileName = "/vmfs/volumes/5f0c-ds5/web/web_1.vmdk"\n'
          b'scsi0:1.present = "TRUE"\n'
          b'SCSI0:2.FILENAME="/vmfs/volumes/5f0c-ds5/web/web_2.vmdk"\r\n')


def test_each_disk_line_outside_the_folder_is_renamed_or_blanked_at_its_own_length():
    data = b"\xd2\xbe\xd2\xbe\x00\x10binary" + CONFIG + b"\x00\xffmore state"
    names = disk_names(VmxFile(VMSD), "web2-Snapshot1.vmsn")
    assert names == {"scsi0:0": "web2.vmdk", "scsi0:2": "web2_1.vmdk"}
    out = rewritten(data, names)
    assert len(out) == len(data) and b"/vmfs/" not in out and b"ds5" not in out
    assert out.startswith(b"\xd2\xbe\xd2\xbe\x00\x10binary") and out.endswith(b"\x00\xffmore state")
    config = VmxFile(out[len(b"\xd2\xbe\xd2\xbe\x00\x10binary"):-len(b"\x00\xffmore state")].decode())
    assert config.get("scsi0:0.fileName") == "web.vmdk"  # in the folder: left as it is
    assert config.get("scsi0:1.fileName") is None  # independent, not in the snapshot: no disk once reverted
    assert config.get("scsi0:2.fileName") == "web2_1.vmdk"  # the restored file the .vmsd names


def test_a_state_file_of_another_snapshot_gets_no_names():
    assert disk_names(VmxFile(VMSD), "web2-Snapshot2.vmsn") == {}
