"""BACKUP_PARALLEL (issue 13, item 6) end to end: several VMs at once on a simulated ESXi host.

How many copies ran at once is read from esxisim's process log (the order in which the
`vmkfstools -i` calls started and ended), never from timing.
"""

import os
import re
import signal
import subprocess
import sys

from esxisim import proclog, writer
from simhost import (backup_root, backups, copying, hotvcb, hotvcb_background, kill, lock_pid, needs_root,
                     ours, sealed, wait_for)
from simhost import REPO, write_conf
from sshd import needs_sshd
from sshsite import host_sshd

pytestmark = needs_root

FOUR = (("a1", "datastore1"), ("a2", "datastore1"), ("a3", "datastore1"), ("b1", "ds5"))  # list order


def _vms(host, vms=FOUR, size="8M", writers=True):
    """VMs named after their datastore, powered on with a writing guest; their disks before it wrote."""
    made = {}
    for name, ds in vms:
        vmid = host.create_vm(name, ds, [{"size": size}])
        made[name] = (vmid, {n: bytearray(host.read_disk(p)) for n, p, _m in host.vm_disks(vmid)})
        host.power_on(vmid)
        if writers:
            writer.start(host, vmid)
    return made


def _list_file(host, names):
    path = os.path.join(host.root, "vms.txt")
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(n + "\n" for n in names))
    return path


def _clones(host, since=0):
    """The backup copies (`vmkfstools -i`) in the process log, from record `since` on."""
    return [r for r in proclog.read(host)[since:] if r["tool"] == "vmkfstools" and r["args"][:1] == ["-i"]]


def _datastore(record):
    return record["args"][1].split("/")[3]  # -i /vmfs/volumes/<datastore>/<vm>/<disk>.vmdk


def _table(out):
    """(VM, RESULT) rows of the run's per-VM table, in its order."""
    lines = out.splitlines()
    start = next(i for i, l in enumerate(lines) if re.search(r"-- info: VM +RESULT", l))
    rows = []
    for line in lines[start + 1:]:
        m = re.search(r"-- info: (\S+) +(OK|WARN|ERROR|SKIPPED) ", line)
        if not m:
            break
        rows.append(m.groups())
    return rows


def _assert_holds_the_snapshot_instant(host, tmp_path, vm, initial):
    log = host.writer_log(vm)
    i = next(k for k, rec in enumerate(log) if rec["event"] == "snapshot.create")
    frozen = writer.apply_writes({n: bytearray(b) for n, b in initial.items()}, log, until=i)
    [entry] = sealed(host, vm)
    [node] = frozen
    raw = tmp_path / (vm + ".raw")
    raw.write_bytes(bytes(frozen[node]))
    disk = os.path.join(backup_root(host, vm), entry, vm + ".vmdk")
    cmp = subprocess.run(["qemu-img", "compare", "-f", "vmdk", "-F", "raw", disk, str(raw)], capture_output=True,
                         text=True)
    assert cmp.returncode == 0, vm + ": " + cmp.stdout + cmp.stderr


def test_three_at_once_over_two_datastores_all_good_and_one_at_a_time_as_before(host, tmp_path):
    made = _vms(host)
    names = [n for n, _ds in FOUR]
    vms = _list_file(host, names)
    conf = write_conf(host, BACKUP_PARALLEL=3, BACKUP_PARALLEL_PER_DATASTORE=2)
    host.set_fault("clone.delay", "4")  # copies long enough to overlap, whatever the machine's load
    r = hotvcb(host, "-f", vms, "-g", conf, "-w", tmp_path / "w")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "###### Final status: All VMs backed up OK! ######" in r.stdout

    clones = _clones(host)
    assert len([c for c in clones if c["event"] == "start"]) == 4
    at_once = proclog.most_at_once(clones)
    assert 2 <= at_once <= 3, "up to BACKUP_PARALLEL copies at once, and more than one"
    for ds in ("datastore1", "ds5"):
        assert proclog.most_at_once(clones, lambda c: _datastore(c) == ds) <= 2, ds
    # a1 and a2 take datastore1's two slots: b1 goes ahead of a3, which waits for one of them
    assert re.findall(r"Initiate backup for (\S+)", r.stdout)[-1] == "a3"

    # one log: every line a worker wrote names its VM; the report keeps the list's order
    lines = r.stdout.splitlines()
    first = next(i for i, l in enumerate(lines) if "Backing up 4 VMs, up to 3 at a time and at most 2 per datastore" in l)
    table = next(i for i, l in enumerate(lines) if re.search(r"-- info: VM +RESULT", l))
    workers = lines[first + 1:table]
    assert workers and all(re.match(r"\S+ \S+ -- \w+: \[(a1|a2|a3|b1)\] ", l) for l in workers), workers
    assert _table(r.stdout) == [(n, "OK") for n in names]

    for name, (vmid, initial) in made.items():
        writer.stop(host, vmid)
        _assert_holds_the_snapshot_instant(host, tmp_path, name, initial)
        assert ours(host, vmid) == []

    # N=1 (the flag overrides the file): one VM after the other, in list order, lines as before
    host.clear_faults()
    since = len(proclog.read(host))
    r = hotvcb(host, "-m", "b1", "-m", "a1", "-g", conf, "-w", tmp_path / "w", "--parallel", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert proclog.most_at_once(_clones(host, since)) == 1
    assert not re.search(r" -- \w+: \[", r.stdout) and "at a time" not in r.stdout
    assert re.findall(r"Initiate backup for (\S+)", r.stdout) == ["b1", "a1"]
    assert [len(sealed(host, n)) for n in names] == [2, 1, 1, 2]


def _copying(host, since):
    """The VMs whose copy (started from process-log record `since` on) is running now."""
    clones = _clones(host, since)
    ended = {c["pid"] for c in clones if c["event"] == "end"}
    return [c["args"][1].split("/")[4] for c in clones if c["event"] == "start" and c["pid"] not in ended]


def _three_copying(host, proc):
    """Once three copies of the run `proc` run at once: their VMs."""
    since = len(proclog.read(host))
    wait_for(lambda: len(_copying(host, since)) == 3, timeout=90, what="three copies at once")
    assert proc.poll() is None
    return _copying(host, since)


def test_kill_9_then_sigterm_mid_run_leave_no_snapshot(host, tmp_path):
    """kill -9 with three VMs copying leaves three snapshots; the next run removes them first,
    and a SIGTERM while it copies three again removes every snapshot it made and starts no
    further VM."""
    made = _vms(host, size="4M")
    vms = _list_file(host, [n for n, _ds in FOUR])
    conf = write_conf(host, BACKUP_PARALLEL=3)
    host.set_fault("clone.delay", "60")
    proc = hotvcb_background(host, "-f", vms, "-g", conf, "-w", tmp_path / "w")
    _three_copying(host, proc)
    kill(lock_pid(host), signal.SIGKILL)
    proc.communicate(timeout=60)
    assert sum(bool(ours(host, vmid)) for vmid, _i in made.values()) == 3, "SIGKILL leaves three snapshots"
    _end_orphaned_clones(host)

    proc = hotvcb_background(host, "-f", vms, "-g", conf, "-w", tmp_path / "w")
    copying_now = _three_copying(host, proc)
    assert all(len(ours(host, made[n][0])) == 1 for n in copying_now), "the dead run's snapshots are gone"
    kill(lock_pid(host), signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2, out
    assert len(re.findall(r"found leftover snapshot", out)) == 3
    assert "###### Final status: ERROR: interrupted by SIGTERM ######" in out
    for name, (vmid, _initial) in made.items():
        assert ours(host, vmid) == [], name
        assert not [b for b in backups(host, name) if b.endswith("-partial")], name
        assert sealed(host, name) == [], "nothing half-copied looks complete"
    (left,) = set(made) - set(copying_now)
    assert "Initiate backup for %s" % left not in out, "no VM starts after the signal"
    assert sorted(_table(out)) == sorted((n, "ERROR") for n in copying_now)
    for vmid, _initial in made.values():
        writer.stop(host, vmid)


def _end_orphaned_clones(host):
    """The killed run's vmkfstools go on by themselves (as on a host); this test does not need them."""
    ended = {r["pid"] for r in _clones(host) if r["event"] == "end"}
    for pid in {r["pid"] for r in _clones(host) if r["event"] == "start"} - ended:
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                if b"vmkfstools" in f.read():
                    kill(pid, signal.SIGKILL)
        except OSError:
            pass


def test_target_filling_while_three_copy_fails_those_three_cleanly(host, tmp_path):
    made = _vms(host, (("fast", "datastore1"), ("slow-a", "datastore1"), ("slow-b", "ds5"), ("slow-c", "ds5")),
                size="8M", writers=False)
    conf = write_conf(host, BACKUP_PARALLEL=3)
    host.set_faults(**{"clone.delay": "40", "clone.match": "slow"})  # a failure shows within 5 s
    proc = hotvcb_background(host, "-f", _list_file(host, list(made)), "-g", conf, "-w", tmp_path / "w")
    slow = [n for n in made if n.startswith("slow")]
    wait_for(lambda: sealed(host, "fast") and all(copying(host, n) for n in slow), timeout=90,
             what="fast backed up and three slow copies at once")
    with open(host.real("/vmfs/volumes/backup/someone-elses-file"), "wb") as f:  # the target fills up
        os.posix_fallocate(f.fileno(), 0, host.ds_free("backup") + (1 << 20))
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 4, out
    assert "###### Final status: ERROR: Only some of the VMs backed up! ######" in out
    assert _table(out) == [("fast", "OK"), ("slow-a", "ERROR"), ("slow-b", "ERROR"), ("slow-c", "ERROR")]
    for name in slow:
        vmid = made[name][0]
        assert ours(host, vmid) == [], name
        [entry] = backups(host, name)
        folder = os.path.join(backup_root(host, name), entry)
        assert os.path.exists(os.path.join(folder, "STATUS.error")), entry
        assert not [f for f in os.listdir(folder) if f.endswith(".vmdk")], "no half-written disk is kept"
        assert "not enough space" in open(os.path.join(folder, "STATUS.error")).read()
    assert len(sealed(host, "fast")) == 1


def test_copies_to_one_target_reserve_its_space_against_each_other(host, tmp_path):
    """Room for two backups, three VMs at once: two copy, the third waits for them and then fails
    before any change (no snapshot, no folder), as one at a time would; counting the same free
    bytes three times would start three copies and fail them half-way."""
    made = _vms(host, (("r1", "datastore1"), ("r2", "ds5"), ("r3", "ds5")), size="16M", writers=False)
    needed = max(os.lstat(host.real(p)).st_blocks * 512 for vmid, _i in made.values()
                 for _n, p, _m in host.vm_disks(vmid) for p in (p, p[:-5] + "-flat.vmdk"))
    with open(host.real("/vmfs/volumes/backup/someone-elses-file"), "wb") as f:
        os.posix_fallocate(f.fileno(), 0, host.ds_free("backup") - int(2.5 * needed))
    host.set_fault("clone.delay", "3")
    r = hotvcb(host, "-a", "-g", write_conf(host, BACKUP_PARALLEL=3), "-w", tmp_path / "w")
    assert r.returncode == 4, r.stdout + r.stderr
    assert re.search(r"\[(r\d)\] r\d: waiting for room on /vmfs/volumes/backup/hotvcb: needs .* promised to VMs",
                     r.stdout), r.stdout
    done = [n for n in made if sealed(host, n)]
    (failed,) = set(made) - set(done)
    assert len(done) == 2 and re.search(r"\[%s\] %s: %s needs .* but only .* is free" % ((failed,) * 3), r.stdout), \
        r.stdout
    assert backups(host, failed) == [] and not [c for c in proclog.read(host) if c["tool"] == "vim-cmd" and c["args"][:2]
                                                == ["vmsvc/snapshot.create", made[failed][0]]]
    assert len([c for c in _clones(host) if c["event"] == "start"]) == 2


def test_shutdown_and_startup_order_stay_around_the_parallel_part(host, tmp_path):
    """VM_SHUTDOWN_ORDER goes down before the first copy and VM_STARTUP_ORDER comes back after the
    last; POWER_VM_DOWN_BEFORE_BACKUP powers its VM down and up inside that VM's own backup."""
    made = _vms(host, (("p1", "datastore1"), ("p2", "ds5"), ("p3", "ds5")), size="4M", writers=False)
    vmids = {name: vmid for name, (vmid, _i) in made.items()}
    confdir = tmp_path / "per-vm"
    confdir.mkdir()
    (confdir / "p3").write_text("POWER_VM_DOWN_BEFORE_BACKUP=1\n")
    conf = write_conf(host, BACKUP_PARALLEL=3, VM_SHUTDOWN_ORDER="p2,p1", VM_STARTUP_ORDER="p1,p2")
    r = hotvcb(host, "-a", "-g", conf, "-c", confdir, "-w", tmp_path / "w")
    assert r.returncode == 0, r.stdout + r.stderr
    calls = [c for c in proclog.read(host) if c["event"] == "start"]

    def at(verb, name):
        return [i for i, c in enumerate(calls) if c["args"][:2] == ["vmsvc/" + verb, vmids[name]]]

    clones = [i for i, c in enumerate(calls) if c["tool"] == "vmkfstools" and c["args"][:1] == ["-i"]]
    assert len(clones) == 3
    assert at("power.shutdown", "p2") < at("power.shutdown", "p1") and at("power.shutdown", "p1")[0] < clones[0]
    assert clones[-1] < at("power.on", "p1")[0] < at("power.on", "p2")[0]
    [down], [up] = at("power.shutdown", "p3"), at("power.on", "p3")
    assert at("power.shutdown", "p1")[0] < down < up < at("power.on", "p1")[0], "p3: down and up in its own backup"
    assert all(host.power_state(vmid) == "on" and len(sealed(host, n)) == 1 for n, vmid in vmids.items())


@needs_sshd
def test_three_at_once_over_ssh(host, tmp_path):
    """SSH mode: every worker's host commands are sessions of the one multiplexed connection."""
    made = _vms(host, (("s1", "datastore1"), ("s2", "datastore1"), ("s3", "ds5")), size="4M", writers=False)
    conf = write_conf(host, BACKUP_PARALLEL=3)
    host.set_fault("clone.delay", "4")
    env = dict(os.environ, PYTHONPATH=REPO)
    with host_sshd(host, tmp_path / "sshd") as sshd:
        r = subprocess.run([sys.executable, "-m", "hotvcb"] + sshd.cli_args() + ["backup", "-a", "-g", conf],
                           capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert r.returncode == 0, r.stdout + r.stderr
    assert proclog.most_at_once(_clones(host)) >= 2
    assert all(len(sealed(host, n)) == 1 and ours(host, vmid) == [] for n, (vmid, _i) in made.items())
