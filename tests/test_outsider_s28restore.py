"""Outside tester, session 28: restore, as an admin who needs a VM back at 3 a.m.

Each test builds a tiny VM on the simulated ESXi host (tests/simhost.py), backs it up with hotvcb and
restores it the way an admin would: in every disk format, to another datastore, under odd names, onto a
datastore too small, while the original still runs, from a damaged backup, and across hypervisors.
"""

import os
import shutil
import subprocess
import sys

import pytest

from simhost import REPO, VOLUME, hotvcb, needs_root, power, vim, write_conf

pytestmark = [needs_root, pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")]


def out(r):
    return (r.stdout or "") + (r.stderr or "")


def backed_up(host, vm, disks, power_state="on", **keys):
    """vm created with `disks` and backed up once: (config, the backup's path on the host)."""
    host.create_vm(vm, "datastore1", disks, power=power_state, writer=power_state == "on")
    conf = write_conf(host, **keys)
    r = hotvcb(host, "backup", "-m", vm, "-g", conf)
    assert r.returncode == 0, out(r)
    folder = host.real(VOLUME + "/" + vm)
    (entry,) = [e for e in os.listdir(folder) if e.startswith(vm + "-")]
    return conf, VOLUME + "/" + vm + "/" + entry


def repo_backed_up(host, tmp_path, vm, size="2M"):
    """A powered-off vm backed up once into the repository: (the repository's path on the host, config)."""
    host.create_vm(vm, "datastore1", [{"size": size}], power="off")
    conf = write_conf(host)
    repo = "/vmfs/volumes/backup/repo"
    r = hotvcb(host, "backup", "-m", vm, "-g", conf, "--repo", repo, "-w", str(tmp_path / "work"))
    assert r.returncode == 0, out(r)
    return repo, conf


def vmids(host, name):
    return [k for k in host.state()["vms"] if host.display_name(k) == name]


def vmx_keys(path):
    with open(path, encoding="utf-8") as f:
        return dict((k.strip(), v.strip().strip('"')) for k, _, v in (l.partition("=") for l in f) if _)


def in_host(host, script, *argv, timeout=120):
    """`sh -c script sh argv...` inside the host's namespace (where a tmpfs mounted on a datastore is seen)."""
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-m", "esxisim", "shell", host.root, "--", "sh", "-c", script, "sh"]
                          + [str(a) for a in argv], capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=REPO)


def test_power_on_of_a_same_identity_restore_beside_the_running_original(host):
    """At 3 a.m. the admin restores last night's backup of "Mail Ö" under its own name to another datastore
    (the original's datastore is the one misbehaving) with --power-on, while the original is, unknown to
    them, still powered on. hotvcb warns only that two VMs share a name (a backup-by-name concern), then
    powers the restore on: two running VMs with the same MAC address and BIOS UUID (a same-name restore
    keeps the identity, docs/restore.md: only "a new name makes a copy that can run beside the
    original"). On a real network that is a duplicate MAC/IP outage and two guests writing the same
    application data. The restore should leave the twin powered off while the original runs (or refuse
    --power-on), saying why."""
    vm = "Mail Ö"
    _conf, bk = backed_up(host, vm, [{"size": "2M"}])
    (orig,) = vmids(host, vm)
    assert power(host, orig) == "Powered on"
    r = hotvcb(host, "restore", bk, "--datastore", "ds5", "--power-on")
    twins = [k for k in vmids(host, vm) if k != orig]
    assert power(host, orig) == "Powered on"
    for k in twins:
        vmx = vmx_keys(host.real("/vmfs/volumes/ds5/%s/%s.vmx" % (vm, vm)))
        orig_vmx = vmx_keys(host.real("/vmfs/volumes/datastore1/%s/%s.vmx" % (vm, vm)))
        same_identity = (vmx.get("ethernet0.generatedAddress") == orig_vmx.get("ethernet0.generatedAddress")
                         or vmx.get("uuid.bios") == orig_vmx.get("uuid.bios"))
        assert not (same_identity and power(host, k) == "Powered on"), (
            "the restored twin runs beside the original with its MAC/UUID:\n" + out(r))


def test_a_ghettovcb_backup_missing_a_descriptor_is_not_restored_as_if_the_disk_was_never_backed_up(host):
    """The admin restores an old ghettoVCB backup (no hotvcb.json) of a two-disk VM. Someone tidied the
    backup share and deleted `DB_1.vmdk`, the small descriptor of the second disk; its 2 MiB
    `DB_1-flat.vmdk`, the data, is still there. hotvcb says the disk "is not in the backup (skipped
    when it was taken)" (false: its data is right there, ghettoVCB copied it), registers the VM with
    the data disk disconnected and ends in a warning (exit 3), as for an independent disk. The admin
    powers on a database server without its data disk. A backup whose disk has a flat extent but no
    descriptor is damaged: it must be refused (or at least named as damaged: the descriptor missing),
    not restored as if that disk was never backed up."""
    vm = "DB"
    _conf, bk = backed_up(host, vm, [{"size": "2M"}, {"size": "2M"}], power_state="off")
    real = host.real(bk)
    os.unlink(os.path.join(real, "hotvcb.json"))  # as ghettoVCB left it: no manifest
    assert os.path.exists(os.path.join(real, "DB_1-flat.vmdk"))
    os.unlink(os.path.join(real, "DB_1.vmdk"))
    r = hotvcb(host, "restore", bk, "--datastore", "ds5", "--name", "DB zurück")
    assert "skipped when it was taken" not in out(r), out(r)
    assert r.returncode in (4, 6) and vmids(host, "DB zurück") == [], out(r)


def test_a_thin_restore_the_dry_run_says_fits_does_not_run_out_of_room(host):
    """The admin's only free datastore is small (9 MiB). The VM's three thin disks (4+4+2 MiB, the guest
    wrote here and there) were backed up as thin: about 6-7 MiB allocated. `restore -d 1` says "ROOM:
    needs 5.8 MiB, 9.0 MiB free" and "every check passed", so the admin runs it: it fails with "No space left
    on device". The thin self-copy (hotvcb/jobs/restore_copy.py) writes each 1 MiB block that is not
    all zeros whole, zero pages included, so the restored thin disks take all 10 MiB: the backup's holes
    inside a block do not "stay holes" (docs/restore.md, step 3). Either the copy keeps those holes
    or the room check/dry run must count what the copy will write; the dry run must not promise a
    restore that cannot fit."""
    vm = "Thin Ü"
    _conf, bk = backed_up(host, vm, [{"size": "4M"}, {"size": "4M"}, {"size": "2M"}])
    host.add_datastore("small", 9 << 20)
    script = ('mount -t tmpfs -o size=9m tmpfs /vmfs/volumes/small/ || exit 99; "$@" -d 1; rc=$?; '
              'echo "DRYRUN-EXIT: $rc"; "$@"; rc=$?; echo "LEFT: $(ls -A /vmfs/volumes/small/)"; exit $rc')
    r = in_host(host, script, "env", "PYTHONPATH=" + REPO, "/bin/python", "-m", "hotvcb", "restore", bk,
                "--datastore", "small", "--name", "Klein")
    text = out(r)
    assert "DRYRUN-EXIT: " in text, text
    dry_ok = "DRYRUN-EXIT: 0" in text
    # Either the dry run already says it will not fit, or the restore it promised succeeds.
    assert (not dry_ok) or r.returncode == 0, text


def test_a_repository_restore_onto_a_datastore_too_small_is_refused_before_staging(host, tmp_path):
    """The admin restores a 10 MiB VM from the repository onto "tiny", which has 3 MiB free. A folder
    restore (and a .gz, and a KVM backup's staging) checks the room before writing. `restore --repo`
    does not: its dry run says "OK, only a dryrun", and the real run first writes the whole backup
    into `.hotvcb-extract-…` on that datastore (on ESXi: filling it to the last block, where every
    thin VM on it stops for lack of space), and only then refuses, saying "only 0 B is free" (it had
    3 MiB before the restore itself used them up). The room must be checked before staging (and by
    the dry run): refused in one line, the datastore untouched."""
    vm = "Repo Ä"
    host.create_vm(vm, "datastore1", [{"size": "4M"}, {"size": "4M"}, {"size": "2M"}], power="off")
    conf = write_conf(host)
    repo = "/vmfs/volumes/backup/repo"
    r = hotvcb(host, "backup", "-m", vm, "-g", conf, "--repo", repo, "-w", str(tmp_path / "work"))
    assert r.returncode == 0, out(r)
    host.add_datastore("tiny", 3 << 20)
    dry = hotvcb(host, "restore", "--repo", repo, "--latest", vm, "--datastore", "tiny", "--name", "Klein",
                 "-d", "1")
    real = hotvcb(host, "restore", "--repo", repo, "--latest", vm, "--datastore", "tiny", "--name", "Klein")
    assert real.returncode == 6 and vmids(host, "Klein") == [], out(real)
    assert "staged from the repository" not in out(real) and "only 0 B is free" not in out(real), out(real)
    assert dry.returncode != 0 and "free" in out(dry), out(dry)


def qemu_backup(tmp_path, name):
    """A bare-QEMU backup (`hotvcb --qemu`) of a running QEMU VM with a 4 MiB qcow2 disk: its folder."""
    from qemuvm import QemuVm, env, hotvcb_argv, needs_qemu, short_dir  # noqa: F401
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("needs qemu-system-x86_64")
    image = str(tmp_path / "disk.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", image, "4M"], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -q -P 0x5a 0 1M", image], check=True,
                   capture_output=True)
    sockets = short_dir("s28")
    for sub in ("inv", "ctl"):
        os.makedirs(os.path.join(sockets, sub))
    vm = QemuVm(name, image, "qcow2", os.path.join(sockets, "inv"), os.path.join(sockets, "ctl"),
                str(tmp_path / "qemu.log"))
    try:
        conf = tmp_path / "q.conf"
        conf.write_text("VM_BACKUP_VOLUME=%s\nDISK_BACKUP_FORMAT=qcow2\nCREATE_VM_BACKUP_VOLUME=1\n"
                        % (tmp_path / "qb"), encoding="utf-8")
        r = subprocess.run(hotvcb_argv(os.path.join(sockets, "inv"), "backup", "-m", name, "-g", conf, "-w",
                                       tmp_path / "work"), capture_output=True, text=True, timeout=120, env=env())
        assert r.returncode == 0, out(r)
    finally:
        vm.quit()
        shutil.rmtree(sockets, ignore_errors=True)
    (entry,) = os.listdir(tmp_path / "qb" / name)
    return str(tmp_path / "qb" / name / entry)


def test_the_dry_run_of_a_qemu_backup_to_esxi_names_the_vm(host, tmp_path):
    """The admin dry-runs the restore of a bare-QEMU backup of "gäst 1" onto the ESXi host under the new
    name "Q ä" (docs/restore.md, "KVM → ESXi"). The dry run's verdict line reads "Dry run for : every
    check passed, nothing changed": the VM's name is empty, where a folder backup's dry run says "Dry
    run for <name>". In a `-c` file of many lines the admin cannot tell which VM passed. It should name
    the VM that would be created ("Q ä")."""
    folder = qemu_backup(tmp_path, "gäst 1")
    target = "/vmfs/volumes/backup/q/gäst 1/" + os.path.basename(folder)
    shutil.copytree(os.path.dirname(folder), host.real("/vmfs/volumes/backup/q/gäst 1"))
    r = hotvcb(host, "restore", target, "--datastore", "ds5", "--name", "Q ä", "-d", "1")
    assert r.returncode == 0, out(r)
    assert "Dry run for : " not in out(r) and "Dry run for Q ä" in out(r), out(r)


def test_restoring_a_lost_vm_still_in_the_inventory_as_invalid(host):
    """The classic 3 a.m. case: the VM's folder on datastore1 is gone (deleted by mistake, or the
    datastore was repaired), the VM is still in the host's inventory, now invalid (`getallvms` prints
    "Skipping invalid VM '1'"). The admin restores last night's backup to its own name and datastore.
    Every disk is copied and checked, then `vim-cmd solo/registervm` answers AlreadyExists (the path
    is still registered as vmid 1), and hotvcb ends "ERROR: All VMs failed to restore!", exit 6,
    telling the admin to run that same `vim-cmd solo/registervm …`, which fails the same way. The VM
    is in fact back (vmid 1 finds its .vmx again). hotvcb should see the invalid VM registered at that
    path (reload or re-register it) and report the restore as done, with its vmid."""
    vm = "Lost Ö"
    _conf, bk = backed_up(host, vm, [{"size": "2M"}], power_state="off")
    (vmid,) = vmids(host, vm)
    shutil.rmtree(host.real("/vmfs/volumes/datastore1/" + vm))
    assert "Skipping invalid VM" in vim(host, "vmsvc/getallvms")
    r = hotvcb(host, "restore", bk, "--datastore", "datastore1")
    assert "registering it failed" not in out(r) and r.returncode == 0, out(r)
    assert vmids(host, vm) and all(host.is_valid(k) for k in vmids(host, vm)), out(r)


def test_a_dry_run_of_a_repository_restore_to_a_folder_writes_nothing(host, tmp_path):
    """Before pulling a VM's disks out of the repository onto a Linux box's scratch disk, the admin asks
    what would happen: `hotvcb restore --repo REPO --latest VM --to DIR -d 1` ("1 or dryrun: show what
    would happen"; docs/restore.md: "dry run: what would happen, nothing changes"). hotvcb ignores the
    dry run and writes every disk into DIR ("Restored … into DIR"), exit 0; on a scratch disk too small
    it fills it to "No space left on device". A dry run must write nothing and say what it would do."""
    vm = "Repo Dry Ü"
    host.create_vm(vm, "datastore1", [{"size": "2M"}, {"size": "2M"}], power="off")
    conf = write_conf(host)
    repo = "/vmfs/volumes/backup/repo"
    r = hotvcb(host, "backup", "-m", vm, "-g", conf, "--repo", repo, "-w", str(tmp_path / "work"))
    assert r.returncode == 0, out(r)
    target = tmp_path / "scratch" / "disks"
    target.parent.mkdir()
    r = hotvcb(host, "restore", "--repo", repo, "--latest", vm, "--to", str(target), "-d", "1")
    assert r.returncode == 0, out(r)
    assert os.listdir(str(target.parent)) == [], (os.listdir(str(target.parent)), out(r))


def test_a_repository_backup_restored_to_kvm_is_found_or_the_combination_refused(host, tmp_path):
    """The admin's ESXi host is dead; the repository survives on the NAS, and a Linux box with QEMU is
    what is left. `hotvcb list --repo REPO` shows the VM's backup; the admin runs
    `hotvcb restore --repo REPO <that id> --kvm DIR`. hotvcb drops --repo without a word and looks
    for a folder named like the id: "backup 2026…-835a does not exist" (it does, list just showed it);
    with `--latest VM` it says "no good backup of VM under /vmfs/volumes/mini-local-datastore-hdd/
    backups", a volume the admin never named. Either the repository's backup is restored to KVM, or
    the combination is refused as a usage error naming --repo and --kvm; a backup that exists must
    never be called missing."""
    vm = "Repo KVM Ö"
    repo, conf = repo_backed_up(host, tmp_path, vm)
    r = hotvcb(host, "list", "--repo", repo, "--json")
    assert r.returncode == 0, out(r)
    import json
    data = json.loads(r.stdout)
    ids = [b.get("id") for b in (data.get("backups") if isinstance(data, dict) else data)]
    assert len(ids) == 1 and ids[0], r.stdout
    kvm = tmp_path / "kvm"
    kvm.mkdir()
    for how in ([ids[0]], ["--latest", vm]):
        r = hotvcb(host, "restore", "--repo", repo, *how, "--kvm", str(kvm), "--name", "rk")
        text = out(r)
        restored = r.returncode == 0 and os.path.isdir(str(kvm / "rk"))
        refused = r.returncode != 0 and "--repo" in text and "--kvm" in text
        assert restored or refused, text
        assert "does not exist" not in text and "mini-local-datastore" not in text, text
        shutil.rmtree(str(kvm / "rk"), ignore_errors=True)


@pytest.mark.parametrize("case", ["repo-to-with-datastore-name-power-on", "to-without-repo", "kvm-power-on"])
def test_options_a_restore_would_ignore_are_refused(host, tmp_path, case):
    """hotvcb refuses `--libvirt`/`--keep-macs` without `--kvm` ("a mistake the ESXi restore would
    silently ignore", hotvcb/commands/restore_kvm_cmd.py). Other combinations are dropped without a
    word, and at 3 a.m. the admin believes what they typed:
    `restore --repo R --latest VM --to DIR --datastore ds5 --name New --power-on` writes raw files to
    DIR (exit 0) and the admin waits for "New" to boot on ds5; `restore BACKUP --datastore ds5 --to DIR`
    ignores --to; `restore BACKUP --kvm DIR --power-on` powers nothing on. Each should be a usage
    error naming the option that does not apply (exit 1), nothing restored."""
    vm = "Opt Ü"
    host.create_vm(vm, "datastore1", [{"size": "2M"}], power="off")
    conf = write_conf(host)
    repo = "/vmfs/volumes/backup/repo"
    where = tmp_path / "where"
    where.mkdir()
    if case == "repo-to-with-datastore-name-power-on":
        r = hotvcb(host, "backup", "-m", vm, "-g", conf, "--repo", repo, "-w", str(tmp_path / "work"))
        assert r.returncode == 0, out(r)
        args = ["--repo", repo, "--latest", vm, "--to", str(where / "x"), "--datastore", "ds5", "--name", "New",
                "--power-on"]
    else:
        r = hotvcb(host, "backup", "-m", vm, "-g", conf)
        assert r.returncode == 0, out(r)
        (entry,) = [e for e in os.listdir(host.real(VOLUME + "/" + vm)) if e.startswith(vm + "-")]
        bk = VOLUME + "/" + vm + "/" + entry
        if case == "to-without-repo":
            args = [bk, "--datastore", "ds5", "--name", "New", "--to", str(where / "x")]
        else:
            args = [bk, "--kvm", str(where), "--name", "New", "--power-on"]
    r = hotvcb(host, "restore", *args)
    assert r.returncode == 1, out(r)
    assert os.listdir(str(where)) == [] and vmids(host, "New") == [], out(r)


def declared_text(path):
    """The .vmx read as VMware reads it: in the charset its `.encoding` line declares (UTF-8 if none)."""
    data = open(path, "rb").read()
    enc = "utf-8"
    for line in data.split(b"\n"):
        key, _, value = line.partition(b"=")
        if key.strip() == b".encoding":
            enc = value.strip().strip(b'"').decode("ascii")
    return data.decode(enc, "replace"), enc


def test_a_windows_1252_vmx_is_rewritten_in_the_charset_it_declares(host):
    """An old VM (created years ago by Workstation on Windows, imported to ESXi) has a .vmx that says
    `.encoding = "windows-1252"` and holds its annotation "Zähler für Büro" in that charset. The admin
    restores its ghettoVCB backup under the new name "Größe ä". hotvcb reads the file as Latin-1 and
    writes it back as UTF-8, but leaves the `.encoding = "windows-1252"` line: VMware reads the file
    in the charset it declares, so the VM's name becomes "GrÃ¶ÃŸe Ã¤" and the annotation "ZÃ¤hler
    fÃ¼r BÃ¼ro". The rewritten .vmx must say what it is: written in its declared charset, or
    declared UTF-8."""
    vm = "Alt"
    _conf, bk = backed_up(host, vm, [{"size": "2M"}], power_state="off")
    real = host.real(bk)
    os.unlink(os.path.join(real, "hotvcb.json"))  # a ghettoVCB backup: the .vmx is as the VM had it
    vmx = os.path.join(real, vm + ".vmx")
    text = open(vmx, encoding="utf-8").read()
    lines = [l for l in text.splitlines() if not l.startswith(".encoding") and not l.startswith("annotation")]
    lines = ['.encoding = "windows-1252"', 'annotation = "Zähler für Büro"'] + lines
    with open(vmx, "wb") as f:
        f.write(("\n".join(lines) + "\n").encode("cp1252"))
    r = hotvcb(host, "restore", bk, "--datastore", "ds5", "--name", "Größe ä")
    assert r.returncode == 0, out(r)
    restored, enc = declared_text(host.real("/vmfs/volumes/ds5/Größe ä/Größe ä.vmx"))
    assert 'displayName = "Größe ä"' in restored, (enc, restored)
    assert 'annotation = "Zähler für Büro"' in restored, (enc, restored)


@pytest.mark.parametrize("fmt", ["thin", "zeroedthick"])
def test_a_ghettovcb_backup_with_a_flat_cut_short_is_named(host, fmt):
    """The admin restores an old ghettoVCB backup (no manifest: nothing to check against). The copy of
    its second disk was cut off when the backup NFS share filled up that night: `DB_1-flat.vmdk` holds
    1 MiB of the 2 MiB its descriptor's extent line gives (4096 sectors). hotvcb knows both numbers
    (docs/restore.md: "a flat cut short" is seen, and handed to vmkfstools), yet the run ends "All VMs
    restored OK!" with not a word: the disk's second half comes back as zeros, a file system with its
    end cut off. `verify` of it says nothing damaged either. The same backup as ghettoVCB's `.gz` is
    judged incomplete for exactly this (docs/backup-format.md: "a flat extent at the size its
    descriptor gives (a disk copy that died half way is incomplete)"); as a folder it passes. A flat
    shorter than its descriptor is provable damage: the restore must refuse it or at least warn
    naming the file."""
    vm = "DB"
    _conf, bk = backed_up(host, vm, [{"size": "2M"}, {"size": "2M"}], power_state="off")
    real = host.real(bk)
    os.unlink(os.path.join(real, "hotvcb.json"))  # as ghettoVCB left it
    flat = os.path.join(real, "DB_1-flat.vmdk")
    assert os.path.getsize(flat) == 2 << 20
    os.truncate(flat, 1 << 20)
    r = hotvcb(host, "restore", bk, "--datastore", "ds5", "--name", "DB " + fmt, "--format", fmt)
    named = [l for l in out(r).splitlines() if "DB_1-flat.vmdk" in l and ("warning" in l or "error" in l)]
    assert named or r.returncode in (4, 6), out(r)


def same_named_disks_on_two_datastores(host, vm):
    """vm with `<vm>.vmdk` on datastore1 (filled 0x11) and another `<vm>.vmdk` on ds5 (filled 0x77), as ESXi
    names the first disk a VM gets on a second datastore; backed up once: (config, backup path)."""
    host.create_vm(vm, "datastore1", [{"size": "2M"}, {"size": "2M", "datastore": "ds5"}], power="off")
    d1, d2 = host.real("/vmfs/volumes/datastore1/" + vm), host.real("/vmfs/volumes/ds5/" + vm)
    os.rename(os.path.join(d2, vm + "_1-flat.vmdk"), os.path.join(d2, vm + "-flat.vmdk"))
    with open(os.path.join(d2, vm + "_1.vmdk"), encoding="utf-8") as f:
        desc = f.read().replace(vm + "_1-flat.vmdk", vm + "-flat.vmdk")
    with open(os.path.join(d2, vm + ".vmdk"), "w", encoding="utf-8") as f:
        f.write(desc)
    os.unlink(os.path.join(d2, vm + "_1.vmdk"))
    for folder, byte in ((d1, 0x11), (d2, 0x77)):
        with open(os.path.join(folder, vm + "-flat.vmdk"), "r+b") as f:
            f.write(bytes([byte]) * (1 << 20))
    vmx = os.path.join(d1, vm + ".vmx")
    with open(vmx, encoding="utf-8") as f:
        text = f.read()
    assert "/%s/%s_1.vmdk" % (vm, vm) in text
    with open(vmx, "w", encoding="utf-8") as f:
        f.write(text.replace("/%s/%s_1.vmdk" % (vm, vm), "/%s/%s.vmdk" % (vm, vm)))
    conf = write_conf(host)
    r = hotvcb(host, "backup", "-m", vm, "-g", conf)
    assert r.returncode == 0, out(r)
    (entry,) = [e for e in os.listdir(host.real(VOLUME + "/" + vm)) if e.startswith(vm + "-")]
    return conf, VOLUME + "/" + vm + "/" + entry


def compare(a, b):
    r = subprocess.run(["qemu-img", "compare", a, b], capture_output=True, text=True)
    assert r.returncode in (0, 1), r.stdout + r.stderr
    return r.returncode == 0


def test_kvm_restore_of_two_same_named_disks_on_two_datastores_keeps_both(host, tmp_path):
    """A file server has its system disk `[datastore1] FS/FS.vmdk` and its data disk on the big datastore,
    `[ds5] FS/FS.vmdk`: ESXi names the first disk a VM gets on another datastore after the VM, so the two
    share a file name (the backup keeps the second in a folder named by ds5's UUID). The ESXi
    restore gets both right (FS.vmdk, FS_2.vmdk). `restore --kvm` converts FS.vmdk of the backup's top
    folder for sda AND for sdb ("Converting …/FS.vmdk (scsi0:1 …)"): the restored VM has its system
    disk twice and the data disk is gone, and the run ends "All VMs restored OK!". Each disk must be
    converted from its own file (qemu-img compare against the backup)."""
    vm = "FS"
    _conf, bk = same_named_disks_on_two_datastores(host, vm)
    real = host.real(bk)
    subs = [d for d in os.listdir(real) if os.path.isdir(os.path.join(real, d))]
    assert len(subs) == 1
    first, second = os.path.join(real, vm + ".vmdk"), os.path.join(real, subs[0], vm + ".vmdk")
    assert not compare(first, second)
    # the ESXi restore: both right
    r = hotvcb(host, "restore", bk, "--datastore", "datastore1", "--name", "FS esxi")
    assert r.returncode == 0, out(r)
    esxi = host.real("/vmfs/volumes/datastore1/FS esxi")
    keys = vmx_keys(os.path.join(esxi, "FS esxi.vmx"))
    assert compare(first, os.path.join(esxi, keys["scsi0:0.fileName"]))
    assert compare(second, os.path.join(esxi, keys["scsi0:1.fileName"]))
    # the KVM restore
    kvm = tmp_path / "kvm"
    kvm.mkdir()
    r = hotvcb(host, "restore", bk, "--kvm", str(kvm), "--name", "fs-kvm", "--format", "raw")
    assert r.returncode == 0, out(r)
    folder = kvm / "fs-kvm"
    assert compare(first, str(folder / "sda.raw")), out(r)
    assert compare(second, str(folder / "sdb.raw")), out(r)


def test_a_power_on_that_fails_after_a_complete_restore_says_the_vm_is_there(host):
    """The admin restores "App Ü" with --power-on; every disk is copied and checked, the VM is registered
    (vmid 2), then the host refuses to power it on (no memory left, a license limit, …). hotvcb logs
    "error: /bin/vim-cmd vmsvc/power.on failed (exit 1): Power on failed" (which VM?) and ends
    "ERROR: All VMs failed to restore!", exit 6. The admin believes nothing came back and runs the
    restore again: "target folder … already exists". A registration that fails is told right
    ("restored … completely, but registering it failed"); a failed power-on should be told the same
    way: the VM is restored and registered as vmid N, only powering it on failed."""
    vm = "App Ü"
    _conf, bk = backed_up(host, vm, [{"size": "2M"}], power_state="off")
    host.set_fault("power.on", "refuse")
    try:
        r = hotvcb(host, "restore", bk, "--datastore", "ds5", "--name", "App neu", "--power-on")
    finally:
        host.clear_faults()
    text = out(r)
    (vmid,) = vmids(host, "App neu")  # it is restored and registered
    assert r.returncode != 0, text
    assert "failed to restore" not in text, text
    assert any("App neu" in l and ("power" in l.lower()) for l in text.splitlines()
               if "error" in l or "warning" in l), text


def test_a_repository_restore_to_a_folder_writes_a_vmx_naming_its_own_disks(host, tmp_path):
    """docs/repository.md: `restore --repo R <id> --to /vmfs/volumes/datastore1/web-restored` writes the
    VM's .vmx and each disk into a new folder, for the admin to register. For a VM with one disk per
    datastore the .vmx names each disk by its file in that folder ("FS_1.vmdk"). For the file server
    whose data disk on ds5 has the system disk's name (`[ds5] FS/FS.vmdk`, as ESXi names it), the
    data disk is written as FS_2.vmdk, but the .vmx names it
    "/vmfs/volumes/<ds5's uuid>/FS/FS_2.vmdk": neither the disk in the folder nor the original.
    Registered, the VM cannot find its data disk. Every disk the .vmx names must be a file of the
    restored folder."""
    vm = "FS"
    _conf, _bk = same_named_disks_on_two_datastores(host, vm)
    repo = "/vmfs/volumes/backup/repo"
    conf = write_conf(host)
    r = hotvcb(host, "backup", "-m", vm, "-g", conf, "--repo", repo, "-w", str(tmp_path / "work"))
    assert r.returncode == 0, out(r)
    target = "/vmfs/volumes/datastore1/fs-restored"
    r = hotvcb(host, "restore", "--repo", repo, "--latest", vm, "--to", target)
    assert r.returncode == 0, out(r)
    folder = host.real(target)
    keys = vmx_keys(os.path.join(folder, vm + ".vmx"))
    disks = {k: v for k, v in keys.items() if k.endswith(".fileName") and v.endswith(".vmdk")}
    assert len(disks) == 2, keys
    for key, name in disks.items():
        assert os.path.isfile(os.path.join(folder, name)), (key, name, sorted(os.listdir(folder)))


def test_a_copy_under_a_new_name_does_not_keep_the_originals_working_dir(host):
    """"Win Ö" keeps its snapshots and swap beside its .vmx by explicit settings the admin once made
    (`workingDir` and `sched.swap.dir` = its folder on datastore1, as the vSphere client writes them when
    snapshots are moved). The admin restores last night's backup as the copy "Win Test" on ds5 to test
    an update beside the running original (docs/restore.md: "a new name makes a copy that can run beside
    the original"). hotvcb rewrites the display name, disk and nvram names, drops the swap file's
    derived name, but keeps `workingDir` and `sched.swap.dir`: the copy's swap file and every snapshot
    delta it takes (`Win Ö-000001.vmdk`, the same names the original's would get) are written into the
    ORIGINAL VM's folder, and if datastore1 is gone (the reason for the restore) the copy cannot power
    on. A copy must not point into the original's folder (drop them, or point them at its own)."""
    vm = "Win Ö"
    host.create_vm(vm, "datastore1", [{"size": "2M"}], power="off")
    folder = "/vmfs/volumes/datastore1/" + vm
    vmx = host.real(folder + "/" + vm + ".vmx")
    with open(vmx, "a", encoding="utf-8") as f:
        f.write('workingDir = "%s"\nsched.swap.dir = "%s"\n' % (folder, folder))
    conf = write_conf(host)
    r = hotvcb(host, "backup", "-m", vm, "-g", conf)
    assert r.returncode == 0, out(r)
    (entry,) = [e for e in os.listdir(host.real(VOLUME + "/" + vm)) if e.startswith(vm + "-")]
    r = hotvcb(host, "restore", VOLUME + "/" + vm + "/" + entry, "--datastore", "ds5", "--name", "Win Test")
    assert r.returncode == 0, out(r)
    keys = vmx_keys(host.real("/vmfs/volumes/ds5/Win Test/Win Test.vmx"))
    pointing = {k: v for k, v in keys.items() if v.rstrip("/") == folder}
    assert not pointing, pointing


def test_restore_latest_with_a_config_backing_up_into_a_repository(host, tmp_path):
    """The admin's hotvcb.conf sets VM_BACKUP_REPOSITORY (backups go to the deduplicating repository).
    At 3 a.m. they follow docs/restore.md: step 1 `hotvcb list "Shop Ü" -g hotvcb.conf` shows last
    night's backup; step 2 `hotvcb restore --latest "Shop Ü" -g hotvcb.conf --datastore ds5` answers
    "no good backup of 'Shop Ü' under /vmfs/volumes/backup/hotvcb" and exit 1: the config's repository
    is not looked at, and nothing says to add `--repo`. With the same config, `restore --latest` should
    find the backup `list` showed (or at least say it is in the repository and how to restore it)."""
    vm = "Shop Ü"
    host.create_vm(vm, "datastore1", [{"size": "2M"}], power="off")
    repo = "/vmfs/volumes/backup/repo"
    conf = write_conf(host, VM_BACKUP_REPOSITORY=repo)
    r = hotvcb(host, "backup", "-m", vm, "-g", conf, "-w", str(tmp_path / "work"))
    assert r.returncode == 0, out(r)
    r = hotvcb(host, "list", vm, "-g", conf)
    assert r.returncode == 0 and vm in r.stdout, out(r)
    r = hotvcb(host, "restore", "--latest", vm, "-g", conf, "--datastore", "ds5", "-d", "1")
    assert r.returncode == 0 or ("--repo" in out(r) and repo in out(r)), out(r)

