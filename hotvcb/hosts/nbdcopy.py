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
into which the dirty extents are copied by copy-on-read (copy_incremental).
Clean clusters are never read.
"""

import json
from typing import Callable, List, Optional, Tuple

from ..errors import CopyError, HostError
from ..shell import Shell
from . import qemuimg
from .. import copysilence, lazyre

Range = Tuple[int, int]  # (offset, length) in bytes
QEMU_IO = "qemu-io"
READ_MAX = 8 << 20  # qemu-io holds each read in memory
READS_PER_RUN = 2000  # ranges per qemu-io process (its command line)
_READ_DONE = lazyre.compile(r"read (\d+)/\d+ bytes at offset \d+")


def export_uri(socket: str, export: str) -> str:
    return "nbd+unix:///%s?socket=%s" % (export, socket)


def _nbd_opts(socket: str, export: str) -> str:
    return "driver=nbd,server.type=unix,server.path=%s,export=%s" % (_escape(socket), _escape(export))


def _escape(value: str) -> str:
    """A value inside qemu's key=value,... option syntax (a comma is doubled)."""
    return value.replace(",", ",,")


def dirty_ranges(shell: Shell, socket: str, export: str, bitmap: str,
                 qemu_img: str = qemuimg.QEMU_IMG) -> Tuple[List[Range], int]:
    """The extents the bitmap marks dirty, adjacent ones merged, and the export's size (where the
    map, which covers the whole export, ends)."""
    spec = _nbd_opts(socket, export) + ",x-dirty-bitmap=qemu:dirty-bitmap:" + _escape(bitmap)
    out = shell.run([qemu_img, "map", "--output=json", "--image-opts", spec], timeout=600)
    if out.returncode != 0:
        raise HostError("qemu-img map of the dirty bitmap %s: %s" % (bitmap, qemuimg.failure(out)))
    try:
        extents = json.loads(out.output)
    except ValueError as err:
        raise HostError("qemu-img map of the dirty bitmap %s: output is not JSON" % bitmap) from err
    ranges, size = [], 0  # type: List[Range], int
    for e in extents:
        start, length = int(e["start"]), int(e["length"])
        size = max(size, start + length)
        if e.get("data"):
            continue  # clean
        if ranges and ranges[-1][0] + ranges[-1][1] == start:
            ranges[-1] = (ranges[-1][0], ranges[-1][1] + length)
        else:
            ranges.append((start, length))
    if not size:
        raise HostError("qemu-img map of the dirty bitmap %s: no extents" % bitmap)
    return ranges, size


def copy_incremental(shell: Shell, socket: str, export: str, ranges: List[Range], out: str, backing: str,
                     size: int, progress: Optional[Callable[[int], None]], qemu_img: str = qemuimg.QEMU_IMG,
                     qemu_io: str = QEMU_IO) -> None:
    """A qcow2 overlay on `backing` (relative to out's folder) holding the dirty ranges; out is removed on failure.

    The overlay is first made on the NBD export itself, and `qemu-io -C` (copy-on-read) reads each
    dirty range through it, which copies exactly those clusters into it, many ranges per process;
    then its backing file is set to the previous backup's disk (`rebase -u`: the header only).
    """
    create = shell.run([qemu_img, "create", "-q", "-u", "-f", "qcow2", "-F", "raw", "-b", export_uri(socket, export),
                        out, str(size)], timeout=120)
    if create.returncode != 0:
        raise CopyError(out, "qemu-img create of the incremental: %s" % qemuimg.failure(create), out)
    reads = [(o + i, min(READ_MAX, l - i)) for o, l in ranges for i in range(0, l, READ_MAX)]
    total, done = sum(l for _o, l in reads) or 1, [0]

    def watch(fragment: str) -> None:
        m = _READ_DONE.search(fragment)
        if m and progress is not None:
            done[0] += int(m.group(1))
            progress(min(100, done[0] * 100 // total))

    try:
        for first in range(0, len(reads), READS_PER_RUN):
            batch = reads[first: first + READS_PER_RUN]
            argv = [qemu_io, "-C", "-f", "qcow2"]
            for offset, length in batch:
                argv += ["-c", "read %d %d" % (offset, length)]
            # a line per read; stdio may hold a pipe's worth (4 KiB, some 60 lines) back
            silence = copysilence.between(READ_MAX * 64)
            result = shell.run(argv + [out], timeout=None, idle_timeout=silence, on_output=watch)
            copied = len(_READ_DONE.findall(result.output))
            if result.returncode != 0 or copied != len(batch):
                raise CopyError(out, "qemu-io copied %d of %d ranges: %s"
                                % (copied, len(batch), qemuimg.failure(result)), out)
        rebase = shell.run([qemu_img, "rebase", "-u", "-F", "qcow2", "-b", backing, out], timeout=120)
        if rebase.returncode != 0:
            raise CopyError(out, "qemu-img rebase of the incremental: %s" % qemuimg.failure(rebase), out)
    except BaseException:
        shell.remove_tree(out)
        raise
