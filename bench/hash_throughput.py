"""SHA-256 throughput of the manifest path: it re-reads every backed-up byte."""

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from hotvcb.localshell import LocalShell  # noqa: E402

BASELINE_MBS = 300.0


def main() -> int:
    size = 256 << 20
    with tempfile.NamedTemporaryFile() as f:
        f.truncate(size)
        f.seek(size // 2)
        f.write(os.urandom(1 << 20))
        f.flush()
        t0 = time.perf_counter()
        LocalShell().sha256(f.name)
        rate = size / (time.perf_counter() - t0) / 1e6
    print("sha256: %.0f MB/s (baseline >= %.0f MB/s)" % (rate, BASELINE_MBS))
    return 0 if rate >= BASELINE_MBS else 1


if __name__ == "__main__":
    sys.exit(main())
