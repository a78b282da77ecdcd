"""Outside tester: the restore job after its split (restore_source/room/dryrun/write/check/copy/plan;
each descriptor's text read once by the plan and handed to the self-copy of thin disks).

Attacked through the CLI on esxisim: descriptors that change between the plan and the clone, that
name files outside the backup by size padding or by a symlink, odd names, a full target, a target
folder that appears meanwhile, SIGKILL/SIGTERM mid-clone then `hotvcb cleanup` and a second
restore, dry runs, and two restores of one name at once.

Moments inside a restore are reached without timing: the host's own vmkfstools (and vim-cmd) are
wrapped with a shell hook that runs when the restore calls them (the restore's process is the
hook's $PPID), as tests/simhost.wrap_tool does for vim-cmd.
"""

import glob
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time

import pytest

from simhost import REPO, VOLUME, hotvcb, hotvcb_background, make_host, needs_root, wait_for, write_conf
from test_outsider_crosshv import TS, esxi_backup, seal

pytestmark = [needs_root, pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")]

DS1 = "/vmfs/volumes/datastore1"
MiB = 1 << 20


# -- the host and its hooks -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def site(tmp_path_factory):
    host = make_host(tmp_path_factory.mktemp("rsplit") / "host")
    install_hooks(host)
    vm = "Quelle ü"
    host.add_datastore("klein", 48 << 20)  # simulated capacity: vmkfstools fails a clone past it
    host.create_vm(vm, "datastore1", [{"size": "8M"}, {"size": "4M", "bus": "sata"}])
    conf = write_conf(host)
    r = hotvcb(host, "backup", "-m", vm, "-g", conf)
    assert r.returncode == 0, r.stdout + r.stderr
    (name,) = [e for e in os.listdir(host.real(VOLUME + "/" + vm)) if e.startswith(vm + "-")]
    yield host, conf, "%s/%s/%s" % (VOLUME, vm, name)
    host.stop()


def hookdir(host):
    return os.path.join(host.root, "hooks")


def install_hooks(host):
    """/sbin/vmkfstools runs HOOKS/vmkfstools.sh (once: it is moved away first) in front of a clone
    (`-i`); /bin/vim-cmd sources HOOKS/vimcmd.sh on every call while it is there."""
    h = hookdir(host)
    os.makedirs(h, exist_ok=True)
    for layer, tool, body in (
            ("usr_sbin", "vmkfstools",
             'case " $* " in *" -i "*) if [ -f "%s/vmkfstools.sh" ]; then mv "%s/vmkfstools.sh" "%s/vmkfstools.run"; '
             '. "%s/vmkfstools.run"; fi;; esac' % (h, h, h, h)),
            ("usr_bin", "vim-cmd", 'if [ -f "%s/vimcmd.sh" ]; then . "%s/vimcmd.sh"; fi' % (h, h))):
        path = host.store.p("root", layer, "upper", tool)
        os.rename(path, path + ".real")
        with open(path, "w") as f:
            f.write('#!/bin/sh\n%s\nexec "$0.real" "$@"\n' % body)
        os.chmod(path, 0o755)


# The restore's pid, seen from vmkfstools' hook: its parent, past the sh that tethers the copy to hotvcb
# (tether.py): `kill -9 $PPID` meant the restore, not that wrapper.
_RESTORE = ('RESTORE=$PPID; while [ "$(cat /proc/$RESTORE/comm 2>/dev/null)" = sh ]; do '
            'RESTORE=$(sed "s/.*) //" /proc/$RESTORE/stat | cut -d" " -f2); done')


def on_clone(host, script):
    """`script` (sh) runs in front of the next `vmkfstools -i`; HOOKS is its folder, $PPID the restore."""
    with open(os.path.join(hookdir(host), "vmkfstools.sh"), "w") as f:
        f.write('HOOKS="%s"\n%s\n%s\n' % (hookdir(host), _RESTORE, script.replace("$PPID", "$RESTORE")))


def clear_hooks(host):
    for n in os.listdir(hookdir(host)):
        os.unlink(os.path.join(hookdir(host), n))


PAUSE = ('echo $PPID > "$HOOKS/restore.pid"; touch "$HOOKS/in_clone"; i=0; '
         'while [ ! -f "$HOOKS/go" ] && [ ! -f "$HOOKS/abort" ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done; '
         '[ -f "$HOOKS/abort" ] && exit 1')


def hooked(host, name):
    return os.path.exists(os.path.join(hookdir(host), name))


def restore_pid(host):
    return int(open(os.path.join(hookdir(host), "restore.pid")).read().strip())


def out(r):
    return (r.stdout or "") + (r.stderr or "")


def registered(host):
    return [host.display_name(k) for k in host.state()["vms"]]


def leftovers(host, ds=DS1):
    """hotvcb's own files on a datastore: unfinished folders, scratch, records, temp files."""
    return sorted(e for e in os.listdir(host.real(ds)) if ".hotvcb" in e)


def qemu_same(a, b):
    r = subprocess.run(["qemu-img", "compare", a, b], capture_output=True, text=True)
    return r.returncode == 0


def victim(host, tag):
    """Another VM's flat disk on datastore1 (1 MiB of random data): what an outside extent would steal."""
    folder = host.real("%s/victim-%s" % (DS1, tag))
    os.makedirs(folder, exist_ok=True)
    data = os.urandom(MiB)
    with open(os.path.join(folder, "victim-flat.vmdk"), "wb") as f:
        f.write(data)
    return "%s/victim-%s/victim-flat.vmdk" % (DS1, tag), data


def holds(folder, data, start=0):
    """Whether any file under folder holds 64 KiB of `data` from `start` (the victim's bytes restored)."""
    probe = data[start: start + (64 << 10)]
    for root, _d, files in os.walk(folder):
        for n in files:
            with open(os.path.join(root, n), "rb") as f:
                if probe in f.read():
                    return True
    return False


def hand_backup(host, vm, **kw):
    """A backup in hotvcb's layout built by hand (monolithicFlat disk.vmdk + disk-flat.vmdk, sealed):
    (path on the host, real path)."""
    real = esxi_backup(host.real(VOLUME), vm, **kw)
    return "%s/%s/%s-%s" % (VOLUME, vm, vm, TS), real


def reseal(real, vm):
    seal(real, vm, [("scsi0:0", ["disk.vmdk", "disk-flat.vmdk"])])


# -- descriptors naming files outside the backup ----------------------------------------------------
def test_a_padded_descriptor_naming_another_vms_disk_is_refused(site):
    """The descriptor is the same text with 70 KiB of comment lines, naming another VM's flat disk by
    absolute path; sealed (a hand edit then sealed, as the refusals test does). Must be refused as the
    unpadded one is, and the other VM's bytes must not end up in a restored VM."""
    host, _conf, _bk = site
    path, data = victim(host, "pad")
    inside, real = hand_backup(host, "padded")
    desc = os.path.join(real, "disk.vmdk")
    own = open(desc).read()
    with open(desc, "w") as f:
        f.write(own.replace('"disk-flat.vmdk"', '"%s"' % path) + "# padding padding padding\n" * 3000)
    reseal(real, "padded")
    r = hotvcb(host, "restore", inside, "--datastore", "datastore1", "--name", "padded2", "--format", "zeroedthick")
    restored = host.real(DS1 + "/padded2")
    stolen = os.path.isdir(restored) and holds(restored, data)
    assert not stolen, "another VM's disk restored as this one's: " + out(r)
    assert r.returncode == 6 and "a file outside the backup" in out(r), out(r)


@pytest.mark.parametrize("kind", [
    "flat", "descriptor"])
def test_a_backup_file_that_is_a_symlink_out_of_the_backup_is_not_restored_from(site, kind):
    """A ghettoVCB-style backup (no manifest: nothing else would notice) whose -flat.vmdk, or whose
    descriptor, is a symlink to another VM's file. The descriptor names only a file beside it, but
    vmkfstools would read another VM's disk as this backup's: the other VM's bytes must not be
    restored (refused, or the restore fails)."""
    host, _conf, _bk = site
    vm = "symlinked-" + kind
    path, data = victim(host, kind)
    inside, real = hand_backup(host, vm)
    os.unlink(os.path.join(real, "hotvcb.json"))
    if kind == "flat":
        os.unlink(os.path.join(real, "disk-flat.vmdk"))
        os.symlink(host.real(path), os.path.join(real, "disk-flat.vmdk"))  # as a hand repair might
    else:
        vdir = os.path.dirname(host.real(path))
        with open(os.path.join(vdir, "victim.vmdk"), "w") as f:
            f.write(open(os.path.join(real, "disk.vmdk")).read().replace("disk-flat.vmdk", "victim-flat.vmdk"))
        os.unlink(os.path.join(real, "disk.vmdk"))
        os.symlink(os.path.join(vdir, "victim.vmdk"), os.path.join(real, "disk.vmdk"))
    r = hotvcb(host, "restore", inside, "--datastore", "datastore1", "--name", vm + "2", "--format", "zeroedthick")
    restored = host.real(DS1 + "/" + vm + "2")
    assert not (os.path.isdir(restored) and holds(restored, data)), out(r)
    assert "Traceback" not in out(r), out(r)


def test_a_descriptor_swapped_after_the_plan_is_not_cloned_from(site):
    """A ghettoVCB-style backup (no manifest); after the plan read and checked the descriptor, and
    before vmkfstools clones it, it is swapped for one naming another VM's disk (the hook runs in
    front of the clone). The other VM's bytes must not be restored."""
    host, _conf, _bk = site
    path, data = victim(host, "swap")
    inside, real = hand_backup(host, "swapped")
    os.unlink(os.path.join(real, "hotvcb.json"))
    desc = os.path.join(real, "disk.vmdk")
    evil = open(desc).read().replace('"disk-flat.vmdk"', '"%s"' % path)
    with open(os.path.join(hookdir(host), "evil.vmdk"), "w") as f:
        f.write(evil)
    on_clone(host, 'cat "$HOOKS/evil.vmdk" > "%s/disk.vmdk"' % inside)
    try:
        r = hotvcb(host, "restore", inside, "--datastore", "datastore1", "--name", "swapped2", "--format", "zeroedthick")
    finally:
        clear_hooks(host)
    assert open(desc).read() == evil, "the hook did not run: " + out(r)
    restored = host.real(DS1 + "/swapped2")
    assert not (os.path.isdir(restored) and holds(restored, data)), "another VM's disk restored: " + out(r)


def test_a_descriptor_swapped_after_the_check_read_it_is_not_cloned_from(site):
    """The same swap on a sealed backup, made after the background check has read the descriptor
    (the inventory question the plan waits for is held until the descriptor's atime shows a read;
    relatime updates it once, the atime having been set before the mtime) and before vmkfstools
    clones it. The other VM's bytes must not be restored: the check read one descriptor, the clone
    another."""
    host, _conf, _bk = site
    path, data = victim(host, "swap2")
    inside, real = hand_backup(host, "swapsealed")
    desc = os.path.join(real, "disk.vmdk")
    evil = open(desc).read().replace('"disk-flat.vmdk"', '"%s"' % path)
    with open(os.path.join(hookdir(host), "evil.vmdk"), "w") as f:
        f.write(evil)
    os.utime(desc, (0, os.stat(desc).st_mtime))
    with open(os.path.join(hookdir(host), "vimcmd.sh"), "w") as f:
        f.write('case "$1" in vmsvc/getallvms) /bin/python -c "import os, sys, time\n'
                'for _ in range(600):\n    if os.stat(sys.argv[1]).st_atime: break\n    time.sleep(0.1)" "%s/disk.vmdk";; '
                'esac\n' % inside)
    on_clone(host, 'cat "$HOOKS/evil.vmdk" > "%s/disk.vmdk"' % inside)
    try:
        r = hotvcb(host, "restore", inside, "--datastore", "datastore1", "--name", "swapsealed2",
                   "--format", "zeroedthick")
    finally:
        clear_hooks(host)
    assert open(desc).read() == evil, "the hook did not run: " + out(r)
    restored = host.real(DS1 + "/swapsealed2")
    assert not (os.path.isdir(restored) and holds(restored, data)), "another VM's disk restored: " + out(r)
    assert r.returncode == 6 and "swapsealed2" not in registered(host) and leftovers(host) == [], out(r)


def swap_once_read(host, inside, real):
    """disk.vmdk rewritten to name dis2-flat.vmdk as soon as a restore has read it (its atime, zeroed here,
    is set), from the hook of the restore's next vim-cmd (getallvms): after the check, before the plan.
    (its path, the text swapped in)"""
    desc = os.path.join(real, "disk.vmdk")
    other = open(desc).read().replace('"disk-flat.vmdk"', '"dis2-flat.vmdk"')
    with open(os.path.join(hookdir(host), "other.vmdk"), "w") as f:
        f.write(other)
    os.utime(desc, (0, os.stat(desc).st_mtime))
    with open(os.path.join(hookdir(host), "vimcmd.sh"), "w") as f:
        f.write('case "$1" in vmsvc/getallvms) /bin/python -c "import os, sys, time\n'
                'for _ in range(600):\n    if os.stat(sys.argv[1]).st_atime: break\n    time.sleep(0.1)" "%s/disk.vmdk"; '
                'cat "%s/other.vmdk" > "%s/disk.vmdk";; esac\n' % (inside, hookdir(host), inside))
    return desc, other


def test_a_descriptor_swapped_between_the_check_and_the_plan_is_refused(site):
    """A sealed backup of two disks; after the background check read the first descriptor, and before
    the plan reads it (the plan waits for the inventory question, held until the descriptor's atime
    shows the check's read), it is swapped for one naming the second disk's flat file (of a name as
    long: the size health.py compares holds): inside the backup, so the extents check passes, and it
    stays swapped, so the descriptor still reads as the plan read it after the clone. The check proved one text, the clone would use another: refused as
    failing verification, nothing registered, nothing left."""
    host, _conf, _bk = site
    inside, real = hand_backup(host, "swapplan", disks=(("scsi0:0", "disk.vmdk"), ("scsi0:1", "dis2.vmdk")),
                               random_bytes=4096)
    desc, other = swap_once_read(host, inside, real)
    try:
        r = hotvcb(host, "restore", inside, "--datastore", "datastore1", "--name", "swapplan2",
                   "--format", "zeroedthick")
    finally:
        clear_hooks(host)
    assert open(desc).read() == other, "the hook did not run: " + out(r)
    assert r.returncode == 6 and "fails verification" in out(r) and "disk.vmdk" in out(r), out(r)
    assert not os.path.exists(host.real(DS1 + "/swapplan2")) and "swapplan2" not in registered(host), out(r)
    assert leftovers(host) == [], leftovers(host)


def test_a_thin_self_copy_writes_the_sealed_descriptor_not_one_swapped_in_meanwhile(site):
    """Two disks: the first (monolithicFlat) is cloned by vmkfstools, the second (a VMFS flat disk
    with block digests) copied by hotvcb itself from the plan's descriptor text. While the first is
    cloned, the second's descriptor is swapped for one that names another VM's disk. Either the
    restore fails, or the restored second disk is the backup's own, never the other VM's."""
    host, _conf, bk = site
    path, data = victim(host, "selfswap")
    inside, real = hand_backup(host, "selfswap", disks=(("scsi0:0", "disk.vmdk"), ("scsi0:1", "vm2.vmdk")))
    # the second disk as ESXi writes a thin base disk: createType vmfs, RW n VMFS
    text = open(os.path.join(real, "vm2.vmdk")).read().replace('"monolithicFlat"', '"vmfs"').replace(" FLAT ", " VMFS ")
    with open(os.path.join(real, "vm2.vmdk"), "w") as f:
        f.write(text)
    seal(real, "selfswap", [("scsi0:0", ["disk.vmdk", "disk-flat.vmdk"]), ("scsi0:1", ["vm2.vmdk", "vm2-flat.vmdk"])])
    with open(os.path.join(hookdir(host), "evil.vmdk"), "w") as f:
        f.write(text.replace('"vm2-flat.vmdk"', '"%s"' % path))
    on_clone(host, 'cat "$HOOKS/evil.vmdk" > "%s/vm2.vmdk"' % inside)
    try:
        r = hotvcb(host, "restore", inside, "--datastore", "datastore1", "--name", "selfswap2")
    finally:
        clear_hooks(host)
    restored = host.real(DS1 + "/selfswap2")
    assert not (os.path.isdir(restored) and holds(restored, data)), out(r)
    if r.returncode == 0:
        assert qemu_same(os.path.join(real, "disk-flat.vmdk"), os.path.join(restored, "disk-flat.vmdk"))
        assert '"vm2-flat.vmdk"' in open(os.path.join(restored, "vm2.vmdk")).read()
    else:
        assert r.returncode == 6 and not os.path.exists(restored) and leftovers(host) == [], out(r)


@pytest.mark.parametrize("which", ["disk.vmdk", "fifo.vmx"])
def test_a_fifo_in_a_backup_does_not_hang_the_restore(site, which):
    """A ghettoVCB-style backup (no manifest) whose descriptor, or whose .vmx, is a FIFO nobody writes
    to: the restore must refuse it and end (restore_regular-style reads refuse FIFOs), not block
    forever on open(). Bounded at 45 s; a hung restore is then released by opening the FIFO for writing."""
    host, _conf, _bk = site
    vm = "fifo-" + which.split(".")[0]
    inside, real = hand_backup(host, vm)
    os.unlink(os.path.join(real, "hotvcb.json"))
    target = os.path.join(real, "disk.vmdk" if which == "disk.vmdk" else vm + ".vmx")
    os.unlink(target)
    os.mkfifo(target)
    run = hotvcb_background(host, "restore", inside, "--datastore", "datastore1", "--name", vm + "2")
    try:
        o, _ = run.communicate(timeout=45)
        hung = False
    except subprocess.TimeoutExpired:
        hung = True
        for _ in range(100):  # let the blocked reader see EOF
            try:
                os.close(os.open(target, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
            if run.poll() is not None:
                break
            time.sleep(0.1)
        o = run.communicate(timeout=60)[0]
    finally:
        if run.poll() is None:
            run.kill()
    assert not hung, "the restore blocked on the FIFO: " + o
    assert run.returncode == 6 and "Traceback" not in o, o
    assert leftovers(host) == [] and not os.path.exists(host.real(DS1 + "/" + vm + "2")), o


def test_a_sealed_self_copied_flat_that_is_a_symlink_out_of_the_backup_is_not_restored_from(site):
    """The thin self-copy path: a VMFS flat disk with block digests whose -flat.vmdk is a symlink to
    another VM's disk of the same size, sealed over it (a manifest is only SHA-256s: whoever can
    plant the link can seal). The copy must not read another VM's disk as this backup's."""
    host, _conf, _bk = site
    path, data = victim(host, "selflink")
    inside, real = hand_backup(host, "selflink")
    text = open(os.path.join(real, "disk.vmdk")).read().replace('"monolithicFlat"', '"vmfs"').replace(" FLAT ", " VMFS ")
    with open(os.path.join(real, "disk.vmdk"), "w") as f:
        f.write(text)
    os.unlink(os.path.join(real, "disk-flat.vmdk"))
    os.symlink(host.real(path), os.path.join(real, "disk-flat.vmdk"))
    reseal(real, "selflink")
    r = hotvcb(host, "restore", inside, "--datastore", "datastore1", "--name", "selflink2")
    restored = host.real(DS1 + "/selflink2")
    assert not (os.path.isdir(restored) and holds(restored, data)), "another VM's disk restored: " + out(r)


def test_cleanup_during_a_live_restore_leaves_it_alone(site):
    """`hotvcb cleanup` while a restore is cloning (held in the vmkfstools hook): the live restore's
    folder and record stay (said so), and the restore then completes."""
    host, _conf, bk = site
    name = "Lebendig"
    on_clone(host, PAUSE)
    run = hotvcb_background(host, "restore", bk, "--datastore", "datastore1", "--name", name, "--format", "zeroedthick")
    try:
        wait_for(lambda: hooked(host, "in_clone"), timeout=60, what="the clone")
        before = leftovers(host)
        c = hotvcb(host, "cleanup")
        assert leftovers(host) == before and name + ".hotvcb-restoring" in before, (before, out(c))
        open(os.path.join(hookdir(host), "go"), "w").close()
        o, _ = run.communicate(timeout=120)
    finally:
        open(os.path.join(hookdir(host), "abort"), "w").close()
        if run.poll() is None:
            run.kill()
        clear_hooks(host)
    assert run.returncode == 0, o
    assert name in registered(host) and leftovers(host) == [], leftovers(host)


# -- dry runs -------------------------------------------------------------------------------------
def tree_state(root):
    """Every entry under root: type, size, mtime (a dry run must change none)."""
    state = {}
    for d, dirs, files in os.walk(root):
        for n in dirs + files:
            p = os.path.join(d, n)
            st = os.lstat(p)
            state[os.path.relpath(p, root)] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return state


def test_dry_runs_touch_nothing(site, tmp_path):
    """-d 1 and -d 2 of a folder, of a .gz, of --latest and of a -c file (with a name holding a
    quote): the whole /vmfs tree (datastores and backups) is the same afterwards, no VM registered."""
    host, conf, bk = site
    vmfs = os.path.join(host.root, "vmfs")
    gzpath = "%s/Quelle ü/Quelle ü-2019-12-31_23-59-59.gz" % VOLUME
    with tarfile.open(host.real(gzpath), "w:gz") as t:
        t.add(host.real(bk), arcname=os.path.basename(gzpath)[:-3])
    rfile = os.path.join(host.root, "dry_restore")
    with open(rfile, "w", encoding="utf-8") as f:
        f.write('"%s;/vmfs/volumes/datastore1;3;Tr\'ocken"\n%s;ds5;1;Trocken 2\n' % (bk, bk))
    before, vms = tree_state(vmfs), registered(host)
    runs = [("restore", "-d", "1", bk, "--datastore", "datastore1", "--name", "Trocken"),
            ("restore", "-d", "2", bk, "--datastore", "ds5", "--format", "eagerzeroedthick"),
            ("restore", "-d", "1", gzpath, "--datastore", "datastore1", "--name", "Trocken gz"),
            ("restore", "-d", "1", "--latest", "Quelle ü", "-g", conf, "--datastore", "ds5"),
            ("restore", "-d", "2", "-c", rfile)]
    for args in runs:
        r = hotvcb(host, *args)
        assert r.returncode == 0, (args, out(r))
        changed = {k for k in set(before) | set(tree_state(vmfs)) if before.get(k) != tree_state(vmfs).get(k)}
        assert changed == set(), (args, sorted(changed))
    assert registered(host) == vms
    os.unlink(host.real(gzpath))


# -- a target folder that appears, two restores of one name ------------------------------------------
@pytest.mark.parametrize("content", ["empty", "file"])
def test_a_target_folder_that_appears_during_the_clone_is_not_overwritten(site, content):
    host, _conf, bk = site
    name = "Erscheint " + content
    folder = host.real(DS1 + "/" + name)
    script = 'mkdir "%s/%s"' % (DS1, name) + ('; echo mine > "%s/%s/keep.txt"' % (DS1, name) if content == "file" else "")
    on_clone(host, script)
    try:
        r = hotvcb(host, "restore", bk, "--datastore", "datastore1", "--name", name, "--format", "zeroedthick")
    finally:
        clear_hooks(host)
    assert os.path.isdir(folder), "the hook did not run: " + out(r)
    assert r.returncode == 6 and "appeared during the restore" in out(r), out(r)
    assert os.listdir(folder) == ([] if content == "empty" else ["keep.txt"]), os.listdir(folder)
    assert name not in registered(host) and leftovers(host) == [], leftovers(host)
    shutil.rmtree(folder)


def test_a_losing_claim_leaves_the_running_restores_record(site):
    """Two restores of one name both pass the plan's 'no such folder' check; A claims the folder and
    is cloning (held in the vmkfstools hook); B's claim comes second and fails (B's exact code path,
    run on the host through the API: restore_scratch.on_host(...).claim). A is then SIGKILLed:
    `hotvcb cleanup` must remove A's unfinished folder, and a restore of that name then go ahead."""
    host, _conf, bk = site
    name = "Zwei Mal"
    temp = "%s/%s.hotvcb-restoring" % (DS1, name)
    on_clone(host, PAUSE)
    run = hotvcb_background(host, "restore", bk, "--datastore", "datastore1", "--name", name, "--format", "zeroedthick")
    try:
        wait_for(lambda: hooked(host, "in_clone"), timeout=60, what="A's clone")
        records_before = leftovers(host)
        code = ("import sys; from hotvcb.jobs import restore_scratch; from hotvcb.localshell import LocalShell\n"
                "from hotvcb.errors import HostError\n"
                "r = restore_scratch.on_host(LocalShell(), '/var/run')\n"
                "try:\n    r.claim(sys.argv[1])\nexcept HostError as e:\n    print('LOST', e)\n")
        b = subprocess.run([sys.executable, "-m", "esxisim", "shell", host.root, "--", "env", "PYTHONPATH=" + REPO,
                            "/bin/python", "-c", code, temp], capture_output=True, text=True, timeout=60, cwd=REPO)
        assert "LOST" in out(b), out(b)
        os.kill(restore_pid(host), signal.SIGKILL)
        run.wait(timeout=60)
    finally:
        open(os.path.join(hookdir(host), "abort"), "w").close()
        if run.poll() is None:
            run.kill()
        run.communicate()
    clear_hooks(host)
    try:
        assert [e for e in records_before if e.endswith(".owner")], records_before
        assert os.path.isdir(host.real(temp))
        r = hotvcb(host, "cleanup")
        assert not os.path.exists(host.real(temp)), "cleanup left the killed restore's folder: " + out(r)
        r = hotvcb(host, "restore", bk, "--datastore", "datastore1", "--name", name)
        assert r.returncode == 0, out(r)
    finally:  # what the defect leaves must not fail the other tests
        shutil.rmtree(host.real(temp), ignore_errors=True)
        for e in leftovers(host):
            if e.endswith(".owner"):
                os.unlink(os.path.join(host.real(DS1), e))


def test_two_restores_of_one_name_at_once(site):
    """Both are held at their inventory question (in the plan, before the folder checks) and let go
    together: exactly one restores the VM, the other fails with one clear line, one VM registered,
    its disks the backup's, nothing of ours left."""
    host, _conf, bk = site
    name = "Gleichzeitig"
    h = hookdir(host)
    with open(os.path.join(h, "vimcmd.sh"), "w") as f:
        f.write('case "$1" in vmsvc/getallvms) touch "%s/wait.$$"; i=0; while [ ! -f "%s/release" ] && [ $i -lt 900 ]; '
                'do sleep 0.1; i=$((i+1)); done;; esac\n' % (h, h))
    runs = [hotvcb_background(host, "restore", bk, "--datastore", "datastore1", "--name", name, "--format", fmt)
            for fmt in ("zeroedthick", "thin")]
    try:
        wait_for(lambda: len(glob.glob(os.path.join(h, "wait.*"))) >= 2, timeout=60, what="both restores held")
        open(os.path.join(h, "release"), "w").close()
        outs = [p.communicate(timeout=120)[0] for p in runs]
    finally:
        for p in runs:
            if p.poll() is None:
                p.kill()
        clear_hooks(host)
    codes = sorted(p.returncode for p in runs)
    assert codes == [0, 6], outs
    loser = outs[[p.returncode for p in runs].index(6)]
    assert "Traceback" not in loser and name in loser, loser
    assert registered(host).count(name) == 1
    folder = host.real(DS1 + "/" + name)
    for disk in ("Quelle ü.vmdk", "Quelle ü_1.vmdk"):
        assert qemu_same(os.path.join(host.real(bk), disk), os.path.join(folder, disk)), disk
    assert leftovers(host) == [], leftovers(host)


def test_a_backup_rotated_away_during_the_restore_fails_cleanly(site):
    """The backup's folder is deleted (rotation, an admin) while its first disk is cloned: the restore
    fails with one clear line, nothing registered, nothing of ours left."""
    host, _conf, bk = site
    copy = bk + "-weg"
    subprocess.run(["cp", "-a", host.real(bk), host.real(copy)], check=True)
    copy = bk.rsplit("-", 6)[0] + "-2001-01-01_00-00-00"
    os.rename(host.real(bk + "-weg"), host.real(copy))
    on_clone(host, 'rm -rf "%s"' % copy)
    try:
        r = hotvcb(host, "restore", copy, "--datastore", "datastore1", "--name", "Rotiert", "--format", "zeroedthick")
    finally:
        clear_hooks(host)
    assert not os.path.exists(host.real(copy)), "the hook did not run: " + out(r)
    o = out(r)
    assert r.returncode == 6 and "Traceback" not in o and "internal error" not in o, o
    assert "Rotiert" not in registered(host) and leftovers(host) == [], leftovers(host)
    assert not os.path.exists(host.real(DS1 + "/Rotiert"))


@pytest.mark.parametrize("target", ["/vmfs/volumes/datastore1/../../../tmp/ZIEL", "/vmfs/volumes/datastore1/../backup/..",
                                    "nirgends", "/vmfs/volumes", "/tmp/ZIEL"])
def test_a_target_that_is_no_datastore_folder_is_refused(site, target):
    """--datastore naming a folder outside every datastore, by `..` through one, or no datastore at
    all: refused with one clear line, nothing written there (the host's ramdisk must not fill)."""
    host, _conf, bk = site
    real_tmp = "/tmp/ZIEL-%d" % os.getpid()  # the namespace's /tmp is this machine's
    os.makedirs(real_tmp, exist_ok=True)
    try:
        r = hotvcb(host, "restore", bk, "--datastore", target.replace("/tmp/ZIEL", real_tmp), "--name", "Ausserhalb")
        o = out(r)
        assert os.listdir(real_tmp) == [], (os.listdir(real_tmp), o)
        assert r.returncode in (1, 6) and "Traceback" not in o, o
        assert "Ausserhalb" not in registered(host)
    finally:
        shutil.rmtree(real_tmp, ignore_errors=True)


# -- signals, then cleanup and a second restore -----------------------------------------------------
def test_sigkill_mid_clone_then_the_next_restore_reclaims_its_folder(site):
    host, _conf, bk = site
    name = "Getötet"
    on_clone(host, 'kill -9 $PPID; exit 1')
    try:
        r = hotvcb(host, "restore", bk, "--datastore", "datastore1", "--name", name, "--format", "zeroedthick")
    finally:
        clear_hooks(host)
    assert r.returncode != 0 and os.path.isdir(host.real(DS1 + "/" + name + ".hotvcb-restoring")), out(r)
    r = hotvcb(host, "restore", bk, "--datastore", "datastore1", "--name", name)
    assert r.returncode == 0, out(r)  # the dead restore's folder removed first, as cleanup removes it, and said
    assert "removing %s/%s.hotvcb-restoring, left by a restore that died" % (DS1, name) in out(r), out(r)
    assert registered(host).count(name) == 1 and leftovers(host) == []


def test_sigkill_in_the_thin_self_copy_then_cleanup_then_restore(site):
    host, _conf, bk = site
    name = "Selbst getötet"
    env = dict(os.environ, PYTHONPATH=REPO)
    r = subprocess.run([sys.executable, "-m", "esxisim", "shell", host.root, "--", "env", "PYTHONPATH=" + REPO,
                        "HOTVCB_CRASH_AT=restore-copy-wrote", "/bin/python", "-m", "hotvcb", "restore", bk,
                        "--datastore", "datastore1", "--name", name], capture_output=True, text=True, timeout=120,
                       env=env, cwd=REPO)
    assert r.returncode in (137, -9, 128 + 9) or r.returncode < 0 or r.returncode > 128, out(r)
    assert os.path.isdir(host.real(DS1 + "/" + name + ".hotvcb-restoring")), leftovers(host)
    r = hotvcb(host, "cleanup")
    assert r.returncode == 0 and leftovers(host) == [], (out(r), leftovers(host))
    r = hotvcb(host, "restore", bk, "--datastore", "datastore1", "--name", name)
    assert r.returncode == 0 and "checked as it was copied" in out(r), out(r)


def test_sigterm_mid_clone_leaves_nothing_and_the_name_is_free(site):
    host, _conf, bk = site
    name = "Beendet"
    on_clone(host, 'kill -TERM $PPID')
    try:
        r = hotvcb(host, "restore", bk, "--datastore", "datastore1", "--name", name, "--format", "zeroedthick")
    finally:
        clear_hooks(host)
    assert r.returncode == 2, out(r)
    assert "Traceback" not in out(r)
    assert leftovers(host) == [] and not os.path.exists(host.real(DS1 + "/" + name)), leftovers(host)
    assert name not in registered(host)
    r = hotvcb(host, "restore", bk, "--datastore", "datastore1", "--name", name)
    assert r.returncode == 0, out(r)


def make_gz(host, bk, stamp):
    """A .gz of the backup (as ENABLE_COMPRESSION writes one) beside it: its path on the host."""
    vm_dir = bk.rsplit("/", 1)[0]
    name = vm_dir.rsplit("/", 1)[1] + "-" + stamp
    gz = "%s/%s.gz" % (vm_dir, name)
    with tarfile.open(host.real(gz), "w:gz") as t:
        t.add(host.real(bk), arcname=name)
    return gz


def test_sigkill_mid_clone_of_a_gz_then_cleanup_then_restore(site):
    """A .gz restore SIGKILLed while it clones from its unpacked copy: the scratch folder and the
    unfinished VM folder stay; `hotvcb cleanup` removes both and their records; the same restore
    then goes ahead and removes its own scratch."""
    host, _conf, bk = site
    gz = make_gz(host, bk, "2002-02-02_02-02-02")
    name = "GZ getötet"
    on_clone(host, 'kill -9 $PPID; exit 1')
    try:
        r = hotvcb(host, "restore", gz, "--datastore", "datastore1", "--name", name, "--format", "zeroedthick")
    finally:
        clear_hooks(host)
    try:
        left = leftovers(host)
        assert r.returncode != 0 and name + ".hotvcb-restoring" in left, (left, out(r))
        assert [e for e in left if e.startswith(".hotvcb-extract-") and not e.endswith(".owner")], left
        r = hotvcb(host, "cleanup")
        assert r.returncode == 0 and leftovers(host) == [], (out(r), leftovers(host))
        r = hotvcb(host, "restore", gz, "--datastore", "datastore1", "--name", name)
        assert r.returncode == 0 and leftovers(host) == [], (out(r), leftovers(host))
    finally:
        os.unlink(host.real(gz))


def test_sigkill_while_registering_keeps_the_complete_vm_for_cleanup_to_leave(site):
    """SIGKILL while `vim-cmd solo/registervm` runs (the folder has its final name): the complete
    folder stays, no record of ours names it, `hotvcb cleanup` leaves it, and it registers by hand."""
    host, _conf, bk = site
    name = "Registrier Tod"
    h = hookdir(host)
    with open(os.path.join(h, "vimcmd.sh"), "w") as f:
        f.write('case "$1" in solo/registervm) rm -f "%s/vimcmd.sh"; kill -9 $PPID; exit 1;; esac\n' % h)
    try:
        r = hotvcb(host, "restore", bk, "--datastore", "datastore1", "--name", name)
    finally:
        clear_hooks(host)
    folder = DS1 + "/" + name
    assert r.returncode != 0 and os.path.isdir(host.real(folder)), out(r)
    assert leftovers(host) == [], leftovers(host)
    r = hotvcb(host, "cleanup")
    assert r.returncode == 0 and os.path.isdir(host.real(folder)), out(r)
    assert sorted(os.listdir(host.real(folder))) == sorted(
        [name + ".vmx", name + ".nvram", "Quelle ü.vmdk", "Quelle ü-flat.vmdk", "Quelle ü_1.vmdk", "Quelle ü_1-flat.vmdk"])
    assert name not in registered(host)
    subprocess.run([sys.executable, "-m", "esxisim", "shell", host.root, "--", "vim-cmd", "solo/registervm",
                    "%s/%s.vmx" % (folder, name)], check=True, capture_output=True, timeout=60)
    assert name in registered(host)


def test_sigterm_while_registering_says_what_became_of_the_vm(site):
    """SIGTERM arrives while the VM is being registered (the registration itself completes): exit 2,
    and the VM is registered from its complete folder, or not registered with the folder kept and
    the way to register it said; never a registered VM whose folder was removed."""
    host, _conf, bk = site
    name = "Registrier Term"
    h = hookdir(host)
    with open(os.path.join(h, "vimcmd.sh"), "w") as f:
        f.write('case "$1" in solo/registervm) rm -f "%s/vimcmd.sh"; kill -TERM $PPID;; esac\n' % h)
    try:
        r = hotvcb(host, "restore", bk, "--datastore", "datastore1", "--name", name)
    finally:
        clear_hooks(host)
    o = out(r)
    folder = host.real(DS1 + "/" + name)
    assert "Traceback" not in o and r.returncode == 2, o
    assert os.path.isdir(folder) and os.path.exists(os.path.join(folder, name + ".vmx")), o
    if name not in registered(host):
        assert "registervm" in o, o
    assert leftovers(host) == [], leftovers(host)


# -- names ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ['Zitat "x" \'y\'', "$(touch pwned) ; `id` &", "-beginnt mit Strich",
                                  "Ünïcødé ✓ 名前", "back\\slash |22 %41 *?[", " führende Leerzeichen "])
def test_odd_names_restore_exactly(site, name):
    host, _conf, bk = site
    r = hotvcb(host, "restore", bk, "--datastore", "datastore1", "--name", name)
    assert r.returncode == 0, out(r)
    folder = host.real(DS1 + "/" + name)
    vmx = open(os.path.join(folder, name + ".vmx"), encoding="utf-8").read()
    assert vmx.count("\ndisplayName = ") + vmx.startswith("displayName = ") == 1
    assert name in registered(host)
    assert not glob.glob(os.path.join(host.root, "**", "pwned"), recursive=True)
    for disk in ("Quelle ü.vmdk", "Quelle ü_1.vmdk"):
        assert qemu_same(os.path.join(host.real(bk), disk), os.path.join(folder, disk)), disk
    assert leftovers(host) == []


@pytest.mark.parametrize("fmt", ["thin", "zeroedthick", "2gbsparse"])
def test_a_vm_with_odd_disk_names_round_trips(site, fmt):
    """A VM named with a quote, '$', ';' and umlauts (its disk files so named), backed up and restored."""
    host, _conf, _bk = site
    vm = 'Dis"k $x; ä'
    if vm not in registered(host):
        host.create_vm(vm, "datastore1", [{"size": "4M"}, {"size": "4M", "bus": "nvme"}])
        conf = write_conf(host, name="odd.conf")
        r = hotvcb(host, "backup", "-m", vm, "-g", conf)
        assert r.returncode == 0, out(r)
    (b,) = [e for e in os.listdir(host.real(VOLUME + "/" + vm)) if e.startswith(vm + "-")]
    bk = "%s/%s/%s" % (VOLUME, vm, b)
    name = vm + " " + fmt
    r = hotvcb(host, "restore", bk, "--datastore", "datastore1", "--name", name, "--format", fmt)
    assert r.returncode == 0, out(r)
    folder = host.real(DS1 + "/" + name)
    assert sorted(os.listdir(folder)) == sorted([name + ".vmx", name + ".nvram", vm + ".vmdk", vm + "_1.vmdk"] + (
        [vm + "-s001.vmdk", vm + "_1-s001.vmdk"] if fmt == "2gbsparse" else [vm + "-flat.vmdk", vm + "_1-flat.vmdk"]))
    if fmt != "2gbsparse":  # qemu-img cannot parse an extent name holding '"'; the flat files are the disks
        for flat in (vm + "-flat.vmdk", vm + "_1-flat.vmdk"):
            with open(os.path.join(host.real(bk), flat), "rb") as a, open(os.path.join(folder, flat), "rb") as b:
                assert a.read() == b.read(), flat
        for disk in (vm + ".vmdk", vm + "_1.vmdk"):
            text = open(os.path.join(folder, disk), encoding="utf-8").read()
            assert ' "%s-flat.vmdk"' % disk[:-5] in text, text


@pytest.mark.parametrize("name", ["ü" * 130, "x" * 245])
def test_a_name_too_long_for_a_folder_fails_with_one_line_and_leaves_nothing(site, name):
    """A name whose folder (or its `.hotvcb-restoring` form) is past the 255-byte limit of a file
    name: one clear error, exit 6, no traceback, no record or folder of ours left."""
    host, _conf, bk = site
    r = hotvcb(host, "restore", bk, "--datastore", "datastore1", "--name", name)
    o = out(r)
    assert r.returncode == 6 and "Traceback" not in o and "internal error" not in o, o
    assert len([l for l in o.splitlines() if " -- error: " in l]) == 1, o
    assert leftovers(host) == [] and name not in registered(host), leftovers(host)


@pytest.mark.parametrize("fmt", ["0", "5", "thinn", "3;x", "-1"])
def test_a_bad_format_is_a_usage_error(site, fmt):
    host, _conf, bk = site
    r = hotvcb(host, "restore", bk, "--datastore", "datastore1", "--name", "Format", "--format", fmt)
    o = out(r)
    assert r.returncode in (1, 6) and "Traceback" not in o and "format" in o.lower(), o
    assert not os.path.exists(host.real(DS1 + "/Format")) and leftovers(host) == []


# -- a full target ----------------------------------------------------------------------------------
def in_small_tmpfs(host, size, prefill, *args):
    """hotvcb ARGS with a `size` tmpfs on ds5, `prefill` bytes written there first; prints what is left."""
    script = ('mount -t tmpfs -o size=%s tmpfs /vmfs/volumes/ds5/ || exit 99; '
              '%s "$@"; rc=$?; echo "LEFT: $(ls -A /vmfs/volumes/ds5/ | grep -v ^filler | tr "\\n" "|")"; exit $rc'
              % (size, "head -c %d /dev/zero > /vmfs/volumes/ds5/filler 2>/dev/null;" % prefill if prefill else ""))
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-m", "esxisim", "shell", host.root, "--", "sh", "-c", script, "sh",
                           "env", "PYTHONPATH=" + REPO, "/bin/python", "-m", "hotvcb"] + list(args),
                          capture_output=True, text=True, timeout=120, env=env, cwd=REPO)


@pytest.mark.parametrize("fmt,size,prefill", [("thin", "64k", 64 << 10), ("zeroedthick", "64k", 64 << 10)])
def test_a_full_target_fails_cleanly_and_leaves_nothing(site, fmt, size, prefill):
    """The datastore says it has room, its filesystem has none: not even the owner record fits. One
    clear error, nothing registered, nothing of ours left on the datastore."""
    host, _conf, bk = site
    name = "Voll %s %s" % (fmt, size)
    r = in_small_tmpfs(host, size, prefill, "restore", bk, "--datastore", "ds5", "--name", name, "--format", fmt)
    o = out(r)
    assert r.returncode == 6, o
    assert "Traceback" not in o and "internal error" not in o, o
    assert "No space left on device" in o or "not enough space" in o, o
    assert "LEFT: \n" in o, o
    assert name not in registered(host)


def test_a_datastore_filled_during_the_clone_fails_cleanly(site):
    """A 48 MiB datastore (esxisim's capacity) has room when checked; another writer fills it once the
    clone has begun (the hook writes 40 MiB there): the clone fails with ESXi's message, the folder
    and its record are removed, nothing registered; once the room is back, the same name restores."""
    host, _conf, bk = site
    ds = "/vmfs/volumes/klein"
    on_clone(host, 'head -c %d /dev/urandom > "%s/filler"' % (40 << 20, ds))
    try:
        r = hotvcb(host, "restore", bk, "--datastore", "klein", "--name", "Voll", "--format", "zeroedthick")
    finally:
        clear_hooks(host)
    assert os.path.exists(host.real(ds + "/filler")), "the hook did not run: " + out(r)
    o = out(r)
    assert r.returncode == 6 and "not enough space" in o and "nothing was registered" in o, o
    assert "Traceback" not in o
    assert leftovers(host, ds) == [] and sorted(os.listdir(host.real(ds))) == ["filler"], os.listdir(host.real(ds))
    assert "Voll" not in registered(host)
    os.unlink(host.real(ds + "/filler"))
    r = hotvcb(host, "restore", bk, "--datastore", "klein", "--name", "Voll", "--format", "zeroedthick")
    assert r.returncode == 0, out(r)


# -- restore files ----------------------------------------------------------------------------------
def test_a_restore_file_with_garbage_and_one_name_twice(site, tmp_path):
    """Lines: good; the same name again (its folder exists by then); binary junk; format 5; a missing
    backup; an empty name field. Each bad line one error naming file:line, the good one restored,
    exit 4; nothing of ours left."""
    host, _conf, bk = site
    f = os.path.join(host.root, "rf_restore")
    lines = ['"%s;/vmfs/volumes/datastore1;3;Aus Datei"' % bk,
             '"%s;datastore1;1;Aus Datei"' % bk,
             "\x01\x02\x7f garbage ;;;",
             "%s;datastore1;5;Fünf" % bk,
             "/vmfs/volumes/backup/nope;datastore1;3;Nichts",
             "%s;datastore1;3;" % bk]
    with open(f, "wb") as fh:
        fh.write("\n".join(lines).encode("utf-8") + b"\n")
    r = hotvcb(host, "restore", "-c", f)
    o = out(r)
    assert r.returncode == 4, o
    assert "Traceback" not in o, o
    for n in (2, 3, 4, 5):
        assert "%s:%d" % (f, n) in o, (n, o)
    assert registered(host).count("Aus Datei") == 1
    assert leftovers(host) == [], leftovers(host)


def test_a_latin1_comment_does_not_break_the_utf8_lines_of_a_restore_file(site):
    """A UTF-8 restore file whose comment line was appended in Latin-1 (`echo '# Müller' >>` under a
    Latin-1 locale): a bad line is that line's error only, the docs say; a comment is not even one.
    The UTF-8 line naming 'Quelle ü' must restore."""
    host, _conf, bk = site
    f = os.path.join(host.root, "latin1_restore")
    with open(f, "wb") as fh:
        fh.write(('"%s;datastore1;3;Kommentar ü"\n' % bk).encode("utf-8") + "# Sicherung für Müller\n".encode("latin-1"))
    r = hotvcb(host, "restore", "-c", f)
    assert r.returncode == 0, out(r)
    assert "Kommentar ü" in registered(host)


def test_latest_takes_a_name_literally(site):
    """`--latest 'Quelle*'` and `--latest 'Quelle .'` are names, not patterns: no backup found."""
    host, conf, _bk = site
    for pattern in ("Quelle*", "Quelle .", "quelle ü"):
        r = hotvcb(host, "restore", "--latest", pattern, "-g", conf, "--datastore", "datastore1", "--name", "Muster")
        assert r.returncode != 0 and "Traceback" not in out(r), (pattern, out(r))
        assert not os.path.exists(host.real(DS1 + "/Muster")), pattern
