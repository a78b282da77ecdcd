"""Read-back of stop 32's change: a folder two VMs' names may map to (store/owner.py), where a backup's
manifest is there but does not read."""

import os

from test_outsider_s32r2store import VOLUME, _as_older_hotvcb, _two_backups, site  # noqa: F401 - fixture
from simhost import write_conf


def test_a_backup_whose_manifest_does_not_read_is_not_rotated_away_by_the_other_vm(site):
    """An older hotvcb backed up the VM `a%5cb` into `a%5cb/`, which is also ghettoVCB's folder of the VM `a\\b`.
    Those backups' manifests no longer read (damaged; an NFS error would do the same). Whose they are cannot
    be told, so `a\\b`'s rotation (VM_BACKUP_ROTATION_COUNT=1) must leave them: a guess by the folder's name
    took them for `a\\b`'s and deleted them."""
    site.create_vm("a%5cb", "datastore1", [{"size": "1M"}], power="on")
    _two_backups(site, "a%5cb", write_conf(site, VM_BACKUP_ROTATION_COUNT="3"))
    moved = _as_older_hotvcb(site, "a%5cb", "a%5cb")
    assert len(moved) == 2
    folder = os.path.join(site.real(VOLUME), "a%5cb")
    for name in moved:
        with open(os.path.join(folder, name, "hotvcb.json"), "w") as f:
            f.write("{ damaged")
    site.create_vm("a\\b", "datastore1", [{"size": "1M"}], power="on")
    _two_backups(site, "a\\b", write_conf(site, "one.conf", VM_BACKUP_ROTATION_COUNT="1"))
    assert set(moved) <= set(os.listdir(folder)), os.listdir(folder)
