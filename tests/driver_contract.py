"""The Hypervisor contract (hotvcb/hosts/base.py), as one check every driver must pass.

Kept free of pytest so it also runs inside a simulated ESXi host (where the
ESXi driver works on /vmfs with the host's /bin/python); tests/test_driver_contract.py
runs it against EsxiHost on esxisim and QemuHost on a real QEMU process.
"""

import os
from typing import Optional

from hotvcb.errors import HostError, VmNotFound
from hotvcb.model import VmRef

OURS = "hotvcb-snapshot-contract"


def check(host, vm_name: str, target: str, user_snapshot: Optional[str] = None, cycle_power: bool = False) -> None:
    """Raise AssertionError naming the first clause `host` breaks; `target` is an empty folder. `cycle_power`: the
    VM (on) may be powered off and on again at the end, to see its boot stamp change."""
    assert host.kind and host.formats and host.run_dir and host.describe() and host.why_root(), "identity"
    assert isinstance(host.system_id(), str) and host.system_id() == host.system_id(), "system_id: one id, kept"

    [ref] = [r for r in host.list_vms() if r.name == vm_name]
    try:
        host.load_vm(VmRef(ref.vmid, vm_name + " (gone)", ref.vmx_path + ".gone"))
        raise AssertionError("load_vm of a missing VM must raise VmNotFound")
    except VmNotFound:
        pass
    vm = host.load_vm(ref)
    assert vm.name == vm_name and vm.disks, "load_vm fills the disks"
    name, text = host.backup_config(vm, {})
    assert name and "/" not in name and text, "backup_config: a file name and its text"
    assert host.power_state(vm) in ("on", "off", "suspended")
    assert isinstance(host.snapshot_starts_vm, bool), "snapshot_starts_vm: whether a cold snapshot starts the VM"
    stamp = host.boot_stamp(vm)
    assert isinstance(stamp, str) and stamp and stamp == host.boot_stamp(vm), "boot_stamp: one value, kept"
    for disk in vm.disks:
        assert host.bytes_needed(disk, host.formats[0]) > 0, "bytes_needed"
    free = host.free_space(target)
    assert free is None or free > 0, "free_space"

    before = host.snapshots(vm)
    assert not [s for s in before if s.name == OURS], "no snapshot of ours to start with"
    try:
        tree = host.snapshot_tree(vm, vm.disks)
    except HostError:
        tree = None  # a driver with no tree to keep says so (QEMU)
    assert tree is not None or host.kind != "esxi", "snapshot_tree reads an ESXi VM's tree"
    if tree is not None:
        assert tree.snapshots == [s.name for s in before], "snapshot_tree names the user's snapshots"
        assert sorted(d.key for d in tree.bases) == sorted(d.key for d in vm.disks), "one base per disk"
        assert len(tree.deltas) == len(vm.disks) * len(before), "a delta per disk and snapshot"
    _one_consolidation_judgement(host, vm)
    snap = host.create_snapshot(vm, OURS, "driver contract", False, False, 60.0)
    assert any(s.id == snap.id and s.name == OURS for s in host.snapshots(vm)), "create returns once visible"
    assert host.await_snapshot_removal(vm, snap, 1.0) is False, "await_snapshot_removal: False while still listed"
    try:
        _one_consolidation_judgement(host, vm)  # its deltas on the disks now (ESXi, QEMU)
        disk = vm.disks[0]  # as loaded before the snapshot: the base the snapshot holds still
        seen = []  # type: list
        dst = os.path.join(target, "copy.vmdk")
        fmt = "thin" if "thin" in host.formats else host.formats[0]
        same = host.copied_as(disk, dst, fmt)  # asked before the copy, as the seal asks
        files = host.copy_disk(disk, dst, fmt, seen.append)
        assert files and all(os.path.exists(os.path.join(target, f)) for f in files), "copy_disk names its files"
        assert seen and max(seen) <= 100, "copy_disk reports progress in percent"
        _holds_what_copied_as_says(host, same)
        if "qcow2" in host.formats:  # a copy in an image format of the tool's own: a content copy, or none
            qcow2_dst = os.path.join(target, "copy2.img")
            same = host.copied_as(disk, qcow2_dst, "qcow2")
            host.copy_disk(disk, qcow2_dst, "qcow2", None)
            _holds_what_copied_as_says(host, same)
    finally:
        host.remove_snapshot(vm, snap, 120.0)
    after = host.snapshots(vm)
    assert not [s for s in after if s.id == snap.id], "remove_snapshot removes that snapshot"
    assert host.await_snapshot_removal(vm, snap, 60.0) is True, "await_snapshot_removal: True once gone"
    assert [s.name for s in after] == [s.name for s in before], "and nothing else"
    if user_snapshot is not None:
        assert user_snapshot in [s.name for s in after], "the user's snapshot survives"
    try:
        host.copy_disk(vm.disks[0], os.path.join(target, "missing", "x.vmdk"), host.formats[0], None)
        raise AssertionError("copy_disk into a missing folder must fail")
    except HostError:
        pass
    assert host.boot_stamp(vm) == stamp, "boot_stamp: kept while the VM runs on (a snapshot, a copy)"
    if cycle_power:
        _boot_stamp_changes_at_power_on(host, vm, stamp)


def _boot_stamp_changes_at_power_on(host, vm, stamp: str) -> None:
    """A power off leaves the boot stamp as it was; a power on makes it another."""
    host.power_off(vm)
    assert host.boot_stamp(vm) == stamp, "boot_stamp: kept by a power off"
    host.power_on(vm)
    assert host.boot_stamp(vm) not in (stamp, "none"), "boot_stamp: another after a power on"


def _one_consolidation_judgement(host, vm) -> None:
    """needs_consolidation given the deltas delta_files just listed judges as it does listing them itself."""
    deltas = host.delta_files(vm)
    assert isinstance(deltas, list), "delta_files: a list"
    assert host.needs_consolidation(vm, deltas) == host.needs_consolidation(vm), \
        "needs_consolidation: the same judgement of the deltas given as of its own listing"


def _holds_what_copied_as_says(host, same) -> None:
    """`same`: copied_as's answer before the copy, checked against the copy made."""
    from hotvcb.store import manifest

    if same is None:
        return
    if not same.content and not same.source_format:
        with open(same.source, "rb") as a, open(same.copy, "rb") as b:
            assert a.read() == b.read(), "copied_as names a source file whose bytes the copy holds"
        return
    if not same.content:
        source = manifest.digest_content(host.shell, same.source, same.source_format).entry()
        assert source == manifest.digest_file(host.shell, same.copy).entry(), (
            "copied_as names a source whose virtual disk the copy file holds")
        return
    source = manifest.digest_content(host.shell, same.source, same.source_format).entry()
    copy = manifest.digest_content(host.shell, same.copy, same.content).entry()
    assert source == copy, "copied_as names a source whose virtual disk the copy's image holds"
