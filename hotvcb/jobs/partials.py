"""A dead run's `-partial` backup folders removed (the rules of leftovers.py), also in the volume a per-VM file chose,
which the VM's volume marker names while its backup is written there."""

from __future__ import annotations

from typing import Callable, List, Mapping, Optional

from ..clockage import heartbeat
from ..errors import HotvcbError
from ..hosts.base import Hypervisor
from ..runid import RECORD_MAX, RunId, parse
from ..shell import Shell
from ..store import layout
from ..store.lock import STALE_AFTER
from ..store.rotation import finish_deleting
from ..store.seal import OWNER, owner_of
from ..treeview import ScannedShell
from .leftovers import vm_marker
from .ownership import NONE_DEAD, made_at, owner_alive, unprobed_doubt, volume_age


VOLUME_MARKER = ".hotvcb-backup-volume"  # + ".<vmx file name>": the per-VM volume a backup of it is written to


def volume_marker(vm) -> str:
    """One per VM, as power_marker: while its backup is written to a volume its per-VM file (-c) chose."""
    return vm_marker(vm, VOLUME_MARKER)


def mark_volume(host: Hypervisor, vm, volume: str) -> None:
    host.shell.write_text(volume_marker(vm), volume + "\n")


def clear_volume_mark(host: Hypervisor, vm) -> None:
    host.shell.remove_tree(volume_marker(vm))


def marked_volume(host: Hypervisor, vm, log) -> Optional[str]:
    """The volume a killed run was writing the VM's backup to, where it is not the run's global one (a
    per-VM file's VM_BACKUP_VOLUME): `hotvcb cleanup` is given no -c, and must still find the `-partial`
    there. Read as a file anyone may have planted (no FIFO); one naming no absolute path is said and
    ignored."""
    path = volume_marker(vm)
    try:
        if not host.shell.exists(path):
            return None
        text = host.shell.read_regular(path, RECORD_MAX).strip()
    except HotvcbError as err:
        log.warning("%s: %s cannot be read (%s); a backup folder outside the backup volume is not looked for"
                    % (vm.name, path, err))
        return None
    if not text.startswith("/") or "\n" in text:
        log.warning("%s: %s names no backup volume; ignored" % (vm.name, path))
        return None
    return text


def _partials_elsewhere(host: Hypervisor, vm, volume: str, log, run: RunId, dry_run: bool,
                        dead: Mapping[str, float], undecided: Optional[List[str]] = None) -> int:
    """The dead runs' `-partial` folders of the VM in the volume its marker names (marked_volume), and the
    marker once none is left there (`undecided` as remove_partials')."""
    elsewhere = marked_volume(host, vm, log)
    if elsewhere is None:
        return 0
    found = 0
    if elsewhere.rstrip("/") != volume.rstrip("/"):
        found = remove_partials(host.shell, elsewhere, vm.name, log, run, dry_run, dead=dead, undecided=undecided)
        if dry_run or any(b.status == "partial" for b in layout.list_backups(host.shell, elsewhere, vm.name)):
            return found
    clear_volume_mark(host, vm)
    return found


def remove_partials(shell: Shell, volume: str, vm_name: str, log, run: RunId, dry_run: bool = False,
                    finish: Optional[Callable[[str], None]] = None, dead: Mapping[str, float] = NONE_DEAD,
                    undecided: Optional[List[str]] = None) -> int:
    """Delete the -partial folders (and temp archives) of dead runs, and finish the removals of
    `-deleting` entries (by `finish`, else at once: rotation.finish_deleting); call only under the
    host lock. How many leftovers there were (a refused removal not counted). A dry run's folders it cannot
    tell about (partial_dead: None) go to `undecided`: the cleanup's summary counts them, or its "0 found"
    would say there is nothing where the real cleanup may remove them."""
    shell = ScannedShell(shell, layout.vm_root(volume, vm_name))  # one look at the VM's folder
    removed = 0
    for b in layout.list_backups(shell, volume, vm_name):
        if b.status != "partial":
            continue
        died = partial_dead(shell, b.path, run, dead, dry_run=dry_run)
        if died is None:
            log.info("%s: %s of %s: cannot tell whether its run died (no clock probe in a read-only run, and "
                     "the volume's clock may be off this machine's); `hotvcb cleanup` tells"
                     % (vm_name, b.path, owner_of(shell, b.path)))
            if undecided is not None:
                undecided.append(b.path)
            continue
        if not died:
            log.info("%s: %s is being written by %s; leaving it" % (vm_name, b.path, owner_of(shell, b.path)))
            continue
        removed += 1
        if dry_run:
            log.info("%s: would remove unfinished backup %s" % (vm_name, b.path))
            continue
        log.warning("%s: removing unfinished backup %s left by a run that died" % (vm_name, b.path))
        shell.remove_tree(b.path)
    for path in dead_archives(shell, volume, vm_name, run, dead, dry_run=dry_run):
        removed += 1
        if dry_run:
            log.info("%s: would remove unfinished archive %s" % (vm_name, path))
            continue
        log.warning("%s: removing unfinished archive %s left by a run that died" % (vm_name, path))
        shell.remove_tree(path)
    return removed + finish_deleting(shell, volume, vm_name, log, finish, dry_run)


def dead_archives(shell: Shell, volume: str, vm_name: str, run: RunId, dead: Mapping[str, float] = NONE_DEAD,
                  locked: bool = True, dry_run: bool = False) -> List[str]:
    """The half-written archives (`.<backup>.gz.tmp`, as big as the backup again) in the VM's folder that dead
    runs left: one whose `-partial` is gone, or a dead run's (partial_dead, `locked` and `dry_run` as there).
    Cleanup removes them and status names them, so both go by this one list."""
    root = layout.vm_root(volume, vm_name)
    if not shell.isdir(root):
        return []
    found = []
    for entry in shell.listdir(root):
        if entry.startswith(".") and entry.endswith(".gz.tmp"):
            partial = root + "/" + entry[1 : -len(".gz.tmp")] + layout.PARTIAL
            if not shell.exists(partial) or partial_dead(shell, partial, run, dead, locked, dry_run):
                found.append(root + "/" + entry)
    return found


def partial_dead(shell: Shell, partial: str, run: RunId, dead: Mapping[str, float] = NONE_DEAD,
                 locked: bool = True, dry_run: bool = False) -> Optional[bool]:
    """Whether a `-partial` folder was left by a run that died (never one of `run`'s own). `locked`: the caller
    holds this host's run lock (cleanup, a backup), so another machine's run on this host (a client going file
    by file) is gone, as no run works on a host without its lock. Without it (`status`) such a run may be the
    one holding the lock now: judged by its owner file's heartbeat alone, as another host's run is. `dry_run`
    (a dry run, or read-only `status`): no clock probe is written into the VM's folder (volume_age), the age is
    by this machine's clock: None where only the volume's clock could tell (ownership.unprobed_doubt), which
    status leaves unnamed and a dry run says it cannot tell."""
    owner_file = partial + "/" + OWNER
    try:
        owner = parse(shell.read_regular(owner_file, RECORD_MAX)) if shell.exists(owner_file) else None
    except HotvcbError:
        owner = None
    if owner is not None:
        if owner.run == run.run:
            return False
        folder = partial.rsplit("/", 1)[0]
        alive = owner_alive(owner, run, dead, lambda: made_at(volume_age(shell, owner_file, folder, run, dry_run)))
        if alive:
            return False
        if alive is False and owner.host and owner.host == run.host and (locked or owner.same_machine(run)):
            return True  # this host's run, and we hold its lock (or this machine's, its pid gone); else: by heartbeat
    age = volume_age(shell, owner_file if shell.exists(owner_file) else partial, partial.rsplit("/", 1)[0], run,
                     dry_run)
    if dry_run and unprobed_doubt(age, STALE_AFTER):
        return None
    return heartbeat(age, STALE_AFTER) is False  # dated ahead: cannot tell, kept
