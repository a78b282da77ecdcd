"""Outside test, session 31: what the admin sees after a night's run - the mail of the log (a real SMTP
server: aiosmtpd), the -l log file, the final status line, `-d dryrun` and the exit codes the README
documents. A simulated ESXi host per test where one is needed, tiny disks, the rest in-process. Each
defect is a strict xfail until fixed."""

import json
import os
import time

import pytest

from hotvcb import cli
from simhost import hotvcb, needs_root, write_conf

smtpserver = pytest.importorskip("smtpserver", reason="aiosmtpd is needed for the mail tests")


def _mail_keys(server, **extra):
    return smtpserver.mail_keys(server, EMAIL_ERRORS_TO="oncall@example.org", **extra)


def _final_status(text):
    lines = [ln for ln in text.splitlines() if "###### Final status: " in ln]
    assert lines, text[-2000:]
    return lines[-1].split("###### Final status: ", 1)[1].rsplit(" ######", 1)[0]


# -- 1. the dry run that finds a problem -------------------------------------------------------------------

@needs_root
@pytest.mark.parametrize("vms", [("gone",), ("web", "gone")], ids=["only-a-typo", "one-typo-of-two"])
def test_a_dry_run_that_finds_a_typo_does_not_report_a_failed_backup_night(host, tmp_path, vms):
    """A colleague tries the new job by hand at 15:00 with `-d dryrun`, with the production config that has
    EMAIL_LOG=1 and EMAIL_ERRORS_TO=on-call. The VM list has a typo. Nothing is snapshotted or copied - yet
    the on-call phone gets 'hotvcb esxi01 hotvcb: ERROR: All VMs failed!' (or 'ERROR: Only some of the
    VMs backed up!', which says some WERE backed up), the log's final status and the JSON report say the
    same, and nothing in the subject or the status line says this was only a dry run. ghettoVCB's dry run
    always ended 'OK, only a dryrun.'; hotvcb rightly reports the typo, but its final status must say it
    was a dry run (e.g. 'ERROR: dryrun: ...'), so that nobody takes it for a night whose backups failed."""
    host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    report = tmp_path / "report.json"
    with smtpserver.smtp_server() as server:
        conf = write_conf(host, **_mail_keys(server))
        args = [a for vm in vms for a in ("-m", vm)]
        r = hotvcb(host, *args, "-g", conf, "-d", "dryrun", "-w", tmp_path / "w", "--json-report", report)
        mails = smtpserver.wait_mail(server)
    assert r.returncode != 0, r.stdout[-1500:]  # the typo is found (as hotvcb means it to be)
    status = _final_status(r.stdout)
    assert "dry" in status.lower(), "final status of a dry run: %r" % status
    assert json.loads(report.read_text())["dry_run"] is True
    assert "dry" in json.loads(report.read_text())["status"].lower()
    [mail] = mails
    assert "dry" in str(mail.message["Subject"]).lower(), mail.message["Subject"]


# -- 2. the -l log file of a run that the config stops ------------------------------------------------------

@pytest.mark.parametrize("problem", ["bad-value", "missing-config"])
def test_a_night_stopped_by_the_config_leaves_its_error_in_the_log_file(tmp_path, capsys, problem):
    """The cron line is ghettoVCB's habit: `hotvcb -f vms -g hotvcb.conf -l /var/log/hotvcb.log
    >/dev/null 2>&1`. A colleague sets VM_BACKUP_ROTATION_COUNT=0 (or the config's datastore is not
    mounted after a reboot). Every night since, hotvcb exits 1 - and the log file the admin reads has no
    line at all for those nights: not the error, not even that a run was tried; the last thing in it is
    the last good night's 'All VMs backed up OK!'. A problem found after -l is checked (a missing VM list,
    the run lock) is written there; the config's must be too (the file is named on the command line,
    no config needed to open it)."""
    log = tmp_path / "logs" / "hotvcb.log"
    conf = tmp_path / "hotvcb.conf"
    if problem == "bad-value":
        conf.write_text("VM_BACKUP_VOLUME=/vmfs/volumes/backup/hotvcb\nVM_BACKUP_ROTATION_COUNT=0\n")
    code = cli.main(["-m", "web", "-g", str(conf), "-l", str(log)])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "Traceback" not in err
    text = log.read_text() if log.exists() else ""
    assert ("ROTATION_COUNT" if problem == "bad-value" else str(conf)) in text, (
        "stderr said: %s; the log file holds: %r" % (err.strip(), text))


# -- 3. a cron line without -l ------------------------------------------------------------------------------

@needs_root
def test_a_ghettovcb_cron_line_without_l_still_leaves_a_log_file(host, tmp_path):
    """The migration guide says the move is 'a change of the one command your cron line runs'. This admin's
    cron line never had -l: `ghettoVCB.sh -f vms -g ghettoVCB.conf > /dev/null 2>&1`, because ghettoVCB
    always wrote its log to /tmp/ghettoVCB-<date>-<pid>.log ('Logging output to "..." ...', its usage:
    'Output will log to /tmp/ghettoVCB.log'), where the admin looks the morning after. With hotvcb in
    that line nothing is kept anywhere: stdout goes to /dev/null and the work folder's debug.log is
    removed when the run ends, so a failed night leaves no trace to read. Either a default log file
    (named on stdout, as ghettoVCB did), or the migration guide must say -l is now needed."""
    host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    conf = write_conf(host)
    started = time.time()
    r = hotvcb(host, "-m", "web", "-g", conf, "-w", tmp_path / "w")
    assert r.returncode == 0, r.stdout[-1500:]
    candidates = [w.strip('"\'.,;: ') for w in (r.stdout + r.stderr).split() if w.startswith(("/", '"/'))]
    logs = [p for p in candidates if os.path.isfile(p) and os.path.getmtime(p) >= started - 1
            and not p.endswith((".conf", ".vmdk", ".vmx"))]
    kept = [p for p in logs if "Final status: All VMs backed up OK!" in open(p, errors="replace").read()]
    assert kept, "no log file of this run is named or kept:\n" + r.stdout[:600]


# -- 4. Ctrl-\ -----------------------------------------------------------------------------------------------

@needs_root
def test_ctrl_backslash_during_a_copy_ends_as_an_interrupted_run(host, tmp_path):
    """The admin runs the job by hand in an SSH session, sees it copy the wrong VM and presses Ctrl-\\
    (SIGQUIT: the 'really quit' key many admins use when Ctrl-C seems slow). ghettoVCB trapped QUIT
    with HUP, INT, PIPE and TERM and exited 2. hotvcb handles INT, TERM and HUP, but dies of QUIT on the
    spot: no final status line, no mail, the VM left running on hotvcb's snapshot (its delta growing)
    and the run lock left for the next run to take over. README: exit 2 'interrupted by a signal',
    and no snapshot is ever left behind."""
    import signal

    from simhost import hotvcb_background, lock_pid, ours, wait_for, wrap_tool

    import resource

    vmid = host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    wrap_tool(host, "vmkfstools", "sleep 3", layer="usr_sbin")
    conf = write_conf(host)
    core = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (0, core[1]))  # a QUIT-killed python must not dump core in the repo
    try:
        run = hotvcb_background(host, "-m", "web", "-g", conf, "-w", tmp_path / "w")
    finally:
        resource.setrlimit(resource.RLIMIT_CORE, core)
    try:
        wait_for(lambda: ours(host, vmid), what="hotvcb's snapshot")
        time.sleep(0.5)
        run.send_signal(signal.SIGQUIT)
        out, _ = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    # leave the host clean whatever happened (a QUIT-killed run's vmkfstools may still be sleeping)
    try:
        assert run.returncode == 2, "exit %s:\n%s" % (run.returncode, out[-1500:])
        assert "Final status: ERROR: interrupted" in out, out[-1500:]
        assert ours(host, vmid) == [] and lock_pid(host) is None
    finally:
        time.sleep(3.5)
        hotvcb(host, "cleanup", "-g", conf)


# -- 5. the job name in the subject -----------------------------------------------------------------------

def test_a_job_name_with_an_umlaut_is_refused_with_a_message_that_says_why(tmp_path, capsys):
    """The admin names the job for the mail's subject: `-j Nächtlich` (README: 'letters, digits, `.`, `_`
    and `-`', 'a word of the log's HOST line and the mail's subject'). hotvcb refuses it: "job name
    'Nächtlich': use letters, digits, '.', '_' and '-' ..." - which is what the admin did. The rule is
    ASCII only (the name becomes a crontab tag and a systemd unit name); the message must say so (or name
    the character it refuses), so the admin is not left guessing what is wrong with a word of letters."""
    conf = tmp_path / "g.conf"
    conf.write_text("VM_BACKUP_VOLUME=/vmfs/volumes/backup/hotvcb\n")
    with pytest.raises(SystemExit) as stop:
        cli.main(["-m", "web", "-g", str(conf), "-j", "Nächtlich", "-d", "dryrun"])
    err = capsys.readouterr().err
    assert stop.value.code not in (0, None), err
    assert "Traceback" not in err
    said = err.lower()
    assert "ascii" in said or "a-z" in said or "'ä'" in said or "\\xe4" in said, err


# -- 6. the log file on the backup share the run mounts ----------------------------------------------------

def _nfs_conf(host, **keys):
    values = dict(VM_BACKUP_VOLUME="/vmfs/volumes/unused", ENABLE_NON_PERSISTENT_NFS=1, UNMOUNT_NFS=1,
                  NFS_SERVER="10.0.0.5", NFS_MOUNT="/export/backups", NFS_LOCAL_NAME="nfs_backup",
                  NFS_VM_BACKUP_DIR="hotvcb", NFS_VERSION="nfs")
    values.update(keys)
    return write_conf(host, **values)


SHARE_LOG = "/vmfs/volumes/nfs_backup/logs/hotvcb.log"


@needs_root
@pytest.mark.parametrize("option,path", [("-l", SHARE_LOG),
                                         ("--json-report", "/vmfs/volumes/nfs_backup/reports/hotvcb.json")])
def test_a_log_file_on_the_nfs_share_the_run_mounts_does_not_stop_the_backup(host, tmp_path, option, path):
    """ghettoVCB's usage says 'consider logging to local or remote datastore to persist logs'; this admin
    backs up to a non-persistent NFS share (ENABLE_NON_PERSISTENT_NFS=1, NFS_LOCAL_NAME=nfs_backup) and
    logs onto it: `-l /vmfs/volumes/nfs_backup/logs/hotvcb.log`, as under ghettoVCB, where the lines
    reached the file once the share was mounted. hotvcb makes the log's folder first - a plain folder
    /vmfs/volumes/nfs_backup/logs, before the share is there - and then cannot mount the share under that
    name: 'cannot mount NFS ... already exists', exit 1, no backup. The folder stays, so every later run
    fails the same way, with or without -l. (`--json-report` onto the share: the same.) A log path under /vmfs/volumes must not be made where no
    datastore is (as VM_BACKUP_VOLUME's is refused), and the share's own log path must work."""
    host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    conf = _nfs_conf(host)
    before = sorted(os.listdir(host.real("/vmfs/volumes")))
    r = hotvcb(host, "-m", "web", "-g", conf, "-w", tmp_path / "w", option, path)
    out = r.stdout + r.stderr
    assert "Traceback" not in out
    if r.returncode != 0:  # refusing the path is acceptable, if it says why (and names the file)
        assert path in out and "cannot mount NFS" not in out, out[-1500:]
    else:
        assert "Final status: All VMs backed up OK!" in r.stdout, out[-1500:]
    made = sorted(set(os.listdir(host.real("/vmfs/volumes"))) - set(before))
    assert made == [], "left in /vmfs/volumes: %s\n%s" % (made, out[-1500:])
    again = hotvcb(host, "-m", "web", "-g", conf, "-w", tmp_path / "w")  # the next night, no -l
    assert again.returncode == 0, (again.stdout + again.stderr)[-1200:]


@needs_root
def test_a_dry_run_with_its_log_on_the_nfs_share_breaks_no_later_run(host, tmp_path):
    """Migration step 2: dry-run the existing ghettoVCB job, which logs onto the backup share
    (`-l /vmfs/volumes/nfs_backup/logs/hotvcb.log`). The dry run says 'DRY RUN: nothing will be
    changed' and 'OK, only a dryrun.' - and has made the folder /vmfs/volumes/nfs_backup/logs on the
    host, where the share is to be mounted. That night's real run (its cron line has no -l at all) ends
    'cannot mount NFS 10.0.0.5:/export/backups as nfs_backup: ... already exists', exit 1, and so does
    every run after it, until someone finds and removes the folder. A dry run must change nothing."""
    host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    conf = _nfs_conf(host)
    before = sorted(os.listdir(host.real("/vmfs/volumes")))
    dry = hotvcb(host, "-m", "web", "-g", conf, "-w", tmp_path / "w", "-d", "dryrun", "-l", SHARE_LOG)
    assert "Traceback" not in dry.stdout + dry.stderr
    made = sorted(set(os.listdir(host.real("/vmfs/volumes"))) - set(before))
    real = hotvcb(host, "-m", "web", "-g", conf, "-w", tmp_path / "w")
    assert real.returncode == 0, "the dry run made %s in /vmfs/volumes; the real run:\n%s" % (
        made, (real.stdout + real.stderr)[-1200:])
    assert made == [], made


# -- 7. LOG_LEVEL=dryrun in the config ------------------------------------------------------------------------

@needs_root
def test_a_ghettovcb_conf_that_says_log_level_dryrun_does_not_start_a_real_backup(host, tmp_path):
    """The admin's test config for ghettoVCB has LOG_LEVEL=dryrun: ghettoVCB sourced the -g file after
    reading its options, so that line made every run with it a dry run, whatever -d said - a safe file
    to try things with (here POWER_VM_DOWN_BEFORE_BACKUP=1). The migration guide promises 'your files
    mean what they meant to ghettoVCB'; hotvcb warns 'LOG_LEVEL is a ghettoVCB key hotvcb does not use,
    ignored' and then shuts the production VM down, snapshots and copies it at 14:00. A key hotvcb does
    not take that asked for a dry run must not turn into a real run: dry-run, or refuse before any change."""
    from simhost import backups, power

    vmid = host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    conf = write_conf(host, LOG_LEVEL="dryrun", POWER_VM_DOWN_BEFORE_BACKUP=1, ITER_TO_WAIT_SHUTDOWN="5s",
                      ENABLE_HARD_POWER_OFF=1)
    r = hotvcb(host, "-m", "web", "-g", conf, "-w", tmp_path / "w")
    assert "Traceback" not in r.stdout + r.stderr
    assert backups(host, "web") == [], "a real backup was made:\n" + r.stdout[-1500:]
    assert "Powered on" in power(host, vmid)
    assert "powering off" not in r.stdout.lower() and "shut" not in r.stdout.lower(), r.stdout[-1500:]
