"""A backup that is sealed stays good whatever stops the run after it (store/seal.py, jobs/backup_end.py):
SIGTERM during rotation, after the folder got its final name, must not turn it into a failed backup (the
archive's case, SIGTERM during compression, is test_outsider_s28options')."""

import os
from datetime import datetime
from types import SimpleNamespace

import pytest

from hotvcb import interrupt
from hotvcb.errors import Interrupted
from hotvcb.jobs import backup_end
from hotvcb.localshell import LocalShell
from hotvcb.model import Disk, DiskResult, Vm, VmRef, VmResult
from hotvcb.runid import RunId
from hotvcb.settings import Settings
from hotvcb.store import health, layout, rotation
from hotvcb.store.seal import Sealer


class Log:
    def __init__(self):
        self.lines = []

    def info(self, m):
        self.lines.append(m)

    warning = error = debug = info


def test_sigterm_during_rotation_keeps_the_folder_backup_just_sealed_good(tmp_path, monkeypatch):
    def stopped(*args, **kwargs):
        interrupt.stop("interrupted by SIGTERM")
        interrupt.raise_pending()

    monkeypatch.setattr(rotation, "rotate", stopped)
    settings = Settings(vm_backup_volume=str(tmp_path / "backups"))
    vm = Vm(VmRef("1", "web", "[datastore1] web/web.vmx"), "datastore1", str(tmp_path), None)
    log = Log()
    sealer = Sealer(LocalShell(), settings, vm, datetime(2026, 1, 1), log, RunId.new())
    sealer.begin()
    with open(os.path.join(sealer.partial, "web-flat.vmdk"), "wb") as f:
        f.write(b"disk" * 1024)
    result = VmResult("web", disks=[DiskResult(Disk("scsi0:0", "/x/web.vmdk", "datastore1", "lsilogic"), True,
                                               ["web-flat.vmdk"])])
    one = SimpleNamespace(result=result, s=settings, log=log, host=SimpleNamespace(shell=LocalShell()), sealer=sealer,
                          snapshot=None, snapshot_name=None, gone=False, untouched=False, powered_down=False,
                          tree_record=None)
    try:
        with pytest.raises(Interrupted):
            backup_end.end(one, vm, sealer, failed=False)
    finally:
        interrupt.reset()
    assert result.sealed and result.status == "ok" and result.backup_dir == sealer.final, log.lines
    assert not any("sealing the backup failed" in line for line in log.lines), log.lines
    assert any("after the backup was sealed" in line and "rotation not done" in line for line in log.lines)
    [b] = layout.list_backups(LocalShell(), settings.vm_backup_volume, "web")
    assert health.judge(LocalShell(), b).good
