"""A backup's VMDK disk as qemu is handed it (restore --kvm, verify --boot): read at VMware's size.

qemu reads some descriptors VMware reads fine as another disk: a blank line right
before an extent line reads that extent twice (vmdk.for_qemu), and an extent name
holding a `"` ends at it (_aliases). So a chain one of whose text descriptors has
such lines is handed to qemu from a work folder of the caller's: each text
descriptor a normalised copy, every other file qemu opens (the extents, a sparse
link) a symlink to the backup's, all under their own names (an extent with a
quote under a name without), so the names the descriptors give lead where they led
in the backup. Whatever qemu
then opens is held to each descriptor's capacity before anything is written: a
layer qemu-img reads at another size is refused in one line naming it.
"""

import os
from typing import Dict, List, Optional, Tuple

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
    aliases = _aliases(chain)
    if aliases or any(_parsed(t) is not None and vmdk.for_qemu(t or "") != t for _p, t in chain):
        shell.makedirs(work)
        folder, made = os.path.dirname(os.path.abspath(path)), set()  # type: str, set
        for link, t in chain:
            desc = _parsed(t)
            if desc is not None:
                shell.write_text(work + "/" + os.path.basename(link),
                                 vmdk.for_qemu(vmdk.extents_renamed(t or "", aliases)), sync_folder=False)
            # a sparse extent (its hint inside it), or the extents, checked to be beside
            names = [(link, os.path.basename(link))] if desc is None else [
                (folder + "/" + e.filename, aliases.get(e.filename, os.path.basename(e.filename)))
                for e in desc.extents]
            for name, alias in names:
                if alias not in made:
                    made.add(alias)
                    shell.symlink(os.path.abspath(name), work + "/" + alias)
        top = work + "/" + os.path.basename(path)
    layers = qemuimg.info(shell, top, qemu_img)
    for (link, t), layer in zip(chain, layers):
        desc = _parsed(t)
        if desc is not None and layer.virtual_size != desc.capacity:
            raise HotvcbError("%s: qemu-img reads it as a disk of %d bytes, its descriptor gives %d; not reading "
                              "it with qemu" % (link, layer.virtual_size, desc.capacity))
    return top


def _aliases(chain: List[Tuple[str, Optional[str]]]) -> Dict[str, str]:
    """A name without `"` for each extent whose name has one (a VM called `Web "prod"`: its extent line
    `RW 2048 VMFS "Web "prod"-flat.vmdk"`, which VMware reads to the line's last quote). qemu reads an
    extent's name only up to its first quote (vmdk_parse_extents' sscanf `"%511[^\n\r\"]"`), so it would
    open `Web `; the copy of the descriptor names the extent by a link of this name instead. Unique among
    the chain's names."""
    descriptors = [d for d in (_parsed(t) for _p, t in chain) if d is not None]
    extents = [e.filename for d in descriptors for e in d.extents]
    taken = {os.path.basename(p) for p, _t in chain} | {os.path.basename(e) for e in extents}
    out = {}  # type: Dict[str, str]
    for name in extents:
        if '"' in name and name not in out:
            plain, n = os.path.basename(name).replace('"', "_"), 0
            alias = plain
            while alias in taken:
                n += 1
                alias = "%d-%s" % (n, plain)
            taken.add(alias)
            out[name] = alias
    return out


def _parsed(text: Optional[str]) -> Optional[vmdk.Descriptor]:
    """A text descriptor, parsed; None for a sparse extent or a file that is no descriptor."""
    if text is None:
        return None
    try:
        return vmdk.parse(text)
    except vmdk.NotADescriptor:
        return None
