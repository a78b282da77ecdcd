"""BACKUP_FILES_CHMOD as chmod(1) takes it: octal (`600`, `0640`) or symbolic (`go-rwx`, `u=rw,go=`).

ghettoVCB ran `chmod -R "$BACKUP_FILES_CHMOD"` on each backup, so both forms are in admins' config
files. The mode is parsed here, in Python, and applied by `Shell.chmod` with a number: the text never
reaches a shell, and garbage is refused when the config is read, naming what is wanted. A symbolic
mode changes each file's own mode (`go-rwx` leaves the owner's bits as they are), so it needs the
file's current mode; an octal one does not (`fixed`). A clause without u/g/o/a (`+r`, `=rw`) acts as
chmod does under umask 022, ESXi's and the least hotvcb runs with: it never grants group or others
write (and `=rw` clears every other bit, leaving 0644) (the promise that nothing hotvcb makes is writable by them, architecture.md), while an
explicit `go+w` does as it says.
"""

from typing import List, Tuple

from . import lazyre

_OCTAL = lazyre.compile(r"[0-7]+")  # any count of digits, as chmod: `7` is 0007, `00640` is 0640
_CLAUSE = lazyre.compile(r"([ugoa]*)((?:[-+=](?:[ugo]|[rwxXst]*))+)")
_ACTION = lazyre.compile(r"([-+=])([ugo]|[rwxXst]*)")

ALLOWED = ("an octal file mode such as 600 or 0640, a symbolic one as chmod takes it such as go-rwx "
           "or u=rw,go=, or empty to leave modes alone")
_WHO = {"u": 0o4700, "g": 0o2070, "o": 0o1007, "a": 0o7777}  # the bits each class may touch (t goes with o)
_UMASK = 0o022
_PERMS = {"r": 0o444, "w": 0o222, "x": 0o111, "s": 0o6000, "t": 0o1000}
_SHIFT = {"u": 6, "g": 3, "o": 0}


class FileMode:
    """One parsed mode (ValueError naming what is `ALLOWED`); `apply` gives a file's new mode from its
    current one."""

    def __init__(self, text: str):
        self.text = text
        self.fixed = bool(_OCTAL.fullmatch(text))
        if self.fixed and int(text, 8) > 0o7777:
            raise ValueError(ALLOWED)
        self._clauses = [] if self.fixed else _clauses(text)

    def apply(self, current: int, is_dir: bool) -> int:
        if self.fixed:
            return int(self.text, 8)
        mode = current & 0o7777
        for who, actions in self._clauses:
            mask = 0
            for letter in who or "a":
                mask |= _WHO[letter]
            for op, perms in actions:
                bits = _bits(perms, mode, is_dir)
                if not who:
                    bits &= ~_UMASK
                if op == "+":
                    mode |= bits & mask
                elif op == "-":
                    mode &= ~(bits & mask)
                else:  # who-less: every bit cleared, then the wanted ones less the umask (as chmod)
                    mode = (mode & ~mask) | (bits & mask)
        return mode


def _clauses(text: str) -> List[Tuple[str, List[Tuple[str, str]]]]:
    out = []
    for clause in text.split(","):
        m = _CLAUSE.fullmatch(clause)
        if not m:
            raise ValueError(ALLOWED)
        out.append((m.group(1), _ACTION.findall(m.group(2))))
    return out


def _bits(perms: str, mode: int, is_dir: bool) -> int:
    """The mode bits a clause's permissions name: `u`, `g` or `o` copies that class's current bits to
    every class; `X` is x for a folder or a file some class may already execute."""
    if perms in _SHIFT:
        rwx = (mode >> _SHIFT[perms]) & 0o7
        return rwx << 6 | rwx << 3 | rwx
    bits = 0
    for letter in perms:
        if letter == "X":
            bits |= 0o111 if is_dir or mode & 0o111 else 0
        else:
            bits |= _PERMS[letter]
    return bits

