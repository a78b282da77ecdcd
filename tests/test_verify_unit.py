"""Block digests and verification of a backup folder, on plain files."""

import errno
import gzip
import hashlib
import io
import json
import os
import tarfile

import pytest

from hotvcb.errors import HostError
from hotvcb.jobs.verify import verify_folder
from hotvcb.localshell import LocalShell
from hotvcb.store import manifest

MIB = 1 << 20


def v1_entry(path, blocks=True):
    """A version-1 entry, computed here independently of the code under test."""
    data = open(path, "rb").read()
    entry = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    if blocks:
        digests = "".join(hashlib.sha256(data[i : i + MIB]).hexdigest()[:16] for i in range(0, len(data), MIB))
        entry["blocks"] = {"size": MIB, "hex": 16, "digests": digests}
    return entry


def proof_of(path, block=MIB):
    """sha256_of_blocks as docs/backup-format.md defines it, by the slowest obvious route."""
    data = open(path, "rb").read()
    return hashlib.sha256(b"".join(hashlib.sha256(data[i : i + block]).digest()
                                   for i in range(0, len(data), block))).hexdigest()


def sparse_file(path, size, writes):
    with open(str(path), "wb") as f:
        f.truncate(size)
        for offset, data in writes:
            f.seek(offset)
            f.write(data)


def make_backup(tmp_path, blocks=True, version=2):
    folder = tmp_path / "VM-2024-05-01_22-00-00"
    folder.mkdir()
    (folder / "VM.vmx").write_text('displayName = "VM"\n')
    (folder / "VM-flat.vmdk").write_bytes(bytes(3 * MIB + 100))
    (folder / "ds2").mkdir()
    (folder / "ds2" / "d.vmdk").write_bytes(b"x" * 5000)
    shell = LocalShell()
    files = {}
    for rel in shell.list_files(str(folder)):
        if version == 2:
            files[rel] = manifest.digest_file(shell, str(folder / rel)).entry()
            assert files[rel]["sha256_of_blocks"] == proof_of(str(folder / rel))
        else:
            files[rel] = v1_entry(str(folder / rel), blocks)
    text = manifest.dumps({"vm": "VM", "result": "ok", "files": files, "verified": None})
    if version == 1:
        text = text.replace('"version": 2', '"version": 1', 1)
    (folder / manifest.MANIFEST).write_text(text)
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
    shell, folder = make_backup(tmp_path, blocks=False, version=1)
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
    (folder / "g.vmx").write_text('displayName = "g"\n')
    (folder / "g.vmdk").write_text('# Disk DescriptorFile\ncreateType="vmfs"\nRW 8 VMFS "g-flat.vmdk"\n')
    (folder / "g-flat.vmdk").write_bytes(bytes(8 * 512))
    res = verify_folder(LocalShell(), str(folder))
    assert res.status == "unverifiable" and res.ok


# -- manifest version 2 ---------------------------------------------------------

def test_holes_and_written_zeros_give_the_same_digest(tmp_path):
    """Content identity, not allocation: a hole, written zeros and a stream agree."""
    size = 9 * MIB + 12345
    data = os.urandom(MIB)
    writes = [(2 * MIB + 100, data), (8 * MIB, b"tail")]
    sparse_file(tmp_path / "thin", size, writes)
    with open(str(tmp_path / "thick"), "wb") as f:
        f.write(open(str(tmp_path / "thin"), "rb").read())  # every zero written as data
    assert os.stat(str(tmp_path / "thin")).st_blocks < os.stat(str(tmp_path / "thick")).st_blocks
    shell = LocalShell()
    thin = manifest.digest_file(shell, str(tmp_path / "thin"))
    thick = manifest.digest_file(shell, str(tmp_path / "thick"))
    with open(str(tmp_path / "thin"), "rb") as f:
        stream = manifest.digest_stream(f.read)
    assert thin.entry() == thick.entry() == stream.entry()
    assert thin.size == size and thin.sha256_of_blocks == proof_of(str(tmp_path / "thin"))
    assert stream.sha256 == hashlib.sha256(open(str(tmp_path / "thin"), "rb").read()).hexdigest()
    assert thin.blocks == v1_entry(str(tmp_path / "thin"))["blocks"]["digests"]
    other = tmp_path / "other"
    sparse_file(other, size, writes[:1] + [(8 * MIB, b"tajl")])
    assert manifest.digest_file(shell, str(other)).sha256_of_blocks != thin.sha256_of_blocks


def test_empty_and_all_hole_files(tmp_path):
    shell = LocalShell()
    (tmp_path / "empty").write_bytes(b"")
    e = manifest.digest_file(shell, str(tmp_path / "empty"))
    assert (e.size, e.sha256_of_blocks, e.blocks) == (0, hashlib.sha256(b"").hexdigest(), "")
    sparse_file(tmp_path / "hole", 3 * MIB + 1, [])
    seen = []
    h = manifest.digest_file(shell, str(tmp_path / "hole"), on_block=seen.append)
    assert h.sha256_of_blocks == proof_of(str(tmp_path / "hole")) and len(h.blocks) == 4 * 16
    assert sum(seen) == 3 * MIB + 1


@pytest.mark.parametrize("how", ["no SEEK_DATA", "lseek refuses"])
def test_without_hole_support_the_digest_is_the_same(tmp_path, monkeypatch, how):
    sparse_file(tmp_path / "thin", 6 * MIB, [(3 * MIB - 5, b"across a block edge")])
    want = manifest.digest_file(LocalShell(), str(tmp_path / "thin")).entry()
    if how == "no SEEK_DATA":
        monkeypatch.delattr(os, "SEEK_DATA")
        monkeypatch.delattr(os, "SEEK_HOLE")
    else:
        real = os.lseek

        def lseek(fd, pos, whence):
            if whence in (os.SEEK_DATA, os.SEEK_HOLE):
                raise OSError(errno.EINVAL, "not here")
            return real(fd, pos, whence)

        monkeypatch.setattr(os, "lseek", lseek)
    assert manifest.digest_file(LocalShell(), str(tmp_path / "thin")).entry() == want
    assert want["sha256_of_blocks"] == proof_of(str(tmp_path / "thin"))


def sparse_backup(tmp_path):
    folder = tmp_path / "VM-2024-05-01_22-00-00"
    folder.mkdir()
    sparse_file(folder / "VM-flat.vmdk", 40 * MIB, [(5 * MIB, os.urandom(2 * MIB)), (30 * MIB, b"data")])
    shell = LocalShell()
    files = {"VM-flat.vmdk": manifest.digest_file(shell, str(folder / "VM-flat.vmdk")).entry()}
    (folder / manifest.MANIFEST).write_text(manifest.dumps({"vm": "VM", "result": "ok", "files": files}))
    (folder / "STATUS.ok").write_text("ok\n")
    return shell, folder


@pytest.mark.parametrize("offset", [6 * MIB + 3, 20 * MIB + 77, 40 * MIB - 1])
def test_v2_flipped_byte_in_data_or_hole_is_located(tmp_path, offset):
    shell, folder = sparse_backup(tmp_path)
    assert json.loads((folder / manifest.MANIFEST).read_text())["version"] == 2
    flip(folder / "VM-flat.vmdk", offset)
    p = verify_folder(shell, str(folder)).problems[0]
    start = offset - offset % MIB
    assert (p.file, p.message, p.first, p.last) == ("VM-flat.vmdk", "SHA-256 mismatch", start, start + MIB - 1)


@pytest.mark.parametrize("new_size", [40 * MIB - 1, 40 * MIB + 1, 39 * MIB, 64 * MIB])
def test_v2_truncated_or_extended_file_is_caught(tmp_path, new_size):
    """Even when what is cut off or added is zeros (a hole at the end)."""
    shell, folder = sparse_backup(tmp_path)
    assert verify_folder(shell, str(folder)).status == "ok"
    os.truncate(str(folder / "VM-flat.vmdk"), new_size)
    res = verify_folder(shell, str(folder))
    assert res.status == "damaged"
    p = res.problems[0]
    assert p.message == "size %d, manifest says %d" % (new_size, 40 * MIB)
    assert p.first == min(new_size, 40 * MIB - MIB if new_size < 40 * MIB else 40 * MIB)


def test_v1_manifest_with_block_digests_still_verifies_and_locates(tmp_path):
    shell, folder = make_backup(tmp_path, version=1)
    res = verify_folder(shell, str(folder))
    assert res.status == "ok", res.message
    data = json.loads((folder / manifest.MANIFEST).read_text())
    assert data["version"] == 1 and data["verified"] and "sha256" in data["files"]["VM-flat.vmdk"]
    flip(folder / "VM-flat.vmdk", MIB + 1)
    p = verify_folder(shell, str(folder)).problems[0]
    assert (p.file, p.first, p.last) == ("VM-flat.vmdk", MIB, 2 * MIB - 1)


def test_v2_and_v1_compressed_backups_verify_from_the_stream(tmp_path):
    from hotvcb.jobs.verify import verify_gz

    for version in (1, 2):
        (tmp_path / str(version)).mkdir()
        shell, folder = make_backup(tmp_path / str(version), version=version)
        gz = str(folder) + ".gz"
        with tarfile.open(gz, "w:gz") as tar:
            tar.add(str(folder), arcname=folder.name)
        assert verify_gz(shell, gz).status == "ok", version
        flip(folder / "VM-flat.vmdk", 2 * MIB)
        with tarfile.open(gz, "w:gz") as tar:
            tar.add(str(folder), arcname=folder.name)
        p = verify_gz(shell, gz).problems[0]
        assert (p.file, p.first) == ("VM-flat.vmdk", 2 * MIB), version


def test_a_newer_manifest_version_is_refused_not_misread(tmp_path):
    shell, folder = make_backup(tmp_path)
    path = folder / manifest.MANIFEST
    path.write_text(path.read_text().replace('"version": 2', '"version": %d' % (manifest.VERSION + 1), 1))
    res = verify_folder(shell, str(folder))  # not checked, and not called damaged (docs/backup-format.md)
    assert res.status == "newer" and not res.ok and "newer hotvcb" in res.message


@pytest.mark.parametrize("version", ["0", "-1", "true", '"3"'])
def test_a_manifest_version_that_is_no_whole_number_of_one_or_more_is_damaged_or_edited(tmp_path, version):
    """`true` is an int to Python, 0 and -1 are ints: none is a version any hotvcb wrote."""
    shell, folder = make_backup(tmp_path)
    path = folder / manifest.MANIFEST
    path.write_text(path.read_text().replace('"version": 2', '"version": %s' % version, 1))
    res = verify_folder(shell, str(folder))
    assert res.status == "damaged" and "no usable version" in res.message and "edited" in res.message, res.message


class CommandHost(object):
    """A host reached only through run() (like SSH mode), here with a chosen PATH."""

    def __init__(self, path):
        self.path, self.local = path, LocalShell()

    def run(self, argv, timeout=None, **_kw):
        import subprocess

        from hotvcb.shell import Completed

        done = subprocess.run(argv, env={"PATH": self.path}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=60, universal_newlines=True)
        return Completed(list(argv), done.returncode, done.stdout)

    def block_digests(self, path, block_size, whole, on_block=None):
        from hotvcb import hostdigest

        return hostdigest.by_command(self.run, path, block_size, whole, on_block)

    def file_size(self, path):
        return self.local.file_size(path)

    def sha256(self, path, on_block=None):
        return self.local.sha256(path, on_block)


def test_a_host_reached_by_commands_hashes_with_its_python_or_falls_back(tmp_path):
    import shutil
    import sys

    sparse_file(tmp_path / "thin", 4 * MIB + 9, [(MIB + 1, b"data")])
    path = str(tmp_path / "thin")
    local = manifest.digest_file(LocalShell(), path)
    with_python = tmp_path / "bin-python"
    with_python.mkdir()
    os.symlink(shutil.which("sh"), str(with_python / "sh"))
    os.symlink(sys.executable, str(with_python / "python"))
    seen = []
    remote = manifest.digest_file(CommandHost(str(with_python)), path, on_block=seen.append)
    assert remote.entry() == local.entry() and seen == [local.size]

    without = tmp_path / "bin-sh-only"
    without.mkdir()
    os.symlink(shutil.which("sh"), str(without / "sh"))
    host = CommandHost(str(without))
    fallback = manifest.digest_file(host, path)
    assert fallback.entry() == v1_entry(path, blocks=False)  # what the host's sha256sum gives
    with pytest.raises(HostError, match="no python"):
        manifest.digest_file(host, path, entry=local.entry())
    with pytest.raises(HostError, match="cannot read"):
        manifest.digest_file(CommandHost(str(with_python)), str(tmp_path / "missing"))
