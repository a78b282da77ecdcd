"""Entry point: parse, dispatch, and map every error to a message and exit code.

Exit codes (as README.md states them): 0 all OK or dry run, 3 some disks failed (or are in no
backup: independent, physical RDM; jobs/outcome.py), 4 some
VMs failed, 5 some VMs and some disks, 6 all failed, 7 none backed up,
8 every VM partly failed, 1 usage/config/lock, 2 interrupted by a signal, 9 all OK but the log
could not be written everywhere (runlog.LOG_LOST), or the NFS share UNMOUNT_NFS=1 unmounts is still
mounted; either way an otherwise OK run's status starts with the warning (runlog.with_warning).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Dict, List, Optional, Tuple

from . import __version__, interrupt
from .commands import cmdline, onhost, runtarget
from .errors import HotvcbError, Interrupted, UsageError
from .runlog import say, say_json

# each is commands/<name>_cmd.py, imported only when its name is the command given (or for help and
# usage errors, all; for --version, none): a `backup` run does not load restore, verify and the
# repository's code first
COMMANDS = ("backup", "cleanup", "schedule", "restore", "list", "verify", "status", "prune")
_GLOBAL_VALUED = runtarget.GLOBAL_VALUED


class _BadCommandLine(SystemExit):
    """argparse's exit for a bad command line, carrying its message: `status --json` owes its monitor
    the UNKNOWN document on stdout for it too (main)."""

    def __init__(self, code: int, message: str):
        super().__init__(code)
        self.message = message


class _Parser(cmdline.RefusesEmptyValues):
    """Usage errors exit 1 as ghettoVCB's did (argparse would use 2 = signal); `status` is a
    monitoring plugin, for which a bad command line is UNKNOWN (3)."""

    usage_exit = 1

    def error(self, message: str):
        """argparse's messages quote what the user typed (`unrecognized arguments: ...`): printed
        through `say` like every other line, so an escape sequence in an argument stays text."""
        self.print_usage(sys.stderr)
        message = message.replace(cmdline.DOUBLE_DASH, " --")  # `-m --` as typed, not glue_dash_values' marker
        say("%s: error: %s" % (self.prog, message), stream=sys.stderr)
        raise _BadCommandLine(self.usage_exit, message)


def build_parser(command: Optional[str] = None) -> argparse.ArgumentParser:
    parser = _Parser(
        prog="hotvcb",
        description="Hot backups of running VMs, ghettoVCB-compatible. "
        "`hotvcb -a -g FILE` works like `ghettoVCB.sh -a -g FILE`.",
    )
    parser.add_argument("--version", action="version", version="hotvcb " + __version__)
    runtarget.add_target_options(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    # argparse prints the version and exits at the flag itself, before it looks at any subcommand
    names = [command] if command in COMMANDS else [] if command == "--version" else COMMANDS
    for name in names:
        importlib.import_module("%s.commands.%s_cmd" % (__package__, name)).register(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    _no_writable_by_others()
    argv = list(sys.argv[1:] if argv is None else argv)
    first, stray = _skip_global_options(argv)
    if stray is None and first < len(argv) and argv[first].startswith("-") and argv[first] not in ("-h", "--help", "--version"):
        # ghettoVCB-style flags take their values first: `hotvcb -m backup -g F` backs up the VM "backup"
        at = _command_at(argv, _backup_words_end(argv, first) if _is_backup_option(argv[first]) else first)
        if at < len(argv):  # options before a command are its own, or a usage error: never a backup's
            stray, argv, first = _before_command(argv, first, at)
        elif _is_backup_option(argv[first]):  # ghettoVCB style: flags only, the target maybe appended
            from .commands import backup_cmd

            glob, rest = backup_cmd.split_global_options(argv[first:])
            argv, first = argv[:first] + glob + ["backup"] + rest, first + len(glob)
        else:
            stray, first = _stray(argv[first]), at
    argv = cmdline.glue_dash_values(argv)  # first: `-m --libvirt` is the VM named --libvirt
    argv = runtarget.libvirt_uri_given(argv[:first]) + argv[first:first + 1] + _bare_libvirt_last(argv[first + 1:])
    parser = build_parser(argv[first] if first < len(argv) else None)
    # a monitoring plugin's UNKNOWN for a run that could not tell (a bad command line, an internal error, a
    # signal): 1 and 2 are WARN and CRIT to Nagios, which they are not
    unknown = 3 if first < len(argv) and argv[first] == "status" else None
    if unknown is not None:
        parser.usage_exit = unknown  # type: ignore[attr-defined]
    try:
        if stray is not None:
            parser.error(stray)
        args = _parse(parser, argv)
    except _BadCommandLine as err:
        if unknown is not None and _asks_json(argv):  # operations.md: UNKNOWN's JSON, whatever the cause
            say_json({"status": "UNKNOWN", "message": err.message, "checks": []})
        raise
    if args is None:
        parser.print_help()
        return 1
    debug = getattr(args, "level", "") == "debug"
    try:
        with interrupt.scope(getattr(args, "catches_signals", False)):
            return args.handler(args)
    except HotvcbError as err:
        if debug:
            import traceback  # linecache, tokenize: only a debug run's error needs it

            traceback.print_exc()
        say("hotvcb: error: %s" % err, stream=sys.stderr)
        return err.exit_code
    except Interrupted as err:
        say("hotvcb: %s" % err, stream=sys.stderr)
        return unknown or err.exit_code
    except KeyboardInterrupt:
        say("hotvcb: interrupted", stream=sys.stderr)
        return unknown or 2
    except Exception as err:  # the one place an unexpected error becomes a line
        if debug:
            import traceback

            traceback.print_exc()
        say("hotvcb: internal error: %s: %s (run with -d debug for details)" % (type(err).__name__, err), stream=sys.stderr)
        return unknown or 1


def _parse(parser: argparse.ArgumentParser, argv: List[str]) -> Optional[argparse.Namespace]:
    """The parsed command line with its target, or None when it names no command; a bad one raises
    _BadCommandLine (its usage and message said)."""
    args = cmdline.unglue(parser.parse_args(argv))
    if not getattr(args, "handler", None):
        return None
    try:
        args.host_target = runtarget.target_of(args)  # the run's context, passed down; no module globals
        onhost.adopt_client_names(args)  # a hidden option given by hand: a usage error, not a traceback
    except UsageError as err:
        parser.error(str(err))
    return args


def _asks_json(words: List[str]) -> bool:
    """Whether a command line asks for --json, before its command (`--json -d debug status`: -d is what is
    wrong, and the monitor still owes its JSON) or after it (argparse takes any unambiguous prefix, `--js`)."""
    return any(w.startswith("--j") and "--json".startswith(w) for w in words)


def _no_writable_by_others() -> None:
    """A run from a cron or shell with umask 000 must still create nothing group- or world-writable:
    the host's kept release and id in /var/run are believed for the whole boot, and logs, records,
    locks and backups are trusted by the next run. So 022 is added to whatever mask hotvcb is given
    (a stricter one stays); over SSH the host's commands get the same (`sshscripts.snippet`)."""
    os.umask(os.umask(0o022) | 0o022)


def _is_backup_option(word: str) -> bool:
    """Whether `word`, leading the command line, is one of the backup's options (`hotvcb -a -g F` is
    `backup -a -g F`). Any other was taken for one too: `hotvcb --jsn status --json` (a typo of a global
    option) ran as a backup and failed on its words, exit 1 and no JSON for the monitor."""
    from .commands import backup_cmd

    return cmdline.option_of(word, cmdline.options_of(backup_cmd.parser())) is not None


def _backup_words_end(argv: List[str], first: int) -> int:
    """Index of the first word from `first` on that the backup's own options do not take, their values
    included. A VM named like a command (`-m backup`, `-m status`: a backup server VM) is the value of -m,
    as ghettoVCB's getopts read it, not the command."""
    from .commands import backup_cmd

    return _options_end(argv, first, cmdline.options_of(backup_cmd.parser()))


def _options_end(argv: List[str], first: int, options: Dict[str, argparse.Action]) -> int:
    """Index of the first word from `first` on that `options` (or the global ones, by their names) do not
    take, their values included."""
    i = first
    while i < len(argv) and argv[i] != "--":
        hit = cmdline.option_of(argv[i], options)
        if hit is None and argv[i].split("=", 1)[0] not in _GLOBAL_VALUED:
            break
        i += 1 + (_takes(hit[0], hit[2], argv[i + 1:]) if hit is not None else _global_takes(argv[i], argv[i + 1:]))
    return min(i, len(argv))


def _takes(action: argparse.Action, glued: Optional[str], following: List[str]) -> int:
    """How many of the `following` words an option takes (its value `glued` to it, or None). An optional
    value is the next word when that is no option and no command (`--json r.json -m backup` names the
    report file; `--json status` is status's --json), and for a --libvirt only a URI (`--libvirt BACKUP`
    is the default libvirt and the backup to restore)."""
    if action.nargs == 0 or glued is not None:
        return 0
    if "--libvirt" in action.option_strings:
        return 1 if runtarget.libvirt_value(following) else 0
    if action.nargs == "?":
        return 1 if following and not following[0].startswith("-") and following[0] not in COMMANDS else 0
    return 1


def _global_takes(word: str, following: List[str]) -> int:
    """How many of the `following` words the global option `word` (by its name) takes."""
    return 0 if "=" in word or word == "--libvirt" and not runtarget.libvirt_value(following) else 1


def _command_at(argv: List[str], start: int) -> int:
    """Index of the command name at or after `start` and before a `--` (len(argv) if none): what a command
    line with options before its command meant to run. That is the first command word up to which the
    words from `start` are that command's own options with their values: `hotvcb --latest backup restore`
    restores the VM named backup. Failing that, the first command word (the words before it are then
    refused, naming the one that is wrong): `hotvcb --json status` (`--json` a prefix of the backup's
    --json-report) was a backup writing a report file named `status`, for a monitor's check."""
    end = argv.index("--", start) if "--" in argv[start:] else len(argv)
    named = [i for i in range(start, end) if argv[i] in COMMANDS]
    own = (i for i in named if _options_end(argv, start, _options_of_command(argv[i])) == i)
    return next(own, named[0] if named else len(argv))


def _before_command(argv: List[str], first: int, at: int) -> Tuple[Optional[str], List[str], int]:
    """(what is wrong with the words before the command at `at`, or None; the command line with the
    command's own options moved after it, global ones left before it; the command's index).
    `hotvcb -g F status --json`, as ghettoVCB's users type it, is `status -g F --json`; `-d debug status`
    names -d, which status has not, and `-g status` would have the command's name for its value."""
    options = _options_of_command(argv[at])
    kept, moved = argv[:first], []  # type: List[str], List[str]
    i = first
    while i < at:
        word = argv[i]
        hit = cmdline.option_of(word, options)  # the command's own first: restore's --libvirt is not the target's
        glob = hit is None and word.split("=", 1)[0] in _GLOBAL_VALUED
        if hit is None and not glob:
            return _stray(word), argv, at
        takes = _takes(hit[0], hit[2], argv[i + 1:at]) if hit is not None else _global_takes(word, argv[i + 1:at])
        if i + takes >= at:
            return _no_value(word, argv[at]), argv, at
        (kept if glob else moved).extend(argv[i:i + 1 + takes])
        i += 1 + takes
    return None, kept + [argv[at]] + moved + argv[at + 1:], len(kept)


def _options_of_command(name: str) -> Dict[str, argparse.Action]:
    """{option string: action} of command `name`'s own parser."""
    sub = _Parser(prog="hotvcb").add_subparsers(parser_class=_Parser)
    importlib.import_module("%s.commands.%s_cmd" % (__package__, name)).register(sub)
    return cmdline.options_of(sub.choices[name])


def _stray(word: str) -> str:
    return ("unrecognized option %s: before a command only %s or the command's own options may come (before a "
            "backup's flags, the word backup may be left out, ghettoVCB style)" % (word, ", ".join(_GLOBAL_VALUED)))


def _no_value(option: str, command: str) -> str:
    return "option %s has no value: %s is the command, not its value" % (option, command)


def _skip_global_options(argv: List[str]) -> Tuple[int, Optional[str]]:
    """(index of the first argument after the leading top-level (SSH) options, what is wrong with them or
    None). A command word is never a global option's value: `--identity $KEY status` with KEY unset and
    unquoted is a check with an empty --identity, owed its UNKNOWN, not a ghettoVCB-style backup."""
    i = 0
    while i < len(argv) and argv[i].split("=", 1)[0] in _GLOBAL_VALUED:
        takes = _global_takes(argv[i], argv[i + 1:])
        if takes and i + 1 < len(argv) and argv[i + 1] in COMMANDS:
            return i + 1, _no_value(argv[i], argv[i + 1])
        i += 1 + takes
    return min(i, len(argv)), None


def _bare_libvirt_last(words: List[str]) -> List[str]:
    """A command's words with its own `--libvirt` that names no URI moved to their end (before a `--`), so
    that argparse gives it no value: `restore --kvm DIR --libvirt BACKUP` took the backup for libvirt's URI
    (the global --libvirt reads the same way, `runtarget.libvirt_uri_given`)."""
    end = words.index("--") if "--" in words else len(words)
    bare = [i for i in range(end) if words[i] == "--libvirt" and not runtarget.libvirt_value(words[i + 1:])]
    kept = [w for i, w in enumerate(words[:end]) if i not in bare]
    return kept + ["--libvirt"] * len(bare) + words[end:]


if __name__ == "__main__":
    sys.exit(main())
