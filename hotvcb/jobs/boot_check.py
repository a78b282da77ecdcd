"""Smoke boot: does the VM in a backup start? (`hotvcb verify --boot`)

    checked -> overlays -> booting -> sign of life | no sign of life -> killed, overlays removed

- checked: a backup must be good (store/health.py; its checksums are
  `hotvcb verify`'s business), also one without a STATUS file yet that is
  named as a backup (`-partial`: being written) or holds a manifest (a copy
  that lost its STATUS.ok); any other folder `restore --kvm` wrote (no
  STATUS file, no manifest) is booted as it is; a .gz is unpacked into the temp folder first.
- overlays: one qcow2 per disk in a temp folder, backed by the backup's own
  file (qemu reads VMDKs directly), so the guest's writes land in the
  overlay and the backup is only read.
- booting: QEMU (hosts/qemu_boot.py) with the machine the backup describes,
  no network, the serial console to a file, `-no-reboot` (a guest that
  resets gives up at once instead of looping). A sign of life is console
  text matching the pattern (default `login:`); `.` takes any output.
- the end, whatever happens (pass, fail, timeout, Ctrl-C): QEMU is killed
  and waited for, the temp folder is removed but for the console log, whose
  path the result names. A SIGKILLed hotvcb takes its QEMU with it
  (hosts/qemu_boot.py); its overlays are removed by the next smoke boot.
"""

import os
import re
import shutil
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from .. import interrupt
from ..convert.firmware import ovmf
from ..convert.qemu_argv import QEMU, qemu_argv
from ..errors import HotvcbError
from ..hosts import qemuimg
from ..shell import Shell
from ..store import layout
from . import backup_check, qemu_vmdk

if TYPE_CHECKING:  # verify imports this module for its option defaults; only --boot needs what boots
    from ..hosts.qemu_boot import BootProcess

WORK_PREFIX = "hotvcb-boot-"  # in /tmp, + this process's tag, so a later run knows a dead run's overlays (tmpwork.py)
CONSOLE = "console.log"  # in it, kept: the result names it
DEFAULT_PATTERN = "login:"
DEFAULT_TIMEOUT = 300.0
POLL = 0.25


@dataclass
class BootResult:
    """How a smoke boot of a backup went, and the console it printed."""

    path: str
    ok: bool
    message: str
    console: str = ""  # the console log, kept
    seconds: float = 0.0


def smoke_boot(shell: Shell, path: str, log, *, pattern: str = DEFAULT_PATTERN, timeout: float = DEFAULT_TIMEOUT,
               console: Optional[str] = None, accel: str = "kvm:tcg", qemu: str = QEMU, qemu_img: str = qemuimg.QEMU_IMG) -> BootResult:
    """Boot a throw-away copy of the backup's VM; fail (not raise) when it shows no sign of life."""
    try:
        wanted = re.compile(pattern)
    except re.error as err:
        raise HotvcbError("--boot-pattern %r is not a regular expression: %s" % (pattern, err)) from None
    if wanted.search(""):  # it would PASS before QEMU printed anything
        raise HotvcbError("--boot-pattern %r matches an empty console, which proves nothing ('.' takes any output)"
                          % pattern)
    folder = path.rstrip("/")
    archive = backup_check.is_archive(shell, folder)
    if not archive and not shell.isdir(folder):
        raise HotvcbError("%s: no such backup folder or .gz" % folder)
    if archive or backup_check.is_backup(shell, folder) or layout.from_path(shell, folder) is not None:
        backup_check.require_good(shell, folder)  # a backup named as one (-partial: being written) too
    if console is not None and backup_check.inside(console, folder):
        raise HotvcbError("--console-log %s is inside the backup %s, which a smoke boot only reads" % (console, folder))
    # tempfile (tmpwork), ctypes (qemu_boot's tether), xml.etree (machine_of): `verify --boot` only, not every verify
    from .. import tmpwork
    from ..hosts.qemu_boot import BootProcess, ConsoleLog
    from .machine_of import machine_of

    if console is not None:  # a folder or a FIFO refused before the unpacking and the overlays
        ConsoleLog.check(console)
    tmpwork.sweep(WORK_PREFIX, keep=CONSOLE)  # a SIGKILLed run's overlays (its QEMU died with it)
    work = tmpwork.make(WORK_PREFIX)
    console = console or os.path.join(work, CONSOLE)
    started = time.monotonic()
    console_log = None  # type: Optional[ConsoleLog]
    try:
        if archive:  # unpacked into the temp folder, removed with the overlays
            os.makedirs(os.path.join(work, "unpacked"))
            folder = backup_check.unpack(shell, folder, os.path.join(work, "unpacked"), log)
        found = machine_of(shell, folder)
        m = found.machine
        backup_check.require_whole(shell, m, qemu_img)
        for note in m.notes:
            log("note: %s" % note)
        for i, d in enumerate(m.disks):
            overlay = os.path.join(work, "disk%d.qcow2" % i)
            source = os.path.abspath(d.source)
            if d.fmt == "vmdk":  # read as VMware reads it, or refused (qemu_vmdk.py)
                source = qemu_vmdk.opened(shell, source, os.path.join(work, "vmdk%d" % i), qemu_img)
            qemuimg.create_overlay(shell, source, d.fmt, overlay, qemu_img)
            d.source, d.fmt = overlay, "qcow2"
        efi_vars = None
        if m.firmware == "efi" and ovmf() is not None:
            efi_vars = os.path.join(work, "efivars.fd")
            shutil.copyfile(ovmf()[1], efi_vars)  # type: ignore[index]
        argv = qemu_argv(m, qemu=qemu, network=False, efi_vars=efi_vars, accel=accel)
        console_log = ConsoleLog(console)
        log("Booting %s (%s backup, %d disk(s), %s) without network; console: %s"
            % (m.name, found.kind, len(m.disks), m.firmware, console))
        with BootProcess(argv, console_log, os.path.join(work, "qemu.log")) as vm:
            ok, message = _watch(vm, wanted, pattern, timeout, started)
    finally:
        if console_log is not None:
            console_log.close()
        tmpwork.clear(work, keep=CONSOLE if console == os.path.join(work, CONSOLE) else "")
    return BootResult(path, ok, message, console, time.monotonic() - started)


def _watch(vm: "BootProcess", wanted, pattern: str, timeout: float, started: float):
    deadline = started + timeout
    while True:
        if interrupt.pending():
            interrupt.raise_pending()  # BootProcess.__exit__ kills QEMU on the way out
        text = vm.console_text()
        hit = wanted.search(text)
        if hit:
            return True, "console showed %r after %d s" % (hit.group(0)[:60], time.monotonic() - started)
        code = vm.exit_code()
        if code is not None:
            return False, "QEMU ended (exit %d) before the console showed %r%s" % (
                code, pattern, (": " + vm.last_words()) if vm.last_words() else "")
        if time.monotonic() > deadline:
            return False, "no sign of life: the console did not show %r within %d s (%d bytes of output)" % (
                pattern, timeout, len(text.encode("utf-8")))
        time.sleep(POLL)

