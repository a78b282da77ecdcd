"""Outsider round s33: the deduplicating repository under adversity (docs/repository.md), tried as a careful
admin would: each kind of repository file damaged in turn, a full or read-only repository, odd repository
paths, prune's rules at their edges, dry runs that must write nothing, and restores of repository backups into
every format, checked with `qemu-img compare`. Each defect is a strict xfail asserting the right behaviour.

Tiny disks (1-5 MiB); one simulated host per test where a host is needed.
"""

import json
import os
import subprocess
import sys

import pytest

from repotool import ROOT, cli, one_clear_line, record_path, two_vms
from simhost import hotvcb, needs_root, snapshot_names, write_conf

from hotvcb.repo.repository import open_path


def tree(path):
    """Every entry under `path` with its size, mtime and mode (and the bytes of each file): what a run that
    'writes nothing' must leave as it was."""
    out = []
    for folder, dirs, files in os.walk(str(path)):
        for name in sorted(dirs) + sorted(files):
            p = os.path.join(folder, name)
            st = os.lstat(p)
            data = b""
            if os.path.isfile(p):
                with open(p, "rb") as f:
                    data = f.read()
            out.append((os.path.relpath(p, str(path)), st.st_size, st.st_mtime_ns, st.st_mode, data))
    return sorted(out)


def leftovers(host, datastore):
    root = host.real("/vmfs/volumes/" + datastore)
    return [e for e in os.listdir(root) if e.startswith(".hotvcb") or e.endswith(".hotvcb-restoring")]


# -- restores of a repository backup into every ESXi format, from a repository path with spaces and umlauts -------

ODD_REPO = "/vmfs/volumes/backup/Sicherung Jürgen's #1/repo"


@needs_root
def test_a_restore_file_restores_a_repository_backup_into_every_format_byte_equal(host, tmp_path):
    """The admin keeps the repository in a folder named `Sicherung Jürgen's #1` (blanks, an umlaut, a quote, a
    `#`), backs a two-disk VM up into it with VM_BACKUP_REPOSITORY=, then restores it four times from one
    vms_to_restore file, one line per ESXi format (1-4), naming the backup as `repo:<path>#latest=web`. Every
    restored disk must hold exactly the guest's data (qemu-img compare) and nothing may be left staged."""
    vmid = host.create_vm("web", "datastore1", [{"size": "3M"}, {"size": "2M", "format": "eagerzeroedthick"},
                                                 {"size": "1M", "datastore": "ds5", "format": "zeroedthick"},
                                                 {"size": 1000 * 1024 + 512}])  # a last chunk shorter than 64 KiB
    os.makedirs(host.real(os.path.dirname(ODD_REPO)))
    conf = write_conf(host, VM_BACKUP_REPOSITORY='"%s"' % ODD_REPO)  # quoted, as sh needs it
    r = hotvcb(host, "backup", "-m", "web", "-g", conf, "-w", tmp_path / "work")
    assert r.returncode == 0, r.stdout + r.stderr
    assert open_path(host.real(ODD_REPO)).snapshots("web"), r.stdout + r.stderr
    sources = [host.real(src) for _node, src, _mode in host.vm_disks(vmid)]
    lines = ["repo:%s#latest=web;datastore1;%d;copy %d" % (ODD_REPO, fmt, fmt) for fmt in (1, 2, 3, 4)]
    restore_file = host.root + "/vms_to_restore"
    with open(restore_file, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    r = hotvcb(host, "restore", "-c", restore_file)
    out = r.stdout + r.stderr
    assert r.returncode == 0 and "Traceback" not in out, out
    for fmt in (1, 2, 3, 4):
        folder = host.real("/vmfs/volumes/datastore1/copy %d" % fmt)
        for src in sources:
            got = os.path.join(folder, os.path.basename(src))
            cmp = subprocess.run(["qemu-img", "compare", "-f", "vmdk", "-F", "vmdk", got, src],
                                 capture_output=True, text=True)
            assert cmp.returncode == 0, (fmt, got, cmp.stdout + cmp.stderr, sorted(os.listdir(folder)))
    assert leftovers(host, "datastore1") == []


@needs_root
@pytest.mark.parametrize("fmt", ["qcow2", "raw"])
def test_an_esxi_backup_in_a_repository_restores_to_kvm_byte_equal(host, tmp_path, fmt):
    """The ESXi host is gone; what is left is the repository on the NAS (here under a path with blanks and an
    umlaut). The admin restores the VM's newest backup as a KVM VM in qcow2 or raw: every disk must hold the
    guest's data (qemu-img compare against the ESXi disk), and nothing may be left staged in the target folder."""
    vmid = host.create_vm("web", "datastore1", [{"size": "3M"}, {"size": "2M"}])
    repo = "/vmfs/volumes/backup/Ablage Müller/repo"
    os.makedirs(host.real(os.path.dirname(repo)))
    conf = write_conf(host)
    r = hotvcb(host, "backup", "-m", "web", "-g", conf, "--repo", repo, "-w", tmp_path / "work")
    assert r.returncode == 0, r.stdout + r.stderr
    sources = [host.real(src) for _node, src, _mode in host.vm_disks(vmid)]
    target = tmp_path / "kvm images"
    target.mkdir()
    r = cli("restore", "--repo", host.real(repo), "--latest", "web", "--kvm", target, "--name", "web-kvm",
            "--format", fmt, timeout=180)
    out = r.stdout + r.stderr
    assert r.returncode == 0 and "Traceback" not in out, out
    folder = target / "web-kvm"
    images = sorted(e for e in os.listdir(str(folder)) if e.endswith("." + fmt))
    assert len(images) == 2, (sorted(os.listdir(str(folder))), out)
    for img, src in zip(images, sources):
        cmp = subprocess.run(["qemu-img", "compare", "-f", fmt, "-F", "vmdk", str(folder / img), src],
                             capture_output=True, text=True)
        assert cmp.returncode == 0, (img, src, cmp.stdout + cmp.stderr, out)
    assert sorted(os.listdir(str(target))) == ["web-kvm"], sorted(os.listdir(str(target)))


# -- a read-only repository ------------------------------------------------------------------------------------------

@needs_root
def test_a_backup_into_a_read_only_repository_fails_naming_it_and_leaves_no_snapshot(host, tmp_path, tmpfs):
    """The NAS export holding the repository went read-only (a replica mounted ro, a share remounted ro after an
    error). The nightly backup must fail the VM naming the repository and the reason, leave no snapshot on the
    VM, exit non-zero, and leave the repository as it was; once writable again the next backup succeeds."""
    vmid = host.create_vm("web", "datastore1", [{"size": "2M"}])
    where = tmpfs("ro", "16m")
    repo = str(where / "repo")
    conf = write_conf(host, VM_BACKUP_REPOSITORY=repo)
    r = hotvcb(host, "backup", "-m", "web", "-g", conf, "-w", tmp_path / "work")
    assert r.returncode == 0, r.stdout + r.stderr
    subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)
    before = tree(repo)
    r = hotvcb(host, "backup", "-m", "web", "-g", conf, "-w", tmp_path / "work")
    out = r.stdout + r.stderr
    assert r.returncode == 6 and "Traceback" not in out and "internal error" not in out, out
    assert "Read-only file system" in out and repo in out, out
    assert snapshot_names(host, vmid) == [], out
    assert tree(repo) == before
    subprocess.run(["mount", "-o", "remount,rw", str(where)], check=True)
    r = hotvcb(host, "backup", "-m", "web", "-g", conf, "-w", tmp_path / "work")
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(open_path(repo).snapshots("web")) == 2


# -- prune: its dry run must foresee what the real run does ----------------------------------------------------------

@pytest.mark.parametrize("damage", ["kept-index", "mark", "damaged-object"])
def test_prune_dry_run_foresees_the_real_prunes_refusal(tmp_path, damage):
    """The admin always runs `prune --dry-run` first. Something in the repository makes the real prune refuse
    before it removes anything (exit 1): web's newest backup's disk index has rotted (a byte flipped: verify
    says DAMAGED), or a GC mark `condemned/…` or a `damaged/…` object was truncated. The dry run lists `remove web
    @ <older>` and `dry run: nothing removed`, exit 0, not a word of it; the real prune with the same rules then
    refuses. docs/repository.md: prune reads what its GC needs (every record, the kept backups' indexes, pack
    tables, marks) before it removes anything, and a dry run exists to say beforehand what the run will do. It
    should refuse alike (or at least warn), naming the object, instead of promising a removal that will not
    happen."""
    repo_path = tmp_path / "repo"
    repo, old, new, _db = two_vms(tmp_path)
    if damage == "kept-index":
        name = "indexes/%s.0" % new.id
        data = bytearray((repo_path / name).read_bytes())
        data[60] ^= 1
        os.chmod(str(repo_path / name), 0o644)
        (repo_path / name).write_bytes(bytes(data))
    else:
        pack = repo.chunk_map()[repo.disk_index(new.disks[0]).entries[0][1]].pack
        name = {"mark": "condemned/1000-deadbeef",
                "damaged-object": "damaged/%s.0123456789abcdef" % pack.rsplit("/", 1)[1]}[damage]
        (repo_path / name).parent.mkdir(exist_ok=True)
        (repo_path / name).write_text("{")
    before = tree(repo_path)
    dry = cli("prune", "--repo", repo_path, "--keep-last", "1", "--dry-run")
    assert tree(repo_path) == before
    real = cli("prune", "--repo", repo_path, "--keep-last", "1")
    assert real.returncode == 1 and name in real.stderr, real.stdout + real.stderr
    assert os.path.exists(record_path(repo_path, old))  # the real prune removed nothing
    dry_out = dry.stdout + dry.stderr
    assert name in dry_out, dry_out
    assert dry.returncode == real.returncode, dry_out


# -- damage in the repository's config -------------------------------------------------------------------------------

@pytest.mark.parametrize("key", ["chunk_size", "pack_size"])
def test_an_infinite_chunk_or_pack_size_in_the_config_is_refused_in_one_line_naming_config(tmp_path, key):
    """A hand edit (or a bit flip turning `65536` into `6e536`) leaves `"chunk_size": 1e999` (JSON's infinity)
    in the repository's config. docs/repository.md: garbage in the config makes every command refuse the
    repository in one line naming `config`. `list`, `verify`, `prune` and `restore` all die with `hotvcb:
    internal error: OverflowError: cannot convert float infinity to integer` instead — the same edit with 0, -1,
    NaN, a string or a list is refused properly as `config: damaged (...)`. (repo/repository.py `open` turns
    ValueError/TypeError/KeyError from int() into a RepoError, not OverflowError.)"""
    repo_path = tmp_path / "repo"
    _repo, _old, new, _db = two_vms(tmp_path)
    cfg = repo_path / "config"
    text = cfg.read_text()
    old_value = str(json.loads(text)[key])
    os.chmod(str(cfg), 0o644)
    cfg.write_text(text.replace('"%s": %s' % (key, old_value), '"%s": 1e999' % key))
    assert "1e999" in cfg.read_text()
    for args in (("list", "--repo", repo_path), ("verify", "--repo", repo_path),
                 ("prune", "--repo", repo_path, "--keep-last", "1"),
                 ("restore", "--repo", repo_path, new.id, "--to", tmp_path / "out")):
        r = cli(*args)
        assert r.returncode == 1, (args[0], r.stdout + r.stderr)
        one_clear_line(r)
        assert "config" in r.stderr, (args[0], r.stderr)
    assert not os.path.exists(str(tmp_path / "out"))


# -- damage in a damaged/ object or a GC mark: what stops every backup must not pass verify ----------------------------

@pytest.mark.parametrize("folder", ["damaged", "condemned"])
def test_verify_names_an_unreadable_object_that_stops_every_backup_and_prune(tmp_path, folder):
    """A `damaged/<pack>.<tag>` object (or a GC mark `condemned/<time>-<random>`) was truncated: a copy of the
    repository made with a tool that stopped half-way, a disk error. From then on every backup into the
    repository fails (docs/repository.md: such an object "makes the backup fail: it cannot tell what is sound"; a
    mark that does not read "stops GC (and backups ...) with one line naming it"), and so does every prune. The
    admin, seeing the nightly failures, runs `hotvcb verify --repo` — the command that checks the repository —
    and it answers `... read (all): OK`, exit 0, never reading damaged/ or condemned/ at all. verify must name
    the object that does not read (and not exit 0), so the admin learns what stops the backups."""
    repo_path = tmp_path / "repo"
    repo, _old, new, _db = two_vms(tmp_path)
    pack = repo.chunk_map()[repo.disk_index(new.disks[0]).entries[0][1]].pack
    if folder == "damaged":
        name = "damaged/%s.0123456789abcdef" % pack.rsplit("/", 1)[1]
        text = '{"format": "hotvcb-damaged", "vers'
    else:
        name = "condemned/1000-deadbeef"
        text = '{"format": "hotvcb-condemned", "vers'
    os.makedirs(str(repo_path / folder), exist_ok=True)
    (repo_path / name).write_text(text)
    r = cli("prune", "--repo", repo_path, "--keep-last", "1")
    assert r.returncode == 1 and name in r.stderr, r.stdout + r.stderr  # documented: it cannot tell what is sound
    w = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "repotool.py"), "backup", str(repo_path), "web",
                        str(tmp_path / "web.raw")], capture_output=True, text=True, cwd=ROOT)
    assert w.returncode != 0 and name in w.stderr, w.stdout + w.stderr  # the backup fails on it, as documented
    r = cli("verify", "--repo", repo_path)
    out = r.stdout + r.stderr
    assert "Traceback" not in out and "internal error" not in out, out
    assert name in out, out
    assert r.returncode != 0, out


@needs_root
def test_a_dry_run_backup_into_a_repository_writes_nothing_there(host, tmp_path):
    """`-d dryrun` into an existing repository and into a repository yet to be made: nothing may be written
    (no config, no tmp/ probe, no last-run record, not even a changed mtime), and the VM keeps no snapshot."""
    vmid = host.create_vm("web", "datastore1", [{"size": "2M"}])
    repo = "/vmfs/volumes/backup/repo"
    conf = write_conf(host)
    r = hotvcb(host, "backup", "-m", "web", "-g", conf, "--repo", repo, "-w", tmp_path / "work")
    assert r.returncode == 0, r.stdout + r.stderr
    before = tree(host.real("/vmfs/volumes/backup"))
    for target in (repo, "/vmfs/volumes/backup/new repo"):
        r = hotvcb(host, "backup", "-m", "web", "-g", conf, "--repo", target, "-d", "dryrun", "-w", tmp_path / "w2")
        out = r.stdout + r.stderr
        assert r.returncode == 0 and "Traceback" not in out, out
        assert tree(host.real("/vmfs/volumes/backup")) == before, (target, out)
    assert snapshot_names(host, vmid) == []


# -- two writers making a new repository at once ---------------------------------------------------------------------

def test_a_second_writer_making_the_same_new_repository_at_the_same_moment_uses_it(tmp_path, monkeypatch):
    """First night of a new repository shared by two ESXi hosts over NFS (or one host with BACKUP_PARALLEL=2):
    two backups start at 02:00 and both find no `config`. jobs/repo_backup.open_repository means to cope ("another
    host (a shared volume) was first": it opens the repository the other made), but its look for `config` and its
    `_check_new` look at the folder's entries are two looks: when the other writer's `config` lands between them,
    the folder holds `config` and `tmp/`, and the backup fails "VM_BACKUP_REPOSITORY ...: a folder that holds
    something other than a repository" — refusing the very repository it was about to use. Three processes
    calling open_repository on one new folder at once hit it 3 times in 150 tries here; this test puts the other
    writer's init exactly in that window. The backup should simply use the repository the other writer made."""
    from hotvcb.jobs import repo_backup
    from hotvcb.repo.backend import LocalBackend
    from hotvcb.repo.repository import Repository

    path = str(tmp_path / "repo")
    os.makedirs(path)  # the empty folder the admin made for the new repository
    real_os = repo_backup.os

    class OtherWriterFirst:
        """os, but the other host's init of the repository completes right before our look at the folder."""
        def __getattr__(self, name):
            return getattr(real_os, name)

        @staticmethod
        def listdir(where):
            if where.rstrip("/") == path and not real_os.path.exists(real_os.path.join(path, "config")):
                Repository.init(LocalBackend(path))
            return real_os.listdir(where)

    monkeypatch.setattr(repo_backup, "os", OtherWriterFirst())
    repo = repo_backup.open_repository(path)
    assert repo.config.id == Repository.open(LocalBackend(path)).config.id


@needs_root
def test_a_repository_restore_to_kvm_does_not_report_its_own_staging_as_another_running_restore(host, tmp_path):
    """The admin restores a VM from the repository as a KVM VM, alone on the machine. Every such restore logs
    `<DIR>/.hotvcb-extract-<pid>-...: scratch folder of a running restore (run ... (pid <its own pid> ...));
    leaving it`: the sweep of leftovers (restore_kvm.py, run after repo_restore staged the backup in <DIR>) finds the
    restore's own staging folder and reports it as a running restore's. An admin reading the log looks for the
    other restore that is writing into the folder (and `hotvcb cleanup --kvm` says nothing is there). The restore
    ESXi-side (`--datastore`) does not say it; a restore's own scratch folder is no finding of the sweep."""
    host.create_vm("web", "datastore1", [{"size": "2M"}])
    conf = write_conf(host)
    r = hotvcb(host, "backup", "-m", "web", "-g", conf, "--repo", "/vmfs/volumes/backup/repo", "-w", tmp_path / "w")
    assert r.returncode == 0, r.stdout + r.stderr
    target = tmp_path / "kvm"
    target.mkdir()
    r = cli("restore", "--repo", host.real("/vmfs/volumes/backup/repo"), "--latest", "web", "--kvm", target,
            "--name", "web-kvm", timeout=180)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "of a running restore" not in out, out


# -- a snapshot record whose `utc` is no number of seconds -----------------------------------------------------------

@pytest.mark.parametrize("utc", ["NaN", "-Infinity"])
def test_a_record_whose_utc_is_not_a_finite_number_is_damaged_not_ordered_first(tmp_path, utc):
    """web's newest record holds `"utc": NaN` (or `-Infinity`): not JSON at all (RFC 8259 has neither), nothing
    hotvcb writes — a faulty writer or a hand edit. docs/repository.md: backups are listed and pruned in `utc`
    order, and a record with a field of the wrong kind is damaged (verify: DAMAGED, exit 4; list/restore/prune
    leave it out). Instead verify says OK, `list` shows it, `restore --latest web` silently picks the OLDER
    backup, and `prune --keep-last 1 -m web` keeps the older one and removes the newest — the NaN compares as
    neither newer nor older. The record should be named damaged and never drive retention."""
    repo_path = tmp_path / "repo"
    _repo, old, new, _db = two_vms(tmp_path)
    path = record_path(repo_path, new)
    with open(path) as f:
        text = f.read()
    record = json.loads(text)
    record["utc"] = float(utc.replace("Infinity", "inf").replace("NaN", "nan"))
    os.chmod(path, 0o644)
    with open(path, "w") as f:
        f.write(json.dumps(record))
    assert utc in open(path).read()
    r = cli("prune", "--repo", repo_path, "--keep-last", "1", "-m", "web", "--dry-run")
    assert ("remove   web @ 2026-12-01 21:00:00 (%s)" % new.id) not in r.stdout, r.stdout + r.stderr
    r = cli("verify", "--repo", repo_path)
    assert r.returncode == 4 and "snapshots/%s" % new.id in r.stdout, r.stdout + r.stderr


def test_an_unreadable_damaged_object_of_a_pack_long_gone_is_collected_not_fatal_for_ever(tmp_path):
    """docs/repository.md, Damaged chunks: "A pack deleted before its damaged/ object only leaves an object naming
    no pack, which nothing acts on and GC deletes (once older than the grace period)". Here such an object (its
    name names a pack no listing has; two days old) also lost its content (truncated to `{`). Nothing can be
    unsound about a pack that is not there, yet `prune` stops on it ("damaged/…: damaged (Expecting property
    name …)", exit 1) before GC could delete it, every night, and every backup into the repository fails on it
    too; verify says OK, and no message tells the admin what to do with the file. GC should delete it like the
    readable one (its name alone says its pack is gone)."""
    repo_path = tmp_path / "repo"
    two_vms(tmp_path)
    os.makedirs(str(repo_path / "damaged"))
    obj = repo_path / "damaged" / ("a" * 64 + ".0123456789abcdef")
    obj.write_text("{")
    old = obj.stat().st_mtime - 2 * 86400
    os.utime(str(obj), (old, old))
    r = cli("prune", "--repo", repo_path, "--keep-last", "5")
    out = r.stdout + r.stderr
    assert r.returncode == 0 and "Traceback" not in out, out
    assert not obj.exists(), out


# -- a NAS client's own files inside the repository ------------------------------------------------------------------

@pytest.mark.parametrize("folder", ["damaged", "condemned", "snapshots", "packs"])
def test_a_mac_finders_ds_store_in_a_repository_folder_stops_nothing(tmp_path, folder):
    """The repository lives on a NAS share; a colleague opened its folders in the Mac Finder, which leaves a
    `.DS_Store` in each folder it showed. That name is no object of the repository: hotvcb names records
    `<YYYYmmddTHHMMSSZ>-<8 hex>`, packs by 64 hex under packs/<2 hex>/, damaged/ objects `<64 hex>.<16 hex>`, marks
    `<time>-<random>`. Yet with it in damaged/ or condemned/ every backup into the repository fails ("damaged/
    .DS_Store: damaged (Expecting value …)") and so does every prune, while verify says OK; in snapshots/ it is a
    "damaged record" and garbage collection never runs again (prune exit 3); in packs/ verify reports DAMAGED, "it
    may hold chunks of any backup". A file that no hotvcb could have written under that name should be left
    alone (at most named in a warning), never stop backups, prune or GC, nor be called damage."""
    repo_path = tmp_path / "repo"
    repo, _old, _new, _db = two_vms(tmp_path)
    stray = repo_path / folder / ".DS_Store"
    stray.parent.mkdir(exist_ok=True)
    stray.write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(100))
    old = stray.stat().st_mtime - 2 * 86400
    os.utime(str(stray), (old, old))
    w = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "repotool.py"), "backup", str(repo_path), "web",
                        str(tmp_path / "web.raw")], capture_output=True, text=True, cwd=ROOT)
    assert w.returncode == 0, w.stdout + w.stderr
    r = cli("prune", "--repo", repo_path, "--keep-last", "1")
    assert r.returncode == 0 and "garbage collection:" in r.stdout, r.stdout + r.stderr
    r = cli("verify", "--repo", repo_path)
    assert r.returncode == 0 and "DAMAGED" not in r.stdout, r.stdout + r.stderr
