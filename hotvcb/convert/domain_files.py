"""The files, sockets and ports a libvirt domain's XML names as its own, given a copy's instead.

A copy restored under a new name runs beside the original (docs/restore.md). Its XML is the original's
(domain_xml._rewrite), so everything in it that names something one VM holds at a time must change, or the
copy cannot start while the original runs ("Cannot open log file ... Device or resource busy": virtlogd holds
a serial console's file for the original), or, the original off, writes into the original's:

- a character device's file (`<serial|console|parallel|channel|redirdev|smartcard type='file'>
  <source path>`, an `<rng>`'s egd backend too) and its `<log file>`: a file of the copy's in its folder,
  `<device><n>.log` and `<device><n>.chardev.log` (a console that is serial 0's names the same file, and
  gets the same new one);
- a socket QEMU listens on (`type='unix'` `<source mode='bind'>`): a virtio channel's path is dropped, and
  libvirt makes one of the copy's own (as for the guest agent's); any other is put beside the original's
  (a folder QEMU's user may make it in), named after the copy;
- graphics: a VNC/SPICE socket is dropped (libvirt makes the copy's), a fixed port becomes autoport;
- an emulated TPM's state kept at a path of its own (`<backend type='emulator'><source path>`): dropped,
  libvirt keeps the copy's by its new UUID, as it does by default (a fresh TPM: the backup holds none).

Left as they are, as the original's own name keeps them: host devices (`type='dev'`, a passed-through
TPM, `<hostdev>`), pipes and sockets QEMU connects to (another program's), shared folders
(`<filesystem>`, `<shmem>`: shared on purpose), vhost-user ports (the switch names them).
"""

import posixpath
import xml.etree.ElementTree as ET
from typing import Dict

CHAR_DEVICES = ("serial", "parallel", "console", "channel", "redirdev", "smartcard")


def give_own(devices: ET.Element, folder: str, name: str) -> None:
    """Rewrite `devices` (a copy's `<devices>`) so nothing in it is the original's: files into `folder` (the
    copy's, beside its disks), sockets as above; `name` is the copy's, for a socket beside the original's."""
    moved = {}  # type: Dict[str, str]  # the original's path -> the copy's: one device's twin gets the same
    counts = {}  # type: Dict[str, int]
    chars = [(el.tag, el) for el in devices if el.tag in CHAR_DEVICES]
    chars += [("rng", el) for rng in devices.findall("rng") for el in rng.findall("backend[@model='egd']")]
    for tag, el in chars:
        n = counts.get(tag, 0)
        counts[tag] = n + 1
        _char_device(el, "%s/%s%d" % (folder, tag, n), name, moved)
    for graphics in devices.findall("graphics"):
        _graphics(graphics)
    for backend in devices.findall("tpm/backend[@type='emulator']"):
        for source in backend.findall("source"):
            backend.remove(source)


def _char_device(el: ET.Element, stem: str, name: str, moved: Dict[str, str]) -> None:
    kind = el.get("type", "")
    for source in el.findall("source"):
        path = source.get("path", "")
        if not path:
            continue
        if kind == "file":
            source.set("path", moved.setdefault(path, stem + ".log"))
        elif kind == "unix" and source.get("mode") == "bind":
            if el.tag == "channel" and el.find("target[@type='virtio']") is not None:
                del source.attrib["path"]  # libvirt makes the copy's own, under its per-domain folder
            else:
                beside = "%s/%s-%s" % (posixpath.dirname(path), name.replace("/", "_"), posixpath.basename(path))
                source.set("path", moved.setdefault(path, beside))
    for log in el.findall("log"):
        if log.get("file"):
            log.set("file", moved.setdefault(log.get("file", ""), stem + ".chardev.log"))


def _graphics(graphics: ET.Element) -> None:
    """A VNC or SPICE display the copy serves on a socket or port of its own, which libvirt picks."""
    had_socket = graphics.attrib.pop("socket", None) is not None
    listens = graphics.findall("listen[@type='socket']")
    for listen in listens:
        listen.attrib.pop("socket", None)
    if had_socket and not listens:
        ET.SubElement(graphics, "listen", type="socket")
    if graphics.get("autoport") == "no" or graphics.get("port", "-1") != "-1":
        for attr in ("port", "tlsPort"):
            graphics.attrib.pop(attr, None)
        graphics.set("autoport", "yes")
        if graphics.get("websocket"):
            graphics.set("websocket", "-1")  # one of its own too
