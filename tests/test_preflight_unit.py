"""Which disks VMDK_FILES_TO_BACKUP selects, without a host: the names ghettoVCB's per-VM files use."""

import pytest

from hotvcb.errors import HotvcbError
from hotvcb.jobs.preflight import disks_to_copy
from hotvcb.model import Disk, Vm, VmRef
from hotvcb.settings import Settings
from fakelog import Log

FOLDER = "/vmfs/volumes/ds1/db"
VM = Vm(VmRef("1", "db", FOLDER + "/db.vmx"), "ds1", FOLDER, None, [
    Disk("scsi0:0", FOLDER + "/db.vmdk", "ds1", "pvscsi"),
    Disk("scsi0:1", "/vmfs/volumes/5f1e0c2a-77d1c0de/db/db_1.vmdk", "ds5", "pvscsi"),  # as the .vmx writes it
    Disk("scsi0:2", FOLDER + "/logs/db_2.vmdk", "ds1", "pvscsi"),
])


@pytest.mark.parametrize("name, key", [
    ("db_1.vmdk", "scsi0:1"),
    ("/vmfs/volumes/5f1e0c2a-77d1c0de/db/db_1.vmdk", "scsi0:1"),  # the .vmx's fileName, as findVMDK compared it
    ("/vmfs/volumes/ds5/db/db_1.vmdk", "scsi0:1"),  # the same path by its datastore's name
    ("logs/db_2.vmdk", "scsi0:2"),  # the .vmx's fileName of a disk in a subfolder
    ("/vmfs/volumes/ds1/db/db.vmdk", "scsi0:0"),
])
def test_a_disk_is_selected_by_any_name_ghettovcb_knew_it_by(name, key):
    log = Log()
    chosen = disks_to_copy(VM, Settings(vmdk_files_to_backup=(name,)), log)
    assert [d.key for d in chosen] == [key]
    assert not [line for line in log.lines if "does not have" in line], log.lines


def test_a_name_no_disk_has_is_warned_about_and_none_left_fails():
    log = Log()
    with pytest.raises(HotvcbError, match="matches none of its disks"):
        disks_to_copy(VM, Settings(vmdk_files_to_backup=("/vmfs/volumes/ds5/web/db_1.vmdk",)), log)
    assert [line for line in log.lines if "does not have" in line and "/vmfs/volumes/ds5/web/db_1.vmdk" in line]
