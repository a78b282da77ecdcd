"""Outside testing, session 27: the deduplicating repository as an admin trusting it with production
data meets it (prune's retention on odd calendars, status after verify found damage, ...)."""

import datetime
import json
import os

import pytest
from repotool import backup, corrupt_one_chunk, new_repo

from hotvcb.cli import main
from hotvcb.repo.repository import open_path


def small_disk(path, size=200000, seed=b"a"):
    data = (seed * 4096)[:4096]
    with open(str(path), "wb") as f:
        f.write(os.urandom(size // 2) + data * ((size - size // 2) // 4096))
    return path


def test_keep_last_keeps_the_newest_backup_across_the_end_of_summer_time(tmp_path, capsys):
    """The night summer time ends (Europe: 2026-10-25, 03:00 CEST -> 02:00 CET), a VM backed up every
    half hour gets a backup at 02:45 CEST and, 30 minutes later, one at 02:15 CET. `list --repo` shows
    them in the order they were made (by `utc`), but `prune --keep-last 1` keeps the 02:45 one and
    REMOVES the newest backup: the repository's only copy of the VM's latest state goes, and the
    admin keeps a stale one. PBS (whose semantics prune claims) orders backups by their instant
    (epoch); only the periods are counted in local time. Cause: prune.plan hands retention.select the
    record's naive local `time`, which select sorts by (retention._instant leaves naive times alone).
    The backups are written with the API and the wall times they would have had (the record's
    `time` is what `BackupWriter.commit(when)` records; `utc` is the backend's clock, in order)."""
    disk = small_disk(tmp_path / "web.raw")
    repo = new_repo(tmp_path / "repo")
    older = backup(repo, "web", disk, when=datetime.datetime(2026, 10, 25, 2, 45))  # 00:45 UTC (CEST)
    newer = backup(repo, "web", disk, when=datetime.datetime(2026, 10, 25, 2, 15))  # 01:15 UTC (CET)
    assert [s.id for s in open_path(str(tmp_path / "repo")).snapshots("web")] == [older.id, newer.id]
    assert main(["prune", "--repo", str(tmp_path / "repo"), "--keep-last", "1"]) == 0
    left = [s.id for s in open_path(str(tmp_path / "repo")).snapshots("web")]
    assert left == [newer.id], "prune kept %s and removed the newest backup %s" % (left, newer.id)


def test_status_does_not_call_a_backup_verified_after_verify_found_it_damaged(host, tmp_path, capsys):
    """An admin runs `hotvcb verify --repo` nightly and watches `hotvcb status` in monitoring. The
    pack holding the newest backup's chunks was verified good once; later a chunk in it rots, and
    the next `verify --repo` exits 4 naming the chunk and that backup (and records it in damaged/).
    `hotvcb status` still reports the VM OK, "verified <the earlier date>": the one tool that feeds
    monitoring hides the damage verify found, so nobody gets paged and the damaged backup is trusted
    for a restore that will fail. Cause: jobs/repo_status.py RepoView._verified takes the oldest
    verified/ marker of the packs and never looks at damaged/ (verify writes the damage record but
    leaves the pack's old verified/ marker in place: repo/verify.py)."""
    from simhost import hotvcb, write_conf

    REPO = "/vmfs/volumes/backup/repo"
    host.create_vm("web", "datastore1", [{"size": "4M"}])
    conf = write_conf(host, VM_BACKUP_REPOSITORY=REPO)
    r = hotvcb(host, "backup", "-m", "web", "-g", conf, "-w", tmp_path / "work")
    assert r.returncode == 0, r.stdout + r.stderr
    assert hotvcb(host, "verify", "--repo", REPO).returncode == 0
    repo = open_path(host.real(REPO))
    newest = repo.snapshots("web")[-1]
    corrupt_one_chunk(host.real(REPO), repo, newest)
    r = hotvcb(host, "verify", "--repo", REPO)
    assert r.returncode == 4 and newest.id in r.stdout, r.stdout + r.stderr
    r = hotvcb(host, "status", "-g", conf, "--json")
    web = [c for c in json.loads(r.stdout)["checks"] if c["kind"] == "backup" and c["name"] == "web"][0]
    assert web["severity"] == "CRIT" and web["details"]["verified"] is None, web
    assert "damaged" in web["message"] and newest.id in web["message"], web
    # the next backup stores the damaged chunk again: its newest backup is whole, and says so
    assert hotvcb(host, "backup", "-m", "web", "-g", conf, "-w", tmp_path / "work").returncode == 0
    r = hotvcb(host, "status", "-g", conf, "--json")
    web = [c for c in json.loads(r.stdout)["checks"] if c["kind"] == "backup" and c["name"] == "web"][0]
    assert web["severity"] == "OK" and "damaged" not in web["message"], web


def test_restore_latest_refuses_a_name_two_vms_share(tmp_path, capsys):
    """Two ESXi hosts share one repository on NFS and each has a VM called `web` (docs/repository.md:
    "a VM is its name and its vm_uuid, so two hosts' VMs called web in one repository are pruned
    apart"). `hotvcb restore --repo R --latest web --to DIR` restores, without a word, whichever of
    the two was backed up last -- host B's web when the admin is rebuilding host A's -- and `list`
    shows no column to tell them apart. A restore that may write the wrong VM's disks must refuse
    and name the candidates (ids, hosts), as an ambiguous id prefix is refused. Cause:
    commands/repo_cmd.py find() takes `_readable(repo, latest)[-1:]` by name alone."""
    from hotvcb.repo.writer import BackupWriter

    repo = new_repo(tmp_path / "repo")
    for host, uuid in (("idesxia", "564d aa aa"), ("idesxib", "564d bb bb")):
        disk = small_disk(tmp_path / (host + ".raw"), seed=host.encode())
        w = BackupWriter(repo, "web", host=host, vm_uuid=uuid)
        try:
            w.add_disk("web.raw", str(disk))
            w.add_file("web.vmx", b'displayName = "web"\n')
            w.commit()
        finally:
            w.abort()
    code = main(["restore", "--repo", str(tmp_path / "repo"), "--latest", "web", "--to", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code != 0 and not (tmp_path / "out").exists(), "restored one of two VMs called web without asking"
    assert "Traceback" not in err and "2 VMs called 'web'" in err and "idesxia" in err and "idesxib" in err, err
    assert main(["list", "--repo", str(tmp_path / "repo"), "--json"]) == 0  # which is which, for the id to give
    rows = json.loads(capsys.readouterr().out)["backups"]
    assert sorted((r["host"], r["vm_uuid"]) for r in rows) == [("idesxia", "564d aa aa"), ("idesxib", "564d bb bb")]


def test_verify_names_a_pack_with_a_broken_table_once(tmp_path, capsys):
    """A pack whose last bytes are lost (a truncated copy, an NFS write cut short): `verify --repo
    --json` lists the very same line "packs/..: not a pack (bad trailer); it may hold chunks of any
    backup" twice in `problems`, and the text report counts "N problem(s)" one too many. A
    monitoring script counting problems, or an admin matching them to damaged packs, is misled.
    Cause: repo/verify.py verify(): _read_tables appends the table's error, and _read_pack (the pack
    is chosen to be read whole) appends it again from _check_pack."""
    disk = small_disk(tmp_path / "web.raw")
    repo = new_repo(tmp_path / "repo")
    backup(repo, "web", disk)
    packs = [os.path.join(d, f) for d, _s, fs in os.walk(str(tmp_path / "repo" / "packs")) for f in fs]
    biggest = max(packs, key=os.path.getsize)
    os.truncate(biggest, os.path.getsize(biggest) - 5)
    assert main(["verify", "--repo", str(tmp_path / "repo"), "--json"]) == 4
    problems = json.loads(capsys.readouterr().out)["problems"]
    about_pack = [p for p in problems if p.startswith("packs/")]
    assert len(about_pack) == 1, problems


def test_dry_run_of_a_repository_backup_says_where_it_goes(host, tmp_path):
    """An admin switches a VM to the repository (`VM_BACKUP_REPOSITORY=` in the config) and checks
    the change with `hotvcb backup -d dryrun` before the night's run. The dry run says
    "BACKUP_TO: /vmfs/volumes/backup/hotvcb/web/web-<time>", "ROTATION: keep 3" and the CONFIG line
    "backups to /vmfs/volumes/backup/hotvcb": everything a folder backup would do, not one word of
    the repository the real run writes into (and which rotation never touches). The dry run, whose
    whole point is to show what the run will do, tells the admin the config change did not take.
    Cause: jobs/preflight.py dry_run() (and commands/backup_cmd.py's CONFIG line) use
    VM_BACKUP_VOLUME without looking at vm_backup_repository."""
    from simhost import hotvcb, write_conf

    repo_path = "/vmfs/volumes/backup/repo"
    host.create_vm("web", "datastore1", [{"size": "4M"}])
    conf = write_conf(host, VM_BACKUP_REPOSITORY=repo_path)
    r = hotvcb(host, "backup", "-m", "web", "-g", conf, "-d", "dryrun", "-w", tmp_path / "work")
    assert r.returncode == 0, r.stdout + r.stderr
    assert not os.path.exists(host.real(repo_path))  # it changes nothing (holds today)
    assert "BACKUP_TO: /vmfs/volumes/backup/hotvcb" not in r.stdout, r.stdout
    assert "BACKUP_TO: the repository %s" % repo_path in r.stdout, r.stdout
    assert "backups into the repository %s" % repo_path in r.stdout and "keep 3" not in r.stdout, r.stdout


def test_list_with_the_config_lists_the_repository_it_names(host, tmp_path):
    """With `VM_BACKUP_REPOSITORY=` in hotvcb.conf, `hotvcb backup -g hotvcb.conf`, `hotvcb prune -g
    hotvcb.conf` and `hotvcb status -g hotvcb.conf` all work on the repository. `hotvcb list -g
    hotvcb.conf web` answers, exit 0, "no backups under /vmfs/volumes/backup/hotvcb for 'web'": the
    admin is told the VM has no backup at all right after backing it up (and a script taking the
    exit code and the empty list at their word concludes the same). It should list the repository
    the config names (as status does), or at least not claim there is nothing. Cause:
    commands/list_cmd.py run() looks only at --repo, never at settings.vm_backup_repository."""
    from simhost import hotvcb, write_conf

    repo_path = "/vmfs/volumes/backup/repo"
    host.create_vm("web", "datastore1", [{"size": "4M"}])
    conf = write_conf(host, VM_BACKUP_REPOSITORY=repo_path)
    r = hotvcb(host, "backup", "-m", "web", "-g", conf, "-w", tmp_path / "work")
    assert r.returncode == 0, r.stdout + r.stderr
    [snap] = open_path(host.real(repo_path)).snapshots("web")
    r = hotvcb(host, "list", "-g", conf, "web")
    assert snap.id in r.stdout and "VM_BACKUP_REPOSITORY" in r.stderr, r.stdout + r.stderr
    r = hotvcb(host, "list", "-g", conf, "web", "--json")  # one JSON document on stdout still
    assert [b["id"] for b in json.loads(r.stdout)["backups"]] == [snap.id], r.stdout


def test_prune_deletes_only_the_dropped_backups_own_indexes(tmp_path, capsys):
    """A snapshot record is plain JSON with no checksum of its own; one of an old backup is damaged
    so that its disk's "index" names `config` (a hand edit, a tool gone wrong, a bad block: verify
    reports it, exit 4: "config: the disk index is damaged"). The nightly `hotvcb prune --keep-last
    1` drops that old backup and deletes `config` -- the repository's own config -- with exit 0;
    from then on every list, verify, restore and backup says "no hotvcb repository there" for a
    repository full of good backups. Prune must delete only `indexes/<that backup's id>.<n>` (GC
    itself removes only objects under indexes/), and leave any other name alone (or refuse, as it
    refuses other damage). Cause: repo/prune.py prune() calls backend.delete(disk["index"]) on
    the record's word; repository._check_record only checks that the name is a string."""
    disk = small_disk(tmp_path / "web.raw")
    repo = new_repo(tmp_path / "repo")
    old = backup(repo, "web", disk, when=datetime.datetime(2026, 11, 1, 21))
    kept = backup(repo, "web", disk, when=datetime.datetime(2026, 11, 2, 21))
    record = tmp_path / "repo" / "snapshots" / old.id
    data = json.loads(record.read_text())
    data["disks"][0]["index"] = "config"
    record.write_text(json.dumps(data))
    # fixed: such a record is damaged (its index is not `indexes/<its id>.<n>`): prune never drops it, and GC
    # does not run past it (exit 3, naming it: test_known_s30repo); nothing is removed
    assert main(["prune", "--repo", str(tmp_path / "repo"), "--keep-last", "1"]) == 3
    err = capsys.readouterr().err
    assert old.id in err and "index name" in err and "Traceback" not in err, err
    assert (tmp_path / "repo" / "config").exists(), "prune deleted the repository's config"
    assert sorted(os.listdir(str(tmp_path / "repo" / "snapshots"))) == sorted([old.id, kept.id])
    assert main(["verify", "--repo", str(tmp_path / "repo")]) == 4
    assert old.id in capsys.readouterr().out


def test_prune_beside_a_running_gc_drops_no_backup(tmp_path, capsys):
    """Another host's GC holds the lock: prune refuses before it removes any backup (it removed the backups it
    dropped, then failed on the lock, exit 1: the admin saw a failed prune that had done half its work)."""
    from hotvcb.repo.gclock import LOCK
    from hotvcb.runid import RunId

    disk = small_disk(tmp_path / "web.raw")
    repo = new_repo(tmp_path / "repo")
    for day in (1, 2):
        backup(repo, "web", disk, when=datetime.datetime(2026, 11, day, 21))
    other = RunId("0123456789ab", "otherbox", 4242, 1, "esxi02").text() + "\n"  # a fresh lock of another host's GC
    assert repo.backend.put_new(LOCK, other.encode("utf-8"))
    assert main(["prune", "--repo", str(tmp_path / "repo"), "--keep-last", "1"]) == 1
    err = capsys.readouterr().err
    assert "another garbage collection of this repository is running" in err and "Traceback" not in err, err
    assert len(open_path(str(tmp_path / "repo")).snapshots("web")) == 2
    repo.backend.delete(LOCK)
    assert len(open_path(str(tmp_path / "repo")).snapshots("web")) == 2
    assert main(["prune", "--repo", str(tmp_path / "repo"), "--keep-last", "1"]) == 0
    assert len(open_path(str(tmp_path / "repo")).snapshots("web")) == 1


def test_one_unreadable_record_warns_each_vm_of_the_repository_but_pages_for_none(tmp_path):
    """One damaged record (another VM's, or this one's newest: it cannot be told whose) made status CRIT
    ("repository ...: bad ...") for every VM of the repository: each VM is judged on what reads, and warned."""
    import time

    from hotvcb.jobs.repo_status import RepoView
    from hotvcb.jobs.status_report import Limits

    disk = small_disk(tmp_path / "web.raw")
    repo = new_repo(tmp_path / "repo")
    now = datetime.datetime.now()
    backup(repo, "web", disk, when=now)
    broken = backup(repo, "db", disk, when=now)
    (tmp_path / "repo" / "snapshots" / broken.id).write_text("{not json")
    check = RepoView(str(tmp_path / "repo")).check("web", "", Limits(), time.time())
    assert check.severity == "WARN" and "1 backup record(s) in the repository do not read" in check.message, check
    assert check.details["newest_good"] and check.details["unreadable_records"] == 1, check
