"""Outside tester's attacks on recovering SIGKILLed restores into a KVM directory
(`hotvcb restore --kvm DIR`, then `hotvcb cleanup --kvm DIR` or the next restore into DIR):
kills at every step, awkward ways to name DIR, hostile VM names, forged and garbage records,
a read-only DIR, cleanups racing each other and a restore. The promise: exactly a dead restore's
folders and records go; a live restore's, a finished VM's and anything outside DIR stay; every
problem is one line, never a traceback."""

import hashlib
import os
import signal
import socket
import subprocess
import time

import pytest

from qemuvm import PYTHON, env, kill_tree, needs_qemu, slow_qemu_img, wait_until
from restorerecords import dead_pid, survives, victim, write_record
from test_outsider_crosshv import esxi_backup, gz_backup

pytestmark = needs_qemu
HOST_ID = open("/etc/machine-id").read().strip() if os.path.exists("/etc/machine-id") else ""
MACHINE = socket.gethostname()


def cli(*args, cwd=None, timeout=120, bin_dir=None):
    r = subprocess.run([PYTHON, "-m", "hotvcb"] + [str(a) for a in args], capture_output=True, text=True,
                       timeout=timeout, env=env(bin_dir), cwd=cwd)
    r.out = r.stdout + r.stderr
    assert "Traceback" not in r.out and "internal error" not in r.out, r.out
    return r


def start_restore(backup, out, *extra, cwd=None, bin_dir=None):
    return subprocess.Popen([PYTHON, "-m", "hotvcb", "restore", str(backup), "--kvm", str(out)] + list(extra),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env(bin_dir),
                            cwd=cwd, start_new_session=True)


def sigkill(p):
    """SIGKILL the restore and everything it started (qemu-img dies with it, as at a power cut)."""
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    p.communicate(timeout=30)
    kill_tree(p.pid)


def digest(path):
    return hashlib.sha1(path.encode()).hexdigest()[:16]


def record(folder, path, pid=None, host=HOST_ID, name=None, raw=None, age=0):
    """A record as a restore writes it, `<folder>/<name>` (default: the VM folder's digest name)."""
    name = name or ".hotvcb-restoring-%s.owner" % digest(path)
    return write_record(os.path.join(str(folder), name), MACHINE, dead_pid() if pid is None else pid, path,
                        host=host, raw=raw, age=age)


def converting(out, names, timeout=60):
    """Wait until every named restore converts into its unfinished folder."""
    wait_until(lambda: all(os.path.exists(os.path.join(str(out), n + ".hotvcb-restoring", "sda.raw")) for n in names),
               timeout, "the conversions to start")


# --- how DIR is named ---------------------------------------------------------------------------

@pytest.mark.parametrize("given", ["relative", "relative/"])
def test_a_killed_restore_into_a_relative_dir_is_recoverable(tmp_path, given):
    """`hotvcb restore B --kvm images` (a relative DIR, as typed in /var/lib/libvirt) SIGKILLed mid-conversion:
    its record must let `cleanup --kvm` (from the same directory, or by DIR's absolute path) and the next restore
    remove the folder. The record holds the path as typed (`path=images/web.hotvcb-restoring`), so every
    later cleanup calls it "not a record hotvcb wrote" and the next restore refuses the name ("another restore
    into it is running") until the folder is removed by hand."""
    backup = esxi_backup(tmp_path / "vol", "web", size=16 << 20, random_bytes=8 << 20)
    out = tmp_path / "images"
    out.mkdir()
    slow = slow_qemu_img(str(tmp_path / "slowbin"), "2M")
    p = start_restore(backup, "images" + given[len("relative"):], "--format", "raw", "--no-verify",
                      cwd=str(tmp_path), bin_dir=slow)
    try:
        converting(out, ["web"])
    finally:
        sigkill(p)
    assert (out / "web.hotvcb-restoring").exists()
    r = cli("cleanup", "--kvm", "images", cwd=str(tmp_path))
    r2 = cli("cleanup", "--kvm", out)
    assert "not a record hotvcb wrote" not in r.out + r2.out, r.out + r2.out
    assert os.listdir(str(out)) == [], r.out + r2.out
    r = cli("restore", backup, "--kvm", "images", "--no-verify", cwd=str(tmp_path))
    assert r.returncode == 0 and os.listdir(str(out)) == ["web"], r.out


def test_a_killed_restore_through_a_symlinked_dir_is_found_by_its_real_path(tmp_path):
    """DIR given through a symlink (`/var/lib/libvirt/images` -> a bigger disk): cleanup by the real path
    finds the record and removes the folder (through the link: nothing beside it)."""
    backup = esxi_backup(tmp_path / "vol", "web", size=16 << 20, random_bytes=8 << 20)
    real = tmp_path / "real"
    real.mkdir()
    os.symlink(str(real), str(tmp_path / "alias"))
    slow = slow_qemu_img(str(tmp_path / "slowbin"), "2M")
    p = start_restore(backup, tmp_path / "alias", "--format", "raw", "--no-verify", bin_dir=slow)
    try:
        converting(real, ["web"])
    finally:
        sigkill(p)
    r = cli("cleanup", "--kvm", real)
    assert r.returncode == 0 and "cleanup: 1 leftover(s) removed" in r.out, r.out
    assert os.listdir(str(real)) == [] and os.path.islink(str(tmp_path / "alias")), r.out


# --- hostile names ------------------------------------------------------------------------------

NAMES = ["a b", "it's \"q\"", "Ümläut", "star*?[x]", "back\\slash", "-dash", "..x", "x..", " lead", "$(touch pwn)",
         "x" * 200]


def test_killed_restores_under_hostile_names_are_all_recovered(tmp_path):
    """Many restores under names that need quoting, all SIGKILLed mid-conversion: one cleanup removes every
    folder and record, says so once each, and runs nothing the names hold."""
    backup = esxi_backup(tmp_path / "vol", "web", size=8 << 20, random_bytes=4 << 20)
    out = tmp_path / "out"
    out.mkdir()
    slow = slow_qemu_img(str(tmp_path / "slowbin"), "512K")
    ps = [start_restore(backup, out, "--format", "raw", "--no-verify", "--name", n, bin_dir=slow, cwd=str(tmp_path))
          for n in NAMES]
    try:
        converting(out, NAMES)
    finally:
        for p in ps:
            sigkill(p)
    assert len(os.listdir(str(out))) == 2 * len(NAMES)
    r = cli("cleanup", "--kvm", out, cwd=str(tmp_path))
    assert r.returncode == 0 and "cleanup: %d leftover(s) removed" % len(NAMES) in r.out, r.out
    assert os.listdir(str(out)) == [] and not (tmp_path / "pwn").exists(), r.out


def test_a_killed_restore_under_a_name_with_a_newline_is_recovered(tmp_path):
    """`--name $'web\\nx'` is accepted (a new name is refused only for `/`, NUL, or dots and spaces), but the
    newline splits the record's `path=` line: killed mid-conversion, its record is "not a record hotvcb
    wrote" to every cleanup and the folder stays for good. Either refuse the name or recover it."""
    backup = esxi_backup(tmp_path / "vol", "web", size=16 << 20, random_bytes=8 << 20)
    out = tmp_path / "out"
    out.mkdir()
    slow = slow_qemu_img(str(tmp_path / "slowbin"), "2M")
    p = start_restore(backup, out, "--format", "raw", "--no-verify", "--name", "web\nhost=x pid=1", bin_dir=slow)
    try:
        wait_until(lambda: os.path.exists(str(out / "web\nhost=x pid=1.hotvcb-restoring" / "sda.raw"))
                   or p.poll() is not None, 60, "the conversion to start or the name to be refused")
    finally:
        sigkill(p)
    r = cli("cleanup", "--kvm", out)
    assert r.returncode == 0 and os.listdir(str(out)) == [], r.out


# --- races --------------------------------------------------------------------------------------

def dead_folder(out, name="vm00", subs=40, files=40):
    """An unfinished VM folder with the record of a dead restore of this machine, in `subs` subfolders so
    that a cleanup can be caught (and stopped) in the middle of removing it."""
    folder = os.path.join(str(out), name + ".hotvcb-restoring")
    for i in range(subs):
        os.makedirs(os.path.join(folder, "s%02d" % i))
        for j in range(files):
            open(os.path.join(folder, "s%02d" % i, "f%d" % j), "w").close()
    record(out, folder)
    return folder


def stopped_while_removing(folder, subs=40):
    """A `cleanup --kvm` of folder's DIR, SIGSTOPped once it has begun to remove folder (where it is
    removed: under its name, or a name of the cleanup's own it was first renamed to, in DIR)."""
    out = os.path.dirname(folder)
    c = subprocess.Popen([PYTHON, "-m", "hotvcb", "cleanup", "--kvm", out],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env())

    def removing():
        for entry in os.listdir(out):
            try:
                if len(os.listdir(os.path.join(out, entry))) < subs:
                    return os.path.join(out, entry)
            except OSError:
                pass  # a record, or gone meanwhile
        return None
    wait_until(lambda: removing() or c.poll() is not None, 60, "the cleanup to remove", poll=0.001)
    c.send_signal(signal.SIGSTOP)
    assert c.poll() is None and removing(), "the cleanup ended before it could be stopped"
    return c


def test_two_cleanups_at_once_remove_each_dead_folder_once_and_both_say_so(tmp_path):
    """`cleanup --kvm DIR` takes no lock, so two of them (cron and an admin) sweep the same dead folder
    together: here one is held in the middle of removing it while the other removes it all. Neither may
    then report the folder the other removed as "cannot remove ... No such file or directory -- left with
    its record for the next cleanup; remove it by hand" (exit 1): it is gone, and so is its record.
    (On ESXi the host lock serialises cleanups; in DIR nothing does.)"""
    out = tmp_path / "out"
    out.mkdir()
    folder = dead_folder(out)
    a = stopped_while_removing(folder)
    try:
        b = cli("cleanup", "--kvm", out)
    finally:
        a.send_signal(signal.SIGCONT)
    text = a.communicate(timeout=60)[0]
    assert b.returncode == 0 and "cleanup: 1 leftover(s) removed" in b.out, b.out
    assert os.listdir(str(out)) == [], text
    assert "Traceback" not in text and "cannot remove" not in text and a.returncode == 0, text


def test_a_cleanup_killed_while_removing_leaves_what_the_next_one_removes(tmp_path):
    """A cleanup removes a dead folder under a name of its own (recorded): SIGKILLed in the middle,
    the rest is a dead run's scratch folder, which the next cleanup removes with its record, and a
    restore of that name then goes ahead."""
    out = tmp_path / "out"
    out.mkdir()
    folder = dead_folder(out)
    c = stopped_while_removing(folder)
    c.kill()
    c.communicate(timeout=30)
    assert any(e.startswith(".hotvcb-extract-") and not e.endswith(".owner") for e in os.listdir(str(out)))
    r = cli("cleanup", "--kvm", out)
    assert r.returncode == 0 and os.listdir(str(out)) == [], r.out


def test_a_restore_of_that_name_while_a_cleanup_removes_the_dead_folder(tmp_path):
    """The next restore into DIR removes a dead restore's folder of its name by itself, while a cleanup is
    removing it (held here in the middle): the restore must succeed and write its own record and folder; the
    cleanup, resumed while that restore converts, must leave the live restore's folder and record alone, and
    not call the dead folder it no longer finds a failure ("cannot remove ...", exit 1)."""
    backup = esxi_backup(tmp_path / "vol", "vm00", size=4 << 20, random_bytes=2 << 20)
    out = tmp_path / "out"
    out.mkdir()
    folder = dead_folder(out)
    slow = slow_qemu_img(str(tmp_path / "slowbin"), "2M")
    c = stopped_while_removing(folder)
    p = None
    try:
        p = start_restore(backup, out, "--format", "raw", "--no-verify", bin_dir=slow)
        wait_until(lambda: os.path.exists(os.path.join(folder, "sda.raw")) or p.poll() is not None, 60,
                   "the restore to convert")
        assert p.poll() is None, p.communicate()[0]
        live = sorted(e for e in os.listdir(str(out)) if not e.startswith(".hotvcb-extract-"))  # not the cleanup's
        assert len(live) == 2, live  # its record and its folder
    finally:
        c.send_signal(signal.SIGCONT)
    text = c.communicate(timeout=60)[0]
    assert sorted(os.listdir(str(out))) == live and os.path.exists(os.path.join(folder, "sda.raw")), text
    restored = p.communicate(timeout=120)[0]
    assert p.returncode == 0 and os.listdir(str(out)) == ["vm00"], restored
    assert "Traceback" not in text and "cannot remove" not in text and c.returncode == 0, text


# --- forged, garbage and foreign records ---------------------------------------------------------

def test_forged_and_garbage_records_take_nothing_but_a_dead_restores_folders(tmp_path):
    """Records that climb out of DIR (`..`, a symlinked subfolder), name a finished VM's folder, carry a wrong
    digest name, absurd pids, a FIFO, another host's fresh heartbeat or a heartbeat from the future, a folder
    that is a symlink to a VM: only what a dead restore of this machine left in DIR goes, symlinks as links."""
    d = tmp_path / "d"
    d.mkdir()
    outside = tmp_path / "outside"
    D, O = str(d), str(outside)
    keep, gone = [], []
    keep.append(victim(O + "/v1.hotvcb-restoring"))
    record(d, D + "/web.hotvcb-restoring/../../outside/v1.hotvcb-restoring")
    os.symlink(O, D + "/link")
    keep.append(victim(O + "/v2.hotvcb-restoring"))
    record(d, D + "/link/v2.hotvcb-restoring")
    keep.append(victim(D + "/vm3"))                       # a finished VM named by a record
    record(d, D + "/vm3")
    record(d, D + "/vm3", name=".hotvcb-extract-9-9-999999.owner")
    keep.append(victim(D + "/vm4.hotvcb-restoring"))      # a record under another folder's digest
    record(d, D + "/vm4.hotvcb-restoring", name=".hotvcb-restoring-0000000000000000.owner")
    keep.append(victim(D + "/vm6.hotvcb-restoring"))
    record(d, D + "/vm6.hotvcb-restoring", pid="-1")
    keep.append(victim(D + "/vm7.hotvcb-restoring"))      # a FIFO where the record is: never opened
    os.mkfifo(D + "/.hotvcb-restoring-%s.owner" % digest(D + "/vm7.hotvcb-restoring"))
    keep.append(victim(O + "/realvm"))
    os.symlink(O + "/realvm", D + "/vm8.hotvcb-restoring")  # removed as a link
    record(d, D + "/vm8.hotvcb-restoring")
    keep.append(victim(D + "/vm9.hotvcb-restoring"))      # another host, touched "in an hour" (clock skew)
    record(d, D + "/vm9.hotvcb-restoring", host="f" * 32, age=-3600)
    keep.append(victim(D + "/vm10.hotvcb-restoring"))     # another host, fresh
    record(d, D + "/vm10.hotvcb-restoring", host="f" * 32)
    keep.append(victim(D + "/vm11.hotvcb-restoring"))     # another machine
    record(d, D + "/vm11.hotvcb-restoring", raw="run=abcdef012345 machine=other-box pid=%d started=1 host=%s\npath=%s\n"
           % (dead_pid(), HOST_ID, D + "/vm11.hotvcb-restoring"))
    keep.append(victim(D + "/vm12.hotvcb-restoring"))     # a record far beyond 4 KiB
    record(d, D + "/vm12.hotvcb-restoring", raw="run=abcdef012345 machine=%s pid=%d started=1 host=%s %s\npath=%s\n"
           % (MACHINE, dead_pid(), HOST_ID, "x" * 8192, D + "/vm12.hotvcb-restoring"))
    keep.append(victim(D + "/vm13.hotvcb-restoring"))     # no record at all
    gone.append(victim(D + "/vm5.hotvcb-restoring"))
    record(d, D + "/vm5.hotvcb-restoring", pid="99999999999999999999999")
    gone.append(victim(D + "/old host.hotvcb-restoring"))  # another host id, silent for an hour
    record(d, D + "/old host.hotvcb-restoring", host="f" * 32, age=3600)
    gone.append(victim(D + "/.hotvcb-extract-1-2-abcdef"))
    record(d, D + "/.hotvcb-extract-1-2-abcdef", name=".hotvcb-extract-1-2-abcdef.owner")
    dry = cli("cleanup", "--kvm", d, "-d", "dryrun", timeout=30)
    assert dry.returncode == 0 and all(map(survives, keep + gone)), dry.out
    r = cli("cleanup", "--kvm", d, timeout=30)
    assert r.returncode == 0 and "cleanup: 4 leftover(s) removed" in r.out, r.out
    assert [k for k in keep if not survives(k)] == [], r.out
    assert [g for g in gone if os.path.lexists(g)] == [], r.out
    assert not os.path.lexists(D + "/vm8.hotvcb-restoring") and os.path.islink(D + "/link"), r.out
    assert len([e for e in os.listdir(D) if e.endswith(".owner")]) == 11, r.out


def test_a_record_whose_pid_now_belongs_to_someone_else(tmp_path):
    """A dead restore's pid reused by an unrelated process is dead (removed); one naming a live hotvcb
    process is a running restore (left, even with no folder yet)."""
    d = tmp_path / "d"
    d.mkdir()
    sleeper = subprocess.Popen(["sleep", "60"])
    ours = subprocess.Popen([PYTHON, "-c", "import time; time.sleep(60)", "hotvcb", "restore"])
    try:
        reused = victim(str(d / "reused.hotvcb-restoring"))
        record(d, reused, pid=sleeper.pid)
        live = victim(str(d / "live.hotvcb-restoring"))
        r_live = record(d, live, pid=ours.pid)
        r_starting = record(d, str(d / "starting.hotvcb-restoring"), pid=ours.pid)
        r = cli("cleanup", "--kvm", d)
        assert r.returncode == 0 and "cleanup: 1 leftover(s) removed" in r.out, r.out
        assert not os.path.exists(reused) and survives(live), r.out
        assert os.path.exists(r_live) and os.path.exists(r_starting), r.out
    finally:
        for p in (sleeper, ours):
            p.kill()
            p.wait()


@pytest.mark.parametrize("arg, says", [("file", "no such folder"), ("fifo", "no such folder"),
                                       ("missing", "no such folder"), ("", "an empty value")])
def test_cleanup_kvm_given_something_that_is_no_folder(tmp_path, arg, says):
    if arg == "file":
        (tmp_path / "file").write_text("x")
    if arg == "fifo":
        os.mkfifo(str(tmp_path / "fifo"))
    r = cli("cleanup", "--kvm", tmp_path / arg if arg else "", timeout=30)
    assert r.returncode == 1 and says in r.out, r.out
    assert len(r.out.strip().splitlines()) == 1 or not arg, r.out  # "": argparse's usage line and its error


def test_cleanup_kvm_at_the_root_touches_nothing(tmp_path):
    """`cleanup --kvm /` looks at `/`'s entries only, finds nothing of ours and says so."""
    r = cli("cleanup", "--kvm", "/", timeout=60)
    assert r.returncode == 0 and "cleanup: 0 leftover(s) removed" in r.out, r.out


@pytest.mark.skipif(os.geteuid() != 0, reason="bind-mounts DIR read-only")
def test_a_read_only_dir_is_one_error_per_folder_and_exit_1(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    folder = victim(str(d / "w.hotvcb-restoring"))
    rec = record(d, folder)
    subprocess.run(["mount", "--bind", str(d), str(d)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(d)], check=True)
        r = cli("cleanup", "--kvm", d)
    finally:
        subprocess.run(["umount", str(d)], check=True)
    assert r.returncode == 1 and "Read-only file system" in r.out and "1 failed" in r.out, r.out
    assert survives(folder) and os.path.exists(rec), r.out
    assert cli("cleanup", "--kvm", d).returncode == 0 and os.listdir(str(d)) == []


# --- SIGKILL at every step ----------------------------------------------------------------------

def _seen(out, step):
    try:
        names = os.listdir(out)
    except OSError:
        return False
    if step == "record":
        return any(n.endswith(".owner") for n in names)
    if step == "folder":
        return any(n.endswith(".hotvcb-restoring") or (n.startswith(".hotvcb-extract-") and not n.endswith(".owner"))
                   for n in names)
    if step in ("disk", "xml"):
        f = os.path.join(out, "web.hotvcb-restoring", "sda.qcow2" if step == "disk" else "web.xml")
        return os.path.exists(f)
    return "web" in names  # final


@pytest.mark.parametrize("kind, steps", [("gz", ("record", "folder", "final")), ("folder", ("disk", "xml"))])
def test_sigkill_at_every_step_then_cleanup_leaves_nothing_or_the_whole_vm(tmp_path, kind, steps):
    """A restore SIGKILLed as soon as its record, its folder, its disk, its domain XML or its final folder
    appears: after `cleanup --kvm DIR` DIR holds nothing, or the complete VM (never a record naming it, never a
    half folder), and a restore under that name then succeeds or refuses the existing VM in one line."""
    backup = (gz_backup(tmp_path / "vol", "web", 2 << 20) if kind == "gz"
              else esxi_backup(tmp_path / "vol", "web", size=4 << 20, random_bytes=2 << 20))
    outcomes = {}
    for step in steps:
        out = str(tmp_path / ("out-" + step))
        os.mkdir(out)
        p = start_restore(backup, out, "--no-verify")
        try:
            wait_until(lambda: _seen(out, step) or p.poll() is not None, 60, step, poll=0.001)
        finally:
            sigkill(p)
        r = cli("cleanup", "--kvm", out)
        left = sorted(os.listdir(out))
        outcomes[step] = left
        assert r.returncode == 0 and left in ([], ["web"]), (step, r.out)
        if left:
            assert sorted(os.listdir(os.path.join(out, "web"))) == ["sda.qcow2", "web.sh", "web.xml"], (step, r.out)
        again = cli("restore", backup, "--kvm", out, "--no-verify")
        assert again.returncode == (6 if left else 0) and sorted(os.listdir(out)) == ["web"], (step, again.out)
    assert outcomes.get("record", []) == [] and outcomes.get("final", ["web"]) == ["web"], outcomes


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs")
@pytest.mark.parametrize("inodes", [1, 2, 4])
def test_a_dir_out_of_inodes_at_each_file_leaves_nothing(tmp_path, inodes):
    """A DIR whose inodes run out at the record, the folder, the disk, the XML or the start script: one error
    line, exit 6, and neither a folder nor a record left behind (a zero-length record would be "not a
    record hotvcb wrote" for ever)."""
    backup = esxi_backup(tmp_path / "vol", "web")
    d = tmp_path / "d"
    d.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m,nr_inodes=%d" % inodes, "tmpfs", str(d)], check=True)
    try:
        r = cli("restore", backup, "--kvm", d, "--no-verify")
        left = os.listdir(str(d))
    finally:
        subprocess.run(["umount", str(d)], check=True)
    assert r.returncode == 6 and "No space left on device" in r.out and left == [], (left, r.out)
    assert len([l for l in r.out.splitlines() if " -- error: " in l]) == 1, r.out


# --- ESXi (esxisim) -----------------------------------------------------------------------------

@pytest.mark.skipif(os.geteuid() != 0, reason="esxisim needs root")
def test_esxi_restore_to_the_datastores_uuid_path_killed_is_recovered(host):
    """ESXi's datastores are `/vmfs/volumes/<uuid>` with the name as a symlink, and the uuid path is what ESXi
    itself prints (`esxcli storage filesystem list`): a restore given `--datastore /vmfs/volumes/<uuid>`,
    SIGKILLed mid-clone, must be recovered by `hotvcb cleanup` like one given the name."""
    from simhost import hotvcb, hotvcb_background, wait_for, write_conf
    host.create_vm("web", "datastore1", [{"size": "4M"}])
    conf = write_conf(host)
    r = hotvcb(host, "backup", "-m", "web", "-g", conf, "-w", host.root + "/w")
    assert r.returncode == 0, r.stdout + r.stderr
    root = host.real("/vmfs/volumes/datastore1")
    uuid = os.path.basename(os.readlink(root))
    [backup] = [b for b in os.listdir(host.real("/vmfs/volumes/backup/hotvcb/web"))]
    host.set_fault("clone.delay", "120")
    p = hotvcb_background(host, "restore", "/vmfs/volumes/backup/hotvcb/web/" + backup, "--datastore",
                          "/vmfs/volumes/" + uuid, "--name", "copy", "--format", "zeroedthick")  # cloned (thin: copied)
    try:
        wait_for(lambda: os.path.isdir(os.path.join(root, "copy.hotvcb-restoring")), 60, "the clone to start")
    finally:
        kill_tree(p.pid)
        p.communicate()
    host.set_fault("clone.delay", "0")
    r = hotvcb(host, "cleanup", "-g", conf)
    assert "Traceback" not in r.stdout + r.stderr and r.returncode == 0, r.stdout + r.stderr
    assert "left by a restore that died" in r.stdout, r.stdout
    ours = [e for e in os.listdir(root) if "hotvcb" in e]
    assert ours == [], (ours, r.stdout)


def test_a_cleanup_held_between_its_verdict_and_the_removal_never_takes_a_live_restores_folder(tmp_path):
    """A cleanup finds a dead restore's folder and is held (its log pipe full: `hotvcb cleanup --kvm DIR | less`
    with the pager not yet scrolled) just as it says "removing ...";
    meanwhile a restore of that name removes the dead folder itself, writes its record over the dead one and
    converts into a new folder of the same name. Let go, the cleanup must not remove the live restore's
    folder or record: the restore finishes and the VM is complete."""
    backup = esxi_backup(tmp_path / "vol", "vm00", size=4 << 20, random_bytes=2 << 20)
    out = tmp_path / "out"
    out.mkdir()
    folder = dead_folder(out, subs=2, files=2)
    slow = slow_qemu_img(str(tmp_path / "slowbin"), "1M")
    r, w = os.pipe()
    os.set_blocking(w, False)
    try:
        while True:
            os.write(w, b"x" * 4096)
    except BlockingIOError:
        pass
    try:
        while True:
            os.write(w, b"x")
    except BlockingIOError:
        pass
    os.set_blocking(w, True)
    c = subprocess.Popen([PYTHON, "-m", "hotvcb", "cleanup", "--kvm", str(out)], stdout=w, stderr=w, env=env())
    os.close(w)
    p = None
    try:
        time.sleep(3)  # the cleanup has judged the record and blocks writing "removing ..."
        assert c.poll() is None and os.path.exists(os.path.join(folder, "s00", "f0")), "not held before removing"
        p = start_restore(backup, out, "--format", "raw", "--no-verify", bin_dir=slow)
        wait_until(lambda: os.path.exists(os.path.join(folder, "sda.raw")) or p.poll() is not None, 60,
                   "the restore to convert")
        assert p.poll() is None, p.communicate()[0]
    finally:
        with os.fdopen(r, "rb") as f:
            text = f.read().decode(errors="replace").lstrip("x")
        c.wait(timeout=60)
    restored = p.communicate(timeout=120)[0]
    assert p.returncode == 0 and os.listdir(str(out)) == ["vm00"], text + "\n" + restored
    assert "Traceback" not in text, text
