"""A backup's VMDK disk as qemu is handed it (restore --kvm, verify --boot): read at VMware's size.

qemu reads some descriptors VMware reads fine as another disk: a blank line right
before an extent line reads that extent twice (vmdk.for_qemu). So a chain one of
whose text descriptors has such lines is handed to qemu from a work folder of the
caller's: each text descriptor a normalised copy, every other file qemu opens (the
extents, a sparse link) a symlink to the backup's, all under their own names, so
the names the descriptors give lead where they led in the backup. Whatever qemu
then opens is held to each descriptor's capacity before anything is written: a
layer qemu-img reads at another size is refused in one line naming it.
"""

import os
from typing import List, Optional, Tuple

from .. import vmdk
from ..errors import HotvcbError
from ..hosts import qemuimg
from ..shell import Shell
from . import backup_check


def opened(shell: Shell, path: str, work: str, qemu_img: str = qemuimg.QEMU_IMG) -> str:
    """The path qemu is to open for the backup's VMDK `path`: `path`, or its normalised copy in `work`
    (made here; the caller removes it, after qemu is done). HotvcbError when qemu-img reads a layer of
    the chain at a size other than its descriptor's."""
    text, parents = backup_check.require_chain_inside(shell, path)
    chain = [(path, text)] + parents  # type: List[Tuple[str, Optional[str]]]
    top = path
    if any(_parsed(t) is not None and vmdk.for_qemu(t or "") != t for _p, t in chain):
        shell.makedirs(work)
        folder, made = os.path.dirname(os.path.abspath(path)), set()  # type: str, set
        for link, t in chain:
            desc = _parsed(t)
            if desc is not None:
                shell.write_text(work + "/" + os.path.basename(link), vmdk.for_qemu(t or ""), sync_folder=False)
            names = [link] if desc is None else [folder + "/" + e.filename for e in desc.extents]
            for name in names:  # a sparse extent (its hint inside it), or the extents, checked to be beside
                if os.path.basename(name) not in made:
                    made.add(os.path.basename(name))
                    shell.symlink(os.path.abspath(name), work + "/" + os.path.basename(name))
        top = work + "/" + os.path.basename(path)
    layers = qemuimg.info(shell, top, qemu_img)
    for (link, t), layer in zip(chain, layers):
        desc = _parsed(t)
        if desc is not None and layer.virtual_size != desc.capacity:
            raise HotvcbError("%s: qemu-img reads it as a disk of %d bytes, its descriptor gives %d; not reading "
                              "it with qemu" % (link, layer.virtual_size, desc.capacity))
    return top


def _parsed(text: Optional[str]) -> Optional[vmdk.Descriptor]:
    """A text descriptor, parsed; None for a sparse extent or a file that is no descriptor."""
    if text is None:
        return None
    try:
        return vmdk.parse(text)
    except vmdk.NotADescriptor:
        return None
