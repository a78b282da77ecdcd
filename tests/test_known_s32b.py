"""Testers' notes (session 32, b): ghettoVCB's folders and list files, SSH mode's report, a dry run's log,
the rotation count's limit, what restore refuses, each pinned through the public command line."""

import os
import time

import pytest

from simhost import VOLUME, hotvcb, needs_root, write_conf
from sshsite import site  # noqa: F401  (the fixture)
from test_outsider_interop import ghettovcb_disk, ghettovcb_folder

OK = "Successfully completed backup"
SECOND = 'scsi0:1.deviceType = "scsi-hardDisk"\nscsi0:1.fileName = "web_1.vmdk"\nscsi0:1.present = "TRUE"\n'


def _volume(host):
    from pathlib import Path
    return Path(host.real(VOLUME))


# -- 1. a folder an rsync cut short: one refusal, no warning before it -------------------------------------

@needs_root
@pytest.mark.parametrize("dry", [[], ["-d", "1"]])
def test_restore_of_a_cut_short_folder_is_refused_before_anything_is_said(host, dry):
    """An rsync killed between a ghettoVCB backup's two disks left the newest folder with the .vmx and the
    first disk only; the older backup holds both. Restoring that folder by its path warned "disk scsi0:1
    ... is restored disconnected", then refused the folder as cut short: the admin read that the VM comes
    back without its data disk, then that it does not come back at all. One refusal, naming the cut, and
    nothing before it."""
    vol = _volume(host)
    whole = ghettovcb_folder(vol, "web", "2026-11-01_21-00-01", "STATUS.ok", OK, SECOND)
    ghettovcb_disk(whole, "web_1")
    cut = ghettovcb_folder(vol, "web", "2026-11-02_21-00-01", "STATUS.ok", OK, SECOND)
    r = hotvcb(host, "restore", *dry, "%s/web/%s" % (VOLUME, cut.name), "--datastore", "datastore1", "--name", "w2")
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "cut short" in out, out
    assert "disconnected" not in out, out


# -- 3. SSH mode: the -a/-m/-f override is in the mailed log ----------------------------------------------

@needs_root
def test_ssh_mode_mails_the_warning_that_m_overrode_f(site, tmp_path):
    """The nightly wrapper passes its usual `-f vms` and adds `-m web` for one more run of web: -m overrides
    -f, as in ghettoVCB, and the run warns so. Over SSH (the run on the host) that warning reached only the
    client's terminal and -l: the mail's log, the host's run's own, lacked it, and the admin reading the
    mail could not tell why db was not backed up."""
    smtpserver = pytest.importorskip("smtpserver", reason="aiosmtpd is needed for the mail tests")
    host = site.host
    for vm in ("web", "db"):
        host.create_vm(vm, "datastore1", [{"size": "1M"}], power="on")
    vms = tmp_path / "vms"
    vms.write_text("web\ndb\n")
    with smtpserver.smtp_server() as server:
        conf = write_conf(host, EMAIL_LOG=1, EMAIL_SERVER="127.0.0.1", EMAIL_SERVER_PORT=server.port,
                          EMAIL_TLS="none", EMAIL_TO="admin@example.org", EMAIL_DELAY_INTERVAL=0)
        r, _ = site.run("backup", "-f", vms, "-m", "web", "-g", conf)
        deadline = time.monotonic() + 10
        while not server.messages and time.monotonic() < deadline:
            time.sleep(0.1)
    assert r.returncode == 0, r.out
    assert "SSH mode: hotvcb cannot run" not in r.out, r.out  # the run went to the host
    (mail,) = server.messages
    body = mail.message.get_body(("plain",)).get_content()
    assert "-m web overrides -f %s" % vms in body, body
    assert body.count("overrides -f") == 1, body


# -- 4. a dry run the config asks for logs under the dry run's default name --------------------------------

@needs_root
def test_a_dry_run_asked_by_the_configs_log_level_keeps_its_log_apart(host, tmp_path):
    """A test config saying LOG_LEVEL=dryrun (ghettoVCB's way) makes every run with it a dry run; its cron line
    has no -l. Its default log was named as a real night's (`hotvcb-<time>-<pid>.log`), so a day of trying the
    config out pushed the real nights' logs out of the 20 kept; a dry run's is `hotvcb-dryrun-...`, kept apart."""
    host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    work = tmp_path / "w"
    work.mkdir()
    nights = ["hotvcb-2026-11-%02d_21-00-01-%d.log" % (day, 1000 + day) for day in range(1, 21)]  # the 20 kept
    for name in nights:
        (work / name).write_text("###### Final status: All VMs backed up OK! ######\n")
    r = hotvcb(host, "-m", "web", "-g", write_conf(host, LOG_LEVEL="dryrun"), "-w", work)
    assert r.returncode == 0, r.stdout + r.stderr
    logs = sorted(os.listdir(str(work)))
    assert [n for n in logs if n in nights] == nights, logs
    (dry,) = [n for n in logs if n not in nights]
    assert dry.startswith("hotvcb-dryrun-") and 'Logging output to "%s/%s"' % (work, dry) in r.stdout, r.stdout


# -- 5. the rotation count's upper limit is said -----------------------------------------------------------

@pytest.mark.parametrize("count", ["1000000000", "0"])
def test_a_rotation_count_out_of_range_is_refused_naming_both_limits(tmp_path, capsys, count):
    """VM_BACKUP_ROTATION_COUNT=1000000000 (keep everything, the admin meant) was refused as not "a whole number
    >= 1": it is one, and the admin could not tell what to write instead. The error names the range."""
    from hotvcb import cli

    conf = tmp_path / "ghettoVCB.conf"
    conf.write_text("VM_BACKUP_VOLUME=%s\nVM_BACKUP_ROTATION_COUNT=%s\n" % (tmp_path / "vol", count))
    assert cli.main(["list", "-g", str(conf)]) != 0
    err = capsys.readouterr().err
    assert "VM_BACKUP_ROTATION_COUNT='%s'" % count in err and "from 1 to 999999999" in err, err
    assert "Traceback" not in err


# -- 6. a ';' inside a name in a restore file -------------------------------------------------------------

@pytest.mark.parametrize("line", [
    "/vmfs/volumes/backup/hotvcb/a;b/a;b-2026-12-01_21-00-01;datastore1;3",  # the backup's folder
    "/vmfs/volumes/backup/hotvcb/web/web-2026-12-01_21-00-01;datastore1;3;Web;prod",  # the new name
    "repo:/vmfs/volumes/backup/repo#latest=db;2;datastore1;3",  # the VM of a latest= line
])
def test_a_semicolon_inside_a_name_in_a_restore_file_is_named_with_the_way_out(tmp_path, capsys, line):
    """ghettoVCB-restore split a line at every ';' (awk -F ';') and had no escape, nor has hotvcb's reading of
    it: a VM `a;b`, a new name `Web;prod`, a repository VM `db;2` cannot be written in such a line. The line
    was refused as "expected 3 or 4 fields ..., found 5", or as "disk format 'datastore1' is not valid", which
    sends the admin looking at the format. The error names the ';' and the command line that restores it."""
    from hotvcb import cli

    restore_file = tmp_path / "vms_to_restore"
    restore_file.write_text('"%s"\n' % line)
    code = cli.main(["restore", "-c", str(restore_file), "-d", "1"])
    out = capsys.readouterr()
    text = out.out + out.err
    assert code != 0 and "%s:1" % restore_file in text, text
    assert "';' inside a path or name" in text and "hotvcb restore" in text, text


# -- 2. a folder cut short beside compressed backups of the VM ---------------------------------------------

def test_a_ghettovcb_folder_cut_short_is_incomplete_where_a_gz_of_the_vm_holds_its_disk(tmp_path, capsys):
    """ghettoVCB compressed web's backups (ENABLE_COMPRESSION=1) until the admin turned it off; the first
    folder backup since was then rsynced to new storage and the rsync killed between web's two disks. A disk
    another backup of the VM holds and the folder lacks is a copy cut short (backup-format.md), but only
    folder backups were looked in: beside .gz backups alone the cut folder was "unverifiable" (good), so
    rotation counted it and `restore --latest` brought the VM back without its data disk."""
    import json
    import shutil
    import tarfile

    from hotvcb import cli

    vol = tmp_path / "vol"
    whole = ghettovcb_folder(vol, "web", "2026-11-01_21-00-01", "STATUS.ok", OK, SECOND)
    ghettovcb_disk(whole, "web_1")
    (whole / "STATUS.ok").unlink()  # ghettoVCB writes it after compressing, into the folder it removed
    with tarfile.open(str(whole) + ".gz", "w:gz") as tar:
        tar.add(str(whole), arcname=whole.name)
    shutil.rmtree(str(whole))
    cut = ghettovcb_folder(vol, "web", "2026-11-02_21-00-01", "STATUS.ok", OK, SECOND)
    conf = tmp_path / "ghettoVCB.conf"
    conf.write_text("VM_BACKUP_VOLUME=%s\nVM_BACKUP_ROTATION_COUNT=1\n" % vol)
    assert cli.main(["list", "--json", "-g", str(conf)]) == 0
    rows = {b["name"]: b for b in json.loads(capsys.readouterr().out)["backups"]}
    assert rows[whole.name + ".gz"]["good"], rows
    assert not rows[cut.name]["good"] and "cut short" in rows[cut.name]["reason"], rows[cut.name]


# -- 7. backups in the folders older writers named ---------------------------------------------------------

@pytest.mark.parametrize("vm, folder", [
    ("a%b", "a%b"),  # hotvcb before `%` was escaped in every name
    ("a\\b", "a%5cb"),  # ghettoVCB.sh: getallvms' name, hostd writing `\` as %5c
    ("50% a\\b", "50%25 a%5cb"),
])
def test_backups_in_a_folder_an_older_writer_named_are_the_vms(tmp_path, capsys, vm, folder):
    """Old hotvcb releases kept VM `a%b`'s backups in `a%b/a%b-<time>` (now `a%25b/...`), and ghettoVCB
    named a VM's folder after getallvms' name, where hostd writes `\\` as `%5c` (`a%5cb` for `a\\b`). Such a
    folder is no name's folder today: `list` showed none of its backups, `restore --latest` found no backup
    of the VM, and rotation never counted or removed them. They are the VM's backups, found where they are."""
    import io
    import json

    from hotvcb import cli
    from hotvcb.localshell import LocalShell
    from hotvcb.runlog import RunLog
    from hotvcb.store import rotation

    vol = tmp_path / "vol"
    old = [ghettovcb_folder(vol, folder, "2026-11-0%d_21-00-01" % day, "STATUS.ok", OK) for day in (1, 2)]
    conf = tmp_path / "ghettoVCB.conf"
    conf.write_text("VM_BACKUP_VOLUME=%s\n" % vol)
    assert cli.main(["list", "--json", "-g", str(conf)]) == 0
    rows = json.loads(capsys.readouterr().out)["backups"]
    assert sorted((r["vm"], r["name"]) for r in rows) == [(vm, b.name) for b in old], rows
    assert cli.main(["list", "--json", "-g", str(conf), vm]) == 0
    assert [r["name"] for r in json.loads(capsys.readouterr().out)["backups"]] == [b.name for b in old]
    removed = rotation.rotate(LocalShell(), str(vol), vm, 1, RunLog(stream=io.StringIO()), remove=lambda path: None)
    assert [os.path.basename(p) for p in removed] == [old[0].name], removed


@needs_root
def test_restore_latest_finds_a_backup_in_ghettovcbs_folder_of_a_vm_with_a_backslash(host):
    """The VM `a\\b`'s only backups are ghettoVCB's, in `a%5cb/`: `restore --latest` said there is no backup."""
    ghettovcb_folder(_volume(host), "a%5cb", "2026-11-01_21-00-01", "STATUS.ok", OK)
    r = hotvcb(host, "restore", "-d", "1", "--latest", "a\\b", "-g", write_conf(host), "--datastore", "datastore1",
               "--name", "ab2")
    assert r.returncode == 0 and "%s/a%%5cb/a%%5cb-2026-11-01_21-00-01" % VOLUME in r.stdout, r.stdout + r.stderr
