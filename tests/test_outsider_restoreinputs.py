"""Outside tester: restore's inputs after 'looserestore' (merge 6cbfa1e): .nvram/.vmxf only as regular
files, VM names with control characters refused (restore and backup), a delta's parents checked down
to the base and cloned from checked copies.

Attacked through the CLI: on esxisim for the ESXi restore and backup (host, hooks and helpers from
test_outsider_restoresplit.py / test_outsider_fixrestore.py / test_restore_inputs.py, imported), and
on this machine for `restore --kvm` / `verify --boot` (helpers from test_outsider_crosshv.py).
"""

import os
import shutil
import subprocess
import tarfile

import pytest

from esxisim import disks
from simhost import VOLUME, hotvcb, snapshot_names, write_conf
from test_outsider_crosshv import QEMU_IMG, TS, cli, esxi_backup, seal
from test_outsider_fixrestore import gone, no_traceback, restored  # noqa: F401
from test_outsider_restoresplit import (DS1, clear_hooks, hand_backup, holds, on_clone, out, registered,  # noqa: F401
                                        reseal, site, victim)
from test_restore_inputs import delta_backup, one_error, restore

MiB = 1 << 20
needs_qemu_img = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)


# -- restore --kvm: qemu-img follows a delta's parents too --------------------------------------------
def kvm_delta_backup(tmp_path, secret_data):
    """An ESXi-style backup (no esxisim host needed) whose disk is a vmfsSparse delta `disk-000001.vmdk`
    of `disk.vmdk`; disk.vmdk's extent is then pointed at another VM's disk by absolute path. Sealed
    after the edit (the checksums hold). (backup folder, the secret file)."""
    secret = str(tmp_path / "other-vm-flat.vmdk")
    with open(secret, "wb") as f:
        f.write(secret_data)
    real = esxi_backup(tmp_path / "vol", "kd", keys={"scsi0:0.fileName": "disk-000001.vmdk"})
    disks.create_delta(os.path.join(real, "disk.vmdk"), sesparse=False)
    p = os.path.join(real, "disk.vmdk")
    _write(p, open(p).read().replace('"disk-flat.vmdk"', '"%s"' % secret))
    seal(real, "kd", [("scsi0:0", ["disk-000001.vmdk", "disk-000001-delta.vmdk", "disk.vmdk", "disk-flat.vmdk"])])
    return real, secret


def tree_holds(folder, data):
    return holds(folder, data, start=4096)


@needs_qemu_img
def test_kvm_restore_of_a_delta_whose_parent_names_another_vms_disk(tmp_path):
    """The ESXi restore checks a delta's parents down to the base (require_chain_inside); restore --kvm
    reads the same chain with qemu-img convert, so the same backup must be refused there too."""
    data = b"\0" * 4096 + os.urandom(MiB - 4096)
    backup, secret = kvm_delta_backup(tmp_path, data)
    dst = tmp_path / "out"
    dst.mkdir()
    r = cli("restore", backup, "--kvm", dst, "--format", "raw")
    assert "Traceback" not in r.out, r.out
    assert not tree_holds(str(dst), data), "another VM's disk restored as this backup's: " + r.out
    assert r.returncode == 6 and "outside the backup" in r.out, r.out


@needs_qemu_img
def test_kvm_restore_of_a_sparse_disk_whose_embedded_parent_lies_outside(tmp_path):
    """The backup's disk is one monolithicSparse file (hotvcb checks its magic and stops: 'its embedded
    descriptor names only itself'), but its embedded descriptor names a parent by absolute path, another
    VM's disk; qemu-img follows it and reads the parent as the disk's data."""
    data = b"\0" * 4096 + os.urandom(MiB - 4096)
    secret = str(tmp_path / "other-vm.raw")
    with open(secret, "wb") as f:
        f.write(data)
    parent = str(tmp_path / "other-vm.vmdk")
    subprocess.run([QEMU_IMG, "convert", "-q", "-O", "vmdk", "-f", "raw", secret, parent], check=True, timeout=60)
    real = esxi_backup(tmp_path / "vol", "sp")
    for n in ("disk.vmdk", "disk-flat.vmdk"):
        os.unlink(os.path.join(real, n))
    subprocess.run([QEMU_IMG, "create", "-q", "-f", "vmdk", "-F", "vmdk", "-b", parent,
                    os.path.join(real, "disk.vmdk")], check=True, timeout=60)
    with open(os.path.join(real, "disk.vmdk"), "rb") as f:
        assert f.read(4) == b"KDMV"
    seal(real, "sp", [("scsi0:0", ["disk.vmdk"])])
    dst = tmp_path / "out"
    dst.mkdir()
    r = cli("restore", real, "--kvm", dst, "--format", "raw")
    assert "Traceback" not in r.out, r.out
    assert not tree_holds(str(dst), data), "another VM's disk restored as this backup's: " + r.out
    assert r.returncode == 6, r.out


def test_kvm_restore_of_a_backup_named_with_a_line_break_is_refused(tmp_path):
    """restore --kvm without --name: the backup's displayName holds a line feed (`|0A`): refused, nothing
    written; with a plain --name it restores."""
    real = esxi_backup(tmp_path / "vol", "kn", keys={"displayName": "k\nn"})
    dst = tmp_path / "out"
    dst.mkdir()
    r = cli("restore", real, "--kvm", dst, "--no-verify")
    assert "Traceback" not in r.out, r.out
    assert r.returncode == 6 and "'k\\nn' cannot be the restored VM's name" in r.out, r.out
    assert os.listdir(str(dst)) == []
    r = cli("restore", real, "--kvm", dst, "--no-verify", "--name", "kn2", "--format", "raw")
    assert r.returncode == 0, r.out
    assert os.path.isdir(str(dst / "kn2"))


# -- ESXi restore: a delta's parents ------------------------------------------------------------------
esxi = __import__("test_outsider_restoresplit").pytestmark


def _edit(path, old, new):
    text = open(path).read()
    assert old in text, text
    _write(path, text.replace(old, new, 1))


def _hint_line(text, hint):
    """The descriptor with a parentFileNameHint line (replaced or added after parentCID)."""
    lines = [l for l in text.splitlines() if not l.startswith("parentFileNameHint")]
    i = [k for k, l in enumerate(lines) if l.startswith("parentCID")][0]
    lines.insert(i + 1, 'parentFileNameHint="%s"' % hint)
    return "\n".join(lines) + "\n"


@esxi[0]
@esxi[1]
@pytest.mark.parametrize("how", ["loop", "self", "missing", "dotdot", "absolute"])
def test_a_broken_parent_chain_is_one_error_and_nothing_written(site, how):
    """A delta whose parent chain loops (the parent names the delta; the delta names itself), names a
    parent not in the backup, or one outside it (`../` or an absolute path to another VM's descriptor).
    Sealed after the edit. One error, exit 6, nothing written on the datastore."""
    host, _conf, _bk = site
    vm = "chain-" + how
    inside, real, text = delta_backup(host, vm)
    other = host.real("%s/victim-%s" % (DS1, vm))
    secret, data = victim(host, vm)
    _write(os.path.join(other, "victim.vmdk"), text.replace('"disk-flat.vmdk"', '"victim-flat.vmdk"'))
    delta = os.path.join(real, "disk-000001.vmdk")
    dtext = open(delta).read()
    if how == "loop":
        _write(os.path.join(real, "disk.vmdk"), _hint_line(text, "disk-000001.vmdk"))
    elif how == "self":
        _write(delta, _hint_line(dtext, "disk-000001.vmdk"))
    elif how == "missing":
        _write(delta, _hint_line(dtext, "disk-gone.vmdk"))
    elif how == "dotdot":
        _write(delta, _hint_line(dtext, "../../../../datastore1/victim-%s/victim.vmdk" % vm))
    else:
        _write(delta, _hint_line(dtext, "%s/victim-%s/victim.vmdk" % (DS1, vm)))
    reseal(real, vm)
    before = sorted(os.listdir(host.real(DS1)))
    r = hotvcb(host, "restore", inside, "--datastore", "datastore1", "--format", "zeroedthick", "--name", vm + "2",
               timeout=85)
    assert not (os.path.isdir(restored(host, vm + "2")) and holds(restored(host, vm + "2"), data)), out(r)
    one_error(r)
    assert sorted(os.listdir(host.real(DS1))) == before
    gone(host, vm + "2")


@esxi[0]
@esxi[1]
def test_a_parent_that_is_a_symlink_is_refused(site):
    """The delta's parent descriptor is a symlink to a copy of itself outside the backup (same bytes:
    checksums hold): refused as any file of a disk that is no regular file of the backup."""
    host, _conf, _bk = site
    vm = "parent-link"
    inside, real, text = delta_backup(host, vm)
    outside = host.real("%s/outside-%s.vmdk" % (DS1, vm))
    _write(outside, text.replace('"disk-flat.vmdk"', '"%s/disk-flat.vmdk"' % inside))
    os.unlink(os.path.join(real, "disk.vmdk"))
    os.symlink(outside, os.path.join(real, "disk.vmdk"))
    r = restore(host, inside, "--name", vm + "2")
    line = one_error(r)
    assert "disk.vmdk" in line, line
    gone(host, vm + "2")


@esxi[0]
@esxi[1]
def test_a_parent_swapped_for_a_symlink_after_the_plan_is_not_cloned_from(site):
    """Sealed backup of a delta; in front of the clone the parent descriptor is replaced by a symlink to
    a descriptor naming another VM's disk. The clone reads the checked copy; the restore fails after
    (the parent changed), nothing registered, the other VM's bytes nowhere."""
    host, _conf, _bk = site
    vm = "parent-swaplink"
    secret, data = victim(host, vm)
    inside, real, text = delta_backup(host, vm)
    evil = host.real("%s/evil-%s.vmdk" % (DS1, vm))
    _write(evil, text.replace('"disk-flat.vmdk"', '"%s"' % secret))
    on_clone(host, 'rm "%s/disk.vmdk" && ln -s "%s/evil-%s.vmdk" "%s/disk.vmdk"' % (inside, DS1, vm, inside))
    try:
        r = restore(host, inside, "--name", vm + "2")
    finally:
        clear_hooks(host)
    assert os.path.islink(os.path.join(real, "disk.vmdk")), "the hook did not run: " + out(r)
    folder = restored(host, vm + "2")
    assert not (os.path.isdir(folder) and holds(folder, data)), "another VM's disk restored: " + out(r)
    line = one_error(r)
    assert "disk.vmdk" in line, line
    gone(host, vm + "2")


@esxi[0]
@esxi[1]
@pytest.mark.parametrize("depth", [6])
def test_a_deep_legitimate_chain_restores_as_its_top_reads(site, depth):
    """A chain of `depth` deltas (disk-000001 .. disk-00000N, each on the one before, the top written
    with a pattern in its own sparse extent via esxisim) restores as one disk with the top's content."""
    host, _conf, _bk = site
    vm = "deep-%d" % depth
    inside, real = hand_backup(host, vm, random_bytes=64 << 10)
    top = os.path.join(real, "disk.vmdk")
    for _ in range(depth):
        top = disks.create_delta(top, sesparse=False)
    with disks.Disk(top, writable=True) as d:
        d.write(0, b"TOP!" * 128)
    name = os.path.basename(top)
    _edit(os.path.join(real, vm + ".vmx"), '"disk.vmdk"', '"%s"' % name)
    reseal(real, vm)
    r = restore(host, inside, "--name", vm + "2")
    no_traceback(r)
    assert r.returncode == 0, out(r)
    folder = restored(host, vm + "2")
    vmdks = [n for n in os.listdir(folder) if n.endswith(".vmdk") and "-flat" not in n]
    assert len(vmdks) == 1, os.listdir(folder)
    assert disks.read_all(os.path.join(folder, vmdks[0])) == disks.read_all(top)


@esxi[0]
@esxi[1]
def test_a_chain_deeper_than_the_limit_is_one_error(site):
    """70 deltas (the limit is 64): one error saying so, nothing written."""
    host, _conf, _bk = site
    vm = "toodeep"
    inside, real = hand_backup(host, vm)
    top = os.path.join(real, "disk.vmdk")
    for _ in range(70):
        top = disks.create_delta(top, sesparse=False)
    _edit(os.path.join(real, vm + ".vmx"), '"disk.vmdk"', '"%s"' % os.path.basename(top))
    reseal(real, vm)
    before = sorted(os.listdir(host.real(DS1)))
    line = one_error(restore(host, inside, "--name", vm + "2"))
    assert "deeper than" in line, line
    assert sorted(os.listdir(host.real(DS1))) == before


# -- .nvram / .vmxf --------------------------------------------------------------------------------------
def _side_backup(host, vm):
    inside, real = hand_backup(host, vm, keys={"nvram": vm + ".nvram"})
    with open(os.path.join(real, vm + ".nvram"), "wb") as f:
        f.write(b"own nvram" * 100)
    return inside, real


@esxi[0]
@esxi[1]
def test_an_nvram_swapped_for_a_fifo_after_the_plan_does_not_hang(site):
    """In front of the clone the .nvram becomes a FIFO nobody writes: the copy's check must refuse it
    without waiting on it (bounded at 85 s); nothing registered."""
    host, _conf, _bk = site
    vm = "nv-fifo"
    inside, real = _side_backup(host, vm)
    reseal(real, vm)
    on_clone(host, 'rm "%s/%s.nvram" && mkfifo "%s/%s.nvram"' % (inside, vm, inside, vm))
    try:
        r = hotvcb(host, "restore", inside, "--datastore", "datastore1", "--format", "zeroedthick", "--name", vm + "2",
            timeout=85)
    finally:
        clear_hooks(host)
        p = os.path.join(real, vm + ".nvram")
        if os.path.exists(p):
            os.unlink(p)
    line = one_error(r)
    assert vm + ".nvram" in line, line
    gone(host, vm + "2")


@esxi[0]
@esxi[1]
def test_an_nvram_that_is_a_directory(site):
    """The backup's .nvram is a directory (a hand copy gone wrong): no traceback; either restored without
    it or one error; never a half VM."""
    host, _conf, _bk = site
    vm = "nv-dir"
    inside, real = hand_backup(host, vm, keys={"nvram": vm + ".nvram"})
    os.makedirs(os.path.join(real, vm + ".nvram", "sub"))
    reseal(real, vm)
    r = restore(host, inside, "--name", vm + "2")
    no_traceback(r)
    if r.returncode == 0:
        assert vm + "2" in registered(host)
        assert not os.path.isdir(os.path.join(restored(host, vm + "2"), vm + "2.nvram"))
    else:
        one_error(r)
        gone(host, vm + "2")


@esxi[0]
@esxi[1]
def test_a_gz_backup_holding_a_symlinked_nvram_is_refused(site):
    """A .gz whose .nvram member is a symlink to another VM's file: the unpacked copy must not have the
    other file copied as this VM's nvram."""
    host, _conf, _bk = site
    vm = "gz-nvlink"
    secret, data = victim(host, vm)
    inside, real = _side_backup(host, vm)
    reseal(real, vm)
    os.unlink(os.path.join(real, vm + ".nvram"))
    os.symlink(host.real(secret), os.path.join(real, vm + ".nvram"))
    gz = "%s/%s/%s-%s-z.gz" % (VOLUME, vm, vm, TS)
    with tarfile.open(host.real(gz), "w:gz") as t:
        t.add(real, arcname="%s-%s-z" % (vm, TS))
    shutil.rmtree(real)
    r = restore(host, gz, "--name", vm + "2")
    no_traceback(r)
    folder = restored(host, vm + "2")
    assert not (os.path.isdir(folder) and holds(folder, data)), "another VM's file restored: " + out(r)
    one_error(r)
    gone(host, vm + "2")


# -- names --------------------------------------------------------------------------------------------
NEAR = {"nbsp": "Web\u00a0Server", "zwj-emoji": "Familie \U0001F468\u200d\U0001F469\u200d\U0001F467",
        "combining": "Mu\u0308ller", "soft-hyphen": "Daten\u00adbank", "quotes": "it's \"quoted\"",
        "spaces": "  zwei  Leer  ", "umlaut": "Größe ÄÖÜ ß", "cjk": "サーバー"}


@esxi[0]
@esxi[1]
@pytest.mark.parametrize("what", sorted(NEAR))
def test_near_miss_names_still_restore(site, what):
    """Names a careful admin uses that hold no control character (NBSP, an emoji joined by ZWJ,
    a combining mark, a soft hyphen, quotes, spaces, umlauts, CJK): restored and registered as given."""
    host, _conf, bk = site
    name = NEAR[what]
    r = hotvcb(host, "restore", bk, "--datastore", "datastore1", "--name", name)
    no_traceback(r)
    assert r.returncode == 0, out(r)
    assert name in registered(host), registered(host)
    assert os.path.isdir(restored(host, name))


@esxi[0]
@esxi[1]
@pytest.mark.parametrize("char", ["\x0b", "\x0c", "\x1c", "\u2029", "\x9b"])
def test_more_refused_name_characters(site, char):
    """VT, FF, FS (str.splitlines breaks there), U+2029, CSI (C1): refused with one error, nothing
    written."""
    host, _conf, bk = site
    before = sorted(os.listdir(host.real(DS1)))
    r = hotvcb(host, "restore", bk, "--datastore", "datastore1", "--name", "x%sy" % char)
    line = one_error(r)
    assert "cannot be the restored VM's name" in line, line
    assert sorted(os.listdir(host.real(DS1))) == before


@pytest.fixture(scope="module")
def allhost(tmp_path_factory):
    """A host of its own for `backup -a` (site's holds every VM the restores registered)."""
    from simhost import make_host
    host = make_host(tmp_path_factory.mktemp("rinall") / "host")
    host.create_vm("plain", "datastore1", [{"size": "2M"}])
    yield host
    host.stop()


def _rename_vm(host, folder, escaped):
    vmx = host.real("%s/%s/%s.vmx" % (DS1, folder, folder))
    _edit(vmx, 'displayName = "%s"' % folder, 'displayName = "%s"' % escaped)


@esxi[0]
@esxi[1]
@pytest.mark.parametrize("escaped,name", [
    ("lf|0Avm", "lf\nvm"), ("nel\u0085vm", "nel\u0085vm"), ("cr|0Dvm", "cr\rvm"), ("ls\u2028vm", "ls\u2028vm"),
    ("es|1Bvm", "es\x1bvm")])
def test_backup_all_with_a_vm_named_with_a_line_break(allhost, escaped, name):
    """`backup -a` on a host where one VM's name holds a line feed, NEL or CR: the run must name that VM
    as not backed up (exit not 0), take no snapshot of it, and still back up the other VM."""
    host = allhost
    folder = "all-%x" % ord(name[2])
    vmid = host.create_vm(folder, "datastore1", [{"size": "2M"}])
    _rename_vm(host, folder, escaped)
    vol = VOLUME + "/all-" + folder
    os.makedirs(host.real(vol), exist_ok=True)
    conf = write_conf(host, name="all-%s.conf" % folder, VM_BACKUP_VOLUME=vol)
    try:
        r = hotvcb(host, "backup", "-a", "-g", conf, timeout=85)
        no_traceback(r)
        assert snapshot_names(host, vmid) == [], out(r)
        assert "plain" in os.listdir(host.real(vol)), out(r)
        assert r.returncode != 0, out(r)
        assert "not backed up" in out(r) and repr(name) in out(r), out(r)
    finally:
        host.unregister(vmid)


@esxi[0]
@esxi[1]
def test_backup_all_names_a_vm_whose_listing_row_cannot_be_read(allhost):
    """A name whose line feed is followed by a number and a blank (`x|0A8 y`): its getallvms row's first
    half reads as no row at all, its second as another row. The unreadable row is named by its vmid as
    not backed up (never dropped: no 'All VMs backed up OK'), the VM itself refused by name."""
    host = allhost
    folder = "all-unread"
    vmid = host.create_vm(folder, "datastore1", [{"size": "2M"}])
    # the number after the line feed is no VM's: the newest VM's vmid plus one (7 was this VM's own vmid when
    # the tests before it on the shared host had made six, and then the row it starts disputed the VM's own)
    _rename_vm(host, folder, "x|0A%d y" % (int(vmid) + 1))
    vol = VOLUME + "/" + folder
    os.makedirs(host.real(vol), exist_ok=True)
    conf = write_conf(host, name=folder + ".conf", VM_BACKUP_VOLUME=vol)
    try:
        r = hotvcb(host, "backup", "-a", "-g", conf, timeout=85)
        no_traceback(r)
        assert snapshot_names(host, vmid) == [], out(r)
        assert "plain" in os.listdir(host.real(vol)), out(r)
        assert r.returncode != 0 and "All VMs backed up OK" not in out(r), out(r)
        assert "vmid %s is registered but invalid: its row in `vim-cmd vmsvc/getallvms` cannot be read" % vmid \
            in out(r), out(r)
        r = hotvcb(host, "status", "-g", conf, timeout=85)
        assert r.returncode != 0, out(r)  # the row's second half names another vmid: CRIT or UNKNOWN, never OK
    finally:
        host.unregister(vmid)


@esxi[0]
@esxi[1]
def test_a_delta_and_its_own_parent_as_two_disks_of_one_vm(site):
    """scsi0:0 is the delta disk-000001.vmdk, scsi0:1 its parent disk.vmdk (both attached: a hand-made
    .vmx, or a linked clone's leftover). Both would be restored as `disk.vmdk`: either two distinct
    disks each with its own content, or one clear error; never one written over the other."""
    host, _conf, _bk = site
    vm = "pair"
    inside, real = hand_backup(host, vm, keys={"scsi0:0.fileName": "disk-000001.vmdk", "scsi0:1.present": "TRUE",
                                               "scsi0:1.fileName": "disk.vmdk"}, random_bytes=64 << 10)
    delta = disks.create_delta(os.path.join(real, "disk.vmdk"), sesparse=False)
    with disks.Disk(delta, writable=True) as d:
        d.write(0, b"DELTA" * 200)
    seal(real, vm, [("scsi0:0", ["disk-000001.vmdk", "disk-000001-delta.vmdk"]),
                    ("scsi0:1", ["disk.vmdk", "disk-flat.vmdk"])])
    r = restore(host, inside, "--name", vm + "2")
    no_traceback(r)
    if r.returncode != 0:
        one_error(r)
        gone(host, vm + "2")
        return
    folder = restored(host, vm + "2")
    vmx = open(os.path.join(folder, vm + "2.vmx"), encoding="utf-8").read()
    names = {}
    for key in ("scsi0:0", "scsi0:1"):
        (line,) = [l for l in vmx.splitlines() if l.startswith(key + ".fileName")]
        names[key] = line.split('"')[1]
    assert names["scsi0:0"] != names["scsi0:1"], vmx
    assert disks.read_all(os.path.join(folder, names["scsi0:0"])) == disks.read_all(delta)
    assert disks.read_all(os.path.join(folder, names["scsi0:1"])) == disks.read_all(os.path.join(real, "disk.vmdk"))


@needs_qemu_img
def test_boot_check_of_a_delta_whose_parent_names_another_vms_disk(tmp_path):
    """verify --boot puts an overlay on the backup's disk: qemu reads the chain below it, the parent's
    outside extent included. It must be refused as restore refuses an outside extent, before QEMU."""
    backup, _secret = kvm_delta_backup(tmp_path, b"\0" * 4096 + os.urandom(MiB - 4096))
    log = tmp_path / "console.log"
    r = cli("verify", "--boot", backup, "--boot-timeout", 15, "--console-log", log, timeout=85)
    assert "Traceback" not in r.out, r.out
    assert r.returncode == 1 and "outside the backup" in r.out, r.out
    assert not log.exists()


@pytest.mark.parametrize("name", ["a\x85b", "a\u2028b", "a\tb", "a\x7fb"])
def test_kvm_restore_refuses_a_given_name_with_a_control_character(tmp_path, name):
    """restore --kvm --name with NEL, U+2028, a tab or DEL: one error, nothing in the target."""
    real = esxi_backup(tmp_path / "vol", "kg")
    dst = tmp_path / "out"
    dst.mkdir()
    r = cli("restore", real, "--kvm", dst, "--no-verify", "--name", name)
    assert "Traceback" not in r.out, r.out
    assert r.returncode == 6 and "cannot be the restored VM's name" in r.out, r.out
    assert os.listdir(str(dst)) == []


@esxi[0]
@esxi[1]
def test_backup_m_of_a_vm_named_with_a_line_feed_says_so(allhost):
    """`backup -m` naming the VM whose name holds a line feed (given as it is, one argument): the run
    must fail (exit not 0) saying something about that name, with no snapshot of it."""
    host = allhost
    folder = "m-lf"
    vmid = host.create_vm(folder, "datastore1", [{"size": "2M"}])
    _rename_vm(host, folder, "m|0Alf")
    conf = write_conf(host, name="m-lf.conf", VM_BACKUP_VOLUME=VOLUME + "/m-lf")
    try:
        r = hotvcb(host, "backup", "-m", "m\nlf", "-g", conf, timeout=85)
        no_traceback(r)
        assert snapshot_names(host, vmid) == [], out(r)
        assert r.returncode != 0 and " -- error: " in out(r), out(r)
    finally:
        host.unregister(vmid)


@esxi[0]
@esxi[1]
def test_a_sealed_parent_descriptor_edited_after_the_seal_is_refused(site):
    """A sealed delta backup whose parent descriptor gains a comment line after sealing (it still names
    only files beside it): its proof against the manifest must fail, nothing registered."""
    host, _conf, _bk = site
    vm = "parent-edited"
    inside, real, text = delta_backup(host, vm)
    _write(os.path.join(real, "disk.vmdk"), text + "# edited after the seal\n")
    r = restore(host, inside, "--name", vm + "2")
    line = one_error(r)
    assert "disk.vmdk" in line, line
    gone(host, vm + "2")
