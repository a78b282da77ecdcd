"""`hotvcb restore --kvm DIR`: a backup of any hypervisor, restored as a KVM VM.

    hotvcb restore BACKUP --kvm DIR [--format qcow2|raw] [--name NEW] [--libvirt [URI]]
    hotvcb restore --latest VM -g CONF --kvm DIR ...
    hotvcb restore --repo PATH ID|--latest VM --kvm DIR ...   (restore_kvm_repo.py)

The options live on `restore`'s parser (restore_cmd.register calls
add_options); restore_cmd.run hands over when --kvm is given.
Exit codes: 0 restored (or a clean dry run), 3 restored without a disk the backup does not hold,
6 failed, 1 usage.
"""

from typing import List, Tuple

from .. import interrupt
from ..convert.machine import BUILT_BUSES, NIC_MODELS
from ..errors import HotvcbError, Interrupted, UsageError
from ..jobs import backup_check, nfs
from ..localshell import LocalShell
from ..restorefile import trim_path
from ..runlog import RunLog
from ..store import layout
from . import common, restore_frame
from .latest_hint import require_volume, why_none


def add_options(p) -> None:
    kvm = p.add_argument_group("restore to KVM", "convert the backup (ESXi, libvirt or QEMU) to a KVM VM "
                               "on this machine: images plus a libvirt domain XML and a QEMU start script")
    kvm.add_argument("--kvm", metavar="DIR", help="restore into DIR/<name>/ as a KVM VM")
    kvm.add_argument("--libvirt", dest="define_in", nargs="?", const="", metavar="URI",
                     help="also `virsh define` it (in URI, default virsh's own)")
    kvm.add_argument("--keep-macs", action="store_true", help="keep the MAC addresses under a new name")
    kvm.add_argument("--disk-bus", choices=BUILT_BUSES, help="put every disk on this bus (default: sata for "
                     "VMware and bare-QEMU disks, which every guest boots from; a libvirt VM keeps its own)")
    kvm.add_argument("--nic-model", choices=NIC_MODELS, help="every NIC's model (default: e1000 for VMware NICs)")


def check_options(args) -> None:
    """--kvm-only options without --kvm are a mistake the ESXi restore would silently ignore."""
    if args.kvm is None and (args.define_in is not None or args.keep_macs or args.disk_bus or args.nic_model):
        raise UsageError("--libvirt, --keep-macs, --disk-bus and --nic-model go with --kvm DIR")


def run(args, level: str) -> int:
    """level: restore's log level (info, dryrun, dryrun2, debug)."""
    # tempfile, ctypes (tether), the QEMU argv: only a --kvm run's, every `restore` registers the options
    from ..jobs.restore_kvm import KVM_FORMATS

    if args.host_target:
        raise UsageError("--kvm restores on this machine; drop --host/--qemu")
    if args.restore_file or args.datastore:
        raise UsageError("--kvm DIR names where to restore; drop -c/--datastore")
    if args.power_on:
        raise UsageError("--kvm powers nothing on (the restore ends saying how to start the VM); drop --power-on")
    if bool(args.backup) == bool(args.latest):
        raise UsageError("say what to restore: BACKUP or --latest VM (exactly one)")
    fmt = args.format or "qcow2"
    if fmt not in KVM_FORMATS:
        raise UsageError("--format %s: a KVM restore writes %s" % (fmt, " or ".join(KVM_FORMATS)))
    settings, warnings = common.restore_settings(args)
    dry_run = level in ("dryrun", "dryrun2")
    log = RunLog("debug" if level in ("debug", "dryrun2") else "info", path=args.log_file)
    interrupt.install()  # a signal from here on unwinds as Interrupted, which ends the log's frame
    log.info(restore_frame.LOG_START)  # framed as every restore's log (restore_frame)
    for w in warnings:
        log.warning(w)
    try:
        status, code = _framed(args, settings, log, fmt, dry_run)
    except Interrupted as err:  # its unfinished folder is removed (KvmRestore.run); the CLI says why it stopped
        log.error(str(err))
        restore_frame.end(log, "ERROR: %s; unfinished restore folder removed" % err, err.exit_code)
        raise
    except HotvcbError as err:  # stopped before a restore began (_framed): said in the frame, and by the CLI
        restore_frame.refused(log, err)
        raise
    return restore_frame.end(log, status, code)


def _framed(args, settings, log: RunLog, fmt: str, dry_run: bool) -> Tuple[str, int]:
    """The run inside its log frame: the backup chosen, then restored; (its final status, its exit code). A
    restore that fails is its status (exit 6, as `restore` says "all failed"); what stops the run before one
    begins (no good backup for --latest, the backup volume not there, a VM's folder that cannot be read) raises,
    for `run` to end the frame on: every exit after LOG START ends it, or the -l file reads as a run that died."""
    from ..jobs.restore_kvm import KvmRequest, KvmRestore, how_to_start

    shell = LocalShell()
    repo = args.repo or common.config_repository(args, settings)
    backup = _latest(shell, settings, args, log) if args.latest and not repo else args.backup
    req = KvmRequest(trim_path(backup or ""), trim_path(args.kvm), fmt, args.name or None, args.keep_macs,
                     args.disk_bus, args.nic_model, args.define_in)
    try:
        if repo:
            from . import restore_kvm_repo  # the repository's code, for its backups only

            result = restore_kvm_repo.restore(repo, args.backup or "", args.latest or "", req, log, dry_run,
                                              common.repository_lister(args, repo))
        else:
            log.info("Restoring %s to KVM in %s (%s)" % (req.backup, req.target, fmt))
            result = KvmRestore(shell, log, verify=not args.no_verify, dry_run=dry_run).run(req)
    except HotvcbError as err:
        log.error(str(err))
        return "ERROR: %s" % err, 6  # as `restore` says "all failed"
    if dry_run:
        log.info("Dry run for %s: every check passed, nothing changed" % result.name)
        return "OK, only a dryrun.", 0
    log.info("Restored %s to %s" % (result.name, result.folder))
    for line in how_to_start(result, req.define_in is not None):
        log.info(line)
    if result.left_out:  # as `restore` ends for an ESXi VM short of a disk
        return "WARNING: All VMs restored, but some disk(s) were not in the backup and are left out!", 3
    return "All VMs restored OK!", 0


def _latest(shell: LocalShell, settings, args, log: RunLog) -> str:
    """The newest good backup of the VM `--latest` names, on the backup volume; UsageError where there is none."""
    require_volume(shell, settings, bool(args.global_conf), args.latest)
    odd = []  # type: List[str]
    backup = backup_check.newest_good(shell, settings.vm_backup_volume, args.latest, odd.append,
                                      lambda line: log.warning("--latest " + line))
    if backup is None:
        listed = bool(layout.list_backups(shell, settings.vm_backup_volume, args.latest))
        raise UsageError("no good backup of %r under %s%s%s%s" % (
            args.latest, settings.vm_backup_volume, why_none(shell, settings.vm_backup_volume, args.latest, listed),
            layout.odd_named(odd), nfs.because(shell, settings)))
    return backup
