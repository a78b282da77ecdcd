"""A libvirt full backup: read the copy back, or read the NBD export a second time? (issue 8)

libvirt's pull-mode export holds the disk as it was at backup-begin; `qemu-img
convert` copies it to qcow2 and the seal then digests the copy. The other
order would hash the export itself while it is copied, with a second NBD
client beside qemu-img (the content entry of the QEMU driver's qcow2 copies,
taken from the export instead of an image file). hotvcb holds no NBD client
(the host needs nothing but qemu-img), so `nbdcopy` (libnbd) to a pipe stands
in for one here. A `qemu-nbd -r` export of a raw image, half of it data and
half holes (the same NBD server code as libvirt's export), stands in for
libvirt's. Side by side, interleaved runs:

* the copy, then the digest of the copy: warm (a local target, the copy still
  in the page cache) and cold (dropped from it, as a read from NFS would be);
* the copy with the export hashed in parallel by the second reader.

Prints each run's seconds. No target: this measures a design choice (the
outcome is in docs/kvm.md, "The seal of a full backup"); exit 0. Needs
qemu-img, qemu-nbd and nbdcopy.
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
SIZE = 2048 * MIB
RUNS = 4


def uncache(path: str) -> None:
    os.sync()
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def main() -> int:
    for tool in ("qemu-img", "qemu-nbd", "nbdcopy"):
        if shutil.which(tool) is None:
            print("needs %s" % tool)
            return 0
    tmp = tempfile.mkdtemp(prefix="hotvcb-bench-nbd-")
    src, sock = os.path.join(tmp, "src.raw"), os.path.join(tmp, "nbd.sock")
    with open(src, "wb") as f:
        f.truncate(SIZE)
        for offset in range(0, SIZE, 2 * MIB):
            f.seek(offset)
            f.write(os.urandom(MIB))
    server = subprocess.Popen(["qemu-nbd", "-r", "-f", "raw", "-e", "4", "-x", "sda", "-k", sock, "--persistent", src])
    uri = "nbd+unix:///sda?socket=" + sock
    shell, times = LocalShell(), {"copy, then digest it (warm)": [], "copy, then digest it (cold)": [],
                                  "copy, export hashed beside it": []}
    try:
        while not os.path.exists(sock):
            time.sleep(0.05)

        def copy(out: str) -> None:
            if os.path.exists(out):
                os.remove(out)
            subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", uri, out], check=True)

        def read_back(cold: bool) -> float:
            start = time.monotonic()
            copy(os.path.join(tmp, "a.qcow2"))
            if cold:
                uncache(os.path.join(tmp, "a.qcow2"))
            manifest.digest_file(shell, os.path.join(tmp, "a.qcow2"))
            return time.monotonic() - start

        def beside() -> float:
            start, out = time.monotonic(), {}

            def second() -> None:
                reader = subprocess.Popen(["nbdcopy", uri, "-"], stdout=subprocess.PIPE)
                out["digest"] = manifest.digest_stream(reader.stdout.read, whole=False)
                reader.wait()

            thread = threading.Thread(target=second)
            thread.start()
            copy(os.path.join(tmp, "b.qcow2"))
            thread.join()
            took = time.monotonic() - start
            content = manifest.digest_content(shell, os.path.join(tmp, "b.qcow2"), "qcow2")
            assert out["digest"].sha256_of_blocks == content.sha256_of_blocks, "the two readers disagree"
            return took

        for _ in range(RUNS):
            uncache(src)
            times["copy, then digest it (warm)"].append(read_back(False))
            uncache(src)
            times["copy, then digest it (cold)"].append(read_back(True))
            uncache(src)
            times["copy, export hashed beside it"].append(beside())
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    print("%d MiB virtual, %d MiB data, qcow2 copy of a qemu-nbd export; seconds per run:" % (SIZE // MIB, SIZE // MIB // 2))
    for name, runs in times.items():
        print("  %-32s %s   (best %.2f)" % (name, " ".join("%.2f" % t for t in runs), min(runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
