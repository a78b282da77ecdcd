"""What SshShell runs on the host, and how it reads the answers: busybox sh snippets and the
remote command lines they travel in.

Every snippet takes its paths as positional parameters ("$1", "$@"), never spliced into its text,
and the command line is quoted with ``shlex.quote`` for the remote POSIX shell (busybox ash on
ESXi): names holding spaces, quotes or `;` reach the host's tools as they are. An atomic write is
``cat > tmp; sync; mv tmp path``. File names containing a newline are not supported by the
listings (ls and find print one name a line).

Commands run under `WRAPPER`, which merges stderr into stdout and watches the channel's stdin:
SshShell holds it open and never writes, so when it closes it (a stop: interrupt, timeout) or its ssh
client ends, sshd closes that stdin, the watcher sees EOF and kills the command's whole process group
(TERM, then KILL after 10 s, the grace hotvcb gives its own children) -- without a pty sshd would
otherwise leave a remote vmkfstools running on its own. The wrapper itself outlives a TERM until the
command has ended: whoever waits for the wrapper (LocalShell's stop of a tethered copy, SshConnection's
of its session) waits for the copy.
"""

from __future__ import annotations

import binascii
import io
import os
import re
import shlex
import signal
import subprocess
from typing import IO, Callable, Dict, List, Optional, Sequence

from . import lazyre
from .errors import HostError

NOT_FOUND = "hotvcb-ssh: cannot run "
MAX_GREETING = 65536  # bytes of a host's login shell's greeting a file's reader holds (RemoteReader)
# Runs a stdlib script (its source first, then its arguments) with the host's python; 127: none.
# `python` first: ESXi's own is /bin/python (3.8 on 7/8).
PYTHON = ('s=$1; shift; for p in python python3; do command -v "$p" >/dev/null 2>&1 && '
          'exec "$p" -c "$s" "$@"; done; exit 127')
# the first lines of every script run with `python -c`: python puts the session's working folder (root's home,
# `/` on ESXi) first on the import path, and `-I`, which would not, is unknown to the 2.7 and 3.5 pythons whose
# `old` answer SSH mode needs: a json.py or tempfile.py lying there would have run as root in the module's place
UNPATHED = 'import sys\nif sys.path and sys.path[0] == "":\n    del sys.path[0]\n'

# "$@" is the command, run in the foreground: a command of an asynchronous
# list would start with SIGINT and SIGQUIT ignored (POSIX), and a copy sent
# either would not die of it. The watcher, started first, waits on fd 3, the
# channel's stdin (an asynchronous list would otherwise get /dev/null), in an
# sh of its own (its command line names none of the copy's paths); it ignores
# TERM so it can follow up with KILL. `kill 0` reaches every process of this
# session's group, also children of the command (sshd gives each session its
# own group). The wrapper catches TERM, which POSIX holds back until the
# foreground command has ended: whoever waits for the wrapper waits for the
# command. Once a stop has begun (a TERM reached the wrapper: the watcher's or
# hotvcb's), the wrapper leaves the watcher to its KILL, which then reaches a
# child of the command that outlived its parent (one that ignores TERM);
# otherwise it ends the watcher. Once the command runs, the wrapper's own
# stdout and stderr are /dev/null (fd 4 hands the channel to the command
# alone, redirected in the subshell that becomes it: dash would redirect a
# simple command's fds in the wrapper itself while it waits): dash reports a
# command killed by a signal ("Terminated", "Killed") on stderr, which is not
# the command's output, and with the channel's reader gone (hotvcb SIGKILLed)
# that write's SIGPIPE would kill the wrapper.
WRAPPER = """\
case $1 in */*) [ -f "$1" ] && [ ! -x "$1" ] && { echo "%s$1: not executable"; exit 126; };; esac
command -v "$1" >/dev/null 2>&1 || { echo "%s$1: not found"; exit 127; }
s=
trap 's=1' TERM
exec 3<&0 4>&1
sh -c 'trap "" TERM; while read -r _; do :; done; kill -TERM 0; sleep 10; kill -KILL 0' hotvcb-tether \
  <&3 >/dev/null 2>&1 4>&- &
w=$!
exec 3<&- >/dev/null 2>&1
(exec "$@" </dev/null >&4 2>&1 4>&-)
r=$?
[ -n "$s" ] || kill -KILL $w 2>/dev/null
exit $r
""" % (NOT_FOUND, NOT_FOUND)

# -- the file operations ($1, $2: paths; exit 3 where a caller tells "exists" from a failure) --
READ = 'cat -- "$1"'
# a FIFO swapped in between the test and dd blocks dd until FILE_OP_TIMEOUT: bounded, and refused
READ_REGULAR = ('[ -f "$1" ] && [ ! -L "$1" ] || { echo "not a regular file" >&2; exit 1; }; '
                'dd if="$1" bs="$2" count=1 2>/dev/null || { echo "cannot read it" >&2; exit 1; }')
WRITE = ('cat > "$2" && { sync -- "$2" 2>/dev/null || sync; } && mv -f -- "$2" "$1" '
         '|| { r=$?; rm -f -- "$2"; exit $r; }')  # $1 the file, $2 its temp name beside it
# WRITE, and $3 (the file's folder) keeps its modification time, the write failed or not (a full volume: its temp
# file made and removed there): a reference file outside it holds the time
WRITE_KEEPING_FOLDER_TIME = ('t=$(mktemp) || exit 1; touch -r "$3" -- "$t" || { rm -f -- "$t"; exit 1; }; '
                             '(%s); w=$?; touch -c -r "$t" -- "$3" || { r=$?; [ $w -ne 0 ] || w=$r; }; rm -f -- "$t"; '
                             'exit $w' % WRITE)
EXISTS = '[ -e "$1" ] || [ -L "$1" ]'
ISDIR = '[ -d "$1" ]'
# an lstat (ls -d follows no link): its error says why, as `test` never does; the C locale's words (ABSENT_WHY)
LSTAT = 'LC_ALL=C ls -ld -- "$1" >/dev/null'
ABSENT_WHY = ("No such file or directory", "Not a directory")  # ENOENT, ENOTDIR as busybox and GNU ls say them
LIST = 'ls -1a -- "$1"'
MAKEDIRS = 'mkdir -p -- "$1"'
MAKE_NEW_DIR = 'mkdir -- "$1" && exit 0; [ -e "$1" ] && exit 3; exit 1'
LIST_FILES = 'cd -- "$1" && find . -type f'
# busybox tar cannot rename members: $1 is archived through a link named $3, with -h, as $2
TAR_GZ = ('DST="$2"; d="$2.d"; rm -rf -- "$d"; mkdir -- "$d" && ln -s -- "$1" "$d/$3" && shift 3 '
          '&& cd "$d" && tar -czhf "$DST" "$@" && { sync -- "$DST" 2>/dev/null || sync; }; '
          'r=$?; rm -rf -- "$d"; exit $r')
LINK_NEW = 'ln -- "$1" "$2" && exit 0; [ -e "$2" ] && exit 3; exit 1'
AGE = '[ -e "$1" ] || exit 3; m=$(stat -c %Y -- "$1") && echo $(( $(date +%s) - m ))'
TOUCH = '[ ! -e "$1" ] || touch -c -- "$1"'
NOW = "date '+%Y-%m-%d %H:%M:%S'"
# mv would move $1 *into* an existing directory $2; os.rename would not
RENAME = ('if [ -d "$2" ] && [ ! -L "$2" ]; then echo "$2: File exists" >&2; exit 1; fi; '
          'mv -f -- "$1" "$2"')
REMOVE = 'rm -rf -- "$1"'
COPY = 'cp -- "$1" "$2" && { sync -- "$2" 2>/dev/null || sync; }'
# busybox cp opens no file O_NOFOLLOW: a regular file looked at first, then copied with -P, so a symlink
# swapped in after the look is copied as a link (GNU cp -P opens O_NOFOLLOW itself), refused and removed
COPY_REGULAR = ('[ -f "$1" ] && [ ! -L "$1" ] || { echo "not a regular file" >&2; exit 1; }; '
                'cp -P -- "$1" "$2" || exit 1; '
                'if [ -L "$2" ] || [ ! -f "$2" ]; then rm -f -- "$2"; echo "not a regular file" >&2; exit 1; fi; '
                '{ sync -- "$2" 2>/dev/null || sync; }')
SIZE = 'stat -L -c %s -- "$1"'
USAGE = "stat -L -c '%b %B' -- \"$1\""
SYMLINK = 'ln -sfn -- "$1" "$2"'  # -n: never follow an older link into a folder
CHMOD = 'chmod "$2" -- "$1"'
MODE = 'stat -L -c %a -- "$1"'  # octal permission bits, as busybox and GNU stat print them
FILE_ID = 'stat -L -c %d:%i -- "$1"'  # device and inode numbers in decimal, as busybox and GNU stat print them
REALPATH = ('readlink -f -- "$1" 2>/dev/null && exit 0; '
            'd=$(readlink -f -- "$(dirname -- "$1")" 2>/dev/null) && '
            'echo "${d%/}/$(basename -- "$1")" && exit 0; echo "$1"')
READ_MANY = 'tar -cf - -- "$@" 2>/dev/null; exit 0'  # those it can read; busybox tar too
# its answer line starts with $2, a token of the call's own: a greeting line of 64 hex digits is not the digest
SHA256 = 'd=$(sha256sum -- "$1") || exit $?; echo "$2 $d"'


def join(argv: Sequence[str]) -> str:
    """One remote command line: the remote shell splits it back into exactly argv."""
    return " ".join(shlex.quote(a) for a in argv)


def snippet(script: str, args: Sequence[str]) -> str:
    """The command line running a snippet with its positional parameters, under the session's umask
    with group and others' write taken away (as `cli` does for a local run: whatever sshd's umask,
    no file of ours on the host is writable by others)."""
    return join(["sh", "-c", "umask go-w\n" + script, "hotvcb"] + list(args))


def new_mark() -> str:
    """A token of one session's own (128 random bits): printed on the host around its command's output (`begun`)."""
    return binascii.hexlify(os.urandom(16)).decode("ascii")


def _begin(mark: str) -> bytes:
    return ("hotvcb-output-begins-" + mark).encode("ascii")


def _end(mark: str) -> bytes:
    """What follows a command's last byte: a line break of our own, then the end line (`begun`), which goes on
    with the command's exit code (`end_code`)."""
    return ("\nhotvcb-output-ends-" + mark).encode("ascii")


# the rest of an end line: the command's exit code and the line's break, which says the code came whole
_CODE = lazyre.compile(rb" ([0-9]{1,3})\r?\n")


def begun(mark: str, remote: str, *, stderr: bool = False) -> str:
    """The command line `remote` with `mark` printed on a line of its own before it and after it, keeping its
    exit code. A host's login shell may print a greeting on stdout before it runs any command (a banner echoed
    from .profile or .bashrc), and a farewell after it (an EXIT trap): what comes before the first mark is the
    shell's, what follows the second as well, the command's answer is what lies between (byte for byte: the
    line break before the end line is ours). The stdout end line names the command's exit code, taken right
    after it (busybox ash's `$?` is the last command's): ssh's own exit status comes after it, and a link lost
    in between makes that 255 (`end_code`). `stderr`: the marks framed on stderr too, for a session whose
    stderr comes apart (`own_stderr`): there the shell's last words would be quoted as the command's reason."""
    marks = [_begin(mark).decode("ascii"), _end(mark)[1:].decode("ascii")]
    if not stderr:
        return "echo %s; %s; r=$?; echo; echo %s $r; exit $r" % (marks[0], remote, marks[1])
    return "echo %s; echo %s >&2; %s; r=$?; echo; echo %s $r; echo >&2; echo %s >&2; exit $r" % (
        marks[0], marks[0], remote, marks[1], marks[1])


def _answer_start(out: bytes, mark: str) -> int:
    """Where the command's answer starts in `out` (past the begin line's line break), -1 if that is not there."""
    at = out.find(_begin(mark))
    line_end = out.find(b"\n", at) if at >= 0 else -1
    return line_end + 1 if line_end >= 0 else -1


def _answer_end(out: bytes, mark: str) -> int:
    """Where the command's answer ends in `out` (at our line break before the end line), -1 if a mark is missing."""
    start = _answer_start(out, mark)
    return out.find(_end(mark), start) if start >= 0 else -1


def after_mark(out: bytes, mark: str) -> Optional[bytes]:
    """A session's whole stdout cut to its command's answer (`begun`); None if a mark is missing (`no_answer`)."""
    end = _answer_end(out, mark)
    return out[_answer_start(out, mark):end] if end >= 0 else None


def end_code(out: bytes, mark: str) -> Optional[int]:
    """The command's exit code as the host printed it on its end line in a session's stdout `out` (`begun`):
    its own, whatever ssh's exit status says after it (a link lost once the end line came: 255); None when the
    end line or its code did not come whole -- then only the connection can tell a lost link from the command's
    failure (SshConnection._broken)."""
    end = _answer_end(out, mark)
    return code_after_end(out[end:], mark) if end >= 0 else None


def code_after_end(tail: bytes, mark: str) -> Optional[int]:
    """`end_code` of what starts with the end mark (`_end`: the line break before it too); None if it does not."""
    found = _CODE.match(tail, len(_end(mark))) if tail.startswith(_end(mark)) else None
    return int(found.group(1)) if found else None


# how many of a session's last bytes `ended` looks at: its end line, and a farewell the host's shell may print after
TAIL_HOLDING_END = 4096


def ended(last: bytes, mark: str) -> bool:
    """Whether a session's last bytes (TAIL_HOLDING_END of them) hold its end line: the host's own word that the
    command has ended and its shell gone on (`begun`), which no connection's failure can print."""
    return _end(mark)[1:] in last


def own_stderr(err: bytes, mark: str) -> str:
    """What the command of a `begun(..., stderr=True)` session said on stderr; all the session's stderr when a
    mark is missing (the command never ran or was cut short: the shell's or ssh's words are then what explains)."""
    said = after_mark(err, mark)
    return (err if said is None else said).decode("utf-8", "replace")


class Framed(object):
    """An output callback that passes on only the command's own fragments of a `begun` session's output (as
    cmdstream.py cuts them, at CR and LF): none of the greeting before the begin mark, none from the end mark on."""

    def __init__(self, mark: str, on_output: Callable[[str], None]):
        self.begin, self.end = _begin(mark).decode("ascii"), _end(mark)[1:].decode("ascii")
        self.on_output = on_output
        self.inside = self.over = False

    def __call__(self, piece: str) -> None:
        if self.over:
            return
        if not self.inside:
            self.inside = self.begin in piece
        elif piece.split(" ")[0] == self.end:  # the end line, its exit code after it
            self.over = True
        else:
            self.on_output(piece)


CUT_SHORT = "its answer was cut short (the session ended before the command's end)"


def no_answer(out: bytes, mark: str) -> str:
    """Why a session's stdout `out` holds no whole answer (`after_mark` None): the command never started (the
    host's shell printed `out` instead), or the answer was cut short before its end mark."""
    if _answer_start(out, mark) >= 0:
        return CUT_SHORT
    said = last_line(out.decode("utf-8", "replace"))
    return "the host's login shell did not run the command%s" % (" (it printed %r)" % said[:200] if said else "")


def wrapped(argv: Sequence[str]) -> str:
    """The command line running argv under WRAPPER."""
    return snippet(WRAPPER, argv)


def cannot_run(returncode: int, output: str) -> Optional[str]:
    """WRAPPER's reason the command did not start ("not found", "not executable"), else None."""
    if returncode not in (126, 127) or not output.startswith(NOT_FOUND):
        return None
    return output.strip().rpartition(": ")[2]


def killed_by(returncode: int) -> Optional[str]:
    """The signal's name when an exit status says the command was killed by one, else None. Both forms:
    128+N, a shell's (WRAPPER's, or the host's shell's for its python killed by the OOM killer or an
    operator's kill -9), and -N, subprocess's for a process it ran killed itself (the local wrapper's sh, a
    tool run directly): read as a status, either hid which signal it was ("exited with status -9")."""
    number = -returncode if returncode < 0 else returncode - 128
    if not 0 < number < 65:
        return None
    try:
        return signal.Signals(number).name
    except ValueError:
        return "signal %d" % number


def python_argv(source: str, args: Sequence[str]) -> List[str]:
    """argv that runs a stdlib script's source with the host's python (exit 127: it has none)."""
    return ["sh", "-c", PYTHON, "hotvcb", UNPATHED + source] + list(args)



def member(name: str) -> str:
    """A tar member argument that cannot be taken for an option."""
    return "./" + name if name.startswith("-") else name


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.replace("\r", "\n").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def reason(stderr: str) -> str:
    """`cat: can't open 'x': No such file or directory` -> `No such file or directory`."""
    line = last_line(stderr)
    return line.rsplit(": ", 1)[-1] if line else ""


def texts_of(tar_bytes: bytes, paths: Sequence[str]) -> Dict[str, str]:
    """READ_MANY's answer as {path: text} (UTF-8, else Latin-1); raises tarfile.TarError."""
    import tarfile  # SSH mode's only: a local run does without it

    wanted = {p.lstrip("/"): p for p in paths}
    texts = {}
    with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as tar:
        for m in tar:
            name = m.name[2:] if m.name.startswith("./") else m.name
            path = wanted.get(name.lstrip("/"))
            f = tar.extractfile(m) if path is not None and m.isfile() else None
            if f is None or path is None:
                continue
            data = f.read()
            try:
                texts[path] = data.decode("utf-8")
            except UnicodeDecodeError:
                texts[path] = data.decode("latin-1")
    return texts


def sha256_of(output: str, mark: str) -> str:
    """The digest in SHA256's answer (its line starting with `mark`, the token passed to it), or "" if none."""
    m = re.search(r"^%s \\?([0-9a-f]{64})\s" % re.escape(mark), output, re.M)
    return m.group(1) if m else ""


class RemoteReader(object):
    """File-like read side of a remote `cat` (`begun`): the bytes between its marks, exactly; a failed cat or a
    broken session raises HostError, at the latest at the end (the Shell contract: a file that cannot be read
    is a HostError, from open or read). Up to the end mark's length is held back until the stream shows
    whether it is the file's or the mark's."""

    CHUNK = 1 << 16

    def __init__(self, proc: "subprocess.Popen", path: str, mark: str,
                 broken: Callable[[Optional[int], str], Optional[HostError]], errout: IO[bytes]):
        """`broken`: the connection's error for a session that ended because SSH failed (None: it did not).
        `errout`: the file the session's stderr goes to (the reader's to close), never a pipe: a pipe nobody
        reads while the file comes would fill with a long greeting on stderr, and the cat's output stall."""
        if proc.stdout is None:
            raise ValueError("the remote cat needs a piped stdout")
        self.proc, self.path, self.out, self.err = proc, path, proc.stdout, errout
        self.mark, self.broken = mark, broken
        self.end = _end(mark)
        self.buf = bytearray()
        self.tail = b""  # from the end mark on: its exit code, then the shell's farewell
        self.begun = self.ended = False

    def _more(self) -> None:
        """Append what the session sent next to buf; raise at its end (the end mark not seen: no whole answer)."""
        chunk = self.out.read1(self.CHUNK)  # type: ignore[attr-defined]
        if chunk:
            self.buf += chunk
            return
        rc = self.proc.wait()
        failed = self._failed(rc)
        if failed is not None:
            raise failed
        raise HostError("cannot read %s: %s" % (self.path, CUT_SHORT if self.begun else no_answer(bytes(self.buf),
                                                                                               self.mark)))

    def _skip_greeting(self) -> None:
        """Read past what the host's shell printed before the cat (a greeting, of any length): only its last
        MAX_GREETING bytes are held, which hold a begin mark still coming whole and what a failure quotes."""
        while not self.begun:
            start = _answer_start(bytes(self.buf), self.mark)
            if start >= 0:
                del self.buf[:start]
                self.begun = True
            else:
                del self.buf[:-MAX_GREETING]
                self._more()

    def _ready(self) -> int:
        """How many bytes of buf are surely the file's."""
        return len(self.buf) if self.ended else max(0, len(self.buf) - len(self.end) + 1)

    def read(self, n: int = -1) -> bytes:
        if n == 0:
            return b""
        self._skip_greeting()
        whole = n is None or n < 0
        searched = 0
        while not self.ended:
            at = self.buf.find(self.end, searched)
            if at >= 0:
                self.tail = bytes(self.buf[at:])
                del self.buf[at:]  # the end mark and the shell's farewell after it
                self.ended = True
            elif whole or self._ready() < n:
                searched = self._ready()
                self._more()
            else:
                break
        take = self._ready() if whole else min(n, self._ready())
        data = bytes(self.buf[:take])
        del self.buf[:take]
        if not data:
            self.tail += self.out.read()  # the farewell: the session ends once it is read
            failed = self._failed(self.proc.wait(), code_after_end(self.tail, self.mark))
            if failed is not None:
                raise failed
        return data

    def _failed(self, rc: int, code: Optional[int] = None) -> Optional[HostError]:
        """The error of a session that ended with exit code `rc`: its connection's, else the cat's own words.
        `code`: the cat's own exit code from its end line (`end_code`), which a link lost after it leaves true;
        None: it did not come, the connection is asked."""
        self.err.seek(0)
        err = self.err.read()
        broken = None if code is not None else self.broken(rc, err.decode("utf-8", "replace"))
        rc = rc if code is None else code
        if broken is not None or rc == 0:
            return broken
        return HostError("cannot read %s: %s" % (self.path, reason(own_stderr(err, self.mark)) or "exit %d" % rc))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.out.close()
        self.err.close()

    def __enter__(self) -> "RemoteReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
