"""Outside tester, s37: what "a good backup" means to verify, list, restore (--kvm, ESXi) and verify --boot.

I did not write hotvcb. s37 changed `hotvcb verify` (every final-named backup judged by health's verdict, skipped
ones not counted as checked, paths read normalised, a VM's folder given as a path refused, a STATUS.ok that is no
regular file sealing nothing) and had `restore --kvm` / `verify --boot` of a copy outside its VM's folder take
health's verdict. I built tiny sealed backups directly as folders (a 1 MiB qcow2, the bare-QEMU description, the
manifest, STATUS.ok) and one real backup on esxisim, then tried to make the commands disagree: STATUS.ok as a
directory, FIFO, dangling symlink, symlink to a file, empty, 100 KB, beside STATUS.error/STATUS.warn, none; in place
and as a copy elsewhere; .gz in place and copied elsewhere (backup-named or not), a STATUS.ok member that is a
directory, FIFO or symlink; a .gz beside its unpacked folder; paths spelled `VOL//VM/B`, `B/.`, `x/../B`, through a
symlinked volume, relative, with trailing slashes; names with spaces, quotes and umlauts; `--json` against the text.
Most agree (pinned below as controls). Defects:

- DEFECT 1: the VM's folder given as a *relative* path (`cd VOL; hotvcb verify web/`, tab completion's spelling) is
  not refused as the absolute one is: verified as one backup, INCOMPLETE, "1 backup(s) checked", exit 6.
- DEFECT 2: the ESXi restore of a copy outside its VM's folder takes it on a STATUS.ok glance: a STATUS.ok that is a
  directory, or one beside STATUS.error, restores (dry run OK) while verify, list and restore --kvm refuse it.
- DEFECT 3: `verify --boot` of a copy outside its VM's folder that lost its STATUS.ok (manifest there, a disk cut
  short) boots it, as if it were a folder `restore --kvm` wrote; verify and restore --kvm call it incomplete.
- DEFECT 4: the backup volume itself given as a path (`verify /backup`) is verified as one INCOMPLETE backup,
  "1 backup(s) checked, 1 damaged or incomplete", exit 6, not refused as a VM's folder now is.
- DEFECT 5: a .gz with its unpacked folder beside it as a symlink to the copy kept elsewhere, one good backup to
  `list` and `restore --latest`, is two to `verify VM`: "2 backup(s) checked, 1 damaged or incomplete", exit 4.
"""

import json
import os
import shutil
import tarfile

import pytest

import sealedbuild
from sealedbuild import VM, hotvcb, stamp
from simhost import VOLUME, hotvcb as host_hotvcb, make_host, needs_root, write_conf


def sealed(volume, when: str = "", vm: str = VM) -> str:
    """sealedbuild's restorable backup (a real qcow2 image): these tests restore and boot it."""
    return sealedbuild.sealed(volume, when, vm, restorable=True)


def kvm_dryrun(tmp_path, path, *extra):
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    return hotvcb(tmp_path, "restore", "--kvm", out, "-d", "dryrun", path, *extra)


# -- defects ------------------------------------------------------------------------------------------------------
def test_the_vms_folder_given_as_a_relative_path_is_refused_as_the_absolute_one_is(tmp_path):
    """The admin stands in the backup volume (`cd /backup`) and types `hotvcb verify web/` (tab completion adds the
    slash; `./web` alike). The same folder given absolutely is refused, exit 1: "... is the folder of web's
    backups, not a backup: `hotvcb verify web --volume ...` checks each of them". Given relatively it is
    verified as one backup: "INCOMPLETE: not sealed ...", "1 backup(s) checked, 1 damaged or incomplete", exit 6,
    for a VM whose only backup is good: a page for nothing, and a count that lies. docs/backup-format.md: "A
    relative path is the working folder's, read as its absolute path". Cause: commands/verify_cmd.py:
    _refuse_vm_folder splits the relative path `web` into volume "" and takes "/" for the volume."""
    sealed(tmp_path / "vol")
    vol = tmp_path / "vol"
    absolute = hotvcb(tmp_path, "verify", str(vol / VM) + "/")
    assert absolute.returncode == 1 and "folder of web's backups" in absolute.out, absolute.out  # the control
    for spelling in ("web/", "./web", "web/."):
        r = hotvcb(tmp_path, "verify", spelling, cwd=vol)
        assert r.returncode == 1 and "folder of web's backups" in r.out, (spelling, r.out)
        assert "backup(s) checked" not in r.out, (spelling, r.out)


def test_the_backup_volume_given_as_a_path_is_a_usage_error_not_one_incomplete_backup(tmp_path):
    """The admin wants every backup checked and types `hotvcb verify /backup` (the volume, as they type
    `ls /backup`). hotvcb verifies the volume as one backup folder: "INCOMPLETE: not sealed ...", "1 backup(s)
    checked, 1 damaged or incomplete", exit 6, where every backup under it is good: the same lie s37 fixed for a
    VM's folder ("verified as one backup it was INCOMPLETE ..., exit 6, for a VM whose backups may all be good",
    commands/verify_cmd.py:_refuse_vm_folder). verify's exit codes: "1 usage (a path that is no backup, or a VM's
    folder of backups ...)". Should: exit 1 naming `hotvcb verify --all`. Cause: _refuse_vm_folder looks for the
    path as a VM's folder only, never as a volume holding VM folders."""
    sealed(tmp_path / "vol")
    r = hotvcb(tmp_path, "verify", "--all")
    assert r.returncode == 0 and "1 backup(s) checked, 0 damaged" in r.out, r.out  # the control
    r = hotvcb(tmp_path, "verify", str(tmp_path / "vol") + "/")
    assert r.returncode == 1 and "--all" in r.out and "backup(s) checked" not in r.out, r.out


def test_verify_boot_refuses_a_copy_that_lost_its_status_file_as_restore_kvm_does(tmp_path):
    """Before an upgrade the admin copies last night's backup out of the rotation's reach (`cp -a` cut short: the
    disk half copied, STATUS.ok never written) and smoke-boots the copy: `hotvcb verify --boot /keep/web-copy`.
    `verify` of the copy says INCOMPLETE (exit 6), `restore --kvm` refuses it ("is not a good backup (not
    sealed ...)"). `verify --boot` boots it ("Booting web (qemu backup, 1 disk(s) ...)"): it takes a folder with no
    STATUS file for one `restore --kvm` wrote, though this one holds hotvcb.json, which only a backup has; with a
    guest whose cut part is not read at boot it says PASS. docs/restore.md section 6: "Only a good backup is
    booted". Should: refused before QEMU, exit 1, as restore --kvm refuses it. Cause: jobs/boot_check.smoke_boot
    asks require_good only where jobs/backup_check.is_backup sees a STATUS file (or a backup's name)."""
    folder = sealed(tmp_path / "vol")
    copy = tmp_path / "keep" / "web-copy"
    shutil.copytree(folder, str(copy))
    os.remove(str(copy / "STATUS.ok"))
    os.truncate(str(copy / "vda.qcow2"), os.path.getsize(str(copy / "vda.qcow2")) // 2)
    v = hotvcb(tmp_path, "verify", copy)
    assert v.returncode == 6 and "INCOMPLETE" in v.out, v.out  # the controls
    k = kvm_dryrun(tmp_path, copy, "--no-verify")
    assert k.returncode != 0 and "not a good backup" in k.out, k.out
    b = hotvcb(tmp_path, "verify", "--boot", copy, "--boot-timeout", "1")
    assert b.returncode == 1 and "not a good backup" in b.out, b.out
    assert "Booting web (" not in b.out, b.out


def test_verify_vm_counts_a_gz_and_its_unpacked_folder_as_the_one_good_backup_list_shows(tmp_path):
    """ghettoVCB-restore unpacked last night's `web-<time>.gz` and the admin moved the unpacked folder to other
    storage, leaving a symlink `web-<time>` -> it beside the .gz. docs/backup-format.md: "A `<name>.gz` with a
    folder `<name>` beside it ... is one backup: counted once, good if either is ... a folder that is a symlink to
    an unpacked copy kept elsewhere is unlinked, not entered". `list` shows one backup, "good (gz+unpacked)", and
    `restore --kvm --latest` takes it. `hotvcb verify web` checks two: the link "INCOMPLETE: a symlink to ...,
    not a backup on this volume", the .gz OK, "2 backup(s) checked, 1 damaged or incomplete", exit 4: the nightly
    monitor pages for a VM whose one backup is good (with a real folder beside the .gz it says "2 backup(s)
    checked" for the one backup). Should: the pair is one backup to verify as to list, exit 0. Cause:
    commands/verify_cmd.py:targets takes every entry layout.list_backups gives, where list pairs them."""
    folder = sealed(tmp_path / "vol")
    with tarfile.open(folder + ".gz", "w:gz") as t:
        t.add(folder, arcname=os.path.basename(folder))
    kept = str(tmp_path / "elsewhere" / os.path.basename(folder))
    shutil.move(folder, kept)
    os.symlink(kept, folder)
    r = hotvcb(tmp_path, "list", "--json", VM)
    (item,) = json.loads(r.stdout)["backups"]
    assert item["good"] and item.get("unpacked") == folder, item  # the control
    v = hotvcb(tmp_path, "verify", VM)
    assert v.returncode == 0 and "INCOMPLETE" not in v.out and "0 damaged or incomplete" in v.out, v.out


@pytest.fixture(scope="module")
def esxi(tmp_path_factory):
    """A simulated ESXi host with VM `web` (1 MiB disk) backed up once: (host, the backup's path on the host)."""
    host = make_host(tmp_path_factory.mktemp("s37verify") / "host")
    try:
        host.create_vm(VM, "datastore1", [{"size": "1M"}], power="off")
        r = host_hotvcb(host, "backup", "-m", VM, "-g", write_conf(host))
        assert r.returncode == 0, r.stdout + r.stderr
        (name,) = os.listdir(host.real(VOLUME + "/" + VM))
        yield host, "%s/%s/%s" % (VOLUME, VM, name)
    finally:
        host.stop()


@needs_root
@pytest.mark.parametrize("kind", ["status-ok-a-directory", "status-error-beside-it"])
def test_esxi_restore_of_a_copy_elsewhere_refuses_what_verify_and_restore_kvm_refuse(esxi, tmp_path, kind):
    """The admin keeps a copy of a backup outside the rotation's reach (/vmfs/volumes/backup/keep-…) and restores
    it with `hotvcb restore COPY --datastore datastore1 --name … -d dryrun`. The copy's STATUS.ok is a directory
    (no run writes one; docs/backup-format.md: "a `STATUS.ok` that is no regular file (a directory, FIFO or
    symlink of that name, which no run writes) seals nothing: `incomplete`"), or the copy holds STATUS.error
    beside its STATUS.ok ("a stray `STATUS.ok` never outvotes `STATUS.error`"). `verify COPY` calls the first
    INCOMPLETE (exit 6) and skips the second as failed; `restore --kvm` refuses both. The ESXi restore's dry run
    says "every check passed" for both, and the real run would restore them. docs/restore.md: "A backup folder
    given by its path outside its VM's folder ... is checked as one in place is". Cause:
    jobs/restore_source.check_sealed: where _as_recorded gives no verdict (folder_status not ok/warn) it looks
    for a STATUS.ok by `exists` and takes it as sealed, before the STATUS.error or its file type counts."""
    host, backup = esxi
    copy = "/vmfs/volumes/backup/keep-%s" % kind
    shutil.copytree(host.real(backup), host.real(copy))
    if kind == "status-ok-a-directory":
        os.remove(host.real(copy + "/STATUS.ok"))
        os.mkdir(host.real(copy + "/STATUS.ok"))
    else:
        with open(host.real(copy + "/STATUS.error"), "w") as f:
            f.write("a disk failed\n")
    v = host_hotvcb(host, "verify", copy)
    if kind == "status-ok-a-directory":  # the controls: verify's verdict on the same copy
        assert v.returncode == 6 and "INCOMPLETE" in v.stdout, v.stdout
    else:
        assert v.returncode == 0 and "SKIPPED: failed backup" in v.stdout and "0 backup(s) checked" in v.stdout, \
            v.stdout
    r = host_hotvcb(host, "restore", copy, "--datastore", "datastore1", "--name", "r " + kind, "-d", "dryrun")
    said = r.stdout + r.stderr
    assert r.returncode != 0 and "not a good backup" in said, said
    assert "every check passed" not in said, said


# -- what works (controls worth keeping) --------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["fifo", "symlink-to-file"])
def test_a_copy_whose_status_ok_is_no_regular_file_is_refused_by_verify_restore_kvm_and_boot(tmp_path, kind):
    """A copy elsewhere whose STATUS.ok is a FIFO or a symlink to a regular file seals nothing (a dangling symlink,
    a directory too: tried, not kept): verify INCOMPLETE (exit 6, nothing blocks), restore --kvm --no-verify and
    verify --boot refuse it before anything is read or booted; the same mutation in place is not good to `list`."""
    folder = sealed(tmp_path / "vol")
    copy = tmp_path / "keep" / "c"
    shutil.copytree(folder, str(copy))
    for where in (folder, str(copy)):
        os.remove(os.path.join(where, "STATUS.ok"))
        target = os.path.join(where, "STATUS.ok")
        if kind == "fifo":
            os.mkfifo(target)
        else:
            real = str(tmp_path / "ok-file")
            if kind == "symlink-to-file":
                with open(real, "w") as f:
                    f.write("ok\n")
            os.symlink(real if kind == "symlink-to-file" else str(tmp_path / "nothing"), target)
    r = hotvcb(tmp_path, "list", "--json", VM)
    (item,) = json.loads(r.stdout)["backups"]
    assert not item["good"] and "regular file" in item["reason"], item
    v = hotvcb(tmp_path, "verify", copy)
    assert v.returncode == 6 and "INCOMPLETE" in v.out and "1 backup(s) checked, 1 damaged" in v.out, v.out
    k = kvm_dryrun(tmp_path, copy, "--no-verify")
    assert k.returncode != 0 and "not a good backup" in k.out, k.out
    b = hotvcb(tmp_path, "verify", "--boot", copy, "--boot-timeout", "1")
    assert b.returncode == 1 and "not a good backup" in b.out and "Booting web (" not in b.out, b.out


def test_odd_spellings_of_a_partial_backup_and_a_symlinked_volume_agree(tmp_path):
    """A `-partial` backup holding a complete STATUS.ok and manifest (a run killed between sealing and the
    rename) reached through a symlinked volume, with `//`, `/.`, `x/..` and a trailing slash, or relative: verify
    says INCOMPLETE (exit 6) and restore --kvm refuses it, every spelling; the good backup beside it through the
    same symlinked volume is OK."""
    good = sealed(tmp_path / "vol", stamp(30))
    partial = sealed(tmp_path / "vol", stamp(2))
    os.rename(partial, partial + "-partial")
    partial += "-partial"
    os.symlink(str(tmp_path / "vol"), str(tmp_path / "link"))
    name, gname = os.path.basename(partial), os.path.basename(good)
    linked = str(tmp_path / "link")
    for spelling in (linked + "//web/" + name, linked + "/web/" + name + "/.",
                     linked + "/web/" + gname + "/../" + name + "/", "vol/web/" + name):
        v = hotvcb(tmp_path, "verify", spelling)
        assert v.returncode == 6 and "INCOMPLETE" in v.out and "OK" not in v.out, (spelling, v.out)
    k = kvm_dryrun(tmp_path, linked + "//web/" + name + "/.")
    assert k.returncode != 0 and "not a good backup" in k.out, k.out
    v = hotvcb(tmp_path, "verify", linked + "/web/" + gname + "/")
    assert v.returncode == 0 and "OK" in v.out and "1 backup(s) checked, 0 damaged" in v.out, v.out


def test_verify_vm_text_json_and_exit_code_agree_on_a_mixed_vm(tmp_path):
    """VM `wé b"q'` with a good backup, a damaged one, a failed one (STATUS.error) and a -partial one: text and
    --json name the same results, the failed and -partial ones are skipped (not counted), "2 backup(s) checked, 1
    damaged", exit 4 in both; then a .gz copied out of the volume (backup-named) verifies OK and restores."""
    vm = "wé b\"q'"
    vol = tmp_path / "vol"
    good = sealed(vol, stamp(50), vm)
    bad = sealed(vol, stamp(40), vm)
    with open(os.path.join(bad, "vda.qcow2"), "r+b") as f:
        f.seek(200)
        f.write(b"X")
    failed = sealed(vol, stamp(30), vm)
    with open(os.path.join(failed, "STATUS.error"), "w") as f:
        f.write("a disk failed\n")
    partial = sealed(vol, stamp(20), vm)
    os.rename(partial, partial + "-partial")
    text = hotvcb(tmp_path, "verify", vm)
    data = hotvcb(tmp_path, "verify", "--json", vm)
    assert text.returncode == data.returncode == 4, (text.out, data.out)
    assert "2 backup(s) checked, 1 damaged or incomplete" in text.out, text.out
    doc = json.loads(data.stdout)
    by_path = {r["path"]: r["status"] for r in doc["results"]}
    assert by_path[good] == "ok" and by_path[bad] == "damaged" and by_path[failed] == "skipped", by_path
    assert any(s.startswith(partial + "-partial") for s in doc["skipped"]), doc["skipped"]
    for path, status in by_path.items():
        assert path in text.out and status.upper() in text.out, (path, status, text.out)
    gz = str(tmp_path / "keep" / os.path.basename(good)) + ".gz"
    os.makedirs(os.path.dirname(gz))
    with tarfile.open(gz, "w:gz") as t:
        t.add(good, arcname=os.path.basename(good))
    v = hotvcb(tmp_path, "verify", gz)
    assert v.returncode == 0 and "OK" in v.out and "1 backup(s) checked, 0 damaged" in v.out, v.out
    k = kvm_dryrun(tmp_path, gz)
    assert k.returncode == 0 and "every check passed" in k.out, k.out
