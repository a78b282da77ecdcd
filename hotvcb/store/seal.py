"""Fill one backup folder and make it count, or mark it plainly as failed.

See layout.py for the write order. Nothing here decides *what* to copy; the
job hands disks over one by one and says at the end whether it went well.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Callable, Dict, List, Optional, Tuple

from .. import crashpoint, interrupt, vmdknames
from ..errors import HotvcbError, Interrupted
from ..filemode import FileMode
from ..hosts.base import Hypervisor
from ..model import Disk, Vm, VmResult
from ..runid import RECORD_MAX, RunId
from ..settings import Settings
from ..shell import Shell
from ..vmdk import base_name
from . import backup_files, chain, layout, manifest, rotation, sidecar, source_digest

CLAIM_TRIES = 30
DISK_SUFFIXES = (".vmdk", ".qcow2", ".raw", ".vmsn", ".vmem")  # disk (and snapshot memory) data a failed backup must not keep
# Who is writing a -partial folder: the run record (runid.py). It stays until
# the folder has its final name, and the run's heartbeat keeps it fresh, so a
# host sharing the volume can tell a live backup from a dead one.
OWNER = ".hotvcb-owner"
FIRST_IN_ARCHIVE = (manifest.MANIFEST,) + layout.STATUS_FILES  # read without unpacking the disks


def owner_of(shell: Shell, partial: str) -> str:
    try:
        return shell.read_regular(partial + "/" + OWNER, RECORD_MAX).strip()  # planted: a FIFO must not hang us
    except HotvcbError:
        return "unknown owner"


class Sealer:
    def __init__(self, shell: Shell, settings: Settings, vm: Vm, started: datetime, log, run: RunId, heartbeat=None,
                 source_host: str = "", remove: Optional[Callable[[str], None]] = None):
        """`remove`: what removes the backups rotation condemned (rotation.rotate)."""
        self.shell, self.s, self.vm, self.started, self.log = shell, settings, vm, started, log
        self.run, self.heartbeat, self.source_host, self.remove = run, heartbeat, source_host, remove
        self._planned = {}  # type: Dict[str, str]  # disk key -> path inside the backup
        self._digests = {}  # type: Dict[str, source_digest.Digest]  # relative name -> digest of its source
        self.root = layout.vm_root(settings.vm_backup_volume, vm.name)
        self.name = layout.backup_name(vm.name, started)
        self.named_at = started  # the second the backup is named after: its snapshot is named after it too
        self.partial = self.root + "/" + self.name + layout.PARTIAL
        self.final = self.root + "/" + self.name

    def begin(self) -> None:
        """Claim a backup name; on a shared volume another host may hold this second's."""
        self.shell.makedirs(self.root)
        for bump in range(CLAIM_TRIES):
            when = self.started + timedelta(seconds=bump)
            self.name = layout.backup_name(self.vm.name, when)
            self.partial = self.root + "/" + self.name + layout.PARTIAL
            self.final = self.root + "/" + self.name
            taken = self.shell.exists(self.final) or self.shell.exists(self.final + ".gz")
            if not taken and self.shell.make_new_dir(self.partial):
                self.named_at = when
                # the folder's names are made durable by the seal's last write there (_write_record)
                self.shell.write_text(self.partial + "/" + OWNER, self.run.text() + "\n", sync_folder=False)
                if self.heartbeat is not None:
                    self.heartbeat.watch(self.partial + "/" + OWNER)
                return
            self.log.debug("%s is taken (%s), trying the next second" % (self.name, owner_of(self.shell, self.partial)))
        raise HotvcbError("no free backup name under %s after %d tries" % (self.root, CLAIM_TRIES))

    def copy_config_files(self, config: Tuple[str, str]) -> None:
        """The VM's config as its driver words it for a backup (`backup_config`:
        a .vmx pointing at the disk names in this backup, or QEMU's description),
        then the .nvram and .vmxf as they are (named by backup_files.side_file_name)."""
        filename, text = config
        self.shell.write_text(self.partial + "/" + filename, text, sync_folder=False)
        for path in self.vm.extra_files:
            self.shell.copy_file(path, self.partial + "/" + backup_files.side_file_name(path.rsplit("/", 1)[-1]))

    def plan_disks(self, disks: List[Disk]) -> Dict[str, str]:
        """Each disk's file name in the backup (by disk key), planned before the config is written.

        Where ghettoVCB-restore.sh looks for it: a disk the .vmx names by full
        path (one on another datastore, or on the VM's own named so) goes to a
        folder named as that path names its datastore (its UUID or its label,
        Disk.kept_in), every other one beside the .vmx. ghettoVCB.sh keeps the
        first in <datastore>/ too (a disk in a folder deeper than a VM's it
        keeps one level deeper, where its restore does not look). Two disks
        with one file name (attached from two folders) get distinct names, so a
        failed one can never take the other's files with it; nor is a copy
        named like a file another copy in its folder writes (`d-flat.vmdk`
        beside `d.vmdk`'s data, `g-s001.vmdk` beside 2gbsparse `g.vmdk`'s).
        """
        placed = {}  # type: Dict[str, List[vmdknames.Files]]
        for disk in disks:
            folder = disk.kept_in + "/" if disk.kept_in else ""
            others = placed.setdefault(folder.lower(), [])
            others.append(vmdknames.pick(base_name(disk.filename), self.s.disk_backup_format, others))
            self._planned[disk.key] = folder + others[-1].name
        return {key: rel.rsplit("/", 1)[-1] for key, rel in self._planned.items()}

    def disk_destination(self, disk: Disk) -> str:
        rel = self._planned.get(disk.key) or base_name(disk.filename)
        if "/" in rel:
            self.shell.makedirs(self.partial + "/" + rel.rsplit("/", 1)[0])
        return self.partial + "/" + rel

    def copy_disk(self, host: Hypervisor, disk: Disk, dst: str, fmt: str, progress) -> List[str]:
        """The host's own tool writes the disk into the folder (jobs/repo_backup.py reads it instead),
        while its source is digested where the driver says the copy holds the source's bytes."""
        files, digests = source_digest.copy_disk(host, disk, dst, fmt, progress, self.log)
        self.adopt(digests)
        return files

    def relative(self, path: str) -> str:
        return path[len(self.partial) + 1 :]

    def adopt(self, digests: Dict[str, source_digest.Digest]) -> None:
        """Digests of copied files taken from their sources during the copy (store/source_digest.py):
        the seal records them instead of reading those files back, so the manifest says what the
        copy must hold; a copy that differs (size included) is damaged for health.py and verify."""
        self._digests.update({self.relative(path): d for path, d in digests.items()})

    def discard_disk(self, dst: str) -> None:
        folder, name = dst.rsplit("/", 1)
        mine = re.compile(re.escape(name[: -len(".vmdk")]) + r"(-flat|-s\d{3})?\.(vmdk|qcow2|raw)$")
        for f in self.shell.listdir(folder):
            if mine.match(f):
                self.shell.remove_tree(folder + "/" + f)

    # -- endings -------------------------------------------------------------
    def seal(self, result: VmResult, snapshot: Dict[str, object], tree: Optional[Dict[str, object]] = None) -> str:
        """`tree`: the record of the user's snapshot tree kept beside the disks (jobs/snaptree.py)."""
        compress = self.s.enable_compression and result.status == "ok" and self._standalone(result)
        files = self._hash_files(whole_files=compress)
        crashpoint.reached("hashed")
        self._write_record(result, files, snapshot, tree)
        self._chmod(self.partial)
        final = self._publish(compress, result)
        result.backup_dir, result.sealed = final, True
        try:
            rotation.rotate(self.shell, self.s.vm_backup_volume, self.vm.name, self.s.vm_backup_rotation_count,
                            self.log, just_made=final, source=(self.source_host, self.vm.uuid),
                            budget=self.s.vm_backup_rotation_size, remove=self.remove)
            if self.s.rsync_link:
                self._rsync_link(final)
        except Interrupted as err:
            # the backup is good as it stands; only the housekeeping after it was cut short
            self.log.warning("%s: stopped (%s) after the backup was sealed as %s: rotation%s not done; the next "
                             "run does it" % (self.vm.name, err, final, " and RSYNC_LINK" if self.s.rsync_link else ""))
            raise
        return final

    def _standalone(self, result: VmResult) -> bool:
        """An incremental stays a folder: packed, its disks could not reach the base beside it."""
        if not chain.bases(self.shell, self.partial, [f for d in result.disks for f in d.files]):
            return True
        self.log.info("%s: an incremental backup is kept as a folder (ENABLE_COMPRESSION packs full ones only)"
                      % self.vm.name)
        return False

    def abandon(self) -> None:
        """Remove the claimed folder whole: the VM left the host before anything of it but its
        config was copied, and a VM that fails before any change leaves no folder."""
        self._disown(self.partial)
        self.shell.remove_tree(self.partial)
        self.log.info("%s: nothing was backed up; %s removed" % (self.vm.name, self.partial))

    def fail(self, result: VmResult) -> str:
        """Keep a small, clearly failed record; drop the partial disk data."""
        for rel in self.shell.list_files(self.partial):
            if rel.endswith(DISK_SUFFIXES):
                self.shell.remove_tree(self.partial + "/" + rel)
        self._write_record(result, {}, {})
        self.shell.rename(self.partial, self.final)
        self._disown(self.final)
        self.log.info("%s: failed backup recorded as %s (STATUS.error)" % (self.vm.name, self.final))
        return self.final

    def _hash_files(self, whole_files: bool) -> Dict[str, Dict[str, object]]:
        """Each file's entry; a disk whose content was digested from its source gets a content entry,
        plus its file's own proof when `whole_files` (a .gz is verified as a stream, manifest.py)."""
        files = {}
        for rel in self.shell.list_files(self.partial):
            if rel == OWNER:
                continue
            path = self.partial + "/" + rel
            known = self._digests.get(rel)
            if isinstance(known, manifest.ContentDigest):
                whole = manifest.digest_file(self.shell, path) if whole_files else None
                files[rel] = known.entry(self.shell.file_size(path), whole)
            else:
                files[rel] = (known or manifest.digest_file(self.shell, path)).entry()
        return files

    def _disown(self, folder: str) -> None:
        """The folder has its final name: no run owns it any more."""
        if self.heartbeat is not None:
            self.heartbeat.unwatch(self.partial + "/" + OWNER)
        try:
            self.shell.remove_tree(folder + "/" + OWNER)
        except HotvcbError as err:
            self.log.debug("could not remove %s/%s: %s" % (folder, OWNER, err))

    def _chmod(self, path: str) -> None:
        """BACKUP_FILES_CHMOD on every file, and on folders with x where r is given (a folder one may
        read but not enter is no use). A symbolic mode changes each one's own mode, as chmod -R did."""
        if not self.s.backup_files_chmod:
            return
        mode = FileMode(self.s.backup_files_chmod)

        def change(target: str, is_dir: bool) -> None:
            new = mode.apply(0 if mode.fixed else self.shell.file_mode(target), is_dir)
            self.shell.chmod(target, new | ((new & 0o444) >> 2) if is_dir else new)

        if not self.shell.isdir(path):
            change(path, False)
            return
        folders = {path}
        for rel in self.shell.list_files(path):
            change(path + "/" + rel, False)
            parts = rel.split("/")[:-1]
            folders.update(path + "/" + "/".join(parts[: i + 1]) for i in range(len(parts)))
        for folder in sorted(folders):
            change(folder, True)

    def _write_record(self, result: VmResult, files, snapshot, tree: Optional[Dict[str, object]] = None) -> None:
        status = result.status
        record = {
            "vm": self.vm.name,
            "vmid": self.vm.ref.vmid,
            "vm_uuid": self.vm.uuid,
            "source_host": self.source_host,
            "source_vmx": self.vm.ref.vmx_path,
            "started": self.started.isoformat(timespec="seconds"),
            "finished": self.shell.now().isoformat(timespec="seconds"),  # by the clock "started" is
            "result": status,
            "message": result.message,
            "disk_format": self.s.disk_backup_format,
            "snapshot": snapshot,
            "disks": [
                {"key": d.disk.key, "source": d.disk.path, "files": d.files, "ok": d.ok, "error": d.error}
                for d in result.disks
            ],
            # the VM's other disks, not named by VMDK_FILES_TO_BACKUP: with "disks" and "skipped" every disk of
            # its .vmx is accounted for, so one dropped from the manifest later is found (health.unaccounted_disk)
            "left_out": [{"key": d.key, "source": d.path} for d in self.vm.disks
                         if not d.skip_reason and d.key not in {r.disk.key for r in result.disks}],
            "files": files,
            "verified": None,
        }
        if tree:
            record["snapshot_tree"] = tree
        if result.skipped_disks:  # what no snapshot copies: list and status show it as ghettoVCB's STATUS.warn
            record["skipped"] = [{"key": d.key, "source": d.path, "reason": d.skip_reason} for d in result.skipped_disks]
        self.shell.write_text(self.partial + "/" + manifest.MANIFEST, manifest.dumps(record), sync_folder=False)
        crashpoint.reached("manifest-written")
        # the folder's one fsync, for every name in it (the copies, config, manifest, this), before
        # the rename that publishes it: a power cut never leaves a final name over missing files
        self.shell.write_text(self.partial + "/STATUS." + status, "%s\n" % (result.message or status))
        crashpoint.reached("status-written")

    def _publish(self, compress: bool, result: VmResult) -> str:
        """Give the backup its final name: the folder, or (only a good one) a .gz of it. A .gz that could not
        be made leaves the folder, as a warning of the VM's (the run's exit code): a volume sized for
        compressed backups must not fill, night after night, with folders under "All VMs backed up OK!"."""
        if not compress:
            if self.s.enable_compression:
                self.log.warning("%s: not compressing a backup that is not OK; keeping it as a folder" % self.vm.name)
            self.shell.rename(self.partial, self.final)
            crashpoint.reached("published")
            self._disown(self.final)
            return self.final
        tmp = self.root + "/." + self.name + ".gz.tmp"
        try:
            self.log.info("Compressing %s" % self.final)
            # the .vmx next: health checks every disk it names is accounted for without reading past them
            first = FIRST_IN_ARCHIVE + tuple(backup_files.top_vmx(self.shell.listdir(self.partial)))
            self.shell.make_tar_gz(self.partial, tmp, self.name, first=first, skip=(OWNER,))
            crashpoint.reached("compressed")
            self._chmod(tmp)
            # its size as written, so a truncated archive is seen without reading it (health.py)
            sidecar.write_gz_sidecar(self.shell, self.final + ".gz", {"archive_size": self.shell.file_size(tmp)})
            self.shell.rename(tmp, self.final + ".gz")
            crashpoint.reached("archive-published")
        except HotvcbError as err:
            if interrupt.pending():
                raise
            said = "compression failed, keeping the uncompressed backup: %s" % err
            self.log.warning(said)
            result.warnings.append(said)
            self.shell.remove_tree(tmp)
            for record in sidecar.gz_records(self.final + ".gz"):
                self.shell.remove_tree(record)
            self.shell.rename(self.partial, self.final)
            self._disown(self.final)
            return self.final
        self._disown(self.partial)
        self.shell.remove_tree(self.partial)
        return self.final + ".gz"

    def _rsync_link(self, final: str) -> None:
        link = self.root + "/" + layout.folder_name(self.vm.name) + "-symlink"
        self.shell.symlink(final.rsplit("/", 1)[-1], link)
