"""Outside test, session 28 (docs): a newcomer and an admin read README.md and docs/, then feed every command
garbage (missing paths, folders where files belong, FIFOs, empty and binary files, odd option values). Most of
it is answered with one clear line and a documented exit code; what is not, is here. A simulated ESXi host per
test, tiny disks. Each defect is a strict xfail until fixed."""

import os
import subprocess

import pytest

from simhost import (REPO as SRC, _argv, backup_root, hotvcb, needs_root, on_host, sealed, snapshot_names,
                     write_conf)


def _web(host):
    host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    return host.vmid_by_name("web")


@needs_root
def test_verify_all_of_a_backup_volume_that_is_not_there_does_not_exit_0(host, tmp_path):
    """The admin's config names the NAS share `VM_BACKUP_VOLUME=/mnt/nas/backups` (mounted through fstab on the
    box that runs the check), and the weekly cron job `hotvcb verify --all -g hotvcb.conf` is what tells them the
    backups are readable. The night the share is not mounted (or after a typo in the path), verify prints
    '0 backup(s) checked, 0 damaged or incomplete' and exits 0: the wrapper reports all well. operations.md
    promises the opposite for the same situation on an NFS datastore ('verify VM and verify --all then exit 1,
    as they checked nothing'; verify_cmd.py: 'must not read "0 checked" as all well'), and `verify VM` on the
    same config already exits 1 ('no backups of ...'). Expected: exit 1, naming the volume that is not there."""
    _web(host)
    missing = str(tmp_path / "nas" / "backups")  # the share's mount point, nothing mounted
    conf = write_conf(host, VM_BACKUP_VOLUME=missing)
    r = hotvcb(host, "verify", "--all", "-g", conf)
    assert "Traceback" not in r.stderr + r.stdout
    assert r.returncode == 1 and missing in r.stderr, (r.returncode, r.stdout, r.stderr)


@needs_root
def test_a_log_file_that_is_a_fifo_nobody_reads_is_refused_not_waited_on_forever(host, tmp_path):
    """The admin's cron line says `-l /var/log/hotvcb.pipe`, a named pipe a log shipper reads; one night the
    shipper is down. README: '`-l` naming something that cannot be opened (a folder) is refused before the run
    starts (exit 1)' - a pipe no one reads cannot be opened for writing either, but hotvcb blocks in open()
    for ever: no line, no backup, no exit, and the next night's run queues behind it (`--json-report` to a pipe
    is refused outright). Expected: a one-line error naming the pipe and exit 1 within seconds."""
    vmid = _web(host)
    conf = write_conf(host)
    fifo = tmp_path / "hotvcb.pipe"
    os.mkfifo(str(fifo))
    env = dict(os.environ, PYTHONPATH=SRC)
    try:
        r = subprocess.run(_argv(host, ["-m", "web", "-g", conf, "-l", str(fifo)]), capture_output=True,
                           text=True, timeout=15, env=env, cwd=SRC)
    except subprocess.TimeoutExpired:  # subprocess.run killed it (the chain execs in place: same pid)
        pytest.fail("hotvcb -l <a FIFO no one reads> still waiting after 15 s")
    assert "Traceback" not in r.stderr + r.stdout
    assert r.returncode == 1 and str(fifo) in r.stderr, (r.returncode, r.stdout[-2000:], r.stderr)
    assert snapshot_names(host, vmid) == []


@needs_root
def test_a_job_name_with_a_line_break_does_not_cost_the_report_mail(host, tmp_path):
    """A wrapper script builds the job name from a variable that ends in a line break (`-j "$(cat jobname)"`
    with a CRLF file, say). `schedule install --job` refuses such a name ('use letters, digits, ...'), but
    `backup -j` takes it: the log's HOST line is split in two, and at the end the report mail is not sent
    ('e-mail report not sent ...: unexpected ValueError: Header values may not contain linefeed') while the
    run exits 0 - the admin who relies on EMAIL_LOG hears nothing. Expected: the name refused before the run
    (exit 1, naming -j), or the run's mail delivered."""
    smtpserver = pytest.importorskip("smtpserver", reason="aiosmtpd is needed for the mail part")
    _web(host)
    with smtpserver.smtp_server() as srv:
        conf = write_conf(host, EMAIL_LOG=1, EMAIL_SERVER="127.0.0.1", EMAIL_SERVER_PORT=srv.port,
                          EMAIL_TLS="none", EMAIL_TO="admin@example.com")
        r = hotvcb(host, "-m", "web", "-g", conf, "-j", "nightly\n")
        refused = r.returncode == 1 and "Initiate backup" not in r.stdout and "-j" in r.stderr
        assert "Traceback" not in r.stderr + r.stdout
        assert refused or len(srv.messages) == 1, (r.returncode, r.stdout[-1500:], r.stderr)


@needs_root
@pytest.mark.parametrize("option", ["-f", "--hosts"])
def test_status_given_a_list_that_names_nothing_is_not_ok(host, tmp_path, option):
    """The monitoring check is `hotvcb status -g hotvcb.conf -f /etc/hotvcb/vms` (or `--hosts fleet.txt`).
    Config management empties the file by mistake (only its header comment is left). `status` then checks no
    VM (no host), prints 'OK: ... 0 CRIT, 0 WARN' ('OK: 0 host(s)') and exits 0: the monitoring stays green
    while nothing is watched. `backup -f` refuses the very same file ('the VM list ... names no VM', exit 1;
    config-reference.md: 'a job that backs up nothing by design is a mistake'). Expected: UNKNOWN (exit 3)
    naming the file, as status does for a list it cannot read."""
    _web(host)
    conf = write_conf(host)
    listing = tmp_path / "list.txt"
    listing.write_text("# managed by config management\n")
    r = hotvcb(host, "status", "-g", conf, option, str(listing))
    assert "Traceback" not in r.stderr + r.stdout
    assert r.returncode == 3 and str(listing) in r.stdout + r.stderr, (r.returncode, r.stdout, r.stderr)


@needs_root
@pytest.mark.parametrize("command", ["verify", "restore"])
def test_a_file_that_is_no_backup_is_not_said_to_be_missing(host, tmp_path, command):
    """The admin passes the wrong path: a restore file, a download cut short, a tarball not named .gz (here
    `web-backup.tar`, a regular file). `hotvcb verify web-backup.tar` answers 'DAMAGED: .../web-backup.tar does
    not exist' (exit 6) and `hotvcb restore web-backup.tar --datastore datastore1` 'backup ... does not exist'
    - the admin runs `ls`, sees the file, and no longer trusts what hotvcb says. restore.md and `--help`:
    BACKUP is 'a backup folder or .gz'. Expected: a failure that says what is wrong with the path (not a
    backup folder or .gz), never that an existing file is missing."""
    _web(host)
    conf = write_conf(host)
    junk = tmp_path / "web-backup.tar"
    junk.write_bytes(b"\x1f\x8c not a backup " * 64)
    if command == "verify":
        r = hotvcb(host, "verify", str(junk), "-g", conf)
    else:
        r = hotvcb(host, "restore", str(junk), "--datastore", "datastore1", "-d", "1")
    out = r.stdout + r.stderr
    assert "Traceback" not in out and r.returncode != 0
    assert "does not exist" not in out and str(junk) in out, (r.returncode, out[-2000:])


@pytest.mark.parametrize("bad", [["--max-agee", "26h"], ["--max-age"], ["--snapshot-age", "-1h"]])
def test_status_json_with_a_bad_command_line_still_prints_the_unknown_json(tmp_path, bad):
    """Zabbix runs `hotvcb status --json -g hotvcb.conf --max-agee 26h` (a typo in the item's key) and parses
    stdout. operations.md: UNKNOWN covers 'a bad command line', and 'On UNKNOWN the JSON is {"status":
    "UNKNOWN", "message": "...", "checks": []}' - but a bad command line prints argparse's usage on stderr and
    nothing on stdout (exit 3), so the item fails with a JSON parse error instead of UNKNOWN and its message.
    A bad value argparse lets through (`--max-age x`) does get the JSON. Expected: the documented JSON."""
    import json
    import sys

    r = subprocess.run([sys.executable, "-m", "hotvcb", "status", "--json"] + bad, capture_output=True, text=True,
                       timeout=60, cwd=SRC, env=dict(os.environ, PYTHONPATH=SRC))
    assert r.returncode == 3 and "Traceback" not in r.stderr, (r.returncode, r.stderr)
    try:
        doc = json.loads(r.stdout)
    except ValueError:
        doc = None
    assert doc is not None and doc.get("status") == "UNKNOWN" and doc.get("checks") == [], (r.stdout, r.stderr)


CRONTAB = "/var/spool/cron/crontabs/root"


def _crontab(host):
    r = subprocess.run(on_host(host, "cat", CRONTAB), capture_output=True, text=True, timeout=60)
    return r.stdout


@needs_root
def test_schedule_install_refuses_a_log_that_is_a_folder(host, tmp_path):
    """The admin types `hotvcb schedule install --cron "0 17 * * 4" --log /var/log/hotvcb -- -m web -g ...`,
    meaning the folder the logs go to. install says 'installed job hotvcb' and writes `... >> /var/log/hotvcb
    2>&1` into root's crontab; at 17:00 crond's sh cannot open a folder for appending, so the backup never
    starts, and the error goes nowhere (cron's own mail is off on ESXi). README: install 'first runs the
    backup's own checks ..., so a typo fails at install, not at 17:00 on Thursday'. Expected: exit 1 naming the
    folder, and the crontab unchanged."""
    _web(host)
    conf = write_conf(host)
    folder = tmp_path / "logs"
    folder.mkdir()
    before = _crontab(host)
    r = hotvcb(host, "schedule", "install", "--cron", "0 17 * * 4", "--log", str(folder), "--", "-m", "web",
               "-g", conf)
    assert "Traceback" not in r.stdout + r.stderr
    assert r.returncode == 1 and str(folder) in r.stderr, (r.returncode, r.stdout, r.stderr)
    assert _crontab(host) == before


@needs_root
@pytest.mark.parametrize("what", ["-l", "--json-report", "--repo"])
def test_schedule_install_refuses_what_the_backup_itself_refuses(host, tmp_path, what):
    """`schedule install ... -- -m web -g hotvcb.conf -l /var/log/hotvcb` (a folder), `--json-report
    /srv/reports` (a folder) or `--repo /mnt/nas/repo` (the share not mounted, its mount point missing) is
    installed ('installed job hotvcb'), though the backup itself refuses each before its run ('cannot write the
    log file ...: Is a directory', '--json-report ... is a folder', 'VM_BACKUP_REPOSITORY ... does not exist')
    - so the job fails every Thursday. README: install 'first runs the backup's own checks (config, list
    files, VM names, target, host reachable), so a typo fails at install, not at 17:00 on Thursday' (a missing
    VM_BACKUP_VOLUME is refused there already). Expected: exit 1 naming the path, the crontab unchanged."""
    _web(host)
    conf = write_conf(host)
    if what == "--repo":
        path = tmp_path / "nas" / "repo"
    else:
        path = tmp_path / "a-folder"
        path.mkdir()
    r_backup = hotvcb(host, "-m", "web", "-g", conf, what, str(path))
    assert r_backup.returncode != 0  # the run itself fails, every time
    before = _crontab(host)
    r = hotvcb(host, "schedule", "install", "--cron", "0 17 * * 4", "--", "-m", "web", "-g", conf, what, str(path))
    assert "Traceback" not in r.stdout + r.stderr
    assert r.returncode == 1 and str(path) in r.stderr, (r.returncode, r.stdout, r.stderr)
    assert _crontab(host) == before


def test_verify_repo_of_a_vm_with_no_backup_there_is_not_ok(tmp_path):
    """`hotvcb verify --help` reads `verify [--repo PATH] [BACKUP|VM]`: 'a backup folder/.gz, or a VM name',
    '--repo: a deduplicating repository instead of VM_BACKUP_VOLUME'. The admin checks one VM's backups in the
    repository - with a typo: `hotvcb verify --repo R Web-Server`. hotvcb drops the name without a word,
    reads the whole repository and says '... read (all): OK', exit 0, though there is no backup of that VM at
    all (without --repo, `verify Web-Server` exits 1: 'no backups of ...'). Expected: the VM's backups
    verified, or the name refused - never OK for a VM the repository holds nothing of."""
    from repotool import backup, cli, new_repo
    from test_outsider_s27repo import small_disk

    repo = new_repo(tmp_path / "repo")
    backup(repo, "web", small_disk(tmp_path / "web.raw"))
    r = cli("verify", "--repo", tmp_path / "repo", "Web-Server")
    assert "Traceback" not in r.stdout + r.stderr
    assert r.returncode != 0 and "Web-Server" in r.stdout + r.stderr, (r.returncode, r.stdout, r.stderr)


def test_a_qmp_folder_that_does_not_exist_is_refused_not_created(tmp_path):
    """kvm.md: `hotvcb --qemu /run/qmp backup -a -g hotvcb.conf` backs up the QEMU processes whose QMP sockets
    are /run/qmp/<VM>.qmp. The admin's cron line has a typo, `--qemu /run/qnp`. `status` answers 'UNKNOWN:
    cannot list /run/qnp: No such file or directory', but `backup -a` makes the folder (parents too: here
    `typo/qmp`, to hold its run lock), finds no socket in it, and ends 'ERROR: No VMs backed up!' (exit 7)
    - no word that the folder was not there, and a new empty folder left behind that the next run and status
    take for a real, empty QMP folder. Expected: exit 1 naming the missing folder, nothing created."""
    import sys

    volume = tmp_path / "backups"
    volume.mkdir()
    conf = tmp_path / "hotvcb.conf"
    conf.write_text("VM_BACKUP_VOLUME=%s\nDISK_BACKUP_FORMAT=qcow2\n" % volume)
    missing = tmp_path / "typo" / "qmp"
    r = subprocess.run([sys.executable, "-m", "hotvcb", "--qemu", str(missing), "backup", "-a", "-g", str(conf)],
                       capture_output=True, text=True, timeout=120, cwd=SRC, env=dict(os.environ, PYTHONPATH=SRC))
    out = r.stdout + r.stderr
    assert "Traceback" not in out
    assert not (tmp_path / "typo").exists(), "the mistyped QMP folder was created"
    assert r.returncode == 1 and str(missing) in out, (r.returncode, out[-2000:])


def _one_backup(host):
    """A sealed backup of a small running VM; its real path on this machine (verify --boot runs here)."""
    import shutil

    if not shutil.which("qemu-system-x86_64"):
        pytest.skip("verify --boot needs qemu-system-x86_64")
    _web(host)
    conf = write_conf(host)
    assert hotvcb(host, "-m", "web", "-g", conf).returncode == 0
    (name,) = sealed(host, "web")
    return os.path.join(backup_root(host, "web"), name)


def _drop_boot_work(pid):
    """The work folder of a smoke boot this test had to SIGKILL (the next verify --boot would sweep it)."""
    import glob
    import shutil
    import tempfile

    for folder in glob.glob(os.path.join(tempfile.gettempdir(), "hotvcb-boot-%d-*" % pid)):
        shutil.rmtree(folder, ignore_errors=True)


def _verify_boot(*args):
    import sys

    return subprocess.Popen([sys.executable, "-m", "hotvcb", "verify", "--boot"] + [str(a) for a in args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=SRC,
                            env=dict(os.environ, PYTHONPATH=SRC), start_new_session=True)


@needs_root
def test_verify_boot_with_a_console_log_that_is_a_folder_is_a_clear_error(host, tmp_path):
    """The admin wants the console logs of the monthly smoke boot kept, and writes `--console-log
    /var/log/hotvcb-boot` (a folder). hotvcb says 'Booting web ...' and then 'hotvcb: internal error:
    IsADirectoryError: [Errno 21] Is a directory: ... (run with -d debug for details)'. architecture.md:
    'every error meant for the user is a HotvcbError ... printed as one line'; `-l FOLDER` and
    `--json-report FOLDER` are refused with their own message before anything starts. Expected: a one-line
    error naming the folder (exit 1), not an internal error."""
    backup = _one_backup(host)
    folder = tmp_path / "boot-logs"
    folder.mkdir()
    proc = _verify_boot(backup, "--console-log", folder, "--boot-timeout", "20")
    try:
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait()
            _drop_boot_work(proc.pid)
    assert "internal error" not in out + err and "Traceback" not in out + err, (out, err)
    assert proc.returncode == 1 and str(folder) in err, (proc.returncode, out, err)


@needs_root
def test_verify_boot_with_a_console_log_fifo_nobody_reads_neither_hangs_nor_ignores_sigterm(host, tmp_path):
    """`--console-log /run/boot.pipe`, a named pipe the admin's log collector reads, and the collector is not
    running. `hotvcb verify --boot BACKUP --console-log /run/boot.pipe` blocks in open() for ever after
    'Booting ...' (the --boot-timeout never counts), and as its signal handler is installed by then, SIGTERM
    and Ctrl-C are swallowed too: `timeout 60 hotvcb verify --boot ...` in cron never ends; only kill -9 stops
    it. architecture.md: 'Every wait is bounded'; README: a signal ends a run with exit 2. Expected: the pipe
    refused (exit 1, naming it) - or at the very least SIGTERM ending it (exit 2)."""
    import signal

    backup = _one_backup(host)
    fifo = tmp_path / "boot.pipe"
    os.mkfifo(str(fifo))
    proc = _verify_boot(backup, "--console-log", fifo, "--boot-timeout", "20")
    how = "by itself"
    try:
        try:
            out, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            how = "after SIGTERM"
            proc.send_signal(signal.SIGTERM)
            try:
                out, err = proc.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                how = "never: not even SIGTERM ended it"
                out, err = "", ""
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait()
            _drop_boot_work(proc.pid)
    assert how == "by itself" and proc.returncode == 1 and str(fifo) in err, (how, proc.returncode, out, err)


@needs_root
@pytest.mark.parametrize("action", ["remove", "install"])
def test_an_empty_job_name_is_refused_not_taken_for_the_default_job(host, tmp_path, action):
    """The nightly job was installed without --job, so it is `hotvcb`. A migration script later runs
    `hotvcb schedule remove --job "$OLD_JOB"` (or `install --job "$NEW_JOB" ...`) with the variable empty.
    hotvcb takes '' for the default name: `remove` says 'removed job(s): hotvcb' - the production job is
    gone - and `install` silently replaces it with another job's line. The job name rule is 'letters, digits,
    ., _ and - (up to 64, starting with a letter or digit)', which '' does not meet, and operations.md refuses
    the same slip for the host (`--host root@`, 'a variable left empty in a script'). Expected: exit 1 naming
    the empty job name, the installed job untouched."""
    _web(host)
    host.create_vm("db", "datastore1", [{"size": "1M"}], power="on")
    conf = write_conf(host)
    r = hotvcb(host, "schedule", "install", "--cron", "0 21 * * *", "--", "-m", "web", "-g", conf)
    assert r.returncode == 0, r.stderr
    before = _crontab(host)
    assert "# hotvcb:hotvcb" in before
    if action == "remove":
        r = hotvcb(host, "schedule", "remove", "--job", "")
    else:
        r = hotvcb(host, "schedule", "install", "--cron", "0 3 * * *", "--job", "", "--", "-m", "db", "-g", conf)
    assert "Traceback" not in r.stdout + r.stderr
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert _crontab(host) == before
