"""Outside test of round 2's fixes, part B: rotation of a .gz and the folder beside it, ghettoVCB's
STATUS.warn against hotvcb's own, and the NFS keys as the backup volume. Each defect is a strict xfail
until fixed; all run on a tmp folder (LocalShell), milliseconds each."""

import io
import os
import tarfile

import pytest

from hotvcb import config
from hotvcb.cli import main
from hotvcb.errors import UsageError
from hotvcb.localshell import LocalShell
from hotvcb.runlog import RunLog
from hotvcb.store import health, layout, rotation

OLD, MID, NEW = "2026-12-01_21-00-01", "2026-12-02_21-00-01", "2026-12-03_21-00-01"


def folder_backup(folder, status: str = "ok") -> str:
    """A ghettoVCB-style folder: .vmx, one disk, STATUS.<status>, no manifest."""
    folder.mkdir(parents=True)
    (folder / "db.vmx").write_text('displayName = "db"\n')
    (folder / "db.vmdk").write_text('# Disk DescriptorFile\ncreateType="vmfs"\nRW 8 VMFS "db-flat.vmdk"\n')
    (folder / "db-flat.vmdk").write_bytes(bytes(8 * 512))
    (folder / ("STATUS." + status)).write_text(status + "\n")
    return str(folder)


def ghettovcb_archive(vol, stamp: str, flat_bytes: int) -> str:
    """ghettoVCB's .gz as it writes it: the folder tarred before STATUS, so none inside; a flat disk of
    `flat_bytes` that gzip cannot shrink."""
    folder = vol / "db" / ("db-" + stamp)
    folder.mkdir(parents=True)
    (folder / "db.vmx").write_text('displayName = "db"\nscsi0:0.fileName = "db.vmdk"\n')
    (folder / "db.vmdk").write_text('# Disk DescriptorFile\nversion=1\ncreateType="vmfs"\n'
                                    'RW %d VMFS "db-flat.vmdk"\n' % (flat_bytes // 512))
    (folder / "db-flat.vmdk").write_bytes(os.urandom(flat_bytes))
    with tarfile.open(str(folder) + ".gz", "w:gz") as tar:
        tar.add(str(folder), arcname=folder.name)
    for child in folder.iterdir():
        child.unlink()
    folder.rmdir()
    return str(folder) + ".gz"


class CountingShell(LocalShell):
    """LocalShell that counts the bytes read through open_binary (archives are read that way)."""

    bytes_read = 0

    def open_binary(self, path: str):
        shell, real = self, super().open_binary(path)

        class Counted:
            def read(self, n=-1):
                data = real.read(n)
                shell.bytes_read += len(data)
                return data

            def __getattr__(self, name):
                return getattr(real, name)

        return Counted()


def every_name(top) -> list:
    return sorted(name for _, dirs, files in os.walk(str(top)) for name in dirs + files)


def test_rotating_a_gz_whose_unpacked_folder_is_a_symlink_leaves_no_archive_behind(tmp_path):
    """An admin who unpacked an old .gz on another datastore and linked it in beside the archive: the pair
    is condemned (rotation.condemn: `.gz` renamed into `<folder>/`, then the folder renamed -deleting and
    removed). The rename goes through the link, the removal takes the link only, and the whole archive lives
    on in a folder outside the VM's, where no later rotation or cleanup looks; rotation says it removed it.
    Now the link is removed (not what it names) and the .gz condemned on its own."""
    vol, elsewhere = tmp_path / "vol", tmp_path / "elsewhere"
    for stamp in (MID, NEW):
        folder_backup(vol / "db" / ("db-" + stamp))
    target = folder_backup(elsewhere / ("db-" + OLD))
    archive = vol / "db" / ("db-%s.gz" % OLD)
    with tarfile.open(str(archive), "w:gz") as tar:
        tar.add(target, arcname="db-" + OLD)
    os.symlink(target, str(vol / "db" / ("db-" + OLD)))
    removed = rotation.rotate(LocalShell(), str(vol), "db", 2, RunLog(stream=io.StringIO()))
    assert str(archive) in removed  # rotation reports the archive removed ...
    assert "db-%s.gz" % OLD not in every_name(tmp_path)  # ... and so it must be, wherever the link pointed
    assert not os.path.lexists(str(vol / "db" / ("db-" + OLD)))  # the link went with it ...
    assert os.path.isfile(os.path.join(target, "db.vmx"))  # ... but not the copy it named, outside the volume


def test_hotvcbs_own_status_warn_backup_without_its_manifest_is_not_good(tmp_path):
    """hotvcb's STATUS.warn means a disk it should have copied failed. With its manifest gone (a hand, a
    copy that skipped it), the folder still says it is hotvcb's: the hidden .<VM>.vmxf that only hotvcb
    writes (ghettoVCB never copies a .vmxf). health.judge now calls it good ("ghettoVCB left out the
    VM's independent disk(s)"), so rotation counts it and removes an older whole backup for it."""
    vol = tmp_path / "vol"
    older = folder_backup(vol / "db" / ("db-" + OLD))
    short = folder_backup(vol / "db" / ("db-" + NEW), "warn")
    (vol / "db" / ("db-" + NEW) / ".db.vmxf").write_text("<Foundry/>\n")
    shell = LocalShell()
    verdict = health.judge(shell, layout.from_path(shell, short))
    assert not verdict.good, verdict
    assert rotation.rotate(shell, str(vol), "db", 1, RunLog(stream=io.StringIO()), dry_run=True) == []
    assert os.path.isdir(older)


def test_nfs_backup_dir_with_a_doubled_slash_is_the_folder_ghettovcb_used(tmp_path):
    """ghettoVCB's `mkdir -p /vmfs/volumes/<NFS_LOCAL_NAME>/<NFS_VM_BACKUP_DIR>` takes `backups//daily`
    as backups/daily; hotvcb now refuses the whole config (list, status, restore and backup alike) with a
    message that blames a `.` or `..` the value does not hold."""
    conf = tmp_path / "ghettoVCB.conf"
    conf.write_text("ENABLE_NON_PERSISTENT_NFS=1\nNFS_SERVER=nas\nNFS_MOUNT=/export\nNFS_LOCAL_NAME=nfs\n"
                    "NFS_VM_BACKUP_DIR=backups//daily\n")
    try:
        settings, _ = config.load_settings(str(conf))
    except UsageError as err:
        pytest.fail("refused: %s" % err)
    assert settings.vm_backup_volume == "/vmfs/volumes/nfs/backups/daily"


def test_verify_all_on_the_unmounted_nfs_share_does_not_pass(tmp_path, capsys):
    """A monitor that runs `hotvcb verify --all -g ghettoVCB.conf` between runs (UNMOUNT_NFS=1 leaves the
    share unmounted) reads exit 0, "0 backup(s) checked, 0 damaged": green for a night with no backup
    checked at all. The warning goes to stderr, which such a check does not read."""
    conf = tmp_path / "ghettoVCB.conf"
    conf.write_text("ENABLE_NON_PERSISTENT_NFS=1\nNFS_SERVER=nas\nNFS_MOUNT=/export\nNFS_LOCAL_NAME=r2b-unmounted\n"
                    "NFS_VM_BACKUP_DIR=backups\n")
    assert main(["verify", "--all", "-g", str(conf)]) != 0
    assert "not mounted" in capsys.readouterr().err


def test_a_ghettovcb_archive_judged_once_is_not_read_whole_again(tmp_path):
    """67d8ebb judges ghettoVCB's .gz by reading all of it (gzip CRC and length). Nothing of that verdict
    is kept (the .hotvcb-gz-records folder holds hotvcb's archives' records only), so every `list`,
    every `status` a monitor runs and every night's rotation of the VM decompress each of its archives
    again: with ROTATION_COUNT=3 and 100 GB archives, 300 GB read per VM per night to find what the last
    night found. Here a 1 MiB archive is judged twice: the second look must not read it all again.
    (As fixed: a backup run's rotation, which writes to the volume anyway, keeps the verdict in the archive's
    record; `list` and `status` only read it, so the first look here is a rotation's. One cut short is
    judged again.)"""
    archive = ghettovcb_archive(tmp_path / "vol", OLD, 1 << 20)
    shell = CountingShell()
    assert rotation.rotate(shell, str(tmp_path / "vol"), "db", 3, RunLog(stream=io.StringIO())) == []
    assert shell.bytes_read >= 1 << 20  # the first look read it whole, as meant
    shell.bytes_read = 0
    assert health.judge(shell, layout.from_path(shell, archive)).good
    assert shell.bytes_read < 1 << 19, "the second look read %d bytes again" % shell.bytes_read
    with open(archive, "r+b") as f:  # cut short: the kept verdict is no longer its
        f.truncate(os.path.getsize(archive) - 100)
    assert not health.judge(shell, layout.from_path(shell, archive)).good


@pytest.mark.parametrize("gz_good", [True, False])
def test_list_shows_a_gz_and_the_folder_unpacked_beside_it_as_one_backup(tmp_path, gz_good):
    """ghettoVCB-restore unpacks the .gz it restores beside itself and leaves the folder. Rotation counts
    the pair once; list showed two rows (two backups of one time, twice the space). One row now, the
    .gz's, good if either is, its size both's, `unpacked` naming the folder."""
    from hotvcb.commands.list_cmd import backup_rows, table

    vol = tmp_path / "vol"
    folder_backup(vol / "db" / ("db-" + NEW))
    archive = ghettovcb_archive(vol, OLD, 4096)
    with tarfile.open(archive) as tar:
        tar.extractall(str(vol / "db"))
    (vol / "db" / ("db-" + OLD) / "STATUS.ok").write_text("ok\n")  # as a hotvcb archive holds it
    if not gz_good:  # a cut archive: the folder beside it is what holds the backup
        with open(archive, "r+b") as f:
            f.truncate(os.path.getsize(archive) // 2)
    rows = backup_rows(LocalShell(), str(vol), "db")
    assert [r["name"] for r in rows] == ["db-%s.gz" % OLD, "db-" + NEW], rows
    assert rows[0]["unpacked"] == str(vol / "db" / ("db-" + OLD)) and rows[0]["good"] is True
    folder_bytes = sum(os.path.getsize(os.path.join(d, n)) for d, _, ns in os.walk(rows[0]["unpacked"]) for n in ns)
    assert rows[0]["size_bytes"] >= os.path.getsize(archive) + folder_bytes
    assert rows[1]["unpacked"] is None
    assert "(gz+unpacked)" in table(rows)
