"""An outsider's attacks on BACKUP_PARALLEL / `backup --parallel N`, through the CLI against esxisim.

Each test is an attack a hostile, careful admin could make; the ones the product withstood stay
only where they assert something that could regress.
"""

import json
import os
import re
import signal
import subprocess
import sys

import pytest

import procs
from esxisim import proclog
from sshd import needs_sshd
from sshsite import host_sshd
from simhost import (REPO, backups, copying, hotvcb, hotvcb_background, kill, lock_pid, needs_root, ours, sealed,
                     wait_for, write_conf)

pytestmark = needs_root


def _vms(host, specs, size="4M", power="on"):
    """{name: vmid} for (name, datastore) pairs, powered as asked, no guest writer."""
    return {name: host.create_vm(name, ds, [{"size": size}], power=power) for name, ds in specs}


def _clone_starts(host, since=0):
    return [r for r in proclog.read(host)[since:] if r["tool"] == "vmkfstools" and r["args"][:1] == ["-i"]
            and r["event"] == "start"]


def _no_traceback(out):
    assert "Traceback" not in out and "internal error" not in out, out


def _fill_backup_to(host, room):
    """Leave only `room` bytes free on the backup datastore."""
    with open(host.real("/vmfs/volumes/backup/someone-elses-file"), "wb") as f:
        os.posix_fallocate(f.fileno(), 0, host.ds_free("backup") - room)


def _needed(host, vmids):
    """What one of these VMs' thin backup takes on the target (their largest allocated disk)."""
    return max(os.lstat(host.real(p)).st_blocks * 512 for vmid in vmids
               for _n, p, _m in host.vm_disks(vmid) for p in (p, p[:-5] + "-flat.vmdk"))


# -- 1. the space ledger and a target written two ways ------------------------------------------

def test_one_target_named_by_uuid_and_by_name_is_reserved_as_one(host, tmp_path):
    """Global config writes to /vmfs/volumes/backup/..., a per-VM file (an old ghettoVCB one) to the
    same datastore by its UUID path. Room for one and a half backups, two VMs at once: the second
    must wait and then fail before any change, not start a copy on bytes promised to the first."""
    made = _vms(host, (("r1", "datastore1"), ("r2", "ds5")), size="16M", power="on")
    uuid = host.state()["datastores"]["backup"]["uuid"]
    confdir = tmp_path / "per-vm"
    confdir.mkdir()
    (confdir / "r2").write_text("VM_BACKUP_VOLUME=/vmfs/volumes/%s/hotvcb\n" % uuid)
    _fill_backup_to(host, int(1.5 * _needed(host, made.values())))
    host.set_fault("clone.delay", "2")
    r = hotvcb(host, "-a", "-g", write_conf(host, BACKUP_PARALLEL=2), "-c", confdir, "-w", tmp_path / "w")
    _no_traceback(r.stdout + r.stderr)
    assert r.returncode == 4, r.stdout + r.stderr
    done = [n for n in made if sealed(host, n)]
    assert len(done) == 1, r.stdout
    (failed,) = set(made) - set(done)
    assert re.search(r"\[%s\] %s: %s needs .* but only .* is free" % ((failed,) * 3), r.stdout), r.stdout
    assert len(_clone_starts(host)) == 1, "a second copy started on room promised to the first"
    assert backups(host, failed) == []
    assert all(ours(host, vmid) == [] for vmid in made.values())

# -- 2. garbage on the command line -------------------------------------------------------------

@pytest.mark.parametrize("value", ["\u00b3", "\u0663", "\uff13", "2\n", "0", "17"])
def test_parallel_flag_takes_ascii_digits_only_with_a_clear_message(value, capsys):
    """`--parallel ³` (superscript three: str.isdigit() says yes, int() says no) must not surface
    as argparse's "invalid _vms_at_once value", and `--parallel ٣` / `３` (other scripts' digits,
    which int() reads as 3) must be refused as the config file refuses them."""
    from hotvcb import cli
    with pytest.raises(SystemExit) as info:
        cli.main(["-a", "--parallel", value])
    err = capsys.readouterr().err
    assert info.value.code == 1
    assert "--parallel: %r: a whole number from 1 to 16" % value in err, err
    assert "_vms_at_once" not in err


# -- 3. signals while several VMs are powered down or cold-snapshotted ---------------------------

def test_sigterm_with_two_vms_down_or_on_a_cold_snapshot_brings_both_back_and_starts_no_more(host, tmp_path):
    """p1 powered down for its copy (POWER_VM_DOWN_BEFORE_BACKUP), p2 copying from a COLD_SNAPSHOT
    (per-VM file), p3/p4 waiting for their datastore's one slot. SIGTERM: exit 2, both VMs on,
    no snapshot, no power marker, no -partial, nothing sealed, p3/p4 never touched."""
    made = _vms(host, (("p1", "datastore1"), ("p2", "ds5"), ("p3", "datastore1"), ("p4", "ds5")))
    confdir = tmp_path / "per-vm"
    confdir.mkdir()
    (confdir / "p2").write_text("POWER_VM_DOWN_BEFORE_BACKUP=0\nCOLD_SNAPSHOT=1\n")
    conf = write_conf(host, BACKUP_PARALLEL=3, BACKUP_PARALLEL_PER_DATASTORE=1, POWER_VM_DOWN_BEFORE_BACKUP=1,
                      ENABLE_HARD_POWER_OFF=1, ITER_TO_WAIT_SHUTDOWN="10s")
    host.set_fault("clone.delay", "60")
    since = len(proclog.read(host))
    proc = hotvcb_background(host, "-a", "-g", conf, "-c", confdir, "-w", tmp_path / "w")
    wait_for(lambda: len(_clone_starts(host, since)) == 2 and host.power_state(made["p1"]) == "off"
             and host.power_state(made["p2"]) == "on" and ours(host, made["p2"]), timeout=60,
             what="p1 copying while off, p2 copying from its cold snapshot")
    kill(lock_pid(host), signal.SIGTERM)
    out, _ = proc.communicate(timeout=90)
    _no_traceback(out)
    assert proc.returncode == 2, out
    assert "###### Final status: ERROR: interrupted by SIGTERM ######" in out
    for name, vmid in made.items():
        assert host.power_state(vmid) == "on", name + " left off:\n" + out[-2000:]
        assert name in ("p3", "p4") or ours(host, vmid) == [], name
        assert sealed(host, name) == [] and not [b for b in backups(host, name) if b.endswith("-partial")], name
        assert not [f for f in os.listdir(os.path.dirname(host.vmx_real(vmid)))
                    if f.startswith(".hotvcb")], name + ": power marker left"
    assert "Initiate backup for p3" not in out and "Initiate backup for p4" not in out
    assert "VM DOWN" not in out




# -- 4. garbage per-VM config folder ------------------------------------------------------------

def test_a_per_vm_config_folder_that_is_none_is_a_usage_error_before_any_vm(host, tmp_path):
    """`-c` naming no folder (a typo, or the global config file itself) is a usage problem: exit 1
    and one line, before the lock or any VM, not six "VM failed" results and exit 6."""
    made = _vms(host, (("u1", "datastore1"), ("u2", "ds5")), size="1M")
    conf = write_conf(host, BACKUP_PARALLEL=2)
    confdir = str(tmp_path / "no-such-dir")
    r = hotvcb(host, "-a", "-g", conf, "-c", confdir, "-w", tmp_path / "w")
    _no_traceback(r.stdout + r.stderr)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "-c %s" % confdir in r.stdout + r.stderr and "Initiate backup" not in r.stdout, r.stdout + r.stderr
    assert all(backups(host, n) == [] and ours(host, vmid) == [] for n, vmid in made.items())


# -- 5. hooks of several VMs at once ------------------------------------------------------------

def _procs_with(word):
    return [pid for pid, argv in procs.argvs() if word.encode() in b"\0".join(argv)]


def test_hooks_of_vms_at_once_keep_their_own_vm_and_a_hung_pre_hook_is_killed(host, tmp_path):
    """Three VMs at once; h2's pre-hook hangs past HOOK_TIMEOUT (per-VM file). h2 fails before any
    change and its hook is killed; h1/h3's post-hooks, running side by side, each get their own VM,
    result and backup folder; exit 4."""
    made = _vms(host, (("h1", "datastore1"), ("h2", "ds5"), ("h3", "datastore1")), size="1M")
    hooklog = tmp_path / "hooks.log"
    confdir = tmp_path / "per-vm"
    confdir.mkdir()
    (confdir / "h2").write_text("PRE_BACKUP_HOOK='sleep 4242'\nHOOK_TIMEOUT=3s\n")
    conf = write_conf(host, BACKUP_PARALLEL=3, PRE_BACKUP_HOOK="'sleep 1'",
                      POST_BACKUP_HOOK="'sleep 1; echo \"$HOTVCB_VM|$HOTVCB_RESULT|$HOTVCB_BACKUP\" >> %s'" % hooklog)
    r = hotvcb(host, "-a", "-g", conf, "-c", confdir, "-w", tmp_path / "w")
    out = r.stdout + r.stderr
    _no_traceback(out)
    assert r.returncode == 4, out
    assert re.search(r"\[h2\] h2: pre-backup hook of h2: .*", r.stdout), out
    assert _procs_with("sleep 4242") == [], "the timed-out hook still runs"
    assert backups(host, "h2") == [] and ours(host, made["h2"]) == []
    lines = sorted(hooklog.read_text().splitlines())
    assert [l.split("|")[:2] for l in lines] == [["h1", "ok"], ["h3", "ok"]], lines
    for line in lines:
        vm, _res, folder = line.split("|")
        assert folder.startswith(backup_root_path(vm)) and sealed(host, vm) == [folder.rsplit("/", 1)[1]], line


def backup_root_path(vm):
    return "/vmfs/volumes/backup/hotvcb/%s/%s-" % (vm, vm)


# -- 6. a mixed list: same-named VMs, a missing name, a VM refused by pre-flight ----------------

def test_a_mixed_list_in_parallel_reports_every_entry_in_list_order(host, tmp_path):
    _vms(host, (("ok1", "datastore1"), ("twin", "datastore1"), ("twin", "ds5"), ("ok2", "ds5")), size="1M")
    snapped = host.create_vm("snapped", "ds5", [{"size": "1M"}], power="on", snapshots=["user-snap"])
    vms = tmp_path / "vms.txt"
    vms.write_text("ok1\ntwin\nnot-here\nsnapped\nok2\n")
    conf = write_conf(host, BACKUP_PARALLEL=4)

    report = tmp_path / "report.json"
    r = hotvcb(host, "-f", vms, "-g", conf, "-w", tmp_path / "w", "--json-report", report)
    _no_traceback(r.stdout + r.stderr)
    assert r.returncode == 4, r.stdout + r.stderr
    rows = [(v["vm"], v["result"]) for v in json.loads(report.read_text())["vms"]]
    assert rows == [("ok1", "ok"), ("twin", "error"), ("not-here", "error"), ("snapped", "error"), ("ok2", "ok")]
    assert ours(host, snapped) == [] and backups(host, "snapped") == [] and backups(host, "twin") == []
    assert len(sealed(host, "ok1")) == len(sealed(host, "ok2")) == 1


# -- 7. two VMs in one folder, powered down at once ---------------------------------------------

def _second_vm_in_folder_of(host, first, name, size="1M", power="on"):
    """Register VM `name` with its files in the folder of VM `first` (ESXi allows it: a copied or
    re-registered VM)."""
    vmid = host.create_vm(name, "datastore1", [{"size": size}])
    src = os.path.dirname(host.vmx_real(vmid))
    dst = os.path.dirname(host.vmx_real(first))
    host.unregister(vmid)
    for f in os.listdir(src):
        os.rename(os.path.join(src, f), os.path.join(dst, f))
    os.rmdir(src)
    vmid = host.register(host.host_path(os.path.join(dst, name + ".vmx")))
    if power == "on":
        host.power_on(vmid)
    return vmid


def test_vms_of_one_folder_powered_down_at_once_each_come_back_after_a_kill(host, tmp_path):
    """x1, x2 and x3 share a folder; x3 is off on purpose. x1 and x2 are powered down for their
    backups at once; x1 finishes (and is on again) while x2 is still off and copying; the run is
    killed. Cleanup must power x2 on (x1's end must not have erased the record that x2 is ours to
    power on) and leave x3 off (x2's record is not x3's)."""
    x1 = host.create_vm("x1", "datastore1", [{"size": "1M"}], power="on")
    x2 = _second_vm_in_folder_of(host, x1, "x2")
    x3 = _second_vm_in_folder_of(host, x1, "x3", power="off")
    conf = write_conf(host, BACKUP_PARALLEL=2, POWER_VM_DOWN_BEFORE_BACKUP=1, ENABLE_HARD_POWER_OFF=1,
                      ITER_TO_WAIT_SHUTDOWN="5s")
    host.set_faults(**{"clone.delay": "60", "clone.match": "x2"})
    proc = hotvcb_background(host, "-m", "x1", "-m", "x2", "-g", conf, "-w", tmp_path / "w")
    wait_for(lambda: sealed(host, "x1") and host.power_state(x1) == "on" and host.power_state(x2) == "off"
             and copying(host, "x2"), timeout=60, what="x1 done and on, x2 off and copying")
    kill(lock_pid(host), signal.SIGKILL)
    proc.communicate(timeout=60)
    _end_orphaned_clones(host)
    host.clear_faults()
    r = hotvcb(host, "cleanup", "-g", conf)
    _no_traceback(r.stdout + r.stderr)
    assert host.power_state(x2) == "on", "the killed run's x2 stays off:\n" + r.stdout + r.stderr
    assert host.power_state(x3) == "off", "cleanup powered on a VM the admin had switched off:\n" + r.stdout
    assert host.power_state(x1) == "on"


def _running_clones(host):
    """This host's `vmkfstools -i` processes (pids from its process log) that still run."""
    ended = {r["pid"] for r in proclog.read(host) if r["tool"] == "vmkfstools" and r["event"] == "end"}
    alive = []
    for pid in {r["pid"] for r in _clone_starts(host)} - ended:
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                if b"vmkfstools" in f.read():
                    alive.append(pid)
        except OSError:
            pass
    return alive


def _end_orphaned_clones(host):
    """A killed run's vmkfstools go on by themselves (as on a host); these tests do not need them."""
    for pid in _running_clones(host):
        kill(pid, signal.SIGKILL)


def test_two_vms_of_one_folder_snapshotted_at_once_both_back_up(host, tmp_path):
    """x1 and x2 share a folder and are backed up hot at once: x1's delta is not x2's (x2's
    pre-flight must not refuse it for "delta files"), and x2's live delta is not a sign that x1's
    consolidation is unfinished (x1 must not wait out SNAPSHOT_REMOVE_TIMEOUT and be discarded)."""
    x1 = host.create_vm("x1", "datastore1", [{"size": "1M"}], power="on")
    x2 = _second_vm_in_folder_of(host, x1, "x2")
    conf = write_conf(host, BACKUP_PARALLEL=2, SNAPSHOT_REMOVE_TIMEOUT="2s")
    host.set_faults(**{"clone.delay": "5", "clone.match": "x2"})
    r = hotvcb(host, "-a", "-g", conf, "-w", tmp_path / "w")
    _no_traceback(r.stdout + r.stderr)
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(sealed(host, "x1")) == len(sealed(host, "x2")) == 1
    assert ours(host, x1) == ours(host, x2) == []


# -- 8. SSH mode: SIGTERM with three copies running over the one connection ----------------------

@needs_sshd
def test_sigterm_over_ssh_stops_every_remote_copy_and_removes_every_snapshot(host, tmp_path):
    made = _vms(host, (("s1", "datastore1"), ("s2", "datastore1"), ("s3", "ds5")), size="1M")
    conf = write_conf(host, BACKUP_PARALLEL=3)
    host.set_fault("clone.delay", "120")
    env = dict(os.environ, PYTHONPATH=REPO)
    with host_sshd(host, tmp_path / "sshd") as sshd:
        proc = subprocess.Popen([sys.executable, "-m", "hotvcb"] + sshd.cli_args() + ["backup", "-a", "-g", conf],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO)
        wait_for(lambda: len(_clone_starts(host)) == 3, timeout=60, what="three remote copies")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    _no_traceback(out)
    assert proc.returncode == 2, out
    assert all(ours(host, vmid) == [] for vmid in made.values()), out
    assert _running_clones(host) == [], "a remote copy goes on after the run ended"
    assert all(sealed(host, n) == [] and not [b for b in backups(host, n) if b.endswith("-partial")] for n in made), (
        {n: backups(host, n) for n in made}, out)
