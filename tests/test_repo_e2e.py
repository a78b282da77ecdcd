"""`hotvcb backup --repo` against a simulated ESXi host: the usual snapshot
lifecycle, the base disks read directly while our snapshot holds them."""

import os
import subprocess

from simhost import needs_root, hotvcb, snapshot_names, vim, write_conf
from esxisim import writer

from hotvcb.repo.reader import read_file, restore_disk
from hotvcb.repo.repository import open_path
from hotvcb.repo.verify import verify

pytestmark = needs_root
REPO = "/vmfs/volumes/backup/repo"


def test_hot_backup_into_a_repository_holds_the_snapshot_instant_and_dedups_the_next(host, tmp_path):
    vm = "Web Server (prod)"
    vmid = host.create_vm(vm, "datastore1", [{"size": "16M"}, {"size": "8M", "datastore": "ds5", "bus": "sata"}])
    initial = {node: bytearray(host.read_disk(path)) for node, path, _m in host.vm_disks(vmid)}
    host.power_on(vmid)
    writer.start(host, vmid)
    conf = write_conf(host)
    r = hotvcb(host, "backup", "-m", vm, "-g", conf, "--repo", REPO, "-w", tmp_path / "work")
    assert r.returncode == 0, r.stdout + r.stderr
    r2 = hotvcb(host, "backup", "-m", vm, "-g", conf, "--repo", REPO, "-w", tmp_path / "work")
    writer.stop(host, vmid)
    assert r2.returncode == 0, r2.stdout + r2.stderr
    assert snapshot_names(host, vmid) == []
    assert not any("-00000" in f for f in os.listdir(host.real("/vmfs/volumes/datastore1/" + vm)))

    repo = open_path(host.real(REPO))
    first, second = repo.snapshots(vm)
    log = host.writer_log(vm)
    creates = [k for k, rec in enumerate(log) if rec["event"] == "snapshot.create"]
    assert len(creates) == 2
    for snap, until in ((first, creates[0]), (second, creates[1])):
        frozen = writer.apply_writes({n: bytearray(b) for n, b in initial.items()}, log, until=until)
        for disk, node in zip(snap.disks, ("scsi0:0", "sata0:0")):
            expected = tmp_path / ("expected-%s-%s.raw" % (snap.id, node.replace(":", "_")))
            expected.write_bytes(bytes(frozen[node]))
            out = tmp_path / ("restored-%s-%s.raw" % (snap.id, node.replace(":", "_")))
            restore_disk(repo, snap, disk, str(out))
            cmp = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "raw", str(out), str(expected)],
                                 capture_output=True, text=True)
            assert cmp.returncode == 0, "%s %s: %s" % (snap.id, node, cmp.stdout + cmp.stderr)
    assert 'displayName = "%s"' % vm in read_file(repo, second, vm + ".vmx").decode()
    # the CLI's restore gives back the .vmx and each disk as a thin VMDK (descriptor + sparse -flat)
    r = hotvcb(host, "restore", "--repo", REPO, second.id, "--to", "/vmfs/volumes/datastore1/restored")
    assert r.returncode == 0, r.stdout + r.stderr
    restored = host.real("/vmfs/volumes/datastore1/restored")
    assert sorted(os.listdir(restored)) == sorted([vm + ".vmx", vm + ".nvram", vm + ".vmdk", vm + "-flat.vmdk",
                                                   vm + "_1.vmdk", vm + "_1-flat.vmdk"])
    for name, node in ((vm + ".vmdk", "scsi0:0"), (vm + "_1.vmdk", "sata0:0")):
        expected = tmp_path / ("expected-%s-%s.raw" % (second.id, node.replace(":", "_")))
        cmp = subprocess.run(["qemu-img", "compare", "-f", "vmdk", "-F", "raw", os.path.join(restored, name),
                              str(expected)], capture_output=True, text=True)
        assert cmp.returncode == 0, "%s: %s" % (name, cmp.stdout + cmp.stderr)
    # ... or, through the folder restore, as a registered VM in any ESXi format
    r = hotvcb(host, "restore", "--repo", REPO, "--latest", vm, "--datastore", "ds5", "--format", "eagerzeroedthick",
               "--name", "Web (restored)")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Web (restored)" in vim(host, "vmsvc/getallvms")
    folder = host.real("/vmfs/volumes/ds5/Web (restored)")
    assert not [e for e in os.listdir(host.real("/vmfs/volumes/ds5")) if e.startswith(".hotvcb")]  # staging gone
    expected = tmp_path / ("expected-%s-scsi0_0.raw" % second.id)
    cmp = subprocess.run(["qemu-img", "compare", "-f", "vmdk", "-F", "raw", os.path.join(folder, vm + ".vmdk"),
                          str(expected)], capture_output=True, text=True)
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr + str(os.listdir(folder))
    # the second backup stores only chunks the guest wrote to in between (holes and unchanged chunks: nothing)
    chunk = repo.config.chunk_size
    touched = {(rec["node"], n) for rec in log[creates[0]:creates[1]] if rec["event"] == "write"
               for n in range(rec["offset"] // chunk, (rec["offset"] + rec["length"] - 1) // chunk + 1)}
    assert 0 < sum(d["new_chunks"] for d in second.disks) <= len(touched)
    assert sum(d["new_chunks"] for d in second.disks) < sum(d["chunks"] for d in second.disks)
    assert verify(repo, "all").ok


def test_a_repository_on_a_missing_volume_fails_the_vm_before_any_snapshot(host, tmp_path):
    vmid = host.create_vm("db", "datastore1", [{"size": "4M"}])
    host.power_on(vmid)
    r = hotvcb(host, "backup", "-m", "db", "-g", write_conf(host), "--repo", "/vmfs/volumes/nowhere/repo",
               "-w", tmp_path / "work")
    assert r.returncode != 0 and "does not exist" in r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    assert snapshot_names(host, vmid) == []


def test_a_backup_killed_mid_disk_leaves_no_half_backup_and_the_next_run_cleans_up(host, tmp_path, monkeypatch):
    vm = "db"
    vmid = host.create_vm(vm, "datastore1", [{"size": "8M"}])
    host.power_on(vmid)
    conf = write_conf(host)
    monkeypatch.setenv("HOTVCB_CRASH_AT", "repo-pack-committed")
    r = hotvcb(host, "backup", "-m", vm, "-g", conf, "--repo", REPO, "-w", tmp_path / "work")
    assert r.returncode in (-9, 137), r.stdout + r.stderr
    assert snapshot_names(host, vmid) != []  # killed while our snapshot held the disk
    repo = open_path(host.real(REPO))
    assert repo.snapshots() == [] and verify(repo, "all").ok  # packs without a record: no backup, nothing damaged
    monkeypatch.delenv("HOTVCB_CRASH_AT")
    r = hotvcb(host, "backup", "-m", vm, "-g", conf, "--repo", REPO, "-w", tmp_path / "work")
    assert r.returncode == 0, r.stdout + r.stderr
    assert snapshot_names(host, vmid) == []
    [snap] = repo.snapshots()
    out = tmp_path / "restored.raw"
    restore_disk(repo, snap, snap.disks[0], str(out))
    assert out.read_bytes() == host.read_disk(host.vm_disks(vmid)[0][1])  # no guest writer here: the disk is unchanged
    assert verify(repo, "all").ok


def test_two_hosts_back_up_into_one_repository_on_shared_nfs_at_once(tmp_path):
    from simhost import hotvcb_background, two_hosts_sharing_nfs

    repo_path = "/vmfs/volumes/nfsbackup/repo"
    with two_hosts_sharing_nfs(tmp_path, VM_BACKUP_REPOSITORY=repo_path) as (a, b, conf_a, conf_b, _nfs):
        procs = [hotvcb_background(h, "backup", "-m", "web", "-g", conf, "-w", tmp_path / ("work-" + n))
                 for h, conf, n in ((a, conf_a, "a"), (b, conf_b, "b"))]
        outs = [p.communicate(timeout=300)[0] for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outs
        repo = open_path(a.real(repo_path))
        snaps = repo.snapshots("web")
        assert len(snaps) == 2 and len({s.record["vm_uuid"] for s in snaps}) == 2  # two VMs of one name
        for h, n in ((a, "a"), (b, "b")):
            [snap] = [s for s in snaps if s.record["host"] == "idesxi" + n]
            out = tmp_path / ("web-%s.raw" % n)
            restore_disk(repo, snap, snap.disks[0], str(out))
            [(_node, path, _mode)] = h.vm_disks(h.vmid_by_name("web"))
            assert out.read_bytes() == h.read_disk(path)
        assert verify(repo, "all").ok
