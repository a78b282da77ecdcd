"""Outside testing, session 29: the deduplicating repository as a careful admin meets it (restoring
every backup it took, prune on a repository with damage in it, ...)."""

import os
import subprocess
import sys

import pytest
from repotool import backup, make_disk, new_repo
from simhost import needs_root

from hotvcb.repo.repository import open_path
from hotvcb.repo.writer import BackupWriter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(*args, timeout=120):
    """`hotvcb ARGS` in a process of its own, as the admin runs it."""
    return subprocess.run([sys.executable, "-m", "hotvcb"] + [str(a) for a in args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))


def rand_file(path, size, seed):
    import random
    rnd = random.Random(seed)
    with open(str(path), "wb") as f:
        f.write(rnd.getrandbits(8 * size).to_bytes(size, "little"))
    return str(path)


def test_a_backup_of_two_raw_disks_sharing_a_stem_restores_both(tmp_path):
    """A QEMU VM `files` has two raw images, `/var/lib/vms/files/data.img` (the system) and
    `/srv/vms/files/data.raw` (the data). `hotvcb backup --repo` stores both, each under its own name
    (data.img, data.raw; `RepoSink.plan_disks` only renames names that are equal). Months later the
    admin needs it back: `hotvcb restore --repo R --latest files --to DIR` fails with "cannot create
    DIR.hotvcb-restoring/data.raw: File exists" -- every disk that is no VMDK is restored as
    `<stem>.raw`, so the two disks claim one file and the backup can never be restored as files
    (nor through `--datastore`, which stages it the same way). Each disk must come back under a
    name of its own. Cause: commands/repo_cmd.py _disk_file drops the extension of a non-VMDK disk
    without making the result unique among the backup's disks."""
    repo = new_repo(tmp_path / "repo")
    system = rand_file(tmp_path / "system", 150000, 1)
    data = rand_file(tmp_path / "data", 150000, 2)
    w = BackupWriter(repo, "files", host="kvmhost")  # the names RepoSink.plan_disks gives these two disks
    try:
        w.add_disk("data.img", system)
        w.add_disk("data.raw", data)
        w.add_file("files.json", b'{"name": "files"}')
        w.commit()
    finally:
        w.abort()
    out = tmp_path / "out"
    r = cli("restore", "--repo", tmp_path / "repo", "--latest", "files", "--to", out)
    assert r.returncode == 0, r.stdout + r.stderr
    contents = sorted(open(os.path.join(str(out), n), "rb").read() for n in os.listdir(str(out))
                      if not n.endswith(".json"))
    assert contents == sorted([open(system, "rb").read(), open(data, "rb").read()])


def test_prune_refuses_before_removing_anything_when_a_kept_backups_index_is_damaged(tmp_path):
    """The newest backup of `web` has a damaged disk index (a truncated copy after an NFS hiccup); the
    older one is whole. The admin's nightly `hotvcb prune --repo R --keep-last 1` keeps the newest
    (damaged) one, REMOVES the whole older one, and only then stops: "hotvcb: error: indexes/...:
    the disk index is damaged", exit 1. The prune failed, yet it had already deleted the only backup
    of the VM that could still be restored. docs/repository.md: "prune and GC refuse to run past a
    damaged record (they could drop what it needs)", and prune takes the GC lock first so that a GC
    it cannot run refuses it "before it drops any backup". A prune whose GC cannot run on what the
    repository holds must refuse before it removes anything. Cause: repo/prune.py prune() deletes
    the records, then collect_held() reads the indexes (Repository.references) and fails."""
    disk = str(tmp_path / "web.raw")
    make_disk(disk, size=4 << 20, regions=3)
    repo = new_repo(tmp_path / "repo")
    older = backup(repo, "web", disk)
    newer = backup(repo, "web", disk)
    index = str(tmp_path / "repo" / "indexes" / (newer.id + ".0"))
    os.truncate(index, os.path.getsize(index) - 10)
    r = cli("prune", "--repo", tmp_path / "repo", "--keep-last", "1")
    left = [s.id for s in open_path(str(tmp_path / "repo")).snapshots("web")]
    assert "Traceback" not in r.stderr, r.stdout + r.stderr
    assert older.id in left, "prune failed, but removed the whole backup %s first:\n%s" % (older.id,
                                                                                         r.stdout + r.stderr)
    out = tmp_path / "out"
    assert cli("restore", "--repo", tmp_path / "repo", older.id, "--to", out).returncode == 0


@needs_root
def test_the_run_report_of_a_repository_backup_counts_the_backups_the_repository_holds(host, tmp_path):
    """The admin moved `web` to the repository (VM_BACKUP_REPOSITORY) and watches the nightly
    `--json-report` (and the mail). After the second successful backup into the repository the
    report's row for web says `good_backups: 0`, `newest_good: null`, the log table "GOOD KEPT 0",
    and the mail "NO good backup of this VM exists" -- right under "OK web -> .../snapshots/...".
    docs/operations.md: "Every VM's row counts the good backups it has (good_backups, newest_good,
    the mail's 'good backups: N, newest ...')". A monitoring rule on good_backups == 0 pages every
    night; worse, when a repository backup fails, the mail tells the admin the VM has no backup to
    restore while the repository holds several. Cause: jobs/backup.py _good_backups lists folder
    backups under VM_BACKUP_VOLUME only, also for a VM whose backups go to the repository."""
    import json

    from simhost import hotvcb, write_conf

    repo = "/vmfs/volumes/backup/repo"
    host.create_vm("web", "datastore1", [{"size": "2M"}])
    conf = write_conf(host, VM_BACKUP_REPOSITORY=repo)
    for n in (1, 2):
        report = tmp_path / ("run%d.json" % n)
        r = hotvcb(host, "backup", "-m", "web", "-g", conf, "-w", tmp_path / "work", "--json-report", report)
        assert r.returncode == 0, r.stdout + r.stderr
    (row,) = json.loads(report.read_text())["vms"]
    newest = open_path(host.real(repo)).snapshots("web")[-1]
    assert row["result"] == "ok" and row["good_backups"] == 2, row
    assert row["newest_good"] and newest.id in row["newest_good"], row


@pytest.mark.parametrize("version", ["missing", "1", 0, -1, True])
def test_a_config_version_this_hotvcb_does_not_know_is_refused_and_not_called_newer(tmp_path, version):
    """An admin restores the repository's `config` from a hand-kept copy (or a tool rewrote it) and
    the `version` field comes back missing, as the string "1", as 0, -1 or true. docs/repository.md:
    "A reader refuses a `version` it does not know ("made by a newer hotvcb") and never half-reads
    one." What happens: a missing or string version is refused as "config: format version None, made
    by a newer hotvcb (this one reads 1)" / "format version '1', made by a newer hotvcb (this one
    reads 1)" -- sending the admin to look for a newer hotvcb that does not exist --, while 0, -1 and
    true are not refused at all: the repository is read as version 1 (and backed up into, pruned).
    Expected: every one refused in one line that names `config` and its version without claiming a
    newer hotvcb made it. Cause: repo/format.py loads() tests `not isinstance(version, int) or
    version > VERSION` and words both as "newer"."""
    import json

    disk = str(tmp_path / "web.raw")
    make_disk(disk, size=2 << 20, regions=2)
    backup(new_repo(tmp_path / "repo"), "web", disk)
    cfg_path = tmp_path / "repo" / "config"
    cfg = json.loads(cfg_path.read_text())
    if version == "missing":
        del cfg["version"]
    else:
        cfg["version"] = version
    os.chmod(str(cfg_path), 0o644)
    cfg_path.write_text(json.dumps(cfg))
    r = cli("list", "--repo", tmp_path / "repo")
    text = r.stdout + r.stderr
    assert r.returncode == 1 and "Traceback" not in text, text
    assert "config" in text and "newer" not in text, text


@needs_root
def test_status_warns_when_the_last_backup_into_the_repository_failed(host, tmp_path):
    """The admin's monitoring runs `hotvcb status -g hotvcb.conf` every hour. `web` backs up into the
    repository (VM_BACKUP_REPOSITORY); tonight its pre-backup hook fails (the database would not
    quiesce) and the run ends with ERROR -- but status keeps saying OK "newest backup ... old" until
    the age limit runs out a day later. The same failure with folder backups is WARN "last run was
    error (pre-backup hook of web failed ...)" at once (docs/operations.md: backup check WARN "older
    than that, or the last run was not good"; store/lastrun.py exists so that status does not "call
    the VM OK on its older good backup until the age limit ran out"). Cause: jobs/repo_status.py
    RepoView._check never reads a last-run record, and jobs/backup.py _ended records the failure
    under VM_BACKUP_VOLUME (here not even there), not beside the repository."""
    import json

    from simhost import hotvcb, write_conf

    repo = "/vmfs/volumes/backup/repo"
    host.create_vm("web", "datastore1", [{"size": "2M"}])
    conf = write_conf(host, VM_BACKUP_REPOSITORY=repo)
    assert hotvcb(host, "backup", "-m", "web", "-g", conf, "-w", tmp_path / "work").returncode == 0
    conf = write_conf(host, VM_BACKUP_REPOSITORY=repo,
                      PRE_BACKUP_HOOK="'echo quiesce of the database failed; exit 1'")
    r = hotvcb(host, "backup", "-m", "web", "-g", conf, "-w", tmp_path / "work")
    assert r.returncode != 0 and "quiesce of the database failed" in r.stdout, r.stdout + r.stderr
    r = hotvcb(host, "status", "-g", conf, "--json")
    (web,) = [c for c in json.loads(r.stdout)["checks"] if c["kind"] == "backup" and c["name"] == "web"]
    assert web["severity"] == "WARN" and "quiesce of the database failed" in web["message"], web


@needs_root
def test_a_full_repository_during_a_delta_clone_names_the_repository(tmp_path):
    """`app` runs on a user's snapshot ("before upgrade"), ALLOW_VMS_WITH_SNAPSHOTS_TO_BE_BACKEDUP=1,
    and backs up into a repository on the `backup` datastore, which is nearly full. The run fails
    with "copy of /vmfs/volumes/datastore1/app/app-000001.vmdk failed: Failed to clone disk: There is
    not enough space on the file system": the admin reads that datastore1 (where the VM lives, with
    GiBs free) is full and goes hunting there. It is the repository's volume that is full: the delta
    is cloned into the repository's tmp/ (docs/repository.md "Deltas of a user's snapshot"), and a
    full repository must be named as such, as it is when a pack write hits ENOSPC
    (test_outsider_repo: "a full repository fails the VM naming the repository"). Cause:
    jobs/repo_backup.py passes vmkfstools' clone failure through as a copy error of the source disk."""
    from simhost import hotvcb, make_host, snapshot_names, write_conf

    repo = "/vmfs/volumes/backup/repo"
    host = make_host(tmp_path / "host", backup_capacity=12 << 20)
    try:
        vmid = host.create_vm("app", "datastore1", [{"size": "32M"}], power="on", snapshots=["before upgrade"])
        with open(host.real("/vmfs/volumes/datastore1/app/app-flat.vmdk"), "r+b") as f:
            f.write(os.urandom(20 << 20))
        conf = write_conf(host, VM_BACKUP_REPOSITORY=repo, ALLOW_VMS_WITH_SNAPSHOTS_TO_BE_BACKEDUP=1)
        r = hotvcb(host, "backup", "-m", "app", "-g", conf, "-w", tmp_path / "work")
        errors = [line for line in r.stdout.splitlines() if "error" in line]
        assert r.returncode == 6 and errors, r.stdout + r.stderr
        assert snapshot_names(host, vmid) == ["before upgrade"]
        assert os.listdir(host.real(repo + "/tmp")) == []
        assert any(repo in line for line in errors), "\n".join(errors)
    finally:
        host.stop()


@needs_root
def test_a_vm_with_a_virtual_rdm_backs_up_into_the_repository_as_it_does_into_folders(host, tmp_path):
    """`db` has a system disk and a virtual-mode RDM (its data LUN); the folder backup has copied both
    every night for years. The admin switches the host to the repository (VM_BACKUP_REPOSITORY=...,
    docs: "A backup into the repository goes through the same lifecycle as a folder backup"). From
    then on every night: snapshot created, "copy of .../db_1.vmdk failed: a vmfsRawDeviceMap disk;
    the repository reads flat disks ... and snapshot deltas only", snapshot removed, "not recorded
    in the repository", exit 6 -- the VM silently has no backup at all any more, and nothing in
    docs/repository.md or the config reference says a virtual RDM cannot go there. The same
    vmkfstools clone the repository already uses for a delta of a user's snapshot reads a virtual
    RDM (that is how the folder backup copies it). Expected: the VM backed up into the repository,
    both disks restorable. Cause: jobs/repo_backup.py _flat_source refuses every createType but
    vmfs/monolithicFlat unless the disk is a delta."""
    from simhost import hotvcb, snapshot_names, write_conf

    repo = "/vmfs/volumes/backup/repo"
    vmid = host.create_vm("db", "datastore1", [{"size": "2M"}, {"size": "2M", "rdm": "virtual"}], power="on")
    conf = write_conf(host)  # the folder backup the admin had: both disks copied
    r = hotvcb(host, "backup", "-m", "db", "-g", conf, "-w", tmp_path / "work")
    assert r.returncode == 0, r.stdout + r.stderr
    conf = write_conf(host, VM_BACKUP_REPOSITORY=repo)
    r = hotvcb(host, "backup", "-m", "db", "-g", conf, "-w", tmp_path / "work")
    assert snapshot_names(host, vmid) == []
    assert r.returncode == 0, r.stdout + r.stderr
    [snap] = open_path(host.real(repo)).snapshots("db")
    assert len(snap.disks) == 2


def test_prune_with_an_empty_vm_name_is_refused_not_a_silent_success(tmp_path):
    """The admin's nightly script runs `hotvcb prune --repo R --keep-daily 7 -m "$VM"` for each VM of a
    list; one line of the list is empty (or $VM was misspelt in the script), so hotvcb gets `-m ""`.
    It prints "removed 0 backup(s); garbage collection: ..." and exits 0, night after night: that
    VM's backups are never pruned and the repository fills up, with every run reported a success.
    prune refuses a -m that names no VM of the repository ("no backup of 'x' in the repository",
    exit 1: "a typo would otherwise 'prune' nothing and say so as a success", commands/prune_cmd.py),
    and `verify --repo R ""` refuses the empty name alike; an empty name must be refused too.
    Cause: prune_cmd.run tests `if args.vm and not decisions`, and "" is false."""
    disk = str(tmp_path / "web.raw")
    make_disk(disk, size=2 << 20, regions=2)
    repo = new_repo(tmp_path / "repo")
    for vm in ("web", "web", "db", "db"):
        backup(repo, vm, disk)
    r = cli("prune", "--repo", tmp_path / "repo", "--keep-daily", "7", "-m", "")
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stdout + r.stderr
    assert len(open_path(str(tmp_path / "repo")).snapshots()) == 4


@needs_root
def test_sigterm_during_a_delta_clone_leaves_no_clone_in_the_repository(host, tmp_path):
    """`app` runs on a user's snapshot and backs up into the repository; its delta chain is cloned by
    vmkfstools into `<repo>/tmp/flatten-*.vmdk` first (docs/repository.md "Deltas of a user's
    snapshot": the clone "is deleted as soon as the disk is stored or fails"; only "a killed run's
    leftover is removed by GC's forget_uploads"). The admin stops the run with SIGTERM (systemctl
    stop, a maintenance window's timeout) while the clone is being made. hotvcb ends cleanly -- exit
    2, our snapshot removed -- but leaves the temporary clone, a full copy of the VM's disk data,
    in the repository's tmp/, where it takes room on a volume that is often nearly full until a GC
    a grace period (a day by default) later. A clean stop must remove what it made. Cause:
    jobs/repo_backup.py _flattened removes the clone only on HotvcbError, and Interrupted is a
    BaseException."""
    import signal
    import time

    from simhost import hotvcb_background, lock_pid, snapshot_names, wrap_tool, write_conf

    repo = "/vmfs/volumes/backup/repo"
    vmid = host.create_vm("app", "datastore1", [{"size": "8M"}], power="on", snapshots=["before upgrade"])
    conf = write_conf(host, VM_BACKUP_REPOSITORY=repo, ALLOW_VMS_WITH_SNAPSHOTS_TO_BE_BACKEDUP=1)
    # the clone is made, then vmkfstools takes a few seconds more to return (a slow datastore)
    wrap_tool(host, "vmkfstools", 'case "$*" in *-i*) "$0.real" "$@"; rc=$?; sleep 4; exit $rc;; esac',
              layer="usr_sbin")
    p = hotvcb_background(host, "backup", "-m", "app", "-g", conf, "-w", tmp_path / "work")
    tmp = host.real(repo + "/tmp")
    try:
        deadline = time.monotonic() + 60
        while not (os.path.isdir(tmp) and any(n.startswith("flatten-") for n in os.listdir(tmp))):
            assert time.monotonic() < deadline and p.poll() is None, "no clone was made"
            time.sleep(0.02)
        time.sleep(0.5)
        os.kill(lock_pid(host), signal.SIGTERM)
        out = p.communicate(timeout=60)[0]
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 2 and "Traceback" not in out, out
    assert snapshot_names(host, vmid) == ["before upgrade"]
    assert [n for n in os.listdir(tmp) if n.startswith("flatten-")] == [], os.listdir(tmp)


@needs_root
def test_verify_with_a_config_naming_a_repository_does_not_send_the_admin_to_an_unmounted_share(host, tmp_path):
    """The host's hotvcb.conf sets VM_BACKUP_REPOSITORY; `hotvcb list web -g hotvcb.conf`, `hotvcb
    status -g hotvcb.conf` and `hotvcb restore --latest web -g hotvcb.conf` all find web's backups
    in that repository (docs/restore.md: "Where the config (-g) sets VM_BACKUP_REPOSITORY, restore
    --latest VM -g CONF restores the VM's newest backup in that repository, the one hotvcb list VM
    -g CONF shows"). The admin's weekly check, `hotvcb verify web -g hotvcb.conf`, instead answers
    "the backup volume /vmfs/volumes/backup/hotvcb is not there (a share not mounted, or a typo?):
    nothing to verify", exit 1 -- sending the admin to debug NFS mounts that are fine (or, where the
    old folder volume still exists, verifying last year's folder backups and saying OK while the
    repository is never read). It must verify the repository's backups of web, or at least name the
    repository (`hotvcb verify --repo R web`), as `list` does for a per-VM file's repository.
    Cause: commands/verify_cmd.py looks at VM_BACKUP_REPOSITORY only through --repo."""
    from simhost import hotvcb, write_conf

    repo = "/vmfs/volumes/backup/repo"
    host.create_vm("web", "datastore1", [{"size": "2M"}])
    conf = write_conf(host, VM_BACKUP_REPOSITORY=repo)
    assert hotvcb(host, "backup", "-m", "web", "-g", conf, "-w", tmp_path / "work").returncode == 0
    assert "web" in hotvcb(host, "list", "web", "-g", conf).stdout
    r = hotvcb(host, "verify", "web", "-g", conf)
    text = r.stdout + r.stderr
    assert "Traceback" not in text and "not mounted" not in text and "is not there" not in text, text
    assert repo in text, text


@needs_root
def test_status_does_not_count_another_hosts_vm_of_that_name_when_no_uuid_is_recorded(host, tmp_path):
    """Two hosts share one repository on NFS, and each runs a VM called `web` that has no BIOS uuid
    (a QEMU VM never has one; here an ESXi VM whose .vmx lost its uuid.bios). docs/repository.md: a
    VM is "its name and its vm_uuid, or where none is recorded (a QEMU VM has none) its name and the
    host that backed it up, so two hosts' VMs called web in one repository are pruned apart (and
    restore --latest web refuses to pick one)"; jobs/repo_status.py: "another host's VM of that name
    is not this one". This host's `web` has never been backed up, yet `hotvcb status` says OK
    "newest backup 0s old (...)": the other host's backup is taken for it, and the monitoring never
    tells the admin this VM has no backup. Expected: CRIT "never backed up". Cause:
    RepoView._check keeps every record whose vm_uuid is in ("", uuid), and uuid is "" here, without
    looking at the record's host."""
    import json

    from simhost import hotvcb, write_conf

    repo = "/vmfs/volumes/backup/repo"
    host.create_vm("web", "datastore1", [{"size": "2M"}])
    vmx = host.real("/vmfs/volumes/datastore1/web/web.vmx")
    with open(vmx) as f:
        lines = [line for line in f.read().splitlines() if not line.startswith("uuid.bios")]
    with open(vmx, "w") as f:
        f.write("\n".join(lines) + "\n")
    conf = write_conf(host, VM_BACKUP_REPOSITORY=repo)
    from hotvcb.repo.backend import LocalBackend
    from hotvcb.repo.repository import Repository

    other = Repository.init(LocalBackend(host.real(repo)))
    w = BackupWriter(other, "web", host="the-other-hosts-id", vm_uuid="")  # the other host's web, just backed up
    try:
        w.add_disk("web.vmdk", rand_file(tmp_path / "other.raw", 50000, 3))
        w.add_file("web.vmx", b'displayName = "web"\n')
        w.commit()
    finally:
        w.abort()
    r = hotvcb(host, "status", "-g", conf, "--json")
    (web,) = [c for c in json.loads(r.stdout)["checks"] if c["kind"] == "backup" and c["name"] == "web"]
    assert web["severity"] == "CRIT" and "never backed up" in web["message"], web


# --- what the tester noticed beside the 11 (fixed, so no xfail) ----------------------------------------------------


@needs_root
def test_backup_repo_on_the_command_line_beats_a_per_vm_files_repository(host, tmp_path):
    """`backup --repo PATH` "overrides VM_BACKUP_REPOSITORY" (its help, docs/config-reference.md), but a
    per-VM file's VM_BACKUP_REPOSITORY won: the admin's one-off backup into a test repository went into
    the production one. The option must win, and the file's key be named as ignored."""
    from simhost import hotvcb, write_conf

    host.create_vm("web", "datastore1", [{"size": "2M"}])
    confdir = os.path.join(host.root, "vmconf")
    os.mkdir(confdir)
    with open(os.path.join(confdir, "web"), "w") as f:
        f.write("VM_BACKUP_REPOSITORY=/vmfs/volumes/backup/prod\n")
    r = hotvcb(host, "backup", "-m", "web", "-g", write_conf(host), "-c", confdir,
               "--repo", "/vmfs/volumes/backup/test", "-w", tmp_path / "work")
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(open_path(host.real("/vmfs/volumes/backup/test")).snapshots("web")) == 1, r.stdout
    assert not os.path.exists(host.real("/vmfs/volumes/backup/prod")), r.stdout
    assert "VM_BACKUP_REPOSITORY ignored: --repo" in r.stdout, r.stdout


@needs_root
def test_folder_only_keys_are_named_as_ignored_when_backing_up_into_a_repository(host, tmp_path):
    """A migrating admin's ghettoVCB config keeps DISK_BACKUP_FORMAT=eagerzeroedthick and
    VM_BACKUP_ROTATION_COUNT=7 beside the new VM_BACKUP_REPOSITORY: the run said nothing of them, and
    its log even said "Backing up ... as eagerzeroedthick", so the admin believed seven backups were
    kept in that format. One warning must name them as ignored, and the log not claim a format."""
    from simhost import hotvcb, write_conf

    host.create_vm("web", "datastore1", [{"size": "2M"}])
    conf = write_conf(host, VM_BACKUP_REPOSITORY="/vmfs/volumes/backup/repo",
                      DISK_BACKUP_FORMAT="eagerzeroedthick", VM_BACKUP_ROTATION_COUNT=7)
    r = hotvcb(host, "backup", "-m", "web", "-g", conf, "-w", tmp_path / "work")
    assert r.returncode == 0, r.stdout + r.stderr
    (warning,) = [line for line in r.stdout.splitlines() if "ignored with VM_BACKUP_REPOSITORY" in line]
    assert "DISK_BACKUP_FORMAT" in warning and "VM_BACKUP_ROTATION_COUNT" in warning, warning
    assert "as eagerzeroedthick" not in r.stdout, r.stdout


def test_a_line_feed_in_a_vm_name_cannot_forge_a_line_of_list_or_prune(tmp_path):
    """A VM's name comes from its .vmx (anyone with the datastore may write it): `web` followed by a line
    feed and `keep     db @ ...` printed a forged line under `hotvcb prune --dry-run` (the admin's
    review of what a prune will remove) and a forged row of `hotvcb list --repo`. Each name is one field:
    its line feed escaped, one line per backup."""
    disk = str(tmp_path / "web.raw")
    make_disk(disk, size=2 << 20, regions=2)
    repo = new_repo(tmp_path / "repo")
    evil = "web\nkeep     db @ 2026-12-01 03:00:00 (forged)"
    backup(repo, evil, disk)
    backup(repo, "db", disk)
    r = cli("prune", "--repo", tmp_path / "repo", "--keep-last", "1", "--dry-run")
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(r.stdout.splitlines()) == 3 and "(forged)" not in "".join(
        line for line in r.stdout.splitlines() if not line.startswith("keep     web\\n")), r.stdout
    r = cli("list", "--repo", tmp_path / "repo")
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 3 and "web\\nkeep" in r.stdout, r.stdout
