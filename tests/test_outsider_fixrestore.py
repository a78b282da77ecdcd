"""Outside tester: restore after 'fixrestore' (merge a25740a): vmkfstools clones from a checked copy of
the descriptor (`<name>.hotvcb-restoring/.hotvcb-checked/`, extents anchored by absolute path), the
backup's descriptor re-read after the clone, descriptors past 64 KiB read whole up to 1 MiB, every
extent a regular file, bounded reads of the backup's small files, the losing claim, and restore /
config / VM-list files decoded line by line.

Attacked through the CLI on esxisim; the host, its vmkfstools hook and the helpers are
tests/test_outsider_restoresplit.py's (imported, not copied).
"""

import os
import signal
import subprocess
import sys

import pytest

from simhost import REPO, VOLUME, hotvcb, hotvcb_background, wait_for
from test_outsider_crosshv import TS
from test_outsider_restoresplit import (DS1, MiB, PAUSE, clear_hooks, hand_backup, holds, hooked, hookdir,  # noqa: F401
                                        leftovers, on_clone, out, qemu_same, registered, reseal, restore_pid, site,
                                        swap_once_read, tree_state, victim)

pytestmark = __import__("test_outsider_restoresplit").pytestmark


def restored(host, name):
    return host.real("%s/%s" % (DS1, name))


def no_traceback(r):
    assert "Traceback" not in out(r) and "internal error" not in out(r), out(r)


def gone(host, name):
    """Nothing of a failed restore of `name`: no folder of either name, no hotvcb leftovers, not registered."""
    assert not os.path.exists(restored(host, name)), os.listdir(host.real(DS1))
    assert [e for e in leftovers(host) if e.startswith(name + ".hotvcb") or e.startswith(".hotvcb-restoring")] == []
    assert name not in registered(host)


def same_as_backup(host, name, inside, flat="disk-flat.vmdk"):
    folder = restored(host, name)
    flats = sorted(n for n in os.listdir(folder) if n.endswith("-flat.vmdk"))
    assert len(flats) == 1, os.listdir(folder)
    with open(os.path.join(folder, flats[0]), "rb") as a, open(host.real(inside + "/" + flat), "rb") as b:
        assert a.read() == b.read(), "restored disk differs from the backup's"
    assert ".hotvcb-checked" not in os.listdir(folder)


def rewrite_descriptor(real, fn):
    desc = os.path.join(real, "disk.vmdk")
    with open(desc, "rb") as f:
        data = f.read()
    with open(desc, "wb") as f:
        f.write(fn(data))


# -- the checked copy's name ---------------------------------------------------------------------------
@pytest.mark.parametrize("newname", [".hotvcb-checked", "x.hotvcb-restoring", ".hotvcb-checked.hotvcb-restoring"])
def test_a_new_name_colliding_with_the_checked_folder_restores(site, newname):
    """A new name equal to the checked folder's, or to the unfinished folder's suffix: restored whole, no
    checked copy left in it, no record left."""
    host, _conf, _bk = site
    inside, _real = hand_backup(host, "coll" + str(len(newname)))
    r = hotvcb(host, "restore", inside, "--datastore", "datastore1", "--name", newname, "--format", "zeroedthick")
    no_traceback(r)
    assert r.returncode == 0, out(r)
    same_as_backup(host, newname, inside)
    assert newname in registered(host)
    assert [e for e in leftovers(host) if e.endswith(".owner") or e.endswith(".tmp")] == [], leftovers(host)


def test_a_disk_named_like_the_checked_folder_restores(site):
    """The backup's disk is `.hotvcb-checked.vmdk` (its flat `.hotvcb-checked-flat.vmdk`): the clone of it
    and the checked copy of its descriptor must not trip over each other."""
    host, _conf, _bk = site
    from test_outsider_crosshv import esxi_backup
    real = esxi_backup(host.real(VOLUME), "dotdisk", disks=(("scsi0:0", ".hotvcb-checked.vmdk"),))
    inside = "%s/dotdisk/dotdisk-%s" % (VOLUME, TS)
    assert os.path.isdir(real)
    r = hotvcb(host, "restore", inside, "--datastore", "datastore1", "--name", "dotdisk2", "--format", "zeroedthick")
    no_traceback(r)
    assert r.returncode == 0, out(r)
    same_as_backup(host, "dotdisk2", inside, ".hotvcb-checked-flat.vmdk")


# -- extents named in other ways ---------------------------------------------------------------------
@pytest.mark.parametrize("form", ["dot-slash", "absolute-inside", "dotdot-back-in"])
def test_extents_named_relative_absolute_or_through_dotdot(site, form):
    """The extent of a sealed backup's descriptor named `./disk-flat.vmdk`, by its absolute path in the
    backup, or `../<backup>/disk-flat.vmdk`: refused with a reason, or restored as the same disk; never
    a traceback, never a half VM."""
    host, _conf, _bk = site
    vm = "ext-" + form
    inside, real = hand_backup(host, vm)
    name = {"dot-slash": "./disk-flat.vmdk", "absolute-inside": inside + "/disk-flat.vmdk",
            "dotdot-back-in": "../%s-%s/disk-flat.vmdk" % (vm, TS)}[form]
    rewrite_descriptor(real, lambda d: d.replace(b'"disk-flat.vmdk"', ('"%s"' % name).encode()))
    reseal(real, vm)
    r = hotvcb(host, "restore", inside, "--datastore", "datastore1", "--name", vm + "2", "--format", "zeroedthick")
    no_traceback(r)
    if r.returncode == 0:
        same_as_backup(host, vm + "2", inside)
    else:
        assert r.returncode == 6 and "disk-flat.vmdk" in out(r), out(r)
        gone(host, vm + "2")


@pytest.mark.parametrize("brk", ["\n", "\r"])
def test_a_newline_in_the_backups_path_does_not_inject_an_extent(site, brk):
    """The backup folder lies under a folder whose name holds a line break and an extent line naming another
    VM's disk (`x\\nRW 2048 FLAT "/vmfs/.../victim-flat.vmdk" 0\\n#`, path components in the backup
    volume, as anyone who can write there can make). The checked copy names the extent by its absolute
    path: that path must not become lines of the descriptor vmkfstools clones."""
    host, _conf, _bk = site
    vm = "inj%d" % ord(brk)
    path, data = victim(host, vm)
    inside, real = hand_backup(host, vm)
    sub = 'x%sRW 2048 FLAT "%s" 0%s#' % (brk, path, brk)
    new_inside = "%s/%s/%s-%s" % (VOLUME, sub, vm, TS)
    os.makedirs(os.path.dirname(host.real(VOLUME) + "/" + sub + "/x"), exist_ok=True)
    os.rename(real, host.real(VOLUME) + "/" + sub + "/%s-%s" % (vm, TS))
    r = hotvcb(host, "restore", new_inside, "--datastore", "datastore1", "--name", vm + "2", "--format", "zeroedthick")
    no_traceback(r)
    folder = restored(host, vm + "2")
    assert not (os.path.isdir(folder) and holds(folder, data)), "another VM's disk restored: " + out(r)
    if r.returncode == 0:
        same_as_backup(host, vm + "2", new_inside)


@pytest.mark.parametrize("char", ["#", '"', "ü"])
def test_odd_characters_in_the_backups_path_restore_the_same_disk(site, char):
    """`#` (a descriptor comment), `"` (the extent's quotes) and an umlaut in a folder above the backup:
    the checked copy's absolute extent must still name the backup's flat file."""
    host, _conf, _bk = site
    vm = "odd%d" % ord(char)
    inside, real = hand_backup(host, vm)
    sub = "a %s b" % char
    os.makedirs(host.real(VOLUME) + "/" + sub, exist_ok=True)
    os.rename(real, host.real(VOLUME) + "/" + sub + "/%s-%s" % (vm, TS))
    new_inside = "%s/%s/%s-%s" % (VOLUME, sub, vm, TS)
    r = hotvcb(host, "restore", new_inside, "--datastore", "datastore1", "--name", vm + "2", "--format", "zeroedthick")
    no_traceback(r)
    assert r.returncode == 0, out(r)
    same_as_backup(host, vm + "2", new_inside)


# -- descriptors in other encodings, line ends, sizes ---------------------------------------------------
@pytest.mark.parametrize("how", ["crlf", "latin1-comment", "bom", "cr-only-comment"])
def test_a_sealed_descriptor_in_odd_text_restores(site, how):
    """A sealed descriptor with CRLF line ends, a Latin-1 comment, a UTF-8 BOM, or a lone CR inside a comment:
    the manifest proves the bytes; the text checked, cloned and compared after the clone is the same
    file, so the restore must go through (not 'changed during the restore')."""
    host, _conf, _bk = site
    vm = "txt-" + how
    inside, real = hand_backup(host, vm)
    fn = {"crlf": lambda d: d.replace(b"\n", b"\r\n"),
          "latin1-comment": lambda d: d + b"# M\xfcller war hier\n",
          "bom": lambda d: b"\xef\xbb\xbf" + d,
          "cr-only-comment": lambda d: d.replace(b"# Disk DescriptorFile\n", b"# Disk DescriptorFile\r# alt\n")}[how]
    rewrite_descriptor(real, fn)
    reseal(real, vm)
    r = hotvcb(host, "restore", inside, "--datastore", "datastore1", "--name", vm + "2", "--format", "zeroedthick")
    no_traceback(r)
    assert r.returncode == 0, out(r)
    same_as_backup(host, vm + "2", inside)


@pytest.mark.parametrize("size", ["1MiB", "1MiB+1"])
def test_a_descriptor_padded_to_one_mib_and_one_byte_past(site, size):
    """Padded with comment lines to exactly 1 MiB: read whole and restored. One byte more: refused as no
    descriptor, naming it, nothing left."""
    host, _conf, _bk = site
    vm = "pad" + size.replace("+", "p")
    inside, real = hand_backup(host, vm)
    want = MiB + (1 if size.endswith("+1") else 0)

    def pad(d):
        filler = want - len(d)
        return d + (b"#" * (filler - 1) + b"\n")
    rewrite_descriptor(real, pad)
    assert os.path.getsize(os.path.join(real, "disk.vmdk")) == want
    reseal(real, vm)
    r = hotvcb(host, "restore", inside, "--datastore", "datastore1", "--name", vm + "2", "--format", "zeroedthick")
    no_traceback(r)
    if want == MiB:
        assert r.returncode == 0, out(r)
        same_as_backup(host, vm + "2", inside)
    else:
        assert r.returncode == 6 and "disk.vmdk" in out(r), out(r)
        gone(host, vm + "2")


# -- the descriptor changed during the clone ----------------------------------------------------------
@pytest.mark.parametrize("change", ["comment", "same-text", "deleted", "fifo"])
def test_the_descriptor_changed_during_the_clone(site, change):
    """Held in front of the clone, the backup's descriptor gets a harmless comment, is rewritten with the
    same bytes, deleted, or replaced by a FIFO. Changed text (or none): exit 6, nothing registered, no
    folder; the same text: restored. A FIFO must not hang the re-read."""
    host, _conf, _bk = site
    vm = "chg-" + change
    inside, real = hand_backup(host, vm)
    os.unlink(os.path.join(real, "hotvcb.json"))  # ghettoVCB-style: only the re-read notices
    desc = os.path.join(real, "disk.vmdk")
    script = {"comment": 'echo "# touched" >> "%s"' % desc,
              "same-text": 'cp "%s" "%s.x" && mv "%s.x" "%s"' % (desc, desc, desc, desc),
              "deleted": 'rm -f "%s"' % desc,
              "fifo": 'rm -f "%s" && mkfifo "%s"' % (desc, desc)}[change]
    clear_hooks(host)
    on_clone(host, script)
    try:
        r = hotvcb(host, "restore", inside, "--datastore", "datastore1", "--name", vm + "2",
                   "--format", "zeroedthick", timeout=90)
    finally:
        clear_hooks(host)
    no_traceback(r)
    if change == "same-text":
        assert r.returncode == 0, out(r)
        same_as_backup(host, vm + "2", inside)
    else:
        assert r.returncode == 6 and "changed during the restore" in out(r), out(r)
        gone(host, vm + "2")


def test_the_checked_copy_is_what_the_clone_reads(site):
    """In front of the clone: the checked copy exists under `.hotvcb-checked/`, is the backup's text with
    the extent anchored in the backup, and names no other file."""
    host, _conf, _bk = site
    inside, real = hand_backup(host, "seen")
    clear_hooks(host)
    checked = "%s/seen2.hotvcb-restoring/.hotvcb-checked" % host.real(DS1)
    on_clone(host, 'ls -a "%s" > "$HOOKS/ls"; cat "%s/disk.vmdk" > "$HOOKS/copy"; true' % (checked, checked))
    try:
        r = hotvcb(host, "restore", inside, "--datastore", "datastore1", "--name", "seen2", "--format", "zeroedthick")
        listing = open(os.path.join(hookdir(host), "ls")).read().split()
        copy = open(os.path.join(hookdir(host), "copy")).read()
    finally:
        clear_hooks(host)
    assert r.returncode == 0, out(r)
    assert "disk.vmdk" in listing, listing
    assert '"%s/disk-flat.vmdk"' % inside in copy, copy
    same_as_backup(host, "seen2", inside)


# -- SIGKILL while the checked copy is there, then cleanup, then a second restore ----------------------------
def test_sigkill_with_the_checked_copy_written_then_the_next_restore_reclaims_it(site):
    host, conf, _bk = site
    inside, _real = hand_backup(host, "kill")
    clear_hooks(host)
    on_clone(host, PAUSE)
    p = hotvcb_background(host, "restore", inside, "--datastore", "datastore1", "--name", "kill2",
                          "--format", "zeroedthick")
    try:
        wait_for(lambda: hooked(host, "in_clone") or p.poll() is not None, 60, "the clone")
        assert p.poll() is None, p.communicate()[0]
        checked = host.real(DS1 + "/kill2.hotvcb-restoring/.hotvcb-checked/disk.vmdk")
        assert os.path.isfile(checked), leftovers(host)
        os.kill(restore_pid(host), signal.SIGKILL)
        p.wait(60)
    finally:
        open(os.path.join(hookdir(host), "abort"), "w").close()
        if p.poll() is None:
            p.kill()
        p.wait(60)
    clear_hooks(host)
    assert "kill2.hotvcb-restoring" in leftovers(host)
    # the next restore removes the dead restore's folder first (as cleanup does), never restores over it
    r = hotvcb(host, "restore", inside, "--datastore", "datastore1", "--name", "kill2", "--format", "zeroedthick")
    assert r.returncode == 0, out(r)
    assert "removing %s/kill2.hotvcb-restoring, left by a restore that died" % DS1 in out(r), out(r)
    assert [e for e in leftovers(host) if "kill2" in e or e.startswith(".hotvcb-restoring")] == [], leftovers(host)
    same_as_backup(host, "kill2", inside)


class FifoWriter:
    """Opens the FIFO (host path `inside`) for writing from inside the host, after `after` s and again and
    again, and closes it at once (EOF): a restore blocked opening or reading it goes on, and `hung` says a
    reader waited on it then. The verdict takes no timing: a restore that refuses the FIFO unopened (or
    opened without waiting) is not met by the blocking writer; the delay only keeps a quick O_NONBLOCK
    look from meeting it."""

    def __init__(self, host, inside, after=30):
        self.marker = inside + ".released"
        self.real_marker = host.real(self.marker)
        script = 'sleep %d; while :; do : > "$0" && echo x >> "$1"; sleep 0.2; done' % after
        self.p = subprocess.Popen([sys.executable, "-m", "esxisim", "shell", host.root, "--", "/bin/sh", "-c", script,
                                   inside, self.marker], start_new_session=True, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, env=dict(os.environ, PYTHONPATH=REPO))

    @property
    def hung(self):
        return os.path.exists(self.real_marker)

    def stop(self):
        try:
            os.killpg(self.p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.p.wait(30)


def restore_with_fifo(host, fifo, *args):
    """hotvcb ARGS (bounded at 75 s); with a FifoWriter on `fifo` when given: (result, whether it hung on it)."""
    w = FifoWriter(host, fifo) if fifo else None
    try:
        r = hotvcb(host, *args, timeout=75)
    finally:
        if w:
            w.stop()
    return r, bool(w and w.hung)


# -- files of the backup that are no regular file --------------------------------------------------------
@pytest.mark.parametrize("what,kind", [("nvram", "fifo"), ("nvram", "symlink"), ("vmxf", "fifo"), ("vmxf", "symlink"),
                                       ("hotvcb.json", "fifo"),
                                       ("hotvcb.json", "symlink"), ("nvram", "hardlink")])
def test_nvram_vmxf_manifest_as_fifo_symlink_or_hardlink(site, what, kind):
    """The backup's .nvram / .vmxf / hotvcb.json is a FIFO nobody writes, a symlink to another VM's file
    (bytes of the victim), or a hardlink of it. The restore must not hang (bounded here at 80 s), and the
    victim's bytes must not end up in the restored VM."""
    host, _conf, _bk = site
    vm = "nr-%s-%s" % (what.replace(".", ""), kind)
    path, data = victim(host, vm)
    keys = {"nvram": "disk.nvram", "extendedConfigFile": "disk.vmxf"}
    from test_outsider_crosshv import esxi_backup, seal
    real = esxi_backup(host.real(VOLUME), vm, keys=keys)
    inside = "%s/%s/%s-%s" % (VOLUME, vm, vm, TS)
    for n in ("disk.nvram", "disk.vmxf"):
        with open(os.path.join(real, n), "wb") as f:
            f.write(b"own " + n.encode() + b"\n")
    seal(real, vm, [("scsi0:0", ["disk.vmdk", "disk-flat.vmdk"])])
    target = os.path.join(real, {"nvram": "disk.nvram", "vmxf": "disk.vmxf", "hotvcb.json": "hotvcb.json"}[what])
    if what == "hotvcb.json" and kind == "symlink":
        # the victim is another backup's manifest: a valid one, naming other files
        other = os.path.join(os.path.dirname(host.real(path)), "hotvcb.json")
        os.rename(target, other)
        os.symlink(other, target)
    else:
        os.unlink(target)
        if kind == "fifo":
            os.mkfifo(target)
        elif kind == "symlink":
            os.symlink(host.real(path), target)
        else:
            os.link(host.real(path), target)
    r, hung = restore_with_fifo(host, inside + "/" + os.path.basename(target) if kind == "fifo" else None,
                                "restore", inside, "--datastore", "datastore1",
                                "--name", vm + "2", "--format", "zeroedthick")
    assert not hung, "the restore waits on a FIFO %s" % what
    no_traceback(r)
    folder = restored(host, vm + "2")
    assert not (os.path.isdir(folder) and holds(folder, data)), "another VM's file restored: " + out(r)
    if r.returncode != 0:
        gone(host, vm + "2")


# -- two restores to one name at once --------------------------------------------------------------------
def test_two_restores_of_one_name_then_kill_the_winner_then_cleanup_frees_the_name(site):
    """A is held in its clone; B of the same name starts: it must lose cleanly (no change to A's folder
    or record). A is SIGKILLed; cleanup removes its folder and record; a third restore takes the name."""
    host, _conf, _bk = site
    inside, _real = hand_backup(host, "duo")
    clear_hooks(host)
    on_clone(host, PAUSE)
    a = hotvcb_background(host, "restore", inside, "--datastore", "datastore1", "--name", "duo2",
                          "--format", "zeroedthick")
    try:
        wait_for(lambda: hooked(host, "in_clone") or a.poll() is not None, 60, "A's clone")
        assert a.poll() is None, a.communicate()[0]
        records = {e: open(os.path.join(host.real(DS1), e)).read() for e in leftovers(host) if e.endswith(".owner")}
        b = hotvcb(host, "restore", inside, "--datastore", "datastore1", "--name", "duo2", "--format", "zeroedthick")
        assert b.returncode != 0, out(b)
        no_traceback(b)
        after = {e: open(os.path.join(host.real(DS1), e)).read() for e in leftovers(host) if e.endswith(".owner")}
        assert after == records, (records, after)
        assert os.path.isfile(host.real(DS1 + "/duo2.hotvcb-restoring/.hotvcb-checked/disk.vmdk"))
        os.kill(restore_pid(host), signal.SIGKILL)
        a.wait(60)
    finally:
        open(os.path.join(hookdir(host), "abort"), "w").close()
        if a.poll() is None:
            a.kill()
        a.wait(60)
    clear_hooks(host)
    c = hotvcb(host, "cleanup")
    assert c.returncode == 0, out(c)
    assert [e for e in leftovers(host) if "duo2" in e or e.startswith(".hotvcb-restoring")] == [], leftovers(host)
    r = hotvcb(host, "restore", inside, "--datastore", "datastore1", "--name", "duo2", "--format", "zeroedthick")
    assert r.returncode == 0, out(r)
    same_as_backup(host, "duo2", inside)
    assert registered(host).count("duo2") == 1


# -- restore, VM list and config files decoded line by line -----------------------------------------------
def write_bytes(host, name, data):
    path = os.path.join(host.root, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def test_a_restore_file_mixing_utf8_latin1_crlf_bom_and_a_nul(site):
    """Line 1: BOM + UTF-8 + CRLF; line 2: a Latin-1 comment; line 3: the backup's path and the new name
    in Latin-1, CRLF; line 4: a NUL byte in the name. A dry run first changes nothing; then lines 1 and 3
    are restored under their umlaut names, line 4 is one error naming file:4 (exit 4)."""
    host, _conf, bk = site
    u = lambda s: s.encode("utf-8")  # noqa: E731
    l1 = lambda s: s.encode("latin-1")  # noqa: E731
    data = (b"\xef\xbb\xbf" + u('"%s;/vmfs/volumes/datastore1;1;Mix ü eins"' % bk) + b"\r\n"
            + l1("# Müller: bitte nicht löschen\n")
            + l1("%s;ds5;1;Mix ü zwei" % bk) + b"\r\n"
            + u("%s;datastore1;1;Mix" % bk) + b"\x00" + u("drei\n"))
    rfile = write_bytes(host, "mixed_restore", data)
    vmfs = os.path.join(host.root, "vmfs")
    before, vms = tree_state(vmfs), registered(host)
    d = hotvcb(host, "restore", "-c", rfile, "-d", "1")
    no_traceback(d)
    assert tree_state(vmfs) == before and registered(host) == vms, out(d)
    r = hotvcb(host, "restore", "-c", rfile)
    no_traceback(r)
    assert r.returncode == 4, out(r)
    assert "mixed_restore:4" in out(r), out(r)
    assert "Mix ü eins" in registered(host) and "Mix ü zwei" in registered(host), (registered(host), out(r))
    assert os.path.isdir(restored(host, "Mix ü eins")) and os.path.isdir(host.real("/vmfs/volumes/ds5/Mix ü zwei"))
    assert not [n for n in registered(host) if "drei" in n or "Ã" in n]


def test_a_restore_file_joined_from_two_files_with_a_bom_each(site):
    """`cat a b > vms_to_restore` of two files saved with a BOM (Notepad): the second BOM starts line 2.
    Line 2 must restore as line 1 does, not fail as a path starting with U+FEFF."""
    host, _conf, bk = site
    data = (b"\xef\xbb\xbf" + ("%s;datastore1;1;Bom eins\r\n" % bk).encode()
            + b"\xef\xbb\xbf" + ("%s;datastore1;1;Bom zwei\r\n" % bk).encode())
    rfile = write_bytes(host, "bom_restore", data)
    r = hotvcb(host, "restore", "-c", rfile, "-d", "1")
    no_traceback(r)
    assert r.returncode == 0, out(r)


def test_a_config_with_a_latin1_backup_volume_finds_the_backup(site):
    """The config's comment is UTF-8, its VM_BACKUP_VOLUME names a folder with an umlaut in Latin-1 (an old
    line), VM_SHUTDOWN_ORDER a Latin-1 VM name: `restore --latest` through it finds the backup there (dry
    run), and a `-f` list whose one line is Latin-1 backs that VM up by name."""
    host, _conf, bk = site
    vol = "/vmfs/volumes/backup/Sicherung ä"
    os.makedirs(host.real(vol + "/Quelle ü"), exist_ok=True)
    subprocess_cp = __import__("shutil").copytree
    subprocess_cp(host.real(bk), host.real(vol + "/Quelle ü/" + os.path.basename(bk)))
    conf = write_bytes(host, "latin.conf", "# Prüfung für Ärger\n".encode("utf-8")
                       + ("VM_BACKUP_VOLUME=%s\n" % vol).encode("latin-1")
                       + "VM_SHUTDOWN_ORDER=Quelle ü\nDISK_BACKUP_FORMAT=thin\n".encode("latin-1")
                       + b"VM_BACKUP_ROTATION_COUNT=3\n")
    r = hotvcb(host, "restore", "-d", "1", "--latest", "Quelle ü", "-g", conf, "--datastore", "ds5")
    no_traceback(r)
    assert r.returncode == 0 and "Sicherung ä/Quelle ü" in out(r), out(r)
    lst = write_bytes(host, "latin.list", "# Liste\n".encode() + "Quelle ü\r\n".encode("latin-1"))
    b = hotvcb(host, "backup", "-f", lst, "-g", conf)
    no_traceback(b)
    assert b.returncode == 0, out(b)
    assert len([e for e in os.listdir(host.real(vol + "/Quelle ü")) if e.startswith("Quelle ü-")]) == 2


# -- 2gbsparse and snapshot-tree backups ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def kinds(site):
    """Backups of one VM as 2gbsparse and of one with two user snapshots (BACKUP_SNAPSHOT_TREE=1)."""
    from simhost import write_conf
    host, _conf, _bk = site
    out_ = {}
    host.create_vm("Sparsam", "datastore1", [{"size": "3M"}])
    c = write_conf(host, "sparse.conf", DISK_BACKUP_FORMAT="2gbsparse")
    r = hotvcb(host, "backup", "-m", "Sparsam", "-g", c)
    assert r.returncode == 0, out(r)
    (e,) = [x for x in os.listdir(host.real(VOLUME + "/Sparsam")) if x.startswith("Sparsam-")]
    out_["2gbsparse"] = "%s/Sparsam/%s" % (VOLUME, e)
    vmid = host.create_vm("Baum", "datastore1", [{"size": "2M"}])
    from simhost import vim
    for n in ("eins", "zwei"):
        o = vim(host, "vmsvc/snapshot.create", vmid, n, "", "0", "0")
        assert "fault" not in o.lower(), o
    c = write_conf(host, "tree.conf", BACKUP_SNAPSHOT_TREE=1)
    r = hotvcb(host, "backup", "-m", "Baum", "-g", c)
    assert r.returncode == 0, out(r)
    (e,) = [x for x in os.listdir(host.real(VOLUME + "/Baum")) if x.startswith("Baum-")]
    out_["tree"] = "%s/Baum/%s" % (VOLUME, e)
    return out_


def copy_backup(host, bk, vm, tag):
    """A copy of backup `bk` as <VOLUME>/<vm>/<vm>-<TS><tag>: (path on the host, real path)."""
    import shutil
    name = "%s-%s%s" % (vm, TS, tag)
    real = host.real("%s/%s/%s" % (VOLUME, vm, name))
    shutil.copytree(host.real(bk), real, symlinks=True)
    return "%s/%s/%s" % (VOLUME, vm, name), real


@pytest.mark.parametrize("kind,fmt", [("2gbsparse", "zeroedthick"), ("2gbsparse", "thin"), ("2gbsparse", "2gbsparse"),
                                      ("tree", "zeroedthick"), ("tree", "thin")])
def test_multi_extent_and_snapshot_tree_backups_restore_and_leave_no_checked_copy(site, kinds, kind, fmt):
    host, _conf, _bk = site
    bk = kinds[kind]
    name = "K %s %s" % (kind, fmt)
    r = hotvcb(host, "restore", bk, "--datastore", "datastore1", "--name", name, "--format", fmt)
    no_traceback(r)
    assert r.returncode == 0, out(r)
    folder = restored(host, name)
    for root, dirs, _files in os.walk(folder):
        assert ".hotvcb-checked" not in dirs, root
    assert name in registered(host)
    src = [n for n in os.listdir(host.real(bk)) if n.endswith(".vmdk") and "-s0" not in n and "-flat" not in n
           and "delta" not in n and "-0000" not in n]
    dst = [n for n in os.listdir(folder) if n.endswith(".vmdk") and "-s0" not in n and "-flat" not in n
           and "delta" not in n and "-0000" not in n]
    assert len(src) == 1 and len(dst) == 1, (os.listdir(host.real(bk)), os.listdir(folder))
    assert qemu_same(os.path.join(host.real(bk), src[0]), os.path.join(folder, dst[0])), out(r)


@pytest.mark.parametrize("kind", ["symlink", "fifo"])
def test_a_2gbsparse_extent_that_is_no_regular_file_is_refused(site, kinds, kind):
    """One `-s001.vmdk` extent of a sealed 2gbsparse backup replaced by a symlink to a copy of its own
    bytes outside the backup (checksums hold), or by a FIFO: refused naming it, no hang, nothing left."""
    host, _conf, _bk = site
    inside, real = copy_backup(host, kinds["2gbsparse"], "Sparsam", "-" + kind)
    (ext,) = [n for n in os.listdir(real) if n.endswith("-s001.vmdk")]
    p = os.path.join(real, ext)
    if kind == "symlink":
        outside = host.real(DS1 + "/outside-" + ext)
        os.rename(p, outside)
        os.symlink(outside, p)
    else:
        os.unlink(p)
        os.mkfifo(p)
    r, hung = restore_with_fifo(host, inside + "/" + os.path.relpath(p, real) if kind == "fifo" else None,
                                "restore", inside, "--datastore", "datastore1",
                                "--name", "S-" + kind, "--format", "zeroedthick")
    assert not hung, "waits on a FIFO extent"
    no_traceback(r)
    assert r.returncode == 6 and ext in out(r), out(r)
    gone(host, "S-" + kind)


@pytest.mark.parametrize("kind", ["symlink", "fifo", "hardlink"])
def test_a_delta_of_the_snapshot_tree_that_is_no_regular_file(site, kinds, kind):
    """A delta of the kept snapshot tree replaced by a symlink to a copy of its bytes outside the backup,
    by a FIFO, or by a hardlink to such a copy: symlink and FIFO refused (no hang), the hardlink (a regular
    file with the same bytes) restored; nothing left when refused."""
    host, _conf, _bk = site
    inside, real = copy_backup(host, kinds["tree"], "Baum", "-" + kind)
    deltas = sorted(os.path.join(r_, n) for r_, _d, fs in os.walk(real) for n in fs
                    if n.endswith("-delta.vmdk") or n.endswith("-sesparse.vmdk"))
    assert deltas, sorted(os.path.relpath(os.path.join(r_, n), real) for r_, _d, fs in os.walk(real) for n in fs)
    p = deltas[0]
    outside = host.real(DS1 + "/outside-%s-%s" % (kind, os.path.basename(p)))
    if kind == "fifo":
        os.unlink(p)
        os.mkfifo(p)
    else:
        os.rename(p, outside)
        (os.symlink if kind == "symlink" else os.link)(outside, p)
    name = "T-" + kind
    r, hung = restore_with_fifo(host, inside + "/" + os.path.relpath(p, real) if kind == "fifo" else None,
                                "restore", inside, "--datastore", "datastore1",
                                "--name", name, "--format", "zeroedthick")
    assert not hung, "waits on a FIFO delta"
    no_traceback(r)
    if kind == "hardlink":
        assert r.returncode == 0, out(r)
    else:
        assert r.returncode == 6 and os.path.basename(p) in out(r), out(r)
        gone(host, name)


# -- the plan's text proved against the manifest, whatever the spelling of the path -----------------------------
@pytest.mark.parametrize("how", ["trailing-slash", "double-slash", "dot-in-vmx", "dot-in-path"])
def test_a_descriptor_swapped_between_check_and_plan_is_refused_however_the_path_is_spelt(site, how):
    """restoresplit's swap between the background check's read and the plan's (the first descriptor made to
    name the second disk's flat, inside the backup), with the backup named `<path>/`, `<dir>//<name>`,
    `<dir>/./<name>`, or the .vmx naming the disk `./disk.vmdk`: the plan's text must still be proved
    against the manifest (refused, failing verification), not skipped for a path spelt otherwise."""
    host, _conf, _bk = site
    from test_outsider_crosshv import seal
    vm = "spelt-" + how
    inside, real = hand_backup(host, vm, disks=(("scsi0:0", "disk.vmdk"), ("scsi0:1", "dis2.vmdk")), random_bytes=4096)
    if how == "dot-in-vmx":
        vmx = os.path.join(real, vm + ".vmx")
        text = open(vmx, encoding="utf-8").read()
        assert '"disk.vmdk"' in text
        with open(vmx, "w", encoding="utf-8") as f:
            f.write(text.replace('"disk.vmdk"', '"./disk.vmdk"'))
        seal(real, vm, [("scsi0:0", ["disk.vmdk", "disk-flat.vmdk"]), ("scsi0:1", ["dis2.vmdk", "dis2-flat.vmdk"])])
    desc, other = swap_once_read(host, inside, real)
    arg = {"trailing-slash": inside + "/", "double-slash": inside.replace("/%s/" % vm, "/%s//" % vm),
           "dot-in-vmx": inside, "dot-in-path": inside.replace("/%s/" % vm, "/%s/./" % vm)}[how]
    try:
        r = hotvcb(host, "restore", arg, "--datastore", "datastore1", "--name", vm + "2", "--format", "zeroedthick")
    finally:
        clear_hooks(host)
    no_traceback(r)
    assert open(desc).read() == other, "the hook did not run: " + out(r)
    assert r.returncode == 6 and "disk.vmdk" in out(r), out(r)
    gone(host, vm + "2")


@pytest.mark.parametrize("what,kind", [("STATUS.ok", "fifo"), ("STATUS.ok", "symlink"), ("vmx", "symlink"),
                                       ("vmsd", "fifo"), ("vmsd", "symlink")])
def test_status_vmx_vmsd_that_are_no_regular_file(site, kinds, what, kind):
    """The backup's STATUS.ok, .vmx (hand backup) or the snapshot tree's .vmsd (tree backup) is a FIFO or a
    symlink to a copy of its own bytes outside the backup: refused or restored, but never waited on and
    never a traceback; refused leaves nothing."""
    host, _conf, _bk = site
    if what == "vmsd":
        inside, real = copy_backup(host, kinds["tree"], "Baum", "-vmsd-" + kind)
        (rel,) = [os.path.relpath(os.path.join(r_, n), real) for r_, _d, fs in os.walk(real) for n in fs
                  if n.endswith(".vmsd")]
    else:
        vm = "sv-%s-%s" % (what.replace(".", ""), kind)
        inside, real = hand_backup(host, vm)
        rel = vm + ".vmx" if what == "vmx" else what
    p = os.path.join(real, rel)
    if kind == "fifo":
        os.unlink(p)
        os.mkfifo(p)
    else:
        outside = host.real(DS1 + "/outside-%s-%s" % (kind, os.path.basename(p)))
        os.rename(p, outside)
        os.symlink(outside, p)
    name = "SV %s %s" % (what, kind)
    r, hung = restore_with_fifo(host, inside + "/" + rel if kind == "fifo" else None,
                                "restore", inside, "--datastore", "datastore1", "--name", name,
                                "--format", "zeroedthick")
    assert not hung, "waits on a FIFO " + what
    no_traceback(r)
    if r.returncode != 0:
        gone(host, name)
    elif what == "vmx":
        pytest.fail("a symlinked .vmx was followed: " + out(r))


@pytest.mark.parametrize("data", ["empty", "written"])
def test_a_monolithic_sparse_disk_is_cloned_from_its_own_bytes(site, data):
    """The backup's disk is a hosted monolithicSparse VMDK (`KDMV`, its descriptor embedded) as qemu-img
    makes one: empty, the file is exactly 64 KiB; with 192 KiB written it is bigger. A sparse extent is
    the disk itself: what vmkfstools is handed (looked at in front of the clone; esxisim's vmkfstools
    cannot clone a hosted sparse disk, so the clone's outcome is not judged) must be the backup's file,
    or a copy of its exact bytes, never a text rewrite of it."""
    host, _conf, _bk = site
    from test_outsider_crosshv import seal
    vm = "mono-" + data
    inside, real = hand_backup(host, vm)
    os.unlink(os.path.join(real, "disk-flat.vmdk"))
    os.unlink(os.path.join(real, "disk.vmdk"))
    img = os.path.join(real, "disk.vmdk")
    subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=monolithicSparse", img, "1M"],
                   check=True)
    if data == "written":
        subprocess.run(["qemu-io", "-f", "vmdk", "-c", "write -P 0x5a 64k 192k", img], check=True, capture_output=True)
    with open(img, "rb") as f:
        own = f.read()
    assert own[:4] == b"KDMV"
    assert (len(own) == 64 << 10) == (data == "empty"), len(own)
    os.unlink(os.path.join(real, "hotvcb.json"))
    seal(real, vm, [("scsi0:0", ["disk.vmdk"])])
    clear_hooks(host)
    checked = "%s/%s2.hotvcb-restoring/.hotvcb-checked/disk.vmdk" % (host.real(DS1), vm)
    on_clone(host, 'for a in "$@"; do case "$a" in /*.vmdk) echo "$a" >> "$HOOKS/args";; esac; done; '
                   '[ -f "%s" ] && cp "%s" "$HOOKS/copy"; true' % (checked, checked))
    try:
        r = hotvcb(host, "restore", inside, "--datastore", "datastore1", "--name", vm + "2", "--format", "zeroedthick")
        copy = os.path.join(hookdir(host), "copy")
        handed = open(copy, "rb").read() if os.path.exists(copy) else None
        ran = os.path.exists(os.path.join(hookdir(host), "vmkfstools.run"))
    finally:
        clear_hooks(host)
    no_traceback(r)
    assert ran, "vmkfstools was not called: " + out(r)
    assert handed is None or handed == own, "vmkfstools handed a %d-byte rewrite of the %d-byte sparse disk" % (
        len(handed), len(own))
    if r.returncode != 0:
        gone(host, vm + "2")


def test_a_utf16_restore_file_is_refused_line_by_line_without_a_traceback(site):
    """A -c file saved as UTF-16 (Notepad's "Unicode"): every line holds NULs. Each bad line is one error
    naming file:line (or the file is refused as a whole); nothing restored, exit 6 (or 2), no traceback."""
    host, _conf, bk = site
    rfile = write_bytes(host, "utf16_restore", ("%s;datastore1;1;Sechzehn\r\n# c\r\n%s;ds5;1;Sechzehn 2\r\n"
                                                % (bk, bk)).encode("utf-16"))
    vms = registered(host)
    r = hotvcb(host, "restore", "-c", rfile)
    no_traceback(r)
    assert r.returncode in (2, 6), out(r)
    assert registered(host) == vms
    assert not [e for e in os.listdir(host.real(DS1)) if "Sechzehn" in e]


@pytest.mark.parametrize("free_pages", [1, 2, 3, 4])
def test_a_target_with_room_for_only_a_few_pages_fails_cleanly_wherever_it_runs_out(site, free_pages):
    """A 64 KiB tmpfs as ds5, all but 1-4 pages filled: the record, the folder, the checked copy and the
    clone each may be the write that finds no room. Whichever: exit 6, one clear reason, nothing of ours
    left on the datastore (no record, no `.hotvcb-checked`), nothing registered."""
    from test_outsider_restoresplit import in_small_tmpfs
    host, _conf, _bk = site
    inside, _real = hand_backup(host, "eng%d" % free_pages)
    name = "Eng %d" % free_pages
    r = in_small_tmpfs(host, "64k", (64 << 10) - free_pages * 4096, "restore", inside, "--datastore", "ds5",
                       "--name", name, "--format", "zeroedthick")
    o = out(r)
    assert r.returncode == 6, o
    no_traceback(r)
    assert "LEFT: \n" in o, o
    assert name not in registered(host)


@pytest.mark.parametrize("where", ["before", "between"])
def test_an_outside_extent_after_64_kib_of_padding_is_refused(site, where):
    """The padding comes before the extent line (or between the backup's own extent and a second one naming
    another VM's disk by absolute path): the check must read past 64 KiB and refuse, the victim's bytes
    never restored."""
    host, _conf, _bk = site
    vm = "padx-" + where
    path, data = victim(host, vm)
    inside, real = hand_backup(host, vm)
    pad = b"# padding padding padding\n" * 3000
    if where == "before":
        fn = lambda d: d.replace(b"RW 2048", pad + b"RW 2048").replace(  # noqa: E731
            b'"disk-flat.vmdk"', ('"%s"' % path).encode())
    else:
        fn = lambda d: d.replace(b'"disk-flat.vmdk" 0\n', ('"disk-flat.vmdk" 0\n').encode() + pad  # noqa: E731
                                 + ('RW 2048 FLAT "%s" 0\n' % path).encode())
    rewrite_descriptor(real, fn)
    assert os.path.getsize(os.path.join(real, "disk.vmdk")) > 64 << 10
    reseal(real, vm)
    r = hotvcb(host, "restore", inside, "--datastore", "datastore1", "--name", vm + "2", "--format", "zeroedthick")
    no_traceback(r)
    folder = restored(host, vm + "2")
    assert not (os.path.isdir(folder) and holds(folder, data)), "another VM's disk restored: " + out(r)
    assert r.returncode == 6 and "a file outside the backup" in out(r), out(r)
    gone(host, vm + "2")
