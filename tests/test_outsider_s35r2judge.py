"""Outside tester, session 35 (r2, "judge"): what counts as a good backup and what is kept, after the last
hour's changes: health.as_recorded / unchecksummed shared by list, verify and restore; verify keeping the
folder's mtime; a ghettoVCB backup's entry that cannot be stat'ed passed over unless it is a .vmx/.vmdk (old
RSYNC_LINK's self-link); rotation limiting failed backups to VM_BACKUP_ROTATION_COUNT; `prune --dry-run`
foreseeing the prune's exit code; `restore --to` errors inside the log frame. I did not write hotvcb; every
command (list, verify, restore + dry run, rotation + dry run, prune + dry run) must agree with the others.

Covered: a ghettoVCB backup whose .nvram is a dangling link (list/verify/rotation: good; restore: refused),
the size list and VM_BACKUP_ROTATION_SIZE give a ghettoVCB backup holding the self-link (0 B), verify's
record failing on a full volume (folder mtime moved), a ghettoVCB backup copied outside its VM folder and cut
short (verify: INCOMPLETE; restore: OK), rotation of a tree holding good, ghettoVCB STATUS.warn, STATUS.error, a `-KEEP` folder and a backup verify found damaged
(dry run and real run agree, nothing kept for inspection or good goes), prune's dry run against odd GC locks
(a folder, a dead local GC's).

Tried and found sound (no test here): a broken -flat.vmdk / .VMX link stays damage; prune --dry-run exits 3
like the prune for a torn record (also with -m and nothing to remove); an empty or garbage locks/gc refuses
both alike; `restore --to` into an existing folder, under a file, `--latest` of an unknown VM, and -d dryrun
each end LOG START .. error .. final status .. LOG END in the -l file, the error once on stderr; verify of a
BACKUP_SNAPSHOT_TREE backup (folder and .gz) beside an independent disk is OK, no false "no checksum"; a hotvcb
STATUS.warn backup copied outside its folder is refused by restore as in place.
"""

import datetime
import json
import os
import shutil
import socket
import time

import pytest

from repotool import cli, two_vms
from simhost import VOLUME, backup_once, hotvcb, needs_root, sealed, write_conf
from test_outsider_s35ghetto import site  # noqa: F401  (a fixture: a host with VM `web`, 1 MiB, on)


def stamp(days):
    return (datetime.datetime.utcnow() - datetime.timedelta(days=days)).strftime("%Y-%m-%d_%H-%M-%S")


def ghettovcb_backup(host, name, status="STATUS.ok", nvram=False):
    """A backup folder as ghettoVCB.sh left it: the .vmx and disks (and the .nvram) copied, then its STATUS."""
    folder = os.path.join(host.real(VOLUME + "/web"), name)
    os.makedirs(folder)
    src = host.real("/vmfs/volumes/datastore1/web")
    for f in os.listdir(src):
        if f.endswith((".vmx", ".vmdk")) or (nvram and f.endswith(".nvram")):
            shutil.copy(os.path.join(src, f), folder)
    with open(os.path.join(folder, status), "w") as f:
        f.write("Successfully completed backup\n" if status == "STATUS.ok" else "WARN or ERROR\n")
    return folder


def rows(host, conf):
    r = hotvcb(host, "list", "--json", "-g", conf)
    assert r.returncode == 0, r.stdout + r.stderr
    return {b["name"]: b for b in json.loads(r.stdout)["backups"]}


def du(path):
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            st = os.lstat(os.path.join(root, f))
            total += st.st_blocks * 512
    return total


# -- DEFECT 1: a dangling .nvram passes as good (list, verify, rotation) but restore refuses it -------------------
@needs_root
def test_a_ghettovcb_backup_with_a_dangling_nvram_is_judged_alike_by_list_verify_and_restore(site):
    """The admin's ghettoVCB backup folder holds `web.nvram` as a symlink whose target is gone (a copy made with
    `rsync -l`/`cp -P` from a datastore where the nvram was a link, or a hand's mistake). Since b6857b2
    (ghettovcb_health._sizes passes over any listed entry that cannot be stat'ed unless it is .vmx/.vmdk)
    `hotvcb list` calls it `unverifiable` (good), `verify` exits 0, rotation counts it as a good backup (and so
    removes older ones that do restore), while `restore` and its dry run refuse it: `cannot read
    .../web.nvram: not a regular file: not restoring from it` (restore_plan._side_file/_regular), exit 6.
    Before the change list called it damaged. The commands must agree (store/health.py: one judgement shared by
    list, verify and restore; migrating-from-ghettovcb.md: only "a folder that cannot be restored as it stands"
    shows incomplete or damaged, so one that restores is good and one that does not is not): either the entry
    only the .vmx's `nvram` line points at is judged (damaged, as a .vmx or disk would be), or restore passes
    over a side file that is not there (ghettoVCB-restore copies only the .vmx and disks; ESXi makes a new
    nvram) with a warning."""
    older = os.path.basename(ghettovcb_backup(site, "web-" + stamp(3), nvram=True))
    folder = ghettovcb_backup(site, "web-" + stamp(2), nvram=True)
    name = os.path.basename(folder)
    os.remove(os.path.join(folder, "web.nvram"))
    os.symlink("/vmfs/volumes/datastore1/web/gone.nvram", os.path.join(folder, "web.nvram"))
    conf = write_conf(site, VM_BACKUP_ROTATION_COUNT=1)
    listed = rows(site, conf)
    assert listed[older]["good"], listed[older]
    ver = hotvcb(site, "verify", "-g", conf, VOLUME + "/web/" + name)
    res = hotvcb(site, "restore", VOLUME + "/web/" + name, "--datastore", "ds5", "--name", "web-r", "-d", "dryrun")
    said_good = listed[name]["good"] or ver.returncode == 0
    restores = res.returncode == 0
    assert said_good == restores, ("list good=%s (%s), verify exit %d, restore dry run exit %d:\n%s"
                                   % (listed[name]["good"], listed[name]["status"], ver.returncode, res.returncode,
                                      res.stdout[-800:]))


# -- DEFECT 2: a ghettoVCB backup holding old RSYNC_LINK's self-link: good now, but 0 B to list and the budget ----
@needs_root
def test_a_backup_holding_the_rsync_link_self_link_counts_its_size(site):
    """The tree old ghettoVCB with RSYNC_LINK=1 left: every backup but the newest holds `<VM>-<next> ->
    ./<VM>-<next>`, a link to itself. b6857b2 made these good (rightly), but rotation.backup_size sums
    disk_usage of every listed file and answers 0 for the whole backup when one stat fails (ELOOP): `hotvcb list`
    shows `0B` for a backup of 1 MiB, and with VM_BACKUP_ROTATION_SIZE=2500K the run keeps four 1 MiB backups
    (~4 MiB on disk) and warns of nothing. config-reference.md: VM_BACKUP_ROTATION_SIZE "the oldest go until the
    rest fit"; only "a symlink named like a backup counts nothing". The link inside should count as nothing (or
    be lstat'ed), the backup's files as what they take."""
    vmroot = site.real(VOLUME + "/web")
    names = ["web-" + stamp(d) for d in (4, 3, 2)]
    for n in names:
        ghettovcb_backup(site, n)
    for a, b in zip(names, names[1:]):
        os.symlink("./" + b, os.path.join(vmroot, a, b))  # what `ln -sf ./<b> web-symlink` made inside <a>
    conf = write_conf(site, VM_BACKUP_ROTATION_COUNT=5, VM_BACKUP_ROTATION_SIZE="2500K")
    listed = rows(site, conf)
    assert all(listed[n]["good"] for n in names), listed  # the fix itself: good
    r = backup_once(site, conf, "web")
    assert r.returncode == 0, r.stdout[-1500:] + r.stderr
    sizes = {n: listed[n]["size_bytes"] for n in names}
    assert min(sizes.values()) >= 1 << 20, "list's sizes: %s" % sizes
    assert du(vmroot) <= 2500 * 1024 + (64 << 10), "after the run: %s, %d bytes" % (sorted(os.listdir(vmroot)),
                                                                                     du(vmroot))


# -- works: rotation limits failed backups, never touching what it must keep; its dry run says the same -----------
@needs_root
def test_rotation_limits_failed_backups_and_keeps_what_it_must(site, tmp_path):
    """VM_BACKUP_ROTATION_COUNT=2 over: an old good ghettoVCB backup, a ghettoVCB STATUS.warn (good: an
    independent disk left out), four ghettoVCB STATUS.error, a `-KEEP` renamed STATUS.error folder, and a hotvcb
    backup `verify` found damaged (kept for inspection). The dry run names exactly what the run then removes: the
    oldest good (behind the two newest good) and the two oldest STATUS.error; the STATUS.warn, the newest two
    STATUS.error, the -KEEP folder and the damaged backup stay."""
    vmroot = site.real(VOLUME + "/web")
    r = backup_once(site, write_conf(site, "many.conf", VM_BACKUP_ROTATION_COUNT=9), "web", "-w", tmp_path / "w")
    assert r.returncode == 0, r.stdout[-1500:] + r.stderr
    damaged = sealed(site, "web")[-1]
    with open(os.path.join(vmroot, damaged, "web-flat.vmdk"), "r+b") as f:
        f.seek(4096)
        f.write(b"rot!")
    conf = write_conf(site, VM_BACKUP_ROTATION_COUNT=2)
    v = hotvcb(site, "verify", "-g", conf, VOLUME + "/web/" + damaged)
    assert v.returncode != 0 and "DAMAGED" in v.stdout, v.stdout + v.stderr
    g0 = os.path.basename(ghettovcb_backup(site, "web-" + stamp(10)))
    w1 = os.path.basename(ghettovcb_backup(site, "web-" + stamp(9), "STATUS.warn"))
    errs = [os.path.basename(ghettovcb_backup(site, "web-" + stamp(d), "STATUS.error")) for d in (8, 7, 6, 5)]
    keep = os.path.basename(ghettovcb_backup(site, "web-" + stamp(4) + "-KEEP", "STATUS.error"))
    before = set(os.listdir(vmroot))
    dry = backup_once(site, conf, "web", "-d", "dryrun", "-w", tmp_path / "w")
    assert dry.returncode == 0, dry.stdout[-1500:] + dry.stderr
    would = {ln.split("Would remove old backup ")[1].split()[0].rsplit("/", 1)[1]
             for ln in dry.stdout.splitlines() if "Would remove old backup " in ln}
    real = backup_once(site, conf, "web", "-w", tmp_path / "w")
    assert real.returncode == 0, real.stdout[-1500:] + real.stderr
    left = set(os.listdir(vmroot))
    gone = before - left
    assert gone == would == {g0, errs[0], errs[1]}, "dry run said %s, the run removed %s" % (sorted(would),
                                                                                            sorted(gone))
    for must in [w1, keep, damaged] + errs[2:]:
        assert must in left, (must, sorted(left))


# -- works: prune --dry-run foresees the prune's exit for odd GC locks -------------------------------------------
@pytest.mark.parametrize("lock", ["a folder", "a dead GC of this machine"])
def test_prune_dry_run_exits_as_the_prune_for_odd_gc_locks(tmp_path, lock):
    """locks/gc is a folder (nobody can tell whether a GC holds it: both refuse, exit 1) or the lock of a GC of
    this machine whose pid is gone (stale: both go ahead, exit 0)."""
    two_vms(tmp_path)
    locks = tmp_path / "repo" / "locks"
    locks.mkdir(exist_ok=True)
    if lock == "a folder":
        (locks / "gc").mkdir()
    else:
        (locks / "gc").write_text("run=0123456789ab machine=%s pid=999999 started=%d\n"
                                  % (socket.gethostname(), int(time.time())))
    dry = cli("prune", "--repo", tmp_path / "repo", "--keep-last", "1", "--dry-run")
    real = cli("prune", "--repo", tmp_path / "repo", "--keep-last", "1")
    assert dry.returncode == real.returncode, ("dry run %d: %s\nprune %d: %s" % (
        dry.returncode, dry.stderr, real.returncode, real.stderr))
    assert "Traceback" not in dry.stderr + real.stderr


# -- DEFECT 3: a verify that cannot record its result (a full volume) still makes the folder the newest by mtime ----
@needs_root
def test_a_verify_that_cannot_record_on_a_full_volume_keeps_the_folders_time(site, tmp_path, tmpfs):
    """The backup volume is full (the usual state of one), and the admin, going back to ghettoVCB, verifies an old
    backup first: verify checks it (OK) and says `note: could not record the result: ... No space left on
    device`, but its temp file was created in the folder and removed again, and the folder's mtime is now: to
    ghettoVCB's `ls -t | head -<count>` rotation the oldest backup is the newest, kept, and a newer one deleted.
    verify.py's docstring: the manifest is rewritten "the folder's modification time kept: ... a verified old
    backup must not become the newest there". LocalShell.write_bytes sets the time back only after a successful
    rename (its `except OSError` unlinks the temp and leaves the time); sshscripts.WRITE_KEEPING_FOLDER_TIME
    likewise skips the `touch -r` when the write failed. The time should be put back on every way out."""
    r = backup_once(site, write_conf(site), "web", "-w", tmp_path / "w")
    assert r.returncode == 0, r.stdout[-1500:] + r.stderr
    name = sealed(site, "web")[-1]
    volume = tmpfs("vol", "4m")
    dst = os.path.join(str(volume), "web", name)
    shutil.copytree(os.path.join(site.real(VOLUME + "/web"), name), dst)
    past = time.time() - 86400
    os.utime(dst, (past, past))
    with open(os.path.join(str(volume), "filler"), "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    v = cli("verify", dst)
    assert v.returncode == 0 and "could not record the result" in v.stdout, v.stdout + v.stderr
    assert abs(os.stat(dst).st_mtime - past) < 1, "the folder's mtime moved by %.0f s" % (
        os.stat(dst).st_mtime - past)


# -- DEFECT 4: a ghettoVCB backup's copy cut short, outside its VM folder: verify INCOMPLETE, restore "OK" ---------
@needs_root
def test_a_cut_short_ghettovcb_copy_outside_its_vm_folder_is_refused_as_verify_judges_it(site):
    """The admin's offsite copy of a ghettoVCB backup (`/vmfs/volumes/backup/copies/web-<time>`), its
    web-flat.vmdk cut to half by an rsync that died. `hotvcb verify` of that path says `INCOMPLETE: ghettoVCB
    backup: web-flat.vmdk is 524288 bytes, web.vmdk says 1048576 (a copy that failed)`, exit 6, and the same
    folder in the VM's backup folder is refused by restore (`is not a good backup`). Restored from the copy it
    goes through: `has no hotvcb.json (a ghettoVCB backup): accepted without checksums to verify`, `All VMs
    restored OK!`, exit 0 -- a VM registered on half a disk. restore_source._as_recorded judges a copy only by
    its manifest (None for a ghettoVCB backup), so the manifestless judgement (ghettovcb_health.manifestless,
    which verify applies to the very same path) is skipped. health.as_recorded's promise: a copy "is refused as the
    same folder in place is"; restore.md/the s35 change: list, verify and restore judge a backup alike."""
    name = os.path.basename(ghettovcb_backup(site, "web-" + stamp(2)))
    copy = "/vmfs/volumes/backup/copies/" + name
    shutil.copytree(os.path.join(site.real(VOLUME + "/web"), name), site.real(copy))
    os.truncate(os.path.join(site.real(copy), "web-flat.vmdk"), 512 << 10)
    v = hotvcb(site, "verify", copy)
    assert v.returncode != 0 and "INCOMPLETE" in v.stdout, v.stdout + v.stderr
    dry = hotvcb(site, "restore", copy, "--datastore", "ds5", "--name", "web-r", "-d", "dryrun")
    real = hotvcb(site, "restore", copy, "--datastore", "ds5", "--name", "web-r")
    assert (dry.returncode, real.returncode) == (6, 6), "dry run %d, restore %d:\n%s" % (
        dry.returncode, real.returncode, real.stdout[-1200:])
    assert not os.path.exists(site.real("/vmfs/volumes/ds5/web-r"))
