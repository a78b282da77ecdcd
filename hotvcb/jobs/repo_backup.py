"""A VM's backup into a deduplicating repository (VM_BACKUP_REPOSITORY / --repo).

`RepoSink` stands where store/seal.Sealer stands in jobs/backup.py and
answers the same calls, so the VM goes through the very same lifecycle
(snapshot, copy, consolidate, seal or fail, cleanup). Only the copy differs:
instead of `vmkfstools -i`, the base disk's flat extent is read directly
while our snapshot holds it (the guest writes into the delta meanwhile),
and chunked, hashed and stored in one pass (hotvcb/repo/writer.py). Sealing
writes the snapshot record; a failure writes nothing a reader could take for
a backup (what was stored stays for dedup, GC removes it if unused). A VMDK
disk's descriptor is stored among the VM's files under the disk's name, its
extent renamed `<disk>-flat.vmdk`, so a restore gives back a thin VMDK.

The disk is read by this process, so hotvcb must run on the host itself
(not --host over SSH). A VMFS thin or thick base (descriptor + -flat extent)
or a raw image is read as it is; a delta of a user's snapshot or a virtual-mode
RDM is first cloned by vmkfstools, as a folder backup copies it, to a temporary
thin disk in the repository's tmp/ (why: docs/repository.md "Deltas of a
user's snapshot").
"""

import os
from datetime import datetime
from typing import Dict, List, Optional, Tuple

from .. import folderwrite, interrupt, qcow2, vmdk
from ..errors import CopyError, HotvcbError, RepoError
from ..hosts.base import Hypervisor
from ..localshell import LocalShell
from ..model import Disk, Vm, VmResult
from ..repo import codec
from ..repo.backend import TMP, LocalBackend, random_hex
from ..repo.format import CONFIG
from ..repo.repository import SNAPSHOTS, Repository, open_path
from ..repo.writer import BackupWriter
from ..runid import RunId
from ..settings import Settings
from ..store import lastrun, volume
from ..units import need_and_free
from . import space


def check_target(host: Hypervisor, path: str, compression: str = "zlib") -> None:
    """What a backup into the repository at `path` needs before anything is made there (HotvcbError
    unless it has it): hotvcb on the host itself, the share it is on mounted, and for a repository yet
    to be made a place to make it. Each VM's backup checks it, and `schedule install` (backup_cmd.check),
    so that a share not mounted at install fails there, not at every scheduled run."""
    if not isinstance(host.shell, LocalShell):
        raise HotvcbError("VM_BACKUP_REPOSITORY needs hotvcb running on the host itself (its disks are read "
                          "directly); over --host use VM_BACKUP_VOLUME")
    # an empty mount point of an unmounted share would get a new repository on the host's own disk
    volume.refuse_unmounted(host.shell, path, "VM_BACKUP_REPOSITORY")
    if not os.path.exists(os.path.join(path, CONFIG)):
        _check_new(path, compression)


def _check_new(path: str, compression: str) -> bool:
    """RepoError unless a new repository may be made at `path`: a folder or nothing (never a file or a
    dangling link, named as such), inside an existing folder (never a missing volume), not in a folder holding anything else, with a codec this python has. True where the
    folder's entries show a repository after all: another writer (a host sharing the volume, a parallel
    backup) made it since the caller looked for its `config`, and it is to be used, not refused."""
    what = folderwrite.not_folder(path)
    if what:
        raise RepoError("VM_BACKUP_REPOSITORY %s %s" % (path, what))
    parent = os.path.dirname(path.rstrip("/"))
    if not os.path.isdir(parent):
        raise RepoError("VM_BACKUP_REPOSITORY %s: %s does not exist (is the datastore mounted?)" % (path, parent))
    entries = set(os.listdir(path)) if os.path.isdir(path) else set()
    if CONFIG in entries:
        return True
    # tmp/: another host creating it right now; last-run/: failed runs' records an older hotvcb made in the empty folder
    if entries - {TMP, lastrun.FOLDER}:
        raise RepoError("VM_BACKUP_REPOSITORY %s: a folder that holds something other than a repository" % path)
    if compression == "zstd" and not codec.available():  # before anything is made there
        raise RepoError("VM_BACKUP_REPOSITORY_COMPRESSION=zstd for the new repository %s: the zstandard package is "
                        "not installed here (never on ESXi): use zlib" % path)
    return False


def open_repository(path: str, compression: str = "zlib") -> Repository:
    """The repository at `path`, created on first use (`_check_new`), with `compression` (a repository's
    codec is chosen once: docs/repository.md "Compression")."""
    if os.path.exists(os.path.join(path, CONFIG)) or _check_new(path, compression):
        return open_path(path)
    try:
        return Repository.init(LocalBackend(path), compression=compression)
    except RepoError:
        if os.path.exists(os.path.join(path, CONFIG)):  # another host (a shared volume) was first
            return Repository.open(LocalBackend(path))
        raise


def check_open(path: str) -> None:
    """RepoError with what opening the repository at `path` for a backup (open_repository, then BackupWriter)
    would fail on, found without writing anything: a dry run's question (jobs/dryrun_checks.py), after
    check_target. Its config read as the real run reads it (a newer hotvcb's format, a damaged one), its
    folder writable (a NAS export remounted read-only; for a repository yet to be made, the folder it would
    be made in), and its GC marks and damage records read, by which a backup tells which stored chunks it
    may build on. The dry run said OK of a repository every real run failed on."""
    repo = open_path(path) if os.path.exists(os.path.join(path, CONFIG)) else None
    why = LocalBackend(path).unwritable()
    if why:
        raise RepoError(why)
    if repo is not None:
        repo.chunk_map(usable_only=True)  # the one BackupWriter builds on: a mark or record that does not read fails it


def flat_name(descriptor_name: str) -> str:
    """`web.vmdk` -> `web-flat.vmdk`: where a restore writes the data its descriptor names. A `"` is
    dropped: the descriptors repositories hold name their flat so (written when vmdk.rename_extent
    dropped it too), and a restore from any of them must find its data under that name."""
    return os.path.splitext(descriptor_name)[0].replace('"', "") + "-flat.vmdk"


def stored_names(filenames: List[str]) -> List[str]:
    """The names disks with these file names (in the VM's order) are stored under in the repository: each
    one's base disk's name, a later one of a name taken (in any case) `<stem>_2<ext>`, `_3`, ... A restore
    finds a bare-QEMU VM's disks by them, its description naming each disk's image (repo_restore)."""
    used = set()  # type: set
    out = []  # type: List[str]
    for filename in filenames:
        stem, ext = os.path.splitext(vmdk.base_name(filename))
        name, n = stem + ext, 1
        while name.lower() in used:
            n += 1
            name = "%s_%d%s" % (stem, n, ext)
        used.add(name.lower())
        out.append(name)
    return out


def _reserve_room(ledger: space.SpaceLedger, vm: str, host: Hypervisor, disk: Disk, folder: str) -> None:
    """CopyError unless the repository's volume has room for the disk's temporary thin clone, before it is
    started: a thin clone allocates as it goes, so one that does not fit ran until the volume was full and
    failed half-way, and on a datastore VMs run from every one of them could not write meanwhile. The need is
    what a folder backup's pre-flight counts for a thin copy of the disk (a delta: its chain's allocated
    bytes), so a VM whose folder backup fits there is not refused here. The room is reserved in the run's
    ledger (jobs/space.py) until the clone is gone: with BACKUP_PARALLEL, two clones each fitting the free
    space alone, but not both, passed their checks and filled the volume; the second now waits for the
    first (the log names both), and is refused here only where it does not fit with none of ours holding room."""
    needed = host.bytes_needed(disk, "thin")
    free = ledger.reserve(vm, folder, needed, lambda: host.free_space(folder))
    if free is not None and needed > free:
        need, room = need_and_free(needed, free)
        raise CopyError(disk.path, "its temporary clone into %s needs %s on the datastore %s, which has only %s "
                        "free; not cloned (free room there, or back this VM up to a folder)"
                        % (folder, need, space.pool_of(folder) or folder, room))


AS_IT_IS, EXTENT = "a raw image", "a flat extent"  # read_as: the file read, or the descriptor's extent


def read_as(host: Hypervisor, disk: Disk) -> str:
    """How the repository reads the disk: AS_IT_IS (a raw image), its EXTENT (a VMFS thin or thick base), or
    what it is that is cloned to a temporary thin disk first ("a delta of a snapshot", "a virtual-mode RDM");
    CopyError naming why it reads no other disk (hosted sparse, a qcow2 image). A VM's backup asks it of each
    disk as it copies it, and a dry run of each before the VM's turn (jobs/dryrun_checks.py)."""
    if disk.path.endswith((".raw", ".img")):
        return AS_IT_IS
    if qcow2.is_image(disk.path):  # read as a descriptor it was "no createType line": a VMDK to hunt for
        raise CopyError(disk.path, "a qcow2 image; the repository reads flat disks only (VMDK extents, .raw/.img "
                        "images): back this VM up to a folder (VM_BACKUP_VOLUME), or give it a raw image")
    try:
        desc = vmdk.parse(host.shell.read_text(disk.path))
    except (HotvcbError, vmdk.NotADescriptor) as err:
        raise CopyError(disk.path, "cannot read its descriptor: %s" % err) from err
    if desc.is_delta:
        return "a delta of a snapshot"
    if desc.create_type.lower() == "vmfsrawdevicemap":  # a physical one is skipped by the driver
        return "a virtual-mode RDM"
    if desc.create_type.lower() not in ("vmfs", "monolithicflat") or len(host.disk_files(disk.path)) != 2:
        raise CopyError(disk.path, "a %s disk; the repository reads flat disks (VMFS thin or thick bases), "
                        "virtual-mode RDMs and snapshot deltas only" % desc.create_type)
    return EXTENT


def _check() -> None:
    if interrupt.pending():
        interrupt.raise_pending()


class RepoSink:
    def __init__(self, host: Hypervisor, settings: Settings, vm: Vm, started: datetime, log, run: RunId,
                 ledger: space.SpaceLedger):
        """`ledger`: the run's reservations of room (jobs/space.py), which a temporary clone holds."""
        self.host, self.s, self.vm, self.started, self.log, self.run = host, settings, vm, started, log, run
        self.ledger = ledger
        self.partial = ""  # no folder of ours on the target: nothing for backup_end._discard to record
        self.named_at = started  # what the snapshot is named after
        self.writer = None  # type: Optional[BackupWriter]
        self._names = {}  # type: Dict[str, str]

    def begin(self) -> None:
        check_target(self.host, self.s.vm_backup_repository, self.s.vm_backup_repository_compression)
        repo = open_repository(self.s.vm_backup_repository, self.s.vm_backup_repository_compression)
        self.writer = BackupWriter(repo, self.vm.name, host=self.run.host, run=self.run.text(), vm_uuid=self.vm.uuid,
                                   host_system=self.host.system_id())

    def plan_disks(self, disks: List[Disk]) -> Dict[str, str]:
        self._names.update(zip((d.key for d in disks), stored_names([d.filename for d in disks])))
        return dict(self._names)

    def copy_config_files(self, config: Tuple[str, str]) -> None:
        assert self.writer is not None
        filename, text = config
        self.writer.add_file(filename, text.encode("utf-8"))
        for path in self.vm.extra_files:
            try:
                with open(path, "rb") as f:
                    self.writer.add_file(os.path.basename(path), f.read())
            except OSError as err:
                raise HotvcbError("cannot read %s: %s" % (path, err.strerror or err)) from err

    def disk_destination(self, disk: Disk) -> str:
        return self._names.get(disk.key) or vmdk.base_name(disk.filename)

    def relative(self, path: str) -> str:
        return path

    def copy_disk(self, host: Hypervisor, disk: Disk, dst: str, fmt: str, progress) -> List[str]:
        """Store the disk's virtual content under the name `dst`; returns [dst]."""
        assert self.writer is not None
        descriptor, source = self._flat_source(host, disk)
        try:
            return self._store(host, disk, dst, descriptor, source, progress)
        finally:
            if descriptor.startswith(self._tmp_prefix()):  # a flattened delta: gone once stored or failed
                for path in (descriptor, source):
                    try:
                        os.unlink(path)
                    except OSError:
                        pass  # GC's forget_uploads removes what a killed run left in tmp/
                self.ledger.release(self.vm.name)  # its room is free again for the other VMs' clones

    def _tmp_prefix(self) -> str:
        return os.path.join(self.s.vm_backup_repository, TMP, "flatten-")

    def _store(self, host: Hypervisor, disk: Disk, dst: str, descriptor: str, source: str, progress) -> List[str]:
        assert self.writer is not None
        total = max(os.path.getsize(source), 1)
        done = [0]

        def step(n: int) -> None:
            done[0] += n
            if progress is not None:
                progress(min(100, done[0] * 100 // total))

        try:
            entry = self.writer.add_disk(dst, source, check=_check, progress=step)
            if source != descriptor:  # its descriptor, naming the extent as a restore writes it
                text = vmdk.rename_extent(host.shell.read_text(descriptor), flat_name(dst))
                self.writer.add_file(dst, text.encode("utf-8"))
        except (RepoError, vmdk.Unwritable) as err:
            raise CopyError(disk.path, str(err)) from err
        self.log.debug("%s: %d chunks, %d new (%d bytes stored)" % (dst, entry["chunks"], entry["new_chunks"],
                                                                  entry["new_bytes"]))
        return [dst]

    def _flat_source(self, host: Hypervisor, disk: Disk) -> Tuple[str, str]:
        """(descriptor, flat data file) to read: the disk's own where it is one flat extent (a VMFS thin or
        thick base), or a temporary thin clone of a delta of a user's snapshot (docs/repository.md "Deltas
        of a user's snapshot") or of a virtual-mode RDM, which vmkfstools reads as the folder backup copies
        it (a VM with one failed every backup into the repository, while its folder backups had copied it
        for years). Other disks are refused (`read_as`)."""
        how = read_as(host, disk)
        if how == AS_IT_IS:
            return disk.path, disk.path
        if how == EXTENT:
            return disk.path, host.disk_files(disk.path)[1]
        return self._flattened(host, disk, how)

    def _flattened(self, host: Hypervisor, disk: Disk, what: str) -> Tuple[str, str]:
        """The disk (a delta: its chain) as it stands under our snapshot, cloned by vmkfstools into the
        repository's tmp/ once the room the clone needs is seen free there (_reserve_room).
        A clone that fails or is stopped (SIGTERM, Ctrl-C: Interrupted is no HotvcbError) is removed at
        once: it is a whole copy of the disk, on a volume often nearly full, that GC would only remove a
        grace period later. Its failure names the repository: vmkfstools names only the disk it read, and
        the admin looked for room on the VM's datastore when the repository's volume was full."""
        folder = os.path.dirname(self._tmp_prefix())
        os.makedirs(folder, exist_ok=True)
        _reserve_room(self.ledger, self.vm.name, host, disk, folder)
        tmp = "%s%s-%d.vmdk" % (self._tmp_prefix(), random_hex(6), os.getpid())
        self.log.info("%s is %s: cloning it to a temporary thin disk first" % (disk.path, what))
        flat = vmdk.flat_beside(tmp)  # where a thin clone keeps its data
        cloned = False
        try:
            host.copy_disk(disk, tmp, "thin", None)
            cloned = True
        except CopyError as err:
            full = " (the repository's volume is full, not the VM's datastore)" if "space" in err.reason.lower() else ""
            raise CopyError(disk.path, "its temporary clone into %s failed: %s%s" % (folder, err.reason, full),
                            err.path) from err
        finally:
            if not cloned:
                for path in (tmp, flat):
                    if os.path.exists(path):
                        os.unlink(path)
                self.ledger.release(self.vm.name, failed=True)  # the free figure it relied on was wrong
        return tmp, flat

    def discard_disk(self, dst: str) -> None:
        """Nothing to remove: a failed disk gets no index, its stored chunks wait for dedup or GC."""

    def seal(self, result: VmResult, snapshot: Dict[str, object], tree: Optional[Dict[str, object]] = None) -> str:
        assert self.writer is not None and tree is None  # the job refuses BACKUP_SNAPSHOT_TREE with a repository
        failed = [d.disk.filename for d in result.disks if not d.ok]
        if failed:  # a record is a whole backup: restore --latest and prune take every record for one
            raise RepoError("not recorded in the repository: %s failed, and a backup there holds every disk "
                            "(the chunks stored so far stay for the next backup)" % ", ".join(failed))
        snap = self.writer.commit(self.started)  # the backup's time, as a folder backup's name has it
        where = "%s/%s%s" % (self.s.vm_backup_repository.rstrip("/"), SNAPSHOTS, snap.id)
        self.log.info("%s: backup %s recorded in the repository %s" % (self.vm.name, snap.id,
                                                                      self.s.vm_backup_repository))
        result.backup_dir, result.sealed = where, True
        return where

    def fail(self, result: VmResult) -> str:
        if self.writer is not None:
            self.writer.abort()
        return ""
