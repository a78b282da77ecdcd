"""Where a QEMU backup as qcow2 spends its time, part by part (issue 8's last row).

`issue8.py qemu` compares a whole `hotvcb --qemu backup` with `qemu-img convert`.
This takes the run apart on the same image (4 GiB virtual / 1 GiB random data,
raw, warm page cache) and times each part alone, interleaved round by round,
`sync` (untimed) before each so no part pays for an earlier one's writeback;
medians of wall time and of CPU-seconds (all threads and children):

* `qemu-img convert -O qcow2`, the copy (the row's reference);
* the source's digest as the seal records it (manifest.digest_content: holes
  skipped, one SHA-256 per 1 MiB block, hashing threads), and with one thread;
* both at once, as a backup runs them (store/source_digest.py);
* the copy, then the digest of its content read back (qcow2.py), the order
  before content entries;
* one pass that reads the source once, hashes it and writes its data: the
  floor of hotvcb writing the image itself instead of qemu-img (raw data
  written in order, the data clusters a qcow2 writer would write; no metadata);
* python's start-up with what a QEMU backup imports;
* rotation's removal of the previous 1 GiB backup (unlink of a file on disk).

Then the floor of the copy phase on this machine's cores: the CPU of the copy
and of the digest spread over every core (divided by what the cores gave
hashing threads together against one, measured in this run: a virtual
machine's vCPUs often give less than their number), against the copy alone. No target
(a measurement, exit 0); its reading is in bench/README.md. `--quick`: 256 MiB
/ 64 MiB; `-v`: each round as measured.
"""

import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from hotvcb import blockdigest  # noqa: E402
from _timing import parallel_speedup  # noqa: E402
from hotvcb.localshell import LocalShell  # noqa: E402
from hotvcb.store import manifest  # noqa: E402

MIB, GIB = 1 << 20, 1 << 30
QUICK = "--quick" in sys.argv[1:]
VERBOSE = "-v" in sys.argv[1:]
RUNS = 5
QEMU_IMG = shutil.which("qemu-img")
PY38 = "/root/.pyenv/versions/3.8.18/bin/python3.8"
PYTHON = PY38 if os.path.exists(PY38) else sys.executable  # what tests/qemuvm.py runs hotvcb with
IMPORTS = "import hotvcb.cli, hotvcb.commands.backup_cmd, hotvcb.hosts.qemu, hotvcb.store.seal"


def cpu_seconds() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def measure(fn, before=None):
    """(wall, CPU-s) of fn(), after `before()` and a sync, both untimed."""
    if before is not None:
        before()
    os.sync()
    c0, t0 = cpu_seconds(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, cpu_seconds() - c0


def main() -> int:
    if QEMU_IMG is None:
        print("no qemu-img here: nothing to measure")
        return 0
    tmp = tempfile.mkdtemp(prefix="hotvcb-bench-qemu-parts-")
    shell = LocalShell()
    size, data = (256 * MIB, 64 * MIB) if QUICK else (4 * GIB, GIB)
    src, out = os.path.join(tmp, "src.raw"), os.path.join(tmp, "out.qcow2")
    try:
        with open(src, "wb") as f:
            f.write(os.urandom(data))
            f.truncate(size)

        def convert():
            subprocess.run([QEMU_IMG, "convert", "-U", "-f", "raw", "-O", "qcow2", src, out], check=True)

        def digest(threads=None):
            with blockdigest.open_regular(src) as f:
                return blockdigest.digest_fd(f, manifest.BLOCK_SIZE, threads=threads)

        def both():
            t = threading.Thread(target=digest)
            t.start()
            convert()
            t.join()

        def read_back():
            convert()
            manifest.digest_content(shell, out, "qcow2")

        def one_pass():
            with blockdigest.open_regular(src) as f, open(out, "wb", buffering=0) as w:
                def written(ring):
                    for span in blockdigest.read_blocks(f, manifest.BLOCK_SIZE, ring=ring):
                        if span[2] is not None:
                            w.write(span[2])
                        yield span
                blockdigest.digest_blocks(written, manifest.BLOCK_SIZE)

        def startup():
            subprocess.run([PYTHON, "-c", IMPORTS], check=True, env=dict(os.environ, PYTHONPATH=ROOT))

        def tidy():
            if os.path.exists(out):
                os.unlink(out)

        parts = [
            ("`qemu-img convert -O qcow2` (the copy, the reference)", convert, tidy),
            ("digest of the source (hashing threads: %d)" % min(blockdigest.MAX_THREADS, os.cpu_count() or 1),
             digest, tidy),
            ("digest of the source, one hashing thread", lambda: digest(1), tidy),
            ("copy with the source digested beside it (a backup's copy phase)", both, tidy),
            ("copy, then the digest of its content read back", read_back, tidy),
            ("one pass: read once, hash, write the data (hotvcb writing the image)", one_pass, tidy),
            ("python start-up and a QEMU backup's imports", startup, tidy),
            ("unlink of the previous backup (rotation)", lambda: os.unlink(out), lambda: (tidy(), convert())),
        ]
        subprocess.run([PYTHON, "-c", IMPORTS], check=True, env=dict(os.environ, PYTHONPATH=ROOT))  # bytecode
        runs = {name: [] for name, _fn, _before in parts}
        loads = [os.getloadavg()[0]]
        for r in range(RUNS):
            for name, fn, before in parts:
                runs[name].append(measure(fn, before))
                if VERBOSE:
                    print("# round %d: %s: %.3f s, %.3f CPU-s" % (r + 1, name, *runs[name][-1]), file=sys.stderr)
            tidy()
            loads.append(os.getloadavg()[0])
        med = {name: (statistics.median(w for w, _c in v), statistics.median(c for _w, c in v))
               for name, v in runs.items()}
        print("%d MiB virtual / %d MiB data, %d cores, %d rounds, load average %.1f-%.1f"
              % (size // MIB, data // MIB, os.cpu_count() or 1, RUNS, min(loads), max(loads)))
        print("| part | wall median (best) | CPU-s median |")
        print("|---|---|---|")
        for name, v in runs.items():
            print("| %s | %.2f s (%.2f) | %.2f |" % (name, med[name][0], min(w for w, _c in v), med[name][1]))
        copy, dig = med[parts[0][0]], med[parts[1][0]]
        speedup = parallel_speedup()
        floor = max(copy[0], (copy[1] + dig[1]) / speedup)  # nor shorter than the copy
        print("\ncopy phase floor on %d cores, which gave hashing threads x%.2f of one here: (%.2f + %.2f CPU-s) / "
              "%.2f -> %.2f s = x%.2f the copy's %.2f s, before start-up and the rest"
              % (os.cpu_count() or 1, speedup, copy[1], dig[1], speedup, floor, floor / copy[0], copy[0]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
