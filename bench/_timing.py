"""Timing shared by the benchmarks: interleaved best-of runs, so a busy shared
machine slows hotvcb and its reference alike and the ratio stays meaningful."""

import time

RUNS = 3


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def best(fns, runs=RUNS, after=()):
    """Interleave the callables `runs` times; the best time of each. `after[i]` (None: nothing)
    runs untimed after each run of fns[i]: removing what the run made is the benchmark's
    housekeeping, not part of what is measured."""
    out = [float("inf")] * len(fns)
    for _ in range(runs):
        for i, fn in enumerate(fns):
            out[i] = min(out[i], timed(fn))
            if i < len(after) and after[i] is not None:
                after[i]()
    return out


def parallel_speedup(work=256, runs=3):
    """How much faster this machine's cores run SHA-256 together than one alone: `work` MiB hashed by one
    thread, then split over os.cpu_count() threads (hashlib releases the GIL, as in every hashing pool of
    hotvcb), best of `runs` each. A floor given "over N cores" assumes xN; a virtual machine's vCPUs (or
    a neighbour's load) often give less, so the floors divide by what was measured here, in this run."""
    import hashlib
    import os
    import threading
    cores = os.cpu_count() or 1
    block = bytes(range(256)) * 4096  # 1 MiB

    def hash_mib(n):
        for _ in range(n):
            hashlib.sha256(block).digest()

    def spread():
        threads = [threading.Thread(target=hash_mib, args=(work // cores,)) for _ in range(cores)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    one, together = best([lambda: hash_mib(work // cores * cores), spread], runs=runs)
    return max(1.0, one / together)


def compiled(root):
    """hotvcb's and esxisim's bytecode written once, for this python and the 3.8 one esxisim's /bin/python
    runs, as an installed hotvcb has it (and a host's unpacked build writes it at its first run): where
    PYTHONDONTWRITEBYTECODE is set (as on the test machine), every hotvcb run and every simulated host
    command would otherwise compile its modules again, ~0.2 s per hotvcb start that no user's run pays."""
    import os
    import shutil
    import subprocess
    import sys
    sys.path.insert(0, root)
    from esxisim.toolgen import PY38
    for py in dict.fromkeys([sys.executable, PY38 if os.path.exists(PY38) else shutil.which("python3")]):
        if py:
            subprocess.run([py, "-m", "compileall", "-q", "-j", "0", os.path.join(root, "hotvcb"),
                            os.path.join(root, "esxisim")], check=True, stdout=subprocess.DEVNULL)
