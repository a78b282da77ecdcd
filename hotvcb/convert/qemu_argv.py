"""A Machine as a QEMU command line: the start script of a bare-QEMU restore, and the smoke boot.

The machine type is q35 (its AHCI controller is built in, ports ide.0-5;
IDE disks sit there too, as q35 has no PIIX IDE). The first disk boots.
The start script adds a QMP socket beside nothing in particular: the admin
points it at the folder `hotvcb --qemu DIR` backs up. A socket's path holds
at most SOCKET_PATH_MAX bytes (sun_path), which a long VM name in the QMP
folder can pass: QEMU then ends at once, and hotvcb could not connect to it
either. There the script names the socket short (qmp_name), and so `hotvcb
--qemu` knows the VM by that name.
"""

import shlex
from typing import List, Optional

from ..namefit import fit
from .firmware import ovmf
from .machine import ConvertError, Machine

QEMU = "qemu-system-x86_64"
_NIC_DEVICE = {"e1000": "e1000", "e1000e": "e1000e", "rtl8139": "rtl8139", "virtio": "virtio-net-pci",
               "vmxnet3": "vmxnet3"}
AHCI_PORTS = 6
SOCKET_PATH_MAX = 107  # bytes in a Unix socket's path: sun_path's 108 less its NUL
SOCKET = ".qmp"
SHORT_SOCKET_MAX = 64  # bytes of `<qmp_name>.qmp`: room left for a QMP folder of up to 42 bytes
TIGHT_SOCKET_MAX = 32  # and of a name that fits SHORT_SOCKET_MAX whole: room for a QMP folder of up to 74 bytes


def qemu_argv(m: Machine, *, qemu: str = QEMU, network: bool = True, efi_vars: Optional[str] = None,
              accel: str = "kvm:tcg") -> List[str]:
    """Disks as m names them (the smoke boot swaps in its overlays first); no display, no serial
    (callers add theirs); NICs on user networking unless `network` is False."""
    argv = [qemu, "-name", _opt(m.name), "-uuid", m.uuid, "-machine", "q35,accel=" + accel,
            "-m", str(m.memory_mib), "-smp", str(m.vcpus), "-nodefaults"]
    if m.windows:
        argv += ["-rtc", "base=localtime"]
    if m.firmware == "efi":
        found = ovmf()
        if found is None or efi_vars is None:
            raise ConvertError("%s boots with UEFI, and no OVMF firmware is installed here (apt-get install ovmf)"
                               % m.name)
        argv += ["-drive", "if=pflash,format=raw,readonly=on,file=" + _opt(found[0]),
                 "-drive", "if=pflash,format=raw,file=" + _opt(efi_vars)]
    ahci = 0
    scsi = False
    for i, d in enumerate(m.disks):
        node = "disk%d" % i
        argv += ["-drive", "if=none,id=%s,format=%s,file=%s" % (node, d.fmt, _opt(d.source))]
        boot = ",bootindex=%d" % i
        if d.bus in ("sata", "ide"):
            if ahci == AHCI_PORTS:
                raise ConvertError("%s has more than %d SATA/IDE disks; put some on virtio (--disk-bus)"
                                   % (m.name, AHCI_PORTS))
            argv += ["-device", "ide-hd,drive=%s,bus=ide.%d%s" % (node, ahci, boot)]
            ahci += 1
        elif d.bus == "virtio":
            argv += ["-device", "virtio-blk-pci,drive=%s%s" % (node, boot)]
        else:
            if not scsi:
                argv += ["-device", "virtio-scsi-pci,id=scsi0"]
                scsi = True
            argv += ["-device", "scsi-hd,drive=%s,bus=scsi0.0%s" % (node, boot)]
    for i, n in enumerate(m.nics if network else []):
        argv += ["-netdev", "user,id=net%d" % i,
                 "-device", "%s,netdev=net%d,mac=%s" % (_NIC_DEVICE.get(n.model, "e1000"), i, n.mac)]
    return argv


def _opt(value: str) -> str:
    """A name inside a QEMU option (a file, the VM's -name): a comma is written twice."""
    return value.replace(",", ",,")


def start_script(m: Machine, argv: List[str]) -> str:
    """A shell script that starts the restored VM the way hotvcb can back it up (QMP socket).

    Only the folder comes from the environment (double quotes); the name, which a .vmx or domain
    XML chose, is single-quoted, so `$(...)` or a backtick in it is never run.

    Without a graphical session (no DISPLAY or WAYLAND_DISPLAY: an SSH session, a disaster recovery on
    the KVM host) QEMU's default display, GTK where the distribution installs it, ends QEMU at once
    ("gtk initialization failed"): the script then asks for none (the console is on the terminal,
    `-serial mon:stdio`), before the admin's own arguments, so a `-display` of theirs still wins."""
    line = " ".join(shlex.quote(a) for a in argv)
    flat = " ".join(m.name.splitlines())  # for the comment line, which a newline would end
    return ("#!/bin/sh\n# %s, restored by hotvcb. Back it up with: hotvcb --qemu \"${HOTVCB_QMP_DIR:-/run/qmp}\" "
            "backup -m %s\nqmp_dir=\"${HOTVCB_QMP_DIR:-/run/qmp}\"\n%smkdir -p \"$qmp_dir\"\n"
            "if [ -z \"${DISPLAY:-}${WAYLAND_DISPLAY:-}\" ]; then set -- -display none \"$@\"; fi\n"
            "exec %s -vga std -serial mon:stdio \\\n"
            "  -qmp \"unix:$qmp_dir/$qmp,server=on,wait=off\" \"$@\"\n"
            % (flat, shlex.quote(flat), _socket_lines(m.name), line))


def qmp_name(name: str) -> str:
    """The name of the VM's QMP socket (less `.qmp`) where its whole name would make the socket's path too
    long: its head and a digest of the whole (namefit.fit), the name `hotvcb --qemu` then knows it by.
    Fitted to SHORT_SOCKET_MAX bytes; a name whose whole `.qmp` fits that already is fitted to
    TIGHT_SOCKET_MAX, as a QMP folder of over 42 bytes passes the limit with it too (a 60-byte name got no
    short socket, and QEMU ended at once). A name shorter than that is its own."""
    short = fit("", name, SOCKET, SHORT_SOCKET_MAX)
    if short == name + SOCKET:
        short = fit("", name, SOCKET, TIGHT_SOCKET_MAX)
    return short[: -len(SOCKET)]


def _socket_lines(name: str) -> str:
    """The script's lines that set `qmp`, the socket's file name in `$qmp_dir` (commas doubled, QEMU's
    escape): the VM's name, or qmp_name's where the folder's path and the name pass SOCKET_PATH_MAX bytes;
    where even that one does (a folder of some 75 bytes), the script ends saying so, not QEMU at start."""
    short = qmp_name(name)
    said = ("# where the QMP folder's path and the whole name pass %d bytes, too long a socket path, the socket "
            "is shorter and hotvcb --qemu backs the VM up as: %s\n" % (SOCKET_PATH_MAX, shlex.quote(
                " ".join(short.splitlines())))) if short != name else ""
    return ("%sqmp=%s\n"
            "if [ \"$(printf '%%s/%%s' \"$qmp_dir\" %s | wc -c)\" -gt %d ]; then\n"
            "  if [ \"$(printf '%%s/%%s' \"$qmp_dir\" %s | wc -c)\" -gt %d ]; then\n"
            "    echo \"the QMP folder $qmp_dir makes too long a socket path (over %d bytes) for this VM: "
            "set HOTVCB_QMP_DIR to a shorter folder\" >&2\n"
            "    exit 1\n"
            "  fi\n"
            "  qmp=%s\n"
            "  echo \"the VM's name makes too long a socket path: its QMP socket is $qmp_dir/$qmp\" >&2\n"
            "fi\n" % (said, shlex.quote(_opt(name) + SOCKET), shlex.quote(name + SOCKET), SOCKET_PATH_MAX,
                       shlex.quote(short + SOCKET), SOCKET_PATH_MAX, SOCKET_PATH_MAX,
                       shlex.quote(_opt(short) + SOCKET)))
