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
