"""A domain's pull-mode backup job: its folder, the request `virsh backup-begin` gets, and its end.

The libvirt driver (libvirt.py) decides what a job is for (which checkpoint
it is incremental from, what to keep after it); this module only does the
job's own steps, so the driver reads as the job's states and not as XML.

A job of ours is known by where its NBD socket is:
`<run dir>/jobs/<domain>/<snapshot>/nbd/nbd.sock`. The folder holds the
scratch files and the request's XML too, and outlives a run killed after
its job ended, which is how the next run finds that run's checkpoint
(the socket's path is also all `backup-dumpxml` shows of a running job).
"""

import hashlib
import time
import xml.etree.ElementTree as ET
from typing import Dict, List, Set

from ..errors import HostError, TimeoutExpired
from ..model import Disk, Vm
from ..runlog import RunLog
from ..shell import Shell
from .qemu_overlay_names import OUR_MARK
from .virsh import BackupDisk, BackupJob, Virsh, VirshError
from .. import lazyre

QUIESCE_TIMEOUT = 60.0
POLL = 0.2
_UNSAFE = lazyre.compile(r"[^A-Za-z0-9_.-]+")


def safe(name: str) -> str:
    """A name (a disk key, a URI) as one file name component."""
    return _UNSAFE.sub("_", name)


def own_folder(domain: str) -> str:
    """The domain's folder name under the run dir: readable, and its alone. `web 1` and `web_1`
    sanitise alike, and sharing a folder, one's backup cleared the other's scratch as a dead
    run's; a short hash of the exact name tells them apart."""
    return "%s-%s" % (safe(domain)[:100], hashlib.sha256(domain.encode("utf-8")).hexdigest()[:8])


def job_snapshot(job: BackupJob) -> str:
    """The snapshot (= checkpoint) name of a pull job of ours: its socket is .../jobs/<domain>/<name>/nbd/nbd.sock."""
    parts = job.socket.split("/")
    if len(parts) >= 5 and parts[-2] == "nbd" and parts[-5] == "jobs" and parts[-3].startswith(OUR_MARK):
        return parts[-3]
    return ""


def checkpoint_fault(text: str) -> bool:
    """backup-begin refused the checkpoint itself (gone, its bitmap missing or broken), so a full backup
    may do without it. A timeout (libvirt's state lock held by another job) says nothing about it."""
    low = text.lower()
    return ("bitmap" in low or "checkpoint" in low) and "lock" not in low and "timed out" not in low


class PullJobs:
    """The pull jobs of one libvirt connection's domains, under its run dir."""

    def __init__(self, shell: Shell, virsh: Virsh, log: RunLog, run_dir: str):
        self.shell, self.virsh, self.log, self.run_dir = shell, virsh, log, run_dir

    def folder(self, domain: str) -> str:
        """Scratch files and the NBD socket of the domain's pull job: <run dir>/jobs/<domain>/<snapshot>/."""
        return "%s/jobs/%s" % (self.run_dir, own_folder(domain))

    def left(self, domain: str) -> Set[str]:
        """The snapshot names whose folders are still there: with no job running, of runs that died."""
        jobs = self.folder(domain)
        return set(self.shell.listdir(jobs)) if self.shell.isdir(jobs) else set()

    def prepare(self, domain: str, name: str, owner: str) -> str:
        """A fresh folder for the job `name` (a dead run's are removed: the run holds the host's lock),
        its nbd/ folder open to the domain's QEMU only (`owner`, "" for root), which creates the socket."""
        jobs = self.folder(domain)
        for stale in self.left(domain):
            self.shell.remove_tree(jobs + "/" + stale)
        scratch = "%s/%s" % (jobs, name)
        self.shell.makedirs(scratch + "/nbd")
        if owner:
            self.shell.run(["chown", owner, scratch + "/nbd"], timeout=30)
        self.shell.chmod(scratch + "/nbd", 0o700)
        return scratch

    def begin(self, vm: Vm, name: str, description: str, disks: List[Disk], formats: Dict[str, str], scratch: str,
              since: str, quiesce: bool, timeout: float) -> BackupJob:
        """backup-begin; the job as it was asked for (exports named by the disks' keys, as libvirt
        names them by default, bitmaps `backup-<key>`), which is the job libvirt runs once it said yes.
        `formats` maps image paths to their formats: only a qcow2 image keeps a dirty bitmap."""
        chosen = {d.key for d in disks}
        socket = scratch + "/nbd/nbd.sock"
        backup = ET.Element("domainbackup", mode="pull")
        if since:
            ET.SubElement(backup, "incremental").text = since
        ET.SubElement(backup, "server", transport="unix", socket=socket)
        checkpoint = ET.Element("domaincheckpoint")
        ET.SubElement(checkpoint, "name").text = name
        ET.SubElement(checkpoint, "description").text = description
        bdisks, cdisks = ET.SubElement(backup, "disks"), ET.SubElement(checkpoint, "disks")
        exports = []  # type: List[BackupDisk]
        for d in vm.disks:
            if d.key in chosen:
                el = ET.SubElement(bdisks, "disk", name=d.key, backup="yes", type="file", exportname=d.key)
                file = "%s/%s.scratch" % (scratch, safe(d.key))
                ET.SubElement(el, "scratch", file=file)
                # only a qcow2 image keeps a dirty bitmap: any other disk is copied in full every time
                bitmap = formats.get(d.path) == "qcow2"
                if since and not bitmap:
                    el.set("backupmode", "full")
                elif since:
                    el.set("exportbitmap", "backup-" + d.key)
                ET.SubElement(cdisks, "disk", name=d.key, checkpoint="bitmap" if bitmap else "no")
                dirty = since and bitmap
                exports.append(BackupDisk(d.key, d.key, "backup-" + d.key if dirty else "", since if dirty else "",
                                          file))
            elif d.key != "?":
                ET.SubElement(bdisks, "disk", name=d.key, backup="no")
                ET.SubElement(cdisks, "disk", name=d.key, checkpoint="no")
        bfile, cfile = scratch + "/backup.xml", scratch + "/checkpoint.xml"
        self.shell.write_text(bfile, ET.tostring(backup, encoding="unicode"))
        self.shell.write_text(cfile, ET.tostring(checkpoint, encoding="unicode"))
        frozen = quiesce and self._freeze(vm)
        try:
            self.virsh.backup_begin(vm.name, bfile, cfile, timeout=max(timeout, 30.0))
        finally:
            if frozen:
                self._thaw(vm)
        return BackupJob(socket, since, exports)

    def _freeze(self, vm: Vm) -> bool:
        try:
            self.virsh.fsfreeze(vm.name, QUIESCE_TIMEOUT)
            return True
        except TimeoutExpired:
            self._thaw(vm)  # the freeze may have gone through after all: never leave it frozen
            self.log.info("%s: the guest agent did not freeze the filesystems within %d s; backing up without "
                          "quiescing" % (vm.name, QUIESCE_TIMEOUT))
        except VirshError as err:
            self.log.info("%s: not quiesced (%s); backing up crash-consistent" % (vm.name, err.text))
        return False

    def _thaw(self, vm: Vm) -> None:
        try:
            self.virsh.fsthaw(vm.name, QUIESCE_TIMEOUT)
        except HostError as err:
            self.log.error("!!! %s: THAWING THE GUEST'S FILESYSTEMS FAILED: %s -- run `virsh domfsthaw %s` now !!!"
                           % (vm.name, err, vm.name))

    def end(self, domain: str, name: str, timeout: float) -> None:
        """End the domain's job if it is the one of snapshot `name` (another tool's is left alone); returns
        once libvirt shows it ended."""
        job = self.virsh.backup_job(domain)
        if job is not None and job_snapshot(job) == name:
            self.virsh.abort_job(domain)
            deadline = time.monotonic() + timeout  # domjobabort may return before the job has ended
            while self.virsh.backup_job(domain) is not None:
                if time.monotonic() > deadline:
                    raise TimeoutExpired("the end of %s's backup job" % domain, timeout)
                time.sleep(POLL)

    def remove(self, domain: str, name: str) -> None:
        self.shell.remove_tree("%s/%s" % (self.folder(domain), name))
