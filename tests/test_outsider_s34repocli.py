"""Outsider round s34: the deduplicating repository as an admin drives it through the CLI alone
(docs/repository.md "Using it", `hotvcb --help`): backups with `--repo` and `VM_BACKUP_REPOSITORY=` in a
ghettoVCB.conf on odd paths, list/verify/prune/restore on a repository a NAS made read-only or littered with its
own files, prune's dry run against what the prune then does on a calendar of backups, `backup -d dryrun` against the
real run on a repository every real run fails on, three VMs backed up at once into a new repository.
Each defect is a strict xfail asserting the right behaviour; the rest pin what works.

Tiny disks (1-4 MiB); one simulated host per test where a host is needed.
"""

import datetime
import json
import os
import re
import subprocess

import pytest

from repotool import age, backup, cli, make_disk, new_repo
from simhost import hotvcb, needs_root, snapshot_names, write_conf

from hotvcb.repo.repository import open_path


def _out(r):
    return r.stdout + r.stderr


def _clean(r):
    out = _out(r)
    assert "Traceback" not in out and "internal error" not in out, out
    return out


# -- a repository on a path with spaces and umlauts, named in the ghettoVCB.conf -------------------------------------

@needs_root
def test_a_repository_named_in_the_conf_on_a_path_with_spaces_and_umlauts_works_for_every_command(host, tmp_path):
    """The admin keeps the repository on the NAS folder "/vmfs/volumes/backup/Sicherung Müller/repo" and writes
    it into the ghettoVCB.conf quoted, as every ghettoVCB.conf value with a space is. backup, list, verify,
    prune, status and restore --latest, each given only `-g conf`, must find that one repository."""
    vmid = host.create_vm("web", "datastore1", [{"size": "2M"}], power="on")
    repo = "/vmfs/volumes/backup/Sicherung Müller/repo"
    os.makedirs(host.real(os.path.dirname(repo)))  # the admin made the share's folder
    conf = write_conf(host, VM_BACKUP_REPOSITORY='"%s"' % repo)
    for _ in range(2):
        r = hotvcb(host, "backup", "-m", "web", "-g", conf, "-w", tmp_path / "work")
        assert r.returncode == 0, _out(r)
    assert snapshot_names(host, vmid) == []
    real = host.real(repo)
    assert len(open_path(real).snapshots("web")) == 2
    r = hotvcb(host, "list", "-g", conf)
    assert r.returncode == 0 and r.stdout.count("web ") >= 2, _out(r)
    r = hotvcb(host, "verify", "-g", conf, "--new")
    assert r.returncode == 0 and "OK" in r.stdout, _out(r)
    r = hotvcb(host, "prune", "-g", conf, "--keep-last", "1", "--dry-run")
    assert r.returncode == 0 and "dry run: nothing removed" in r.stdout, _out(r)
    r = hotvcb(host, "status", "-g", conf)
    _clean(r)
    assert "web" in r.stdout, _out(r)
    r = hotvcb(host, "restore", "-g", conf, "--latest", "web", "--datastore", "datastore1", "--name", "web-zurück")
    assert r.returncode == 0, _out(r)


@needs_root
@pytest.mark.parametrize("made", [True, False], ids=["existing", "new"])
def test_a_dry_run_backup_into_a_read_only_repository_exits_as_the_real_run_does(host, tmp_path, tmpfs, made):
    """The NAS export holding the repository was remounted read-only after an error. Before the night the admin
    checks the job with `hotvcb backup -d dryrun`: it says "Final status: OK, only a dryrun", exit 0. The real
    run that night fails the VM ("cannot write to the repository …: Read-only file system"), exit 6.
    docs/repository.md: a dry run "asks … the repository's folder and codec, and exits the code the real run
    would" (and `prune --dry-run` already finds a read-only repository "without writing",
    `LocalBackend.unwritable`). The dry run should fail the VM alike, naming the repository and why. The same
    for a repository yet to be made in an empty folder on that export (`new`)."""
    host.create_vm("web", "datastore1", [{"size": "2M"}], power="on")
    where = tmpfs("ro", "16m")
    repo = str(where / "repo")
    conf = write_conf(host, VM_BACKUP_REPOSITORY=repo)
    if made:
        r = hotvcb(host, "backup", "-m", "web", "-g", conf, "-w", tmp_path / "work")
        assert r.returncode == 0, _out(r)
    else:
        os.mkdir(repo)  # the admin made the empty folder for it
    subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)
    try:
        real = hotvcb(host, "backup", "-m", "web", "-g", conf, "-w", tmp_path / "work")
        assert real.returncode == 6 and "Read-only file system" in _out(real), _out(real)
        assert not made or len(open_path(repo).snapshots("web")) == 1
        dry = hotvcb(host, "backup", "-m", "web", "-g", conf, "-w", tmp_path / "work", "-d", "dryrun")
        out = _clean(dry)
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(where)], check=True)
    assert dry.returncode == real.returncode, out
    assert "Read-only file system" in out and repo in out, out


# -- prune: the dry run's table is what the prune then does, by PBS's rules -------------------------------------------

def _pbs(times, rules):
    """PBS's compute_prune_info, written out from its documentation: times newest first -> {index: rule}."""
    periods = [("last", None), ("hourly", "%Y-%m-%d %H"), ("daily", "%Y-%m-%d"), ("weekly", "W"),
               ("monthly", "%Y-%m"), ("yearly", "%Y")]
    marks = {}
    for rule, fmt in periods:
        n = rules.get(rule) or 0
        if not n:
            continue
        key = (lambda i: i) if fmt is None else (
            (lambda i: times[i].isocalendar()[:2]) if fmt == "W" else (lambda i, f=fmt: times[i].strftime(f)))
        covered = {key(i) for i, r in marks.items() if r}
        kept = set()
        for i in range(len(times)):
            if i in marks or key(i) in covered:
                continue
            if key(i) in kept:
                marks[i] = None
            elif len(kept) < n:
                kept.add(key(i))
                marks[i] = "keep-" + rule
            else:
                break
    return marks


def test_prune_dry_run_table_is_pbs_and_is_exactly_what_the_prune_removes(tmp_path):
    """The admin moves from PBS and checks hotvcb's keep rules on a calendar that crosses a year and an ISO
    week 53/1 boundary (a backup every 7 hours, 20 Dec to 12 Jan): `prune --dry-run` must keep exactly what
    PBS keeps, saying by which rule, and the prune with the same rules must then remove exactly the backups the
    dry run listed as "remove" and nothing else."""
    repo = new_repo(tmp_path / "repo")
    disk = tmp_path / "web.raw"
    make_disk(disk, size=2 << 20, seed=3, regions=2)
    times, t = [], datetime.datetime(2025, 12, 20, 22, 0)
    while t < datetime.datetime(2026, 1, 12):
        times.append(t)
        t += datetime.timedelta(hours=7)
    snaps = [backup(repo, "web", disk, when=w) for w in times]
    age(tmp_path / "repo", 3 * 3600)
    rules = {"last": 2, "hourly": 1, "daily": 3, "weekly": 2, "monthly": 3, "yearly": 2}
    args = []
    for k, v in rules.items():
        args += ["--keep-" + k, str(v)]
    newest_first = list(reversed(range(len(snaps))))
    marks = _pbs([times[i] for i in newest_first], rules)
    expect = {snaps[newest_first[j]].id: marks.get(j) for j in range(len(snaps))}
    dry = cli("prune", "--repo", tmp_path / "repo", "--dry-run", *args)
    assert dry.returncode == 0, _out(dry)
    said = {}
    for line in dry.stdout.splitlines():
        m = re.match(r"(keep|remove)\s+web @ .*\((\d{8}T\d{6}Z-[0-9a-f]{8})\)(?: \((keep-\w+)\))?$", line)
        if m:
            said[m.group(2)] = m.group(3) if m.group(1) == "keep" else None
    assert said == expect, dry.stdout
    real = cli("prune", "--repo", tmp_path / "repo", *args)
    assert real.returncode == 0, _out(real)
    left = set(os.listdir(str(tmp_path / "repo" / "snapshots")))
    assert left == {i for i, r in expect.items() if r}, _out(real)
    assert "removed %d backup(s)" % sum(1 for r in expect.values() if not r) in real.stdout, real.stdout


def _spoil(repo, damage):
    """What makes every real backup into the repository at `repo` fail (docs/repository.md)."""
    if damage == "newer-config":
        _edit_config(repo, version=2)
    elif damage == "damaged-config":
        _edit_config(repo, settle_seconds="600 s")
    elif damage == "garbage-mark":
        os.makedirs(os.path.join(repo, "condemned"), exist_ok=True)
        with open(os.path.join(repo, "condemned", "1000-deadbeef"), "w") as f:
            f.write("{")
    elif damage == "garbage-damage-record":  # of a pack that is there
        folder = os.path.join(repo, "packs", sorted(os.listdir(os.path.join(repo, "packs")))[0])
        os.makedirs(os.path.join(repo, "damaged"), exist_ok=True)
        with open(os.path.join(repo, "damaged", sorted(os.listdir(folder))[0] + ".0123456789abcdef"), "w") as f:
            f.write("{")


def _edit_config(repo, **keys):
    path = os.path.join(repo, "config")
    with open(path) as f:
        config = json.load(f)
    config.update(keys)
    os.chmod(path, 0o644)
    with open(path, "w") as f:
        json.dump(config, f)


@needs_root
@pytest.mark.parametrize("damage", ["newer-config", "damaged-config", "garbage-mark", "garbage-damage-record"])
def test_a_dry_run_backup_into_a_repository_every_real_run_fails_on_exits_as_the_real_run(host, tmp_path, damage):
    """The admin tests tonight's job with `hotvcb backup -d dryrun -g conf` after something happened to the
    repository: a newer hotvcb on another host re-made its config (format 2), a hand edit put a unit into
    settle_seconds, or a crashed NAS truncated a GC mark or a damage record. Every real run then fails the VM
    (exit 6, naming the object), yet the dry run says "Final status: OK, only a dryrun", exit 0. README: a dry
    run "asks what the real run checks only once a VM's backup began, too: a repository's folder and codec"
    and exits the code the real run would. It should open the repository as the real run does (writing
    nothing) and fail the VM alike."""
    host.create_vm("web", "datastore1", [{"size": "2M"}], power="on")
    repo = "/vmfs/volumes/backup/repo"
    conf = write_conf(host, VM_BACKUP_REPOSITORY=repo)
    r = hotvcb(host, "backup", "-m", "web", "-g", conf, "-w", tmp_path / "work")
    assert r.returncode == 0, _out(r)
    _spoil(host.real(repo), damage)
    real = hotvcb(host, "backup", "-m", "web", "-g", conf, "-w", tmp_path / "work")
    assert real.returncode == 6, _out(real)
    dry = hotvcb(host, "backup", "-m", "web", "-g", conf, "-w", tmp_path / "work", "-d", "dryrun")
    out = _clean(dry)
    assert dry.returncode == real.returncode and "DRY RUN found problems" in out, out




@needs_root
def test_restore_of_an_id_that_list_g_shows_is_not_called_nonexistent(host, tmp_path):
    """The admin's ghettoVCB.conf names the repository (VM_BACKUP_REPOSITORY=). `hotvcb list -g conf` lists it and
    shows web's backup id; the admin restores that id the way `--latest web -g conf` works: `hotvcb restore -g
    conf <id> --datastore datastore1 --name web-copy`. hotvcb answers "backup <id> does not exist" and "All VMs
    failed to restore!", exit 6, of a backup it just listed. It should restore it from the repository the config
    names, or refuse in one line saying that a repository's backup is named with --repo (exit 1), never call
    an existing backup missing."""
    host.create_vm("web", "datastore1", [{"size": "2M"}], power="on")
    repo = "/vmfs/volumes/backup/repo"
    conf = write_conf(host, VM_BACKUP_REPOSITORY=repo)
    r = hotvcb(host, "backup", "-m", "web", "-g", conf, "-w", tmp_path / "work")
    assert r.returncode == 0, _out(r)
    r = hotvcb(host, "list", "-g", conf, "web")
    (snap,) = open_path(host.real(repo)).snapshots("web")
    assert r.returncode == 0 and snap.id in r.stdout, _out(r)
    r = hotvcb(host, "restore", "-g", conf, snap.id, "--datastore", "datastore1", "--name", "web-copy")
    out = _clean(r)
    assert "does not exist" not in out, out
    assert r.returncode == 0 or (r.returncode == 1 and "--repo" in out), out


# -- pinned: what works -----------------------------------------------------------------------------------------------

JUNK = ["indexes/Thumbs.db", "indexes/.nfs000000000abc0001", "indexes/@eaDir/x@SynoEAStream", "verified/.DS_Store",
        "verified/@eaDir/x", "locks/.DS_Store", "last-run/.DS_Store", "packs/ab/@eaDir/x@SynoEAStream"]


def test_a_nas_clients_files_in_the_other_folders_are_left_alone_by_prune_gc_and_verify(tmp_path):
    """The NAS (Synology, a Mac, Windows, an NFS client) left its files in folders the earlier rounds did not try:
    indexes/, verified/, locks/, last-run/ and inside a pack folder, days old. Prune (and the GC sweeping what it
    marked, once its grace has passed) and verify must neither stop on them nor delete them."""
    repo_path = tmp_path / "repo"
    repo = new_repo(repo_path)
    disk = tmp_path / "web.raw"
    for seed, day in ((3, 30), (5, 1)):
        make_disk(disk, size=2 << 20, seed=seed)
        backup(repo, "web", disk, when=datetime.datetime(2026, 11 if day == 30 else 12, day, 21))
    for name in JUNK:
        path = repo_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"junk\n")
    age(repo_path, 3 * 86400)
    for _ in range(2):
        r = cli("prune", "--repo", repo_path, "--keep-last", "1")
        assert r.returncode == 0 and "garbage collection:" in r.stdout, _out(r)
        age(repo_path, 3 * 3600)
    r = cli("verify", "--repo", repo_path)
    assert r.returncode == 0 and "DAMAGED" not in r.stdout, _out(r)
    assert [n for n in JUNK if not (repo_path / n).exists()] == []


@needs_root
def test_three_vms_backed_up_at_once_into_a_new_repository_on_a_spaced_path(host, tmp_path):
    """BACKUP_PARALLEL=3 and a repository not made yet in "/vmfs/volumes/backup/Neue Ablage/repo": three
    writers make and fill it at once, twice; verify, prune and status (all by -g) then agree it is whole."""
    for vm in ("web", "db", "mail"):
        host.create_vm(vm, "datastore1", [{"size": "3M"}], power="on")
    repo = "/vmfs/volumes/backup/Neue Ablage/repo"
    os.makedirs(host.real(repo))
    conf = write_conf(host, VM_BACKUP_REPOSITORY='"%s"' % repo, BACKUP_PARALLEL=3)
    for _ in range(2):
        r = hotvcb(host, "backup", "-a", "-g", conf, "-w", tmp_path / "work")
        assert r.returncode == 0, _out(r)
    r = hotvcb(host, "verify", "-g", conf)
    assert r.returncode == 0 and "6 backup(s)" in r.stdout, _out(r)
    r = hotvcb(host, "prune", "-g", conf, "--keep-last", "1")
    assert r.returncode == 0 and "removed 3 backup(s)" in r.stdout, _out(r)
    r = hotvcb(host, "status", "-g", conf)
    assert r.returncode == 0, _out(r)
