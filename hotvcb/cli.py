"""Entry point: parse, dispatch, and map every error to a message and exit code.

Exit codes (as README.md states them): 0 all OK or dry run, 3 some disks failed, 4 some
VMs failed, 5 some VMs and some disks, 6 all failed, 7 none backed up,
8 every VM partly failed, 1 usage/config/lock, 2 interrupted by a signal.
"""

import argparse
import sys
import traceback
from typing import List, Optional

from . import __version__
from .commands import backup_cmd, cleanup_cmd, common, list_cmd, restore_cmd, schedule_cmd, status_cmd, verify_cmd
from .errors import HotvcbError, Interrupted
from .sshshell import SshTarget

COMMANDS = (backup_cmd, cleanup_cmd, schedule_cmd, restore_cmd, list_cmd, verify_cmd, status_cmd)
# top-level options that take a value (they may precede ghettoVCB-style flags)
_GLOBAL_VALUED = ("--host", "--port", "--identity", "--known-hosts", "--ssh-option", "--qemu")


class _Parser(argparse.ArgumentParser):
    """Usage errors exit 1 as ghettoVCB's did (argparse would use 2 = signal)."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(1, "%s: error: %s\n" % (self.prog, message))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="hotvcb",
        description="Hot backups of running VMs, ghettoVCB-compatible. "
        "`hotvcb -a -g FILE` works like `ghettoVCB.sh -a -g FILE`.",
    )
    parser.add_argument("--version", action="version", version="hotvcb " + __version__)
    remote = parser.add_argument_group(
        "SSH remote mode", "run the job from this machine against an ESXi host over SSH "
        "(OpenSSH client; host keys must already be in known_hosts)")
    remote.add_argument("--host", metavar="USER@HOST", help="the ESXi host to work on, e.g. root@esxi01")
    remote.add_argument("--port", type=int, metavar="N", help="its SSH port (default 22)")
    remote.add_argument("--identity", metavar="FILE", help="private key to log in with")
    remote.add_argument("--known-hosts", metavar="FILE", help="known_hosts file holding the host's key")
    remote.add_argument("--ssh-option", metavar="OPT", action="append", default=[],
                        help="extra ssh -o option, e.g. ConnectTimeout=5 (repeatable)")
    parser.add_argument("--qemu", metavar="DIR", help="back up the QEMU/KVM VMs on this machine whose QMP "
                        "sockets are DIR/<VM name>.qmp (instead of ESXi)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for module in COMMANDS:
        module.register(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    first = _skip_global_options(argv)
    if first < len(argv) and argv[first].startswith("-") and argv[first] not in ("-h", "--help", "--version"):
        argv.insert(first, "backup")  # ghettoVCB style: flags only
    argv = _glue_dash_values(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 1
    if args.qemu and args.host:
        parser.error("--qemu and --host exclude each other")
    common.use_qemu(args.qemu)
    if args.host:
        common.use_remote(SshTarget(args.host, args.port, args.identity, args.known_hosts,
                                    tuple(args.ssh_option)))
    elif args.port or args.identity or args.known_hosts or args.ssh_option:
        parser.error("--port, --identity, --known-hosts and --ssh-option need --host")
    else:
        common.use_remote(None)
    debug = getattr(args, "level", "") == "debug"
    try:
        return args.handler(args)
    except HotvcbError as err:
        if debug:
            traceback.print_exc()
        print("hotvcb: error: %s" % err, file=sys.stderr)
        return err.exit_code
    except Interrupted as err:
        print("hotvcb: %s" % err, file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("hotvcb: interrupted", file=sys.stderr)
        return 2
    except Exception as err:  # the one place an unexpected error becomes a line
        if debug:
            traceback.print_exc()
        print("hotvcb: internal error: %s: %s (run with -d debug for details)" % (type(err).__name__, err), file=sys.stderr)
        return 1


# ghettoVCB's getopts takes the word after these flags as their value, whatever it
# starts with; argparse would read `-m -web-` as two flags. The same for the options
# that take a VM's display name.
_GETOPTS_VALUED = ("-m", "-f", "-e", "-c", "-g", "-l", "-w", "-j")
_NAME_VALUED = ("--latest", "--name")


def _glue_dash_values(argv: List[str]) -> List[str]:
    """`-m -name` -> `-m-name`, which argparse reads as the value `-name` (ghettoVCB's meaning)."""
    out = []  # type: List[str]
    i = 0
    while i < len(argv):
        if argv[i] == "--":
            return out + argv[i:]
        if argv[i] in _GETOPTS_VALUED + _NAME_VALUED and i + 1 < len(argv) and argv[i + 1].startswith("-") \
                and argv[i + 1] != "-":
            out.append(argv[i] + ("=" if argv[i].startswith("--") else "") + argv[i + 1])
            i += 2
            continue
        out.append(argv[i])
        i += 1
    return out


def _skip_global_options(argv: List[str]) -> int:
    """Index of the first argument after the leading top-level (SSH) options."""
    i = 0
    while i < len(argv):
        if argv[i] in _GLOBAL_VALUED:
            i += 2
        elif argv[i].split("=", 1)[0] in _GLOBAL_VALUED:
            i += 1
        else:
            break
    return i


if __name__ == "__main__":
    sys.exit(main())
