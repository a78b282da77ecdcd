"""Reading a libvirt pull-mode backup's NBD export with qemu-img: the whole disk, or only its dirty clusters.

libvirt exports each disk at the instant `backup-begin` returned, on a unix
socket, and for an incremental backup also the dirty bitmap since the
checkpoint named (`qemu:dirty-bitmap:<exportbitmap>`). qemu-img's NBD client
reads that bitmap as the image's allocation map: `qemu-img map` with
`x-dirty-bitmap` reports a dirty extent as "data": false (a hole in NBD's
terms), a clean one as "data": true. No NBD library is needed, so the host
needs nothing but qemu-img.

An incremental copy is a qcow2 overlay whose backing file is the previous
backup's disk (a relative path, so the backup folder can move as a whole),
into which each dirty extent is copied by one bounded `qemu-img convert -n`
of that byte range (`raw` with offset/size on both sides). Clean clusters are
never read.
"""

import json
from typing import Callable, List, Optional, Tuple

from ..errors import CopyError, HostError
from ..shell import Shell
from . import qemuimg

Range = Tuple[int, int]  # (offset, length) in bytes


def export_uri(socket: str, export: str) -> str:
    return "nbd+unix:///%s?socket=%s" % (export, socket)


def _nbd_opts(socket: str, export: str, prefix: str = "") -> str:
    return "{p}driver=nbd,{p}server.type=unix,{p}server.path={s},{p}export={e}".format(
        p=prefix, s=_escape(socket), e=_escape(export))


def _escape(value: str) -> str:
    """A value inside qemu's key=value,... option syntax (a comma is doubled)."""
    return value.replace(",", ",,")


def dirty_ranges(shell: Shell, socket: str, export: str, bitmap: str, qemu_img: str = qemuimg.QEMU_IMG) -> List[Range]:
    """The extents the bitmap marks dirty, adjacent ones merged."""
    spec = _nbd_opts(socket, export) + ",x-dirty-bitmap=qemu:dirty-bitmap:" + _escape(bitmap)
    out = shell.run([qemu_img, "map", "--output=json", "--image-opts", spec], timeout=600)
    if out.returncode != 0:
        raise HostError("qemu-img map of the dirty bitmap %s: %s" % (bitmap, qemuimg.error_line(out.output)))
    try:
        extents = json.loads(out.output)
    except ValueError as err:
        raise HostError("qemu-img map of the dirty bitmap %s: output is not JSON" % bitmap) from err
    ranges = []  # type: List[Range]
    for e in extents:
        if e.get("data"):
            continue  # clean
        start, length = int(e["start"]), int(e["length"])
        if ranges and ranges[-1][0] + ranges[-1][1] == start:
            ranges[-1] = (ranges[-1][0], ranges[-1][1] + length)
        else:
            ranges.append((start, length))
    return ranges


def copy_incremental(shell: Shell, socket: str, export: str, ranges: List[Range], out: str, backing: str,
                     size: int, progress: Optional[Callable[[int], None]], qemu_img: str = qemuimg.QEMU_IMG) -> None:
    """A qcow2 overlay on `backing` (relative to out's folder) holding the dirty ranges; out is removed on failure."""
    create = shell.run([qemu_img, "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", backing, out, str(size)],
                       timeout=120)
    if create.returncode != 0:
        raise CopyError(out, "qemu-img create of the incremental: %s" % qemuimg.error_line(create.output), out)
    total, done = sum(l for _o, l in ranges) or 1, 0
    try:
        for offset, length in ranges:
            argv = [qemu_img, "convert", "-n", "--image-opts", "--target-image-opts",
                    "driver=raw,offset=%d,size=%d,%s" % (offset, length, _nbd_opts(socket, export, "file.")),
                    "driver=raw,offset=%d,size=%d,file.driver=qcow2,file.file.driver=file,file.file.filename=%s"
                    % (offset, length, _escape(out))]
            result = shell.run(argv, timeout=None, idle_timeout=1800)
            if result.returncode != 0:
                raise CopyError(out, "copy of bytes %d+%d: %s" % (offset, length, qemuimg.error_line(result.output)),
                                out)
            done += length
            if progress is not None:
                progress(min(100, done * 100 // total))
    except BaseException:
        shell.remove_tree(out)
        raise
