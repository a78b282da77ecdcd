"""store/chain.py: what an incremental backup stands on, read from its qcow2 header (real qemu-img images)."""

import os
import struct

import pytest

from hotvcb.errors import HostError
from hotvcb.localshell import LocalShell
from hotvcb.store import chain
from qemuvm import needs_qemu, qemu_img

pytestmark = needs_qemu


def backup(root, name, backing=None):
    folder = os.path.join(str(root), name)
    os.makedirs(folder)
    args = ["create", "-q", "-f", "qcow2"] + (["-F", "qcow2", "-b", backing] if backing else [])
    assert qemu_img(*(args + [os.path.join(folder, "vda.qcow2"), "1M"])).returncode == 0
    return folder


def test_bases_follow_the_header_and_chains_count_their_depth(tmp_path):
    sh = LocalShell()
    full = backup(tmp_path, "vm-1")
    inc1 = backup(tmp_path, "vm-2", "../vm-1/vda.qcow2")
    inc2 = backup(tmp_path, "vm-3", "../vm-2/vda.qcow2")
    assert chain.bases(sh, full, ["vda.qcow2", "vm.json"]) == []
    assert chain.bases(sh, inc2, ["vda.qcow2"]) == ["vm-2"]
    assert [chain.chain_length(sh, f + "/vda.qcow2") for f in (full, inc1, inc2)] == [0, 1, 2]


def test_a_base_outside_the_backups_or_a_bad_header_is_an_error_not_a_base(tmp_path):
    sh = LocalShell()
    elsewhere = backup(tmp_path, "vm-1", os.path.join(backup(tmp_path, "other"), "vda.qcow2"))
    with pytest.raises(HostError, match="not a backup beside it"):
        chain.bases(sh, elsewhere, ["vda.qcow2"])
    bad = backup(tmp_path, "vm-2", "../other/vda.qcow2")
    with open(bad + "/vda.qcow2", "r+b") as f:
        f.seek(8)
        f.write(struct.pack(">QI", 1 << 40, 20))  # the name "lies" a terabyte away
    with pytest.raises(HostError, match="outside the header"):
        chain.bases(sh, bad, ["vda.qcow2"])
    garbage = os.path.join(str(tmp_path), "vm-3")
    os.makedirs(garbage)
    with open(garbage + "/vda.qcow2", "wb") as f:
        f.write(os.urandom(4096))  # no qcow2 at all: its checksum, not its header, is what is checked
    assert chain.backing_file(sh, garbage + "/vda.qcow2") is None and chain.bases(sh, garbage, ["vda.qcow2"]) == []
