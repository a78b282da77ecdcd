"""`hotvcb cleanup`'s (and the next restore's) look at the records restore_scratch.py writes: a dead
restore's scratch or unfinished VM folder is removed, never a live one's, with no lock shared by
restores and cleanups.

Cleanup removes a folder only when its restore is provably dead: recorded on this machine by a
process that is no longer the hotvcb it records (ownership.owner_alive, as for snapshots and
markers: its pid may be another hotvcb's now, told by the process's start time where the record has
it). One whose process cannot be told from here (another pid namespace of this machine, a process
/proc hides) is judged by its heartbeat, as one of another host id. One recorded on another machine
(a datastore shared over NFS) is reported and left: its pid means nothing here. A folder with our
prefix and no record (an older hotvcb's) is reported and left too; so is a record naming a folder
outside its datastore or not named as Records.make names one (forged, garbage: cleanup deletes what
a record names). A record is read with Shell.read_regular: anyone who can write a datastore root
can plant a FIFO (a plain read waits forever), a device or a symlink there.

Cleanup looks at the folder before it reads the record a second time (_seen_dead), after it has
said what it removes (a log held by a full pipe holds no verdict), so a later restore's record and
folder made while it decides are seen, and a dead record whose folder was not there only loses its
record. The folder is then renamed to a scratch folder of the cleanup's own (Records.take) and the
record read a third time before anything is deleted (_remove_dead): unchanged, what was renamed is
the dead restore's, removed where no restore or other cleanup looks; replaced, it goes back. No
lock is shared by restores and cleanups, so windows stay where nothing of a live restore is
deleted: cleanup removing a dead record just as a later restore replaces it, or of two restores
racing for one folder the loser writing its record after the maker's last look and then removing
it, leaves the maker's folder without one (kept by cleanup, if that restore is killed too); a live
folder renamed in the instant between the last look and the rename is back under its name a moment
later (a restore writing a new file into it right then fails, and removes it as it would on any
failure). Only an admin removing a dead restore's folder by hand while cleanup removes it, and a
new restore remaking it in between, could lose a folder.

A record of this machine's name is judged by its pid only when its host id is ours; one with
another id (another host of that name, or ours before a reboot: ESXi keeps its id on a ramdisk) or
none (an older hotvcb's) is a dead restore's only once its heartbeat is lock.STALE_AFTER old as
well, by the datastore's own clock (ownership.volume_age); one dated ahead of that clock (stepped back
since: a live restore's last beat is, until its next) cannot be told, and is kept (clockage.heartbeat).
A dry run writes no clock probe into the datastore: it ages the record by this machine's clock.
"""

import re
from typing import Iterable, Optional, Set

from ..clockage import heartbeat
from ..errors import HostError
from ..pids import hotvcb
from ..runid import RunId, parse
from ..shell import Shell
from ..store.lock import STALE_AFTER
from .ownership import owner_alive, unprobed_doubt, volume_age
from .restore_scratch import (PREFIX, RECORD, RECORD_MAX, RESTORING, RESTORING_RECORD, Records, record_of,
                              recorded_path, vm_named_so)
from .. import lazyre

TAKEN_OVER = "%s: a new restore took it over meanwhile; leaving it"
_NAME = lazyre.compile(r"^%s\d+-\d+-[0-9a-f]+$" % re.escape(PREFIX))  # as Records.make names a folder


def sweep(shell: Shell, roots: Iterable[str], log, me: RunId, dry_run: bool = False,
          would_remove: Optional[Set[str]] = None) -> int:
    """Remove the scratch folders of dead restores recorded in the roots; how many were removed
    (would be, dry run). One that cannot be is logged as an error. `would_remove` gets each folder a
    dry run says it would remove: the restore's dry run then plans as if it were gone, as the real run
    finds it (a dead restore's unfinished VM folder is no "another restore is running")."""
    found = 0
    taker = Records(shell, lambda: me.host, RunId.new().with_process_start().on_host(me.host))  # names of its own
    for root in sorted({r.rstrip("/") for r in roots}):
        try:
            entries = shell.listdir(root) if shell.isdir(root) else []
        except HostError as err:
            log.warning("cannot look for restores' scratch folders in %s: %s" % (root, err))
            continue
        for entry in entries:
            if _RECORD_TEMP.match(entry):
                found += _remove_dead_temp(shell, root + "/" + entry, log, me, dry_run)
                continue
            if entry.endswith(RESTORING) and len(entry) > len(RESTORING):
                _unrecorded(shell, root + "/" + entry, log)
                continue
            if not entry.startswith((PREFIX, RESTORING_RECORD)):
                continue
            if not entry.endswith(RECORD):
                if entry.startswith(PREFIX) and entry + RECORD not in entries:
                    log.warning("%s/%s: a restore's scratch folder without its record (an older hotvcb's?); "
                                "leaving it -- remove it by hand if no restore is running" % (root, entry))
                continue
            try:
                text = shell.read_regular(root + "/" + entry, RECORD_MAX)
            except HostError as err:
                log.warning("%s -- leaving it" % err)
                continue
            owner, folder = parse(text), recorded_path(text)
            name = folder.rsplit("/", 1)[-1]
            if owner is None or not _named_ours(name) or record_of(folder).rsplit("/", 1)[-1] != entry:
                log.warning("%s/%s: not a record hotvcb wrote; leaving it" % (root, entry))
                continue
            if owner.run == me.run and owner.same_machine(me):
                continue  # this restore's own (a repository's backup staged here before the sweep): no finding
            if not _inside(shell, folder, root):
                log.warning("%s/%s names %s, outside this datastore (through a symlink?); leaving it -- remove "
                            "both by hand if no restore is running" % (root, entry, folder))
                continue
            if not owner.same_machine(me):
                log.warning("%s: %s of a restore on %s (%s); leaving it to a cleanup there"
                            % (folder, _kind(name), owner.machine_seen_from(me), owner))
                continue
            alive = owner_alive(owner, me)
            if alive:
                log.info("%s: %s of a running restore (%s); leaving it" % (folder, _kind(name), owner))
                continue
            beat = _heartbeat_fresh(shell, root, entry, owner, me, by_pid=alive is False, dry_run=dry_run)
            if beat is not None and alive is None:
                log.warning("%s: %s of a restore whose process cannot be told from here (another pid namespace, "
                            "or hidden by /proc: %s), touched %d s ago; leaving it (a cleanup takes it once "
                            "untouched for %d s)" % (folder, _kind(name), owner, beat, STALE_AFTER))
                continue
            if beat is not None:
                log.warning("%s: %s of a restore whose record names %s, not this host (%s), touched %d s ago; "
                            "leaving it (another host named %s? a cleanup takes it once untouched for %d s)"
                            % (folder, _kind(name), "host id " + owner.host if owner.host else "no host id",
                               me.host or "no id", beat, owner.machine, STALE_AFTER))
                continue
            if _seen_dead(shell, root + "/" + entry, text, folder) is None:
                log.info(TAKEN_OVER % folder)
                continue
            vm = vm_named_so(shell, folder) if name.endswith(RESTORING) else ""
            if vm:  # its restore died after renaming the folder away; a VM restored under that name made it anew
                log.warning("%s: the folder of the VM %r restored there (%s within), named like a restore's "
                            "unfinished folder: no leftover; leaving it%s" % (folder, name, vm, "" if dry_run else
                                                                            ", removing the record naming it"))
                if not dry_run and not _replaced(shell, root + "/" + entry, text):
                    shell.remove_tree(root + "/" + entry)
                continue
            if dry_run:
                found += 1
                log.info("would remove %s, left by a restore that died (%s)" % (folder, owner))
                if would_remove is not None:
                    would_remove.add(folder)
                continue
            # said before the last look: a log held (`cleanup | less`) must not hold a verdict
            log.warning("removing %s, left by a restore that died (%s)" % (folder, owner))
            try:
                removed = _remove_dead(shell, taker, root + "/" + entry, text, folder)
            except HostError as err:  # one stuck folder must not keep the others
                log.error("%s -- left with its record for the next cleanup; remove it by hand" % err)
                continue
            if removed:
                found += 1
            else:
                log.info(TAKEN_OVER % folder)
    return found


def _unrecorded(shell: Shell, folder: str, log) -> None:
    """Say so of a restore's unfinished VM folder no record names: a restore writes its record before it
    makes the folder and removes it after, so no restore of this hotvcb is at work in it (made by hand,
    copied, an older hotvcb's), and none will remove it. Left, as a folder without a record always is, but
    named: it is what refuses a restore into its VM's folder, and that refusal sends the admin here."""
    try:
        if not shell.isdir(folder) or shell.exists(record_of(folder)) or vm_named_so(shell, folder):
            return
    except HostError as err:
        log.warning("%s -- leaving it" % err)
        return
    log.warning("%s: a restore's unfinished VM folder that no restore's record names (made by hand, copied, or "
                "left by an older hotvcb?); leaving it -- remove it by hand if no restore is running" % folder)


def _remove_dead(shell: Shell, taker: Records, record: str, text: str, folder: str) -> bool:
    """Remove a dead restore's folder, then its record; False when a later restore took them over.

    The folder is renamed to a scratch folder of this cleanup's (Records.take) and the record read
    again before anything is deleted: a later restore writes its record before it makes its folder,
    so the record unchanged after the rename makes what was renamed the dead restore's, and it is
    removed where no restore looks (one may make the folder's name anew meanwhile). A record
    replaced after all gets its folder back. A folder another cleanup took first counts as removed."""
    present = _seen_dead(shell, record, text, folder)
    if present is None:
        return False
    if present:
        try:
            taken = taker.take(folder)  # type: Optional[str]
        except HostError:
            if shell.exists(folder):
                raise
            taken = None  # another cleanup took it
        if taken is not None and _replaced(shell, record, text):
            try:
                shell.rename(taken, folder)
            except HostError as err:
                raise HostError("%s: a running restore's folder, moved to %s by mistake: move it back by hand (%s)"
                                % (folder, taken, err)) from err
            taker.release(taken)
            return False
        if taken is not None:
            taker.remove(taken)
    if not _replaced(shell, record, text):
        shell.remove_tree(record)  # a folder made from now on is a later restore's
    return True


def _replaced(shell: Shell, record: str, text: str) -> bool:
    """Whether the record now holds another restore's (one unreadable counts: it is not the dead
    one's); a record removed (by another cleanup) is not."""
    if not shell.exists(record):
        return False
    try:
        return shell.read_regular(record, RECORD_MAX) != text
    except HostError:
        return True


def _heartbeat_fresh(shell: Shell, root: str, entry: str, owner: RunId, me: RunId, by_pid: bool,
                     dry_run: bool) -> Optional[float]:
    """None when the record's pid is proof enough (`by_pid`: it told, and its host id is ours) or its
    heartbeat is stale; else the seconds since it was touched (0 where it is dated ahead: cannot tell, kept).
    A dry run's age is by this machine's clock (volume_age: no probe written into the target): what it cannot
    tell (unprobed_doubt: the datastore's clock may be off ours either way) is kept, as a fresh one."""
    if by_pid and owner.host and owner.host == me.host:
        return None
    try:
        age = volume_age(shell, root + "/" + entry, root, me, dry_run)
    except HostError:
        age = 0.0  # cannot tell: not stale
    if heartbeat(age, STALE_AFTER) is False and not (dry_run and unprobed_doubt(age, STALE_AFTER)):
        return None
    return max(0.0, age or 0.0)


def _seen_dead(shell: Shell, record: str, text: str, folder: str) -> Optional[bool]:
    """Whether the dead restore's folder is there; None when its record changed (a new restore
    of that folder took it over). The folder is looked at before the record is read again: while
    the dead restore's folder is there no later restore can make one at that path (claim), and a
    later one replaces the record before it makes its folder, so the record unchanged after the
    look makes the folder seen the dead restore's."""
    present = shell.exists(folder)
    try:
        return present if shell.read_regular(record, RECORD_MAX) == text else None
    except HostError:
        return None


# the temp file Shell.write_text writes a record through: "." + the record's name + "." + temp_tag() + ".tmp"
_RECORD_TEMP = lazyre.compile(r"^\.(?:%s|%s).*%s\.(\d+)-\d+-[0-9a-f]+\.tmp$" % (
    re.escape(PREFIX), re.escape(RESTORING_RECORD), re.escape(RECORD)))


def _remove_dead_temp(shell: Shell, path: str, log, me: RunId, dry_run: bool) -> int:
    """A record's temp file left by a restore killed while it wrote the record (before the rename): it
    holds the record's text, so its owner is known; removed once that owner is dead on this host.

    One killed between creating the file and writing its text (seen under SIGKILL) is empty: its name
    still carries the writer's pid (filetext.temp_tag), so it goes at once when no hotvcb of that pid lives
    here (one /proc hides from us, once old). A writer on another machine of a shared datastore is in that
    window for microseconds; if a cleanup takes its file then, that restore's rename fails and it ends with
    an error, not a wrong record.
    Any other unreadable text goes once older than a record can be in writing."""
    try:
        text = shell.read_regular(path, RECORD_MAX)
    except HostError:
        return 0
    owner = parse(text)
    if owner is not None and (not owner.same_machine(me) or owner_alive(owner, me) is not False):
        return 0
    if owner is None and not (text == "" and not _writer_alive(path)) \
            and heartbeat(shell.age(path) or 0.0, STALE_AFTER) is not False:  # young, or dated ahead: cannot tell
        return 0
    if dry_run:
        log.info("would remove %s, a record a dead restore was writing" % path)
        return 1
    log.warning("removing %s, a record a dead restore was writing" % path)
    try:
        shell.remove_tree(path)
    except HostError as err:
        log.error("%s -- remove it by hand" % err)
        return 0
    return 1


def _writer_alive(path: str) -> bool:
    found = _RECORD_TEMP.match(path.rsplit("/", 1)[-1])
    return found is None or hotvcb(int(found.group(1))) is not False


def _named_ours(name: str) -> bool:
    """A folder named as make() or a restore (claim) names one: cleanup deletes what a record names."""
    return bool(_NAME.match(name)) or (name.endswith(RESTORING) and len(name) > len(RESTORING))


def _kind(name: str) -> str:
    return "unfinished VM folder" if name.endswith(RESTORING) else "scratch folder"


def _inside(shell: Shell, path: str, root: str) -> bool:
    """path is a folder of the datastore whose root holds its record, as make() writes it: a
    record naming a folder elsewhere (another datastore, `..`, through a symlinked folder) is
    forged or garbage, and cleanup deletes what its record names."""
    if any(part in ("", ".", "..") for part in path.split("/")[1:]):
        return False
    try:
        real_root, parent = shell.realpath(root).rstrip("/"), shell.realpath(path.rsplit("/", 1)[0])
    except HostError:
        return False
    return parent == real_root or parent.startswith(real_root + "/")
