"""Full and incremental hot backups of a running libvirt domain: hotvcb's CLI vs virtnbdbackup vs `qemu-img convert`.

The test guest (tests/kvmguest.py) runs on a 1 GiB qcow2 holding 512 MiB of
random data and keeps writing 4 KiB records; the incremental follows the full
backup by ~10 s of those writes. Each hotvcb row is one `hotvcb --libvirt
backup` run end to end (Python start, virsh calls, the copy, the seal with its
digests); each virtnbdbackup row one `virtnbdbackup -l full|inc` run into one
backup set (its start, checkpoint, NBD copy into its sparse stream files); the
reference reads the whole image once. hotvcb runs from its bytecode, compiled
before the first run, as an installed hotvcb does.

The two tools back up the same domain side by side, each with its own
checkpoints (neither touches the other's). For each pair the domain is paused
(`virsh suspend`: QEMU runs, the guest's writes wait), so both read the disk at
the same instant: hotvcb's backup is compared with the paused disk, and
`virtnbdrestore`'s image of virtnbdbackup's set with hotvcb's backup, both with
`qemu-img compare`, after the timed runs (and after the qemu-nbd virtnbdrestore
leaves running has closed its image: bench/_virtnbdbackup.py closed()). The
order alternates (hotvcb first for the full backups, virtnbdbackup first for
the incrementals). Where virtnbdbackup is not installed its rows say why and
the rest still runs.

Target: hotvcb's incremental takes less than half its full backup's time (it
reads only the dirty clusters), and hotvcb's backups hold the disk as it was.
virtnbdbackup's rows are a measurement.
"""

import glob
import json
import os
import shutil
import subprocess
import sys
import time

from _libvirt import ROOT, kvmguest, scratch
from _timing import compiled
from _virtnbdbackup import VirtNbdBackup, allocated, missing

MiB = 1 << 20
NAME = "hotvcb-bench-inc"


def same(a: str, b: str) -> bool:
    """`qemu-img compare` (-U: one of them may be the paused domain's disk)."""
    return subprocess.run(["qemu-img", "compare", "-U", a, b], capture_output=True, timeout=1800).returncode == 0


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
        compiled(ROOT)
        why_not = missing()
        other = None if why_not else VirtNbdBackup(NAME, os.path.join(root, "virtnbdbackup"), root)

        def hotvcb() -> float:
            """One run's seconds; a run refused because another hotvcb run holds the host's lock (tests on
            a shared machine) is tried again, untimed, for up to 15 minutes."""
            deadline = time.monotonic() + 900
            while True:
                t0 = time.perf_counter()
                done = subprocess.run([sys.executable, "-m", "hotvcb", "--libvirt", "backup", "-m", NAME, "-g", conf,
                                       "-w", os.path.join(root, "work")], capture_output=True, text=True, cwd=ROOT,
                                      env=dict(os.environ, PYTHONPATH=ROOT))
                took = time.perf_counter() - t0
                if done.returncode == 0:
                    return took
                if "another hotvcb run holds" not in done.stdout + done.stderr or time.monotonic() > deadline:
                    raise SystemExit("hotvcb --libvirt backup: exit %d: %s"
                                     % (done.returncode, (done.stderr or done.stdout).strip().splitlines()[-1:]))
                time.sleep(1)

        def reference() -> float:
            t0 = time.perf_counter()
            subprocess.run(["qemu-img", "convert", "-U", "-O", "qcow2", guest.image, os.path.join(root, "ref.qcow2")],
                           check=True)
            took = time.perf_counter() - t0
            os.remove(os.path.join(root, "ref.qcow2"))
            return took

        def pair(level: str, hotvcb_first: bool):
            """(hotvcb's seconds, its backup folder, whether it holds the disk, virtnbdbackup's seconds or None)."""
            nonlocal why_not
            theirs = None
            kvmguest.virsh("suspend", NAME)
            try:
                if hotvcb_first:
                    ours = hotvcb()
                if other is not None and not why_not:
                    try:
                        theirs = other.backup(level)
                    except (RuntimeError, subprocess.SubprocessError) as e:
                        why_not = "virtnbdbackup failed: %s" % e
                if not hotvcb_first:
                    ours = hotvcb()
                backup = sorted(glob.glob(os.path.join(root, "backups", NAME, NAME + "-*")))[-1]
                held = same(guest.image, backup + "/vda.qcow2")
            finally:
                kvmguest.virsh("resume", NAME)
            return ours, backup, held, theirs

        ref = reference()
        full, full_dir, full_ok, vfull = pair("full", True)
        vfull_bytes = allocated(other.folder) if vfull is not None else 0
        time.sleep(10)
        inc, inc_dir, inc_ok, vinc = pair("inc", False)
        vinc_bytes = allocated(other.folder) - vfull_bytes if vinc is not None else 0
        layers = json.loads(subprocess.run(["qemu-img", "map", "--output=json", inc_dir + "/vda.qcow2"],
                                           capture_output=True, text=True, check=True).stdout)
        dirty = sum(e["length"] for e in layers if e["depth"] == 0 and e["data"])

        def restored(checkpoint: str, ours: str) -> str:
            """Whether virtnbdrestore's image of the set up to `checkpoint` equals hotvcb's backup."""
            try:
                image = other.restore(checkpoint, os.path.join(root, "restore-" + checkpoint))
            except (RuntimeError, subprocess.SubprocessError) as e:
                return "**restore failed**: %s" % e
            return "yes (= hotvcb's)" if same(image, ours + "/vda.qcow2") else "**no: differs from hotvcb's**"

        ok = inc < full / 2 and full_ok and inc_ok
        print("| what | seconds | x qemu-img convert | bytes stored | restores to the disk | target | met |")
        print("|---|---|---|---|---|---|---|")
        print("| qemu-img convert -U of the image (reference) | %.2f | x1.00 | - | - | - | - |" % ref)

        def row(what, took, stored, holds, target="-", met="-"):
            print("| %s | %.2f | x%.2f | %.1f MiB | %s | %s | %s |" % (what, took, took / ref, stored / MiB, holds,
                                                                     target, met))

        def theirs(what, took, stored, checkpoint, ours):
            if took is None:
                print("| %s | not measured: %s | - | - | - | - | - |" % (what, why_not))
            else:
                row(what, took, stored, restored(checkpoint, ours))

        held = {True: "yes (= the paused disk)", False: "**no**"}
        row("hotvcb --libvirt backup, full", full, allocated(full_dir), held[full_ok])
        theirs("virtnbdbackup -l full", vfull, vfull_bytes, "virtnbdbackup.0", full_dir)
        row("hotvcb --libvirt backup, incremental (%.1f MiB dirty)" % (dirty / MiB), inc, allocated(inc_dir),
            held[inc_ok], "< full / 2", "yes" if ok else "**no**")
        theirs("virtnbdbackup -l inc", vinc, vinc_bytes, "virtnbdbackup.1", inc_dir)
        if vfull is not None and vinc is not None:
            print("\nhotvcb / virtnbdbackup time: full x%.2f, incremental x%.2f." % (full / vfull, inc / vinc))
        print("\n1 GiB qcow2 with 512 MiB of data, the guest writing between the backups and paused during each "
              "pair; one run each (a backup changes what the next one reads). virtnbdrestore's images are "
              "compared once the qemu-nbd it leaves behind has closed them.")
        return 0 if ok else 1
    finally:
        if guest is not None:
            guest.remove()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
