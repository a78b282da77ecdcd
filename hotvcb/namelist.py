"""VM list files: `-f` (back these up) and `-e` (leave these out).

One VM display name a line, taken literally: spaces, brackets, `+`, `*`,
`;`, quotes and umlauts are ordinary characters, never patterns.  ghettoVCB
fed these names to grep, so `web+1` or `db[old]` silently matched other VMs
or none; hotvcb compares whole names, exactly.

Leading and trailing blanks (space, tab, CR, and the no-break spaces a Windows editor or a copy from a
web page or Word leaves where a space was typed: U+00A0, U+202F, U+2007, a stray U+FEFF) are stripped
although a name
could in theory start or end with one: they are invisible in an editor and
come from indenting or copy-paste, and a list entry that silently matches no
VM means a VM that silently is not backed up.  But a line is first matched as
written (`Listed.exact`, `fitted`): on a host with VMs `db` and `db `, the
line `db ` names `db ` - stripped to `db`, it backed up (or, in `-e`, left
out) the other VM, and the run said all was well.  The stripped name counts
only when no VM has the line's exact name, and then with the fewest blanks dropped first (`_readings`): the
ASCII ones (space, tab, CR), which were always blanks, before the no-break spaces, which were not. On a host
with `db` and `db<NBSP>`, the line `db<NBSP><space>` names `db<NBSP>`, as it did before no-break spaces were
blanks; as it could also mean `db`, it is ambiguous (`unclear`): `-e` warns, `-f` fails that line rather
than guess which VM to back up.  Only whole lines whose first
non-blank character is `#` are comments, so `web#2` is a name.
"""

from __future__ import annotations

from typing import Collection, List, Optional, Sequence, Tuple

from hotvcb.adminfile import read_text, saved_as_utf16, shown_as
from hotvcb.errors import UnclearLine, UsageError, VmNotFound, did_you_mean
from . import lazyre

_ASCII_BLANKS = " \t\r"
_BLANKS = _ASCII_BLANKS + "\u00a0\u202f\u2007\ufeff"
_CONTROL = lazyre.compile(r"[\x00-\x1f\x7f]")


class Listed(str):
    """A list line's name: its value the name without the line's blanks (what every message shows, and what
    matches when no VM has the line's exact name), `exact` the line as written, less its line end."""

    exact: str

    def __new__(cls, name: str, exact: Optional[str] = None) -> "Listed":  # a copy or unpickling gives no `exact`
        listed = str.__new__(cls, name)
        listed.exact = name if exact is None else exact
        return listed


def _readings(name: str) -> List[str]:
    """The names a list line may mean, fewest blanks dropped first: as written, less its ASCII blanks, less
    all its blanks (`_BLANKS`); a name from `-m` (no `Listed`) is taken literally."""
    if not isinstance(name, Listed):
        return [name]
    out = []  # type: List[str]
    for reading in (name.exact, name.exact.strip(_ASCII_BLANKS), str(name)):
        if reading not in out:
            out.append(reading)
    return out


def written(name: str) -> str:
    """A list line as written (less its line end), a `-m` name as given."""
    return _readings(name)[0]


def _meant(name: str, present: Collection[str]) -> List[str]:
    """The VMs of `present` the line `name` may name: the one with its very name (blanks and all) alone,
    else every reading a VM has, fewest blanks dropped first."""
    readings = _readings(name)
    if readings[0] in present:
        return readings[:1]
    return [r for r in readings[1:] if r in present]


def fitted(names: Sequence[str], present: Collection[str]) -> List[str]:
    """The VMs `names` name on a host whose VMs (and templates) are `present`, each once, in order: a list
    line as written if a VM has that very name, blanks and all, else the reading with the fewest blanks
    dropped that a VM has (`_meant`), else its stripped name (which names no VM: said so by the caller)."""
    out = []  # type: List[str]
    for name in names:
        chosen = (_meant(name, present) or [str(name)])[0]
        if chosen not in out:
            out.append(chosen)
    return out


def unclear(names: Sequence[str], present: Collection[str]) -> List[Tuple[str, List[str]]]:
    """(line, the VMs it may name) of each line no VM has the very name of that names two VMs as
    its blanks are dropped (`db<NBSP><space>` on a host with `db` and `db<NBSP>`): `fitted` takes the first,
    but the admin may have meant either, and a VM left out (or backed up) by a guess is not said otherwise."""
    out = []  # type: List[Tuple[str, List[str]]]
    for name in names:
        meant = _meant(name, present)
        if len(meant) > 1:
            out.append((name, meant))
    return out


def unclear_excluded(exclude: Sequence[str], present: Collection[str]) -> List[str]:
    """A warning for each `-e` line `unclear` finds, naming the VM it leaves out (`fitted`'s choice)."""
    return ["%s; it leaves out %r" % (UnclearLine("-e", written(line), meant), meant[0])
            for line, meant in unclear(exclude, present)]


def read_names(path: str, what: str = "VM") -> List[Listed]:
    """The names of `read_numbered`."""
    return [name for _, name in read_numbered(path, what)]


def read_numbered(path: str, what: str = "VM", inline_comments: bool = False) -> List[Tuple[int, Listed]]:
    """(line number, name) in file order, each line's text once (`db` and `db ` are two: a host may have
    both): the order is the admin's (the backup order), and the number shows an entry that is no name as
    FILE:LINE. `what` the list names ("host" for
    `status --hosts`): a host list that cannot be read was called a "VM list file", and the
    admin checked the wrong file.

    A line that is not UTF-8 is read as Latin-1 (adminfile.decode_lines) without a warning: the names
    are still compared exactly, so a wrong guess shows up as "no VM named ...".

    `inline_comments` (a host list: no host name holds a `#`): a `#` also starts a comment after a name,
    cut before the control-character check, so that `root@esxi01<TAB># rack 3` is the host and its note,
    not a name holding a tab (which refused the whole list and left every host unchecked).
    """
    text, _ = read_text(path, "%s list file" % what, pipes=True)
    if saved_as_utf16(text):
        raise UsageError("%s list file %s is saved as UTF-16 (Notepad's \"Unicode\"): save it as UTF-8 or ANSI"
                         % (what, shown_as(path)))
    names = []  # type: List[Tuple[int, Listed]]
    seen = set()
    for number, line in enumerate(text.split("\n"), 1):
        if inline_comments:
            line = line.split("#", 1)[0]
        name = line.strip(_BLANKS)
        if not name or name.startswith("#"):
            continue
        if _CONTROL.search(name):
            raise UsageError("%s:%d: %r is not a %s name (control character)" % (shown_as(path), number, name[:80],
                                                                                      what))
        exact = line[:-1] if line.endswith("\r") else line
        if exact not in seen:  # `db` and `db ` are two lines: on a host with both VMs, two VMs
            seen.add(exact)
            names.append((number, Listed(name, exact)))
    return names


def excluding_nothing(exclude: Sequence[str], present: Sequence[str]) -> List[str]:
    """A warning for each exclude entry (-e) that names no VM of the host, as a `-f` entry naming none is an
    error: the VM the admin meant to leave out is backed up (shut down, with POWER_VM_DOWN_BEFORE_BACKUP).
    ghettoVCB left out every VM whose name starts a line (`grep -E "^${VM_NAME}"`), so a line such as
    `mail (Exchange, 2 TB)` kept VM `mail` out; hotvcb compares whole names, and the warning names the VM
    ghettoVCB would have left out, or the close names, as `-f`'s "did you mean"."""
    out = []
    for entry in exclude:
        if fitted([entry], present)[0] in present:
            continue
        started = " and ".join(repr(p) for p in sorted((p for p in present if p and entry.startswith(p)),
                                                         key=len, reverse=True))
        if started:
            hint = ("; ghettoVCB left out %s for this line (it starts with that name), but hotvcb compares whole "
                    "names and backs %s up: write the name alone on its line to leave it out" % (started, started))
        else:
            hint = did_you_mean(entry, VmNotFound(entry, present).suggestions)
        out.append("the exclude list (-e) names %r, which is no VM on this host, so it leaves no VM out%s"
                   % (entry, hint))
    return out


def read_listed(path: str, what: str = "VM") -> List[Listed]:
    """The names of `read_listed_numbered`."""
    return [name for _, name in read_listed_numbered(path, what)]


def read_listed_numbered(path: str, what: str = "VM", inline_comments: bool = False) -> List[Tuple[int, Listed]]:
    """`read_numbered` of a list that must name something: one holding only comments (emptied by mistake)
    would make a backup back up, or a status check watch, nothing while it says all is well."""
    names = read_numbered(path, what, inline_comments)
    if not names:
        raise UsageError("the %s list %s names no %s" % (what, shown_as(path), what))
    return names
