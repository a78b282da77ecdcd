"""Outside test, stop 28: a ghettoVCB user moving to hotvcb with their existing files and backups.

The admin keeps their ghettoVCB.conf, per-VM files (-c), VM lists (-f/-e), vms_to_restore and the
backup folders ghettoVCB made (STATUS.ok, .gz), and points hotvcb at them on a simulated ESXi host.
What ghettoVCB did is read from its scripts (lamw/ghettoVCB: ghettoVCB.sh, ghettoVCB-restore.sh).
Each defect is a strict xfail until fixed. Tiny disks; one host per test.
"""

import json
import os
import time

import pytest

from simhost import hotvcb, make_host, needs_root
from test_outsider_interop import ghettovcb_folder

pytestmark = needs_root

VOL = "/vmfs/volumes/backup/ghetto"
STAMPS = ("2026-11-28_21-00-01", "2026-11-29_21-00-01", "2026-11-30_21-00-01")


@pytest.fixture
def site(tmp_path):
    """A host with VMs `web` and `mail` (1 MiB, on), each with three ghettoVCB backups (STATUS.ok) in
    VOL, and the admin's ghettoVCB.conf (saved on Windows: CRLF, a comment, ghettoVCB-only keys)."""
    from pathlib import Path

    host = make_host(tmp_path / "host")
    try:
        for vm in ("web", "mail"):
            host.create_vm(vm, "datastore1", [{"size": "1M"}], power="on")
            for stamp in STAMPS:
                ghettovcb_folder(Path(host.real(VOL)), vm, stamp, "STATUS.ok", "Successfully completed backup")
        conf = tmp_path / "ghettoVCB.conf"
        conf.write_bytes(("VM_BACKUP_VOLUME=\"%s\"\r\nDISK_BACKUP_FORMAT=thin\r\n"
                          "VM_BACKUP_ROTATION_COUNT=3   # keep three\r\nENABLE_NFS_IO_HACK=0\r\n" % VOL).encode())
        host.conf = str(conf)
        host.tmp = tmp_path
        yield host
    finally:
        host.stop()


# -- 1. a per-VM file's typo makes the report deny the VM's good backups ----------------------------------
def test_a_per_vm_file_typo_does_not_deny_the_good_backups_the_vm_has(site):
    """The admin copies their ghettoVCB per-VM files into -c; `web`'s has a typo. config-reference.md:
    a bad value there fails that VM before anything is touched, the others are still backed up. The
    run's report (table, mail, --json-report) then says `web` has NO good backup ("NO good backup of
    this VM exists", GOOD KEPT 0), while its three ghettoVCB backups are untouched and good
    (`hotvcb list` says so). The admin reading the mail believes the VM is unprotected; it should
    name the good backups the VM still has, as it does for a VM whose backup failed later."""
    confdir = site.tmp / "vmconf"
    confdir.mkdir()
    (confdir / "web").write_text("VM_BACKUP_ROTATION_COUNT=three\n")
    report = site.tmp / "run.json"
    r = hotvcb(site, "-m", "web", "-m", "mail", "-g", site.conf, "-c", str(confdir), "--json-report", str(report))
    assert r.returncode == 4, r.stdout + r.stderr
    rows = {row["vm"]: row for row in json.loads(report.read_text())["vms"]}
    assert rows["web"]["result"] == "error"
    assert rows["web"]["good_backups"] == 3, rows["web"]
    assert rows["web"]["newest_good"].endswith("web-" + STAMPS[-1]), rows["web"]


# -- 2. status/list ignore the per-VM file that sent a VM's backups elsewhere ----------------------------------
PER_VM_VOLUME = "/vmfs/volumes/ds5/special"


def send_mail_elsewhere(site):
    """ghettoVCB's per-VM template starts with VM_BACKUP_VOLUME: the admin's -c folder sends `mail`
    to a datastore of its own; `web` stays on the global volume."""
    confdir = site.tmp / "vmconf"
    confdir.mkdir()
    (confdir / "mail").write_bytes(("VM_BACKUP_VOLUME=%s\r\nDISK_BACKUP_FORMAT=thin\r\nVM_BACKUP_ROTATION_COUNT=3\r\n"
                                    % PER_VM_VOLUME).encode())
    r = hotvcb(site, "-m", "mail", "-m", "web", "-g", site.conf, "-c", str(confdir))
    assert r.returncode == 0, r.stdout + r.stderr
    assert os.listdir(site.real(PER_VM_VOLUME + "/mail")), "the backup went where the per-VM file said"
    return confdir


def test_status_and_list_see_the_backups_a_per_vm_file_sent_elsewhere(site):
    """The admin's ghettoVCB per-VM files (template: VM_BACKUP_VOLUME first) keep working for the
    backup: `mail`'s backup lands in its own volume. Their Nagios check runs `hotvcb status -f vms
    -g ghettoVCB.conf` and raises CRIT "mail: never backed up" every night, and `hotvcb list`
    (migrating-from-ghettovcb.md step 3) does not show mail's backups; neither command takes the
    job's -c folder, so neither can look where the job wrote (as they do for the NFS keys). With
    `-c` as the backup has it, both should find mail's good backup."""
    confdir = send_mail_elsewhere(site)
    vms = site.tmp / "vms"
    vms.write_text("mail\nweb\n")
    r = hotvcb(site, "status", "-f", str(vms), "-g", site.conf, "-c", str(confdir), "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    r = hotvcb(site, "list", "mail", "--json", "-g", site.conf, "-c", str(confdir))
    assert r.returncode == 0, r.stdout + r.stderr
    paths = [b["path"] for b in json.loads(r.stdout)["backups"] if b["good"]]
    assert any(p.startswith(PER_VM_VOLUME + "/mail/") for p in paths), paths


# -- 3. EMAIL_LOG=1 with no EMAIL_SERVER: no mail, and not a word about it ---------------------------------------
@pytest.mark.parametrize("mail_keys, missing", [
    ("EMAIL_LOG=1\r\nEMAIL_SERVER=   # our relay, to do\r\nEMAIL_TO=ops@example.com\r\n", "EMAIL_SERVER"),
    ("EMAIL_ALERT=1\r\nEMAIL_SERVER=127.0.0.1\r\nEMAIL_TO=\r\nEMAIL_ERRORS_TO=\r\n", "EMAIL_TO"),
])
def test_mail_asked_for_but_impossible_is_said(site, mail_keys, missing):
    """The admin turned mail on in ghettoVCB.conf, but the relay (or every recipient) was left blank
    in the template. ghettoVCB tried and logged "ERROR: Failed to email log output to :25". hotvcb
    neither mails nor says anything, in the dry run (migrating-from-ghettovcb.md: "Every config
    problem is reported") or in the failed run itself, so the admin waits for mails that never come
    and learns of the failed backups too late. The run should warn that the mail it was asked for
    cannot be sent, naming the missing key."""
    conf = site.tmp / "mail.conf"
    conf.write_bytes(open(site.conf, "rb").read() + mail_keys.encode())
    r = hotvcb(site, "-m", "web", "-m", "no such vm", "-g", str(conf))
    assert r.returncode == 4, r.stdout + r.stderr
    out = r.stdout + r.stderr
    assert any(missing in line and ("mail" in line.lower()) for line in out.splitlines()
               if "warning" in line or "error" in line), out[-3000:]


# -- 4. an exclude list entry that names no VM is silently ignored -----------------------------------------------
def test_an_exclude_entry_naming_no_vm_is_warned_about(site):
    """The admin's ghettoVCB exclusion file says `mail (Exchange, 2 TB)`: ghettoVCB tested each VM with
    `grep -E "^${VM_NAME}" exclusion_file`, so that line kept VM `mail` out of every `-a` run.
    hotvcb compares whole names (documented), so `mail` is now backed up -- and the run says nothing:
    no "is on the exclude list" for mail, no word that an exclusion entry matches no VM. With
    POWER_VM_DOWN_BEFORE_BACKUP=1 that is a production VM shut down at 21:00; at best a 2 TB copy
    filling the target. A `-f` entry that names no VM gets "did you mean"; an `-e` entry naming none
    should at least be warned about, so the admin fixes the list before the night's run."""
    excl = site.tmp / "vms_to_exclude"
    excl.write_text("# too big for ghettoVCB\nmail (Exchange, 2 TB)\n")
    r = hotvcb(site, "-a", "-e", str(excl), "-g", site.conf, "-d", "dryrun")
    assert r.returncode == 0, r.stdout + r.stderr
    warned = [l for l in (r.stdout + r.stderr).splitlines()
              if "mail (Exchange, 2 TB)" in l and ("warning" in l or "error" in l)]
    assert warned, r.stdout[-3000:]


# -- 5. the dry run's report says the VM has no good backup ----------------------------------------------------------
def test_dry_run_report_counts_the_ghettovcb_backups_it_would_keep(site):
    """Step 2 of migrating-from-ghettovcb.md: dry-run the existing job. For `web`, with three good
    ghettoVCB backups, the dry run logs "Would remove old backup .../web-2026-11-28_21-00-01
    (unverifiable) per rotation count 3" -- and then its table says `GOOD KEPT 0` (the JSON report:
    good_backups 0, newest_good null). The admin checking whether hotvcb sees their old backups reads
    that it sees none. The report should count the good backups the VM has (3 kept)."""
    report = site.tmp / "dry.json"
    r = hotvcb(site, "-m", "web", "-g", site.conf, "-d", "dryrun", "--json-report", str(report))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Would remove old backup %s/web/web-%s" % (VOL, STAMPS[0]) in r.stdout, r.stdout
    (row,) = json.loads(report.read_text())["vms"]
    assert row["good_backups"] == 3, row


# -- 6. the log never says a VM was backed up with its per-VM file ---------------------------------------------------
def test_the_log_names_the_per_vm_file_a_vm_was_backed_up_with(site):
    """ghettoVCB logged `CONFIG - USING CONFIGURATION FILE = <dir>/<VM>` and that VM's values at
    its turn; admins grep their logs for it to see that a per-VM file was picked up (a file saved
    as `web.conf`, or with another spelling, is silently not used). hotvcb's log has one line,
    `CONFIG: ghettoVCB.conf; backups to ... as thin, keep 3`, and nothing at `web`'s turn, though
    web was backed up as zeroedthick and rotated at 5 by its per-VM file: the log misstates
    how web was backed up and cannot show whether the file was used at all."""
    confdir = site.tmp / "vm_backup_configs"
    confdir.mkdir()
    (confdir / "web").write_text("DISK_BACKUP_FORMAT=zeroedthick\nVM_BACKUP_ROTATION_COUNT=5\n")
    r = hotvcb(site, "-m", "web", "-m", "mail", "-g", site.conf, "-c", str(confdir))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "as zeroedthick" in r.stdout  # the per-VM file was used ...
    assert str(confdir / "web") in r.stdout, r.stdout  # ... and the log should say so


# -- 7. the dry run of a job with VM_SHUTDOWN_ORDER/VM_STARTUP_ORDER misstates what the run does ---------------------
def test_dry_run_of_the_shutdown_and_startup_order_says_what_the_run_will_do(site):
    """The admin's ghettoVCB.conf stops `mail` before the backups and starts it after
    (VM_SHUTDOWN_ORDER=mail, VM_STARTUP_ORDER=mail). The real run does exactly that. The dry run
    (migration step 2) says nothing of shutting mail down and instead warns "VM_STARTUP_ORDER names
    'mail', which this run did not power off; leaving it as it is": the admin is told their startup
    order is wrong and that mail would be left alone, the opposite of what 21:00 brings. The dry run
    should say it would shut mail down (and start it again), and raise no such warning."""
    conf = site.tmp / "order.conf"
    conf.write_bytes(open(site.conf, "rb").read() + b"VM_SHUTDOWN_ORDER=mail\r\nVM_STARTUP_ORDER=mail\r\n"
                     b"POWER_DOWN_TIMEOUT=30s\r\n")
    dry = hotvcb(site, "-m", "web", "-g", str(conf), "-d", "dryrun")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "did not power off" not in dry.stdout, dry.stdout
    assert any("mail" in l and ("shut" in l.lower() or "power" in l.lower()) for l in dry.stdout.splitlines()), \
        dry.stdout


# -- 8. a Ctrl-C'd run's report says the VM has no good backup -------------------------------------------------------
def test_an_interrupted_run_does_not_deny_the_vms_good_backups(site):
    """The admin stops a long run with Ctrl-C (or the host's shutdown sends SIGTERM) while `web` is
    being copied. hotvcb removes its snapshot and ends with exit 2, as ghettoVCB did. But its report
    -- the log table, the mail, --json-report -- says of web "NO good backup of this VM exists" /
    GOOD KEPT 0, while web's three ghettoVCB backups are untouched and good. The report should name
    them, as it does for a VM that failed any other way."""
    import glob
    import signal

    from simhost import hotvcb_background, kill, wait_for

    site.set_fault("clone.delay", "5")
    report = site.tmp / "run.json"
    run = hotvcb_background(site, "-m", "web", "-g", site.conf, "--json-report", str(report))
    try:
        wait_for(lambda: glob.glob(os.path.join(site.real(VOL), "web", "*-partial", "*.vmdk")), timeout=60,
                 what="web's disk copy")
        run.send_signal(signal.SIGINT)
        out, _ = run.communicate(timeout=60)
    finally:
        kill(run.pid)
    assert run.returncode == 2, out
    (row,) = json.loads(report.read_text())["vms"]
    assert row["good_backups"] == 3, row
    assert "NO good backup of this VM exists" not in out


# -- 9. a vms_to_restore line ending in ';' -------------------------------------------------------------------------
def test_a_restore_line_ending_in_a_semicolon_is_restored(site):
    """The admin's vms_to_restore was written by a script that ends every field with ';'
    (`.../web-2026-11-30_21-00-01;datastore1;3;web-restored;`). ghettoVCB-restore took fields 1-4
    with `awk -F ';'` and restored it; docs/restore.md: "ghettoVCB-restore files work as they are".
    hotvcb refuses the line ("found 5"), exit 6, when there is nothing in the 5th field to mean
    anything else."""
    vms = site.tmp / "vms_to_restore"
    vms.write_text("%s/web/web-%s;datastore1;3;web-restored;\n" % (VOL, STAMPS[-1]))
    r = hotvcb(site, "restore", "-c", str(vms), "-d", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "web-restored" in r.stdout


# -- 10. a ghettoVCB folder whose disk data is cut short restores "OK" -------------------------------------------
def test_a_ghettovcb_folder_with_a_short_flat_extent_is_not_good(site):
    """An older ghettoVCB backup of `web` was copied back from the offsite box with an rsync that was
    cut off: `web-flat.vmdk` holds half the 2048 sectors its descriptor (`RW 2048 VMFS
    "web-flat.vmdk"`) gives. hotvcb judges a ghettoVCB `.gz` by exactly this ("a flat extent at the
    size its descriptor gives (a disk copy that died half way is incomplete)", backup-format.md),
    but for the folder `list` says unverifiable (good, counted by the rotation), `verify` exits 0
    with "0 damaged or incomplete", and `restore` registers a VM whose disk's second half is zeros,
    "All VMs restored OK!". It should be incomplete: not good, refused by restore."""
    folder = os.path.join(site.real(VOL), "web", "web-" + STAMPS[-1])
    os.truncate(os.path.join(folder, "web-flat.vmdk"), 512 << 10)
    rows = json.loads(hotvcb(site, "list", "web", "--json", "-g", site.conf).stdout)["backups"]
    (row,) = [b for b in rows if b["path"].endswith(STAMPS[-1])]
    assert not row["good"], row
    r = hotvcb(site, "restore", "%s/web/web-%s" % (VOL, STAMPS[-1]), "--datastore", "ds5", "--name", "web-back")
    assert r.returncode != 0, r.stdout + r.stderr


# -- 11. cleanup after a killed run leaves the -partial in a per-VM file's volume ------------------------------------
def test_cleanup_after_a_killed_run_finds_the_partial_in_the_per_vm_volume(site):
    """`mail`'s per-VM file (ghettoVCB's template) sends its backups to their own volume. The host
    reboots mid-copy (SIGKILL). README: `hotvcb cleanup` "undoes what a killed run left (its
    hotvcb-snapshot-... snapshots, unfinished ...-partial folders, ...)" and exits 1 when something it
    should undo could not be. It removes the snapshot, says "cleanup: 1 leftover(s) removed", exits 0
    -- and leaves `mail-<time>-partial` with its half-copied disk in the per-VM volume (cleanup has
    no -c, and does not take the folder from the dead run's record either)."""
    import glob
    import signal

    from simhost import hotvcb_background, kill, wait_for

    confdir = site.tmp / "vmconf"
    confdir.mkdir()
    (confdir / "mail").write_text("VM_BACKUP_VOLUME=%s\n" % PER_VM_VOLUME)
    site.set_fault("clone.delay", "5")
    run = hotvcb_background(site, "-m", "mail", "-g", site.conf, "-c", str(confdir))
    try:
        wait_for(lambda: glob.glob(os.path.join(site.real(PER_VM_VOLUME), "mail", "*-partial", "*.vmdk")),
                 timeout=60, what="mail's disk copy")
    finally:
        kill(run.pid, signal.SIGKILL)
        run.wait()
    site.set_fault("clone.delay", "0")
    r = hotvcb(site, "cleanup", "-g", site.conf)
    left = [e for e in os.listdir(os.path.join(site.real(PER_VM_VOLUME), "mail")) if e.endswith("-partial")]
    assert not left and r.returncode == 0, (left, r.stdout + r.stderr)


# -- 12. BACKUP_FILES_CHMOD in chmod's symbolic form refuses the whole job ------------------------------------------
def test_a_symbolic_backup_files_chmod_from_ghettovcb_is_taken(site):
    """ghettoVCB ran `chmod -R "${BACKUP_FILES_CHMOD}" "${VM_BACKUP_DIR}"`, so `BACKUP_FILES_CHMOD=go-rwx`
    (keep the backups from other users, leave the owner's bits alone) worked for years.
    migrating-from-ghettovcb.md: "Nothing needs converting ... Your files mean what they meant to
    ghettoVCB". hotvcb refuses the config ("an octal file mode such as 600 or 0640"), exit 1: not one
    VM is backed up that night. It should apply the mode as chmod would."""
    conf = site.tmp / "chmod.conf"
    conf.write_bytes(open(site.conf, "rb").read() + b"BACKUP_FILES_CHMOD=go-rwx\r\n")
    r = hotvcb(site, "-m", "mail", "-g", str(conf))
    assert r.returncode == 0, r.stdout + r.stderr
    root = os.path.join(site.real(VOL), "mail")
    newest = sorted(e for e in os.listdir(root) if e.startswith("mail-"))[-1]
    for name in os.listdir(os.path.join(root, newest)):
        assert os.stat(os.path.join(root, newest, name)).st_mode & 0o077 == 0, name
