"""Testers' notes (session 31), pinned through the public command line: what the room check counts for a
virtual RDM, parallel clones into one repository's datastore, a CD-ROM's ISO in the VM's own folder after a
restore under a new name, and a suspended VM's state file."""

import os
import re
import subprocess

import pytest

from simhost import VOLUME, backed_up, hotvcb, make_host, needs_root, next_second, sealed, vim, write_conf


@needs_root
def test_room_for_a_thin_copy_of_a_virtual_rdm_is_the_luns_size_not_the_mapping_files(host, tmp_path):
    """`db` has an 8 MiB virtual-mode RDM. On VMFS its mapping file allocates next to nothing (esxisim's
    fresh stand-in: a hole), whatever the LUN holds, and `vmkfstools -i -d thin` writes the LUN's data, up to
    its whole size. The room check counted the mapping file's allocation (0 bytes), so a backup started
    onto a datastore with far less room than the LUN could need, and ran it full. The need counted is the
    LUN's virtual size, for a folder backup and a repository's temporary clone alike (one estimate)."""
    host.create_vm("db", "datastore1", [{"size": "1M"}, {"size": "8M", "rdm": "virtual"}], power="on")
    for keys in ({}, {"VM_BACKUP_REPOSITORY": "/vmfs/volumes/backup/repo"}):
        conf = write_conf(host, **keys)
        r = hotvcb(host, "backup", "-m", "db", "-g", conf, "-w", tmp_path / "work", "-d", "dryrun")
        assert r.returncode == 0, r.stdout + r.stderr
        [line] = [l for l in (r.stdout + r.stderr).splitlines() if "VMDK:" in l and "db_1.vmdk" in l]
        assert re.search(r"(needs|at most) 8(\.0)? ?MiB", line), line


@pytest.fixture
def small_host(tmpfs):
    """A simulated host whose files all lie on a tmpfs: a datastore filled to its simulated capacity costs
    no disk (esxisim binds its /vmfs without the mounts under it, so a tmpfs on one datastore is not seen)."""
    h = make_host(tmpfs("esx", "96m") / "host")
    yield h
    h.stop()


@needs_root
def test_parallel_temporary_clones_into_one_repository_reserve_their_room_and_the_second_waits(small_host, tmp_path):
    """BACKUP_PARALLEL=2 into a repository on a small datastore; `a` and `b` each run on a user's snapshot,
    so each disk is first cloned to a temporary thin disk in the repository's tmp/. The second night (their
    chunks stored already) each clone needs 80 % of the free space: both checks passed against the same free
    bytes, both clones ran at once, and the datastore filled under them. The first clone now holds its room
    until its temporary disk is gone; the second waits for it, the log naming both, and both are backed up."""
    host = small_host
    for name, ds in (("a", "datastore1"), ("b", "ds5")):
        host.create_vm(name, ds, [{"size": "4M"}], power="on", snapshots=("s1",))
    host.add_datastore("repods", 32 << 20)
    conf = write_conf(host, VM_BACKUP_REPOSITORY="/vmfs/volumes/repods/repo", BACKUP_PARALLEL=2,
                      ALLOW_VMS_WITH_SNAPSHOTS_TO_BE_BACKEDUP=1)
    r = hotvcb(host, "backup", "-a", "-g", conf, "-w", tmp_path / "work")
    assert r.returncode == 0, r.stdout + r.stderr
    r = hotvcb(host, "backup", "-a", "-g", conf, "-w", tmp_path / "work", "-d", "dryrun")
    need = max(float(n) for n in re.findall(r"VMDK: .* at most ([\d.]+) MiB", r.stdout + r.stderr))
    with open(host.real("/vmfs/volumes/repods/someone-elses-file"), "wb") as f:
        os.posix_fallocate(f.fileno(), 0, host.ds_free("repods") - int(need / 0.8 * (1 << 20)))
    host.set_fault("clone.delay", "3")  # the two clones overlap, as two VMs' clones of real size do
    next_second()  # backup names have one-second resolution
    r = hotvcb(host, "backup", "-a", "-g", conf, "-w", tmp_path / "work")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert re.search(r"(a|b): waiting for room on .*repods.* \((b|a)\)", out), out


def _with_iso_in_its_folder(host, name):
    """A VM whose CD-ROM holds an ISO kept in the VM's own folder, named relative to it (as the vSphere
    client writes it when the image is picked from that folder)."""
    vmid = host.create_vm(name, "datastore1", [{"size": "1M"}], power="off")
    vmx = host.real(host.vm(vmid)["vmx"])
    with open(vmx, "a", encoding="utf-8") as f:
        f.write('ide1:0.present = "TRUE"\nide1:0.deviceType = "cdrom-image"\nide1:0.fileName = "tools.iso"\n'
                'ide1:0.startConnected = "TRUE"\n')
    with open(os.path.join(os.path.dirname(vmx), "tools.iso"), "wb") as f:
        f.write(b"CD001" * 100)
    return vmid


def _restored_vmx(host, folder):
    with open(host.real(folder + "/" + folder.rsplit("/", 1)[-1] + ".vmx"), encoding="utf-8") as f:
        return f.read()


@needs_root
def test_a_restored_copy_points_its_cdrom_at_the_iso_in_the_original_folder_or_warns(host, tmp_path):
    """`web`'s CD-ROM names `tools.iso`, kept in its own folder, by that relative name. The backup holds no
    ISO (nor did ghettoVCB's), so a copy restored under a new name on another datastore kept `tools.iso`,
    resolved in its new folder where there is none: the copy pointed at nothing, without a word. The
    restore now points it at the ISO where it still is (the original VM's folder, by full path) and says so;
    where it is gone, it warns naming the device and the file."""
    _with_iso_in_its_folder(host, "web")
    conf = write_conf(host)
    r = hotvcb(host, "backup", "-m", "web", "-g", conf, "-w", tmp_path / "work")
    assert r.returncode == 0, r.stdout + r.stderr
    [backup] = sealed(host, "web")
    backup = VOLUME + "/web/" + backup
    r = hotvcb(host, "restore", backup, "--datastore", "ds5", "--name", "web-copy")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    text = _restored_vmx(host, "/vmfs/volumes/ds5/web-copy")
    m = re.search(r'ide1:0\.fileName = "([^"]*)"', text)
    assert m and m.group(1).startswith("/vmfs/volumes/") and m.group(1).endswith("/web/tools.iso"), text
    assert os.path.exists(host.real(m.group(1)))
    assert re.search(r"ide1:0.*tools\.iso", out), out
    os.unlink(host.real("/vmfs/volumes/datastore1/web/tools.iso"))  # the ISO is gone: nothing to point at
    r = hotvcb(host, "restore", backup, "--datastore", "ds5", "--name", "web-copy2")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert re.search(r"warning: .*ide1:0.*tools\.iso", out), out


@needs_root
def test_esxisim_suspend_writes_the_vmss_the_vmx_names_and_a_resume_or_power_off_ends_it(host):
    """ESXi's power.suspend writes the guest's state to `<vm>-<hex>.vmss` in the VM's folder and names it in
    the .vmx (`checkpoint.vmState`); a resume reads and deletes it, as a power-off of the suspended VM does."""
    vmid = host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    folder = os.path.dirname(host.vmx_real(vmid))
    for end in ("vmsvc/power.on", "vmsvc/power.off"):
        vim(host, "vmsvc/power.suspend", vmid)
        state = host.load_vmx(vmid).get("checkpoint.vmState")
        assert re.fullmatch(r"web-[0-9a-f]{8}\.vmss", state or ""), state
        assert os.path.isfile(os.path.join(folder, state))
        vim(host, end, vmid)
        assert host.load_vmx(vmid).get("checkpoint.vmState") == ""
        assert not [f for f in os.listdir(folder) if f.endswith(".vmss")]
        if end == "vmsvc/power.off":
            break
        assert host.power_state(vmid) == "on"


@needs_root
def test_a_suspended_vms_restored_copy_does_not_name_a_state_file_it_lacks(host, tmp_path):
    """`web` is suspended at backup time: its .vmx names its state file (`checkpoint.vmState`), which no backup
    holds (ghettoVCB copies the .vmx and the disks only). The restored copy kept the line, naming a file that is
    not in its folder, without a word. The restore clears it and warns: the copy starts from its disks, as
    after a power loss."""
    vmid = host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    vim(host, "vmsvc/power.suspend", vmid)
    backup = backed_up(host, "web", tmp_path / "work")
    r = hotvcb(host, "restore", backup, "--datastore", "ds5", "--name", "web-copy")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    m = re.search(r'checkpoint\.vmState = "([^"]*)"', _restored_vmx(host, "/vmfs/volumes/ds5/web-copy"))
    assert m is None or m.group(1) == "", m.group(0)
    assert re.search(r"warning: .*suspended.*web-[0-9a-f]{8}\.vmss", out), out
