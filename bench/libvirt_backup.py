"""A full hot backup of a running libvirt domain: hotvcb's pull mode vs push mode vs virtnbdbackup vs qemu-img convert.

The domain runs with no kernel (the firmware idles), so the disk holds still
and all read the same bytes: a 4 GiB qcow2 with 1 GiB of random data.

- pull (what hotvcb does): `virsh backup-begin` in pull mode, `qemu-img
  convert` of the NBD export to qcow2, `domjobabort` (LibvirtHost's own
  create_snapshot / copy_disk / remove_snapshot);
- push: `virsh backup-begin` in push mode, libvirt writing the qcow2 itself,
  waited for until the job is gone;
- virtnbdbackup `-l copy` (a full backup without a checkpoint) into a fresh
  folder, end to end; its set restored once afterwards (`virtnbdrestore`) and
  compared with the image (`qemu-img compare`) once the qemu-nbd virtnbdrestore
  leaves running has closed it. Where it is not installed its row says why;
- reference: `qemu-img convert -U` of the image file (no point in time held).

No target: a measurement behind the choice of pull mode (docs/kvm.md). With
idle cores the copy over NBD keeps up with libvirt writing the file itself;
under CPU contention push mode (one process) pulls ahead of pull mode (QEMU
serving NBD plus qemu-img reading it). Pull mode's begin/end costs a handful
of virsh calls (about a second, whatever the disk's size), shown apart.
"""

import os
import shutil
import subprocess
import sys
import time

from _libvirt import kvmguest, scratch
from _timing import best
from _virtnbdbackup import VirtNbdBackup, missing

MiB = 1 << 20
DATA_MIB = 1024  # of 4 GiB: enough that the fixed cost of a handful of virsh calls does not decide
NAME = "hotvcb-bench"


def main() -> int:
    from hotvcb.hosts.libvirt import LibvirtHost
    from hotvcb.localshell import LocalShell
    from hotvcb.model import VmRef

    root = scratch("hvbench")
    if root is None:
        return 0
    try:
        raw, image = os.path.join(root, "data.raw"), os.path.join(root, "vda.qcow2")
        with open(raw, "wb") as f:
            for _ in range(DATA_MIB):
                f.write(os.urandom(MiB))
            f.truncate(4 * DATA_MIB * MiB)
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, image], check=True)
        os.remove(raw)
        xml = os.path.join(root, "domain.xml")
        with open(xml, "w") as f:
            f.write(kvmguest.domain_xml(NAME, image, "qcow2", os.path.join(root, "console.log"), agent=False))
        kvmguest.virsh("create", xml)
        host = LibvirtHost(LocalShell())
        vm = host.load_vm(VmRef(NAME, NAME, NAME))
        out = os.path.join(root, "out")
        os.makedirs(out)

        def fresh():
            shutil.rmtree(out)
            os.makedirs(out)

        def reference():
            fresh()
            subprocess.run(["qemu-img", "convert", "-U", "-O", "qcow2", image, out + "/ref.qcow2"], check=True)

        copies = []

        def pull():
            fresh()
            snap = host.create_snapshot(vm, "hotvcb-snapshot-bench", "bench", False, False, 60)
            try:
                t0 = time.perf_counter()
                host.copy_disk(vm.disks[0], out + "/vda.qcow2", "qcow2", None)
                copies.append(time.perf_counter() - t0)
            finally:
                host.remove_snapshot(vm, snap, 60)
            for cp in kvmguest.virsh("checkpoint-list", NAME, "--name").stdout.split():
                kvmguest.virsh("checkpoint-delete", NAME, cp)

        def push():
            fresh()
            backup = os.path.join(root, "push.xml")
            with open(backup, "w") as f:
                f.write("<domainbackup mode='push'><disks><disk name='vda' backup='yes' type='file'>"
                        "<target file='%s/push.qcow2'/><driver type='qcow2'/></disk></disks></domainbackup>" % out)
            kvmguest.virsh("backup-begin", NAME, backup)
            while kvmguest.virsh("backup-dumpxml", NAME, check=False).returncode == 0:
                time.sleep(0.02)

        why_not = missing()
        other = VirtNbdBackup(NAME, out + "/vnbd", root)

        def vnbd():
            fresh()
            other.backup("copy")

        runs = [reference, pull, push] + ([] if why_not else [vnbd])
        ref_s, pull_s, push_s, *vnbd_s = best(runs, runs=2)
        if not why_not:
            image_held = subprocess.run(["qemu-img", "compare", "-U", image,
                                         other.restore("", os.path.join(root, "restored"))], capture_output=True)
            held = "restores equal to the image" if image_held.returncode == 0 else "**restores differently**"
        print("| what | seconds | x qemu-img convert | target | met |")
        print("|---|---|---|---|---|")
        print("| qemu-img convert -U of the image (reference) | %.2f | x1.00 | - | - |" % ref_s)
        print("| hotvcb: pull mode, begin + qemu-img convert of the NBD export + end | %.2f | x%.2f | - | - |"
              % (pull_s, pull_s / ref_s))
        print("| of it: the copy (qemu-img over NBD) | %.2f | x%.2f | - | - |" % (min(copies), min(copies) / ref_s))
        print("| libvirt push mode (libvirt writes the file) | %.2f | x%.2f | - | - |" % (push_s, push_s / ref_s))
        if why_not:
            print("| virtnbdbackup -l copy | not measured: %s | - | - | - |" % why_not)
        else:
            print("| virtnbdbackup -l copy (%s) | %.2f | x%.2f | - | - |" % (held, vnbd_s[0], vnbd_s[0] / ref_s))
        print("\n%d GiB qcow2 with %d MiB of data, the domain running with an idle guest; best of 2, interleaved." % (4 * DATA_MIB >> 10, DATA_MIB))
        if not why_not:
            print("virtnbdrestore's image is compared once the qemu-nbd it leaves behind has closed it.")
        return 0
    finally:
        kvmguest.virsh("destroy", NAME, check=False)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
