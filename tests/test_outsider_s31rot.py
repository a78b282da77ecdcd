"""Outside tester, stop 31: an admin moving from ghettoVCB with years of backups it wrote.

Rotation (VM_BACKUP_ROTATION_COUNT, per-VM overrides) over the folders ghettoVCB left
(`<VM>/<VM>-YYYY-MM-DD_HH-MM-SS/` holding the .vmx, each disk's descriptor and -flat, STATUS.*),
folders a failed run or a hand left there, and what `list`, `verify` and `restore` make of them.
Each defect is a strict xfail until fixed; the rest pin behaviour an admin relies on. Cheap on
purpose: in-process CLI calls and rotation on folders in tmp_path where no host is needed, one
esxisim host (1 MiB VMs) where one is.
"""

import datetime
import io
import json
import os
from pathlib import Path

import pytest

from hotvcb import cli
from hotvcb.localshell import LocalShell
from hotvcb.runlog import RunLog
from hotvcb.store import rotation
from simhost import VOLUME, hotvcb, make_host, needs_root, write_conf
from test_outsider_interop import ghettovcb_disk, ghettovcb_folder

OK = "Successfully completed backup"


def rotate(volume, vm: str, count: int, just_made=None):
    """One rotation as a backup run makes it after sealing `just_made`: the names it removes."""
    log = io.StringIO()
    removed = rotation.rotate(LocalShell(), str(volume), vm, count, RunLog(stream=log),
                              just_made=str(just_made) if just_made else None, remove=lambda path: None)
    return sorted(os.path.basename(p) for p in removed), log.getvalue()


def cli_json(capsys, *args):
    code = cli.main(list(args))
    out = capsys.readouterr().out
    return code, json.loads(out)


def conf_for(tmp_path, volume) -> str:
    conf = tmp_path / "ghettoVCB.conf"
    conf.write_text("VM_BACKUP_VOLUME=%s\nVM_BACKUP_ROTATION_COUNT=3\n" % volume)
    return str(conf)


def listed(capsys, conf):
    code, data = cli_json(capsys, "list", "--json", "-g", conf)
    assert code == 0, data
    return {b["name"]: b for b in data["backups"]}


def verified(capsys, conf, path):
    """`verify --json PATH`: (exit code, the one result's status and message as one dict)."""
    code, data = cli_json(capsys, "verify", "--json", "-g", conf, str(path))
    (result,) = data["results"] if "results" in data else data["backups"]
    return code, result


# -- what the admin's old backups are judged ------------------------------------------------------------
def test_ghettovcb_folders_odd_entries_and_prefix_names_rotate_apart(tmp_path):
    """Pinned (passes today): three good ghettoVCB backups of `web`, a folder ghettoVCB left when a run
    was killed (no STATUS), the admin's hand copy `web-<time> (copy)`, a file named like a backup, and
    `web-2`'s own folder beside it. Rotation at 1 removes only web's two older good backups; the
    newest ghettoVCB one is kept, nothing of web-2's, nor the hand's, is touched."""
    vol = tmp_path / "vol"
    for day in ("01", "02", "03"):
        newest = ghettovcb_folder(vol, "web", "2026-11-%s_21-00-01" % day, "STATUS.ok", OK)
    killed = vol / "web" / "web-2026-11-04_21-00-01"
    killed.mkdir()
    (killed / "web.vmx").write_text('displayName = "web"\n')
    (vol / "web" / "web-2026-11-01_21-00-01 (copy)").mkdir()
    (vol / "web" / "web-2026-10-01_21-00-01").write_text("notes\n")
    for day in ("01", "02"):
        ghettovcb_folder(vol, "web-2", "2026-11-%s_21-00-01" % day, "STATUS.ok", OK)
    removed, _ = rotate(vol, "web", 1, just_made=newest)
    assert removed == ["web-2026-11-01_21-00-01", "web-2026-11-02_21-00-01"]
    assert sorted(os.listdir(vol / "web-2")) == ["web-2-2026-11-01_21-00-01", "web-2-2026-11-02_21-00-01"]


@pytest.mark.parametrize("vmx", ["none", "two"])
def test_a_ghettovcb_backup_restore_refuses_for_its_vmx_does_not_count_as_kept(tmp_path, capsys, vmx):
    """none: the admin tidied an old backup folder by hand years ago (or an rsync to the NAS lost it)
    and its `web.vmx` is gone; STATUS.ok and the disk are still there. two: a copy through a Windows
    share left `web (1).vmx` beside `web.vmx`. ghettoVCB.sh copies the one .vmx before anything
    else, and both restores (ghettoVCB-restore's `ls | grep .vmx`, hotvcb's) need exactly one:
    `hotvcb restore` of either folder fails with "holds 0 (2) .vmx files, expected 1", and so does
    `restore --latest web`, which picks it. Yet `list` shows it `unverifiable` (good), `verify` says
    0 damaged, and rotation at 2 keeps it and removes the intact older backup. (A ghettoVCB `.gz`
    without its .vmx is already judged not good.)"""
    vol = tmp_path / "vol"
    ghettovcb_folder(vol, "web", "2026-11-01_21-00-01", "STATUS.ok", OK)
    odd = ghettovcb_folder(vol, "web", "2026-11-02_21-00-01", "STATUS.ok", OK)
    if vmx == "none":
        (odd / "web.vmx").unlink()
    else:
        (odd / "web (1).vmx").write_text((odd / "web.vmx").read_text())
    new = ghettovcb_folder(vol, "web", "2026-11-03_21-00-01", "STATUS.ok", OK)
    assert not listed(capsys, conf_for(tmp_path, vol))[odd.name]["good"]
    removed, _ = rotate(vol, "web", 2, just_made=new)
    assert "web-2026-11-01_21-00-01" not in removed, removed


@pytest.mark.parametrize("keep", [0, 60], ids=["empty", "cut-before-extents"])
def test_a_ghettovcb_backup_with_a_cut_descriptor_is_not_good(tmp_path, capsys, keep):
    """An rsync of the backup volume to new storage died and left `web.vmdk`, the disk's descriptor,
    as an empty file, or cut before its extent line (its -flat is whole). The descriptor is the disk: without it, ghettoVCB-restore
    and `hotvcb restore` cannot clone it ("is not a readable disk descriptor: no createType line").
    A descriptor deleted outright is already `damaged`; an empty one is `unverifiable`, counts as
    good, `verify` reports "0 damaged or incomplete", and rotation removes an intact older backup to
    keep it."""
    vol = tmp_path / "vol"
    ghettovcb_folder(vol, "web", "2026-11-01_21-00-01", "STATUS.ok", OK)
    cut = ghettovcb_folder(vol, "web", "2026-11-02_21-00-01", "STATUS.ok", OK)
    descriptor = cut / "web.vmdk"
    descriptor.write_text(descriptor.read_text()[:keep])
    new = ghettovcb_folder(vol, "web", "2026-11-03_21-00-01", "STATUS.ok", OK)
    conf = conf_for(tmp_path, vol)
    code, result = verified(capsys, conf, cut)
    assert result["status"] in ("damaged", "incomplete") and code != 0, result
    assert not listed(capsys, conf)[cut.name]["good"]
    removed, _ = rotate(vol, "web", 2, just_made=new)
    assert "web-2026-11-01_21-00-01" not in removed, removed


@pytest.mark.parametrize("kind", ["error", "empty"])
def test_verify_of_a_ghettovcb_backup_list_calls_not_good_does_not_call_it_unverifiable(tmp_path, capsys, kind):
    """ghettoVCB.sh writes STATUS.error when a disk's vmkfstools failed; a folder with STATUS.ok and no
    disk at all (the admin moved the -flat files off to free room) holds nothing to restore. `hotvcb
    list` shows them `error` and `empty`, not good. But the admin who checks the one folder a
    vms_to_restore line names (`hotvcb verify /backup/web/web-<time>`) reads "UNVERIFIABLE: no
    hotvcb.json (a ghettoVCB backup)", "0 damaged or incomplete", exit 0 -- `unverifiable` being,
    in list's words, a good backup without checksums (`verify --all` likewise counts the empty one
    as checked and fine). It should say what list says (of hotvcb's own failed backups it says
    "skipped ... failed backup")."""
    vol = tmp_path / "vol"
    if kind == "error":
        folder = ghettovcb_folder(vol, "web", "2026-11-02_21-00-01", "STATUS.error",
                                  "ERROR: Unable to backup web due to error in VMDK backup")
    else:
        folder = ghettovcb_folder(vol, "web", "2026-11-02_21-00-01", "STATUS.ok", OK)
        (folder / "web.vmdk").unlink()
        (folder / "web-flat.vmdk").unlink()
    conf = conf_for(tmp_path, vol)
    assert listed(capsys, conf)[folder.name]["status"] == kind
    code, result = verified(capsys, conf, folder)
    assert result["status"] not in ("unverifiable", "ok"), result


def test_list_and_verify_agree_on_a_symlinked_backup(tmp_path, capsys):
    """After moving an old backup to a bigger datastore, the admin left a symlink in its place
    (`web/web-2026-11-05_21-00-01 -> /bigdisk/web-2026-11-05_21-00-01`). backup-format.md: one
    predicate answers "good" for rotation, list, verify and restore. `list` (and rotation) call the
    link `incomplete` ("not sealed (no STATUS file)"), while `verify` of it says UNVERIFIABLE,
    "0 damaged or incomplete", and `hotvcb restore` restores from it without a word. Whatever the
    answer, the admin must get the same one from both."""
    vol = tmp_path / "vol"
    moved = ghettovcb_folder(tmp_path / "bigdisk", "web", "2026-11-05_21-00-01", "STATUS.ok", OK)
    (vol / "web").mkdir(parents=True)
    link = vol / "web" / moved.name
    os.symlink(str(moved), str(link))
    conf = conf_for(tmp_path, vol)
    in_list = listed(capsys, conf)[link.name]
    code, result = verified(capsys, conf, link)
    good_to_verify = result["status"] in ("ok", "unverifiable") and code == 0
    assert in_list["good"] == good_to_verify, (in_list, result)


# -- a host: per-VM rotation counts, odd names, restore --latest ---------------------------------------
@pytest.fixture
def site(tmp_path):
    host = make_host(tmp_path / "host")
    yield host
    host.stop()


@needs_root
def test_per_vm_rotation_counts_with_odd_names_over_ghettovcb_backups(site, tmp_path):
    """Pinned (passes today): VMs `web`, `web-2` and `Müller's "db" v1.0`, three ghettoVCB backups
    each; the per-VM files (-c) set VM_BACKUP_ROTATION_COUNT=1 for `web` and 2 for the umlaut one.
    One run keeps exactly 1, 3 and 2, the new backup among them, and web's count never reaches
    web-2's folder."""
    names = ["web", "web-2", "Müller's \"db\" v1.0"]
    vol = Path(site.real(VOLUME))
    for n in names:
        site.create_vm(n, "datastore1", [{"size": "1M"}], power="on")
        for day in ("01", "02", "03"):
            ghettovcb_folder(vol, n, "2026-11-%s_21-00-01" % day, "STATUS.ok", OK)
    confdir = tmp_path / "vmconf"
    confdir.mkdir()
    (confdir / "web").write_text("VM_BACKUP_ROTATION_COUNT=1\n")
    (confdir / names[2]).write_text("VM_BACKUP_ROTATION_COUNT=2\n")
    r = hotvcb(site, "-a", "-g", write_conf(site), "-c", str(confdir))
    assert r.returncode == 0, r.stdout + r.stderr
    kept = {n: sorted(os.listdir(vol / n)) for n in names}
    assert len(kept["web"]) == 1 and not kept["web"][0].startswith("web-2026-11"), kept
    assert len(kept["web-2"]) == 3 and "web-2-2026-11-01_21-00-01" not in kept["web-2"], kept
    assert len(kept[names[2]]) == 2, kept


@needs_root
def test_restore_latest_skips_a_ghettovcb_backup_it_cannot_restore(site):
    """The admin's newest ghettoVCB backup of `web` had its descriptor `web.vmdk` cut to 0 bytes by an
    rsync to new storage; the one before is whole. `hotvcb restore --latest web` takes the cut one
    for the newest good backup and ends "All VMs failed to restore" (web.vmdk "is not a readable
    disk descriptor"), where it should restore the newest backup that is whole."""
    vol = Path(site.real(VOLUME))
    ghettovcb_folder(vol, "web", "2026-11-01_21-00-01", "STATUS.ok", OK)
    cut = ghettovcb_folder(vol, "web", "2026-11-02_21-00-01", "STATUS.ok", OK)
    (cut / "web.vmdk").write_text("")
    r = hotvcb(site, "restore", "--latest", "web", "-g", write_conf(site), "--datastore", "datastore1",
               "--name", "web-restored")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "web-2026-11-01_21-00-01" in r.stdout + r.stderr


# -- the clock set back --------------------------------------------------------------------------------
def test_clock_set_back_does_not_eat_yesterdays_backup(tmp_path):
    """The host's clock was a year ahead while ghettoVCB ran (three backups named 2027-11-..) and NTP
    then set it right. hotvcb's first run makes web-2026-12-01 and keeps it ("was the clock ahead?").
    The second run makes web-2026-12-02 and rotation at 3 deletes web-2026-12-01 -- the newest real
    data but one -- while the three year-old, future-named backups stay; every later run does the
    same, so for a year the admin has one current backup and three stale ones. The backups this
    tool's own runs made, in the order they were made, should not be pushed out by names dated
    ahead of the host's clock (which `status` already spots)."""
    vol = tmp_path / "vol"
    today = datetime.date.today()  # names relative to the real clock, which rotation reads
    for days in (334, 335, 336):  # about eleven months ahead, as in the story
        ghettovcb_folder(vol, "web", "%s_21-00-01" % (today + datetime.timedelta(days)), "STATUS.ok", OK)
    first = ghettovcb_folder(vol, "web", "%s_21-00-01" % (today - datetime.timedelta(1)), "STATUS.ok", OK)
    removed, log = rotate(vol, "web", 3, just_made=first)
    assert removed == [] and "clock" in log
    second = ghettovcb_folder(vol, "web", "%s_00-00-01" % today, "STATUS.ok", OK)
    removed, _ = rotate(vol, "web", 3, just_made=second)
    assert first.name not in removed, removed


@needs_root
def test_a_vm_whose_name_starts_with_a_dot_is_listed_and_verified(site):
    """ghettoVCB backed up the admin's VM `.web` (a name ESXi takes) into `<volume>/.web/`, and so
    does hotvcb: the run ends OK, `status` counts its good backup, `list .web` shows it. But plain
    `hotvcb list` says "no backups under /vmfs/volumes/backup/hotvcb" and `hotvcb verify --all`
    "0 backup(s) checked, 0 damaged or incomplete", exit 0: the nightly verify the admin set up
    never reads that VM's backups, and says all is well (backup-format.md: names are used as they
    are; only names of dots and spaces alone are refused, because `list` would show none)."""
    site.create_vm(".web", "datastore1", [{"size": "1M"}], power="on")
    conf = write_conf(site)
    r = hotvcb(site, "-m", ".web", "-g", conf)
    assert r.returncode == 0, r.stdout + r.stderr
    r = hotvcb(site, "list", "--json", "-g", conf)
    assert [b["vm"] for b in json.loads(r.stdout)["backups"]] == [".web"], r.stdout + r.stderr
    r = hotvcb(site, "verify", "--all", "-g", conf)
    assert "1 backup(s) checked" in r.stdout, r.stdout + r.stderr


def test_a_ghettovcb_backup_rsync_cut_short_between_disks_does_not_count_as_kept(tmp_path, capsys):
    """Moving to new backup storage, the admin rsyncs the old ghettoVCB volume across. rsync copies a
    folder's files in name order (STATUS.ok, web-flat.vmdk, web.vmdk, web.vmx, web_1-flat.vmdk,
    web_1.vmdk) and writes each into a hidden temp file it renames when whole, removing that temp
    file when it is killed. Killed while copying the second disk (the long part), the newest backup
    holds STATUS.ok, the .vmx naming scsi0:1 web_1.vmdk, and the first disk, but nothing of the
    second. backup-format.md: "a folder an rsync or a copy cut short is **incomplete**, not good".
    hotvcb calls it `unverifiable` (good); rotation at 1 keeps it and removes the whole older one,
    and a restore brings back a VM without its data disk ("left disconnected")."""
    vol = tmp_path / "vol"
    second = 'scsi0:1.deviceType = "scsi-hardDisk"\nscsi0:1.fileName = "web_1.vmdk"\nscsi0:1.present = "TRUE"\n'
    whole = ghettovcb_folder(vol, "web", "2026-11-01_21-00-01", "STATUS.ok", OK, second)
    ghettovcb_disk(whole, "web_1")
    cut = ghettovcb_folder(vol, "web", "2026-11-02_21-00-01", "STATUS.ok", OK, second)
    assert not listed(capsys, conf_for(tmp_path, vol))[cut.name]["good"]
    removed, _ = rotate(vol, "web", 1, just_made=None)
    assert whole.name not in removed, removed


def test_size_budget_does_not_count_a_symlinked_copy_kept_elsewhere(tmp_path):
    """The admin moved one old ghettoVCB backup of `web` (8 MiB) to an archive datastore and left a
    symlink under its name in `web/`. With VM_BACKUP_ROTATION_SIZE=5M the VM's real backups on the
    volume (three of 1 MiB each, the newest just made) fit the budget: nothing needs to go, and
    nothing does without the link. With the link, rotation counts the archived copy's 8 MiB as if it
    were on this volume and removes both older real backups (and the link) "per size budget" --
    freeing 2 MiB of a volume that was never over budget, while the link it calls `incomplete`."""
    vol = tmp_path / "vol"
    older = [ghettovcb_folder(vol, "web", "2026-11-0%d_21-00-01" % day, "STATUS.ok", OK) for day in (1, 2)]
    archived = ghettovcb_folder(tmp_path / "archive", "web", "2026-11-03_21-00-01", "STATUS.ok", OK)
    with open(str(archived / "web-flat.vmdk"), "wb") as f:
        f.write(os.urandom(8 << 20))
    os.symlink(str(archived), str(vol / "web" / archived.name))
    new = ghettovcb_folder(vol, "web", "2026-11-04_21-00-01", "STATUS.ok", OK)
    for folder in older + [new]:
        with open(str(folder / "web-flat.vmdk"), "r+b") as f:
            f.write(os.urandom(1 << 20))
    log = io.StringIO()
    removed = rotation.rotate(LocalShell(), str(vol), "web", 10, RunLog(stream=log), just_made=str(new),
                              budget=5 << 20, remove=lambda path: None)
    assert not any(str(folder) in removed for folder in older), log.getvalue()
    assert os.path.isdir(str(archived))
