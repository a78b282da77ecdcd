"""Outside tester: the sparse re-check after the clone, the bounded embedded-descriptor read and the
header-capacity check (docs/restore.md section 3; restore_write._unchanged, vmdk.embedded,
esxi_tree.descriptor_text, backup_check.link).

Attacked through the CLI on esxisim (one host for the file: test_outsider_restoresplit's, with its
vmkfstools hook) and locally (`restore --kvm`, `verify --boot`): sparse headers whose descriptor
fields point past 1 MiB, past 64 KiB, past the file's end, over the grain tables, or are 0 long; a
header capacity that is not its descriptor's; a 2gbsparse disk of two extents named with umlauts; a
clone that fails after writing; sparse files swapped in the clone (for another sparse disk, with and
without the same parent, and swapped then put back); dry runs. Hand-built ghettoVCB-style backups
(no manifest) are the hostile input, so no checksum decides an outcome.
"""

import os
import struct

import pytest

from esxisim import disks, sparse
from simhost import hotvcb
from test_outsider_crosshv import cli
from test_outsider_fixrestore import gone, no_traceback, restored
from test_outsider_restoresplit import (DS1, clear_hooks, hand_backup, holds, leftovers, on_clone, out,  # noqa: F401
                                        qemu_same, registered, site, tree_state, victim)
from test_outsider_sparsecopy import delta_of, ghetto, one_error, restore, restored_disk, set_hint, sparse_of

pytestmark = __import__("test_outsider_restoresplit").pytestmark

MiB = 1 << 20


def header(path):
    """(capacity sectors, descriptorOffset, descriptorSize) of a hosted sparse extent."""
    with open(path, "rb") as f:
        head = f.read(44)
    return struct.unpack_from("<Q", head, 12)[0], *struct.unpack_from("<QQ", head, 28)


def poke(path, at, value):
    with open(path, "r+b") as f:
        f.seek(at)
        f.write(struct.pack("<Q", value))


def embedded_text(path):
    _cap, offset, size = header(path)
    with open(path, "rb") as f:
        f.seek(offset * 512)
        return f.read(size * 512).split(b"\0", 1)[0]


def lone_sparse(host, vm, size=MiB, random_bytes=64 << 10):
    """A ghettoVCB-style backup whose one disk is a monolithicSparse base.vmdk; (inside, real, path)."""
    inside, real = hand_backup(host, vm, keys={"scsi0:0.fileName": "base.vmdk"}, size=size,
                               random_bytes=random_bytes)
    sparse_of(real, "base.vmdk")
    ghetto(real)
    return inside, real, os.path.join(real, "base.vmdk")


def refused_before_writing(host, r, vm, before):
    """One error line, no traceback; the target datastore as it was, nothing registered."""
    line = one_error(r)
    assert sorted(os.listdir(host.real(DS1))) == before, out(r)
    gone(host, vm)
    return line


# -- header fields pointing the embedded descriptor somewhere odd -----------------------------------
WHERE = ["past-1MiB", "past-64KiB", "past-eof", "over-grain-tables", "size-0"]


@pytest.mark.parametrize("where", WHERE)
def test_embedded_descriptor_fields_pointing_oddly(site, where):
    """A lone monolithicSparse disk (over 1 MiB: 2 MiB of random data) whose header's descriptorOffset
    or descriptorSize is edited: the text copied past 1 MiB, or to 128 KiB (inside the 1 MiB planning
    reads, outside the 64 KiB the check reads), an offset past the file's end, a size of 100 sectors
    running over the grain directory and tables (the text still NUL-ended: the disk as it was), a size
    of 0. Either the restore gives the disk's own data, or it fails in one line before writing
    anything; never a traceback, never a half-restored VM."""
    host, _conf, _bk = site
    vm = "where-" + where
    inside, real, path = lone_sparse(host, vm, size=4 * MiB, random_bytes=2 * MiB)
    want = disks.read_all(path)
    text = embedded_text(path)
    size = os.path.getsize(path)
    assert size > MiB
    if where in ("past-1MiB", "past-64KiB"):
        at = (MiB + 8192) if where == "past-1MiB" else (128 << 10)
        if at + 1024 > size:
            with open(path, "r+b") as f:
                f.truncate(at + 4096)
        with open(path, "r+b") as f:
            f.seek(at)
            f.write(text.ljust(1024, b"\0"))
        poke(path, 28, at // 512)
        poke(path, 36, 2)
    elif where == "past-eof":
        poke(path, 28, size // 512 + 16)
    elif where == "over-grain-tables":
        poke(path, 36, 100)
    else:
        poke(path, 36, 0)
    before = sorted(os.listdir(host.real(DS1)))
    r = restore(host, inside, vm + "2")
    no_traceback(r)
    if where == "over-grain-tables":
        assert r.returncode == 0, out(r)
    if r.returncode == 0:
        got = disks.read_all(restored_disk(restored(host, vm + "2")))
        assert got[:len(want)] == want, "the restored disk is not the backup's"
    else:
        refused_before_writing(host, r, vm + "2", before)


# -- a header capacity that is not its descriptor's ------------------------------------------------
@pytest.mark.parametrize("how", ["restore", "restore-dry", "kvm", "verify-boot"])
def test_a_header_capacity_not_its_descriptors_is_refused_before_writing(site, tmp_path, how):
    """The sparse header's capacity doubled (its embedded extent line left at 1 MiB): refused in one
    line naming the disk, before anything is written, by the ESXi restore, its dry run, `restore
    --kvm` and `verify --boot` alike (docs/restore.md: 'must give the capacity its header gives')."""
    host, _conf, _bk = site
    vm = "cap-" + how
    inside, real, path = lone_sparse(host, vm)
    cap, _o, _s = header(path)
    poke(path, 12, cap * 2)
    if how.startswith("restore"):
        state = tree_state(host.real(DS1))
        args = ("-d", "1") if how == "restore-dry" else ()
        r = hotvcb(host, "restore", *args, inside, "--datastore", "datastore1", "--name", vm + "2",
                   "--format", "zeroedthick", timeout=85)
        line = one_error(r)
        assert tree_state(host.real(DS1)) == state, out(r)
        gone(host, vm + "2")
    else:
        target = tmp_path / "kvm"
        target.mkdir()
        if how == "kvm":
            r = cli("restore", real, "--kvm", target, "--no-verify", timeout=85)
        else:
            r = cli("verify", "--boot", real, "--boot-timeout", 30, "--console-log", tmp_path / "c.log", timeout=85)
        assert r.returncode != 0, r.out
        assert "Traceback" not in r.out, r.out
        errors = [l for l in r.out.splitlines() if "error" in l.lower()]
        assert errors, r.out
        line = errors[0]
        assert os.listdir(target) == [], os.listdir(target)
    assert "base.vmdk" in line and "header" in line, line


# -- a 2gbsparse disk of two extents, named with umlauts --------------------------------------------
def two_gb_sparse(real, name, chunks, blank=False):
    """`name`: a twoGbMaxExtentSparse descriptor over one hosted sparse extent per chunk of bytes
    (`<stem>-s00N.vmdk`, no embedded descriptor: as VMware and esxisim write them). `blank`: a blank
    line right before the extent lines instead of VMware's `# Extent description` comment."""
    stem = name[:-5]
    lines = ['# Disk DescriptorFile', 'version=1', 'encoding="UTF-8"', 'CID=1234abcd', 'parentCID=ffffffff',
             'isNativeSnapshot="no"', 'createType="twoGbMaxExtentSparse"', '']
    if not blank:
        lines.append('# Extent description')
    for i, data in enumerate(chunks, 1):
        extent = "%s-s%03d.vmdk" % (stem, i)
        sparse.write_hosted_sparse(os.path.join(real, extent), len(data) // 512,
                                   lambda o, k, d=data: d[o:o + k])
        lines.append('RW %d SPARSE "%s"' % (len(data) // 512, extent))
    lines += ['', 'ddb.adapterType = "lsilogic"', '']
    with open(os.path.join(real, name), "w", encoding="utf-8") as f:
        f.write("\n".join(lines))


@pytest.mark.parametrize("fmt", ["thin", "2gbsparse", "kvm", "kvm-blank"])
def test_a_two_extent_2gbsparse_disk_named_with_umlauts_restores(site, tmp_path, fmt):
    """`Müller dä k.vmdk`, twoGbMaxExtentSparse over two extents (`…-s001.vmdk`, `…-s002.vmdk`, 1 MiB
    of random data each): its dry run writes nothing; restored thin or 2gbsparse, under an umlaut name,
    the disk reads as the two extents in a row, and no checked copies or records are left; `restore --kvm
    --format raw` gives one image of those bytes, whether a comment or a blank line (valid VMware
    syntax, VMware reads it so) stands before the extent lines."""
    host, _conf, _bk = site
    vm = "zwei-" + fmt
    name = "Müller dä k.vmdk"
    inside, real = hand_backup(host, vm, keys={"scsi0:0.fileName": name})
    chunks = [os.urandom(MiB), os.urandom(MiB)]
    two_gb_sparse(real, name, chunks, blank=fmt == "kvm-blank")
    for n in ("disk.vmdk", "disk-flat.vmdk"):
        os.unlink(os.path.join(real, n))
    ghetto(real)
    if fmt.startswith("kvm"):  # the same disk to a KVM folder: one image, the two extents' data in a row
        target = tmp_path / "kvm"
        target.mkdir()
        r = cli("restore", real, "--kvm", target, "--no-verify", "--format", "raw", timeout=85)
        assert r.returncode == 0, r.out
        images = [os.path.join(d, n) for d, _s, ns in os.walk(target) for n in ns if not n.endswith((".xml", ".sh"))]
        assert [open(i, "rb").read() for i in images] == [b"".join(chunks)], (images, r.out)
        return
    new = "Wiederhergestellt ö " + fmt
    state = tree_state(host.real(DS1))
    r = hotvcb(host, "restore", "-d", "1", inside, "--datastore", "datastore1", "--name", new, "--format", fmt,
               timeout=85)
    assert r.returncode == 0 and tree_state(host.real(DS1)) == state, out(r)
    r = restore(host, inside, new) if fmt != "2gbsparse" else hotvcb(
        host, "restore", inside, "--datastore", "datastore1", "--format", fmt, "--name", new, timeout=85)
    assert r.returncode == 0, out(r)
    folder = restored(host, new)
    descs = [n for n in os.listdir(folder) if n.endswith(".vmdk") and not n.endswith("-flat.vmdk")
             and "-s00" not in n]
    assert len(descs) == 1, os.listdir(folder)
    assert disks.read_all(os.path.join(folder, descs[0])) == b"".join(chunks)
    assert new in registered(host) and leftovers(host) == []


# -- a clone that fails after writing ---------------------------------------------------------------
def test_a_clone_that_fails_after_writing_leaves_nothing_registered_or_behind(site):
    """vmkfstools clones the qemu-img delta over its sparse base (all written) and then exits 1: one
    error line, nothing registered, and after `hotvcb cleanup` no folder of the name and no hotvcb
    leftovers on the datastore; the name restores afterwards."""
    host, _conf, _bk = site
    vm = "failclone"
    inside, real = hand_backup(host, vm, keys={"scsi0:0.fileName": "top.vmdk"}, random_bytes=64 << 10)
    sparse_of(real, "base.vmdk")
    delta_of(real, "top.vmdk", "base.vmdk")
    ghetto(real)
    on_clone(host, '"$0.real" "$@"; exit 1')
    try:
        r = restore(host, inside, vm + "2")
    finally:
        clear_hooks(host)
    one_error(r)
    assert vm + "2" not in registered(host)
    c = hotvcb(host, "cleanup")
    assert c.returncode == 0, out(c)
    gone(host, vm + "2")
    assert [e for e in os.listdir(host.real(DS1)) if vm in e] == []
    r = restore(host, inside, vm + "2")
    assert r.returncode == 0, out(r)
    assert disks.read_all(restored_disk(restored(host, vm + "2"))) == disks.read_all(os.path.join(real, "top.vmdk"))


# -- sparse files swapped in the clone ---------------------------------------------------------------
def victim_sparse(host, tag, parent=None):
    """Another VM's monolithicSparse disk on datastore1 holding its 1 MiB of random data, or (`parent`)
    a qemu-img delta over it; (path on the host, its data)."""
    secret, data = victim(host, tag)
    folder = os.path.dirname(host.real(secret))
    with open(os.path.join(folder, "victim.vmdk"), "w") as f:
        f.write('# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType="monolithicFlat"\n'
                '\nRW 2048 FLAT "victim-flat.vmdk" 0\n\nddb.adapterType = "lsilogic"\n')
    sparse_of(folder, "vs.vmdk", "victim.vmdk")
    return os.path.dirname(secret) + "/vs.vmdk", data


SWAPS = {
    # how: the clone hook that swaps base.vmdk (%(victim)s: another VM's sparse disk)
    "sparse-of-another-vm": 'cp "%(victim)s" "%(base)s"',
    "put-back": 'cp "%(base)s" "$HOOKS/keep"; cp "%(victim)s" "%(base)s"; "$0.real" "$@"; rc=$?; '
                'cp "$HOOKS/keep" "%(base)s"; exit $rc',
}


@pytest.mark.xfail(strict=True, reason="DEFECT: a lone sparse disk swapped in front of the clone for another "
                                       "VM's sparse base (no parent either) passes _unchanged; its data is "
                                       "restored and registered")
def test_a_lone_sparse_disk_swapped_for_another_vms_sparse_disk_is_not_restored(site):
    """In front of the clone, the backup's lone monolithicSparse base.vmdk is overwritten with another
    VM's monolithicSparse disk (a base too: same 'parent', none). That VM's bytes must not be restored
    and registered as this one."""
    host, _conf, _bk = site
    vm = "swapsp"
    vpath, data = victim_sparse(host, vm)
    inside, real, _path = lone_sparse(host, vm)
    on_clone(host, SWAPS["sparse-of-another-vm"] % {"victim": vpath, "base": inside + "/base.vmdk"})
    try:
        r = restore(host, inside, vm + "2")
    finally:
        clear_hooks(host)
    folder = restored(host, vm + "2")
    assert not (os.path.isdir(folder) and holds(folder, data)), "another VM's disk restored: " + out(r)


def test_a_sparse_base_swapped_for_a_delta_naming_another_parent_is_caught(site):
    """In front of the clone, the sparse base under a qemu-img delta is overwritten with a delta whose
    hint names another VM's sparse disk by absolute path: the post-check sees another parent and the
    restore fails 'changed during the restore', nothing registered, that VM's bytes not restored."""
    host, _conf, _bk = site
    vm = "swapdelta"
    vpath, data = victim_sparse(host, vm)
    vfolder = os.path.dirname(host.real(vpath))
    delta_of(vfolder, "vd.vmdk", "vs.vmdk")
    set_hint(os.path.join(vfolder, "vd.vmdk"), vpath)
    inside, real = hand_backup(host, vm, keys={"scsi0:0.fileName": "top.vmdk"}, random_bytes=64 << 10)
    sparse_of(real, "base.vmdk")
    delta_of(real, "top.vmdk", "base.vmdk")
    ghetto(real)
    on_clone(host, 'cp "%s/vd.vmdk" "%s/base.vmdk"' % (os.path.dirname(vpath), inside))
    try:
        r = restore(host, inside, vm + "2")
    finally:
        clear_hooks(host)
    folder = restored(host, vm + "2")
    assert not (os.path.isdir(folder) and holds(folder, data)), "another VM's disk restored: " + out(r)
    assert "changed during the restore" in one_error(r)
    gone(host, vm + "2")


@pytest.mark.xfail(strict=True, reason="DEFECT (the documented gap): a lone sparse disk swapped for another "
                                       "VM's for the clone's duration and put back is restored as this one")
def test_a_sparse_disk_swapped_for_the_clone_and_put_back_is_not_restored(site):
    """The lone base.vmdk is another VM's sparse disk while vmkfstools runs and the backup's own again
    afterwards. docs/restore.md admits no re-check can see this; the test records the gap."""
    host, _conf, _bk = site
    vm = "putback"
    vpath, data = victim_sparse(host, vm)
    inside, real, _path = lone_sparse(host, vm)
    on_clone(host, SWAPS["put-back"] % {"victim": vpath, "base": inside + "/base.vmdk"})
    try:
        r = restore(host, inside, vm + "2")
    finally:
        clear_hooks(host)
    folder = restored(host, vm + "2")
    assert not (os.path.isdir(folder) and holds(folder, data)), "another VM's disk restored: " + out(r)


@pytest.mark.parametrize("where", ["past-64KiB", "past-eof", "over-grain-tables", "size-0"])
def test_restore_kvm_of_the_same_odd_headers(site, tmp_path, where):
    """`restore --kvm` of the lone sparse disk whose descriptor fields were edited as above: the disk's
    own data (qemu-img compare with the flat disk it was made from), or one clear error line and an
    empty target; never a traceback."""
    host, _conf, _bk = site
    vm = "kvm-" + where
    _inside, real, path = lone_sparse(host, vm)
    _cap, offset, _size = header(path)
    if where == "past-64KiB":
        text = embedded_text(path)
        with open(path, "r+b") as f:
            f.truncate(max(os.path.getsize(path), (128 << 10) + 4096))
            f.seek(128 << 10)
            f.write(text.ljust(1024, b"\0"))
        poke(path, 28, 256)
        poke(path, 36, 2)
    elif where == "past-eof":
        poke(path, 28, os.path.getsize(path) // 512 + 16)
    else:
        poke(path, 36, 100 if where == "over-grain-tables" else 0)
    target = tmp_path / "kvm"
    target.mkdir()
    r = cli("restore", real, "--kvm", target, "--no-verify", timeout=85)
    assert "Traceback" not in r.out and "internal error" not in r.out, r.out
    if where == "over-grain-tables":
        assert r.returncode == 0, r.out
    if r.returncode == 0:
        images = [os.path.join(d, n) for d, _s, ns in os.walk(target) for n in ns
                  if n.endswith((".qcow2", ".raw", ".img"))]
        assert len(images) == 1, r.out
        assert qemu_same(os.path.join(real, "disk.vmdk"), images[0]), r.out
    else:
        errors = [l for l in r.out.splitlines() if l.startswith("hotvcb: error: ") or " -- error: " in l]
        assert len(errors) == 1 and "base.vmdk" in errors[0], r.out
        assert os.listdir(target) == [], os.listdir(target)


@pytest.mark.parametrize("what", ["fifo", "empty", "flat-descriptor", "directory"])
def test_a_sparse_base_replaced_right_after_the_clone_fails_the_restore_without_hanging(site, what):
    """Right after vmkfstools cloned the lone sparse base.vmdk, it is replaced by a FIFO (the re-check
    must not wait on it), an empty file, a text descriptor of the same size naming its own flat file,
    or a directory: the re-check sees the backup changed, one error line 'changed during the restore',
    nothing registered, no folder left."""
    host, _conf, _bk = site
    vm = "after-" + what
    inside, real, _path = lone_sparse(host, vm)
    base = inside + "/base.vmdk"
    make = {"fifo": 'rm -f "%s"; mkfifo "%s"' % (base, base), "empty": ': > "%s"' % base,
            "flat-descriptor": 'cp "%s/disk.vmdk" "%s"' % (inside, base),
            "directory": 'rm -f "%s"; mkdir "%s"' % (base, base)}[what]
    on_clone(host, '"$0.real" "$@"; rc=$?; %s; exit $rc' % make)
    try:
        r = restore(host, inside, vm + "2")
    finally:
        clear_hooks(host)
    assert "changed during the restore" in one_error(r)
    gone(host, vm + "2")


def test_restore_kvm_of_a_flat_disk_with_a_blank_line_before_its_extent_is_the_disk(site, tmp_path):
    """The plainest hand-made backup (a monolithicFlat descriptor, a blank line before `RW 2048 FLAT`,
    as ghettoVCB-era and hand-edited descriptors have; VMware and esxisim read one 1 MiB disk) restored
    with `restore --kvm --format raw`: the image is that 1 MiB, byte for byte."""
    host, _conf, _bk = site
    _inside, real = hand_backup(host, "blankflat", random_bytes=64 << 10)
    assert "\n\nRW 2048 FLAT" in open(os.path.join(real, "disk.vmdk")).read()
    target = tmp_path / "kvm"
    target.mkdir()
    r = cli("restore", real, "--kvm", target, "--no-verify", "--format", "raw", timeout=85)
    assert r.returncode == 0, r.out
    images = [os.path.join(d, n) for d, _s, ns in os.walk(target) for n in ns if n.endswith(".raw")]
    assert len(images) == 1, r.out
    assert open(images[0], "rb").read() == open(os.path.join(real, "disk-flat.vmdk"), "rb").read()
