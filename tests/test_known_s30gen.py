"""Testers' notes (session 30), each pinned through the public command line: an interrupted run that
waited for a silent mail server, a scheduled dry run, VM lists from a pipe, options given twice, blank
values, copy rates, a paused QEMU guest and a qcow2's own snapshots."""

import json
import os
import re
import signal
import socket
import time

import pytest

from localcli import local, qemu, said  # noqa: F401  (qemu: the fixture)
from simhost import hotvcb, hotvcb_background, kill, needs_root, sealed, wait_for, write_conf
from sshsite import site  # noqa: F401  (the fixture)
from test_outsider_s29argv import _our_line, fake_crontab, qemu_site  # noqa: F401  (the fixtures)


def test_schedule_install_of_a_dry_run_warns_naming_the_flag(fake_crontab, qemu_site):
    """`schedule install ... -- -m web -g F -d dryrun` (the line tried by hand, pasted) installed a nightly
    job that never backs anything up, without a word: every night's log says "DRY RUN" to nobody."""
    qmp, conf = qemu_site
    r = local("schedule", "install", "--platform", "linux", "--cron", "0 1 * * *", "--", "--qemu", qmp,
              "-m", "vm one", "-g", conf, "-d", "dryrun")
    assert r.returncode == 0 and _our_line(fake_crontab), said(r)
    assert "warning" in r.stderr and "-d dryrun" in r.stderr and "never" in r.stderr, said(r)
    r = local("schedule", "install", "--platform", "linux", "--cron", "0 1 * * *", "--", "--qemu", qmp,
              "-m", "vm one", "-g", conf)
    assert r.returncode == 0 and "dryrun" not in r.stderr, said(r)


@needs_root
def test_sigterm_while_a_silent_mail_server_hangs_ends_the_run_as_interrupted(host, tmp_path):
    """EMAIL_LOG=1, and the relay accepts the connection but never answers: cron's or the admin's SIGTERM
    (Ctrl-C) was ignored until smtplib's 30 s timeout, and the run then exited 0. A signal ends the run at
    once, as an interrupted run ends (exit 2, "Final status: ERROR: interrupted by SIGTERM", the JSON report
    too); the backup it finished stays good."""
    host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    with socket.socket() as relay:
        relay.bind(("127.0.0.1", 0))
        relay.listen(1)
        relay.setblocking(False)
        conf = write_conf(host, EMAIL_LOG=1, EMAIL_SERVER="127.0.0.1", EMAIL_SERVER_PORT=relay.getsockname()[1],
                          EMAIL_TLS="none", EMAIL_TO="admin@example.com")
        report = tmp_path / "r.json"
        run = hotvcb_background(host, "-m", "web", "-g", conf, "--json-report", str(report))
        taken = []

        def mailing():
            try:
                taken.append(relay.accept()[0])  # and never a word back
            except BlockingIOError:
                pass
            return bool(taken)

        try:
            wait_for(mailing, timeout=60, what="the run to connect to the relay")
            time.sleep(0.5)
            began = time.monotonic()
            run.send_signal(signal.SIGTERM)
            out, _ = run.communicate(timeout=60)
            took = time.monotonic() - began
        finally:
            kill(run.pid)
            for c in taken:
                c.close()
    assert took < 10 and run.returncode == 2, (took, run.returncode, out)
    assert "Final status: ERROR: interrupted by SIGTERM" in out, out
    data = json.loads(report.read_text())
    assert data["exit_code"] == 2 and data["status"].startswith("ERROR: interrupted by SIGTERM"), data
    assert len(sealed(host, "web")) == 1, out


# -- QEMU: a paused guest, a qcow2's own snapshots (tests/qemulab.py: `-S`, TCG, disks of a few MiB) -----------

@pytest.fixture
def lab(tmp_path):
    from qemuvm import QEMU, QEMU_IMG
    if QEMU is None or QEMU_IMG is None:
        pytest.skip("needs qemu-system-x86_64 and qemu-img (scripts/install-test-deps)")
    from qemulab import opened
    with opened(tmp_path, "k30") as made:
        yield made


def test_a_paused_qemu_guest_is_selected_by_power_state_suspended_and_named_when_skipped(lab):
    """A paused guest (`stop` on its monitor) counted as suspended, which neither `--power-state on` nor `off`
    selects, and nothing could: the VM was never backed up by a filtered job. config-reference: `on` backs up
    VMs that are powered on, `off` those that are off; a paused or suspended VM is a third state, `suspended`,
    which selects it, and a skip names it."""
    image = lab.image("p.qcow2")
    lab.start("paused", ["file=%s,format=qcow2,if=virtio" % image])
    lab.qmp("cont")
    lab.qmp("stop")
    assert lab.qmp("query-status")["status"] == "paused"
    conf = lab.conf()
    for state in ("on", "off"):
        code, out = lab.hotvcb("--qemu", lab.inventory, "backup", "-m", "paused", "-g", conf, "-w", lab.workdir,
                               "--power-state", state)
        assert "skipped" in out and "suspended" in out and "--power-state suspended" in out, out
        assert lab.backups("paused") == [], out
    code, out = lab.hotvcb("--qemu", lab.inventory, "backup", "-m", "paused", "-g", conf, "-w", lab.workdir,
                           "--power-state", "suspended")
    assert code == 0 and len(lab.backups("paused")) == 1, out
    assert lab.qmp("query-status")["status"] == "paused", "the backup left the guest as it found it"


def test_a_qcow2_with_internal_snapshots_is_refused_unless_allowed(lab):
    """`qemu-img snapshot -c before-upgrade` (or `savevm`) is the admin's own snapshot. ghettoVCB's
    ALLOW_VMS_WITH_SNAPSHOTS_TO_BE_BACKEDUP=0 skips a VM that has snapshots of the admin's; hotvcb backed the
    QEMU VM up anyway. It is refused, naming the snapshot and the key, and backed up with the key at 1."""
    from qemuvm import qemu_img

    image = lab.image("s.qcow2")
    r = qemu_img("snapshot", "-c", "before-upgrade", image)
    assert r.returncode == 0, r.stdout + r.stderr
    lab.start("snappy", ["file=%s,format=qcow2,if=virtio" % image])
    code, out = lab.backup("snappy")
    assert code != 0 and lab.backups("snappy") == [], out
    assert "before-upgrade" in out and "ALLOW_VMS_WITH_SNAPSHOTS_TO_BE_BACKEDUP=1" in out, out
    code, out = lab.backup("snappy", ALLOW_VMS_WITH_SNAPSHOTS_TO_BE_BACKEDUP=1)
    assert code == 0 and len(lab.backups("snappy")) == 1, out


# -- the command line: an option given twice, a blank value ------------------------------------------------------

@pytest.mark.parametrize("command", ["list", "verify"])
def test_repo_and_volume_together_are_a_usage_error_naming_both(qemu, tmp_path, command):
    """`list --repo R --volume V`: the repository was read and --volume dropped without a word (a script
    that means the folder read the repository, or failed on it). Each names where the backups are."""
    (tmp_path / "repo").mkdir()
    r = local("--qemu", qemu[0], command, "-g", qemu[1], "--repo", tmp_path / "repo", "--volume", tmp_path / "vol")
    assert r.returncode == 1 and "--repo" in r.stderr and "--volume" in r.stderr, said(r)
    assert "repository" not in r.stderr.replace("--repo", ""), said(r)  # refused before the repository is read


@pytest.mark.parametrize("words", [
    ["--qemu", "{A}", "--qemu", "{B}", "list", "-g", "{conf}"],
    ["--qemu", "{A}", "list", "-g", "{conf}", "--volume", "{A}", "--volume", "{B}"],
    ["--qemu", "{A}", "backup", "-m", "web", "-g", "{conf}", "-w", "{A}", "-w", "{B}"],
])
def test_one_option_given_twice_with_two_values_names_both(qemu, tmp_path, words):
    """`--qemu A --qemu B` (a wrapper adding its own): the last silently won, and the run worked on another
    hypervisor's VMs than the first value named. The same value twice stays fine."""
    (tmp_path / "B").mkdir()
    values = {"A": qemu[0], "B": tmp_path / "B", "conf": qemu[1]}
    r = local(*[w.format(**values) for w in words])
    option = words[words.index("{B}") - 1]
    assert r.returncode == 1 and "%s given twice" % option in r.stderr, said(r)
    assert str(values["A"]) in r.stderr and str(values["B"]) in r.stderr, said(r)
    same = [w.replace("{B}", "{A}") for w in words]
    r = local(*[w.format(**values) for w in same])
    assert "given twice" not in r.stderr, said(r)


@pytest.mark.parametrize("option", ["-l", "-w", "--json-report", "-g"])
def test_a_value_of_only_spaces_is_refused_naming_the_option(qemu, tmp_path, option):
    """`-l " "` (a variable holding a space) wrote the log to a file named " " in whatever folder cron ran in;
    an empty value is refused, and a blank one names nothing either."""
    conf = [] if option == "-g" else ["-g", qemu[1]]
    r = local("--qemu", qemu[0], "backup", "-a", *conf, option, " ", cwd=tmp_path)
    assert r.returncode == 1 and option in r.stderr and "blank" in r.stderr, said(r)
    assert not (tmp_path / " ").exists()


# -- a VM list from a pipe ------------------------------------------------------------------------------------

def _bash(line, cwd, timeout=60):
    import subprocess
    from localcli import SRC
    return subprocess.run(["bash", "-c", line], capture_output=True, text=True, timeout=timeout, cwd=str(cwd),
                          env=dict(os.environ, PYTHONPATH=SRC, HOTVCB=" ".join([__import__("sys").executable,
                                                                                "-m", "hotvcb"])))


@pytest.mark.parametrize("option", ["-f", "-e"])
def test_a_vm_list_from_process_substitution_is_read_as_ghettovcb_read_it(qemu, tmp_path, option):
    """`hotvcb -f <(grep web all-vms) -g F` (ghettoVCB `cat`s its list, so a pipe worked there) was refused:
    "is not a regular file". The pipe is read, once: here the VM it names is not on the host (-f), or the
    exclude names no VM (-e), and the run says so by its name."""
    what = "-a -e" if option == "-e" else "-f"
    r = _bash("$HOTVCB --qemu '%s' backup %s <(printf 'ghost\\n') -g '%s' -d dryrun" % (qemu[0], what, qemu[1]),
              tmp_path)
    assert "regular file" not in said(r) and "ghost" in said(r), said(r)


def test_a_fifo_nobody_writes_does_not_hang_the_run(qemu, tmp_path, monkeypatch, capsys):
    """A named pipe with no writer: the run waits for one as `cat` would, but not for ever (every wait is
    bounded: pipetext's 60 s, made 1 s here), and says what it waited for."""
    from hotvcb import pipetext
    from hotvcb.cli import main

    monkeypatch.setattr(pipetext, "SECONDS", 1)
    fifo = tmp_path / "vms"
    os.mkfifo(str(fifo))
    assert main(["--qemu", str(qemu[0]), "backup", "-f", str(fifo), "-g", str(qemu[1])]) == 1
    assert "nothing opened the named pipe for writing within 1 s" in capsys.readouterr().out


def test_schedule_install_refuses_a_list_from_a_pipe(fake_crontab, qemu_site, tmp_path):
    """`schedule install -- -f <(...)` would install /dev/fd/63, which names nothing at 1 a.m."""
    qmp, conf = qemu_site
    r = _bash("$HOTVCB schedule install --platform linux --cron '0 1 * * *' -- --qemu '%s' -f <(printf 'vm one\\n') "
              "-g '%s'" % (qmp, conf), tmp_path)
    assert r.returncode == 1 and "pipe" in r.stderr and _our_line(fake_crontab) is None, said(r)


@needs_root
def test_a_vm_list_from_a_pipe_goes_to_the_host_in_ssh_mode(site, host, tmp_path):
    """SSH mode reads the list for the run, for the per-VM files it sends, and to send it to the host: a pipe
    gives its text once, so each of them must get the one read, or the host's run gets an empty list."""
    import shlex
    import subprocess

    host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    conf = write_conf(host)
    line = " ".join(shlex.quote(a) for a in site.argv("-f", "LIST", "-g", conf)).replace("LIST", "<(printf 'web\\n')")
    r = subprocess.run(["bash", "-c", line], capture_output=True, text=True, timeout=300, env=site.env(), cwd=str(tmp_path))
    assert r.returncode == 0 and len(sealed(host, "web")) == 1, r.stdout + r.stderr


@needs_root
def test_the_copy_rate_line_says_it_is_measured_on_the_virtual_size(host):
    """A 64 MiB thin disk holding almost nothing is copied in no time: "done in 0 s (6400.0 MB/s)" read as the
    datastore's speed, which it is not. The line says what it divides: the disk's virtual size."""
    host.create_vm("web", "datastore1", [{"size": "64M"}], power="on")
    r = hotvcb(host, "-m", "web", "-g", write_conf(host))
    assert r.returncode == 0, r.stdout + r.stderr
    [line] = [ln for ln in r.stdout.splitlines() if " done in " in ln]
    assert re.search(r"\([\d.]+ MB/s of its [\d.]+ \w+ virtual size\)", line), line
