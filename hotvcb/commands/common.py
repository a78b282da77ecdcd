"""What every subcommand that touches a host needs: settings, log, driver."""

import argparse
import os
import shutil
from typing import Optional, Tuple

from .. import config
from ..errors import HostError, LockError
from ..hosts.base import Hypervisor
from ..hosts.esxi import EsxiHost
from ..hosts.qemu import QemuHost
from ..runid import RunId
from ..runlog import RunLog
from ..settings import Settings
from ..shell import LocalShell
from ..sshshell import SshShell, SshTarget
from ..store.lock import HostLock, host_id

DEFAULT_WORKDIR = "/tmp/hotvcb.work"


def add_host_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-g", dest="global_conf", metavar="FILE", help="global config (ghettoVCB.conf format)")
    parser.add_argument("-l", dest="log_file", metavar="FILE", help="also write the log to FILE")
    parser.add_argument(
        "-d", dest="level", default="info", choices=("info", "debug", "dryrun"),
        help="log level; dryrun shows what would happen and changes nothing",
    )
    parser.add_argument("-w", dest="workdir", metavar="DIR", default=DEFAULT_WORKDIR,
                        help="work directory (the run lock lives on the host, whatever -w says)")


def load(args) -> Tuple[Settings, RunLog]:
    """Settings first (a bad config must fail before anything is logged as started)."""
    settings, warnings = config.load_settings(args.global_conf)
    log = RunLog("debug" if args.level == "debug" else "info", path=args.log_file)
    for w in warnings:
        log.warning(w)
    return settings, log


def lock_host(host: Hypervisor, log) -> Tuple[HostLock, RunId]:
    """Take the host's run lock: one run per host, whatever -w or machine it runs from."""
    run = RunId.new()
    try:
        run = run.on_host(host_id(host.shell, host.run_dir))
    except HostError as err:
        raise LockError("cannot set up the run lock in %s on the host: %s" % (host.run_dir, err)) from err
    return HostLock(host.shell, host.run_dir, run, log.warning).acquire(), run


class WorkDir:
    """The run's own folder under -w: its record and a debug log of everything.

    Removed when the run ends, unless WORKDIR_DEBUG=1 keeps it (and the log
    says where), as ghettoVCB's work directory was.
    """

    def __init__(self, base: str, run: RunId, keep: bool, log: RunLog):
        self.path = os.path.join(base, "hotvcb-" + run.run)
        self.keep, self.log = keep, log
        try:
            os.makedirs(self.path)
            with open(os.path.join(self.path, "run.txt"), "w", encoding="utf-8") as f:
                f.write(run.text() + "\n")
            log.keep_debug(os.path.join(self.path, "debug.log"))
        except OSError as err:
            log.warning("cannot use work directory %s: %s" % (self.path, err.strerror or err))
            self.path = ""

    def finish(self) -> None:
        if not self.path:
            return
        if self.keep:
            self.log.info("WORKDIR_DEBUG: work directory kept at %s (debug.log holds every line)" % self.path)
            return
        shutil.rmtree(self.path, ignore_errors=True)


_remote = None  # type: Optional[SshTarget]


def use_remote(target: Optional[SshTarget]) -> None:
    """Set by the CLI from --host: host commands then go over SSH (None: this host)."""
    global _remote
    _remote = target


_qemu_dir = None  # type: Optional[str]


def use_qemu(qmp_dir: Optional[str]) -> None:
    """Set by the CLI from --qemu: the VMs are the QEMU processes with QMP sockets in qmp_dir."""
    global _qemu_dir
    _qemu_dir = qmp_dir


def connect(target: Optional[SshTarget] = None):
    """The hypervisor driver for this run: the ESXi host we run on, or the --host one over SSH,
    or (--qemu DIR) the QEMU VMs on this machine.

    The work/lock dir, config and list files stay on this machine either way.
    """
    target = target or _remote
    if target is None and _qemu_dir is not None:
        return QemuHost(LocalShell(), _qemu_dir)
    if target is None:
        return EsxiHost(LocalShell())
    return EsxiHost(SshShell(target).open())
