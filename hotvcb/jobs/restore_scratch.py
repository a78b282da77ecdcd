"""A restore's scratch folder on the target datastore, and finding those of restores that died.

A `.gz` backup is unpacked, a repository backup written out as a folder, a KVM backup converted
to VMDKs in `<target>/.hotvcb-extract-<pid>-<time>-<run>/` before the ordinary restore reads it,
and the restore removes the folder when it ends. A SIGKILLed one cannot: a whole backup's size
stays behind, maybe in a folder of the admin's choosing (`--datastore datastore1/restored`).

So the restore first writes its run record (runid.py) and the folder's path into
`<datastore root>/<folder name>.owner`, the one place `hotvcb cleanup` looks (the root of every
datastore of the host); the folder is made after its record and removed before it, so no folder
of ours is without one. Cleanup removes a folder only when its restore is provably dead: recorded
on this machine by a process that is no longer a hotvcb (leftovers.owner_alive, as for snapshots
and markers). One recorded on another machine (a datastore shared over NFS) is reported and left:
its pid means nothing here. A folder with our prefix and no record (an older hotvcb's) is reported
and left too; so is a record naming a folder outside its datastore or not named as make() names one
(forged, garbage: cleanup deletes what a record names). A record is read with Shell.read_regular:
anyone who can write a datastore root can plant a FIFO (a plain read waits forever), a device or
a symlink there.

The VM folder a restore clones into, `<name>.hotvcb-restoring` (restore_plan.RESTORING), is as
big and is recorded the same way (claim, release), but its name is not unique: a later restore
under that name makes a folder of the same path. So its record is named by the folder's path
(`.hotvcb-restoring-<digest>.owner`, distinct for two targets' folders of one name) and a new
restore writes its record over a dead one's (atomically, write_text) before it makes the folder,
which must not exist yet (make_new_dir): a dead record is gone before a later folder appears, so
it can never name that folder to cleanup; and cleanup looks at the folder before it reads the
record a second time (_seen_dead), so a later restore's record and folder made while it decides
are seen, and a dead record whose folder was not there only loses its record. No lock is shared
by restores and cleanup, so windows stay where nothing of a live restore is deleted: cleanup
removing a dead record just as a later restore replaces it, or of two restores into one folder at
once the one make_new_dir refuses removing the record, leaves the other's folder without one
(kept by cleanup, if that restore is killed too). Only an admin removing a dead restore's folder
by hand while cleanup removes it, and a new restore remaking it in between, could lose a folder.
"""

import hashlib
import posixpath
import re
from typing import Iterable, Optional

from ..errors import HostError
from ..runid import RunId, parse
from ..shell import Shell
from .leftovers import owner_alive
from .restore_plan import RESTORING

PREFIX = ".hotvcb-extract-"
RECORD = ".owner"  # appended to the folder's name, at the datastore's root
RESTORING_RECORD = RESTORING + "-"  # + the digest of the folder's path + RECORD
RECORD_MAX = 4096  # a record is two short lines; anything planted is read no further
_PATH = re.compile(r"^path=(/.+)$", re.M)
_NAME = re.compile(r"^%s\d+-\d+-[0-9a-f]+$" % re.escape(PREFIX))  # as make() names a folder


def make(shell: Shell, target: str) -> str:
    """A new scratch folder in target, its record written first; its path."""
    run = RunId.new()
    target = posixpath.normpath(target)  # `datastore1/../ds5`: the record in ds5's root, where sweep checks it
    path = "%s/%s%d-%d-%s" % (target.rstrip("/"), PREFIX, run.pid, run.started, run.run[:6])
    claim(shell, path, run)
    return path


def claim(shell: Shell, path: str, run: Optional[RunId] = None) -> None:
    """Make the folder `path` (which must not exist), its record written first: over the record
    of a dead restore of the same folder, if any. HostError when it cannot be made or exists,
    and then no record of ours is left to name a folder that is not ours."""
    path = posixpath.normpath(path)
    shell.write_text(record_of(path), "%s\npath=%s\n" % ((run or RunId.new()).text(), path))
    try:
        if not shell.make_new_dir(path):
            raise HostError("%s exists: another restore into it started meanwhile" % path)
    except HostError:
        release(shell, path)
        raise


def record_of(path: str) -> str:
    """`<datastore root>/<name>.owner` of the folder `path` (a VM folder being restored: by digest)."""
    path = posixpath.normpath(path)
    parts = path.split("/")
    root = "/".join(parts[:4]) if path.startswith("/vmfs/volumes/") and len(parts) > 4 else "/".join(parts[:-1])
    name = parts[-1]
    if name.endswith(RESTORING):
        name = RESTORING_RECORD + hashlib.sha1(path.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return "%s/%s%s" % (root, name, RECORD)


def release(shell: Shell, path: str) -> None:
    """The record of `path`, once the folder is gone or renamed to its final name."""
    shell.remove_tree(record_of(path))


def remove(shell: Shell, path: str) -> None:
    """The folder, then its record (a record without its folder is harmless; the reverse is not)."""
    shell.remove_tree(path)
    release(shell, path)


def sweep(shell: Shell, roots: Iterable[str], log, me: RunId, dry_run: bool = False) -> int:
    """Remove the scratch folders of dead restores recorded in the roots; how many were removed
    (would be, dry run). One that cannot be is logged as an error."""
    found = 0
    for root in sorted({r.rstrip("/") for r in roots}):
        try:
            entries = shell.listdir(root) if shell.isdir(root) else []
        except HostError as err:
            log.warning("cannot look for restores' scratch folders in %s: %s" % (root, err))
            continue
        for entry in entries:
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
            owner, path = parse(text), _PATH.search(text)
            folder = "" if path is None else path.group(1)
            name = folder.rsplit("/", 1)[-1]
            if owner is None or not _named_ours(name) or record_of(folder).rsplit("/", 1)[-1] != entry:
                log.warning("%s/%s: not a record hotvcb wrote; leaving it" % (root, entry))
                continue
            if not _inside(shell, folder, root):
                log.warning("%s/%s names %s, outside this datastore (through a symlink?); leaving it -- remove "
                            "both by hand if no restore is running" % (root, entry, folder))
                continue
            if owner.machine != me.machine:
                log.warning("%s: %s of a restore on %s (%s); leaving it to a cleanup there"
                            % (folder, _kind(name), owner.machine, owner))
                continue
            if owner_alive(owner, me):
                log.info("%s: %s of a running restore (%s); leaving it" % (folder, _kind(name), owner))
                continue
            present = _seen_dead(shell, root + "/" + entry, text, folder)
            if present is None:
                log.info("%s: a new restore took it over meanwhile; leaving it" % folder)
                continue
            if dry_run:
                found += 1
                log.info("would remove %s, left by a restore that died (%s)" % (folder, owner))
                continue
            log.warning("removing %s, left by a restore that died (%s)" % (folder, owner))
            try:
                if present:
                    remove(shell, folder)
                else:  # a folder made from now on is a later restore's
                    release(shell, folder)
            except HostError as err:  # one stuck folder must not keep the others
                log.error("%s -- left with its record for the next cleanup; remove it by hand" % err)
                continue
            found += 1
    return found


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
