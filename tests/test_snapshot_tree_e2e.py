"""VMs that already have snapshots (issue 13 item 4, ghettoVCB #104), end to end on esxisim.

A running VM with two snapshots of its user's is backed up hot: the backup is
its current state (the chain read through, at our snapshot's instant), the
user's snapshots are untouched, and with BACKUP_SNAPSHOT_TREE=1 the backup
also holds the tree, which a restore brings back with each snapshot
revertable to its own content.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from esxisim import writer
from simhost import (REPO, backup_root, backups, copying, hotvcb, hotvcb_background, kill, lock_pid, needs_root, sealed,
                     snapshot_names, vim, wait_for, write_conf)

pytestmark = [needs_root,
              pytest.mark.skipif(subprocess.run(["which", "qemu-img"], capture_output=True).returncode != 0,
                                 reason="needs qemu-img (scripts/install-test-deps)")]

VM = "tree vm"


def _content(host, vmid):
    return {node: bytearray(host.read_disk(path)) for node, path, _m in host.vm_disks(vmid)}


def _event(log, event, name):
    return next(i for i, rec in enumerate(log) if rec["event"] == event and rec.get("name") == name)


def _vm_with_two_snapshots(host):
    """A running, writing VM with user snapshots 'one' and 'two' taken while it wrote."""
    vmid = host.create_vm(VM, "datastore1", [{"size": "8M"}, {"size": "4M", "datastore": "ds5"}])
    initial = _content(host, vmid)
    host.power_on(vmid)
    writer.start(host, vmid)
    for name, desc in (("one", "before the upgrade"), ("two", "after it"), (None, "")):
        seen = _writes(host)
        wait_for(lambda: _writes(host) > seen + 3, what="guest writes")
        if name:
            vim(host, "vmsvc/snapshot.create", vmid, name, desc, "0", "0")
    return vmid, initial


def _writes(host):
    return sum(rec["event"] == "write" for rec in host.writer_log(VM))


def _at(initial, log, index):
    return writer.apply_writes({n: bytearray(b) for n, b in initial.items()}, log, until=index)


def _same(a, raw_bytes, tmp_path, fmt="vmdk"):
    raw = tmp_path / "expected.raw"
    raw.write_bytes(bytes(raw_bytes))
    r = subprocess.run(["qemu-img", "compare", "-f", fmt, "-F", "raw", a, str(raw)], capture_output=True, text=True)
    return r.returncode == 0


def test_vm_with_two_user_snapshots_backed_up_hot_keeps_them_and_its_tree_restores(host, tmp_path):
    vmid, initial = _vm_with_two_snapshots(host)
    before = vim(host, "vmsvc/snapshot.get", vmid)
    vmsd = host.real("/vmfs/volumes/datastore1/%s/%s.vmsd" % (VM, VM))
    vmsd_before = _user_tree(vmsd)
    host.set_fault("clone.delay", "1")  # the guest writes while the copy runs
    conf = write_conf(host, BACKUP_SNAPSHOT_TREE=1)  # asking for the tree allows VMs with snapshots
    r = hotvcb(host, "-m", VM, "-g", conf, "-w", tmp_path / "w")
    writer.stop(host, vmid)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "keeping its snapshot tree, 2 snapshot(s) ('one', 'two')" in r.stdout

    # the user's snapshots are untouched: names, ids, descriptions, times; and their .vmsd
    assert vim(host, "vmsvc/snapshot.get", vmid) == before
    assert _user_tree(vmsd) == vmsd_before

    log = host.writer_log(VM)
    ours = next(i for i, rec in enumerate(log) if rec["event"] == "snapshot.create" and rec["name"].startswith("hotvcb-"))
    assert any(rec["event"] == "write" for rec in log[ours:]), "the guest wrote during the copy"
    [entry] = sealed(host, VM)
    folder = os.path.join(backup_root(host, VM), entry)
    ds5 = os.path.basename(os.path.realpath(host.real("/vmfs/volumes/ds5")))
    now = _at(initial, log, ours)
    # the default backup: the current state, each chain read through at our snapshot's instant
    assert _same(os.path.join(folder, VM + ".vmdk"), now["scsi0:0"], tmp_path)
    assert _same(os.path.join(folder, ds5, VM + "_1.vmdk"), now["scsi0:1"], tmp_path)
    # the tree: base disks, both deltas of each disk, .vmsd, .vmsn, the user's .vmx
    tree = os.path.join(folder, "snapshot-tree")
    names = set(os.listdir(tree))
    assert {VM + ".vmx", VM + ".vmsd", VM + "-Snapshot1.vmsn", VM + "-Snapshot2.vmsn", VM + ".vmdk",
            VM + "-flat.vmdk", VM + "-000001.vmdk", VM + "-000002.vmdk", VM + "_1.vmdk",
            VM + "_1-000001.vmdk", VM + "_1-000002.vmdk"} <= names
    assert "hotvcb-" not in open(os.path.join(tree, VM + ".vmsd")).read()
    # read through in the backup (relinked to the cloned base: vmkfstools finds the chain consistent)
    assert _same(os.path.join(tree, VM + "-000002.vmdk"), now["scsi0:0"], tmp_path)
    backup_tree = "/vmfs/volumes/backup/hotvcb/%s/%s/snapshot-tree/" % (VM, entry)
    assert _chain_consistent(host, backup_tree + VM + "_1-000002.vmdk")
    m = json.load(open(os.path.join(folder, "hotvcb.json")))
    assert m["snapshot_tree"]["snapshots"] == ["one", "two"]
    assert set(m["snapshot_tree"]["files"]) <= set(m["files"])
    assert "snapshot-tree/%s-000001.vmdk" % VM in m["snapshot_tree"]["files"]
    v = hotvcb(host, "verify", "--all", "-g", conf)
    assert v.returncode == 0, v.stdout + v.stderr

    # a restore with the tree: both snapshots there, each reverts to its own content
    args = ("restore", "/vmfs/volumes/backup/hotvcb/%s/%s" % (VM, entry), "--datastore", "datastore1",
            "--name", "tree copy")
    dry = hotvcb(host, *args, "-d", "dryrun")
    assert "SNAPSHOT TREE: one, two (4 delta(s) relinked) -> /vmfs/volumes/datastore1/tree copy/tree copy.vmsd" \
        in dry.stdout, dry.stdout + dry.stderr
    r = hotvcb(host, *args)
    assert r.returncode == 0, r.stdout + r.stderr
    new = next(k for k in host.state()["vms"] if host.display_name(k) == "tree copy")
    assert snapshot_names(host, new) == ["one", "two"]
    restored = host.real("/vmfs/volumes/datastore1/tree copy")
    assert os.path.exists(os.path.join(restored, "tree copy.vmsd"))
    assert os.path.exists(os.path.join(restored, "tree copy-Snapshot1.vmsn"))
    assert _disks(host, new) == {n: bytes(b) for n, b in now.items()}, "restored: the current state"
    for node, path, _m in host.vm_disks(new):
        assert _chain_consistent(host, path), node
    ids = dict(_ids(vim(host, "vmsvc/snapshot.get", new)))
    for name in ("one", "two"):
        out = vim(host, "vmsvc/snapshot.revert", new, ids[name], "0")
        assert "fault" not in out, out
        want = _at(initial, log, _event(log, "snapshot.create", name))
        assert _disks(host, new) == {n: bytes(b) for n, b in want.items()}, "reverted to %s" % name
    assert snapshot_names(host, vmid) == ["one", "two"], "the source VM's tree is still its own"


def _chain_consistent(host, path):
    r = subprocess.run([sys.executable, "-m", "esxisim", "shell", host.root, "--", "/sbin/vmkfstools", "-e", path],
                       capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=REPO))
    return r.returncode == 0 and "Disk chain is consistent." in r.stdout


def _user_tree(vmsd):
    """The .vmsd but its uid counter (hostd counts every snapshot ever taken, ours too)."""
    return [line for line in open(vmsd).read().splitlines() if not line.startswith("snapshot.lastUID")]


def _disks(host, vmid):
    return {node: host.read_disk(path) for node, path, _m in host.vm_disks(vmid)}


def _ids(text):
    name = None
    for line in text.splitlines():
        if "Snapshot Name" in line:
            name = line.split(":", 1)[1].strip()
        elif "Snapshot Id" in line and name is not None:
            yield name, line.split(":", 1)[1].strip()


def test_a_chain_with_a_missing_delta_fails_clearly_and_leaves_the_vm_alone(host, tmp_path):
    vmid = host.create_vm(VM, "datastore1", [{"size": "4M"}], power="on", snapshots=["one", "two"])
    folder = host.real("/vmfs/volumes/datastore1/" + VM)
    os.unlink(os.path.join(folder, VM + "-000001-sesparse.vmdk"))  # the delta snapshot 'two' froze
    before = (vim(host, "vmsvc/snapshot.get", vmid), sorted(os.listdir(folder)))
    for keys in ({}, {"BACKUP_SNAPSHOT_TREE": 1}):
        r = hotvcb(host, "-m", VM, "-g", write_conf(host, ALLOW_VMS_WITH_SNAPSHOTS_TO_BE_BACKEDUP=1, **keys))
        assert r.returncode == 6, r.stdout + r.stderr
        assert "%s-000001-sesparse.vmdk, the data of %s-000001.vmdk, is missing; the snapshot chain is broken" % (
            VM, VM) in r.stdout
        assert "Traceback" not in r.stdout + r.stderr
        assert (vim(host, "vmsvc/snapshot.get", vmid), sorted(os.listdir(folder))) == before
        assert backups(host, VM) == []


def test_kill_9_while_the_tree_is_copied_next_run_removes_only_our_snapshot(host, tmp_path):
    vmid = host.create_vm(VM, "datastore1", [{"size": "8M"}], power="on", snapshots=["one", "two"])
    before = vim(host, "vmsvc/snapshot.get", vmid)
    conf = write_conf(host, ALLOW_VMS_WITH_SNAPSHOTS_TO_BE_BACKEDUP=1, BACKUP_SNAPSHOT_TREE=1)
    host.set_fault("clone.delay", "20")
    host.set_fault("clone.match", "tree vm.vmdk")  # only the tree's base clone is slow
    proc = hotvcb_background(host, "-m", VM, "-g", conf, "-w", tmp_path / "w")
    wait_for(lambda: glob_tree(host) and lock_pid(host), what="the tree's copy")
    kill(lock_pid(host), signal.SIGKILL)
    proc.communicate(timeout=60)
    assert any(n.startswith("hotvcb-") for n in snapshot_names(host, vmid))
    host.clear_faults()
    r = hotvcb(host, "-m", VM, "-g", conf, "-w", tmp_path / "w")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "found leftover snapshot" in r.stdout
    assert vim(host, "vmsvc/snapshot.get", vmid) == before
    assert len(sealed(host, VM)) == 1 and not [b for b in backups(host, VM) if b.endswith("-partial")]


def glob_tree(host):
    root = backup_root(host, VM)
    return copying(host, VM) and any(os.path.isdir(os.path.join(root, b, "snapshot-tree")) for b in backups(host, VM))


def test_a_failed_tree_copy_fails_the_backup_keeps_no_data_and_removes_only_our_snapshot(host, tmp_path):
    vmid = host.create_vm(VM, "datastore1", [{"size": "4M"}], power="on", snapshots=["one", "two"])
    before = vim(host, "vmsvc/snapshot.get", vmid)
    host.set_fault("clone.match", "tree vm.vmdk")  # the tree's base; the current-state copy goes through
    host.set_fault("clone.fail_at", "50")
    r = hotvcb(host, "-m", VM, "-g", write_conf(host, ALLOW_VMS_WITH_SNAPSHOTS_TO_BE_BACKEDUP=1,
                                                 BACKUP_SNAPSHOT_TREE=1))
    assert r.returncode == 6, r.stdout + r.stderr
    assert "No such device or address (393225)" in r.stdout
    assert vim(host, "vmsvc/snapshot.get", vmid) == before
    [entry] = backups(host, VM)
    folder = os.path.join(backup_root(host, VM), entry)
    left = [os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder) for f in fs]
    assert "STATUS.error" in left and not [f for f in left if f.endswith((".vmdk", ".vmsn"))], left
