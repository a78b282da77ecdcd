"""backup_check.require_chain_inside: the one check of a disk's chain before vmkfstools, qemu-img or the
smoke boot read it out of a backup. What qemu follows (a hosted sparse disk's embedded descriptor, the
first `parentFileNameHint` anywhere in a descriptor) is checked as what vmkfstools follows.

Sparse disks are made by qemu-img itself (the reader whose behaviour is checked against)."""

import os
import shutil
import struct
import subprocess

import pytest

from hotvcb.errors import HotvcbError
from hotvcb.filetext import decoded, encoded
from hotvcb.jobs import backup_check
from hotvcb.localshell import LocalShell

QEMU_IMG = shutil.which("qemu-img")
needs_qemu_img = pytest.mark.skipif(QEMU_IMG is None, reason="needs qemu-img")
FLAT = '# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType="vmfs"\n\nRW 2048 VMFS "%s" 0\n'


def _sparse(folder, name, backing=None):
    argv = [QEMU_IMG, "create", "-q", "-f", "vmdk"] + (["-F", "vmdk", "-b", backing] if backing else [])
    subprocess.run(argv + [str(folder / name)] + ([] if backing else ["1M"]), check=True, timeout=60)
    return str(folder / name)


def _check(path):
    return backup_check.require_chain_inside(LocalShell(), path)


@needs_qemu_img
def test_a_sparse_disk_and_its_sparse_parent_beside_it_pass(tmp_path):
    _sparse(tmp_path, "base.vmdk")
    top = _sparse(tmp_path, "top.vmdk", "base.vmdk")
    assert _check(top) == (None, [(str(tmp_path / "base.vmdk"), None)])


@needs_qemu_img
def test_a_sparse_disks_parent_is_followed_down_to_an_outside_extent(tmp_path):
    """The embedded descriptor's hint names a text descriptor in the backup; that one's extent is another
    VM's disk: qemu-img would read it below the sparse disk."""
    _sparse(tmp_path, "base.vmdk")
    top = _sparse(tmp_path, "top.vmdk", "base.vmdk")
    (tmp_path / "base-flat.vmdk").write_bytes(b"\0" * (1 << 20))
    (tmp_path / "base.vmdk").write_text(FLAT % "base-flat.vmdk")
    assert _check(top)[1] == [(str(tmp_path / "base.vmdk"), FLAT % "base-flat.vmdk")]
    (tmp_path / "base.vmdk").write_text(FLAT % "/vmfs/volumes/ds/other/other-flat.vmdk")
    with pytest.raises(HotvcbError, match="base.vmdk names '/vmfs/volumes/ds/other/other-flat.vmdk', a file outside"):
        _check(top)


@needs_qemu_img
def test_a_parent_qemu_finds_where_the_header_places_no_descriptor_is_checked(tmp_path):
    """qemu reads the hint from the 20 sectors after the header whatever descriptorOffset says: a header
    zeroed there (no embedded descriptor to VMware) still has its parent opened by qemu."""
    secret = tmp_path / "other.vmdk"
    _sparse(tmp_path, "other.vmdk")
    top = _sparse(tmp_path, "top.vmdk", str(secret))
    with pytest.raises(HotvcbError, match="names '%s', a file outside" % secret):
        _check(top)
    with open(top, "r+b") as f:
        f.seek(28)
        f.write(struct.pack("<QQ", 0, 0))
    with pytest.raises(HotvcbError, match="names '%s', a file outside" % secret):
        _check(top)


@needs_qemu_img
def test_an_embedded_descriptor_past_the_first_64_kib_is_refused(tmp_path):
    top = _sparse(tmp_path, "top.vmdk")
    with open(top, "r+b") as f:
        f.seek(28)
        f.write(struct.pack("<QQ", 200, 20))
    with pytest.raises(HotvcbError, match="embeds its descriptor past its first 64 KiB"):
        _check(top)


@pytest.mark.parametrize("comment,match", [
    ('# parentFileNameHint="/vmfs/volumes/ds/other/other.vmdk"', "a file outside"),
    ('#parentFileNameHint="base-000001.vmdk"', "names its parent twice"),
])
def test_a_hint_in_a_comment_is_what_qemu_follows(tmp_path, comment, match):
    """qemu takes the first `parentFileNameHint` in a descriptor, a comment's included (strstr), where
    vmkfstools reads the line: either names only a file beside it, and both the same one."""
    (tmp_path / "base.vmdk").write_text(FLAT % "base-flat.vmdk")
    (tmp_path / "base-flat.vmdk").write_bytes(b"\0" * 512)
    text = ('# Disk DescriptorFile\n%s\nversion=1\nCID=fffffffe\nparentCID=fffffffe\ncreateType="vmfsSparse"\n'
            'parentFileNameHint="base.vmdk"\n\nRW 2048 VMFSSPARSE "d-delta.vmdk"\n')
    (tmp_path / "d.vmdk").write_text(text % "#")
    assert [p for p, _t in _check(str(tmp_path / "d.vmdk"))[1]] == [str(tmp_path / "base.vmdk")]
    (tmp_path / "d.vmdk").write_text(text % comment)
    with pytest.raises(HotvcbError, match=match):
        _check(str(tmp_path / "d.vmdk"))


@pytest.mark.parametrize("raw", [b"\xc3\xa9", b"\xe9", b"KDMV\x01\x00\x80", b"plain"])
def test_encoded_gives_back_the_bytes_a_text_was_decoded_from(raw):
    assert encoded(decoded(raw), len(raw)) == raw


@needs_qemu_img
def test_a_sparse_header_whose_capacity_is_not_its_descriptors_is_refused_at_the_check(tmp_path):
    """The room is planned from the descriptor, the clone sizes by the header: refused before anything is
    written, not by the clone after the checked copies were."""
    top = _sparse(tmp_path, "top.vmdk")
    assert _check(top) == (None, [])
    with open(top, "r+b") as f:
        f.seek(12)
        f.write(struct.pack("<Q", 4096))
    with pytest.raises(HotvcbError, match="top.vmdk: its header says 2097152 bytes, its embedded descriptor 1048576"):
        _check(top)


class _Reads(LocalShell):
    """Counts what a reader asks of a file: read_text reads it whole."""

    def __init__(self):
        super().__init__()
        self.reads = []

    def read_text(self, path):
        self.reads.append((path, None))
        return super().read_text(path)

    def read_regular(self, path, limit):
        self.reads.append((path, limit))
        return super().read_regular(path, limit)


@needs_qemu_img
def test_a_sparse_disks_descriptor_is_read_from_its_head_alone_and_as_utf8(tmp_path):
    """esxi_tree.descriptor_text (what the chain, the room check and the clone read of a disk): a hosted
    sparse disk's embedded descriptor, decoded as a descriptor file is (UTF-8: its extent named after a
    VM `Müller`, not `MÃ¼ller`), read from its first MiB only, however big the disk (a delta grows with
    what was written since)."""
    from hotvcb.hosts import esxi_tree
    from hotvcb import vmdk

    top = _sparse(tmp_path, "Müller.vmdk")
    fs = _Reads()
    assert [e.filename for e in vmdk.parse(esxi_tree.descriptor_text(fs, top)).extents] == ["Müller.vmdk"]
    os.truncate(top, 64 << 20)
    fs = _Reads()
    desc = vmdk.parse(esxi_tree.descriptor_text(fs, top))
    assert (desc.create_type, desc.capacity) == ("monolithicSparse", 1 << 20)
    assert fs.reads == [(top, esxi_tree.HEAD_MAX)]
    assert [link for link, _desc in esxi_tree.chain(fs, top, "the disk")] == [top]
