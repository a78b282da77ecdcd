"""`hotvcb restore --repo … --datastore` against a simulated ESXi host: a thin disk is written
once (staged on the target datastore, then moved into the VM's folder), any other format is
cloned from the staged copy, and a failure leaves neither a VM folder nor the staging behind."""

import os
import subprocess

from simhost import needs_root, hotvcb, vim, write_conf

from hotvcb.repo.repository import open_path

pytestmark = needs_root
REPO = "/vmfs/volumes/backup/repo"


def _leftovers(host, datastore):
    root = host.real("/vmfs/volumes/" + datastore)
    return [e for e in os.listdir(root) if e.startswith(".hotvcb") or e.endswith(".hotvcb-restoring")]


def test_a_thin_restore_moves_the_staged_disk_and_a_thick_one_clones_it(host, tmp_path):
    vmid = host.create_vm("web", "datastore1", [{"size": "8M"}])
    conf = write_conf(host)
    r = hotvcb(host, "backup", "-m", "web", "-g", conf, "--repo", REPO, "-w", tmp_path / "work")
    assert r.returncode == 0, r.stdout + r.stderr
    [(_node, source, _mode)] = host.vm_disks(vmid)
    host.set_fault("clone.fail_at", "0")  # any vmkfstools clone fails from here on
    # thin: the staged thin disk is already what a clone would write, so no clone runs
    r = hotvcb(host, "restore", "--repo", REPO, "--latest", "web", "--datastore", "datastore1", "--name", "copy")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "staged from the repository, every chunk hash-checked" in r.stdout and "ghettoVCB" not in r.stdout, r.stdout
    assert "copy" in vim(host, "vmsvc/getallvms")
    folder = host.real("/vmfs/volumes/datastore1/copy")
    assert sorted(e for e in os.listdir(folder) if e.endswith(".vmdk")) == ["web-flat.vmdk", "web.vmdk"]
    cmp = subprocess.run(["qemu-img", "compare", "-f", "vmdk", "-F", "vmdk", os.path.join(folder, "web.vmdk"),
                          host.real(source)], capture_output=True, text=True)
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr
    assert _leftovers(host, "datastore1") == []
    # zeroedthick needs the clone: it fails (the fault), and nothing is left behind
    r = hotvcb(host, "restore", "--repo", REPO, "--latest", "web", "--datastore", "datastore1", "--name", "thick",
               "--format", "zeroedthick")
    assert r.returncode != 0 and "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr
    assert not os.path.exists(host.real("/vmfs/volumes/datastore1/thick"))
    assert _leftovers(host, "datastore1") == []


def test_a_restore_file_line_names_a_repository_backup_by_id_or_as_a_vms_latest(host, tmp_path):
    host.create_vm("web", "datastore1", [{"size": "4M"}])
    conf = write_conf(host)
    r = hotvcb(host, "backup", "-m", "web", "-g", conf, "--repo", REPO, "-w", tmp_path / "work")
    assert r.returncode == 0, r.stdout + r.stderr
    [snap] = open_path(host.real(REPO)).snapshots("web")
    lines = ['"repo:%s#%s;datastore1;3;by id"' % (REPO, snap.id[:-3]),
             "repo:%s/#latest=web;/vmfs/volumes/ds5;1;newest" % REPO,
             "repo:%s;datastore1;3" % REPO,  # no '#': which backup?
             "repo:%s#latest=nobody;datastore1;3" % REPO]
    restore_file = host.root + "/vms_to_restore"
    with open(restore_file, "w") as f:
        f.write("\n".join(lines) + "\n")
    dry = hotvcb(host, "restore", "-c", restore_file, "-d", "1")
    assert "RESTORE: web @" in dry.stdout + dry.stderr and _leftovers(host, "datastore1") == [], dry.stdout + dry.stderr
    assert not os.path.exists(host.real("/vmfs/volumes/datastore1/by id"))
    r = hotvcb(host, "restore", "-c", restore_file)
    out = r.stdout + r.stderr
    assert r.returncode == 4 and "Traceback" not in out, out
    assert "vms_to_restore:3: a repository backup is repo:" in out and "vms_to_restore:4: no backup of 'nobody'" in out
    listing = vim(host, "vmsvc/getallvms")
    assert "by id" in listing and "newest" in listing
    for folder in ("/vmfs/volumes/datastore1/by id", "/vmfs/volumes/ds5/newest"):
        cmp = subprocess.run(["qemu-img", "compare", "-f", "vmdk", "-F", "vmdk", host.real(folder + "/web.vmdk"),
                              host.real("/vmfs/volumes/datastore1/web/web.vmdk")], capture_output=True, text=True)
        assert cmp.returncode == 0, folder + cmp.stdout + cmp.stderr
    assert _leftovers(host, "datastore1") == [] and _leftovers(host, "ds5") == []


def test_a_thin_restore_of_a_disk_named_with_a_double_quote_powers_on(host, tmp_path):
    """The staged disk moved into the VM's folder keeps its name, `"` included, and its descriptor names
    that very file (vmdk.rename_extent writes the name as vmkfstools writes a clone's), so the VM starts."""
    name = 'Zitat "Q"'
    host.create_vm(name, "datastore1", [{"size": "2M"}])
    conf = write_conf(host)
    r = hotvcb(host, "backup", "-m", name, "-g", conf, "--repo", REPO, "-w", tmp_path / "work")
    assert r.returncode == 0, r.stdout + r.stderr
    r = hotvcb(host, "restore", "--repo", REPO, "--latest", name, "--datastore", "datastore1", "--name", "Q copy",
               "--power-on")
    assert r.returncode == 0, r.stdout + r.stderr
    folder = host.real("/vmfs/volumes/datastore1/Q copy")
    assert sorted(e for e in os.listdir(folder) if e.endswith(".vmdk")) == [name + "-flat.vmdk", name + ".vmdk"]
