"""Seal after the copy, or hash the source while it is copied? (issue 8, "no second read")

A 4 GiB virtual / 1 GiB data thin disk is cloned with `cp --sparse=always`
(a stand-in for `vmkfstools -i` that, like it, copies the data only). Side
by side, best of a few interleaved runs, warm page cache:

* the clone alone;
* the clone, then the v2 digest of the copy (the seal before issue 8; still
  the seal's order for 2gbsparse copies);
* the v2 digest of the source in a thread while the clone runs (the seal's
  order for flat copies: store/source_digest.py).

Also prints how many bytes each order reads back from the backup target: on a
real host that is NFS, where the read-back is what costs (see
docs/backup-format.md, "Hashing the source instead of the copy"). No target:
this measures a design choice; exit 0.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from hotvcb.localshell import LocalShell  # noqa: E402
from hotvcb.store import manifest  # noqa: E402

MIB = 1 << 20
GIB = 1 << 30
RUNS = 3


def main() -> int:
    tmp = tempfile.mkdtemp(prefix="hotvcb-bench-second-read-")
    shell = LocalShell()
    try:
        src = os.path.join(tmp, "src-flat.vmdk")
        dst = os.path.join(tmp, "dst-flat.vmdk")
        pattern = os.urandom(16 * MIB)
        with open(src, "wb") as f:
            f.truncate(4 * GIB)
            for i in range(64):
                f.seek(i * 64 * MIB)
                f.write(pattern)

        def clone():
            if os.path.exists(dst):
                os.unlink(dst)
            subprocess.run(["cp", "--sparse=always", src, dst], check=True)

        def seal_after():
            clone()
            return manifest.digest_file(shell, dst)

        def hash_while_cloning():
            out = []
            t = threading.Thread(target=lambda: out.append(manifest.digest_file(shell, src)))
            t.start()
            clone()
            t.join()
            return out[0]

        times = {"clone": [], "after": [], "during": []}
        digests = set()
        for _ in range(RUNS):
            for name, fn in (("clone", clone), ("after", seal_after), ("during", hash_while_cloning)):
                t0 = time.perf_counter()
                got = fn()
                times[name].append(time.perf_counter() - t0)
                if got is not None:
                    digests.add(got.sha256_of_blocks)
        assert len(digests) == 1  # the source's digest is the copy's: content, not allocation
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    c, a, d = (min(times[k]) for k in ("clone", "after", "during"))
    print("| what | time | x clone alone | read back from the backup target |")
    print("|---|---|---|---|")
    print("| clone alone (cp --sparse=always, 4 GiB / 1 GiB) | %.2f s | x1.00 | 0 |" % c)
    print("| clone, then digest the copy (2gbsparse) | %.2f s | x%.2f | 1 GiB |" % (a, a / c))
    print("| digest the source while cloning (flat formats) | %.2f s | x%.2f | 0 |" % (d, d / c))
    return 0


if __name__ == "__main__":
    sys.exit(main())
