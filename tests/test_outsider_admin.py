"""Outside tester: an ESXi admin moving from ghettoVCB (their files, their flags, their habits).

Each test is a defect found from the outside, marked xfail(strict) until it is fixed. Cheap on
purpose: in-process CLI calls on files in tmp_path where the defect shows before any host is
needed, one esxisim host with one small VM where it needs one.
"""

import gzip
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import tarfile

import pytest

from hotvcb import cli, config, notify, restorefile, targz
from hotvcb.errors import HostError
from hotvcb.localshell import LocalShell
from hotvcb.store import layout, rotation, sidecar
from simhost import (REPO, backup_root, backups, hotvcb, kill, needs_root, on_host, power, snapshot_names, wait_for,
                     wrap_tool, write_conf)


def clean_error(text: str) -> bool:
    """One line naming the problem: hotvcb's own `error:`, not the catch-all for its bugs."""
    return "hotvcb: error:" in text and "internal error" not in text and "Traceback" not in text


# -- -l FILE: the log file ----------------------------------------------------------------------------
def test_log_file_that_is_a_folder_is_a_clean_error(tmp_path, capsys):
    """`-l /vmfs/volumes/ds/logs` (the folder ghettoVCB users keep their logs in, meant as
    `-l /vmfs/volumes/ds/logs/ghettoVCB.log`) must be refused by name before anything starts."""
    conf = tmp_path / "g.conf"
    conf.write_text("VM_BACKUP_VOLUME=/vmfs/volumes/backup/hotvcb\n")
    code = cli.main(["-m", "web", "-g", str(conf), "-l", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1
    assert clean_error(err) and str(tmp_path) in err, err


def fill_when(host, call: str, files: str, then: str = "") -> None:
    """The host's vim-cmd fills the file system of `files` (a shell word: a glob works) by appending
    zeros to them as `call` is asked for, then does `then` (or the call itself)."""
    wrap_tool(host, "vim-cmd", 'case "$*" in *%s*) for f in %s; do cat /dev/zero >>"$f"; done 2>/dev/null; %s;; esac'
              % (call, files, then or ":"))


@needs_root
@pytest.mark.parametrize("into", ["-l", "stdout", "-w"])
def test_full_log_file_system_mid_backup_leaves_no_snapshot(host, tmpfs, into):
    """ghettoVCB users log to the host's small /tmp ramdisk, with -l or as its docs' cron line does
    (`ghettoVCB.sh -f list > /tmp/ghettoVCB-backup-$(date +%s).log`), and hotvcb's own work dir, with
    its debug.log of every line, is /tmp/hotvcb.work. A log is a copy for the admin; losing it must not
    cost the VM its snapshot removal. The file system is filled (through the log file itself) the
    moment hotvcb asks for the snapshot."""
    host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    fs = str(tmpfs("logfs", "64k"))
    log = os.path.join(fs, "hotvcb.log")
    fill_when(host, "snapshot.create", os.path.join(fs, "hotvcb-*", "debug.log") if into == "-w" else '"%s"' % log)
    args = ["-m", "web", "-g", write_conf(host)] + {"-l": ["-l", log], "-w": ["-w", fs], "stdout": []}[into]
    with open(log, "a") as f:
        r = subprocess.run(on_host(host, "env", "PYTHONPATH=" + REPO, "/bin/python", "-m", "hotvcb", *args),
                           stdout=f if into == "stdout" else subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=180)
    out = (r.stdout or "") + r.stderr
    assert snapshot_names(host, "1") == [], out
    assert not [b for b in backups(host, "web") if b.endswith("-partial")], out
    assert "internal error" not in out and "Traceback" not in out, out


@needs_root
def test_full_log_file_system_while_the_vm_is_down_leaves_it_running(host, tmpfs):
    """ghettoVCB.conf with POWER_VM_DOWN_BEFORE_BACKUP=1 and the log on /tmp: the log fills while the
    guest is shut down for its backup (here a guest that goes off at once)."""
    host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    log = os.path.join(str(tmpfs("logfs", "64k")), "hotvcb.log")
    fill_when(host, "power.shutdown", '"%s"' % log, then='exec "$0.real" vmsvc/power.off "$2"')
    r = hotvcb(host, "-m", "web", "-g", write_conf(host, POWER_VM_DOWN_BEFORE_BACKUP=1), "-l", log)
    assert power(host, "1") == "Powered on", r.stdout + r.stderr


@needs_root
def test_ssh_session_dropped_mid_backup_leaves_no_snapshot(host, tmp_path):
    """An admin runs hotvcb by hand in an SSH session to the host and the session drops (laptop lid,
    VPN): the run gets SIGHUP and its stdout is gone. README: the snapshot is removed on every path.
    The snapshot is made, then (its vim-cmd call held until then) the reader goes and SIGHUP comes."""
    host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    held = str(tmp_path / "held")
    wrap_tool(host, "vim-cmd", 'case "$*" in *snapshot.create*) "$0.real" "$@"; rc=$?; touch "%s"; i=0; '
              'while [ -e "%s" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; exit $rc;; esac' % (held, held))
    run = subprocess.Popen(on_host(host, "env", "PYTHONPATH=" + REPO, "/bin/python", "-m", "hotvcb", "-m", "web",
                                   "-g", write_conf(host)), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: os.path.exists(held), what="the snapshot")
        run.stdout.close()
        run.send_signal(signal.SIGHUP)
        os.remove(held)
        err = run.communicate(timeout=120)[1].decode()
    finally:
        kill(run.pid)
    assert snapshot_names(host, "1") == [], err
    assert not [b for b in backups(host, "web") if b.endswith("-partial")], err
    assert "internal error" not in err and "Traceback" not in err, err


# -- ghettoVCB.conf as admins wrote it ---------------------------------------------------------------
def settings_of(tmp_path, line: str):
    conf = tmp_path / "ghettoVCB.conf"
    conf.write_text("VM_BACKUP_VOLUME=/vmfs/volumes/backup/hotvcb\n" + line + "\n")
    return config.load_settings(str(conf))[0]


@pytest.mark.parametrize("line, field", [
    ("EMAIL_SERVER=    # none yet", "email_server"),
    ("VM_SHUTDOWN_ORDER=\t# nothing to shut down", "vm_shutdown_order"),
])
def test_empty_value_with_a_comment_is_empty(tmp_path, line, field):
    """The shell (ghettoVCB `source`d the file) and config-reference.md ("`#` starts a comment") both
    read these as empty; hotvcb reads a mail server called '# none yet' (a mail attempt every run) and
    a VM '# nothing to shut down' to power off before the backups."""
    assert not getattr(settings_of(tmp_path, line), field)


@pytest.mark.parametrize("line, field, shell_value", [
    (r"EMAIL_USER_PASSWORD=pa\$\$word", "email_user_password", "pa$$word"),
    (r"VM_BACKUP_VOLUME=/vmfs/volumes/nas\ backups/vms", "vm_backup_volume", "/vmfs/volumes/nas backups/vms"),
])
def test_unquoted_backslash_escape_means_what_the_shell_made_of_it(tmp_path, line, field, shell_value):
    """The usual way to keep a `$` in a ghettoVCB password (or a blank in a path) without quotes: the
    shell assigned it without the backslash. hotvcb keeps the backslash and says nothing, so the mail
    login fails every night, or the backups go to a folder no one asked for."""
    assert getattr(settings_of(tmp_path, line), field) == shell_value


# -- vms_to_restore as ghettoVCB-restore read it ------------------------------------------------------
@pytest.mark.parametrize("line, name", [
    ('"/vmfs/volumes/backup/web/web-2026-12-01_21-00-01";"datastore1";"3"', None),
    ('/vmfs/volumes/backup/web/web-2026-12-01_21-00-01;datastore1;3;"Web (restored)"', "Web (restored)"),
])
def test_restore_line_with_quoted_fields(tmp_path, line, name):
    """Lines ghettoVCB-restore took: each field quoted on its own, or the new name in quotes as one
    writes a name with blanks. hotvcb refuses the first and would register the second as a VM whose
    display name (and folder) is `"Web (restored)"`, quotes included."""
    vms = tmp_path / "vms_to_restore"
    vms.write_text(line + "\n")
    (request,) = restorefile.read_restore_file(str(vms))
    assert isinstance(request, restorefile.RestoreRequest), str(request)
    assert (request.backup, request.target, request.disk_format, request.new_name) == (
        "/vmfs/volumes/backup/web/web-2026-12-01_21-00-01", "/vmfs/volumes/datastore1", "thin", name)


# -- backups ghettoVCB made ---------------------------------------------------------------------------
def ghettovcb_gz(volume, vm: str, stamp: str) -> str:
    """A backup as ghettoVCB.sh makes it with ENABLE_COMPRESSION=1: `tar -cz -C <VM dir> <VM>-<stamp>`
    right after the copies, then the folder removed; its STATUS.ok is written only when compression
    failed (`[[ ENABLE_COMPRESSION -eq 1 ]] && [[ COMPRESSED_OK -eq 1 ]] || echo ... > STATUS.ok`), so a
    good archive holds none."""
    folder = volume / vm / ("%s-%s" % (vm, stamp))
    folder.mkdir(parents=True)
    (folder / (vm + ".vmx")).write_text('displayName = "%s"\nscsi0:0.fileName = "%s.vmdk"\n' % (vm, vm))
    (folder / (vm + ".vmdk")).write_text('# Disk DescriptorFile\nversion=1\ncreateType="vmfs"\n'
                                         'RW 2048 VMFS "%s-flat.vmdk"\n' % vm)
    with open(str(folder / (vm + "-flat.vmdk")), "wb") as f:
        f.truncate(1 << 20)
    archive = str(folder) + ".gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(str(folder), arcname=folder.name)
    shutil.rmtree(str(folder))
    return archive


def test_compressed_ghettovcb_backup_counts_as_good(tmp_path, capsys):
    """migrating-from-ghettovcb.md: ghettoVCB's own backups "show as `unverifiable` (good, but without
    checksums) and count toward the rotation like hotvcb's". For an admin who ran ghettoVCB with
    ENABLE_COMPRESSION=1, every backup they have is called incomplete: `restore --latest` (good backups
    only) finds none, and they do not count toward the rotation."""
    archive = ghettovcb_gz(tmp_path / "vol", "web", "2026-12-01_21-00-01")
    conf = tmp_path / "ghettoVCB.conf"
    conf.write_text("VM_BACKUP_VOLUME=%s\n" % (tmp_path / "vol"))
    assert cli.main(["list", "--json", "-g", str(conf)]) == 0
    (backup,) = json.loads(capsys.readouterr().out)["backups"]
    assert backup["path"] == archive
    assert backup["good"] and backup["status"] == "unverifiable", backup


def cut_trailer(archive: str) -> None:
    """gzip's CRC and length gone: every tar block is still there, so tarfile alone reads it to its end."""
    os.truncate(archive, os.path.getsize(archive) - 8)


def short_flat(archive: str) -> None:
    """The archive of a run whose disk copy died half way (ghettoVCB compresses what it has, then
    writes no STATUS either way)."""
    folder = archive[: -len(".gz")]
    with tarfile.open(archive) as tar:
        tar.extractall(os.path.dirname(archive))
    os.truncate(os.path.join(folder, "web-flat.vmdk"), 1 << 19)
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=os.path.basename(folder))
    shutil.rmtree(folder)


@pytest.mark.parametrize("damage", [cut_trailer, short_flat])
def test_compressed_ghettovcb_backup_cut_short_is_not_good(tmp_path, capsys, damage):
    """With no STATUS to go by, what the archive holds decides; a backup that would restore a
    shorter disk than the VM had must never be the one `restore --latest` or the rotation counts."""
    archive = ghettovcb_gz(tmp_path / "vol", "web", "2026-12-01_21-00-01")
    damage(archive)
    conf = tmp_path / "ghettoVCB.conf"
    conf.write_text("VM_BACKUP_VOLUME=%s\n" % (tmp_path / "vol"))
    assert cli.main(["list", "--json", "-g", str(conf)]) == 0
    (backup,) = json.loads(capsys.readouterr().out)["backups"]
    assert not backup["good"] and backup["status"] in ("damaged", "incomplete"), backup


def test_archive_whose_tar_ends_where_a_read_does_is_still_checked_to_its_gzip_trailer(tmp_path):
    """tar's end read with the last of a 1 MiB read (targz's buffer) leaves gzip's trailer unread:
    a scan that stopped there would take an archive that lost its trailer for a whole one."""
    info = tarfile.TarInfo("web-2026-12-01_21-00-01/web.vmx")
    info.size = (1 << 20) - 3 * tarfile.BLOCKSIZE  # its header and tar's two end blocks make 1 MiB
    data = info.tobuf(format=tarfile.GNU_FORMAT) + bytes(info.size) + bytes(2 * tarfile.BLOCKSIZE)
    assert len(data) == 1 << 20
    archive = tmp_path / "web-2026-12-01_21-00-01.gz"
    archive.write_bytes(gzip.compress(data)[:-8])
    with pytest.raises(HostError, match="cannot read"):
        targz.scan(str(archive))


# -- per-VM files (-c) --------------------------------------------------------------------------------
@needs_root
def test_vmdk_files_to_backup_naming_a_disk_as_its_vmx_does(host, tmp_path):
    """A ghettoVCB per-VM file names a second disk on another datastore the only way ghettoVCB matched it:
    as the .vmx writes it. hotvcb skips that disk, warns that the VM "does not have" it while listing it
    among its disks, and calls the backup OK with one disk of two."""
    host.create_vm("db", "datastore1", [{"size": "1M"}, {"size": "1M", "datastore": "ds5"}], power="on")
    with open(host.real("/vmfs/volumes/datastore1/db/db.vmx")) as f:
        (second,) = [line.split("=", 1)[1].strip().strip('"') for line in f if line.startswith("scsi0:1.fileName")]
    assert second.startswith("/vmfs/volumes/")
    confdir = tmp_path / "vm-configs"
    confdir.mkdir()
    (confdir / "db").write_text('VMDK_FILES_TO_BACKUP="db.vmdk,%s"\n' % second)
    r = hotvcb(host, "-m", "db", "-c", confdir, "-g", write_conf(host), "-d", "dryrun")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "db_1.vmdk (scsi0:1) -> thin" in r.stdout, r.stdout


# -- the mail -----------------------------------------------------------------------------------------
def mail_report(tmp_path, srv, keys: str, failed: bool = False) -> None:
    """Mail a run's report as a ghettoVCB.conf whose mail lines are `keys` has it sent through `srv`."""
    conf = tmp_path / "ghettoVCB.conf"
    conf.write_text("EMAIL_LOG=1\nEMAIL_SERVER=%s\nEMAIL_SERVER_PORT=%d\nEMAIL_DELAY_INTERVAL=0\n%s"
                    % (srv.host, srv.port, keys))
    notify.send_report(config.load_settings(str(conf))[0], notify.Mail(
        host="esx01", job="nightly", status_line="ERROR: All VMs failed!" if failed else "All VMs backed up OK!",
        failed=failed, log_text="", report_text=""))


def test_failure_mail_goes_to_email_errors_to_when_email_to_is_empty(tmp_path):
    """A ghettoVCB.conf that mails only failures, only to on-call: `EMAIL_TO=` empty, `EMAIL_ERRORS_TO` set
    (ghettoVCB: `if EMAIL_ERRORS_TO != "" and LOG_STATUS != OK: if EMAIL_TO == "": EMAIL_TO=EMAIL_ERRORS_TO`).
    hotvcb sends nothing and logs nothing: the night the backups fail, no one hears of it."""
    from smtpserver import smtp_server

    with smtp_server() as srv:
        mail_report(tmp_path, srv, "EMAIL_TO=\nEMAIL_ERRORS_TO=oncall@example.org\n", failed=True)
    assert [m.rcpt_tos for m in srv.messages] == [["oncall@example.org"]]


def test_ghettovcb_mail_setup_still_delivers_through_a_relay_with_its_own_certificate(tmp_path, monkeypatch):
    """The internal relay ghettoVCB mailed through in plain text (no EMAIL_USER_NAME) also offers STARTTLS
    with a certificate of the company's own CA, as Exchange and Postfix do out of the box. Moved to
    hotvcb with the same ghettoVCB.conf, the mails stop; the one warning saying why is in the log that
    was to be mailed."""
    from smtpserver import make_cert, smtp_server

    monkeypatch.delenv(notify.CAFILE_ENV, raising=False)
    with smtp_server(tls="starttls", cert=make_cert(tmp_path)) as srv:
        mail_report(tmp_path, srv, "EMAIL_TO=admin@example.org\nEMAIL_USER_NAME=\nEMAIL_USER_PASSWORD=\n")
    assert [m.rcpt_tos for m in srv.messages] == [["admin@example.org"]]


# -- going back to ghettoVCB --------------------------------------------------------------------------
@needs_root
def test_going_back_to_ghettovcb_its_rotation_sees_only_backups(host):
    """migrating-from-ghettovcb.md: "you can go back at any time ... ghettoVCB reads the folders as its own".
    ghettoVCB's checkVMBackupRotation keeps `ls -t <VM dir> | grep "<VM>-[0-9]{4}-..._[0-9]{2}-..." | head -N`
    and deletes every other match: each record, written after its archive (and again by every verify),
    takes the place of a backup among the N kept, and a real backup is deleted early."""
    host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    r = hotvcb(host, "-m", "web", "-g", write_conf(host, ENABLE_COMPRESSION=1))
    assert r.returncode == 0, r.stdout + r.stderr
    counted = [e for e in os.listdir(backup_root(host, "web"))
               if re.search(r"web-[0-9]{4}-[0-9]{2}-[0-9]{2}_[0-9]{2}-[0-9]{2}-[0-9]{2}", e)]
    assert sorted(counted) == backups(host, "web"), counted


def test_a_gz_record_where_an_older_hotvcb_kept_it_is_read_moved_and_removed_with_its_backup(tmp_path):
    """Records an older hotvcb wrote beside their archives still count (a verify's finding of damage
    must not be lost), leave that place on their next write, and go with their backup."""
    shell = LocalShell()
    archive = ghettovcb_gz(tmp_path / "vol", "web", "2026-12-01_21-00-01")
    with open(archive + ".verify.json", "w") as f:
        json.dump({"verify_error": {"message": "bad block"}}, f)
    assert sidecar.read_gz_verify(shell, archive) == {"verify_error": {"message": "bad block"}}
    sidecar.write_gz_sidecar(shell, archive, {"archive_size": 1})
    assert sorted(os.listdir(str(tmp_path / "vol" / "web"))) == [sidecar.GZ_RECORDS, os.path.basename(archive)]
    assert sidecar.read_gz_verify(shell, archive) == {"archive_size": 1}
    rotation.condemn(shell, layout.from_path(shell, archive))
    assert os.listdir(os.path.join(str(tmp_path / "vol" / "web"), sidecar.GZ_RECORDS)) == []


def test_rotation_moves_records_kept_beside_and_drops_the_record_of_a_gz_ghettovcb_rotated_away(tmp_path):
    """Back from ghettoVCB, whose rotation removed an archive but never saw its record; and a record
    an older hotvcb kept beside its archive, which ghettoVCB's rotation would count, moved away."""
    shell, vol = LocalShell(), tmp_path / "vol"
    gone, kept, old = (ghettovcb_gz(vol, "web", "2026-11-%02d_21-00-01" % day) for day in (28, 29, 30))
    for archive in (gone, kept):
        sidecar.write_gz_sidecar(shell, archive, {"archive_size": os.path.getsize(archive)})
    with open(old + sidecar.GZ_VERIFY_SUFFIX, "w") as f:
        json.dump({"archive_size": os.path.getsize(old)}, f)
    os.unlink(gone)
    assert rotation.rotate(shell, str(vol), "web", 3, logging.getLogger("test")) == []
    assert sorted(os.listdir(str(vol / "web"))) == [sidecar.GZ_RECORDS] + sorted(os.path.basename(a)
                                                                           for a in (kept, old))
    assert sorted(os.listdir(os.path.dirname(sidecar.gz_record(kept)))) == [
        os.path.basename(sidecar.gz_record(a)) for a in (kept, old)]
    # moved with what it held (the rotation adds its verdict of the ghettoVCB archive:
    # ghettovcb_health.GHETTOVCB_VERDICT)
    assert sidecar.read_gz_verify(shell, old)["archive_size"] == os.path.getsize(old)
