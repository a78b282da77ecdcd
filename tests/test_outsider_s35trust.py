"""Outside tester, session 35: TRUST, "a backup is good because of what it holds".

I did not write hotvcb. Covered here, on the simulated ESXi host (tests/simhost.py): finished backups of a
running VM (thin, 2gbsparse, a `.gz` of ENABLE_COMPRESSION=1) and a repository backup (`--repo`), tampered
with as a failing disk, a careless admin or a half-finished copy would, then judged by every command that
says whether a backup is good: `list`, `verify`, `status`, `restore` (and its dry run), and a backup run's
rotation. They must all agree, and name the damaged one with the reason.

Tried by hand and consistent (not pinned, apart from the control test below): a byte flipped in a disk's
data, in a hole of the thin/2gbsparse disk, in the descriptor, .vmx or .nvram (list good until verify reads
it, by design; afterwards every command calls it damaged); an extent truncated or extended; a data file,
descriptor, .vmx or .nvram deleted or renamed; a disk's data replaced by a directory; hotvcb.json invalid,
empty, `null`, `[]`, a directory, version 0 / "2" / 9, `disks: []`, a size or checksum altered; STATUS.ok
removed, renamed to STATUS.error or lower case, STATUS.error beside it; a .gz cut short, a byte flipped in
it, a member dropped or altered, its manifest unreadable or of version 9; a repository's pack flipped, cut
or deleted, an index flipped, cut or deleted, a snapshot record invalid, empty or of version 0/9 (all judged
alike except as pinned below); a copy of the VM's folder to another datastore used with `--volume`; kill -9
at the seal: after hotvcb.json is written, while the sealed folder is packed to .gz (a control below), and
while the folder is removed after it. Seen, not pinned (likely the known cause): a manifest whose `files`
is emptied makes verify print "SKIPPED: failed backup" (exit 0) of a STATUS.ok backup list calls damaged.
Known and not re-pinned: tests/test_outsider_s35restore.py (a disk whose checksum entry was removed; a copy
out of its VM folder).
Each xfail test is one defect, asserting what the admin should see.
"""

import glob
import json
import os
import shutil
import time

import pytest

from simhost import (VOLUME, backup_root, backups, hotvcb, hotvcb_background, make_host, needs_root, next_second,
                     write_conf)

pytestmark = [needs_root]

VM = "web"
REPO = "/vmfs/volumes/backup/repo"


def out(r):
    return (r.stdout or "") + (r.stderr or "")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """VM "web" (2 MiB disk, running) backed up as thin (twice), 2gbsparse and .gz, and once into a
    repository; pristine copies of the VM's backup folder and of the repository kept aside."""
    host = make_host(tmp_path_factory.mktemp("s35trust") / "host")
    host.create_vm(VM, "datastore1", [{"size": "2M"}], power="on", writer=True)
    kinds = [("thin", 0), ("thin", 0), ("2gbsparse", 0), ("thin", 1)]
    for fmt, gz in kinds:
        conf = write_conf(host, "make.conf", DISK_BACKUP_FORMAT=fmt, ENABLE_COMPRESSION=gz,
                          VM_BACKUP_ROTATION_COUNT=20)
        next_second()
        r = hotvcb(host, "backup", "-m", VM, "-g", conf)
        assert r.returncode == 0, out(r)
    rconf = write_conf(host, "repo.conf", VM_BACKUP_REPOSITORY=REPO)
    r = hotvcb(host, "backup", "-m", VM, "-g", rconf)
    assert r.returncode == 0, out(r)
    names = backups(host, VM)
    assert len(names) == 4 and names[3].endswith(".gz"), names
    keep = host.real("/vmfs/volumes/backup/pristine")
    shutil.copytree(backup_root(host, VM), keep + "/vm", symlinks=True)
    shutil.copytree(host.real(REPO), keep + "/repo", symlinks=True)
    site = dict(host=host, keep=keep, conf=write_conf(host, VM_BACKUP_ROTATION_COUNT=20), rconf=rconf,
                names=dict(zip(["thin_a", "thin", "2gbsparse", "gz"], names)))
    yield site
    host.stop()


def reset(site, *kinds):
    """The VM's backup folder holding only the pristine backups `kinds` (with the .gz's record): their real
    paths, by kind."""
    host, root = site["host"], backup_root(site["host"], VM)
    shutil.rmtree(root)
    os.makedirs(root)
    paths = {}
    for kind in kinds:
        name = site["names"][kind]
        src = os.path.join(site["keep"], "vm", name)
        if os.path.isdir(src):
            shutil.copytree(src, os.path.join(root, name), symlinks=True)
        else:
            shutil.copy2(src, root)
            shutil.copytree(os.path.join(site["keep"], "vm", ".hotvcb-gz-records"),
                            os.path.join(root, ".hotvcb-gz-records"))
        paths[kind] = os.path.join(root, name)
    return paths


def reset_repo(site):
    real = site["host"].real(REPO)
    shutil.rmtree(real)
    shutil.copytree(os.path.join(site["keep"], "repo"), real, symlinks=True)
    return real


def on_host(site, real):
    return real.replace(site["host"].real(VOLUME), VOLUME)


def listed(site, name):
    r = hotvcb(site["host"], "list", "--json", "-g", site["conf"], VM)
    assert r.returncode == 0, out(r)
    stem = name[:-3] if name.endswith(".gz") else name
    (b,) = [b for b in json.loads(r.stdout)["backups"] if b["name"] in (name, stem)]
    return b


def flip(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))


def verdicts(site, real):
    """(verify, list after verify, status, restore dry run of the path) for the backup at `real`."""
    host, path = site["host"], on_host(site, real)
    v = hotvcb(host, "verify", path)
    item = listed(site, os.path.basename(real))
    s = hotvcb(host, "status", "-g", site["conf"])
    d = hotvcb(host, "restore", path, "--datastore", "ds5", "--name", "probe", "-d", "dryrun")
    return v, item, s, d


# -- controls ---------------------------------------------------------------------------------------------
def _data(real):
    return glob.glob(os.path.join(real, "*-flat.vmdk")) + glob.glob(os.path.join(real, "*-s001.vmdk"))


TAMPER = {
    "data-byte": lambda real: flip(_data(real)[0], 4096),
    "hole-byte": lambda real: flip(_data(real)[0], os.path.getsize(_data(real)[0]) - 10),
    "extent-cut": lambda real: os.truncate(_data(real)[0], os.path.getsize(_data(real)[0]) // 2),
    "manifest-not-json": lambda real: open(os.path.join(real, "hotvcb.json"), "w").write("{"),
}


@pytest.mark.parametrize("kind,how", [("thin", "data-byte"), ("2gbsparse", "hole-byte"), ("thin", "extent-cut"),
                                      ("2gbsparse", "manifest-not-json")])
def test_a_tampered_folder_backup_is_refused_by_every_command(site, kind, how):
    """The control: one tampering at a time, the backup the VM's only one. verify fails it (exit 6), list
    calls it not good with a reason, status is CRIT naming it, a restore's dry run refuses it (exit 6)."""
    real = reset(site, kind)[kind]
    TAMPER[how](real)
    v, item, s, d = verdicts(site, real)
    assert v.returncode == 6, out(v)
    assert not item["good"] and item.get("reason"), item
    assert s.returncode == 2 and "no good backup" in s.stdout, out(s)
    assert d.returncode == 6 and "is not a good backup" in out(d), out(d)


def test_a_compressed_backup_killed_at_its_seal_is_no_good_backup_to_any_command(site):
    """kill -9 of the run while it packs the sealed folder into `.web-<time>.gz.tmp`: what is left (the
    `-partial` folder, the hidden temp archive) is no backup to list, verify, status or restore --latest."""
    host = site["host"]
    reset(site)
    root = backup_root(host, VM)
    next_second()
    run = hotvcb_background(host, "backup", "-m", VM, "-g",
                            write_conf(host, "seal.conf", ENABLE_COMPRESSION=1, VM_BACKUP_ROTATION_COUNT=5))
    deadline = time.time() + 120
    while run.poll() is None and time.time() < deadline and not glob.glob(os.path.join(root, ".*.gz.tmp")):
        time.sleep(0.002)
    run.kill()
    assert run.wait() == -9, run.stdout.read()
    r = hotvcb(host, "list", "--json", "-g", site["conf"], VM)
    assert r.returncode == 0 and not [b for b in json.loads(r.stdout)["backups"] if b["good"]], out(r)
    v = hotvcb(host, "verify", VM, "-g", site["conf"])
    assert "0 backup(s) checked" in out(v), out(v)
    s = hotvcb(host, "status", "-g", site["conf"])
    assert s.returncode == 2 and "never backed up" in s.stdout, out(s)
    d = hotvcb(host, "restore", "--latest", VM, "-g", site["conf"], "--datastore", "ds5", "-d", "dryrun")
    assert d.returncode != 0 and "partial" in out(d), out(d)


# -- defects ----------------------------------------------------------------------------------------------
def test_a_second_vmx_in_a_sealed_backup_is_judged_alike_by_all(site):
    """A careless admin (or a file manager's "keep both") leaves `web (1).vmx` in last night's sealed backup.
    `hotvcb list` shows it good, `hotvcb verify` says "OK ... note: web (1).vmx is not in the manifest",
    "0 damaged", exit 0, `hotvcb status` is OK ("newest good backup ... verified"), but `restore` of it (and
    `restore --latest`) refuses it, exit 6. docs/backup-format.md, "What makes a backup good": "One predicate
    (hotvcb/store/health.py) answers it for rotation, list, verify, restore --latest, restore of a path"; a
    second .vmx is "damaged" for a backup without manifest. Either restore takes the .vmx the manifest names
    (it is proven), or every command calls the backup damaged naming the extra .vmx."""
    real = reset(site, "thin")["thin"]
    with open(os.path.join(real, "web (1).vmx"), "w") as f:
        f.write('displayName = "web"\n')
    v, item, s, d = verdicts(site, real)
    restorable = d.returncode == 0
    assert item["good"] == restorable, (item, out(d))
    assert (v.returncode == 0) == restorable, (out(v), out(d))
    assert (s.returncode == 0) == restorable, (out(s), out(d))


def test_rotation_keeps_count_restorable_backups_when_the_newer_one_has_a_second_vmx(site):
    """VM_BACKUP_ROTATION_COUNT=2, two backups A (older) and B (newer); B got a stray `web (1).vmx`, so no
    restore accepts it (see DEFECT 1). The next nightly run keeps B and its own new backup and deletes A:
    the admin is left with one restorable backup where two were asked for. docs/backup-format.md, Rotation:
    "The newest VM_BACKUP_ROTATION_COUNT good backups are kept"; a backup restore refuses is no good one,
    so A must stay (or B must be restorable)."""
    paths = reset(site, "thin_a", "thin")
    with open(os.path.join(paths["thin"], "web (1).vmx"), "w") as f:
        f.write('displayName = "web"\n')
    next_second()
    r = hotvcb(site["host"], "backup", "-m", VM, "-g", write_conf(site["host"], "rot.conf", VM_BACKUP_ROTATION_COUNT=2))
    assert r.returncode == 0, out(r)
    restorable = [b for b in backups(site["host"], VM)
                  if hotvcb(site["host"], "restore", "%s/%s/%s" % (VOLUME, VM, b), "--datastore", "ds5",
                            "--name", "probe", "-d", "dryrun").returncode == 0]
    assert len(restorable) >= 2, (backups(site["host"], VM), restorable, out(r))


def _pad_gz(real):
    """512 zero bytes after the gzip stream (a copy tool padding to a block, a half-synced re-copy)."""
    with open(real, "ab") as f:
        f.write(b"\0" * 512)


def test_verify_and_list_agree_on_a_gz_of_another_size_than_written(site):
    """An admin's copy tool padded last night's `web-<time>.gz` with 512 zero bytes. `hotvcb list` calls it
    damaged ("the archive is N bytes, it was M when written"), `status` is CRIT ("no good backup"), a restore
    refuses it; `hotvcb verify` of the same archive prints "OK: 4 file(s) ... intact", "0 damaged or
    incomplete", exit 0, and records nothing, so the admin cannot tell which to believe.
    docs/backup-format.md: one predicate answers for "rotation, list, verify, restore"; a `.gz` "has the size
    it was written with recorded there". verify must fail it naming the size (or every command accept it)."""
    real = reset(site, "gz")["gz"]
    _pad_gz(real)
    v, item, s, d = verdicts(site, real)
    assert not item["good"] and "when written" in item["reason"], item  # the control: list
    assert d.returncode == 6 and s.returncode == 2, (out(d), out(s))
    assert v.returncode == 6 and "when written" in out(v), out(v)


def test_verify_does_not_say_ok_of_a_backup_list_calls_warn(site):
    """A stray `STATUS.warn` lands beside `STATUS.ok` (a half-finished copy over an older, failed backup of
    the same name). `list` calls it not good ("STATUS.warn: some disks failed"), `status` CRIT, restore
    refuses it; `verify` prints "OK: 4 file(s) ... intact, 1 backup(s) checked, 0 damaged or incomplete",
    exit 0. docs/backup-format.md: "its STATUS files agree (when several are present the worst wins)", and
    the one predicate serves verify too. verify should name it as list does (as it says SKIPPED for
    STATUS.error), never "OK"."""
    real = reset(site, "thin")["thin"]
    open(os.path.join(real, "STATUS.warn"), "w").close()
    v, item, s, d = verdicts(site, real)
    assert not item["good"] and d.returncode == 6 and s.returncode == 2, (item, out(d), out(s))
    assert "OK:" not in out(v) and "STATUS.warn" in out(v), out(v)


def _repo_record(site):
    real = reset_repo(site)
    (rec,) = glob.glob(os.path.join(real, "snapshots", "*"))
    return real, rec


def test_a_repository_record_without_disks_is_damaged_for_every_command(site):
    """The repository's snapshot record of web's backup is edited (`"disks": []`: a careless script, a
    restore of the record from an older copy). `hotvcb verify --repo` says OK, exit 0; `status` is OK
    ("newest backup ... 0 B ... verified"); `restore --latest web -d dryrun` says "every check passed"; the
    real restore fails ("... missing; the snapshot chain is broken"), exit 6. docs/repository.md, "Records
    that do not read": a record "read, and not a whole record: ... a field missing or of the wrong kind" is
    damaged, `verify` reports it DAMAGED (exit 4), list/restore/status leave it out."""
    host = site["host"]
    real, rec = _repo_record(site)
    os.chmod(rec, 0o644)
    with open(rec) as f:
        data = json.load(f)
    data["disks"] = []
    with open(rec, "w") as f:
        json.dump(data, f)
    v = hotvcb(host, "verify", "--repo", REPO)
    s = hotvcb(host, "status", "-g", site["rconf"])
    d = hotvcb(host, "restore", "--latest", VM, "-g", site["rconf"], "--datastore", "ds5", "-d", "dryrun")
    assert v.returncode == 4 and "DAMAGED" in out(v), out(v)
    assert s.returncode == 2, out(s)
    assert d.returncode != 0, out(d)


def test_the_restore_dry_run_of_a_repository_backup_missing_a_pack_refuses_it(site):
    """A half-finished copy of the repository lacks one pack of web's only backup. `verify --repo` says
    DAMAGED ("chunk ... in no pack: missing from the repository"), exit 4; `status` is CRIT ("needs chunk ...,
    which no pack holds"); the restore fails, exit 6; but `restore --latest web -d dryrun` says "Dry run for
    web: every check passed", "OK, only a dryrun", exit 0. docs/restore.md section 3: "the backup is good (a
    dry run also re-reads every file against the manifest now)": the dry run must refuse what the restore
    will."""
    host = site["host"]
    real = reset_repo(site)
    packs = sorted(glob.glob(os.path.join(real, "packs", "*", "*")), key=os.path.getsize)
    os.remove(packs[-1])  # the big one: the disk's data
    v = hotvcb(host, "verify", "--repo", REPO)
    s = hotvcb(host, "status", "-g", site["rconf"])
    assert v.returncode == 4 and s.returncode == 2, (out(v), out(s))  # the control
    d = hotvcb(host, "restore", "--latest", VM, "-g", site["rconf"], "--datastore", "ds5", "-d", "dryrun")
    assert d.returncode == 6 and "every check passed" not in out(d), out(d)
