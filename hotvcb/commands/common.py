"""What every subcommand that touches a host needs: settings, log, driver."""

from __future__ import annotations

import argparse
import os
import shlex
import time
from datetime import datetime
from typing import Any, Callable, List, Optional, Sequence, Tuple

from .. import clockage, config, datastorepath, lazyre
from . import onhost
from ..errors import HostError, HotvcbError, LockError, UsageError
from ..hosts.base import Hypervisor
from ..localshell import LocalShell
from ..runid import RunId, host_id
from ..runlog import RunLog, open_log, stopped
from ..settings import Settings
from ..store.lock import HostLock
from .runtarget import Target

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


def add_repo_option(p) -> None:
    """Here, not in repo_cmd.py: `list`, `verify`, `status` and `restore` offer it, and only their runs
    given --repo import the repository's code (repo_cmd.py's imports, ~15 ms)."""
    p.add_argument("--repo", metavar="PATH", help="a deduplicating repository (docs/repository.md) instead of "
                   "VM_BACKUP_VOLUME")


def add_volume_or_repo(p: argparse.ArgumentParser) -> None:
    """`--volume DIR` or `--repo PATH`, never both: given both, `list` and `verify` read the repository and
    dropped --volume without a word."""
    where = p.add_mutually_exclusive_group()
    where.add_argument("--volume", metavar="DIR", help="backup volume (overrides VM_BACKUP_VOLUME)")
    add_repo_option(where)


def require_root(host, remote: bool) -> None:
    """Refuse early, saying why, when this user cannot do the host's work (not root here).

    On ESXi vim-cmd, vmkfstools and the run lock in /var/run are root's; a QEMU host's run lock
    lives with the QMP sockets, which a user may own for their own VMs (then no root is needed).
    Over SSH the remote login decides (see lock_host). Why it needs root is the driver's to say
    (`why_root`): the ESXi advice sent a libvirt admin after vim-cmd and SSH mode.
    """
    if remote or os.geteuid() == 0 or os.access(host.run_dir, os.W_OK):
        return
    raise LockError(_root_needed(host, remote=False))


def _root_needed(host, remote: bool) -> str:
    if remote:
        return ("hotvcb must log in to the host as root (--host root@HOST): the run lock lives in %s there, and "
                "vim-cmd snapshots and vmkfstools copies need root" % host.run_dir)
    return "hotvcb must run as root here (this is uid %d): %s" % (os.geteuid(), host.why_root())


def add_confdir_option(p: argparse.ArgumentParser, why: str) -> None:
    """The backup's -c, for the commands that must look where it wrote (status, list): `why` they read it."""
    p.add_argument("-c", dest="confdir", metavar="DIR", help="folder of per-VM config files named after VMs, "
                   "as the backup's -c: " + why)


def check_confdir(confdir: Optional[str]) -> None:
    if confdir and not os.path.isdir(confdir):  # else every VM would fail on it, one by one
        raise UsageError("-c %s: no such folder of per-VM configs" % confdir)


def per_vm_settings(settings: Settings, confdir: Optional[str],
                    warnings: List[str]) -> Optional[Callable[[str], Settings]]:
    """A VM's own settings, as the backup reads them (config.for_vm: its file in `confdir` over the global
    ones), the files' warnings added to `warnings` once each; None without a `confdir`."""
    check_confdir(confdir)
    if not confdir:
        return None

    def settings_of(name: str) -> Settings:
        own, said = config.for_vm(settings, confdir, name)
        warnings.extend(w for w in said if w not in warnings)
        return own

    return settings_of


def restore_settings(args) -> Tuple[Settings, List[str]]:
    """A restore's settings and the config's warnings: -g's, with --latest VM's per-VM file over them
    (settings_for_latest). A config that stops the restore (gone with its NAS, a bad value) is said in the -l file
    too, as `load` says a backup's: read before the restore's log opens, its error went to stderr only, and the
    admin's -l file (cron's output sent to /dev/null) held no line of the run."""
    try:
        settings, warnings = config.load_settings(args.global_conf)
        return settings_for_latest(args, settings, warnings), warnings
    except HotvcbError as err:
        if args.log_file:
            stopped(args.log_file, str(err))
        raise


def settings_for_latest(args, settings: Settings, warnings: List[str]) -> Settings:
    """restore --latest VM's settings: with `--vm-configs DIR` (the backup's -c; restore's own -c is the
    vms_to_restore file) the VM's per-VM file over the global ones, so its newest backup is looked for
    in the VM_BACKUP_VOLUME that file sends it to."""
    if args.confdir and not args.latest:
        raise UsageError("--vm-configs DIR says where --latest VM's backups went; give --latest VM too")
    settings_of = per_vm_settings(settings, args.confdir, warnings)
    return settings if settings_of is None else settings_of(args.latest)


def config_repository(args, settings: Settings) -> str:
    """The repository a restore without --repo reads: the one the config's VM_BACKUP_REPOSITORY names, where
    backup, list and prune look too, for --latest VM or for a BACKUP that is no path here (a backup's id, as
    `list -g` shows it); "" for a folder or .gz restore. Such an id was taken for a folder and called missing,
    of a backup `list -g` had just shown."""
    if args.repo or not settings.vm_backup_repository:
        return ""
    if args.latest or args.backup and "/" not in args.backup and not os.path.exists(args.backup):
        return settings.vm_backup_repository
    return ""


def repository_lister(args, repo: str) -> str:
    """The command that lists the backups of the repository `repo` a restore reads, for its messages: the
    admin who named it by -g's VM_BACKUP_REPOSITORY lists it so (`hotvcb list -g CONF`), not by a --repo
    they never typed."""
    if not args.repo and args.global_conf:
        return "hotvcb list -g %s" % shlex.quote(args.global_conf)
    return "hotvcb list --repo %s" % shlex.quote(repo)


def load(args, prepare: "Optional[Callable[[Any, Settings], Settings]]" = None) -> Tuple[Settings, RunLog]:
    """Settings first (a bad config must fail before anything is logged as started), with the command line
    applied by `prepare` (backup_cmd.prepare). A config or command line that stops the run is said in the -l
    file too (`runlog.stopped`): a cron line ending `>/dev/null 2>&1` left the admin's log without a line of
    those nights. The config's LOG_LEVEL counts with -d (`config.run_level`: `args.level` is the run's level
    from here on)."""
    try:
        settings, warnings = config.load_settings(args.global_conf)
        check_output_paths(args, settings)
        if prepare is not None:
            settings = prepare(args, settings)
    except HotvcbError as err:
        if args.log_file:
            stopped(args.log_file, str(err))
        raise
    args.level = config.run_level(args.level, settings)
    log = RunLog("debug" if args.level == "debug" else "info", path=args.log_file)
    onhost.say_warnings(args, warnings, log.warning)
    return settings, log


def check_output_paths(args, settings: Settings) -> None:
    """-l and --json-report refused on a datastore that is not mounted (`datastorepath`), before any folder
    of theirs is made: the NFS share the run mounts is named as such."""
    nfs = settings.nfs_local_name if settings.enable_non_persistent_nfs else ""
    for option, path in (("-l", args.log_file), ("--json-report", getattr(args, "json_report", None))):
        if path:
            datastorepath.refuse_missing(path, "%s %s" % (option, path), nfs)


DEFAULT_LOGS_KEPT = 20  # of the runs without -l, the newest logs kept in the -w folder (and apart, of dry runs)
DEFAULT_LOG_ROOM = 1 << 20  # free bytes the -w folder needs for one: a night's log of many VMs is some 100 KiB
_DEFAULT_LOG = {False: lazyre.compile(r"hotvcb-\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d-\d+\.log"),
                True: lazyre.compile(r"hotvcb-dryrun-\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d-\d+\.log")}


def default_log(workdir: str, dry_run: bool) -> Tuple[Optional[str], str]:
    """The log file of a backup run without -l: `<-w>/hotvcb-<date>_<time>-<pid>.log` (a dry run's
    `hotvcb-dryrun-...`, kept apart: a day of trying a config out must not push out the real nights' logs),
    beside the runs' work folders (/tmp/hotvcb.work by default); or None and why it cannot be made (a run is
    not stopped for a copy of its log). ghettoVCB always logged to /tmp/ghettoVCB-<date>-<pid>.log and said
    so, and its cron lines (`> /dev/null 2>&1`, no -l) count on it: without one a failed night left nothing
    to read. The newest DEFAULT_LOGS_KEPT are kept: ghettoVCB's piled up in the host's small ramdisk."""
    missing = datastorepath.missing_datastore(workdir)
    if missing:
        return None, "no log file of this run under -w %s: no datastore %s is mounted" % (workdir, missing)
    path = os.path.join(workdir, "hotvcb-%s%s-%d.log" % ("dryrun-" if dry_run else "",
                                                         datetime.now().strftime("%Y-%m-%d_%H-%M-%S"), os.getpid()))
    try:
        os.makedirs(workdir, exist_ok=True)
        room = os.statvfs(workdir)
        if room.f_bavail * room.f_frsize < DEFAULT_LOG_ROOM:  # a full /var: the log lost at its first line (exit 9)
            return None, "no log file of this run under -w %s: less than 1 MiB free there" % workdir
        _prune_default_logs(workdir, dry_run)
        open_log(path).close()
    except (OSError, UsageError) as err:
        return None, "no log file of this run under -w %s: %s" % (workdir, getattr(err, "strerror", None) or err)
    return path, ""


def dry_run_asked(args) -> bool:
    """Whether the run will be a dry run, known before its default log is named (`default_log`): `-d dryrun`,
    or the config's LOG_LEVEL=dryrun (`config.run_level`), which `load` reads only once that log is open. A
    config that does not read is `load`'s to say, in that log: no dry run asked of it here."""
    if args.level == "dryrun":
        return True
    try:
        settings, _warnings = config.load_settings(args.global_conf)
    except HotvcbError:
        return False
    return config.run_level(args.level, settings) == "dryrun"


def _prune_default_logs(workdir: str, dry_run: bool) -> None:
    """Room for one more: the oldest by when they were last written, not by the date in their names - a
    clock that ran ahead for a while names logs later than tonight's, and sorted by name those would stay
    for ever while each run removed the one before it (rotation sets backups named ahead aside for the
    same reason). That clock wrote their times too: a log written ahead of the clock (clockage.dated_ahead)
    has no age to go by and goes first, or it outlived tonight's, removed by tomorrow's run, for a year."""
    now = time.time()

    def written(name: str) -> Tuple[bool, float, str]:
        try:
            mtime = os.lstat(os.path.join(workdir, name)).st_mtime
        except OSError:
            return True, 0.0, name
        return not clockage.dated_ahead(now - mtime), mtime, name
    older = sorted((n for n in os.listdir(workdir) if _DEFAULT_LOG[dry_run].fullmatch(n)), key=written)
    for name in older[:max(len(older) - DEFAULT_LOGS_KEPT + 1, 0)]:
        os.unlink(os.path.join(workdir, name))


def lock_host(host: Hypervisor, log, target: Target, gone: Sequence[str] = ()) -> Tuple[HostLock, RunId]:
    """Take the host's run lock: one run per host, whatever -w or machine it runs from; `gone`: runs SSH mode's
    client found dead by their pid (store/lock.gone_here)."""
    remote = target.ssh is not None
    require_root(host, remote)
    run = RunId.new().with_process_start()  # every record it writes: a reused pid is no owner of its leftovers
    try:
        run = run.on_host(host_id(host.shell, host.run_dir))
        return HostLock(host.shell, host.run_dir, run, log.warning, gone).acquire(), run
    except HostError as err:
        if "ermission denied" in str(err):
            raise LockError(_root_needed(host, remote)) from err
        raise LockError("cannot set up the run lock in %s on the host: %s" % (host.run_dir, err)) from err
    except LockError as err:
        if "ermission denied" in str(err):
            raise LockError(_root_needed(host, remote)) from err
        raise


def connect(target: Target, log: Optional[RunLog] = None) -> Hypervisor:
    """The hypervisor driver for this run: the ESXi host we run on, or the --host one over SSH,
    or (--qemu DIR) the QEMU VMs on this machine, or (--libvirt) its libvirt domains.
    `log` takes what a driver has to say (libvirt: why a backup is full, not incremental; ESXi: that
    the host's release is unknown).

    The work dir, config and list files stay on this machine either way.
    """
    # each driver imported only for its own runs
    if target.libvirt is not None:
        from ..hosts.libvirt import LibvirtHost
        return LibvirtHost(LocalShell(), target.libvirt, log=log)
    if target.qemu is not None:
        if not os.path.isdir(target.qemu):  # a typo is named, not made (the run lock's mkdir -p made it, empty)
            raise UsageError("--qemu %s: no such folder of QMP sockets" % target.qemu)
        from ..hosts.qemu import QemuHost
        return QemuHost(LocalShell(), target.qemu)
    from ..hosts.esxi import EsxiHost
    if target.ssh is None:
        return EsxiHost(LocalShell(), log)
    from ..sshshell import SshShell
    return EsxiHost(SshShell(target.ssh, say=log.info if log is not None else None).open(), log)
