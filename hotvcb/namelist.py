"""VM list files: `-f` (back these up) and `-e` (leave these out).

One VM display name a line, taken literally: spaces, brackets, `+`, `*`,
`;`, quotes and umlauts are ordinary characters, never patterns.  ghettoVCB
fed these names to grep, so `web+1` or `db[old]` silently matched other VMs
or none; hotvcb compares whole names, exactly.

Leading and trailing blanks (space, tab, CR) are stripped although a name
could in theory start or end with one: they are invisible in an editor and
come from indenting or copy-paste, and a list entry that silently matches no
VM means a VM that silently is not backed up.  A VM whose name really starts
or ends with a blank can still be named with `-m`.  Only whole lines whose
first non-blank character is `#` are comments, so `web#2` is a name.
"""

from typing import List, Sequence, Tuple

from hotvcb.adminfile import read_text, shown_as
from hotvcb.errors import UsageError, VmNotFound, did_you_mean
from . import lazyre

_BLANKS = " \t\r"
_CONTROL = lazyre.compile(r"[\x00-\x1f\x7f]")


def read_names(path: str, what: str = "VM") -> List[str]:
    """The names of `read_numbered`."""
    return [name for _, name in read_numbered(path, what)]


def read_numbered(path: str, what: str = "VM") -> List[Tuple[int, str]]:
    """(line number, name) in file order, each name once: the order is the admin's (the backup order), and
    the number shows an entry that is no name as FILE:LINE. `what` the list names ("host" for
    `status --hosts`): a host list that cannot be read was called a "VM list file", and the
    admin checked the wrong file.

    A line that is not UTF-8 is read as Latin-1 (adminfile.decode_lines) without a warning: the names
    are still compared exactly, so a wrong guess shows up as "no VM named ...".
    """
    text, _ = read_text(path, "%s list file" % what, pipes=True)
    names = []  # type: List[Tuple[int, str]]
    seen = set()
    for number, line in enumerate(text.split("\n"), 1):
        name = line.strip(_BLANKS)
        if not name or name.startswith("#"):
            continue
        if _CONTROL.search(name):
            raise UsageError("%s:%d: %r is not a %s name (control character)" % (shown_as(path), number, name[:80],
                                                                                      what))
        if name not in seen:
            seen.add(name)
            names.append((number, name))
    return names


def excluding_nothing(exclude: Sequence[str], present: Sequence[str]) -> List[str]:
    """A warning for each exclude entry (-e) that names no VM of the host, as a `-f` entry naming none is an
    error: the VM the admin meant to leave out is backed up (shut down, with POWER_VM_DOWN_BEFORE_BACKUP).
    ghettoVCB left out every VM whose name starts a line (`grep -E "^${VM_NAME}"`), so a line such as
    `mail (Exchange, 2 TB)` kept VM `mail` out; hotvcb compares whole names, and the warning names the VM
    ghettoVCB would have left out, or the close names, as `-f`'s "did you mean"."""
    out = []
    for entry in exclude:
        if entry in present:
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


def read_listed(path: str, what: str = "VM") -> List[str]:
    """The names of `read_listed_numbered`."""
    return [name for _, name in read_listed_numbered(path, what)]


def read_listed_numbered(path: str, what: str = "VM") -> List[Tuple[int, str]]:
    """`read_numbered` of a list that must name something: one holding only comments (emptied by mistake)
    would make a backup back up, or a status check watch, nothing while it says all is well."""
    names = read_numbered(path, what)
    if not names:
        raise UsageError("the %s list %s names no %s" % (what, shown_as(path), what))
    return names
