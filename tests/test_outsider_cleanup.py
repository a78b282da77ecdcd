"""Outside tester's attacks on `hotvcb cleanup` removing killed restores' scratch folders
(restore_scratch.py): forged and garbage `.owner` records, reused pids, other machines, symlinks,
races with running restores, SIGKILLed restores, awkward names. Nothing but our own scratch
folders may ever be deleted; a live restore never loses its folder; the report says what was done."""

import glob
import os
import signal
import socket
import stat
import subprocess
import sys

import pytest

from hotvcb.jobs.restore_scratch import record_of
from qemuvm import kill_tree
from restorerecords import KEPT, dead_pid, survives, victim, write_record
from simhost import VOLUME, hotvcb, hotvcb_background, needs_root, wait_for, write_conf
from sshsite import replace_host_python, site  # noqa: F401 (the fixture)

pytestmark = needs_root

DS1 = "/vmfs/volumes/datastore1"
MACHINE = "esxi01"  # the simulated host's hostname, which hotvcb sees inside its namespace


def record(host, name, pid, path, machine=None, root=DS1, raw=None, age=3600):
    """Write `<root>/<name>.owner` as a restore would (or raw text), last touched `age` seconds ago:
    without this host's id in it, only a record whose heartbeat stopped is a dead restore's."""
    write_record(host.real(root + "/" + name + ".owner"), machine or MACHINE, pid, path, raw=raw, age=age)


def no_traceback(r):
    assert "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr


def test_forged_record_never_deletes_outside_its_own_datastore(host):
    """A record's `path=` is trusted for everything but its last name: a record in datastore1's
    root naming a `.hotvcb-extract-*` folder on another datastore (the backup volume, ds5), via
    `..`, or behind a symlinked folder, must not make cleanup delete that folder."""
    conf = write_conf(host)
    pid = dead_pid()
    os.makedirs(host.real(VOLUME + "/web"), exist_ok=True)
    os.symlink(host.real(VOLUME + "/web"), host.real(DS1 + "/link"))
    cases = {
        ".hotvcb-extract-1-1-aaaaaa": VOLUME + "/web/.hotvcb-extract-1-1-aaaaaa",          # absolute elsewhere
        ".hotvcb-extract-2-1-bbbbbb": "/vmfs/volumes/ds5/.hotvcb-extract-2-1-bbbbbb",      # another datastore
        ".hotvcb-extract-3-1-cccccc": DS1 + "/../backup/hotvcb/.hotvcb-extract-3-1-cccccc",  # ../
        ".hotvcb-extract-4-1-dddddd": DS1 + "/link/.hotvcb-extract-4-1-dddddd",            # behind a symlink
    }
    reals = {}
    for name, path in cases.items():
        reals[name] = victim(host.real(path if "/link/" not in path else VOLUME + "/web/" + name))
        record(host, name, pid, path)
    r = hotvcb(host, "cleanup", "-g", conf)
    no_traceback(r)
    assert r.returncode == 0, r.stdout + r.stderr
    gone = [n for n, real in reals.items() if not survives(real)]
    assert gone == [], "cleanup deleted folders outside datastore1's root: %s\n%s" % (gone, r.stdout)
    assert "left by a restore that died" not in r.stdout and r.stdout.count("outside this datastore") == 4, r.stdout


def scratch(host, name, root=DS1):
    """A scratch folder `<root>/<name>` with a file, as an unpacked backup; its real path."""
    return victim(host.real(root + "/" + name))


def exists(host, path):
    return os.path.lexists(host.real(path))


def test_symlinked_scratch_folder_or_record_never_takes_what_it_points_at(host):
    """A `.hotvcb-extract-*` entry that is a symlink to a VM's folder (or a record that is a symlink
    to a VM's .vmx) is removed as a link: the VM's files stay."""
    conf = write_conf(host)
    web = victim(host.real(DS1 + "/web"))
    os.symlink(web, host.real(DS1 + "/.hotvcb-extract-5-1-eeeeee"))
    record(host, ".hotvcb-extract-5-1-eeeeee", dead_pid(), DS1 + "/.hotvcb-extract-5-1-eeeeee")
    os.symlink(os.path.join(web, KEPT), host.real(DS1 + "/.hotvcb-extract-6-1-ffffff.owner"))
    r = hotvcb(host, "cleanup", "-g", conf)
    no_traceback(r)
    assert r.returncode == 0, r.stdout + r.stderr
    assert survives(web), r.stdout
    assert not exists(host, DS1 + "/.hotvcb-extract-5-1-eeeeee"), r.stdout
    assert ".hotvcb-extract-6-1-ffffff.owner: not a regular file -- leaving it" in r.stdout, r.stdout
    assert "cleanup: 1 leftover(s) removed" in r.stdout, r.stdout


def test_who_owns_a_record_decides(host):
    """Only a record of this machine whose pid is no hotvcb process is a dead restore's: a pid reused
    by a non-hotvcb process is dead (removed), one held by a hotvcb process is a running restore
    (left, even with no folder yet: a restore between its record and its folder), another machine's
    is left; a folder without a record is left; a dead record without its folder goes; a folder
    in a subfolder of the datastore (`--datastore datastore1/restored`) is found from the root."""
    conf = write_conf(host)
    sleeper = subprocess.Popen(["sleep", "60"])
    ours = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "hotvcb", "restore"])
    try:
        reused = scratch(host, ".hotvcb-extract-10-1-aaaaaa")
        record(host, ".hotvcb-extract-10-1-aaaaaa", sleeper.pid, DS1 + "/.hotvcb-extract-10-1-aaaaaa")
        live = scratch(host, ".hotvcb-extract-11-1-bbbbbb")
        record(host, ".hotvcb-extract-11-1-bbbbbb", ours.pid, DS1 + "/.hotvcb-extract-11-1-bbbbbb")
        record(host, ".hotvcb-extract-12-1-cccccc", ours.pid, DS1 + "/.hotvcb-extract-12-1-cccccc")  # starting
        other = scratch(host, ".hotvcb-extract-13-1-dddddd")
        record(host, ".hotvcb-extract-13-1-dddddd", dead_pid(), DS1 + "/.hotvcb-extract-13-1-dddddd",
               machine="esxi02")
        orphan = scratch(host, ".hotvcb-extract-14-1-eeeeee")
        record(host, ".hotvcb-extract-15-1-ffffff", dead_pid(), DS1 + "/.hotvcb-extract-15-1-ffffff")  # no folder
        os.makedirs(host.real(DS1 + "/restored dir ä 'q'"))
        sub = scratch(host, ".hotvcb-extract-16-1-abcdef", root=DS1 + "/restored dir ä 'q'")
        record(host, ".hotvcb-extract-16-1-abcdef", dead_pid(),
               DS1 + "/restored dir ä 'q'/.hotvcb-extract-16-1-abcdef")
        dry = hotvcb(host, "cleanup", "-g", conf, "-d", "dryrun")
        no_traceback(dry)
        assert dry.returncode == 0, dry.stdout + dry.stderr
        assert dry.stdout.count("would remove") == 3 and survives(reused) and survives(sub), dry.stdout
        r = hotvcb(host, "cleanup", "-g", conf)
        no_traceback(r)
        assert r.returncode == 0, r.stdout + r.stderr
        assert not os.path.exists(reused) and not exists(host, DS1 + "/.hotvcb-extract-10-1-aaaaaa.owner"), r.stdout
        assert not os.path.exists(sub) and not exists(host, DS1 + "/.hotvcb-extract-16-1-abcdef.owner"), r.stdout
        assert not exists(host, DS1 + "/.hotvcb-extract-15-1-ffffff.owner"), r.stdout
        assert survives(live) and exists(host, DS1 + "/.hotvcb-extract-11-1-bbbbbb.owner"), r.stdout
        assert exists(host, DS1 + "/.hotvcb-extract-12-1-cccccc.owner"), r.stdout
        assert r.stdout.count("scratch folder of a running restore") == 2, r.stdout
        assert survives(other) and "leaving it to a cleanup there" in r.stdout, r.stdout
        assert survives(orphan) and "scratch folder without its record" in r.stdout, r.stdout
        assert "cleanup: 3 leftover(s) removed" in r.stdout, r.stdout
    finally:
        for p in (sleeper, ours):
            p.kill()
            p.wait()


def test_garbage_records_are_reported_and_nothing_is_deleted(host):
    """Records that are empty, binary, truncated, folders, or name `/`, a relative path, a folder
    with a trailing slash, or another record (`x.owner.owner` naming a running restore's `x.owner`):
    each is one warning line, nothing is deleted, exit 0."""
    conf = write_conf(host)
    pid = dead_pid()
    folders = {}
    bad = {
        "a": "",
        "b": "\x00\xff garbage \x01",
        "c": "run=abcdef012345 machine=%s pid=%d" % (MACHINE, pid),  # truncated: no started, no path
        "d": "run=abcdef012345 machine=%s pid=%d started=1\npath=/\n" % (MACHINE, pid),
        "e": "run=abcdef012345 machine=%s pid=%d started=1\npath=.hotvcb-extract-e\n" % (MACHINE, pid),
        "f": "run=abcdef012345 machine=%s pid=%d started=1\npath=%s/.hotvcb-extract-f/\n" % (MACHINE, pid, DS1),
    }
    for key, text in bad.items():
        folders[key] = scratch(host, ".hotvcb-extract-" + key)
        record(host, ".hotvcb-extract-" + key, pid, "", raw=text)
    folders["g"] = scratch(host, ".hotvcb-extract-g")
    os.makedirs(host.real(DS1 + "/.hotvcb-extract-g.owner"))  # a folder where the record should be
    ours = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "hotvcb", "restore"])
    try:
        live = scratch(host, ".hotvcb-extract-h")
        record(host, ".hotvcb-extract-h", ours.pid, DS1 + "/.hotvcb-extract-h")
        record(host, ".hotvcb-extract-h.owner", pid, DS1 + "/.hotvcb-extract-h.owner")
        r = hotvcb(host, "cleanup", "-g", conf)
        no_traceback(r)
        assert r.returncode == 0, r.stdout + r.stderr
        assert [k for k, real in folders.items() if not survives(real)] == [], r.stdout
        assert survives(live) and exists(host, DS1 + "/.hotvcb-extract-h.owner"), \
            "a running restore lost its record\n" + r.stdout
        assert "cleanup: 0 leftover(s) removed" in r.stdout, r.stdout
        for key in "abcdef":
            assert ".hotvcb-extract-%s.owner: not a record hotvcb wrote" % key in r.stdout, r.stdout
    finally:
        ours.kill()
        ours.wait()


def test_two_cleanups_at_once_remove_each_dead_folder_once_and_both_say_so(host):
    """Two cleanups started together: every dead folder and record goes, no "cannot remove" from
    one deleting under the other, and the counts add up to what there was."""
    conf = write_conf(host)
    # the host's id made first: two first runs racing to make it through two overlay mounts of one
    # /run get ESTALE from overlayfs (an esxisim artifact; hotvcb still says it in one line, exit 1)
    assert hotvcb(host, "cleanup", "-g", conf).returncode == 0
    names = [".hotvcb-extract-%d-1-abc%03d" % (i, i) for i in range(20)]
    for name in names:
        scratch(host, name)
        record(host, name, dead_pid(), DS1 + "/" + name)
    procs = [hotvcb_background(host, "cleanup", "-g", conf) for _ in range(2)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert "Traceback" not in out and "cannot remove" not in out, out
    for p, out in zip(procs, outs):  # the loser of the host lock says so in one line, exit 1
        assert p.returncode == 0 or (p.returncode == 1 and "not starting a second one" in out), out
    assert [n for n in names if exists(host, DS1 + "/" + n) or exists(host, DS1 + "/" + n + ".owner")] == [], outs
    removed = [int(m) for out in outs for m in __import__("re").findall(r"cleanup: (\d+) leftover", out)]
    assert sum(removed) == 20, outs


def test_a_folder_that_cannot_be_removed_is_one_error_and_the_others_still_go(host):
    """A dead restore's folder that cannot be deleted (an immutable file; a read-only datastore
    alike) must not stop the sweep: the others are removed, the failure is named, the exit code
    is not 0, and the record stays so a later cleanup tries again."""
    conf = write_conf(host)
    stuck = scratch(host, ".hotvcb-extract-1-1-aaaaaa")
    record(host, ".hotvcb-extract-1-1-aaaaaa", dead_pid(), DS1 + "/.hotvcb-extract-1-1-aaaaaa")
    fine = scratch(host, ".hotvcb-extract-2-1-bbbbbb")
    record(host, ".hotvcb-extract-2-1-bbbbbb", dead_pid(), DS1 + "/.hotvcb-extract-2-1-bbbbbb")
    frozen = os.path.join(stuck, KEPT)
    if subprocess.run(["chattr", "+i", frozen], capture_output=True).returncode != 0:
        pytest.skip("chattr +i does not work here")
    try:
        r = hotvcb(host, "cleanup", "-g", conf)
    finally:  # cleanup renames the folder it takes over: the frozen file may be under another name now
        subprocess.run(["chattr", "-R", "-i", os.path.realpath(host.real(DS1))], capture_output=True)
    no_traceback(r)
    assert not os.path.exists(fine), "one undeletable folder stopped the sweep\n" + r.stdout + r.stderr
    assert r.returncode != 0, r.stdout + r.stderr
    assert KEPT in r.stdout + r.stderr or ".hotvcb-extract-1-1-aaaaaa" in r.stdout + r.stderr
    assert exists(host, DS1 + "/.hotvcb-extract-1-1-aaaaaa.owner"), r.stdout
    assert "cleanup: 1 leftover(s) removed, 1 failed" in r.stdout, r.stdout

TARGET = DS1 + "/rest ä 'q' \"x\""


def _gz_backup(host, tmp_path):
    host.create_vm("web", "datastore1", [{"size": "4M"}])
    r = hotvcb(host, "backup", "-m", "web", "-g", write_conf(host, "gz.conf", ENABLE_COMPRESSION=1),
               "-w", tmp_path / "w")
    assert r.returncode == 0, r.stdout + r.stderr
    [gz] = glob.glob(host.real(VOLUME + "/web/*.gz"))
    os.makedirs(host.real(TARGET))
    return VOLUME + "/web/" + os.path.basename(gz)


def ours_in(host, folder):
    real = host.real(folder)
    return sorted(e for e in os.listdir(real) if e.startswith(".hotvcb-extract-") or e.endswith(".hotvcb-restoring"))


def test_sigkilled_restore_mid_copy_into_an_awkward_folder_is_cleaned_up(host, tmp_path):
    """.gz restores into `datastore1/rest ä 'q' "x"` under a name with quotes and an umlaut, and
    into `datastore1/../ds5` (a path --datastore takes as given), SIGKILLed mid-clone: while they
    run cleanup leaves their folders; once dead, cleanup removes each unpacked copy and its record
    (quoting intact), says so, and the datastore's VM is untouched."""
    gz = _gz_backup(host, tmp_path)
    conf = write_conf(host)
    host.set_fault("clone.delay", "120")
    ds5 = "/vmfs/volumes/ds5"
    procs = [hotvcb_background(host, "restore", gz, "--datastore", TARGET[len("/vmfs/volumes/"):],
                               "--name", "Prüf 'a' \"b\"", "--format", "thin"),
             hotvcb_background(host, "restore", gz, "--datastore", "datastore1/../ds5", "--name", "up")]
    try:
        wait_for(lambda: any(e.endswith(".hotvcb-restoring") for e in ours_in(host, TARGET) + ours_in(host, ds5)),
                 60, "the clones")
        wait_for(lambda: all(any(e.endswith(".hotvcb-restoring") for e in ours_in(host, where))
                             for where in (TARGET, ds5)), 60, "both clones")
        [folder] = [e for e in ours_in(host, TARGET) if e.startswith(".hotvcb-extract-")]
        assert exists(host, DS1 + "/" + folder + ".owner")
        r = hotvcb(host, "cleanup", "-g", conf)
        assert r.returncode == 0 and r.stdout.count("scratch folder of a running restore") == 2, r.stdout + r.stderr
        assert r.stdout.count("unfinished VM folder of a running restore") == 2, r.stdout
        assert folder in ours_in(host, TARGET), r.stdout
    finally:
        for p in procs:
            kill_tree(p.pid)
            p.communicate()
    host.clear_faults()
    r = hotvcb(host, "cleanup", "-g", conf)
    no_traceback(r)
    assert r.returncode == 0, r.stdout + r.stderr
    # each restore's unpacked copy and its unfinished VM folder
    assert r.stdout.count("left by a restore that died") == 4 and "cleanup: 4 leftover(s) removed" in r.stdout, \
        r.stdout
    for where in (TARGET, ds5, DS1):
        assert ours_in(host, where) == [], (where, r.stdout)
    assert restoring_records(host) == [] and not glob.glob(host.real(ds5 + "/*.owner")), r.stdout
    assert os.path.exists(host.real(DS1 + "/web/web.vmx")), r.stdout


def test_restore_into_a_read_only_folder_or_datastore_leaves_no_record(host, tmp_path):
    """The target folder cannot take the scratch folder (immutable: as a read-only or full
    datastore), or the datastore root cannot take the record: the restore fails with one line
    naming the path, no record or scratch folder stays, and cleanup then has nothing to report."""
    gz = _gz_backup(host, tmp_path)
    conf = write_conf(host)
    for frozen, where in ((os.path.realpath(host.real(TARGET)), TARGET), (os.path.realpath(host.real(DS1)), DS1)):
        if subprocess.run(["chattr", "+i", frozen], capture_output=True).returncode != 0:
            pytest.skip("chattr +i does not work here")
        try:
            r = hotvcb(host, "restore", gz, "--datastore", TARGET[len("/vmfs/volumes/"):], "--name", "ro")
        finally:
            subprocess.run(["chattr", "-i", frozen])
        no_traceback(r)
        assert r.returncode not in (0, 2), r.stdout + r.stderr
        assert "cannot " in r.stdout + r.stderr and ".hotvcb-extract-" in r.stdout + r.stderr, r.stdout + r.stderr
        assert ours_in(host, TARGET) == [] and not glob.glob(host.real(DS1 + "/.hotvcb-extract-*")), \
            (where, r.stdout)
    r = hotvcb(host, "cleanup", "-g", conf)
    assert r.returncode == 0 and "cleanup: 0 leftover(s) removed" in r.stdout, r.stdout + r.stderr


def _backup_of_web(host, tmp_path):
    host.create_vm("web", "datastore1", [{"size": "4M"}])
    r = hotvcb(host, "backup", "-m", "web", "-g", write_conf(host), "-w", tmp_path / "w")
    assert r.returncode == 0, r.stdout + r.stderr
    web = host.real(VOLUME + "/web")
    [backup] = [e for e in os.listdir(web) if not e.startswith(".") and os.path.isdir(os.path.join(web, e))
                and not os.path.islink(os.path.join(web, e))]
    return VOLUME + "/web/" + backup


def _restoring_in_the_clone(host, backup, name):
    """A restore of backup as `name` into datastore1, held in its clone; the process. (Zeroedthick:
    a thin disk is copied by hotvcb itself, no vmkfstools clone to hold.)"""
    host.set_fault("clone.delay", "120")
    p = hotvcb_background(host, "restore", backup, "--datastore", "datastore1", "--name", name,
                          "--format", "zeroedthick")
    try:
        wait_for(lambda: exists(host, DS1 + "/" + name + ".hotvcb-restoring"), 60, "the clone")
    except BaseException:
        kill_tree(p.pid)
        p.communicate()
        raise
    return p


def restoring_records(host):
    return glob.glob(host.real(DS1) + "/.hotvcb-restoring-*.owner")


def test_sigkilled_restore_leaves_no_half_cloned_vm_folder_after_cleanup(host, tmp_path):
    """A restore SIGKILLed mid-clone leaves `<name>.hotvcb-restoring` (a whole VM's size): while it
    runs cleanup leaves it; once dead, cleanup removes it and its record and says so, and a new
    restore under that name then works. (The next restore into the datastore would remove it too:
    test_known_s29jobs.)"""
    backup = _backup_of_web(host, tmp_path)
    conf = write_conf(host)
    p = _restoring_in_the_clone(host, backup, "copy")
    try:
        r = hotvcb(host, "cleanup", "-g", conf)
        assert r.returncode == 0 and "unfinished VM folder of a running restore" in r.stdout, r.stdout + r.stderr
        assert exists(host, DS1 + "/copy.hotvcb-restoring") and len(restoring_records(host)) == 1, r.stdout
    finally:
        kill_tree(p.pid)
        p.communicate()
    host.clear_faults()
    r = hotvcb(host, "cleanup", "-g", conf)
    no_traceback(r)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not exists(host, DS1 + "/copy.hotvcb-restoring") and restoring_records(host) == [], r.stdout
    assert "removing %s/copy.hotvcb-restoring, left by a restore that died" % DS1 in r.stdout, r.stdout
    assert "cleanup: 1 leftover(s) removed" in r.stdout, r.stdout
    again = hotvcb(host, "restore", backup, "--datastore", "datastore1", "--name", "copy")
    assert again.returncode == 0, again.stdout + again.stderr
    assert os.path.exists(host.real(DS1 + "/copy/copy.vmx")) and restoring_records(host) == [], again.stdout


def test_a_dead_restores_record_never_takes_a_later_restores_folder(host, tmp_path):
    """A restore killed after removing its unfinished folder but before its record leaves a dead
    record naming `copy.hotvcb-restoring`; a later restore under that name makes that very folder.
    Cleanup must see the later, running restore there, not the dead one, and leave the folder."""
    backup = _backup_of_web(host, tmp_path)
    conf = write_conf(host)
    folder = DS1 + "/copy.hotvcb-restoring"
    dead = record_of(folder).rsplit("/", 1)[1][:-len(".owner")]
    record(host, dead, dead_pid(), folder)
    p = _restoring_in_the_clone(host, backup, "copy")
    try:
        r = hotvcb(host, "cleanup", "-g", conf)
        no_traceback(r)
        assert r.returncode == 0, r.stdout + r.stderr
        assert exists(host, folder), "cleanup deleted a running restore's folder\n" + r.stdout
        assert "left by a restore that died" not in r.stdout and "of a running restore" in r.stdout, r.stdout
    finally:
        kill_tree(p.pid)
        p.communicate()


def test_records_that_are_fifos_or_devices_are_refused_unread(host):
    """A record that is a FIFO nobody writes (a plain read waits forever) or a character device
    (/dev/zero's: a read never ends), of either kind of folder: cleanup refuses each in one
    line, without waiting on it, and deletes nothing."""
    conf = write_conf(host)
    fifo, device = DS1 + "/.hotvcb-extract-1-1-aaaaaa.owner", DS1 + "/.hotvcb-restoring-0123456789abcdef.owner"
    folder = scratch(host, ".hotvcb-extract-1-1-aaaaaa")
    os.mkfifo(host.real(fifo))
    os.mknod(host.real(device), 0o600 | stat.S_IFCHR, os.makedev(1, 5))
    r = hotvcb(host, "cleanup", "-g", conf, timeout=120)
    no_traceback(r)
    assert r.returncode == 0, r.stdout + r.stderr
    for path in (fifo, device):
        assert "/%s: not a regular file -- leaving it" % path.rsplit("/", 1)[1] in r.stdout, r.stdout
        assert exists(host, path), r.stdout
    assert survives(folder) and "cleanup: 0 leftover(s) removed" in r.stdout, r.stdout


def test_ssh_mode_cleanup_checks_and_removes_through_the_ssh_shell(site, host):  # noqa: F811
    """SSH mode with no python on the host: cleanup runs here and removes through the SSH shell.
    A dead restore of this machine in a folder named with quotes and an umlaut goes (quoting holds),
    a record naming another datastore's folder is refused (realpath on the host), and one of the
    ESXi host's own restores (its hostname) is left to a cleanup there."""
    replace_host_python(host, lambda path: os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(0, 0)))  # whiteout
    me = socket.gethostname()
    os.makedirs(host.real(TARGET))
    sub = scratch(host, ".hotvcb-extract-1-1-aaaaaa", root=TARGET)
    record(host, ".hotvcb-extract-1-1-aaaaaa", dead_pid(), TARGET + "/.hotvcb-extract-1-1-aaaaaa", machine=me)
    far = scratch(host, ".hotvcb-extract-2-1-bbbbbb", root="/vmfs/volumes/ds5")
    record(host, ".hotvcb-extract-2-1-bbbbbb", dead_pid(), "/vmfs/volumes/ds5/.hotvcb-extract-2-1-bbbbbb", machine=me)
    onhost = scratch(host, ".hotvcb-extract-3-1-cccccc")
    record(host, ".hotvcb-extract-3-1-cccccc", dead_pid(), DS1 + "/.hotvcb-extract-3-1-cccccc")
    r, _ = site.run("cleanup", "-g", write_conf(host))
    assert "Traceback" not in r.out and r.returncode == 0, r.out
    assert not os.path.exists(sub) and not exists(host, DS1 + "/.hotvcb-extract-1-1-aaaaaa.owner"), r.out
    assert survives(far) and ".hotvcb-extract-2-1-bbbbbb.owner names" in r.out, r.out
    assert survives(onhost) and "leaving it to a cleanup there" in r.out, r.out
    assert "cleanup: 1 leftover(s) removed" in r.out and "going file by file over SSH" in r.out, r.out


def test_a_record_of_another_host_with_our_hostname_is_left_while_its_heartbeat_is_fresh(host):
    """Two ESXi hosts that share an NFS datastore and one hostname (ESXi's default is `localhost`):
    host B's restore record says machine=<our name> and a pid that means nothing here. Its host id
    differs from ours; while B's restore touches it, cleanup must leave its folder (it once took
    it by the pid). Once untouched for five minutes it is a dead restore's, B's or ours before a
    reboot (ESXi's host id lives on a ramdisk), and goes."""
    conf = write_conf(host)
    theirs = scratch(host, ".hotvcb-extract-7-1-abcdef")
    text = "run=abcdef012345 machine=%s pid=%d started=1700000000 host=idotherhost0\npath=%s/%s\n" % (
        MACHINE, dead_pid(), DS1, ".hotvcb-extract-7-1-abcdef")
    record(host, ".hotvcb-extract-7-1-abcdef", 0, "", raw=text, age=250)
    r = hotvcb(host, "cleanup", "-g", conf)
    no_traceback(r)
    assert r.returncode == 0, r.stdout + r.stderr
    assert survives(theirs) and exists(host, DS1 + "/.hotvcb-extract-7-1-abcdef.owner"), r.stdout
    assert "cleanup: 0 leftover(s) removed" in r.stdout and "idotherhost0" in r.stdout, r.stdout
    record(host, ".hotvcb-extract-7-1-abcdef", 0, "", raw=text, age=310)
    r = hotvcb(host, "cleanup", "-g", conf)
    no_traceback(r)
    assert r.returncode == 0 and "cleanup: 1 leftover(s) removed" in r.stdout, r.stdout + r.stderr
    assert not os.path.exists(theirs) and not exists(host, DS1 + "/.hotvcb-extract-7-1-abcdef.owner"), r.stdout


def test_sigterm_mid_copy_removes_the_scratch_folder_and_then_its_record(host, tmp_path):
    """SIGTERM (systemd, Ctrl-C alike) while a .gz restore clones: exit 2, and the restore itself
    removes its unpacked copy, its record and the unfinished VM folder; cleanup finds nothing."""
    gz = _gz_backup(host, tmp_path)
    host.set_fault("clone.delay", "120")
    p = hotvcb_background(host, "restore", gz, "--datastore", TARGET[len("/vmfs/volumes/"):], "--name", "t")
    try:
        wait_for(lambda: any(e.endswith(".hotvcb-restoring") for e in ours_in(host, TARGET)), 60, "the clone")
        p.send_signal(signal.SIGTERM)
        out = p.communicate(timeout=60)[0]
    finally:
        kill_tree(p.pid)
    assert p.returncode == 2 and "Traceback" not in out, out
    assert ours_in(host, TARGET) == [] and not glob.glob(host.real(DS1 + "/.hotvcb-extract-*")), out
    assert restoring_records(host) == [], out
    r = hotvcb(host, "cleanup", "-g", write_conf(host))
    assert r.returncode == 0 and "cleanup: 0 leftover(s) removed" in r.stdout, r.stdout + r.stderr


def test_dead_restores_on_an_nfs_datastore_are_still_removed(host):
    """An NFS datastore's /vmfs/volumes entry is an absolute symlink to the mount: the check that a
    record's folder lies in its datastore must resolve both sides alike, or a dead restore's
    folder on NFS (in its root or a subfolder) would never be removed."""
    host.add_nfs("nfs1", "10.0.0.5", "/export", 1 << 30)
    conf = write_conf(host)
    nfs = "/vmfs/volumes/nfs1"
    top = scratch(host, ".hotvcb-extract-1-1-aaaaaa", root=nfs)
    record(host, ".hotvcb-extract-1-1-aaaaaa", dead_pid(), nfs + "/.hotvcb-extract-1-1-aaaaaa", root=nfs)
    os.makedirs(host.real(nfs + "/sub"))
    sub = scratch(host, ".hotvcb-extract-2-1-bbbbbb", root=nfs + "/sub")
    record(host, ".hotvcb-extract-2-1-bbbbbb", dead_pid(), nfs + "/sub/.hotvcb-extract-2-1-bbbbbb", root=nfs)
    r = hotvcb(host, "cleanup", "-g", conf)
    no_traceback(r)
    assert r.returncode == 0 and "cleanup: 2 leftover(s) removed" in r.stdout, r.stdout + r.stderr
    assert not os.path.exists(top) and not os.path.exists(sub), r.stdout
    assert not glob.glob(host.real(nfs) + "/.hotvcb-extract-*"), r.stdout
