"""Outside test, stop 27, as an ESXi admin moving from ghettoVCB would meet hotvcb: SSH mode (on the host and
file by file), `schedule` of an SSH host from the Linux box, and VMs with awkward names through them. One
simulated host and one loopback sshd for the whole file; tiny disks. Each defect is a strict xfail until fixed."""

import os
import re
import subprocess
import sys
import time
from datetime import datetime

import pytest

from cronsite import crontab_on_path
from simhost import REPO, make_host, needs_root, write_conf
from sshd import needs_sshd
from sshsite import host_sshd

pytestmark = [needs_root, needs_sshd]

ODD = "Web Pr\u00fcf's & ; $x"  # umlaut, quote, shell operators, a dollar
DASH = "-web"  # a leading dash, as ghettoVCB's getopts took it after -m
MAIL = "mail & co (\u00e4)"


class Lab:
    """The module's host, sshd, a config and the client's argv."""

    def __init__(self, host, sshd, tmp):
        self.host, self.sshd, self.tmp = host, sshd, tmp
        self.folder = tmp / "onhost"  # HOTVCB_HOST_FOLDER: the host's folder of builds
        self.conf = write_conf(host)

    def env(self, **extra):
        return dict(os.environ, PYTHONPATH=REPO, HOTVCB_HOST_FOLDER=str(self.folder), **extra)

    def run(self, *args, env=None, timeout=300, cwd=REPO):
        argv = [sys.executable, "-m", "hotvcb"] + self.sshd.cli_args() + [str(a) for a in args]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env or self.env(), cwd=str(cwd))
        r.out = r.stdout + r.stderr
        return r

    def backups(self, vm):
        folder = os.path.join(self.host.real("/vmfs/volumes/backup/hotvcb"), vm)
        return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("s27admin")
    host = make_host(tmp / "host")
    try:
        for name in (ODD, DASH, MAIL):
            host.create_vm(name, "datastore1", [{"size": "1M"}], power="on")
        with host_sshd(host, tmp / "sshd") as sshd:
            yield Lab(host, sshd, tmp)
    finally:
        host.stop()


# -- 1. file by file names the backup by the Linux box's clock ------------------------------------------
def test_file_by_file_names_the_backup_by_the_hosts_time_not_the_linux_boxs_time_zone(lab):
    """The Linux box runs in America/New_York (cron inherits the box's zone), the ESXi host in UTC as ESXi always
    does. A backup that goes file by file (`--file-by-file`, or automatically when the host's /tmp is full) is
    named `VM-<the Linux box's local time>`, 5 hours before the on-host runs' names of the same hour: the next
    on-host run's rotation then takes the newest backup for the oldest and deletes it first, and `status` judges
    its age 5 hours wrong. ghettoVCB (and hotvcb on the host) name backups by the host's clock."""
    before = set(lab.backups(ODD))
    r = lab.run("backup", "--file-by-file", "-m", ODD, "-g", lab.conf, env=lab.env(TZ="America/New_York"))
    assert r.returncode == 0, r.out
    [made] = sorted(set(lab.backups(ODD)) - before)
    stamp = datetime.strptime(made[-len("YYYY-MM-DD_HH-MM-SS"):], "%Y-%m-%d_%H-%M-%S")
    host_now = datetime.now()  # this machine's zone is the simulated host's (its /etc is an overlay of ours)
    assert abs((host_now - stamp).total_seconds()) < 600, (made, host_now, r.out)


# -- 2. schedule install refuses the VM name that backup takes ------------------------------------------
@pytest.fixture
def fake_crontab(tmp_path):
    """A `crontab` first on PATH keeping the Linux box's table in a file."""
    return crontab_on_path(tmp_path)


def test_schedule_install_takes_a_leading_dash_vm_name_as_backup_does(lab, fake_crontab):
    """`hotvcb --host root@esxi backup -m -web -g conf` backs up VM "-web" (ghettoVCB's getopts took the word
    after -m whatever it starts with, and the docs promise the same). Putting that very job into cron with
    `hotvcb --host root@esxi schedule install --cron ... -- -m -web -g conf` ends in
    `error: the backup arguments are not valid: argument -m: expected one argument`, exit 1: the admin cannot
    schedule the job he just ran by hand."""
    table, path = fake_crontab
    ran = lab.run("backup", "-m", DASH, "-g", lab.conf, "-d", "dryrun")
    assert ran.returncode == 0, ran.out  # the job runs
    r = lab.run("schedule", "install", "--platform", "linux", "--cron", "0 21 * * *", "--job", "dash", "--",
                "-m", DASH, "-g", lab.conf, env=lab.env(PATH=path))
    assert r.returncode == 0, r.out
    line = table.read_text()
    assert re.search(r" backup -m(=| )?-web -g ", line), line  # the VM's name as given, not `-w<cwd>/eb`


# -- 3. SSH mode reads every file of the -c folder --------------------------------------------------------
def test_a_big_unrelated_file_in_the_per_vm_folder_does_not_stop_an_ssh_backup(lab):
    """ghettoVCB admins keep per-VM files in a folder that holds other things too (the ghettoVCB logs, the
    script, an old tarball). Run locally or `--file-by-file`, hotvcb reads only `<folder>/<VM name>`; run on the
    host (SSH mode's default) it sends the whole folder and refuses the job: `error: -c DIR/ghettoVCB.log is
    larger than 4194304 bytes`, exit 1, no VM backed up - for a file that is no VM's config."""
    pervm = lab.tmp / "per vm"
    pervm.mkdir(exist_ok=True)
    (pervm / DASH).write_text("VM_BACKUP_ROTATION_COUNT=2\n")
    with open(str(pervm / "ghettoVCB.log"), "wb") as f:
        f.truncate(5 << 20)
    here = lab.run("backup", "--file-by-file", "-m", DASH, "-g", lab.conf, "-c", pervm, "-d", "dryrun")
    assert here.returncode == 0, here.out
    r = lab.run("backup", "-m", DASH, "-g", lab.conf, "-c", pervm, "-d", "dryrun")
    assert r.returncode == 0 and "going file by file" not in r.out, r.out
    assert "Final status: OK, only a dryrun." in r.out, r.out


# -- 4. status --hosts judges the host's backup times by the monitoring box's time zone --------------------
def test_status_of_a_fleet_from_a_box_in_another_time_zone_sees_a_fresh_backup_fresh(lab, tmp_path):
    """The Nagios box runs in Asia/Tokyo, the ESXi hosts in UTC (as ESXi always does). Right after a good
    backup, `hotvcb status --hosts fleet.txt --max-age 2h` says `CRIT backup -web: newest good backup 9h old`
    and pages the admin at night; from a box west of UTC (America/New_York) the same check gives the backup a
    negative age, so a backup that stopped hours ago stays OK and no one is told. `hotvcb --host esxi status`
    (run on the host) gets the same host right."""
    made = lab.run("backup", "-m", DASH, "-g", lab.conf)
    assert made.returncode == 0, made.out
    fleet, only = tmp_path / "fleet.txt", tmp_path / "vms"
    fleet.write_text("%s:%d\n" % (lab.sshd.target, lab.sshd.port))
    only.write_text(DASH + "\n")
    argv = [sys.executable, "-m", "hotvcb", "--identity", lab.sshd.identity, "--known-hosts", lab.sshd.known_hosts,
            "status", "--hosts", str(fleet), "-g", lab.conf, "-f", str(only), "--max-age", "2h", "--json"]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=lab.env(TZ="Asia/Tokyo"), cwd=REPO)
    import json

    [host] = json.loads(r.stdout)["hosts"]
    [check] = [c for c in host["checks"] if c["kind"] == "backup" and c["name"] == DASH]
    assert check["severity"] == "OK" and 0 <= check["details"]["age_seconds"] < 600, check


# -- 5. schedule install leaves --json-report relative ------------------------------------------------------
def test_schedule_install_makes_the_json_report_path_absolute_as_it_does_the_log(lab, fake_crontab, tmp_path):
    """`cd /etc/hotvcb && hotvcb --host root@esxi schedule install --cron ... -- -m VM -g esxi01.conf -l esxi01.log
    --json-report esxi01.json`: the config and the log are installed as /etc/hotvcb/..., as the docs promise
    ("the installed line has them absolute, relative to your shell's $PWD"), but the report stays
    `--json-report esxi01.json`; cron starts the job in $HOME, so the monitoring that reads
    /etc/hotvcb/esxi01.json never sees another report."""
    table, path = fake_crontab
    conf = tmp_path / "esxi01.conf"
    conf.write_text(open(lab.conf).read())
    r = lab.run("schedule", "install", "--platform", "linux", "--cron", "0 21 * * *", "--job", "rep", "--",
                "-m", ODD, "-g", "esxi01.conf", "-l", "esxi01.log", "--json-report", "esxi01.json",
                env=lab.env(PATH=path, PWD=str(tmp_path)), cwd=tmp_path)
    assert r.returncode == 0, r.out
    line = table.read_text()
    assert " -g %s " % conf in line and " -l %s " % (tmp_path / "esxi01.log") in line, line
    assert " --json-report %s " % (tmp_path / "esxi01.json") in line, line


# -- 6. schedule install from the pyz on the host names the pyz by the datastore's UUID --------------------
def test_schedule_install_from_the_pyz_keeps_the_datastore_name_of_the_pyz(lab, tmp_path):
    """The migration guide's way: `cd /vmfs/volumes/datastore1 && python hotvcb.pyz schedule install ...`. The
    job's own files are installed as /vmfs/volumes/datastore1/..., as operations.md promises ("not the UUID
    path"), but the command itself becomes `/bin/python /vmfs/volumes/5f3a...-.../hotvcb.pyz`: after the
    datastore is re-created or restored to a new disk under the same name (a new UUID), every other path of the
    line still works and the nightly job fails at `can't open file`, with nothing in any hotvcb log."""
    pyz = tmp_path / "hotvcb.pyz"
    subprocess.run([sys.executable, os.path.join(REPO, "scripts", "build-pyz"), "-o", str(pyz)], check=True,
                   stdout=subprocess.DEVNULL, timeout=120)
    from simhost import on_host

    script = ("cp %s /vmfs/volumes/datastore1/hotvcb.pyz && cd /vmfs/volumes/datastore1 && cp %s hotvcb.conf && "
              "/bin/python hotvcb.pyz schedule install --cron '0 21 * * *' --job pyz -- -m \"$1\" -g hotvcb.conf; "
              "code=$?; grep 'hotvcb:pyz$' /var/spool/cron/crontabs/root; "
              "/bin/python hotvcb.pyz schedule remove --job pyz >/dev/null; exit $code" % (pyz, lab.conf))
    r = subprocess.run(on_host(lab.host, "sh", "-c", script, "sh", ODD), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    line = r.stdout.splitlines()[-1]
    assert " -g /vmfs/volumes/datastore1/hotvcb.conf " in line, line
    assert line.startswith("0 21 * * * /bin/python /vmfs/volumes/datastore1/hotvcb.pyz backup "), line


# -- 7. a restore file's errors name the host's temporary copy --------------------------------------------
def test_a_bad_restore_line_over_ssh_names_the_admins_file_not_the_hosts_temp_copy(lab, tmp_path):
    """A ghettoVCB vms_to_restore line whose backup path holds a `;` (VM "Web Prüf's & ; $x") or any other bad
    line: run locally or `--file-by-file` the error reads `vms_to_restore:1: expected 3 or 4 fields ...`; run on
    the host (SSH mode's default) it reads `/tmp/hotvcb-onhost/run-5xc1tk5i/restore_file:1: ...`, a path on
    another machine that is gone when the command ends. The admin cannot tell which of his files is meant
    (backups' -g/-c errors name the admin's files: test_outsider_sshrun)."""
    rf = tmp_path / "vms_to_restore"
    rf.write_text('"/vmfs/volumes/backup/hotvcb/%s/%s-2026-12-01_21-00-01;ds5;3;Restored"\n' % (ODD, ODD))
    here = lab.run("restore", "--file-by-file", "-c", rf, "-d", "1")
    assert "%s:1: expected 3 or 4 fields" % rf in here.out, here.out
    r = lab.run("restore", "-c", rf, "-d", "1")
    assert r.returncode == here.returncode and "restore_file" not in r.out, r.out
    assert "%s:1: expected 3 or 4 fields" % rf in r.out, r.out


# -- 8. a JSON report that cannot be written is a warning after the end, exit 0 ---------------------------
def test_a_json_report_that_cannot_be_written_does_not_end_all_ok(lab, tmp_path):
    """`--json-report /var/lib/check_hotvcb/esxi01.json` whose folder is missing (a typo, the monitoring package
    not installed yet): the job runs, ends `Final status: All VMs backed up OK!` and exit 0, and only after the
    `LOG END` line (in no log file, in no mail) says `warning: cannot write the JSON report`. The report the
    monitoring reads never appears while cron and the mail say OK every night. `-l` in a missing folder creates
    it; a log sink that fails makes the run end with exit 9."""
    report = tmp_path / "missing" / "esxi01.json"
    r = lab.run("backup", "-m", DASH, "-g", lab.conf, "-d", "dryrun", "--json-report", report)
    assert "cannot write the JSON report" in r.out or report.exists(), r.out
    assert report.exists() or r.returncode != 0, r.out


# -- 9. a backup dated in the future is "OK, -31903s old" to status ------------------------------------------
def test_status_does_not_call_a_backup_dated_in_the_future_fresh(lab, tmp_path):
    """Free standalone ESXi hosts often run without NTP; once the clock was a day ahead (the case backup-format.md
    names for rotation) and was then set right, the backup made then carries tomorrow's name. `hotvcb status`
    takes it for the newest and says `OK backup VM: newest good backup -86395s old` - a negative age, OK - and
    stays OK for a whole day even when every backup after it failed: the check a monitoring system relies on
    to notice stopped backups is blind for as long as the clock was off."""
    made = lab.run("backup", "-m", MAIL, "-g", lab.conf)
    assert made.returncode == 0, made.out
    [folder] = lab.backups(MAIL)
    stamp = datetime.strptime(folder[-19:], "%Y-%m-%d_%H-%M-%S")
    ahead = "%s-%s" % (MAIL, datetime.fromtimestamp(time.mktime(stamp.timetuple()) + 86400).strftime("%Y-%m-%d_%H-%M-%S"))
    where = os.path.join(lab.host.real("/vmfs/volumes/backup/hotvcb"), MAIL)
    subprocess.run(["cp", "-a", os.path.join(where, folder), os.path.join(where, ahead)], check=True)
    # the clock that named it a day ahead dated its files too (a name ahead of files that are not is read as
    # a zone difference and aged by the files, docs/operations.md)
    for dirpath, _dirs, names in os.walk(os.path.join(where, ahead)):
        for n in names + [""]:
            p = os.path.join(dirpath, n) if n else dirpath
            os.utime(p, (os.stat(p).st_atime + 86400, os.stat(p).st_mtime + 86400))
    only = tmp_path / "vms"
    only.write_text(MAIL + "\n")
    r = lab.run("status", "-g", lab.conf, "-f", only, "--max-age", "26h", "--json")
    import json

    [check] = [c for c in json.loads(r.stdout)["checks"] if c["kind"] == "backup" and c["name"] == MAIL]
    assert not (check["severity"] == "OK" and check["details"]["age_seconds"] < 0), check
    assert check["severity"] == "WARN" and "ahead of the host's clock" in check["message"], check


# -- 10. status --hosts cuts an IPv6 address as if it ended in a port -----------------------------------------
def test_status_hosts_takes_an_ipv6_host_line_as_the_address(lab, tmp_path):
    """An ESXi host managed over IPv6 (`root@fe80::20c:29ff:fe12:3456`, or `root@::1`) in the fleet file: status
    connects to `root@fe80::20c:29ff:fe12` port 3456 (here: `cannot connect to root@: over SSH: Could not resolve
    hostname :`), so that host is UNKNOWN for good, whatever the admin writes ([::1]:22 is not understood
    either). `hotvcb --host root@::1` reaches the same host."""
    fleet = tmp_path / "fleet.txt"
    fleet.write_text("root@::1\n")
    argv = [sys.executable, "-m", "hotvcb", "--identity", lab.sshd.identity, "--known-hosts", lab.sshd.known_hosts,
            "--port", str(lab.sshd.port), "status", "--hosts", str(fleet), "-g", lab.conf, "--json"]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=lab.env(), cwd=REPO)
    import json

    [host] = json.loads(r.stdout)["hosts"]
    # sshd listens on 127.0.0.1 only: ::1 refuses, but it must be ::1 that was asked
    assert "Could not resolve hostname" not in host.get("message", "") and "::1" in host.get("message", ""), host


# -- 11. scheduling a second ESXi host silently drops the first host's job ------------------------------------
def test_scheduling_a_second_host_does_not_silently_drop_the_first_hosts_job(lab, fake_crontab):
    """One Linux box backs up two ESXi hosts, scheduled as the README shows (no --job):
    `hotvcb --host root@esxi01 schedule install --cron "0 21 * * *" -- -m VM -g esxi01.conf`, then the same for
    esxi02. The second says `installed job hotvcb: ...` and nothing else - and has replaced esxi01's line: esxi01
    is never backed up again, and nothing says so until its backups are needed. (Installing the same job twice
    leaving one line is right; replacing another host's job unasked is not.)"""
    table, path = fake_crontab
    env = lab.env(PATH=path)
    first = lab.run("schedule", "install", "--platform", "linux", "--cron", "0 21 * * *", "--", "-m", ODD,
                    "-g", lab.conf, env=env)
    assert first.returncode == 0 and " --host root@127.0.0.1 " in table.read_text(), first.out
    argv = [sys.executable, "-m", "hotvcb", "--host", "root@localhost", "--port", str(lab.sshd.port), "--identity",
            lab.sshd.identity, "--known-hosts", lab.sshd.known_hosts, "--ssh-option",
            "HostKeyAlias=[127.0.0.1]:%d" % lab.sshd.port,  # "esxi02": another name, the same simulated host
            "schedule", "install", "--platform", "linux", "--cron", "0 22 * * *", "--", "-m", ODD, "-g", lab.conf]
    second = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env, cwd=REPO)
    assert " --host root@localhost " in table.read_text(), second.stdout + second.stderr
    kept = " --host root@127.0.0.1 " in table.read_text()
    assert kept or "replac" in (second.stdout + second.stderr).lower(), (table.read_text(), second.stdout + second.stderr)
