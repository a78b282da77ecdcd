"""How hotvcb reads a command line: argparse that checks each option's value (none empty or blank, one
value per option, one file not given as both -f and -e), and ghettoVCB's getopts reading of the words
after its flags (`-m -web`, `-m --`), shared by the top-level parser, the commands' own and a scheduled
job's arguments."""

import argparse
import os
from typing import Any, Dict, List, Optional, Tuple, Union

from ..errors import UsageError


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
