"""Outside test, stop 29: an admin running hotvcb day to day - `schedule`, the mail of the log, the run
lock, log files, the final status and exit codes, and SSH mode (host keys, identities, dropped
connections, a host without python). One simulated host and one loopback sshd for the whole file where
a host is needed; tiny disks. Each defect is a strict xfail until fixed."""

import json
import os
import re
import signal
import shutil
import subprocess
import sys

import pytest

from cronsite import crontab_on_path
from simhost import REPO, copying, lock_pid, needs_root, next_second, ours, wait_for, write_conf
from sshd import needs_sshd
from sshsite import web_host_behind_sshd


class Lab:
    """The module's host (VM `web`, 1 MiB, on), its sshd and the client's argv."""

    def __init__(self, host, sshd, tmp):
        self.host, self.sshd, self.tmp = host, sshd, tmp
        self.folder = tmp / "onhost"  # HOTVCB_HOST_FOLDER: the host's folder of builds

    def env(self, **extra):
        return dict(os.environ, PYTHONPATH=REPO, HOTVCB_HOST_FOLDER=str(self.folder), **extra)

    def argv(self, *args, identity=None, known_hosts=None):
        ssh = self.sshd.cli_args(known_hosts)
        if identity is not None:
            ssh[ssh.index("--identity") + 1] = str(identity)
        return [sys.executable, "-m", "hotvcb"] + ssh + [str(a) for a in args]

    def run(self, *args, identity=None, known_hosts=None, env=None, timeout=300):
        r = subprocess.run(self.argv(*args, identity=identity, known_hosts=known_hosts), capture_output=True,
                           text=True, timeout=timeout, env=env or self.env(), cwd=REPO)
        r.out = r.stdout + r.stderr
        return r


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("esxisim needs root")
    from sshd import available

    if not available():
        pytest.skip("needs OpenSSH sshd")
    tmp = tmp_path_factory.mktemp("s29ops")
    with web_host_behind_sshd(tmp) as (host, sshd):
        yield Lab(host, sshd, tmp)


def _final(text):
    return [l.split("Final status: ", 1)[1] for l in text.splitlines() if "Final status: " in l]


# -- SSH mode: the identity file --------------------------------------------------------------------------
@needs_root
@needs_sshd
def test_a_missing_identity_file_is_named_not_blamed_on_the_hosts_authorized_keys(lab, tmp_path):
    """The admin's cron job passes `--identity /root/.ssh/esxi01` but the key was made as
    `/root/.ssh/esxi01_rsa` (or was lost with a home folder restore). ssh says 'Identity file ... not
    accessible: No such file or directory', but hotvcb reports only ssh's last line, 'Permission denied
    (publickey)', and tells the admin to put the key on the host and 'pass --identity FILE' - which they
    did. They go and check authorized_keys on the ESXi host instead of their own typo. The error should
    name the identity file and say that it is not there."""
    conf = write_conf(lab.host, name="s29-ident.conf")
    missing = tmp_path / "esxi01_key"
    r = lab.run("backup", "-m", "web", "-g", conf, identity=missing)
    assert r.returncode == 1, r.out
    [status] = _final(r.out)
    assert str(missing) in status, status


@needs_root
@needs_sshd
def test_an_identity_file_with_loose_permissions_is_named_as_the_cause(lab, tmp_path):
    """The key was copied to the backup box with `cp` under umask 022 (mode 0644). ssh ignores it
    ('WARNING: UNPROTECTED PRIVATE KEY FILE! Permissions 0644 for ... are too open'), and hotvcb's error is
    only 'SSH login to root@... refused (Permission denied (publickey).)': put the public key on the host
    and pass --identity. The key is on the host and --identity is passed; the one line that says what is
    wrong (and that `chmod 600` fixes it) never reaches the admin or the alert mail."""
    conf = write_conf(lab.host, name="s29-ident.conf")
    loose = tmp_path / "esxi01_key"
    shutil.copy(lab.sshd.identity, str(loose))
    os.chmod(str(loose), 0o644)
    r = lab.run("backup", "-m", "web", "-g", conf, identity=loose)
    assert r.returncode == 1, r.out
    [status] = _final(r.out)
    assert str(loose) in status, status


# -- SSH mode: whose name the report carries --------------------------------------------------------------
@needs_root
@needs_sshd
def test_a_file_by_file_run_reports_the_esxi_host_not_the_linux_box(lab, tmp_path):
    """One Linux box backs up three ESXi 6.x hosts (file by file, their python is too old). Every mail
    reads `hotvcb backupbox <job>: ...` and every --json-report says `"host": "backupbox"`: the Linux box's
    own name, for every host. The same run on the host (ESXi 7) says `hotvcb esxi01 ...`, as the docs
    promise (`hotvcb <host> <job>: <final status>`). The monitoring that files reports by their host
    files all three hosts' reports under the backup box."""
    report = tmp_path / "r.json"
    conf = write_conf(lab.host, name="s29-fbf.conf")
    r = lab.run("backup", "--file-by-file", "-m", "web", "-g", conf, "--json-report", report)
    assert r.returncode == 0, r.out
    data = json.loads(report.read_text())
    assert data["host"] != os.uname().nodename, data["host"]
    assert data["host"] in ("esxi01", "127.0.0.1", lab.sshd.target), data["host"]


# -- schedule: the job that runs is the job that was tried -----------------------------------------------
@pytest.fixture
def fake_crontab(tmp_path):
    """A `crontab` first on PATH keeping the Linux box's table in a file: (table, PATH)."""
    return crontab_on_path(tmp_path)


def _as_cron_runs(line, home, folder):
    """Run a crontab line's command as cron does: `sh -c`, a bare environment (cron passes HOME, LOGNAME,
    SHELL and PATH=/usr/bin:/bin), `%` unescaped. (`folder`: the test's own HOTVCB_HOST_FOLDER, so the run
    keeps its build where this file's others do.)"""
    command = line.split(None, 5)[5].rsplit(" # hotvcb:", 1)[0].replace("\\%", "%")
    env = {"HOME": str(home), "LOGNAME": "root", "SHELL": "/bin/sh", "PATH": "/usr/bin:/bin",
           "HOTVCB_HOST_FOLDER": str(folder)}
    return subprocess.run(["/bin/sh", "-c", command], env=env, cwd=str(home), capture_output=True, text=True,
                          timeout=300)


@needs_root
@needs_sshd
def test_the_scheduled_job_mails_through_the_relay_the_admins_run_mailed_through(lab, fake_crontab, tmp_path):
    """operations.md: 'Server certificates are verified (HOTVCB_SMTP_CAFILE names another CA bundle)'; it is
    an environment variable only, no config key. The admin's relay has the company's own CA and wants a
    login, so they export HOTVCB_SMTP_CAFILE, run the backup by hand - report mailed - and schedule exactly
    that job (`schedule install ... -- -m web -g conf`, 'whatever can be run can be scheduled'). The cron
    line carries no trace of the CA file: every night the backup runs and its mail is refused ('certificate
    verify failed'), said only in the log file no one reads, since the mail was how they read it."""
    smtpserver = pytest.importorskip("smtpserver", reason="aiosmtpd is needed")
    table, path = fake_crontab
    cert = smtpserver.make_cert(tmp_path)
    with smtpserver.smtp_server(tls="starttls", cert=cert, users={"backup": "s3cret"}) as srv:
        conf = write_conf(lab.host, name="s29-ca.conf", EMAIL_LOG=1, EMAIL_SERVER="127.0.0.1",
                          EMAIL_SERVER_PORT=srv.port, EMAIL_TLS="starttls", EMAIL_TO="admin@example.com",
                          EMAIL_USER_NAME="backup", EMAIL_USER_PASSWORD="s3cret")
        env = lab.env(PATH=path, HOTVCB_SMTP_CAFILE=str(cert[0]))
        by_hand = lab.run("backup", "-m", "web", "-g", conf, env=env)
        assert by_hand.returncode == 0 and len(srv.messages) == 1, by_hand.out  # the job, tried: mailed
        log = tmp_path / "cron.log"
        r = lab.run("schedule", "install", "--platform", "linux", "--cron", "0 21 * * *", "--job", "ca",
                    "--log", log, "--", "-m", "web", "-g", conf, env=env)
        assert r.returncode == 0, r.out
        [line] = [l for l in table.read_text().splitlines() if l.endswith("# hotvcb:ca")]
        next_second()  # backup names have one-second resolution
        ran = _as_cron_runs(line, tmp_path, lab.folder)
        text = log.read_text() if log.exists() else ran.stdout + ran.stderr
        assert "Final status: All VMs backed up OK!" in text, text
        assert len(srv.messages) == 2, [l for l in text.splitlines() if "e-mail" in l]


@needs_root
def test_a_step_from_a_start_minute_runs_on_esxi_as_the_check_understood_it(lab):
    """The admin wants a backup of a small VM every quarter hour, offset from other jobs, and writes
    `--cron "5/15 * * * *"` as on their Linux boxes. hotvcb's check expands it as minutes 5, 20, 35 and 50
    (cron.py: '"5/15" means 5-max/15, as in vixie cron') and installs it into ESXi's crontab as written.
    busybox crond (ParseField) collapses a single number to a one-value range before it reads the step:
    `5/15` there is minute 5 only, so the job runs once an hour instead of four times, and nothing ever
    says so. The cron.py docstring promises that what busybox would not run the same way is refused; a
    form busybox reads alike (`5-59/15`) would do as well."""
    from simhost import hotvcb

    conf = write_conf(lab.host, name="s29-cron.conf")
    try:
        r = hotvcb(lab.host, "schedule", "install", "--cron", "5/15 * * * *", "--job", "quarter", "--",
                   "-m", "web", "-g", conf)
        if r.returncode != 0:
            assert "5/15" in r.stderr and "Traceback" not in r.stderr, r.stderr  # refused, naming it: fine
            return
        [line] = [l for l in r.stdout.splitlines() if l.startswith("installed job quarter: ")]
        assert line.split()[3] != "5/15", line  # busybox: minute 5 only
    finally:
        hotvcb(lab.host, "schedule", "remove", "--job", "quarter")


# -- the mail ---------------------------------------------------------------------------------------------
def _html(message):
    [part] = [p for p in message.walk() if p.get_content_type() == "text/html"]
    return part.get_content()


@needs_root
def test_the_mail_of_a_run_that_left_a_vm_down_is_not_coloured_ok(lab):
    """COLD_SNAPSHOT=1, and the VM does not come back after its snapshot (hostd refuses the power-on). The
    docs: such a VM is the first line of the report and the mail's subject (`VM DOWN: ...`) and fails the
    VM's result - and the run's status is `VM DOWN: web; ERROR: All VMs failed!`, exit 6. The HTML mail the
    admin reads on their phone shows that headline in green, the colour of a good night (only a status
    starting with ERROR or WARNING is coloured), beside a red ERROR row: a production VM is down and the
    headline looks like every other morning."""
    smtpserver = pytest.importorskip("smtpserver", reason="aiosmtpd is needed")
    from simhost import hotvcb, vim

    [vmid] = [k for k in lab.host.state()["vms"] if lab.host.display_name(k) == "web"]
    with smtpserver.smtp_server() as srv:
        conf = write_conf(lab.host, name="s29-down.conf", COLD_SNAPSHOT=1, EMAIL_LOG=1, EMAIL_SERVER="127.0.0.1",
                          EMAIL_SERVER_PORT=srv.port, EMAIL_TLS="none", EMAIL_TO="admin@example.com")
        lab.host.set_fault("power.on", "refuse")
        try:
            next_second()
            r = hotvcb(lab.host, "-m", "web", "-g", conf)
        finally:
            lab.host.clear_faults()
            vim(lab.host, "vmsvc/power.on", vmid)
    assert r.returncode != 0 and "Final status: VM DOWN: web; " in r.stdout, r.stdout
    [mail] = srv.messages
    assert mail.message["Subject"].startswith("hotvcb esxi01 hotvcb: VM DOWN: web"), mail.message["Subject"]
    page = _html(mail.message)
    headline = re.search(r'<h2 style="color:(#[0-9a-f]{6})">VM DOWN', page)
    error_cell = re.search(r'<td style="color:(#[0-9a-f]{6});font-weight:bold">ERROR</td>', page)
    assert headline and error_cell, page
    assert headline.group(1) == error_cell.group(1), page[:400]


# -- SSH mode: the run on the host dies -------------------------------------------------------------------
@needs_root
@needs_sshd
def test_a_run_killed_on_the_host_says_what_it_may_have_left(lab, tmp_path):
    """SSH mode, on the host: ESXi kills the host's python mid-copy (its memory group ran out, or an
    operator's kill -9). The Linux box ends with `ERROR: the run on the host ended without its report (exit
    137)`, exit 1 - the code the README gives to a usage, config or lock problem 'no VM was started' - and a
    --json-report with no VM in it. The VM still carries hotvcb's snapshot (its deltas growing until the next
    run), and nothing the admin is shown says so or names `hotvcb cleanup`. Either the client cleans up
    over the connection it still has, or it says what may be left and how to remove it."""
    from simhost import hotvcb

    [vmid] = [k for k in lab.host.state()["vms"] if lab.host.display_name(k) == "web"]
    conf = write_conf(lab.host, name="s29-kill.conf")
    report = tmp_path / "r.json"
    lab.host.set_fault("clone.delay", "30")
    proc = subprocess.Popen(lab.argv("backup", "-m", "web", "-g", conf, "--json-report", report),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=lab.env(), cwd=REPO)
    try:
        wait_for(lambda: copying(lab.host, "web") and lock_pid(lab.host), 60, "the copy on the host")
        os.kill(lock_pid(lab.host), signal.SIGKILL)  # the hotvcb process on the host
        out, _ = proc.communicate(timeout=120)
    finally:
        lab.host.clear_faults()
        if proc.poll() is None:
            proc.kill()
    try:
        assert proc.returncode != 0 and "Traceback" not in out, out
        left = ours(lab.host, vmid)
        assert not left or "cleanup" in out, (left, _final(out))
    finally:
        hotvcb(lab.host, "cleanup", "-g", conf)  # the file's other tests want the VM and the lock free again


@needs_root
def test_email_alert_reaches_the_admin_when_the_vm_list_is_gone(lab):
    """The job, installed months ago: `-f /vmfs/volumes/nas01/vms_to_backup -g /vmfs/volumes/datastore1/hotvcb.conf`
    with EMAIL_ALERT=1 - 'mail only when the run was not all OK'. The NAS datastore holding the list is not
    mounted after a reboot: every night the run stops at 'cannot read VM list file ...', exit 1, said only in
    the cron log on the host; no alert is mailed, although the config with the mail settings reads fine
    (a run refused by the run lock does mail its alert). The first the admin hears is the restore that
    finds no backup newer than the reboot."""
    smtpserver = pytest.importorskip("smtpserver", reason="aiosmtpd is needed")
    from simhost import hotvcb

    with smtpserver.smtp_server() as srv:
        conf = write_conf(lab.host, name="s29-alert.conf", EMAIL_ALERT=1, EMAIL_SERVER="127.0.0.1",
                          EMAIL_SERVER_PORT=srv.port, EMAIL_TLS="none", EMAIL_TO="admin@example.com")
        r = hotvcb(lab.host, "-f", "/vmfs/volumes/nas01/vms_to_backup", "-g", conf)
        assert r.returncode == 1 and "/vmfs/volumes/nas01/vms_to_backup" in r.stdout + r.stderr, r.stdout + r.stderr
    assert [m.rcpt_tos for m in srv.messages] == [["admin@example.com"]], r.stdout + r.stderr
    assert "vms_to_backup" in srv.messages[0].message["Subject"] + srv.messages[0].message.get_body().get_content()


# -- log files --------------------------------------------------------------------------------------------
def test_a_log_file_that_cannot_be_appended_to_is_a_clean_error(tmp_path, capsys):
    """README: `-l` naming something that cannot be opened or is no file is refused before the run starts
    (exit 1) with a message naming it. A regular file that opens for writing but cannot be positioned at
    its end (here /proc/version; any file system whose files do not seek) instead ends the command with
    `hotvcb: internal error: OSError: [Errno 22] Invalid argument` - the catch-all for hotvcb's own bugs,
    without the path - instead of 'cannot write the log file ...'."""
    from hotvcb import cli

    conf = tmp_path / "g.conf"
    conf.write_text("VM_BACKUP_VOLUME=/vmfs/volumes/backup/hotvcb\n")
    code = cli.main(["-m", "web", "-g", str(conf), "-l", "/proc/version"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "internal error" not in err and "/proc/version" in err, err
