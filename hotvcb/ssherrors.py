"""What the admin is told when SSH fails: a connection refused (an unknown or changed host key, a
login refused, an --identity file ssh would not use or a public key no agent holds), a connection lost
mid-session, or the local ssh client killed. Each message names the problem from ssh's own words, never from what the remote command
printed (vmkfstools' progress is no reason a connection went), and says what to do where there is
something to do.
"""

import signal
from typing import TYPE_CHECKING, Tuple

from . import lazyre, sshfiles, sshscripts as sh
from .errors import ConnectionLost

if TYPE_CHECKING:
    from .sshconnection import SshTarget

# what ssh says of an --identity file others may read (it then logs in without it, and its last line blames the
# host); a missing or unreadable one or a folder is refused before ssh runs, a public key named if the login
# fails (sshfiles.py)
_IDENTITY_TOO_OPEN = lazyre.compile(r"Permissions ([0-7]+) for '(.+)' are too open")
# what ssh itself says when a connection breaks; any other line of a session's output is the remote
# command's (vmkfstools' `Clone: 5% done.`), never the reason the connection went
_SSH_SAYS = lazyre.compile(r"^(ssh: |client_loop: |mux_client|Control socket|packet_write_wait: |Read from remote host"
                           r"|Timeout, server |Connection (to|closed|reset)|Shared connection to |Broken pipe)")


# the known_hosts name ssh looked the key up under, in its own words: `[esxi01]:2222` for a port other than 22
_CHECKED_AS = lazyre.compile(r"(?:host key is known for|Host key for) (\S+) (?:and|has changed)")
_BRACKETED = lazyre.compile(r"\[(.+)\]:(\d+)")


def _checked(target: "SshTarget", message: str) -> Tuple[str, str, str]:
    """(known_hosts name, host, `-p N ` or "") of the key ssh checked: as ssh names it where it does, for a
    port that came from --ssh-option Port=N or ~/.ssh/config (the admin was told of port 22's key and to
    `ssh-keyscan` it, a line ssh never reads); else as --host and --port give it."""
    m = _CHECKED_AS.search(message)
    name = m.group(1) if m else target.known_hosts_name
    bracketed = _BRACKETED.fullmatch(name)
    if bracketed:
        return name, bracketed.group(1), "" if bracketed.group(2) == "22" else "-p %s " % bracketed.group(2)
    return name, name, ""


def connect_error(target: "SshTarget", message: str) -> str:
    """Why the master connection could not be made, from what ssh said, with what the admin can do
    about it (a host key to check and add, a key to give)."""
    t = target
    known = t.known_hosts or "~/.ssh/known_hosts"
    name, host, port = _checked(t, message)
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in message or "Host key for" in message:
        return (
            "the SSH host key of %s has CHANGED since it was recorded in %s; refusing to connect "
            "(this can be an attack, or the host was reinstalled). If you know why it changed, remove "
            "the old key with `ssh-keygen -R '%s' -f %s`, check the new key's fingerprint on the host "
            "console (`for k in /etc/ssh/ssh_host_*_key.pub; do ssh-keygen -lf $k; done`) and add it as "
            "below: `ssh-keyscan %s%s >> %s`" % (host, known, name, known, port, host, known)
        )
    if "Host key verification failed" in message or "host key is known" in message:
        return (
            "the SSH host key of %s is not known (not in %s), and hotvcb never accepts a host key by "
            "itself. Compare the fingerprints of `ssh-keyscan %s%s | ssh-keygen -lf -` with those shown "
            "on the host console (`for k in /etc/ssh/ssh_host_*_key.pub; do ssh-keygen -lf $k; done`), "
            "then add the key: `ssh-keyscan %s%s >> %s` (or run `ssh %s%s` once and answer yes)"
            % (name, known, port, host, port, host, known, port, t.destination)
        )
    detail = sh.last_line(message) or "ssh exited with an error"
    identity = _identity_problem(message)
    if "Permission denied" in message:
        identity = (sshfiles.public_half(t.identity) if t.identity else "") or identity
        return ("SSH login to %s refused (%s): %s" % (t.destination, detail, identity or (
            "hotvcb logs in with a key, never a password; put the public key in "
            "/etc/ssh/keys-<user>/authorized_keys on ESXi and pass --identity FILE")))
    return "cannot connect to %s over SSH: %s%s" % (t.destination, detail, "; " + identity if identity else "")


def lost(destination: str, output: str) -> ConnectionLost:
    """The master connection is gone: said with ssh's own last word on it (`output`: the session's)."""
    return ConnectionLost("lost the SSH connection to %s: %s" % (destination, _ssh_said(output) or "ssh exited 255"))


def killed(destination: str, returncode: int) -> ConnectionLost:
    """A session's ssh client on this machine was killed by signal -`returncode`."""
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = "signal %d" % -returncode
    return ConnectionLost("the SSH session to %s broke: its ssh client on this machine was killed by %s "
                     "(out of memory, or killed by hand?)" % (destination, name))


def _identity_problem(message: str) -> str:
    """Why ssh did not use the --identity file, from its own lines ("" if it said nothing): one others may
    read. ssh goes on without the key, so its last line is the host's refusal, and the
    admin would look for the fault in the host's authorized_keys instead of their own file."""
    too_open = _IDENTITY_TOO_OPEN.search(message)
    if too_open:
        return ("ssh ignores the identity file %s: its permissions %s let others read it; `chmod 600 %s`"
                % (too_open.group(2), too_open.group(1), too_open.group(2)))
    return ""


def _ssh_said(output: str) -> str:
    """ssh's own last line about its connection in a session's output, "" if it said none."""
    lines = [ln.strip() for ln in output.replace("\r", "\n").splitlines()]
    said = [ln for ln in lines if _SSH_SAYS.match(ln)]
    return said[-1] if said else ""
