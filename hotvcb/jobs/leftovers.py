"""Find and remove what a killed run left behind — ours only.

A SIGKILLed or power-cut run leaves its snapshot on the VM (which grows
until the datastore is full) and a `-partial` backup folder. Both carry names
only hotvcb makes, so they can be found and removed without ever touching a
user's own snapshots or a finished backup.
"""

import os
import socket

from ..errors import HotvcbError
from ..pids import alive
from ..store import layout
from ..store.seal import owner_of


def remove_our_snapshots(host, vm, log, prefix: str, dry_run: bool = False) -> int:
    removed = 0
    for snap in host.snapshots(vm):
        if not snap.name.startswith(prefix):
            continue
        if dry_run:
            log.info("%s: would remove leftover hotvcb snapshot %r (id %s)" % (vm.name, snap.name, snap.id))
            continue
        log.warning(
            "%s: found leftover snapshot %r (id %s) from an earlier hotvcb run that did not finish; removing it"
            % (vm.name, snap.name, snap.id)
        )
        host.remove_snapshot(vm, snap, 30 * 60.0)
        removed += 1
    return removed


def remove_partials(shell, volume: str, vm_name: str, log, dry_run: bool = False) -> int:
    """Delete this host's -partial folders and temp archives; call only under the lock.

    A backup volume may be shared (NFS) by several hosts: a -partial folder
    written by another host may be a live backup, so it is only reported.
    """
    removed = 0
    me = socket.gethostname()
    for b in layout.list_backups(shell, volume, vm_name):
        if b.status == "partial":
            owner = owner_of(shell, b.path)
            if not _ours_and_dead(owner, me):
                log.info("%s: %s is being written (or was left) by %s; leaving it" % (vm_name, b.path, owner))
                continue
            if dry_run:
                log.info("%s: would remove unfinished backup %s" % (vm_name, b.path))
                continue
            log.warning("%s: removing unfinished backup %s left by a run that died" % (vm_name, b.path))
            shell.remove_tree(b.path)
            removed += 1
    root = layout.vm_root(volume, vm_name)
    if shell.isdir(root):
        for entry in shell.listdir(root):
            if entry.startswith(".") and entry.endswith(".gz.tmp") and not dry_run:
                shell.remove_tree(root + "/" + entry)
    return removed


def _ours_and_dead(owner: str, me: str) -> bool:
    """A -partial folder of this host whose writer is gone (we hold the lock)."""
    parts = owner.split()
    if parts[:1] == ["unknown"]:
        return True  # died before it could even record its owner
    if len(parts) != 2 or parts[0] != me or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    if pid == os.getpid():
        return True
    return not alive(pid)  # alive: a run on another host that shares our hostname


def cleanup_host(host, volume: str, log, prefix: str, dry_run: bool = False) -> int:
    """`hotvcb cleanup`: every VM on the host, every leftover of ours."""
    count = 0
    for ref in host.list_vms():
        try:
            vm = host.load_vm(ref)
            count += remove_our_snapshots(host, vm, log, prefix, dry_run)
            count += remove_partials(host.shell, volume, ref.name, log, dry_run)
        except HotvcbError as err:
            log.error("%s: cleanup failed: %s" % (ref.name, err))
    return count
