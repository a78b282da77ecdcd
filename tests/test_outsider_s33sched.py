"""Outside test, stop 33: SCHEDULING. An admin puts hotvcb's jobs into ESXi's crond (kept across reboots by
local.sh) and into a Linux box's crontab or systemd timers, then edits, re-installs, switches and removes them.

Tried and found sound (no test here): garbage cron expressions (empty, 6 fields, `?`, `L`, `4#2`, non-ASCII
digits, zero steps, backwards ranges, @every) are refused in one line, exit 1; a date that never comes is
refused; install twice leaves one line and one block; two jobs and `remove --all`; a config path with spaces,
a single quote and an umlaut, installed on ESXi and run exactly as busybox crond runs it (env -i, PATH=/bin:
/usr/bin, cwd /, stdin closed): backed up and logged to /var/log/hotvcb-hotvcb.log; the Linux line run the same
way (cron's bare environment) runs and logs; a pyz started through a symlink is installed by the symlink (an
upgrade that re-points it is picked up); a missing config or list, a log in a missing folder or a folder, an
empty `--log`, `--job 'a b'` are refused before anything is written; `-d dryrun` installs with a warning.

Each defect is a strict xfail until fixed."""

import os
import subprocess
import sys

import pytest

from cronsite import fake_crontab, qemu_site  # noqa: F401  (the fixtures)
from simhost import REPO

ESXI_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="esxisim needs root (mount namespaces)")


def _cli(*args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "hotvcb"] + [str(a) for a in args], cwd=cwd or REPO,
                          env=dict(env or os.environ, PYTHONPATH=REPO), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=120)


# -- an ESXi host in esxisim, hotvcb.pyz on its datastore (tests/test_schedule_esxi.py's) ------------------------
from test_schedule_esxi import CRONTAB, LOCAL_SH, Esxi, _esxisim, pyz  # noqa: E402,F401


@pytest.fixture
def esxi(tmp_path, pyz):  # noqa: F811
    host = Esxi(tmp_path / "host", "8.0.2", pyz)
    yield host
    _esxisim("destroy", str(host.path))


JOB = ["--", "-f", "/vmfs/volumes/ds1/vms to back up", "-g", "/vmfs/volumes/ds1/hotvcb.conf"]


def _busybox_field(text, modvalue, off, names=()):
    """The values busybox crond (miscutils/crond.c, ParseField) sets for one field as written in the crontab:
    `*` is 0..modvalue-1 (the day-of-month array has 32 slots, 0..31), a number is taken plus `off`, a range
    runs n1..n2 (wrapping), a step counts from n1. The day-of-month field is ParseField(.., 32, 0, NULL, ..)."""
    out = set()
    for item in text.split(","):
        base, _, step = item.partition("/")
        skip = int(step) if step else 1
        if base == "*":
            n1, n2 = 0, modvalue - 1
        else:
            a, _, b = base.partition("-")
            n1 = int(a) + off
            n2 = int(b) + off if b else n1
        s0 = 1
        n1 -= 1
        while True:
            n1 = (n1 + 1) % modvalue
            s0 -= 1
            if s0 == 0:
                out.add(n1 % modvalue)
                s0 = skip
            if n1 == n2:
                break
    return out


def _vixie_dom(text):
    """Day-of-month values as vixie cron / cronie read the field: `*` is 1..31."""
    out = set()
    for item in text.split(","):
        base, _, step = item.partition("/")
        skip = int(step) if step else 1
        if base == "*":
            lo, hi = 1, 31
        else:
            a, _, b = base.partition("-")
            lo = int(a)
            hi = int(b) if b else (31 if step else lo)
        out.update(range(lo, hi + 1, skip))
    return out


# -- 1. every other day: ESXi's crond runs the even days, Linux cron the odd ones ----------------------------------
@ESXI_ROOT
def test_every_other_day_on_esxi_runs_on_the_days_the_check_and_linux_cron_mean(esxi):
    """The admin wants a full backup every other night and types the textbook `--cron "0 2 */2 * *"` on the ESXi
    host. operations.md promises the line is written so that busybox crond (ESXi) and vixie cron read it alike
    (`5/15` is written `5-59/15` for exactly that reason), and hotvcb's own check expands `*/2` as Linux cron
    does: days 1, 3, 5, ..., 31. But the line goes into root's crontab as `*/2`, and busybox's ParseField fills
    the day-of-month array (slots 0..31) from slot 0: the job runs on days 2, 4, ..., 30 -- never on the 31st,
    never on the 1st, and (with `*/15`: 15 and 30) not at all on February's second half. The same job installed
    from a Linux box runs on the other days. Expected: the field written so both read days 1, 3, ..., 31
    (`1-31/2`)."""
    esxi.hotvcb("schedule", "install", "--cron", "0 2 */2 * *", *JOB)
    (line,) = [ln for ln in esxi.read(CRONTAB).splitlines() if ln.endswith("# hotvcb:hotvcb")]
    dom = line.split()[2]
    want = set(range(1, 32, 2))
    assert _vixie_dom(dom) == want  # what the check and Linux cron run
    ran = _busybox_field(dom, 32, 0) - {0}  # day 0 never comes
    assert ran == want, "ESXi's crond runs this job on days %s, not %s" % (sorted(ran), sorted(want))


def test_the_busybox_model_reads_a_range_as_vixie_does():
    """Control for the model above: a range or a single day busybox and vixie read alike."""
    for dom in ("1-31/2", "1,15", "5", "1-10"):
        assert _busybox_field(dom, 32, 0) - {0} == _vixie_dom(dom)


# -- 2. a local.sh whose final exit is written `exit 0;` -----------------------------------------------------------
@ESXI_ROOT
@pytest.mark.parametrize("final", ["exit 0;", "exit $?"])
def test_a_local_sh_ending_in_another_spelling_of_exit_keeps_the_job_after_a_reboot(esxi, final):
    """The admin's local.sh ends with their own boot commands and `exit 0;` (a habit from C), or `exit $?` (the
    status of the last command). operations.md: "The boot block goes above the boot file's final top-level
    `exit`" -- but only `exit`/`exit 0` (with a comment) are recognised, so the block is appended below it.
    `install` says "persisted in /etc/rc.local.d/local.sh", `show` says "survives a reboot: yes"; at the next
    reboot the shell leaves at the exit, the block never runs, and the nightly backup silently stops."""
    esxi.sh("sed -i 's/^exit 0$/echo mine > \\/tmp\\/mine\\n%s/' %s" % (final.replace("$", "\\$"), LOCAL_SH))
    assert esxi.read(LOCAL_SH).rstrip().endswith("\n" + final)
    out = esxi.hotvcb("schedule", "install", "--job", "nightly", "--cron", "0 2 * * *", *JOB).stdout
    assert "persisted in /etc/rc.local.d/local.sh" in out
    (line,) = [ln for ln in esxi.read(CRONTAB).splitlines() if ln.endswith("# hotvcb:nightly")]
    shown = esxi.hotvcb("schedule", "show").stdout
    esxi.reboot()
    back = [ln for ln in esxi.read(CRONTAB).splitlines() if ln.endswith("# hotvcb:nightly")]
    assert back == [line] or "survives a reboot: yes" not in shown, \
        "after the reboot the job is gone, though show said:\n" + shown


@ESXI_ROOT
def test_a_local_sh_ending_in_exit_0_keeps_the_job_after_a_reboot(esxi):
    """Control: the same with the plain `exit 0` comes back after the reboot."""
    esxi.sh("sed -i 's/^exit 0$/echo mine > \\/tmp\\/mine\\nexit 0/' %s" % LOCAL_SH)
    esxi.hotvcb("schedule", "install", "--job", "nightly", "--cron", "0 2 * * *", *JOB)
    (line,) = [ln for ln in esxi.read(CRONTAB).splitlines() if ln.endswith("# hotvcb:nightly")]
    esxi.reboot()
    assert [ln for ln in esxi.read(CRONTAB).splitlines() if ln.endswith("# hotvcb:nightly")] == [line]


# -- 3./4. the crontab and systemd: one job, two schedulers ---------------------------------------------------------
@pytest.fixture
def linux_box(fake_crontab, qemu_site, tmp_path, monkeypatch):  # noqa: F811
    """A crontab (fake_crontab), a fake systemctl on PATH (nothing real is enabled), a unit folder."""
    bindir = tmp_path / "sysbin"
    bindir.mkdir()
    calls = tmp_path / "systemctl.calls"
    (bindir / "systemctl").write_text('#!/bin/sh\necho "$*" >> %s\n' % calls)
    (bindir / "systemctl").chmod(0o755)
    monkeypatch.setenv("PATH", "%s:%s" % (bindir, os.environ["PATH"]))
    units = tmp_path / "units"
    units.mkdir()
    qmp, conf = qemu_site
    return fake_crontab, units, qmp, conf


def _install(box, *extra):
    table, units, qmp, conf = box
    return _cli("--qemu", qmp, "schedule", "install", "--platform", "linux", "--unit-dir", units, "--cron",
                "0 2 * * *", "--job", "nightly", *extra, "--", "-m", "vm one", "-g", conf)


@pytest.mark.parametrize("first,second", [([], ["--systemd"]), (["--systemd"], [])], ids=["to-timer", "to-cron"])
def test_moving_a_job_between_crontab_and_systemd_does_not_leave_it_scheduled_twice(linux_box, first, second):
    """The admin scheduled `--job nightly` in root's crontab and later decides on a systemd timer (journal,
    `systemctl list-timers`): `hotvcb schedule install --systemd --job nightly ...` with the same job. It says
    "installed hotvcb-nightly.timer" and nothing else; the crontab line stays. Every night at 02:00 both start
    the same backup: one holds the run lock, the other fails ("run lock held") and mails an error, or, minutes
    apart, two backups of every VM rotate the kept ones away twice as fast. operations.md: "Installing twice
    leaves one line". Expected: the job replaced in the other scheduler, or at least a warning naming it and
    the command that removes it."""
    table, units, _, _ = linux_box
    assert _install(linux_box, *first).returncode == 0
    done = _install(linux_box, *second)
    assert done.returncode == 0, done.stderr
    in_cron = table.exists() and "# hotvcb:nightly" in table.read_text()
    in_systemd = (units / "hotvcb-nightly.timer").exists()
    assert not (in_cron and in_systemd) or ("crontab" in done.stderr and "systemd" in done.stderr), \
        "job nightly now runs from both the crontab and a systemd timer; install said:\n" + done.stdout + done.stderr


def test_remove_does_not_say_nothing_is_installed_while_a_timer_runs_the_job(linux_box):
    """The admin installed `--systemd --job nightly` months ago, and now retires the box's backups with
    `hotvcb schedule remove --job nightly` (the command in operations.md's synopsis). Answer: "no hotvcb job
    'nightly' installed; nothing to remove", exit 0 -- the timer keeps backing up every night. operations.md
    promises "`remove` of a job not installed names the installed ones"; `show` likewise says "no hotvcb jobs
    installed". Expected: the timer named (e.g. "installed as a systemd timer: remove --systemd")."""
    _, units, _, _ = linux_box
    assert _install(linux_box, "--systemd").returncode == 0
    assert (units / "hotvcb-nightly.timer").exists()
    done = _cli("schedule", "remove", "--platform", "linux", "--unit-dir", units, "--job", "nightly")
    shown = _cli("schedule", "show", "--platform", "linux", "--unit-dir", units)
    said = done.stdout + done.stderr
    assert (units / "hotvcb-nightly.timer").exists()  # nothing removed ...
    assert "systemd" in said, "remove said: " + said  # ... so it must say where the job is
    assert "no hotvcb jobs installed" not in shown.stdout, shown.stdout


# -- 5. crontab(1) refusing the user: the reason is cut off ---------------------------------------------------------
def test_a_user_cron_refuses_is_told_why(tmp_path, qemu_site):  # noqa: F811
    """The backup box runs hotvcb as a service user whose name is not in /etc/cron.allow. cronie's crontab says
    "You (backup) are not allowed to use this program (crontab)" and, on a second line, "See crontab(1) for
    more information". `hotvcb schedule install` (and `show`, `remove`) answer only
    "hotvcb: error: crontab -l failed (exit 1): See crontab(1) for more information": the one line that names
    the problem is thrown away. Expected: the error carries cron's reason."""
    bindir = tmp_path / "denybin"
    bindir.mkdir()
    (bindir / "crontab").write_text('#!/bin/sh\necho "You (backup) are not allowed to use this program (crontab)" >&2\n'
                                    'echo "See crontab(1) for more information" >&2\nexit 1\n')
    (bindir / "crontab").chmod(0o755)
    env = dict(os.environ, PATH="%s:%s" % (bindir, os.environ["PATH"]))
    qmp, conf = qemu_site
    for args in (["schedule", "show", "--platform", "linux"],
                 ["--qemu", qmp, "schedule", "install", "--platform", "linux", "--cron", "0 2 * * *", "--",
                  "-m", "vm one", "-g", conf]):
        done = _cli(*args, env=env)
        assert done.returncode == 1 and "Traceback" not in done.stderr
        assert "not allowed" in done.stderr, done.stderr


# -- 6. a boot file that cannot be written: the job is left half installed ------------------------------------------
@ESXI_ROOT
def test_an_install_that_fails_at_local_sh_leaves_no_half_installed_job(esxi):
    """`hotvcb schedule install --job second ...` on a host whose local.sh cannot be written at that moment (the
    visorfs ramdisk full, or -- here -- its folder read-only) says "hotvcb: error: cannot write
    /etc/rc.local.d/local.sh: ...", exit 1. The admin takes it that nothing happened. But the crontab line was
    already written, and crond, restarted only after the boot file, still runs the old table: `show` now lists
    "cron line in /var/spool/cron/crontabs/root", "crond: running", so the admin believes the job runs until the
    next reboot -- it never runs at all (crond never re-read the file), and a later unrelated crond restart
    starts it unannounced. Expected: a failed install leaves the crontab as it was (or restarts crond and says
    the job is in the crontab but not kept across reboots)."""
    before = esxi.read(CRONTAB)
    starts = len(esxi.crond_log())
    done = esxi.sh("mount --bind /etc/rc.local.d /etc/rc.local.d && mount -o remount,bind,ro /etc/rc.local.d && "
                   "cd / && /bin/python /vmfs/volumes/ds1/hotvcb.pyz schedule install --job second --cron '0 3 * * *' "
                   "-- -f '/vmfs/volumes/ds1/vms to back up' -g /vmfs/volumes/ds1/hotvcb.conf", check=False)
    assert done.returncode == 1 and "cannot write /etc/rc.local.d/local.sh" in done.stderr, done.stderr
    after = esxi.read(CRONTAB)
    if after == before:
        return
    (line,) = [ln for ln in after.splitlines() if ln.endswith("# hotvcb:second")]
    crond_read = any(r["event"] == "start" and line in r["crontab"] for r in esxi.crond_log()[starts:])
    assert crond_read and "crontab" in done.stderr, \
        "job second is in the crontab, crond never read it, and install said only: " + done.stderr


# -- 7. two installs at once -----------------------------------------------------------------------------------------
def test_two_installs_at_once_keep_both_jobs(tmp_path, qemu_site):  # noqa: F811
    """Two admins (or a config-management run started twice) install two different jobs on the same box at the
    same moment: `--job daily` and `--job weekly`. Both answer "installed job ...", exit 0. The crontab holds
    one of them: each read the table, added its line and wrote it back, the second write dropping the first's
    line. (Here both reads are made to overlap; the window is there at any speed, wider on a loaded box or with
    an LDAP user lookup in crontab(1).) Expected: both jobs in the table, or one install refused/retried."""
    table, bindir = tmp_path / "table", tmp_path / "slowbin"
    bindir.mkdir()
    # each install's k-th `crontab -l` reads the table, then answers once the other's k-th has read it too (at most
    # 30 s): the two reads overlap, as they may at any speed, every time the test runs
    barrier = tmp_path / "readers"
    barrier.mkdir()
    (bindir / "crontab").write_text('#!/bin/sh\ncase "$1" in\n'
                                    '-l) had=0; [ -f %(t)s ] && had=1; t=$(cat %(t)s 2>/dev/null; echo x)\n'
                                    '    k=$(( $(ls %(b)s | grep -c "^$PPID\\.") + 1 )); touch %(b)s/$PPID.$k; n=0\n'
                                    '    while [ "$(ls %(b)s | grep -c "\\.$k$")" -lt 2 ] && [ $n -lt 300 ]; '
                                    'do sleep 0.1; n=$((n+1)); done\n'
                                    '    [ $had = 1 ] || { echo "no crontab for root" >&2; exit 1; }; printf "%%s" "${t%%x}";;\n'
                                    '-) cat > %(t)s;;\n*) exit 2;;\nesac\n' % {"t": table, "b": barrier})
    (bindir / "crontab").chmod(0o755)
    env = dict(os.environ, PATH="%s:%s" % (bindir, os.environ["PATH"]), PYTHONPATH=REPO)
    qmp, conf = qemu_site
    procs = [subprocess.Popen([sys.executable, "-m", "hotvcb", "--qemu", str(qmp), "schedule", "install",
                               "--platform", "linux", "--cron", cron, "--job", job, "--", "-m", "vm one", "-g",
                               str(conf)], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True)
             for job, cron in (("daily", "0 2 * * *"), ("weekly", "0 4 * * 6"))]
    outs = [p.communicate(timeout=120) for p in procs]
    ok = [p.returncode == 0 for p in procs]
    text = table.read_text()
    for job, fine, (out, err) in zip(("daily", "weekly"), ok, outs):
        if fine:
            assert "installed job %s" % job in out
            assert "# hotvcb:%s" % job in text, "install of %s said %r, the table holds:\n%s" % (job, out, text)


# -- 8. the program itself on ESXi's ramdisk -------------------------------------------------------------------------
@ESXI_ROOT
def test_a_job_run_from_the_ramdisk_is_not_called_reboot_proof(esxi, tmp_path, pyz):  # noqa: F811
    """The admin scp'd hotvcb.pyz and the config to /tmp on the host to try it, liked the dry run, and scheduled it
    from there: `cd /tmp/x && python hotvcb.pyz schedule install --cron "0 2 * * *" -- -f vms -g hotvcb.conf`.
    install: "persisted in /etc/rc.local.d/local.sh (re-added and crond restarted at boot)"; show: "survives a
    reboot: yes". ESXi's /tmp is part of its in-memory root: after the next reboot local.sh faithfully puts the
    line back, and it runs `/bin/python /tmp/x/hotvcb.pyz`, which is gone -- every night, into a log nobody
    reads. (The README's own install puts the pyz on a datastore; migrating-from-ghettovcb.md says "copy it to a
    datastore".) Expected: install (or show) warns that the program/config lie on the ramdisk and will not
    survive the reboot the line survives."""
    folder = tmp_path / "x"
    folder.mkdir()
    esxi.sh("cp /vmfs/volumes/ds1/hotvcb.pyz '/vmfs/volumes/ds1/vms to back up' /vmfs/volumes/ds1/hotvcb.conf %s"
            % folder)
    done = esxi.sh("cd %s && /bin/python hotvcb.pyz schedule install --cron '0 2 * * *' -- -f 'vms to back up' "
                   "-g hotvcb.conf" % folder)
    (line,) = [ln for ln in esxi.read(CRONTAB).splitlines() if ln.endswith("# hotvcb:hotvcb")]
    assert "/bin/python %s/hotvcb.pyz backup" % folder in line
    shown = esxi.hotvcb("schedule", "show").stdout
    warned = [ln for ln in done.stderr.splitlines() if "warning" in ln and str(folder) in ln]
    assert warned or "survives a reboot: yes" not in shown, \
        "install said:\n%s%s\nshow said:\n%s" % (done.stdout, done.stderr, shown)


# -- 9. remove --job NAME --all ---------------------------------------------------------------------------------------
def test_remove_with_a_job_and_all_removes_nothing_it_was_not_asked_to(fake_crontab):  # noqa: F811
    """The box has jobs `daily` and `weekly` and the admin's own line. To retire the daily job "and everything that
    keeps it" (the help: `remove` "remove a scheduled job and what keeps it across reboots", `--all` "every hotvcb
    job") they type `hotvcb schedule remove --job daily --all` -- or a wrapper script passes `--all` from one
    variable and `--job "$JOB"` from another. Answer: "removed job(s): daily, weekly", exit 0: the weekly backup
    is gone too. operations.md's synopsis is `remove [--job nightly | --all]` (one or the other), and hotvcb
    refuses conflicting values elsewhere (`--qemu A --qemu B`: "refused naming both"). Expected: refused,
    naming both options, with the table unchanged (or only `daily` removed)."""
    mine = "5 * * * * /usr/local/bin/mine\n0 2 * * * x # hotvcb:daily\n0 4 * * 6 y # hotvcb:weekly\n"
    fake_crontab.write_text(mine)
    done = _cli("schedule", "remove", "--platform", "linux", "--job", "daily", "--all")
    assert "# hotvcb:weekly" in fake_crontab.read_text(), "remove said: " + done.stdout + done.stderr
    assert "Traceback" not in done.stderr


# -- 10. a long job line and Debian's cron ----------------------------------------------------------------------------
@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/usr/sbin/cron") or not os.path.exists("/usr/bin/crontab"),
                    reason="needs root and Debian's cron (crontab -u)")
def test_a_job_too_long_for_cron_is_refused_saying_so(tmp_path):
    """The admin schedules the Linux box's backup of the VMs that matter, named one by one as the README allows
    (`-m web -m db ...`, "several -m at once"): twenty VMs with descriptive names. Debian's cron reads at most 998
    characters of a command; its crontab(1) refuses the whole table: `"-":3: command too long` / `errors in
    crontab file, can't install.` hotvcb shows only the last line: "hotvcb: error: crontab - failed (exit 1):
    errors in crontab file, can't install." -- the admin looks for an error in their own lines. Expected: the
    reason (command too long; put the VMs in a list file, -f), before or from crontab(1). (Uses the real
    crontab(1) on the table of user nobody, which it leaves as it was.)"""
    if subprocess.run(["crontab", "-u", "nobody", "-l"], stdout=subprocess.DEVNULL,
                      stderr=subprocess.DEVNULL).returncode == 0:
        pytest.skip("user nobody has a crontab (another test's): not touching it")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "crontab").write_text('#!/bin/sh\nexec /usr/bin/crontab -u nobody "$@"\n')
    (bindir / "crontab").chmod(0o755)
    qmp = tmp_path / "qmp"
    qmp.mkdir()
    names = ["Exchange 2019 Mailbox Server %02d (prod)" % i for i in range(1, 21)]
    for name in names:
        (qmp / (name + ".qmp")).write_text("")
    (tmp_path / "backups").mkdir()
    conf = tmp_path / "hotvcb.conf"
    conf.write_text("VM_BACKUP_VOLUME=%s\n" % (tmp_path / "backups"))
    words = []
    for name in names:
        words += ["-m", name]
    env = dict(os.environ, PATH="%s:%s" % (bindir, os.environ["PATH"]))
    try:
        done = _cli("--qemu", qmp, "schedule", "install", "--platform", "linux", "--cron", "0 2 * * *", "--job",
                    "s33long", "--", *words, "-g", conf, env=env)
        if done.returncode == 0:  # installed (a fix may shorten the line): cron must be able to read it
            table = subprocess.run(["crontab", "-u", "nobody", "-l"], stdout=subprocess.PIPE,
                                   universal_newlines=True).stdout
            (line,) = [ln for ln in table.splitlines() if ln.endswith("# hotvcb:s33long")]
            assert len(line.split(None, 5)[5]) < 999
            return
        assert "Traceback" not in done.stderr
        assert "too long" in done.stderr, done.stderr
    finally:
        table = subprocess.run(["crontab", "-u", "nobody", "-l"], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, universal_newlines=True).stdout
        if "# hotvcb:s33long" in table:
            subprocess.run(["crontab", "-u", "nobody", "-r"], stderr=subprocess.DEVNULL)


# -- 11. a disabled timer shown as scheduled ---------------------------------------------------------------------------
def test_show_systemd_does_not_call_a_disabled_timer_scheduled(linux_box, tmp_path):
    """The admin paused the nightly job during a storage migration with `systemctl disable --now
    hotvcb-nightly.timer` (or the install ran where systemd could not enable it: "run `systemctl enable --now
    ...` yourself", easily missed in a provisioning log). Weeks later `hotvcb schedule show --systemd` -- the
    command operations.md gives to check the schedule -- lists job nightly with its OnCalendar= and "survives a
    reboot: yes (systemd units are files on disk)". The timer is not enabled: it does not run now and will not
    after a reboot; no backup is made. Expected: show says the timer is not enabled (its timers.target.wants
    link is missing; `systemctl is-enabled` says disabled)."""
    _, units, _, _ = linux_box
    sysbin = tmp_path / "sysbin"
    # this box's systemctl: enable/disable do nothing here (the timer stays disabled); is-enabled says so
    (sysbin / "systemctl").write_text('#!/bin/sh\ncase "$1" in\nis-enabled) echo disabled; exit 1;;\n'
                                      'is-active) echo inactive; exit 3;;\nesac\nexit 0\n')
    assert _install(linux_box, "--systemd").returncode == 0
    assert (units / "hotvcb-nightly.timer").exists()
    assert not (units / "timers.target.wants" / "hotvcb-nightly.timer").exists()
    shown = _cli("schedule", "show", "--systemd", "--platform", "linux", "--unit-dir", units)
    assert "job nightly" in shown.stdout
    assert "survives a reboot: yes" not in shown.stdout, shown.stdout


# -- 12. a service user whose home folder was never made ---------------------------------------------------------------
@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/usr/sbin/runuser") or not os.path.exists("/usr/bin/python3"),
                    reason="needs root, runuser and /usr/bin/python3")
def test_a_users_job_with_the_default_log_runs_where_the_home_folder_is_missing():
    """The Linux box backs up its ESXi hosts from a dedicated service account made with `useradd -r hotvcb` (no
    home folder is made for a system user) -- operations.md: "A user's crontab holding an SSH-mode job ... needs
    no root". `hotvcb schedule install --cron ... -- ...` as that user passes every check and says "installed job
    ...: ... >> /home/hotvcb/.hotvcb-hotvcb.log 2>&1". Every night cron's sh cannot create that file and never
    starts the command: no backup, no hotvcb log, nothing in the mail. `--log FILE` is checked at install ("the
    file and its folder are made", "a folder refused"); the default log is not. Expected: the default log
    checked (made, or refused with advice to give --log) so the installed line can run. (Here: user nobody, a
    QEMU job of its own VM, HOME a folder that does not exist, the crontab a stand-in.)"""
    import shutil
    import tempfile
    from pathlib import Path

    box = Path(tempfile.mkdtemp(prefix="hotvcb-s33-", dir="/tmp"))
    try:
        shutil.copytree(os.path.join(REPO, "hotvcb"), str(box / "hotvcb"))
        (box / "qmp").mkdir()
        (box / "qmp" / "vm one.qmp").write_text("")
        (box / "backups").mkdir()
        (box / "hotvcb.conf").write_text("VM_BACKUP_VOLUME=%s\n" % (box / "backups"))
        (box / "bin").mkdir()
        (box / "bin" / "crontab").write_text('#!/bin/sh\ncase "$1" in\n-l) [ -f %(t)s ] || { echo "no crontab for '
                                             'nobody" >&2; exit 1; }; cat %(t)s;;\n-) cat > %(t)s;;\nesac\n'
                                             % {"t": box / "table" / "nobody"})
        (box / "table").mkdir()
        for path in [box] + list(box.rglob("*")):
            path.chmod(0o755 if path.is_dir() or path.name == "crontab" else 0o644)
        for owned in (box / "qmp", box / "table", box / "backups"):
            os.chown(str(owned), 65534, 65534)
        env = ["env", "-i", "PATH=%s:/usr/bin:/bin" % (box / "bin"), "HOME=%s" % (box / "home-never-made"),
               "PYTHONPATH=%s" % box]
        done = subprocess.run(["runuser", "-u", "nobody", "--"] + env + [
            "/usr/bin/python3", "-m", "hotvcb", "--qemu", str(box / "qmp"), "schedule", "install", "--platform",
            "linux", "--cron", "0 2 * * *", "--", "-m", "vm one", "-g", str(box / "hotvcb.conf")],
            cwd="/", stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=120)
        if done.returncode != 0:  # refused: fine if it says why
            assert "log" in done.stderr and "Traceback" not in done.stderr, done.stderr
            return
        (line,) = [ln for ln in (box / "table" / "nobody").read_text().splitlines() if "# hotvcb:" in ln]
        command = line.split(None, 5)[5]
        ran = subprocess.run(["runuser", "-u", "nobody", "--", "env", "-i", "PATH=/usr/bin:/bin", "HOME=/",
                              "/bin/sh", "-c", command], cwd="/", stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             universal_newlines=True, timeout=120)
        assert "cannot create" not in ran.stdout and "Directory nonexistent" not in ran.stdout, \
            "install said %r; cron's run of the line says: %s" % (done.stdout, ran.stdout)
    finally:
        shutil.rmtree(str(box), ignore_errors=True)
