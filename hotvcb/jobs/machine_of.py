"""Which VM a backup (or a restored KVM folder) holds: its Machine, with disk paths resolved.

A backup says what it is by the definition it holds:

    <VM>.vmx            ESXi (hotvcb or ghettoVCB)      disks as the .vmx names them (.vmdk)
    domain.xml          libvirt (virsh dumpxml --inactive)   disks `<target dev>.qcow2|.raw|.vmdk`
    <VM>.json           bare QEMU (hosts/qemu.py)       disks as hotvcb.json lists them
    <VM>.xml            a folder `hotvcb restore --kvm` wrote (disks by absolute path; only
                        files in the folder are used, found by their name)

A disk format is taken from the file's extension and always passed on to
qemu: an image's format is never probed (a guest can write a qcow2 header
into a raw disk).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import List, Optional, Tuple

from ..convert.domain_xml import machine_from_xml
from ..convert.machine import (MAX_MEMORY_MIB, MAX_VCPUS, ConvertError, DiskSpec, Machine, at_most, new_uuid,
                               number_targets)
from ..convert.vmx_to_domain import machine_from_vmx
from ..errors import HostError
from ..shell import FileReader
from ..store import backup_files, manifest
from ..vmx import as_vmware_reads
from . import backup_check

DOMAIN_XML = "domain.xml"
_FORMATS = {".qcow2": "qcow2", ".raw": "raw", ".img": "raw", ".vmdk": "vmdk"}


@dataclass
class Found:
    """A backup's VM definition, read from the file its hypervisor wrote."""

    machine: Machine
    kind: str  # esxi | libvirt | qemu
    definition: str  # the file it was read from
    base_xml: Optional[str] = None  # a domain XML to keep and rewrite (libvirt)


def image_format(path: str) -> Optional[str]:
    dot = path.rfind(".")
    return _FORMATS.get(path[dot:].lower()) if dot >= 0 else None


def machine_of(fs: FileReader, folder: str, disk_bus: Optional[str] = None,
               nic_model: Optional[str] = None) -> Found:
    """The VM the folder holds; ConvertError if it holds none we can read."""
    entries = [e for e in fs.listdir(folder) if not e.startswith(".")]
    vmxs = backup_files.own_vmx(entries, manifest.readable(fs, folder))
    if DOMAIN_XML in entries:
        return _from_xml(fs, folder, DOMAIN_XML, "libvirt")
    if len(vmxs) == 1:
        return _from_vmx(fs, folder, vmxs[0], disk_bus, nic_model)
    if len(vmxs) > 1:
        raise ConvertError("%s holds %d .vmx files, expected 1" % (folder, len(vmxs)))
    for e in entries:
        if e.endswith(".json") and e != manifest.MANIFEST:
            described = _qemu_description(fs, folder + "/" + e)
            if described is not None:
                return _from_qemu(fs, folder, e, described, disk_bus)
    xmls = [e for e in entries if e.endswith(".xml")]
    if len(xmls) == 1:
        return _from_xml(fs, folder, xmls[0], "libvirt")
    raise ConvertError("%s holds no VM definition (a .vmx, domain.xml or a QEMU description)" % folder)


def _read(fs: FileReader, path: str) -> str:
    try:
        return fs.read_text(path)
    except (HostError, UnicodeDecodeError) as err:
        raise ConvertError("%s cannot be read: %s" % (path, err)) from None


def _from_vmx(fs: FileReader, folder: str, name: str, disk_bus: Optional[str], nic_model: Optional[str]) -> Found:
    def resolve(dev: str, filename: str) -> Optional[Tuple[str, str]]:
        path = backup_files.disk_in_backup(fs, folder, filename)  # as the ESXi restore finds it
        if path is None:
            lost = backup_files.descriptor_lost(fs, folder, filename)
            if lost is not None:  # damage, not a disk the backup skipped
                raise ConvertError("disk %s (%s): %s" % (dev, filename, lost))
            return None
        backup_check.require_chain_inside(fs, path)  # qemu reads the parents as the disk's data
        return path, "vmdk"

    path = folder + "/" + name
    notes = []  # type: List[str]
    text = as_vmware_reads(_read(fs, path), lambda: fs.file_size(path), notes.append)
    m = machine_from_vmx(text, path, resolve, disk_bus, nic_model)
    m.notes[:0] = notes
    return Found(m, "esxi", path)


def _from_xml(fs: FileReader, folder: str, name: str, kind: str) -> Found:
    def resolve(dev: str, source: str) -> Optional[Tuple[str, str]]:
        # only the folder's own files: a source elsewhere (the live VM's image) is not the backup's
        candidates = [folder + "/" + dev + ext for ext in (".qcow2", ".raw", ".vmdk")]
        if source:
            candidates.append(folder + "/" + source.rsplit("/", 1)[-1])
        for path in candidates:
            fmt = image_format(path)
            if fmt and fs.exists(path) and not fs.isdir(path):
                return path, fmt
        return None

    path = folder + "/" + name
    text = _read(fs, path)
    m = machine_from_xml(text, path, resolve)
    _unnamed_disks(fs, folder, m)
    return Found(m, kind, path, base_xml=text)


def _unnamed_disks(fs: FileReader, folder: str, m: Machine) -> None:
    """Disks the backup holds that its domain.xml does not name (attached live only, backed up before the
    driver added such disks to the XML): not restored, but named, never dropped without a word."""
    try:
        record = manifest.load(fs, folder)  # type: ignore[arg-type]  # reads only
    except ValueError:
        return
    named = {d.origin for d in m.disks} | set(m.left_out)
    for d in (record or {}).get("disks") or []:
        key = str(d.get("key", ""))
        if d.get("ok") and key and key not in named:
            m.notes.append("disk %s is in the backup (%s) but not in its domain definition (attached to the "
                           "running domain only): it is not restored; convert it by hand with qemu-img and attach "
                           "it" % (key, ", ".join(str(f) for f in d.get("files") or [])))


def _left_out(m: Machine, key: str, source: str, why: str) -> None:
    """A disk of the VM the backup does not hold: named, as an ESXi or libvirt restore names one, never
    dropped without a word."""
    m.notes.append("disk %s (%s) is not in the backup (%s); it is left out" % (key, source or "no image", why))
    m.left_out.append(key)


def _qemu_description(fs: FileReader, path: str) -> Optional[dict]:
    try:
        data = json.loads(_read(fs, path))
    except ValueError:
        return None
    return data if isinstance(data, dict) and data.get("hypervisor") == "qemu" else None


def _staged_disks(described: dict) -> Optional[dict]:
    """A backup staged from a repository has no manifest: its description names each disk's file instead
    (`file`, written by the staging: commands/repo_restore.py), read as a manifest's disks and skipped drives;
    None unless every disk backed up is named by a file of the folder."""
    disks, skipped = [], []
    for d in described.get("disks") or []:
        if not isinstance(d, dict):
            return None
        if d.get("skipped"):
            skipped.append({"key": d.get("key", ""), "source": d.get("image", ""), "reason": d.get("skipped")})
            continue
        file = d.get("file")
        if not isinstance(file, str) or not file or "/" in file or file.startswith("."):
            return None
        disks.append({"key": d.get("key", ""), "ok": True, "files": [file]})
    return {"disks": disks, "skipped": skipped} if disks else None


def _from_qemu(fs: FileReader, folder: str, name: str, described: dict, disk_bus: Optional[str]) -> Found:
    """Bare QEMU records no NICs or buses (older backups no CPUs and memory either): defaults, with a note."""
    path = folder + "/" + name
    try:
        record = manifest.load(fs, folder)  # type: ignore[arg-type]  # reads only
    except ValueError as err:
        raise ConvertError("%s: %s" % (folder, err)) from None
    if record is None:
        record = _staged_disks(described)
    if record is None:
        raise ConvertError("%s has no %s: which file holds which disk is unknown" % (folder, manifest.MANIFEST))
    vm_name = str(described.get("name") or "")
    if not vm_name:
        raise ConvertError("%s: no VM name" % path)
    m = Machine(name=vm_name, uuid=new_uuid())
    for key, attr in (("vcpus", "vcpus"), ("memory_mib", "memory_mib")):
        if key in described:  # older backups lack them: the defaults stay
            value = described[key]
            if not isinstance(value, int) or value <= 0:
                raise ConvertError("%s: %s %r is not a positive whole number" % (path, key, value))
            setattr(m, attr, at_most(value, MAX_VCPUS if key == "vcpus" else MAX_MEMORY_MIB, key, path))
    if described.get("firmware") == "efi":  # UEFI firmware on pflash drives
        m.firmware = "efi"
    disks = []  # type: List[DiskSpec]
    for d in record.get("disks") or []:
        key = str(d.get("key", ""))
        if key.startswith("pflash") and key[6:].isdigit():  # an older backup took the UEFI flash for disks
            m.firmware = "efi"
            m.notes.append("%s is the UEFI firmware's flash (an older backup copied it as a disk): it is no disk "
                           "of the restored VM, which boots UEFI" % key)
            continue
        files = [f for f in d.get("files") or [] if image_format(f)]
        if d.get("ok") and files:
            disks.append(DiskSpec(source=folder + "/" + files[0], fmt=image_format(files[0]) or "raw",
                                  bus=disk_bus or "sata", origin=str(d.get("key", ""))))
        else:
            _left_out(m, key, str(d.get("source") or ""), "its copy failed: %s" % (d.get("error") or "?"))
    for d in record.get("skipped") or []:  # read-only drives and the like: the backup says why
        if isinstance(d, dict):
            _left_out(m, str(d.get("key", "")), str(d.get("source", "")), str(d.get("reason") or "skipped"))
    if not disks:
        raise ConvertError("%s: no disk of the QEMU VM is in the backup" % folder)
    m.disks = disks
    m.restore_notes.append("a bare-QEMU backup records no NICs or disk buses: %d vCPU, %d MiB, no NIC, disks on %s"
                           % (m.vcpus, m.memory_mib, disk_bus or "sata (--disk-bus virtio if the guest has the drivers)"))
    number_targets(m)
    return Found(m, "qemu", path)

