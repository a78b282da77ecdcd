"""Outside tester, session 33 round 2: the RESTORE and dry-run FIXES of this morning, attacked as an admin.

The restore file's dry-run tally (restore_tally.Tally), the refusal of a target inside a backup
(restore_room.backup_around), the dropped workingDir/sched.swap.dir (vmx_identity), the copy's static MAC,
`list`/`restore --latest` of a backup volume that is not there (nfs.volume_missing), on the simulated ESXi
host (tests/simhost.py). Each xfail test is one defect, asserting what the admin should see.
"""

import os
import shutil
import subprocess
import sys

import pytest

from simhost import VOLUME, backed_up_into_repository, hotvcb, make_host, needs_root, vim, write_conf

pytestmark = [needs_root]

VM = "r2 ö"


def out(r):
    return (r.stdout or "") + (r.stderr or "")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A host with VM "r2 ö" (one 2 MiB disk, off) backed up once, and a datastore "tiny" (5 MiB) with
    room for one thick restore of it, not two: (host, conf, backup path)."""
    host = make_host(tmp_path_factory.mktemp("s33r2restore") / "host")
    host.add_datastore("tiny", 5 << 20, vmfs=6)
    host.create_vm(VM, "datastore1", [{"size": "2M"}], power="off")
    conf = write_conf(host)
    r = hotvcb(host, "backup", "-m", VM, "-g", conf)
    assert r.returncode == 0, out(r)
    (name,) = [e for e in os.listdir(host.real(VOLUME + "/" + VM)) if e.startswith(VM + "-")]
    yield host, conf, "%s/%s/%s" % (VOLUME, VM, name)
    host.stop()


def uuid_path(host, ds):
    return "/vmfs/volumes/" + host.datastore_by_name(ds)["uuid"]


def _dry_then_real(host, tmp_path, lines):
    f = tmp_path / "vms_to_restore"
    f.write_text("".join('"%s"\n' % l for l in lines), encoding="utf-8")
    dry = hotvcb(host, "restore", "-c", str(f), "-d", "1")
    real = hotvcb(host, "restore", "-c", str(f))
    return str(f), dry, real


def _cleanup_vm(host, name, ds):
    for line in vim(host, "vmsvc/getallvms").splitlines()[1:]:
        parts = line.split()
        if parts and parts[0].isdigit() and name in line:
            vim(host, "vmsvc/unregister", parts[0])
    shutil.rmtree(host.real("/vmfs/volumes/%s/%s" % (ds, name)), ignore_errors=True)


def test_the_dry_run_tally_sees_one_datastore_by_its_name_and_by_its_uuid_path(site, tmp_path):
    """The admin's vms_to_restore was put together from two tickets: one line names the datastore as
    `ds5`, the other by the path `esxcli storage filesystem list` prints (`/vmfs/volumes/<uuid>`), which
    is the same datastore; both restore the backup as "Zwilling". This morning's fix makes the dry run
    count what earlier lines take (docs/restore.md: the dry run sees a folder an earlier line
    restores). But the tally compares path text: the dry run says "every check passed" for both lines,
    exit 0; the real run restores line 1 and refuses line 2 ("target folder ... already exists"), exit
    4. Expected: the dry run refuses line 2 as the real run does, with the real run's exit code."""
    host, _conf, bk = site
    name = "Zwilling"
    try:
        f, dry, real = _dry_then_real(host, tmp_path, ["%s;ds5;3;%s" % (bk, name),
                                                       "%s;%s;3;%s" % (bk, uuid_path(host, "ds5"), name)])
    finally:
        _cleanup_vm(host, name, "ds5")
    assert real.returncode == 4, out(real)
    assert dry.returncode == real.returncode, out(dry)
    assert [l for l in out(dry).splitlines() if f + ":2" in l and "error" in l], out(dry)


def test_the_dry_run_tally_counts_room_on_one_datastore_named_two_ways(site, tmp_path):
    """Three VMs onto "tiny" (5 MiB free: room for two zeroedthick restores of 2 MiB, not three): lines
    1 and 2 name it `tiny`, line 3 by its `/vmfs/volumes/<uuid>` path. The dry run counts
    the room lines 1-2 take for `tiny`, and then offers line 3 the whole free space of the UUID path
    again: "every check passed", while the real run refuses line 3 for room. Expected: the dry run
    refuses line 3 for room, the real run's exit code."""
    host, _conf, bk = site
    names = ["Raum1", "Raum2", "Raum3"]
    lines = ["%s;tiny;1;Raum1" % bk, "%s;tiny;1;Raum2" % bk, "%s;%s;1;Raum3" % (bk, uuid_path(host, "tiny"))]
    try:
        f, dry, real = _dry_then_real(host, tmp_path, lines)
    finally:
        for n in names:
            _cleanup_vm(host, n, "tiny")
    assert real.returncode == 4, out(real)
    assert [l for l in out(real).splitlines() if f + ":3" in l and "free" in l], out(real)
    assert dry.returncode == real.returncode, out(dry)
    assert [l for l in out(dry).splitlines() if f + ":3" in l and "error" in l], out(dry)


@pytest.mark.parametrize("how", ["symlink", "double slash", "dot"])
def test_a_target_inside_a_backup_spelled_otherwise_is_refused(site, how):
    """This morning's fix refuses a target inside a backup ("lies inside the backup ..., which rotation
    removes with everything in it"), but by the path's text alone. The admin's script builds the target
    as "$VOLUME/$VM/" + "/$BACKUP" (a double slash), or with "/./", or the admin made
    `/vmfs/volumes/ds5/last` a symlink to last night's backup folder to browse it and gives that: each
    time the VM is restored into the sealed backup, "All VMs restored OK!", and the next rotation
    deletes the production VM's files. Expected: refused as the plain path is, nothing written into
    the backup."""
    host, _conf, bk = site
    parent, base = bk.rsplit("/", 1)
    link = "/vmfs/volumes/ds5/last"
    if how == "symlink":
        os.symlink(bk, host.real(link))
        target = link
    else:
        target = parent + ("//" if how == "double slash" else "/./") + base
    before = sorted(os.listdir(host.real(bk)))
    name = "durch " + how
    try:
        r = hotvcb(host, "restore", bk, "--datastore", target, "--name", name, "--format", "3")
        after = sorted(os.listdir(host.real(bk)))
    finally:
        if how == "symlink":
            os.unlink(host.real(link))
        for line in vim(host, "vmsvc/getallvms").splitlines()[1:]:
            if name in line:
                vim(host, "vmsvc/unregister", line.split()[0])
        shutil.rmtree(host.real(bk + "/" + name), ignore_errors=True)
    assert r.returncode != 0, out(r)
    assert "inside the backup" in out(r), out(r)
    assert after == before, out(r)


@pytest.mark.parametrize("cmd", ["list", "restore"])
def test_a_backup_volume_that_is_a_file_is_not_called_missing(site, cmd):
    """The admin's conf has VM_BACKUP_VOLUME=/vmfs/volumes/backup/hotvcb.tgz by a slip (tab completion took
    the archive beside the folder). `hotvcb list -g` / `restore --latest` answer "the backup volume
    /vmfs/volumes/backup/hotvcb.tgz does not exist (a typo, or a share not mounted?)" of a file the admin
    can `ls` right there. This morning's fixes tell a target that is a file apart on purpose
    (restore_plan.not_a_folder: an admin told that a file they can see "does not exist" stops believing
    hotvcb). Expected: an error that says the volume is not a folder (a file), not that it is missing."""
    host, _conf, _bk = site
    volume = "/vmfs/volumes/backup/hotvcb.tgz"
    with open(host.real(volume), "w") as f:
        f.write("not a folder")
    conf = write_conf(host, name="file.conf", VM_BACKUP_VOLUME=volume)
    try:
        if cmd == "list":
            r = hotvcb(host, "list", "-g", conf)
        else:
            r = hotvcb(host, "restore", "--latest", VM, "-g", conf, "--datastore", "ds5", "-d", "1")
    finally:
        os.unlink(host.real(volume))
    text = out(r)
    assert r.returncode != 0 and "Traceback" not in text, text
    assert volume in text, text
    assert "does not exist" not in text, text
    assert "not a folder" in text or "is a file" in text, text


def vmx_keys(path):
    with open(path, encoding="utf-8") as f:
        return dict((k.strip(), v.strip().strip('"')) for k, _, v in (l.partition("=") for l in f) if _)


def test_a_working_dir_set_on_purpose_to_another_datastore_is_kept_or_named(site):
    """The admin keeps the swap and snapshot deltas of "Fast" on the SSD datastore ds5, in a folder named
    after the VM (`workingDir = "/vmfs/volumes/ds5/Fast"`), while the VM lives on datastore1. After
    losing the VM they restore last night's backup under its own name onto datastore1. This morning's
    fix drops a workingDir "naming the original's folder" (vmx_identity.py) - but it goes by the last
    folder name alone, so the admin's deliberate SSD folder on another datastore is removed from the
    .vmx too, without a word: the restored VM silently swaps and snapshots onto the slow datastore.
    Expected: a workingDir outside the VM's own folder is kept (or at the least the restore warns that
    it was dropped, naming it)."""
    host, conf, _bk = site
    vm = "Fast"
    host.create_vm(vm, "datastore1", [{"size": "1M"}], power="off")
    work = "/vmfs/volumes/ds5/" + vm
    os.makedirs(host.real(work), exist_ok=True)
    folder = "/vmfs/volumes/datastore1/" + vm
    with open(host.real(folder + "/" + vm + ".vmx"), "a", encoding="utf-8") as f:
        f.write('workingDir = "%s"\n' % work)
    r = hotvcb(host, "backup", "-m", vm, "-g", conf)
    assert r.returncode == 0, out(r)
    (entry,) = [e for e in os.listdir(host.real(VOLUME + "/" + vm)) if e.startswith(vm + "-")]
    for line in vim(host, "vmsvc/getallvms").splitlines()[1:]:  # the VM is lost
        if line.split()[1:2] == [vm]:
            vim(host, "vmsvc/unregister", line.split()[0])
    shutil.rmtree(host.real(folder))
    r = hotvcb(host, "restore", VOLUME + "/" + vm + "/" + entry, "--datastore", "datastore1", "--format", "3")
    assert r.returncode == 0, out(r)
    keys = vmx_keys(host.real(folder + "/" + vm + ".vmx"))
    assert keys.get("uuid.action") == "keep", keys
    assert keys.get("workingDir", "").rstrip("/") == work or [
        l for l in out(r).splitlines() if "workingDir" in l and work in l], (keys, out(r))


def test_a_vm_named_within_226_bytes_is_compressed(site):
    """backup-format.md: a VM name of at most 226 bytes in UTF-8 is backed up, and "the other names hotvcb
    makes after a VM or a file ... keep within 255 bytes too". A Japanese shop's VM named with 75 kanji
    and a letter (226 bytes) is backed up with ENABLE_COMPRESSION=1. The backup reports "All VMs backed
    up OK!", exit 0, but the log says "compression failed, keeping the uncompressed backup: cannot
    write .../.hotvcb-gz-records/<VM>-<time>.gz.verify.json: File name too long" - every night, so the
    backup volume they sized for compressed backups fills with uncompressed ones. Expected: a .gz backup,
    no "File name too long"."""
    host, _conf, _bk = site
    name = "\u6570" * 75 + "a"
    assert len(name.encode("utf-8")) == 226
    host.create_vm(name, "datastore1", [{"size": "1M"}], power="off")
    conf = write_conf(host, name="gz.conf", ENABLE_COMPRESSION="1")
    r = hotvcb(host, "backup", "-m", name, "-g", conf)
    assert r.returncode == 0, out(r)
    assert "File name too long" not in out(r), out(r)
    assert [e for e in os.listdir(host.real(VOLUME + "/" + name)) if e.endswith(".gz")], out(r)


def _seal(folder, vm, disks):
    """hotvcb.json with hotvcb's own digests for a hand-made backup; disks: [(key, [files])]."""
    from hotvcb.localshell import LocalShell
    from hotvcb.store import manifest

    shell = LocalShell()
    files = {n: manifest.digest_file(shell, os.path.join(folder, n)).entry()
             for n in os.listdir(folder) if n != manifest.MANIFEST}
    data = {"format": manifest.FORMAT, "version": manifest.VERSION, "vm": vm, "result": "ok", "message": "",
            "disk_format": "thin", "disks": [{"key": k, "source": "", "files": f, "ok": True, "error": ""}
                                             for k, f in disks], "files": files, "verified": None}
    with open(os.path.join(folder, manifest.MANIFEST), "w") as f:
        f.write(manifest.dumps(data))


@pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")
def test_the_dry_run_counts_the_room_a_kvm_backups_line_takes(site, tmp_path):
    """After moving a libvirt VM "lv" (one 2 MiB raw disk) to ESXi, the admin's vms_to_restore brings it
    back onto the small datastore "tiny" (5 MiB) as zeroedthick, followed by two restores of the ESXi VM
    (2 MiB zeroedthick each). The dry run counts the room the ESXi lines take ("ROOM: 2.0 MiB of the 5.0
    MiB free on /vmfs/volumes/tiny taken by the restores before this one" on line 3), but the KVM line's
    VM takes none in its tally: line 3 "needs 2.0 MiB, 3.0 MiB free", every check passed, exit 0. The
    real run restores lines 1-2 and refuses line 3 ("needs 2.0 MiB ... but only 992.0 KiB is free"),
    exit 4. Expected: the dry run refuses line 3 too, with the real run's exit code."""
    host, _conf, bk = site
    kb = "%s/lv/lv-2026-12-01_21-00-00" % VOLUME
    os.makedirs(host.real(kb))
    with open(host.real(kb + "/vda.img"), "wb") as f:
        f.write(os.urandom(2 << 20))
    with open(host.real(kb + "/domain.xml"), "w") as f:
        f.write("<domain type='kvm'><name>lv</name><uuid>0f4c2a56-5d0b-4d6c-9a3e-6c1f0e9d1a11</uuid>"
                "<memory unit='MiB'>64</memory><vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os><devices>"
                "<disk type='file' device='disk'><driver type='raw'/><source file='/x/vda.img'/>"
                "<target dev='vda' bus='virtio'/></disk></devices></domain>")
    _seal(host.real(kb), "lv", [("vda", ["vda.img"])])
    with open(host.real(kb + "/STATUS.ok"), "w") as f:
        f.write("ok\n")
    names = ["K1", "E2", "E3"]
    try:
        f, dry, real = _dry_then_real(host, tmp_path, ["%s;tiny;1;K1" % kb, "%s;tiny;1;E2" % bk, "%s;tiny;1;E3" % bk])
    finally:
        for n in names:
            _cleanup_vm(host, n, "tiny")
        shutil.rmtree(host.real(VOLUME + "/lv"), ignore_errors=True)
    assert real.returncode == 4, out(real)
    assert [l for l in out(real).splitlines() if f + ":3" in l and "free" in l], out(real)
    assert dry.returncode == real.returncode, out(dry)
    assert [l for l in out(dry).splitlines() if f + ":3" in l and "error" in l], out(dry)


def test_the_dry_run_does_not_hold_a_repository_lines_staged_copy_for_the_next_line(site, tmp_path):
    """The ESXi host was rebuilt; what is left is the repository on the NAS. The admin brings two test
    copies of "rp" back onto the small datastore "tiny" (5 MiB) from `repo:...#latest=rp` lines, thin,
    and runs the dry run first as docs/restore.md says. The dry run refuses line 2 ("needs up to 2.8
    MiB ... (the backup staged and the VM), only 2.2 MiB free"), exit 4: it counted line 1's staged
    copy as taken for good. The real run restores both (the staged copy is removed once its VM is
    restored), exit 0. The admin, trusting the dry run, splits the work, or restores onto a production
    datastore instead. Expected: the dry run passes both lines, as the real run does (exit 0)."""
    host, _conf, _bk = site
    repo = "/vmfs/volumes/backup/repo-r2"
    backed_up_into_repository(host, repo, "rp", "2M", str(tmp_path / "w"))
    write_conf(host)  # the site's own again: the helper wrote its repository's over it, and later tests back up
    names = ["R1", "R2"]
    try:
        f, dry, real = _dry_then_real(host, tmp_path, ["repo:%s#latest=rp;tiny;3;%s" % (repo, n) for n in names])
    finally:
        for n in names:
            _cleanup_vm(host, n, "tiny")
    assert real.returncode == 0, out(real)
    assert dry.returncode == real.returncode, out(dry)


def test_list_with_a_per_vm_file_still_says_the_backup_volume_is_not_there(site, tmp_path):
    """The backups of every VM go to the NFS datastore "nfsbackup", except "db", whose per-VM file (the
    backup's -c folder) sends it to a local folder. After the host's reinstall nfsbackup is not mounted
    yet. `hotvcb list -g hotvcb.conf -c vmconfs` shows db's backups and nothing else, exit 0, no word
    of the global volume: the admin reads every other VM's backups as gone. This morning's fix makes
    list of a backup volume that is not there an error naming it (list_cmd docstring: "never 'no
    backups under' it, which reads as backups lost"), but only when no per-VM file names another
    volume. Expected: the missing volume is named (an error, or at the least a warning), db's rows
    may still be shown."""
    host, conf, bk = site
    local = "/vmfs/volumes/datastore1/dbbackups"
    os.makedirs(host.real(local + "/" + VM))
    shutil.copytree(host.real(bk), host.real(local + "/" + VM + "/" + os.path.basename(bk)))
    confdir = tmp_path / "vmconfs"
    confdir.mkdir()
    (confdir / VM).write_text("VM_BACKUP_VOLUME=%s\n" % local, encoding="utf-8")
    gone = write_conf(host, name="gone2.conf", VM_BACKUP_VOLUME="/vmfs/volumes/nfsbackup/hotvcb")
    try:
        r = hotvcb(host, "list", "-g", gone, "-c", str(confdir))
    finally:
        shutil.rmtree(host.real(local))
    text = out(r)
    assert "Traceback" not in text, text
    assert "/vmfs/volumes/nfsbackup/hotvcb" in r.stderr and (
        "not mounted" in r.stderr or "does not exist" in r.stderr), text


@pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")
def test_the_dry_run_of_a_gz_restore_to_kvm_finds_the_folder_that_is_taken(site, tmp_path):
    """The admin moves last night's compressed ESXi backup to the KVM box:
    `hotvcb restore "r2 ö-<time>.gz" --kvm /var/lib/libvirt/images --name web -d 1` first. A VM folder
    `web` is already there (last week's test restore). The dry run checks the archive's checksums and
    says "RESTORE TO KVM: ... would be unpacked in ... and restored", exit 0; the real run unpacks the
    whole archive and then refuses: ".../web already exists; not overwriting it", exit 6.
    docs/restore.md: the KVM restore "checks as the ESXi restore does (good, checksums, the folder does
    not exist, room ...)", "-d 1 prints what would happen"; a folder backup's dry run refuses it.
    Expected: the dry run of the .gz refuses the taken folder too, with the real run's exit code."""
    host, _conf, _bk = site
    volume = "/vmfs/volumes/backup/gzvol"
    conf = write_conf(host, name="gzvol.conf", VM_BACKUP_VOLUME=volume, ENABLE_COMPRESSION="1")
    r = hotvcb(host, "backup", "-m", VM, "-g", conf)
    assert r.returncode == 0, out(r)
    (gz,) = [e for e in os.listdir(host.real(volume + "/" + VM)) if e.endswith(".gz")]
    target = tmp_path / "images"
    (target / "web").mkdir(parents=True)
    args = ["restore", host.real(volume + "/" + VM + "/" + gz), "--kvm", str(target), "--name", "web"]
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    dry = subprocess.run([sys.executable, "-m", "hotvcb"] + args + ["-d", "1"], capture_output=True, text=True,
                         env=env, timeout=120)
    real = subprocess.run([sys.executable, "-m", "hotvcb"] + args, capture_output=True, text=True, env=env,
                          timeout=120)
    assert real.returncode != 0 and "already exists" in out(real), out(real)
    assert dry.returncode == real.returncode, out(dry)
    assert "already exists" in out(dry), out(dry)


def _static_mac_vm(host, conf, vm, mac="00:50:56:0a:0b:0d"):
    """A powered-off VM whose ethernet0 has a static MAC, backed up once: its backup's path."""
    vmid = host.create_vm(vm, "datastore1", [{"size": "1M"}], power="off")
    vmx = host.real("/vmfs/volumes/datastore1/%s/%s.vmx" % (vm, vm))
    with open(vmx, encoding="utf-8") as f:
        text = f.read()
    text = text.replace('ethernet0.addressType = "generated"',
                        'ethernet0.addressType = "static"\nethernet0.address = "%s"' % mac)
    with open(vmx, "w", encoding="utf-8") as f:
        f.write("".join(l + "\n" for l in text.splitlines() if not l.startswith("ethernet0.generatedAddress")))
    vim(host, "vmsvc/reload", str(vmid))
    r = hotvcb(host, "backup", "-m", vm, "-g", conf)
    assert r.returncode == 0, out(r)
    (entry,) = [e for e in os.listdir(host.real(VOLUME + "/" + vm)) if e.startswith(vm + "-")]
    return "%s/%s/%s" % (VOLUME, vm, entry)


def test_the_dry_run_sees_two_copies_with_one_static_mac_cannot_both_run(site, tmp_path):
    """The admin restores two test copies of "Kasse" (static MAC, original powered off for the
    migration) from one vms_to_restore with --power-on, dry run first. The dry run says "POWER ON: K-a,
    once registered" and "POWER ON: K-b, once registered", "OK, only a dryrun.", exit 0. The real run
    powers K-a on and then (this morning's fix) leaves K-b off: "VM K-a ... is powered on with the same
    MAC ..., and this copy keeps its static MAC address", "WARNING: All VMs restored, but 1 VM(s) were
    left powered off", exit 3. docs/restore.md: the dry run plans each line after the lines before it,
    and a dry run with --power-on says when a VM would be left off. Expected: the dry run warns that
    K-b would be left powered off, with the real run's exit code."""
    host, conf, _bk = site
    bk = _static_mac_vm(host, conf, "Kasse")
    names = ["K-a", "K-b"]
    f = tmp_path / "vms_to_restore"
    f.write_text("".join('"%s;ds5;3;%s"\n' % (bk, n) for n in names), encoding="utf-8")
    try:
        dry = hotvcb(host, "restore", "-c", str(f), "--power-on", "-d", "1")
        real = hotvcb(host, "restore", "-c", str(f), "--power-on")
    finally:
        for line in vim(host, "vmsvc/getallvms").splitlines()[1:]:
            if line.split()[1:2] and line.split()[1] in names:
                vim(host, "vmsvc/power.off", line.split()[0])
        for n in names:
            _cleanup_vm(host, n, "ds5")
    assert real.returncode == 3, out(real)
    assert dry.returncode == real.returncode, out(dry)
    assert [l for l in out(dry).splitlines() if "K-b" in l and "powered off" in l], out(dry)


def test_latest_to_kvm_from_a_backup_volume_that_is_not_there_says_so(tmp_path):
    """The ESXi host died; on the KVM box the admin runs `hotvcb restore --latest web -g hotvcb.conf --kvm
    /var/lib/libvirt/images`, the NAS share holding the backups (VM_BACKUP_VOLUME=/mnt/nas/hotvcb) not
    mounted yet after the box's reboot. The answer: "no good backup of 'web' under /mnt/nas/hotvcb" -
    read as: the backups are gone. This morning's fix says "the backup volume ... does not exist (a
    typo, or a share not mounted?)" for `restore --latest` to ESXi and for `list`, not for the KVM
    restore beside it. Expected: the same error naming the volume as not there."""
    volume = str(tmp_path / "nas" / "hotvcb")
    conf = tmp_path / "hotvcb.conf"
    conf.write_text("VM_BACKUP_VOLUME=%s\n" % volume, encoding="utf-8")
    images = tmp_path / "images"
    images.mkdir()
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    r = subprocess.run([sys.executable, "-m", "hotvcb", "restore", "--latest", "web", "-g", str(conf),
                        "--kvm", str(images), "-d", "1"], capture_output=True, text=True, env=env, timeout=120)
    text = out(r)
    assert r.returncode != 0 and "Traceback" not in text, text
    assert volume in text and ("does not exist" in text or "not mounted" in text), text


def _local_libvirt_backup(volume):
    """A sealed libvirt backup `lv` (one 1 MiB raw disk) under `volume`: its path."""
    folder = os.path.join(str(volume), "lv", "lv-2026-12-01_21-00-00")
    os.makedirs(folder)
    with open(os.path.join(folder, "vda.img"), "wb") as f:
        f.write(os.urandom(1 << 20))
    with open(os.path.join(folder, "domain.xml"), "w") as f:
        f.write("<domain type='kvm'><name>lv</name><uuid>0f4c2a56-5d0b-4d6c-9a3e-6c1f0e9d1a11</uuid>"
                "<memory unit='MiB'>64</memory><vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os><devices>"
                "<disk type='file' device='disk'><driver type='raw'/><source file='/x/vda.img'/>"
                "<target dev='vda' bus='virtio'/></disk></devices></domain>")
    _seal(folder, "lv", [("vda", ["vda.img"])])
    with open(os.path.join(folder, "STATUS.ok"), "w") as f:
        f.write("ok\n")
    return folder


def _local(*args):
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return subprocess.run([sys.executable, "-m", "hotvcb"] + [str(a) for a in args], capture_output=True, text=True,
                          env=env, timeout=120)


@pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")
def test_a_kvm_restore_named_like_a_scratch_folder_is_not_offered_for_removal(tmp_path):
    """This morning's fix refuses a restored VM's name starting `.hotvcb-extract-` (docs/restore.md: "cleanup
    and every restore would take the VM's folder for one") - for ESXi only. `hotvcb restore <backup>
    --kvm DIR --name .hotvcb-extract-1-20261205T000000-abcdef` restores the VM into that folder, "All VMs
    restored OK!", and `hotvcb cleanup --kvm DIR` then warns "a restore's scratch folder without its
    record ...; remove it by hand if no restore is running": the admin deletes the restored VM.
    Expected: the name refused up front with nothing written, or the VM's folder never offered for
    removal."""
    backup = _local_libvirt_backup(tmp_path / "vol")
    images = tmp_path / "images"
    images.mkdir()
    name = ".hotvcb-extract-1-20261205T000000-abcdef"
    r = _local("restore", backup, "--kvm", images, "--name", name)
    if r.returncode != 0:
        assert "Traceback" not in out(r), out(r)
        assert not os.path.exists(str(images / name)), out(r)
        return
    c = _local("cleanup", "--kvm", images)
    assert c.returncode == 0, out(c)
    assert not [l for l in out(c).splitlines() if name in l and "remove it" in l], out(c)


@pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")
def test_a_kvm_vm_named_like_a_restores_unfinished_folder_is_named_as_a_vm(tmp_path):
    """`restore <backup> --kvm DIR --name Shop.hotvcb-restoring` is accepted and restored: DIR now holds the
    complete VM folder `Shop.hotvcb-restoring` (its .xml, its .sh, its disk). The next restore of
    anything as `Shop` into DIR is refused: ".../Shop.hotvcb-restoring exists: another restore into it
    is running (or one that died on another machine left it)". None is running, `cleanup --kvm DIR`
    removes nothing, and a VM called `Shop` can never be restored there. For ESXi this morning's fix
    names the VM that holds the folder (restore_plan._temp_taken); the KVM restore was missed.
    Expected: the odd name refused up front, or the refusal names a complete restored VM, not a
    running restore."""
    backup = _local_libvirt_backup(tmp_path / "vol")
    images = tmp_path / "images"
    images.mkdir()
    first = _local("restore", backup, "--kvm", images, "--name", "Shop.hotvcb-restoring")
    if first.returncode != 0:
        assert "Traceback" not in out(first), out(first)
        assert not os.path.exists(str(images / "Shop.hotvcb-restoring")), out(first)
        return
    r = _local("restore", backup, "--kvm", images, "--name", "Shop")
    if r.returncode != 0:
        assert "Traceback" not in out(r), out(r)
        assert "another restore" not in out(r), out(r)


@pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")
def test_a_kvm_restore_into_another_backup_folder_is_refused(tmp_path):
    """On the KVM box the backups are on the NAS mount; the admin restores Monday's backup of "lv" and, tab
    completing, gives Tuesday's backup folder as `--kvm` DIR. This morning's fix refuses a target inside a
    backup for ESXi ("lies inside the backup ..., which rotation removes with everything in it"); the KVM
    restore refuses only the backup it reads from, and restores the VM into Tuesday's backup folder, "All
    VMs restored OK!". The next rotation removes that folder with the VM in it. docs/restore.md: the KVM
    restore "checks as the ESXi restore does". Expected: refused, nothing written into the backup."""
    monday = _local_libvirt_backup(tmp_path / "vol")
    tuesday = monday[: -len("2026-12-01_21-00-00")] + "2026-12-02_21-00-00"
    shutil.copytree(monday, tuesday)
    before = sorted(os.listdir(tuesday))
    r = _local("restore", monday, "--kvm", tuesday, "--name", "inside")
    assert r.returncode != 0 and "Traceback" not in out(r), out(r)
    assert sorted(os.listdir(tuesday)) == before, out(r)


def test_a_dry_run_of_a_vm_needing_consolidation_exits_as_the_real_run(host):
    """web keeps the user's snapshot `before-upgrade` (ALLOW_VMS_WITH_SNAPSHOTS_TO_BE_BACKEDUP=1), and last
    night the host left it running on a delta no snapshot owns (Needs Consolidation). Every real run now
    backs it up and ends "WARNING: All VMs backed up, but some disk(s) failed!", exit 3, naming "web needs
    consolidation". This morning's fix makes a dry run exit the code the real run would (README), but
    drops every VM warning as one "a dry run only warns of": `-d dryrun` logs the same warning and ends
    "OK, only a dryrun.", exit 0. Expected: the dry run ends with the real run's exit code (3)."""
    host.create_vm("web", "datastore1", [{"size": "2M"}], power="on", snapshots=["before-upgrade"])
    conf = write_conf(host, ALLOW_VMS_WITH_SNAPSHOTS_TO_BE_BACKEDUP="1")
    host.set_fault("snapshot.remove", "unconsolidated-once")
    r = hotvcb(host, "backup", "-m", "web", "-g", conf)
    assert "web needs consolidation" in out(r), out(r)
    dry = hotvcb(host, "backup", "-m", "web", "-g", conf, "-d", "dryrun")
    real = hotvcb(host, "backup", "-m", "web", "-g", conf)
    assert "needs consolidation" in out(real) and real.returncode == 3, out(real)
    assert "needs consolidation" in out(dry), out(dry)
    assert dry.returncode == real.returncode, out(dry)


def test_a_missing_volume_named_by_a_per_vm_file_is_not_called_the_built_in_default(site, tmp_path):
    """The admin restores "r2 ö" with `restore --latest "r2 ö" --vm-configs /etc/hotvcb/vms --datastore ds5`
    (its per-VM file sends its backups to /vmfs/volumes/nfsbackup/hotvcb; the site has no global config).
    The NFS datastore is not mounted yet. The answer: "the backup volume /vmfs/volumes/nfsbackup/hotvcb
    does not exist (no datastore nfsbackup is mounted; no -g CONF was given, so this is ghettoVCB's
    built-in default)" - but it is the per-VM file's volume, not the built-in default: the admin goes
    looking for a forgotten -g instead of mounting the datastore. Expected: the volume named, without
    the false claim that it is the built-in default."""
    host, _conf, _bk = site
    confdir = tmp_path / "vms"
    confdir.mkdir()
    (confdir / VM).write_text("VM_BACKUP_VOLUME=/vmfs/volumes/nfsbackup/hotvcb\n", encoding="utf-8")
    r = hotvcb(host, "restore", "--latest", VM, "--vm-configs", str(confdir), "--datastore", "ds5", "-d", "1")
    text = out(r)
    assert r.returncode != 0 and "Traceback" not in text, text
    assert "/vmfs/volumes/nfsbackup/hotvcb" in text, text
    assert "built-in default" not in text, text


def test_a_gz_whose_manifest_block_digests_lie_is_not_unpacked_onto_a_datastore_it_fills(host):
    """A compressed backup of "web" (8 MiB of data) kept out of the rotation's reach in
    /vmfs/volumes/backup/keep/; its hotvcb.json's per-block digest list (the 16-hex `blocks.digests`, which
    only says where data is: the checksums go by `sha256_of_blocks`) reads as all-zero blocks (bit rot, an
    edit, a tool's bug). The dry run onto the 6 MiB datastore "small": "Checksums: 4 file(s) ... intact",
    "ROOM: needs 32.0 KiB, 6.0 MiB free", every check passed, exit 0. The real run unpacks onto the
    datastore until it is full ("needs 8.0 MiB on /vmfs/volumes/small but only 0 B is free"), exit 6: on a
    production datastore, every thin VM there stalls meanwhile. This morning's room-by-data count
    (store/datasize.py) promises "never less than it may take". Expected: the dry run refuses as the real
    run does, and the real run refuses before unpacking anything."""
    import hashlib

    from gzrepack import repack

    host.create_vm("web", "datastore1", [{"size": "8M"}], power="off")
    (flat,) = [os.path.join(d, n) for d, _, names in os.walk(host.real("/vmfs/volumes/datastore1/"))
               for n in names if n == "web-flat.vmdk"]
    with open(flat, "r+b") as f:
        f.write(os.urandom(8 << 20))
    conf = write_conf(host, ENABLE_COMPRESSION=1)
    r = hotvcb(host, "backup", "-m", "web", "-g", conf)
    assert r.returncode == 0, out(r)
    folder = host.real(VOLUME + "/web")
    (gz,) = [n for n in os.listdir(folder) if n.endswith(".gz")]

    def zeros(data, files):
        blocks = data["files"]["web-flat.vmdk"]["blocks"]
        zero = hashlib.sha256(bytes(blocks["size"])).hexdigest()[:blocks["hex"]]
        blocks["digests"] = zero * (len(blocks["digests"]) // blocks["hex"])

    keep = "/vmfs/volumes/backup/keep/" + gz
    os.makedirs(os.path.dirname(host.real(keep)))
    shutil.copy(os.path.join(folder, gz), host.real(keep))
    repack(host.real(keep), edit_manifest=zeros)
    host.add_datastore("small", 6 << 20)
    args = ("restore", keep, "--datastore", "small", "--name", "back")
    dry = hotvcb(host, *args, "-d", "1")
    real = hotvcb(host, *args)
    assert real.returncode == 6, out(real)
    assert dry.returncode == real.returncode, out(dry)
    assert "Extracting" not in out(real), out(real)


def test_a_restore_name_too_long_for_its_folder_is_refused_by_the_dry_run_too(site):
    """The admin restores a copy under a descriptive Japanese name of 80 characters (240 bytes in UTF-8, within
    vSphere's 80-character limit) and dry-runs it first: "every check passed", "OK, only a dryrun.", exit 0.
    The real run: "cannot create /vmfs/volumes/ds5/<name>.hotvcb-restoring: File name too long", exit 6.
    README: a dry run that finds what the real run would fail on exits that run's code; a backup refuses
    such a name up front "naming its length and the limit" (backup-format.md). Expected: the dry run
    refuses the name as the real run does (same exit code), naming it too long."""
    host, _conf, bk = site
    name = "\u6570" * 80
    try:
        dry = hotvcb(host, "restore", bk, "--datastore", "ds5", "--name", name, "-d", "1")
        real = hotvcb(host, "restore", bk, "--datastore", "ds5", "--name", name)
    finally:
        _cleanup_vm(host, name, "ds5")
    assert "Traceback" not in out(dry) + out(real), out(real)
    assert dry.returncode == real.returncode, (out(dry)[-1500:], out(real)[-1500:])
