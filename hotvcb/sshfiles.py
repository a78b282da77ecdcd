"""The admin's files SSH mode hands to ssh (--identity, --known-hosts): checked here before the first
connection, and written so that ssh opens exactly the file named.

ssh reads an IdentityFile or UserKnownHostsFile value as ssh_config(5) says: `%` starts a token (`%h`
is the host name, so `/srv/keys/a%hb/id` would be another file), `${NAME}` is an environment variable,
and `"` and `\\` are its quoting. `config_value` escapes `%` as `%%` and quotes the value; a path ssh has
no escape for (`${`, a line break) is refused naming it.

A file ssh cannot use is otherwise blamed by ssh on the host: a --known-hosts folder or a file in a missing
folder ends in "host key not known", and is refused here before connecting. A public key given as
--identity is let through (it picks a key an agent or a hardware token holds); when the login is refused
with one, `public_half` says it is the public half, not that it is "too open" at ssh-keygen's 0644 or
missing from the host's authorized_keys.
"""

import os
import stat

from . import lazyre
from .errors import HostError

# the first line of a public key file: OpenSSH's one-line format, or RFC 4716's (ssh-keygen -e)
_PUBLIC_KEY = lazyre.compile(r"((ssh|ecdsa|sk)-\S+ AAAA|---- BEGIN SSH2 PUBLIC KEY ----)")


def config_value(path: str, what: str) -> str:
    """`path` as an ssh -o value that ssh reads back as `path` (`what`: the option naming it, for the refusal)."""
    for bad, name in (("${", "'${'"), ("\n", "a line break"), ("\r", "a carriage return")):
        if bad in path:
            raise HostError("%s %r: ssh cannot take a path holding %s; move or link the file to a path "
                            "without it" % (what, path, name))
    escaped = path.replace("%", "%%").replace("\\", "\\\\").replace('"', '\\"')
    return '"%s"' % escaped


def check_identity(path: str) -> None:
    """Refuse an --identity that is no key file (missing or unreadable, a folder), or that ssh cannot be given
    (`config_value`). A public key is let through: `-i key.pub -o IdentitiesOnly=yes` is OpenSSH's way to pick
    a key an agent or a hardware token holds (`public_half` says so if the login fails)."""
    config_value(path, "--identity")
    local = os.path.expanduser(path)
    if os.path.isdir(local):
        raise HostError("--identity %s is a folder; name the private key file in it (the one without .pub)" % path)
    try:
        if stat.S_ISREG(os.stat(local).st_mode):  # a device or FIFO (a key served by a program) is ssh's to read
            with open(local, "rb"):
                pass
    except OSError as err:
        raise HostError("the identity file %s cannot be read (%s)" % (path, err.strerror or err)) from err


def public_half(path: str) -> str:
    """For a login refused with --identity `path`: if that file is a public key, what to do about it ("" if it
    is not one). ssh logs in with a public key file only through an agent (or a hardware token) holding its
    private half, and tries the file itself as a private key otherwise (at ssh-keygen's 0644, "too open")."""
    local = os.path.expanduser(path)
    try:
        if not stat.S_ISREG(os.stat(local).st_mode):
            return ""  # a device or FIFO (a key served by a program): never waited on here
        with open(local, "rb") as f:
            head = f.read(64).decode("ascii", "replace")
    except OSError:
        return ""
    if not _PUBLIC_KEY.match(head):
        return ""
    private = path[:-len(".pub")] if path.endswith(".pub") else ""
    beside = " (%s, beside it)" % private if private and os.path.isfile(os.path.expanduser(private)) else ""
    return ("--identity %s is the public half of a key: ssh logs in with it only through an agent or hardware "
            "token holding its private key, and none offered it; pass the private key%s, or load it into the "
            "agent (ssh-add) that SSH_AUTH_SOCK names" % (path, beside))


def check_known_hosts(path: str) -> None:
    """Refuse a --known-hosts that cannot be a file: a folder, or a file in a folder that does not exist.
    (A missing file in an existing folder is an unknown host key: ssh-keyscan >> FILE makes it.) Or one
    ssh cannot be given (`config_value`)."""
    config_value(path, "--known-hosts")
    local = os.path.expanduser(path)
    if os.path.isdir(local):
        raise HostError("--known-hosts %s is a folder; name the known_hosts file (e.g. %s)"
                        % (path, os.path.join(path, "known_hosts")))
    folder = os.path.dirname(local) or "."
    if not os.path.isdir(folder):
        raise HostError("--known-hosts %s: its folder %s does not exist (a typo in the path?)" % (path, folder))
