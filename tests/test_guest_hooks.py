"""In-guest hooks (issue 13 item 5): GUEST_PRE_BACKUP_HOOK / GUEST_POST_BACKUP_HOOK.

QEMU runs them through the guest agent. The VM is the test guest of
tests/kvmguest.py (a Debian kernel, a busybox initramfs, qemu-ga inside),
booted once for the file under bare QEMU with its agent's port on
`<inventory>/<VM>.qga`. Each guest hook writes one line to its own 4 KiB slot
of the guest's raw disk (/dev/vda, through the VM's block layer, then `sync`):
its environment and the guest kernel's command line, which carries a token of
this boot, so a marker can only come from inside this guest. The backup's image
says which markers were written before the snapshot; the live disk, which ones
were written at all. ESXi refuses the keys before any change.
"""

import glob
import os
import secrets
import shutil
import signal
import subprocess

import pytest

import kvmguest
from qemuvm import QemuVm, env, hotvcb_argv, kill_tree, make_initial, needs_qemu, slow_qemu_img, vm_dirs, wait_until
from simhost import backups, hotvcb, needs_root, snapshot_names, write_conf

MiB = 1 << 20
SLOT = 4096
VM = "app 1"


@pytest.fixture(scope="module")
def guest():
    root, inventory, control = vm_dirs("hg")
    image = os.path.join(root, "app.img")
    make_initial(image, 16 * MiB, 4 * MiB)  # data to copy: a slowed copy takes seconds
    boot = "hotvcb.boot=" + secrets.token_hex(4)
    vm = kvmguest.bare_qemu_guest(VM, image, inventory, control, root, boot)
    try:
        yield type("Guest", (), dict(root=root, inventory=inventory, image=image, boot=boot))
    finally:
        vm.kill()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def lab(guest, tmp_path):
    trace = str(tmp_path / "trace")
    volume = str(tmp_path / "backups")

    def argv(**keys):
        values = {"VM_BACKUP_VOLUME": volume, "DISK_BACKUP_FORMAT": "raw", "CREATE_VM_BACKUP_VOLUME": "1"}
        values.update(keys)
        conf = str(tmp_path / "hotvcb.conf")
        with open(conf, "w") as f:
            f.write("".join("%s=%s\n" % kv for kv in values.items()))
        return hotvcb_argv(guest.inventory, "backup", "-m", VM, "-g", conf, "-w", str(tmp_path / "w"))

    def run(**keys):
        r = subprocess.run(argv(**keys), capture_output=True, text=True, timeout=300, env=env())
        r.out = r.stdout + r.stderr
        return r

    def start(log, **keys):
        """In the background, its copy slowed to seconds."""
        with open(log, "w") as out:
            return subprocess.Popen(argv(**keys), stdout=out, stderr=subprocess.STDOUT,
                                    env=env(slow_qemu_img(str(tmp_path / "bin"), "1M")))

    def lines():
        return open(trace).read().splitlines() if os.path.exists(trace) else []

    def backup_disk():
        found = glob.glob(os.path.join(volume, VM, "*", "app.raw"))
        assert len(found) == 1, found
        return found[0]

    def overlays():
        return [f for f in os.listdir(guest.root) if "hotvcb-snapshot" in f]

    yield type("Lab", (), dict(run=staticmethod(run), start=staticmethod(start), trace=trace,
                               lines=staticmethod(lines), backup_disk=staticmethod(backup_disk),
                               overlays=staticmethod(overlays), backups=os.path.join(volume, VM)))


def _host_hook(trace, tag):
    return "echo %s $HOTVCB_PHASE $HOTVCB_RESULT \"$HOTVCB_VM\" >> %s" % (tag, trace)


def _guest_hook(slot, tag):
    """A guest command: one line with its environment and the kernel's command line into a slot of /dev/vda."""
    return ("printf '%%s %%s|%%s|%%s|%%s\\n' %s \"$HOTVCB_PHASE\" \"$HOTVCB_RESULT\" \"$HOTVCB_VM\" "
            "\"$(cat /proc/cmdline)\" | dd of=/dev/vda bs=%d seek=%d count=1 conv=sync,fsync 2>/dev/null && sync"
            % (tag, SLOT, slot))


def _marker(raw_image, slot, tag):
    """What the guest hook `tag` wrote into a slot of a raw image: (phase, result, VM, kernel command line), or None."""
    with open(raw_image, "rb") as f:  # the live image too: QEMU's lock keeps qemu-img out, not a reader
        f.seek(slot * SLOT)
        line = f.read(SLOT).split(b"\n")[0].decode(errors="replace")
    return tuple(line.split(" ", 1)[1].split("|")) if line.startswith(tag + " ") else None


def _cmdline(guest):
    return " ".join([kvmguest.CMDLINE, "hotvcb.idle", guest.boot])


@needs_qemu
@kvmguest.needs_guest
def test_guest_hooks_run_inside_the_guest_before_the_snapshot_and_after_it_is_gone(guest, lab):
    tag = secrets.token_hex(4)
    r = lab.run(PRE_BACKUP_HOOK=_host_hook(lab.trace, "host"), POST_BACKUP_HOOK=_host_hook(lab.trace, "host"),
                GUEST_PRE_BACKUP_HOOK=_guest_hook(0, "pre" + tag) + "; echo flushed the app",
                GUEST_POST_BACKUP_HOOK=_guest_hook(1, "post" + tag))
    assert r.returncode == 0, r.out
    pre = ("pre", "", VM, _cmdline(guest))
    assert _marker(lab.backup_disk(), 0, "pre" + tag) == pre, "the pre-hook's write is in the backup"
    assert _marker(lab.backup_disk(), 1, "post" + tag) is None, "the post-hook ran after the snapshot"
    assert _marker(guest.image, 0, "pre" + tag) == pre
    assert _marker(guest.image, 1, "post" + tag) == ("post", "ok", VM, _cmdline(guest))
    assert lab.lines() == ["host pre %s" % VM, "host post ok %s" % VM]
    assert "%s: in-guest pre-hook: flushed the app" % VM in r.out
    out = r.out
    assert (out.index("running the pre-backup hook") < out.index("running the in-guest pre-backup hook")
            < out.index("Creating Snapshot") < out.index("Removing snapshot")
            < out.index("running the in-guest post-backup hook") < out.index("running the post-backup hook")), out
    assert lab.overlays() == []


@needs_qemu
@kvmguest.needs_guest
def test_a_failing_guest_pre_hook_skips_the_vm_and_the_host_post_hook_still_runs(guest, lab):
    tag = secrets.token_hex(4)
    r = lab.run(GUEST_PRE_BACKUP_HOOK="echo database busy; exit 4", POST_BACKUP_HOOK=_host_hook(lab.trace, "host"),
                GUEST_POST_BACKUP_HOOK=_guest_hook(2, "post" + tag))
    assert r.returncode == 6, r.out
    assert "in-guest pre-backup hook of %s failed (exit 4): database busy" % VM in r.out
    assert lab.lines() == ["host post error %s" % VM]
    assert _marker(guest.image, 2, "post" + tag) is None, "the guest's post-hook only follows its pre-hook"
    assert "Creating Snapshot" not in r.out and lab.overlays() == []
    assert not os.path.isdir(lab.backups) or not os.listdir(lab.backups)


@needs_qemu
@kvmguest.needs_guest
def test_sigterm_during_the_copy_still_runs_the_guest_post_hook_then_the_hosts(guest, lab, tmp_path):
    tag = secrets.token_hex(4)
    log = str(tmp_path / "run.log")
    proc = lab.start(log, PRE_BACKUP_HOOK=_host_hook(lab.trace, "host"), POST_BACKUP_HOOK=_host_hook(lab.trace, "host"),
                     GUEST_POST_BACKUP_HOOK=_guest_hook(3, "post" + tag))
    try:
        wait_until(lambda: "Backing up" in open(log).read(), 120, "the copy")
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(120)
    finally:
        if proc.poll() is None:
            kill_tree(proc.pid)
    out = open(log).read()
    assert rc == 2 and "interrupted by SIGTERM" in out, out
    assert _marker(guest.image, 3, "post" + tag) == ("post", "error", VM, _cmdline(guest))
    assert out.index("running the in-guest post-backup hook") < out.index("running the post-backup hook"), out
    assert lab.lines() == ["host pre %s" % VM, "host post error %s" % VM]
    assert lab.overlays() == []


@needs_qemu
@kvmguest.needs_guest
def test_a_hanging_guest_hook_is_bounded_by_hook_timeout(guest, lab):
    r = lab.run(GUEST_PRE_BACKUP_HOOK="sleep 3600", HOOK_TIMEOUT="2s", POST_BACKUP_HOOK=_host_hook(lab.trace, "host"))
    assert r.returncode == 6, r.out
    assert "in-guest pre-backup hook of %s: timed out after 2s" % VM in r.out and "may still run" in r.out, r.out
    assert lab.lines() == ["host post error %s" % VM]
    assert "Creating Snapshot" not in r.out and lab.overlays() == []


@needs_qemu
def test_no_agent_in_the_guest_is_a_clear_error_before_any_change(tmp_path):
    root, inventory, control = vm_dirs("hn")
    image = str(tmp_path / "bare.img")
    make_initial(image, 8 * MiB, 1 * MiB)
    vm = QemuVm("bare", image, "raw", inventory, control, str(tmp_path / "qemu.log"))  # the firmware idles
    try:
        conf = str(tmp_path / "hotvcb.conf")
        with open(conf, "w") as f:
            f.write("VM_BACKUP_VOLUME=%s\nCREATE_VM_BACKUP_VOLUME=1\nGUEST_PRE_BACKUP_HOOK=true\n" % (tmp_path / "b"))
        r = subprocess.run(hotvcb_argv(inventory, "backup", "-m", "bare", "-g", conf, "-w", str(tmp_path / "w")),
                           capture_output=True, text=True, timeout=120, env=env())
    finally:
        vm.kill()
        shutil.rmtree(root, ignore_errors=True)
    out = r.stdout + r.stderr
    assert r.returncode == 6, out
    assert "no guest agent here" in out and "org.qemu.guest_agent.0" in out
    assert "Traceback" not in out and "Creating Snapshot" not in out


@needs_root
def test_esxi_refuses_guest_hooks_before_any_change(host):
    vmid = host.create_vm("tools vm", "datastore1", [{"size": "4M"}], power="on")
    r = hotvcb(host, "-m", "tools vm", "-g", write_conf(host, GUEST_PRE_BACKUP_HOOK="sync"))
    assert r.returncode == 6, r.stdout + r.stderr
    assert "vim-cmd cannot run guest commands" in r.stdout
    assert snapshot_names(host, vmid) == [] and backups(host, "tools vm") == []
