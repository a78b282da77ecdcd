"""Entry point: parse, dispatch, and map every error to a message and exit code.

Exit codes (DESIGN.md §3): 0 all OK or dry run, 3 some disks failed, 4 some
VMs failed, 5 some VMs and some disks, 6 all failed, 7 none backed up,
8 every VM partly failed, 1 usage/config/lock, 2 interrupted by a signal.
"""

import argparse
import sys
import traceback
from typing import List, Optional

from . import __version__
from .commands import backup_cmd, cleanup_cmd, list_cmd, restore_cmd, schedule_cmd, verify_cmd
from .errors import HotvcbError

COMMANDS = (backup_cmd, cleanup_cmd, schedule_cmd, restore_cmd, list_cmd, verify_cmd)


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
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for module in COMMANDS:
        module.register(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version"):
        argv.insert(0, "backup")  # ghettoVCB style: flags only
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 1
    debug = getattr(args, "level", "") == "debug"
    try:
        return args.handler(args)
    except HotvcbError as err:
        if debug:
            traceback.print_exc()
        print("hotvcb: error: %s" % err, file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("hotvcb: interrupted", file=sys.stderr)
        return 2
    except Exception as err:  # the one place an unexpected error becomes a line
        if debug:
            traceback.print_exc()
        print("hotvcb: internal error: %s: %s (run with -d debug for details)" % (type(err).__name__, err), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
