"""Outside tester, stop 32: the shapes of a VM's disks on ESXi (esxisim), backed up, restored (to the
original name and place, and as a copy on another datastore, in every format) and verified.

Each restore is checked with qemu-img compare against the source disk, and the restored .vmx must name
the restored disks only, never a file of the original VM. Defects are strict xfails until fixed; the
rest pin what an admin relies on. Tiny disks (1-8 MiB; a >2 GiB one holds only holes).
"""

import os
import shutil
import subprocess

import pytest

import esxisim.vmx as vmx
from simhost import VOLUME, hotvcb, needs_root, sealed, write_conf

pytestmark = [needs_root, pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")]

FORMATS = ["thin", "zeroedthick", "eagerzeroedthick", "2gbsparse"]


# ---------------------------------------------------------------------------------------------- helpers

def save_vmx(host, vmid, data):
    vmx.save(host.vmx_real(vmid), data)


def backup(host, conf, vm, *extra):
    r = hotvcb(host, "-m", vm, "-g", conf, *extra)
    return r, r.stdout + r.stderr


def newest(host, vm):
    return "%s/%s/%s" % (VOLUME, vm, sealed(host, vm)[-1])


def restore(host, bk, datastore, fmt="thin", name=None):
    args = ["restore", bk, "--datastore", datastore, "--format", fmt]
    if name:
        args += ["--name", name]
    r = hotvcb(host, *args)
    return r, r.stdout + r.stderr


def disk_files(host, vmid):
    """{node: real path of the disk's descriptor} for every present disk of the registered VM."""
    return {node: host.real(p) for node, p, _ in host.vm_disks(vmid)}


def same_content(a, b, host=None):
    """qemu-img compare of two disks; where qemu cannot read a descriptor (an extent name holding a
    double quote, a parent named by its /vmfs/volumes path, which only the host resolves), esxisim's
    reader compares them."""
    if any('"' in os.path.basename(p) for p in (a, b)) or host is not None:
        from esxisim import disks
        resolve = (lambda p: host.real(p) if p.startswith("/vmfs/") else p) if host is not None else None
        return disks.read_all(a, resolve) == disks.read_all(b, resolve), "esxisim read_all differs"
    r = subprocess.run(["qemu-img", "compare", "-f", "vmdk", "-F", "vmdk", a, b], capture_output=True, text=True)
    return r.returncode == 0, r.stdout + r.stderr


def vmx_disk_refs(host, vmid):
    """Every .vmdk the restored .vmx names (present or not), as real paths."""
    data = host.load_vmx(vmid)
    folder = os.path.dirname(host.vmx_real(vmid))
    out = {}
    for k, v in data.items():
        if k.lower().endswith(".filename") and v.lower().endswith(".vmdk"):
            out[k] = v
    return folder, out


def assert_restored_owns_its_disks(host, src_vmid, dst_vmid, src_disks=None, by_host=False):
    """Every present disk of the restored VM lies in its own folder, is no file of the source, and has the
    source's content (qemu-img compare)."""
    src = src_disks if src_disks is not None else disk_files(host, src_vmid)
    dst = disk_files(host, dst_vmid)
    folder = os.path.realpath(os.path.dirname(host.vmx_real(dst_vmid)))
    assert sorted(src) == sorted(dst), (src, dst)
    for node, path in dst.items():
        real = os.path.realpath(path)
        assert real.startswith(folder + os.sep), "%s of the restored VM is %s, outside %s" % (node, real, folder)
        assert real not in {os.path.realpath(p) for p in src.values()}, (node, real)
        ok, out = same_content(src[node], path, host if by_host else None)
        assert ok, (node, src[node], path, out)


def snapshot_of(host, src_vmid, where):
    """The source's disks copied aside (qemu-img convert to flat vmdk) for a compare after the source is gone."""
    os.makedirs(where, exist_ok=True)
    out = {}
    for node, path in disk_files(host, src_vmid).items():
        dst = os.path.join(where, node.replace(":", "_") + ".vmdk")
        from esxisim import disks
        disks.clone(path, dst, "thin")
        out[node] = dst
    return out


def list_verdict(host, conf, vm):
    import json
    r = hotvcb(host, "list", "--json", "-g", conf, vm)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)["backups"]


# ---------------------------------------------------------------------------------------------- shapes


def move_disk(host, vmid, node, new_real_dir, new_stem=None, ref=None):
    """Move the node's disk (descriptor + flat) to new_real_dir, optionally renamed (new_stem: the
    descriptor's name without .vmdk; the flat extent follows as '<stem>-flat.vmdk' and the descriptor's
    extent line is rewritten), and point the .vmx at it by `ref` (default: absolute /vmfs/volumes path)."""
    data = host.load_vmx(vmid)
    src = disk_files(host, vmid)[node]
    stem = new_stem or os.path.basename(src)[:-5]
    os.makedirs(new_real_dir, exist_ok=True)
    old_flat = src[:-5] + "-flat.vmdk"
    new_desc = os.path.join(new_real_dir, stem + ".vmdk")
    new_flat = os.path.join(new_real_dir, stem + "-flat.vmdk")
    with open(src, encoding="utf-8") as f:
        text = f.read()
    text = text.replace('"%s"' % os.path.basename(old_flat), '"%s"' % os.path.basename(new_flat))
    os.rename(old_flat, new_flat)
    os.unlink(src)
    with open(new_desc, "w", encoding="utf-8") as f:
        f.write(text)
    data[node + ".fileName"] = ref if ref is not None else host.host_path(new_desc)
    save_vmx(host, vmid, data)
    return new_desc


def round_trip(host, conf, vm, vmid, fmts, tmp_path, to_original=None, expect_rc=0, by_host=False):
    """One backup (verified), restored as a copy on ds5 in each of `fmts`, then, when `to_original` names a
    format, in place of the original (deleted first): every restore owns its disks and equals the source."""
    r, out = backup(host, conf, vm)
    assert r.returncode == expect_rc, out
    bk = newest(host, vm)
    v = hotvcb(host, "verify", vm, "-g", conf)
    assert v.returncode == 0, v.stdout + v.stderr
    for fmt in fmts:
        copy = "copy-" + fmt
        r, out = restore(host, bk, "ds5", fmt, copy)
        assert r.returncode == 0, out
        assert_restored_owns_its_disks(host, vmid, host.vmid_by_name(copy), by_host=by_host)
        assert host.missing_disk(host.vmid_by_name(copy)) is None, out
    if to_original:
        kept = snapshot_of(host, vmid, str(tmp_path / "kept"))
        host.power_off(vmid)
        folder = os.path.dirname(host.vmx_real(vmid))
        for node, p in disk_files(host, vmid).items():
            for f in __import__("esxisim.disks", fromlist=["x"]).own_files(p):
                os.unlink(f)
        host.unregister(vmid)
        shutil.rmtree(folder)
        r, out = restore(host, bk, "datastore1", to_original)
        assert r.returncode == 0, out
        dst = host.vmid_by_name(vm)
        assert_restored_owns_its_disks(host, None, dst, src_disks=kept, by_host=by_host)
        assert host.missing_disk(dst) is None, out
    return out


def data_disk_renamed(host, vm, stem, power="off", sub=""):
    """VM `vm` (a 1M boot disk, a 2M data disk) whose data disk is renamed `stem` in its own folder, or in its
    sub-folder `sub`, the .vmx naming it relative: the VM's id."""
    vmid = host.create_vm(vm, "datastore1", [{"size": "1M"}, {"size": "2M"}], power=power)
    home = os.path.dirname(host.vmx_real(vmid))
    move_disk(host, vmid, "scsi0:1", os.path.join(home, sub) if sub else home, stem,
              ref=(sub + "/" if sub else "") + stem + ".vmdk")
    return vmid


def data_disk_on_ds5(host, vm, stem):
    """VM `vm` (off) whose 2M data disk, made on ds5, is moved to ds5's folder `vm` and renamed `stem`: its id."""
    vmid = host.create_vm(vm, "datastore1", [{"size": "1M"}, {"size": "2M", "datastore": "ds5"}], power="off")
    move_disk(host, vmid, "scsi0:1", os.path.join(host.ds_dir("ds5"), vm), stem)
    return vmid


def snapshots_then_on(host, vmid, *names):
    """The user's snapshots `names` taken of the powered-off VM, one over the other, then the VM powered on."""
    from esxisim import snapshots as snaps
    for name in names:
        snaps.create(host, vmid, name, "", False, False)
    host.power_on(vmid)


SHAPES = {}


def shape(fn):
    SHAPES[fn.__name__] = fn
    return fn


@shape
def sub_folder_of_datastore(host):
    vmid = host.create_vm("sub", "datastore1", [{"size": "1M"}, {"size": "2M"}], power="off")
    move_disk(host, vmid, "scsi0:1", os.path.join(host.ds_dir("ds5"), "shared disks", "deep"))
    return "sub", vmid


@shape
def other_vms_folder(host):
    host.create_vm("other", "datastore1", [{"size": "1M"}], power="off")
    vmid = host.create_vm("mine", "datastore1", [{"size": "1M"}, {"size": "2M"}], power="off")
    move_disk(host, vmid, "scsi0:1", os.path.join(host.ds_dir("datastore1"), "other"), "other_9")
    return "mine", vmid


@shape
def other_vms_folder_relative(host):
    host.create_vm("other", "datastore1", [{"size": "1M"}], power="off")
    vmid = host.create_vm("mine", "datastore1", [{"size": "1M"}, {"size": "2M"}], power="off")
    move_disk(host, vmid, "scsi0:1", os.path.join(host.ds_dir("datastore1"), "other"), "other_9",
              ref="../other/other_9.vmdk")
    return "mine", vmid


@shape
def odd_extent_name(host):
    return "odd", data_disk_renamed(host, "odd", "dä tä 'x'")


@shape
def absolute_own_paths(host):
    vmid = host.create_vm("abs", "datastore1", [{"size": "1M"}, {"size": "2M"}], power="off")
    data = host.load_vmx(vmid)
    uuid = host.datastore_by_name("datastore1")["uuid"]
    for node in ("scsi0:0", "scsi0:1"):
        data[node + ".fileName"] = "/vmfs/volumes/%s/abs/%s" % (uuid, data[node + ".fileName"])
    save_vmx(host, vmid, data)
    return "abs", vmid


@shape
def absolute_by_name(host):
    vmid = host.create_vm("absn", "datastore1", [{"size": "1M"}, {"size": "2M"}], power="off")
    data = host.load_vmx(vmid)
    for node in ("scsi0:0", "scsi0:1"):
        data[node + ".fileName"] = "/vmfs/volumes/datastore1/absn/%s" % data[node + ".fileName"]
    save_vmx(host, vmid, data)
    return "absn", vmid


@shape
def same_names_three(host):
    vmid = host.create_vm("dup", "datastore1", [{"size": "1M"}, {"size": "2M"}, {"size": "3M", "datastore": "ds5"},
                                               {"size": "1M", "datastore": "ds5"}], power="off")
    data = host.load_vmx(vmid)
    d5 = os.path.join(host.ds_dir("ds5"), "dup")
    for node, frm, to in (("scsi0:2", "dup_2", "dup"), ("scsi0:3", "dup_3", "dup_1")):
        os.rename(os.path.join(d5, frm + ".vmdk"), os.path.join(d5, to + ".vmdk"))
        os.rename(os.path.join(d5, frm + "-flat.vmdk"), os.path.join(d5, to + "-flat.vmdk"))
        with open(os.path.join(d5, to + ".vmdk"), encoding="utf-8") as f:
            t = f.read()
        with open(os.path.join(d5, to + ".vmdk"), "w", encoding="utf-8") as f:
            f.write(t.replace(frm + "-flat.vmdk", to + "-flat.vmdk"))
        data[node + ".fileName"] = data[node + ".fileName"].replace(frm + ".vmdk", to + ".vmdk")
    save_vmx(host, vmid, data)
    return "dup", vmid


@shape
def many_buses(host):
    specs = [{"size": "1M", "bus": b} for b in ("scsi", "sata", "nvme", "ide", "scsi", "sata", "nvme", "ide",
                                                "ide", "ide")]
    vmid = host.create_vm("many", "datastore1", specs, power="on")
    return "many", vmid


@shape
def sparse_source(host):
    vmid = host.create_vm("sps", "datastore1", [{"size": "1M"}, {"size": "2M", "format": "2gbsparse"}], power="off")
    return "sps", vmid


@shape
def user_snapshot(host):
    vmid = host.create_vm("snappy", "datastore1", [{"size": "1M"}, {"size": "2M", "datastore": "ds5"}],
                          power="on", snapshots=["before upgrade"])
    return "snappy", vmid


def grow_to(host, vmid, node, size):
    """Make the node's flat disk `size` bytes virtual (holes past its data): its descriptor's extent and
    geometry follow."""
    desc = disk_files(host, vmid)[node]
    flat = desc[:-5] + "-flat.vmdk"
    old = os.path.getsize(flat) // 512
    with open(flat, "r+b") as f:
        f.truncate(size)
    with open(desc, encoding="utf-8") as f:
        t = f.read()
    t = t.replace("RW %d VMFS" % old, "RW %d VMFS" % (size // 512))
    with open(desc, "w", encoding="utf-8") as f:
        f.write(t)


@shape
def big_thin(host):
    vmid = host.create_vm("big", "datastore1", [{"size": "1M"}, {"size": "1M"}], power="off")
    grow_to(host, vmid, "scsi0:1", (5 << 29) + (1 << 20))  # 2.5 GiB + 1 MiB
    return "big", vmid


@shape
def uppercase_ext(host):
    vmid = data_disk_renamed(host, "upx", "upx_1")
    folder = os.path.dirname(host.vmx_real(vmid))
    os.rename(os.path.join(folder, "upx_1.vmdk"), os.path.join(folder, "DATA.VMDK"))
    data = host.load_vmx(vmid)
    data["scsi0:1.fileName"] = "DATA.VMDK"
    save_vmx(host, vmid, data)
    return "upx", vmid


@shape
def same_basename_nested(host):
    return "nest", data_disk_renamed(host, "nest", "nest", sub="sub")


@shape
def disconnected_same_name(host):
    vmid = host.create_vm("dis", "datastore1", [{"size": "1M"}, {"size": "2M"}], power="off")
    data = host.load_vmx(vmid)
    data["scsi0:2.fileName"] = "dis.vmdk"
    data["scsi0:2.present"] = "FALSE"
    data["scsi0:3.fileName"] = "/vmfs/volumes/ds5/gone/gone.vmdk"
    data["scsi0:3.present"] = "FALSE"
    data["sata0.present"] = "TRUE"
    data["sata0:0.present"] = "TRUE"
    data["sata0:0.deviceType"] = "cdrom-image"
    data["sata0:0.fileName"] = "/vmfs/volumes/datastore1/iso/x.iso"
    data["ide0:0.present"] = "TRUE"
    data["ide0:0.deviceType"] = "atapi-cdrom"
    data["ide0:0.fileName"] = "emptyBackingString"
    save_vmx(host, vmid, data)
    return "dis", vmid


@shape
def quote_in_name(host):
    return "qn", data_disk_renamed(host, "qn", 'a "b" #c')


@shape
def flat_named_descriptor(host):
    """d.vmdk (extent d-flat.vmdk) at home, and a disk whose descriptor is named d-flat.vmdk on ds5."""
    return "d", data_disk_on_ds5(host, "d", "d-flat")


@shape
def s001_named_descriptor(host):
    return "e", data_disk_on_ds5(host, "e", "e-s001")


@shape
def delta_named_base(host):
    vmid = host.create_vm("f", "datastore1", [{"size": "1M"}, {"size": "2M", "datastore": "ds5"}], power="on",
                          snapshots=["user"])
    # a base disk on ds5 named like the home disk's snapshot delta
    return "f", vmid


@shape
def s001_same_folder(host):
    return "g", data_disk_renamed(host, "g", "g-s001", power="on")


# ---------------------------------------------------------------------------------------------- defects

def test_a_disk_named_like_another_disks_flat_extent_is_restored_without_overwriting_it(host):
    """`d` has its boot disk d.vmdk (data in d-flat.vmdk) on datastore1, and a data disk on ds5 that a
    colleague once cloned with `vmkfstools -i ... /vmfs/volumes/ds5/d/d-flat.vmdk` (a valid disk: its
    descriptor is d-flat.vmdk, its data d-flat-flat.vmdk). The backup keeps the two apart (the ds5 disk
    in a subfolder) and is good. The admin restores it as a thin copy to test it: hotvcb says
    'All VMs restored OK!', exit 0, but the copy's boot disk d.vmdk names d-flat.vmdk as its data, and
    that file is now the data disk's 546-byte descriptor: both disks were restored into one folder and
    the second overwrote the first's extent. The VM does not boot. The restore should give the second
    disk a free name (as it does for two disks of one name) and both disks their content."""
    conf = write_conf(host)
    vmid = SHAPES["flat_named_descriptor"](host)[1]
    r, out = backup(host, conf, "d")
    assert r.returncode == 0, out
    r, out = restore(host, newest(host, "d"), "ds5", "thin", "copy")
    assert r.returncode == 0, out
    assert_restored_owns_its_disks(host, vmid, host.vmid_by_name("copy"))


def test_a_disk_named_like_a_2gbsparse_extent_restores_as_2gbsparse(host):
    """`e` has e.vmdk and a second disk e-s001.vmdk (on ds5; a legal VMFS name). Its backup is good.
    Restored as 2gbsparse (format 2 of a ghettoVCB restore line), hotvcb clones e.vmdk into e.vmdk
    plus its extent e-s001.vmdk, then clones the second disk to e-s001.vmdk in the same folder:
    'Failed to clone disk: The file already exists (39)', ERROR, nothing restored. A good backup must
    restore in every format the docs offer: the second disk needs a name no extent of another takes."""
    conf = write_conf(host)
    vmid = SHAPES["s001_named_descriptor"](host)[1]
    r, out = backup(host, conf, "e")
    assert r.returncode == 0, out
    r, out = restore(host, newest(host, "e"), "ds5", "2gbsparse", "copy")
    assert r.returncode == 0, out
    assert_restored_owns_its_disks(host, vmid, host.vmid_by_name("copy"))


def test_a_disk_named_like_a_2gbsparse_extent_backs_up_as_2gbsparse(host):
    """The admin keeps ghettoVCB's DISK_BACKUP_FORMAT=2gbsparse. VM `g` has g.vmdk and, in the same
    folder, a data disk g-s001.vmdk. Every night the backup copies g.vmdk as g.vmdk + g-s001.vmdk (its
    2gbsparse extent), then fails the data disk: 'The file already exists (39)', the VM has no good
    backup, ever, and nothing tells the admin why a VM that ESXi runs happily cannot be backed up. The
    backup should give the copy a name no other copy's extent takes and hold both disks."""
    conf = write_conf(host, DISK_BACKUP_FORMAT="2gbsparse")
    vmid = SHAPES["s001_same_folder"](host)[1]
    r, out = backup(host, conf, "g")
    assert r.returncode == 0 and "2/2" in out, out
    r, out = restore(host, newest(host, "g"), "ds5", "thin", "copy")
    assert r.returncode == 0, out
    assert_restored_owns_its_disks(host, vmid, host.vmid_by_name("copy"))


@shape
def big_sparse_source(host):
    from esxisim import disks
    vmid = host.create_vm("bsp", "datastore1", [{"size": "1M"}, {"size": "1M"}], power="off")
    grow_to(host, vmid, "scsi0:1", (5 << 29) + (1 << 20))
    src = disk_files(host, vmid)["scsi0:1"]
    folder = os.path.dirname(src)
    disks.clone(src, os.path.join(folder, "bsp_big.vmdk"), "2gbsparse")
    disks.delete(src)
    data = host.load_vmx(vmid)
    data["scsi0:1.fileName"] = "bsp_big.vmdk"
    save_vmx(host, vmid, data)
    return "bsp", vmid


@shape
def uuid_named_subfolder(host):
    vmid = host.create_vm("h", "datastore1", [{"size": "1M"}, {"size": "2M"}, {"size": "3M", "datastore": "ds5"}],
                          power="on")
    uuid = host.datastore_by_name("ds5")["uuid"]
    home = os.path.dirname(host.vmx_real(vmid))
    move_disk(host, vmid, "scsi0:1", os.path.join(home, uuid), "x", ref="%s/x.vmdk" % uuid)
    move_disk(host, vmid, "scsi0:2", os.path.join(host.ds_dir("ds5"), "h"), "x")
    return "h", vmid


@shape
def flat_named_in_subfolder(host):
    return "k", data_disk_renamed(host, "k", "k-flat", power="on", sub="sub")


def test_a_subfolder_disk_named_like_the_boot_disks_extent_is_backed_up(host):
    """VM `k` has k.vmdk (data k-flat.vmdk) and a data disk the admin once made with `vmkfstools -i`
    into the VM's `sub/` folder as sub/k-flat.vmdk (a legal disk: descriptor k-flat.vmdk, data
    k-flat-flat.vmdk, in another folder than k-flat.vmdk). ESXi runs it. hotvcb's default thin backup
    copies sub-folder disks to the backup folder's top (as it does sub/x.vmdk), so the second copy's
    descriptor k-flat.vmdk collides with the first disk's data file: 'Failed to clone disk: The file
    already exists (39)', every night, no good backup of `k` ever. hotvcb renames a sub-folder disk
    whose name another disk takes; it should also avoid the names of the other copies' extents."""
    conf = write_conf(host)
    vmid = SHAPES["flat_named_in_subfolder"](host)[1]
    r, out = backup(host, conf, "k")
    assert r.returncode == 0 and "2/2" in out, out
    r, out = restore(host, newest(host, "k"), "ds5", "thin", "copy")
    assert r.returncode == 0, out
    assert_restored_owns_its_disks(host, vmid, host.vmid_by_name("copy"))


@shape
def flat_named_with_snapshot(host):
    vmid = data_disk_on_ds5(host, "t", "t-flat")
    snapshots_then_on(host, vmid, "before")
    return "t", vmid


@shape
def subfolder_with_snapshot(host):
    vmid = host.create_vm("u", "datastore1", [{"size": "1M"}, {"size": "2M"}, {"size": "1M"}], power="off")
    home = os.path.dirname(host.vmx_real(vmid))
    move_disk(host, vmid, "scsi0:1", os.path.join(home, "sub dir"), "data ü", ref="sub dir/data ü.vmdk")
    move_disk(host, vmid, "scsi0:2", os.path.join(host.ds_dir("ds5"), "elsewhere"), "u_2")
    snapshots_then_on(host, vmid, "before", "after")
    return "u", vmid


@shape
def two_flat_extents(host):
    vmid = host.create_vm("w", "datastore1", [{"size": "1M"}, {"size": "2M"}], power="off")
    desc = disk_files(host, vmid)["scsi0:1"]
    flat = desc[:-5] + "-flat.vmdk"
    folder = os.path.dirname(desc)
    with open(flat, "rb") as f:
        a, b = f.read(1 << 20), f.read(1 << 20)
    for name, part in (("w data-f001.vmdk", a), ("w data-f002.vmdk", b)):
        with open(os.path.join(folder, name), "wb") as f:
            f.write(part)
    os.unlink(flat)
    with open(desc, encoding="utf-8") as f:
        t = f.read()
    t = t.replace('RW 4096 VMFS "w_1-flat.vmdk"', 'RW 2048 FLAT "w data-f001.vmdk" 0\nRW 2048 FLAT "w data-f002.vmdk" 0')
    t = t.replace('createType="vmfs"', 'createType="twoGbMaxExtentFlat"')
    assert "f002" in t
    with open(desc, "w", encoding="utf-8") as f:
        f.write(t)
    return "w", vmid


@shape
def only_independent(host):
    vmid = host.create_vm("oi", "datastore1", [{"size": "1M", "mode": "independent-persistent"}], power="on")
    return "oi", vmid


@shape
def s001_with_snapshot(host):
    vmid = data_disk_on_ds5(host, "v", "v-s001")
    snapshots_then_on(host, vmid, "before")
    return "v", vmid


@pytest.mark.parametrize("backup_fmt,restore_fmt", [("thin", "2gbsparse"), ("2gbsparse", "thin")])
def test_a_snapshot_tree_with_a_disk_named_like_a_2gbsparse_extent_round_trips(host, backup_fmt, restore_fmt):
    """VM `v` has v.vmdk and a data disk v-s001.vmdk on ds5, and a user snapshot `before`; the admin keeps
    the tree (BACKUP_SNAPSHOT_TREE=1), whose pre-flight refuses two files of one name in the tree folder.
    It does not see that cloning v.vmdk as 2gbsparse makes a v-s001.vmdk too: with DISK_BACKUP_FORMAT=2gbsparse
    the VM's backup fails every night ('The file already exists (39)'); a thin tree restored as 2gbsparse
    fails the same way. Either the pre-flight refuses it naming the clash before any change, or (better)
    the tree round-trips with the snapshot and both disks' content."""
    conf = write_conf(host, DISK_BACKUP_FORMAT=backup_fmt, BACKUP_SNAPSHOT_TREE=1)
    vmid = SHAPES["s001_with_snapshot"](host)[1]
    r, out = backup(host, conf, "v")
    assert r.returncode == 0, out
    r, out = restore(host, newest(host, "v"), "ds5", restore_fmt, "copy")
    assert r.returncode == 0, out
    dst = host.vmid_by_name("copy")
    assert_restored_owns_its_disks(host, vmid, dst)


def refs_shape(vm, ref_of):
    def build(host):
        vmid = host.create_vm(vm, "datastore1", [{"size": "1M"}, {"size": "2M"}], power="on")
        data = host.load_vmx(vmid)
        data["scsi0:1.fileName"] = ref_of(host, data["scsi0:1.fileName"])
        save_vmx(host, vmid, data)
        return vm, vmid
    return build


SHAPES["dot_slash"] = refs_shape("ds", lambda h, f: "./" + f)
SHAPES["dot_dot"] = refs_shape("dd", lambda h, f: "../dd/" + f)
SHAPES["double_slash"] = refs_shape("dsl", lambda h, f: "/vmfs/volumes/datastore1//dsl/" + f)
SHAPES["trailing_dot_seg"] = refs_shape("tds", lambda h, f: "/vmfs/volumes/%s/./tds/%s" % (
    h.datastore_by_name("datastore1")["uuid"], f))


@shape
def shared_with_running_vm(host):
    host.create_vm("other", "datastore1", [{"size": "1M"}, {"size": "2M"}], power="on")
    vmid = host.create_vm("mine", "datastore1", [{"size": "1M"}], power="off")
    data = host.load_vmx(vmid)
    data["scsi0:1.fileName"] = "/vmfs/volumes/datastore1/other/other_1.vmdk"
    data["scsi0:1.present"] = "TRUE"
    data["scsi0:1.deviceType"] = "scsi-hardDisk"
    save_vmx(host, vmid, data)
    return "mine", vmid


def extent_elsewhere(vm, where):
    def build(host):
        vmid = host.create_vm(vm, "datastore1", [{"size": "1M"}, {"size": "2M"}], power="off")
        desc = disk_files(host, vmid)["scsi0:1"]
        flat = desc[:-5] + "-flat.vmdk"
        target_dir = os.path.join(host.ds_dir("ds5"), "store")
        os.makedirs(target_dir, exist_ok=True)
        os.rename(flat, os.path.join(target_dir, "x ä-flat.vmdk"))
        ref = ("/vmfs/volumes/ds5/store/x ä-flat.vmdk" if where == "abs"
               else "../../%s/store/x ä-flat.vmdk" % host.datastore_by_name("ds5")["uuid"])
        with open(desc, encoding="utf-8") as f:
            t = f.read()
        with open(desc, "w", encoding="utf-8") as f:
            f.write(t.replace('"%s"' % os.path.basename(flat), '"%s"' % ref))
        return vm, vmid
    return build


SHAPES["extent_abs"] = extent_elsewhere("ea", "abs")
SHAPES["extent_rel_up"] = extent_elsewhere("er", "rel")


@shape
def high_nodes(host):
    vmid = host.create_vm("hn", "datastore1", [{"size": "1M"}, {"size": "1M"}, {"size": "1M"}, {"size": "1M"}],
                          power="off")
    data = host.load_vmx(vmid)
    moves = {"scsi0:1": "scsi3:15", "scsi0:2": "sata3:29", "scsi0:3": "nvme3:14"}
    for old, new in moves.items():
        for suffix in (".fileName", ".present", ".deviceType"):
            if old + suffix in data:
                v = data.pop(old + suffix)
                if suffix == ".deviceType" and not new.startswith("scsi"):
                    continue
                data[new + suffix] = v
        data.pop("sched.%s.shares" % old, None)
        data[new.split(":")[0] + ".present"] = "TRUE"
    save_vmx(host, vmid, data)
    host.power_on(vmid)
    return "hn", vmid


REPO = "/vmfs/volumes/backup/repo"


@pytest.mark.parametrize("how", ["datastore", "to"])
def test_a_repository_backup_of_a_disk_named_like_another_disks_extent_restores(host, how):
    """The same VM `d` (d.vmdk at home, a data disk whose descriptor is d-flat.vmdk on ds5) backed up into
    the deduplicating repository: `backup --repo` says OK 2/2 and `list` calls it good. Restoring it,
    as a VM (`--datastore`) or as files (`--to`), fails at once: 'cannot create
    …/d-flat.vmdk: File exists' (the first disk's data file holds that name in the staging folder).
    The only backup the admin has of `d` cannot be restored; it should restore both disks with their
    content, the second under a name nothing else in the folder takes."""
    conf = write_conf(host)
    vmid = SHAPES["flat_named_descriptor"](host)[1]
    r = hotvcb(host, "backup", "-m", "d", "-g", conf, "--repo", REPO)
    assert r.returncode == 0, r.stdout + r.stderr
    if how == "to":
        r = hotvcb(host, "restore", "--repo", REPO, "--latest", "d", "--to", "/vmfs/volumes/ds5/files")
        assert r.returncode == 0, r.stdout + r.stderr
        folder = host.real("/vmfs/volumes/ds5/files")
        restored = sorted(f for f in os.listdir(folder) if f.endswith(".vmdk"))
        src = disk_files(host, vmid)
        matched = set()
        for node, path in src.items():
            for f in restored:
                if f not in matched and same_content(path, os.path.join(folder, f))[0]:
                    matched.add(f)
                    break
            else:
                raise AssertionError("no restored file holds %s: %s" % (node, restored))
        return
    r = hotvcb(host, "restore", "--repo", REPO, "--latest", "d", "--datastore", "ds5", "--name", "copy")
    assert r.returncode == 0, r.stdout + r.stderr
    assert_restored_owns_its_disks(host, vmid, host.vmid_by_name("copy"))


@shape
def linked_clone(host):
    """B's disk is a delta whose parent is A's base disk in A's folder (named by absolute path)."""
    from esxisim import disks
    host.create_vm("A", "datastore1", [{"size": "2M"}], power="off")
    vmid = host.create_vm("B", "datastore1", [{"size": "1M"}, {"size": "2M"}], power="off")
    a_base = os.path.join(host.ds_dir("datastore1"), "A", "A.vmdk")
    delta = disks.create_delta(a_base, sesparse=True)
    bdir = os.path.dirname(host.vmx_real(vmid))
    for f in (delta, delta[:-5] + "-sesparse.vmdk"):
        os.rename(f, os.path.join(bdir, os.path.basename(f).replace("A-", "B-")))
    desc = os.path.join(bdir, os.path.basename(delta).replace("A-", "B-"))
    with open(desc, encoding="utf-8") as f:
        t = f.read()
    t = t.replace('parentFileNameHint="A.vmdk"', 'parentFileNameHint="%s"' % host.host_path(a_base))
    t = t.replace('"A-', '"B-')
    with open(desc, "w", encoding="utf-8") as f:
        f.write(t)
    old = disk_files(host, vmid)["scsi0:1"]
    disks.delete(old)
    data = host.load_vmx(vmid)
    data["scsi0:1.fileName"] = os.path.basename(desc)
    save_vmx(host, vmid, data)
    return "B", vmid


def named_disk(vm, stem):
    def build(host):
        return vm, data_disk_renamed(host, vm, stem, power="on")
    return build


ODD_STEMS = {"lead_blank": " lead", "trail_blank": "trail ", "shell": "$(touch PWNED)`id`;x", "glob": "st*r?[a]",
             "backslash": "back\\\\slash", "percent": "p%20q%s", "semicolon": "a;b", "dash_start": "-rf"}
for _k, _stem in ODD_STEMS.items():
    SHAPES["odd_" + _k] = named_disk("o" + _k, _stem)


def test_a_vm_of_only_independent_disks_names_them_in_its_report(host, tmp_path):
    """`scratch` has one disk, independent-persistent (a scratch VM the admin never wanted in snapshots).
    The backup rightly fails it ('nothing to back up: every disk was skipped', exit 6), but the table says
    `0/0` disks and the JSON report's row `"disks": 0, "skipped_disks": []`, as if the VM had no disk at
    all: the monitoring that reads the report cannot tell the admin which disk to look at. operations.md:
    skipped disks are listed in `skipped_disks` and counted in `disks`, as they are for a VM with one
    independent disk of two (`1/2`, `skipped_disks: ["scsi0:1"]`)."""
    import json
    conf = write_conf(host)
    host.create_vm("scratch", "datastore1", [{"size": "1M", "mode": "independent-persistent"}], power="on")
    report = tmp_path / "report.json"
    r = hotvcb(host, "backup", "-m", "scratch", "-g", conf, "--json-report", str(report))
    out = r.stdout + r.stderr
    assert r.returncode == 6, out
    (row,) = json.loads(report.read_text())["vms"]
    assert row["result"] == "error", row
    assert row["skipped_disks"] == ["scsi0:0"] and row["disks"] == 1, row


# ---------------------------------------------------------------------------------------------- what holds

ROUND_TRIP_SHAPES = ["sub_folder_of_datastore", "other_vms_folder", "other_vms_folder_relative", "odd_extent_name",
                     "quote_in_name", "absolute_own_paths", "absolute_by_name", "same_names_three", "many_buses",
                     "sparse_source", "user_snapshot", "same_basename_nested", "disconnected_same_name",
                     "uppercase_ext", "two_flat_extents", "dot_slash", "dot_dot", "double_slash", "trailing_dot_seg",
                     "extent_rel_up", "high_nodes", "uuid_named_subfolder", "subfolder_with_snapshot", "linked_clone"]


# restored in place of the original (deleted first): the shapes whose disks lie outside the VM's folder or
# are named oddly, where "the original's place" could lead the .vmx back to a file of the old VM
IN_PLACE = {"sub_folder_of_datastore", "other_vms_folder", "other_vms_folder_relative", "absolute_own_paths",
            "absolute_by_name", "same_names_three", "user_snapshot", "disconnected_same_name", "quote_in_name",
            "extent_rel_up"}


@pytest.mark.parametrize("name", ROUND_TRIP_SHAPES)
def test_a_disk_shape_round_trips(host, tmp_path, name):
    """Backed up (OK, verify OK), restored as a thin and as a 2gbsparse copy on ds5, and (IN_PLACE shapes) as
    eagerzeroedthick in place of the original after the admin deleted it: every disk's content is the
    source's (qemu-img compare), every restored disk is in the restored VM's folder and none is a file of
    the source, and the restored VM can open every disk. One backup serves every restore of a shape."""
    conf = write_conf(host, ALLOW_VMS_WITH_SNAPSHOTS_TO_BE_BACKEDUP=1)
    vm, vmid = SHAPES[name](host)
    round_trip(host, conf, vm, vmid, ["thin", "2gbsparse"], tmp_path,
               to_original="eagerzeroedthick" if name in IN_PLACE else None, by_host=name == "linked_clone")


@pytest.mark.parametrize("name", sorted("odd_" + k for k in ODD_STEMS))
def test_a_disk_file_name_of_odd_characters_round_trips(host, tmp_path, name):
    """Disk file names with blanks at either end, shell syntax, glob characters, a backslash, percent
    signs, a semicolon, a leading dash: backed up, verified, restored as a thin copy equal to the source."""
    conf = write_conf(host)
    vm, vmid = SHAPES[name](host)
    round_trip(host, conf, vm, vmid, ["thin"], tmp_path)


@pytest.mark.parametrize("name", ["big_thin", "big_sparse_source"])
def test_a_disk_over_2gib_round_trips(host, tmp_path, name):
    """A 2.5 GiB disk holding 1 MiB of data (flat, or a two-extent 2gbsparse source): restored as thin and as
    2gbsparse (two extents) copies, and as thin in place of the original, each equal to the source."""
    conf = write_conf(host)
    vm, vmid = SHAPES[name](host)
    round_trip(host, conf, vm, vmid, ["thin", "2gbsparse"], tmp_path, to_original="thin")


@pytest.mark.parametrize("mode", ["independent-persistent", "independent-nonpersistent"])
@pytest.mark.parametrize("where", ["home", "ds5"])
def test_an_independent_disk_is_skipped_named_and_restored_disconnected(host, mode, where):
    """ghettoVCB skips independent disks; so does hotvcb, with a warning, exit 3, a good backup that
    `list` says lacks the disk and `verify` passes; the restore ends exit 3 and the copy has the disk's
    line disconnected (present FALSE), its other disk restored, and can open every present disk."""
    conf = write_conf(host)
    spec = {"size": "1M", "mode": mode}
    if where == "ds5":
        spec["datastore"] = "ds5"
    vmid = host.create_vm("ind", "datastore1", [{"size": "1M"}, spec], power="on")
    r, out = backup(host, conf, "ind")
    assert r.returncode == 3 and "scsi0:1" in out and "independent" in out, out
    (b,) = list_verdict(host, conf, "ind")
    assert b["good"] and "scsi0:1" in b["warning"], b
    v = hotvcb(host, "verify", "ind", "-g", conf)
    assert v.returncode == 0, v.stdout + v.stderr
    r, out = restore(host, newest(host, "ind"), "ds5", "thin", "copy")
    assert r.returncode == 3 and "scsi0:1" in out, out
    dst = host.vmid_by_name("copy")
    data = host.load_vmx(dst)
    assert data["scsi0:1.present"].upper() == "FALSE", data
    src = {k: v for k, v in disk_files(host, vmid).items() if k == "scsi0:0"}
    assert_restored_owns_its_disks(host, None, dst, src_disks=src)
    assert host.missing_disk(dst) is None
