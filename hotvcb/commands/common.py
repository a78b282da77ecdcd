"""What every subcommand that touches a host needs: settings, log, driver."""

import argparse
import os
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Dict, List, NamedTuple, NoReturn, Optional, Sequence, Tuple, Union

from .. import config, datastorepath, lazyre, namelist
from . import onhost
from ..errors import HostError, HotvcbError, LockError, UsageError
from ..hosts.base import Hypervisor
from ..localshell import LocalShell
from ..runid import RunId, host_id, machine_name
from ..runlog import RunLog, open_log, stopped
from ..settings import Settings
from ..store.lock import HostLock

if TYPE_CHECKING:  # imported by the runs that reach a host over SSH (its code and its scripts)
    from ..sshconnection import SshTarget

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


# -- the target: which host (--host, SSH) or hypervisor (--qemu) a command works on --------------
# top-level options that take a value (they may precede ghettoVCB-style flags, and a scheduled
# job's arguments after `--` may hold them too)
GLOBAL_VALUED = ("--host", "--port", "--identity", "--known-hosts", "--ssh-option", "--qemu", "--libvirt")
LIBVIRT_DEFAULT = "qemu:///system"


class Target(NamedTuple):
    """Where a command works: the ESXi host we run on (both None), one over SSH, or QEMU here."""

    ssh: "Optional[SshTarget]" = None
    qemu: Optional[str] = None  # the QMP socket folder
    libvirt: Optional[str] = None  # the libvirt URI

    def __bool__(self) -> bool:
        return self.ssh is not None or self.qemu is not None or self.libvirt is not None

    def name(self) -> str:
        """The host a run's report and mail name (`hotvcb <host> <job>: ...`) until the host says its own
        name: the SSH host as given, else this machine (the ESXi host we run on, or the KVM machine)."""
        return self.ssh.hostname if self.ssh is not None else machine_name()


class StoreOnce(argparse._StoreAction):  # noqa: SLF001 - argparse's own "store", which this only checks first
    """An option that takes one value, given twice with two values, is refused naming both: argparse kept the
    last, so `--qemu A --qemu B` (a wrapper adding its own) worked on B's VMs without a word. Options sharing
    one value (backup's `--json-report` and its older `--json`) are one option here. A path given twice in
    two spellings of one place (`--qemu D --qemu D/`, `-g c.conf -g ./c.conf`) is one value: a wrapper
    adding what its cron line already says worked until the check came (`same_value`)."""

    def __call__(self, parser, namespace, values, option_string=None):
        given = vars(namespace).setdefault(_GIVEN, {})  # type: Dict[str, Any]
        if self.dest in given and not same_value(self.metavar, given[self.dest], values):
            names = [o for a in parser._actions if a.dest == self.dest for o in a.option_strings]  # noqa: SLF001
            parser.error("%s given twice, %r and %r: give it once" % ("/".join(names), given[self.dest], values))
        given[self.dest] = values
        super().__call__(parser, namespace, values, option_string)


PATH_METAVARS = ("FILE", "DIR", "PATH")  # the options whose value names a place on this machine


def same_value(metavar: Union[str, Tuple[str, ...], None], first: Any, second: Any) -> bool:
    """Whether an option's two values are one: equal, or for a path (by its metavar) one place. Existing,
    the same file or folder (os.path.samefile: a trailing '/', `./`, a symlink); else the same path once
    made absolute and normalised (a log or report file a run is yet to write)."""
    if first == second:
        return True
    if metavar not in PATH_METAVARS or not isinstance(first, str) or not isinstance(second, str):
        return False
    try:
        return os.path.samefile(first, second)
    except OSError:  # one of them does not exist (yet)
        return os.path.normpath(os.path.abspath(first)) == os.path.normpath(os.path.abspath(second))


_GIVEN = "_hotvcb_given"  # the values StoreOnce has seen in one parse, dropped when the parse ends


class RefusesEmptyValues(argparse.ArgumentParser):
    """argparse that refuses an option given an empty value (`--volume "$VOL"` with $VOL unset): read as
    the option not given, `--volume ""` listed the configured volume and `--repo ""` backed up to it.
    An option whose own meaning is "" (restore's bare `--libvirt`) keeps it. An empty argument is the same
    mistake: `list "$VM"` listed every VM's backups, and a script restored another VM's newest. An option
    that takes one value takes it once (`StoreOnce`)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register("action", None, StoreOnce)
        self.register("action", "store", StoreOnce)

    def _get_option_tuples(self, option_string):
        """As argparse, but an abbreviation means an undocumented option only when nothing else matches
        (`abbreviated`)."""
        found = super()._get_option_tuples(option_string)
        if not option_string.startswith("--") or len(found) < 2:
            return found
        shown = [t for t in found if t[0].help is not argparse.SUPPRESS]
        return shown or found

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        namespace, extras = super().parse_known_args(args, namespace)
        vars(namespace).pop(_GIVEN, None)
        for action in self._actions:  # noqa: SLF001 - argparse offers no public list of options
            value = getattr(namespace, action.dest, None)
            given = value if isinstance(value, list) else [value]
            if not action.option_strings and "" in given:
                self.error("argument %s: an empty value (a variable left empty?) names nothing" % action.metavar)
            if action.option_strings and "" not in (action.default, action.const) and "" in given:
                self.error("argument %s: an empty value (a variable left empty?) names nothing; give %s or leave "
                           "the option out" % ("/".join(action.option_strings), action.metavar or "a value"))
            blank = [v for v in given if isinstance(v, str) and v and not v.strip()]
            if blank and action.default != blank[0]:  # `-l " "` wrote the log to a file named " "
                self.error("argument %s: a blank value %r (only white space) names nothing; give %s or leave "
                           "the option out" % ("/".join(action.option_strings) or action.metavar, blank[0],
                                               action.metavar or "a value"))
        self._refuse_one_list_both_ways(namespace)
        return namespace, extras

    def _refuse_one_list_both_ways(self, namespace) -> None:
        """`-f L -e L`: every VM the list names is to be backed up and left out. A named pipe given both ways
        is read twice, and its one writer's lines go to whichever read came first: the run did what neither
        list said. Two spellings of one file count (`same_value`)."""
        vm_list, exclude = getattr(namespace, "vm_list", None), getattr(namespace, "exclude", None)
        if vm_list and exclude and same_value("FILE", vm_list, exclude):
            self.error("-f %s and -e %s are one file: its VMs would be both chosen and left out; give the "
                       "VMs to choose and those to leave out in two files" % (vm_list, exclude))


class RaisingParser(RefusesEmptyValues):
    """argparse whose errors are UsageErrors (one line through the CLI), never SystemExit + chatter."""

    def error(self, message: str):
        raise UsageError(message.replace(DOUBLE_DASH, " --"))  # `-m --` as typed, not glue_dash_values' marker


def add_target_options(parser: argparse.ArgumentParser) -> None:
    remote = parser.add_argument_group(
        "SSH remote mode", "run the job from this machine against an ESXi host over SSH "
        "(OpenSSH client; host keys must already be in known_hosts)")
    remote.add_argument("--host", metavar="USER@HOST[:PORT]", help="the ESXi host to work on, e.g. root@esxi01, "
                        "root@esxi01:2222, root@[fe80::1]:2222")
    remote.add_argument("--port", type=_port_option, metavar="N", help="its SSH port (default 22)")
    remote.add_argument("--identity", metavar="FILE", help="private key to log in with")
    remote.add_argument("--known-hosts", metavar="FILE", help="known_hosts file holding the host's key")
    remote.add_argument("--ssh-option", metavar="OPT", action="append", default=[],
                        help="extra ssh -o option, e.g. ConnectTimeout=5 (repeatable)")
    parser.add_argument("--qemu", metavar="DIR", help="back up the QEMU/KVM VMs on this machine whose QMP "
                        "sockets are DIR/<VM name>.qmp (instead of ESXi)")
    parser.add_argument("--libvirt", metavar="URI", help="back up the libvirt domains on this machine through "
                        "libvirt's backup API (URI default %s)" % LIBVIRT_DEFAULT)


# ghettoVCB's getopts takes the word after these flags as their value, whatever it
# starts with; argparse would read `-m -web-` as two flags. The same for the options
# that take a VM's display name.
_GETOPTS_VALUED = ("-m", "-f", "-e", "-c", "-g", "-l", "-w", "-j")
_NAME_VALUED = ("--latest", "--name")


def options_of(parser: argparse.ArgumentParser) -> Dict[str, argparse.Action]:
    """{option string: its action} of `parser`, as `option_of` reads words against them."""
    return {o: a for a in parser._actions for o in a.option_strings}  # noqa: SLF001 - no public list


def abbreviated(prefix: str, options: Dict[str, argparse.Action]) -> List[argparse.Action]:
    """The long options `prefix` may abbreviate. An undocumented one (help=SUPPRESS: backup's `--json FILE`,
    kept for older jobs) is meant only as typed, unless nothing else matches: `--j FILE`, which jobs have
    had for --json-report, must not turn ambiguous."""
    found = [options[o] for o in options if o.startswith("--") and o.startswith(prefix)]
    shown = [a for a in found if a.help is not argparse.SUPPRESS]
    return shown or found


def option_of(word: str, options: Dict[str, argparse.Action]) -> Optional[Tuple[argparse.Action, str, Optional[str]]]:
    """(the option, the word up to its glued value, that value or None) as argparse reads `word`, or None
    for a word that is no option. Of a bundle of short flags (`-ag FILE`) the last one counts: the flags
    before it take no value."""
    if len(word) < 2 or word[0] != "-":
        return None
    if word in options:
        return options[word], word, None
    flag, eq, value = word.partition("=")
    if eq and flag in options:  # `-g=FILE`, `--json-report=FILE`
        return options[flag], flag + "=", value
    if word.startswith("--"):  # a unique prefix of a long option (argparse's allow_abbrev, as abbreviated)
        hits = set(abbreviated(flag, options))
        if len(hits) == 1:
            return hits.pop(), flag + eq, value if eq else None
        return None
    at = 1
    while at < len(word) and "-" + word[at] in options:  # `-gFILE`, `-agFILE`
        action = options["-" + word[at]]
        if action.nargs != 0 or at + 1 == len(word):
            return action, word[:at + 1], word[at + 1:] or None
        at += 1
    return None


# argparse drops a value that is `--` (`-m--`, `-m=--`: _get_values removes it), so `-m --` is glued with
# this instead and `unglue` gives the parsed value back; a NUL cannot come from a command line
DOUBLE_DASH = "\0--"


def glue_dash_values(argv: List[str]) -> List[str]:
    """`-m -name` -> `-m-name`, which argparse reads as the value `-name` (ghettoVCB's meaning); `-m --`
    (the VM named `--`) -> `-m` + DOUBLE_DASH, read back by `unglue`: glued as `-m--`, argparse read it
    as no value at all, so the run looked for a VM named '[]' and `schedule install` ended in an
    internal error.

    Here, not in cli.py: a scheduled job's words after `--` are read as its run will read them
    (`schedule_cmd.split_job_args`), or `schedule install … -- -m -web` refused the job that
    `backup -m -web` runs."""
    out = []  # type: List[str]
    i = 0
    while i < len(argv):
        if argv[i] == "--":
            return out + argv[i:]
        if argv[i] in _GETOPTS_VALUED + _NAME_VALUED and i + 1 < len(argv) and argv[i + 1].startswith("-") \
                and argv[i + 1] != "-":
            value = DOUBLE_DASH if argv[i + 1] == "--" else argv[i + 1]
            out.append(argv[i] + ("=" if argv[i].startswith("--") else "") + value)
            i += 2
            continue
        out.append(argv[i])
        i += 1
    return out


def unglue(args: argparse.Namespace) -> argparse.Namespace:
    """The parsed values as given: DOUBLE_DASH (`glue_dash_values`) is `--` again."""
    for key, value in vars(args).items():
        if value == DOUBLE_DASH:
            setattr(args, key, "--")
        elif isinstance(value, list) and DOUBLE_DASH in value:
            setattr(args, key, ["--" if v == DOUBLE_DASH else v for v in value])
    return args


def is_uri(word: str) -> bool:
    return "://" in word


def libvirt_value(following: List[str]) -> bool:
    """Whether the word after a global `--libvirt` (`following`: the words after it) is its URI: one, or an
    empty word (`--libvirt "$URI"`, refused as every empty value is, not taken for the command)."""
    return bool(following) and (is_uri(following[0]) or following[0] == "")


def libvirt_uri_given(argv: List[str]) -> List[str]:
    """`--libvirt` takes an optional URI: `--libvirt backup -m web` means the default one.
    `argv`: global options only (those before the subcommand, or a scheduled job's). `--libvirt ""` (a
    variable left empty) stays, for the parser to refuse as every empty value is refused."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--libvirt" and not libvirt_value(out[i + 1:]):
            out[i] = "--libvirt=" + LIBVIRT_DEFAULT
    return out


def target_of(args) -> Target:
    """The Target the parsed global options name; UsageError for combinations that make no sense."""
    host, qemu = getattr(args, "host", None), getattr(args, "qemu", None)
    port, identity = getattr(args, "port", None), getattr(args, "identity", None)
    known_hosts, options = getattr(args, "known_hosts", None), list(getattr(args, "ssh_option", None) or [])
    libvirt = getattr(args, "libvirt", None)
    given = [opt for opt, value in (("--qemu", qemu), ("--libvirt", libvirt), ("--host", host)) if value]
    if len(given) > 1:
        raise UsageError("%s exclude each other" % " and ".join(given))
    if host is not None:
        return Target(_ssh_target(host, port, identity, known_hosts, tuple(options)), None)
    if (port or identity or known_hosts or options) and not getattr(args, "hosts", None):
        raise UsageError("--port, --identity, --known-hosts and --ssh-option need --host")
    return Target(None, qemu, libvirt)


def _ssh_target(host: str, port: Optional[int], identity: Optional[str], known_hosts: Optional[str],
                options: Tuple[str, ...]):
    """`--host` read as a `--hosts` file's line is (`host_and_port`): `root@esxi01:2222` and `root@[fe80::1]`
    reached ssh as they stood, a host name ssh failed to resolve or resolved to a host nobody meant."""
    # `--host root@` (a variable left empty in a script) is refused with the rest: `schedule` named its
    # job `hotvcb`, the one every job had before jobs were named after hosts (`remove` removed that one)
    dest, given = host_and_port(host, "--host")
    if given is not None and port is not None and given != port:
        raise UsageError("--host %s names port %d and --port %d another: give the port once" % (host, given, port))
    from ..sshconnection import SshTarget
    return SshTarget(dest, port if given is None else given, identity, known_hosts, options)


def targets_in(path: str, args) -> List[Tuple[str, Target]]:
    """`status --hosts FILE`: one `[user@]host[:port]` a line (`#` comments), each reached over
    SSH with the global --identity/--known-hosts/--ssh-option; --port is the default port.
    An IPv6 address is written as `--host` takes it (`root@fe80::1`, no port then) or in brackets
    (`root@[fe80::1]`, `root@[fe80::1]:2222`)."""
    from ..sshconnection import SshTarget
    out = []
    for number, line in namelist.read_listed_numbered(path, "host"):
        line = line.split("#", 1)[0].rstrip()  # `root@esxi01  # rack 3`: no host name holds a '#'
        if not line:
            continue
        dest, port = host_and_port(line, "%s:%d:" % (config.shown_as(path), number))
        port = getattr(args, "port", None) if port is None else port
        out.append((line, Target(SshTarget(dest, port, getattr(args, "identity", None),
                                           getattr(args, "known_hosts", None),
                                           tuple(getattr(args, "ssh_option", None) or ())), None)))
    return out


def refuse_option_as_host(host: str, given: str) -> None:
    """A host name never starts with '-': such a value (`--host=$ESXI` holding `-oProxyCommand=...`, a
    piece of an ssh command line) would reach ssh as one of its options, not as the host to log in to."""
    if host.startswith("-"):
        raise UsageError("%s %r is not a host: it starts with '-', so ssh would read it as an option; give "
                         "[USER@]HOST, e.g. root@esxi01 (ssh options go in --ssh-option)" % (given, host))


HOST_FORMS = "[USER@]HOST[:PORT], e.g. root@esxi01, root@esxi01:2222, root@[fe80::1]:2222"
_BRACKETED = lazyre.compile(r"^\[([^\[\]]*)\](?::(.*))?$")
_IPV6 = lazyre.compile(r"^[0-9A-Fa-f:.]+(%\S+)?$")  # `fe80::1%vmk0`: the zone after '%' is the host's to say


def host_and_port(value: str, given: str) -> Tuple[str, Optional[int]]:
    """`[user@]host[:port]` -> (`[user@]host`, port or None); anything else is a UsageError naming `given`
    (`--host`, or a `--hosts` file's `FILE:LINE:`) and the value. Passed through, `@esx1`, `esx1:`,
    `esx1:abc` or `root@[::1` reached ssh as host names: the admin read "cannot connect" or a line of ssh's
    usage text, as if the host were down. A host with more than one `:` is an IPv6 address without a port:
    its last group was taken for one (`root@::1` became `root@:` port 1), so it needs brackets for a port."""
    user, at, host = value.rpartition("@")

    def refuse(why: str) -> NoReturn:
        raise UsageError("%s %r: %s; give %s" % (given, value, why, HOST_FORMS))
    refuse_option_as_host(value, given)
    if at and not user:
        refuse("names no user before its '@'")
    if not host:
        refuse("names no host")
    if any(c.isspace() for c in value):
        refuse("holds white space")
    bracketed = _BRACKETED.match(host)
    if bracketed:
        address, port = bracketed.group(1), bracketed.group(2)
        if not address:
            refuse("names no address in its brackets")
    elif "[" in host or "]" in host:
        refuse("has a bracket without its pair")
    elif host.count(":") > 1:
        if not _IPV6.match(host):
            refuse("is neither HOST:PORT nor an IPv6 address")
        address, port = host, None
    else:
        address, _, port = host.partition(":")
        port = port if ":" in host else None
        if not address:
            refuse("names no host before its ':'")
    if port is None:
        return user + at + address, None
    if not port:
        refuse("names no port after its ':'")
    try:
        return user + at + address, port_number(port)
    except ValueError as e:
        refuse(str(e))


def port_number(text: str) -> int:
    """An SSH port: a number 1-65535. ssh says "Bad port" of any other, which a run reported as a host it
    cannot connect to (status UNKNOWN, as for a host that is down) instead of a mistyped command line."""
    if not text.isdigit() or not text.isascii():
        raise ValueError("port %r is no number" % text)
    if not 0 < int(text) <= 65535:
        raise ValueError("port %s is out of range (1-65535)" % text)
    return int(text)


def _port_option(text: str) -> int:
    """`--port N` read by argparse: `port_number`, its refusal argparse's usage error."""
    try:
        return port_number(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e))


def target_argv(target: Target, absolute) -> List[str]:
    """The global options that reach `target` again (a scheduled run), paths made absolute by `absolute`."""
    if target.qemu:
        return ["--qemu", absolute(target.qemu)]
    if target.libvirt:
        return ["--libvirt", target.libvirt]
    ssh = target.ssh
    if ssh is None:
        return []
    out = ["--host", ssh.destination]
    if ssh.port:
        out += ["--port", str(ssh.port)]
    if ssh.identity:
        out += ["--identity", absolute(ssh.identity)]
    if ssh.known_hosts:
        out += ["--known-hosts", absolute(ssh.known_hosts)]
    for opt in ssh.options:
        out += ["--ssh-option", opt]
    return out


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


def settings_for_latest(args, settings: Settings, warnings: List[str]) -> Settings:
    """restore --latest VM's settings: with `--vm-configs DIR` (the backup's -c; restore's own -c is the
    vms_to_restore file) the VM's per-VM file over the global ones, so its newest backup is looked for
    in the VM_BACKUP_VOLUME that file sends it to."""
    if args.confdir and not args.latest:
        raise UsageError("--vm-configs DIR says where --latest VM's backups went; give --latest VM too")
    settings_of = per_vm_settings(settings, args.confdir, warnings)
    return settings if settings_of is None else settings_of(args.latest)


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


DEFAULT_LOGS_KEPT = 20  # of the runs without -l, the newest logs kept in the -w folder
DEFAULT_LOG_ROOM = 1 << 20  # free bytes the -w folder needs for one: a night's log of many VMs is some 100 KiB
_DEFAULT_LOG = lazyre.compile(r"hotvcb-\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d-\d+\.log")


def default_log(workdir: str) -> Optional[str]:
    """The log file of a backup run without -l: `<-w>/hotvcb-<date>_<time>-<pid>.log`, beside the runs'
    work folders (/tmp/hotvcb.work by default), or None where it cannot be made (a run is not stopped
    for a copy of its log). ghettoVCB always logged to /tmp/ghettoVCB-<date>-<pid>.log and said so, and
    its cron lines (`> /dev/null 2>&1`, no -l) count on it: without one a failed night left nothing to
    read. The newest DEFAULT_LOGS_KEPT are kept: ghettoVCB's piled up in the host's small ramdisk."""
    if datastorepath.missing_datastore(workdir):
        return None  # WorkDir says why it is not used
    path = os.path.join(workdir, "hotvcb-%s-%d.log" % (datetime.now().strftime("%Y-%m-%d_%H-%M-%S"), os.getpid()))
    try:
        os.makedirs(workdir, exist_ok=True)
        room = os.statvfs(workdir)
        if room.f_bavail * room.f_frsize < DEFAULT_LOG_ROOM:
            return None  # a full /var: the log would be lost at its first line (exit 9), an empty file left
        older = sorted(n for n in os.listdir(workdir) if _DEFAULT_LOG.fullmatch(n))
        for name in older[:max(len(older) - DEFAULT_LOGS_KEPT + 1, 0)]:
            os.unlink(os.path.join(workdir, name))
        open_log(path).close()
    except (OSError, UsageError):
        return None
    return path


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
    return EsxiHost(SshShell(target.ssh).open(), log)
