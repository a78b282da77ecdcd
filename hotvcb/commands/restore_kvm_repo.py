"""`hotvcb restore --repo PATH ID|--latest VM --kvm DIR`: a repository's backup restored as a KVM VM.

The ESXi host may be gone: the repository on the NAS and a Linux box with QEMU are what is left.
The backup is staged as a sealed backup folder in a scratch folder of DIR (repo_restore.staged: every
chunk hash-checked as it is read; its record beside it, so a killed restore's scratch is removed
by the next KVM restore into DIR or `hotvcb cleanup --kvm DIR`), restored from there as any backup
folder is (jobs/restore_kvm.py), and the scratch removed whatever happens. Room for both is checked
before anything is written; a dry run stages nothing, and refuses what the real run would refuse once
staged (a name that cannot be a VM's, a leftover `VM.hotvcb-restoring` its sweep would not remove) or
while staging (a chunk missing or damaged: repo_restore.check_restorable reads each one the backup needs).
"""

import dataclasses
import os
import shutil
from typing import Set

from .. import folderwrite
from ..jobs import restore_sweep
from ..jobs.restore_kvm import KvmRequest, KvmRestore, KvmRestoreError, KvmResult, refuse_taken
from ..jobs.restore_scratch import Records, unusable_name
from ..localshell import LocalShell
from ..repo.repository import open_path
from ..store import layout
from ..thishost import known_this_host
from ..units import human_size, need_and_free
from . import repo_cmd, repo_restore


def restore(path: str, ident: str, latest: str, req: KvmRequest, log, dry_run: bool,
            lister: str = "hotvcb list --repo") -> KvmResult:
    """The backup `ident` (or the newest of the VM `latest`) of the repository at `path`, as `req` asks;
    `lister` lists its backups (repo_cmd.find)."""
    unusable = None if req.name is None else unusable_name(req.name)
    if unusable is not None:  # first, as a folder backup's restore does
        raise KvmRestoreError(unusable)
    repo = open_path(path)
    snap = repo_cmd.find(repo, ident, latest, lister)
    if not os.path.isdir(req.target):
        raise KvmRestoreError("target folder %s %s" % (req.target, layout.not_a_folder(LocalShell(), req.target)))
    unwritable = folderwrite.unwritable(req.target)  # asked, not probed: a dry run said OK of a read-only export
    if unwritable:
        raise KvmRestoreError("cannot restore into %s: %s" % (req.target, unwritable))
    folder = req.target.rstrip("/") + "/" + layout.datastore_folder(req.name or snap.vm)
    if os.path.lexists(folder):  # before the whole backup is staged (the restore checks it again)
        raise KvmRestoreError("%s already exists; not overwriting it" % folder)
    # staged (zeros stay holes), then converted beside it: images hold no more than the staged disks
    needed, free = 2 * repo_restore.written(repo, snap), shutil.disk_usage(req.target).free
    if needed > free:
        raise KvmRestoreError("restoring %s to KVM in %s needs up to %s (the backup staged there and the VM), "
                              "only %s free" % ((snap, req.target) + need_and_free(needed, free)))
    if dry_run:
        _dry_sweep(req.target, req.name or snap.vm, log)
        repo_restore.check_restorable(repo, snap, log.info)
        log.dryrun("RESTORE: %s from the repository %s to KVM in %s as %s%s (staged there first, every chunk "
                   "hash-checked, then converted)" % (snap, path, req.target, req.fmt,
                                                      ", named " + req.name if req.name else ""))
        log.dryrun("ROOM: needs up to %s, %s free" % (human_size(needed), human_size(free)))
        return KvmResult(req.name or snap.vm, folder, "", "")
    log.info("Restoring %s from the repository %s to KVM in %s (%s)" % (snap, path, req.target, req.fmt))
    job = KvmRestore(LocalShell(), log, staged=True)
    # the job's own records: one run's, so its sweep of DIR knows the staging folder for its own
    with repo_restore.staged(path, snap.id, req.target, job.records, log.info) as folder:
        return job.run(dataclasses.replace(req, backup=folder))


def _dry_sweep(target: str, vm: str, log) -> None:
    """A dry run's look at what the real run's restore finds in `target` once the backup is staged: the dead
    restores' leftovers its sweep would remove (said, not removed), then the VM's folder and the name it is
    written under first, refused as that restore refuses them (KvmRestoreError)."""
    shell = LocalShell()
    target = os.path.realpath(target)  # as the restore records and sweeps it
    swept = set()  # type: Set[str]
    restore_sweep.sweep(shell, [target], log, Records(shell, known_this_host).run(), True, swept)
    refuse_taken(shell, target.rstrip("/") + "/" + layout.datastore_folder(vm), swept)
