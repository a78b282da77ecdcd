"""In-guest hooks (issue 13 item 5): GUEST_PRE_BACKUP_HOOK / GUEST_POST_BACKUP_HOOK.

QEMU runs them through the guest agent. The test VM has no guest OS (the
firmware idles), so the real qemu-ga runs on this machine, listening on the
socket where QEMU would expose the guest's agent port (`<inventory>/<VM>.qga`):
the protocol, guest-exec and its output capture are the real agent's; only
"inside the guest" is this machine. ESXi refuses the keys before any change.
"""

import os
import shutil
import signal
import subprocess
import time

import pytest

from qemuvm import (QemuVm, env, hotvcb_argv, kill_tree, make_initial, needs_qemu, short_dir, slow_qemu_img,
                    wait_until)
from simhost import backups, hotvcb, needs_root, snapshot_names, write_conf

QGA = shutil.which("qemu-ga") or ("/usr/sbin/qemu-ga" if os.path.exists("/usr/sbin/qemu-ga") else None)
needs_agent = pytest.mark.skipif(QGA is None, reason="needs qemu-ga (scripts/install-test-deps)")
MiB = 1 << 20
VM = "app 1"


@pytest.fixture
def lab(tmp_path):
    sockets = short_dir("hg")
    inventory, control = os.path.join(sockets, "inv"), os.path.join(sockets, "ctl")
    for d in (inventory, control, str(tmp_path / "state")):
        os.makedirs(d)
    image = str(tmp_path / "app.img")
    make_initial(image, 8 * MiB, 4 * MiB)
    vm = QemuVm(VM, image, "raw", inventory, control, str(tmp_path / "qemu.log"))
    agent = None
    trace = str(tmp_path / "trace")

    def conf(**keys):
        values = {"VM_BACKUP_VOLUME": str(tmp_path / "backups"), "DISK_BACKUP_FORMAT": "thin",
                  "CREATE_VM_BACKUP_VOLUME": "1"}
        values.update(keys)
        path = str(tmp_path / "hotvcb.conf")
        with open(path, "w") as f:
            f.write("".join("%s=%s\n" % kv for kv in values.items()))
        return path

    def argv(**keys):
        return hotvcb_argv(inventory, "backup", "-m", VM, "-g", conf(**keys), "-w", str(tmp_path / "w"))

    def run(**keys):
        r = subprocess.run(argv(**keys), capture_output=True, text=True, timeout=120, env=env())
        r.out = r.stdout + r.stderr
        return r

    def start(log, **keys):
        """In the background, its copy slowed to seconds."""
        with open(log, "w") as out:
            return subprocess.Popen(argv(**keys), stdout=out, stderr=subprocess.STDOUT,
                                    env=env(slow_qemu_img(str(tmp_path / "bin"), "1M")))

    def start_agent():
        nonlocal agent
        sock = os.path.join(inventory, VM + ".qga")
        agent = subprocess.Popen([QGA, "-m", "unix-listen", "-p", sock, "-t", str(tmp_path / "state")],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: os.path.exists(sock), 10, "the guest agent's socket")

    def lines():
        return open(trace).read().splitlines() if os.path.exists(trace) else []

    def overlays():
        return [f for f in os.listdir(str(tmp_path)) if "hotvcb-snapshot" in f]

    lab = type("Lab", (), dict(run=staticmethod(run), start=staticmethod(start), start_agent=staticmethod(start_agent), trace=trace,
                               lines=staticmethod(lines), overlays=staticmethod(overlays),
                               backups=str(tmp_path / "backups" / VM)))
    try:
        yield lab
    finally:
        if agent is not None:
            agent.kill()
            agent.wait(10)
        vm.kill()
        shutil.rmtree(sockets, ignore_errors=True)


def _hook(trace, tag):
    return "echo %s $HOTVCB_PHASE $HOTVCB_RESULT \"$HOTVCB_VM\" >> %s" % (tag, trace)


@needs_qemu
@needs_agent
def test_guest_hooks_run_inside_between_the_host_hooks_with_the_vm_in_their_environment(lab):
    lab.start_agent()
    r = lab.run(PRE_BACKUP_HOOK=_hook(lab.trace, "host"), POST_BACKUP_HOOK=_hook(lab.trace, "host"),
                GUEST_PRE_BACKUP_HOOK=_hook(lab.trace, "guest") + "; echo flushed the app",
                GUEST_POST_BACKUP_HOOK=_hook(lab.trace, "guest"))
    assert r.returncode == 0, r.out
    assert lab.lines() == ["host pre %s" % VM, "guest pre %s" % VM, "guest post ok %s" % VM,
                           "host post ok %s" % VM]
    assert "%s: in-guest pre-hook: flushed the app" % VM in r.out
    out = r.out
    assert out.index("running the in-guest pre-backup hook") < out.index("Creating Snapshot") < out.index(
        "running the in-guest post-backup hook")
    assert lab.overlays() == []


@needs_qemu
@needs_agent
def test_a_failing_guest_pre_hook_skips_the_vm_and_the_host_post_hook_still_runs(lab):
    lab.start_agent()
    r = lab.run(GUEST_PRE_BACKUP_HOOK="echo database busy; exit 4", POST_BACKUP_HOOK=_hook(lab.trace, "host"),
                GUEST_POST_BACKUP_HOOK=_hook(lab.trace, "guest"))
    assert r.returncode == 6, r.out
    assert "in-guest pre-backup hook of %s failed (exit 4): database busy" % VM in r.out
    assert lab.lines() == ["host post error %s" % VM], "the guest's post-hook only follows its pre-hook"
    assert "Creating Snapshot" not in r.out and lab.overlays() == []
    assert not os.path.isdir(lab.backups) or not os.listdir(lab.backups)


@needs_qemu
@needs_agent
def test_sigterm_during_the_copy_still_runs_the_guest_post_hook_then_the_hosts(lab, tmp_path):
    lab.start_agent()
    log = str(tmp_path / "run.log")
    proc = lab.start(log, PRE_BACKUP_HOOK=_hook(lab.trace, "host"), POST_BACKUP_HOOK=_hook(lab.trace, "host"),
                     GUEST_PRE_BACKUP_HOOK=_hook(lab.trace, "guest"), GUEST_POST_BACKUP_HOOK=_hook(lab.trace, "guest"))
    try:
        wait_until(lambda: "Backing up" in open(log).read(), 30, "the copy")
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(60)
    finally:
        if proc.poll() is None:
            kill_tree(proc.pid)
    out = open(log).read()
    assert rc == 2 and "interrupted by SIGTERM" in out, out
    assert lab.lines() == ["host pre %s" % VM, "guest pre %s" % VM, "guest post error %s" % VM,
                           "host post error %s" % VM]
    assert lab.overlays() == []


@needs_qemu
@needs_agent
def test_a_hanging_guest_hook_is_bounded_by_hook_timeout(lab):
    lab.start_agent()
    t0 = time.monotonic()
    r = lab.run(GUEST_PRE_BACKUP_HOOK="sleep 10", HOOK_TIMEOUT="2s")
    assert r.returncode == 6, r.out
    assert "in-guest pre-backup hook of %s: timed out after 2s" % VM in r.out and "may still run" in r.out, r.out
    assert time.monotonic() - t0 < 10, "the run did not wait for the hook"
    assert lab.overlays() == []


@needs_qemu
def test_no_agent_in_the_guest_is_a_clear_error_before_any_change(lab):
    r = lab.run(GUEST_PRE_BACKUP_HOOK="true")
    assert r.returncode == 6, r.out
    assert "no guest agent here" in r.out and "org.qemu.guest_agent.0" in r.out
    assert "Traceback" not in r.out and "Creating Snapshot" not in r.out


@needs_root
def test_esxi_refuses_guest_hooks_before_any_change(host):
    vmid = host.create_vm("tools vm", "datastore1", [{"size": "4M"}], power="on")
    r = hotvcb(host, "-m", "tools vm", "-g", write_conf(host, GUEST_PRE_BACKUP_HOOK="sync"))
    assert r.returncode == 6, r.stdout + r.stderr
    assert "vim-cmd cannot run guest commands" in r.stdout
    assert snapshot_names(host, vmid) == [] and backups(host, "tools vm") == []
