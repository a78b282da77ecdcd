"""Testers' notes (session 31) on `hotvcb status` and how runs end, each pinned through the public command
line: VMs a job skips by its power-state rule, a failed run and a good one in the same second, and how many
host commands status's last-run lookups cost."""

import glob
import json
import os
import signal
import subprocess
import time

import pytest

from simhost import (VOLUME, copying, host_lock_path, hotvcb, hotvcb_background, kill, needs_root, sealed, wait_for,
                     write_conf)
from sshd import needs_sshd
from sshsite import site  # noqa: F401  (the fixture)


def _checks(host, *args):
    r = hotvcb(host, "status", "--json", *args)
    return r, {c["name"]: c for c in json.loads(r.stdout)["checks"] if c["kind"] == "backup"}


def _records(host, folder):
    """The last-run records in `folder` (a path on the host)."""
    return sorted(glob.glob(host.real(folder) + "/.hotvcb-last-run.*.json"))


# -- 1. status judges the VMs its job skips by BACKUP_POWER_STATE as skipped, not "never backed up" ------------

@needs_root
@pytest.mark.parametrize("how", ["config", "option"])
def test_status_says_a_vm_skipped_by_the_power_state_rule_is_skipped_not_crit(host, how):
    """A nightly job with BACKUP_POWER_STATE=on (or `backup --power-state on`) backs up the running VMs and
    leaves the powered-off one alone on purpose; `status` with the same config called the skipped VM CRIT
    "never backed up", so the monitor paged every night for a choice the admin made. The skipped VM is said
    to be skipped by the rule, not CRIT; the VM the job backs up is judged as always."""
    host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    host.create_vm("spare", "datastore1", [{"size": "1M"}], power="off")
    keys = {"BACKUP_POWER_STATE": "on"} if how == "config" else {}
    option = ["--power-state", "on"] if how == "option" else []
    conf = write_conf(host, **keys)
    r = hotvcb(host, "backup", "-a", "-g", conf, *option)
    assert r.returncode == 0 and len(sealed(host, "web")) == 1 and not sealed(host, "spare"), r.stdout + r.stderr
    r, checks = _checks(host, "-g", conf, *option)
    spare = checks["spare"]
    assert spare["severity"] == "OK" and "skipped" in spare["message"] and "BACKUP_POWER_STATE=on" in \
        spare["message"] and "powered off" in spare["message"], spare
    assert checks["web"]["severity"] == "OK", checks
    assert r.returncode == 0, r.stdout
    # a VM the rule would back up and that has no backup is still CRIT
    host.set_power(host.vmid_by_name("spare"), "on")
    r, checks = _checks(host, "-g", conf, *option)
    assert checks["spare"]["severity"] == "CRIT" and "never backed up" in checks["spare"]["message"], checks


# -- 2. a failed run and a good run in one second: the later run decides ---------------------------------------

def _same_second(host, folder, epoch):
    """What a failed run and a backup begun in the same second leave: the record's whole second is the
    backup's (the records of both orders are written as the real runs wrote them, only their second moved)."""
    for path in _records(host, folder):
        with open(path) as f:
            data = json.load(f)
        data["time"] = int(epoch)
        with open(path, "w") as f:
            f.write(json.dumps(data) + "\n")


def _newest_epoch(host, repo):
    if repo:
        from hotvcb.repo.repository import open_path
        return max(int(s.record["utc"]) for s in open_path(host.real(repo)).snapshots("web"))
    name = sealed(host, "web")[-1].rsplit("/", 1)[-1]
    return time.mktime(time.strptime(name[-19:], "%Y-%m-%d_%H-%M-%S"))


@needs_root
@pytest.mark.parametrize("where", ["volume", "repository"])
@pytest.mark.parametrize("order", ["error-then-ok", "ok-then-error"])
def test_the_later_of_two_runs_in_one_second_decides_the_last_run(host, tmp_path, where, order):
    """A failed run and a good one ending in the same second (a quick refusal, the admin's or a retry loop's
    immediate rerun): which one was last followed the whole-second tie, not the runs' order. On a backup
    volume a failure just after the good backup's second read OK (the failure hidden); in a repository a
    failure just before the good backup read "last run was error" (the good run hidden). The later run decides."""
    host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    repo = VOLUME + "-repo" if where == "repository" else ""
    conf = write_conf(host, **({"VM_BACKUP_REPOSITORY": repo} if repo else {}))
    folder = repo + "/last-run/web" if repo else VOLUME + "/web"
    work = ["-w", str(tmp_path / "work")]
    if repo:  # the repository exists before the first failure, so its record is kept
        r = hotvcb(host, "backup", "-m", "web", "-g", conf, *work)
        assert r.returncode == 0, r.stdout + r.stderr
    runs = ["fail", "ok"] if order == "error-then-ok" else ["ok", "fail"]
    for run in runs:
        if run == "fail":
            host.set_fault("snapshot.create", "fail")
        r = hotvcb(host, "backup", "-m", "web", "-g", conf, *work)
        host.clear_faults()
        assert (r.returncode == 0) == (run == "ok"), r.stdout + r.stderr
    assert _records(host, folder), os.listdir(host.real(folder))
    _same_second(host, folder, _newest_epoch(host, repo))
    web = _checks(host, "-g", conf)[1]["web"]
    if order == "error-then-ok":
        assert web["severity"] == "OK" and "last run" not in web["message"], web
    else:
        assert web["severity"] == "WARN" and "last run was error" in web["message"], web


# -- 5. status reads a VM's last-run records from its one look at the VM's folder --------------------------------

@needs_root
def test_status_reads_last_run_records_without_a_host_call_of_their_own(host, tmp_path):
    """status read each VM's last-run records through the host's own shell: a listing of the VM's folder (for
    the records of other system ids), an `exists` and a read of each of its two files: over SSH file by file,
    four round trips more per VM on top of the one look (a scan) at the VM's backups. The scan serves them
    now: with three records beside the backups (its own, one an older hotvcb wrote under the host's name alone,
    one under another system id) status makes exactly the host calls it makes with none, and still reads them."""
    from test_host_commands_e2e import counted_backup

    host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    conf = write_conf(host)
    assert hotvcb(host, "backup", "-m", "web", "-g", conf).returncode == 0
    host.set_fault("snapshot.create", "fail")
    assert hotvcb(host, "backup", "-m", "web", "-g", conf).returncode != 0
    host.clear_faults()
    folder = host.real(VOLUME + "/web")
    (own,) = _records(host, VOLUME + "/web")
    data = json.load(open(own))
    prefix = ".hotvcb-last-run." + data["host"]
    for name in (prefix + ".json", prefix + ".0123456789abcdef.json"):  # the older hotvcb's, another system id's
        with open(os.path.join(folder, name), "w") as f:
            f.write(json.dumps(dict(data, time=data["time"] - 1)) + "\n")
    aside = tmp_path / "aside"
    aside.mkdir()

    def counted():
        r, count = counted_backup(host, tmp_path, "status", "-g", conf, "--json")
        web = {c["name"]: c for c in json.loads(r.stdout)["checks"] if c["kind"] == "backup"}["web"]
        return web, count

    web, with_records = counted()
    assert web["severity"] == "WARN" and "last run was error" in web["message"], web
    assert not [p for p in with_records["text_reads"] if ".hotvcb-last-run" in p], with_records["text_reads"]
    for name in os.listdir(folder):
        if name.startswith(".hotvcb-last-run"):
            os.rename(os.path.join(folder, name), str(aside / name))
    web, without = counted()
    assert "last run was" not in web["message"], web
    assert with_records["files"] == without["files"] and with_records["commands"] == without["commands"], (
        with_records["files"], without["files"])


# -- 3. an on-host run whose SSH session breaks mid-backup: the run and status name the session ------------------

@needs_root
@needs_sshd
def test_an_on_host_run_whose_session_breaks_is_named_so_by_the_run_and_by_status(host, site, tmp_path):
    """The connection of an on-host run (hotvcb running on the host over one SSH channel) dies mid-copy.
    The host's end stopped the run as if the admin had sent SIGTERM: its VM's record and failed backup said
    "interrupted by SIGTERM" (nobody sent one), and status then gave "STATUS.error: the backup failed" alone,
    where a run file by file names the lost connection. The client exited 1, which README keeps for a run
    that started no VM. The host's run now says its session ended (a hang-up), status shows the last run's
    reason beside the failed backup, and the client exits 2, as a run the host's end stopped (README)."""
    from test_outsider_sshrun import _under

    host.create_vm("web", "datastore1", [{"size": "8M"}], power="on")
    conf = write_conf(host)
    host.set_fault("clone.delay", "30")
    try:
        proc = subprocess.Popen(site.argv("backup", "-m", "web", "-g", conf), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, env=site.env(), text=True)
        wait_for(lambda: copying(host, "web"), 60, "the copy")
        for pid, cmd in _under(site.sshd.proc.pid):
            if cmd.startswith("sshd: root"):  # this test's connection, not the listener
                os.kill(pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=120)
    finally:
        host.clear_faults()
    assert proc.returncode == 2 and "Traceback" not in out, out
    assert "Final status: ERROR: lost the SSH connection" in out, out
    wait_for(lambda: not os.path.exists(host_lock_path(host)), 60, "the run on the host to end")
    r = hotvcb(host, "status", "-g", conf)
    (web,) = [line for line in r.stdout.splitlines() if " web: " in line]
    assert web.startswith("CRIT") and "STATUS.error" in web, r.stdout
    assert "session" in web and "SIGHUP" in web and "SIGTERM" not in web, r.stdout


# -- 4. a signal that comes while the run ends is its exit code, whenever it comes before the exit ---------------

@needs_root
def test_sigterm_while_a_quick_relay_takes_the_mail_ends_the_run_as_interrupted(host, tmp_path):
    """cron's SIGTERM (or Ctrl-C) comes while the log mail goes out, and the relay answers at once: the mail's
    wait ended with its sender, without a look at the signal recorded meanwhile, and the run exited 0 as if
    none had come (a script that stopped the run took it for a whole, untouched run). A signal recorded at any
    point before the exit ends the run as interrupted (exit 2, its final status and JSON report say so); the
    backup it made stands."""
    from smtpserver import aiosmtpd_controller, free_port

    host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    holder = {}

    class SignalsAtData:
        async def handle_DATA(self, server, session, envelope):
            os.kill(holder["pid"], signal.SIGTERM)  # the signal lands while the mail is sent; the answer is at once
            return "250 OK"

    relay = aiosmtpd_controller.Controller(SignalsAtData(), hostname="127.0.0.1", port=free_port(), ready_timeout=5.0)
    relay.start()
    report = tmp_path / "r.json"
    try:
        conf = write_conf(host, EMAIL_LOG=1, EMAIL_SERVER="127.0.0.1", EMAIL_SERVER_PORT=relay.port,
                          EMAIL_TLS="none", EMAIL_TO="admin@example.com")
        run = hotvcb_background(host, "-m", "web", "-g", conf, "--json-report", str(report))
        holder["pid"] = run.pid
        try:
            out, _ = run.communicate(timeout=120)
        finally:
            kill(run.pid)
    finally:
        relay.stop()
    assert run.returncode == 2 and "Traceback" not in out, out
    assert "Final status: ERROR: interrupted by SIGTERM" in out.rsplit("LOG END", 1)[-1], out
    data = json.loads(report.read_text())
    assert data["exit_code"] == 2 and data["status"].startswith("ERROR: interrupted by SIGTERM"), data
    assert len(sealed(host, "web")) == 1, out
