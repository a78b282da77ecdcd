"""BACKUP_PARALLEL=3 against one VM at a time, side by side in one run (issue 13, item 6).

Simulated ESXi host (esxisim): 6 powered-on VMs of 64 MiB (thin, about half
data), three on each of two datastores, backed up with `hotvcb backup -a`
once with BACKUP_PARALLEL=1 and once with BACKUP_PARALLEL=3 (at most 2 per
datastore), interleaved, best of RUNS each.

| row | what the copy waits on | target |
|---|---|---|
| storage-bound copies | esxisim's `clone.delay`: each clone takes 3 s whatever the CPU, as a copy limited by a datastore's or the network's bandwidth does on a real host | serial / N=3 >= 2.0x |
| CPU-bound copies | esxisim's own clone (Python reading and writing the VMDKs) on this machine's cores | none (a measurement: with 2 cores there is little to gain) |

The first row is what BACKUP_PARALLEL is for: a VM's backup is mostly
waiting (hostd, vmkfstools, the storage), so three at once take about a third
of the time plus the per-VM host commands that still queue on this machine.
Prints a markdown table; exit 1 if the target is missed.
"""

import os
import sys
import tempfile
import shutil
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from esxisim import Host  # noqa: E402
from _timing import best  # noqa: E402

MIB, GIB = 1 << 20, 1 << 30
VOLUME = "/vmfs/volumes/backup/hotvcb"
ENV = dict(os.environ, PYTHONPATH=ROOT)
RUNS = 2
TARGET = 2.0


def backup(host, conf, work):
    argv = [sys.executable, "-m", "esxisim", "shell", host.root, "--", "env", "PYTHONPATH=" + ROOT,
            "/bin/python", "-m", "hotvcb", "backup", "-a", "-g", conf, "-w", work]
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, env=ENV,
                       cwd=ROOT)
    if r.returncode != 0:
        raise RuntimeError("backup failed (%d): %s" % (r.returncode, r.stdout[-2000:]))


def conf(host, name, parallel):
    path = os.path.join(host.root, name)
    with open(path, "w") as f:
        f.write("VM_BACKUP_VOLUME=%s\nDISK_BACKUP_FORMAT=thin\nVM_BACKUP_ROTATION_COUNT=1\n"
                "BACKUP_PARALLEL=%d\nBACKUP_PARALLEL_PER_DATASTORE=2\n" % (VOLUME, parallel))
    return path


def main() -> int:
    tmp = tempfile.mkdtemp(prefix="bench-parallel-")
    host = Host.create(os.path.join(tmp, "esx"), version="7.0.3", crond=False)
    rows = []
    try:
        host.add_datastore("datastore1", 4 * GIB, vmfs=6)
        host.add_datastore("ds5", 4 * GIB, vmfs=5)
        host.add_datastore("backup", 16 * GIB, vmfs=6)
        for i in range(6):
            host.create_vm("vm%d" % i, ("datastore1", "ds5")[i % 2], [{"size": "64M"}], power="on")
        serial, three = conf(host, "serial.conf", 1), conf(host, "three.conf", 3)
        work = os.path.join(tmp, "work")
        for what, delay in (("storage-bound copies (clone.delay 3 s)", "3"), ("CPU-bound copies", None)):
            host.clear_faults()
            if delay:
                host.set_fault("clone.delay", delay)
            one, par = best([lambda: backup(host, serial, work), lambda: backup(host, three, work)], runs=RUNS)
            ratio = one / par
            met = ratio >= TARGET if delay else None
            rows.append((what, "%.1f s" % one, "%.1f s" % par, "%.2fx" % ratio,
                         ">= %.1fx" % TARGET if delay else "none", "-" if met is None else "yes" if met else "**no**"))
    finally:
        host.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print("| 6 VMs x 64 MiB, 2 datastores | BACKUP_PARALLEL=1 | BACKUP_PARALLEL=3 | serial / N=3 | target | met |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print("| %s | %s | %s | %s | %s | %s |" % r)
    return 1 if any(r[5] == "**no**" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
