"""Full and incremental hot backups of a running libvirt domain (hotvcb's CLI) vs `qemu-img convert` of its image.

The test guest (tests/kvmguest.py) runs on a 1 GiB qcow2 holding 512 MiB of
random data and keeps writing 4 KiB records; the incremental follows the full
backup by ~10 s of those writes. Each row is one `hotvcb --libvirt backup`
run end to end (Python start, virsh calls, the copy, the seal with its
digests); the reference reads the whole image once.

Target: the incremental takes less than half the full backup's time (it reads
only the dirty clusters).
"""

import glob
import json
import os
import shutil
import subprocess
import sys
import time

from _libvirt import ROOT, kvmguest, scratch

MiB = 1 << 20
NAME = "hotvcb-bench-inc"


def main() -> int:
    root = scratch("hvbinc")
    if root is None:
        return 0
    guest = None
    try:
        folder = os.path.join(root, "guest")
        os.makedirs(folder)
        os.chmod(folder, 0o755)
        guest = kvmguest.Guest(NAME, folder, size=1024 * MiB, random_bytes=512 * MiB)
        guest.wait_writes(20)
        conf = os.path.join(root, "hotvcb.conf")
        with open(conf, "w") as f:
            f.write("VM_BACKUP_VOLUME=%s/backups\nCREATE_VM_BACKUP_VOLUME=1\nDISK_BACKUP_FORMAT=qcow2\n" % root)

        def backup() -> float:
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "hotvcb", "--libvirt", "backup", "-m", NAME, "-g", conf,
                            "-w", os.path.join(root, "work")], check=True, capture_output=True, cwd=ROOT,
                           env=dict(os.environ, PYTHONPATH=ROOT))
            return time.perf_counter() - t0

        def reference() -> float:
            t0 = time.perf_counter()
            subprocess.run(["qemu-img", "convert", "-U", "-O", "qcow2", guest.image, os.path.join(root, "ref.qcow2")],
                           check=True)
            took = time.perf_counter() - t0
            os.remove(os.path.join(root, "ref.qcow2"))
            return took

        ref = reference()
        full = backup()
        time.sleep(10)
        inc = backup()
        newest = sorted(glob.glob(os.path.join(root, "backups", NAME, NAME + "-*")))[-1]
        layers = json.loads(subprocess.run(["qemu-img", "map", "--output=json", newest + "/vda.qcow2"],
                                           capture_output=True, text=True, check=True).stdout)
        dirty = sum(e["length"] for e in layers if e["depth"] == 0 and e["data"])
        ok = inc < full / 2
        print("| what | seconds | x qemu-img convert | target | met |")
        print("|---|---|---|---|---|")
        print("| qemu-img convert -U of the image (reference) | %.2f | x1.00 | - | - |" % ref)
        print("| hotvcb --libvirt backup, full | %.2f | x%.2f | - | - |" % (full, full / ref))
        print("| hotvcb --libvirt backup, incremental (%.1f MiB dirty) | %.2f | x%.2f | < full / 2 | %s |"
              % (dirty / MiB, inc, inc / ref, "yes" if ok else "**no**"))
        print("\n1 GiB qcow2 with 512 MiB of data, the guest writing; one run each (a backup changes what the next "
              "one reads).")
        return 0 if ok else 1
    finally:
        if guest is not None:
            guest.remove()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
