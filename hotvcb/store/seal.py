"""Fill one backup folder and make it count, or mark it plainly as failed.

See layout.py for the write order. Nothing here decides *what* to copy; the
job hands disks over one by one and says at the end whether it went well.
"""

import os
import re
import socket
from datetime import datetime, timedelta
from typing import Dict

from .. import interrupt
from ..errors import HotvcbError
from ..model import Disk, Vm, VmResult
from ..settings import Settings
from ..vmx import VmxFile
from . import layout, manifest, rotation

_DELTA_STEM = re.compile(r"-\d{6}(\.vmdk)$")
CLAIM_TRIES = 30
DISK_SUFFIXES = (".vmdk", ".qcow2", ".raw")  # disk data a failed backup must not keep
OWNER = ".hotvcb-owner"  # who is writing a -partial folder: "host pid"


def owner_text() -> str:
    return "%s %d\n" % (socket.gethostname(), os.getpid())


def owner_of(shell, partial: str) -> str:
    try:
        return shell.read_text(partial + "/" + OWNER).strip()
    except HotvcbError:
        return "unknown owner"


def base_name(filename: str) -> str:
    """`vm-000001.vmdk` -> `vm.vmdk`: a clone of a chain is a whole disk."""
    return _DELTA_STEM.sub(r"\1", filename)


class Sealer:
    def __init__(self, shell, settings: Settings, vm: Vm, started: datetime, log):
        self.shell, self.s, self.vm, self.started, self.log = shell, settings, vm, started, log
        self.root = layout.vm_root(settings.vm_backup_volume, vm.name)
        self.name = layout.backup_name(vm.name, started)
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
                self.shell.write_text(self.partial + "/" + OWNER, owner_text())
                return
            self.log.debug("%s is taken (%s), trying the next second" % (self.name, owner_of(self.shell, self.partial)))
        raise HotvcbError("no free backup name under %s after %d tries" % (self.root, CLAIM_TRIES))

    def copy_config_files(self) -> None:
        """The .vmx (pointing at the disk names in this backup), .nvram, .vmxf.

        A VM without a .vmx (QEMU) brings its driver's description instead,
        an object with `filename` and `text()`, written as it is.
        """
        if not isinstance(self.vm.vmx, VmxFile):
            self.shell.write_text(self.partial + "/" + self.vm.vmx.filename, self.vm.vmx.text())
        else:
            vmx = VmxFile(self.vm.vmx.text())
            for disk in self.vm.disks:
                current = vmx.get(disk.key + ".fileName") or ""
                wanted = base_name(current.rsplit("/", 1)[-1])
                if wanted != current.rsplit("/", 1)[-1]:
                    vmx.set(disk.key + ".fileName", current.rsplit("/", 1)[0] + "/" + wanted if "/" in current else wanted)
            self.shell.write_text(self.partial + "/" + self.vm.ref.vmx_path.rsplit("/", 1)[-1], vmx.text())
        for path in self.vm.extra_files:
            self.shell.copy_file(path, self.partial + "/" + path.rsplit("/", 1)[-1])

    def disk_destination(self, disk: Disk) -> str:
        folder = self.partial
        if disk.datastore and disk.datastore != self.vm.datastore:
            folder = self.partial + "/" + disk.datastore
            self.shell.makedirs(folder)
        return folder + "/" + base_name(disk.filename)

    def relative(self, path: str) -> str:
        return path[len(self.partial) + 1 :]

    def discard_disk(self, dst: str) -> None:
        folder, name = dst.rsplit("/", 1)
        mine = re.compile(re.escape(name[: -len(".vmdk")]) + r"(-flat|-s\d{3})?\.(vmdk|qcow2|raw)$")
        for f in self.shell.listdir(folder):
            if mine.match(f):
                self.shell.remove_tree(folder + "/" + f)

    # -- endings -------------------------------------------------------------
    def seal(self, result: VmResult, snapshot: Dict[str, object]) -> str:
        files = self._hash_files()
        self._write_record(result, files, snapshot)
        if self.s.backup_files_chmod:
            mode = int(self.s.backup_files_chmod, 8)
            for rel in self.shell.list_files(self.partial):
                self.shell.chmod(self.partial + "/" + rel, mode)
        final = self._publish()
        result.backup_dir = final
        self._rotate()
        if self.s.rsync_link and not final.endswith(".gz"):
            self._rsync_link(final)
        return final

    def fail(self, result: VmResult) -> str:
        """Keep a small, clearly failed record; drop the partial disk data."""
        for rel in self.shell.list_files(self.partial):
            if rel.endswith(DISK_SUFFIXES):
                self.shell.remove_tree(self.partial + "/" + rel)
        self.shell.remove_tree(self.partial + "/" + OWNER)
        self._write_record(result, {}, {})
        self.shell.rename(self.partial, self.final)
        self.log.info("%s: failed backup recorded as %s (STATUS.error)" % (self.vm.name, self.final))
        return self.final

    def _hash_files(self) -> Dict[str, Dict[str, object]]:
        self.shell.remove_tree(self.partial + "/" + OWNER)
        files = {}
        for rel in self.shell.list_files(self.partial):
            path = self.partial + "/" + rel
            files[rel] = manifest.digest_file(self.shell, path).entry()
        return files

    def _write_record(self, result: VmResult, files, snapshot) -> None:
        status = result.status
        record = {
            "vm": self.vm.name,
            "vmid": self.vm.ref.vmid,
            "source_vmx": self.vm.ref.vmx_path,
            "started": self.started.isoformat(timespec="seconds"),
            "finished": datetime.now().isoformat(timespec="seconds"),
            "result": status,
            "message": result.message,
            "disk_format": self.s.disk_backup_format,
            "snapshot": snapshot,
            "disks": [
                {"key": d.disk.key, "source": d.disk.path, "files": d.files, "ok": d.ok, "error": d.error}
                for d in result.disks
            ],
            "files": files,
            "verified": None,
        }
        self.shell.write_text(self.partial + "/" + manifest.MANIFEST, manifest.dumps(record))
        self.shell.write_text(self.partial + "/STATUS." + status, "%s\n" % (result.message or status))

    def _publish(self) -> str:
        if not self.s.enable_compression:
            self.shell.rename(self.partial, self.final)
            return self.final
        tmp = self.root + "/." + self.name + ".gz.tmp"
        try:
            self.log.info("Compressing %s" % self.final)
            self.shell.make_tar_gz(self.partial, tmp, self.name)
            self.shell.rename(tmp, self.final + ".gz")
        except HotvcbError as err:
            if interrupt.pending():
                raise
            self.log.warning("compression failed, keeping the uncompressed backup: %s" % err)
            self.shell.remove_tree(tmp)
            self.shell.rename(self.partial, self.final)
            return self.final
        self.shell.remove_tree(self.partial)
        return self.final + ".gz"

    def _rotate(self) -> None:
        backups = layout.list_backups(self.shell, self.s.vm_backup_volume, self.vm.name)
        for old in rotation.to_delete(backups, self.s.vm_backup_rotation_count):
            self.log.info("Removing old backup %s (%s) per rotation count %d" % (old.path, old.status, self.s.vm_backup_rotation_count))
            self.shell.remove_tree(old.path)

    def _rsync_link(self, final: str) -> None:
        link = self.root + "/" + layout.folder_name(self.vm.name) + "-symlink"
        self.shell.symlink(final.rsplit("/", 1)[-1], link)
