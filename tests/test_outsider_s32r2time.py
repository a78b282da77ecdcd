"""Outside test, session 32, round 2: TIME again, after the clock fixes (hotvcb/clockage.py: signed ages, a
stamp dated more than 300 s ahead is no sign of life). Round 1 is tests/test_outsider_s32time.py; this file
hunts what the fixes broke: live locks and heartbeats judged dead after a clock step, the repeated hour's
made order, schedules and odd TZ strings. Each defect is a strict xfail until fixed."""

import os
import time

import pytest
from cronsite import fake_crontab, qemu_site  # noqa: F401  (the fixtures)

from hotvcb import interrupt
from hotvcb.errors import LockError
from hotvcb.localshell import LocalShell
from hotvcb.runid import RunId
from hotvcb.store import lock as lockmod
from hotvcb.store.lock import HostLock
from simhost import needs_root, write_conf
from fakelog import Log


def _other_box_run(name="backup01"):
    """A run started on another machine (SSH mode from a backup box): its pid tells this host nothing, so its
    lock is judged by its heartbeat."""
    return RunId(os.urandom(6).hex(), name, 4242, int(time.time()), "h", machine_id="0" * 31 + "1")


# -- 1. a live run's lock, right after NTP stepped the host's clock back -------------------------------------------
def test_live_lock_is_not_taken_over_in_the_seconds_after_the_clock_is_stepped_back(tmp_path, monkeypatch):
    """backup01 runs a file-by-file backup of esx01 in SSH mode (its lock lives on esx01, judged by its heartbeat:
    touched every 30 s by esx01's clock). esx01's clock had drifted 10 minutes ahead; ntpd (or the admin's
    `esxcli system time set`) steps it back. For the next <= 30 s, until backup01's next heartbeat, the lock's
    mtime is 10 minutes 'ahead' of esx01's clock -- and clockage.fresh calls that no sign of life. A second run
    starting in that window (backup02's nightly job, an admin's `hotvcb cleanup`) takes the LIVE lock over as a
    dead run's, records backup01's run as dead (its sweep then removes that run's snapshot and -partial folder
    as leftovers), and works on the host beside it: two runs at once, the thing the lock exists to prevent.
    A live holder re-stamps its lock within HEARTBEAT by the (new) clock, so a stamp dated ahead proves nothing
    until a heartbeat has been missed. Expected: the second run is refused (or waits for a missed beat)."""
    monkeypatch.setattr(lockmod, "HEARTBEAT", 5.0)  # the holder beats every 5 s here, not every 30 s
    holder = HostLock(LocalShell(), str(tmp_path), _other_box_run()).acquire()
    second = None
    try:
        ahead = time.time() + 600  # the clock was just stepped back 10 minutes: the last beat is "ahead"
        os.utime(holder.path, (ahead, ahead))
        try:
            second = HostLock(LocalShell(), str(tmp_path), RunId.new().on_host("h")).acquire()
        except LockError:
            return  # refused: right
        pytest.fail("a live run's lock was taken over (took_over=%s, dead runs now %s)"
                    % (second.took_over, second.dead_runs()))
    finally:
        if second is not None:
            second.release()
        holder.release()
        interrupt.reset()


# -- 2. another host's live -partial folder on a shared NFS volume, right after the NAS's clock was stepped back --
def test_shared_volume_live_partial_is_kept_in_the_seconds_after_the_nas_clock_is_stepped_back(tmp_path):
    """Two ESXi hosts back up to one NFS export (docs: the -partial owner file's heartbeat is 'how hosts sharing
    an NFS volume tell a live backup from a dead one'); the NFS server stamps the mtimes with its own clock.
    esx-a is writing web's backup and touches its owner file every 30 s. The NAS's clock had run 10 minutes
    fast; ntpd steps it back. DRS has just moved `web` to esx-b, whose nightly run backs it up and looks for
    web's leftovers: volume_age (owner file's age minus a fresh probe's) now says the owner file was touched
    10 minutes in the future, clockage.fresh says 'dead', and esx-b removes esx-a's LIVE backup folder under it
    -- before the change the age read 0, alive. A live writer re-stamps within HEARTBEAT, so a stamp dated ahead
    is no proof of death. Expected: the folder is left ('being written by ...')."""
    from hotvcb.jobs.partials import remove_partials
    from hotvcb.store.seal import OWNER

    volume = tmp_path / "backup"
    partial = volume / "web" / "web-2026-12-05_01-00-00-partial"
    partial.mkdir(parents=True)
    (partial / "web-flat.vmdk").write_bytes(b"\0" * 4096)
    owner = partial / OWNER
    owner.write_text(RunId(os.urandom(6).hex(), "esx-a", 4242, int(time.time()) - 60, "hostA").text() + "\n")
    ahead = time.time() + 600
    os.utime(str(owner), (ahead, ahead))
    log = Log()
    removed = remove_partials(LocalShell(), str(volume), "web", log, RunId.new().on_host("hostB"))
    assert partial.is_dir() and removed == 0, log.lines


# -- 3. a date that never comes, with a day of week cron reads as no restriction ------------------------------------
def test_schedule_install_refuses_feb_30_with_a_star_step_day_of_week(fake_crontab, qemu_site):
    """The admin's crontab generator writes 'every day' as `*/1`: `0 2 30 2 */1`. The new check refuses a date
    that never comes only where the day-of-week field is exactly `*`, taking any other text for a restriction
    under which cron runs on either field. But vixie cron, cronie and Debian's cron (entry.c: a field whose first
    character is '*' sets DOW_STAR) then require BOTH fields: the job runs on February 30 only -- never -- and
    `hotvcb schedule install` says 'installed job nightly', exit 0; no backup is ever made. (busybox crond on
    ESXi does the same for a day-of-week list naming all seven days, `0-6`.) Expected: refused or a warning
    naming the date that never comes, as for `0 2 30 2 *`."""
    import subprocess
    import sys

    from simhost import REPO as SRC
    qmp, conf = qemu_site
    done = subprocess.run([sys.executable, "-m", "hotvcb", "--qemu", str(qmp), "schedule", "install", "--platform",
                           "linux", "--cron", "0 2 30 2 */1", "--job", "nightly", "--", "-m", "vm one", "-g",
                           str(conf)], capture_output=True, text=True, cwd=SRC,
                          env=dict(os.environ, PYTHONPATH=SRC), timeout=60)
    said = (done.stdout + done.stderr).lower().replace(str(qmp.parent).lower(), "")
    assert done.returncode != 0 or "never" in said, (done.returncode, said)


def test_schedule_install_still_takes_feb_29(fake_crontab, qemu_site):
    """Control: February 29 comes in leap years; `0 2 29 2 *` must still install (it does)."""
    import subprocess
    import sys

    from simhost import REPO as SRC
    qmp, conf = qemu_site
    done = subprocess.run([sys.executable, "-m", "hotvcb", "--qemu", str(qmp), "schedule", "install", "--platform",
                           "linux", "--cron", "0 2 29 2 *", "--job", "nightly", "--", "-m", "vm one", "-g",
                           str(conf)], capture_output=True, text=True, cwd=SRC,
                          env=dict(os.environ, PYTHONPATH=SRC), timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 2 29 2 *" in fake_crontab.read_text()


# -- 4. folder backups read by a monitoring agent in another TZ than the nightly job --------------------------------
@needs_root
def test_status_under_the_agents_tz_tells_a_fresh_folder_backup_fresh(host, tmp_path):
    """A Linux host keeps local time (Europe/Berlin): the nightly backup runs from cron, whose environment has no
    TZ (so /etc/localtime's zone names the backup folder), and the monitoring agent runs `hotvcb status --json`
    from a unit that sets TZ=UTC0 (another agent: `TZ=:/etc/localtime` pointing elsewhere in its container).
    docs/operations.md promises 'a folder backup [is aged] by the host's own clock against its name ... so a
    monitoring agent with TZ=UTC (or any other zone) reads the same ages as the host'. But the host's clock is
    read in the reader's zone (LocalShell.now: datetime.now()), so a backup made seconds ago is 'dated 1h ahead
    of the host's clock ... its age cannot be told', WARN every night (since the dated-ahead check; east of the
    host it is hours old instead: CRIT with --max-age). The backup's files say how old it is whatever the zone
    (layout.sealed_age, which the repeated hour already goes by). Expected: OK, a few seconds old, under both."""
    import json

    from test_outsider_s32time import _hotvcb_tz
    host.create_vm("web", "datastore1", [{"size": "1M"}])
    conf = write_conf(host)
    made = _hotvcb_tz(host, "Europe/Berlin", "-m", "web", "-g", conf)
    assert made.returncode == 0, made.stdout + made.stderr
    seen = {}
    for zone in ("Europe/Berlin", "UTC0"):
        r = _hotvcb_tz(host, zone, "status", "-g", conf, "--json", "--max-age", "6h")
        [web] = [c for c in json.loads(r.stdout)["checks"] if c["kind"] == "backup" and c["name"] == "web"]
        seen[zone] = (web["severity"], web["details"].get("age_seconds"), web["message"][:160])
    assert seen["Europe/Berlin"][0] == "OK", seen  # the writer's own zone: right
    assert seen["UTC0"][0] == "OK" and abs(seen["UTC0"][1]) < 600, seen


# -- 5. the dead-taker guard check removes whatever guard is there by then ---------------------------------------
def test_dead_takers_guard_check_does_not_remove_a_live_takers_guard(tmp_path):
    """Last night a run (T0) was killed inside its takeover of a dead run's lock, leaving `hotvcb.lock.takeover`
    with its record. Tonight two runs start together on the host (backup02's file-by-file job and this box's
    nightly run). backup02 finds T0's guard, sees T0 is gone, removes it and takes the guard itself: it is now
    inside its takeover. This run had read T0's record from the guard a moment before, judged 'its pid is dead',
    and then removes the guard PATH -- backup02's live guard. It then takes the guard itself and the dead lock
    over while backup02 is still in its own takeover: both remove 'the stale lock' (the second removal may be
    of the first taker's fresh lock) and both can end up running on the host at once. Before the pid rule this
    needed a guard 60 s old; now a dead pid judges it at once. Expected: only the guard that was judged is
    removed (compare before removing, as the run lock's takeover does with the lock's text); a live taker's
    fresh guard of another machine is left alone."""
    import subprocess
    import threading

    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid no process has now (this machine, this pid namespace): its records are dead by their pid
    dead = RunId.new().with_process_start()
    lock_path, guard = str(tmp_path / "hotvcb.lock"), str(tmp_path / "hotvcb.lock.takeover")
    with open(lock_path, "w") as f:
        f.write(RunId(os.urandom(6).hex(), dead.machine, gone.pid, dead.started, "h", machine_id=dead.machine_id)
                .text() + "\n")
    with open(guard, "w") as f:
        f.write(RunId(os.urandom(6).hex(), dead.machine, gone.pid, dead.started, "h", machine_id=dead.machine_id)
                .text() + "\n")
    live_taker = _other_box_run("backup02").text() + "\n"  # judged by the guard's age: fresh, alive
    read_t0, go_on = threading.Event(), threading.Event()

    class Racy(LocalShell):
        def read_regular(self, path, limit):
            text = super().read_regular(path, limit)
            if path == guard and not read_t0.is_set():
                read_t0.set()
                go_on.wait(10)  # backup02 swaps its own guard in here
            return text

    outcome = {}

    def run():
        try:
            outcome["lock"] = HostLock(Racy(), str(tmp_path), RunId.new().on_host("h")).acquire()
        except LockError as err:
            outcome["error"] = err

    t = threading.Thread(target=run)
    t.start()
    try:
        assert read_t0.wait(10), "the run never read the guard"
        os.unlink(guard)  # backup02 removed T0's guard ...
        with open(guard + ".b02", "w") as f:
            f.write(live_taker)
        os.link(guard + ".b02", guard)  # ... and took the guard: it is inside its takeover now
    finally:
        go_on.set()
        t.join(30)
    if "lock" in outcome:
        outcome["lock"].release()
    assert os.path.exists(guard) and open(guard).read() == live_taker, outcome
