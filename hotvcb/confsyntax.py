"""A ghettoVCB-style file's lines (`KEY=value`, `export KEY=value`, `export KEY...`, comments) and what /bin/sh would
have assigned each value, read without running anything: ghettoVCB `source`d these files."""

import re
from typing import Iterator, List, Optional, Set, Tuple

from hotvcb.errors import ConfigError
from . import lazyre
from .confkeys import Invalid

_LINE = lazyre.compile(r"(export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)\Z", re.S)
# what may follow an `export NAME=value`'s value: more names to export, then a `;` or a comment
_EXPORTED_NAMES = lazyre.compile(r"((?:[ \t]+[A-Za-z_][A-Za-z0-9_]*)*)[ \t]*(?:;.*|(?<=[ \t])#.*)?\Z", re.S)
_DOUBLE = lazyre.compile(r'"((?:[^"\\]|\\.)*)"(.*)\Z', re.S)
_DOUBLE_ESCAPE = lazyre.compile(r'\\([\\"$`])')
_SINGLE = lazyre.compile(r"'([^']*)'(.*)\Z", re.S)
_AFTER_WORD = lazyre.compile(r"[ \t]+(?:#.*)?\Z", re.S)
_TRAILING_COMMENT = lazyre.compile(r"\s#")
_EXPORTS = lazyre.compile(r"[ \t]*(?:export(?:[ \t]+[A-Za-z_][A-Za-z0-9_]*)+[ \t]*;?)?[ \t]*(?:#.*)?\Z", re.S)
_EXPANDS = r"\$[A-Za-z0-9_{($!?#@*-]|`"  # a name, ${, $(, the special parameters ($$ $! ...), a backquote
_EXPANDS_HERE = lazyre.compile(_EXPANDS)
_EXPANSION = lazyre.compile(r"(?<!\\)(?:%s)" % _EXPANDS)


def shown(text: str, secret: bool = False) -> str:
    """Keep messages one readable line, and passwords out of logs that get mailed."""
    if secret:
        return "***"
    return text if len(text) <= 80 else text[:77] + "..."


def entries(path: str, text: str) -> Iterator[Tuple[int, str, str]]:
    """Yield (line number, KEY, text after '=') for each assignment line.

    A line that is only an `export` of names (`export VM_BACKUP_VOLUME DISK_BACKUP_FORMAT`, a shell habit in
    files ghettoVCB `source`d) assigned nothing for /bin/sh either: it is passed over, as after a `;`.
    """
    for number, line in enumerate(text.split("\n"), 1):
        line = line.strip()
        if not line or line.startswith("#") or _EXPORTS.match(line):
            continue
        match = _LINE.match(line)
        if not match:
            allowed = "KEY=value with no spaces around '=', a # comment or a blank line"
            raise ConfigError(path, number, "line", shown(line, "PASSWORD" in line.upper()), allowed)
        raw = match.group(3)
        if match.group(1):
            raw = _exported_value(path, number, line, raw)
        yield number, match.group(2), raw


def _exported_value(path: str, number: int, line: str, raw: str) -> str:
    """The value of `export NAME=value NAME2...`, which /bin/sh ends at its first unquoted blank (`export` takes
    words: the others are names it exports, `DISK_BACKUP_FORMAT` in `export
    VM_BACKUP_VOLUME=/vmfs/volumes/backup/hotvcb DISK_BACKUP_FORMAT`), with the line's `;...` or comment after
    it for `unquote`. Taken as written, the backups went to a folder named with the blank and the other name.
    A second assignment there (`export A=1 B=2`) or a word that is no name is refused, as `export A B=2` is."""
    end = _word_end(raw)
    rest = _EXPORTED_NAMES.match(raw, end)
    if rest is None:
        allowed = "export NAME=value followed only by names to export, a ';' or a # comment"
        raise ConfigError(path, number, "line", shown(line, "PASSWORD" in line.upper()), allowed)
    return raw[:end] + raw[rest.end(1):]


def _word_end(raw: str) -> int:
    """Index of the first unquoted blank or `;` in `raw` (its length if none): where sh ends the first word.
    A quote left open runs to the end (`unquote` says so)."""
    i = 0
    while i < len(raw) and raw[i] not in " \t;":
        if raw[i] == "\\":
            i += 1
        elif raw[i] == "'":
            i = raw.find("'", i + 1) % (len(raw) + 1)
        elif raw[i] == '"':
            quoted = _DOUBLE.match(raw, i)
            i = quoted.end(1) if quoted else len(raw)
        i += 1
    return min(i, len(raw))


_EXPANDED = "the shell would have expanded $ or ` here; hotvcb takes it literally"
_ESCAPED = ("a backslash before a character the shell gives no meaning to stands for that character alone, "
            "as in the shell (quote the value with '...' to keep the backslash)")
_SHELL_MEANS = " \t$`\"'\\;&|<>()#*?[~"  # what a backslash rightly escapes for /bin/sh: no warning then


def unquote(raw: str, command: bool = False, secret: bool = False) -> Tuple[str, List[str]]:
    """Return what the shell would assign, and what to warn about it.

    ghettoVCB `source`d the file, so a value that is one shell word means what
    /bin/sh made of it: an unquoted backslash escapes the next character (`pa\\$\\$`,
    `nas\\ backups`), nothing is special inside single quotes, and inside double
    quotes a backslash escapes only $ ` " and itself. An unquoted `;` ends the
    value, as it ended the shell's assignment (`/vmfs/volumes/b/ghetto; export
    VM_BACKUP_VOLUME`, the old Bourne style): what the shell ran after it is
    warned about, unless it is only an `export` of names. Anything else (a
    command line with blanks or another operator, which the shell would have run
    as a command; a quote left open) is taken as written, as it always was. So is
    a hook's unquoted `command` line (the *_HOOK keys, hotvcb's own), `;` and all:
    `sh -c` reads it again, so `/opt/pre\\ backup.sh` must keep its backslash.
    We never expand: the warning tells the admin that a `$` in, say, a
    password now means itself, where ghettoVCB's shell replaced it. A `secret`
    value's text is never shown in a warning (logs get mailed).
    """
    text = raw.lstrip(" \t")
    if command and text != raw and text.startswith("#"):
        return "", []
    word = None if command and not text.startswith(('"', "'")) else _shell_word(raw, not command, secret)
    if word is not None:
        return word
    raw = raw.strip()
    if raw.startswith(('"', "'")):
        quoted = _DOUBLE.match(raw) or _SINGLE.match(raw)
        raise Invalid("one quoted value, optionally followed by ' # comment'" if quoted
                       else "a value with its closing quote")
    value = _TRAILING_COMMENT.split(raw, 1)[0].strip()
    return value, [_EXPANDED] if _EXPANSION.search(value) else []


def _shell_word(raw: str, ends: bool = True, secret: bool = False) -> Optional[Tuple[str, List[str]]]:
    """`unquote`'s answer if `raw` is one shell word with at most a comment after it; else None.

    Blanks before the word are skipped as before (the shell would have assigned
    nothing and run the word), but a `#` after them starts a comment there too:
    `EMAIL_SERVER=   # none yet` is empty, as in the shell. A backslash before
    a character the shell gives no meaning to is warned about: the shell drops
    it, which a value written for hotvcb alone (`DOMAIN\\user`, `Xy\\!9`) did not expect. Where `ends`
    (not a hook's command line), an unquoted `;` ends the word, blanks before it or not.
    """
    text = raw.lstrip(" \t")
    if text.startswith("#") and text != raw:
        return "", []
    out = []  # type: List[str]
    notes = set()  # type: Set[str]
    i = 0
    while i < len(text):
        c = text[i]
        if c in " \t":
            if _AFTER_WORD.match(text, i):
                return "".join(out), sorted(notes)
            i = len(text) - len(text[i:].lstrip(" \t"))
            if not (ends and text[i] == ";"):
                return None
            c = ";"
        if c == ";" and ends:
            return "".join(out), sorted(notes) + _ran_after(text[i + 1:], secret)
        if c in ";&|<>()":  # the shell's operators: a command line, not a word
            return None
        if c == "\\":
            if i + 1 == len(text):  # a line continuation: not one line's word
                return None
            if text[i + 1] not in _SHELL_MEANS:
                notes.add(_ESCAPED)
            out.append(text[i + 1])
            i += 2
        elif c == "'":
            end = text.find("'", i + 1)
            if end < 0:
                return None
            out.append(text[i + 1:end])
            i = end + 1
        elif c == '"':
            quoted = _DOUBLE.match(text, i)
            if not quoted:
                return None
            inner = quoted.group(1)
            if _EXPANDS_HERE.search(_DOUBLE_ESCAPE.sub("", inner)):
                notes.add(_EXPANDED)
            out.append(_DOUBLE_ESCAPE.sub(r"\1", inner))
            i = quoted.end(1) + 1
        else:
            if _EXPANDS_HERE.match(text, i):
                notes.add(_EXPANDED)
            out.append(c)
            i += 1
    return "".join(out), sorted(notes)


def _ran_after(rest: str, secret: bool) -> List[str]:
    """What to say of the commands after a value's `;`: nothing for an `export` of names (the shell only
    exported what it had assigned) or a comment; else that the shell ran them and hotvcb does not."""
    if _EXPORTS.match(rest):
        return []
    return ["the shell ended the value at ';' and ran %s as a command; hotvcb takes the value before ';' "
            "and runs nothing" % shown(rest.strip(), secret)]
