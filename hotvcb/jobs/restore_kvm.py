"""Restore to KVM: a backup of any hypervisor -> qcow2/raw images + a domain definition.

    checked -> converting -> renamed -> [defined in libvirt]

- checked: nothing is written before the backup is found good, its
  checksums hold (unless verify=False; a .gz is checked as it is, then
  unpacked into the target folder and removed at the end), its VM definition reads (a .vmx,
  domain.xml or a bare-QEMU description: machine_of.py), the target folder
  and our in-progress folder do not exist, and there is room. Dead restores' folders in the
  target folder (their owner records, restore_scratch.py) are removed first (restore_sweep.py): a SIGKILLed restore
  cannot remove its own, and its in-progress folder would refuse this restore's name.
  A VMDK chain qemu would misread is read through copies in `/tmp/hotvcb-kvm-<pid>-…`
  (qemu_vmdk.py), removed at the end, a SIGKILLed restore's by the next one (tmpwork.py):
  a few small files, kept out of the target so a dry run writes nothing there and a
  target that takes no symlinks (vfat, a CIFS share) restores all the same.
- converting: every disk is converted with `qemu-img convert` into
  `<target>/<name>.hotvcb-restoring/<target dev>.qcow2|.raw`; then the
  definition is written: `<name>.xml` (`virsh define`-able; a libvirt
  backup's own XML rewritten, else built from the Machine) and `<name>.sh`
  (the same VM as a QEMU command line, with a QMP socket hotvcb can back up).
  The folder is made after its owner record (restore_scratch.Records), so a
  SIGKILLed restore's is removed by the next restore into the target folder or
  by `hotvcb cleanup --kvm DIR`. Any failure or Ctrl-C removes that folder.
- renamed: the folder gets its final name only when every file is in place.
- defined: with a libvirt URI, `virsh define`. If libvirt refuses, the
  complete folder stays and the error says how to define it by hand.

Under a new name the VM is a copy that can run beside the original: new
UUID and, unless kept, new MAC addresses (convert/machine.renamed).
"""

import os
import shlex
import shutil
from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional, Set

from .. import folderwrite, interrupt, targz, tmpwork
from ..convert import domain_xml
from ..convert.firmware import ovmf
from ..convert.machine import ConvertError, Machine, renamed
from ..convert.qemu_argv import SOCKET, SOCKET_PATH_MAX, qemu_argv, qmp_name, start_script
from ..errors import HostError, HotvcbError
from ..hosts import qemuimg
from ..thishost import known_this_host, this_host
from ..shell import FileReader, Shell
from ..store import datasize, layout
from ..units import human_size, need_and_free
from . import backup_check, qemu_vmdk, restore_scratch, restore_sweep
from .machine_of import Found, machine_of
from .restore_scratch import RESTORING, vm_named_so

IN_USE = "exists: another restore into it is running (or one that died on another machine left it)"
KVM_FORMATS = ("qcow2", "raw")
WORK_PREFIX = "hotvcb-kvm-"  # in /tmp, + this process's tag (tmpwork.py)
VIRSH = "virsh"


class KvmRestoreError(HotvcbError):
    pass


@dataclass
class KvmRequest:
    """A backup to restore as a KVM guest, and how."""

    backup: str
    target: str  # the folder the VM's folder is made in
    fmt: str = "qcow2"  # one of KVM_FORMATS
    name: Optional[str] = None  # None: the backup's own
    keep_macs: bool = False
    disk_bus: Optional[str] = None  # None: what the source had, or sata for ESXi's (machine.DISK_BUSES)
    nic_model: Optional[str] = None
    define_in: Optional[str] = None  # a libvirt URI to define the domain in; "" = virsh's default


@dataclass
class KvmResult:
    """The KVM guest a restore made: its folder, domain XML and start script."""

    name: str
    folder: str
    xml: str
    script: str
    left_out: List[str] = field(default_factory=list)  # restored without these disks (not in the backup)


class KvmRestore:
    def __init__(self, shell: Shell, log, *, verify: bool = True, dry_run: bool = False,
                 qemu_img: str = qemuimg.QEMU_IMG, staged: bool = False):
        """staged: the backup is a repository's this run staged (commands/restore_kvm_repo.py), every chunk
        hash-checked as it was read: no manifest to check it against, and none needed."""
        self.shell, self.log, self.verify, self.dry_run, self.qemu_img = shell, log, verify, dry_run, qemu_img
        self.staged = staged
        self.temp = None  # type: Optional[str]  # set once created: removed on any failure
        self.unpacked = None  # type: Optional[str]  # a .gz backup unpacked: removed at the end
        self.records = restore_scratch.Records(shell, known_this_host if dry_run else this_host)  # a dry run makes no id
        self.work = None  # type: Optional[str]  # normalised VMDK descriptors qemu-img reads (qemu_vmdk.py)
        self.reads = {}  # type: Dict[str, str]  # a disk's source -> what qemu-img is handed for it

    def run(self, req: KvmRequest) -> KvmResult:
        try:
            return self._run(req)
        except OSError as err:  # a file this machine would not let us write (read-only, full)
            raise KvmRestoreError("cannot restore into %s: %s" % (err.filename or req.target, err.strerror or err)) \
                from err
        finally:
            if self.work is not None:
                shutil.rmtree(self.work, ignore_errors=True)
            for path, what in ((self.temp, "unfinished restore folder"), (self.unpacked, "unpacked copy")):
                if path is not None:
                    self.log.info("Removing the %s %s" % (what, path))
                    try:
                        self.records.remove(path)
                    except HostError as err:  # not over the error that brought us here
                        self.log.error("%s -- remove it by hand" % err)

    def _run(self, req: KvmRequest) -> KvmResult:
        backup = req.backup.rstrip("/")
        unusable = None if req.name is None else restore_scratch.unusable_name(req.name)
        if unusable is not None:
            raise KvmRestoreError(unusable)
        archive = backup_check.is_archive(self.shell, backup)
        if not archive and not self.shell.isdir(backup):
            raise KvmRestoreError(layout.not_there(self.shell, backup))
        if not self.shell.isdir(req.target):
            raise KvmRestoreError("target folder %s %s" % (req.target, layout.not_a_folder(self.shell, req.target)))
        unwritable = folderwrite.unwritable(req.target)  # asked, not probed: a dry run said OK of a read-only one
        if unwritable:
            raise KvmRestoreError("cannot restore into %s: %s" % (req.target, unwritable))
        # recorded by its real path: a relative one names nothing to a cleanup run elsewhere
        req = replace(req, target=self.shell.realpath(req.target))
        if backup_check.inside(req.target, backup):
            raise KvmRestoreError("target folder %s is inside the backup %s, which a restore only reads"
                                  % (req.target, backup))
        inside = backup_check.inside_a_backup(self.shell, req.target)  # another backup, which rotation removes
        if inside:
            raise KvmRestoreError("target folder %s" % inside)
        # a staged repository backup was judged in the repository; a bare QEMU VM's holds no .vmx and no
        # manifest for a folder's verdict to read
        if not self.staged:
            backup_check.require_good(self.shell, backup)
        swept = set()  # type: Set[str]  # a dry run's: what the real run finds gone
        restore_sweep.sweep(self.shell, [req.target], self.log, self.records.run(), self.dry_run, swept)
        if not self.dry_run:
            tmpwork.sweep(WORK_PREFIX)
        view = None  # type: Optional[targz.ArchiveView]  # a .gz's dry run: planned from the archive as it is
        fs = self.shell  # type: FileReader
        if archive:  # checked as it is, then unpacked beside the target (never next to the backups)
            self._verify(backup)
            if self.dry_run:
                self.log.dryrun("RESTORE TO KVM: %s would be unpacked in %s and restored" % (backup, req.target))
                view = fs = targz.ArchiveView(backup)
                if self.verify:  # its block digests proved by the checks just passed (datasize.list_differs)
                    datasize.measure(view)
                backup = view.root
            else:
                self.unpacked = self.records.make(req.target)
                backup = backup_check.unpack(self.shell, backup, self.unpacked, self.log.info)
        found = machine_of(fs, backup, req.disk_bus, req.nic_model)
        m = found.machine
        if view is None:  # a qcow2's header: read by qemu-img, which reads no archive (none in a VMware backup)
            backup_check.require_whole(self.shell, m, self.qemu_img)
        unusable = None if req.name is not None else restore_scratch.unusable_name(m.name, given=False)
        if unusable is not None:  # a given name was refused before anything else
            raise KvmRestoreError(unusable)
        renamed(m, req.name or m.name, req.keep_macs)
        folder = req.target.rstrip("/") + "/" + layout.datastore_folder(m.name)
        refuse_taken(self.shell, folder, swept)
        if not archive:
            self._verify(backup)
        for note in m.notes + m.restore_notes:
            self.log.warning("%s: %s" % (m.name, note))
        if view is not None:
            self._check_unpack_room(view, m, req, folder)
            self._print_plan(found, req, folder)
            return KvmResult(m.name, folder, "", "")
        self.work = tmpwork.make(WORK_PREFIX)
        for i, d in enumerate(m.disks):  # before anything is written: a disk qemu would misread is refused
            self.reads[d.source] = d.source if d.fmt != "vmdk" else qemu_vmdk.opened(
                self.shell, d.source, "%s/%d" % (self.work, i), self.qemu_img)
        self._check_room(m, req, folder)
        if self.dry_run:
            self._print_plan(found, req, folder)
            return KvmResult(m.name, folder, "", "")
        return self._write(found, req, folder)

    def _verify(self, backup: str) -> None:
        if self.staged:
            self.log.info("%s: staged from the repository, every chunk hash-checked as it was read" % backup)
        elif self.verify:
            self.log.info("Verifying checksums of %s" % backup)
            backup_check.require_checksums(self.shell, backup, self.log.info)
        else:
            self.log.info("Not verifying checksums (--no-verify)")

    def _check_room(self, m: Machine, req: KvmRequest, folder: str) -> None:
        needed = 0
        for d in m.disks:
            virtual, allocated = qemuimg.sizes(qemuimg.info(self.shell, self.reads[d.source], self.qemu_img))
            needed += min(virtual, allocated) if req.fmt == "qcow2" else virtual  # raw: an upper bound
        self._require_room(needed, m, req, folder)

    def _check_unpack_room(self, view: "targz.ArchiveView", m: Machine, req: KvmRequest, folder: str) -> None:
        """A .gz's dry run: the archive unpacked in the target folder (its data), then its disks converted
        beside it: a qcow2 takes at most their data again, a raw image their whole size. Counted from the
        archive, as the real run counts the unpacked copy once it is there."""
        unpacked = sum(view.unpacked_size(view.root + "/" + rel) for rel in view.sizes)
        self._require_room(unpacked + (unpacked if req.fmt == "qcow2" else sum(view.sizes.values())), m, req, folder)

    def _require_room(self, needed: int, m: Machine, req: KvmRequest, folder: str) -> None:
        st = os.statvfs(req.target)
        free = st.f_bavail * st.f_frsize
        if needed > free:
            need, room = need_and_free(needed, free)
            raise KvmRestoreError("restoring %s as %s needs up to %s in %s but only %s is free"
                                  % (m.name, req.fmt, need, req.target, room))
        self.log.debug("%s: up to %s needed, %s free" % (folder, human_size(needed), human_size(free)))

    def _print_plan(self, found: Found, req: KvmRequest, folder: str) -> None:
        m, out = found.machine, self.log.dryrun
        out("RESTORE TO KVM: %s (%s backup, definition %s)" % (req.backup, found.kind, found.definition))
        out("VM NAME: %s, UUID %s, %d vCPU, %d MiB, %s" % (m.name, m.uuid, m.vcpus, m.memory_mib, m.firmware))
        out("TARGET FOLDER: %s (written as %s%s, renamed when complete)" % (folder, folder, RESTORING))
        for d in m.disks:
            out("DISK: %s (%s, %s) -> %s/%s.%s on %s" % (d.source, d.origin, d.fmt, folder, d.target, req.fmt, d.bus))
        for n in m.nics:
            out("NIC: %s %s" % (n.model, n.mac))
        if req.define_in is not None:
            out("DEFINE: virsh%s define %s/%s.xml" % (" -c " + req.define_in if req.define_in else "", folder,
                                                    layout.datastore_folder(m.name)))

    def _write(self, found: Found, req: KvmRequest, folder: str) -> KvmResult:
        m = found.machine
        temp = folder + RESTORING
        try:  # the atomic claim: a second restore passed the checks too
            self.records.claim(temp)
        except HostError as err:
            raise KvmRestoreError("%s %s" % (temp, IN_USE) if self.shell.exists(temp) else str(err)) from err
        self.temp = temp
        if self.shell.exists(folder):  # that other restore finished between our checks and the claim
            raise KvmRestoreError("%s already exists (restored meanwhile); not overwriting it" % folder)
        spec = qemuimg.output_format(req.fmt)
        for d in m.disks:
            if interrupt.pending():
                interrupt.raise_pending()
            name = d.target + spec.extension
            self.log.info("Converting %s (%s, %s) to %s/%s" % (d.source, d.origin, d.fmt, folder, name))
            progress = self.log.progress("%s %s" % (m.name, name), os.path.getsize(d.source))
            self._convert(d.source, d.fmt, temp + "/" + name, spec, progress)
            d.source, d.fmt = folder + "/" + name, req.fmt
        fname = layout.datastore_folder(m.name)
        xml = domain_xml.render(m, found.base_xml, found.definition)
        self.shell.write_text(temp + "/" + fname + ".xml", xml)
        script = self._script(m, temp, folder)
        if self.shell.exists(folder):
            raise KvmRestoreError("target folder %s appeared during the restore; not overwriting it" % folder)
        self.shell.rename(temp, folder)
        self.temp = None
        try:
            self.records.release(temp)
        except HostError as err:  # the VM is restored; a record naming no folder is harmless
            self.log.warning("%s -- remove it by hand" % err)
        result = KvmResult(m.name, folder, folder + "/" + fname + ".xml", script, m.left_out)
        if req.define_in is not None:
            self._define(req.define_in, result.xml, m.name)
        return result

    def _convert(self, src: str, src_fmt: str, dst: str, spec: qemuimg.OutputFormat, progress) -> None:
        def watch(fragment: str) -> None:
            pct = qemuimg.percent(fragment)
            if pct is not None:
                progress(pct)

        argv = qemuimg.convert_argv(self.reads[src], src_fmt, dst, spec, self.qemu_img)
        try:  # tethered: a SIGKILLed restore must not leave qemu-img writing on
            capacity = qemuimg.sizes(qemuimg.info(self.shell, self.reads[src], self.qemu_img))[0]
            out = qemuimg.convert(self.shell, argv, capacity, watch)
        except HostError as err:
            raise KvmRestoreError(str(err)) from err
        if out.returncode != 0:
            raise KvmRestoreError("converting %s failed: %s; nothing was defined" % (src, qemuimg.failure(out)))

    def _script(self, m: Machine, temp: str, folder: str) -> str:
        """`<name>.sh`, the VM as a QEMU command line; "" for an EFI VM on a machine without OVMF."""
        efi_vars = None
        found = ovmf()
        if m.firmware == "efi" and found is not None:
            shutil.copyfile(found[1], temp + "/efivars.fd")
            efi_vars = folder + "/efivars.fd"
        try:
            argv = qemu_argv(m, efi_vars=efi_vars)
        except ConvertError as err:
            self.log.warning("no QEMU start script: %s" % err)
            return ""
        name = layout.datastore_folder(m.name) + ".sh"
        if qmp_name(m.name) != m.name:
            self.log.info("%s: where the QMP folder's path and the VM's name pass the %d bytes of a socket path, "
                          "its QMP socket is %s, the name hotvcb --qemu backs it up by"
                          % (name, SOCKET_PATH_MAX, qmp_name(m.name) + SOCKET))
        self.shell.write_text(temp + "/" + name, start_script(m, argv))
        self.shell.chmod(temp + "/" + name, 0o755)
        return folder + "/" + name

    def _define(self, uri: str, xml: str, name: str) -> None:
        argv = [VIRSH] + (["-c", uri] if uri else []) + ["define", xml]
        listed = self.shell.run(argv[:-2] + ["list", "--all", "--name"], timeout=120)
        if listed.returncode == 0 and name in [l.strip() for l in listed.output.splitlines()]:
            # `virsh define` would replace that domain's definition (under its own UUID: silently)
            raise KvmRestoreError("the VM is restored, but libvirt already has a domain named %r; not replacing it "
                                  "(undefine that one first, or restore with --name): %s" % (name, " ".join(argv)))
        out = self.shell.run(argv, timeout=120)
        if out.returncode != 0:
            last = [l for l in out.output.strip().splitlines() if l.strip()]
            raise KvmRestoreError("the VM is restored, but libvirt refused it (%s); define it by hand: %s"
                                  % (last[-1] if last else "exit %d" % out.returncode, " ".join(argv)))
        self.log.info("Defined in libvirt: %s" % " ".join(argv))


def refuse_taken(shell: Shell, folder: str, swept: Set[str]) -> None:
    """KvmRestoreError if the VM folder `folder`, or the name it is written under first, is taken by what the
    sweep of its target folder does not remove (`swept`: what a dry run's sweep says it would). Asked by a
    folder backup's restore and, before anything is staged, by a repository backup's (restore_kvm_repo.py),
    whose dry run said OK where its real run failed."""
    if folder not in swept and shell.exists(folder):
        raise KvmRestoreError("%s already exists; not overwriting it" % folder)
    if folder + RESTORING not in swept and shell.exists(folder + RESTORING):
        raise KvmRestoreError("%s%s %s" % (folder, RESTORING, _temp_taken(shell, folder + RESTORING)))


def _temp_taken(shell: Shell, temp: str) -> str:
    """Why the restore stops at its unfinished folder's name taken: a restore's, or
    the complete folder of a VM restored under that very name (`Shop.hotvcb-restoring`, its .xml within),
    which no cleanup removes: then that VM is named, not a restore that is not running (as
    restore_plan's for ESXi)."""
    if not vm_named_so(shell, temp):
        return IN_USE
    return ("is the folder of the VM %r restored there (named like a restore's unfinished folder, which this "
            "restore would fill first); restore under another name (--name) or into another folder"
            % temp.rsplit("/", 1)[-1])


def how_to_start(result: KvmResult, defined: bool) -> List[str]:
    name = shlex.quote(result.name)
    if defined:
        return ["start it: virsh start %s" % name]
    lines = ["define it in libvirt: virsh define %s && virsh start %s" % (shlex.quote(result.xml), name)]
    if result.script:
        lines.append("or start it with plain QEMU: %s" % shlex.quote(result.script))
    return lines
