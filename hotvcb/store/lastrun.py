"""The last backup attempt of each VM, failed ones included: `<VOLUME>/<VM>/.hotvcb-last-run.<host>.<id>.json`.

A run that fails before it claims a backup folder (its per-VM file refused, a
failing pre-hook, a pre-flight refusal, a VM that will not shut down) leaves no folder behind;
without this record `hotvcb status` would call the VM OK on its older good
backup until the age limit ran out. One file per VM name and host (hosts
sharing a volume each keep their own, also two of one name: `_path`), written atomically, best effort, for
runs that did not end well, and by a run that ended well only over such a record (`settle`), so that the
record follows the runs' order where whole seconds cannot: `hotvcb status` reads a failure only when it is
not older than the newest good backup, and only as the record of the VM it names
(by `vm_uuid` where both have one: two hosts of one name, ESXi's `localhost`,
may each have a VM of that name). It never creates the backup volume (a
missing or unmounted volume must stay missing, not become a local folder), and
writes nothing under a share /etc/fstab names while nothing is mounted there
(the empty mount point is the host's own disk, and the share hides it once
mounted). A VM backed up into a repository has its records in the repository's
folder `last-run/`, laid out as a volume (`in_repository`): made only inside
an existing repository (a folder holding its `config`: a new repository is
made only in an empty folder, which a failed first run must leave empty), and
no object of it (its readers and GC list only their own folders).
"""

import json
import re
import time
from typing import Any, Dict, List, Optional

from ..errors import HotvcbError
from ..shell import Shell
from . import layout, volume as volumes

PREFIX = ".hotvcb-last-run"
FOLDER = "last-run"  # in a repository's folder: the records of the VMs backed up into it
REPOSITORY = "config"  # what a repository's folder holds once it is one (docs/repository.md "Layout")
LAST_MAX = 1 << 20  # one run's result: a few hundred bytes


def in_repository(path: str) -> str:
    """Where the records of VMs backed up into the repository at `path` go, as `volume`: beside its
    backups, since the backup volume may not even exist for such a VM."""
    return path.rstrip("/") + "/" + FOLDER


def _path(volume: str, vm_name: str, host_name: str, system: str = "") -> str:
    """`.hotvcb-last-run.<host name>.<16 hex of the host's system id>.json`: host names are not unique (ESXi's
    default `localhost`), and two hosts of one name sharing a volume or repository wrote one file, the later
    failure overwriting the other host's (its status then said OK). The system id is the one a repository tells
    hosts apart by (docs/repository.md "Which VM a backup is of"); it outlives a reboot, so a failure recorded
    before one is still found after. A host without one (`system` "") keeps the name alone, as before."""
    import hashlib  # where a run writes or reads its record, not at every command's start

    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", host_name) or "host"
    ours = "." + hashlib.sha256(system.encode("utf-8")).hexdigest()[:16] if system else ""
    return "%s/%s.%s%s.json" % (layout.vm_root(volume, vm_name), PREFIX, safe, ours)


def record(shell: Shell, volume: str, vm_name: str, host_name: str, vm_uuid: str, result: str, message: str,
           log, inside: str = "", system: str = "") -> None:
    """`inside`: the repository the records at `volume` belong to (`in_repository`), which must exist; without
    it, the volume itself must exist. `system`: the host's system id (Hypervisor.system_id), in the file's name."""
    data = {"vm": vm_name, "host": host_name, "vm_uuid": vm_uuid, "time": int(time.time()), "result": result,
            "message": message}
    text = json.dumps(data, ensure_ascii=False) + "\n"
    try:
        if volumes.unmounted_share(shell, (inside or volume).rstrip("/") or "/"):
            return  # the failure itself is the share (the run's log says so): its mount point is the host's disk
        if inside and not shell.exists(inside.rstrip("/") + "/" + REPOSITORY):
            return  # no repository yet: the folder stays as the admin made it, for the next run to make one
        try:
            shell.write_text(_path(volume, vm_name, host_name, system), text)
        except HotvcbError:
            if not shell.isdir(inside or volume):
                return  # the failure itself is the volume (or repository); the run's log says so
            shell.makedirs(layout.vm_root(volume, vm_name))  # a VM refused before its first backup
            shell.write_text(_path(volume, vm_name, host_name, system), text)
    except HotvcbError as err:
        log.warning("%s: cannot record this run's result %s: %s" % (
            vm_name, "in the repository" if inside else "on the backup volume", err))


def settle(shell: Shell, volume: str, vm_name: str, host_name: str, vm_uuid: str, log, inside: str = "",
           system: str = "") -> None:
    """A run that ended well for a VM whose failure this host recorded: its own record now says so. Compared by
    time alone, a failure and a good backup begun in the same whole second could not be told apart (status said
    "last run was error" after the good run, or OK after the failure); the record itself now follows the runs'
    order. Nothing is written where no record is (`shell` a ScannedShell of the VM's folder: no host command)."""
    own, bare = _path(volume, vm_name, host_name, system), _path(volume, vm_name, host_name)
    if _ours(_listed(shell, own), own, bare):
        record(shell, volume, vm_name, host_name, vm_uuid, "ok", "", log, inside, system)


def last(shell: Shell, volume: str, vm_name: str, host_name: str, vm_uuid: str = "",
         system: str = "") -> Optional[Dict[str, Any]]:
    """The VM's last run recorded on this host (`system`: its system id), None if none: the newest of its own
    file, the one an older hotvcb wrote under the host's name alone, and, for a VM with a uuid, the files of
    this host name under another system id that name that uuid (a reinstall gives the host a new system id: the
    failure recorded under the old one is still this VM's, and status said OK). A record naming another uuid
    than `vm_uuid` (both known) is another VM's, of a host of the same name. Its own file wins a tie (`settle`
    wrote it last). One listing of the VM's folder finds them all, and only the names it shows are read (status
    passes its ScannedShell of that folder: no host command at all)."""
    own, bare = _path(volume, vm_name, host_name, system), _path(volume, vm_name, host_name)
    found = []  # type: List[Dict[str, Any]]
    for path in _ours(_listed(shell, own), own, bare):
        data = _read(shell, path)
        if data is None or (data.get("vm_uuid") and vm_uuid and data["vm_uuid"] != vm_uuid):
            continue
        if path in (own, bare) or data.get("vm_uuid") == vm_uuid != "":
            found.append(data)
    return max(found, key=lambda rec: rec["time"]) if found else None


def _listed(shell: Shell, own: str) -> List[str]:
    """The names in the folder of the VM's records, none where it cannot be listed."""
    try:
        return shell.listdir(own.rpartition("/")[0])
    except HotvcbError:
        return []


def _ours(names: List[str], own: str, bare: str) -> List[str]:
    """The paths among `names` of this host name's records: its own file first, then the one under the host's
    name alone, then those under another system id."""
    folder, _sep, name = bare.rpartition("/")
    theirs = re.compile(re.escape(name[:-len(".json")]) + r"\.[0-9a-f]{16}\.json\Z")
    others = sorted("%s/%s" % (folder, n) for n in names if theirs.match(n))
    listed = {"%s/%s" % (folder, n) for n in names}
    return [p for p in dict.fromkeys([own, bare] + others) if p in listed]


def _read(shell: Shell, path: str) -> Optional[Dict[str, Any]]:
    """A last-run record, None where there is none or it is no record."""
    try:
        data = json.loads(shell.read_regular(path, LAST_MAX))  # a FIFO planted there must not hang list/status
    except (HotvcbError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("time"), int) else None
