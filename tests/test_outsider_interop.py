"""Outside tester: a ghettoVCB user's existing backups, files and habits, and going back to ghettoVCB.

Each test is a defect found from the outside, marked xfail(strict) until it is fixed. What ghettoVCB
does is read from its own scripts (lamw/ghettoVCB: ghettoVCB.sh, ghettoVCB-restore.sh) and said in
each test. Cheap on purpose: in-process CLI calls on folders in tmp_path where the defect shows
without a host; where a host is needed, one esxisim host for the module, whose three 1 MiB VMs one
hotvcb run backs up, and dry runs on it.
"""

import io
import json
import os
import re
import tarfile
from pathlib import Path

import pytest

from hotvcb import cli
from hotvcb.localshell import LocalShell
from hotvcb.runlog import RunLog
from hotvcb.store import rotation
from simhost import VOLUME, backup_root, hotvcb, make_host, needs_root, write_conf
from test_outsider_admin import ghettovcb_gz


def ghettovcb_folder(volume, vm: str, stamp: str, status: str, text: str, vmx_extra: str = ""):
    """A backup folder as ghettoVCB.sh leaves it: the .vmx copied as it is (`cp "${VMX_PATH}"`), each
    disk cloned by vmkfstools (here a zeroedthick descriptor and its -flat file), and its STATUS file
    with the line it echoes."""
    folder = volume / vm / ("%s-%s" % (vm, stamp))
    folder.mkdir(parents=True)
    (folder / (vm + ".vmx")).write_text('displayName = "%s"\nscsi0.present = "TRUE"\n'
                                        'scsi0:0.deviceType = "scsi-hardDisk"\nscsi0:0.fileName = "%s.vmdk"\n'
                                        'scsi0:0.present = "TRUE"\n%s' % (vm, vm, vmx_extra))
    ghettovcb_disk(folder, vm)
    (folder / status).write_text(text + "\n")
    return folder


def ghettovcb_disk(folder, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / (name + ".vmdk")).write_text(
        '# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType="vmfs"\n\n'
        'RW 2048 VMFS "%s-flat.vmdk"\n\nddb.adapterType = "lsilogic"\nddb.geometry.cylinders = "1"\n'
        'ddb.geometry.heads = "64"\nddb.geometry.sectors = "32"\nddb.virtualHWVersion = "13"\n' % name)
    with open(str(folder / (name + "-flat.vmdk")), "wb") as f:
        f.truncate(1 << 20)


def list_json(capsys, conf) -> dict:
    assert cli.main(["list", "--json", "-g", str(conf)]) == 0
    return json.loads(capsys.readouterr().out)


# -- ghettoVCB's STATUS.warn ------------------------------------------------------------------------
def test_ghettovcb_backup_of_a_vm_with_an_independent_disk_is_good(tmp_path, capsys):
    """ghettoVCB.sh: a VM with an independent disk (a scratch or swap disk, left out of snapshots) is
    backed up whole otherwise and gets `echo "WARN: <VM> has some Independent VMDKs that can not be
    backed up" > STATUS.warn`; a failed disk gets STATUS.error instead. hotvcb skips that disk too and
    seals its own backup OK. So every ghettoVCB backup such a VM has is 'warn', not good: `restore`
    and `restore --latest` refuse them all (ghettoVCB-restore took them), `status` finds no good
    backup, and they do not count toward the rotation."""
    vm = "db"
    ghettovcb_folder(tmp_path / "vol", vm, "2026-12-01_21-00-01", "STATUS.warn",
                     "WARN: %s has some Independent VMDKs that can not be backed up" % vm,
                     'scsi0:1.deviceType = "scsi-hardDisk"\nscsi0:1.fileName = "%s_1.vmdk"\n'
                     'scsi0:1.mode = "independent-persistent"\nscsi0:1.present = "TRUE"\n' % vm)
    conf = tmp_path / "ghettoVCB.conf"
    conf.write_text("VM_BACKUP_VOLUME=%s\n" % (tmp_path / "vol"))
    (backup,) = list_json(capsys, conf)["backups"]
    assert backup["good"] and backup["status"] == "unverifiable", backup


# -- a compressed backup ghettoVCB-restore restored ----------------------------------------------------
def test_rotation_of_a_gz_that_ghettovcb_restore_unpacked_beside_itself(tmp_path):
    """ghettoVCB-restore.sh restores a `.gz` by `${TAR} -xzf $VM_TO_RESTORE -C `dirname $VM_TO_RESTORE``:
    the backup's folder, unpacked next to its archive and left there. Once the admin has restored
    from a compressed backup that way (going back to ghettoVCB's restore, or before moving), the VM's
    folder holds `<VM>-<time>.gz` and `<VM>-<time>/`. When rotation reaches them (here: the deferred
    removal a backup run's Deleter makes), hotvcb fails that VM's run with "sealing the backup failed:
    cannot rename ... -deleting: File exists" (exit 6 for a run of one VM) although its new backup is
    good (seen on esxisim with ENABLE_COMPRESSION=1)."""
    volume = tmp_path / "vol"
    archive = ghettovcb_gz(volume, "web", "2026-12-01_21-00-01")
    with tarfile.open(archive) as tar:
        tar.extractall(str(volume / "web"))
    for day in ("02", "03"):  # two good backups since: rotation removes what is older than the newest
        newer = ghettovcb_folder(volume, "web", "2026-12-%s_21-00-01" % day, "STATUS.ok",
                                 "Successfully completed backup")
    handed = []  # what the run's Deleter was given and has not removed yet
    removed = rotation.rotate(LocalShell(), str(volume), "web", 1, RunLog(stream=io.StringIO()),
                              just_made=str(newer), remove=handed.append)
    assert {archive, archive[: -len(".gz")]} <= set(removed), removed


def test_a_gz_and_its_unpacked_folder_count_as_one_backup(tmp_path):
    """The pair ghettoVCB-restore leaves (above) is one backup: counted twice, ROTATION_COUNT=2 would
    delete the one older backup and keep a single one, twice."""
    volume = tmp_path / "vol"
    ghettovcb_folder(volume, "web", "2026-12-01_21-00-01", "STATUS.ok", "Successfully completed backup")
    folder = ghettovcb_folder(volume, "web", "2026-12-02_21-00-01", "STATUS.ok", "Successfully completed backup")
    with tarfile.open(str(folder) + ".gz", "w:gz") as tar:
        tar.add(str(folder), arcname=folder.name)
    assert rotation.rotate(LocalShell(), str(volume), "web", 2, RunLog(stream=io.StringIO())) == []


# -- ghettoVCB's non-persistent NFS -----------------------------------------------------------------
NFS_CONF = ("VM_BACKUP_VOLUME=/vmfs/volumes/mini-local-datastore-hdd/backups\nENABLE_NON_PERSISTENT_NFS=1\n"
            "UNMOUNT_NFS=0\nNFS_SERVER=10.0.0.5\nNFS_VERSION=nfs\nNFS_MOUNT=/export\nNFS_LOCAL_NAME=nfsbk\n"
            "NFS_VM_BACKUP_DIR=mybackups\n")


def test_list_looks_where_the_nfs_keys_put_the_backups(tmp_path, capsys):
    """ghettoVCB.sh with ENABLE_NON_PERSISTENT_NFS=1 sets VM_BACKUP_VOLUME to
    /vmfs/volumes/<NFS_LOCAL_NAME>/<NFS_VM_BACKUP_DIR> and ignores the file's own VM_BACKUP_VOLUME
    (its template's /vmfs/volumes/mini-local-datastore-hdd/backups stays in every such file), and so
    does hotvcb's backup. `hotvcb list -g ghettoVCB.conf` (the migration guide's step 3) looks in
    VM_BACKUP_VOLUME instead and says there are no backups; `status` calls every VM unprotected,
    `restore --latest` finds nothing. With UNMOUNT_NFS=0 the share stays mounted and holds them."""
    conf = tmp_path / "ghettoVCB.conf"
    conf.write_text(NFS_CONF)
    assert list_json(capsys, conf)["volume"] == "/vmfs/volumes/nfsbk/mybackups"


# -- on a host: one VM, backed up once by hotvcb ------------------------------------------------------
VM, DB, ABS = "Web (prod) 1", "db", "abs"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A host with VM (1 MiB, running, with the .vmxf vSphere gives a VM), DB (running, its second disk
    independent) and ABS (off, its second disk named in its .vmx by absolute path, on its own
    datastore), all backed up by one hotvcb run: (host, that run)."""
    if os.geteuid() != 0:
        pytest.skip("esxisim needs root for unshare -m")
    host = make_host(tmp_path_factory.mktemp("interop") / "host")
    try:
        host.create_vm(VM, "datastore1", [{"size": "1M"}], power="on", vmxf=True)
        host.create_vm(DB, "datastore1", [{"size": "1M"}, {"size": "1M", "mode": "independent-persistent"}],
                       power="on")
        host.create_vm(ABS, "datastore1", [{"size": "1M"}, {"size": "1M"}])
        vmx = host.real("/vmfs/volumes/datastore1/%s/%s.vmx" % (ABS, ABS))
        with open(vmx, encoding="utf-8") as f:
            text = f.read()
        with open(vmx, "w", encoding="utf-8") as f:
            f.write(text.replace('"%s_1.vmdk"' % ABS, '"/vmfs/volumes/%s/%s/%s_1.vmdk"' % (
                host.datastore_by_name("datastore1")["uuid"], ABS, ABS)))
        run = hotvcb(host, "-m", VM, "-m", DB, "-m", ABS, "-g", write_conf(host))
        yield host, run
    finally:
        host.stop()


def backup_of(host, vm: str) -> str:
    (entry,) = os.listdir(backup_root(host, vm))
    return os.path.join(backup_root(host, vm), entry)


@needs_root
def test_ghettovcb_restore_finds_one_vmx_in_a_hotvcb_backup(site):
    """migrating-from-ghettovcb.md: "Going back: ghettoVCB ignores hotvcb.json and reads the folders
    as its own". ghettoVCB-restore.sh takes a backup's .vmx as `VM_ORIG_VMX=$(ls "${VM_TO_RESTORE}" |
    grep ".vmx")` and reads its displayName and disks from "${VM_TO_RESTORE}/${VM_ORIG_VMX}": with a
    .vmxf there too (ghettoVCB never copied one; hotvcb does) that is two lines, one path that does
    not exist. `ls` shows no dot-files."""
    folder = backup_of(site[0], VM)
    shown = [f for f in os.listdir(folder) if not f.startswith(".")]
    assert [f for f in shown if re.search(".vmx", f)] == [VM + ".vmx"], sorted(shown)


@needs_root
def test_dry_run_with_a_non_persistent_nfs_share_is_ok(site):
    """migrating-from-ghettovcb.md step 2: dry-run the existing job first. ghettoVCB.sh mounts the
    share only when not a dry run, and its dry run ends "Final status: OK, only a dryrun." (exit 0);
    hotvcb's says "would mount NFS ..." and then fails every VM because the share is not mounted."""
    host, _run = site
    conf = os.path.join(host.root, "nfs.conf")
    with open(conf, "w") as f:
        f.write(NFS_CONF)
    r = hotvcb(host, "-m", VM, "-g", conf, "-d", "dryrun")
    out = r.stdout + r.stderr
    assert r.returncode == 0 and "Final status: OK, only a dryrun." in out, out
    assert "/vmfs/volumes/nfsbk/mybackups/%s/%s-" % (VM, VM) in out, out


@needs_root
def test_a_vm_with_an_independent_disk_ends_as_ghettovcb_ended_it(site):
    """Cron wrappers act on ghettoVCB's exit code and final status line. ghettoVCB.sh, for a VM with
    an independent disk, logs "WARN: <VM> has some Independent VMDKs that can not be backed up!" and
    sets VMDK_FAILED=1, so a run where the other VMs were fine ends "###### Final status: WARNING: All
    VMs backed up, but some disk(s) failed! ######", exit 3 (a physical RDM too, as an error). hotvcb
    ends that run "All VMs backed up OK!", exit 0: the wrapper, and EMAIL_ALERT (mail on failures
    only), stay silent about a disk that is in no backup."""
    _host, run = site
    out = run.stdout + run.stderr
    assert "skipping scsi0:1" in out, out  # the run did see the independent disk
    assert run.returncode == 3, out
    assert "###### Final status: WARNING: All VMs backed up, but some disk(s) failed! ######" in out, out


@needs_root
def test_restore_finds_a_disk_ghettovcb_kept_in_a_folder_of_its_datastore(site):
    """ghettoVCB.sh keeps a disk of another datastore under the .vmx path minus its last two parts
    (`DS_UUID=${VMDK#/vmfs/volumes/}; DS_UUID=${DS_UUID%/*/*}`): for a disk in a folder of its own on
    that datastore, `[ds5] disks/app/app_1.vmdk`, that is `<backup>/<ds5 uuid>/disks/app_1.vmdk`.
    hotvcb's restore (a dry run here) says that disk "is not in the backup (skipped when it was
    taken)" and restores the VM with it disconnected, exit 0: a VM that looks restored, without its
    data disk, from a backup that holds it."""
    host, _run = site
    uuid = host.datastore_by_name("ds5")["uuid"]
    backup = ghettovcb_folder(Path(host.real(VOLUME)), "app", "2026-12-01_21-00-01", "STATUS.ok",
                              "Successfully completed backup",
                              'scsi0:1.deviceType = "scsi-hardDisk"\n'
                              'scsi0:1.fileName = "/vmfs/volumes/%s/disks/app/app_1.vmdk"\nscsi0:1.present = "TRUE"\n'
                              % uuid)
    ghettovcb_disk(backup / uuid / "disks", "app_1")
    r = hotvcb(host, "restore", "%s/app/%s" % (VOLUME, backup.name), "--datastore", "datastore1", "-d", "1")
    out = r.stdout + r.stderr
    assert "not in the backup" not in out, out
    assert "%s/disks/app_1.vmdk (scsi0:1)" % uuid in out, out


@needs_root
def test_a_per_vm_file_does_not_move_a_vm_off_the_nfs_share(site):
    """ghettoVCB.sh with ENABLE_NON_PERSISTENT_NFS=1 puts every VM in
    /vmfs/volumes/<NFS_LOCAL_NAME>/<NFS_VM_BACKUP_DIR>/<VM>, whatever VM_BACKUP_VOLUME says, and its
    per-VM template (ghettoVCB-vm_backup_configuration_template, what `-c DIR` files are copied from)
    starts with a VM_BACKUP_VOLUME line. hotvcb backs such a VM up to that line's folder instead of
    the share. The share is mounted already (as datastore `nfsshare`), so the dry run plans it."""
    host, _run = site
    conf, confdir = os.path.join(host.root, "nfs-mounted.conf"), os.path.join(host.root, "per-vm")
    with open(conf, "w") as f:
        f.write("ENABLE_NON_PERSISTENT_NFS=1\nNFS_SERVER=10.0.0.5\nNFS_MOUNT=/export\nNFS_LOCAL_NAME=nfsshare\n"
                "NFS_VM_BACKUP_DIR=nfsdir\n")
    os.mkdir(confdir)
    with open(os.path.join(confdir, VM), "w") as f:
        f.write("VM_BACKUP_VOLUME=/vmfs/volumes/backup/elsewhere\nDISK_BACKUP_FORMAT=thin\n")
    host.add_nfs("nfsshare", "10.0.0.5", "/export")
    try:
        r = hotvcb(host, "-m", VM, "-g", conf, "-c", confdir, "-d", "dryrun")
    finally:
        host.remove_datastore("nfsshare")
    out = r.stdout + r.stderr
    assert "BACKUP_TO: /vmfs/volumes/nfsshare/nfsdir/%s/%s-" % (VM, VM) in out, out


@needs_root
def test_an_absolute_path_disk_is_kept_where_ghettovcb_restore_looks(site):
    """migrating-from-ghettovcb.md: ghettoVCB "reads the folders as its own". ghettoVCB.sh sends any
    disk whose .vmx line starts with /vmfs/volumes to `${VM_BACKUP_DIR}/${DS_UUID}/<file>`, and
    ghettoVCB-restore.sh reads such a line's disk from `${VM_TO_RESTORE}/${VMDK_DATASTORE}/<file>`,
    whichever datastore it is on. A .vmx names a disk so when it was added as an existing disk,
    moved, or made by a tool that writes full paths. hotvcb keeps the .vmx as it is but this disk
    beside it, so ghettoVCB-restore clones nothing for it and registers a VM whose disk is missing."""
    host, _run = site
    uuid = host.datastore_by_name("datastore1")["uuid"]
    folder = backup_of(host, ABS)
    assert os.path.isfile(os.path.join(folder, uuid, ABS + "_1.vmdk")), sorted(os.listdir(folder))
