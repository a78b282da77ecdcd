"""virtnbdbackup as a reference column: the tool a KVM admin uses for hot full/incremental backups.

Only through its two commands (`virtnbdbackup`, `virtnbdrestore`), as an admin
runs them; scripts/install-bench-deps installs Debian's package.

virtnbdbackup refuses a domain with checkpoints it did not make ("Foreign
checkpoint found"), and hotvcb keeps one after each good backup (where its next
incremental starts). So that both can back up the same domain in one run, the
other checkpoints' libvirt metadata is set aside while virtnbdbackup runs
(`checkpoint-delete --metadata`: the bitmaps stay in the image and keep
recording) and redefined after it (`checkpoint-create --redefine`), untimed.
"""

import glob
import os
import shutil
import subprocess
import time
from contextlib import contextmanager
from typing import Optional

from _libvirt import kvmguest


def missing() -> Optional[str]:
    """Why the column cannot be measured here, or None."""
    for tool in ("virtnbdbackup", "virtnbdrestore"):
        if shutil.which(tool) is None:
            return "%s not installed (scripts/install-bench-deps: Debian package virtnbdbackup)" % tool
    return None


def allocated(path: str) -> int:
    """Bytes a folder (or file) takes on disk: what a backup costs in storage, holes not counted."""
    if os.path.isfile(path):
        return os.stat(path).st_blocks * 512
    return sum(os.stat(os.path.join(d, f)).st_blocks * 512 for d, _, files in os.walk(path) for f in files)


MARK = "virtnbdbackup"  # how its checkpoints are named (virtnbdbackup.0, .1, ...)


@contextmanager
def others_set_aside(domain: str, folder: str):
    """The domain without the libvirt metadata of checkpoints virtnbdbackup did not make, for the block's time."""
    names = [n for n in kvmguest.virsh("checkpoint-list", domain, "--name", "--topological").stdout.split()
             if not n.startswith(MARK)]
    saved = []
    for name in names:
        path = os.path.join(folder, "%s.checkpoint.xml" % name)
        with open(path, "w") as f:
            f.write(kvmguest.virsh("checkpoint-dumpxml", domain, name).stdout)
        saved.append(path)
    for name in reversed(names):  # children first
        kvmguest.virsh("checkpoint-delete", domain, name, "--metadata")
    try:
        yield
    finally:
        for path in saved:  # parents first
            kvmguest.virsh("checkpoint-create", domain, path, "--redefine")
            os.remove(path)


class VirtNbdBackup:
    """One backup set of one domain in `folder`: a full backup, then incrementals into the same folder."""

    def __init__(self, domain: str, folder: str, scratch: str):
        self.domain, self.folder, self.scratch = domain, folder, scratch

    def backup(self, level: str) -> float:
        """Seconds for `virtnbdbackup -l full|inc`, end to end (its own start, checkpoint, NBD copy)."""
        with others_set_aside(self.domain, self.scratch):
            t0 = time.perf_counter()
            done = subprocess.run(["virtnbdbackup", "-U", kvmguest.URI, "-d", self.domain, "-l", level, "-o",
                                   self.folder, "-S", self.scratch, "-n"], capture_output=True, text=True, timeout=1800)
            took = time.perf_counter() - t0
        if done.returncode != 0:
            raise RuntimeError("virtnbdbackup -l %s: exit %d: %s" % (level, done.returncode,
                                                                    done.stderr.strip().splitlines()[-1:]))
        return took

    def restore(self, until: str, target: str) -> str:
        """The disk image `virtnbdrestore` makes of the set up to checkpoint `until` (all of it if ""): its vda."""
        os.makedirs(target)
        subprocess.run(["virtnbdrestore", "-U", kvmguest.URI, "-i", self.folder, "-o", target, "-n",
                        "-L", os.path.join(target, "restore.log")] + (["-u", until] if until else []),
                       check=True, capture_output=True, timeout=1800)
        images = [p for p in glob.glob(os.path.join(target, "*")) if not p.endswith((".xml", ".log"))]
        if len(images) != 1:
            raise RuntimeError("virtnbdrestore left %s in %s, expected one disk image" % (images, target))
        closed(images[0])
        return images[0]


def closed(image: str, timeout: float = 120) -> None:
    """Wait until no process holds `image` open for writing (QEMU's image lock is free).

    virtnbdrestore (1.9.15) writes through a `qemu-nbd --fork` it starts, and on
    its way out only disconnects from it: it exits while that qemu-nbd still
    closes the image and writes its last qcow2 metadata (an L2 table: read then,
    the data past 512 MiB looks unwritten). A compare run at once on a quiet
    machine saw "Content mismatch at offset 536870912" that was gone a moment
    later. So the image is read only once its writer has let go.
    """
    deadline = time.monotonic() + timeout
    while True:
        held = subprocess.run(["qemu-img", "info", image], capture_output=True, text=True, timeout=60)
        if held.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise RuntimeError("%s still held open %d s after virtnbdrestore exited: %s"
                               % (image, timeout, held.stderr.strip().splitlines()[:1]))
        time.sleep(0.05)
