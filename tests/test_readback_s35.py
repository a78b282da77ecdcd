"""Review of s34/s35: a read-only run judges another host's folder by no clock of this machine's, one
await_snapshot_removal for the local KVM drivers, a signal's status read in both its forms."""

from hotvcb.localshell import LocalShell


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
