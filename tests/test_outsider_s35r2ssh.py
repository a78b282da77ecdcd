"""Outside test, stop 35 round 2 (s35r2ssh): an outsider (not the author) on the last hour's changes:
(a) SSH mode's dead master connection opened anew (sshconnection._revive), the snapshot removal after a lost
connection within ONE deadline (jobs/snapshot_removal.py); (b) POWER_VM_DOWN_BEFORE_BACKUP runs that take over a gone
run's VM (jobs/power.py, PowerControl.take_over). A real sshd on loopback in front of an esxisim host; the master
killed by its pid at odd moments. Each defect is a strict xfail asserting the right behaviour.

Tried and found sound (no test here, or one kept below): a file by file backup and verify past a 1-2 MB login
greeting on stdout and on stderr; the master SIGKILLed (from an ssh wrapper) before each VM's snapshot of a file by
file -a run (reopened once per kill, all VMs good); the master killed mid-clone, file by file and with the run on the
host (exit 2, snapshot removed); take-over with VM_SHUTDOWN_ORDER/VM_STARTUP_ORDER after SIGKILL and SIGTERM, a dry
run between (nothing powered, marker kept), a VM the admin left off staying off; two runs killed in a row.
"""

import contextlib
import os
import re
import signal
import subprocess
import threading
import time

import pytest

from esxisim import proclog
from gates import held, stopped
from simhost import (REPO, backup_once, good, hotvcb, needs_root, next_second, on_host, ours, power, sealed, vim,
                     wait_for, write_conf)
from sshd import needs_sshd
from sshsite import sshd_children, site  # noqa: F401  (site: the fixture)

pytestmark = needs_root


# -- helpers -------------------------------------------------------------------------------------------------

def _masters(sshd):
    """pids of the ssh master clients (ControlMaster=yes) holding this server's identity."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv and os.path.basename(argv[0]) == b"ssh" and b"ControlMaster=yes" in argv \
                and any(sshd.identity.encode() in a for a in argv):
            found.append(int(pid))
    return found


def _kill_masters(sshd):
    pids = _masters(sshd)
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    return pids


def _bg(site, *args, env=None):
    return subprocess.Popen(site.argv(*args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(site.env(), **(env or {})), cwd=REPO)


# -- (a) SSH mode: the master killed at odd moments ---------------------------------------------------------

def _held(site, tmp_path, tool, pattern, phase, args, action, env=None):
    """hotvcb `args` in the background; once the gated call is held, `action()`; then the call let go. (rc, out)"""
    return held(site.host, tmp_path, tool, pattern, phase, lambda: _bg(site, *args, env=env), action)


@needs_sshd
def test_master_killed_mid_clone_file_by_file_reopens_it_and_removes_the_snapshot(site, tmp_path):
    """File by file: the OOM killer takes hotvcb's ssh master while web's disk is copied. The copy's session goes
    with it (web's backup fails); its snapshot is removed over a new master, said once in the log."""
    host = site.host
    vmid = host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    conf = write_conf(host)
    rc, out = _held(site, tmp_path, "vmkfstools", "-i*", "before", ("backup", "--file-by-file", "-m", "web", "-g", conf),
                    lambda: _kill_masters(site.sshd) or pytest.fail("no master"))
    assert "Traceback" not in out, out
    assert ours(host, vmid) == [], out
    assert out.count("opened a new one") == 1, out
    assert rc != 0 and sealed(host, "web") == [], (rc, out)


@needs_sshd
def test_master_killed_mid_clone_of_the_run_on_the_host_exits_2_and_removes_the_snapshot(site, tmp_path):
    """The run on the host: its session ends with the master. operations.md: "On the host the run stops as on a
    hang-up ... and the client exits 2"."""
    host = site.host
    vmid = host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    conf = write_conf(host)
    rc, out = _held(site, tmp_path, "vmkfstools", "-i*", "before", ("-m", "web", "-g", conf),
                    lambda: _kill_masters(site.sshd) or pytest.fail("no master"))
    assert "Traceback" not in out, out
    wait_for(lambda: ours(host, vmid) == [], 60, "the host's run to remove its snapshot")
    assert rc == 2, (rc, out)
    assert sealed(host, "web") == [], out


@needs_sshd
def test_removal_after_a_lost_connection_ends_within_one_timeout_and_says_so(site, tmp_path):
    """File by file, SNAPSHOT_REMOVE_TIMEOUT=3s, a consolidation that takes a minute. The master dies while the
    removal is asked. operations.md: "All of it, the first removal's own wait included, ends within one
    SNAPSHOT_REMOVE_TIMEOUT and those 10 seconds ... a snapshot still listed then is reported with the time waited
    in all". The snapshot is not left behind silently: the log says to remove it by hand, the VM fails."""
    host = site.host
    vmid = host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    conf = write_conf(host, SNAPSHOT_REMOVE_TIMEOUT="3s")
    host.set_fault("snapshot.remove.delay", "60")
    began = []
    rc, out = _held(site, tmp_path, "vim-cmd", "vmsvc/snapshot.remove*", "before",
                    ("backup", "--file-by-file", "-m", "web", "-g", conf),
                    lambda: began.append(time.monotonic()) or _kill_masters(site.sshd))
    took = time.monotonic() - began[0]
    host.clear_faults()
    (tmp_path / "out.txt").write_text(out)
    assert "Traceback" not in out, out
    assert took < 3 + 10 + 8, (took, out)
    assert rc != 0 and sealed(host, "web") == [], (rc, out)
    if ours(host, vmid):
        assert "by hand" in out or "next run" in out or "cleanup" in out, out
    line = [l for l in out.splitlines() if "could NOT be removed" in l]
    assert line, out
    assert max(int(n) for n in re.findall(r"(\d+) ?s\b", line[0])) >= took - 3, (took, line[0])


# -- (b) power-down: a gone run's VM taken over --------------------------------------------------------------

MARKER = "/vmfs/volumes/datastore1/web/.hotvcb-powered-off.web.vmx"


def _killed_going_down(host, tmp_path, conf, sig="KILL"):
    from test_power_s35race import stopped_going_down
    return stopped_going_down(host, tmp_path, conf, sig)


def _killed_during_copy(host, tmp_path, args, sig=signal.SIGKILL, sub="copy"):
    (tmp_path / sub).mkdir()
    return stopped(host, tmp_path / sub, "vmkfstools", "-i*", "before", args, sig)[1]


def test_dry_run_after_a_gone_run_touches_nothing_and_cleanup_still_powers_it_on(host, tmp_path):
    """The gone run's guest finished going down; a dry run (`-d dryrun`) says it would take it over, powers nothing,
    keeps the gone run's marker; `hotvcb cleanup` then powers web on: it was on before the first run."""
    conf = write_conf(host, POWER_VM_DOWN_BEFORE_BACKUP=1)
    vmid, _ = _killed_going_down(host, tmp_path, conf)
    vim(host, "vmsvc/power.off", vmid)
    mark = len(proclog.read(host))
    d = hotvcb(host, "-m", "web", "-g", conf, "-d", "dryrun")
    assert "Traceback" not in d.stdout + d.stderr, d.stdout + d.stderr
    assert "Powered off" in power(host, vmid), d.stdout
    assert [e for e in proclog.read(host)[mark:] if e["event"] == "start" and e["args"]
            and e["args"][0] in ("vmsvc/power.on", "vmsvc/power.off", "vmsvc/power.shutdown")] == [], d.stdout
    assert os.path.exists(host.real(MARKER)), d.stdout
    c = hotvcb(host, "cleanup", "-g", conf)
    assert c.returncode == 0, c.stdout + c.stderr
    assert "Powered on" in power(host, vmid), c.stdout


def test_taken_over_vm_is_powered_on_when_that_run_is_stopped_by_sigterm(host, tmp_path):
    """The next run takes web over (off, the gone run's marker) and is itself stopped by SIGTERM during web's
    copy: an interrupted run powers on what it powered off, so web is on when it exits (exit 2)."""
    conf = write_conf(host, POWER_VM_DOWN_BEFORE_BACKUP=1)
    vmid, _ = _killed_going_down(host, tmp_path, conf)
    vim(host, "vmsvc/power.off", vmid)
    out = _killed_during_copy(host, tmp_path, ("backup", "-m", "web", "-g", conf), signal.SIGTERM)
    assert "Traceback" not in out, out
    assert "Powered on" in power(host, vmid), out
    assert not os.path.exists(host.real(MARKER)), out


def test_two_runs_killed_in_a_row_then_a_backup_leaves_web_on(host, tmp_path):
    """Run 1 killed going down, web goes off; run 2 takes it over and is killed mid-copy; run 3 (a plain
    POWER_VM_DOWN_BEFORE_BACKUP backup) takes it over from run 2: one good backup, web on, no marker left."""
    conf = write_conf(host, POWER_VM_DOWN_BEFORE_BACKUP=1)
    vmid, _ = _killed_going_down(host, tmp_path, conf)
    vim(host, "vmsvc/power.off", vmid)
    out2 = _killed_during_copy(host, tmp_path, ("backup", "-m", "web", "-g", conf))
    assert "Powered off" in power(host, vmid), out2
    r3 = backup_once(host, conf, "web")
    assert r3.returncode == 0, out2 + "\n--- run 3 ---\n" + r3.stdout + r3.stderr
    assert "Powered on" in power(host, vmid), r3.stdout
    assert len(good(host, conf, "web")) == 1, r3.stdout
    assert not os.path.exists(host.real(MARKER)), r3.stdout


@pytest.mark.parametrize("then", ["cleanup", "backup"])
def test_vm_the_admin_switched_off_after_starting_it_by_hand_stays_off(host, tmp_path, then):
    """A POWER_VM_DOWN_BEFORE_BACKUP run is killed during web's copy (web off, its marker says the next run
    powers it on). The admin sees web down, powers it on by hand, and later switches it off on purpose
    (maintenance). `hotvcb cleanup`, or the next backup, must leave it off: the admin's last word. Its marker
    still names the gone run, and the next backup takes web over (PowerControl.take_over) / cleanup boots it."""
    conf = write_conf(host, POWER_VM_DOWN_BEFORE_BACKUP=1)
    vmid = host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    out = _killed_during_copy(host, tmp_path, ("backup", "-m", "web", "-g", conf))
    assert "Powered off" in power(host, vmid), out
    vim(host, "vmsvc/power.on", vmid)
    time.sleep(1)
    vim(host, "vmsvc/power.off", vmid)
    if then == "cleanup":
        r = hotvcb(host, "cleanup", "-g", conf)
    else:
        r = backup_once(host, conf, "web")
    assert "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr
    assert "Powered off" in power(host, vmid), r.stdout
    assert "was powered on since the run that left it off" in r.stdout and not os.path.exists(host.real(MARKER)), r.stdout


@pytest.mark.parametrize("sig", ["KILL"])
def test_power_order_run_killed_going_down_then_next_run_restores_every_vm_as_it_was(host, tmp_path, sig):
    """-a with VM_SHUTDOWN_ORDER/VM_STARTUP_ORDER and POWER_VM_DOWN_BEFORE_BACKUP=1; `idle` the admin switched off
    before any run. Run 1 is stopped right after asking web's guest to shut down (web still going down); web goes
    off; a dry run; then run 2. After all: web and db on, idle off (the admin's rule)."""
    web = host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    db = host.create_vm("db", "datastore1", [{"size": "1M"}], power="on")
    idle = host.create_vm("idle", "datastore1", [{"size": "1M"}], power="off")
    conf = write_conf(host, POWER_VM_DOWN_BEFORE_BACKUP=1, VM_SHUTDOWN_ORDER="web,db", VM_STARTUP_ORDER="db,web")
    host.set_fault("power.shutdown", "ignore")
    _, out1 = stopped(host, tmp_path, "vim-cmd", "vmsvc/power.shutdown*", "after", ("-a", "-g", conf),
                      getattr(signal, "SIG" + sig))
    host.clear_faults()
    assert "Traceback" not in out1, out1
    vim(host, "vmsvc/power.off", web)
    d = hotvcb(host, "-a", "-g", conf, "-d", "dryrun")
    assert "Traceback" not in d.stdout + d.stderr, d.stdout + d.stderr
    assert [power(host, v) for v in (web, db, idle)] == ["Powered off", "Powered on", "Powered off"], d.stdout
    next_second()
    r = hotvcb(host, "-a", "-g", conf)
    states = [power(host, v) for v in (web, db, idle)]
    assert states == ["Powered on", "Powered on", "Powered off"], out1 + "\n--- run 2 ---\n" + r.stdout
    assert r.returncode == 0, r.stdout + r.stderr
    c = hotvcb(host, "cleanup", "-g", conf)
    assert [power(host, v) for v in (web, db, idle)] == states, c.stdout


def _sshd_down(site):
    """The host's sshd and every connection it serves gone (a host's management network restarted)."""
    children = sshd_children(site.sshd)
    site.sshd.proc.terminate()
    site.sshd.proc.wait(10)
    for pid in children:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def _sshd_up(site):
    """The host's sshd started again on its port (the fixture's teardown stops this one)."""
    d = site.sshd
    log = open(str(d.dir / "sshd2.log"), "ab")
    d.proc = subprocess.Popen(on_host(site.host, "/usr/sbin/sshd", "-D", "-e", "-f", str(d.dir / "sshd_config")),
                              stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)  # as sshsite.host_sshd
    log.close()


@needs_sshd
def test_sshd_down_for_3_s_during_the_snapshot_removal_the_removal_is_still_waited_for(site, tmp_path):
    """File by file. The host's sshd (and with it the master) goes down as web's snapshot removal is asked, and is up
    again 3 s later. The removal is to be "waited for over a new connection" (operations.md) within
    SNAPSHOT_REMOVE_TIMEOUT + 10 s: the snapshot does not stay on web, and the backup is sealed."""
    host = site.host
    vmid = host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    conf = write_conf(host, SNAPSHOT_REMOVE_TIMEOUT="30s")

    def blip():
        _sshd_down(site)
        threading.Timer(3, _sshd_up, (site,)).start()

    rc, out = _held(site, tmp_path, "vim-cmd", "vmsvc/snapshot.remove*", "before",
                    ("backup", "--file-by-file", "-m", "web", "-g", conf), blip)
    (tmp_path / "out.txt").write_text(out)
    assert "Traceback" not in out, out
    assert ours(host, vmid) == [], out
    assert rc == 0 and len(sealed(host, "web")) == 1, (rc, out)


def test_vm_a_sigkilled_run_left_going_down_is_not_booted_only_to_be_shut_down_again(host, tmp_path):
    """Run 1 is SIGKILLed right after asking web's guest to shut down (its run lock stays); the guest finishes going
    down. architecture.md: such a VM "is taken over (PowerControl.take_over) ... backed up off, and powered on as one
    this run shut down ... so a gone run's VM is not booted only to be shut down again". The next backup powers web
    on once, after its backup: no boot first, no second shutdown of a production VM."""
    conf = write_conf(host, POWER_VM_DOWN_BEFORE_BACKUP=1)
    vmid, _ = _killed_going_down(host, tmp_path, conf, "KILL")
    vim(host, "vmsvc/power.off", vmid)
    mark = len(proclog.read(host))
    nxt = backup_once(host, conf, "web")
    assert nxt.returncode == 0, nxt.stdout + nxt.stderr
    assert "Powered on" in power(host, vmid), nxt.stdout
    asked = [e["args"][0] for e in proclog.read(host)[mark:] if e["event"] == "start" and e["args"]]
    assert [a for a in asked if a in ("vmsvc/power.on", "vmsvc/power.off", "vmsvc/power.shutdown")] == \
        ["vmsvc/power.on"], nxt.stdout
