"""qemu-img, one small function per use: image info, convert with progress.

DISK_BACKUP_FORMAT names map to qemu-img output formats. The four ESXi names
give VMDKs (what ghettoVCB users restore from); `qcow2` and `raw` are the
natural ones on a KVM host:

    thin              vmdk monolithicFlat, holes kept
    zeroedthick       vmdk monolithicFlat, every block written (-S 0)
    eagerzeroedthick  the same
    2gbsparse         vmdk twoGbMaxExtentSparse
    qcow2, raw        as named (raw keeps holes)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Callable, List, Optional, Set, Tuple

from .. import copysilence, namefit, vmdk
from ..errors import CommandFailed, CopyError, HostError
from ..model import Disk
from ..shell import Completed, OutputCallback, Shell
from ..sshscripts import killed_by
from .. import lazyre

QEMU_IMG = "qemu-img"
FLAT_VMDK = "subformat=monolithicFlat"  # a descriptor and `<stem>-flat.vmdk`, the disk as it is
_PERCENT = lazyre.compile(r"\((\d+(?:\.\d+)?)/100%\)")


@dataclass(frozen=True)
class OutputFormat:
    """How `qemu-img convert` writes a DISK_BACKUP_FORMAT, and the copy's file it gives."""

    driver: str  # qemu-img -O
    options: str  # qemu-img -o ("" for none)
    extension: str  # of the file the backup holds
    thick: bool  # every block allocated


FORMATS = {
    "thin": OutputFormat("vmdk", FLAT_VMDK, ".vmdk", False),
    "zeroedthick": OutputFormat("vmdk", FLAT_VMDK, ".vmdk", True),
    "eagerzeroedthick": OutputFormat("vmdk", FLAT_VMDK, ".vmdk", True),
    "2gbsparse": OutputFormat("vmdk", "subformat=twoGbMaxExtentSparse", ".vmdk", False),
    "qcow2": OutputFormat("qcow2", "", ".qcow2", False),
    "raw": OutputFormat("raw", "", ".raw", False),
}


@dataclass(frozen=True)
class ImageLayer:
    """One image of a disk's backing chain, as `qemu-img info --backing-chain` reports it."""

    filename: str
    format: str
    virtual_size: int
    actual_size: int  # bytes allocated on the host
    backing_filename: str  # "" at the bottom of the chain


def output_format(name: str) -> OutputFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise HostError("disk format %r is not one the QEMU driver writes (%s)"
                        % (name, ", ".join(sorted(FORMATS)))) from None


def info(shell: Shell, path: str, qemu_img: str = QEMU_IMG) -> List[ImageLayer]:
    """`qemu-img info --backing-chain` of an image, top layer first.

    -U (force share): only metadata is read, and a running VM holds a lock
    on its images that would otherwise refuse even that.
    """
    out = shell.run([qemu_img, "info", "-U", "--backing-chain", "--output=json", path], timeout=120)
    check(out)
    try:
        rows = json.loads(out.output)
    except ValueError as err:
        raise HostError("qemu-img info %s: output is not JSON" % path) from err
    if isinstance(rows, dict):
        rows = [rows]
    return [
        ImageLayer(
            filename=r.get("filename", ""),
            format=r.get("format", ""),
            virtual_size=int(r.get("virtual-size", 0)),
            actual_size=int(r.get("actual-size", 0)),
            backing_filename=r.get("full-backing-filename") or r.get("backing-filename") or "",
        )
        for r in rows
    ]


def convert_argv(src: str, src_format: Optional[str], dst: str, fmt: OutputFormat,
                 qemu_img: str = QEMU_IMG, force_share: bool = False) -> List[str]:
    """qemu-img convert with progress; the source format is given, never probed
    (a guest could write a qcow2 header into a raw disk). `force_share` (-U): the caller knows nothing
    changes the source's content while a process holds a write permission on it (copy_to's)."""
    argv = [qemu_img, "convert", "-p"] + (["-U"] if force_share else [])
    if src_format:
        argv += ["-f", src_format]
    argv += ["-O", fmt.driver]
    if fmt.options:
        argv += ["-o", fmt.options]
    if fmt.thick:
        argv += ["-S", "0"]
    return argv + [src, dst]


def percent(fragment: str) -> Optional[int]:
    """The last "(NN.NN/100%)" of a progress fragment, as a whole percent."""
    found = _PERCENT.findall(fragment)
    return int(float(found[-1])) if found else None


def error_line(output: str) -> str:
    lines = [l.strip() for l in re.split(r"[\r\n]+", output) if l.strip() and not _PERCENT.fullmatch(l.strip())]
    return lines[-1] if lines else "qemu-img failed without a message"


def failure(out: Completed) -> str:
    """Why a qemu-img (or qemu-io) run failed: the signal that killed it, else its last line."""
    return _killed(out, _tool(out)) or error_line(out.output)


def check(out: Completed) -> None:
    """Nothing when it exited 0; else CommandFailed, or HostError naming the signal that killed it."""
    if out.returncode == 0:
        return
    killed = _killed(out, "%s %s" % (_tool(out), out.argv[1]))
    if killed:
        raise HostError(killed)
    raise CommandFailed(out.argv, out.returncode, out.output)


def _killed(out: Completed, what: str) -> Optional[str]:
    """"<what> was killed by <signal>", or None. A signal's status is no status of the tool's (killed_by
    reads both forms): read as one ("exit 137") or with the shell's "Killed" as the reason, it hid which
    signal (the OOM killer's SIGKILL, an admin's SIGTERM)."""
    signame = killed_by(out.returncode)
    return "%s was killed by %s" % (what, signame) if signame else None


def _tool(out: Completed) -> str:
    return out.argv[0].rsplit("/", 1)[-1]


def sizes(layers: List[ImageLayer]) -> Tuple[int, int]:
    """(virtual size, bytes allocated by the whole chain)."""
    if not layers:
        return 0, 0
    return layers[0].virtual_size, sum(l.actual_size for l in layers)


def data_size(shell: Shell, path: str, fmt: str, qemu_img: str = QEMU_IMG) -> int:
    """What the image's chain holds as data, uncompressed: `qemu-img measure`'s size of it as an ordinary
    qcow2. A compressed qcow2 (a cloud image, `qemu-img convert -c`) allocates a fraction of that in its
    file, while any copy hotvcb writes holds the data uncompressed. -U: a running VM holds the image."""
    out = shell.run([qemu_img, "measure", "-U", "--output=json", "-f", fmt, "-O", "qcow2", path], timeout=120)
    check(out)
    try:
        return int(json.loads(out.output)["required"])
    except (ValueError, KeyError, TypeError) as err:
        raise HostError("qemu-img measure %s: no required size in its output" % path) from err


def create_overlay(shell: Shell, backing: str, backing_format: str, dst: str, qemu_img: str = QEMU_IMG,
                   size: Optional[int] = None) -> None:
    """A qcow2 on top of `backing`: writes land in dst, the backing file is only read. With `size` (the
    backing's virtual size) the backing is not opened (`-u`): a running QEMU's write lock on it refuses that."""
    unopened = ["-u"] if size is not None else []
    sized = [str(size)] if size is not None else []
    out = shell.run([qemu_img, "create", "-q", "-f", "qcow2", "-F", backing_format, "-b", backing] + unopened
                    + [dst] + sized, timeout=120)
    check(out)


_UNSAFE_NAME = lazyre.compile(r"[^A-Za-z0-9_.-]+")
_IMAGE_EXT = lazyre.compile(r"\.(qcow2|img|raw|vmdk|qed|vdi|vhdx?)$", re.I)
# qemu's VMDK reader takes an extent's name up to the next `"`, CR or LF (block/vmdk.c), and qemu-img
# names the extents after the descriptor: such a character in the stem makes a copy qemu-img refuses
_NOT_IN_VMDK = lazyre.compile(r'["\r\n]')
_EXTENT_SUFFIX = r"(-flat|-s\d{3})?"  # the extents qemu-img writes beside a `<stem>.vmdk` descriptor
_LONGEST_EXTENT = "-flat"  # as long as `-s001`
NAME_TRIES = 100


def output_path(shell: Shell, disk: Disk, dst: str, spec: OutputFormat) -> str:
    """The file copy_to writes: named by dst's stem and the format's extension, that stem followed by the
    disk's key (then a number) where the folder already holds a file this copy would write.

    qemu-img writes over whatever it is told to write, and the names that meet are not only equal
    ones: disks `x-flat.img` and `x.img` copied as flat VMDKs both write `x-flat.vmdk` (one's descriptor,
    the other's extent). The folder (a backup's, filled one disk after the other) is compared without
    case, as plan_disks does (a share may fold it). A stem too long for the copy's files to fit in 255 bytes
    (an image named 250 bytes, no extension: `<name>.qcow2` is 256) is cut and given a digest (namefit.py).
    """
    folder, name = dst.rsplit("/", 1)
    stem = _IMAGE_EXT.sub("", name) or name
    suffix = ""
    if spec.driver == "vmdk":
        stem, suffix = _NOT_IN_VMDK.sub("_", stem), _EXTENT_SUFFIX
    taken = shell.listdir(folder)
    key = _UNSAFE_NAME.sub("-", disk.key).strip("-")
    longest = (_LONGEST_EXTENT if spec.driver == "vmdk" else "") + spec.extension  # of the files the copy writes
    for n in range(NAME_TRIES):
        candidate = stem if n == 0 else "%s-%s" % (stem, key) if n == 1 else "%s-%s-%d" % (stem, key, n)
        candidate = namefit.fit("", candidate, longest)[: -len(longest)]
        writes = re.compile(re.escape(candidate) + suffix + re.escape(spec.extension), re.I)
        if not any(writes.fullmatch(f) for f in taken):
            return "%s/%s%s" % (folder, candidate, spec.extension)
    raise HostError("%s: no free name for the copy of %s after %d tries" % (folder, disk.path, NAME_TRIES))


def convert(shell: Shell, argv: List[str], capacity: int, on_output: Optional[OutputCallback] = None) -> Completed:
    """Run a convert_argv tethered (tether.py), bounded by its silence: `-p` reports whole percents only,
    so the silence allowed grows with `capacity`, the image's virtual size (copysilence)."""
    from .. import tether  # ctypes: for the copies, not every ESXi command that reads a backup
    return tether.run(shell, argv, timeout=None, idle_timeout=copysilence.allowed(capacity), on_output=on_output)


def copy_to(shell: Shell, disk: Disk, src: str, src_format: str, dst: str, fmt: str,
            progress: Optional[Callable[[int], None]], capacity: int, qemu_img: str = QEMU_IMG,
            force_share: bool = False) -> List[str]:
    """qemu-img convert of `src` (`capacity` bytes: its virtual size) to dst's folder, the file named by dst's
    stem and fmt's extension; the names of the files written, the disk file first. `force_share`: as
    convert_argv's.

    qemu-img runs tethered (tether.py): killed with hotvcb, it would go on reading the image under
    our overlay, and the next run could not commit that overlay (qemu-img holds the image's lock).
    An exit 0 is not taken on its word: the files it should have written must be there. On any
    failure (or interruption) the files this copy started are removed again.
    """
    try:
        spec = output_format(fmt)
    except HostError as err:
        raise CopyError(disk.path, str(err), dst) from err
    folder = dst.rsplit("/", 1)[0]
    out = output_path(shell, disk, dst, spec)
    argv = convert_argv(src, src_format, out, spec, qemu_img, force_share)

    def watch(fragment: str) -> None:
        pct = percent(fragment)
        if pct is not None and progress is not None:
            progress(pct)

    before = set(shell.listdir(folder))
    try:
        result = convert(shell, argv, capacity, watch)
        if result.returncode != 0:
            raise CopyError(disk.path, failure(result), out)
        made = set(shell.listdir(folder)) - before
        missing = [f for f in _written(shell, disk, out, spec, made) if f not in made]
        if missing:
            raise CopyError(disk.path, "qemu-img exited 0 but wrote no %s" % ", ".join(missing), out)
    except BaseException:
        for f in set(shell.listdir(folder)) - before:
            shell.remove_tree(folder + "/" + f)
        raise
    first = out.rsplit("/", 1)[-1]
    return sorted(made, key=lambda f: (f != first, f))


def _written(shell: Shell, disk: Disk, out: str, spec: OutputFormat, made: Set[str]) -> List[str]:
    """The names a copy to `out` consists of: the file, and a VMDK descriptor's extents."""
    first = out.rsplit("/", 1)[-1]
    if spec.driver != "vmdk" or first not in made:
        return [first]
    try:
        return [first] + [e.filename for e in vmdk.parse(shell.read_text(out)).extents]
    except vmdk.NotADescriptor as err:
        raise CopyError(disk.path, "qemu-img wrote no VMDK descriptor: %s" % err, out) from err
