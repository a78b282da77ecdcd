"""What a folder restore takes from the backup and from its request, beyond the disk it clones:

- the .nvram and .vmxf are copied only as regular files of the backup (a symlink there would
  have another file copied as the VM's), looked at by the plan and again just before the copy;
- a name the restored VM cannot have (a line break, another control character, a line separator),
  given (--name, a restore file's 4th field, also with --repo) or the backup's own displayName,
  is refused with one line naming it, before anything is written; a backup refuses a VM so named
  the same way (its backup folder would be one no restore reads);
- a delta disk's parents, which vmkfstools reads as the delta's data, are checked as the delta is
  (every file beside it in the backup) and cloned from the checked copies of their texts, so a
  parent descriptor swapped after the checks is never read; a kept snapshot tree's deltas get the
  descriptor text the plan checked, not the file as it is when copied.

Through the CLI on esxisim; the host, its vmkfstools hook and the helpers are
test_outsider_restoresplit.py's and test_outsider_fixrestore.py's (imported, not copied). Hand-built backups are the hostile input.
"""

import os
import subprocess

import pytest

from esxisim import disks
from simhost import VOLUME, hotvcb, snapshot_names, write_conf
from test_outsider_crosshv import TS
from test_outsider_fixrestore import copy_backup, gone, kinds, no_traceback, restored, write_bytes  # noqa: F401
from test_outsider_restoresplit import (DS1, clear_hooks, hand_backup, holds, on_clone, out, registered,  # noqa: F401
                                        reseal, site, victim)

pytestmark = __import__("test_outsider_restoresplit").pytestmark


def restore(host, inside, *args):
    return hotvcb(host, "restore", inside, "--datastore", "datastore1", "--format", "zeroedthick", *args)


def one_error(r):
    """The run's one error line (exit 6: its only request failed), no traceback."""
    no_traceback(r)
    errors = [line for line in out(r).splitlines() if " -- error: " in line]
    assert r.returncode == 6 and len(errors) == 1, out(r)
    return errors[0]


# -- .nvram and .vmxf ------------------------------------------------------------------------------
@pytest.mark.parametrize("key,ext", [("nvram", ".nvram"), ("extendedConfigFile", ".vmxf")])
@pytest.mark.parametrize("when", ["planned", "swapped"])
def test_a_side_file_that_is_a_symlink_out_of_the_backup_is_not_copied(site, key, ext, when):
    """The backup's .nvram (.vmxf) is a symlink to another VM's file, there when the restore plans
    (`planned`: refused before anything is written, a dry run too) or put there in front of the disk's
    clone (`swapped`: refused before the copy). Sealed after the link was made, so its checksum even
    holds: the other file must not be restored as this VM's."""
    host, _conf, _bk = site
    vm = "side-%s-%s" % (ext[1:], when)
    secret, _data = victim(host, vm)
    inside, real = hand_backup(host, vm, keys={key: vm + ext})
    side = os.path.join(real, vm + ext)
    with open(side, "wb") as f:
        f.write(b"its own" * 100)
    if when == "planned":
        os.unlink(side)
        os.symlink(host.real(secret), side)
        reseal(real, vm)
        dry = hotvcb(host, "restore", "-d", "1", inside, "--datastore", "datastore1", "--name", vm + "2")
        assert "not a regular file" in one_error(dry) and vm + ext in one_error(dry), out(dry)
    else:
        reseal(real, vm)
        on_clone(host, 'rm "%s/%s" && ln -s "%s" "%s/%s"' % (inside, vm + ext, secret, inside, vm + ext))
    try:
        r = restore(host, inside, "--name", vm + "2")
    finally:
        clear_hooks(host)
    assert os.path.islink(side), "the hook did not run: " + out(r)
    line = one_error(r)
    assert "%s/%s" % (inside, vm + ext) in line and "not a regular file" in line, line
    gone(host, vm + "2")


def test_a_regular_side_file_is_copied_as_it_is(site):
    """The control: the same backup with its own .nvram and .vmxf restores them byte for byte."""
    host, _conf, _bk = site
    vm = "side-ok"
    inside, real = hand_backup(host, vm, keys={"nvram": vm + ".nvram", "extendedConfigFile": vm + ".vmxf"})
    for ext in (".nvram", ".vmxf"):
        with open(os.path.join(real, vm + ext), "wb") as f:
            f.write(ext.encode() * 1000)
    reseal(real, vm)
    r = restore(host, inside, "--name", vm + "2")
    assert r.returncode == 0, out(r)
    for ext in (".nvram", ".vmxf"):
        with open(os.path.join(restored(host, vm + "2"), vm + "2" + ext), "rb") as f:
            assert f.read() == ext.encode() * 1000


# -- names -----------------------------------------------------------------------------------------
NAMES = {"lf": "Zeilen\numbruch", "cr": "a\rb", "tab": "a\tb", "esc": "a\x1b[31mb", "nel": "a\x85b",
         "u2028": "a\u2028b", "del": "a\x7fb"}


@pytest.mark.parametrize("what", sorted(NAMES))
def test_a_new_name_with_a_control_character_is_refused_before_anything_is_written(site, what):
    """--name holding a line break or other control character: one error naming it escaped (the raw
    character never in the output), exit 6, nothing written or registered."""
    host, _conf, bk = site
    name = NAMES[what]
    before = sorted(os.listdir(host.real(DS1)))
    r = hotvcb(host, "restore", bk, "--datastore", "datastore1", "--name", name)
    line = one_error(r)
    assert "%r cannot be the restored VM's name: it holds a line break or other control character" % name in line, line
    assert name not in out(r)
    assert sorted(os.listdir(host.real(DS1))) == before and name not in registered(host)


@pytest.mark.parametrize("char", ["\x85", "\u2028"])
def test_a_restore_file_name_with_a_line_separator_is_refused(site, char):
    """A restore file line (UTF-8) whose 4th field holds NEL or U+2028 (no C0 control character, which
    the file's reader refuses itself): that line fails naming it, the next restores (exit 4)."""
    host, _conf, bk = site
    path = write_bytes(host, "sep_%x_restore" % ord(char),
                       ("%s;datastore1;3;neu%sname\n%s;datastore1;3;sep-%x\n" % (bk, char, bk, ord(char))).encode())
    before = sorted(os.listdir(host.real(DS1)))
    r = hotvcb(host, "restore", "-c", path)
    no_traceback(r)
    errors = [line for line in out(r).splitlines() if " -- error: " in line]
    assert r.returncode == 4 and len(errors) == 1, out(r)
    assert "%s:1: %r cannot be the restored VM's name" % (path, "neu%sname" % char) in errors[0], errors
    assert sorted(os.listdir(host.real(DS1))) == sorted(before + ["sep-%x" % ord(char)])


def test_the_backups_own_name_with_a_line_break_is_refused_and_a_new_name_restores(site):
    """No --name: the name is the backup's displayName, here holding a line break (`|0A` in the .vmx).
    Refused, saying to give a name; under a plain new name the same backup restores."""
    host, _conf, _bk = site
    inside, real = hand_backup(host, "ownbreak", keys={"displayName": "own\nbreak"})
    before = sorted(os.listdir(host.real(DS1)))
    line = one_error(hotvcb(host, "restore", inside, "--datastore", "datastore1"))
    assert "'own\\nbreak' cannot be the restored VM's name" in line and "restore it under a new name" in line, line
    assert sorted(os.listdir(host.real(DS1))) == before
    r = restore(host, inside, "--name", "ownbreak2")
    assert r.returncode == 0 and "ownbreak2" in registered(host), out(r)


def test_a_repository_restore_refuses_the_name_before_opening_the_repository(site):
    """restore --repo stages the whole backup on the datastore before the folder restore: the name is
    refused first (here before the repository, which does not exist, is even looked for)."""
    host, _conf, _bk = site
    line = one_error(hotvcb(host, "restore", "--repo", VOLUME + "/no-repo", "--latest", "x", "--datastore",
                            "datastore1", "--name", "a\nb"))
    assert "'a\\nb' cannot be the restored VM's name" in line, line


@pytest.mark.parametrize("escaped,name", [("a|09b", "a\tb"), ("a|1B[31mb", "a\x1b[31mb"), ("a\u2028b", "a\u2028b")])
def test_a_vm_named_with_a_control_character_is_not_backed_up(site, escaped, name):
    """A VM whose displayName holds a tab or an escape sequence (`|09`, `|1B` in its .vmx) or U+2028 (as
    it is): its backup would be a folder so named, which restore refuses to read. Backup refuses it
    with one error naming it escaped, before any change: no snapshot, no backup folder."""
    host, _conf, _bk = site
    folder = "ctl-%x" % ord(name[1])
    vmid = host.create_vm(folder, "datastore1", [{"size": "4M"}])
    vmx = host.real("%s/%s/%s.vmx" % (DS1, folder, folder))
    with open(vmx, encoding="utf-8") as f:
        text = f.read()
    with open(vmx, "w", encoding="utf-8") as f:
        f.write(text.replace('displayName = "%s"' % folder, 'displayName = "%s"' % escaped))
    before = sorted(os.listdir(host.real(VOLUME)))
    r = hotvcb(host, "backup", "-m", name, "-g", write_conf(host, name="ctl.conf"))
    line = one_error(r)
    assert "VM %r is not backed up: it holds a line break or other control character" % name in line, line
    assert "rename the VM" in line and snapshot_names(host, vmid) == [], line
    assert sorted(os.listdir(host.real(VOLUME))) == before


# -- a delta's parents -----------------------------------------------------------------------------
# the delta's descriptor a file of its own; embedded in its extent; a file of its own over an embedded one
TOPS = ["vmfsSparse", "monolithicSparse", "mixed"]


def delta_backup(host, vm, top="vmfsSparse"):
    """A hand backup whose disk is a delta (empty) of `disk.vmdk` beside it, sealed: an ESXi vmfsSparse
    delta `disk-000001.vmdk`; (`monolithicSparse`) one file, its descriptor embedded, as qemu-img writes
    one over a parent named beside it; (`mixed`) a vmfsSparse `disk-000002.vmdk` over such a file.
    (path on the host, real path, the parent's descriptor text)"""
    name = "disk-000002.vmdk" if top == "mixed" else "disk-000001.vmdk"
    inside, real = hand_backup(host, vm, keys={"scsi0:0.fileName": name}, random_bytes=64 << 10)
    if top != "vmfsSparse":
        subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", "-F", "vmdk", "-b", "disk.vmdk", "disk-000001.vmdk"],
                       check=True, timeout=60, cwd=real)
        with open(os.path.join(real, "disk-000001.vmdk"), "rb") as f:
            assert f.read(4) == b"KDMV"
    if top != "monolithicSparse":
        delta = disks.create_delta(os.path.join(real, "disk-000001.vmdk" if top == "mixed" else "disk.vmdk"),
                                   sesparse=False)
        assert os.path.basename(delta) == name
    reseal(real, vm)
    with open(os.path.join(real, "disk.vmdk")) as f:
        return inside, real, f.read()


@pytest.mark.parametrize("top", TOPS)
def test_a_delta_restores_as_the_disk_its_chain_reads(site, top):
    """The control: the delta is cloned through its parent into one disk holding the base's bytes, with
    no parent of its own; nothing of the checked copies is left."""
    host, _conf, _bk = site
    vm = "delta-ok-" + top
    inside, real, _text = delta_backup(host, vm, top)
    r = restore(host, inside, "--name", vm + "2")
    assert r.returncode == 0, out(r)
    folder = restored(host, vm + "2")
    assert sorted(os.listdir(folder)) == [vm + "2.vmx", "disk-flat.vmdk", "disk.vmdk"], os.listdir(folder)
    assert "parentFileNameHint" not in open(os.path.join(folder, "disk.vmdk")).read()
    top_file = "disk-000002.vmdk" if top == "mixed" else "disk-000001.vmdk"
    assert disks.read_all(os.path.join(folder, "disk.vmdk")) == disks.read_all(os.path.join(real, top_file))


@pytest.mark.parametrize("sealed", [True, False])
def test_a_parent_naming_a_file_outside_the_backup_is_refused(site, sealed):
    """The delta names only files beside it, its parent another VM's flat disk: refused before anything
    is written, naming the parent and the file (sealed after the edit; and as a ghettoVCB backup)."""
    host, _conf, _bk = site
    vm = "parent-out-%s" % sealed
    secret, _data = victim(host, vm)
    inside, real, text = delta_backup(host, vm)
    with open(os.path.join(real, "disk.vmdk"), "w") as f:
        f.write(text.replace('"disk-flat.vmdk"', '"%s"' % secret))
    reseal(real, vm)
    if not sealed:
        os.unlink(os.path.join(real, "hotvcb.json"))
    before = sorted(os.listdir(host.real(DS1)))
    line = one_error(restore(host, inside, "--name", vm + "2"))
    assert "%s/disk.vmdk names %r, a file outside the backup" % (inside, secret) in line, line
    assert sorted(os.listdir(host.real(DS1))) == before
    gone(host, vm + "2")


@pytest.mark.parametrize("top", TOPS)
@pytest.mark.parametrize("swap", ["victim", "broken"])
def test_a_parent_swapped_after_the_checks_is_not_cloned_from(site, swap, top):
    """A ghettoVCB-style backup (no manifest) of a delta; in front of the clone its parent's descriptor
    is swapped for one naming another VM's disk (`victim`), or a flat file that is not there (`broken`:
    a clone reading it would fail). The clone reads the checked copy of the parent, so it never has the
    other VM's bytes and does not fail; the swap, found after the clone, refuses the restore. The same
    for a delta whose descriptor is embedded in its sparse extent (its hint is followed from the folder
    of the file the clone is handed)."""
    host, _conf, _bk = site
    vm = "parent-swap-%s-%s" % (swap, top)
    secret, data = victim(host, vm)
    inside, real, text = delta_backup(host, vm, top)
    os.unlink(os.path.join(real, "hotvcb.json"))
    evil = text.replace('"disk-flat.vmdk"', '"%s"' % (secret if swap == "victim" else "gone-flat.vmdk"))
    with open(os.path.join(host.root, "hooks", "evil.vmdk"), "w") as f:
        f.write(evil)
    on_clone(host, 'cat "$HOOKS/evil.vmdk" > "%s/disk.vmdk"' % inside)
    try:
        r = restore(host, inside, "--name", vm + "2")
    finally:
        clear_hooks(host)
    assert open(os.path.join(real, "disk.vmdk")).read() == evil, "the hook did not run: " + out(r)
    folder = restored(host, vm + "2")
    assert not (os.path.isdir(folder) and holds(folder, data)), "another VM's disk restored: " + out(r)
    line = one_error(r)
    assert "%s/disk.vmdk changed during the restore" % inside in line, line
    gone(host, vm + "2")


def test_a_snapshot_tree_delta_swapped_after_the_plan_is_restored_as_checked(site, kinds):
    """A kept snapshot tree (ghettoVCB-style: no checksums to notice) whose delta descriptor is swapped,
    in front of the base disk's clone, for one naming another VM's disk by absolute path. The restored
    snapshot's delta must name its own extent, never the other VM's disk (restored, or refused)."""
    host, _conf, _bk = site
    secret, _data = victim(host, "tree-swap")
    inside, real = copy_backup(host, kinds["tree"], "Baum", "-swap")
    os.unlink(os.path.join(real, "hotvcb.json"))
    tree = os.path.join(real, "snapshot-tree")
    delta = sorted(n for n in os.listdir(tree) if n.endswith(".vmdk") and "-00000" in n and "-delta" not in n
                   and "-sesparse" not in n)[0]
    text = open(os.path.join(tree, delta)).read()
    extent = [line.split('"')[1] for line in text.splitlines() if line.startswith("RW ")][0]
    evil = text.replace('"%s"' % extent, '"%s"' % secret)
    with open(os.path.join(host.root, "hooks", "evil.vmdk"), "w") as f:
        f.write(evil)
    on_clone(host, 'cat "$HOOKS/evil.vmdk" > "%s/snapshot-tree/%s"' % (inside, delta))
    try:
        r = restore(host, inside, "--name", "Baum-swap2")
    finally:
        clear_hooks(host)
    no_traceback(r)
    assert open(os.path.join(tree, delta)).read() == evil, "the hook did not run: " + out(r)
    if r.returncode == 0:
        with open(os.path.join(restored(host, "Baum-swap2"), delta)) as f:
            got = f.read()
        assert secret not in got and '"%s"' % extent in got, got
    else:
        assert r.returncode == 6, out(r)
        gone(host, "Baum-swap2")
