"""Session 35's cleanup of VMs the host no longer has, on ESXi (esxisim): the walk over the host's VMs shared by
every driver (jobs/host_cleanup.py) never looked in a backup folder whose VM was gone, so a killed run's `-partial`
folder of a VM unregistered since stayed for good (the libvirt case: tests/test_outsider_s35libvirt.py)."""

import signal

from simhost import backups, copying, hotvcb, hotvcb_background, kill, lock_pid, needs_root, wait_for, write_conf
from test_known_s33k3 import _copies_into


@needs_root
def test_a_killed_runs_partial_of_a_vm_unregistered_since_is_removed_by_cleanup(host, tmp_path):
    """The run is killed -9 mid-copy (host crash, OOM); the admin then unregisters the VM (moved to another
    host, or retired) and runs `hotvcb cleanup`: the dead run's `-partial` folder (half a backup on the backup
    volume) must go in that one run, counted, and the VM's good backups stay. A second cleanup finds nothing."""
    vm = "retired"
    vmid = str(host.create_vm(vm, "datastore1", [{"size": "8M"}], power="on"))
    conf = write_conf(host)
    work = str(tmp_path / "w")
    r = hotvcb(host, "-m", vm, "-g", conf, "-w", work)
    assert r.returncode == 0, r.stdout + r.stderr
    [good] = backups(host, vm)
    host.set_fault("clone.delay", "1000")
    proc = hotvcb_background(host, "-m", vm, "-g", conf, "-w", work)
    try:
        wait_for(lambda: copying(host, vm) and lock_pid(host), what="the copy")
        (partial,) = [b for b in backups(host, vm) if b.endswith("-partial")]
        kill(lock_pid(host), signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        kill(proc.pid)
        for pid in _copies_into(partial):
            kill(pid)
        host.clear_faults()
    host.power_off(vmid)  # hostd unregisters no VM that runs
    host.unregister(vmid)
    r = hotvcb(host, "cleanup", "-g", conf, "-w", work)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stdout + r.stderr
    assert backups(host, vm) == [good], r.stdout + r.stderr
    assert "removing unfinished backup" in r.stdout + r.stderr, r.stdout + r.stderr
    r = hotvcb(host, "cleanup", "-g", conf, "-w", work)
    assert r.returncode == 0 and "0 leftover(s)" in r.stdout + r.stderr, r.stdout + r.stderr
