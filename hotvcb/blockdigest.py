"""Block digests of a file in one pass over its data (manifest version 2).

The file is cut into `block_size` blocks (the last one may be shorter). Each
block gets d_i = SHA-256(block_i); the file's proof is

    sha256_of_blocks = SHA-256(d_0 || d_1 || ... || d_{n-1})   (32-byte digests)

(the SHA-256 of the empty string for an empty file). An all-zero block is not
hashed: its digest is the SHA-256 of that many zero bytes, computed once. So
the proof depends on the content only, never on how the file is allocated: a
hole and a block of written zeros give the same digest.

Holes are skipped without reading where the OS tells where they are
(SEEK_DATA/SEEK_HOLE on a file); elsewhere (a block device: an LV or loop
device holding a VM's raw disk), or when lseek refuses, everything is read
and zero blocks are recognised by one comparison. Each block of data is read
once and hashed once (twice only for version-1 manifests, whose whole-file
SHA-256 is wanted as well).

This module is self-contained (stdlib only, Python 3.8, no package imports)
because its source is also run on a remote host by `python -c` in SSH mode:
`python -c "<this file>" PATH BLOCK_SIZE WHOLE` prints one JSON line (exit
127 from a python older than 3.5, which the caller treats as "no python").
"""

import collections
import errno
import json
import os
import stat
import sys
import threading

ZERO_RUN_CHUNK = 1 << 16  # blocks of zero digests fed to the proof at a time
MAX_THREADS = 4  # hashing threads; SHA-256 of 1 MiB blocks scales to a few cores
SPREAD_AHEAD = 4  # blocks per thread that _digest_spread's threads may take ahead of the digests added


class Digester(object):
    """Accumulates block digests in file order; see the module docstring."""

    def __init__(self, block_size, whole=False, hex_width=16):
        import hashlib  # here, not at import: a run that hashes nothing (list, status) starts without it

        self._sha256 = hashlib.sha256
        self.block_size = block_size
        self.hex_width = hex_width
        self.proof = hashlib.sha256()
        self.whole = hashlib.sha256() if whole else None
        self.parts = []  # hex_width hex digits per block (locates damage)
        self.size = 0
        self._zero = bytes(block_size)
        self._zero_digests = {}  # length -> 32-byte digest of that many zeros

    def zero_digest(self, n):
        d = self._zero_digests.get(n)
        if d is None:
            d = self._zero_digests[n] = self._sha256(self._zero[:n] if n <= self.block_size else bytes(n)).digest()
        return d

    def block_digest(self, block):
        """d_i of one block; touches no running state, so blocks may be hashed in threads."""
        n = len(block)
        zero = self._zero if n == self.block_size else self._zero[:n]
        if block == zero:  # memcmp, stops at the first non-zero byte
            return self.zero_digest(n)
        return self._sha256(block).digest()

    def add(self, block):
        """One block of data (bytes-like, block_size long except the last)."""
        if self.whole is not None:
            self.whole.update(block)
        self.add_digest(self.block_digest(block), len(block))

    def add_digest(self, d, n):
        """The next block's digest, in file order."""
        self.proof.update(d)
        self.parts.append(d.hex()[: self.hex_width])
        self.size += n

    def add_zeros(self, n):
        """n zero bytes starting at a block boundary (a hole): no read, no hash."""
        full, rest = divmod(n, self.block_size)
        if full:
            d = self.zero_digest(self.block_size)
            self.parts.append(d.hex()[: self.hex_width] * full)
            left = full
            while left:
                k = min(left, ZERO_RUN_CHUNK)
                self.proof.update(d * k)
                left -= k
            if self.whole is not None:
                for _ in range(full):
                    self.whole.update(self._zero)
        if rest:
            d = self.zero_digest(rest)
            self.proof.update(d)
            self.parts.append(d.hex()[: self.hex_width])
            if self.whole is not None:
                self.whole.update(self._zero[:rest])
        self.size += n

    def result(self):
        return {
            "size": self.size,
            "sha256_of_blocks": self.proof.hexdigest(),
            "blocks": "".join(self.parts),
            "sha256": self.whole.hexdigest() if self.whole is not None else None,
        }


def _seek(fd, offset, whence, fallback):
    """lseek(SEEK_DATA/SEEK_HOLE); `fallback` where the OS or filesystem cannot tell."""
    if whence is None:
        return fallback
    try:
        return os.lseek(fd, offset, whence)
    except OSError as err:
        if err.errno == errno.ENXIO:  # no data at or after offset
            return None
        return fallback


def file_size(fd):
    """The bytes an open file or block device holds: a block device's st_size is 0 (an LV or loop
    device behind a disk's symlink would read as an empty disk), so it is measured by seeking to its end."""
    st = os.fstat(fd)
    if stat.S_ISBLK(st.st_mode):
        return os.lseek(fd, 0, os.SEEK_END)
    return st.st_size


def _spans(fd, block_size, check=None):
    """Yield (offset, length, data) from offset 0 to EOF without reading: `data` False for a run of
    whole zero blocks the OS reports as a hole (`length` covers the run), True for one block to read
    (block_size long except the last). `check()` is called before each."""
    size = file_size(fd)
    # a block device has no holes to report: Linux calls all of it data, another OS may refuse
    device = stat.S_ISBLK(os.fstat(fd).st_mode)
    seek_data = None if device else getattr(os, "SEEK_DATA", None)
    seek_hole = None if device else getattr(os, "SEEK_HOLE", None)
    off = 0
    data_end = 0  # [off, data_end) is known to hold data
    while off < size:
        if check is not None:
            check()
        if off >= data_end:
            start = _seek(fd, off, seek_data, off)
            if start is None or start >= size:
                start = size
            if start - off >= block_size or start == size:
                # whole zero blocks up to the block that holds the next data
                end = size if start == size else start - start % block_size
                yield off, end - off, False
                off = end
                continue
            end = _seek(fd, start, seek_hole, size)
            data_end = size if end is None else min(max(end, off + 1), size)
        length = min(block_size, size - off)
        yield off, length, True
        off += length


def read_blocks(f, block_size, check=None, fresh=False, ring=1):
    """Yield (offset, length, data) over an open binary file from offset 0 to EOF.

    `data` is None for a run of whole zero blocks the OS reports as a hole
    (`length` then covers the run; it is never read), else one block of what
    was read (block_size long except the last; it may still be all zeros).
    The same buffer is reused for every block unless `fresh`; with `ring` > 1,
    `ring` buffers in turn (a block's data stays valid while the next ring-1
    are read: the reader hands blocks to other threads). `check()` is
    called between blocks (to raise on an interrupt). The repository's chunker
    reads disks through this too (hotvcb/repo/writer.py).
    """
    fd = f.fileno()
    bufs = [bytearray(block_size) for _ in range(max(1, ring))]
    turn = 0
    for off, length, data in _spans(fd, block_size, check):
        if not data:
            yield off, length, None
            continue
        if fresh:
            buf = bytearray(block_size)
        else:
            buf, turn = bufs[turn], (turn + 1) % len(bufs)
        view = memoryview(buf)
        os.lseek(fd, off, os.SEEK_SET)  # _spans' SEEK_DATA/SEEK_HOLE move the file's position
        got = 0
        while got < length:
            n = f.readinto(view[got:length])
            if not n:
                break
            got += n
        if got == 0:
            return  # the file shrank while we read it
        yield off, got, buf if got == block_size else bytes(view[:got])
        if got < length:
            return


def digest_fd(f, block_size, whole=False, on_block=None, check=None, threads=None):
    """Digest an open binary file (raw or buffered) from offset 0 to EOF (see digest_blocks).

    With more than one thread, each thread reads a block and hashes it itself
    (_digest_spread): no block is handed from a reader to a hasher, so none
    crosses between cores. Handing them over (digest_blocks' pool) cost ~30 %
    more CPU per GiB here, paid beside the copy a source digest runs with
    (bench/qemu_parts.py, bench/README.md). A file of one block (a .vmx,
    .nvram, descriptor) has nothing to hash beside that block: it is hashed in
    this thread, with no thread to start (every backup seals a few such files);
    so is a version-1 whole-file SHA-256, one sequential hash.
    """
    if threads is None:
        threads = 1 if file_size(f.fileno()) <= block_size else min(MAX_THREADS, os.cpu_count() or 1)
    if threads > 1 and not whole:
        return _digest_spread(f.fileno(), block_size, on_block, check, threads)
    return digest_blocks(lambda ring: read_blocks(f, block_size, check, ring=ring), block_size, whole, on_block, 1)


def _pread(fd, length, offset):
    """Up to `length` bytes at `offset`; fewer only at EOF. No file position is used, so threads share
    the descriptor."""
    parts = []
    got = 0
    while got < length:
        chunk = os.pread(fd, length - got, offset + got)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _digest_spread(fd, block_size, on_block, check, threads):
    """digest_fd's digests, `threads` threads each taking the next block (or hole run) of the file,
    reading and hashing it, at most SPREAD_AHEAD blocks per thread ahead of this thread, which adds
    the digests in file order, reports progress and calls `check()` before each."""
    dig = Digester(block_size)
    spans = _spans(fd, block_size)
    cond = threading.Condition()
    state = {"taken": 0, "added": 0, "end": -1, "stop": False}  # spans taken, digests added, spans in all
    errors = []  # type: list  # what a thread raised
    done = {}  # index -> (digest or None for a hole run, bytes it covers, bytes it should have covered)

    def work():
        try:
            while True:
                with cond:
                    while not state["stop"] and state["taken"] >= state["added"] + SPREAD_AHEAD * threads:
                        cond.wait()
                    if state["stop"] or state["end"] >= 0:
                        return
                    span = next(spans, None)
                    index = state["taken"]
                    if span is None:
                        state["end"] = index
                        cond.notify_all()
                        return
                    state["taken"] += 1
                off, length, data = span
                if data:
                    block = _pread(fd, length, off)
                    result = (dig.block_digest(block) if block else None, len(block), length)
                else:
                    result = (None, length, length)
                with cond:
                    done[index] = result
                    cond.notify_all()
        except BaseException as err:  # OSError from a read, or anything else: the caller raises it
            with cond:
                errors.append(err)
                cond.notify_all()

    workers = [threading.Thread(target=work, name="hotvcb-digest-%d" % i) for i in range(threads)]
    for t in workers:
        t.start()
    try:
        index = 0
        while True:
            if check is not None:
                check()
            with cond:
                while index not in done and not errors and state["end"] != index:
                    cond.wait()
                if errors:
                    raise errors[0]
                if index not in done:
                    break  # the end of the file
                d, got, length = done.pop(index)
                state["added"] = index = index + 1
                cond.notify_all()
            if d is None and got == length:
                dig.add_zeros(length)
            elif got:
                dig.add_digest(d, got)
            if on_block is not None and got:
                on_block(got)
            if got < length:
                break  # the file shrank while we read it: what read_blocks yields, no more
    finally:
        with cond:
            state["stop"] = True
            cond.notify_all()
        for t in workers:
            t.join()
    return dig.result()


def digest_blocks(blocks, block_size, whole=False, on_block=None, threads=None):
    """Digest what `blocks(ring)` yields: (offset, length, data or None for a run of zero blocks),
    as read_blocks does for a file (qcow2.py for the virtual disk of an image).

    `on_block(n)` is told the bytes covered after each block or hole run.
    The blocks' SHA-256s are independent, so they are computed by `threads`
    threads (one per core, at most MAX_THREADS, by default) while this one
    reads on: hashlib lets go of the GIL while it hashes, and the digest of a
    backup just written, the one read a seal cannot avoid, then takes a
    fraction of one core's time. A version-1 whole-file SHA-256 is one
    sequential hash, so `whole` hashes in this thread.
    """
    dig = Digester(block_size, whole)
    if threads is None:
        threads = min(MAX_THREADS, os.cpu_count() or 1)
    pool_class = _thread_pool() if threads > 1 and not whole else None
    if pool_class is None:
        for _off, length, data in blocks(1):
            if data is None:
                dig.add_zeros(length)
            else:
                dig.add(data)
            if on_block is not None:
                on_block(length)
        return dig.result()
    queued = collections.deque()  # type: collections.deque  # (future digest or None: a hole run, length), in order

    def settle(keep):
        while len(queued) > keep or (queued and (queued[0][0] is None or queued[0][0].done())):
            d, length = queued.popleft()
            if d is None:
                dig.add_zeros(length)
            else:
                dig.add_digest(d.result(), length)
            if on_block is not None:
                on_block(length)

    pool = pool_class(threads)
    try:
        in_flight = 2 * threads  # bounded memory, every thread kept busy
        # a buffer is read into again only after the block it held was settled
        for _off, length, data in blocks(in_flight + 2):
            queued.append((None if data is None else pool.submit(dig.block_digest, data), length))
            settle(in_flight)
        settle(0)
    finally:
        for d, _length in queued:
            if d is not None:
                d.cancel()
        pool.shutdown(wait=True)
    return dig.result()


def open_regular(path, follow=True, block_device=False):
    """`path` opened for reading (unbuffered), or OSError if it is no regular file: a FIFO put where a
    backup's file was would block open() for ever (no signal ends a retried open), a character device
    never ends. With follow=False a symlink is refused too (ELOOP). With block_device=True a block
    device is taken as well: a VM's disk may be an LV or a loop device, which ends (file_size).

    The file object owns the descriptor from the instant it exists, and nothing else ever closes it: a
    signal handler that raises (prune's SIGTERM, Ctrl-C) may strike between any two steps here, and a
    second close of the number fails with EBADF (hiding the signal) or, once another thread's open has
    reused it, closes that thread's file."""
    extra = getattr(os, "O_NONBLOCK", 0) | (0 if follow else os.O_NOFOLLOW)  # no effect on a regular file
    try:
        f = open(path, "rb", buffering=0, opener=lambda name, flags: os.open(name, flags | extra))
    except IsADirectoryError:  # refused by the file object itself: said as for any other non-file
        raise OSError(errno.EINVAL, "not a regular file") from None
    try:
        mode = os.fstat(f.fileno()).st_mode
        if not (stat.S_ISREG(mode) or block_device and stat.S_ISBLK(mode)):
            raise OSError(errno.EINVAL, "not a regular file")
        if stat.S_ISBLK(mode):
            os.set_blocking(f.fileno(), True)  # O_NONBLOCK was for a FIFO's open; a device's reads must wait
        return f
    except BaseException:
        f.close()
        raise


def _thread_pool():
    """concurrent.futures' pool, imported only when used; None from a python without it (this file
    also runs with a host's own python in SSH mode, which need not have the whole standard library)."""
    try:
        from concurrent.futures import ThreadPoolExecutor
    except ImportError:
        return None
    return ThreadPoolExecutor


def digest_read(read, block_size, whole=False, on_block=None, check=None):
    """Digest what `read(n)` returns until b"" (a pipe, a tar member): no holes, zero blocks still skipped."""
    dig = Digester(block_size, whole)
    while True:
        if check is not None:
            check()
        chunks = []
        want = block_size
        while want > 0:
            data = read(want)
            if not data:
                break
            chunks.append(data)
            want -= len(data)
        block = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if not block:
            break
        dig.add(block)
        if on_block is not None:
            on_block(len(block))
        if want > 0:
            break
    return dig.result()


def main(argv):
    """`PATH BLOCK_SIZE WHOLE(0|1)` -> one JSON line (run on the host in SSH mode)."""
    path, block_size, whole = argv[0], int(argv[1]), argv[2] == "1"
    try:
        with open_regular(path, block_device=True) as f:
            out = digest_fd(f, block_size, whole)
    except OSError as err:
        sys.stdout.write(json.dumps({"error": err.strerror or str(err)}) + "\n")
        return 1
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    if sys.version_info < (3, 5):
        sys.exit(127)  # e.g. python 2 as `python` on an old host: the caller falls back to sha256sum
    sys.exit(main(sys.argv[1:]))
