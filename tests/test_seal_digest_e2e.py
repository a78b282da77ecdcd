"""What the manifest proves when the seal digests the source during the clone (issue 8).

A flat base disk cloned to a flat format is digested from the source while
vmkfstools reads it (store/source_digest.py), so the manifest records the disk
at the snapshot instant: a digest by hand of what the guest had written by
then must equal it, and a copy the target wrote wrong must fail verify (a
digest of the copy, read back after the clone, would have sealed the wrong
bytes as the truth). Formats whose files differ from the source's (2gbsparse)
are still digested from the copy: tests/test_restore_e2e.py restores each
format, checksums verified.
"""

import hashlib
import os

from simhost import backup_root, hotvcb, needs_root, manifest, sealed, write_conf
from esxisim import writer

pytestmark = needs_root
MIB = 1 << 20


def by_hand(data: bytes) -> str:
    """docs/backup-format.md's recipe: SHA-256 of the 1 MiB blocks' SHA-256 digests."""
    return hashlib.sha256(b"".join(hashlib.sha256(data[i:i + MIB]).digest()
                                   for i in range(0, len(data), MIB))).hexdigest()


def file_digest(path: str) -> str:
    with open(path, "rb") as f:
        return by_hand(f.read())


def test_the_manifest_holds_the_disk_at_the_snapshot_instant(host, tmp_path):
    vm = "seal-hot"
    vmid = host.create_vm(vm, "datastore1", [{"size": "8M"}, {"size": "4M", "bus": "sata"}])
    initial = {node: bytearray(host.read_disk(path)) for node, path, _m in host.vm_disks(vmid)}
    host.power_on(vmid)
    writer.start(host, vmid)
    host.set_fault("clone.delay", "1")  # the guest writes while the disks are cloned and digested
    r = hotvcb(host, "backup", "-m", vm, "-g", write_conf(host), "-w", tmp_path / "work")
    writer.stop(host, vmid)
    assert r.returncode == 0, r.stdout + r.stderr
    log = host.writer_log(vm)
    i = next(k for k, rec in enumerate(log) if rec["event"] == "snapshot.create")
    assert any(rec["event"] == "write" for rec in log[i:]), "the guest wrote during the copy"
    frozen = writer.apply_writes(initial, log, until=i)
    [entry] = sealed(host, vm)
    files = manifest(host, vm, entry)["files"]
    for node, name in (("scsi0:0", vm + "-flat.vmdk"), ("sata0:0", vm + "_1-flat.vmdk")):
        assert files[name]["sha256_of_blocks"] == by_hand(bytes(frozen[node])), node
        assert files[name]["sha256_of_blocks"] == file_digest(os.path.join(backup_root(host, vm), entry, name)), node
    r = hotvcb(host, "verify", "/vmfs/volumes/backup/hotvcb/%s/%s" % (vm, entry))
    assert r.returncode == 0 and "OK" in r.stdout, r.stdout + r.stderr


def test_a_copy_the_target_wrote_wrong_fails_verify_and_restore(host, tmp_path):
    """The seal does not read the copy back, so it seals the source's digest; verify then finds the
    byte the target flipped (a digest of the copy would have sealed the wrong byte as the truth)."""
    vm = "seal-bad-write"
    host.create_vm(vm, "datastore1", [{"size": "8M"}], power="on")
    host.set_faults(**{"clone.corrupt_at": str(3 * MIB + 10)})
    try:
        r = hotvcb(host, "backup", "-m", vm, "-g", write_conf(host), "-w", tmp_path / "w")
    finally:
        host.clear_faults()
    assert r.returncode == 0, r.stdout + r.stderr
    [entry] = sealed(host, vm)
    backup = "/vmfs/volumes/backup/hotvcb/%s/%s" % (vm, entry)
    r = hotvcb(host, "verify", backup)
    assert r.returncode != 0, r.stdout + r.stderr
    assert "%s-flat.vmdk: SHA-256 mismatch (bytes %d-%d)" % (vm, 3 * MIB, 4 * MIB - 1) in r.stdout, r.stdout
    r = hotvcb(host, "restore", backup, "--datastore", "datastore1", "--name", "never")
    assert r.returncode != 0 and "not a good backup" in r.stdout + r.stderr, r.stdout + r.stderr
    assert not os.path.exists(host.real("/vmfs/volumes/datastore1/never"))
