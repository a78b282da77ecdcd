"""What each step of a repository backup costs per byte, per kind of data (a measurement, no target).

Corpora in 64 KiB chunks: the repository benchmark's text-like data and random data
(bench/repository.py's generators), and something real: a tar of /usr/share/doc, /usr/bin and
/usr/lib (what a Linux guest's disk holds: text, ELF binaries, already-compressed files). For each,
the CPU-seconds (one thread, thread_time, best of ROUNDS) and stored / raw of SHA-256 and of each
zlib setting the stdlib can write as a standard zlib stream, and how the codec's probe sorts the
chunks: stored raw without compressing, compressed, and of those how many end up raw anyway (the
probe's false "compressible": paid for nothing), and how many it sent raw that would have shrunk
(its false "random": bytes lost). `-n MIB` sizes each corpus (default 64).
"""

import hashlib
import os
import random
import subprocess
import sys
import time
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))
from hotvcb.repo import codec  # noqa: E402
from repository import text  # noqa: E402

MIB = 1 << 20
CHUNK = 64 << 10
ROUNDS = 3
SIZE = int(sys.argv[sys.argv.index("-n") + 1]) * MIB if "-n" in sys.argv else 64 * MIB


def corpora():
    rnd = random.Random(1)
    yield "bench text-like", text(rnd, SIZE)
    yield "bench random", rnd.randbytes(SIZE)
    yield "tar of /usr/share/doc, /usr/bin, /usr/lib (a third each)", b"".join(tar(d, SIZE // 3) for d in REAL)


REAL = ("/usr/share/doc", "/usr/bin", "/usr/lib/x86_64-linux-gnu")


def tar(folder, n):
    """The first n bytes of a tar of folder (what a guest's disk holds: text, ELF, compressed files)."""
    proc = subprocess.Popen(["tar", "-cf", "-", folder], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    data = proc.stdout.read(n)
    proc.kill()
    proc.wait()
    return data


def deflate(level, strategy, mem=8):
    def run(chunk):
        z = zlib.compressobj(level, zlib.DEFLATED, 15, mem, strategy)
        return len(z.compress(chunk) + z.flush())
    return run


STEPS = [
    ("SHA-256", lambda c: len(c) and hashlib.sha256(c).digest() and 0),
    ("zlib level 1, default strategy", deflate(1, zlib.Z_DEFAULT_STRATEGY)),
    ("zlib level 1, Z_FILTERED", deflate(1, zlib.Z_FILTERED)),
    ("zlib Z_RLE (the codec's)", deflate(1, zlib.Z_RLE)),
    ("zlib Z_RLE, memLevel 9", deflate(1, zlib.Z_RLE, 9)),
    ("zlib Z_HUFFMAN_ONLY", deflate(1, zlib.Z_HUFFMAN_ONLY)),
    ("zlib Z_HUFFMAN_ONLY, memLevel 9", deflate(1, zlib.Z_HUFFMAN_ONLY, 9)),
    ("codec.encode (probe, then Z_RLE)", lambda c: len(codec.encode(c)[1])),
]


def cost(fn, chunks):
    best, stored = float("inf"), 0
    for _ in range(ROUNDS):
        t0 = time.thread_time()
        stored = sum(fn(c) for c in chunks)
        best = min(best, time.thread_time() - t0)
    return best, stored


def probe(size, parts):
    """A probe of `size` bytes taken as `parts` equal pieces spread over the chunk, compressed as one stream:
    True when they look random (do not shrink by 1/32)."""
    def looks_random(chunk):
        z = zlib.compressobj(1, zlib.DEFLATED, 15, 8, zlib.Z_RLE)
        piece, step = size // parts, len(chunk) // parts
        n = sum(len(z.compress(chunk[i * step:i * step + piece])) for i in range(parts)) + len(z.flush())
        return n > size - size // 32
    return looks_random


PROBES = [("4 KiB at the start (the codec's)", probe(4096, 1)), ("2 KiB at the start", probe(2048, 1)),
          ("1 KiB at the start", probe(1024, 1)), ("2 x 2 KiB (start, middle)", probe(4096, 2)),
          ("4 x 1 KiB spread", probe(4096, 4)), ("4 x 512 B spread", probe(2048, 4))]


def probe_sort(chunks, looks_random):
    """CPU-s of the probes alone, and how they sort: (sent raw, compressed, of those stored raw anyway,
    sent raw though they would shrink, bytes those would have saved)."""
    whole = deflate(1, zlib.Z_RLE)
    t0 = time.thread_time()
    verdicts = [looks_random(c) for c in chunks]
    secs = time.thread_time() - t0
    raw = comp = wasted = lost = saved = 0
    for c, says_random in zip(chunks, verdicts):
        size = whole(c)
        shrinks = size <= len(c) - len(c) // 32
        if says_random:
            raw += 1
            lost += shrinks
            saved += len(c) - size if shrinks else 0
        else:
            comp += 1
            wasted += not shrinks
    return secs, raw, comp, wasted, lost, saved


def main():
    print("load %.1f; %s; zlib %s" % (os.getloadavg()[0], sys.version.split()[0], zlib.ZLIB_RUNTIME_VERSION))
    for name, data in corpora():
        chunks = [memoryview(data)[i:i + CHUNK] for i in range(0, len(data), CHUNK)]
        chunks = [c for c in chunks if len(c) == CHUNK and c != bytes(CHUNK)]
        total = len(chunks) * CHUNK
        print("\n%s: %d MiB in %d chunks of 64 KiB\n" % (name, total // MIB, len(chunks)))
        print("| step | CPU-s per GiB | MB/s | stored / raw |\n|---|---|---|---|")
        for label, fn in STEPS:
            secs, stored = cost(fn, chunks)
            print("| %s | %.2f | %.0f | %s |" % (label, secs * (1 << 30) / total, total / secs / 1e6,
                                               "%.3f" % (stored / total) if stored else "-"))
        print("\n| probe | its CPU-s per GiB | sent raw | compressed (stored raw anyway) | sent raw that would shrink "
              "(MiB they would save) |\n|---|---|---|---|---|")
        for label, looks_random in PROBES:
            secs, raw, comp, wasted, lost, saved = probe_sort(chunks, looks_random)
            print("| %s | %.2f | %d | %d (%d) | %d (%.1f) |" % (label, secs * (1 << 30) / total, raw, comp, wasted,
                                                              lost, saved / MIB))


if __name__ == "__main__":
    main()
