"""A real QEMU VM for the QEMU driver's tests, and a guest writer.

The VM needs no kernel: with no bootable disk the firmware idles, and QEMU is
"running". It has two QMP sockets: `<inventory>/<name>.qmp`, the one hotvcb
sees, and a control socket for the test (QEMU serves one client per socket).
`write` puts one test write in through the VM's own block layer (`qemu-io` via
`human-monitor-command`), so while our overlay exists it lands there, as a
guest's would. The guest writer, which writes while hotvcb's block jobs run,
writes instead through a writable NBD export of the disk's node served by the
same QEMU: that export follows the disk's active layer through snapshot and
commit like the guest's device, and holds proper write permissions. HMP
`qemu-io` bypasses QEMU's permission system, and a write of it that overlaps
the end of a commit (the graph change) aborts QEMU 7.2
(`bdrv_co_write_req_prepare: Assertion 'child->perm & BLK_PERM_WRITE'`), a
test-only path no guest takes.
"""

import ctypes
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import pytest

REPO = str(Path(__file__).resolve().parents[1])
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from hotvcb.hosts.qmp import QmpClient  # noqa: E402
from nbdclient import NbdClient  # noqa: E402

QEMU = shutil.which("qemu-system-x86_64")
QEMU_IMG = shutil.which("qemu-img")
PY38 = "/root/.pyenv/versions/3.8.18/bin/python3.8"
PYTHON = PY38 if os.path.exists(PY38) else sys.executable  # hotvcb's floor, where we have it
needs_qemu = pytest.mark.skipif(QEMU is None or QEMU_IMG is None,
                                reason="needs qemu-system-x86_64 and qemu-img (scripts/install-test-deps)")
DEVICE = "drive0"
EXPORT = "guest"  # the guest writer's NBD export of DEVICE
_prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here, not in a forked child (dies_with_test)
PR_SET_PDEATHSIG = 1


def dies_with_test() -> None:
    """Popen's preexec_fn for a test's QEMU: SIGKILL when the process that started it ends. A run whose
    pytest was killed (not its process group) ends its xdist workers without their teardowns, and their
    QEMUs ran on under init, each holding 30-260 MiB and its images (deleted with pytest's old temp
    folders, their space still taken) until the machine's next reboot."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class QemuVm:
    def __init__(self, name: str, image: str, fmt: str, inventory: str, control: str, log: str, memory: int = 32,
                 extra: Sequence[str] = (), shared: bool = False):
        """`extra`: more QEMU options, e.g. a kernel to boot (tests/kvmguest.py). `shared`: the disk's
        device lets another writer at its image (share-rw), as the guest writer's export must be."""
        self.name, self.image, self.fmt = name, image, fmt
        self.socket = os.path.join(inventory, name + ".qmp")
        self.control = os.path.join(control, name + ".qmp")
        drive = "file=%s,format=%s,id=%s" % (image, fmt, DEVICE)
        disk = ["-drive", drive + ",if=none", "-device", "virtio-blk-pci,drive=%s,share-rw=on" % DEVICE] if shared \
            else ["-drive", drive + ",if=virtio"]
        argv = [QEMU, "-machine", "accel=tcg", "-nodefaults", "-display", "none", "-m", str(memory)] + disk + [
                "-drive", "if=ide,media=cdrom,id=cd0",
                "-qmp", "unix:%s,server=on,wait=off" % self.socket,
                "-qmp", "unix:%s,server=on,wait=off" % self.control] + list(extra)
        self.log_path = log
        self.log = open(log, "wb")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
                                     preexec_fn=dies_with_test)
        deadline = time.monotonic() + 20
        while not (_listening(self.socket) and _listening(self.control)):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError("QEMU did not start: %s" % Path(log).read_text(errors="replace"))
            time.sleep(0.05)

    def qmp(self) -> QmpClient:
        return QmpClient(self.control, timeout=20).connect()

    def active_file(self, qmp: QmpClient) -> str:
        for dev in qmp.execute("query-block"):
            if dev.get("device") == DEVICE:
                return dev["inserted"]["file"]
        raise AssertionError("no %s" % DEVICE)

    def chain_depth(self) -> int:
        with self.qmp() as qmp:
            for dev in qmp.execute("query-block"):
                if dev.get("device") == DEVICE:
                    return dev["inserted"]["backing_file_depth"]
        raise AssertionError("no %s" % DEVICE)

    def write(self, qmp: QmpClient, pattern: int, offset: int, length: int) -> None:
        out = qmp.execute("human-monitor-command", {
            "command-line": 'qemu-io %s "write -P 0x%02x %d %d"' % (DEVICE, pattern, offset, length)})
        # qemu-io prints its report on QEMU's stdout; an error to the monitor says why it failed
        assert "rror" not in out and "failed" not in out, out

    def flush(self, qmp: QmpClient) -> None:
        """What a guest's fsync does: until then a qcow2 layer's new mapping may sit in QEMU's
        metadata cache, and a SIGKILLed QEMU loses it (the data cluster written, unreachable)."""
        out = qmp.execute("human-monitor-command", {"command-line": 'qemu-io %s "flush"' % DEVICE})
        assert "rror" not in out and "failed" not in out, out

    def log_text(self) -> str:
        """What QEMU printed (an assertion that aborted it, qemu-io's reports)."""
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def export_disk(self, qmp: QmpClient) -> NbdClient:
        """A writable NBD export of the disk, served by this QEMU, opened: writes to it are the guest's."""
        path = os.path.join(os.path.dirname(self.control), self.name + ".nbd")
        node = next(dev["inserted"]["node-name"] for dev in qmp.execute("query-block") if dev.get("device") == DEVICE)
        qmp.execute("nbd-server-start", {"addr": {"type": "unix", "data": {"path": path}}})
        qmp.execute("block-export-add", {"type": "nbd", "id": EXPORT, "name": EXPORT, "node-name": node,
                                         "writable": True})
        return NbdClient(path, EXPORT)

    def quit(self) -> None:
        """End QEMU cleanly (its images are then closed and consistent)."""
        try:
            with self.qmp() as qmp:
                qmp.execute("quit")
        except Exception:
            pass
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            pass
        self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()


def _listening(path: str) -> bool:
    """QEMU binds a socket before it listens on it: on a busy machine a client can come in between
    and be refused (seen: the guest writer's first QMP connection)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()


@dataclass
class Write:
    offset: int
    length: int
    pattern: int
    when: str  # before (the snapshot) | after | unsure (raced the snapshot)


class GuestWriter(threading.Thread):
    """Writes known patterns at spread offsets until stopped; logs each write and when it landed.

    A write is "before" the snapshot when the disk's active image was the base
    image right before and right after it, and no overlay was seen yet. It
    writes through the disk's NBD export (QemuVm.export_disk): the VM must be
    started `shared`. When it fails, QEMU's log comes with the error (QEMU
    ending under it shows only as a lost connection here).
    """

    def __init__(self, vm: QemuVm, size: int, length: int = 4096, pause: float = 0.01):
        super().__init__(daemon=True)
        self.vm, self.size, self.length, self.pause = vm, size, length, pause
        self.writes = []  # type: List[Write]
        self.error = None  # type: Optional[BaseException]
        self.saw_overlay = False
        self._stop_event = threading.Event()

    def run(self) -> None:
        try:
            with self.vm.qmp() as qmp, self.vm.export_disk(qmp) as disk:
                i = 0
                while not self._stop_event.is_set():
                    offset = (i * 7919 * self.length) % (self.size - self.length)
                    offset -= offset % 512
                    pattern = 1 + i % 255
                    before = self.vm.active_file(qmp)
                    disk.write(offset, bytes([pattern]) * self.length)
                    after = self.vm.active_file(qmp)
                    base = self.vm.image
                    if before != base or after != base:
                        self.saw_overlay = True
                    if before == base and after == base:
                        when = "after" if self.saw_overlay else "before"
                    else:
                        when = "unsure" if before == base else "after"
                    self.writes.append(Write(offset, self.length, pattern, when))
                    i += 1
                    time.sleep(self.pause)
        except BaseException as err:  # reported by stop()
            self.error = err

    def wait_for(self, count: int, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while len(self.writes) < count:
            self._check(self.error is None, str(self.error))
            self._check(time.monotonic() < deadline, "the guest writer is stuck")
            time.sleep(0.01)

    def stop(self) -> List[Write]:
        self._stop_event.set()
        self.join(30)
        self._check(not self.is_alive(), "the guest writer did not stop")
        self._check(self.error is None, str(self.error))
        return self.writes

    def _check(self, ok: bool, failure: str) -> None:
        if not ok:
            raise AssertionError("%s\nQEMU log:\n%s" % (failure, self.vm.log_text()))


def apply(raw: str, writes: List[Write]) -> None:
    with open(raw, "r+b") as f:
        for w in writes:
            f.seek(w.offset)
            f.write(bytes([w.pattern]) * w.length)


def make_initial(path: str, size: int, random_bytes: int) -> None:
    """A raw image of `size`: random data in the first `random_bytes`, zeros (holes) after."""
    with open(path, "wb") as f:
        f.write(os.urandom(random_bytes))
        f.truncate(size)


def qemu_img(*args) -> subprocess.CompletedProcess:
    return subprocess.run([QEMU_IMG] + [str(a) for a in args], capture_output=True, text=True, timeout=120)


def first_l2_entry(path: str) -> Tuple[int, int]:
    """(file offset, value) of the L2 entry of a qcow2's first allocated cluster: where to damage its
    metadata."""
    with open(path, "rb") as f:
        head = f.read(48)
        cluster = 1 << struct.unpack(">I", head[20:24])[0]
        f.seek(struct.unpack(">Q", head[40:48])[0])
        l2 = struct.unpack(">Q", f.read(8))[0] & 0x00FFFFFFFFFFFE00
        f.seek(l2)
        table = struct.unpack(">%dQ" % (cluster // 8), f.read(cluster))
    i = next(k for k, e in enumerate(table) if e & 0x00FFFFFFFFFFFE00)
    return l2 + 8 * i, table[i]


def first_data_offset(path: str) -> int:
    """Where in an image file its first byte of guest data is (`qemu-img map`)."""
    r = qemu_img("map", "--output=json", path)
    assert r.returncode == 0, r.stderr
    return next(e["offset"] for e in json.loads(r.stdout) if e["data"] and "offset" in e)


def same_content(a: str, b: str) -> bool:
    """qemu-img compare, each image read as VMware reads it (`as_vmware_reads`)."""
    with tempfile.TemporaryDirectory() as tmp:
        r = qemu_img("compare", as_vmware_reads(a, tmp + "/a"), as_vmware_reads(b, tmp + "/b"))
    assert r.returncode in (0, 1), r.stdout + r.stderr
    return r.returncode == 0


def as_vmware_reads(path: str, tmp: str) -> str:
    """`path`, or for a VMDK text descriptor with blank lines (qemu reads the extent after one twice) a
    copy without them in `tmp`, beside links to the other files of its folder."""
    with open(path, "rb") as f:
        head = f.read(4096)
    if not path.endswith(".vmdk") or not head.startswith(b"# Disk DescriptorFile"):
        return path
    text = open(path, encoding="utf-8").read()
    lines = text.split("\n")
    if all(l.strip() for l in lines[:-1]):
        return path
    os.makedirs(tmp)
    folder = os.path.dirname(os.path.abspath(path))
    for name in os.listdir(folder):
        os.symlink(os.path.join(folder, name), os.path.join(tmp, name))
    copy = os.path.join(tmp, os.path.basename(path))
    os.unlink(copy)
    with open(copy, "w", encoding="utf-8") as f:
        f.write("\n".join(l for l in lines if l.strip()) + "\n")
    return copy


def slow_qemu_img(folder: str, rate: str = "4M") -> str:
    """A bin folder whose qemu-img is the real one with `convert -r RATE`: a copy that takes seconds."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "qemu-img")
    with open(path, "w") as f:
        f.write('#!/bin/sh\nif [ "$1" = convert ]; then shift; exec %s convert -r %s "$@"; fi\nexec %s "$@"\n'
                % (QEMU_IMG, rate, QEMU_IMG))
    os.chmod(path, 0o755)
    return folder


@pytest.fixture
def loop_devices():
    """attach(file) -> a loop device holding it, as an LV holds a disk; detached after the test, which is
    skipped where the machine gives none (no losetup, no /dev/loop*, not root)."""
    attached = []  # type: List[str]

    def attach(path: str) -> str:
        r = subprocess.run(["losetup", "--find", "--show", path], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip("no loop device: " + r.stderr.strip())
        attached.append(r.stdout.strip())
        return attached[-1]

    try:
        yield attach
    finally:
        for dev in attached:
            subprocess.run(["losetup", "-d", dev])


def short_dir(prefix: str) -> str:
    """A unix socket path must stay below 108 bytes: pytest's tmp_path can be long."""
    return tempfile.mkdtemp(prefix=prefix, dir="/tmp")


def vm_dirs(prefix: str) -> Tuple[str, str, str]:
    """(root, inventory, control): a short folder with one for hotvcb's QMP sockets and one for the test's."""
    root = short_dir(prefix)
    inventory, control = os.path.join(root, "inv"), os.path.join(root, "ctl")
    os.makedirs(inventory)
    os.makedirs(control)
    return root, inventory, control


def hotvcb_argv(inventory: str, *args) -> List[str]:
    return [PYTHON, "-m", "hotvcb", "--qemu", inventory] + [str(a) for a in args]


def env(bin_dir: Optional[str] = None) -> dict:
    e = dict(os.environ, PYTHONPATH=REPO)
    if bin_dir:
        e["PATH"] = bin_dir + os.pathsep + e.get("PATH", "")
    return e


def children(pid: int) -> List[int]:
    out = []
    try:
        for task in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/children" % (pid, task)) as f:
                out += [int(p) for p in f.read().split()]
    except OSError:
        pass
    return out


def kill_tree(pid: int) -> None:
    """SIGKILL a process and its children (hotvcb runs qemu-img in a session of its own)."""
    kids = children(pid)
    for p in [pid] + kids:
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass


def wait_until(predicate, timeout: float, what: str, poll: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting for " + what
        time.sleep(poll)
