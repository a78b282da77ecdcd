"""Known defects found on 5 Dec (session 33, K3), pinned through the CLI on esxisim."""

import os
import shutil
import shlex
import subprocess
import time

import procs
import pytest
from test_schedule_esxi import ARGS, CRONTAB, LOCAL_SH, Esxi, _esxisim, pyz  # noqa: F401  (pyz: a fixture)



ON_ESXISIM = pytest.mark.skipif(os.geteuid() != 0, reason="esxisim needs root (mount namespaces)")


@pytest.fixture
def esxi(tmp_path, pyz):  # noqa: F811
    host = Esxi(tmp_path / "host", "8.0.2", pyz)
    yield host
    _esxisim("destroy", str(host.path))


def _marked(crontab):
    return [ln for ln in crontab.splitlines() if "# hotvcb:" in ln]


def _starts(log):
    return [r for r in log if r["event"] == "start"]


@ON_ESXISIM
def test_boot_with_three_jobs_restarts_crond_once_after_every_line(esxi):
    """Each job's boot block killed and restarted crond: the next block's kill could read the pid file before
    the crond just started had written it, leaving two crond that ran every job twice a night. At boot crond
    is now restarted once, after all job lines are back."""
    for job in ("a", "b", "c"):
        esxi.hotvcb("schedule", "install", "--job", job, *ARGS)
    lines = _marked(esxi.read(CRONTAB))
    assert len(lines) == 3
    seen = len(esxi.crond_log())
    esxi.reboot()
    assert _marked(esxi.read(CRONTAB)) == lines
    esxi.crond_started(seen, lines[-1])
    time.sleep(0.5)  # a second start, were there one, would be logged by now
    log = esxi.crond_log()[seen:]
    assert len(_starts(log)) == 1, "one crond started at boot, not one per job: %s" % log
    assert all(ln in _starts(log)[0]["crontab"] for ln in lines), "the one crond read every job's line"
    local = esxi.read(LOCAL_SH)
    assert local.count("busybox crond") == 1 and local.count("/bin/kill") == 1
    assert local.index("busybox crond") > max(local.index("# hotvcb:%s end" % j) for j in "abc")


OLD_BLOCK = """# hotvcb:{job} begin: added by `hotvcb schedule install`, removed by `hotvcb schedule remove --job {job}`
/bin/kill $(cat /var/run/crond.pid) 2>/dev/null
grep -qxF {q} /var/spool/cron/crontabs/root || printf '%s\\n' {q} >> /var/spool/cron/crontabs/root
/usr/lib/vmware/busybox/bin/busybox crond
# hotvcb:{job} end
"""


@ON_ESXISIM
def test_install_migrates_boot_blocks_of_the_format_before(esxi):
    """A local.sh written by the hotvcb before (a restart in every job's block) is shown and removed as it
    was, and the next install leaves one restart, below every job's block."""
    pristine = esxi.read(LOCAL_SH)
    line = ("0 1 * * * /bin/python /vmfs/volumes/ds1/hotvcb.pyz backup -a -g /vmfs/volumes/ds1/hotvcb.conf"
            " >> /var/log/hotvcb-{job}.log 2>&1 # hotvcb:{job}")
    blocks = "".join(OLD_BLOCK.format(job=j, q=shlex.quote(line.format(job=j))) + "\n" for j in ("old1", "old2"))
    head, tail = pristine.rsplit("exit 0", 1)
    esxi.sh("cat > %s <<'EOF'\n%sEOF" % (LOCAL_SH, head + blocks + "exit 0" + tail))
    esxi.sh("printf '%%s\\n' %s %s >> %s" % (shlex.quote(line.format(job="old1")),
                                            shlex.quote(line.format(job="old2")), CRONTAB))
    shown = esxi.hotvcb("schedule", "show").stdout
    assert "old1" in shown and "old2" in shown and "boot block in /etc/rc.local.d/local.sh: present" in shown
    assert esxi.hotvcb("schedule", "remove", "--job", "old2").stdout.strip() == "removed job(s): old2"
    assert "old2" not in esxi.read(LOCAL_SH) and "# hotvcb:old1 end" in esxi.read(LOCAL_SH)

    esxi.hotvcb("schedule", "install", "--job", "new", *ARGS)
    local = esxi.read(LOCAL_SH)
    assert local.count("busybox crond") == 1 and local.count("/bin/kill") == 1, local
    assert local.index("busybox crond") > local.index("# hotvcb:new end") > local.index("# hotvcb:old1 end")
    seen = len(esxi.crond_log())
    esxi.reboot()
    esxi.crond_started(seen)
    time.sleep(0.5)
    assert len(_starts(esxi.crond_log()[seen:])) == 1
    assert esxi.hotvcb("schedule", "remove", "--all").stdout.strip() == "removed job(s): new, old1"
    assert esxi.read(LOCAL_SH) == pristine


# -- 3. qemu-img's silence limit and a huge disk ---------------------------------------------------------------

NINE_TB = 9 * 10 ** 12


class _Silenced(Exception):
    pass


def _convert_caught(given):
    """A LocalShell whose `qemu-img convert` is caught with the idle_timeout it is given (the seam every command
    goes through); `qemu-img info` runs for real, of a qcow2 whose virtual size is 9 TB (a file of some KiB)."""
    from hotvcb.localshell import LocalShell

    class Shell(LocalShell):
        def run(self, argv, **kw):
            if "convert" in argv:
                given.append(kw.get("idle_timeout"))
                raise _Silenced()
            return super().run(argv, **kw)

    return Shell()


@pytest.fixture
def huge_qcow2(tmp_path):
    import subprocess
    path = str(tmp_path / "disk.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", path, str(NINE_TB)], check=True)
    assert os.path.getsize(path) < 1 << 20
    return path


def _stage_silence(tmp_path, image):
    """The silence a KVM backup's restore to ESXi allows its `qemu-img convert` of `image`."""
    import logging
    from hotvcb.convert.machine import DiskSpec, Machine
    from hotvcb.jobs import restore_stage
    from hotvcb.jobs.machine_of import Found

    given = []
    machine = Machine("big", "12345678-1234-1234-1234-123456789abc",
                      disks=[DiskSpec(image, "qcow2", "scsi", "vda", "sda")])
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(_Silenced):
        restore_stage.stage(_convert_caught(given), Found(machine, "libvirt", image), str(dest), logging.getLogger("t"))
    (allowed,) = given
    return allowed


@pytest.mark.skipif(not shutil.which("qemu-img"), reason="needs qemu-img")
def test_a_huge_kvm_disks_conversion_may_stay_silent_as_long_as_one_percent_takes(tmp_path, huge_qcow2):
    """`qemu-img convert -p` moves in whole percents as vmkfstools does: 1 % of a 9 TB disk is 90 GB, 30 minutes
    at 50 MB/s, and the fixed 1800 s silence limit killed a working conversion of it (restore to ESXi,
    restore --kvm, the QEMU/libvirt backup copy). It is now copysilence's, from the image's virtual size."""
    from hotvcb import copysilence
    allowed = _stage_silence(tmp_path, huge_qcow2)
    assert allowed == copysilence.allowed(NINE_TB) and NINE_TB / 100 / (20 * 10 ** 6) <= allowed <= 6 * 3600


@pytest.mark.skipif(not shutil.which("qemu-img"), reason="needs qemu-img")
def test_qemu_img_copy_to_takes_the_silence_from_the_capacity(tmp_path, huge_qcow2):
    from hotvcb import copysilence
    from hotvcb.hosts import qemuimg
    from hotvcb.model import Disk

    given = []
    (tmp_path / "out").mkdir()
    with pytest.raises(_Silenced):
        qemuimg.copy_to(_convert_caught(given), Disk("vda", huge_qcow2, "", "virtio"), huge_qcow2, "qcow2",
                        str(tmp_path / "out" / "vda.qcow2"), "qcow2", None, NINE_TB)
    assert given == [copysilence.allowed(NINE_TB)]
    small = []
    with pytest.raises(_Silenced):
        qemuimg.copy_to(_convert_caught(small), Disk("vda", huge_qcow2, "", "virtio"), huge_qcow2, "qcow2",
                        str(tmp_path / "out" / "vda.qcow2"), "qcow2", None, 1 << 30)
    assert small == [1800], "a small disk's hung copy is still caught within half an hour"


# -- 2. a copy outliving its SIGKILLed run -------------------------------------------------------------------------

def _copies_into(name):
    """Pids of vmkfstools processes (this machine's) whose command line names `name`."""
    found = []
    for pid in os.listdir("/proc"):
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        # esxisim's vmkfstools: `python -S -c CODE vmkfstools HOST ARGS...` (a real one: `vmkfstools ARGS...`);
        # not the sh that runs it (tether's wrapper)
        if argv[0].endswith(b"sh"):
            continue
        if any(a.endswith(b"vmkfstools") for a in argv[:6]) and any(name.encode() in a for a in argv):
            found.append(int(pid))
    return found


@ON_ESXISIM
def test_a_sigkilled_runs_vmkfstools_does_not_write_on_into_what_the_next_run_cleans_up(host, tmp_path):
    """hotvcb killed with -9 mid-copy left its `vmkfstools -i` running: the next run judged the `-partial`
    folder dead and removed it while the orphan still wrote there (on VMFS the removal fails on its locks;
    a restore re-clones into the same path under it). The copy now dies with hotvcb."""
    import signal
    from simhost import backups, copying, hotvcb, hotvcb_background, kill, lock_pid, wait_for, write_conf

    vm = "orphaned"
    host.create_vm(vm, "datastore1", [{"size": "8M"}], power="on")
    conf = write_conf(host)
    host.set_fault("clone.delay", "1000")  # a progress line each 10 s: 1 % of a big disk (its next write to
    work = str(tmp_path / "w")              # the dead run's pipe would kill it by SIGPIPE)
    proc = hotvcb_background(host, "-m", vm, "-g", conf, "-w", work)
    wait_for(lambda: copying(host, vm) and lock_pid(host), what="the copy")
    (partial,) = [b for b in backups(host, vm) if b.endswith("-partial")]
    wait_for(lambda: _copies_into(partial), what="vmkfstools writing into " + partial)
    kill(lock_pid(host), signal.SIGKILL)
    proc.communicate(timeout=60)
    try:
        wait_for(lambda: not _copies_into(partial), timeout=3, what="the copy to end with its run")
    finally:
        for pid in _copies_into(partial):
            kill(pid)
    host.clear_faults()
    r = hotvcb(host, "-m", vm, "-g", conf, "-w", work)
    assert r.returncode == 0 and "removing unfinished backup" in r.stdout, r.stdout + r.stderr
    assert partial not in backups(host, vm)


def test_a_tethered_command_reads_as_an_untethered_one():
    """The wrapper that ties a copy to hotvcb changes neither its output, its exit code nor the message for a
    program that is not there."""
    from hotvcb.errors import HostError
    from hotvcb.localshell import LocalShell

    done = LocalShell().run(["sh", "-c", "echo out; echo err >&2; exit 3"], tethered=True)
    assert (done.returncode, sorted(done.output.split())) == (3, ["err", "out"])
    with pytest.raises(HostError, match="^cannot run /nonexistent/vmkfstools: not found$"):
        LocalShell().run(["/nonexistent/vmkfstools", "-i", "a", "b"], tethered=True)


def _naming(marker):
    """Pids of processes (the test's own aside) whose command line holds marker."""
    return [pid for pid, argv in procs.argvs() if pid != os.getpid() and any(marker.encode() in a for a in argv[1:])]


def test_a_sigkilled_runs_tethered_command_and_its_wrapper_all_end_at_once(tmp_path):
    """A silent command (a copy between progress lines). The watcher stopped it at once, but dash's "Terminated" on the dead run's pipe killed the
    wrapper (SIGPIPE) before it could stop the watcher: a process naming the copy's paths lived on 10 s,
    beside the next run's cleanup."""
    import signal
    import sys

    marker = "tethered-%s" % tmp_path.name
    code = ("import sys; from hotvcb.localshell import LocalShell\n"
            "LocalShell().run(['sh', '-c', 'echo started; sleep 60', %r], tethered=True)" % marker)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while len(_naming(marker)) < 3:  # the wrapper, its watcher, the command
            assert time.monotonic() < deadline and proc.poll() is None, "the tethered command did not start"
            time.sleep(0.05)
        time.sleep(0.5)  # the wrapper waiting for its command, as through a copy
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 5
        while _naming(marker):
            assert time.monotonic() < deadline, "still there 5 s after: %s" % _naming(marker)
            time.sleep(0.05)
    finally:
        proc.kill()
        for pid in _naming(marker):
            os.kill(pid, signal.SIGKILL)
