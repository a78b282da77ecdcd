"""An ESXi VM's disks as files, and their copies by `vmkfstools -i`.

The ESXi driver (esxi.py) asks hostd through vim-cmd; a disk's copy is
vmkfstools' and the descriptors' business instead, with answers of its own
kept for the run: whether the host's release wants `-a`, whether the
multiextent module is loaded, each base disk's flat extent (read when the VM
is loaded, so telling which copied file equals which source file costs no
second read of a descriptor, over SSH a round trip, after the snapshot).
Copies run through the driver's ScannedShell, so they drop its scans of the
folders they write.
"""

import re
from typing import Callable, Dict, List, Optional, Tuple

from .. import copysilence, vmdk
from ..background import Kept
from ..errors import CopyError, HostError
from ..model import Disk
from ..runlog import RunLog
from ..shell import Shell
from ..sshscripts import killed_by
from ..treeview import ScannedShell
from . import esxi_tree, vimcmd
from .base import Copied

VMKFSTOOLS = "/sbin/vmkfstools"
# what vmkfstools -i prints before it copies: never a reason it stopped
_PREAMBLE = ("Destination disk format:", "Cloning disk ")
FLAT_FORMATS = ("thin", "zeroedthick", "eagerzeroedthick")  # a descriptor and one -flat file


class EsxiDisks:
    def __init__(self, shell: Shell, files: ScannedShell, log: RunLog, release: Callable[[], Tuple[str, str]]):
        """`release` is the driver's kept `vmware -v` answer: (the release line or "", what it printed)."""
        self.shell, self._files, self.log, self._release = shell, files, log, release
        # the log was told the host's release is unknown: once, of all the threads that copy
        self._unknown_said = Kept()  # type: Kept[bool]
        self._multiextent = False
        # base descriptor path -> its one flat VMFS extent (or None), read at load_vm
        self._flat_extent = {}  # type: Dict[str, Optional[str]]

    def loaded(self, path: str, desc: vmdk.Descriptor) -> None:
        """The driver read a disk's descriptor as it loaded its VM: keep what copied_as needs of it."""
        self._flat_extent[path] = _flat_extent(desc)

    def copy(self, disk: Disk, dst: str, fmt: str, progress=None) -> List[str]:
        links = self._chain(disk.path)
        if fmt == "2gbsparse" or _hosted_sparse(links):
            self._load_multiextent()
        argv = [VMKFSTOOLS, "-i", disk.path, "-d", fmt]
        if self._wants_adapter_flag(disk.adapter):
            argv += ["-a", disk.adapter]
        argv.append(dst)

        def watch(fragment: str) -> None:
            pct = vimcmd.clone_percent(fragment)
            if pct is not None and progress is not None:
                progress(pct)

        # vmkfstools prints whole percents: the silence allowed grows with the disk (copysilence). Tethered: one
        # outliving a SIGKILLed hotvcb wrote on (until its next progress line hit the closed pipe, 1 % of the
        # disk later) into the folder the next run's cleanup removes, or a restore re-clones into
        silence = copysilence.allowed(links[0][1].capacity if links else 0)
        out = self._files.run_tethered(argv, timeout=None, idle_timeout=silence, on_output=watch)
        if out.returncode != 0:
            raise CopyError(disk.path, _clone_error(out.output, out.returncode), dst)
        return [f.rsplit("/", 1)[-1] for f in self.files(dst)]

    def copied_as(self, disk: Disk, dst: str, fmt: str) -> Optional[Copied]:
        """A base disk of one flat VMFS extent, cloned to a flat format: the copy's -flat file
        holds the extent's bytes (the snapshot holds the base still; a parent of a snapshot
        chain is opened read-only, so it can be read while the clone reads it)."""
        extent = self._flat_extent.get(disk.path)
        if fmt not in FLAT_FORMATS or extent is None:
            return None
        return Copied(disk.path.rsplit("/", 1)[0] + "/" + extent, vmdk.flat_beside(dst))

    def _wants_adapter_flag(self, adapter: str) -> bool:
        """vmkfstools ignores (and warns about) -a from ESXi 6.5 on, and older hosts need it for the
        copy's adapter type: a host whose release is unknown gets it too, the one choice safe on both."""
        line, said = self._release()
        version = vimcmd.parse_version(line)

        def say() -> bool:
            self.log.warning("the host's ESXi release is unknown (`vmware -v` printed %r, not \"VMware ESXi X.Y.Z "
                             "build-N\"): vmkfstools is given -a %s as ESXi before 6.5 needs (later releases ignore "
                             "it with a warning)" % (said[:100], adapter))
            return True
        if version is None:
            self._unknown_said.get(say)
        return version is None or version[:2] < (6, 5)

    def _chain(self, path: str) -> List[Tuple[str, vmdk.Descriptor]]:
        """The disk's chain as the clone will read it, read once for what the copy needs to know of it;
        empty where it cannot be read: that is the clone's own error to tell."""
        try:
            return esxi_tree.chain(self._files, path, path.rsplit("/", 1)[-1])
        except HostError:
            return []

    def _load_multiextent(self) -> None:
        """vmkfstools opens 2gbsparse (hosted sparse) disks only with the multiextent module,
        which ESXi 5.1+ do not load at boot; as ghettoVCB does, load it when the list lacks it, or lists it
        as not loaded (its "Is Loaded" column: a module the host knows of, as the API's KernelModuleInfo
        has `loaded` beside `enabled`)."""
        if self._multiextent:
            return
        listed = self.shell.run(["/sbin/esxcli", "system", "module", "list"], timeout=60)
        # a row whose "Is Loaded" column says false is a module the host knows of but has not loaded
        row = re.search(r"^multiextent\s+(\S+)", listed.output, re.M)
        if row is None or row.group(1).lower() == "false":
            self._files.run(["/sbin/esxcli", "system", "module", "load", "-m", "multiextent"], timeout=60)
        self._multiextent = True  # a failed load shows up as the clone's own error

    def files(self, descriptor_path: str) -> List[str]:
        return _files_of([(descriptor_path, vmdk.parse(esxi_tree.descriptor_text(self._files, descriptor_path)))])

    def bytes_needed(self, disk: Disk, fmt: str) -> int:
        """Room the clone needs: thick formats take the full capacity. A sparse copy takes what the chain
        allocates, except over a virtual-mode RDM: its mapping file's allocation says nothing of the LUN
        (next to none on VMFS, or all of it), and the clone writes the LUN's data, up to its whole size,
        which is the one bound the host gives."""
        links = esxi_tree.chain(self._files, disk.path, disk.path.rsplit("/", 1)[-1])
        files = _files_of(links)
        if fmt in ("thin", "2gbsparse") and not any(desc.is_rdm for _link, desc in links):
            return sum(self._files.disk_usage(f) for f in files if self._files.exists(f))
        return links[0][1].capacity or sum(self._files.file_size(f) for f in files)

    def chain_files(self, path: str) -> List[str]:
        """Every file of the disk's chain, each checked to be there (BrokenChain names the gap)."""
        return _files_of(esxi_tree.chain(self._files, path, path.rsplit("/", 1)[-1]))


def _files_of(links: List[Tuple[str, vmdk.Descriptor]]) -> List[str]:
    """Each descriptor of a chain (esxi_tree.chain, read once) and the extents it names."""
    return [f for link, desc in links
            for f in [link] + [link.rsplit("/", 1)[0] + "/" + e.filename for e in desc.extents]]


def _hosted_sparse(links: List[Tuple[str, vmdk.Descriptor]]) -> bool:
    """A 2gbsparse disk, or a monolithicSparse one (one hosted sparse extent, its descriptor embedded in
    its first sectors), anywhere in the disk's chain: the clone opens every link, so a snapshot's delta
    over a 2gbsparse base (the admin's own snapshot, or a restore's checked chain) needs the multiextent
    module as the base would."""
    return any(desc.create_type.lower() in ("twogbmaxextentsparse", "monolithicsparse") for _l, desc in links)


def _flat_extent(desc: vmdk.Descriptor) -> Optional[str]:
    """The file of a base disk's one flat VMFS extent in its own folder, else None."""
    if desc.create_type.lower() != "vmfs" or desc.is_delta or len(desc.extents) != 1:
        return None
    extent = desc.extents[0]
    return extent.filename if extent.kind == "VMFS" and "/" not in extent.filename else None


def _clone_error(output: str, status: int) -> str:
    """vmkfstools' own "Failed to ..." line; else its last line that is no progress or preamble, with its
    exit status. A clone may stop with no reason at all (ESXi 8.0b stopped at "Clone: 18% done." and
    exited 1, ghettoVCB issue 285): its last progress line is then where it stopped, never the cause."""
    m = re.search(r"(Failed to (?:clone disk|open)[^\r\n]*)", output)
    if m:
        return m.group(1).strip()
    lines = [l.strip() for l in re.split(r"[\r\n]+", output) if l.strip()]
    said = [l for l in lines if vimcmd.clone_percent(l) is None and not l.startswith(_PREAMBLE)]
    # it runs under the wrapper (tether.py, SSH mode): a signal's status (128+N from the wrapper, -N when the
    # local wrapper's sh was killed itself) read as vmkfstools' own code would mislead
    killed = killed_by(status)
    how = "was killed by %s" % killed if killed else "exited with status %d" % status
    if said:
        return "vmkfstools %s: %s" % (how, said[-1])
    pct = vimcmd.clone_percent(output)
    where = " at %d%%" % pct if pct is not None else ""
    return "vmkfstools %s%s without saying why" % (how, where)
