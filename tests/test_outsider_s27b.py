"""Outside test, session 27b: today's fixes (backups named and aged by the host's clock, --json-report, the
repository's restore --latest / prune / status) as an outsider tries to break them. A simulated ESXi host per
test where one is needed, a loopback sshd once, tiny disks, the rest in-process. Each defect is a strict xfail
until fixed."""

import datetime
import json
import os
import stat
import subprocess
import sys
import time

import pytest
from repotool import backup, new_repo

from hotvcb.cli import main
from hotvcb.repo.repository import open_path
from hotvcb.repo.writer import BackupWriter
from simhost import REPO as SRC, hotvcb, needs_root, write_conf
from sshd import needs_sshd
from test_outsider_s27repo import small_disk

REPO = "/vmfs/volumes/backup/repo"


def _backup_check(stdout, vm):
    return [c for c in json.loads(stdout)["checks"] if c["kind"] == "backup" and c["name"] == vm][0]


# -- 1. the host's clock: status over SSH file by file --------------------------------------------------
def _zone_leaving_summer_time_at(at_utc):
    """A POSIX TZ whose summer time (UTC+1) ends at the instant `at_utc` (naive UTC), as Europe/Berlin's
    does one October night; here a few seconds from now, so the test needs no waiting for October."""
    local = at_utc + datetime.timedelta(hours=1)
    leap = (local.year % 4 == 0 and local.year % 100 != 0) or local.year % 400 == 0
    n = local.timetuple().tm_yday - (1 if leap and local.month > 2 else 0)  # Jn never counts Feb 29
    return "CET0CEST-1,J1/0,J%d/%s" % (n, local.strftime("%H:%M:%S"))


@needs_root
@needs_sshd
def test_status_file_by_file_from_a_box_whose_summer_time_ended_since_the_backup_tells_its_age(host, tmp_path):
    """The monitoring box runs in Europe/Berlin and checks the ESXi host (UTC) with `hotvcb --host esxi status
    --file-by-file` (the mode that reaches a host with no python, and that today's fix made age backups by the
    host's clock). The night summer time ends, every backup made before the change is told one hour OLDER
    than it is: here a 5-second-old backup is reported '1h old', CRIT with `--max-age 30m`; with the default
    26h a nightly backup 25.5 h old turns WARN 'late' and pages on-call. The host's clock and the client's
    epoch do not change at all at that instant, only the client's zone does."""
    from sshsite import host_sshd

    host.create_vm("web", "datastore1", [{"size": "1M"}])
    conf = write_conf(host)
    assert hotvcb(host, "-m", "web", "-g", conf).returncode == 0
    zone = _zone_leaving_summer_time_at(datetime.datetime.utcnow().replace(microsecond=0)
                                        + datetime.timedelta(seconds=2))
    time.sleep(3)
    with host_sshd(host, tmp_path / "sshd") as sshd:
        r = subprocess.run([sys.executable, "-m", "hotvcb"] + sshd.cli_args() + [
            "status", "--file-by-file", "-g", conf, "--json", "--max-age", "30m"],
            capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONPATH=SRC, TZ=zone), cwd=SRC)
    web = _backup_check(r.stdout, "web")
    assert web["severity"] == "OK" and web["details"]["age_seconds"] < 600, (zone, web)


# -- 2. the host's clock: a repository's status ---------------------------------------------------------
@needs_root
def test_repository_status_warns_of_a_newest_backup_dated_ahead_of_the_hosts_clock(host, tmp_path):
    """Today's fix made `status` WARN of a newest backup dated ahead of the host's clock ('its age cannot be
    told'), because it used to say 'OK, -86395s old'. A VM backed up into VM_BACKUP_REPOSITORY still gets
    exactly that: a backup recorded while the host's clock was a day ahead is 'OK', message 'newest backup
    -86398s old', age_seconds -86398: monitoring stays green until the clock catches up, however long the VM
    goes without a real backup. The same host's folder backups get the WARN."""
    host.create_vm("web", "datastore1", [{"size": "1M"}])
    conf = write_conf(host, VM_BACKUP_REPOSITORY=REPO)
    repo = new_repo(host.real(REPO))
    ahead = datetime.datetime.now() + datetime.timedelta(days=1)  # the record's `time`, as the host named it
    backup(repo, "web", small_disk(tmp_path / "web.raw"), when=ahead)
    r = hotvcb(host, "status", "-g", conf, "--json")
    web = _backup_check(r.stdout, "web")
    assert web["severity"] == "WARN" and "ahead" in web["message"], web


# -- 3. --json-report ---------------------------------------------------------------------------------
@needs_root
def test_json_report_path_ending_in_a_slash_is_refused_before_the_run(host, tmp_path):
    """`--json-report /var/log/hotvcb/` (a folder meant, the report's file name forgotten, the folder not made
    yet) is taken: the whole backup runs, ends 'All VMs backed up OK!', and only after 'LOG END' comes
    'cannot write the JSON report .../: No such file or directory', exit 9. Today's fix promises that a path
    that cannot be a report is refused before the run (its folder made as -l's is); a path ending in a slash
    can never be a file."""
    host.create_vm("web", "datastore1", [{"size": "1M"}])
    conf = write_conf(host)
    r = hotvcb(host, "-m", "web", "-g", conf, "--json-report", str(tmp_path / "reports") + "/")
    assert r.returncode in (1, 2) and "Initiate backup" not in r.stdout, (r.returncode, r.stdout[-800:], r.stderr)


@needs_root
def test_mail_of_a_run_whose_json_report_was_lost_says_so(host, tmp_path):
    """A run whose JSON report could not be written now exits 9 (today's fix), and with EMAIL_LOG the admin
    gets the mail of a failed run - whose subject is 'hotvcb esxi01 hotvcb: All VMs backed up OK!', whose
    status line says 'Final status: All VMs backed up OK!' and whose full log ends at LOG END, before the
    warning 'cannot write the JSON report'. A lost log says '; WARNING: the log could not be written to ...'
    in that status; a lost report says nothing anywhere the admin reads, and the dashboard fed by the report
    silently shows the previous night."""
    smtpserver = pytest.importorskip("smtpserver", reason="aiosmtpd is needed for the mail part")
    host.create_vm("web", "datastore1", [{"size": "1M"}])
    # (fixed: a path ending in "/" is refused before the run now) a folder nothing can write in, even root:
    # the report is lost at the end, as on a full or read-only file system
    (tmp_path / "reports").mkdir()
    subprocess.run(["chattr", "+i", str(tmp_path / "reports")], check=True)
    try:
        with smtpserver.smtp_server() as server:
            conf = write_conf(host, EMAIL_LOG=1, EMAIL_SERVER="127.0.0.1", EMAIL_SERVER_PORT=server.port,
                              EMAIL_TLS="none", EMAIL_TO="admin@example.com")
            r = hotvcb(host, "-m", "web", "-g", conf, "--json-report", str(tmp_path / "reports" / "r.json"))
            deadline = time.monotonic() + 10
            while not server.messages and time.monotonic() < deadline:
                time.sleep(0.1)
    finally:
        subprocess.run(["chattr", "-i", str(tmp_path / "reports")], check=True)
    assert r.returncode == 9, r.stdout[-800:]
    [mail] = server.messages
    text = mail.message.get_body(("plain",)).get_content()
    subject = str(mail.message["Subject"])
    assert "JSON report" in text or "JSON report" in subject, (subject, text[:1500])


@needs_root
def test_json_report_to_a_pipe_is_written_into_it_or_refused(host, tmp_path):
    """`--json-report /dev/stdout | jq`, or a named pipe a monitoring agent reads: the backup ends exit 0 and
    the reader gets nothing - the report went into a temporary file that then REPLACED the pipe (run as root
    with /dev/stdout, it replaces the system's /dev/stdout link with a regular file, for every program,
    until reboot). The path cannot be a report written whole by rename; it must be written into or refused
    before the run, as today's fix refuses a path that cannot be a report. (Shown with a FIFO in tmp.)"""
    host.create_vm("web", "datastore1", [{"size": "1M"}])
    conf = write_conf(host)
    fifo = tmp_path / "report.pipe"
    os.mkfifo(str(fifo))
    reader = os.open(str(fifo), os.O_RDONLY | os.O_NONBLOCK)  # the agent that reads it, already waiting
    got = b""
    try:
        r = hotvcb(host, "-m", "web", "-g", conf, "--json-report", str(fifo))
        try:
            got = os.read(reader, 1 << 20)
        except BlockingIOError:
            pass
    finally:
        os.close(reader)
    still_a_pipe = stat.S_ISFIFO(os.lstat(str(fifo)).st_mode)
    refused = r.returncode in (1, 2) and "Initiate backup" not in r.stdout
    assert refused or (r.returncode == 0 and b'"exit_code"' in got and still_a_pipe), (
        r.returncode, still_a_pipe, got[:200], r.stdout[-400:])


# -- 4. the repository: VMs without a uuid (QEMU hosts) ------------------------------------------------
def _two_hosts_web_without_uuid(tmp_path):
    """What two QEMU hosts sharing one repository record for their VMs called web: hosts/qemu.py load_vm
    gives a Vm no uuid, so jobs/repo_backup.py writes vm_uuid "" (and each host its own host id)."""
    repo = new_repo(tmp_path / "repo")
    for host in ("kvm-a", "kvm-b"):
        w = BackupWriter(repo, "web", host=host, vm_uuid="")
        try:
            w.add_disk("web.raw", str(small_disk(tmp_path / (host + ".raw"), seed=host.encode())))
            w.add_file("web.json", b'{"name": "web", "hypervisor": "qemu"}\n')
            w.commit()
        finally:
            w.abort()
    return str(tmp_path / "repo")


def test_restore_latest_refuses_a_name_two_uuidless_vms_of_two_hosts_share(tmp_path, capsys):
    """Two KVM/QEMU hosts back up into one repository, each a VM called web. `hotvcb restore --repo R --latest
    web --to DIR` restores whichever was backed up last, exit 0, without a word - maybe the other host's
    disks - though docs/repository.md promises 'two hosts' VMs of that name: refused, each named' and the
    records carry each one's host id. Today's refusal only works for ESXi VMs (uuid.bios)."""
    repo = _two_hosts_web_without_uuid(tmp_path)
    code = main(["restore", "--repo", repo, "--latest", "web", "--to", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code != 0 and not (tmp_path / "out").exists(), ("restored one of two hosts' VMs called web", err)


def test_prune_keeps_apart_two_uuidless_vms_of_two_hosts(tmp_path, capsys):
    """The same two QEMU hosts' web VMs: `hotvcb prune --repo R --keep-last 1` deletes host A's only backup
    because host B's web was backed up a second later (exit 0, 'removed 1 backup(s)'). docs/repository.md:
    'two hosts' VMs called web in one repository are pruned apart'. A nightly prune from one host thus
    deletes every other host's backups of its same-named VMs: data loss, not a listing quirk."""
    repo = _two_hosts_web_without_uuid(tmp_path)
    assert main(["prune", "--repo", repo, "--keep-last", "1"]) == 0
    hosts = sorted(s.record.get("host") for s in open_path(repo).snapshots("web"))
    assert hosts == ["kvm-a", "kvm-b"], hosts
