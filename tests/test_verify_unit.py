"""Block digests and verification of a backup folder, on plain files."""

import json

from hotvcb.jobs.verify import verify_folder
from hotvcb.shell import LocalShell
from hotvcb.store import manifest

MIB = 1 << 20


def make_backup(tmp_path, blocks=True):
    folder = tmp_path / "VM-2024-05-01_22-00-00"
    folder.mkdir()
    (folder / "VM.vmx").write_text('displayName = "VM"\n')
    (folder / "VM-flat.vmdk").write_bytes(bytes(3 * MIB + 100))
    (folder / "ds2").mkdir()
    (folder / "ds2" / "d.vmdk").write_bytes(b"x" * 5000)
    shell = LocalShell()
    files = {}
    for rel in shell.list_files(str(folder)):
        d = manifest.digest_file(shell, str(folder / rel))
        files[rel] = d.entry() if blocks else {"size": d.size, "sha256": d.sha256}
        assert d.sha256 == shell.sha256(str(folder / rel))
    (folder / manifest.MANIFEST).write_text(manifest.dumps({"vm": "VM", "result": "ok", "files": files, "verified": None}))
    (folder / "STATUS.ok").write_text("ok\n")
    return shell, folder


def flip(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))


def test_intact_backup_is_recorded(tmp_path):
    shell, folder = make_backup(tmp_path)
    res = verify_folder(shell, str(folder))
    assert res.status == "ok" and res.files == 3, res.message
    data = json.loads((folder / manifest.MANIFEST).read_text())
    assert data["verified"] and "verify_error" not in data


def test_flipped_byte_names_file_and_mib_range(tmp_path):
    shell, folder = make_backup(tmp_path)
    flip(folder / "VM-flat.vmdk", 2 * MIB + 7)
    res = verify_folder(shell, str(folder))
    assert res.status == "damaged"
    p = res.problems[0]
    assert (p.file, p.first, p.last) == ("VM-flat.vmdk", 2 * MIB, 3 * MIB - 1)
    data = json.loads((folder / manifest.MANIFEST).read_text())
    assert data["verified"] is None and data["verify_error"]["file"] == "VM-flat.vmdk"


def test_last_partial_block_and_truncation(tmp_path):
    shell, folder = make_backup(tmp_path)
    flip(folder / "VM-flat.vmdk", 3 * MIB + 50)
    p = verify_folder(shell, str(folder)).problems[0]
    assert (p.first, p.last) == (3 * MIB, 3 * MIB + 99)
    with open(folder / "ds2" / "d.vmdk", "r+b") as f:
        f.truncate(4000)
    res = verify_folder(shell, str(folder))
    assert [x.file for x in res.problems] == ["VM-flat.vmdk", "ds2/d.vmdk"]
    assert "size 4000" in res.problems[1].message and res.problems[1].first == 0


def test_old_manifest_without_blocks_and_missing_file(tmp_path):
    shell, folder = make_backup(tmp_path, blocks=False)
    flip(folder / "VM.vmx", 0)
    (folder / "ds2" / "d.vmdk").unlink()
    res = verify_folder(shell, str(folder))
    assert [(x.file, x.message.split(" (")[0]) for x in res.problems] == [
        ("VM.vmx", "SHA-256 mismatch"), ("ds2/d.vmdk", "missing")]
    assert "no block digests" in res.problems[0].message


def test_ghettovcb_backup_is_unverifiable_not_damaged(tmp_path):
    folder = tmp_path / "g"
    folder.mkdir()
    (folder / "STATUS.ok").write_text("")
    res = verify_folder(LocalShell(), str(folder))
    assert res.status == "unverifiable" and res.ok
