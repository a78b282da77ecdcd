"""Block digests hashed by several threads give the manifest's definition, and stop cleanly."""

import hashlib
import os
import sys
import threading

import pytest

from hotvcb import blockdigest

MIB = 1 << 20


def proof_of(data, block=MIB):
    """sha256_of_blocks as docs/backup-format.md defines it, by the slowest obvious route."""
    return hashlib.sha256(b"".join(hashlib.sha256(data[i: i + block]).digest()
                                   for i in range(0, len(data), block))).hexdigest()


def mixed_file(path):
    """Data (more blocks than the reader's ring of buffers), written zeros, a hole of several blocks,
    data across a block edge, a short last block."""
    with open(str(path), "wb") as f:
        f.write(os.urandom(12 * MIB + 17))
        f.write(bytes(2 * MIB))
        f.seek(18 * MIB - 5)
        f.write(os.urandom(MIB))
        f.write(os.urandom(MIB // 3))
    return path.read_bytes()


@pytest.mark.parametrize("threads", [2, 3])
def test_threads_give_the_one_thread_digest(tmp_path, threads):
    data = mixed_file(tmp_path / "disk")
    with open(str(tmp_path / "disk"), "rb", buffering=0) as f:
        alone = blockdigest.digest_fd(f, MIB, threads=1)
    seen = []
    with open(str(tmp_path / "disk"), "rb", buffering=0) as f:
        shared = blockdigest.digest_fd(f, MIB, on_block=seen.append, threads=threads)
    assert shared == alone
    assert shared["sha256_of_blocks"] == proof_of(data)
    assert shared["size"] == len(data) == sum(seen)
    assert len(shared["blocks"]) == 16 * -(-len(data) // MIB)


def test_an_interrupt_mid_file_stops_every_hashing_thread(tmp_path):
    mixed_file(tmp_path / "disk")
    before = set(threading.enumerate())
    calls = []

    def check():
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt  # what interrupt.raise_pending does, as far as the reader sees

    with open(str(tmp_path / "disk"), "rb", buffering=0) as f:
        with pytest.raises(KeyboardInterrupt):
            blockdigest.digest_fd(f, MIB, check=check, threads=3)
    assert len(calls) == 4
    assert set(threading.enumerate()) == before


def test_a_python_without_concurrent_futures_digests_in_one_thread(tmp_path, monkeypatch):
    """blockdigest.py also runs with a host's own python (SSH mode), whose standard library may be trimmed."""
    data = mixed_file(tmp_path / "disk")
    monkeypatch.setitem(sys.modules, "concurrent.futures", None)  # its import now fails
    before = set(threading.enumerate())
    with open(str(tmp_path / "disk"), "rb", buffering=0) as f:
        out = blockdigest.digest_fd(f, MIB, threads=4)
    assert out["sha256_of_blocks"] == proof_of(data) and set(threading.enumerate()) == before


def test_a_file_of_one_block_is_hashed_without_threads_and_a_bigger_one_with_them(tmp_path, monkeypatch):
    started = []

    class Counted(threading.Thread):
        def start(self):
            started.append(self.name)
            super().start()

    monkeypatch.setattr(blockdigest.threading, "Thread", Counted)
    monkeypatch.setattr(blockdigest.os, "cpu_count", lambda: 4)
    for size, threads in ((0, 0), (MIB // 3, 0), (MIB, 0), (MIB + 1, 4)):
        data = os.urandom(size)
        (tmp_path / "f").write_bytes(data)
        with open(str(tmp_path / "f"), "rb", buffering=0) as f:
            got = blockdigest.digest_fd(f, MIB)
        assert len(started) == threads and got["sha256_of_blocks"] == proof_of(data) and got["size"] == size
        started.clear()


def test_a_read_error_in_a_hashing_thread_is_raised_and_every_thread_stops(tmp_path, monkeypatch):
    mixed_file(tmp_path / "disk")
    real = os.pread

    def failing(fd, n, offset):
        if offset >= 5 * MIB:
            raise OSError(5, "Input/output error")
        return real(fd, n, offset)

    monkeypatch.setattr(blockdigest.os, "pread", failing)
    before = set(threading.enumerate())
    with open(str(tmp_path / "disk"), "rb", buffering=0) as f:
        with pytest.raises(OSError, match="Input/output"):
            blockdigest.digest_fd(f, MIB, threads=3)
    assert set(threading.enumerate()) == before


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_a_file_shorter_than_its_size_said_is_digested_up_to_its_end(tmp_path, monkeypatch, threads):
    """The file shrank after its size was taken (a disk truncated under us): the digest covers what
    was there, as the one-thread reader stops at the short read, and says so by its size."""
    data = mixed_file(tmp_path / "disk")
    stated = blockdigest.file_size
    monkeypatch.setattr(blockdigest, "file_size", lambda fd: stated(fd) + 3 * MIB + 11)
    seen = []
    with open(str(tmp_path / "disk"), "rb", buffering=0) as f:
        got = blockdigest.digest_fd(f, MIB, on_block=seen.append, threads=threads)
    assert got["size"] == len(data) == sum(seen)
    assert got["sha256_of_blocks"] == proof_of(data)
