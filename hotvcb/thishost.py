"""This machine's id for the records a process on it writes and judges (a GC lock, a `restore --to`'s
record, the cleanup that weighs them): /etc/machine-id, or on an ESXi host, which has none, the id its
run lock's records carry (runid.host_id in /var/run). A record carrying no id of this machine would be
"another host of this name" to the next restore and every cleanup there, its dead restore's folder left
for lock.STALE_AFTER; one carrying the run lock's id is known as this host's by `cleanup -g` too.
A dry run judges records by the same id but must not make one (`known_this_host`): where none exists yet,
no record can name this host by it either."""

import functools

from .errors import HotvcbError
from .localshell import LocalShell
from .runid import host_id, known_host_id, machine_id

HOST_ID_DIR = "/var/run"  # hosts/esxi.py's run_dir: where an ESXi host (no /etc/machine-id) keeps its host id


@functools.lru_cache(maxsize=None)
def this_host() -> str:
    """This machine's id: /etc/machine-id, or on an ESXi host the id its run lock's records carry; "" if
    neither can be had (this machine's records are then told from others' by name alone)."""
    try:
        return machine_id() or host_id(LocalShell(), HOST_ID_DIR)
    except HotvcbError:
        return ""


def known_this_host() -> str:
    """this_host() for a dry run, which writes nothing: read where the id file exists, else "" (no record
    names this host by an id it has not made yet)."""
    return machine_id() or known_host_id(LocalShell(), HOST_ID_DIR)
