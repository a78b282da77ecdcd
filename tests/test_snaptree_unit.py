"""The pieces of BACKUP_SNAPSHOT_TREE that need no host: relinking a delta, and the manifest's
record of the tree as health reads it."""

import json
import os

from hotvcb import vmdk
from hotvcb.localshell import LocalShell
from hotvcb.store import health, layout, manifest

DELTA = """# Disk DescriptorFile
version=1
encoding="UTF-8"
CID=9a3c51e2
parentCID=0d1f2e3c
isNativeSnapshot="no"
createType="seSparse"
parentFileNameHint="/vmfs/volumes/5f2a-uuid/web/web.vmdk"
# Extent description
RW 8388608 SESPARSE "web-000001-sesparse.vmdk"

# The Disk Data Base
#DDB

ddb.longContentID = "6e0b2f7ac2ee71d28a6f0c419a3c51e2"
"""


def test_relinking_a_delta_changes_only_its_parent_hint_and_parent_cid():
    out = vmdk.relinked(DELTA, "web.vmdk", "77aa88bb")
    assert 'parentFileNameHint="web.vmdk"' in out and "parentCID=77aa88bb" in out
    assert vmdk.content_id(out) == "9a3c51e2", "its own CID stays: its children still open"
    assert [l for l in out.splitlines() if not l.startswith("parent")] == \
        [l for l in DELTA.splitlines() if not l.startswith("parent")]
    assert vmdk.parse(out).parent_hint == "web.vmdk"


def _backup(tmp_path, tree, files):
    folder = tmp_path / "web" / "web-2026-12-01_21-00-00"
    os.makedirs(str(folder))
    (folder / "web-flat.vmdk").write_bytes(b"x")
    (folder / "STATUS.ok").write_text("ok\n")
    record = {"format": "hotvcb-backup", "version": 2, "result": "ok", "snapshot_tree": tree,
              "disks": [{"key": "scsi0:0", "files": ["web-flat.vmdk"], "ok": True}],
              "files": dict({"web-flat.vmdk": {"size": 1, "sha256_of_blocks": "0"}}, **files)}
    (folder / "hotvcb.json").write_text(json.dumps(record))
    return layout.from_path(LocalShell(), str(folder))


def test_a_tree_file_without_its_checksum_makes_the_backup_damaged(tmp_path):
    tree = {"folder": "snapshot-tree", "snapshots": ["one"], "files": ["snapshot-tree/web.vmsd"]}
    verdict = health.judge(LocalShell(), _backup(tmp_path, tree, {}))
    assert not verdict.good and verdict.state == "damaged"
    assert "snapshot tree file snapshot-tree/web.vmsd has no checksum" in verdict.reason


def test_a_malformed_tree_record_is_refused_not_half_read():
    text = json.dumps({"format": "hotvcb-backup", "version": 2, "snapshot_tree": {"files": "web.vmsd"}})
    try:
        manifest.parse(text, "hotvcb.json")
        raise AssertionError("a tree record whose files are not a list must be refused")
    except ValueError as err:
        assert "snapshot_tree" in str(err)
