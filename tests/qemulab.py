"""A bare-QEMU lab for tests that drive hotvcb --qemu against QEMUs of their own (`-S`: no guest code,
QEMU holds its disks; TCG; disks of a few MiB): images, QMP sockets, a backup volume, and hotvcb run on
them. Shared by the outside tests of sessions 27 and 29 (tests/test_outsider_s27kvm.py, test_outsider_s27d.py,
test_outsider_s29kvm*.py)."""
import glob
import os
import shutil
import signal
import subprocess
import time
from contextlib import contextmanager

from qemuvm import PYTHON, QEMU, _listening, dies_with_test, env, qemu_img, short_dir, wait_until  # noqa: F401

MiB = 1 << 20


class Lab:
    """Bare-QEMU VMs of the test's own (images, QMP sockets, a backup volume), and hotvcb run on them."""

    def __init__(self, tmp_path, tag):
        self.root = str(tmp_path)
        self.sockets = short_dir(tag)
        self.inventory = os.path.join(self.sockets, "inv")
        self.images = os.path.join(self.root, "images")
        self.volume = os.path.join(self.root, "backups")
        self.workdir = os.path.join(self.root, "work")
        for d in (self.inventory, self.images, self.volume):
            os.makedirs(d)
        self.procs = []
        self.pids = []  # QEMUs started with -daemonize (start_daemon): no child of ours

    def image(self, name, fmt="qcow2", size=4 * MiB, pattern=0x5A, folder=None, extra=()):
        raw = os.path.join(self.root, "src.raw")
        with open(raw, "wb") as f:
            f.write(bytes([pattern]) * MiB)
            f.write(os.urandom(64 * 1024))
            f.truncate(size)
        path = os.path.join(folder or self.images, name)
        r = qemu_img("convert", "-f", "raw", "-O", fmt, *extra, raw, path)
        assert r.returncode == 0, r.stdout + r.stderr
        os.remove(raw)
        return path

    def argv(self, name, drives, devices=(), extra=(), sock=None, machine="pc"):
        """QEMU with `drives` (a list of -drive values), stopped before any guest code (-S); and its socket
        (`sock`: elsewhere than the inventory)."""
        sock = sock or os.path.join(self.inventory, name + ".qmp")
        argv = [QEMU, "-machine", machine + ",accel=tcg", "-m", "64", "-nodefaults", "-display", "none", "-S"]
        argv += list(extra)
        for d in drives:
            argv += ["-drive", d]
        for d in devices:
            argv += ["-device", d]
        return argv + ["-qmp", "unix:%s,server=on,wait=off" % sock], sock

    def start(self, name, drives, devices=(), cwd=None, extra=(), sock=None, machine="pc"):
        argv, sock = self.argv(name, drives, devices, extra, sock, machine)
        ctl = os.path.join(self.sockets, name + ".ctl")
        argv += ["-qmp", "unix:%s,server=on,wait=off" % ctl]
        logpath = os.path.join(self.root, "qemu.log")
        with open(logpath, "ab") as log:
            p = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                 preexec_fn=dies_with_test)
        self.procs.append(p)
        wait_until(lambda: (_listening(sock) and _listening(ctl)) or p.poll() is not None, 30, "QEMU to listen")
        assert p.poll() is None, open(logpath).read()
        self.ctl = ctl
        return p

    def start_daemon(self, name, drives, cwd):
        """QEMU as init scripts start it: `cd DIR && qemu-system-x86_64 -daemonize -pidfile ...`."""
        argv, sock = self.argv(name, drives)
        pidfile = os.path.join(self.root, name + ".pid")
        r = subprocess.run(argv + ["-daemonize", "-pidfile", pidfile], cwd=cwd, stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stdout + r.stderr
        self.pids.append(int(open(pidfile).read().strip()))
        wait_until(lambda: _listening(sock), 20, "QEMU to listen")
        return self.pids[-1]

    def qmp(self, cmd, args=None):
        from hotvcb.hosts.qmp import QmpClient
        with QmpClient(self.ctl, timeout=30).connect() as q:
            return q.execute(cmd, args or {})

    def conf(self, **keys):
        values = {"VM_BACKUP_VOLUME": self.volume, "DISK_BACKUP_FORMAT": "qcow2", "VM_BACKUP_ROTATION_COUNT": "3"}
        values.update({k: str(v) for k, v in keys.items()})
        path = os.path.join(self.root, "hotvcb.conf")
        with open(path, "w") as f:
            f.write("".join("%s=%s\n" % kv for kv in values.items()))
        return path

    def hotvcb(self, *args, timeout=180, bin_dir=None):
        r = subprocess.run([PYTHON, "-m", "hotvcb"] + [str(a) for a in args], capture_output=True, text=True,
                           timeout=timeout, env=env(bin_dir))
        return r.returncode, r.stdout + r.stderr

    def backup(self, name, bin_dir=None, **keys):
        return self.hotvcb("--qemu", self.inventory, "backup", "-m", name, "-g", self.conf(**keys), "-w",
                           self.workdir, bin_dir=bin_dir)

    def backups(self, name):
        return sorted(os.path.dirname(p) for p in glob.glob(os.path.join(glob.escape(self.volume), glob.escape(name),
                                                                          "*", "STATUS.ok")))

    def overlays(self, folder=None):
        return glob.glob(os.path.join(glob.escape(folder or self.images), "*hotvcb-snapshot-*"))

    def two_qmp_folders(self, conf_extra=""):
        """The VM `vm` (one raw disk of 8 MiB, 3 MiB of it data, running) with QMP sockets in two folders, as
        kvm.md allows a nightly and an offsite job: self.inventory's and `inv2`; the offsite job's volume `vol2`
        and config (qcow2, `conf_extra` lines added). Returns (image, inv2, vol2, offsite conf)."""
        image = self.image("a.raw", fmt="raw", size=8 * MiB)
        with open(image, "r+b") as f:
            f.write(os.urandom(3 * MiB))
        inv2 = os.path.join(self.sockets, "inv2")
        os.makedirs(inv2)
        self.start("vm", ["file=%s,format=raw,if=virtio" % image],
                   extra=["-qmp", "unix:%s,server=on,wait=off" % os.path.join(inv2, "vm.qmp")])
        self.qmp("cont")
        vol2 = os.path.join(self.root, "vol2")
        os.makedirs(vol2)
        conf2 = os.path.join(self.root, "offsite.conf")
        with open(conf2, "w") as f:
            f.write("VM_BACKUP_VOLUME=%s\nDISK_BACKUP_FORMAT=qcow2\n%s" % (vol2, conf_extra))
        return image, inv2, vol2, conf2

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        for pid in self.pids:
            for _ in range(100):
                if not os.path.exists("/proc/%d" % pid):
                    break
                time.sleep(0.05)
        shutil.rmtree(self.sockets, ignore_errors=True)


@contextmanager
def opened(tmp_path, tag):
    """A Lab whose QEMUs are killed and sockets removed at the end (each test file its own tag: files
    run side by side)."""
    lab = Lab(tmp_path, tag)
    try:
        yield lab
    finally:
        lab.close()


def disk_of(backup, suffix=".qcow2"):
    found = [f for f in os.listdir(backup) if f.endswith(suffix)]
    assert len(found) == 1, found
    return os.path.join(backup, found[0])


def same(a, b):
    r = qemu_img("compare", "-U", a, b)
    return r.returncode == 0


def run_bg(lab, name, bin_dir, logname="run.log", **keys):
    """hotvcb backup -m name in the background, its output in a log file."""
    log = os.path.join(lab.root, logname)
    with open(log, "w") as out:
        p = subprocess.Popen([PYTHON, "-m", "hotvcb", "--qemu", lab.inventory, "backup", "-m", name, "-g",
                              lab.conf(**keys), "-w", lab.workdir], stdout=out, stderr=subprocess.STDOUT,
                             env=env(bin_dir))
    return p, log


def finish(p, timeout=120):
    try:
        return p.wait(timeout)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)


def hmp_write(lab, device, pattern, offset, length):
    """A guest write through the VM's own block layer (lands in our overlay while it exists)."""
    out = lab.qmp("human-monitor-command", {"command-line": 'qemu-io %s "write -P 0x%02x %s %s"'
                                            % (device, pattern, offset, length)})
    assert "rror" not in out and "failed" not in out, out
