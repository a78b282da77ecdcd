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
