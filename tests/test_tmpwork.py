"""The work folders `restore --kvm`, `verify --boot` and an SSH connection make in /tmp (hotvcb/tmpwork.py): a SIGKILLed
run cannot remove its own, so the next run removes those of processes that are gone, and nothing
else: not a live run's (told by pid and start time, so not one whose pid was reused), not one of
another pid namespace, not what a planted entry of that name leads to. Dead runs are planted by
name, as a kill -9 leaves them; a temp folder of the test's own; no host."""

import io
import os
import subprocess
import tempfile

import pytest

from hotvcb import pids, sshconnection, tmpwork
from hotvcb.errors import HostError, HotvcbError
from hotvcb.jobs import boot_check
from hotvcb.jobs.restore_kvm import WORK_PREFIX, KvmRequest, KvmRestore
from hotvcb.localshell import LocalShell
from hotvcb.runlog import RunLog
from hotvcb.sshconnection import SshTarget
from hotvcb.sshshell import SshShell
from qemuvm import needs_qemu
from test_outsider_crosshv import esxi_backup


@pytest.fixture
def tmp(tmp_path, monkeypatch):
    """The temp folder the runs use; a helper that plants a work folder there: (its path, names in it)."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))

    def plant(name, files=("disk.vmdk",), owner=None):
        folder = root / name
        folder.mkdir()
        for f in files:
            (folder / f).write_text("x")
        if owner is not None:
            (folder / tmpwork.OWNER).write_text(owner)
        return folder

    return root, plant


def tags(prefix):
    """Folders as tmpwork.make names them after `prefix`, to plant as ours, {name: its .owner}: a gone
    process's, a live one of this process (made by make: planted already), this pid's under another start
    time, a dead pid's of another pid namespace; and the four names in that order."""
    live = tmpwork.make(prefix)
    with open(os.path.join(live, tmpwork.OWNER)) as f:
        start, ns, offset = (int(n) for n in f.read().split())
    assert (start, ns) == (pids.started(os.getpid()), pids.namespace())
    assert len(os.path.basename(live)) <= len(prefix) + 7 + 1 + 8  # pid, "-", mkdtemp's: fits a socket path
    p = subprocess.Popen(["true"])
    p.wait()
    owned = {
        "%s%d-gone1234" % (prefix, p.pid): "%d %d %d" % (start, ns, offset),
        os.path.basename(live): None,
        "%s%d-reused12" % (prefix, os.getpid()): "%d %d %d" % (start - 1, ns, offset),
        "%s%d-otherns1" % (prefix, p.pid): "%d %d %d" % (start, ns + 1, offset),
    }
    return owned, list(owned)


@needs_qemu
def test_a_kvm_restore_removes_a_killed_ones_vmdk_copies_from_tmp_and_leaves_none(tmp, tmp_path):
    root, plant = tmp
    owned, (gone, live, reused, other_ns) = tags(WORK_PREFIX)
    for name in (gone, reused, other_ns):
        plant(name, owner=owned[name])
    (root / live / "disk.vmdk").write_text("x")
    plant(WORK_PREFIX + "x1y2z3ab")  # an older hotvcb's, named by nothing: cannot be told
    backup = esxi_backup(tmp_path / "volume", "web")  # its descriptor is read through a copy in /tmp
    out = tmp_path / "kvm"
    out.mkdir()
    KvmRestore(LocalShell(), RunLog(stream=io.StringIO())).run(KvmRequest(backup, str(out)))
    assert sorted(os.listdir(str(out))) == ["web"]
    assert sorted(os.listdir(str(root))) == sorted([live, other_ns, WORK_PREFIX + "x1y2z3ab"])
    assert sorted(os.listdir(str(root / live))) == [tmpwork.OWNER, "disk.vmdk"]


def test_a_smoke_boot_empties_a_killed_ones_folder_but_its_console_log_and_nothing_a_planted_link_names(
        tmp, tmp_path):
    """The folder of a hotvcb whose pid this process now has is a dead one's too; a link planted in /tmp
    under a dead run's name must not have root empty what it leads to."""
    root, plant = tmp
    owned, (gone, live, reused, _other_ns) = tags(boot_check.WORK_PREFIX)
    victim = tmp_path / "etc"
    victim.mkdir()
    (victim / "passwd").write_text("root")
    os.symlink(str(victim), str(root / gone))
    older = gone.rsplit("-", 1)[0] + "-olderrun"  # an older hotvcb's, no .owner: its pid alone
    plant(reused, ("disk0.qcow2", boot_check.CONSOLE), owner=owned[reused])
    plant(older, ("disk0.qcow2", boot_check.CONSOLE))
    for name in ("disk0.qcow2", boot_check.CONSOLE):
        (root / live / name).write_text("x")
    plain = tmp_path / "restored"  # no backup: a folder restore --kvm wrote, read after the sweep
    plain.mkdir()
    with pytest.raises(HotvcbError):
        boot_check.smoke_boot(LocalShell(), str(plain), lambda _line: None)
    assert os.listdir(str(victim)) == ["passwd"]
    for name in (reused, older):
        assert os.listdir(str(root / name)) == [boot_check.CONSOLE]
    assert sorted(os.listdir(str(root / live))) == [tmpwork.OWNER, boot_check.CONSOLE, "disk0.qcow2"]
    assert len(os.listdir(str(root))) == 4  # and the smoke boot's own, gone


def test_an_ssh_connection_removes_a_killed_runs_socket_folder(tmp, monkeypatch):
    """Its master's socket and error output, kept by nothing once its run is gone; removed even by a
    connection that then fails (no ssh client here), which leaves none of its own."""
    root, plant = tmp
    owned, (gone, live, _reused, _other_ns) = tags(sshconnection.WORK_PREFIX)
    plant(gone, ("master.err",), owner=owned[gone])
    monkeypatch.setattr(sshconnection, "SSH", str(root / "no-ssh"))
    with pytest.raises(HostError, match="cannot run .*no-ssh"):
        SshShell(SshTarget("root@esxi01")).open()
    assert os.listdir(str(root)) == [live]


def test_cleanup_kvm_removes_a_killed_restores_work_folder_and_a_dry_run_only_names_it(tmp, tmp_path, capsys):
    """A machine that restored once after a disaster may never run another restore --kvm to sweep what a
    killed one left in /tmp: `cleanup --kvm DIR` does, counts it, and its dry run changes nothing."""
    from hotvcb.cli import main

    root, plant = tmp
    owned, (gone, live, reused, other_ns) = tags(WORK_PREFIX)
    for name in (gone, reused, other_ns):
        plant(name, owner=owned[name])
    target = tmp_path / "kvm"
    target.mkdir()
    assert main(["cleanup", "--kvm", str(target), "-d", "dryrun"]) == 0
    out = capsys.readouterr().out  # (named, not counted: the count is DIR's, and these may be another DIR's)
    assert "cleanup: 0 leftover(s) found" in out and "would remove %s" % (root / gone) in out, out
    assert sorted(os.listdir(str(root))) == sorted([gone, live, reused, other_ns])
    assert main(["cleanup", "--kvm", str(target)]) == 0
    out = capsys.readouterr().out
    assert "removed %s" % (root / gone) in out and "removed %s" % (root / reused) in out, out
    assert sorted(os.listdir(str(root))) == sorted([live, other_ns])
