"""Outside test, session 32: TIME. Hosts living through time zones, summer time ending, clocks set wrong and
fixed, year and month ends: rotation, restore --latest, status, the run lock, repository prune (Proxmox Backup
Server's keep rules, docs/repository.md) and its periods. Each defect is a strict xfail until fixed."""

import datetime
import json
import os
import subprocess
import sys
import time

import pytest
from cronsite import fake_crontab, qemu_site  # noqa: F401  (the fixtures)
from repotool import backup, new_repo

from hotvcb.errors import LockError
from hotvcb.localshell import LocalShell
from hotvcb.runid import RunId
from hotvcb.store.lock import HostLock
from simhost import REPO as SRC, _argv, needs_root, write_conf
from test_outsider_s27repo import small_disk

REPO = "/vmfs/volumes/backup/repo"


def _hotvcb_tz(host, zone, *args):
    """hotvcb on the simulated host, under the environment's TZ=zone (a cron job's or a monitoring agent's)."""
    env = dict(os.environ, PYTHONPATH=SRC, TZ=zone)
    return subprocess.run(_argv(host, args), capture_output=True, text=True, timeout=180, env=env, cwd=SRC)


def _backup_check(stdout, vm):
    return [c for c in json.loads(stdout)["checks"] if c["kind"] == "backup" and c["name"] == vm][0]


# -- 1. a repository's status reads the record's local time in the reader's zone ----------------------------------
@needs_root
def test_repository_status_ages_a_backup_by_its_instant_not_the_readers_zone(host, tmp_path):
    """A Linux KVM host keeps local time; its nightly backup into VM_BACKUP_REPOSITORY runs from a systemd timer
    in the host's zone, and the monitoring agent (its unit sets TZ=UTC, as many containers and agents do) runs
    `hotvcb status --json`. The backup was made seconds ago and its record says so exactly (`utc`), but status
    converts the record's local wall time with the reader's zone: under a reader 10 hours west of the writer a
    fresh backup is hours 'ahead', under one a day east of it (Kiritimati, UTC+14, reading Honolulu's UTC-10
    record) it is '1d old', CRIT with --max-age 6h. The same host's folder backups are aged by the host's clock, 'no zone of ours enters'
    (jobs/status._made_at). Expected: OK, age a few seconds, under any TZ of the reader."""
    host.create_vm("web", "datastore1", [{"size": "1M"}])
    conf = write_conf(host, VM_BACKUP_REPOSITORY=REPO)
    repo = new_repo(host.real(REPO))
    old_tz = os.environ.get("TZ")
    os.environ["TZ"] = "Pacific/Honolulu"  # the writer's zone: its record's `time` is Honolulu's wall clock
    time.tzset()
    try:
        backup(repo, "web", small_disk(tmp_path / "web.raw"))
    finally:
        if old_tz is None:
            os.environ.pop("TZ")
        else:
            os.environ["TZ"] = old_tz
        time.tzset()
    ages = {}
    for zone in ("Pacific/Honolulu", "Pacific/Kiritimati"):
        r = _hotvcb_tz(host, zone, "status", "-g", conf, "--json", "--max-age", "6h")
        web = _backup_check(r.stdout, "web")
        ages[zone] = (web["severity"], web["details"].get("age_seconds"), web["message"])
    assert ages["Pacific/Honolulu"][0] == "OK", ages  # the writer's own zone: right
    assert ages["Pacific/Kiritimati"][0] == "OK" and abs(ages["Pacific/Kiritimati"][1]) < 600, ages


# -- 2. the run lock of a dead run on another machine, dated ahead by a clock set back since ----------------------
def test_run_lock_dated_a_day_ahead_is_not_a_live_heartbeat(tmp_path, monkeypatch):
    """Monday a file-by-file run from the backup box (SSH mode) was killed with the host's clock a day ahead (a
    wrong BIOS clock); NTP set it right since. The lock it left says 'otherbox', so it is judged by its heartbeat:
    the file's mtime, now a day in the future. `Shell.age` clamps a negative age to 0, so the heartbeat looks
    fresh, and every backup of the host is refused for a whole day -- each refusal saying 'the lock is free 300 s
    after that run's last heartbeat'. A live holder touches its lock every 30 s by the host's clock, so a
    heartbeat dated a day ahead is not one (the GC lock treats 'dated that far ahead' as clock garbage:
    docs/repository.md). Expected: the lock is taken over as stale (or at least the refusal does not promise
    300 s)."""
    # a stamp dated ahead is watched for one beat before it is judged: 1 s here, not 30 s (the verdict is the same)
    monkeypatch.setattr("hotvcb.store.lock.HEARTBEAT", 1.0)
    lock = tmp_path / "hotvcb.lock"
    lock.write_text(RunId("abcdefabcdef", "otherbox", 4242, int(time.time()) - 7200, "h", None, 0, None).text() + "\n")
    ahead = time.time() + 86400
    os.utime(str(lock), (ahead, ahead))
    try:
        taken = HostLock(LocalShell(), str(tmp_path), RunId.new().on_host("h")).acquire()
    except LockError as err:
        pytest.fail("refused: %s" % err)
    try:
        assert taken.took_over
    finally:
        taken.release()


# -- 3./4. a host in local time through the night its summer time ends ----------------------------------------------
def _fall_back_soon(seconds=6):
    """(a POSIX TZ leaving summer time (UTC+1 -> UTC+0, as Europe/London) `seconds` from now, the instant it does)."""
    from test_outsider_s27b import _zone_leaving_summer_time_at
    at = datetime.datetime.utcnow().replace(microsecond=0) + datetime.timedelta(seconds=seconds)
    return _zone_leaving_summer_time_at(at), time.time() + seconds + 1


def _wait_until(epoch):
    while time.time() < epoch:
        time.sleep(0.2)


def _summer_backup(host, zone, conf):
    """Back `web` up under `zone` and return its folder's name; skip where the machine was too slow for the
    backup to begin before the clocks went back (its name would then not be summer time's, an hour ahead)."""
    folder = host.real("/vmfs/volumes/backup/hotvcb/web")
    before = set(os.listdir(folder)) if os.path.isdir(folder) else set()
    r = _hotvcb_tz(host, zone, "-m", "web", "-g", conf)
    assert r.returncode == 0, r.stdout + r.stderr
    [name] = [n for n in set(os.listdir(folder)) - before if n.startswith("web-")]
    named = datetime.datetime.strptime(name[len("web-"):], "%Y-%m-%d_%H-%M-%S")
    if named < datetime.datetime.utcnow() + datetime.timedelta(minutes=30):
        pytest.skip("the backup began after summer time ended (a slow machine): %s" % name)
    return name


@needs_root
def test_status_after_summer_time_ended_calls_a_fresh_backup_fresh(host, tmp_path):
    """A Linux host keeps local time (Europe/London here, on the simulated host through TZ). The VM is backed up at
    01:59:59 BST; a second later the clocks go back to 01:00:00 GMT. Monitoring runs `hotvcb status --json`
    a few seconds later: 'newest good backup web-..._01-59-.. is dated 59m ahead of the host's clock (a clock
    that was ahead when it was made, or is behind now): its age cannot be told', WARN -- for the whole hour, every
    year, for every VM backed up in the last hour of summer time. Nobody set a clock wrong: the backup's own files
    say how long ago it was sealed whatever the zone (their mtimes, Shell.age), and the name's wall time could
    carry its UTC offset in the manifest. Expected: OK, age a few seconds."""
    host.create_vm("web", "datastore1", [{"size": "1M"}])
    conf = write_conf(host)
    zone, after = _fall_back_soon()
    _summer_backup(host, zone, conf)
    _wait_until(after)
    r = _hotvcb_tz(host, zone, "status", "-g", conf, "--json")
    web = _backup_check(r.stdout, "web")
    assert web["severity"] == "OK" and 0 <= web["details"]["age_seconds"] < 600, (zone, web)


@needs_root
def test_restore_latest_after_summer_time_ended_restores_the_newest_backup(host, tmp_path):
    """A Linux host in local time (Europe/London). The VM is backed up at 01:59:59 BST (web-..._01-59-59); the
    clocks go back; before a risky upgrade at 01:00:05 GMT the admin backs it up again (web-..._01-00-05,
    the newest data). The upgrade fails and the admin runs `hotvcb restore --latest web`: it restores
    web-..._01-59-59, the OLDER backup, by its later name -- silently: no warning that another backup was
    made after it. Which was made last can be told (the backups' files' mtimes; a manifest could record the
    UTC offset of its name's wall time). Expected: the backup made last is restored (or the restore refuses to
    guess and names both)."""
    host.create_vm("web", "datastore1", [{"size": "1M"}])
    conf = write_conf(host)
    zone, after = _fall_back_soon()
    _summer_backup(host, zone, conf)
    _wait_until(after)
    r = _hotvcb_tz(host, zone, "-m", "web", "-g", conf)
    assert r.returncode == 0, r.stdout + r.stderr
    names = sorted(os.listdir(host.real("/vmfs/volumes/backup/hotvcb/web")))
    backups = [n for n in names if n.startswith("web-")]
    assert len(backups) == 2, names
    made_last = min(backups)  # named by the wall clock an hour back
    r = _hotvcb_tz(host, zone, "restore", "--latest", "web", "-g", conf, "--datastore", "datastore1",
                   "--name", "web-restored", "-d", "1")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert made_last in out and max(backups) not in out.replace(made_last, ""), (backups, out[-1500:])


@needs_root
def test_rotation_in_the_repeated_hour_keeps_the_newest_backups(host, tmp_path):
    """VM_BACKUP_ROTATION_COUNT=2 ('keep the newest 2 good backups', docs/config-reference.md) on a Linux host in
    local time. Backups at 01:59:59 BST (A), then after the clocks went back at 01:00:05 GMT (B) and 01:00:10
    GMT (C): in the order made A, B, C. The third run keeps A -- the oldest, by its later name -- and C, and
    deletes B, the newest data but one. (B's own run already warned 'backups named later than the one just
    made exist (was the clock ahead?)' although no clock was wrong.) Expected: B and C kept, A removed."""
    host.create_vm("web", "datastore1", [{"size": "1M"}])
    conf = write_conf(host, VM_BACKUP_ROTATION_COUNT=2)
    zone, after = _fall_back_soon()
    folder = host.real("/vmfs/volumes/backup/hotvcb/web")
    made = [_summer_backup(host, zone, conf)]
    _wait_until(after)
    for i in range(2):
        r = _hotvcb_tz(host, zone, "-m", "web", "-g", conf)
        assert r.returncode == 0, r.stdout + r.stderr
        made.append(sorted(set(n for n in os.listdir(folder) if n.startswith("web-")) - set(made))[0])
        time.sleep(1.1)  # a name of its own second
    left = sorted(n for n in os.listdir(folder) if n.startswith("web-"))
    assert sorted(made[1:]) == left, (made, left)


# -- 6. the default logs a clock that ran ahead left --------------------------------------------------------------
@needs_root
def test_default_logs_of_a_clock_that_ran_ahead_do_not_push_out_tonights(host, tmp_path):
    """The host's clock ran a year ahead for three weeks (20 nightly runs without -l left their logs in
    /tmp/hotvcb.work, dated 2027-...), then NTP set it right. README: 'the 20 last written kept, by modification
    time: a clock that ran ahead once names logs later than tonight's' -- and the code's docstring says sorting
    by mtime instead of by name keeps such logs from staying for ever while each run removes the one before it.
    But the same clock set their mtimes: a year ahead too. Tonight's run removes one of them, and tomorrow's run
    removes tonight's log (the oldest by mtime), and so every night for a year: the admin never finds last
    night's log. Expected: the log of the run before survives the next run."""
    host.create_vm("web", "datastore1", [{"size": "1M"}])
    conf = write_conf(host)
    work = tmp_path / "work"
    work.mkdir()
    ahead = time.time() + 365 * 86400
    for i in range(20):
        when = ahead + i * 86400
        name = "hotvcb-%s-%d.log" % (time.strftime("%Y-%m-%d_%H-%M-%S", time.localtime(when)), 1000 + i)
        (work / name).write_text("an old night's log\n")
        os.utime(str(work / name), (when, when))
    first = _hotvcb_tz(host, "UTC", "-m", "web", "-g", conf, "-w", str(work))
    assert first.returncode == 0, first.stdout + first.stderr
    tonight = [n for n in os.listdir(str(work)) if n.endswith(".log") and
               os.stat(str(work / n)).st_mtime < time.time() + 3600]
    assert len(tonight) == 1, sorted(os.listdir(str(work)))
    time.sleep(1.1)
    second = _hotvcb_tz(host, "UTC", "-m", "web", "-g", conf, "-w", str(work))
    assert second.returncode == 0, second.stdout + second.stderr
    assert (work / tonight[0]).exists(), sorted(os.listdir(str(work)))


# -- 7. a repository's backups a clock that ran ahead recorded ---------------------------------------------------
def test_prune_keep_last_does_not_remove_tonights_backup_for_one_dated_a_month_ahead(tmp_path, capsys):
    """The backup host's clock ran a month ahead one night (a bad RTC after a board swap) before NTP set it
    right. That night's backup went into the repository with `utc` and `time` a month ahead. Tonight's backup
    is made; the nightly `hotvcb prune --keep-last 1` then keeps the month-ahead backup -- last month's data --
    and REMOVES tonight's, and `restore --latest web` would restore the stale one; every night for a month the
    newest backup is dropped by the prune that follows it. Folder backups set such backups aside ('backups
    named more than a day after the host's clock ... neither counted nor removed', docs/backup-format.md,
    restore --latest passes over them); the repository, written by the same run, has no such rule.
    Expected: tonight's backup survives the prune (the one dated ahead set aside or kept as well)."""
    from hotvcb.cli import main
    from hotvcb.repo.repository import open_path
    disk = small_disk(tmp_path / "web.raw")
    repo = new_repo(tmp_path / "repo")
    month = 30 * 86400
    real_now = repo.backend.now
    repo.backend.now = lambda: real_now() + month  # the backend's clock that night (its probe's mtime)
    stale = backup(repo, "web", disk, when=datetime.datetime.now() + datetime.timedelta(seconds=month))
    repo.backend.now = real_now
    tonight = backup(repo, "web", disk)
    assert main(["prune", "--repo", str(tmp_path / "repo"), "--keep-last", "1"]) == 0
    left = [s.id for s in open_path(str(tmp_path / "repo")).snapshots("web")]
    assert tonight.id in left, "prune kept %s (dated ahead: %s) and removed tonight's %s" % (left, stale.id, tonight.id)


# -- 8. an admin's snapshot made while the clock ran ahead -------------------------------------------------------
@needs_root
def test_status_does_not_call_a_snapshot_dated_a_month_ahead_brand_new(host, tmp_path):
    """An admin took a snapshot 'before upgrade' on a host whose clock ran a month ahead (a bad RTC); NTP set the
    clock right since. `hotvcb status --json` says 'snapshot 'before upgrade' (..., 0s old, ...)', OK -- and keeps
    saying it is brand new for a month while its delta grows (--snapshot-age 24h never fires). For the same clock
    error on a backup, status says 'dated .. ahead of the host's clock ...: its age cannot be told', WARN.
    Expected: not OK with age 0: WARN that its age cannot be told (or no made-up age)."""
    import re
    host.create_vm("web", "datastore1", [{"size": "1M"}], snapshots=["before upgrade"])
    conf = write_conf(host)
    vmsd = host.real("/vmfs/volumes/datastore1/web/web.vmsd")
    text = open(vmsd).read()
    us = int((time.time() + 30 * 86400) * 1e6)
    lo = us & 0xFFFFFFFF
    text = re.sub(r'(createTimeHigh = )"-?\d+"', r'\g<1>"%d"' % (us >> 32), text)
    text = re.sub(r'(createTimeLow = )"-?\d+"', r'\g<1>"%d"' % (lo - (1 << 32) if lo >= 1 << 31 else lo), text)
    with open(vmsd, "w") as f:
        f.write(text)
    r = _hotvcb_tz(host, "UTC", "status", "-g", conf, "--json")
    snaps = [c for c in json.loads(r.stdout)["checks"] if c["kind"] == "snapshot" and c["name"] == "web"]
    assert len(snaps) == 1, r.stdout
    snap = snaps[0]
    assert not (snap["severity"] == "OK" and snap["details"]["age_seconds"] == 0), snap


# -- 9. a schedule that never comes round ------------------------------------------------------------------------
@pytest.mark.parametrize("expr", ["0 2 30 2 *", "0 2 31 4,6,9,11 *"])
def test_schedule_install_refuses_a_date_that_never_comes(fake_crontab, qemu_site, expr):
    """Month ends: the admin wants the backup on the last day of the quarter's months and types `0 2 31 4,6,9,11 *`
    (or 'end of February', `0 2 30 2 *`). `hotvcb schedule install` answers 'installed job nightly: ...', exit 0
    (a systemd timer: 'OnCalendar=*-02-30 02:00:00', which systemd-analyze says elapses 'never'). Neither cron nor
    systemd will ever run it: no backup is ever made, and nothing says so. The same command warns of a job with
    `-d dryrun` that 'never backs anything up' ('never silently'). Expected: refused (exit != 0) or a warning
    naming the date that never comes."""
    qmp, conf = qemu_site
    done = subprocess.run([sys.executable, "-m", "hotvcb", "--qemu", str(qmp), "schedule", "install", "--platform",
                           "linux", "--cron", expr, "--job", "nightly", "--", "-m", "vm one", "-g", str(conf)],
                          capture_output=True, text=True, cwd=SRC, env=dict(os.environ, PYTHONPATH=SRC), timeout=60)
    said = (done.stdout + done.stderr).lower().replace(str(qmp.parent).lower(), "")
    assert done.returncode != 0 or "never" in said, (done.returncode, said)


# -- 10. prune against a hand-worked PBS table: ISO week 53 at the year's end, the repeated hour -----------------
def _pruned(tmp_path, rules, times):
    """Backups of `web` made in the order of `times` (their records' local `time`; `utc` in that order), then
    `hotvcb prune --repo ... rules`: the times left, newest first."""
    from hotvcb.cli import main
    from hotvcb.repo.repository import open_path
    disk = small_disk(tmp_path / "web.raw")
    path = tmp_path / "repo"
    repo = new_repo(path)
    ids = {}
    for t in times:
        ids[backup(repo, "web", disk, when=datetime.datetime.strptime(t, "%Y-%m-%d %H:%M")).id] = t
    assert main(["prune", "--repo", str(path)] + rules) == 0
    return [ids[s.id] for s in open_path(str(path)).snapshots("web")][::-1]


def test_prune_across_iso_week_53_matches_pbs(tmp_path, capsys):
    """PBS (compute_prune_info: keep-daily '%Y/%m/%d', keep-weekly '%G/%V', keep-yearly '%Y', each rule
    skipping periods an earlier rule kept) on 2020's week 53, which runs to Sunday 2021-01-03:

    | time (newest first) | ISO week | daily 1        | weekly 2          | yearly 2          | result |
    | 2021-01-04 09:00    | 2021-W01 | keep           |                   |                   | keep   |
    | 2021-01-04 01:00    | 2021-W01 | remove (day)   |                   |                   | remove |
    | 2021-01-03 23:00    | 2020-W53 | (1 day kept)   | keep (W53)        |                   | keep   |
    | 2021-01-01 10:00    | 2020-W53 |                | remove (W53 kept) |                   | remove |
    | 2020-12-31 10:00    | 2020-W53 |                | remove            |                   | remove |
    | 2020-12-28 10:00    | 2020-W53 |                | remove            |                   | remove |

    (keep-yearly finds every backup decided on.)"""
    left = _pruned(tmp_path, ["--keep-daily", "1", "--keep-weekly", "2", "--keep-yearly", "2"],
                   ["2020-12-28 10:00", "2020-12-31 10:00", "2021-01-01 10:00", "2021-01-03 23:00",
                    "2021-01-04 01:00", "2021-01-04 09:00"])
    assert left == ["2021-01-04 09:00", "2021-01-03 23:00"], left


def test_prune_keep_hourly_in_the_repeated_hour_matches_pbs(tmp_path, capsys):
    """The night summer time ends (London: 02:00 BST -> 01:00 GMT), backups in the order made (a, b, c, d, e)
    with their local times; PBS groups by strftime_local('%Y/%m/%d/%H'), so both 01 o'clock hours are one
    period, ordered by the instant:

    | made | local time | hour | keep-hourly 3        |
    | e    | 02:20 GMT  | 02   | keep                 |
    | d    | 01:50 GMT  | 01   | keep                 |
    | c    | 01:10 GMT  | 01   | remove (hour 01 kept) |
    | b    | 01:30 BST  | 01   | remove               |
    | a    | 00:30 BST  | 00   | keep                 |"""
    left = _pruned(tmp_path, ["--keep-hourly", "3"],
                   ["2026-10-25 00:30", "2026-10-25 01:30", "2026-10-25 01:10", "2026-10-25 01:50",
                    "2026-10-25 02:20"])
    assert left == ["2026-10-25 02:20", "2026-10-25 01:50", "2026-10-25 00:30"], left


# -- 11. status behind a backup set aside as dated ahead --------------------------------------------------------
@needs_root
def test_status_of_a_vm_whose_backups_stopped_behind_one_dated_ahead_goes_crit(host, tmp_path):
    """The host's clock ran 40 days ahead one night in the ghettoVCB days (web-<40 days ahead>, kept by the
    admin 'in case') and was set right. Rotation and `restore --latest` set such a backup aside (docs/backup-
    format.md) and go by the real ones. The nightly job then stops (a broken cron line): the newest real backup
    is 3 days old, past twice --max-age 26h, which is CRIT. `hotvcb status` says WARN 'newest good backup
    web-<ahead> is dated 40d ahead of the host's clock ...: its age cannot be told' -- the same WARN it gave every
    night while backups ran fine, so on-call never learns the backups stopped; for 40 days. Expected: CRIT for
    the real newest backup's age (the one dated ahead may well be warned of besides)."""
    from test_outsider_interop import ghettovcb_folder
    from pathlib import Path
    host.create_vm("web", "datastore1", [{"size": "1M"}])
    conf = write_conf(host)
    vol = Path(host.real("/vmfs/volumes/backup/hotvcb"))
    now = datetime.datetime.utcnow()  # the simulated ESXi host keeps UTC
    for when in (now + datetime.timedelta(days=40), now - datetime.timedelta(days=3)):
        ghettovcb_folder(vol, "web", when.strftime("%Y-%m-%d_%H-%M-%S"), "STATUS.ok", "Successfully completed backup")
    r = _hotvcb_tz(host, "UTC", "status", "-g", conf, "--json")
    web = _backup_check(r.stdout, "web")
    assert web["severity"] == "CRIT", web
