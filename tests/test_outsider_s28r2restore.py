"""Outside tester, session 28 round 2: the restore behaviour changed today, tried as an admin would.

--power-on beside a running original (the twin left off, exit 3), a .vmx read in the charset its
`.encoding` declares, copies under new names, ghettoVCB folders with a descriptor or flat missing or cut
short, repository restores (--to, --datastore, --kvm), room near the limit, dry runs against real runs.
"""

import os
import shutil
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from simhost import REPO, VOLUME, hotvcb, needs_root, next_second, power, write_conf  # noqa: E402
from test_outsider_s28restore import backed_up, in_host, out, repo_backed_up, vmids, vmx_keys  # noqa: E402

pytestmark = [needs_root, pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")]


def ghetto_backup_with_encoding(host, vm, declared):
    """A ghettoVCB-style backup (no manifest) of `vm` whose .vmx declares `.encoding = declared`."""
    _conf, bk = backed_up(host, vm, [{"size": "2M"}], power_state="off")
    real = host.real(bk)
    os.unlink(os.path.join(real, "hotvcb.json"))
    vmx = os.path.join(real, vm + ".vmx")
    with open(vmx, encoding="utf-8") as f:
        lines = [l for l in f.read().splitlines() if not l.startswith(".encoding")]
    with open(vmx, "w", encoding="utf-8") as f:
        f.write("\n".join(['.encoding = "%s"' % declared] + lines) + "\n")
    return bk


@pytest.mark.parametrize("declared,kvm", [("rot13", False), ("base64", False), ("rot13", True)])
def test_a_vmx_declaring_a_non_text_codec_is_no_internal_error(host, tmp_path, declared, kvm):
    """The admin restores an old ghettoVCB backup whose .vmx someone hand-edited years ago: its
    `.encoding` line says "rot13" (or "base64"), a value VMware does not know. hotvcb's charset step
    (vmx.in_declared_charset) finds Python's codec of that name, which is no text encoding, and the run
    dies: "hotvcb: internal error: LookupError: 'rot-13' is not a text encoding", exit 1, no final status.
    A charset hotvcb cannot read text in must be treated like an unknown one (docs/restore.md: the text
    as read, written back as UTF-8) or refused with a clear error, never an internal error."""
    bk = ghetto_backup_with_encoding(host, "Alt", declared)
    if kvm:  # restore --kvm reads the .vmx the same way
        (tmp_path / "kvm").mkdir()
        r = hotvcb(host, "restore", bk, "--kvm", str(tmp_path / "kvm"), "--name", "neu")
    else:
        r = hotvcb(host, "restore", bk, "--datastore", "ds5", "--name", "Neu")
    assert "internal error" not in out(r), out(r)
    assert "Final status" in out(r), out(r)


def test_a_vmx_falsely_declaring_utf16_is_not_restored_as_garbage(host):
    """A .vmx says `.encoding = "UTF-16"` but is plain ASCII/UTF-8 bytes (a template tool wrote the wrong
    value; VMware never writes a .vmx in UTF-16: the key itself must be read as ASCII to be found at all).
    hotvcb re-decodes the whole file as UTF-16 with replacement characters, writes that as the restored
    .vmx (every pair of bytes one CJK character: no displayName, no disks, no nvram), registers it and
    ends "All VMs restored OK!", exit 0. The admin gets a VM whose configuration is garbage. A declared
    charset the bytes cannot be (a UTF-16 text cannot hold its own `.encoding` line in ASCII) must be
    ignored or the restore refused; the restored .vmx must at least name the VM."""
    bk = ghetto_backup_with_encoding(host, "Alt", "UTF-16")
    r = hotvcb(host, "restore", bk, "--datastore", "ds5", "--name", "Neu")
    path = host.real("/vmfs/volumes/ds5/Neu/Neu.vmx")
    if r.returncode == 0 or os.path.exists(path):
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        assert 'displayName = "Neu"' in text, (out(r), text[:300])
        assert 'scsi0:0.fileName = "' in text, (out(r), text[:300])
    else:
        assert vmids(host, "Neu") == [], out(r)


def test_the_dry_run_of_a_power_on_restore_beside_the_running_original_says_it_stays_off(host):
    """Before the real thing at 3 a.m., the admin checks with `restore BACKUP --datastore ds5 --power-on
    -d 1` (docs/restore.md: "dry run: what would happen"). The original "Mail" still runs. The dry run
    warns that two VMs will share a name, prints the plan (REGISTER: ...) and ends "OK, only a dryrun.",
    exit 0: not a word about powering on. The real run then registers the VM, leaves it off because the
    original runs and ends "WARNING: ... 1 VM(s) were left powered off", exit 3. The dry run knows all it
    needs (the inventory it already read, the original's power state) and should say the VM would be left
    powered off (and why), as the real run will."""
    vm = "Mail"
    _conf, bk = backed_up(host, vm, [{"size": "2M"}])
    (orig,) = vmids(host, vm)
    assert power(host, orig) == "Powered on"
    dry = hotvcb(host, "restore", bk, "--datastore", "ds5", "--power-on", "-d", "1")
    assert dry.returncode == 3, out(dry)  # the real run's code (README), since session 33's round 2
    lines = [l for l in out(dry).splitlines() if "power" in l.lower() and "off" in l.lower()]
    assert lines, "the dry run does not say the VM would be left powered off:\n" + out(dry)


def test_a_copy_of_a_renamed_vm_does_not_keep_the_originals_working_dir(host):
    """The VM was created as "web01" years ago and renamed "Web Server" in the vSphere client (ESXi keeps
    the folder `datastore1/web01`); its .vmx sets `workingDir` and `sched.swap.dir` to that folder, as the
    client writes them when snapshots are moved. The admin restores last night's backup as the copy "Web
    Test" on ds5 beside the running original (docs/restore.md: a new name drops "a `workingDir` or
    `sched.swap.dir` that names the original's folder"). hotvcb only drops them when the folder's last
    component equals the displayName ("Web Server", vmx_identity.answer_moved_or_copied is handed the
    display name, not the folder): both keys still point into `/vmfs/volumes/datastore1/web01`, so the
    copy's swap file and every snapshot delta (named as the original's) go into the original's folder."""
    folder = "/vmfs/volumes/datastore1/web01"
    host.create_vm("web01", "datastore1", [{"size": "2M"}], power="off")
    vmx = host.real(folder + "/web01.vmx")
    with open(vmx, encoding="utf-8") as f:
        text = f.read().replace('displayName = "web01"', 'displayName = "Web Server"')
    assert 'displayName = "Web Server"' in text
    with open(vmx, "w", encoding="utf-8") as f:
        f.write(text + 'workingDir = "%s"\nsched.swap.dir = "%s"\n' % (folder, folder))
    conf = write_conf(host)
    r = hotvcb(host, "backup", "-m", "Web Server", "-g", conf)
    assert r.returncode == 0, out(r)
    (entry,) = os.listdir(host.real(VOLUME + "/Web Server"))
    r = hotvcb(host, "restore", VOLUME + "/Web Server/" + entry, "--datastore", "ds5", "--name", "Web Test")
    assert r.returncode == 0, out(r)
    keys = vmx_keys(host.real("/vmfs/volumes/ds5/Web Test/Web Test.vmx"))
    pointing = {k: v for k, v in keys.items() if v.rstrip("/") == folder}
    assert not pointing, pointing


def test_a_backup_missing_a_descriptor_is_incomplete_for_list_verify_and_latest(host):
    """Two ghettoVCB backups of "DB" (no manifests). Someone tidying the share deleted `DB_1.vmdk`, the
    second disk's descriptor, from the newest. `hotvcb list` shows both "unverifiable" (restorable),
    `hotvcb verify DB` says "2 backup(s) checked, 0 damaged or incomplete", exit 0. At 3 a.m. `restore
    --latest DB` picks the newest and refuses it ("the backup is damaged"), exit 6, where it restores the
    older one when the newest lost its flat file instead (that one is "incomplete" in list, verify and
    --latest). The restore's own verdict (damaged: data without its descriptor, docs/restore.md section
    4) should be the verdict of list, verify and --latest (and rotation, which counts it as a good
    backup when deciding what to delete)."""
    vm = "DB"
    host.create_vm(vm, "datastore1", [{"size": "2M"}, {"size": "2M"}], power="off")
    conf = write_conf(host)
    for i in range(2):
        r = hotvcb(host, "backup", "-m", vm, "-g", conf)
        assert r.returncode == 0, out(r)
        if i == 0:
            next_second()
    entries = sorted(os.listdir(host.real(VOLUME + "/" + vm)))
    assert len(entries) == 2, entries
    for e in entries:
        os.unlink(host.real(VOLUME + "/%s/%s/hotvcb.json" % (vm, e)))
    os.unlink(host.real(VOLUME + "/%s/%s/DB_1.vmdk" % (vm, entries[-1])))
    v = hotvcb(host, "verify", vm, "-g", conf)
    r = hotvcb(host, "restore", "--latest", vm, "-g", conf, "--datastore", "ds5", "--name", "DB2")
    assert r.returncode == 0 and entries[0] in out(r), out(r)
    assert v.returncode == 4, out(v)


def test_power_on_beside_the_renamed_running_original_keeps_the_twin_off(host):
    """The admin's usual 3 a.m. move: rename the broken but still running "Shop" to "Shop (broken)" to keep
    it for the post-mortem, then restore last night's backup under its own name with --power-on. The
    restore keeps the backup's identity (uuid.action keep: the original's MAC addresses and BIOS UUID,
    docs/restore.md step 4: "both running would clash"), but the twin check (restore_write._running_twin)
    compares display names only: no VM is called "Shop" any more, so the twin is powered on beside the
    running original with the same MAC address and BIOS UUID. The check should look at the identity the
    restore keeps (uuid.bios, the MAC addresses), not the name, and leave the twin off (exit 3)."""
    vm = "Shop"
    _conf, bk = backed_up(host, vm, [{"size": "2M"}])
    (orig,) = vmids(host, vm)
    vmx = host.real("/vmfs/volumes/datastore1/%s/%s.vmx" % (vm, vm))
    with open(vmx, encoding="utf-8") as f:
        text = f.read().replace('displayName = "Shop"', 'displayName = "Shop (broken)"')
    with open(vmx, "w", encoding="utf-8") as f:
        f.write(text)
    assert power(host, orig) == "Powered on" and host.display_name(orig) == "Shop (broken)"
    r = hotvcb(host, "restore", bk, "--datastore", "ds5", "--power-on")
    (twin,) = vmids(host, vm)
    a = vmx_keys(host.real("/vmfs/volumes/ds5/%s/%s.vmx" % (vm, vm)))
    b = vmx_keys(vmx)
    assert a.get("uuid.bios") and a.get("uuid.bios") == b.get("uuid.bios"), (a, b)
    assert power(host, twin) != "Powered on", "the twin runs beside the renamed original:\n" + out(r)
    assert r.returncode == 3, out(r)


def test_format_beside_a_restore_file_is_refused_not_dropped(host, tmp_path):
    """The admin's vms_to_restore line says format 3 (thin); for this one run they want the VMs thick
    and type `hotvcb restore -c vms_to_restore --format eagerzeroedthick`. hotvcb refuses `--datastore`
    and `--name` beside -c ("-c FILE names datastore and name per line; drop --datastore/--name"), but
    takes --format and ignores it: the dry run and the restore say "DISK FORMAT: thin", exit 0. The
    admin believes the database VM came back eager-zeroed (for its clustering/FT requirement).
    docs/restore.md: options a restore would not use are refused, not dropped. --format beside -c must
    be refused (or applied)."""
    _conf, bk = backed_up(host, "A", [{"size": "2M"}], power_state="off")
    f = tmp_path / "vms_to_restore"
    f.write_text('"%s;/vmfs/volumes/ds5;3"\n' % bk, encoding="utf-8")
    r = hotvcb(host, "restore", "-c", str(f), "--format", "eagerzeroedthick", "-d", "1")
    text = out(r)
    refused = r.returncode == 1 and "--format" in text
    applied = r.returncode == 0 and "DISK FORMAT: eagerzeroedthick" in text
    assert refused or applied, text


SMALL = "/vmfs/volumes/small"
ON_TMPFS = r'''
mount -t tmpfs -o size=$1 tmpfs /vmfs/volumes/small/ || exit 99; shift
"$@"; rc=$?; echo "LEFT: $(ls -A /vmfs/volumes/small/ | tr '\n' ' ')"; umount /vmfs/volumes/small; exit $rc
'''


def on_small_datastore(host, kib, *argv):
    """`hotvcb argv...` with the datastore "small" a tmpfs of `kib` KiB, its capacity as the host reports
    it the same (the simulated host's free space is its capacity less what is used)."""
    with host.store.edit() as s:
        s["datastores"]["small"]["capacity"] = kib * 1024
    return in_host(host, ON_TMPFS, "%dk" % kib, "env", "PYTHONPATH=" + REPO, "/bin/python", "-m", "hotvcb",
                   *argv)


@pytest.mark.parametrize("source", ["folder", "repo"])
def test_a_thick_restore_the_dry_run_says_fits_does_fit(host, tmp_path, source):
    """The admin restores a VM (4 + 2 MiB) as zeroedthick onto the only datastore with room left, from a
    backup folder or from the repository. `restore ... --datastore small --format zeroedthick -d 1` says
    "ROOM: needs up to 9.6 MiB, 9.6 MiB free" (repository) and passes; the real run writes, clones and
    dies: "copy of .../.hotvcb-checked/Rp_1.vmdk failed: OSError: [Errno 28] No space left on device",
    exit 6 (docs/restore.md: the target "has room" is checked before anything is written; for the
    repository "a datastore too small is refused untouched", and a thin restore's room is counted in
    pages). The small files (the checked descriptor copies in `.hotvcb-checked/`, the .vmx, .nvram,
    descriptors, the owner records, for --repo the staged folder's files too) seem to be counted in
    bytes, or not at all, while each takes at least a page (on VMFS a block): at the smallest size the
    dry run accepts, the restore it promised must succeed. (Thin restores pass this test.)"""
    vm = "Rp"
    host.create_vm(vm, "datastore1", [{"size": "4M"}, {"size": "2M"}], power="off")
    conf = write_conf(host)
    if source == "repo":
        repo = "/vmfs/volumes/backup/repo"
        r = hotvcb(host, "backup", "-m", vm, "-g", conf, "--repo", repo, "-w", str(tmp_path / "work"))
        what = ["--repo", repo, "--latest", vm]
    else:
        r = hotvcb(host, "backup", "-m", vm, "-g", conf)
        (entry,) = os.listdir(host.real(VOLUME + "/" + vm))
        what = [VOLUME + "/" + vm + "/" + entry]
    assert r.returncode == 0, out(r)
    host.add_datastore("small", 9 << 20)
    argv = ["restore"] + what + ["--datastore", "small", "--name", "Klein", "--format", "zeroedthick"]
    lo, hi = 4 * 1024, 16 * 1024  # KiB: the dry run refuses lo, accepts hi
    assert on_small_datastore(host, hi, *argv, "-d", "1").returncode == 0
    assert on_small_datastore(host, lo, *argv, "-d", "1").returncode != 0
    while hi - lo > 4:
        mid = (lo + hi) // 2 // 4 * 4
        if on_small_datastore(host, mid, *argv, "-d", "1").returncode == 0:
            hi = mid
        else:
            lo = mid
    real = on_small_datastore(host, hi, *argv)
    assert real.returncode == 0, "the dry run accepted %d KiB:\n%s" % (hi, out(real))


def same_bytes(a, b):
    with open(a, "rb") as f, open(b, "rb") as g:
        return f.read() == g.read()


@pytest.mark.parametrize("kvm", [False, True])
def test_a_ghettovcb_2gbsparse_backup_with_an_extent_cut_short_is_incomplete(host, tmp_path, kvm):
    """ghettoVCB's DISK_BACKUP_FORMAT=2gbsparse backups are a descriptor plus `-s001.vmdk` sparse extents.
    The night the backup NFS share filled up, `Sp-s001.vmdk` of "Sp" was cut to half its length (the
    grains the grain tables point at past the end are gone). The flat case is now caught (a ghettoVCB
    folder whose flat is shorter than its descriptor is "incomplete" for list, verify, rotation and
    restore); the sparse one is not: `hotvcb list` says "unverifiable", `hotvcb verify` "0 damaged or
    incomplete" (exit 0), and `restore` ends "All VMs restored OK!", exit 0, with a disk whose data is
    not the VM's. The extent's own header and grain tables say how long it must be: such a backup must be
    named incomplete and refused (verify exit 4/6, restore exit 6, nothing registered)."""
    vm = "Sp"
    conf, bk = backed_up(host, vm, [{"size": "4M"}], power_state="off", DISK_BACKUP_FORMAT="2gbsparse")
    real = host.real(bk)
    os.unlink(os.path.join(real, "hotvcb.json"))  # as ghettoVCB left it: no manifest
    extent = os.path.join(real, vm + "-s001.vmdk")
    os.truncate(extent, os.path.getsize(extent) // 2)
    v = hotvcb(host, "verify", vm, "-g", conf)
    if kvm:  # restore --kvm (qemu-img) takes it as well, exit 0
        (tmp_path / "kvm").mkdir()
        r = hotvcb(host, "restore", bk, "--kvm", str(tmp_path / "kvm"), "--name", "n")
        assert r.returncode != 0 and not os.path.exists(str(tmp_path / "kvm" / "n")), out(r)
        return
    r = hotvcb(host, "restore", bk, "--datastore", "ds5", "--name", "N")
    restored = host.real("/vmfs/volumes/ds5/N/Sp-flat.vmdk")
    lost = os.path.exists(restored) and not same_bytes(restored, host.real("/vmfs/volumes/datastore1/Sp/Sp-flat.vmdk"))
    assert not (r.returncode == 0 and lost), "restored OK with the disk's data lost:\n" + out(r)
    assert r.returncode == 6 and vmids(host, "N") == [], out(r)
    assert v.returncode in (4, 6), out(v)


def test_a_latest_line_for_a_vm_named_with_a_hash_is_not_called_a_missing_repository(host, tmp_path):
    """The VM is "Web #2" (a `#` is a legal ESXi name and hotvcb backs it up into the repository fine). The
    admin writes the vms_to_restore line docs/restore.md shows: `repo:/vmfs/volumes/backup/repo#latest=
    Web #2;ds5;3;Neu`. hotvcb splits the line at the last `#` (inside the VM's name) and reports
    "repository /vmfs/volumes/backup/repo#latest=Web : no hotvcb repository there (no config file)":
    the repository the admin named exists and holds the backup; at 3 a.m. they go looking for a broken
    NAS. The docs say `latest=` holds no `#`, so such a name cannot be given this way, but the error must
    say that (the VM name holds '#': give the backup's id), not call a good repository missing."""
    vm = "Web #2"
    repo, conf = repo_backed_up(host, tmp_path, vm)
    f = tmp_path / "vms_to_restore"
    f.write_text("repo:%s#latest=%s;ds5;3;Neu\n" % (repo, vm), encoding="utf-8")
    r = hotvcb(host, "restore", "-c", str(f), "-d", "1")
    assert "no hotvcb repository there" not in out(r), out(r)
    assert r.returncode in (0, 6) and "Traceback" not in out(r), out(r)


def test_latest_of_a_mistyped_name_from_the_configured_repository_says_did_you_mean(host, tmp_path):
    """The admin types `hotvcb restore --latest "shop ü" -g hotvcb.conf --datastore ds5` (lower case, as
    they remember it). With backups in folders, hotvcb answers "no good backup of 'shop ü' under … (did
    you mean 'Shop Ü'?)", exit 1 (docs/restore.md: a `--latest` name that matches nothing is answered
    with the close names). The same config with VM_BACKUP_REPOSITORY (today's change: --latest reads the
    repository it names) answers "no backup of 'shop ü' in the repository", exit 6 ("All VMs failed to
    restore"), no hint, though the repository holds "Shop Ü". The repository variant should name the
    close names too, as a usage error like the folder one."""
    vm = "Shop Ü"
    host.create_vm(vm, "datastore1", [{"size": "2M"}], power="off")
    folders = write_conf(host)
    r = hotvcb(host, "backup", "-m", vm, "-g", folders)
    assert r.returncode == 0, out(r)
    r = hotvcb(host, "restore", "--latest", "shop ü", "-g", folders, "--datastore", "ds5", "-d", "1")
    assert r.returncode == 1 and "did you mean 'Shop Ü'" in out(r), out(r)  # the folder variant
    repo = "/vmfs/volumes/backup/repo"
    conf = str(tmp_path / "repo.conf")
    with open(folders, encoding="utf-8") as f, open(conf, "w", encoding="utf-8") as g:
        g.write(f.read() + "\nVM_BACKUP_REPOSITORY=%s\n" % repo)
    r = hotvcb(host, "backup", "-m", vm, "-g", conf, "-w", str(tmp_path / "work"))
    assert r.returncode == 0, out(r)
    r = hotvcb(host, "restore", "--latest", "shop ü", "-g", conf, "--datastore", "ds5", "-d", "1")
    assert "did you mean 'Shop Ü'" in out(r), out(r)
    assert r.returncode == 1, out(r)


def test_to_under_a_file_names_the_file_not_a_missing_datastore(host, tmp_path):
    """The admin mistypes the scratch path: `restore --repo R --latest VM --to /scratch/vm.img/web`, where
    /scratch/vm.img is a disk image file. hotvcb answers "its folder /scratch/vm.img does not exist (is the
    datastore mounted?)": the path exists, and the admin goes checking mounts that are fine. It should say
    that the parent is not a folder (a regular file)."""
    vm = "T"
    repo, conf = repo_backed_up(host, tmp_path, vm)
    afile = tmp_path / "vm.img"
    afile.write_bytes(b"\0" * 4096)
    r = hotvcb(host, "restore", "--repo", repo, "--latest", vm, "--to", str(afile / "web"))
    assert r.returncode == 1, out(r)
    assert "does not exist" not in out(r) and "mounted" not in out(r), out(r)
