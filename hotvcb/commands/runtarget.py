"""The target: which host (--host, SSH) or hypervisor (--qemu, --libvirt) a command works on, from the
global options (`add_target_options`, `target_of`), a `--hosts` file (`targets_in`), and back to options
for a scheduled run (`target_argv`)."""

import argparse
from typing import TYPE_CHECKING, List, NamedTuple, Optional, Tuple

from .. import adminfile, namelist
from ..errors import UsageError
from ..runid import machine_name
from .sshhost import host_and_port, port_option

if TYPE_CHECKING:  # imported by the runs that reach a host over SSH (its code and its scripts)
    from ..sshconnection import SshTarget


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

def add_target_options(parser: argparse.ArgumentParser) -> None:
    remote = parser.add_argument_group(
        "SSH remote mode", "run the job from this machine against an ESXi host over SSH "
        "(OpenSSH client; host keys must already be in known_hosts)")
    remote.add_argument("--host", metavar="USER@HOST[:PORT]", help="the ESXi host to work on, e.g. root@esxi01, "
                        "root@esxi01:2222, root@[fe80::1]:2222")
    remote.add_argument("--port", type=port_option, metavar="N", help="its SSH port (default 22)")
    remote.add_argument("--identity", metavar="FILE", help="private key to log in with")
    remote.add_argument("--known-hosts", metavar="FILE", help="known_hosts file holding the host's key")
    remote.add_argument("--ssh-option", metavar="OPT", action="append", default=[],
                        help="extra ssh -o option, e.g. ConnectTimeout=5 (repeatable)")
    parser.add_argument("--qemu", metavar="DIR", help="back up the QEMU/KVM VMs on this machine whose QMP "
                        "sockets are DIR/<VM name>.qmp (instead of ESXi)")
    parser.add_argument("--libvirt", metavar="URI", help="back up the libvirt domains on this machine through "
                        "libvirt's backup API (URI default %s)" % LIBVIRT_DEFAULT)


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
    out = []  # type: List[Tuple[str, Target]]
    for number, listed in namelist.read_listed_numbered(path, "host", inline_comments=True):
        line = listed.rstrip()  # the comment cut (`root@esxi01  # rack 3`), a non-breaking space at the end too
        if not line or line in (host for host, _ in out):  # `esxi01` and `esxi01 `: one host, checked once
            continue
        dest, port = host_and_port(line, "%s:%d:" % (adminfile.shown_as(path), number))
        port = getattr(args, "port", None) if port is None else port
        out.append((line, Target(SshTarget(dest, port, getattr(args, "identity", None),
                                           getattr(args, "known_hosts", None),
                                           tuple(getattr(args, "ssh_option", None) or ())), None)))
    return out


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
