"""Outside tester, stop 31: names at their edges on a simulated ESXi host.

VM display names that differ only in case or Unicode normalization, that hold spaces at either end,
`/` or `%`, that look like options or like hotvcb's own file names; datastores whose names hold spaces
and brackets; a VM with many disks, two disks of one file name on different datastores, a disk in a
nested folder. Each either works end to end (backup, list, verify, restore equal to the source) or is
refused up front naming the problem. Defects are strict xfails until fixed; the rest pin behaviour an
admin relies on. Tiny (1 MiB) disks.
"""

import json
import os
import unicodedata

import pytest

import esxisim.vmx as vmx
from simhost import VOLUME, hotvcb, needs_root, next_second, ours, sealed, write_conf

pytestmark = needs_root


def rename(host, vmid, name):
    """Give a VM the display name `name` (its .vmx's displayName, which hotvcb takes as the truth)."""
    data = host.load_vmx(vmid)
    data["displayName"] = name
    vmx.save(host.vmx_real(vmid), data)


def vm_named(host, folder, name, size="1M", datastore="datastore1"):
    vmid = host.create_vm(folder, datastore, [{"size": size}], power="on")
    rename(host, vmid, name)
    return vmid


def sealed_anywhere(host):
    """Every backup folder under the volume that holds STATUS.ok."""
    found = []
    for dirpath, _dirs, files in os.walk(host.real(VOLUME)):
        if "STATUS.ok" in files:
            found.append(os.path.relpath(dirpath, host.real(VOLUME)))
    return sorted(found)


def restore_line(host, tmp_path, backup, datastore, new_name):
    rf = tmp_path / ("restore-%s.txt" % new_name)
    rf.write_text('"%s;/vmfs/volumes/%s;1;%s"\n' % (backup, datastore, new_name), encoding="utf-8")
    return hotvcb(host, "restore", "-c", str(rf))


def assert_same_disks(host, src_vmid, dst_vmid):
    src, dst = host.vm_disks(src_vmid), host.vm_disks(dst_vmid)
    assert [n for n, _, _ in src] == [n for n, _, _ in dst], (src, dst)
    for (node, p1, _), (_, p2, _) in zip(src, dst):
        assert host.read_disk(p1) == host.read_disk(p2), (node, p1, p2)


# ---------------------------------------------------------------------------------------------- defects


def test_slash_and_percent_names_do_not_share_a_backup_folder(host, tmp_path):
    """Two VMs: one the admin named `a/b`, one `a%2fb` (a name someone typed after seeing how hostd
    shows the first). With VM_BACKUP_ROTATION_COUNT=1 they back up `a%2fb`, then `a/b`. hotvcb writes
    the name with `/` as `%2f` but leaves a name without `/` as it is, so both land in the folder
    `a%2fb/`: the second VM's rotation deletes the first VM's only backup, `list` shows one backup under
    the name `a/b`, and `status` calls both VMs OK with the same backup. Each VM's backups must be its
    own: after both runs, two good backups, one of each VM."""
    conf = write_conf(host, VM_BACKUP_ROTATION_COUNT=1)
    vm_named(host, "ab1", "a%2fb")
    vm_named(host, "ab2", "a/b")
    done = []
    for name in ("a%2fb", "a/b"):
        before = sealed_anywhere(host)
        r = hotvcb(host, "-m", name, "-g", conf)
        if r.returncode == 0:
            done.append(name)
        else:  # refused up front, naming the VM, writing nothing
            assert name in r.stdout + r.stderr and sealed_anywhere(host) == before, r.stdout + r.stderr
        next_second()
    kept = sealed_anywhere(host)
    assert len(kept) == len(done), "one VM's rotation removed the other's backup: %s" % kept
    r = hotvcb(host, "list", "--json", "-g", conf)
    names = sorted(b["vm"] for b in json.loads(r.stdout)["backups"])
    assert names == sorted(done), names


def test_vm_named_like_hotvcb_internal_file_is_listed_and_verified(host, tmp_path):
    """A VM called `.hotvcb-x` (a test VM someone named after the tool) is backed up: the run says
    OK and `status` counts its backup. But `hotvcb list` (no VM named) and `hotvcb verify --all` leave
    it out, as if the folder were one of hotvcb's own records: the weekly `verify --all` never checks
    it, and an admin looking at `list` thinks the VM has no backup. Either the name is refused up front
    (no backup made, the name in the message), or its backups are listed and verified like any other."""
    conf = write_conf(host)
    vm_named(host, "vmx", ".hotvcb-x")
    host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    r = hotvcb(host, "-a", "-g", conf)
    if r.returncode != 0 and not [p for p in sealed_anywhere(host) if p.startswith(".hotvcb-x/")]:
        assert ".hotvcb-x" in r.stdout + r.stderr
        return
    listed = json.loads(hotvcb(host, "list", "--json", "-g", conf).stdout)["backups"]
    assert sorted(b["vm"] for b in listed) == [".hotvcb-x", "web"], listed
    r = hotvcb(host, "verify", "--all", "-g", conf)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "/.hotvcb-x/.hotvcb-x-" in r.stdout, r.stdout


def test_vm_on_datastore_whose_name_holds_brackets(host, tmp_path):
    """The admin's datastore is called `my ds [ssd] (1)` (vSphere allows brackets). A VM `br` on it:
    `hotvcb -m br` says "no VM named 'br' on this host", and `-a` fails a VM it calls
    `br     [my ds` (the name glued to half the datastore). hotvcb knows the host's datastores, so the
    getallvms row `[my ds [ssd] (1)] br/br.vmx` is readable: the VM must be backed up, verified and
    restorable with its disk equal to the source (or, at the least, refused naming that datastore)."""
    conf = write_conf(host)
    host.add_datastore("my ds [ssd] (1)", 2 << 30)
    vmid = host.create_vm("br", "my ds [ssd] (1)", [{"size": "1M"}], power="on")
    r = hotvcb(host, "-m", "br", "-g", conf)
    out = r.stdout + r.stderr
    assert "[my ds'" not in out, out
    if r.returncode != 0:  # or refused, naming the datastore whose name it cannot carry
        assert "my ds [ssd] (1)" in out and ours(host, vmid) == [], out
        return
    assert len(sealed(host, "br")) == 1, out
    assert ours(host, vmid) == []
    r = restore_line(host, tmp_path, "%s/br/%s" % (VOLUME, sealed(host, "br")[0]), "my ds [ssd] (1)", "br-copy")
    assert r.returncode == 0, r.stdout + r.stderr
    assert_same_disks(host, vmid, host.vmid_by_name("br-copy"))


def test_list_file_name_in_other_unicode_normalization_is_explained(host, tmp_path):
    """The VM `Müller` was named in vSphere (NFC, one code point for ü); the admin's VM list file was
    written on a Mac, which stores `Müller` decomposed (NFD, u + combining diaeresis). The run fails the
    VM with "no VM named 'Müller' on this host (did you mean 'Müller'?)": two names that look the same
    on every terminal, so the admin cannot see what to fix. Either the name is matched (the VM backed
    up) or the message shows the difference (the code points, or that the names differ only in their
    Unicode normalization)."""
    conf = write_conf(host)
    vm_named(host, "m", unicodedata.normalize("NFC", "Müller"))
    f = tmp_path / "vms.txt"
    f.write_text(unicodedata.normalize("NFD", "Müller") + "\n", encoding="utf-8")
    r = hotvcb(host, "-f", str(f), "-g", conf)
    out = r.stdout + r.stderr
    if r.returncode == 0:
        assert len(sealed(host, unicodedata.normalize("NFC", "Müller"))) == 1, out
        return
    (line,) = [l for l in out.splitlines() if "did you mean" in l or "no VM named" in l]
    assert any(w in line.lower() for w in ("\\u0308", "u+0308", "normaliz", "combining", "decomposed")), line


def test_repo_latest_line_for_name_with_trailing_blank(host, tmp_path):
    """VM `trail ` (a trailing blank from a copy-paste in vSphere) is backed up into a repository. The
    admin's vms_to_restore line `"repo:<repo>#latest=trail ";ds5;3;trail-copy`, the field quoted as the
    docs advise for names with blanks, fails: "no backup of 'trail' in the repository (did you mean
    'trail '?)", suggesting exactly what the line says. (A VM ` lead` works: only the trailing blank is
    dropped.) The line must restore the VM, or the refusal must say the blank cannot be carried and name
    the way that works (the backup's id)."""
    repo = "/vmfs/volumes/backup/repo"
    conf = write_conf(host, VM_BACKUP_REPOSITORY=repo)
    src = vm_named(host, "t", "trail ")
    r = hotvcb(host, "-a", "-g", conf)
    assert r.returncode == 0, r.stdout + r.stderr
    rf = tmp_path / "vms_to_restore"
    rf.write_text('"repo:%s#latest=trail ";ds5;3;trail-copy\n' % repo, encoding="utf-8")
    r = hotvcb(host, "restore", "-c", str(rf))
    out = r.stdout + r.stderr
    if r.returncode == 0:
        assert_same_disks(host, src, host.vmid_by_name("trail-copy"))
        return
    (line,) = [l for l in out.splitlines() if ":1:" in l]
    assert "did you mean 'trail '" not in line and " id" in line, line


def test_vm_named_only_blanks_is_named_as_such(host, tmp_path):
    """A VM whose display name is three blanks (someone cleared the name field in a script). The docs
    promise such a VM (only dots and spaces) is named as an error that asks for the VM to be renamed,
    as `..` is. The run instead says "vmid 2 is registered but invalid: its row in `vim-cmd
    vmsvc/getallvms` cannot be read", and `status` says the same: the admin checks the VM in vSphere,
    finds it valid and running, and is none the wiser. The other VM is backed up either way."""
    conf = write_conf(host)
    blank = vm_named(host, "b", "   ")
    host.create_vm("ok", "datastore1", [{"size": "1M"}], power="on")
    r = hotvcb(host, "-a", "-g", conf)
    out = r.stdout + r.stderr
    assert len(sealed(host, "ok")) == 1 and ours(host, blank) == [], out
    errors = [l for l in out.splitlines() if "-- error:" in l]
    assert errors and all("cannot be read" not in l for l in errors), errors
    assert any("only dots and spaces" in l or "rename" in l for l in errors), errors


# ---------------------------------------------------------------------------------------------- pinned


def test_odd_names_back_up_list_verify_and_stay_apart(host, tmp_path):
    """Names that differ only in case or in Unicode normalization, with blanks at either end, that look
    like options or like hotvcb's own file names: each VM gets its own backups (rotation 1, two runs),
    `list` and `verify --all` show each, and no snapshot stays."""
    names = ["Web", "web", unicodedata.normalize("NFC", "Müller"), unicodedata.normalize("NFD", "Müller"),
             " lead", "trail ", "-a", "--help", "STATUS.ok", "hotvcb.json", "lost+found", "x-2026-01-01_00-00-00"]
    conf = write_conf(host, VM_BACKUP_ROTATION_COUNT=1)
    ids = [vm_named(host, "vm%d" % i, n) for i, n in enumerate(names)]
    for _ in range(2):
        r = hotvcb(host, "-a", "-g", conf)
        assert r.returncode == 0, r.stdout + r.stderr
        next_second()
    for n in names:
        assert len(sealed(host, n)) == 1, n
    assert all(ours(host, v) == [] for v in ids)
    listed = json.loads(hotvcb(host, "list", "--json", "-g", conf).stdout)["backups"]
    assert sorted(b["vm"] for b in listed) == sorted(names)
    r = hotvcb(host, "verify", "--all", "-g", conf)
    assert r.returncode == 0 and "%d backup(s) checked, 0 damaged" % len(names) in r.stdout, r.stdout


def test_option_like_and_nfd_names_by_name_and_restore(host, tmp_path):
    """`-m --help` and `-m -a` name VMs, not options; an NFD-named VM restores under a new name with
    its disk equal to the source."""
    conf = write_conf(host)
    vm_named(host, "h", "--help")
    vm_named(host, "a", "-a")
    nfd = unicodedata.normalize("NFD", "Müller")
    src = vm_named(host, "m", nfd)
    for n in ("--help", "-a", nfd):
        r = hotvcb(host, "-m", n, "-g", conf)
        assert r.returncode == 0 and "Successfully completed backup for %s " % n in r.stdout, r.stdout + r.stderr
    assert len(sealed(host, "--help")) == 1 and len(sealed(host, "-a")) == 1
    (b,) = sealed(host, nfd)
    r = restore_line(host, tmp_path, "%s/%s/%s" % (VOLUME, nfd, b), "ds5", "mueller-copy")
    assert r.returncode == 0, r.stdout + r.stderr
    assert_same_disks(host, src, host.vmid_by_name("mueller-copy"))


def test_twenty_disks_on_two_controllers_round_trip(host, tmp_path):
    """20 tiny disks, the last ten moved to a second SCSI controller: all 20 backed up, verified, and
    restored each to its own node with its content."""
    conf = write_conf(host)
    vmid = host.create_vm("multi", "datastore1", [{"size": "1M"}] * 20, power="off")
    data = host.load_vmx(vmid)
    for i in range(10, 21):
        for suffix in (".fileName", ".present", ".deviceType"):
            key = "scsi0:%d%s" % (i, suffix)
            if key in data:
                data["scsi1:%d%s" % (i - 10, suffix)] = data.pop(key)
        data.pop("sched.scsi0:%d.shares" % i, None)
    data["scsi1.present"] = "TRUE"
    data["scsi1.virtualDev"] = "pvscsi"
    vmx.save(host.vmx_real(vmid), data)
    host.power_on(vmid)
    r = hotvcb(host, "-m", "multi", "-g", conf)
    assert r.returncode == 0 and "20/20" in r.stdout, r.stdout + r.stderr
    r = hotvcb(host, "verify", "multi", "-g", conf)
    assert r.returncode == 0, r.stdout
    r = restore_line(host, tmp_path, "%s/multi/%s" % (VOLUME, sealed(host, "multi")[0]), "datastore1", "copy")
    assert r.returncode == 0, r.stdout + r.stderr
    assert_same_disks(host, vmid, host.vmid_by_name("copy"))


def test_same_disk_file_name_on_two_datastores_and_nested_disk(host, tmp_path):
    """dup.vmdk in the VM's folder on `my ds (1)`, another dup.vmdk on ds5, a third disk in
    sub/deeper/: all backed up apart and restored each with its own content."""
    conf = write_conf(host)
    ds = "my ds (1)"
    host.add_datastore(ds, 2 << 30)
    vmid = host.create_vm("dup", ds, [{"size": "1M"}, {"size": "2M", "datastore": "ds5"}, {"size": "1M"}])
    data = host.load_vmx(vmid)
    ds5, home = host.ds_dir("ds5"), host.ds_dir(ds)
    os.rename(os.path.join(ds5, "dup", "dup_1.vmdk"), os.path.join(ds5, "dup", "dup.vmdk"))
    data["scsi0:1.fileName"] = data["scsi0:1.fileName"].replace("dup_1.vmdk", "dup.vmdk")
    os.makedirs(os.path.join(home, "dup", "sub", "deeper"))
    for f in ("dup_2.vmdk", "dup_2-flat.vmdk"):
        os.rename(os.path.join(home, "dup", f), os.path.join(home, "dup", "sub", "deeper", f))
    data["scsi0:2.fileName"] = "sub/deeper/dup_2.vmdk"
    vmx.save(host.vmx_real(vmid), data)
    host.power_on(vmid)
    r = hotvcb(host, "-m", "dup", "-g", conf)
    assert r.returncode == 0 and "3/3" in r.stdout, r.stdout + r.stderr
    assert hotvcb(host, "verify", "dup", "-g", conf).returncode == 0
    r = restore_line(host, tmp_path, "%s/dup/%s" % (VOLUME, sealed(host, "dup")[0]), ds, "dup-copy")
    assert r.returncode == 0, r.stdout + r.stderr
    assert_same_disks(host, vmid, host.vmid_by_name("dup-copy"))





def test_names_that_look_like_backup_folders_survive_cleanup_and_rotation(host, tmp_path):
    """VMs named like an unfinished, a deleting and a compressed backup of `web`, and `web` itself:
    `cleanup` takes none of their backups for a leftover, each VM keeps its own two."""
    conf = write_conf(host)
    names = ["web-2026-01-01_00-00-00-partial", "web-2026-01-01_00-00-00-deleting", "web-2026-01-01_00-00-00.gz", "web"]
    for i, n in enumerate(names):
        vm_named(host, "v%d" % i, n)
    assert hotvcb(host, "-a", "-g", conf).returncode == 0
    r = hotvcb(host, "cleanup", "-g", conf)
    assert r.returncode == 0 and "0 leftover(s) removed" in r.stdout, r.stdout + r.stderr
    next_second()
    assert hotvcb(host, "-a", "-g", conf).returncode == 0
    for n in names:
        assert len(sealed(host, n)) == 2, n
    listed = json.loads(hotvcb(host, "list", "--json", "-g", conf).stdout)["backups"]
    assert sorted(b["vm"] for b in listed) == sorted(names * 2)
