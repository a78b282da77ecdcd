"""Outside tester: restore after 'fixrestore2' (merge ba7c047): vmdk.writable refuses control characters
and Unicode line separators in descriptor paths, restore refuses a backup path holding one before logging
it, manifest.load reads hotvcb.json bounded, every snapshot-tree delta is looked at before its copy, the
sparse magic at any size, a BOM dropped at the start of every -c line.

Attacked through the CLI on esxisim; host, hooks and helpers are test_outsider_restoresplit.py's and
test_outsider_fixrestore.py's (imported, not copied).
"""

import os
import subprocess

import pytest

from simhost import REPO, VOLUME, _argv, hotvcb
from test_outsider_crosshv import TS, seal
from test_outsider_fixrestore import gone, no_traceback, restored, same_as_backup, write_bytes
from test_outsider_restoresplit import (DS1, MiB, clear_hooks, hand_backup, holds, hookdir, on_clone, out,  # noqa: F401
                                        registered, reseal, site, victim)

pytestmark = __import__("test_outsider_restoresplit").pytestmark


def restore(host, inside, name, *extra):
    return hotvcb(host, "restore", inside, "--datastore", "datastore1", "--name", name, "--format", "zeroedthick",
                  *extra)


def restore_raw(host, inside, name):
    """As restore(), the output kept as bytes (decoded with backslashreplace): a path of bytes no UTF-8."""
    env = dict(os.environ, PYTHONPATH=REPO)
    r = subprocess.run(_argv(host, ["restore", inside, "--datastore", "datastore1", "--name", name, "--format",
                                    "zeroedthick"]), capture_output=True, timeout=180, env=env, cwd=REPO)
    r.stdout, r.stderr = (r.stdout.decode("utf-8", "backslashreplace"), r.stderr.decode("utf-8", "backslashreplace"))
    return r


def move_under(host, real, vm, sub):
    """Move the hand backup `real` under VOLUME/sub (sub may be bytes): its new path on the host."""
    base = os.fsencode(host.real(VOLUME)) + b"/" + os.fsencode(sub)
    os.makedirs(base, exist_ok=True)
    os.rename(real, base + b"/" + ("%s-%s" % (vm, TS)).encode())
    return "%s/%s/%s-%s" % (VOLUME, os.fsdecode(os.fsencode(sub)), vm, TS)


# -- odd characters in the backup's path ------------------------------------------------------------------
CHARS = {"u2028": "\u2028", "u0085": "\x85", "tab": "\t", "del": "\x7f", "esc": "\x1b[2J\x1b[31m",
         "u2029": "\u2029", "vt": "\x0b"}


@pytest.mark.parametrize("what", sorted(CHARS))
def test_a_control_character_in_the_backups_path(site, what):
    """A folder above the backup holds a line separator / control character / escape sequence: refused
    before logging it (the raw character never reaches the output), or restored as the same disk; never a
    traceback, never a half VM."""
    host, _conf, _bk = site
    vm = "cc-" + what
    inside, real = hand_backup(host, vm)
    new_inside = move_under(host, real, vm, "a%sb" % CHARS[what])
    r = restore(host, new_inside, vm + "2")
    no_traceback(r)
    assert CHARS[what] not in out(r), "raw character in the output: %r" % out(r)
    if r.returncode == 0:
        same_as_backup(host, vm + "2", new_inside)
    else:
        assert r.returncode == 6, out(r)
        gone(host, vm + "2")


def test_bytes_invalid_in_utf8_in_the_backups_path(site):
    """A folder above the backup named with a byte that is no UTF-8 (`a\\xffb`; Python holds it as a lone
    surrogate): refused with a message, or restored as the same disk; never a traceback/internal error."""
    host, _conf, _bk = site
    vm = "surr"
    inside, real = hand_backup(host, vm)
    new_inside = move_under(host, real, vm, b"a\xffb")
    r = restore_raw(host, new_inside, vm + "2")
    no_traceback(r)
    if r.returncode == 0:
        same_as_backup(host, vm + "2", new_inside)
    else:
        assert r.returncode == 6, out(r)
        gone(host, vm + "2")


def test_a_quote_in_the_vm_and_disk_names(site):
    """`"` in the VM's name, folder and disk file name (the extent's name may hold one): restored as the same
    disk, or refused with a reason; never a traceback."""
    host, _conf, _bk = site
    from test_outsider_crosshv import esxi_backup
    vm = 'q"uote'
    real = esxi_backup(host.real(VOLUME), vm, disks=(("scsi0:0", 'di"sk.vmdk'),))
    inside = "%s/%s/%s-%s" % (VOLUME, vm, vm, TS)
    r = restore(host, inside, 'new"q')
    no_traceback(r)
    if r.returncode == 0:
        same_as_backup(host, 'new"q', inside, 'di"sk-flat.vmdk')
    else:
        assert r.returncode == 6, out(r)
        gone(host, 'new"q')
    assert os.path.isdir(real)


# -- odd characters in the new name ----------------------------------------------------------------------
NAMES = {"u2028": 'x\u2028memSize = "9999"', "u0085": 'x\x85memSize = "9999"', "u2029": 'x\u2029memSize = "9999"'}


@pytest.mark.parametrize("what", sorted(NAMES))
def test_a_line_separator_in_the_new_name_reads_back_as_the_whole_display_name(site, what):
    """--name holding a Unicode line separator then `memSize = "9999"`: refused, or restored with the .vmx
    read back by hotvcb's own parser holding the backup's memSize and the whole name as displayName."""
    host, _conf, _bk = site
    from hotvcb.vmx import VmxFile
    vm = "nm-" + what
    inside, _real = hand_backup(host, vm)
    name = NAMES[what]
    r = restore(host, inside, name)
    no_traceback(r)
    if r.returncode != 0:
        return
    folder = restored(host, name)
    (vmxname,) = [n for n in os.listdir(folder) if n.endswith(".vmx")]
    with open(os.path.join(folder, vmxname), encoding="utf-8") as f:
        vmx = VmxFile(f.read())
    injected = [ln for ln in vmx.lines if ln is not None and ln.startswith('memSize = "9999"')]
    assert not injected and vmx.get("memSize") == "64", "a line injected through the name: %r" % injected
    assert vmx.get("displayName") == name, "displayName read back as %r: %r" % (vmx.get("displayName"), vmx.lines)


@pytest.mark.parametrize("what", ["tab", "esc", "del", "quote"])
def test_a_control_character_or_quote_in_the_new_name(site, what):
    """--name with a tab, an escape sequence, DEL or a quote: refused cleanly, or restored as the same disk
    with that displayName (read back by hotvcb's parser)."""
    host, _conf, _bk = site
    from hotvcb.vmx import VmxFile
    vm = "nc-" + what
    inside, _real = hand_backup(host, vm)
    name = {"tab": "a\tb", "esc": "a\x1b[31mb", "del": "a\x7fb", "quote": 'a"b'}[what]
    r = restore(host, inside, name)
    no_traceback(r)
    if r.returncode != 0:
        gone(host, name)
        return
    same_as_backup(host, name, inside)
    folder = restored(host, name)
    (vmxname,) = [n for n in os.listdir(folder) if n.endswith(".vmx")]
    with open(os.path.join(folder, vmxname), encoding="utf-8") as f:
        assert VmxFile(f.read()).get("displayName") == name


# -- hotvcb.json -----------------------------------------------------------------------------------------
def test_a_huge_sparse_manifest_is_refused_without_reading_it(site):
    """hotvcb.json is 1 GiB + 1 byte of holes: refused (too big / damaged), no traceback, no VM."""
    host, _conf, _bk = site
    vm = "bigman"
    inside, real = hand_backup(host, vm)
    with open(os.path.join(real, "hotvcb.json"), "r+b") as f:
        f.truncate((1 << 30) + 1)
    r = restore(host, inside, vm + "2")
    no_traceback(r)
    assert r.returncode != 0, out(r)
    gone(host, vm + "2")


@pytest.mark.parametrize("target", ["own", "other"])
def test_a_manifest_that_is_a_symlink(site, target):
    """hotvcb.json is a symlink (to a copy of its own content elsewhere, or to another backup's manifest):
    refused cleanly or restored as the same disk; never a traceback."""
    host, _conf, _bk = site
    vm = "symman-" + target
    inside, real = hand_backup(host, vm)
    man = os.path.join(real, "hotvcb.json")
    if target == "own":
        dst = os.path.join(host.real(DS1), "own-manifest-copy.json")
        os.rename(man, dst)
    else:
        _oi, oreal = hand_backup(host, vm + "-o")
        dst = os.path.join(oreal, "hotvcb.json")
        os.unlink(man)
    os.symlink(dst, man)
    r = restore(host, inside, vm + "2")
    no_traceback(r)
    if r.returncode == 0:
        assert target == "own", "another backup's manifest accepted: " + out(r)
        same_as_backup(host, vm + "2", inside)
    else:
        gone(host, vm + "2")


def test_an_empty_manifest(site):
    """hotvcb.json of 0 bytes (read_small reads max(size, 1)): refused as damaged, no traceback."""
    host, _conf, _bk = site
    vm = "emptyman"
    inside, real = hand_backup(host, vm)
    open(os.path.join(real, "hotvcb.json"), "w").close()
    r = restore(host, inside, vm + "2")
    no_traceback(r)
    assert r.returncode != 0, out(r)
    gone(host, vm + "2")


# -- the sparse magic at any size ------------------------------------------------------------------------
@pytest.mark.parametrize("size", [64 << 10, 300])
def test_a_text_descriptor_behind_a_cowd_magic_naming_another_vms_disk(site, size):
    """disk.vmdk starts with `COWD` then a newline and a text descriptor naming another VM's flat disk
    (padded to 64 KiB, or a few hundred bytes): taken for a sparse extent by its magic it is not checked
    for outside extents. The other VM's bytes must not be restored."""
    host, _conf, _bk = site
    path, data = victim(host, "cowd%d" % size)
    vm = "cowd%d" % size
    inside, real = hand_backup(host, vm)
    desc = os.path.join(real, "disk.vmdk")
    own = open(desc, "rb").read().replace(b'"disk-flat.vmdk"', ('"%s"' % path).encode())
    text = b"COWD\n" + own
    text += b"#" * (size - len(text) - 1) + b"\n" if size > len(text) + 1 else b""
    with open(desc, "wb") as f:
        f.write(text)
    os.unlink(os.path.join(real, "hotvcb.json"))
    seal(real, vm, [("scsi0:0", ["disk.vmdk", "disk-flat.vmdk"])])
    r = restore(host, inside, vm + "2")
    no_traceback(r)
    folder = restored(host, vm + "2")
    assert not (os.path.isdir(folder) and holds(folder, data)), "another VM's disk restored: " + out(r)


# -- BOMs in a -c file -----------------------------------------------------------------------------------
def test_bom_only_lines_and_a_bom_before_a_comment(site):
    """Lines that are only a BOM, a BOM then `#` comment, a BOM then CRLF: blank/comment lines, not errors;
    the one real line dry-runs (exit 0)."""
    host, _conf, bk = site
    bom = b"\xef\xbb\xbf"
    data = (bom + b"\n" + bom + b"# a comment\n" + bom + b"\r\n" + bom + ("%s;datastore1;1;Bom drei\n" % bk).encode()
            + bom)
    rfile = write_bytes(host, "bomonly_restore", data)
    r = hotvcb(host, "restore", "-c", rfile, "-d", "1")
    no_traceback(r)
    assert r.returncode == 0, out(r)


def test_a_bom_inside_a_line(site):
    """A BOM in the middle of a line (in the new name): restored under some name or one error naming
    file:1; never a traceback; the other line is still dry-run."""
    host, _conf, bk = site
    data = ("%s;datastore1;1;Bom\ufeffmitte\n%s;datastore1;1;Bom vier\n" % (bk, bk)).encode()
    rfile = write_bytes(host, "bommid_restore", data)
    r = hotvcb(host, "restore", "-c", rfile, "-d", "1")
    no_traceback(r)
    assert r.returncode in (0, 4), out(r)


def test_a_latin1_restore_line_with_byte_0x85_in_the_name(site):
    """A -c line saved in Windows-1252 whose new name holds `…` (byte 0x85): decoded as Latin-1 that is
    U+0085 (NEL). Refused, or restored with the .vmx read back by hotvcb's parser holding the backup's
    memSize and the whole name (quotes are escaped |22, so no valid line is injected; the name is lost)."""
    host, _conf, _bk = site
    from hotvcb.vmx import VmxFile
    vm = "nel-c"
    inside, _real = hand_backup(host, vm)
    data = ("%s;datastore1;1;Neu" % inside).encode() + b'\x85memSize = "9999"\n'
    rfile = write_bytes(host, "nel_restore", data)
    r = hotvcb(host, "restore", "-c", rfile)
    no_traceback(r)
    if r.returncode != 0:
        return
    folders = [n for n in os.listdir(host.real(DS1)) if n.startswith("Neu")]
    assert len(folders) == 1, folders
    folder = os.path.join(host.real(DS1), folders[0])
    (vmxname,) = [n for n in os.listdir(folder) if n.endswith(".vmx")]
    with open(os.path.join(folder, vmxname), encoding="utf-8") as f:
        vmx = VmxFile(f.read())
    injected = [ln for ln in vmx.lines if ln is not None and ln.startswith('memSize = "9999"')]
    assert not injected and vmx.get("memSize") == "64", "a line injected through the name: %r" % injected
    assert vmx.get("displayName") == "Neu\x85memSize = \"9999\"", "displayName read back as %r: %r" % (
        vmx.get("displayName"), vmx.lines)


# -- snapshot-tree backups: parentFileNameHint, deltas during the copy -----------------------------------
from test_outsider_fixrestore import copy_backup, kinds  # noqa: E402,F401


@pytest.mark.parametrize("char", ['"', "\u2028"])
def test_a_snapshot_tree_backup_under_a_folder_with_a_quote_or_line_separator(site, kinds, char):
    """The kept snapshot tree's backup lies under a folder holding `"` (parentFileNameHint may hold none) or
    U+2028: refused with a reason (exit 6) and nothing left, or restored; never a traceback."""
    import shutil
    host, _conf, _bk = site
    tag = "q" if char == '"' else "ls"
    src = host.real(kinds["tree"])
    sub = "t %s x" % char
    base = host.real(VOLUME) + "/" + sub
    os.makedirs(base, exist_ok=True)
    shutil.copytree(src, base + "/" + os.path.basename(src), symlinks=True)
    inside = "%s/%s/%s" % (VOLUME, sub, os.path.basename(src))
    name = "TQ-" + tag
    r = restore(host, inside, name)
    no_traceback(r)
    assert char not in out(r) or char == '"', "raw line separator in the output"
    if r.returncode != 0:
        assert r.returncode == 6, out(r)
        gone(host, name)
    else:
        assert name in registered(host)


@pytest.mark.parametrize("how", ["removed", "symlinked", "fifo"])
def test_a_delta_that_disappears_or_is_swapped_during_the_base_clone(site, kinds, how):
    """In front of the base disk's clone (the deltas are copied after it), a delta of the kept snapshot tree
    is removed, replaced by a symlink to its own bytes moved outside, or by a FIFO: the restore fails naming
    it (exit 6), never hangs, never a traceback, nothing left."""
    host, _conf, _bk = site
    inside, real = copy_backup(host, kinds["tree"], "Baum", "-mid-" + how)
    deltas = sorted(os.path.join(r_, n) for r_, _d, fs in os.walk(real) for n in fs
                    if n.endswith("-delta.vmdk") or n.endswith("-sesparse.vmdk"))
    assert deltas
    p = deltas[-1]
    outside = host.real(DS1 + "/outside-mid-%s-%s" % (how, os.path.basename(p)))
    script = {"removed": 'rm -f "%s"' % p,
              "symlinked": 'mv "%s" "%s" && ln -s "%s" "%s"' % (p, outside, outside, p),
              "fifo": 'rm -f "%s" && mkfifo "%s"' % (p, p)}[how]
    clear_hooks(host)
    on_clone(host, script + "; true")
    name = "TM-" + how
    try:
        r = hotvcb(host, "restore", inside, "--datastore", "datastore1", "--name", name, "--format", "zeroedthick",
                   timeout=80)
    finally:
        clear_hooks(host)
        if how == "fifo" and os.path.exists(p):
            os.unlink(p)
    no_traceback(r)
    assert r.returncode == 6 and os.path.basename(p) in out(r), out(r)
    gone(host, name)


@pytest.mark.parametrize("what", [
    "u2028",
    "tab",
    "esc"])
def test_a_disk_file_named_with_a_control_character_in_the_backup(site, what):
    """The backup's own disk is `d<char>isk.vmdk` (its flat beside it): refused naming it (exit 6), nothing
    left, or restored as the same disk; never a traceback, never the raw line separator in the output."""
    host, _conf, _bk = site
    from test_outsider_crosshv import esxi_backup
    ch = CHARS[what]
    vm = "dn-" + what
    esxi_backup(host.real(VOLUME), vm, disks=(("scsi0:0", "d%sisk.vmdk" % ch),))
    inside = "%s/%s/%s-%s" % (VOLUME, vm, vm, TS)
    r = restore(host, inside, vm + "2")
    no_traceback(r)
    assert what == "tab" or ch not in out(r), "raw character in the output: %r" % out(r)
    if r.returncode == 0:
        folder = restored(host, vm + "2")
        assert any(n.endswith(".vmdk") for n in os.listdir(folder)), "restored (exit 0) without its disk: %r\n%s" % (
            os.listdir(folder), out(r))
        same_as_backup(host, vm + "2", inside, "d%sisk-flat.vmdk" % ch)
    else:
        assert r.returncode == 6, out(r)
        gone(host, vm + "2")
