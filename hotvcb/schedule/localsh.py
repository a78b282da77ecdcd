"""The boot script's hotvcb blocks: ESXi's ``/etc/rc.local.d/local.sh`` (``/etc/rc.local`` before 5.1).

Why apart from esxi.py: the boot script is the admin's, shared with their own commands, and is read by a
line scan of sh (where it ends: its top-level ``exit``, here-documents that are text, not code). That reading
is the subtle part, and it needs neither crond, the crontab nor the host: here it is read and tested alone.

Everything we add is marked ``# hotvcb:<job>``; the boot block re-adds the line only
when it is not there yet (``grep -qxF``), so running local.sh twice gives one line.
crond is restarted at boot once, by one ``# hotvcb-crond`` block below every job's block: a
restart in each job's block (the format before) let the next block's ``kill`` read the pid file
before the crond just started had written it, leaving two crond that ran every job twice a night.
`install` moves blocks of that format to this one (`with_block`).
"""

import re
from typing import List, Optional, Tuple

from . import shell_line

# the host paths a block names
CRONTAB = "/var/spool/cron/crontabs/root"
CROND_PID = "/var/run/crond.pid"
LOCAL_SH = "/etc/rc.local.d/local.sh"
BUSYBOX_7 = "/usr/lib/vmware/busybox/bin/busybox"
BUSYBOX_OLD = "/bin/busybox"

RESTART_TAG = "# hotvcb-crond"  # not `# hotvcb:<name>`: no job's block
KILL_CROND = "/bin/kill $(cat %s) 2>/dev/null" % CROND_PID


def _tag(job: str) -> str:
    return "# hotvcb:%s" % job


def job_block(job: str, line: str) -> List[str]:
    """Puts the job's line back; crond reads it when `restart_block`, below every job's block, restarts it."""
    quoted = shell_line([line])
    return [
        "%s begin: added by `hotvcb schedule install`, removed by `hotvcb schedule remove --job %s`" % (_tag(job), job),
        "grep -qxF %s %s || printf '%%s\\n' %s >> %s" % (quoted, CRONTAB, quoted, CRONTAB),
        "%s end" % _tag(job),
    ]


def restart_block(busybox: str) -> List[str]:
    """One crond restart for all jobs, after their lines are back (the ESXi way: KB 2043564)."""
    return [
        "%s begin: restarts crond once, after every hotvcb job's line above is back" % RESTART_TAG,
        KILL_CROND,
        "%s crond" % busybox,
        "%s end" % RESTART_TAG,
    ]


_MARK = re.compile(r"^# hotvcb:([A-Za-z0-9][A-Za-z0-9_.-]*) (begin|end)\b")
# `exit 0`, `exit`, `exit $?` (the last command's status), `exit $rc`, `exit ${RC:-0}` (an admin's own status), any
# `exit N`, also ended by `;` (a habit from C) or with a comment: where the script ends when it stands at the top
# level, that is outside every if/loop/case/group, which `_nesting` counts with a line scan (indentation says
# nothing: an editor indents a final `    exit 0`, and a guard's `if ...; then` above a column-0 `exit 0` and its
# `fi` make that exit a conditional one, as does a `die()` helper's). The first such exit ends the script: lines
# an admin appended below local.sh's stock `exit 0` (`cat >> local.sh`, a loop ending in `done`) never run, and
# the block goes above it. Parsing sh is not worth it; where the scan cannot be sure (more closers than openers)
# no exit counts and the block goes at the end, which `unreached` and `install` warn of. Here-document bodies are
# text, not commands (_code): an `exit 0` in a script local.sh writes with `cat > /etc/hook.sh <<'EOF'` ends
# nothing. A `<<` that opens none (quoted, `logger "backup<<done"`; arithmetic, `x=$((a<<b))`) must not be taken
# for one: the rest of the script, its `exit 0` too, would be text, and the block would go below that exit.
_EXIT = re.compile(r"^(\s*)exit(\s+[^\s;#&|<>()]+)?\s*(;\s*)?(#.*)?$")
# words that open or close an if/loop/case/brace group where a command starts (`then`, `do`, `else`, `elif`, `!`
# are followed by one); quoted text and comments are taken out first, and `;`, `&`, `|`, `(`, `)` start commands
_OPENS = ("if", "case", "for", "while", "until", "select", "{")
_CLOSES = ("fi", "esac", "done", "}")
_LEADS = ("then", "do", "else", "elif", "!")
_QUOTED = re.compile(r"'[^']*'|\"(?:\\.|[^\"\\])*\"|\\.")
_COMMENT = re.compile(r"(^|[\s;&|()])#.*")
_COMMANDS = re.compile(r"[;&|()]")
# a here-document's `<<WORD`, `<<-WORD`, `<< 'WORD'`, `<<"WORD"`, `<<\WORD`, matched where _heredocs finds a
# `<<` that is an operator (not `<<<`, and not in quotes, arithmetic or a comment)
_HEREDOC = re.compile(r"<<(-?)[ \t]*\\?(['\"]?)([A-Za-z_][A-Za-z0-9_.-]*)\2")


def _block_end(lines: List[str], begin: int, job: str) -> int:
    """Index after job's block, whose begin marker is lines[begin].

    With its end marker (before any other block) that is the end marker. Without one (the admin deleted
    `# hotvcb:<job> end` as a stray comment) only the body lines `job_block` writes count as the block:
    everything after them is the admin's and stays."""
    for i in range(begin + 1, len(lines)):
        m = _MARK.match(lines[i])
        if m and m.group(2) == "begin":
            break
        if m and m.group(1) == job:
            return i + 1
    end = begin + 1
    while end < len(lines) and end - begin <= 3 and _is_body(lines[end]):
        end += 1
    return end


def _bare(ln: str) -> str:
    """The line as we wrote it: without the CR an editor on Windows added when it re-saved the file. Every
    test of whether a line is ours goes through it, so `remove` takes out all we wrote from a CRLF file too (a
    begin marker found and its restart lines and end marker not left the kill and start of crond behind, no
    longer recognisable as ours); the lines are written back with their own line ends."""
    return ln[:-1] if ln.endswith("\r") else ln


def _is_body(ln: str) -> bool:
    """A line only `job_block` writes (or wrote: the kill and start of a job block of the format before)."""
    return _restarts(ln) or (_bare(ln).startswith("grep -qxF ") and _bare(ln).endswith(" >> %s" % CRONTAB))


def _restarts(ln: str) -> bool:
    """A line of a crond restart we wrote."""
    return _bare(ln) in (KILL_CROND, "%s crond" % BUSYBOX_7, "%s crond" % BUSYBOX_OLD)


def _migrated(lines: List[str]) -> List[str]:
    """`lines` with the crond restart taken out of every job block of the format before (each block restarted
    crond itself), so that only the one restart block restarts it."""
    out = []  # type: List[str]
    inside = None  # type: Optional[int]
    for i, ln in enumerate(lines):
        m = _MARK.match(ln)
        if m and m.group(2) == "begin":
            inside = _block_end(lines, i, m.group(1))
        elif inside is not None and i >= inside:
            inside = None
        if inside is not None and _restarts(ln):
            continue
        out.append(ln)
    return out


def without_restart(lines: List[str]) -> List[str]:
    """`lines` without the crond restart block and the blank line we put after it (without its end marker,
    deleted as a stray comment, only the restart lines we write count as the block)."""
    out = []  # type: List[str]
    i = 0
    while i < len(lines):
        if not _bare(lines[i]).startswith(RESTART_TAG + " begin"):
            out.append(lines[i])
            i += 1
            continue
        i += 1
        while i < len(lines) and _restarts(lines[i]):
            i += 1
        if i < len(lines) and _bare(lines[i]) == RESTART_TAG + " end":
            i += 1
        if i < len(lines) and _bare(lines[i]) == "":
            i += 1
    return out


def blocks(lines: List[str]) -> "dict":
    """{job: block lines} for every hotvcb block in a boot script."""
    out = {}
    i = 0
    while i < len(lines):
        m = _MARK.match(lines[i])
        if m and m.group(2) == "begin":
            end = _block_end(lines, i, m.group(1))
            out[m.group(1)] = lines[i:end]
            i = end
        else:
            i += 1
    return out


def windows_line_end(lines: Optional[List[str]]) -> int:
    """The number (from 1) of the first line sh reads as code that ends in a CR (the file, or part of it, saved
    on Windows), 0 when none does: sh takes the CR as part of the line's last word, so `exit 0<CR>` is no number,
    `#!/bin/sh<CR>` names no shell and a block's `>> .../root<CR>` another file. No block written into such a
    script is sure to put a job back at boot (`install` refuses, `show` says so, both naming the line); the scan
    above, which reads LF-ended lines, is not asked where it ends. A CR inside a comment (a comment line pasted
    from a Windows editor, or a line's trailing `# ...`) is skipped with the comment: it changes nothing, and
    calling the whole file CRLF for it made `show` say a job was lost at reboot that came back. Line 1 counts
    whatever it is: `#!` there names the interpreter."""
    for number, ln in enumerate(lines or [], 1):
        if ln.endswith("\r") and (number == 1 or not _COMMENT.search(_QUOTED.sub("''", ln))):
            return number
    return 0


def crlf_fix(path: str) -> str:
    """What the admin runs to make `path` a script sh reads (what `install` and `show` tell them)."""
    return "sed -i 's/\\r$//' %s" % path


def unreached(lines: List[str]) -> List[str]:
    """Jobs whose boot block sits below a top-level `exit` line (_EXIT): the shell may leave the script before
    reaching them (said for one under a column-0 exit inside an unindented `if` too: where in doubt, `show`
    warns)."""
    final = _final_exit(lines)
    top = [i for i in _exits(lines) if lines[i] == lines[i].lstrip()] + ([] if final is None else [final])
    first = min(top, default=len(lines))
    return [m.group(1) for m in (_MARK.match(ln) for ln in lines[first + 1:]) if m and m.group(2) == "begin"]


def _code(lines: List[str]) -> List[int]:
    """Indexes of the lines the shell reads as commands: all but the bodies of here-documents (and their
    end lines). A line whose here-documents are not all ended is read as opening none (sh would read the
    rest of the script as text; but a `<<` _heredocs took for one where it was not would then hide the
    script's `exit` from _final_exit and `unreached`: where in doubt, the exit counts)."""
    out = []  # type: List[int]
    i = 0
    while i < len(lines):
        out.append(i)
        after = _bodies_end(lines, i + 1, _heredocs(lines[i]))
        i = i + 1 if after is None else after
    return out


def _bodies_end(lines: List[str], start: int, docs: List[Tuple[str, bool]]) -> Optional[int]:
    """Index after the bodies of the here-documents `docs` ((word, tabs stripped), in order) that the line
    before lines[start] opens, each ended by the first line that is its word; None if one is never ended."""
    i = start
    for word, tabs in docs:
        while i < len(lines) and (lines[i].lstrip("\t") if tabs else lines[i]) != word:
            i += 1
        if i == len(lines):
            return None
        i += 1
    return i


def _heredocs(ln: str) -> List[Tuple[str, bool]]:
    """(word, tabs stripped) of each here-document a command line opens: a `<<` inside '...' or "...", after
    a backslash, inside arithmetic (`$((a<<b))`, `((a<<=1))`), in a comment, or as `<<<`, opens none. A line
    scan, not a parser: a quote or `((` left open runs to the line's end."""
    out = []  # type: List[Tuple[str, bool]]
    quote, parens, i = "", 0, 0  # parens: those open inside the arithmetic we are in (0: none)
    while i < len(ln):
        c = ln[i]
        if quote == "'":
            quote = "" if c == "'" else quote
        elif c == "\\":
            i += 1  # the next character is quoted
        elif quote == '"':
            quote = "" if c == '"' else quote
        elif parens:
            parens += {"(": 1, ")": -1}.get(c, 0)
        elif c in "'\"":
            quote = c
        elif ln.startswith("((", i):
            parens, i = 2, i + 1
        elif c == "#" and (i == 0 or ln[i - 1] in " \t;&|"):
            break
        elif ln.startswith("<<<", i):
            i += 2
        elif ln.startswith("<<", i):
            m = _HEREDOC.match(ln, i)
            if m:
                out.append((m.group(3), m.group(1) == "-"))
            i = m.end() - 1 if m else i + 1
        i += 1
    return out


def _exits(lines: List[str]) -> List[int]:
    """Indexes of the `exit` lines (_EXIT) among the commands (_code)."""
    return [i for i in _code(lines) if _EXIT.match(lines[i])]


def without_block(lines: List[str], job: str) -> List[str]:
    """`lines` without job's block and the blank line we put after it."""
    out = []  # type: List[str]
    i = 0
    while i < len(lines):
        m = _MARK.match(lines[i])
        if m and m.group(2) == "begin" and m.group(1) == job:
            i = _block_end(lines, i, job)
            if i < len(lines) and _bare(lines[i]) == "":
                i += 1
            continue
        out.append(lines[i])
        i += 1
    return out


def _nesting(ln: str) -> int:
    """How many if/loop/case/brace groups a command line opens (less those it closes): `for m in a b; do` 1,
    `done` -1, `if [ -f x ]; then exit 0; fi` and `echo "done"` 0."""
    change = 0
    for command in _COMMANDS.split(_COMMENT.sub("", _QUOTED.sub("''", ln))):
        for word in command.split():
            if word in _OPENS:
                change += 1
            elif word in _CLOSES:
                change -= 1
                break
            elif word not in _LEADS:
                break
    return change


def _final_exit(lines: List[str]) -> Optional[int]:
    """Index of the `exit` line (_EXIT) that ends the script: the first one outside every if/loop/case/group
    (`_nesting` summed over the commands above it), indented or not. None when there is none, or when the scan
    finds a group closed that it never saw opened (it misread the script: not sure where it ends)."""
    depth = 0
    for i in _code(lines):
        if depth == 0 and _EXIT.match(lines[i]):
            return i
        depth += _nesting(lines[i])
        if depth < 0:
            return None
    return None


def with_block(lines: Optional[List[str]], job: str, block: List[str], path: str, restart: List[str]) -> List[str]:
    """Our block (replacing an older one) above the script's final top-level `exit` line (local.sh's `exit 0`,
    an admin's in rc.local, `exit 0  # end` too: anything below it never runs at boot), else at the end;
    then the crond restart block (moved there): below every job block that runs at boot; each followed by a
    blank line. Blocks of the format before lose their own restart (`_migrated`)."""
    if lines is None:
        lines = ["#!/bin/sh"] if path == LOCAL_SH else ["#! /bin/ash"]
    lines = _migrated(without_restart(without_block(lines, job)))
    at = _final_exit(lines)
    if at is not None:
        return lines[:at] + block + [""] + restart + [""] + lines[at:]
    return lines + block + [""] + restart + [""]
