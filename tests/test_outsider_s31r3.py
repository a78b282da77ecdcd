"""Outside tester, s31 round 3: the behaviour changed in the last hour - rotation's backups named
ahead of the clock, symlinks and cut ghettoVCB folders; LOG_LEVEL, the default log file under -w;
-a/-m/-f precedence; work folders under -w swept of dead runs. Each defect is a strict xfail until
fixed; the rest pin behaviour an admin relies on. A simulated ESXi host with 1 MiB VMs where one is
needed, in-process rotation on folders in tmp_path where none is."""

import datetime
import io
import os
import shutil
from pathlib import Path

from hotvcb.localshell import LocalShell
from hotvcb.runlog import RunLog
from hotvcb.store import rotation
import pytest

from simhost import VOLUME, backups, hotvcb, needs_root, power, write_conf
from test_outsider_interop import ghettovcb_folder

OK = "Successfully completed backup"


def _rotate(vol, count, just_made, budget=0):
    log = io.StringIO()
    removed = rotation.rotate(LocalShell(), str(vol), "web", count, RunLog(stream=log), just_made=str(just_made),
                              budget=budget)
    return sorted(os.path.basename(p) for p in removed), log.getvalue()


# -- LOG_LEVEL in a per-VM file ------------------------------------------------------------------------------

@needs_root
def test_a_per_vm_file_saying_log_level_dryrun_does_not_shut_the_vm_down_for_a_real_backup(host, tmp_path):
    """The admin tries POWER_VM_DOWN_BEFORE_BACKUP=1 for one VM the ghettoVCB way, safely: its per-VM file
    (-c DIR) says `LOG_LEVEL=dryrun` beside it. ghettoVCB.sh sourced the per-VM file inside its VM loop and
    then asked `LOG_LEVEL == dryrun` for that VM, so the file made the VM's turn a dry run. hotvcb warns
    'LOG_LEVEL applies to the whole run, not one VM' and then powers the production VM off at 14:00 and
    copies it for real. The global file's LOG_LEVEL=dryrun was made to count for exactly this reason (a
    key asking for a dry run must never turn into a real run); the per-VM one must too: dry-run that VM,
    or fail it before anything is changed - never shut it down."""
    vmid = host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    configs = tmp_path / "vmconf"
    configs.mkdir()
    (configs / "web").write_text("LOG_LEVEL=dryrun\nPOWER_VM_DOWN_BEFORE_BACKUP=1\nITER_TO_WAIT_SHUTDOWN=5s\n")
    r = hotvcb(host, "-m", "web", "-g", write_conf(host), "-c", configs, "-w", tmp_path / "w")
    assert "Traceback" not in r.stdout + r.stderr
    assert "Powering off" not in r.stdout, r.stdout[-1500:]
    assert backups(host, "web") == [], "a real backup was made:\n" + r.stdout[-1500:]
    assert "Powered on" in power(host, vmid)


# -- restore --latest and a backup named ahead of the clock --------------------------------------------------

@needs_root
def test_restore_latest_does_not_silently_take_a_backup_named_ahead_of_the_clock(host, tmp_path):
    """The host's clock ran a month ahead for a while (a BIOS clock after a board swap) and NTP set it
    back. Rotation now warns each night that `web-<a month ahead>` is 'named later than the host's
    clock ... remove them by hand if they are stale', and `status` says its age 'cannot be told' (WARN).
    The admin needs last night's data back: `hotvcb restore --latest web` restores the month-ahead
    backup - data that may be weeks older than last night's - with not one word, 'All VMs restored OK!'.
    --latest passes over a newer backup that is not good with a warning naming it; one named ahead of
    the clock (which rotation and status both distrust) must be passed over or warned about too."""
    host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    conf = write_conf(host)
    r = hotvcb(host, "-m", "web", "-g", conf, "-w", tmp_path / "w")
    assert r.returncode == 0, r.stdout[-1500:]
    folder = Path(host.real(VOLUME)) / "web"
    (tonight,) = os.listdir(str(folder))
    ahead = "web-" + (datetime.datetime.now() + datetime.timedelta(days=30)).strftime("%Y-%m-%d_%H-%M-%S")
    shutil.copytree(str(folder / tonight), str(folder / ahead), symlinks=True)  # made while the clock ran ahead
    r = hotvcb(host, "restore", "--latest", "web", "-g", conf, "--datastore", "datastore1", "--name", "web-back")
    said = (r.stdout + r.stderr).splitlines()
    assert "Traceback" not in r.stdout + r.stderr
    restored_from = [ln for ln in said if "Restoring VM from:" in ln]
    warned = [ln for ln in said if "warning" in ln.lower() and ahead in ln]
    assert warned or (restored_from and tonight in restored_from[0]), "\n".join(said[-20:])


def test_rotation_sets_aside_a_backup_named_a_month_ahead_and_keeps_the_count_of_real_ones(tmp_path):
    """Pinned (passes today): three good backups of the last three days, the one made now, and one named a
    month ahead; rotation at 3 removes only the oldest real one, keeps the month-ahead one, and says so."""
    vol = tmp_path / "vol"
    now = datetime.datetime.now()
    ahead = ghettovcb_folder(vol, "web", (now + datetime.timedelta(days=30)).strftime("%Y-%m-%d_%H-%M-%S"),
                             "STATUS.ok", OK)
    names = [(now - datetime.timedelta(days=d)).strftime("%Y-%m-%d_%H-%M-%S") for d in (3, 2, 1, 0)]
    for stamp in names:
        newest = ghettovcb_folder(vol, "web", stamp, "STATUS.ok", OK)
    removed, log = _rotate(vol, 3, newest)
    assert removed == ["web-" + names[0]]
    assert ahead.name in log and "clock" in log
    assert ahead.exists()


# -- the default log file under -w ----------------------------------------------------------------------------

@needs_root
def test_default_logs_named_ahead_of_the_clock_do_not_push_out_last_nights_log(host, tmp_path):
    """A cron line without -l (`hotvcb -f vms -g ghettoVCB.conf > /dev/null 2>&1`): each run keeps its log
    as `<-w>/hotvcb-<date>_<time>-<pid>.log`, 'the newest 20 kept'. The host's clock ran ahead for three
    weeks (20 nightly logs named 2027-...), then NTP set it back. Now every run deletes the log of the run
    before it: the logs are sorted by the date in their name, so the 20 ahead-named ones count as the
    newest and stay, while last night's - the one the admin opens after a failed night - is removed by
    tonight's run. Rotation sets backups named ahead aside for this very reason; the logs' pruning must
    not eat the real newest ones either (by mtime, or the ahead-named ones set aside)."""
    host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    conf = write_conf(host)
    work = tmp_path / "w"
    work.mkdir()
    year = datetime.date.today().year + 1
    for day in range(1, 21):
        (work / ("hotvcb-%d-06-%02d_21-00-00-%d.log" % (year, day, 1000 + day))).write_text("a night long ago\n")
    first = hotvcb(host, "-m", "web", "-g", conf, "-w", work)
    assert first.returncode == 0, first.stdout[-1500:]
    (line,) = [ln for ln in first.stdout.splitlines() if ln.startswith("Logging output to")]
    last_nights = line.split('"')[1]
    assert os.path.isfile(last_nights)
    second = hotvcb(host, "-m", "web", "-g", conf, "-w", work)
    assert second.returncode == 0, second.stdout[-1500:]
    assert os.path.isfile(last_nights), "last night's log was removed; kept: %s" % sorted(os.listdir(str(work)))


@needs_root
def test_default_log_keeps_the_newest_twenty(host, tmp_path):
    """Pinned (passes today): 25 older default logs in -w; a run keeps the newest 19 of them and its own."""
    host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    work = tmp_path / "w"
    work.mkdir()
    for day in range(1, 26):
        (work / ("hotvcb-2026-01-%02d_21-00-00-%d.log" % (day, 100 + day))).write_text("old\n")
    r = hotvcb(host, "-m", "web", "-g", write_conf(host), "-w", work)
    assert r.returncode == 0, r.stdout[-1500:]
    logs = sorted(n for n in os.listdir(str(work)) if n.endswith(".log"))
    assert len(logs) == 20 and logs[0] == "hotvcb-2026-01-07_21-00-00-107.log", logs


# -- work folders under -w ------------------------------------------------------------------------------------

@needs_root
def test_a_work_folder_workdir_debug_kept_before_the_upgrade_is_not_swept(host, tmp_path):
    """Last week the admin set WORKDIR_DEBUG=1 to chase a problem with support: hotvcb kept its work folder
    `<-w>/hotvcb-<run>/` (run.txt, debug.log), as the release then running did - without any marker, for
    that release wrote none. The admin upgrades hotvcb; the first backup after it removes that folder
    ('removed ...: the work folder of a run that is gone'), debug.log and all. The docs promise the sweep
    removes 'never ... one WORKDIR_DEBUG=1 kept'; a folder holding a debug.log that no marker explains
    (or any record written before the marker existed) must be left, as the admin asked it to be.
    (The earlier release's folder is made here by this release with WORKDIR_DEBUG=1, its marker removed:
    the files the earlier release's WorkDir wrote, run.txt and debug.log.)"""
    host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    work = tmp_path / "w"
    r = hotvcb(host, "-m", "web", "-g", write_conf(host, WORKDIR_DEBUG=1), "-w", work)
    assert r.returncode == 0, r.stdout[-1500:]
    (kept,) = [p for p in work.iterdir() if p.is_dir()]
    os.unlink(str(kept / "WORKDIR_DEBUG"))  # what the release before the marker left
    assert sorted(os.listdir(str(kept))) == ["debug.log", "run.txt"]
    r = hotvcb(host, "-m", "web", "-g", write_conf(host), "-w", work)
    assert r.returncode == 0, r.stdout[-1500:]
    assert (kept / "debug.log").exists(), [ln for ln in r.stdout.splitlines() if "work folder" in ln]


# -- -a / -m / -f ----------------------------------------------------------------------------------------------

@needs_root
def test_m_overrides_a_missing_f_list_and_a_overrides_a_typo_in_m(host, tmp_path):
    """Pinned (passes today): `-m web -f /no/such/list` backs up web with a warning (the list not read),
    `-a -m gone` backs up every VM with a warning naming -m gone."""
    host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    conf = write_conf(host)
    r = hotvcb(host, "-m", "web", "-f", "/no/such/list", "-g", conf, "-w", tmp_path / "w")
    assert r.returncode == 0, r.stdout[-1500:]
    assert "-m web overrides -f /no/such/list" in r.stdout
    r = hotvcb(host, "-a", "-m", "gone", "-g", conf, "-w", tmp_path / "w")
    assert r.returncode == 0, r.stdout[-1500:]
    assert "-a overrides -m gone" in r.stdout


# -- -l / --json-report / -w on the NFS share the run mounts ----------------------------------------------------

@needs_root
@pytest.mark.parametrize("option", ["-l", "--json-report", "-w"])
def test_a_double_slash_path_on_the_share_the_run_mounts_makes_no_folder_in_vmfs_volumes(host, tmp_path, option):
    """The admin's wrapper script builds its paths as `"$ROOT/$SUB"` with ROOT=/ and SUB=vmfs/volumes/nas/logs,
    which gives `//vmfs/volumes/nas/logs/...` - the same path to every program (POSIX lets a leading // be
    special, Linux and ESXi's busybox do not). The config mounts the NFS share `nas`
    (ENABLE_NON_PERSISTENT_NFS=1). hotvcb refuses `-l /vmfs/volumes/nas/logs/x` ('makes no folder in
    /vmfs/volumes, where it would stand in the share's way'), but the `//` spelling passes the check: a
    folder `nas` is made in /vmfs/volumes, in the host's ramdisk, and every later mount of the share there
    fails. The check must normalise the leading // as the file system does."""
    host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    conf = write_conf(host, ENABLE_NON_PERSISTENT_NFS=1, NFS_SERVER="127.0.0.1", NFS_MOUNT="/export",
                      NFS_LOCAL_NAME="nas", NFS_VM_BACKUP_DIR="b")
    target = {"-l": "//vmfs/volumes/nas/logs/x.log", "--json-report": "//vmfs/volumes/nas/logs/r.json",
              "-w": "//vmfs/volumes/nas/work"}[option]
    args = [option, target] if option == "-w" else [option, target, "-w", str(tmp_path / "w")]
    r = hotvcb(host, "-m", "web", "-g", conf, "-d", "dryrun", *args)
    assert "Traceback" not in r.stdout + r.stderr
    assert not os.path.lexists(host.real("/vmfs/volumes/nas")), (
        "a folder was made where the share mounts:\n" + (r.stdout + r.stderr)[-800:])


@needs_root
def test_the_sweep_leaves_the_work_folder_of_another_esxi_host_with_the_same_name(host, tmp_path):
    """Two ESXi hosts installed from one kickstart image both call themselves esxi01 (as two hosts left at
    ESXi's default name both say `localhost`); ESXi has no /etc/machine-id to tell them apart. Both run
    their nightly job with `-w` on the shared NFS datastore, so the work folders are kept off the small
    ramdisk. Host B's run is copying its VMs when host A's run starts: A's sweep reads B's record
    (machine=esxi01, B's pid, host=<B's host id>), finds no hotvcb with that pid on A, and removes B's live
    work folder, debug.log and all - the docs promise 'never a live run's, another machine's'. The record
    names the host it ran on (host=...), which is not A's; a folder of another host must be left.
    (B's record is written here as B's run writes it on ESXi: no mid, B's host id, a pid A does not run.)"""
    import subprocess
    import time

    host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    work = tmp_path / "w"
    work.mkdir()
    finished = subprocess.Popen(["true"])
    finished.wait()  # a pid this machine does not run: host B's run is on host B
    theirs = work / "hotvcb-0123456789ab"
    theirs.mkdir()
    (theirs / "run.txt").write_text("run=0123456789ab machine=esxi01 pid=%d started=%d host=idesxi0b\n"
                                    % (finished.pid, int(time.time())))
    (theirs / "debug.log").write_text("host B's run, copying\n")
    r = hotvcb(host, "-m", "web", "-g", write_conf(host), "-w", work)
    assert r.returncode == 0, r.stdout[-1500:]
    assert "HOST: local (esxi01)" in r.stdout  # the same name, indeed
    assert (theirs / "debug.log").exists(), [ln for ln in r.stdout.splitlines() if "work folder" in ln]
