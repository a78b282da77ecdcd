"""hotvcb schedule: cron expressions, command lines, the ESXi files (in a folder), Linux crontab and systemd."""

import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from cronsite import fake_crontab, qemu_site  # noqa: F401  (the fixtures)

from hotvcb import schedule
from hotvcb.errors import HostError, UsageError
from hotvcb.schedule import cron, esxi, linux, localsh

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "tests" / "data" / "esxi-samples"


def _sample_block(prefix: str, header: str) -> str:
    """One file out of a multi-file sample: the lines after `header` up to the next ## / #### line."""
    text = next(SAMPLES.glob(prefix + "*")).read_text(encoding="utf-8")
    body = []
    started = False
    for ln in text.split(header, 1)[1].splitlines()[1:]:
        if ln.startswith(("## ", "#####", "[root@")):
            if started:
                break
            continue
        started = True
        body.append(ln)
    return "\n".join(body).rstrip("\n") + "\n"


# -- cron expressions --------------------------------------------------------
@pytest.mark.parametrize("expr,calendar", [
    ("0 17 * * 4", "Thu *-*-* 17:00:00"),
    ("30 1 * * 2,4,6", "Tue,Thu,Sat *-*-* 01:30:00"),
    ("*/15 * * * *", "*-*-* *:00/15:00"),
    ("0 9-17 * * mon-fri", "Mon..Fri *-*-* 09..17:00:00"),
    ("0 0 1 * *", "*-*-01 00:00:00"),
    ("0 18 */7 * *", "*-*-01/7 18:00:00"),
    ("5 4 * * 0", "Sun *-*-* 04:05:00"),
    ("5 4 * * 7", "Sun *-*-* 04:05:00"),
    ("0 2 * * 5-7", "Fri..Sun *-*-* 02:00:00"),
    ("0 3 1,15 jan,jul *", "*-01,07-01,15 03:00:00"),
    ("0 0 * * 1-5/2", "Mon,Wed,Fri *-*-* 00:00:00"),
    ("@daily", "*-*-* 00:00:00"),
    ("@weekly", "Sun *-*-* 00:00:00"),
    ("@hourly", "*-*-* *:00:00"),
])
def test_oncalendar(expr, calendar):
    assert cron.to_oncalendar(expr) == calendar
    analyze = shutil.which("systemd-analyze")
    if analyze:  # systemd itself must accept what we write
        done = subprocess.run([analyze, "calendar", calendar], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert done.returncode == 0, done.stdout


@pytest.mark.parametrize("expr,words", [
    ("0 17 * *", "4 field"),
    ("61 * * * *", "out of range"),
    ("0 25 * * *", "out of range"),
    ("0 0 0 * *", "out of range"),
    ("0 0 * 13 *", "out of range"),
    ("0 0 * * 8", "out of range"),
    ("0 0 * * fri-mon", "backwards"),
    ("*/0 * * * *", "bad step"),
    ("0 0 L * *", "not a number"),
    ("0 0 ? * *", "not a number"),
    ("0 0 1,,2 * *", "empty item"),
    ("@reboot", "not a schedule"),
    ("@often", "unknown cron shorthand"),
    ("0 \u00b3 * * *", "not a number"),  # isdigit() says yes, int() says no
    ("*/\u00b3 * * * *", "bad step"),
    ("%s 0 * * *" % ("0" * 5000), "not a number"),  # Python 3.11+ refuses int() of 4,300 digits
    ("*/%s * * * *" % ("1" * 5000), "bad step"),
])
def test_bad_cron_expressions(expr, words):
    with pytest.raises(UsageError, match=words):
        cron.parse(expr)


def test_oncalendar_refuses_dom_and_dow_together():
    cron.parse("0 0 1 * 1")  # fine for cron itself
    with pytest.raises(UsageError, match="either"):
        cron.to_oncalendar("0 0 1 * 1")


def test_macros_become_five_fields_for_busybox():
    assert cron.parse("@daily").text == "0 0 * * *"
    assert cron.parse("  0  17 *  * 4 ").text == "0 17 * * 4"
    assert cron.parse("0 2 * * 5-7").text == "0 2 * * 0,5,6"  # busybox crond has no day 7


# -- command line ----------------------------------------------------------------
def test_backup_argv_checks_and_makes_paths_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = schedule.backup_argv(["--", "-f", "my list", "-g", "conf", "-e", "/abs/x", "-lrun.log"])
    assert argv == ["backup", "-f", str(tmp_path / "my list"), "-g", str(tmp_path / "conf"),
                    "-e", "/abs/x", "-l" + str(tmp_path / "run.log")]
    assert schedule.backup_argv(["-m", "conf", "-m", "x y"]) == ["backup", "-m", "conf", "-m", "x y"]
    assert schedule.backup_argv(["backup", "-a"]) == ["backup", "-a"]


def test_backup_argv_makes_the_json_report_absolute_in_every_spelling(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for words in (["--json-report", "r.json"], ["--json-report=r.json"], ["--json-rep", "r.json"], ["--json-r=r.json"],
                  ["--json", "r.json"], ["--json=r.json"]):
        argv = schedule.backup_argv(["-a"] + words)
        assert "".join(argv[2:]).endswith(str(tmp_path / "r.json")), argv
    # `--json FILE` (older jobs' spelling) still names the report's file; a bare `--json` says where it goes
    from hotvcb.commands import backup_cmd
    from hotvcb.errors import UsageError
    assert backup_cmd.parse(["-a", "--json", "r.json"]).json_report == "r.json"
    with pytest.raises(UsageError, match="--json-report FILE"):
        backup_cmd.parse(["-a", "--json"])
    with pytest.raises(UsageError, match="--json-report FILE"):
        backup_cmd.parse(["-a", "--json", "-g", "conf"])
    assert schedule.backup_argv(["-a", "--json-report", "/abs/r.json"]) == ["backup", "-a", "--json-report",
                                                                            "/abs/r.json"]


@pytest.mark.parametrize("words,made", [
    (["-g=c"], ["-g=%s/c"]), (["-gc"], ["-g%s/c"]), (["-ag", "c"], ["-ag", "%s/c"]), (["-agc"], ["-ag%s/c"]),
    (["--json-r", "r"], ["--json-r", "%s/r"]), (["--json-r=r"], ["--json-r=%s/r"]),
    (["--j", "r"], ["--j", "%s/r"]), (["--j=r"], ["--j=%s/r"]),  # older jobs' abbreviation stays unambiguous
    (["--ident", "k"], ["--ident", "%s/k"]),
    (["-d", "dryrun", "-lx"], ["-d", "dryrun", "-l%s/x"]), (["-m", "-g"], ["-m", "-g"]),
    (["--power-state", "on"], ["--power-state", "on"]), (["-g", ""], ["-g", ""]),
])
def test_backup_argv_reads_the_words_as_argparse_does(tmp_path, monkeypatch, words, made):
    """The path options are the backup parser's own, in argparse's spellings: `-g=FILE` was installed as
    `-g<cwd>/=FILE`, `--j FILE` (--json-report) as written; a value that is no path stays as it is."""
    monkeypatch.chdir(tmp_path)
    assert schedule.backup_argv(words) == ["backup"] + [w % tmp_path if "%s" in w else w for w in made]


def test_job_words_take_a_leading_dash_value_as_the_run_does(tmp_path, monkeypatch):
    """`-m -web` is VM "-web" (ghettoVCB's getopts), for the run and for the installed line alike: not
    refused, and its `-w` not made a work folder `-w<cwd>/eb`."""
    from hotvcb.commands import schedule_cmd

    monkeypatch.chdir(tmp_path)
    glob, rest = schedule_cmd.split_job_args(["--", "-m", "-web", "-f", "-list", "--host", "root@h", "-j", "-x"])
    assert glob == ["--host", "root@h"] and rest == ["-m-web", "-f-list", "-j-x"]
    assert schedule.backup_argv(rest) == ["backup", "-m-web", "-f" + str(tmp_path / "-list"), "-j-x"]
    # `-m --` is the VM `--` (argparse drops a glued `-m--`): parsed as such, and written as given
    glob, rest = schedule_cmd.split_job_args(["--", "-m", "--", "-g", "/c"])
    assert schedule_cmd.backup_cmd.parse(rest).vm_names == ["--"]
    assert schedule.backup_argv(rest) == ["backup", "-m", "--", "-g", "/c"]


def test_backup_argv_needs_arguments():
    with pytest.raises(UsageError, match="say what to back up"):
        schedule.backup_argv(["--"])


def test_absolute_paths_keep_the_admins_spelling(tmp_path, monkeypatch):
    """Relative to $PWD as the shell shows it (ESXi: /vmfs/volumes/datastore1, not the UUID getcwd() gives)."""
    real = tmp_path / "5f3c0e2a-uuid"
    real.mkdir()
    (tmp_path / "datastore1").symlink_to(real)
    monkeypatch.chdir(str(tmp_path / "datastore1"))
    monkeypatch.setenv("PWD", str(tmp_path / "datastore1"))
    assert schedule.absolute("vms") == str(tmp_path / "datastore1" / "vms")
    assert schedule.absolute("/vmfs/volumes/datastore1/x") == "/vmfs/volumes/datastore1/x"
    monkeypatch.setenv("PWD", "/elsewhere")  # a stale $PWD is not trusted
    assert schedule.absolute("vms") == str(real / "vms")


def test_a_path_python_made_absolute_keeps_the_admins_spelling_too(tmp_path, monkeypatch):
    """The pyz's path as python has it (getcwd(), the UUID) is named under $PWD as the job's own paths are."""
    real = tmp_path / "5f3c0e2a-uuid"
    real.mkdir()
    (tmp_path / "datastore1").symlink_to(real)
    monkeypatch.chdir(str(tmp_path / "datastore1"))
    monkeypatch.setenv("PWD", str(tmp_path / "datastore1"))
    assert schedule.as_seen(str(real / "hotvcb.pyz")) == str(tmp_path / "datastore1" / "hotvcb.pyz")
    assert schedule.as_seen("hotvcb.pyz") == str(tmp_path / "datastore1" / "hotvcb.pyz")
    assert schedule.as_seen("/elsewhere/hotvcb.pyz") == "/elsewhere/hotvcb.pyz"
    assert schedule.as_seen(str(tmp_path / "5f3c0e2a-uuidx" / "p")) == str(tmp_path / "5f3c0e2a-uuidx" / "p")


def test_cron_line_quotes_every_word_for_the_shell():
    names = ["/vmfs/volumes/data store/vms to back up", "it's", "$(reboot)", "a;b", "`x`", "50%"]
    job = schedule.Job("nightly", "0 17 * * 4", ["/bin/python", "/vmfs/volumes/ds/hotvcb.pyz", "backup", "-f"] + names,
                       "/var/log/hot vcb.log")
    line = schedule.cron_line(job, busybox=True)
    assert line.startswith("0 17 * * 4 /bin/python /vmfs/volumes/ds/hotvcb.pyz backup -f ")
    assert line.endswith(" >> '/var/log/hot vcb.log' 2>&1 # hotvcb:nightly")
    command = line.split(" ", 5)[5]
    words = shlex.split(command, comments=True)
    assert words == job.argv + [">>", "/var/log/hot vcb.log", "2>&1"]
    # and a real POSIX shell sees the same words
    probe = command.replace("/bin/python /vmfs/volumes/ds/hotvcb.pyz", "printf '%s\\n'", 1)
    probe = probe.split(" >> ")[0]
    out = subprocess.run(["sh", "-c", probe], stdout=subprocess.PIPE, universal_newlines=True).stdout
    assert out.splitlines() == ["backup", "-f"] + names
    assert schedule.cron_line(job, busybox=False).count("\\%") == 1


def test_busybox_crond_lines_refuse_hash():
    """busybox crond cuts a line at the first '#', quotes or not."""
    job = schedule.Job("j", "0 1 * * *", ["/bin/python", "x.pyz", "backup", "-m", "db #2"], "/var/log/x.log")
    with pytest.raises(UsageError, match="list file"):
        schedule.cron_line(job, busybox=True)
    assert "'db #2'" in schedule.cron_line(job, busybox=False)  # vixie cron only skips lines starting with #
    with pytest.raises(UsageError, match="'#'"):
        schedule.cron_line(job._replace(argv=job.argv[:3] + ["-a"], log="/var/log/#x.log"), busybox=True)
    with pytest.raises(UsageError, match="line break"):
        schedule.cron_line(job._replace(argv=job.argv[:3] + ["-m", "a\nb"]), busybox=False)


def test_markers_match_one_job_exactly():
    line = "0 1 * * * x # hotvcb:a"
    assert schedule.has_marker(line, "a") and not schedule.has_marker(line, "ab")
    assert not schedule.has_marker("0 1 * * * x # hotvcb:ab", "a")
    assert schedule.has_marker(line) and schedule.job_of(line) == "a"
    assert not schedule.has_marker("1 * * * * /sbin/auto-backup.sh")


@pytest.mark.parametrize("bad", ["", "a b", "../x", "-x", "a;b", "x" * 65, "nightly\n"])
def test_job_names(bad):
    with pytest.raises(UsageError):
        schedule.check_job_name(bad)


@pytest.mark.parametrize("host,port,name", [
    (None, None, "hotvcb"), ("esxi01", None, "esxi01"), ("esxi01.example.com", 22, "esxi01.example.com"),
    ("10.0.0.5", 2222, "10.0.0.5-2222"), ("fe80::20c:29ff:fe12:3456", None, "fe80__20c_29ff_fe12_3456"),
    ("::1", None, "1"), ("ESXi01", None, "esxi01"),
    # cut to 64 with a hash of the whole host, the port kept: cut as a whole, hosts told apart by the
    # port (or by the end of a long name) were one job, the second install replacing the first's line
    ("x" * 70, None, "x" * 55 + "-c71bd109"), ("x" * 70, 2201, "x" * 50 + "-c71bd109-2201"),
])
def test_default_job_name_is_the_ssh_hosts(host, port, name):
    """Without --job an SSH host's job is named after it: a second host no longer replaces the first's."""
    assert schedule.default_job(host, port) == name
    assert schedule.check_job_name(name) == name


def test_install_warns_of_another_job_of_the_same_host(fake_crontab, capsys):
    """An older hotvcb named every job `hotvcb`: re-installed under the host's name, the old line would back
    the host up a second time unless the admin is told."""
    from hotvcb.commands import schedule_cmd, schedule_hosts

    sched = linux.CrontabScheduler()
    sched.install(schedule.Job("hotvcb", "0 1 * * *", ["hotvcb", "--host", "root@esxi01", "backup", "-a"], None))
    sched.install(schedule.Job("esxi02", "0 1 * * *", ["hotvcb", "--host", "root@esxi02", "backup", "-a"], None))
    assert schedule_hosts.jobs_of_host(sched, False, "esxi01", "root@esxi01") == ["hotvcb"]
    assert schedule_hosts.jobs_of_host(sched, False, "esxi02", "root@esxi02") == []
    # the same host in another case, or another user, is the same host; another port is another host
    assert schedule_hosts.jobs_of_host(sched, False, "x", "admin@ESXi02") == ["esxi02"]
    assert schedule_hosts.jobs_of_host(sched, False, "x", "root@esxi02", 2222) == []
    args = schedule_cmd.argparse.Namespace(all_jobs=False, job=None, host="root@esxi03", platform="linux",
                                           systemd=False, unit_dir=linux.UNIT_DIR)
    assert schedule_cmd.run_remove(args) == 0
    out = capsys.readouterr().out
    assert "no hotvcb job 'esxi03' installed" in out and "(installed: esxi02, hotvcb; say which with --job)" in out


def test_show_with_a_job_shows_that_job_only(fake_crontab, capsys, tmp_path):
    """`show --job daily` listed every job (--job was taken and ignored); a job not installed is said so."""
    from hotvcb.commands import schedule_cmd

    fake_crontab.write_text("0 2 * * * x # hotvcb:daily\n0 4 * * 6 y # hotvcb:weekly\n")
    args = schedule_cmd.argparse.Namespace(job="daily", platform="linux", systemd=False,
                                           unit_dir=str(tmp_path / "units"))
    assert schedule_cmd.run_show(args) == 0
    out = capsys.readouterr().out
    assert "job daily in" in out and "weekly" not in out
    args.job = "gone"
    assert schedule_cmd.run_show(args) == 1  # a script asking whether its job is installed is not told yes
    assert capsys.readouterr().out.strip() == "hotvcb job 'gone' is not installed"


def test_self_command_from_a_checkout_runs_this_checkout():
    argv = schedule.self_command(on_esxi=False)
    assert argv[-2:] == ["-m", "hotvcb"]
    env = {"PATH": os.environ["PATH"]}
    if argv[0] == "/usr/bin/env":
        env[argv[1].split("=", 1)[0]] = argv[1].split("=", 1)[1]
        argv = argv[2:]
    done = subprocess.run(argv + ["--version"], cwd="/", env=env, stdout=subprocess.PIPE, universal_newlines=True)
    assert done.stdout.startswith("hotvcb ")


# -- ESXi files in a folder ------------------------------------------------------------
CRON_70 = _sample_block("crontab-root_01", "## source C2: Chinese engineering notes")
LOCAL_SH_8 = _sample_block("local-sh_01", "## B) ESXi 8")


def _pristine_crontab():
    return "\n".join(ln for ln in CRON_70.splitlines() if "added by the user" not in ln) + "\n"


def _pristine_local_sh():
    return "\n".join(ln for ln in LOCAL_SH_8.splitlines() if not ln.startswith("esxcli")) + "\n"


@pytest.fixture
def host(tmp_path):
    """A folder laid out like an ESXi root, with a busybox that starts a stand-in crond."""
    root = tmp_path / "root"
    (root / "var/spool/cron/crontabs").mkdir(parents=True)
    (root / "var/spool/cron/crontabs/root").write_text(_pristine_crontab())
    (root / "etc/rc.local.d").mkdir(parents=True)
    (root / "etc/rc.local.d/local.sh").write_text(_pristine_local_sh())
    os.chmod(str(root / "etc/rc.local.d/local.sh"), 0o1755)
    (root / "var/run").mkdir(parents=True)
    bb = root / "usr/lib/vmware/busybox/bin/busybox"
    bb.parent.mkdir(parents=True)
    bb.write_text('#!/bin/sh\n[ "$1" = crond ] || exit 1\nsleep 300 >/dev/null 2>&1 &\necho $! > %s\necho "$*" >> %s\n'
                  % (root / "var/run/crond.pid", tmp_path / "busybox.log"))
    ab = root / "sbin/auto-backup.sh"
    ab.parent.mkdir(parents=True)
    ab.write_text("#!/bin/sh\necho saved >> %s\n" % (tmp_path / "auto-backup.log"))
    for f in (bb, ab):
        f.chmod(0o755)
    yield root
    pid = (root / "var/run/crond.pid").read_text().strip() if (root / "var/run/crond.pid").exists() else ""
    if pid:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass


def _job(name="hotvcb"):
    return schedule.Job(name, "0 17 * * 4", ["/bin/python", "/vmfs/volumes/ds/hotvcb.pyz", "backup", "-f",
                                             "/vmfs/volumes/ds/vm list"], "/var/log/hotvcb-%s.log" % name)


def test_esxi_install_twice_gives_one_line_and_one_block(host, tmp_path):
    warnings = []
    sched = esxi.EsxiScheduler(str(host), warn=warnings.append, version=(8, 0, 1))
    first_pid = None
    for _ in range(2):
        line = sched.install(_job())
        pid = sched.crond_pid()
        assert pid and pid != first_pid and sched.crond_running()
        first_pid = pid
    crontab = (host / "var/spool/cron/crontabs/root").read_text()
    assert crontab == _pristine_crontab() + line + "\n"
    local = (host / "etc/rc.local.d/local.sh").read_text()
    assert local.count("# hotvcb:hotvcb begin") == 1 and local.count("# hotvcb:hotvcb end") == 1
    assert local.rstrip().endswith("exit 0"), "the block goes above the final exit 0"
    assert local.index("# hotvcb:hotvcb begin") > local.index("UEFI secure boot")
    assert shlex.quote(line) in local
    assert "/usr/lib/vmware/busybox/bin/busybox crond" in local
    assert os.stat(str(host / "etc/rc.local.d/local.sh")).st_mode & 0o7777 == 0o1755
    assert (tmp_path / "auto-backup.log").read_text().count("saved") == 2
    assert (tmp_path / "busybox.log").read_text().splitlines() == ["crond", "crond"]
    assert warnings == []


def test_esxi_jobs_are_independent_and_remove_restores_the_files(host):
    sched = esxi.EsxiScheduler(str(host), version=(7, 0, 3))
    sched.install(_job("a"))
    sched.install(_job("ab"))
    status = sched.status()
    assert sorted((e.job, e.where) for e in status.entries) == [
        ("a", esxi.LOCAL_SH), ("a", esxi.CRONTAB), ("ab", esxi.LOCAL_SH), ("ab", esxi.CRONTAB)]
    assert sched.remove("a") == ["a"]
    assert {e.job for e in sched.status().entries} == {"ab"}
    assert sched.remove("a") == []
    assert sched.remove(None) == ["ab"]
    assert (host / "var/spool/cron/crontabs/root").read_text() == _pristine_crontab()
    assert (host / "etc/rc.local.d/local.sh").read_text() == _pristine_local_sh()


def test_esxi_4x_uses_rc_local(host):
    rc = host / "etc/rc.local"
    original = "#! /bin/ash\nexport PATH=/sbin:/bin\n\n/bin/busybox crond\n"
    rc.write_text(original)
    sched = esxi.EsxiScheduler(str(host), version=(4, 1, 0))
    assert sched.boot_file() == esxi.RC_LOCAL
    sched.install(_job())
    text = rc.read_text()
    assert text.startswith(original) and "# hotvcb:hotvcb end" in text
    assert "# hotvcb" not in (host / "etc/rc.local.d/local.sh").read_text()
    sched.remove("hotvcb")
    assert rc.read_text() == original


def test_esxi_secure_boot_warns(host):
    sb = host / "usr/lib/vmware/secureboot/bin/secureBoot.py"
    sb.parent.mkdir(parents=True)
    sb.write_text("#!/bin/sh\necho Enabled\n")
    sb.chmod(0o755)
    warnings = []
    sched = esxi.EsxiScheduler(str(host), warn=warnings.append, version=(8, 0, 1))
    sched.install(_job())
    assert sched.secure_boot() is True
    assert any("Secure Boot" in w and "local.sh" in w for w in warnings)
    sb.write_text("#!/bin/sh\necho Disabled\n")
    assert sched.secure_boot() is False


def test_esxi_secure_boot_from_esxcli(host):
    cli = host / "bin/esxcli"
    cli.parent.mkdir(parents=True)
    cli.write_text("#!/bin/sh\nprintf '   Mode: TPM\\n   Require Executables Only From Installed VIBs: true\\n"
                   "   Require Secure Boot: true\\n'\n")
    cli.chmod(0o755)
    assert esxi.EsxiScheduler(str(host), version=(7, 0, 3)).secure_boot() is True


def test_esxi_version_text():
    assert esxi.parse_version("VMware ESXi 7.0.3 build-20328353") == (7, 0, 3)
    assert esxi.parse_version(" VMware ESXi 5.5.0 build-3248547") == (5, 5, 0)
    assert esxi.parse_version("VMware ESX Server 3i 3.5.0 build-207095") == (3, 5, 0)
    assert esxi.parse_version("") is None


def test_esxi_crond_gone_or_missing_pid_file(host):
    sched = esxi.EsxiScheduler(str(host), version=(7, 0, 3))
    assert sched.crond_pid() is None
    (host / "var/run/crond.pid").write_text("999999999\n")
    assert not sched.crond_running()
    sched.restart_crond()  # a stale pid is not an error
    assert sched.crond_running()


# -- Linux crontab ----------------------------------------------------------------
def test_linux_crontab_round_trip_keeps_other_lines(fake_crontab):
    fake_crontab.write_text("MAILTO=me\n5 * * * * other-job 100%\n")
    sched = linux.CrontabScheduler()
    line = sched.install(_job())
    sched.install(_job())
    assert fake_crontab.read_text() == "MAILTO=me\n5 * * * * other-job 100%\n" + line + "\n"
    assert [e.job for e in sched.status()] == ["hotvcb"]
    assert sched.remove("hotvcb") == ["hotvcb"]
    assert fake_crontab.read_text() == "MAILTO=me\n5 * * * * other-job 100%\n"


def test_linux_crontab_starts_from_none(fake_crontab):
    sched = linux.CrontabScheduler()
    assert sched.status() == [] and sched.remove(None) == []
    sched.install(_job("x"))
    assert fake_crontab.read_text().endswith("# hotvcb:x\n")


SYSTEM_PYTHON = "/usr/bin/python3"  # one that user nobody may run (pyenv's under /root is not)
needs_real_crontab = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("crontab") or not shutil.which("runuser")
    or not os.path.exists(SYSTEM_PYTHON), reason="needs root, runuser, /usr/bin/python3 and a real crontab")


@needs_real_crontab
def test_linux_real_crontab_round_trip_as_nobody(tmp_path_factory):
    """The real crontab(1), run by an unprivileged user whose table we may clobber."""
    # nobody cannot read a checkout under a 0700 folder (CI clones into mktemp -d)
    readable = Path(tempfile.mkdtemp(prefix="hotvcb-nobody-", dir="/tmp"))
    shutil.copytree(str(ROOT / "hotvcb"), str(readable / "hotvcb"))
    # nobody's own QEMU VM "vm one" (its QMP folder is nobody's, so no root is needed), list, config, target
    (readable / "qmp").mkdir()
    (readable / "qmp" / "vm one.qmp").write_text("")
    (readable / "vm list 100%").write_text("vm one\n")
    (readable / "backups").mkdir()
    (readable / "hotvcb.conf").write_text("VM_BACKUP_VOLUME=%s\n" % (readable / "backups"))
    for path in [readable] + list(readable.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)
    os.chown(str(readable / "qmp"), 65534, 65534)

    def hotvcb(*args):
        return subprocess.run(["runuser", "-u", "nobody", "--", "env", "PYTHONPATH=%s" % readable, SYSTEM_PYTHON,
                               "-m", "hotvcb", "--qemu", str(readable / "qmp"), "schedule"] + list(args),
                              cwd="/", stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)

    def table():
        return subprocess.run(["crontab", "-u", "nobody", "-l"], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, universal_newlines=True).stdout

    install = ["install", "--platform", "linux", "--cron", "0 17 * * 4", "--log", "/tmp/hotvcb-nobody.log", "--",
               "-f", str(readable / "vm list 100%"), "-g", str(readable / "hotvcb.conf")]
    subprocess.run(["crontab", "-u", "nobody", "-r"], stderr=subprocess.DEVNULL)
    try:
        for _ in range(2):
            done = hotvcb(*(install + ["--parallel", "0"]))
            assert done.returncode != 0 and "not valid" in done.stdout  # refused: nothing installed
            done = hotvcb(*install)
            assert done.returncode == 0, done.stdout
        lines = [ln for ln in table().splitlines() if "hotvcb" in ln]
        assert len(lines) == 1
        assert "'%s/vm list 100\\%%'" % readable in lines[0] and lines[0].endswith("# hotvcb:hotvcb")
        shown = hotvcb("show", "--platform", "linux")
        assert "job hotvcb in crontab of nobody" in shown.stdout
        assert hotvcb("remove", "--platform", "linux").stdout.strip() == "removed job(s): hotvcb"
        assert "hotvcb" not in table()
    finally:
        subprocess.run(["crontab", "-u", "nobody", "-r"], stderr=subprocess.DEVNULL)
        shutil.rmtree(str(readable), ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runuser") or not os.path.exists(SYSTEM_PYTHON),
                    reason="needs root, runuser and /usr/bin/python3")
def test_not_root_is_told_that_root_is_needed_and_why(tmp_path):
    """Issue 10 item 5, as user nobody through the CLI: one line naming root and the reason."""
    readable = Path(tempfile.mkdtemp(prefix="hotvcb-nobody-", dir="/tmp"))
    try:
        shutil.copytree(str(ROOT / "hotvcb"), str(readable / "hotvcb"))
        for sub in ("qmp", "own", "bin", "backups"):
            (readable / sub).mkdir()
        (readable / "qmp" / "vm.qmp").write_text("")  # root's QEMU VM
        (readable / "own" / "vm.qmp").write_text("")  # nobody's own
        (readable / "hotvcb.conf").write_text("VM_BACKUP_VOLUME=%s\n" % (readable / "backups"))
        (readable / "bin" / "crontab").write_text(  # a crontab(1) that cannot write its spool
            '#!/bin/sh\n[ "$1" = -l ] && { echo "no crontab for nobody" >&2; exit 1; }\n'
            'echo "crontab: mkstemp: Permission denied" >&2; exit 1\n')
        for path in [readable] + list(readable.rglob("*")):
            path.chmod(0o755 if path.is_dir() else 0o644)
        (readable / "bin" / "crontab").chmod(0o755)
        os.chown(str(readable / "own"), 65534, 65534)
        conf = str(readable / "hotvcb.conf")

        def hotvcb(*args):
            return subprocess.run(["runuser", "-u", "nobody", "--", "env", "PYTHONPATH=%s" % readable,
                                   "PATH=%s:/usr/bin:/bin" % (readable / "bin"), SYSTEM_PYTHON, "-m", "hotvcb"]
                                  + list(args), cwd="/", stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  universal_newlines=True, timeout=60)

        cron = ["schedule", "install", "--cron", "0 1 * * *"]
        cases = [
            (["--qemu", str(readable / "qmp"), "backup", "-a", "-g", conf], "must run as root here",
             "run lock lives in %s" % (readable / "qmp")),
            (["backup", "-a", "-g", conf], "must run as root here", "vim-cmd snapshots"),
            (cron + ["--platform", "esxi", "--", "-a", "-g", conf], "must run as root on ESXi", "root's crontab"),
            (cron + ["--platform", "linux", "--systemd", "--", "-a", "-g", conf], "must run as root",
             "/etc/systemd/system"),
            (["--qemu", str(readable / "qmp")] + cron + ["--platform", "linux", "--", "-a", "-g", conf],
             "must run as root here", "QMP sockets"),
            # its own log: nobody's home, /nonexistent, takes no default log (refused first, s33 #12)
            (["--qemu", str(readable / "own")] + cron + ["--platform", "linux", "--log", str(readable / "own" / "job.log"),
                                                         "--", "-a", "-g", conf],
             "install the schedule as root", "mkstemp: Permission denied"),
        ]
        for args, words, why in cases:
            done = hotvcb(*args)
            assert done.returncode == 1, (args, done.stdout)
            errors = [ln for ln in done.stdout.splitlines() if "error:" in ln]
            assert errors and words in errors[0] and why in errors[0], (args, done.stdout)
            assert "Traceback" not in done.stdout
    finally:
        shutil.rmtree(str(readable), ignore_errors=True)


# -- systemd ---------------------------------------------------------------------------
def test_systemd_unit_texts():
    job = schedule.Job("nightly", "30 1 * * 2,4,6", ["/usr/bin/python3", "/opt/hotvcb.pyz", "backup", "-f",
                                                     "/srv/vm list", "-m", 'say "hi" 100% $HOME'], None)
    service = linux.service_text(job)
    assert service.splitlines()[0] == "# hotvcb:nightly"
    assert "Type=oneshot\n" in service
    assert "TimeoutStopSec=35min\n" in service  # room for the stop and the snapshot removal after it
    assert ('ExecStart=/usr/bin/python3 /opt/hotvcb.pyz backup -f "/srv/vm list" -m "say \\"hi\\" 100%% $$HOME"\n'
            in service)
    assert "StandardOutput" not in service  # no --log: the journal has it
    timer = linux.timer_text(job)
    assert "OnCalendar=Tue,Thu,Sat *-*-* 01:30:00\n" in timer
    assert "Unit=hotvcb-nightly.service\n" in timer and "WantedBy=timers.target\n" in timer
    logged = linux.service_text(job._replace(log="/var/log/hotvcb.log"))
    assert "StandardOutput=append:/var/log/hotvcb.log\n" in logged


def test_systemd_verify_accepts_our_units(tmp_path):
    verify = shutil.which("systemd-analyze")
    if not verify:
        pytest.skip("no systemd-analyze")
    job = schedule.Job("nightly", "0 17 * * 4", ["/bin/true", "backup", "-m", "vm one"], None)
    (tmp_path / "hotvcb-nightly.service").write_text(linux.service_text(job))
    (tmp_path / "hotvcb-nightly.timer").write_text(linux.timer_text(job))
    done = subprocess.run([verify, "verify", str(tmp_path / "hotvcb-nightly.timer"),
                           str(tmp_path / "hotvcb-nightly.service")],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    bad = [ln for ln in done.stdout.splitlines() if "hotvcb-nightly" in ln and "Failed to" not in ln]
    assert not bad, done.stdout


def test_systemd_scheduler_with_fake_systemctl(tmp_path):
    calls = tmp_path / "calls"
    fake = tmp_path / "systemctl"
    fake.write_text('#!/bin/sh\necho "$*" >> %s\n' % calls)
    fake.chmod(0o755)
    units = tmp_path / "units"
    sched = linux.SystemdScheduler(str(units), systemctl=str(fake))
    assert sched.install(_job("n1")) == "Thu *-*-* 17:00:00"
    sched.install(_job("n1"))
    (units / "hotvcb-mine.timer").write_text("[Timer]\n")  # not ours: no marker
    assert sorted(os.listdir(str(units))) == ["hotvcb-mine.timer", "hotvcb-n1.service", "hotvcb-n1.timer"]
    assert {e.job for e in sched.status()} == {"n1"}
    assert sched.remove(None) == ["n1"]
    assert os.listdir(str(units)) == ["hotvcb-mine.timer"]
    assert calls.read_text().splitlines() == [
        "daemon-reload", "enable --now hotvcb-n1.timer", "daemon-reload", "enable --now hotvcb-n1.timer",
        "disable --now hotvcb-n1.timer", "daemon-reload"]


def test_systemd_refuses_before_writing(tmp_path):
    sched = linux.SystemdScheduler(str(tmp_path / "units"), systemctl=None)
    with pytest.raises(UsageError, match="either"):
        sched.install(_job()._replace(cron="0 0 1 * 1"))
    assert not (tmp_path / "units").exists()


# -- through the CLI -------------------------------------------------------------------
def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "hotvcb"] + list(args), cwd=str(ROOT), env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)


def test_cli_install_show_remove_crontab(fake_crontab, qemu_site):
    qmp, conf = qemu_site
    done = _cli("--qemu", str(qmp), "schedule", "install", "--platform", "linux", "--cron", "0 17 * * 4", "--job",
                "weekly", "--", "-m", "vm one", "-g", str(conf), env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    assert "installed job weekly: 0 17 * * 4 " in done.stdout
    assert " -m hotvcb --qemu %s backup -m 'vm one' -g %s >> " % (qmp, conf) in fake_crontab.read_text()
    shown = _cli("schedule", "show", "--platform", "linux", env=dict(os.environ))
    assert "job weekly in crontab of" in shown.stdout
    assert _cli("schedule", "remove", "--platform", "linux", "--job", "weekly",
                env=dict(os.environ)).stdout == "removed job(s): weekly\n"
    assert "hotvcb" not in fake_crontab.read_text()


@pytest.mark.parametrize("args,words", [
    (["--cron", "0 17 * * 4", "--", "-a", "--repo", "repo"], "--repo repo: an absolute path"),
    (["--cron", "0 17 * *", "--", "-a"], "needs 5"),
    (["--cron", "0 17 * * 4"], "say what to back up"),
    (["--cron", "0 17 * * 4", "--job", "a b", "--", "-a"], "job name"),
    (["--cron", "0 0 1 * 1", "--systemd", "--", "-a"], "either matches"),
])
def test_cli_install_errors_are_one_line_exit_1(args, words, fake_crontab):
    done = _cli("schedule", "install", "--platform", "linux", *args, env=dict(os.environ))
    assert done.returncode == 1
    assert done.stderr.startswith("hotvcb: error: ") and words in done.stderr
    assert len(done.stderr.splitlines()) == 1
    assert not fake_crontab.exists()


def test_cli_schedule_without_action_prints_help():
    done = _cli("schedule")
    assert done.returncode == 1 and "install" in done.stderr


def test_cli_schedule_of_an_unreachable_host_is_refused(tmp_path):
    """`hotvcb --host root@esxi01 schedule install …`: the host must answer before anything is written
    (the SSH-mode schedule that works is in test_ssh_e2e.py)."""
    done = _cli("--host", "root@esxi01", "--port", "2222", "--known-hosts", "kh", "schedule", "install",
                "--platform", "linux", "--systemd", "--unit-dir", str(tmp_path), "--cron", "0 1 * * *", "--", "-a",
                env=dict(os.environ, PATH=str(tmp_path)))  # no ssh on PATH
    assert done.returncode == 1 and "cannot reach the host to check the job" in done.stderr, done.stderr
    assert len(done.stderr.splitlines()) == 1 and os.listdir(str(tmp_path)) == []


# -- issue 10 item 1: any backup that can be run can be scheduled, with exactly the flags given ------
@pytest.mark.parametrize("where", ["before", "after"])
def test_cli_schedule_keeps_qemu_before_or_after_the_dashes(fake_crontab, qemu_site, where):
    qmp, conf = qemu_site
    job = ["-m", "vm one", "-g", str(conf)]
    if where == "before":
        args = ["--qemu", str(qmp), "schedule", "install", "--platform", "linux", "--cron", "0 1 * * *", "--"] + job
    else:
        args = ["schedule", "install", "--platform", "linux", "--cron", "0 1 * * *", "--", "--qemu", str(qmp)] + job
    done = _cli(*args, env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    line = [ln for ln in fake_crontab.read_text().splitlines() if ln.endswith("# hotvcb:hotvcb")][0]
    assert " -m hotvcb --qemu %s backup -m 'vm one' -g %s >> " % (qmp, conf) in line
    # and the line runs: the command before ">>" parses as the backup it names
    words = shlex.split(line.split(" ", 5)[5].split(" >> ")[0])
    assert words[words.index("--qemu") + 1] == str(qmp)


def test_cli_schedule_refuses_two_different_targets(fake_crontab, qemu_site, tmp_path):
    qmp, conf = qemu_site
    done = _cli("--qemu", str(qmp), "schedule", "install", "--platform", "linux", "--cron", "0 1 * * *", "--",
                "--qemu", str(tmp_path), "-a", "-g", str(conf), env=dict(os.environ))
    assert done.returncode == 1 and "given twice" in done.stderr and not fake_crontab.exists()


# -- issue 10 item 2: install runs the job's own checks before writing anything ----------------------
@pytest.mark.parametrize("job,words", [
    (["-g", "CONF"], "which VMs"),
    (["-a", "--bogus", "-g", "CONF"], "not valid: unrecognized arguments: --bogus"),
    (["-a", "-d", "loud", "-g", "CONF"], "not valid"),
    (["-f", "vms to back up.txt", "-g", "CONF"], "cannot read VM list file vms to back up.txt: No such file"),
    (["-a", "-e", "excludes", "-g", "CONF"], "cannot read VM list file excludes"),
    (["-a", "-g", "hotvcb.cnf"], "hotvcb.cnf"),
    (["-a", "-g", "BADCONF"], "DISK_BACKUP_FORMAT='floppy' is not valid"),
    (["-m", "vm 1", "-g", "CONF"], "no VM named 'vm 1' on this host (did you mean 'vm one'?)"),
    (["-a", "-g", "NOVOLUME"], "does not exist"),
    (["-a", "-c", "per-vm", "-g", "CONF"], "-c per-vm: no such folder"),
    (["-a", "-c", "PERVM", "-g", "CONF"], "DISK_BACKUP_FORMAT='floppy' is not valid"),
])
def test_cli_install_checks_the_job_and_writes_nothing(fake_crontab, qemu_site, tmp_path, job, words):
    qmp, conf = qemu_site
    (tmp_path / "bad.conf").write_text("VM_BACKUP_VOLUME=%s\nDISK_BACKUP_FORMAT=floppy\n" % (tmp_path / "backups"))
    (tmp_path / "novol.conf").write_text("VM_BACKUP_VOLUME=%s\n" % (tmp_path / "nas" / "backups"))
    (tmp_path / "pervm").mkdir()
    (tmp_path / "pervm" / "vm one").write_text("DISK_BACKUP_FORMAT=floppy\n")
    names = {"CONF": str(conf), "BADCONF": str(tmp_path / "bad.conf"), "NOVOLUME": str(tmp_path / "novol.conf"),
             "PERVM": str(tmp_path / "pervm")}
    job = [names.get(w, w) for w in job]
    done = subprocess.run([sys.executable, "-m", "hotvcb", "--qemu", str(qmp), "schedule", "install", "--platform",
                           "linux", "--cron", "0 1 * * *", "--"] + job, cwd=str(tmp_path),
                          env=dict(os.environ, PYTHONPATH=str(ROOT), PWD=str(tmp_path)),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("hotvcb: error: ") and len(done.stderr.splitlines()) == 1, done.stderr
    assert words in done.stderr
    assert str(tmp_path) + "/vms" not in done.stderr  # relative paths are shown as written
    assert not fake_crontab.exists()


def test_cli_install_shows_relative_paths_as_written_and_installs_them_absolute(fake_crontab, qemu_site, tmp_path):
    qmp, conf = qemu_site
    (tmp_path / "vms").write_text("vm one\n")
    done = subprocess.run([sys.executable, "-m", "hotvcb", "--qemu", "qmp", "schedule", "install", "--platform",
                           "linux", "--cron", "0 1 * * *", "--log", "job.log", "--", "-f", "vms", "-g", "hotvcb.conf"],
                          cwd=str(tmp_path),
                          env=dict(os.environ, PYTHONPATH=str(ROOT), PWD=str(tmp_path)),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    assert done.returncode == 0, done.stderr
    assert "--qemu %s backup -f %s -g %s >> %s 2>&1" % (qmp, tmp_path / "vms", conf, tmp_path / "job.log") \
        in fake_crontab.read_text()


def test_esxi_crond_that_does_not_start_again_is_said_to_stop_every_job(host):
    """The old crond is stopped before the new one starts: a `busybox crond` that fails leaves the host with no
    crond at all, and the error says so (every cron job of the host stops, not only hotvcb's), with the fix."""
    (host / "usr/lib/vmware/busybox/bin/busybox").write_text("#!/bin/sh\necho 'crond: cannot start' >&2\nexit 1\n")
    sched = esxi.EsxiScheduler(str(host), version=(8, 0, 1))
    with pytest.raises(HostError) as err:
        sched.restart_crond()
    assert "NO cron job of this host runs" in str(err.value)
    assert "/usr/lib/vmware/busybox/bin/busybox crond" in str(err.value)


@pytest.mark.parametrize("expr", ["0 2 */2 * 1", "0 2 1 * */2", "0 2 */3 * mon-fri"])
def test_an_expression_esxi_crond_reads_otherwise_than_linux_cron_is_refused_for_esxi(expr):
    """busybox crond runs a line whose day of month and day of week are both restricted when either matches;
    Linux cron, with one of them starting with `*`, when both do: refused for ESXi, kept as written for Linux."""
    with pytest.raises(UsageError, match="ESXi's crond cannot run it"):
        cron.parse(expr, busybox=True)
    assert cron.parse(expr).text.split()[2] == expr.split()[2]


@pytest.mark.parametrize("expr, esxi_text", [
    ("0 2 */2 * *", "0 2 1-31/2 * *"),  # busybox's `*` would start at day 0
    ("0 2 */1 * 1", "0 2 */1 * 1"),  # a `*/1` fills busybox's day 0 as `*` does: both drop it, Mondays
    ("0 2 1-31/2 * 1", "0 2 1-31/2 * 1"),  # either, on both
    ("0 2 1,15 * 5", "0 2 1,15 * 5"),
])
def test_the_day_of_month_step_is_rewritten_for_esxi_only(expr, esxi_text):
    assert cron.parse(expr, busybox=True).text == esxi_text
    assert cron.parse(expr).text == expr


def test_an_indented_final_exit_is_the_scripts_end_and_a_here_document_is_no_code():
    """An `exit` with no fi/done/esac/} below it is top-level, indented or not; an `exit 0` inside a here-document
    is text (its `}` too); a guard's indented exit above a `fi` is not the end."""
    block = ["# hotvcb:n begin", "x", "# hotvcb:n end"]
    indented = ["#!/bin/sh", "echo mine", "    exit 0"]
    restart = ["# hotvcb-crond begin", "y", "# hotvcb-crond end"]
    assert localsh.with_block(indented, "n", block, localsh.LOCAL_SH, restart)[-1] == "    exit 0"
    assert localsh.unreached(indented + block) == ["n"] and localsh.unreached(block + indented) == []
    heredoc = ["#!/bin/sh", "cat > /etc/hook.sh <<'EOF'", "f() {", "exit 0", "}", "EOF", "chmod +x /etc/hook.sh"]
    assert localsh.with_block(heredoc, "n", block, localsh.LOCAL_SH, restart)[-8:] == block + [""] + restart + [""]
    assert localsh.unreached(heredoc + block) == []
    assert localsh._final_exit(["cat <<-E", "\texit 0", "\tE", "exit 0"]) == 3
    assert localsh._final_exit(["if [ -f /tmp/m ]; then", "  exit 0", "fi"]) is None
