"""Outside test, stop 33, round 2: the SCHEDULING and ON-HOST fixes of round 1 (tests/test_outsider_s33sched.py,
tests/test_outsider_s33onhost.py), gone over for what they broke or missed: the new schedule lock
(schedule/tablelock.py), moving a job between the crontab and systemd, local.sh's exit line, the `1-31/N` day
step, the ramdisk warning, the in-memory pyz copy.

Tried and found sound (no test here): a `schedule install` killed with -9 while it held the lock (inside `crontab
-l`) does not hold up the next install (flock dies with its process; the lock fd is close-on-exec, so crontab's
own children do not keep it); `*/7`, `5-20/3`, `*/10,15`, `1,*/2`, `*/31` in the day-of-month field run the same
days under busybox's and vixie's reading (with `*` for the day of week); a pyz started through a relative
symlink imports, `pkgutil.get_data`s and names itself (running_pyz) from the in-memory copy on 3.8 and 3.11;
`schedule show --job` of a job not installed exits 1, of a bad name is refused; the ramdisk warning names a pyz
copied to /tmp (control below).

Each defect is a strict xfail until fixed."""

import calendar
import datetime
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from asuser import readable_code
from cronsite import fake_crontab, qemu_site  # noqa: F401  (the fixtures)
from simhost import REPO

ESXI_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="esxisim needs root (mount namespaces)")
AS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as two other users")

USER_CODE = ""  # a world-readable copy of the package: user 1000 may not reach a clone under a 0700 folder


@pytest.fixture(scope="module", autouse=True)
def _user_code():
    """hotvcb as user 1000 runs from a copy it can read (asuser.py): a fresh CI clone lies in `mktemp -d`."""
    global USER_CODE
    with readable_code() as code:
        USER_CODE = code
        yield


def _cli(*args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "hotvcb"] + [str(a) for a in args], cwd=cwd or REPO,
                          env=dict(env or os.environ, PYTHONPATH=REPO), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=120)


# -- 1. the `1-31/N` rewrite changes what Linux cron runs when the day of week is given too ---------------------------
def _vixie_field(text, lo, hi):
    out = set()
    for item in text.split(","):
        base, _, step = item.partition("/")
        skip = int(step) if step else 1
        if base == "*":
            a, b = lo, hi
        else:
            x, _, y = base.partition("-")
            a = int(x)
            b = int(y) if y else (hi if step else a)
        out.update(range(a, b + 1, skip))
    return out


def _vixie_days(dom, dow, year=2027):
    """The dates vixie cron / cronie (cron.c, entry.c) run a line on: a day-of-month or day-of-week field whose
    text starts with `*` sets DOM_STAR / DOW_STAR, and then both fields must match; otherwise either does."""
    days, weekdays = _vixie_field(dom, 1, 31), {d % 7 for d in _vixie_field(dow, 0, 7)}
    star = dom.startswith("*") or dow.startswith("*")
    out = set()
    for month in range(1, 13):
        for day in range(1, calendar.monthrange(year, month)[1] + 1):
            when = datetime.date(year, month, day)
            a, b = day in days, (when.isoweekday() % 7) in weekdays
            if (a and b) if star else (a or b):
                out.add(when)
    return out


def test_every_other_monday_in_a_linux_crontab_runs_on_the_days_linux_cron_reads(fake_crontab, qemu_site):  # noqa: F811
    """Round 1's fix for ESXi's crond (`*/2` in the day of month written `1-31/2`) is applied to the Linux crontab
    line too. The admin of a Linux box schedules `--cron "0 2 */2 * 1"`: in vixie cron and cronie a day-of-month
    field starting with `*` counts as unrestricted, so both fields must match: odd days that are Mondays, about
    twice a month. The crontab gets `0 2 1-31/2 * 1`, which cron reads as "odd days OR Mondays": about twenty
    backups a month, rotating the kept ones away ten times as fast. Linux cron never had busybox's `*/2` slip;
    expected: the Linux line runs on the days the admin's expression means there."""
    qmp, conf = qemu_site
    done = _cli("--qemu", qmp, "schedule", "install", "--platform", "linux", "--cron", "0 2 */2 * 1", "--job", "n",
                "--", "-m", "vm one", "-g", conf)
    assert done.returncode == 0, done.stderr
    (line,) = [ln for ln in fake_crontab.read_text().splitlines() if ln.endswith("# hotvcb:n")]
    dom, dow = line.split()[2], line.split()[4]
    want, runs = _vixie_days("*/2", "1"), _vixie_days(dom, dow)
    assert runs == want, "the crontab line %r runs on %d days of 2027, the expression asked for %d" % (
        " ".join(line.split()[:5]), len(runs), len(want))


# -- 2. the user's schedule lock lives in the shared /tmp ---------------------------------------------------------------
@AS_ROOT
def test_another_user_cannot_lock_a_user_out_of_their_schedule():
    """A service user (uid 1000) keeps its backup job in its own crontab. Any other local user can create
    /tmp/hotvcb-schedule-1000.lock first (the name is predictable, /tmp is world-writable). From then on every
    `hotvcb schedule install/remove` of uid 1000 answers "the schedule lock ... belongs to another user: remove
    it and try again" -- advice the user cannot follow: /tmp is sticky, `rm` says "Operation not permitted".
    The job can no longer be changed or removed without root. Expected: a user's lock that no other user can
    create or hold (the user's own folder), so the remove works."""
    top = tempfile.mkdtemp(prefix="hotvcb-r2lock-")  # pytest's tmp_path is root's alone: the other users need in
    try:
        _lock_out(Path(top))
    finally:
        shutil.rmtree(top)


def _lock_out(tmp_path):
    tmp_path.chmod(0o755)
    shared = tmp_path / "tmp"
    shared.mkdir()
    shared.chmod(0o1777)
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(0o777)
    table = home / "table"
    table.write_text("0 2 * * * x # hotvcb:n\n")
    table.chmod(0o666)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "crontab").write_text('#!/bin/sh\ncase "$1" in\n-l) cat %(t)s;;\n-) cat > %(t)s;;\n*) exit 2;;\nesac\n'
                                    % {"t": table})
    (bindir / "crontab").chmod(0o755)
    # the other user plants the file first
    subprocess.run(["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", "touch",
                    str(shared / "hotvcb-schedule-1000.lock")], check=True)
    env = {"HOME": str(home), "TMPDIR": str(shared), "PATH": "%s:/usr/bin:/bin" % bindir, "PYTHONPATH": USER_CODE}
    done = subprocess.run(["setpriv", "--reuid", "1000", "--regid", "1000", "--clear-groups", "/usr/bin/python3",
                           "-m", "hotvcb", "schedule", "remove", "--platform", "linux", "--job", "n"], cwd="/",
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=60)
    assert done.returncode == 0 and "# hotvcb:n" not in table.read_text(), \
        "uid 1000 cannot remove its own job: " + done.stderr


# -- 3. moving a job to systemd where systemd cannot enable the timer ---------------------------------------------------
def test_moving_a_job_to_a_timer_that_is_never_enabled_keeps_the_crontab_job(fake_crontab, qemu_site, tmp_path,
                                                                             monkeypatch):  # noqa: F811
    """The job runs nightly from root's crontab. The admin tries `schedule install --systemd --job nightly` on a box
    (a container, a chroot, a host image being prepared with --unit-dir) where systemd is not PID 1. hotvcb writes
    the unit files, warns "systemd is not running here: run `systemctl daemon-reload` where it runs" -- and then,
    round 1's move, takes the job out of the crontab: "job nightly taken out of the crontab: it runs from the
    systemd timer only", exit 0. No timer was enabled, so nothing runs the backup any more; `show --systemd` says
    "survives a reboot: cannot tell". Expected: the crontab job is taken out only once the timer is known to run
    (or kept, with a warning that both may run)."""
    qmp, conf = qemu_site
    bindir = tmp_path / "sysbin"
    bindir.mkdir()
    (bindir / "systemctl").write_text("#!/bin/sh\necho 'System has not been booted with systemd as init system "
                                      "(PID 1). Cannot operate.' >&2\nexit 1\n")
    (bindir / "systemctl").chmod(0o755)
    monkeypatch.setenv("PATH", "%s:%s" % (bindir, os.environ["PATH"]))
    units = tmp_path / "units"
    units.mkdir()
    if os.path.isdir("/run/systemd/system"):
        pytest.skip("systemd runs here: a failing systemctl is an error, as it should be")
    args = ["--qemu", qmp, "schedule", "install", "--platform", "linux", "--unit-dir", units, "--cron", "0 2 * * *",
            "--job", "nightly"]
    assert _cli(*args, "--", "-m", "vm one", "-g", conf).returncode == 0
    done = _cli(*(args + ["--systemd", "--", "-m", "vm one", "-g", conf]))
    assert done.returncode == 0, done.stderr
    assert "# hotvcb:nightly" in fake_crontab.read_text(), \
        "the job now runs from nowhere; install said:\n" + done.stdout + done.stderr


# -- an ESXi host in esxisim, hotvcb.pyz on its datastore (tests/test_schedule_esxi.py's) ------------------------
from test_schedule_esxi import CRONTAB, LOCAL_SH, Esxi, _esxisim, pyz  # noqa: E402,F401


@pytest.fixture
def esxi(tmp_path, pyz):  # noqa: F811
    host = Esxi(tmp_path / "host", "8.0.2", pyz)
    yield host
    _esxisim("destroy", str(host.path))


JOB = ["--", "-f", "/vmfs/volumes/ds1/vms to back up", "-g", "/vmfs/volumes/ds1/hotvcb.conf"]


# -- 4. local.sh's final exit, indented ---------------------------------------------------------------------------------
@ESXI_ROOT
def test_a_local_sh_ending_in_an_indented_exit_keeps_the_job_after_a_reboot(esxi):
    """The admin's local.sh (edited with an editor that indents, or pasted from a KB article) ends with its own
    commands and a final `    exit 0`, indented but at the top level of the script: the shell leaves there.
    operations.md: "Only an `exit` at column 0 counts: an indented one (a guard's `if ...; then exit 0; fi`, a
    `die()` helper's) ends no script" -- but an `exit` with no `fi`/`done`/`esac`/`}` anywhere below it cannot sit
    inside an if, loop or function of a script the shell runs: it is top-level, indented or not. The block is
    appended BELOW it. install says "persisted in /etc/rc.local.d/local.sh (re-added and crond
    restarted at boot)", show says "survives a reboot: yes" and names no unreached job (its check, too, reads
    column 0 only); at the next reboot the shell leaves at the exit and the nightly backup is gone. Expected:
    the job back after the reboot, or show/install saying it will not be."""
    esxi.sh("sed -i 's/^exit 0$/echo mine > \\/tmp\\/mine\\n    exit 0/' %s" % LOCAL_SH)
    assert esxi.read(LOCAL_SH).rstrip().endswith("\n    exit 0")
    done = esxi.hotvcb("schedule", "install", "--job", "nightly", "--cron", "0 2 * * *", *JOB)
    assert "persisted in /etc/rc.local.d/local.sh" in done.stdout
    (line,) = [ln for ln in esxi.read(CRONTAB).splitlines() if ln.endswith("# hotvcb:nightly")]
    shown = esxi.hotvcb("schedule", "show").stdout
    esxi.reboot()
    back = [ln for ln in esxi.read(CRONTAB).splitlines() if ln.endswith("# hotvcb:nightly")]
    assert back == [line] or "survives a reboot: yes" not in shown, \
        "after the reboot the job is gone, though show said:\n" + shown


# -- 5. the ramdisk warning and a link on the ramdisk -------------------------------------------------------------------
@ESXI_ROOT
def test_a_pyz_started_through_a_link_on_the_ramdisk_is_warned_about(esxi, tmp_path):
    """The admin keeps hotvcb.pyz on datastore ds1 and, for short commands, linked it into a folder of the in-memory
    root (`ln -s /vmfs/volumes/ds1/hotvcb.pyz /tmp/x/hotvcb.pyz`; /opt or /tmp alike), then scheduled from there:
    `cd /tmp/x && python hotvcb.pyz schedule install ...`. The job's line runs `/bin/python /tmp/x/hotvcb.pyz`
    (the link, as round 1 decided: an upgrade re-pointing it is picked up). Round 1's ramdisk warning judges the
    path by where the link points -- a datastore -- and says nothing; at the next reboot the link is gone with
    the ramdisk, local.sh puts the line back, and it fails every night. Expected: the warning names the path the
    line runs, which lies on the ramdisk."""
    folder = tmp_path / "x"
    folder.mkdir()
    esxi.sh("ln -s /vmfs/volumes/ds1/hotvcb.pyz %s/hotvcb.pyz" % folder)
    done = esxi.sh("cd %s && /bin/python hotvcb.pyz schedule install --cron '0 2 * * *' -- -f "
                   "'/vmfs/volumes/ds1/vms to back up' -g /vmfs/volumes/ds1/hotvcb.conf" % folder)
    (line,) = [ln for ln in esxi.read(CRONTAB).splitlines() if ln.endswith("# hotvcb:hotvcb")]
    assert "/bin/python %s/hotvcb.pyz backup" % folder in line, line
    warned = [ln for ln in done.stderr.splitlines() if "warning" in ln and str(folder) in ln]
    assert warned, "the line runs %s/hotvcb.pyz, gone at reboot; install said:\n%s%s" % (folder, done.stdout,
                                                                                           done.stderr)


@ESXI_ROOT
def test_control_a_pyz_copied_to_the_ramdisk_is_warned_about(esxi, tmp_path):
    """Control for the above: a real copy in the same folder is warned about (round 1's fix)."""
    folder = tmp_path / "x"
    folder.mkdir()
    esxi.sh("cp /vmfs/volumes/ds1/hotvcb.pyz %s/hotvcb.pyz" % folder)
    done = esxi.sh("cd %s && /bin/python hotvcb.pyz schedule install --cron '0 2 * * *' -- -f "
                   "'/vmfs/volumes/ds1/vms to back up' -g /vmfs/volumes/ds1/hotvcb.conf" % folder)
    assert [ln for ln in done.stderr.splitlines() if "warning" in ln and str(folder) in ln], done.stderr


# -- 6. the crontab's own write fails on a full ramdisk ------------------------------------------------------------------
@ESXI_ROOT
def test_an_install_that_fails_writing_the_crontab_leaves_the_crontab_as_it_was(esxi):
    """operations.md (round 1's fix): "when either cannot be written (the ramdisk full, a folder read-only)
    `install` fails with the crontab and the boot file as they were". The boot file is put back; the crontab is
    not. It is written in place: opened (truncated), then written -- on a full ramdisk the write stops short,
    and the admin's root crontab is left cut in the middle of hotvcb's new line: `hotvcb: error: cannot write
    /var/spool/cron/crontabs/root: No space left on device`. Every later crond restart (the next `schedule
    install`, an admin's) reads the cut table, with a half command line crond runs each night. Expected: the
    crontab byte for byte as before the failed install."""
    script = r"""set -e
C=/var/spool/cron/crontabs
D=$(mktemp -d)
cp $C/root $D/ct
mount -t tmpfs -o size=8k tmpfs $C
cp $D/ct $C/root
while [ $(wc -c < $C/root) -lt 3950 ]; do echo "# my own note, kept in root's crontab: $(printf '%030d' 0)" >> $C/root; done
cp $C/root $D/before
dd if=/dev/zero of=$C/fill bs=4096 count=1 2>/dev/null || true
set +e
cd / && /bin/python /vmfs/volumes/ds1/hotvcb.pyz schedule install --job second --cron '0 3 * * *' \
  -- -f '/vmfs/volumes/ds1/vms to back up' -g /vmfs/volumes/ds1/hotvcb.conf
echo "rc=$?"
if cmp -s $D/before $C/root; then echo SAME; else echo CHANGED; tail -c 300 $C/root; fi
"""
    done = esxi.sh(script, check=False)
    assert "rc=1" in done.stdout and "cannot write /var/spool/cron/crontabs/root" in done.stderr, \
        done.stdout + done.stderr
    assert "SAME" in done.stdout, "the failed install left root's crontab cut:\n" + done.stdout


# -- 7. a --log folder on the ramdisk -------------------------------------------------------------------------------------
@ESXI_ROOT
def test_a_log_in_a_folder_on_the_ramdisk_is_warned_about(esxi, tmp_path):
    """The admin wants the job's log beside their other notes, in a folder of ESXi's in-memory root:
    `--log /tmp/hv/nightly.log` (program, config and list all on ds1). install makes the folder now ("--log FILE
    is made now, as -l's file (its folder too)") and says "persisted in /etc/rc.local.d/local.sh (re-added and
    crond restarted at boot)", without a warning. After a reboot the folder is gone with the ramdisk, local.sh
    puts the line back, and busybox sh's `>> /tmp/hv/nightly.log` fails before the command starts: no backup,
    no log, no mail, every night -- the very failure round 1's ramdisk warning is there for (and _check_log's
    own docstring names). Expected: a warning naming the log, whose folder does not survive a reboot."""
    folder = tmp_path / "hv"
    done = esxi.hotvcb("schedule", "install", "--job", "nightly", "--cron", "0 2 * * *", "--log",
                       str(folder / "nightly.log"), *JOB)
    (line,) = [ln for ln in esxi.read(CRONTAB).splitlines() if ln.endswith("# hotvcb:nightly")]
    assert ">> %s/nightly.log" % folder in line, line
    warned = [ln for ln in done.stderr.splitlines() if "warning" in ln and str(folder) in ln]
    assert warned, "install said:\n" + done.stdout + done.stderr


# -- 8. the same user, two temp folders: two locks ------------------------------------------------------------------------
@AS_ROOT
def test_two_installs_of_one_user_with_different_temp_folders_keep_both_jobs():
    """The service user `backup` (uid 1000) keeps its jobs in its own crontab. On a Debian box with libpam-tmpdir
    its login shell has TMPDIR=/tmp/user/1000, while its configuration-management run (started by cron or a
    service) has TMPDIR=/tmp or none. Both install a job at the same moment: `--job daily` from the login,
    `--job weekly` from the automation. Round 1's lock is `$TMPDIR/hotvcb-schedule-1000.lock` -- two different
    files -- so neither waits for the other: both read the table, both say "installed job ...", the second
    write drops the first's line (round 1's own story, tests/test_outsider_s33sched.py). Expected: one user's
    changes of its one crontab exclude each other whatever TMPDIR says."""
    _two_installs(("t1", "t2"))


@AS_ROOT
def test_control_two_installs_of_one_user_with_one_temp_folder_keep_both_jobs():
    """Control for the above: the same two installs with one TMPDIR wait for each other and keep both jobs."""
    _two_installs(("t1", "t1"))


def _two_installs(tmps):
    top = tempfile.mkdtemp(prefix="hotvcb-r2lock-")
    try:
        _two_temp_folders(Path(top), tmps)
    finally:
        shutil.rmtree(top)


def _two_temp_folders(top, tmps):
    top.chmod(0o755)
    work = top / "work"
    work.mkdir()
    work.chmod(0o777)
    table, barrier, bindir = work / "table", work / "readers", top / "slowbin"
    barrier.mkdir()
    barrier.chmod(0o777)
    bindir.mkdir()
    # each install's k-th `crontab -l` reads the table, then answers once the other's k-th has read it too (at most
    # 3 s): round 1's barrier (a lock held across the read-modify-write lets only one in at a time, after a wait)
    (bindir / "crontab").write_text('#!/bin/sh\ncase "$1" in\n'
                                    '-l) had=0; [ -f %(t)s ] && had=1; t=$(cat %(t)s 2>/dev/null; echo x)\n'
                                    '    k=$(( $(ls %(b)s | grep -c "^$PPID\\.") + 1 )); touch %(b)s/$PPID.$k; n=0\n'
                                    '    while [ "$(ls %(b)s | grep -c "\\.$k$")" -lt 2 ] && [ $n -lt 30 ]; '
                                    'do sleep 0.1; n=$((n+1)); done\n'
                                    '    [ $had = 1 ] || { echo "no crontab for backup" >&2; exit 1; }; printf "%%s" "${t%%x}";;\n'
                                    '-) cat > %(t)s;;\n*) exit 2;;\nesac\n' % {"t": table, "b": barrier})
    (bindir / "crontab").chmod(0o755)
    qmp = top / "qmp"
    qmp.mkdir()
    (qmp / "vm one.qmp").write_text("")
    for path in (qmp, qmp / "vm one.qmp"):  # the user's own VMs (a user session's QEMU)
        os.chown(str(path), 1000, 1000)
    conf = top / "hotvcb.conf"
    conf.write_text("VM_BACKUP_VOLUME=%s\n" % work)
    for sub in ("t1", "t2"):
        (top / sub).mkdir()
        (top / sub).chmod(0o1777)
    procs = []
    for (job, cron), tmp in zip((("daily", "0 2 * * *"), ("weekly", "0 4 * * 6")), tmps):
        env = {"HOME": str(work), "TMPDIR": str(top / tmp), "PATH": "%s:/usr/bin:/bin" % bindir, "PYTHONPATH": USER_CODE}
        procs.append(subprocess.Popen(
            ["setpriv", "--reuid", "1000", "--regid", "1000", "--clear-groups", "/usr/bin/python3", "-m", "hotvcb",
             "--qemu", str(qmp), "schedule", "install", "--platform", "linux", "--cron", cron, "--job", job, "--log",
             str(work / (job + ".log")), "--", "-m", "vm one", "-g", str(conf)], cwd="/", env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True))
    outs = [p.communicate(timeout=120) for p in procs]
    text = table.read_text() if table.exists() else ""
    assert any(p.returncode == 0 for p in procs), outs
    for job, p, (out, err) in zip(("daily", "weekly"), procs, outs):
        assert "Traceback" not in err
        if p.returncode == 0:
            assert "installed job %s" % job in out, out + err
            assert "# hotvcb:%s" % job in text, "install of %s said %r, the table holds:\n%s" % (job, out, text)


# -- 9. a here-document at local.sh's end ----------------------------------------------------------------------------------
@ESXI_ROOT
def test_a_local_sh_writing_a_script_with_a_here_document_keeps_the_job_after_a_reboot(esxi):
    """ESXi's root is rebuilt at every boot, so admins let local.sh write their helper scripts anew: the admin's
    local.sh (its `exit 0` taken out long ago, which operations.md allows: "with no top-level exit ... the block
    goes at the end") ends with

        cat > /etc/hook.sh <<'EOF'
        #!/bin/sh
        echo hook
        exit 0
        EOF
        chmod +x /etc/hook.sh

    The here-document's `exit 0` stands at column 0 with no `fi`/`done`/`}` below it, so install takes it for the
    script's final exit and writes the boot block above it -- inside the document. install says "persisted in
    /etc/rc.local.d/local.sh", show says "survives a reboot: yes"; at the next boot local.sh writes the block into
    /etc/hook.sh instead of running it, and the nightly backup is gone. Expected: the job back after a reboot."""
    text = esxi.read(LOCAL_SH)
    kept = [ln for ln in text.splitlines() if ln.strip() != "exit 0"]
    mine = kept + ["cat > /etc/hook.sh <<'EOF'", "#!/bin/sh", "echo hook", "exit 0", "EOF", "chmod +x /etc/hook.sh"]
    esxi.sh("cat > %s <<'XEOF'\n%s\nXEOF" % (LOCAL_SH, "\n".join(mine)))
    done = esxi.hotvcb("schedule", "install", "--job", "nightly", "--cron", "0 2 * * *", *JOB)
    assert "persisted in /etc/rc.local.d/local.sh" in done.stdout
    (line,) = [ln for ln in esxi.read(CRONTAB).splitlines() if ln.endswith("# hotvcb:nightly")]
    shown = esxi.hotvcb("schedule", "show").stdout
    esxi.reboot()
    back = [ln for ln in esxi.read(CRONTAB).splitlines() if ln.endswith("# hotvcb:nightly")]
    assert back == [line] or "survives a reboot: yes" not in shown, \
        "after the reboot the job is gone (local.sh:\n%s), though show said:\n%s" % (esxi.read(LOCAL_SH), shown)


@ESXI_ROOT
def test_control_a_local_sh_without_exit_keeps_the_job_after_a_reboot(esxi):
    """Control for the above: the same local.sh without the here-document brings the job back."""
    text = esxi.read(LOCAL_SH)
    kept = [ln for ln in text.splitlines() if ln.strip() != "exit 0"] + ["echo mine > /etc/mine"]
    esxi.sh("cat > %s <<'XEOF'\n%s\nXEOF" % (LOCAL_SH, "\n".join(kept)))
    esxi.hotvcb("schedule", "install", "--job", "nightly", "--cron", "0 2 * * *", *JOB)
    (line,) = [ln for ln in esxi.read(CRONTAB).splitlines() if ln.endswith("# hotvcb:nightly")]
    esxi.reboot()
    assert [ln for ln in esxi.read(CRONTAB).splitlines() if ln.endswith("# hotvcb:nightly")] == [line]
