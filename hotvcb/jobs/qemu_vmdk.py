"""A backup's VMDK disk as qemu is handed it (restore --kvm, verify --boot): read at VMware's size.

qemu reads some descriptors VMware reads fine as another disk: a blank line right
before an extent line reads that extent twice (vmdk.for_qemu). So a chain whose
text descriptors have such lines is handed to qemu as normalised copies in a
work folder of the caller's (extents, and a hint to a parent not copied, by
absolute path into the backup), and whatever qemu then opens is held to each
descriptor's capacity before anything is written: a layer qemu-img reads at
another size is refused in one line naming it, never converted or booted.
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
    folder, top = path.rsplit("/", 1)[0], path
    copies = []  # type: List[Tuple[str, str]]  # the text descriptors atop the chain, normalised
    for link, t in chain:  # a sparse extent's hint is in its own file: it and what it names are read as they are
        fixed = _normalised(t)
        if fixed is None:
            break
        copies.append((link, fixed))
    if any(fixed != t for (_l, fixed), (_p, t) in zip(copies, chain)):
        shell.makedirs(work)
        for i, (link, fixed) in enumerate(copies):  # each hint to a parent copied too leads to its copy
            shell.write_text(work + "/" + os.path.basename(link),
                             vmdk.anchored(fixed, folder, parent=i + 1 == len(copies)), sync_folder=False)
        top = work + "/" + os.path.basename(path)
    layers = qemuimg.info(shell, top, qemu_img)
    for (link, t), layer in zip(chain, layers):
        want = _capacity(t)
        if want is not None and layer.virtual_size != want:
            raise HotvcbError("%s: qemu-img reads it as a disk of %d bytes, its descriptor gives %d; not reading "
                              "it with qemu" % (link, layer.virtual_size, want))
    return top


def _normalised(text: Optional[str]) -> Optional[str]:
    return None if _capacity(text) is None else vmdk.for_qemu(text or "")


def _capacity(text: Optional[str]) -> Optional[int]:
    """The capacity a text descriptor gives (the sum of its extents); None for a sparse extent or a file
    that is no descriptor."""
    if text is None:
        return None
    try:
        return vmdk.parse(text).capacity
    except vmdk.NotADescriptor:
        return None
