"""Outside test, stop 27 (c): an ESXi admin scheduling SSH hosts from a Linux box by their names (job named after
the host), the scheduled line's paths, `-m -web`, and SSH mode's per-VM files and restore files. One simulated host
and one loopback sshd for the whole file (host names are reached through `--ssh-option HostName=127.0.0.1`), a
fake `crontab` per test; tiny disks. Each defect is a strict xfail until fixed."""

import os
import re
import subprocess
import sys

import pytest

from simhost import REPO, make_host, needs_root, write_conf
from sshd import needs_sshd
from sshsite import host_sshd
from test_outsider_s27admin import fake_crontab  # noqa: F401  (the fixture)

pytestmark = [needs_root, needs_sshd]

VM = "web01"


class Lab:
    def __init__(self, host, sshd, tmp):
        self.host, self.sshd, self.tmp = host, sshd, tmp
        self.folder = tmp / "onhost"
        self.conf = write_conf(host)

    def env(self, **extra):
        return dict(os.environ, PYTHONPATH=REPO, HOTVCB_HOST_FOLDER=str(self.folder), **extra)

    def reach(self, dest=None, port=None):
        """Global options reaching the sshd as `dest` (a name the admin uses) at `--port` `port` (the sshd's own
        port is forced with `-o Port=`, which comes first on ssh's command line and wins)."""
        s = self.sshd
        return ["--host", dest or s.target, "--port", str(port or s.port), "--identity", s.identity,
                "--known-hosts", s.known_hosts, "--ssh-option", "HostName=127.0.0.1",
                "--ssh-option", "Port=%d" % s.port]

    def run(self, *args, env=None, timeout=300, cwd=REPO, glob=None):
        argv = [sys.executable, "-m", "hotvcb"] + (glob if glob is not None else self.sshd.cli_args()) \
            + [str(a) for a in args]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env or self.env(), cwd=str(cwd))
        r.out = r.stdout + r.stderr
        return r


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("s27c")
    host = make_host(tmp / "host")
    try:
        host.create_vm(VM, "datastore1", [{"size": "1M"}], power="on")
        with host_sshd(host, tmp / "sshd") as sshd:
            yield Lab(host, sshd, tmp)
    finally:
        host.stop()


@pytest.fixture
def cron(fake_crontab, lab):
    """A `crontab` first on PATH keeping the Linux box's table in a file; returns (table, env)."""
    table, path = fake_crontab
    return table, lab.env(PATH=path)


def _install(lab, env, glob, *backup_args, cwd=REPO):
    return lab.run("schedule", "install", "--platform", "linux", "--cron", "0 21 * * *", "--",
                   *backup_args, env=env, glob=glob, cwd=cwd)


def _jobs(table):
    return re.findall(r"# hotvcb:(\S+)$", table.read_text(), re.M) if table.exists() else []


# -- 1. two hosts behind one long name, told apart by the port, get one job ---------------------------------
LONG = "esxi-gw.nested-lab.datacenter-frankfurt.infrastructure.example.com"  # 66 characters


def test_two_hosts_differing_only_by_port_behind_a_long_name_get_two_jobs(lab, cron):
    """A nested-ESXi lab reached through one gateway by port (`--host root@<long FQDN> --port 2201`, then 2202):
    the job is named `<host>-<port>` cut to 64 characters, so the port is cut off and both hosts get one job
    name. Installing the second says `installed job ...` and silently replaces the first host's cron line (no
    warning): the first host is never backed up again - what naming jobs after hosts was meant to end."""
    table, env = cron
    for port in (2201, 2202):
        r = _install(lab, env, lab.reach("root@" + LONG, port), "-a", "-g", lab.conf)
        assert r.returncode == 0, r.out
    assert len(_jobs(table)) == 2, table.read_text()


# -- 2. one host, spelled in another case, gets a second job without a word ---------------------------------
def test_the_same_host_in_another_case_is_one_job_or_a_warning(lab, cron):
    """The admin installed `--host root@ESXi01` (as the vSphere client shows the name), later re-runs the
    README's install with `--host root@esxi01`. Host names are case-blind, so it is the same ESXi host, but the
    second install makes a second job `esxi01` beside `ESXi01` without the warning that another job backs up
    that host: both start at 21:00, and the second fails on the host's run lock every night (or both snapshot
    the same VMs)."""
    table, env = cron
    for dest in ("root@ESXi01", "root@esxi01"):
        r = _install(lab, env, lab.reach(dest), "-a", "-g", lab.conf)
        assert r.returncode == 0, r.out
    assert len(_jobs(table)) == 1 or "also back" in r.out, (r.out, table.read_text())


# -- 3. the scheduled line's paths: `-g=FILE`, `--j FILE` ----------------------------------------------------
def _words(table):
    import shlex
    line = table.read_text().splitlines()[-1]
    return shlex.split(line.split(" # hotvcb:")[0])


def test_g_equals_file_is_installed_as_the_run_reads_it(lab, cron):
    """`hotvcb backup -a -g=hotvcb.conf` reads ./hotvcb.conf (argparse takes `-g=FILE` for `-g FILE`), and
    `schedule install` checks that very file and says `installed job`. But the cron line holds
    `-g<cwd>/=hotvcb.conf`: every night the run looks for a file named `=hotvcb.conf` and fails with no backup."""
    table, env = cron
    r = _install(lab, env, lab.reach(), "-a", "-g=" + os.path.basename(lab.conf), cwd=lab.host.root)
    assert r.returncode == 0, r.out
    words = _words(table)
    given = [w for w in words if w.startswith("-g")]
    assert given and any(os.path.isfile(w[2:].lstrip("=")) for w in given), words
    assert lab.conf in " ".join(words), words


def test_json_report_cut_to_three_letters_is_made_absolute_too(lab, cron):
    """`backup --j report.json` is argparse's `--json-report report.json` (the only long option starting so),
    and the change promises the report path absolute 'in every argparse spelling'. `--json report.json` is, but
    `--j report.json` goes into cron as written, so cron's run writes $HOME/report.json and the monitoring that
    reads the report beside the config never sees another one."""
    table, env = cron
    r = _install(lab, env, lab.reach(), "-a", "-g", lab.conf, "--j", "report.json", cwd=lab.host.root)
    assert r.returncode == 0, r.out
    words = _words(table)
    assert os.path.join(lab.host.root, "report.json") in words, words


# -- 4. the hidden --unsent option given by hand ----------------------------------------------------------------
@pytest.mark.parametrize("value", ["x", "[1]"])
def test_unsent_given_by_a_user_is_a_usage_error_not_a_traceback(lab, value):
    """`--unsent` is hidden but argparse takes it (and its prefixes, `--un`) on every backup: a user trying it,
    or a wrapper passing a stale value, gets a Python traceback (JSONDecodeError / 'list' object has no attribute
    'items'), exit 1 - not `hotvcb: error: ...` and not the monitoring's UNKNOWN, before anything is logged."""
    r = lab.run("backup", "-m", VM, "-g", lab.conf, "-c", str(lab.tmp), "--unsent", value, "-d", "dryrun")
    assert "Traceback" not in r.out, r.out


# -- 5. the warning of another job backing up the same host ------------------------------------------------
def test_install_with_job_warns_of_the_hosts_job_already_there(lab, cron):
    """docs/operations.md: `install` warns when another job already backs up the same host. The admin scheduled
    `--host root@esxi01` (job `esxi01`), then adds `--job nightly` for the same host meaning to rename it: no
    warning, two cron lines now back up esxi01 (the second collides with the first's run lock every night, or
    doubles the snapshots), and `schedule show` is the only place to see it."""
    table, env = cron
    r = _install(lab, env, lab.reach("root@esxi01"), "-a", "-g", lab.conf)
    assert r.returncode == 0, r.out
    r = lab.run("schedule", "install", "--platform", "linux", "--cron", "0 21 * * *", "--job", "nightly", "--",
                "-a", "-g", lab.conf, env=env, glob=lab.reach("root@esxi01"))
    assert r.returncode == 0, r.out
    assert len(_jobs(table)) == 1 or "also back" in r.out, (r.out, table.read_text())


def test_install_does_not_tell_to_remove_another_ports_host(lab, cron):
    """Two nested ESXi hosts behind one gateway, `--host root@gw --port 2201` and `--port 2202`: the jobs are
    rightly `gw-2201` and `gw-2202` (the port tells the hosts apart), but installing the second warns `job
    gw-2201 also backs up root@gw ...: remove it with hotvcb schedule remove --job NAME unless both are meant
    to run` - the admin who follows it removes the other host's only backup job."""
    table, env = cron
    for port in (2201, 2202):
        r = _install(lab, env, lab.reach("root@gw", port), "-a", "-g", lab.conf)
        assert r.returncode == 0, r.out
    assert _jobs(table) == ["gw-2201", "gw-2202"], table.read_text()
    assert "also back" not in r.out, r.out


# -- 6. `-m --`: the VM named `--` ----------------------------------------------------------------------------
def test_m_double_dash_is_the_vm_named_double_dash_or_a_clear_refusal(lab, cron):
    """ghettoVCB's getopts takes the word after -m whatever it is, and hotvcb glues `-m -web` to read it so
    (`glue_dash_values`). For `-m --` the glued `-m--` is read by argparse as an empty value: `backup -m --`
    logs `error: no VM named '[]' on this host` (a name nobody typed), and `schedule install -- -m -- ...` ends
    in `hotvcb: internal error: AttributeError: 'list' object has no attribute 'lower'`, exit 1."""
    table, env = cron
    lab.host.create_vm("--", "datastore1", [{"size": "1M"}], power="on")
    r = lab.run("schedule", "install", "--platform", "linux", "--cron", "0 21 * * *", "--job", "dd", "--",
                "-m", "--", "-g", lab.conf, env=env)
    assert "internal error" not in r.out, r.out
    b = lab.run("backup", "-m", "--", "-g", lab.conf, "-d", "dryrun")
    assert "'[]'" not in b.out, b.out
    assert r.returncode == 0 and "Virtual Machine: -- (" in b.out, (r.out, b.out)


# -- 7. SSH mode: a -c folder without a file for the VM named ---------------------------------------------------
def test_ssh_backup_of_a_vm_without_a_per_vm_file_in_the_c_folder(lab, tmp_path):
    """The ghettoVCB folder given with `-c` holds per-VM files for some VMs only (and the script, the logs). Run
    locally or `--file-by-file`, a VM without a file there is backed up with the global settings. Run on the host
    over SSH (the default), only the named VMs' files are sent now, none here, so the host's copy of the folder
    is never made: `hotvcb: error: -c /tmp/.../run-XXXX/confdir: no such folder of per-VM configs` (a path on
    the host), `the run on the host ended without its report`, exit 1, no VM backed up - every night."""
    pervm = tmp_path / "ghettoVCB"
    pervm.mkdir()
    (pervm / "ghettoVCB.sh").write_text("#!/bin/sh\n")
    (pervm / "db01").write_text("VM_BACKUP_ROTATION_COUNT=2\n")
    here = lab.run("backup", "--file-by-file", "-m", VM, "-g", lab.conf, "-c", pervm, "-d", "dryrun")
    assert here.returncode == 0, here.out
    r = lab.run("backup", "-m", VM, "-g", lab.conf, "-c", pervm, "-d", "dryrun")
    assert r.returncode == 0 and "Final status: OK, only a dryrun." in r.out, r.out
    assert not re.search(r"/run-\w", r.out), r.out  # the host's run folder (the default log, hotvcb-dryrun-…, may show)


def test_install_with_job_says_when_it_takes_the_job_of_another_host(lab, cron):
    """`--job nightly` given for esxi02 where `nightly` backed up esxi01: the install replaces esxi01's line, and
    said nothing (esxi01 silently lost its nightly backup)."""
    table, env = cron
    for dest in ("root@esxi01", "root@esxi02"):
        r = lab.run("schedule", "install", "--platform", "linux", "--cron", "0 21 * * *", "--job", "nightly", "--",
                    "-a", "-g", lab.conf, env=env, glob=lab.reach(dest))
        assert r.returncode == 0, r.out
    assert _jobs(table) == ["nightly"], table.read_text()
    assert "job nightly backed up esxi01:" in r.out and "no longer backed up by it" in r.out, r.out
    r = lab.run("schedule", "install", "--platform", "linux", "--cron", "0 22 * * *", "--job", "nightly", "--",
                "-a", "-g", lab.conf, env=env, glob=lab.reach("root@esxi02"))
    assert r.returncode == 0 and "no longer backed up" not in r.out, r.out  # the same host again: no word
