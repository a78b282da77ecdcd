"""Outside attacks on the release kept on the host's ramdisk (hosts/esxi_release.py), through the CLI
on esxisim: what may stand at /var/run/hotvcb.release, stale lines, reboots, SSH modes."""

import os
import stat
import subprocess

import pytest

from simhost import hotvcb, hotvcb_background, needs_root, sealed, wrap_tool, write_conf
from test_host_version_e2e import clones, host_line, releases_asked, warnings

pytestmark = needs_root

REAL = "VMware ESXi 7.0.3 build-24784741"
STALE = "VMware ESXi 6.0.0 build-3620759"


def run_dir(host):
    return host.store.p("root", "run", "upper")


def kept(host):
    return os.path.join(run_dir(host), "hotvcb.release")


def litter(host):
    return [n for n in os.listdir(run_dir(host)) if n.startswith(".hotvcb.release") or n.endswith(".tmp")]


def backup(host, tmp_path, *extra, timeout=85):
    r = hotvcb(host, "backup", "-m", "alpha", "-g", write_conf(host), "-w", tmp_path / "work", *extra,
               timeout=timeout)
    r.out = r.stdout + r.stderr
    return r


def alpha(host, power="on", disks=1):
    return host.create_vm("alpha", "datastore1", [{"size": "4M"}] * disks, power=power)


# --- what may stand at the kept path --------------------------------------------------------------

def _symlink_to_stale(host, tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text(STALE + "\n")
    os.symlink(str(target), kept(host))
    return target


def _dangling(host, tmp_path):
    os.symlink(str(tmp_path / "nowhere"), kept(host))


def _symlink_to_fifo(host, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(str(fifo))
    os.symlink(str(fifo), kept(host))


def _fifo(host, tmp_path):
    os.mkfifo(kept(host))


def _char_device(host, tmp_path):
    os.mknod(kept(host), 0o644 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero: never ends


def _symlink_to_zero(host, tmp_path):
    os.symlink("/dev/zero", kept(host))


def _huge_garbage(host, tmp_path):
    with open(kept(host), "wb") as f:
        f.write(os.urandom(1 << 20) + b"\n" + STALE.encode() + b"\n")  # the line beyond the read limit


def _binary_nuls(host, tmp_path):
    with open(kept(host), "wb") as f:
        f.write(b"\x00\xff\xfe\x80garbage\x00" * 50)


def _socket(host, tmp_path):
    import socket
    here = os.getcwd()
    os.chdir(run_dir(host))  # a socket path is at most 107 bytes
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind("hotvcb.release")
        sock.close()
    finally:
        os.chdir(here)


def _self_loop(host, tmp_path):
    os.symlink("hotvcb.release", kept(host))


PLANTED = {
    "unix socket": _socket,
    "symlink to itself": _self_loop,
    "symlink to a stale line": _symlink_to_stale,
    "dangling symlink": _dangling,
    "symlink to a FIFO": _symlink_to_fifo,
    "FIFO": _fifo,
    "character device": _char_device,
    "symlink to /dev/zero": _symlink_to_zero,
    "1 MiB of garbage, a stale line after it": _huge_garbage,
    "binary garbage with NULs": _binary_nuls,
}


@pytest.mark.parametrize("what", sorted(PLANTED))
def test_whatever_stands_at_the_kept_path_the_host_is_asked_and_a_regular_file_kept(host, tmp_path, what):
    alpha(host)
    planted = PLANTED[what](host, tmp_path)
    r = backup(host, tmp_path)
    assert r.returncode == 0 and "Traceback" not in r.out and not warnings(r.out), r.out
    assert len(host_line(r.out)) == 1 and "(%s)" % REAL in host_line(r.out)[0], r.out
    assert releases_asked(host) == 1 and clones(host) and all("-a" not in a for a in clones(host)), clones(host)
    st = os.lstat(kept(host))
    assert stat.S_ISREG(st.st_mode) and open(kept(host)).read() == REAL + "\n"
    if planted is not None:  # never written through the symlink
        assert planted.read_text() == STALE + "\n"
    assert litter(host) == [], litter(host)
    r = backup(host, tmp_path)  # and the next run reads it
    assert r.returncode == 0 and releases_asked(host) == 1, r.out


def test_a_folder_at_the_kept_path_costs_a_question_per_run_and_no_backup(host, tmp_path):
    alpha(host)
    os.mkdir(kept(host))
    with open(os.path.join(kept(host), "inside"), "w") as f:
        f.write(STALE + "\n")
    for run in range(2):
        r = backup(host, tmp_path)
        assert r.returncode == 0 and "Traceback" not in r.out and not warnings(r.out), r.out
        assert "(%s)" % REAL in host_line(r.out)[0], r.out
        assert releases_asked(host) == run + 1
    assert os.path.isdir(kept(host)) and litter(host) == [], litter(host)
    assert len(sealed(host, "alpha")) == 2


def test_a_kept_file_the_run_cannot_replace_is_read_not_rewritten(host, tmp_path):
    """A kept line the run cannot replace (immutable) still serves; nothing is left beside it."""
    alpha(host)
    with open(kept(host), "w") as f:
        f.write(REAL + "\n")
    if subprocess.run(["chattr", "+i", kept(host)], capture_output=True).returncode != 0:
        pytest.skip("no chattr +i here")
    try:
        r = backup(host, tmp_path)
    finally:
        subprocess.run(["chattr", "-i", kept(host)])
    assert r.returncode == 0 and releases_asked(host) == 0 and litter(host) == [], r.out


def test_an_unwritable_ramdisk_entry_when_the_answer_must_be_kept_is_no_failure(host, tmp_path):
    """The write fails (the kept name is an immutable empty file): the run goes on, asks again next time."""
    alpha(host)
    open(kept(host), "w").close()
    if subprocess.run(["chattr", "+i", kept(host)], capture_output=True).returncode != 0:
        pytest.skip("no chattr +i here")
    try:
        for run in range(2):
            r = backup(host, tmp_path)
            assert r.returncode == 0 and "Traceback" not in r.out and not warnings(r.out), r.out
            assert "(%s)" % REAL in host_line(r.out)[0] and releases_asked(host) == run + 1, r.out
        assert litter(host) == [], litter(host)
    finally:
        subprocess.run(["chattr", "-i", kept(host)])


def test_a_full_ramdisk_with_room_for_the_lock_only_runs_and_keeps_nothing(host, tmp_path):
    """/var/run (a tmpfs of its own here) full but for one page: the lock fits, the kept line does not."""
    alpha(host)
    base = host.store.p("root", "run")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", base], check=True)
    try:
        os.makedirs(os.path.join(base, "upper"))
        os.makedirs(os.path.join(base, "empty", "sshd"))
        r = backup(host, tmp_path)  # the host id is written by the first run
        assert r.returncode == 0, r.out
        os.unlink(kept(host))
        fd = os.open(os.path.join(base, "fill"), os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(fd, b"x" * 65536 if os.fstatvfs(fd).f_bavail > 16 else b"x" * 4096)
        except OSError:
            pass
        os.ftruncate(fd, os.fstat(fd).st_size - 4096)
        os.close(fd)
        for run in range(2):
            r = backup(host, tmp_path)
            assert r.returncode == 0 and "Traceback" not in r.out and not warnings(r.out), r.out
            assert "(%s)" % REAL in host_line(r.out)[0] and releases_asked(host) == run + 2, r.out
            assert not os.path.exists(kept(host)) and litter(host) == [], litter(host)
    finally:
        subprocess.run(["umount", base])


def test_the_kept_file_is_not_writable_by_others_whatever_the_umask(host, tmp_path):
    """Run from a cron or shell with umask 000: the kept line (believed for the whole boot) must not be
    one any local user may rewrite ("only root writes /var/run" is the design's trust)."""
    from simhost import _argv
    alpha(host)
    r = subprocess.run(_argv(host, ["backup", "-m", "alpha", "-g", write_conf(host), "-w", tmp_path / "work"]),
                       capture_output=True, text=True, timeout=85, preexec_fn=lambda: os.umask(0),
                       env=dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert r.returncode == 0, r.stdout + r.stderr
    modes = {n: stat.S_IMODE(os.lstat(os.path.join(run_dir(host), n)).st_mode) for n in os.listdir(run_dir(host))}
    assert {"hotvcb.release", "hotvcb.hostid"} <= set(modes), modes
    assert not [n for n, m in modes.items() if m & 0o022], {n: oct(m) for n, m in modes.items()}


# --- what the line holds ---------------------------------------------------------------------------

def test_escape_sequences_in_the_kept_line_are_not_written_raw_to_the_run_log(host, tmp_path):
    alpha(host)
    with open(kept(host), "w") as f:
        f.write(REAL + " \x1b]0;owned\x07\x1b[2J\x00\x9b31m\n")
    r = backup(host, tmp_path)
    assert r.returncode == 0, r.out
    assert len(host_line(r.out)) == 1 and "\x1b" not in r.out and "\x07" not in r.out and "\x00" not in r.out, \
        repr(host_line(r.out))


def test_escape_sequences_in_the_kept_line_are_not_printed_raw_by_status(host, tmp_path):
    alpha(host)
    with open(kept(host), "w") as f:
        f.write(REAL + " \x1b]0;owned\x07\x1b[2J\n")
    r = hotvcb(host, "status", "-g", write_conf(host), timeout=85)
    out = r.stdout + r.stderr
    assert "Traceback" not in out and "7.0.3" in out.splitlines()[0], out
    assert "\x1b" not in out and "\x07" not in out, repr(out.splitlines()[0])


@pytest.mark.parametrize("line", ["VMware ESXi %s.0.3 build-24784741" % ("7" * 5000),
                                  "VMware ESXi 7.%s.3 build-24784741" % ("0" * 5000)])
def test_a_release_of_thousands_of_digits_is_an_unknown_one_and_not_kept(host, tmp_path, line):
    """Python 3.11+ (and esxisim's 3.8.18) refuse int() of 4,300 digits: a `vmware -v` line holding such a
    number names no release (not the "0.3" at its tail either), so the run warns of an unknown release,
    passes -a, keeps nothing and backs up."""
    alpha(host)
    wrap_tool(host, "vmware", 'echo "%s"; exit 0' % line)
    r = backup(host, tmp_path)
    assert r.returncode == 0 and "internal error" not in r.out and "(unknown ESXi)" in host_line(r.out)[0], \
        r.out[-3000:]
    assert len(warnings(r.out)) == 1 and all("-a" in a for a in clones(host)), clones(host)
    assert not os.path.exists(kept(host)) and len(sealed(host, "alpha")) == 1


def test_trailing_junk_on_the_kept_line_is_no_other_release(host, tmp_path):
    alpha(host)
    with open(kept(host), "w") as f:
        f.write("   " + REAL + "   \tjunk 5.1.0 build-1 \r\n\n")
    r = backup(host, tmp_path)
    assert r.returncode == 0 and releases_asked(host) == 0 and not warnings(r.out), r.out
    assert all("-a" not in a for a in clones(host)), clones(host)


@pytest.mark.parametrize("boot, stale, wants_a", [
    (None, STALE, True), (None, "VMware ESXi 5.1.0 build-799733", True), (None, "VMware ESX 4.1.0 build-502767", True),
    ("8.0.2", "VMware ESXi 6.7.0 build-17499825", False)])
def test_a_kept_line_naming_an_older_release_than_the_host_runs_is_believed_yet_the_backup_is_good(
        host, tmp_path, boot, stale, wants_a):
    """A planted line of an older major on a 7.0.3 or 8.0.2 host (only 7/8 run hotvcb on the host, so only
    such a line can mislead it): the design believes the ramdisk, so below 6.5 the clones get -a (which
    7.0 ignores) and below 5.5 hostd is asked for the new snapshot instead of the .vmsd; the backup must
    still be good and the VM left without our snapshot."""
    from simhost import ours
    if boot:
        host.reboot(version=boot)
    vmid = alpha(host, disks=2)
    with open(kept(host), "w") as f:
        f.write(stale + "\n")
    r = backup(host, tmp_path)
    assert r.returncode == 0 and "Traceback" not in r.out, r.out
    assert "(%s)" % stale in host_line(r.out)[0] and releases_asked(host) == 0, r.out
    assert len(sealed(host, "alpha")) == 1 and all(("-a" in a) == wants_a for a in clones(host)), clones(host)
    assert ours(host, vmid) == []


def test_a_half_written_temp_beside_the_kept_name_is_not_read(host, tmp_path):
    """What a kill -9 between write_text's temp and its rename leaves: the next run asks, keeps, succeeds."""
    alpha(host)
    with open(os.path.join(run_dir(host), ".hotvcb.release.deadbeef0001.tmp"), "w") as f:
        f.write("VMware ESXi 6.0.0 build-36")
    r = backup(host, tmp_path)
    assert r.returncode == 0 and "(%s)" % REAL in host_line(r.out)[0] and releases_asked(host) == 1, r.out
    assert open(kept(host)).read() == REAL + "\n"


# --- boots, kills, two runs -----------------------------------------------------------------------

@pytest.mark.parametrize("path", [["8.0.2"], ["8.0.2", "7.0.3"]], ids=["upgrade", "upgrade then rollback"])
def test_a_reboot_into_another_release_then_a_restore_and_a_backup_name_the_booted_one(host, tmp_path, path):
    vmid = alpha(host)
    now = "7.0.3"
    for version in path:
        r = backup(host, tmp_path)
        assert r.returncode == 0 and now in open(kept(host)).read(), r.out
        host.reboot(version=version)
        now = version
        assert not os.path.exists(kept(host))
        host.power_on(vmid)
    done = os.path.join("/vmfs/volumes/backup/hotvcb/alpha", sealed(host, "alpha")[0])
    r = hotvcb(host, "restore", done, "--datastore", "datastore1", "--name", "beta", timeout=85)
    out = r.stdout + r.stderr
    assert r.returncode == 0 and "Traceback" not in out, out
    assert releases_asked(host) == len(path) + 1, out
    assert open(kept(host)).read().startswith("VMware ESXi %s build-" % now), open(kept(host)).read()
    r = backup(host, tmp_path)
    assert r.returncode == 0 and "(VMware ESXi %s build-" % now in host_line(r.out)[0], r.out
    assert releases_asked(host) == len(path) + 1, r.out


def test_a_run_killed_right_after_the_answer_leaves_nothing_the_next_run_trips_on(host, tmp_path):
    """kill -9 of the run while `vmware -v` answers (before it can keep the line)."""
    alpha(host)
    flag = tmp_path / "killed"
    wrap_tool(host, "vmware", 'if [ ! -e %s ]; then touch %s; echo "%s"; kill -9 $PPID; sleep 1; fi'
              % (flag, flag, REAL))
    r = backup(host, tmp_path)
    assert r.returncode != 0 and flag.exists(), r.out
    r = backup(host, tmp_path)
    assert r.returncode == 0 and "Traceback" not in r.out, r.out
    assert "(%s)" % REAL in host_line(r.out)[0] and open(kept(host)).read() == REAL + "\n", r.out
    assert litter(host) == [], litter(host)


def test_runs_asking_at_once_keep_one_whole_line(host, tmp_path):
    """A backup and three status runs (status takes no run lock) ask a slow `vmware -v` at once: each
    keeps the line; the file is one whole line and no temp file is left."""
    host.create_vm("alpha", "datastore1", [{"size": "4M"}], power="on")
    wrap_tool(host, "vmware", "sleep 1")
    conf = write_conf(host)
    runs = [hotvcb_background(host, "backup", "-m", "alpha", "-g", conf, "-w", tmp_path / "work")]
    runs += [hotvcb_background(host, "status", "-g", conf) for _ in range(3)]
    outs = [p.communicate(timeout=85)[0] for p in runs]
    assert all("Traceback" not in o for o in outs), outs
    assert runs[0].returncode == 0 and all(REAL in o.splitlines()[0] for o in outs[1:]), outs
    assert open(kept(host)).read() == REAL + "\n" and litter(host) == [], litter(host)


def test_sigterm_while_the_release_is_asked_ends_the_run_and_keeps_nothing(host, tmp_path):
    from simhost import lock_pid, wait_for
    alpha(host)
    asked, once = tmp_path / "asked", tmp_path / "once"
    wrap_tool(host, "vmware", 'if [ ! -e %s ]; then touch %s %s; sleep 40; fi' % (once, once, asked))
    run = hotvcb_background(host, "backup", "-m", "alpha", "-g", write_conf(host), "-w", tmp_path / "work")
    try:
        wait_for(asked.exists, timeout=60, what="vmware -v asked")
        run.terminate()
        out = run.communicate(timeout=80)[0]
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode != 0 and "Traceback" not in out, out
    assert not os.path.exists(kept(host)) and litter(host) == [] and lock_pid(host) is None, out
    assert sealed(host, "alpha") == []
    r = backup(host, tmp_path)
    assert r.returncode == 0 and open(kept(host)).read() == REAL + "\n", r.out


# --- SSH -------------------------------------------------------------------------------------------

try:
    from sshd import needs_sshd
    from sshsite import site  # noqa: F401  (the fixture)
except ImportError:  # pragma: no cover
    needs_sshd = pytest.mark.skip(reason="no sshd helpers")


@needs_sshd
def test_ssh_on_the_host_uses_the_kept_line_as_local_mode_does(site, tmp_path):
    host = site.host
    alpha(host)
    with open(kept(host), "w") as f:
        f.write(STALE + "\n")
    r, _ = site.run("backup", "-m", "alpha", "-g", write_conf(host), "-w", tmp_path / "work")
    assert r.returncode == 0 and "Traceback" not in r.out, r.out
    assert "HOST: local (" in r.out and "(%s)" % STALE in host_line(r.out)[0] and releases_asked(host) == 0, r.out


@needs_sshd
@pytest.mark.parametrize("planted", [None, STALE])
def test_ssh_file_by_file_asks_every_run_and_keeps_nothing(site, tmp_path, planted):
    host = site.host
    alpha(host)
    if planted:
        with open(kept(host), "w") as f:
            f.write(planted + "\n")
    for run in range(2):
        r, _ = site.run("backup", "--file-by-file", "-m", "alpha", "-g", write_conf(host), "-w", tmp_path / "work")
        assert r.returncode == 0 and "Traceback" not in r.out and not warnings(r.out), r.out
        assert "HOST: ssh://" in r.out and "(%s)" % REAL in host_line(r.out)[0], r.out
        assert releases_asked(host) == run + 1
        assert all("-a" not in a for a in clones(host)), clones(host)
    if planted:
        assert open(kept(host)).read() == planted + "\n"
    else:
        assert not os.path.exists(kept(host))
