"""Outside testing, session 29, round 2: the deduplicating repository after the day's fixes (prune reading
all it needs first, last-run records in `<repo>/last-run/`, status matching a backup to its VM by uuid or
host, restored raw disks sharing a stem, ...)."""

import json
import os
import subprocess
import sys

import pytest
from repotool import backup, make_disk, new_repo
from simhost import hotvcb, needs_root, unmounted_share, write_conf

from hotvcb.repo.repository import open_path
from hotvcb.repo.writer import BackupWriter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = "/vmfs/volumes/backup/repo"


def cli(*args, timeout=120):
    """`hotvcb ARGS` in a process of its own, as the admin runs it."""
    return subprocess.run([sys.executable, "-m", "hotvcb"] + [str(a) for a in args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))


def drop_uuid(host, name):
    """The VM's .vmx without uuid.bios (a VM hotvcb knows by no uuid, as every QEMU VM)."""
    vmx = host.real("/vmfs/volumes/datastore1/%s/%s.vmx" % (name, name))
    with open(vmx) as f:
        lines = [line for line in f.read().splitlines() if not line.startswith("uuid.bios")]
    with open(vmx, "w") as f:
        f.write("\n".join(lines) + "\n")


def checks(host, conf, *extra):
    r = hotvcb(host, "status", "-g", conf, "--json", *extra)
    return {c["name"]: c for c in json.loads(r.stdout)["checks"] if c["kind"] == "backup"}


@needs_root
def test_status_still_finds_a_uuidless_vms_backups_after_the_host_rebooted(host, tmp_path):
    """An ESXi host backs up `web` (a VM with no uuid.bios, as every QEMU VM has none) into the repository
    every night. The host is rebooted for a patch: /var/run is a ramdisk, so hotvcb's host id there is new
    (docs/repository.md: "its host id is new after each reboot"). The next morning, before the nightly
    backup, `hotvcb status` says CRIT "never backed up" for `web`, whose backups (made by this very host)
    fill the repository: the monitoring pages the admin for nothing, and, worse, teaches them to ignore
    the alarm. A backup of a uuid-less VM is matched by the host id it recorded (Snapshot.of_vm), an id
    that does not survive a reboot, so it is no way to tell "this host" after one."""
    host.create_vm("web", "datastore1", [{"size": "2M"}])
    drop_uuid(host, "web")
    conf = write_conf(host, VM_BACKUP_REPOSITORY=REPO)
    r = hotvcb(host, "backup", "-m", "web", "-g", conf, "-w", tmp_path / "work")
    assert r.returncode == 0, r.stdout + r.stderr
    assert checks(host, conf)["web"]["severity"] == "OK"
    idfile = host.store.p("root", "run", "upper", "hotvcb.hostid")
    before = open(idfile).read()
    host.reboot()  # /var/run is empty again
    host.create_vm("db", "datastore1", [{"size": "1M"}])
    r = hotvcb(host, "backup", "-m", "db", "-g", conf, "-w", tmp_path / "work2")  # the first run after it
    assert r.returncode == 0, r.stdout + r.stderr
    assert open(idfile).read() != before  # a new host id
    web = checks(host, conf)["web"]
    assert web["severity"] == "OK", web


@needs_root
def test_restore_latest_and_prune_treat_a_rebooted_hosts_vm_as_one_vm(host, tmp_path):
    """The same story as above, a week on: `web` (no uuid.bios) was backed up before and after the host's
    reboot. The admin's `hotvcb restore --repo R --latest web` is refused as if two hosts had a VM called
    `web` ("two hosts' VMs of that name", docs/repository.md), though there is one host and one VM; and
    `prune --keep-last 1` keeps two backups, one per host id, the pre-reboot one kept for ever (one more
    for every reboot). Expected: one VM, its newest backup restored, one backup kept."""
    host.create_vm("web", "datastore1", [{"size": "2M"}])
    drop_uuid(host, "web")
    conf = write_conf(host, VM_BACKUP_REPOSITORY=REPO)
    r = hotvcb(host, "backup", "-m", "web", "-g", conf, "-w", tmp_path / "work")
    assert r.returncode == 0, r.stdout + r.stderr
    host.reboot()
    r = hotvcb(host, "backup", "-m", "web", "-g", conf, "-w", tmp_path / "work2")
    assert r.returncode == 0, r.stdout + r.stderr
    newest = open_path(host.real(REPO)).snapshots("web")[-1]
    r = cli("restore", "--repo", host.real(REPO), "--latest", "web", "--to", tmp_path / "out")
    assert r.returncode == 0 and newest.id in r.stdout, r.stdout + r.stderr
    r = cli("prune", "--repo", host.real(REPO), "--keep-last", "1", "--dry-run")
    assert [line.split()[0] for line in r.stdout.splitlines() if line.startswith(("keep", "remove"))] == \
        ["keep", "remove"], r.stdout + r.stderr


def test_a_line_feed_in_a_vm_name_cannot_forge_a_line_of_a_restores_dry_run(tmp_path):
    """The repository holds backups of a VM whose name holds a tab and a line feed (`ev<TAB>il<LF>keep web`,
    made by an API script). list and prune show it escaped (`ev\\til\\nkeep web`), as promised since the
    name must not forge or shift a line. The admin checks a restore first with `-d 1`: its RESTORE and
    DISK lines escape the name, but the FILE line prints the VM's .vmx (named after the VM) raw, so the
    dry run shows a line `dryrun: keep web.vmx` (the log repeats its prefix on the name's second line), a
    line that is no FILE/DISK/ROOM line; a name ending in `\nDISK: ...` would forge a disk the restore
    does not write. The name must be escaped there as everywhere (`FILE: ev\til\nkeep web.vmx`)."""
    repo = new_repo(tmp_path / "repo")
    disk = str(tmp_path / "d.raw")
    make_disk(disk, size=2 << 20, regions=2)
    name = "ev\til\nkeep web"
    w = BackupWriter(repo, name)
    try:
        w.add_disk("d.raw", disk)
        w.add_file(name + ".vmx", b'displayName = "x"\n')
        w.commit()
    finally:
        w.abort()
    r = cli("restore", "--repo", tmp_path / "repo", "--latest", name, "--to", tmp_path / "out", "-d", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    said = [line.split("-- dryrun: ", 1)[1] for line in r.stdout.splitlines() if "-- dryrun: " in line]
    assert all(line.split(":")[0] in ("RESTORE", "FILE", "DISK", "ROOM") for line in said), r.stdout


@needs_root
def test_a_failed_first_run_does_not_lock_the_admin_out_of_the_new_repository(host, tmp_path):
    """The admin makes the folder for the new repository (`mkdir /vmfs/volumes/backup/repo`, as they did
    for VM_BACKUP_VOLUME) and sets VM_BACKUP_REPOSITORY to it. The first night, `web`'s pre-backup hook
    fails: the run ends ERROR and its last-run record goes to `<repo>/last-run/web/` (store/lastrun.py
    makes it "only inside an existing repository", and the empty folder passes for one). The hook is
    fixed; the next night, and every night after, the backup is refused: "VM_BACKUP_REPOSITORY ...: a
    folder that holds something other than a repository" -- the only thing in it is hotvcb's own
    last-run/ folder. The admin has no backup at all and must find and delete a folder hotvcb made.
    Expected: the second run makes the repository and backs `web` up."""
    host.create_vm("web", "datastore1", [{"size": "2M"}])
    os.makedirs(host.real(REPO))
    conf = write_conf(host, VM_BACKUP_REPOSITORY=REPO, PRE_BACKUP_HOOK="'echo the database would not quiesce; exit 1'")
    r = hotvcb(host, "backup", "-m", "web", "-g", conf, "-w", tmp_path / "work")
    assert r.returncode != 0 and "would not quiesce" in r.stdout, r.stdout + r.stderr
    conf = write_conf(host, VM_BACKUP_REPOSITORY=REPO)
    r = hotvcb(host, "backup", "-m", "web", "-g", conf, "-w", tmp_path / "work2")
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(open_path(host.real(REPO)).snapshots("web")) == 1


@needs_root
def test_a_per_vm_files_backup_volume_is_named_as_ignored_with_a_repository(host, tmp_path):
    """The admin migrates from ghettoVCB: hotvcb.conf now sets VM_BACKUP_REPOSITORY, and the per-VM file
    of the big file server `web` still says `VM_BACKUP_VOLUME=/vmfs/volumes/backup/special` (its backups
    went to the large NAS) beside `VM_BACKUP_ROTATION_COUNT=3`. The run warns that the file's
    VM_BACKUP_ROTATION_COUNT is "only for folder backups, ignored with VM_BACKUP_REPOSITORY", but says
    nothing of the file's VM_BACKUP_VOLUME, though it is ignored too: `web` goes into the repository, on
    the small volume, not to the NAS the file names. The admin, reading the warning, believes the only
    thing lost is the rotation count. The file's VM_BACKUP_VOLUME line must be named as ignored too (or
    the VM backed up where it says)."""
    host.create_vm("web", "datastore1", [{"size": "2M"}])
    confdir = os.path.join(host.root, "vmconf")
    os.mkdir(confdir)
    with open(os.path.join(confdir, "web"), "w") as f:
        f.write("VM_BACKUP_VOLUME=/vmfs/volumes/backup/special\nVM_BACKUP_ROTATION_COUNT=3\n")
    conf = write_conf(host, VM_BACKUP_REPOSITORY=REPO)
    r = hotvcb(host, "backup", "-m", "web", "-g", conf, "-c", confdir, "-w", tmp_path / "work")
    assert r.returncode == 0, r.stdout + r.stderr
    went_to_folder = os.path.isdir(host.real("/vmfs/volumes/backup/special/web"))
    named = [line for line in r.stdout.splitlines() if "VM_BACKUP_VOLUME" in line and "vmconf/web" in line
             and "ignored" in line]
    assert went_to_folder or named, r.stdout


@needs_root
def test_a_refused_backup_into_an_unmounted_repository_writes_nothing_on_the_hosts_own_disk(host, tmp_path):
    """The repository is the NFS share itself: /etc/fstab mounts `nas:/export` on
    /vmfs/volumes/backup/nas and VM_BACKUP_REPOSITORY is that mount point. Tonight the share did not
    mount. The backup is refused as it should be ("a mount point in /etc/fstab but nothing is mounted
    there; ... writing there would fill the host's own disk"), and then the run writes its last-run
    record into that very folder: `nas/last-run/db/.hotvcb-last-run.<host>.json` on the host's own
    disk, under the mount point (store/lastrun.py promises a missing or unmounted volume "must stay
    missing, not become a local folder"). The empty mount point now holds files that the share hides
    once mounted (and that `status` then never sees), and the mount point is no longer the empty
    folder the admin left. Nothing may be written under an unmounted share."""
    point = unmounted_share(host)
    host.create_vm("db", "datastore1", [{"size": "2M"}])
    r = hotvcb(host, "backup", "-m", "db", "-g", write_conf(host, VM_BACKUP_REPOSITORY=point), "-w", tmp_path / "w")
    assert r.returncode != 0 and "nothing is mounted there" in r.stdout + r.stderr, r.stdout + r.stderr
    assert os.listdir(host.real(point)) == []


def _rand_file(path, size, seed):
    import random
    rnd = random.Random(seed)
    with open(path, "wb") as f:
        f.write(rnd.getrandbits(8 * size).to_bytes(size, "little"))


def test_a_bare_qemu_vms_repository_backup_restores_to_kvm_with_each_disk_its_own(tmp_path):
    """A bare QEMU VM `files` has two raw images, `sys/data.img` (the system) and `dat/data.raw` (the data),
    and is backed up into the repository every night (`hotvcb --qemu DIR backup -m files --repo R`: OK,
    docs/kvm.md: the repository reads `.raw`/`.img` images). The server dies; the admin follows
    docs/restore.md section 5, "any good backup ... of a bare QEMU process restores as a KVM VM",
    `hotvcb restore --repo R --latest files --kvm DIR`. The backup is staged, then the restore stops:
    "... has no hotvcb.json: which file holds which disk is unknown" (exit 6). No bare-QEMU backup in a
    repository can be restored to KVM (one disk or two). Expected: the VM restored, each of its disks
    from its own image (the two share the stem `data`, restored as data.raw and data.img.raw)."""
    from qemuvm import QemuVm, env, hotvcb_argv, same_content, vm_dirs

    root, inv, ctl = vm_dirs("o2q")
    os.makedirs(os.path.join(root, "sys"))
    os.makedirs(os.path.join(root, "dat"))
    img, raw = os.path.join(root, "sys", "data.img"), os.path.join(root, "dat", "data.raw")
    _rand_file(img, 1 << 20, 1)
    _rand_file(raw, 1 << 20, 2)
    vm = QemuVm("files", img, "raw", inv, ctl, os.path.join(root, "log"),
                extra=["-drive", "file=%s,format=raw,if=virtio" % raw])
    try:
        repo = str(tmp_path / "repo")
        r = subprocess.run(hotvcb_argv(inv, "backup", "-m", "files", "--repo", repo, "-w", str(tmp_path / "w")),
                           capture_output=True, text=True, env=env(), timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        kvm = tmp_path / "kvm"
        kvm.mkdir()
        r = cli("restore", "--repo", repo, "--latest", "files", "--kvm", kvm)
        assert r.returncode == 0, r.stdout + r.stderr
        images = [os.path.join(dp, f) for dp, _dn, fs in os.walk(str(kvm)) for f in fs
                  if f.endswith((".qcow2", ".raw", ".img"))]
        assert len(images) == 2, images
        assert sorted([same_content(p, img) for p in images]) == [False, True], images
        assert sorted([same_content(p, raw) for p in images]) == [False, True], images
    finally:
        vm.kill()
        import shutil
        shutil.rmtree(root, ignore_errors=True)


def test_verify_boot_of_a_repository_vm_does_not_silently_look_in_the_backup_volume(tmp_path):
    """The admin's backups go into the repository. The monthly restore test is a smoke boot: `hotvcb verify
    --boot --repo R web` (verify takes --repo, and `verify web --repo R` works). hotvcb drops --repo
    without a word and answers "no good backup of 'web' under /vmfs/volumes/.../backups to boot", a
    folder the admin never uses, as if the VM had no backup; `verify --boot web -g hotvcb.conf` with
    VM_BACKUP_REPOSITORY says the same, though plain `verify web -g hotvcb.conf` follows the repository
    ("verifying the repository VM_BACKUP_REPOSITORY names"). Expected: the repository's backup booted,
    or --boot refused for a repository, saying so -- never a claim about a folder nobody asked for."""
    repo = new_repo(tmp_path / "repo")
    disk = str(tmp_path / "web.raw")
    make_disk(disk, size=2 << 20, regions=2)
    backup(repo, "web", disk)
    r = cli("verify", "--boot", "--repo", tmp_path / "repo", "web", "--boot-timeout", "5")
    out = r.stdout + r.stderr
    assert "Booting" in r.stdout or (r.returncode != 0 and ("--repo" in out or "repositor" in out)), out


@needs_root
def test_backup_files_chmod_and_rsync_link_are_honoured_or_named_as_ignored_with_a_repository(host, tmp_path):
    """The admin's ghettoVCB config keeps `BACKUP_FILES_CHMOD=go-rwx` (the backup volume is an NFS share
    other teams mount: nobody else may read the VMs' disks) and `RSYNC_LINK=1` (the off-site rsync follows
    `<VM>-symlink`). They switch to VM_BACKUP_REPOSITORY on that share. The run warns that
    DISK_BACKUP_FORMAT and VM_BACKUP_ROTATION_COUNT are "only for folder backups, ignored", and says
    nothing of these two, though both are ignored too: every pack, index and record of the repository
    is written 0644 (the VM's data readable by everyone who mounts the share) and no symlink is made.
    docs/config-reference.md: the folder backups' keys are "ignored there (the run warns, naming each one
    a file sets)". Expected: the mode applied to what the repository stores, or both keys named as
    ignored."""
    host.create_vm("web", "datastore1", [{"size": "2M"}])
    conf = write_conf(host, VM_BACKUP_REPOSITORY=REPO, BACKUP_FILES_CHMOD="go-rwx", RSYNC_LINK=1)
    r = hotvcb(host, "backup", "-m", "web", "-g", conf, "-w", tmp_path / "work")
    assert r.returncode == 0, r.stdout + r.stderr
    ignored = [line for line in r.stdout.splitlines() if "ignored" in line]
    packs = [os.path.join(dp, f) for dp, _dn, fs in os.walk(host.real(REPO + "/packs")) for f in fs]
    assert packs
    private = all(not os.stat(p).st_mode & 0o077 for p in packs)
    assert private or any("BACKUP_FILES_CHMOD" in line for line in ignored), r.stdout
    assert any("RSYNC_LINK" in line for line in ignored), r.stdout


@needs_root
def test_another_vms_failure_recorded_under_the_same_host_name_does_not_warn_this_vm(host, tmp_path):
    """Two ESXi hosts left with the same host name (ESXi's default, `localhost`, or two sites' `esxi01`) share
    one repository; each runs a VM `web`, two different VMs (their uuid.bios differ), and status tells
    their backups apart by uuid (docs/repository.md). Last night the other host's `web` failed: its
    record goes to `last-run/web/.hotvcb-last-run.esxi01.json`, the very file this host's status reads
    for its own `web` -- which was backed up fine. `hotvcb status` here now says WARN "last run was error
    (...)" for a VM whose last run was good; the admin chases a failure that is not theirs (and this
    host's own failure would overwrite the other's). The record names its VM's uuid: a record of
    another VM must not count as this one's."""
    host.create_vm("web", "datastore1", [{"size": "2M"}])
    conf = write_conf(host, VM_BACKUP_REPOSITORY=REPO)
    r = hotvcb(host, "backup", "-m", "web", "-g", conf, "-w", tmp_path / "work")
    assert r.returncode == 0, r.stdout + r.stderr
    assert checks(host, conf)["web"]["severity"] == "OK"
    ours = open_path(host.real(REPO)).snapshots("web")[-1].record["vm_uuid"]
    assert ours
    path = host.real(REPO + "/last-run/web/.hotvcb-last-run.esxi01.json")
    assert not os.path.exists(path)
    import time
    os.makedirs(os.path.dirname(path))
    with open(path, "w") as f:  # what the other host's hotvcb writes there (store/lastrun.py record)
        f.write(json.dumps({"vm": "web", "host": "esxi01", "vm_uuid": "42 00 00 00 00 00 00 00-00 00 00 00 00 00 00 01",
                            "time": int(time.time()) + 2, "result": "error",
                            "message": "pre-backup hook of web failed (exit 1): other site"}) + "\n")
    web = checks(host, conf)["web"]
    assert web["severity"] == "OK", web
