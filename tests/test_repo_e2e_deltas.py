"""`hotvcb backup --repo` of a VM whose disks are deltas of its user's snapshots (esxisim): each
chain, as it stands under our snapshot, is cloned to a temporary thin disk and stored from there
(docs/repository.md "Deltas of a user's snapshot"); the user's snapshots stay, the temporary goes."""

import os
import subprocess

from simhost import needs_root, hotvcb, snapshot_names, write_conf
from esxisim import writer

from hotvcb.repo.reader import restore_disk
from hotvcb.repo.repository import open_path

pytestmark = needs_root
REPO = "/vmfs/volumes/backup/repo"


def test_a_disk_on_a_users_snapshot_chain_is_stored_as_the_whole_disk_at_the_snapshot_instant(host, tmp_path):
    vmid = host.create_vm("app", "datastore1", [{"size": "8M"}], power="on", snapshots=["before upgrade"])
    [(node, top, _mode)] = host.vm_disks(vmid)
    assert "-000001" in top  # the disk the VM runs on is a delta
    initial = bytearray(host.read_disk(top))
    writer.start(host, vmid)
    conf = write_conf(host, VM_BACKUP_REPOSITORY=REPO, ALLOW_VMS_WITH_SNAPSHOTS_TO_BE_BACKEDUP=1)
    r = hotvcb(host, "backup", "-m", "app", "-g", conf, "-w", tmp_path / "work")
    writer.stop(host, vmid)
    assert r.returncode == 0, r.stdout + r.stderr
    assert snapshot_names(host, vmid) == ["before upgrade"]
    assert os.listdir(host.real(REPO + "/tmp")) == []  # the temporary clone is gone
    log = host.writer_log("app")
    create = [k for k, rec in enumerate(log) if rec["event"] == "snapshot.create"][-1]  # ours: the last one
    expected = tmp_path / "expected.raw"
    expected.write_bytes(bytes(writer.apply_writes({node: initial}, log, until=create)[node]))
    repo = open_path(host.real(REPO))
    [snap] = repo.snapshots("app")
    out = tmp_path / "restored.raw"
    restore_disk(repo, snap, snap.disks[0], str(out))
    cmp = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "raw", str(out), str(expected)],
                         capture_output=True, text=True)
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr
    # the restore gives back a thin base disk, not a delta pointing at a parent it does not have
    r = hotvcb(host, "restore", "--repo", REPO, "--latest", "app", "--datastore", "datastore1", "--name", "app2")
    assert r.returncode == 0, r.stdout + r.stderr
    folder = host.real("/vmfs/volumes/datastore1/app2")
    [desc] = [f for f in os.listdir(folder) if f.endswith(".vmdk") and not f.endswith("-flat.vmdk")]
    assert "parentFileNameHint" not in open(os.path.join(folder, desc)).read()
    cmp = subprocess.run(["qemu-img", "compare", "-f", "vmdk", "-F", "raw", os.path.join(folder, desc),
                          str(expected)], capture_output=True, text=True)
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr
