"""A command run under SSH mode's wrapper (sshscripts.WRAPPER), followed to its end: the part LocalShell's
tethered run and SshConnection.run share.

Both hold the wrapper's stdin (the tether: its EOF makes the wrapper end the command and its children),
read the merged output as it comes (cmdstream.py), let go of the tether once the command has ended or been
stopped, and take the wrapper's word that the command never started ("not found", "not executable") as the
error it is, not as a command that failed with exit 126 or 127. Over SSH the command's output is framed by
marks (sshscripts.begun), on stdout and on the session's stderr, which comes apart (the wrapper merges the
command's own stderr into its stdout on the host): a greeting the host's login shell prints before it, or a
farewell after it (an EXIT trap), on either, is neither its answer nor fed to its progress reader, nor hides
the wrapper's word. sshd sends the two streams each in its own order, so a banner's stderr lines merged here
would land anywhere in the answer.
"""

import subprocess
from typing import IO, Callable, List, Optional

from . import sshscripts
from .cmdstream import stream
from .errors import HostError
from .shell import Completed, OutputCallback


def follow(
    proc: "subprocess.Popen",
    argv: List[str],
    where: str,
    *,
    timeout: Optional[float],
    idle_timeout: Optional[float],
    on_output: Optional[OutputCallback],
    interruptible: bool,
    mark: Optional[str] = None,
    broken: Callable[[Optional[int], str], Optional[HostError]] = lambda returncode, output: None,
    stop: "Optional[Callable[[subprocess.Popen], None]]" = None,
    errout: Optional[IO[bytes]] = None,
) -> Completed:
    """The wrapped command's result; `proc` started as stream() wants it, its stdin the tether. `where` follows
    the command's name in the error when it could not run (" on root@esxi01"; "" here). `mark`: the session's
    (sshscripts.begun), its output cut to what lies between. `broken`: the error for a session that ended because
    its connection failed, not the command (None: it did not; not asked once the end line brought the command's exit code), given the session's stderr (`errout`'s, else its
output). `stop`: how a stop ends it (cmdstream.stream's). `errout`: the file the session's stderr went to, framed
by `mark` too: only what lies between its marks is the command's, added to its answer."""
    if mark is not None and on_output is not None:
        on_output = sshscripts.Framed(mark, on_output)
    try:
        done = stream(proc, argv, timeout=timeout, idle_timeout=idle_timeout,
                      on_output=on_output, interruptible=interruptible, stop=stop)
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
    err = b""
    if errout is not None:
        errout.seek(0)
        err = errout.read()
    out = done.output.encode("utf-8")
    answer = None if mark is None else sshscripts.after_mark(out, mark)
    # the exit code on the end line is the command's own (255 too), whatever ssh's status after it says
    code = None if mark is None else sshscripts.end_code(out, mark)
    if code is None:
        failed = broken(done.returncode, done.output if errout is None else err.decode("utf-8", "replace"))
        if failed is not None:
            raise failed
    if mark is not None:
        if answer is None:
            raise HostError("cannot run %s%s: %s" % (argv[0], where, sshscripts.no_answer(out + err, mark)))
        answer += sshscripts.after_mark(err, mark) or b""
        done = Completed(done.argv, done.returncode if code is None else code, answer.decode("utf-8", "replace"))
    why = sshscripts.cannot_run(done.returncode, done.output)
    if why is not None:
        raise HostError("cannot run %s%s: %s" % (argv[0], where, why))
    return done
