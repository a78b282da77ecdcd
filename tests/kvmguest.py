"""A real guest for the KVM tests: a Debian kernel and a busybox initramfs that writes and checksums, with qemu-ga.

scripts/install-test-deps unpacks the kernel, the few modules a virtio disk
needs and a static busybox into GUEST_DIR. The guest's /init writes numbered
4 KiB records to /dev/vda (each one `dd conv=fsync`, so one after the other
reaches the disk), prints `W <n>` on the serial console after record n is on
the disk, and every CHECK_EVERY records the SHA-256 of its record region as
it reads it back (`C <n> <sha>`). So a test knows, from the console alone,
every write the guest believes is on its disk, in order, and what the region
held at given moments: a backup taken at one instant must hold records 0..N
for one N (a prefix, nothing lost, nothing from after), and the disk after
the backup must hold every record the console names. The QEMU guest agent
(qemu-ga with the libraries it loads) runs beside the writer and logs the
commands it gets (guest-fsfreeze-freeze, -thaw) on the console too; it has
no filesystem to freeze (the guest writes its raw disk), so a freeze is
proven by its log, not by stalled writes. With `hotvcb.idle` on its kernel
command line the guest does not write (only its agent runs): booted under bare
QEMU by `bare_qemu_guest` for the in-guest hook tests, as a libvirt domain by
`Guest`.

libvirtd is started by `ensure_libvirtd` when qemu:///system does not answer
(as root, as on a host whose init system would start it).
"""

import contextlib
import fcntl
import glob
import hashlib
import io
import json
import lzma
import os
import re
import shutil
import stat
import struct
import subprocess
import tempfile
import time
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import pytest

from qemuvm import QemuVm  # first: puts the repository on sys.path

from hotvcb.hosts.qga import GuestAgent  # noqa: E402

GUEST_DIR = os.environ.get("HOTVCB_TEST_GUEST", "/var/cache/hotvcb-test-guest")
URI = "qemu:///system"
LEFT = "/var/tmp/hotvcb-tests-libvirt.%s"  # what tests made at libvirt and have not removed yet, by kind (_ours)
MODULES = ["virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci", "virtio_blk",
           "virtio_console"]
RECORD = 4096
SLOTS = 2048  # the record region: the first 8 MiB of the disk
STRIDE = 37  # record n goes to slot n*STRIDE % SLOTS: writes spread over the region's clusters
CHECK_EVERY = 64
PACE = 0.05  # seconds between records: unpaced, the writer kept a host core busy for as long as the guest ran
MiB = 1 << 20
CMDLINE = "console=ttyS0 quiet panic=-1"

INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in %(modules)s; do insmod /lib/$m.ko; done
n=0
while [ ! -b /dev/vda ] && [ $n -lt 200 ]; do sleep 0.1; n=$((n+1)); done
[ -b /dev/vda ] || { echo HOTVCB-GUEST-NO-DISK; poweroff -f; }
# the guest agent's channel, if the domain has one (a virtio-serial device, virtio id 3): its port is added by the
# driver's work queue after insmod returned, from the device's answer on its control queue, so the loop below could
# run before it, and qemu-ga never started: libvirt showed the agent never connected, with no job in its way
if grep -qx 0x0003 /sys/bus/virtio/devices/*/device 2>/dev/null; then
  n=0
  while ! ls /dev/vport* >/dev/null 2>&1 && [ $n -lt 600 ]; do sleep 0.1; n=$((n+1)); done
  ls /dev/vport* >/dev/null 2>&1 || echo HOTVCB-GUEST-NO-AGENT-PORT
fi
for port in /dev/vport*; do  # its log goes to the console
  [ -c "$port" ] && echo "HOTVCB-GUEST-AGENT $port" && /qga/ld-linux-x86-64.so.2 --library-path /qga /qga/qemu-ga \
    -m virtio-serial -p "$port" -t /tmp -f /tmp/qga.pid -v -l /dev/ttyS0 &
done
echo HOTVCB-GUEST-UP
if grep -qw hotvcb.idle /proc/cmdline; then  # no writer: a guest only for its agent (in-guest hooks)
  while true; do sleep 3600; done
fi
mkfifo /tmp/pace
exec 3<>/tmp/pace
i=0
while true; do
  slot=$(( (i * %(stride)d) %% %(slots)d ))
  printf 'hotvcb-rec %%08d slot %%05d\\n' $i $slot | dd of=/dev/vda bs=%(record)d seek=$slot count=1 conv=sync,fsync 2>/dev/null || echo "E $i"
  echo "W $i"
  read -t %(pace)s -u 3 _  # a pause without a process: nothing ever comes on the FIFO
  if [ $(( i %% %(check)d )) -eq %(last)d ]; then
    echo "C $i $(dd if=/dev/vda bs=%(record)d count=%(slots)d iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)"
  fi
  i=$((i+1))
done
""" % {"modules": " ".join(MODULES), "stride": STRIDE, "slots": SLOTS, "record": RECORD, "check": CHECK_EVERY,
       "last": CHECK_EVERY - 1, "pace": PACE}


def _missing(tools: Sequence[str]) -> Optional[str]:
    """Why the guest cannot be booted with `tools`, or None."""
    for tool in tools:
        if shutil.which(tool) is None and not os.path.exists("/usr/sbin/" + tool):
            return "needs %s (scripts/install-test-deps)" % tool
    if not os.path.exists(os.path.join(GUEST_DIR, "vmlinuz")) or not os.path.isdir(os.path.join(GUEST_DIR, "qga")):
        return "needs the test guest in %s (scripts/install-test-deps)" % GUEST_DIR
    return None


def available() -> Optional[str]:
    """Why the libvirt tests cannot run here, or None."""
    why = _missing(("virsh", "libvirtd", "qemu-system-x86_64", "qemu-img"))
    if why is None and os.geteuid() != 0:
        return "libvirt's qemu:///system needs root"
    return why


needs_libvirt = pytest.mark.skipif(available() is not None, reason=available() or "")
needs_guest = pytest.mark.skipif(_missing(("qemu-system-x86_64", "qemu-img")) is not None,
                                 reason=_missing(("qemu-system-x86_64", "qemu-img")) or "")


def virsh(*args, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    r = subprocess.run(["virsh", "-q", "-c", URI] + [str(a) for a in args], capture_output=True, text=True,
                       timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError("virsh %s: %s" % (" ".join(map(str, args)), r.stderr.strip()))
    return r


@contextlib.contextmanager
def libvirt_turn() -> Iterator[None]:
    """This process's turn at the machine's libvirt: hotvcb's run lock for qemu:///system is one per
    machine (/run/hotvcb/libvirt-system), so two test files on two xdist workers backing up libvirt
    domains at once would refuse each other's runs. Held for a module's tests, then released."""
    fd = os.open("/run/lock/hotvcb-tests-libvirt", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        ensure_libvirtd()
        for name in _ours("domains"):  # every module makes these in its turn and removes them before it
            undefine(name)  # ends: what is recorded now is a killed run's (domains first: their QEMUs use
        for name in _ours("pools"):  # the pools' and folders' files)
            remove_pool(name)
        for path in _ours("folders"):
            remove_scratch(path)
        yield
    finally:
        os.close(fd)


@pytest.fixture(scope="module")
def libvirt_exclusive():
    """A module's tests run in one turn at the machine's libvirt (libvirt_turn)."""
    with libvirt_turn():
        yield


def _ours(kind: str) -> List[str]:
    """The domains, pools or folders (`kind`) tests made at libvirt and have not removed yet. Written only
    in a turn at libvirt (libvirt_turn), so by one process at a time on the machine; read only if this
    user wrote it (/var/tmp is everyone's: another user's list must not name what root removes)."""
    try:
        with open(os.open(LEFT % kind, os.O_RDONLY | os.O_NOFOLLOW)) as f:
            return json.load(f) if os.fstat(f.fileno()).st_uid == os.geteuid() else []
    except (OSError, ValueError):
        return []


def _own(kind: str, name: str) -> None:
    _record(kind, _ours(kind) + [name])


def _disown(kind: str, name: str) -> None:
    if name in _ours(kind):
        _record(kind, [n for n in _ours(kind) if n != name])


def _record(kind: str, names: List[str]) -> None:
    with tempfile.NamedTemporaryFile("w", dir=os.path.dirname(LEFT), prefix=".hotvcb-tests.", delete=False) as f:
        json.dump(names, f)
    os.replace(f.name, LEFT % kind)


def define(xml: str, name: str, transient: bool = False) -> None:
    """Define the domain `name` from the file `xml` (`transient`: create it running, gone with its QEMU),
    after removing one of that name a killed run left (its fixture's teardown never ran): libvirt refuses a
    second domain of one name, and the old one's QEMU, still writing under TCG, would take a core from the
    new guest. Recorded as ours until undefine(): the next turn at libvirt (libvirt_turn) removes it if
    this run is killed, whatever module defines next."""
    if virsh("domuuid", name, check=False).returncode == 0:
        undefine(name)
    _own("domains", name)
    virsh("create" if transient else "define", xml)


def undefine(name: str) -> None:
    """The domain gone from libvirt, running or not, checkpoints and all (nothing if there is none)."""
    virsh("destroy", name, check=False)
    for cp in reversed(virsh("checkpoint-list", name, "--name", check=False).stdout.splitlines()):
        if cp.strip():  # one name a line: other tools' names may hold spaces
            virsh("checkpoint-delete", name, cp.strip(), "--metadata", check=False)
    virsh("undefine", name, "--checkpoints-metadata", check=False)
    _disown("domains", name)


def add_pool(name: str, target: str, persistent: bool = False) -> None:
    """A started dir pool `name` on the folder `target` (`persistent`: defined, then started, as cockpit
    makes one), recorded as ours until remove_pool(), like a domain (define): a killed run's pool of the
    name would refuse the next run's."""
    remove_pool(name)
    _own("pools", name)
    if persistent:
        virsh("pool-define-as", name, "dir", "--target", target)
        virsh("pool-start", name)
    else:
        virsh("pool-create-as", name, "dir", "--target", target)


def remove_pool(name: str) -> None:
    """The pool gone from libvirt, started or not (nothing if there is none); its files stay."""
    virsh("pool-destroy", name, check=False)
    virsh("pool-undefine", name, check=False)
    _disown("pools", name)


def scratch(prefix: str) -> str:
    """A new folder in /var/tmp (libvirt's QEMU user reaches it; tmp_path under /tmp may be closed to it)
    for a module's or a test's guests and backups, recorded as ours until remove_scratch(): a killed run's
    images, consoles and backups (tens of MiB a guest) are removed at the next turn at libvirt. Only in a
    turn: then every recorded folder is a killed run's, none another run's in use."""
    path = tempfile.mkdtemp(prefix=prefix, dir="/var/tmp")
    _own("folders", path)
    os.chmod(path, 0o755)
    return path


def remove_scratch(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
    _disown("folders", path)


def killing_virsh(folder: str, verb: str) -> str:
    """A bin folder whose virsh is the real one, but kills its caller (hotvcb) with -9 right after `verb` ran."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "virsh")
    with open(path, "w") as f:
        f.write('#!/bin/sh\n%s "$@"\nrc=$?\nfor a in "$@"; do [ "$a" = %s ] && kill -9 $PPID; done\nexit $rc\n'
                % (shutil.which("virsh"), verb))
    os.chmod(path, 0o755)
    return folder


def slow_convert(folder: str, seconds: int = 8, release: str = "") -> str:
    """A bin folder whose qemu-img waits before each convert (a full copy of a libvirt export): `seconds`,
    or with `release` until that file exists (at most `seconds`), so a test waits only as long as it acts."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "qemu-img")
    wait = "sleep %d" % seconds if not release else (
        "n=0; while [ ! -e '%s' ] && [ $n -lt %d ]; do sleep 0.1; n=$((n+1)); done" % (release, seconds * 10))
    with open(path, "w") as f:
        f.write('#!/bin/sh\nif [ "$1" = convert ]; then %s; fi\nexec %s "$@"\n' % (wait, shutil.which("qemu-img")))
    os.chmod(path, 0o755)
    return folder


def scratch_left(name: str) -> List[str]:
    """The domain's scratch folders of ours under hotvcb's run dir, named as hosts/libvirt.py names
    them (`<name sanitised>-<8 hex of its SHA-256>`), written out here as the witness."""
    own = "%s-%s" % (re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:100], hashlib.sha256(name.encode()).hexdigest()[:8])
    return glob.glob("/run/hotvcb/libvirt-*/jobs/%s/*" % glob.escape(own))


def write_conf(root: str, volume: str, **keys) -> str:
    """`root`/hotvcb.conf for a libvirt lab: qcow2 backups into `volume`, three kept, plus `keys`."""
    values = {"VM_BACKUP_VOLUME": volume, "DISK_BACKUP_FORMAT": "qcow2", "VM_BACKUP_ROTATION_COUNT": "3"}
    values.update({k: str(v) for k, v in keys.items()})
    path = os.path.join(root, "hotvcb.conf")
    with open(path, "w") as f:
        f.write("".join("%s=%s\n" % kv for kv in values.items()))
    return path


def ensure_libvirtd() -> None:
    """Start virtlogd and libvirtd if qemu:///system does not answer (no init system in a container)."""
    if virsh("version", check=False, timeout=20).returncode == 0:
        return
    for d in ("/var/log/libvirt", "/var/lib/libvirt", "/var/cache/libvirt", "/run/libvirt"):
        os.makedirs(d, exist_ok=True)
    for daemon in ("virtlogd", "libvirtd"):
        if subprocess.run(["pgrep", "-x", daemon], capture_output=True).returncode != 0:
            subprocess.run([shutil.which(daemon) or "/usr/sbin/" + daemon, "-d"], check=True, timeout=30)
    deadline = time.monotonic() + 30
    while virsh("version", check=False, timeout=20).returncode != 0:
        assert time.monotonic() < deadline, "libvirtd did not come up"
        time.sleep(0.2)


def _cpio(entries: List[Tuple[str, int, bytes]]) -> bytes:
    """A newc cpio archive of (name, mode, data)."""
    out = io.BytesIO()
    for ino, (name, mode, data) in enumerate(entries + [("TRAILER!!!", 0, b"")], 1):
        nb = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(nb), 0]
        out.write(b"070701" + b"".join(b"%08X" % f for f in fields) + nb)
        out.write(b"\0" * (-(110 + len(nb)) % 4) + data + b"\0" * (-len(data) % 4))
    return out.getvalue()


def initramfs(path: str) -> str:
    """The guest's root, an uncompressed cpio: the kernel copies it instead of inflating it under TCG."""
    entries = [(d, stat.S_IFDIR | 0o755, b"") for d in ("bin", "dev", "proc", "sys", "lib", "tmp", "qga")]
    for lib in sorted(os.listdir(os.path.join(GUEST_DIR, "qga"))):
        with open(os.path.join(GUEST_DIR, "qga", lib), "rb") as f:
            entries.append(("qga/" + lib, stat.S_IFREG | 0o755, f.read()))
    with open(os.path.join(GUEST_DIR, "busybox"), "rb") as f:
        entries.append(("bin/busybox", stat.S_IFREG | 0o755, f.read()))
    for m in MODULES:
        with open(os.path.join(GUEST_DIR, m + ".ko"), "rb") as f:
            entries.append(("lib/%s.ko" % m, stat.S_IFREG | 0o644, f.read()))
    entries.append(("init", stat.S_IFREG | 0o755, INIT.encode()))
    with open(path, "wb") as f:
        f.write(_cpio(entries))
    return path


def _pvh_elf(bzimage: bytes) -> Optional[bytes]:
    """The kernel ELF inside a bzImage, if it is xz-packed (Debian's) and has a PVH entry (Xen note 18).

    QEMU starts such an ELF at its PVH entry, already in place: the guest
    skips inflating its own bzImage, ~5 CPU-s of a ~10 CPU-s boot under TCG.
    """
    setup = ((bzimage[0x1F1] or 4) + 1) * 512
    offset, length = struct.unpack("<II", bzimage[0x248:0x250])
    payload = bzimage[setup + offset:setup + offset + length]
    try:
        elf = lzma.LZMADecompressor(lzma.FORMAT_XZ).decompress(payload)
    except lzma.LZMAError:
        return None
    if not elf.startswith(b"\x7fELF\x02\x01"):
        return None
    phoff, = struct.unpack("<Q", elf[0x20:0x28])
    phentsize, phnum = struct.unpack("<HH", elf[0x36:0x3A])
    for i in range(phnum):
        kind, _, at, _, _, size = struct.unpack("<IIQQQQ", elf[phoff + i * phentsize:][:40])
        end = at + size
        while kind == 4 and at + 12 <= end:  # PT_NOTE: namesz, descsz, type, name, desc (4-aligned)
            namesz, descsz, note = struct.unpack("<III", elf[at:at + 12])
            if note == 18 and elf[at + 12:at + 12 + namesz].rstrip(b"\0") == b"Xen":
                return elf
            at += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return None


def kernel_image() -> str:
    """The kernel QEMU boots fastest: the PVH ELF, unpacked once beside the bzImage (or in a temp folder
    when GUEST_DIR is read-only), else the bzImage itself."""
    bzimage = os.path.join(GUEST_DIR, "vmlinuz")
    places = [os.path.join(d, "vmlinux") for d in (GUEST_DIR, os.path.join(tempfile.gettempdir(), "hotvcb-guest"))]
    for elf in places:
        if os.path.exists(elf) and os.path.getmtime(elf) >= os.path.getmtime(bzimage):
            return elf
    with open(bzimage, "rb") as f:
        data = _pvh_elf(f.read())
    for elf in places if data is not None else []:
        try:
            os.makedirs(os.path.dirname(elf), exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=os.path.dirname(elf), prefix="vmlinux.", delete=False) as part:
                part.write(data)
            os.chmod(part.name, 0o644)
            os.replace(part.name, elf)  # whole or not there: another worker may unpack it at the same time
            return elf
        except OSError:
            continue
    return bzimage


def boot_files(folder: str) -> Tuple[str, str]:
    """(kernel, initramfs) of the guest in `folder`, where the QEMU that boots it can read them."""
    kernel = os.path.join(folder, "vmlinux")
    shutil.copyfile(kernel_image(), kernel)
    return kernel, initramfs(os.path.join(folder, "initrd.cpio"))


def random_qcow2(raw: str, image: str, size: int, random_bytes: int = MiB) -> str:
    """A qcow2 of `size` whose first `random_bytes` are random (kept as the raw file `raw` to compare with)."""
    with open(raw, "wb") as f:
        f.write(os.urandom(random_bytes))
        f.truncate(size)
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, image], check=True)
    return image


def domain_xml(name: str, image: str, fmt: str, console: str, kernel: str = "", initrd: str = "",
               agent: bool = True) -> str:
    """Without a kernel the firmware finds nothing to boot and idles: a running domain, for the driver contract."""
    boot = "<kernel>%s</kernel><initrd>%s</initrd><cmdline>%s</cmdline>" % (kernel, initrd, CMDLINE) if kernel else ""
    return """<domain type='qemu'>
  <name>%(name)s</name>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type>%(boot)s</os>
  <on_poweroff>destroy</on_poweroff><on_reboot>destroy</on_reboot><on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='%(fmt)s'/><source file='%(image)s'/>
      <target dev='vda' bus='virtio'/></disk>
    <controller type='usb' model='none'/>
    <serial type='file'><source path='%(console)s'/><target port='0'/></serial>
    <memballoon model='none'/>%(agent)s
  </devices>
</domain>
""" % {"name": name, "image": image, "fmt": fmt, "console": console, "boot": boot,
       "agent": "\n    <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>" if agent else ""}


class Guest:
    """A defined, running domain; `console()` parses what the guest said so far."""

    def __init__(self, name: str, folder: str, size: int = 64 * MiB, random_bytes: int = 32 * MiB):
        self.name, self.folder = name, folder
        self.initial = os.path.join(folder, "initial.raw")
        self.image = random_qcow2(self.initial, os.path.join(folder, "vda.qcow2"), size, random_bytes)
        self.console_path = os.path.join(folder, "console.log")
        kernel, initrd = boot_files(folder)
        xml = os.path.join(folder, "domain.xml")
        with open(xml, "w") as f:
            f.write(domain_xml(name, self.image, "qcow2", self.console_path, kernel, initrd))
        define(xml, name)
        self.qemu_log = "/var/log/libvirt/qemu/%s.log" % name  # appended to at every start of the name
        self._log_from = os.path.getsize(self.qemu_log) if os.path.exists(self.qemu_log) else 0
        virsh("start", name)

    def qemu_log_text(self) -> str:
        """What libvirt logged for the domain since this guest started (taints, QEMU's errors)."""
        try:
            with open(self.qemu_log, errors="replace") as f:
                f.seek(self._log_from)
                return f.read()
        except FileNotFoundError:
            return ""

    def console_text(self) -> str:
        """What the guest said so far on its serial console."""
        try:
            with open(self.console_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def console(self) -> Tuple[List[int], Dict[int, str], List[int]]:
        """(records the guest wrote, in order; checksums it read back by record; write errors)."""
        text = self.console_text()
        writes = [int(n) for n in re.findall(r"^W (\d+)\r?$", text, re.M)]
        sums = {int(n): s for n, s in re.findall(r"^C (\d+) ([0-9a-f]{64})\r?$", text, re.M)}
        errors = [int(n) for n in re.findall(r"^E (\d+)\r?$", text, re.M)]
        return writes, sums, errors

    def wait_writes(self, count: int, timeout: float = 180) -> int:
        deadline = time.monotonic() + timeout
        while True:
            writes = self.console()[0]
            if len(writes) >= count:
                return writes[-1]
            assert time.monotonic() < deadline, "the guest wrote %d records of %d in %d s" % (
                len(writes), count, timeout)
            time.sleep(0.2)

    def wait_agent(self, timeout: float = 180) -> None:
        """Until libvirt has the guest's agent connected: the guest's init starts it before its writer, but
        libvirt learns of the channel from an event of its own, which a loaded machine delivers later (a
        backup then found "QEMU guest agent is not connected" and ran unquiesced, failing two tests once).
        An agent that can never connect fails at once, not after `timeout`: a guest that found no port for
        it (INIT), or a domain no longer running."""
        deadline = time.monotonic() + timeout
        while True:  # the channel's state in the live XML: no agent command (one would taint the domain)
            xml = virsh("dumpxml", self.name, check=False).stdout
            if re.search(r"name=.org\.qemu\.guest_agent\.0. state=.connected.", xml):
                return
            assert "HOTVCB-GUEST-NO-AGENT-PORT" not in self.console_text(), "the guest found no port for its agent"
            state = virsh("domstate", self.name, check=False).stdout.strip()
            assert state == "running", "the guest's agent cannot connect: the domain is %s" % (state or "gone")
            assert time.monotonic() < deadline, "libvirt has the guest's agent not connected after %d s (%s)" % (
                timeout, "the guest started it" if "HOTVCB-GUEST-AGENT" in self.console_text() else
                "the guest has not started it")
            time.sleep(0.5)

    def remove(self) -> None:
        undefine(self.name)


def bare_qemu_guest(name: str, image: str, inventory: str, control: str, folder: str, cmdline: str = "") -> QemuVm:
    """The guest under bare QEMU (`hotvcb --qemu INVENTORY`), without the writer, its agent answering.

    The agent's virtio-serial port has its host side on `<inventory>/<name>.qga`,
    as docs/kvm.md tells users to start a VM; `cmdline` is added to the
    guest's kernel command line (a test can read it back in the guest).
    """
    kernel, initrd = boot_files(folder)
    qga = os.path.join(inventory, name + ".qga")
    vm = QemuVm(name, image, "raw", inventory, control, os.path.join(folder, "qemu.log"), memory=128, extra=[
        "-kernel", kernel, "-initrd", initrd, "-append", " ".join([CMDLINE, "hotvcb.idle", cmdline]),
        "-serial", "file:" + os.path.join(folder, "console.log"),
        "-chardev", "socket,path=%s,server=on,wait=off,id=qga0" % qga.replace(",", ",,"),
        "-device", "virtio-serial", "-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0"])
    try:
        wait_for_agent(qga)
    except BaseException:
        vm.kill()
        raise
    return vm


def wait_for_agent(socket: str, timeout: float = 300) -> None:
    """Until the agent in the guest runs a command (TCG boots take a while on a busy machine)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with GuestAgent(socket, timeout=5).connect() as qga:
                if qga.run(["/bin/true"], [], 30)[0] == 0:
                    return
        except Exception as err:  # not booted yet: no answer to the sync
            if time.monotonic() > deadline:
                raise AssertionError("the guest's agent did not answer within %d s: %s" % (timeout, err))
        time.sleep(1)


# -- what the disk must hold -------------------------------------------------------------------
def record(n: int) -> Tuple[int, bytes]:
    slot = (n * STRIDE) % SLOTS
    text = b"hotvcb-rec %08d slot %05d\n" % (n, slot)
    return slot * RECORD, text + b"\0" * (RECORD - len(text))


def expected_region(initial: str, upto: int) -> bytes:
    """The record region after records 0..upto (-1: none) landed on the initial disk."""
    with open(initial, "rb") as f:
        region = bytearray(f.read(SLOTS * RECORD))
    for n in range(upto + 1):
        off, data = record(n)
        region[off: off + RECORD] = data
    return bytes(region)


def read_region(image: str, fmt: Optional[str] = None) -> bytes:
    """The record region of any image qemu-img reads (a chain of overlays too)."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = os.path.join(tmp, "r.raw")
        argv = ["qemu-img", "convert"] + (["-f", fmt] if fmt else []) + ["-O", "raw", image, raw]
        subprocess.run(argv, check=True, capture_output=True, timeout=120)
        with open(raw, "rb") as f:
            return f.read(SLOTS * RECORD)


def last_record(region: bytes) -> int:
    """The newest record number in a region (-1: none)."""
    found = [int(n) for n in re.findall(rb"hotvcb-rec (\d{8}) slot", region)]
    return max(found) if found else -1


def region_sha(region: bytes) -> str:
    return hashlib.sha256(region).hexdigest()
