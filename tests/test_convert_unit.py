"""The .vmx <-> Machine <-> domain XML / .vmx / QEMU mappings (hotvcb/convert), as docs/restore.md tables them."""

import shutil
import subprocess
import tempfile

import pytest

from hotvcb.convert import domain_xml
from hotvcb.convert.domain_to_vmx import vmx_from_machine
from hotvcb.convert.firmware import ovmf
from hotvcb.convert.machine import ConvertError, DiskSpec, Machine, renamed
from hotvcb.convert.qemu_argv import SOCKET_PATH_MAX, qemu_argv, qmp_name, start_script
from hotvcb.convert.vmx_to_domain import machine_from_vmx

VMX = """displayName = "Win Server"
guestOS = "windows2019srv-64"
memSize = "4096"
numvcpus = "4"
firmware = "efi"
uuid.bios = "56 4d 7b 2a 5e 0e 4b 8f-a9 1c 2d 3e 4f 50 61 72"
scsi0.virtualDev = "pvscsi"
scsi0.present = "TRUE"
scsi0:0.present = "TRUE"
scsi0:0.fileName = "win.vmdk"
ide0:0.present = "TRUE"
ide0:0.fileName = "win_2.vmdk"
nvme0:0.present = "TRUE"
nvme0:0.fileName = "/vmfs/volumes/ds2/win/win_1.vmdk"
ide1:0.present = "TRUE"
ide1:0.deviceType = "cdrom-image"
ide1:0.fileName = "/vmfs/volumes/iso/x.iso"
ethernet0.present = "TRUE"
ethernet0.virtualDev = "vmxnet3"
ethernet0.networkName = "VM Network"
ethernet0.addressType = "generated"
ethernet0.generatedAddress = "00:0c:29:0f:1f:27"
ethernet1.present = "TRUE"
ethernet1.virtualDev = "e1000e"
ethernet1.addressType = "static"
ethernet1.address = "00:50:56:00:00:01"
ethernet2.present = "FALSE"
"""


def from_vmx(text=VMX, **kw):
    return machine_from_vmx(text, "x.vmx", lambda dev, f: ("/b/" + f.rsplit("/", 1)[-1], "vmdk"), **kw)


def test_vmx_maps_to_bootable_devices_with_notes():
    m = from_vmx()
    assert (m.name, m.vcpus, m.memory_mib, m.firmware, m.windows) == ("Win Server", 4, 4096, "efi", True)
    assert m.uuid == "564d7b2a-5e0e-4b8f-a91c-2d3e4f506172"
    assert [(d.origin, d.bus, d.target, d.source) for d in m.disks] == [
        ("scsi0:0", "sata", "sda", "/b/win.vmdk"), ("ide0:0", "sata", "sdb", "/b/win_2.vmdk"),
        ("nvme0:0", "sata", "sdc", "/b/win_1.vmdk")]  # no CD-ROM
    assert [(n.model, n.mac) for n in m.nics] == [("e1000", "00:0c:29:0f:1f:27"), ("e1000e", "00:50:56:00:00:01")]
    notes = " | ".join(m.restore_notes)
    assert "pvscsi (paravirtual: virtio needs the guest's virtio drivers)" in notes
    assert "ethernet0 was vmxnet3 (paravirtual" in notes and "'VM Network'" in notes


def test_asked_for_buses_are_used_without_notes():
    m = from_vmx(disk_bus="virtio", nic_model="virtio")
    assert [(d.bus, d.target) for d in m.disks] == [("virtio", "vda"), ("virtio", "vdb"), ("virtio", "vdc")]
    assert {n.model for n in m.nics} == {"virtio"}
    assert not [n for n in m.notes + m.restore_notes if "paravirtual" in n]


def test_a_copy_gets_a_new_identity_unless_macs_are_kept():
    m = from_vmx()
    renamed(m, "copy", keep_macs=False)
    assert m.uuid != "564d7b2a-5e0e-4b8f-a91c-2d3e4f506172" and all(n.mac.startswith("52:54:00") for n in m.nics)
    kept = from_vmx()
    renamed(kept, "copy", keep_macs=True)
    assert [n.mac for n in kept.nics] == ["00:0c:29:0f:1f:27", "00:50:56:00:00:01"]


def test_domain_xml_round_trip_and_libvirt_accepts_it(tmp_path):
    m = from_vmx()
    xml = domain_xml.render(m)
    if ovmf():
        assert "<loader readonly=\"yes\" type=\"pflash\">%s</loader>" % ovmf()[0] in xml
    else:
        assert "firmware=\"efi\"" in xml
    assert "<clock offset=\"localtime\"" in xml and "bus=\"ide\"" not in xml  # q35 has no IDE
    back = domain_xml.machine_from_xml(xml, "d.xml", lambda dev, src: (src, "vmdk"))
    assert (back.name, back.uuid, back.vcpus, back.memory_mib, back.firmware, back.windows) == (
        m.name, m.uuid, 4, 4096, "efi", True)
    assert [(d.target, d.bus, d.source) for d in back.disks] == [(d.target, d.bus, d.source) for d in m.disks]
    assert [(n.model, n.mac) for n in back.nics] == [(n.model, n.mac) for n in m.nics]
    virsh = shutil.which("virsh")
    if virsh:
        (tmp_path / "d.xml").write_text(xml)
        r = subprocess.run([virsh, "-c", "test:///default", "define", str(tmp_path / "d.xml")],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr


def test_machine_to_vmx_and_back():
    m = Machine("lv", "0f4c2a56-5d0b-4d6c-9a3e-6c1f0e9d1a11", vcpus=2, memory_mib=512, firmware="efi",
                disks=[DiskSpec("/b/vda.qcow2", "qcow2", "virtio", "vda", "vda"),
                       DiskSpec("/b/hda.raw", "raw", "ide", "hda", "hda")])
    text = vmx_from_machine(m, ["vda.vmdk", "hda.vmdk"])
    assert 'uuid.bios = "0f 4c 2a 56 5d 0b 4d 6c-9a 3e 6c 1f 0e 9d 1a 11"' in text
    assert 'sata0:0.fileName = "vda.vmdk"' in text and 'ide0:0.fileName = "hda.vmdk"' in text
    assert any("vda was on virtio; it goes to SATA" in n for n in m.notes)
    back = machine_from_vmx(text, "x.vmx", lambda dev, f: (f, "vmdk"))
    assert (back.uuid, back.vcpus, back.memory_mib, back.firmware) == (m.uuid, 2, 512, "efi")
    assert [d.origin for d in back.disks] == ["sata0:0", "ide0:0"]


def test_qemu_command_line_limits():
    m = Machine("efi vm", "0f4c2a56-5d0b-4d6c-9a3e-6c1f0e9d1a11", firmware="efi",
                disks=[DiskSpec("/b/a,b.qcow2", "qcow2", "sata", "sda", "sda")])
    with pytest.raises(ConvertError, match="UEFI"):
        qemu_argv(m)  # no variables file to write to
    m.firmware = "bios"
    assert "if=none,id=disk0,format=qcow2,file=/b/a,,b.qcow2" in qemu_argv(m)  # a comma in a name, escaped
    m.disks *= 7
    with pytest.raises(ConvertError, match="more than 6 SATA"):
        qemu_argv(m)


def test_slots_numbered_with_thousands_of_digits_are_no_devices_and_no_error():
    """A .vmx line's key of 5,000 digits (Python 3.11+ refuses int() of 4,300): no slot ESXi has, so the disk
    and NIC slots that are real keep their order and the odd ones stand last or not at all, never a crash."""
    huge = "1" + "0" * 4999
    text = VMX + ('scsi0:%s.present = "TRUE"\nscsi0:%s.fileName = "odd.vmdk"\n'
                  'ethernet%s.present = "TRUE"\nethernet%s.address = "00:50:56:00:00:09"\n'
                  'ethernet%s.addressType = "static"\n'
                  'ethernet10.present = "TRUE"\nethernet10.addressType = "static"\n'
                  'ethernet10.address = "00:50:56:00:00:10"\n') % (huge, huge, huge, huge, huge)
    m = from_vmx(text)
    assert [d.origin for d in m.disks] == ["scsi0:0", "ide0:0", "nvme0:0"]
    assert [n.mac for n in m.nics] == ["00:0c:29:0f:1f:27", "00:50:56:00:00:01", "00:50:56:00:00:10",
                                       "00:50:56:00:00:09"]


LUN_XML = """<domain type='kvm'><name>web</name><uuid>8d9f4a52-0d0c-4b8e-9a53-2f0e7e1c9d11</uuid>
<memory unit='MiB'>512</memory><vcpu>1</vcpu><devices>
<disk type='file' device='disk'><source file='/img/web.qcow2'/><target dev='vda' bus='virtio'/></disk>
<disk type='block' device='lun'><source dev='/dev/sdc'/><target dev='sda' bus='scsi'/></disk>
<disk type='file' device='floppy'><source file='/img/boot.img'/><target dev='fda' bus='fdc'/></disk>
<disk type='network' device='lun'><source protocol='iscsi' name='iqn.2026-12.com.example:q/0'><host name='192.0.2.10'/>
</source><target dev='sdb' bus='scsi'/></disk>
<disk type='file' device='cdrom'><source file='/iso/x.iso'/><target dev='hdc' bus='ide'/><readonly/></disk>
</devices></domain>"""


def test_a_copy_leaves_out_the_originals_lun_and_floppy_image_its_own_name_keeps_them():
    """Two VMs writing one LUN corrupt it: a copy under a new name has none of the original's host storage."""
    def resolve(dev, src):
        return ("/b/%s.qcow2" % dev, "qcow2") if dev == "vda" else None

    same = domain_xml.machine_from_xml(LUN_XML, "d.xml", resolve)
    renamed(same, "web", False)
    kept = domain_xml.render(same, LUN_XML)
    assert "/dev/sdc" in kept and "/img/boot.img" in kept and "iqn.2026-12" in kept and same.left_out == []
    copy = domain_xml.machine_from_xml(LUN_XML, "d.xml", resolve)
    renamed(copy, "web-copy", False)
    out = domain_xml.render(copy, LUN_XML)
    assert "/dev/sdc" not in out and "/img/boot.img" not in out and "/iso/x.iso" in out
    assert "iqn.2026-12" not in out  # a SAN LUN over iSCSI is the original's as much as a host device
    assert sorted(copy.left_out) == ["fda", "sda", "sdb"]
    assert any("sdb" in n and "iscsi:iqn.2026-12.com.example:q/0" in n for n in copy.notes)
    assert any("sda" in n and "/dev/sdc" in n for n in copy.notes)


def test_a_disk_of_the_backup_its_domain_xml_does_not_name_is_named_by_the_restore(tmp_path):
    """An older backup of a domain with a disk attached --live holds vdb.qcow2 that its domain.xml lacks:
    the restore says so instead of dropping it without a word."""
    import json

    from hotvcb.jobs.machine_of import machine_of
    from hotvcb.localshell import LocalShell
    from hotvcb.store import manifest

    (tmp_path / "domain.xml").write_text("<domain type='kvm'><name>x</name><memory unit='MiB'>32</memory>"
                                         "<vcpu>1</vcpu><devices><disk type='file' device='disk'><source "
                                         "file='/a/vda.qcow2'/><target dev='vda' bus='virtio'/></disk></devices>"
                                         "</domain>")
    for name in ("vda.qcow2", "vdb.qcow2"):
        (tmp_path / name).write_text("")
    (tmp_path / manifest.MANIFEST).write_text(json.dumps({"format": manifest.FORMAT, "version": 1, "disks": [
        {"key": "vda", "ok": True, "files": ["vda.qcow2"]}, {"key": "vdb", "ok": True, "files": ["vdb.qcow2"]}]}))
    m = machine_of(LocalShell(), str(tmp_path)).machine
    assert [d.origin for d in m.disks] == ["vda"]
    assert [n for n in m.notes if n.startswith("disk vdb is in the backup (vdb.qcow2)")], m.notes


def test_machine_of_takes_each_same_named_disk_from_its_own_datastores_folder(tmp_path):
    """`[ds1] FS/FS.vmdk` and `[ds5] FS/FS.vmdk` (ESXi names the first disk a VM gets on another datastore
    after the VM): the backup keeps the second in `<ds5>/FS.vmdk`. A KVM restore and `verify --boot` read
    the VM through machine_of: each disk must come from its own file, not both from the top's FS.vmdk."""
    from hotvcb.jobs.machine_of import machine_of
    from hotvcb.localshell import LocalShell

    uuid = "5f1e2d3c-aaaaaaaa-bbbb-001122334455"
    (tmp_path / "FS.vmx").write_text('displayName = "FS"\nmemSize = "32"\nscsi0.present = "TRUE"\n'
                                     'scsi0:0.present = "TRUE"\nscsi0:0.fileName = "FS.vmdk"\n'
                                     'scsi0:1.present = "TRUE"\nscsi0:1.fileName = "/vmfs/volumes/%s/FS/FS.vmdk"\n'
                                     % uuid)
    (tmp_path / uuid).mkdir()
    for folder in (tmp_path, tmp_path / uuid):
        (folder / "FS.vmdk").write_text('# Disk DescriptorFile\nversion=1\ncreateType="vmfs"\n'
                                        'RW 2048 VMFS "FS-flat.vmdk"\nddb.adapterType = "lsilogic"\n')
        (folder / "FS-flat.vmdk").write_bytes(b"\0" * (2048 * 512))
    m = machine_of(LocalShell(), str(tmp_path)).machine
    assert [d.source for d in m.disks] == [str(tmp_path / "FS.vmdk"), str(tmp_path / uuid / "FS.vmdk")]


@pytest.mark.parametrize("folder", ["/q", "/" + "d" * 20])
def test_the_start_script_names_the_qmp_socket_short_only_where_the_whole_name_makes_too_long_a_path(tmp_path, request,
                                                                                                   folder):
    """A socket's path holds 107 bytes: an 80-byte name fits a short QMP folder whole (the VM keeps its name
    to `hotvcb --qemu`), and in a longer one the socket is named by qmp_name, its path within the limit."""
    name = "n, " + "ü" * 38 + "x"  # 80 bytes in UTF-8, a comma QEMU needs doubled
    base = tempfile.mkdtemp(prefix="q", dir="/tmp")  # a short folder: tmp_path alone is near the limit
    qmp = base + folder
    request.addfinalizer(lambda: shutil.rmtree(base))
    fake = tmp_path / "qemu"
    fake.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\0" "$a"; done > "$0.args"\n')
    fake.chmod(0o755)
    script = tmp_path / "vm.sh"
    script.write_text(start_script(Machine(name, "0f4c2a56-5d0b-4d6c-9a3e-6c1f0e9d1a11"), [str(fake)]))
    subprocess.run(["sh", str(script)], check=True, timeout=30, env={"PATH": "/usr/bin:/bin", "HOTVCB_QMP_DIR": qmp})
    args = (tmp_path / "qemu.args").read_text().split("\0")
    socket = args[args.index("-qmp") + 1][len("unix:"):-len(",server=on,wait=off")].replace(",,", ",")
    whole = "%s/%s.qmp" % (qmp, name)
    assert socket == (whole if folder == "/q" else "%s/%s.qmp" % (qmp, qmp_name(name)))
    assert len(socket.encode()) <= SOCKET_PATH_MAX and socket.startswith(qmp + "/"), socket


OWN_FILES_XML = """<domain type='kvm'><name>web</name><uuid>6c1b2f0e-8d7a-4c11-9e3b-2a5f0c9d1e77</uuid>
<memory unit='MiB'>512</memory><vcpu>1</vcpu><devices>
<disk type='file' device='disk'><source file='/img/web.qcow2'/><target dev='vda' bus='virtio'/></disk>
<serial type='file'><source path='/var/log/web/console.log'/><log file='/var/log/web/serial.log'/>
<target port='0'/></serial>
<console type='file'><source path='/var/log/web/console.log'/><target type='serial' port='0'/></console>
<channel type='unix'><source mode='bind' path='/var/lib/libvirt/qemu/channel/target/web.agent'/>
<target type='virtio' name='org.qemu.guest_agent.0'/></channel>
<serial type='unix'><source mode='bind' path='/run/web/ttyS1.sock'/><target port='1'/></serial>
<channel type='unix'><source mode='connect' path='/run/other/svc.sock'/><target type='virtio' name='x.y'/></channel>
<serial type='dev'><source path='/dev/ttyS0'/><target port='2'/></serial>
<graphics type='vnc' autoport='no' port='5907' websocket='5707'/>
<graphics type='vnc' socket='/run/web/vnc.sock'><listen type='socket' socket='/run/web/vnc.sock'/></graphics>
<tpm model='tpm-crb'><backend type='emulator' version='2.0'><source type='dir' path='/var/lib/web-tpm'/>
</backend></tpm>
</devices></domain>"""


def test_a_copy_gets_files_sockets_and_ports_of_its_own_its_own_name_keeps_the_originals():
    """A copy started beside the original could not open the serial log virtlogd holds for it (or, the original
    off, wrote into it), nor bind its sockets and VNC port: a copy's are its own; under its own name all stay."""
    import xml.etree.ElementTree as ET

    def resolve(dev, src):
        return ("/r/%s/vda.qcow2" % name, "qcow2")

    for name in ("web", "web copy"):
        m = domain_xml.machine_from_xml(OWN_FILES_XML, "d.xml", resolve)
        renamed(m, name, False)
        out = domain_xml.render(m, OWN_FILES_XML)
        if name == "web":
            for kept in ("/var/log/web/console.log", "/var/log/web/serial.log", "web.agent", "5907", "vnc.sock",
                         "/var/lib/web-tpm", '"/run/web/ttyS1.sock"'):
                assert kept in out, (kept, out)
            continue
        root = ET.fromstring(out)
        assert [s.get("path") for s in root.findall("devices/serial/source")] == [
            "/r/web copy/serial0.log", "/run/web/web copy-ttyS1.sock", "/dev/ttyS0"], out
        assert root.find("devices/serial/log").get("file") == "/r/web copy/serial0.chardev.log"
        assert root.find("devices/console/source").get("path") == "/r/web copy/serial0.log"  # serial 0's twin
        agent, other = root.findall("devices/channel/source")
        assert agent.get("path") is None and agent.get("mode") == "bind" and other.get("path") == "/run/other/svc.sock"
        fixed, sock = root.findall("devices/graphics")
        assert fixed.get("autoport") == "yes" and fixed.get("port") is None and fixed.get("websocket") == "-1"
        assert sock.get("socket") is None and sock.find("listen").attrib == {"type": "socket"}
        assert root.find("devices/tpm/backend/source") is None and "/var/log/web" not in out
