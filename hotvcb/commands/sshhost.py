"""An SSH host as given on the command line or in a `--hosts` file (`[user@]host[:port]`): read and
checked here, so a mistyped one is refused naming it instead of reaching ssh as a host it cannot connect
to (or as one of ssh's options)."""

import argparse
from typing import NoReturn, Optional, Tuple

from .. import lazyre
from ..errors import UsageError


def refuse_option_as_host(host: str, given: str) -> None:
    """A host name never starts with '-': such a value (`--host=$ESXI` holding `-oProxyCommand=...`, a
    piece of an ssh command line) would reach ssh as one of its options, not as the host to log in to."""
    if host.startswith("-"):
        raise UsageError("%s %r is not a host: it starts with '-', so ssh would read it as an option; give "
                         "[USER@]HOST, e.g. root@esxi01 (ssh options go in --ssh-option)" % (given, host))


HOST_FORMS = "[USER@]HOST[:PORT], e.g. root@esxi01, root@esxi01:2222, root@[fe80::1]:2222"
_BRACKETED = lazyre.compile(r"^\[([^\[\]]*)\](?::(.*))?$")
_IPV6 = lazyre.compile(r"^[0-9A-Fa-f:.]+(%\S+)?$")  # `fe80::1%vmk0`: the zone after '%' is the host's to say


def host_and_port(value: str, given: str) -> Tuple[str, Optional[int]]:
    """`[user@]host[:port]` -> (`[user@]host`, port or None); anything else is a UsageError naming `given`
    (`--host`, or a `--hosts` file's `FILE:LINE:`) and the value. Passed through, `@esx1`, `esx1:`,
    `esx1:abc` or `root@[::1` reached ssh as host names: the admin read "cannot connect" or a line of ssh's
    usage text, as if the host were down. A host with more than one `:` is an IPv6 address without a port:
    its last group was taken for one (`root@::1` became `root@:` port 1), so it needs brackets for a port."""
    user, at, host = value.rpartition("@")

    def refuse(why: str) -> NoReturn:
        raise UsageError("%s %r: %s; give %s" % (given, value, why, HOST_FORMS))
    refuse_option_as_host(value, given)
    if at and not user:
        refuse("names no user before its '@'")
    if not host:
        refuse("names no host")
    if any(c.isspace() for c in value):
        refuse("holds white space")
    bracketed = _BRACKETED.match(host)
    if bracketed:
        address, port = bracketed.group(1), bracketed.group(2)
        if not address:
            refuse("names no address in its brackets")
    elif "[" in host or "]" in host:
        refuse("has a bracket without its pair")
    elif host.count(":") > 1:
        if not _IPV6.match(host):
            refuse("is neither HOST:PORT nor an IPv6 address")
        address, port = host, None
    else:
        address, _, port = host.partition(":")
        port = port if ":" in host else None
        if not address:
            refuse("names no host before its ':'")
    if port is None:
        return user + at + address, None
    if not port:
        refuse("names no port after its ':'")
    try:
        return user + at + address, port_number(port)
    except ValueError as e:
        refuse(str(e))


def port_number(text: str) -> int:
    """An SSH port: a number 1-65535. ssh says "Bad port" of any other, which a run reported as a host it
    cannot connect to (status UNKNOWN, as for a host that is down) instead of a mistyped command line."""
    if not text.isdigit() or not text.isascii():
        raise ValueError("port %r is no number" % text)
    if not 0 < int(text) <= 65535:
        raise ValueError("port %s is out of range (1-65535)" % text)
    return int(text)


def port_option(text: str) -> int:
    """`--port N` read by argparse: `port_number`, its refusal argparse's usage error."""
    try:
        return port_number(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e))
