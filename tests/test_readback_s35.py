"""Review of s34/s35: a read-only run judges another host's folder by no clock of this machine's, one
await_snapshot_removal for the local KVM drivers, a signal's status read in both its forms."""

import os

import pytest

from hotvcb.localshell import LocalShell
from simhost import as_another_hosts_run, needs_root


def test_a_clone_whose_local_wrapper_was_killed_says_the_signal():
    """The local wrapper's sh SIGKILLed itself: subprocess gives -9, which read "vmkfstools exited with
    status -9"; qemu-img's failure read it through a second, private conversion."""
    from hotvcb import sshscripts
    from hotvcb.hosts.esxi_disks import _clone_error

    done = LocalShell().run(["sh", "-c", "kill -KILL $PPID; sleep 1"], tethered=True)
    assert done.returncode == -9
    assert sshscripts.killed_by(done.returncode) == "SIGKILL"
    assert sshscripts.killed_by(128 + 15) == "SIGTERM"
    assert [sshscripts.killed_by(s) for s in (0, 1, 127, 128, -0, 255)] == [None] * 6
    assert _clone_error("Clone: 12% done.", -9) == "vmkfstools was killed by SIGKILL at 12% without saying why"


def test_the_local_kvm_drivers_wait_for_a_removal_one_way():
    """QemuHost and LibvirtHost each held a copy of the same await_snapshot_removal; the contract
    (tests/driver_contract.py) holds what it does for every driver, LocalKvmHost the one body."""
    from hotvcb.hosts.libvirt import LibvirtHost
    from hotvcb.hosts.localkvm import LocalKvmHost
    from hotvcb.hosts.qemu import QemuHost

    assert "await_snapshot_removal" in vars(LocalKvmHost)
    assert [c.__name__ for c in (QemuHost, LibvirtHost) if "await_snapshot_removal" in vars(c)] == []


def _crashed_backup(host, monkeypatch):
    from simhost import VOLUME, hotvcb, write_conf

    host.create_vm("web", "datastore1", [{"size": "4M"}], power="on")
    conf = write_conf(host)
    monkeypatch.setenv("HOTVCB_CRASH_AT", "manifest-written")
    hotvcb(host, "backup", "-m", "web", "-g", conf)
    monkeypatch.delenv("HOTVCB_CRASH_AT")
    folder = os.path.join(host.real(VOLUME), "web")
    (partial,) = [os.path.join(folder, n) for n in os.listdir(folder) if n.endswith("-partial")]
    return conf, partial


@needs_root
@pytest.mark.parametrize("untouched, dead", [(400, False), (7200, True)])
def test_a_read_only_run_calls_another_hosts_folder_dead_only_past_a_clock_margin(host, monkeypatch, untouched,
                                                                                   dead):
    """status and `cleanup -d dryrun` write no clock probe, so they age the folder by this machine's clock: an
    NFS server lagging ours by more than STALE_AFTER (300 s) made a live, heartbeating folder "left by a run
    that died" / "would remove", which the real cleanup, probing the volume's clock, kept. Unprobed, only an
    age far past any clock lag says dead; below it: cannot tell."""
    from simhost import hotvcb

    conf, partial = _crashed_backup(host, monkeypatch)
    as_another_hosts_run(partial, untouched)
    status = hotvcb(host, "status", "-g", conf)
    dry = hotvcb(host, "cleanup", "-d", "dryrun", "-g", conf)
    said = status.stdout + status.stderr + dry.stdout + dry.stderr
    assert "Traceback" not in said, said
    assert ("left by a run that died" in status.stdout + status.stderr) == dead, said
    assert ("would remove unfinished backup /" in said) == dead, said
    assert ("cannot tell" in dry.stdout + dry.stderr) != dead, said
    assert os.path.isdir(partial)


@needs_root
@pytest.mark.parametrize("untouched, dead", [(400, False), (7200, True)])
def test_a_read_only_run_calls_a_restore_record_of_another_host_id_dead_only_past_a_clock_margin(host, untouched,
                                                                                                 dead):
    """The same for a restore's record judged by its heartbeat (another ESXi host of our hostname, sharing the
    NFS datastore): `cleanup -d dryrun` and status aged it by this machine's clock."""
    from restorerecords import dead_pid, victim, write_record
    from simhost import hotvcb, write_conf

    conf = write_conf(host)
    ds1, name = "/vmfs/volumes/datastore1", ".hotvcb-extract-7-1-abcdef"
    folder = victim(host.real(ds1 + "/" + name))
    text = "run=abcdef012345 machine=esxi01 pid=%d started=1700000000 host=idotherhost0\npath=%s/%s\n" % (
        dead_pid(), ds1, name)
    write_record(host.real(ds1 + "/" + name + ".owner"), "esxi01", 0, "", raw=text, age=untouched)
    status = hotvcb(host, "status", "-g", conf)
    dry = hotvcb(host, "cleanup", "-d", "dryrun", "-g", conf)
    said = status.stdout + status.stderr + dry.stdout + dry.stderr
    assert "Traceback" not in said, said
    assert ("left by a restore that died" in status.stdout) == dead, said
    assert ("would remove %s/%s" % (ds1, name) in dry.stdout + dry.stderr) == dead, said
    assert os.path.isdir(folder)
