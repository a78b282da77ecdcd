"""Outside tester: restoring monolithicSparse chains (descriptor embedded in the extent, qemu-img's
delta), cloned through copies in `.hotvcb-checked`, and the .nvram/.vmxf copied by Shell.copy_regular.

Attacked through the CLI on esxisim, on the host and vmkfstools hook of test_outsider_restoresplit.py
(imported): sparse files swapped for a descriptor naming another VM's disk in front of the clone,
embedded hints leading out of the backup or round in a loop, a deep chain, a corrupted embedded
header or descriptor, a .nvram turned into a FIFO/device/symlink (also over SSH file by file),
SIGKILL in the clone then cleanup, two restores at once, odd and non-ASCII file names, a .gz, a
sparse disk too big to read into memory, and a datastore too small for the checked copies.
Hand-built backups are the hostile input; no
manifest (ghettoVCB-style) where a swap is attacked, so no checksum decides the outcome by timing.
"""

import contextlib
import os
import stat
import struct
import subprocess
import sys

import pytest

from esxisim import disks
from simhost import REPO, hotvcb, hotvcb_background, wait_for
from sshd import available as sshd_available
from sshsite import Site, host_sshd
from test_outsider_fixrestore import gone, no_traceback, restored
from test_outsider_restoresplit import (DS1, PAUSE, clear_hooks, hand_backup, holds, hookdir, hooked,  # noqa: F401
                                        in_small_tmpfs, leftovers, make_gz, on_clone, out, registered, site,
                                        victim)

pytestmark = __import__("test_outsider_restoresplit").pytestmark

MiB = 1 << 20


def restore(host, inside, name, *args):
    return hotvcb(host, "restore", inside, "--datastore", "datastore1", "--format", "zeroedthick",
                  "--name", name, *args, timeout=85)


def one_error(r):
    no_traceback(r)
    errors = [line for line in out(r).splitlines() if " -- error: " in line]
    assert r.returncode == 6 and len(errors) == 1, out(r)
    return errors[0]


def qimg(real, *args):
    subprocess.run(["qemu-img"] + list(args), check=True, timeout=60, cwd=real, capture_output=True)


def sparse_of(real, name, src="disk.vmdk"):
    """`name`: a monolithicSparse copy of `src` (the hand backup's random data), no parent."""
    qimg(real, "convert", "-f", "vmdk", "-O", "vmdk", src, name)


def delta_of(real, name, parent):
    """`name`: an empty monolithicSparse delta over `parent` (its hint `parent`), as qemu-img writes it."""
    qimg(real, "create", "-q", "-f", "vmdk", "-F", "vmdk", "-b", parent, name)


def set_hint(path, hint):
    """Rewrite the embedded descriptor's parentFileNameHint of a monolithicSparse file in place (qemu-img
    cannot create one over a parent it cannot open)."""
    with open(path, "r+b") as f:
        head = f.read(64)
        offset, size = struct.unpack("<QQ", head[28:44])
        f.seek(offset * 512)
        text = f.read(size * 512).split(b"\0", 1)[0].decode()
        lines = [('parentFileNameHint="%s"' % hint) if line.startswith("parentFileNameHint") else line
                 for line in text.splitlines()]
        new = ("\n".join(lines) + "\n").encode()
        assert len(new) < size * 512
        f.seek(offset * 512)
        f.write(new.ljust(size * 512, b"\0"))


def ghetto(real):
    """No manifest: a ghettoVCB backup, whose files no checksum speaks for."""
    os.unlink(os.path.join(real, "hotvcb.json"))


def evil_descriptor(secret, sectors=2048):
    return ('# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType="monolithicFlat"\n'
            '\nRW %d FLAT "%s" 0\n\nddb.adapterType = "lsilogic"\n' % (sectors, secret))


# -- a sparse file swapped in front of the clone -----------------------------------------------------
LAYOUTS = {
    # name: (the disk the .vmx names, the file the attacker swaps)
    "sparse-over-sparse": ("top.vmdk", "base.vmdk"),  # qemu-img's delta over a qemu-img base: no descriptor file
    "sparse-alone": ("base.vmdk", "base.vmdk"),  # one monolithicSparse disk
    "vmfssparse-over-sparse": ("base-000001.vmdk", "base.vmdk"),  # ESXi delta descriptor over a sparse base
    "sparse-over-flat": ("top.vmdk", "disk.vmdk"),  # the case the change fixed (test_restore_inputs swaps it)
}


def layout_backup(host, vm, layout):
    """A hand backup (ghettoVCB-style) whose disk is laid out as LAYOUTS[layout]; (inside, real)."""
    top, _swapped = LAYOUTS[layout]
    inside, real = hand_backup(host, vm, keys={"scsi0:0.fileName": top}, random_bytes=64 << 10)
    if layout != "sparse-over-flat":
        sparse_of(real, "base.vmdk")
    if layout == "sparse-over-sparse":
        delta_of(real, "top.vmdk", "base.vmdk")
    elif layout == "sparse-over-flat":
        delta_of(real, "top.vmdk", "disk.vmdk")
    elif layout == "vmfssparse-over-sparse":
        assert os.path.basename(disks.create_delta(os.path.join(real, "base.vmdk"), sesparse=False)) == top
    ghetto(real)
    return inside, real


@pytest.mark.parametrize("layout", ["sparse-over-sparse", "sparse-alone", "vmfssparse-over-sparse"])
def test_a_sparse_chain_member_swapped_before_the_clone_is_not_cloned_from(site, layout):
    """In front of the clone, a file of the chain is overwritten with a descriptor naming another VM's
    flat disk by absolute path (the restore's checks read it as a sparse file, or a descriptor beside
    it). The other VM's bytes must never be restored: refused as a backup changed under the restore,
    one error line, nothing registered."""
    host, _conf, _bk = site
    vm = "swap-" + layout
    secret, data = victim(host, vm)
    inside, real = layout_backup(host, vm, layout)
    swapped = LAYOUTS[layout][1]
    with open(os.path.join(hookdir(host), "evil.vmdk"), "w") as f:
        f.write(evil_descriptor(secret))
    on_clone(host, 'cat "$HOOKS/evil.vmdk" > "%s/%s"' % (inside, swapped))
    try:
        r = restore(host, inside, vm + "2")
    finally:
        clear_hooks(host)
    with open(os.path.join(real, swapped)) as f:
        assert secret in f.read(), "the hook did not run: " + out(r)
    folder = restored(host, vm + "2")
    assert not (os.path.isdir(folder) and holds(folder, data)), "another VM's disk restored: " + out(r)
    line = one_error(r)
    assert "changed during the restore" in line, line
    gone(host, vm + "2")


@pytest.mark.parametrize("layout", ["vmfssparse-over-sparse"])  # sparse-over-sparse: the .gz test's
def test_a_sparse_chain_restores_under_a_new_name_on_another_datastore(site, layout):
    """The control of the swaps: untouched, the chain restores on ds5 under an odd new name, its
    disk the chain's data, no checked copies left."""
    host, _conf, _bk = site
    vm = "ok-" + layout
    inside, real = layout_backup(host, vm, layout)
    name = "Neu \"ü\" 'q' " + layout
    r = hotvcb(host, "restore", inside, "--datastore", "ds5", "--format", "thin", "--name", name, timeout=85)
    assert r.returncode == 0, out(r)
    folder = host.real("/vmfs/volumes/ds5/" + name)
    assert disks.read_all(restored_disk(folder)) == disks.read_all(os.path.join(real, LAYOUTS[layout][0]))
    assert name in registered(host) and leftovers(host, "/vmfs/volumes/ds5") == []


def restored_disk(folder):
    """The one disk of a restored VM: a descriptor and its flat extent, nothing else (no checked copies)."""
    names = sorted(os.listdir(folder))
    (desc,) = [n for n in names if n.endswith(".vmdk") and not n.endswith("-flat.vmdk")]
    assert [n for n in names if not n.endswith((".vmx", ".nvram"))] == sorted([desc, desc[:-5] + "-flat.vmdk"]), names
    assert "parentFileNameHint" not in open(os.path.join(folder, desc)).read()
    return os.path.join(folder, desc)


ODD = {"ascii": ("d 'x' k.vmdk", "t p'1 $(id).vmdk", "b se'2 ;x.vmdk"),
       "umlaut": ("dä k.vmdk", "tö p.vmdk", "bä se.vmdk")}


@pytest.mark.parametrize("names", ["ascii", "umlaut"])
@pytest.mark.parametrize("layout", ["sparse-over-sparse"])
def test_a_sparse_chain_of_odd_file_names_restores(site, layout, names):
    """The chain's files named with spaces, single quotes, `$(...)` and `;`, or with umlauts (a VM named
    `Müller`, hosted sparse disks named after it): a qemu-img delta over a sparse base, over a flat
    base, restores as its chain reads."""
    host, _conf, _bk = site
    vm = "odd-%s-%s" % (layout, names)
    flat, top, base = ODD[names]
    inside, real = hand_backup(host, vm, keys={"scsi0:0.fileName": top}, disks=(("scsi0:0", flat),),
                               random_bytes=64 << 10)
    if layout == "sparse-over-sparse":
        sparse_of(real, base, flat)
        delta_of(real, top, base)
    else:
        delta_of(real, top, flat)
    ghetto(real)
    r = restore(host, inside, vm + "2")
    assert r.returncode == 0, out(r)
    assert disks.read_all(restored_disk(restored(host, vm + "2"))) == disks.read_all(os.path.join(real, top))


def test_a_sparse_chain_in_a_gz_restores_and_its_dry_run_writes_nothing(site):
    """The qemu-img delta over a qemu-img base, packed as a .gz: a dry run leaves the datastore as it
    was; the restore unpacks, clones and leaves neither its scratch folder nor checked copies."""
    host, _conf, _bk = site
    vm = "gz-sparse"
    inside, real = layout_backup(host, vm, "sparse-over-sparse")
    gz = make_gz(host, inside, "2026-12-01_22-00-00")
    before = sorted(os.listdir(host.real(DS1)))
    r = hotvcb(host, "restore", "-d", "1", gz, "--datastore", "datastore1", "--name", vm + "2", timeout=85)
    assert r.returncode == 0 and sorted(os.listdir(host.real(DS1))) == before, out(r)
    r = restore(host, gz, vm + "2")
    assert r.returncode == 0, out(r)
    assert disks.read_all(restored_disk(restored(host, vm + "2"))) == disks.read_all(os.path.join(real, "top.vmdk"))
    assert [e for e in os.listdir(host.real(DS1)) if ".hotvcb" in e] == []


def test_two_restores_of_one_sparse_chain_at_once_and_a_cleanup_between(site):
    """Restore A of a delta over the flat base is held in its clone (its checked copy of the delta in its
    own folder); a `hotvcb cleanup` leaves A alone; restore B of the same backup under another name runs
    to the end meanwhile; A then completes. Both disks are the chain's, no checked copies left."""
    host, _conf, _bk = site
    vm = "two-sparse"
    inside, real = layout_backup(host, vm, "sparse-over-flat")
    on_clone(host, PAUSE)
    run = hotvcb_background(host, "restore", inside, "--datastore", "datastore1", "--name", vm + "A",
                            "--format", "zeroedthick")
    try:
        wait_for(lambda: hooked(host, "in_clone"), timeout=60, what="the clone")
        checked = host.real("%s/%sA.hotvcb-restoring/.hotvcb-checked" % (DS1, vm))
        assert sorted(os.listdir(checked)) == ["disk.vmdk", "top.vmdk"]
        c = hotvcb(host, "cleanup")
        assert c.returncode == 0 and os.path.isdir(host.real("%s/%sA.hotvcb-restoring" % (DS1, vm))), out(c)
        b = restore(host, inside, vm + "B")
        assert b.returncode == 0, out(b)
        open(os.path.join(hookdir(host), "go"), "w").close()
        o, _ = run.communicate(timeout=85)
    finally:
        open(os.path.join(hookdir(host), "abort"), "w").close()
        if run.poll() is None:
            run.kill()
            run.communicate()
        clear_hooks(host)
    assert run.returncode == 0, o
    want = disks.read_all(os.path.join(real, "top.vmdk"))
    for name in (vm + "A", vm + "B"):
        assert disks.read_all(restored_disk(restored(host, name))) == want
        assert registered(host).count(name) == 1
    assert [e for e in os.listdir(host.real(DS1)) if vm in e and ".hotvcb" in e] == []


# -- hints that lead out of the backup, loop, or go deep ---------------------------------------------
def outside_sparse(host, tag):
    """A sparse disk of another VM's, on datastore1; its path on the host."""
    folder = host.real("%s/other-%s" % (DS1, tag))
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "o-flat.vmdk"), "wb") as f:
        f.write(os.urandom(MiB))
    with open(os.path.join(folder, "o.vmdk"), "w") as f:
        f.write(evil_descriptor("o-flat.vmdk"))
    sparse_of(folder, "base.vmdk", "o.vmdk")
    return "%s/other-%s/base.vmdk" % (DS1, tag)


HINTS = ["up", "other-datastore", "symlink", "symlinked-folder", "fifo"]


@pytest.mark.parametrize("how", HINTS)
def test_an_embedded_hint_out_of_the_backup_is_refused_before_anything_is_written(site, how):
    """The delta's embedded parentFileNameHint names a sparse disk outside the backup: `../`, an absolute
    path on another datastore, a `base.vmdk` in the backup that is a symlink to it, a folder in
    the backup that is a symlink, or a FIFO in the backup (never waited on). One error line naming the
    delta, exit 6, nothing written on the target, nothing registered."""
    host, _conf, _bk = site
    vm = "hint-" + how
    outside = outside_sparse(host, how)
    inside, real = hand_backup(host, vm, keys={"scsi0:0.fileName": "top.vmdk"})
    delta_of(real, "top.vmdk", "disk.vmdk")
    hint = {"up": "../../../datastore1/other-%s/base.vmdk" % how,
            "other-datastore": "/vmfs/volumes/ds5/other-%s/base.vmdk" % how, "symlink": "base.vmdk",
            "symlinked-folder": "sub/base.vmdk", "fifo": "base.vmdk"}[how]
    if how == "other-datastore":
        os.makedirs(host.real("/vmfs/volumes/ds5/other-%s" % how))
        os.rename(host.real(outside), host.real(hint))
    elif how == "symlink":
        os.symlink(outside, os.path.join(real, "base.vmdk"))
    elif how == "symlinked-folder":
        os.symlink(os.path.dirname(outside), os.path.join(real, "sub"))
    elif how == "fifo":
        os.mkfifo(os.path.join(real, "base.vmdk"))
    set_hint(os.path.join(real, "top.vmdk"), hint)
    ghetto(real)
    before = sorted(os.listdir(host.real(DS1)))
    line = one_error(restore(host, inside, vm + "2"))
    assert "top.vmdk" in line or "base.vmdk" in line, line
    assert sorted(os.listdir(host.real(DS1))) == before
    gone(host, vm + "2")


@pytest.mark.parametrize("loop", ["self", "pair", "dot-self"])
def test_a_hint_loop_is_refused_in_one_line(site, loop):
    """Embedded hints that go round: a disk naming itself, two naming each other, a disk naming
    `./itself` (another string for the same file). One error line, nothing registered."""
    host, _conf, _bk = site
    vm = "loop-" + loop
    inside, real = hand_backup(host, vm, keys={"scsi0:0.fileName": "a.vmdk"})
    delta_of(real, "a.vmdk", "disk.vmdk")
    delta_of(real, "b.vmdk", "disk.vmdk")
    set_hint(os.path.join(real, "a.vmdk"), {"self": "a.vmdk", "pair": "b.vmdk", "dot-self": "./a.vmdk"}[loop])
    set_hint(os.path.join(real, "b.vmdk"), "a.vmdk")
    ghetto(real)
    line = one_error(restore(host, inside, vm + "2"))
    assert "a.vmdk" in line, line
    gone(host, vm + "2")


@pytest.mark.parametrize("depth", [30, 66])
def test_a_deep_sparse_chain_restores_or_is_refused_in_one_line(site, depth):
    """`depth` qemu-img deltas stacked over the flat base, each one's hint the one below: every one is
    copied into .hotvcb-checked (each above the descriptor file). 30 restores as the chain reads; 66
    (past the 64 parents a chain may have) is refused in one line."""
    host, _conf, _bk = site
    vm = "deep-%d" % depth
    top = "s%02d.vmdk" % depth
    inside, real = hand_backup(host, vm, keys={"scsi0:0.fileName": top}, random_bytes=64 << 10)
    below = "disk.vmdk"
    for k in range(1, depth + 1):
        delta_of(real, "s%02d.vmdk" % k, below)
        below = "s%02d.vmdk" % k
    ghetto(real)
    r = restore(host, inside, vm + "2")
    if depth > 64:
        assert "deeper than 64" in one_error(r)
        gone(host, vm + "2")
        return
    assert r.returncode == 0, out(r)
    assert disks.read_all(restored_disk(restored(host, vm + "2"))) == disks.read_all(os.path.join(real, top))


# -- a corrupted sparse header or embedded descriptor ------------------------------------------------
def corrupt(path, how):
    with open(path, "r+b") as f:
        head = f.read(64)
        offset, size = struct.unpack("<QQ", head[28:44])
        if how == "garbage":
            f.seek(offset * 512)
            f.write(bytes(range(1, 256)) * (size * 2))
        elif how == "huge-offset":
            f.seek(28)
            f.write(struct.pack("<Q", 1 << 62))
        elif how == "huge-size":
            f.seek(36)
            f.write(struct.pack("<Q", 1 << 40))
        elif how == "huge-capacity":
            f.seek(12)
            f.write(struct.pack("<Q", 1 << 62))
        elif how == "outside-extent":
            f.seek(offset * 512)
            text = f.read(size * 512).split(b"\0", 1)[0]
            f.seek(offset * 512)
            f.write(text.replace(b'SPARSE "top.vmdk"', b'FLAT "/vmfs/volumes/datastore1/victim-corrupt-outside-extent/'
                                 b'victim-flat.vmdk" 0'))
        elif how == "binary-hint":
            f.seek(offset * 512)
            text = f.read(size * 512).split(b"\0", 1)[0]
            f.seek(offset * 512)
            f.write(text.replace(b'parentFileNameHint="disk.vmdk"', b'parentFileNameHint="d\xffisk\x01.vmdk"'))


@pytest.mark.parametrize("how", ["garbage", "huge-offset", "huge-size", "huge-capacity", "binary-hint",
                                 "outside-extent"])
def test_a_corrupted_sparse_header_is_one_line_or_restores(site, how):
    """The qemu-img delta's embedded descriptor overwritten with garbage (NULs among it), its header's
    descriptorOffset/descriptorSize/capacity made huge, its hint made of bytes no name has. The
    restore either goes through or fails in one error line (no traceback); nothing registered or
    left behind when it fails. An embedded extent line naming another VM's flat disk
    (`outside-extent`) is refused, as it would be in a descriptor file."""
    host, _conf, _bk = site
    vm = "corrupt-" + how
    _secret, data = victim(host, vm)
    inside, real = hand_backup(host, vm, keys={"scsi0:0.fileName": "top.vmdk"})
    delta_of(real, "top.vmdk", "disk.vmdk")
    corrupt(os.path.join(real, "top.vmdk"), how)
    ghetto(real)
    r = restore(host, inside, vm + "2")
    no_traceback(r)
    if how == "outside-extent":
        assert "outside the backup" in one_error(r)
    if r.returncode != 0:
        one_error(r)
        gone(host, vm + "2")
    else:
        assert not holds(restored(host, vm + "2"), data)
    assert [e for e in leftovers(host) if ".hotvcb-restoring" in e] == []


# -- .nvram / .vmxf that turn into something else ---------------------------------------------------
@pytest.mark.parametrize("what", ["fifo", "device", "symlink-to-fifo"])
def test_a_nvram_turned_into_a_special_file_before_its_copy_is_refused(site, what):
    """The backup's .nvram is a regular file when planned, then (in front of the disk's clone, so after
    every look the plan takes) a FIFO (a copy that opens it would wait forever), a character device,
    or a symlink to a FIFO. One error line naming it, nothing registered."""
    host, _conf, _bk = site
    vm = "nv-" + what
    inside, real = hand_backup(host, vm, keys={"nvram": vm + ".nvram"})
    with open(os.path.join(real, vm + ".nvram"), "wb") as f:
        f.write(b"nvram" * 100)
    ghetto(real)
    nv = "%s/%s.nvram" % (inside, vm)
    make = {"fifo": 'mkfifo "%s"' % nv, "device": 'mknod "%s" c 1 3' % nv,
            "symlink-to-fifo": 'mkfifo "$HOOKS/fifo" && ln -s "$HOOKS/fifo" "%s"' % nv}[what]
    on_clone(host, 'rm -f "%s" && %s' % (nv, make))
    try:
        r = restore(host, inside, vm + "2")
    finally:
        clear_hooks(host)
    assert not os.path.isfile(os.path.join(real, vm + ".nvram")) or os.path.islink(
        os.path.join(real, vm + ".nvram")), "the hook did not run: " + out(r)
    line = one_error(r)
    assert vm + ".nvram" in line, line
    gone(host, vm + "2")


# -- SIGKILL and a full datastore while the checked copies are there ---------------------------------
def test_sigkill_in_the_clone_of_a_sparse_chain_then_cleanup_leaves_nothing(site):
    """SIGKILL while vmkfstools clones from the checked copies (the sparse delta copied whole into
    .hotvcb-checked): `hotvcb cleanup` removes the unfinished folder, its copies and its record; the
    same name then restores."""
    host, _conf, _bk = site
    vm = "kill-sparse"
    inside, real = layout_backup(host, vm, "sparse-over-flat")
    name = vm + "2"
    checked = "%s/%s.hotvcb-restoring/.hotvcb-checked" % (DS1, name)
    on_clone(host, 'ls -A "%s" > "$HOOKS/seen"; kill -9 $PPID; exit 1' % checked)
    try:
        r = restore(host, inside, name)
        with open(os.path.join(hookdir(host), "seen")) as f:
            seen = f.read().split()
    finally:
        clear_hooks(host)
    assert r.returncode != 0 and "top.vmdk" in seen, (seen, out(r))
    r = hotvcb(host, "cleanup")
    assert r.returncode == 0, out(r)
    assert [e for e in leftovers(host) if name in e or e.startswith(".hotvcb-restoring")] == [], leftovers(host)
    r = restore(host, inside, name)
    assert r.returncode == 0, out(r)
    assert registered(host).count(name) == 1


def test_a_datastore_too_full_for_the_checked_copy_fails_cleanly(site):
    """The sparse delta holds 4 MiB written over its parent, so its checked copy needs that much; the
    datastore (a 1 MiB tmpfs on ds5, though esxisim says it has room) fills while it is copied. One
    error line, nothing of ours left on ds5, nothing registered."""
    host, _conf, _bk = site
    vm = "full-sparse"
    inside, real = hand_backup(host, vm, keys={"scsi0:0.fileName": "top.vmdk"}, size=4 * MiB)
    delta_of(real, "top.vmdk", "disk.vmdk")
    subprocess.run(["qemu-io", "-f", "vmdk", "-c", "write -P 0x5a 0 4M", "top.vmdk"], check=True, timeout=60,
                   cwd=real, capture_output=True)
    ghetto(real)
    r = in_small_tmpfs(host, "1m", 0, "restore", inside, "--datastore", "ds5", "--name", vm + "2",
                       "--format", "zeroedthick")
    o = out(r)
    assert r.returncode == 6 and "Traceback" not in o and "internal error" not in o, o
    assert len([line for line in o.splitlines() if " -- error: " in line]) == 1, o
    assert "LEFT: \n" in o, o
    assert vm + "2" not in registered(host)


# -- a big sparse file -----------------------------------------------------------------------------
@pytest.mark.parametrize("big", [False, True])
def test_a_big_sparse_disk_is_planned_without_reading_it_whole(site, big):
    """A lone monolithicSparse disk grown to 1.5 GiB (its tail a hole: what a delta holding 1.5 GiB of
    writes weighs) restores under a 768 MiB address-space limit: its descriptor is within its first
    64 KiB, so nothing needs the rest in memory. The control: the same disk at its own size."""
    host, _conf, _bk = site
    vm = "big-%s" % big
    inside, real = hand_backup(host, vm, keys={"scsi0:0.fileName": "base.vmdk"})
    sparse_of(real, "base.vmdk")
    if big:
        os.truncate(os.path.join(real, "base.vmdk"), 1536 * MiB)
    ghetto(real)
    argv = [sys.executable, "-m", "esxisim", "shell", host.root, "--", "sh", "-c", 'ulimit -v %d && exec "$@"'
            % (768 << 10), "sh", "env", "PYTHONPATH=" + REPO, "/bin/python", "-m", "hotvcb", "restore", inside,
            "--datastore", "datastore1", "--format", "zeroedthick", "--name", vm + "2"]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=85, env=dict(os.environ, PYTHONPATH=REPO),
                       cwd=REPO)
    assert r.returncode == 0, out(r)[-3000:]
    assert vm + "2" in registered(host)


# -- over SSH, file by file ------------------------------------------------------------------------
@contextlib.contextmanager
def file_by_file(host, tmp_path):
    """SSH mode against the module's host with no python there (so hotvcb goes file by file over SSH:
    SshShell's copy_file and copy_regular); the host's python is put back after, as the other tests
    of this module run hotvcb on the host."""
    from esxisim import toolgen

    usr_bin, saved = toolgen.upper(host, "usr_bin"), []
    for name in ("python", "python3"):
        path = os.path.join(usr_bin, name)
        if os.path.lexists(path):
            os.rename(path, path + ".sparsecopy")
            saved.append(path)
        os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(0, 0))  # a whiteout: no python on the host
    try:
        (tmp_path / "bin").mkdir()
        with host_sshd(host, tmp_path / "sshd") as sshd:
            yield Site(host, sshd, tmp_path / "bin", tmp_path)
    finally:
        for name in ("python", "python3"):
            os.unlink(os.path.join(usr_bin, name))
        for path in saved:
            os.rename(path + ".sparsecopy", path)


@pytest.mark.skipif(not sshd_available(), reason="needs sshd")
def test_over_ssh_a_sparse_chain_restores_and_a_nvram_turned_fifo_is_refused(site, tmp_path):
    """File by file over SSH: a qemu-img delta over the flat base (copied whole into .hotvcb-checked by
    the SSH shell) restores as the chain reads, its .nvram byte for byte; then the same backup with its
    .nvram made a FIFO in front of the clone (after the plan's look; busybox cp would wait on it), and
    then a symlink to another VM's file, is refused in one error line, nothing registered, no hang."""
    host, _conf, _bk = site
    vm = "ssh-sparse"
    inside, real = layout_backup(host, vm, "sparse-over-flat")
    with open(os.path.join(real, vm + ".nvram"), "wb") as f:
        f.write(b"nv" * 999)
    with open(os.path.join(real, vm + ".vmx"), "a") as f:
        f.write('nvram = "%s.nvram"\n' % vm)
    nv = "%s/%s.nvram" % (inside, vm)
    with file_by_file(host, tmp_path) as ssh:
        r, _trips = ssh.run("restore", inside, "--datastore", "datastore1", "--format", "thin", "--name", vm + "2")
        assert r.returncode == 0 and "going file by file over SSH" in r.out, r.out
        folder = restored(host, vm + "2")
        assert disks.read_all(restored_disk(folder)) == disks.read_all(os.path.join(real, "top.vmdk"))
        with open(os.path.join(folder, vm + "2.nvram"), "rb") as f:
            assert f.read() == b"nv" * 999
        on_clone(host, 'rm -f "%s" && mkfifo "%s"' % (nv, nv))
        try:
            r, _trips = ssh.run("restore", inside, "--datastore", "datastore1", "--format", "thin",
                                "--name", vm + "3")
        finally:
            clear_hooks(host)
        assert stat.S_ISFIFO(os.lstat(os.path.join(real, vm + ".nvram")).st_mode), "the hook did not run: " + r.out
        line = one_error(r)
        assert vm + ".nvram" in line, line
        gone(host, vm + "3")
        os.unlink(os.path.join(real, vm + ".nvram"))
        with open(os.path.join(real, vm + ".nvram"), "wb") as f:
            f.write(b"nv" * 999)
        secret, data = victim(host, vm)
        on_clone(host, 'rm -f "%s" && ln -s "%s" "%s"' % (nv, secret, nv))
        try:
            r, _trips = ssh.run("restore", inside, "--datastore", "datastore1", "--format", "thin",
                                "--name", vm + "4")
        finally:
            clear_hooks(host)
    assert os.path.islink(os.path.join(real, vm + ".nvram")), "the hook did not run: " + r.out
    assert not (os.path.isdir(restored(host, vm + "4")) and holds(restored(host, vm + "4"), data)), r.out
    line = one_error(r)
    assert vm + ".nvram" in line and "not a regular file" in line, line
    gone(host, vm + "4")
