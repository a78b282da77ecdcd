"""The QEMU driver's snapshots found again: our overlays in the VMs' disk chains, their descriptions, the overlays no
disk uses any more (strays) and whether one holds the guest's writes; the overlay files on top of a VM's images.
qemu_overlays.py's Overlays makes and removes them, on top of this."""

import json
from typing import Callable, Dict, List, Set, Tuple

from .. import lazyre
from ..errors import HostError
from ..model import HOLDS_DATA, NO_DATA_FILE, Snapshot, Vm
from ..runid import RECORD_MAX, parse
from ..shell import Shell
from . import qemu_overlay_names as naming  # DEVICE_OVERLAYS read where tests may have pointed it
from .qemu_blockgraph import absolute_names, chain_of
from .qemu_overlay_names import OUR_MARK, OVERLAY_SUFFIX, layer_snapshot, on_device, overlay_name, overlay_path
from .qmp import QmpClient

DESCRIPTION_SUFFIX = ".description"  # beside an overlay: the snapshot's description
MADE_BY = "qmp "  # the description's second line: the QMP socket of the VM whose disk the overlay was on
CLAIM_SUFFIX = "-new"  # `<overlay>.description.<pid>-new`: a run's own copy, linked to the description to claim it
CLAIM_COPY = lazyre.compile(r"\.[0-9]+%s" % CLAIM_SUFFIX)


class OverlayFinder:
    """Overlays' finding of its snapshots (the part that only reads); Overlays.__init__ sets what it uses."""

    shell: Shell
    connect: Callable[[str], QmpClient]
    qemu_img: str
    kept: Set[str]  # orphans kept and named by Overlays.remove

    def snapshots(self, vm: Vm) -> List[Snapshot]:
        """Overlays named `<image>.<name>.qcow2` in the VM's disk chains, one Snapshot per name."""
        with self.connect(vm.ref.vmx_path) as qmp:
            blocks = absolute_names(qmp, qmp.execute("query-block"))
        found = {}  # type: Dict[str, Snapshot]
        used = set()  # type: Set[str]
        for dev in blocks:
            chain = chain_of((dev.get("inserted") or {}).get("image") or {})
            used.update(l.get("filename", "") for l in chain)
            depth = 0
            for i in reversed(range(len(chain))):
                name = layer_snapshot(chain, i)
                if name is None:
                    continue
                if name not in found:
                    found[name] = Snapshot(id=name, name=name, description=self._description(chain[i]["filename"]),
                                           created="", state="", depth=depth)
                depth += 1
        # an overlay of ours the running QEMU does not use: left by a QEMU that died during a backup (then
        # committed by hand, as the log said, or not), named so the leftover check of a dead run removes it
        for name, overlay in self._unused(vm, used):
            if name.startswith(OUR_MARK) and name not in found:
                found[name] = Snapshot(id=name, name=name, description=self._description(overlay), created="",
                                       state="" if self._holds_nothing(overlay) else HOLDS_DATA, depth=0)
        # a description with no overlay: a run killed around its snapshot (_strays); no snapshot on the disks,
        # but its record judges it as that run's, so it goes once that run is provably dead, and not before; one
        # with no record (cut by a power cut, a note) is named by its files, which its id gives
        for name, files in self._strays(vm).items():
            if name not in found:
                found[name] = Snapshot(id=", ".join(files), name=name, description=self._first_line(files[0]),
                                       created="", state=NO_DATA_FILE, depth=0)
        return list(found.values())

    def _strays(self, vm: Vm) -> Dict[str, List[str]]:
        """Snapshot name -> our description files beside the VM's images whose overlay is not there (the
        `.description` first): a run killed after its claim and before QEMU made the overlay, or after the
        commit deleted the overlay and before its description went; or killed while it claimed the name, which
        leaves its own copy, `<overlay>.description.<pid>-new` (_describe)."""
        out = {}  # type: Dict[str, List[str]]
        listed = {}  # type: Dict[str, List[str]]
        for d in vm.disks:
            if not d.path:
                continue
            folder = overlay_path(d.path, "").rsplit("/", 1)[0] or "/"  # the image's, or DEVICE_OVERLAYS
            if folder not in listed:
                listed[folder] = self.shell.listdir(folder) if self.shell.isdir(folder) else []
            for entry in listed[folder]:
                f = folder + "/" + entry
                overlay, sep, rest = f.rpartition(OVERLAY_SUFFIX + DESCRIPTION_SUFFIX)
                overlay += OVERLAY_SUFFIX
                # either stem of a long image name's (qemu_overlay_names.overlay_name): an older hotvcb's too
                name = overlay_name(overlay, d.path) if sep else None
                if name and name.startswith(OUR_MARK) and (rest == "" or CLAIM_COPY.fullmatch(rest)) \
                        and not self.shell.exists(overlay):
                    out.setdefault(name, []).append(f)
        return {name: sorted(files) for name, files in out.items()}

    def _unused(self, vm: Vm, used: Set[str]) -> List[Tuple[str, str]]:
        """(snapshot name, file) of the overlay files beside the VM's images that no disk chain uses: of its
        disks, or of a disk it no longer has (unplugged during a backup) whose description names its QMP socket."""
        out = []  # type: List[Tuple[str, str]]
        for f in self.delta_files(vm):
            if f in used:
                continue
            for d in vm.disks:
                name = overlay_name(f, d.path) if d.path else None
                if name:
                    out.append((name, f))
                    break
        for f in self._described_for(vm, {f for _n, f in out} | used | self.kept):
            out.append((f[:-len(OVERLAY_SUFFIX)].rsplit(".", 1)[1], f))
        return out

    def _described_for(self, vm: Vm, known: Set[str]) -> List[str]:
        """Our overlay files (but `known`) in the folders of the VM's images whose description says this VM's
        QMP socket made them (_describe): the overlay of a disk the VM no longer has (unplugged during a
        backup), which no name of its disks leads to."""
        out = []  # type: List[str]
        folders = {d.path.rsplit("/", 1)[0] or "/" for d in vm.disks if d.path and not on_device(d.path)}
        if self.shell.isdir(naming.DEVICE_OVERLAYS):
            folders.add(naming.DEVICE_OVERLAYS)
        for folder in sorted(folders):
            for entry in self.shell.listdir(folder):
                stem = entry[:-len(OVERLAY_SUFFIX)] if entry.endswith(OVERLAY_SUFFIX) else ""
                f = folder + "/" + entry
                if "." in stem and stem.rsplit(".", 1)[1].startswith(OUR_MARK) and f not in known \
                        and self._made_by(f) == vm.ref.vmx_path:
                    out.append(f)
        return out

    def _made_by(self, overlay: str) -> str:
        """The QMP socket the overlay's description names (_describe), "" if none."""
        try:
            if self.shell.exists(overlay + DESCRIPTION_SUFFIX):
                lines = self.shell.read_regular(overlay + DESCRIPTION_SUFFIX, RECORD_MAX).splitlines()
                return next((l[len(MADE_BY):] for l in lines[1:] if l.startswith(MADE_BY)), "")
        except HostError:
            pass
        return ""

    def _holds_nothing(self, overlay: str) -> bool:
        """No cluster of the overlay's own is allocated (data or zeroes): `qemu-img commit` empties the overlay
        it committed, so deleting it loses nothing; nor has the stub a QEMU killed while making the overlay
        leaves (a qcow2 of size 0, or with no backing file yet: `qemu-img map` shows it at depth 0, present
        nowhere), which no guest ever wrote and `qemu-img commit` refuses. Any doubt (qemu-img fails, its
        backing is gone, an extent says not whether it is present) says no."""
        out = self.shell.run([self.qemu_img, "map", "-U", "--output=json", "-f", "qcow2", overlay], timeout=120)
        if out.returncode != 0:
            return False
        try:
            extents = json.loads(out.output)
        except ValueError:
            return False
        return isinstance(extents, list) and all(
            isinstance(e, dict) and (e.get("depth", 0) > 0 or e.get("present") is False) for e in extents)

    def _description(self, overlay: str) -> str:
        """What create_snapshot was told (the run record), kept beside the overlay: qcow2 has no place for it."""
        return self._first_line(overlay + DESCRIPTION_SUFFIX, "overlay " + overlay)

    def _first_line(self, path: str, missing: str = "") -> str:
        """A description file's first line, the run record (the next line: its VM, _made_by); `missing` if
        there is none or it cannot be read."""
        try:
            if self.shell.exists(path):
                # beside the VM's images, where others may write: a planted FIFO must not hang the run
                text = self.shell.read_regular(path, RECORD_MAX).strip()
                return text.splitlines()[0] if text else text
        except HostError:
            pass
        return missing

    def _run_of(self, path: str) -> str:
        """The run id a description file's record names, "" for none."""
        record = parse(self._first_line(path))
        return record.run if record is not None else ""

    def _holder(self, overlay: str) -> str:
        """The run an overlay's description names, as the admin reads a run, else the description."""
        text = self._description(overlay)
        record = parse(text)
        return str(record) if record is not None else text

    def delta_files(self, vm: Vm) -> List[str]:
        """Overlay files (ours or named like ours) on top of the VM's images, in use or not."""
        found = []
        by_folder = {}  # type: Dict[str, List[str]]
        for d in vm.disks:
            if d.path:
                folder, name = d.path.rsplit("/", 1)
                by_folder.setdefault(folder or "/", []).append(name)
                if on_device(d.path):  # its overlays are in DEVICE_OVERLAYS, named after its whole path
                    by_folder.setdefault(naming.DEVICE_OVERLAYS, []).append(d.path)
        for folder, names in sorted(by_folder.items()):
            if folder == naming.DEVICE_OVERLAYS and not self.shell.isdir(folder):
                continue
            for entry in self.shell.listdir(folder):
                if folder + "/" + entry in self.kept:
                    continue
                if any(overlay_name(folder + "/" + entry, n if n.startswith("/") else folder + "/" + n) for n in names):
                    found.append(folder + "/" + entry)
        return found
