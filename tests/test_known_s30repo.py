"""Known behaviours, stop 30 (the deduplicating repository): outside testers' notes pinned through the CLI,
one test per defect.

Tiny disks; one simulated host per test where a host is needed.
"""

import os

from simhost import hotvcb, needs_root, write_conf
from esxisim import proclog


# -- 1. a delta's temporary clone started on a datastore without room for it ----------------------------------------

@needs_root
def test_a_delta_clone_that_cannot_fit_on_the_repositorys_datastore_is_never_started(host, tmp_path):
    """A VM running on the admin's snapshot is cloned to a temporary thin disk in the repository's tmp/ before
    it is read. On a datastore without room the clone ran until the datastore was full and failed half-way:
    for that while every VM on that datastore could not write. The room is checked first, as a folder backup's
    is: the VM fails naming the datastore and the bytes the clone needs, and no clone is started."""
    host.add_datastore("small", 12 << 20)
    host.create_vm("app", "datastore1", [{"size": "32M"}], power="on", snapshots=["before upgrade"])
    repo = "/vmfs/volumes/small/repo"
    conf = write_conf(host, VM_BACKUP_REPOSITORY=repo, ALLOW_VMS_WITH_SNAPSHOTS_TO_BE_BACKEDUP=1)
    r = hotvcb(host, "backup", "-m", "app", "-g", conf, "-w", tmp_path / "work")
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert "its temporary clone into %s/tmp needs" % repo in out, out
    assert "MiB on the datastore /vmfs/volumes/small, which has only" in out, out
    clones = [c for c in proclog.read(host) if c["tool"] == "vmkfstools" and c["event"] == "start"
              and "-i" in c["args"]]
    assert clones == [], clones
    assert os.listdir(host.real(repo + "/tmp")) == []
    assert not os.path.exists(host.real(repo + "/snapshots")) or not os.listdir(host.real(repo + "/snapshots"))
