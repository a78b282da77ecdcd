"""Testers' notes (session 32) pinned through the public command line on esxisim: a host whose hostd does
not answer, the multiextent module for a snapshot over a 2gbsparse disk, a restored VM's independent disk
on another datastore, a template named like a VM in `-a`, and the copy's silence limit for huge disks."""

from simhost import hotvcb, needs_root, write_conf


# -- 1. hostd down: vim-cmd says so and exits 0 ---------------------------------------------------------------

@needs_root
def test_all_vms_with_hostd_down_names_the_management_agent_and_fails(host, tmp_path):
    """hostd stopped or restarting: every vim-cmd prints "Connect to localhost failed: Connection failure"
    and (often) exits 0. `-a` read that as an empty inventory and ended "No VMs backed up", exit 0-ish, with
    no word of why. The admin must read that the host's management agent did not answer, and the run fail."""
    host.create_vm("app", "datastore1", [{"size": "1M"}], power="on")
    host.set_fault("hostd", "down")
    r = hotvcb(host, "-a", "-g", write_conf(host), "-w", tmp_path / "w")
    out = r.stdout + r.stderr
    assert r.returncode not in (0, 9), out
    assert "hostd" in out and "Connect to localhost failed" in out, out
    assert "Traceback" not in out, out

